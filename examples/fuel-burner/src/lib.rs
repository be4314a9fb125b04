//! `fuel-burner`: spins forever. Shoal must stop it by its fuel budget, or
//! with fuel off by its deadline, and go on serving others.

use shoal_sdk::{HandlerError, Message, Reply, Worker};

struct Burner;

impl Worker for Burner {
    fn handle(msg: Message) -> Result<Reply, HandlerError> {
        let mut x: u64 = msg.payload.len() as u64;
        loop {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            if x == 0 {
                break;
            }
        }
        Ok(Reply::new(x.to_string()))
    }
}

shoal_sdk::export_worker!(Burner);
