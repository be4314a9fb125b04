//! Publishing messages and calling other components of the same app.

use crate::Message;
use crate::bindings::shoal::workload::messaging as wit;
pub use crate::bindings::shoal::workload::messaging::Error;
use std::time::Duration;

/// Publish `msg` on its subject. The subject must match one of the spec's
/// `messaging.publish` patterns.
pub fn publish(msg: &Message) -> Result<(), Error> {
    wit::publish(msg)
}

/// Call `component` of the same app with `msg` and wait up to `timeout` for
/// its reply. Calls are spread over the component's ready replicas.
pub fn request(component: &str, msg: &Message, timeout: Duration) -> Result<Message, Error> {
    let timeout_ms = u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX);
    wit::request(component, msg, timeout_ms)
}

impl Error {
    /// What went wrong and what to do, as the host put it, after a short
    /// label: `"not granted: component … is not granted secret …"`.
    pub fn describe(&self) -> String {
        let (label, why) = match self {
            Error::NotAllowed(why) => ("not allowed", why),
            Error::Timeout(why) => ("timed out", why),
            Error::NoResponders(why) => ("no responders", why),
            Error::Failed(why) => ("failed", why),
        };
        format!("{label}: {why}")
    }
}
