//! `crash-job`: a job that fails on purpose, to show restart policies.
//!
//! It prints a line and exits with the code in `EXIT_CODE` (default 1). With
//! `restart = "on-failure"` Shoal restarts it with a growing back-off and
//! shows the replica as crash-looping; with `EXIT_CODE = "0"` it completes.

fn main() {
    let code: i32 = std::env::var("EXIT_CODE")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(1);
    let replica = std::env::var("SHOAL_REPLICA").unwrap_or_else(|_| "a replica".into());
    println!("crash-job on {replica}: exiting with code {code}");
    std::process::exit(code);
}
