//! Whole numbers in queries, held to the bound the document states.
//!
//! Every count and time a query takes is at most
//! [`MAX_SAFE_INTEGER`]: what a JavaScript client, or any JSON reader,
//! keeps exactly. A larger one is refused with a 400 that names the
//! bound, rather than read as something else.

use serde::{Deserialize, Deserializer};
use shoal_api::bounds::MAX_SAFE_INTEGER;

/// A `u64` of at most [`MAX_SAFE_INTEGER`].
pub(crate) fn safe<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let n = u64::deserialize(d)?;
    if n > MAX_SAFE_INTEGER {
        return Err(serde::de::Error::custom(format!(
            "{n} is larger than {MAX_SAFE_INTEGER}, the largest whole number the API takes"
        )));
    }
    Ok(n)
}

/// An optional `u64` of at most [`MAX_SAFE_INTEGER`].
pub(crate) fn safe_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    struct Safe(#[serde(deserialize_with = "safe")] u64);
    Ok(Option::<Safe>::deserialize(d)?.map(|Safe(n)| n))
}
