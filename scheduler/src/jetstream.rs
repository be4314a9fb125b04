//! JetStream as the scheduler uses it: one context, and how many copies
//! each bucket, object store and stream it creates keeps.
//!
//! On a single nats-server every stream has one copy. On a NATS cluster
//! Shoal keeps `min(3, nodes)` copies (or what `--nats-replicas` says), so
//! a node's death loses nothing acknowledged: JetStream answers a write
//! only once a majority of the copies hold it. The cluster's size is read
//! from what the server tells its clients (`connect_urls`: every node's
//! client address, own included) when the scheduler connects: a cluster
//! whose routes were not all up then gets fewer copies, and says so in the
//! scheduler's log; `--nats-replicas` fixes the number.

use std::future::Future;
use std::ops::Deref;
use std::time::Instant;

use async_nats::jetstream::{self, kv, object_store, stream};

use crate::SchedulerError;
use crate::tunables::{CONNECTED_POLL, JETSTREAM_READY_WAIT, JETSTREAM_RETRY, MAX_COPIES};

/// How many copies the scheduler's JetStream resources keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Copies {
    /// One on a single server; `min(3, nodes)` on a cluster.
    #[default]
    Auto,
    /// Exactly this many (1 to 5): creating fails on a cluster too small.
    Exactly(usize),
}

impl Copies {
    /// Parses `auto` or a number from 1 to 5, as `--nats-replicas` takes it.
    pub fn parse(text: &str) -> Result<Copies, String> {
        if text == "auto" {
            return Ok(Copies::Auto);
        }
        match text.parse::<usize>() {
            Ok(n @ 1..=5) => Ok(Copies::Exactly(n)),
            _ => Err(format!(
                "expected `auto` or a number of copies from 1 to 5 (JetStream's limit), got {text:?}"
            )),
        }
    }
}

/// The copies `Auto` chooses for a server that is in a cluster (`clustered`)
/// and knows of `nodes` client addresses.
fn auto_copies(clustered: bool, nodes: usize) -> usize {
    if clustered {
        nodes.clamp(1, MAX_COPIES)
    } else {
        1
    }
}

/// The scheduler's JetStream context and the copies it asks for.
#[derive(Clone)]
pub struct JetStream {
    context: jetstream::Context,
    copies: usize,
}

impl Deref for JetStream {
    type Target = jetstream::Context;
    fn deref(&self) -> &jetstream::Context {
        &self.context
    }
}

impl JetStream {
    /// The context over `nats`, with the copies `wanted` resolves to.
    pub async fn open(nats: &async_nats::Client, wanted: Copies) -> JetStream {
        let copies = match wanted {
            Copies::Exactly(n) => n,
            Copies::Auto => {
                // A client that connects in the background has no server
                // information until it is connected.
                let deadline = Instant::now() + JETSTREAM_READY_WAIT;
                let info = loop {
                    match nats.try_server_info() {
                        Some(info) => break info,
                        None if Instant::now() > deadline => break Default::default(),
                        None => tokio::time::sleep(CONNECTED_POLL).await,
                    }
                };
                auto_copies(info.cluster.is_some(), info.connect_urls.len())
            }
        };
        tracing::info!(copies, "JetStream resources keep this many copies");
        let context = jetstream::new(nats.clone());
        // A fresh cluster answers no JetStream request until it has elected
        // its leader: ask often with a short wait, rather than wait out a
        // whole request timeout per try.
        let deadline = Instant::now() + JETSTREAM_READY_WAIT;
        while Instant::now() < deadline {
            match tokio::time::timeout(JETSTREAM_RETRY * 2, context.query_account()).await {
                Ok(Ok(_)) => break,
                Ok(Err(_)) => tokio::time::sleep(JETSTREAM_RETRY).await,
                Err(_) => {}
            }
        }
        JetStream { context, copies }
    }

    /// How many copies new resources keep.
    pub fn copies(&self) -> usize {
        self.copies
    }

    /// `config` with the copies set.
    pub fn stream(&self, config: stream::Config) -> stream::Config {
        stream::Config {
            num_replicas: self.copies,
            ..config
        }
    }

    /// `config` with the copies set.
    pub fn bucket(&self, config: kv::Config) -> kv::Config {
        kv::Config {
            num_replicas: self.copies,
            ..config
        }
    }

    /// `config` with the copies set.
    pub fn objects(&self, config: object_store::Config) -> object_store::Config {
        object_store::Config {
            num_replicas: self.copies,
            ..config
        }
    }
}

/// Runs `attempt` until it succeeds, fails for a reason other than
/// JetStream being unavailable, or [`JETSTREAM_READY_WAIT`] has passed.
/// A fresh NATS cluster elects its JetStream leader, and one that lost a
/// node elects new stream leaders, within seconds (nats-server's raft
/// waits 4 to 9 s before an election); a scheduler starting meanwhile
/// waits for it rather than exiting.
pub async fn when_ready<T, F, Fut>(what: &str, mut attempt: F) -> Result<T, SchedulerError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, SchedulerError>>,
{
    let deadline = Instant::now() + JETSTREAM_READY_WAIT;
    let mut told = false;
    loop {
        match attempt().await {
            Err(SchedulerError::Unavailable(why)) if Instant::now() < deadline => {
                if !told {
                    tracing::warn!(%why, "JetStream is not ready for {what}; waiting");
                    told = true;
                }
                tokio::time::sleep(JETSTREAM_RETRY).await;
            }
            done => return done,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_follow_the_cluster_up_to_three() {
        assert_eq!(auto_copies(false, 0), 1);
        assert_eq!(auto_copies(false, 5), 1);
        assert_eq!(
            auto_copies(true, 0),
            1,
            "a cluster that advertises no nodes"
        );
        assert_eq!(auto_copies(true, 2), 2);
        assert_eq!(auto_copies(true, 3), 3);
        assert_eq!(auto_copies(true, 7), 3);
    }

    #[test]
    fn the_flag_takes_auto_or_one_to_five() {
        assert_eq!(Copies::parse("auto"), Ok(Copies::Auto));
        assert_eq!(Copies::parse("3"), Ok(Copies::Exactly(3)));
        for bad in ["0", "6", "three", ""] {
            let err = Copies::parse(bad).unwrap_err();
            assert!(err.contains("1 to 5"), "{bad}: {err}");
        }
    }
}
