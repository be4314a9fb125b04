//! `echo-worker`: replies with the message it was given.

use shoal_sdk::{HandlerError, Message, Reply, Worker};

struct Echo;

impl Worker for Echo {
    fn handle(msg: Message) -> Result<Reply, HandlerError> {
        println!("echoing {} bytes from {}", msg.payload.len(), msg.subject);
        Ok(Reply::new(msg.payload).with_header("echoed-from", msg.subject))
    }
}

shoal_sdk::export_worker!(Echo);
