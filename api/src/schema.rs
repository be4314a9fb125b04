//! How the API's own value types appear in its OpenAPI document.
//!
//! Most wire types derive `utoipa::ToSchema` next to their serde derives,
//! which reads the same `serde` attributes. The types here serialize by
//! hand (a [`Name`] is a checked string, a [`ByteSize`] a string or a
//! number), so their schemas are written here, next to one another, with
//! the pattern or the form the parser accepts.

use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Schema, Type};
use utoipa::openapi::{KnownFormat, RefOr, SchemaFormat};
use utoipa::{PartialSchema, ToSchema};

use crate::access::{Resource, Verb};
use crate::resources::PodState;
use crate::token::TokenId;
use crate::wire::HostId;
use crate::wire::ReplicaState;
use crate::{ByteSize, Digest, DurationSpec, Fuel, Name, Share};

/// A string schema with a pattern (or none) and a description.
fn string(pattern: Option<&str>, description: &str) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(pattern)
        .description(Some(description))
        .into()
}

/// A string schema with one of fixed words.
fn words(words: impl IntoIterator<Item = &'static str>, description: &str) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(words))
        .description(Some(description))
        .into()
}

/// `schema!(Type, expression)`: `Type`'s schema is the expression, and it
/// is a named component of the document.
macro_rules! schema {
    ($($t:ty => $schema:expr;)*) => {$(
        impl PartialSchema for $t {
            fn schema() -> RefOr<Schema> {
                $schema
            }
        }
        impl ToSchema for $t {}
    )*};
}

schema! {
    Name => string(
        Some("^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$"),
        "A name: 1 to 63 lowercase letters, digits and '-', starting with a letter, not ending with '-'",
    );
    HostId => string(
        Some("^[A-Za-z0-9_-]{1,64}$"),
        "A host's id: 1 to 64 ASCII letters, digits, '-' and '_'",
    );
    Digest => string(
        Some("^(sha256:)?[0-9a-f]{64}$"),
        "The sha256 of a component's bytes, as `sha256:` and 64 hex digits",
    );
    TokenId => string(Some("^[0-9a-f]{16}$"), "A token's public id: 16 hex digits");
    DurationSpec => string(
        Some("^([0-9]+(ms|s|m|h))+$"),
        "A duration such as \"500ms\", \"2s\", \"1m30s\" or \"1h\"",
    );
    Share => string(
        Some("^[0-9]+(\\.[0-9]+)?%$"),
        "A share of requests, such as \"5%\" or \"0.5%\"",
    );
    ByteSize => OneOfBuilder::new()
        .item(string(
            Some("^[0-9][0-9_]*\\s*(B|KiB|Ki|MiB|Mi|GiB|Gi|TiB|Ti|KB|kB|K|k|MB|M|GB|G|TB|T)?$"),
            "A size such as \"64MiB\"",
        ))
        .item(
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .format(Some(SchemaFormat::KnownFormat(KnownFormat::UInt64)))
                .minimum(Some(0))
                .description(Some("A size in bytes")),
        )
        .description(Some("A size: bytes, or a string with a unit"))
        .into();
    Fuel => OneOfBuilder::new()
        .item(
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .format(Some(SchemaFormat::KnownFormat(KnownFormat::UInt64)))
                .minimum(Some(1)),
        )
        .item(words(["off"], "No fuel limit: the deadline alone bounds an invocation"))
        .description(Some("Fuel units per invocation (about one a Wasm instruction), or \"off\""))
        .into();
    Verb => words(Verb::ALL.iter().map(|v| v.word()), "A verb a role may grant");
    Resource => words(Resource::ALL.iter().map(|r| r.word()), "A resource a verb acts on");
}

impl PartialSchema for PodState {
    fn schema() -> RefOr<Schema> {
        OneOfBuilder::new()
            .item(
                ObjectBuilder::new()
                    .property("state", words(["pending"], "Not placed"))
                    .property("reason", string(None, "Why not"))
                    .required("state")
                    .required("reason"),
            )
            .item(utoipa::openapi::Ref::from_schema_name(ReplicaState::name()))
            .description(Some(
                "A replica's state: pending with the reason, or as its host reports it",
            ))
            .into()
    }
}

impl ToSchema for PodState {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push((ReplicaState::name().into_owned(), ReplicaState::schema()));
        ReplicaState::schemas(schemas);
    }
}

/// Headers as `[name, value]` pairs: an array of two strings each.
pub(crate) fn header_pairs() -> RefOr<Schema> {
    let pair = utoipa::openapi::schema::ArrayBuilder::new()
        .prefix_items([
            string(Some("^[!-9;-~]+$"), "The name: printable ASCII but ':'"),
            string(Some("^[^\\r\\n]*$"), "The value: no line break"),
        ])
        .items(utoipa::openapi::schema::ArrayItems::False)
        .min_items(Some(2))
        .max_items(Some(2));
    utoipa::openapi::schema::ArrayBuilder::new()
        .items(pair)
        .description(Some("Headers as [name, value] pairs"))
        .into()
}
