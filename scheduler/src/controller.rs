//! The controller: the reconciler's loop, after kube-rs's `Controller`.
//!
//! Changes queue the apps they concern ([`crate::workqueue`]); while this
//! scheduler holds the lease, each pass takes what was queued (everything
//! once per [`RESYNC_INTERVAL`]), plans it with the pure planner
//! ([`reconcile::plan`]), publishes the pass's events, rolls back stalled
//! rollouts (a failed rollback is retried after the next progress
//! deadline, and said in an event), hands the commands to the per-host
//! dispatcher ([`crate::commands`]) and stores what the leader must
//! remember. One pass at a time, so one reconcile of an app is in flight
//! at most.

use std::sync::Arc;
use std::time::Instant;

use shoal_api::Name;
use shoal_api::resources::EventReason;
use tokio::sync::watch;

use crate::state::event;
use crate::tunables::{RECONCILE_INTERVAL, RESYNC_INTERVAL};
use crate::workqueue::Scope;
use crate::{Shared, reconcile, rollout};

/// Runs the reconciler until `stop`: while this scheduler leads, one pass
/// after another over what was queued, each handing its commands to the
/// dispatcher.
pub(crate) async fn run(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut leading = false;
    // When every app was last reconciled: none yet.
    let mut resynced: Option<Instant> = None;
    loop {
        tokio::select! {
            () = shared.queue.notified() => {},
            () = tokio::time::sleep(RECONCILE_INTERVAL) => {},
            _ = stop.wait_for(|s| *s) => return,
        }
        let now = Instant::now();
        if now < shared.ready_at {
            continue;
        }
        // Only the leader acts; the others keep their picture current.
        let Some(epoch) = shared.leadership.epoch() else {
            if leading {
                tracing::warn!("this scheduler no longer leads: it stops acting");
                leading = false;
            }
            continue;
        };
        if !leading {
            tracing::info!(epoch, "this scheduler acts as the leader");
            shared.keeper.reset().await;
            leading = true;
            resynced = None;
        }
        let began = Instant::now();
        // What was queued since the last pass; every app at the periodic
        // resync, the level-triggered net under the queue.
        let mut scope = shared.queue.take();
        if resynced.is_none_or(|at| now.duration_since(at) >= RESYNC_INTERVAL) {
            scope = Scope::Everything;
        }
        let pass = reconcile::plan(&mut shared.state(), now, &mut scope);
        if matches!(scope, Scope::Everything) {
            resynced = Some(now);
        }
        shared.publish(&pass.events).await;
        for stalled in pass.rollbacks {
            let cause = format!("automatic rollback: {}", stalled.reason);
            match rollout::roll_back(&shared, &stalled.app, None, Some(stalled.kv), &cause).await {
                Ok((revision, to)) => tracing::warn!(app = stalled.app, revision, to, "{cause}"),
                Err(e) => {
                    // Tried again once another progress deadline passes.
                    tracing::warn!(app = stalled.app, error = %e, "cannot roll back");
                    if let Some(r) = shared
                        .state()
                        .rollouts
                        .get_mut(&(stalled.app.clone(), stalled.pod.clone()))
                    {
                        r.rolled_back = false;
                        r.last_progress = Instant::now();
                    }
                    if let Some((namespace, app)) = stalled.app.split_once('.')
                        && let (Ok(namespace), Ok(app)) =
                            (Name::new(namespace.to_string()), Name::new(app.to_string()))
                    {
                        shared
                            .record(event(
                                &namespace,
                                &app,
                                EventReason::RollbackFailed,
                                format!("{cause}, but the rollback failed (tried again after the progress deadline): {e}"),
                            ))
                            .await;
                    }
                }
            }
        }
        for passed in pass.promotions {
            let cause = format!("canary of pod {} {}", passed.pod, passed.figures);
            if let Err(e) = rollout::promote(
                &shared,
                &passed.app,
                Some(&passed.pod),
                Some(passed.kv),
                &cause,
            )
            .await
            {
                // Judged again, and promoted again, in a later pass.
                tracing::warn!(app = passed.app, error = %e, "cannot promote the canary");
                if let Some(c) = shared
                    .state()
                    .rollouts
                    .get_mut(&(passed.app.clone(), passed.pod.clone()))
                    .and_then(|r| r.canary.as_mut())
                {
                    c.promoting = false;
                }
            }
        }
        // Sent in the background: a host that does not answer must not
        // hold up the next pass, nor other hosts' commands.
        for action in pass.actions {
            shared.commands.dispatch(&shared, action, epoch);
        }
        shared.keeper.save(&shared).await;
        let took = began.elapsed();
        shared.metrics.reconciled(took);
        // Under a burst of changes, rest as long as the pass took, so that
        // the next one takes in many of them at once.
        tokio::time::sleep(took.min(RECONCILE_INTERVAL)).await;
    }
}
