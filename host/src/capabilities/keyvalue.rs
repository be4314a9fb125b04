//! Key-value: a bucket private to the app.
//!
//! No bucket is granted yet, so every operation is refused as not granted.

use std::sync::Arc;

use crate::bindings::keyvalue::{Error, Host};

/// The key-value bucket granted to one component.
pub struct KeyValue {
    component: Arc<str>,
}

impl KeyValue {
    /// No bucket granted to `component`.
    pub fn new(component: Arc<str>) -> Self {
        KeyValue { component }
    }

    fn denied(&self) -> Error {
        Error::NotGranted(format!(
            "component {} has no key-value bucket: key-value needs a cluster (`shoal up`)",
            self.component
        ))
    }
}

impl Host for KeyValue {
    async fn get(&mut self, _key: String) -> Result<Option<Vec<u8>>, Error> {
        Err(self.denied())
    }

    async fn set(&mut self, _key: String, _value: Vec<u8>) -> Result<(), Error> {
        Err(self.denied())
    }

    async fn delete(&mut self, _key: String) -> Result<(), Error> {
        Err(self.denied())
    }

    async fn list_keys(&mut self) -> Result<Vec<String>, Error> {
        Err(self.denied())
    }
}
