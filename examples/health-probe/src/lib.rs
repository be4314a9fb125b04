//! `health-probe`: an HTTP component whose health an operator can flip.
//!
//! Each replica answers with its own name (Shoal sets `SHOAL_REPLICA`), and
//! reads its health from the app's key-value bucket, so it can be changed
//! from outside while it runs:
//!
//! - `unready/<replica>` set: `ready()` says false, and Shoal takes the
//!   replica out of rotation until the key is deleted;
//! - `dead/<replica>` set: `live()` says false, and Shoal restarts it.
//!
//! A bucket that cannot be read counts as healthy: a health check should
//! fail for this replica's own faults, not for a shared dependency's.

use shoal_sdk::http::{Handler, Request, Response};
use shoal_sdk::{Health, keyvalue};

struct Probe;

fn replica() -> String {
    std::env::var("SHOAL_REPLICA").unwrap_or_else(|_| "unknown".into())
}

fn flagged(prefix: &str) -> bool {
    matches!(
        keyvalue::get(&format!("{prefix}/{}", replica())),
        Ok(Some(_))
    )
}

impl Handler for Probe {
    fn handle(_req: Request) -> Response {
        Response::text(200, format!("served by {}\n", replica()))
    }
}

impl Health for Probe {
    fn live() -> bool {
        !flagged("dead")
    }

    fn ready() -> bool {
        !flagged("unready")
    }
}

shoal_sdk::export_http!(Probe);
shoal_sdk::export_health!(Probe);
