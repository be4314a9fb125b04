//! The API against its own OpenAPI document. Schemathesis reads
//! `/openapi.json` and sends requests made from it, valid ones and ones
//! that break the schema; the run fails on an undocumented status or
//! content type, an answer outside its schema, a 5xx, a schema-valid
//! request refused, or a call that ignores its token. Real nats-server,
//! scheduler and host, real components. The run's settings and its few
//! exceptions, each with its reason, are in `tests/schemathesis.toml`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

use shoal_tests::cluster::Cluster;
use shoal_tests::repo_root;
use shoal_tests::specs::HELLO;

/// `default/echo`: a worker, for `invoke`.
const ECHO: &str = r#"
name = "echo"
[components.echo]
source = "SOURCE(echo-worker)"
kind = "worker"
limits = { memory = "16MiB", concurrency = 4 }
"#;

/// The first number after `label` in the run's summary (on its line or
/// the next).
fn figure(summary: &str, label: &str) -> Option<usize> {
    let after = &summary[summary.rfind(label)? + label.len()..];
    after
        .split(|c: char| !c.is_ascii_digit())
        .find(|s| !s.is_empty())?
        .parse()
        .ok()
}

#[test]
fn the_api_keeps_to_its_document() {
    let schemathesis = repo_root().join(".tools/schemathesis/bin/schemathesis");
    assert!(
        schemathesis.exists(),
        "{} is missing: run scripts/setup",
        schemathesis.display()
    );
    let mut cluster = Cluster::start().unwrap();
    cluster.start_host("h1", "").unwrap();
    for (file, spec) in [("hello.toml", HELLO), ("echo.toml", ECHO)] {
        let path = cluster.spec(file, spec).unwrap();
        cluster.ok(&["apply", "--wait", &path]).unwrap();
    }
    let token = cluster.admin_token().unwrap();
    let document: serde_json::Value = serde_json::from_str(
        &shoal_tests::http_request(
            cluster.api().trim_start_matches("http://").parse().unwrap(),
            "GET",
            "/openapi.json",
            std::time::Duration::from_secs(5),
        )
        .unwrap()
        .body,
    )
    .unwrap();
    let operations: usize = document["paths"]
        .as_object()
        .unwrap()
        .values()
        .map(|ops| ops.as_object().unwrap().len())
        .sum();

    // Hypothesis keeps its example database in the working directory: the
    // cluster's, so the tree stays clean.
    let out = Command::new(&schemathesis)
        .current_dir(cluster.dir())
        .env("NO_COLOR", "1")
        .args([
            "--config-file",
            &repo_root()
                .join("tests/schemathesis.toml")
                .display()
                .to_string(),
            "run",
            &format!("{}/openapi.json", cluster.api()),
            "--header",
            &format!("Authorization: Bearer {token}"),
            "--phases",
            "examples,coverage,fuzzing",
        ])
        .output()
        .unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "the API strays from its document:\n{report}"
    );
    // Every operation but the one the settings leave out (revoking the
    // run's own token) was tested, with many cases.
    assert_eq!(figure(&report, "Tested:"), Some(operations - 1), "{report}");
    let generated = figure(&report, "Test cases:").unwrap_or(0);
    assert!(generated >= 1000, "only {generated} cases:\n{report}");
}
