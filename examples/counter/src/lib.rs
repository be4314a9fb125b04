//! `counter`: increments a global and returns it.
//!
//! Every invocation runs in a fresh instance, so the answer is always `1`:
//! the proof that nothing of one invocation survives into the next.

use std::sync::atomic::{AtomicU64, Ordering};

use shoal_sdk::{HandlerError, Message, Reply, Worker};

static COUNT: AtomicU64 = AtomicU64::new(0);

struct Counter;

impl Worker for Counter {
    fn handle(_msg: Message) -> Result<Reply, HandlerError> {
        let now = COUNT.fetch_add(1, Ordering::SeqCst) + 1;
        Ok(Reply::new(now.to_string()))
    }
}

shoal_sdk::export_worker!(Counter);
