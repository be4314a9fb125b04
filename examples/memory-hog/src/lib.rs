//! `memory-hog`: grows its memory a mebibyte at a time until it is stopped.
//! Shoal must stop it at its memory cap and go on serving others.

use shoal_sdk::{HandlerError, Message, Reply, Worker};

struct Hog;

impl Worker for Hog {
    fn handle(_msg: Message) -> Result<Reply, HandlerError> {
        let mut hoard: Vec<Vec<u8>> = Vec::new();
        loop {
            // Touch every page so the memory is really used.
            hoard.push(vec![0xA5; 1 << 20]);
            std::hint::black_box(&hoard);
        }
    }
}

shoal_sdk::export_worker!(Hog);
