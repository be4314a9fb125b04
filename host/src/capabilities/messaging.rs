//! Messaging: publish to subjects and call other components.
//!
//! No subject is granted yet, so every publish and request is refused with
//! a message that says what the spec must allow.

use std::sync::Arc;

use crate::bindings::messaging::{Error, Host};
use crate::bindings::types::Message;

/// The messaging granted to one component.
pub struct Messaging {
    component: Arc<str>,
}

impl Messaging {
    /// No messaging granted to `component`.
    pub fn new(component: Arc<str>) -> Self {
        Messaging { component }
    }
}

impl Host for Messaging {
    async fn publish(&mut self, msg: Message) -> Result<(), Error> {
        Err(Error::NotAllowed(format!(
            "component {} may not publish to {:?}: allow it with `messaging = {{ publish = [...] }}` in its app spec",
            self.component, msg.subject
        )))
    }

    async fn request(
        &mut self,
        target: String,
        _msg: Message,
        _timeout_ms: u32,
    ) -> Result<Message, Error> {
        Err(Error::NotAllowed(format!(
            "component {} may not call {target:?}: calls between components need a cluster (`shoal up`)",
            self.component
        )))
    }
}
