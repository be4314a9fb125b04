//! `fuel-burner`: spins forever. Shoal must stop it by its fuel budget, or
//! with fuel off by its deadline, and go on serving others. Given
//! `spin N` it spins N rounds and answers: a fixed piece of pure compute,
//! for measuring what interrupting a guest costs.

use shoal_sdk::{HandlerError, Message, Reply, Worker};

struct Burner;

impl Worker for Burner {
    fn handle(msg: Message) -> Result<Reply, HandlerError> {
        let rounds = std::str::from_utf8(&msg.payload)
            .ok()
            .and_then(|p| p.strip_prefix("spin "))
            .and_then(|n| n.trim().parse::<u64>().ok());
        let mut x: u64 = msg.payload.len() as u64;
        let mut done: u64 = 0;
        loop {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            done += 1;
            if x == 0 || rounds.is_some_and(|n| done >= n) {
                break;
            }
        }
        Ok(Reply::new(x.to_string()))
    }
}

shoal_sdk::export_worker!(Burner);
