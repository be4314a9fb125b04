//! `queue-worker`: takes jobs from a JetStream work queue and announces
//! each one done on `jobs.done`.
//!
//! A job whose payload starts with `trap` panics (a poison message: it ends
//! in the dead-letter subject after `max_deliver` attempts); one starting
//! with `slow` takes 50 ms.

use std::time::Duration;

use shoal_sdk::{HandlerError, Message, Reply, Worker, messaging};

struct Jobs;

impl Worker for Jobs {
    fn handle(msg: Message) -> Result<Reply, HandlerError> {
        let job = msg.text().unwrap_or_default().to_string();
        if job.starts_with("trap") {
            panic!("job {job} is poison");
        }
        if job.starts_with("slow") {
            std::thread::sleep(Duration::from_millis(50));
        }
        messaging::publish(&Message::new("jobs.done", job.as_bytes()))
            .map_err(|e| HandlerError::Failed(e.describe()))?;
        Ok(Reply::new("done"))
    }
}

shoal_sdk::export_worker!(Jobs);
