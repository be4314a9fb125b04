//! Secrets the app spec lists for this component, fetched on demand.
//!
//! A secret is a capability: it is never in the environment, and a name the
//! spec does not list is refused.

use crate::bindings::shoal::workload::secrets as wit;
pub use crate::bindings::shoal::workload::secrets::Error;

/// The value of the secret `name`.
pub fn get(name: &str) -> Result<Vec<u8>, Error> {
    wit::get(name)
}

/// The value of the secret `name` as UTF-8 text.
pub fn get_string(name: &str) -> Result<String, Error> {
    let bytes = get(name)?;
    String::from_utf8(bytes)
        .map_err(|_| Error::Unavailable(format!("secret {name} is not valid UTF-8")))
}

impl Error {
    /// What went wrong and what to do, as the host put it, after a short
    /// label: `"not granted: component … is not granted secret …"`.
    pub fn describe(&self) -> String {
        let (label, why) = match self {
            Error::NotGranted(why) => ("not granted", why),
            Error::NotFound(why) => ("not found", why),
            Error::Unavailable(why) => ("unavailable", why),
        };
        format!("{label}: {why}")
    }
}
