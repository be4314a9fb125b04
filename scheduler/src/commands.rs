//! Host commands, sent without holding up the reconciler.
//!
//! A reconcile pass hands its [`Action`]s to the [`Dispatcher`] and goes
//! on. Each host has an allowance of commands in flight of its own
//! ([`MAX_COMMANDS_PER_HOST`]), taken before one of the overall allowance
//! ([`MAX_COMMANDS_IN_FLIGHT`]): a host that does not answer holds up only
//! its own commands, each for at most the command timeout, and never the
//! starts other hosts are sent. A command already on its way is not sent
//! again by a later pass. Each command carries the lease epoch it was
//! decided under, and is dropped if this scheduler no longer leads with it
//! when its turn comes.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use shoal_api::resources::EventReason;
use shoal_api::subjects;
use shoal_api::wire::{CommandReply, HostCommand, HostId, ReplicaId};
use tokio::sync::Semaphore;

use crate::Shared;
use crate::reconcile::Action;
use crate::state::event;
use crate::tunables::{
    COMMAND_TIMEOUT, MAX_COMMANDS_IN_FLIGHT, MAX_COMMANDS_PER_HOST, START_RETRY_BACKOFF,
};

/// What tells two commands apart: the same one planned twice is sent once.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct CommandKey {
    host: HostId,
    replica: ReplicaId,
    revision: u64,
    start: bool,
}

impl CommandKey {
    fn of(action: &Action) -> CommandKey {
        match action {
            Action::Start { host, replica } => CommandKey {
                host: host.clone(),
                replica: replica.id.clone(),
                revision: replica.revision,
                start: true,
            },
            Action::Stop {
                host, id, revision, ..
            } => CommandKey {
                host: host.clone(),
                replica: id.clone(),
                revision: *revision,
                start: false,
            },
        }
    }

    fn host(&self) -> &HostId {
        &self.host
    }
}

/// Sends host commands, each host within its own allowance.
pub struct Dispatcher {
    overall: Arc<Semaphore>,
    per_host: Mutex<HashMap<HostId, Arc<Semaphore>>>,
    on_their_way: Mutex<HashSet<CommandKey>>,
}

impl Default for Dispatcher {
    fn default() -> Self {
        Dispatcher {
            overall: Arc::new(Semaphore::new(MAX_COMMANDS_IN_FLIGHT)),
            per_host: Mutex::default(),
            on_their_way: Mutex::default(),
        }
    }
}

impl Dispatcher {
    /// Sends `action`'s command in the background, unless the same one is
    /// already on its way.
    pub(crate) fn dispatch(&self, shared: &Arc<Shared>, action: Action, epoch: u64) {
        let key = CommandKey::of(&action);
        let fresh = self
            .on_their_way
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.clone());
        if !fresh {
            return;
        }
        let host_slots = self
            .per_host
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key.host().clone())
            .or_insert_with(|| Arc::new(Semaphore::new(MAX_COMMANDS_PER_HOST)))
            .clone();
        let overall = self.overall.clone();
        let shared = shared.clone();
        tokio::spawn(async move {
            // The host's own allowance first: commands waiting on a slow
            // host hold none of the overall one.
            let host_slot = host_slots.acquire_owned().await;
            let slot = overall.acquire_owned().await;
            // Waiting for a slot may outlast the lease: a command goes
            // out only under the epoch it was decided with.
            if let (Ok(_host_slot), Ok(_slot)) = (host_slot, slot)
                && shared.leadership.epoch() == Some(epoch)
            {
                execute(&shared, action, epoch).await;
            }
            shared
                .commands
                .on_their_way
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&key);
        });
    }
}

/// Sends one command with the lease `epoch` and records what came of it.
async fn execute(shared: &Shared, action: Action, epoch: u64) {
    let (host, command) = match &action {
        Action::Start { host, replica } => {
            shared.metrics.placed();
            (host.clone(), HostCommand::Start(replica.clone()))
        }
        Action::Stop {
            host, id, revision, ..
        } => (
            host.clone(),
            HostCommand::Stop {
                id: id.clone(),
                revision: Some(*revision),
            },
        ),
    };
    let outcome = send(shared, &host, &command, epoch).await;
    match (action, outcome) {
        (Action::Start { host, replica }, Ok(())) => {
            let id = &replica.id;
            shared
                .record(event(
                    &id.namespace,
                    &id.app,
                    EventReason::Placed,
                    format!("{id} placed on {host} (revision {})", replica.revision),
                ))
                .await;
        }
        (Action::Start { host, replica }, Err(reason)) => {
            let id = replica.id;
            {
                let mut state = shared.state();
                state.starting.remove(&id);
                state
                    .backoff
                    .insert(id.clone(), Instant::now() + START_RETRY_BACKOFF);
            }
            shared
                .record(event(
                    &id.namespace,
                    &id.app,
                    EventReason::Failed,
                    format!("starting {id} on {host} failed: {reason}"),
                ))
                .await;
        }
        (
            Action::Stop {
                host,
                id,
                revision,
                reason,
            },
            Ok(()),
        ) => {
            shared
                .record(event(
                    &id.namespace,
                    &id.app,
                    EventReason::Stopped,
                    format!("{id} (revision {revision}) stopped on {host}: {reason}"),
                ))
                .await;
        }
        (Action::Stop { host, id, .. }, Err(e)) => {
            tracing::warn!(%host, %id, error = %e, "stop failed; the next resync tries again");
        }
    }
}

/// Sends `command` to `host` with the lease `epoch` and waits for its
/// answer. A host that has seen a newer epoch refuses it, and this
/// scheduler learns that it no longer leads.
pub(crate) async fn send(
    shared: &Shared,
    host: &shoal_api::wire::HostId,
    command: &HostCommand,
    epoch: u64,
) -> Result<(), String> {
    let fenced = shoal_api::wire::FencedCommand {
        epoch,
        command: command.clone(),
    };
    let payload = serde_json::to_vec(&fenced).map_err(|e| e.to_string())?;
    let request = async_nats::Request::new()
        .payload(payload.into())
        .timeout(Some(COMMAND_TIMEOUT));
    let reply = shared
        .nats
        .send_request(subjects::host_commands(host.as_str()), request)
        .await
        .map_err(|e| format!("host {host} did not answer: {e}"))?;
    match serde_json::from_slice::<CommandReply>(&reply.payload) {
        Ok(CommandReply::Ok) => Ok(()),
        Ok(CommandReply::Failed { reason }) => Err(reason),
        Ok(CommandReply::StaleEpoch { epoch, newest }) => {
            shared.leadership.saw_epoch(newest);
            Err(format!(
                "host {host} refused a command of lease epoch {epoch}: a scheduler leads with epoch {newest}"
            ))
        }
        Err(e) => Err(format!("host {host} answered nonsense: {e}")),
    }
}
