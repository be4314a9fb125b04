//! Configuration values from the app spec's `config` table.
//!
//! ```ignore
//! let greeting = shoal_sdk::config::get("greeting").unwrap_or_else(|| "hello".into());
//! ```

use crate::bindings::shoal::workload::config as wit;

/// The value the spec sets for `key`, if any.
pub fn get(key: &str) -> Option<String> {
    wit::get(key)
}

/// Every key and value the spec sets, sorted by key.
pub fn all() -> Vec<(String, String)> {
    wit::get_all()
}
