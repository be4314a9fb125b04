//! App specs several test files apply, written once. `SOURCE(name)` is the
//! compiled example `name` (see [`crate::cluster::Cluster::spec`]).

/// `default/hello`: `hello-http` serving `/`, one replica.
pub const HELLO: &str = r#"
name = "hello"
[components.web]
source = "SOURCE(hello-http)"
kind = "http"
route = "/"
limits = { memory = "16MiB", concurrency = 4 }
"#;
