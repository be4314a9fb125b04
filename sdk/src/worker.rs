//! Workers: components that handle one message at a time and reply.

pub use crate::bindings::shoal::workload::types::{HandlerError, Headers, Message, Reply};

/// A workload that handles messages.
///
/// Each call gets a fresh instance: statics start from their initial value
/// on every message, so nothing leaks from one message to the next.
pub trait Worker {
    /// Handle one message. `Err(HandlerError::Failed)` asks for redelivery
    /// when the message came from a queue; `Err(HandlerError::InvalidInput)`
    /// does not.
    fn handle(msg: Message) -> Result<Reply, HandlerError>;
}

impl Reply {
    /// A reply carrying `payload` and no headers.
    pub fn new(payload: impl Into<Vec<u8>>) -> Self {
        Reply {
            headers: Vec::new(),
            payload: payload.into(),
        }
    }

    /// Adds a header to the reply.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
}

impl Message {
    /// A message for `subject` carrying `payload` and no headers.
    pub fn new(subject: impl Into<String>, payload: impl Into<Vec<u8>>) -> Self {
        Message {
            subject: subject.into(),
            headers: Vec::new(),
            payload: payload.into(),
        }
    }

    /// The value of the first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The payload as UTF-8 text, if it is.
    pub fn text(&self) -> Option<&str> {
        std::str::from_utf8(&self.payload).ok()
    }
}

/// Exports a type implementing [`Worker`] as this component's message handler.
///
/// Call it once per component, at the crate's top level.
#[macro_export]
macro_rules! export_worker {
    ($ty:ident) => {
        #[doc(hidden)]
        #[allow(missing_docs, clippy::all)]
        mod __shoal_worker_export {
            $crate::__export_bindings!("worker");
        }

        impl __shoal_worker_export::exports::shoal::workload::handler::Guest for $ty {
            fn handle(
                msg: $crate::Message,
            ) -> ::core::result::Result<$crate::Reply, $crate::HandlerError> {
                <$ty as $crate::Worker>::handle(msg)
            }
        }

        __shoal_worker_export::export!($ty with_types_in __shoal_worker_export);
    };
}
