//! The app's private key-value bucket.

use crate::bindings::shoal::workload::keyvalue as wit;
pub use crate::bindings::shoal::workload::keyvalue::Error;

/// The value stored under `key`, if any.
pub fn get(key: &str) -> Result<Option<Vec<u8>>, Error> {
    wit::get(key)
}

/// Store `value` under `key`.
pub fn set(key: &str, value: &[u8]) -> Result<(), Error> {
    wit::set(key, value)
}

/// Remove `key`; removing a missing key is not an error.
pub fn delete(key: &str) -> Result<(), Error> {
    wit::delete(key)
}

/// Every key in the bucket.
pub fn keys() -> Result<Vec<String>, Error> {
    wit::list_keys()
}

impl Error {
    /// What went wrong and what to do, as the host put it, after a short
    /// label: `"not granted: component … is not granted secret …"`.
    pub fn describe(&self) -> String {
        let (label, why) = match self {
            Error::NotGranted(why) => ("not granted", why),
            Error::InvalidKey(why) => ("invalid key", why),
            Error::Unavailable(why) => ("unavailable", why),
        };
        format!("{label}: {why}")
    }
}
