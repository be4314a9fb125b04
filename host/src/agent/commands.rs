//! Commands from the scheduler: start and stop replica copies, forget a
//! deleted app. Each is answered by request/reply.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use shoal_api::Name;
use shoal_api::wire::{
    CommandReply, FencedCommand, HostCommand, LeaderAnnouncement, ReplicaId, ReplicaState,
    StartReplica,
};
use tokio::sync::watch;

use super::{Agent, Replica, next_or_stop};
use crate::capabilities::ForgetContext;
use crate::supervisor::{CopyKey, CopyStatus, supervise};

pub(super) async fn take_commands(
    agent: Arc<Agent>,
    mut commands: async_nats::Subscriber,
    mut stop: watch::Receiver<bool>,
) {
    while let Some(msg) = next_or_stop(&mut commands, &mut stop).await {
        let reply = match serde_json::from_slice::<FencedCommand>(&msg.payload) {
            Ok(fenced) => match agent.see_epoch(fenced.epoch) {
                Err(newest) => {
                    tracing::warn!(
                        epoch = fenced.epoch,
                        newest,
                        "refusing a command from a scheduler that no longer leads"
                    );
                    CommandReply::StaleEpoch {
                        epoch: fenced.epoch,
                        newest,
                    }
                }
                Ok(()) => obey(&agent, fenced.command).await,
            },
            Err(e) => CommandReply::Failed {
                reason: format!("malformed command: {e}"),
            },
        };
        if let (Some(reply_to), Ok(payload)) = (msg.reply, serde_json::to_vec(&reply)) {
            let _ = agent.nats.publish(reply_to, payload.into()).await;
        }
    }
}

async fn obey(agent: &Arc<Agent>, command: HostCommand) -> CommandReply {
    match command {
        HostCommand::Start(start) => start_replica(agent, start),
        HostCommand::Stop { id, revision } => {
            stop_replica(agent, &id, revision);
            CommandReply::Ok
        }
        HostCommand::Forget {
            namespace,
            app,
            retain,
        } => forget_app(agent, namespace, app, retain).await,
    }
}

/// Learns the lease epoch of the leading scheduler from its
/// announcements.
pub(super) async fn watch_leader(
    agent: Arc<Agent>,
    mut announcements: async_nats::Subscriber,
    mut stop: watch::Receiver<bool>,
) {
    while let Some(msg) = next_or_stop(&mut announcements, &mut stop).await {
        match serde_json::from_slice::<LeaderAnnouncement>(&msg.payload) {
            Ok(a) => {
                let _ = agent.see_epoch(a.epoch);
            }
            Err(e) => tracing::warn!(error = %e, "ignoring a malformed leader announcement"),
        }
    }
}

fn start_replica(agent: &Arc<Agent>, start: StartReplica) -> CommandReply {
    if agent.draining.load(Ordering::Relaxed) {
        return CommandReply::Failed {
            reason: format!("host {} is shutting down", agent.config.id),
        };
    }
    let key: CopyKey = (start.id.clone(), start.revision);
    {
        let replicas = agent.replicas();
        if let Some(existing) = replicas.get(&key)
            && !matches!(existing.status.state, ReplicaState::Failed { .. })
        {
            return CommandReply::Ok;
        }
    }
    // A failed copy at the same revision is replaced; copies at other
    // revisions keep running until the scheduler stops them.
    stop_copy(agent, &key);
    let (stop, stopped) = watch::channel(false);
    let memory = start.memory();
    // The copy is in the table before its supervisor can report on it:
    // a report that found no copy would be lost, and the copy would show
    // as starting for good.
    let mut replicas = agent.replicas();
    let task = tokio::spawn(supervise(agent.clone(), start, stopped));
    replicas.insert(
        key,
        Replica {
            memory,
            status: CopyStatus::starting(),
            stop,
            task,
        },
    );
    drop(replicas);
    agent.beat.notify_one();
    CommandReply::Ok
}

/// Stops the copies of `id` at `revision`, or every copy.
pub(super) fn stop_replica(agent: &Arc<Agent>, id: &ReplicaId, revision: Option<u64>) {
    let keys: Vec<CopyKey> = agent
        .replicas()
        .keys()
        .filter(|(i, r)| i == id && revision.is_none_or(|want| *r == want))
        .cloned()
        .collect();
    for key in keys {
        stop_copy(agent, &key);
    }
}

/// Stops one copy gracefully: its supervisor takes it out of rotation and
/// lets its work finish in the background, while this host already stops
/// reporting it. Pod-scoped volumes go with the last copy of the pod.
fn stop_copy(agent: &Arc<Agent>, key: &CopyKey) {
    let Some(r) = agent.replicas().remove(key) else {
        return;
    };
    agent.routes.remove(&key.0, key.1);
    let _ = r.stop.send(true);
    tracing::info!(replica = %key.0, revision = key.1, "replica stopping");
    agent.beat.notify_one();
    let agent = agent.clone();
    let id = key.0.clone();
    tokio::spawn(async move {
        let _ = r.task.await;
        let still_here = agent.replicas().keys().any(|(i, _)| i == &id);
        if !still_here {
            agent.dumps.forget(&id);
            let (registry, gone) = (agent.registry.clone(), id.clone());
            let released = tokio::task::spawn_blocking(move || registry.release(&gone)).await;
            if let Ok(Err(e)) = released {
                tracing::warn!(replica = %id, error = %e, "cannot release what the replica held");
            }
        }
        tracing::info!(replica = %id, "replica stopped");
    });
}

/// Removes what a deleted app left on this host, but the volumes it
/// retains: each capability cleans up its own.
async fn forget_app(agent: &Agent, namespace: Name, app: Name, retain: Vec<Name>) -> CommandReply {
    let registry = agent.registry.clone();
    let forgotten = tokio::task::spawn_blocking(move || {
        registry.forget(&ForgetContext {
            namespace: &namespace,
            app: &app,
            retain: &retain,
        })
    })
    .await;
    match forgotten {
        Ok(Ok(())) => CommandReply::Ok,
        Ok(Err(e)) => CommandReply::Failed {
            reason: e.to_string(),
        },
        Err(e) => CommandReply::Failed {
            reason: format!("forgetting the app failed: {e}"),
        },
    }
}
