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

use shoal_api::wire::{HostId, ReplicaId};
use tokio::sync::Semaphore;

use crate::Shared;
use crate::reconcile::Action;
use crate::tunables::{MAX_COMMANDS_IN_FLIGHT, MAX_COMMANDS_PER_HOST};

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
                crate::execute(&shared, action, epoch).await;
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
