//! The `shoal` binary as a user runs it: `shoal run` and `shoal validate`
//! against real components compiled from `examples/`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::time::Duration;

use shoal_tests::{Running, http_request, repo_root, shoal, wasm_path};

const LIMIT: Duration = Duration::from_secs(60);

fn path(name: &str) -> String {
    wasm_path(name).unwrap().display().to_string()
}

#[test]
fn hello_http_served_by_shoal_run_answers_http() {
    let data = tempfile::tempdir().unwrap();
    let wasm = path("hello-http");
    let data_dir = data.path().display().to_string();
    let mut server = Running::start(&[
        "run",
        &wasm,
        "--http",
        "127.0.0.1:0",
        "--data-dir",
        &data_dir,
        "--env",
        "GREETING=Ahoy",
    ])
    .unwrap();
    let line = server
        .wait_for_line("serving hello-http on http://", LIMIT)
        .unwrap();
    let addr: SocketAddr = line
        .rsplit("http://")
        .next()
        .unwrap()
        .trim_end_matches('/')
        .parse()
        .unwrap();

    let reply = http_request(addr, "GET", "/orders/42", Duration::from_secs(10)).unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, "Ahoy! You asked for /orders/42\n");

    let reply = http_request(addr, "DELETE", "/", Duration::from_secs(10)).unwrap();
    assert_eq!(reply.status, 405);

    // Many requests, each in a fresh instance.
    for i in 0..50 {
        let reply = http_request(addr, "GET", &format!("/n/{i}"), Duration::from_secs(10)).unwrap();
        assert_eq!(reply.body, format!("Ahoy! You asked for /n/{i}\n"));
    }
    assert_eq!(
        server.stop(Duration::from_secs(10)).unwrap(),
        Some(0),
        "clean exit on SIGTERM"
    );
}

#[test]
fn echo_worker_invoked_by_shoal_run_prints_its_input() {
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().display().to_string();
    let out = shoal(
        &[
            "run",
            &path("echo-worker"),
            "--invoke",
            "hello, shoal",
            "--data-dir",
            &data_dir,
        ],
        LIMIT,
    )
    .unwrap();
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(out.stdout, "hello, shoal\n");
    // The guest's own output is tagged with component and invocation.
    assert!(
        out.stderr
            .contains("[echo-worker#0 stdout] echoing 12 bytes from shoal.run"),
        "{}",
        out.stderr
    );
}

/// Runs `shoal ARGS…` and checks that it fails (exit 1) saying `expected`.
fn fails_with(args: &[&str], expected: &str) {
    let out = shoal(args, LIMIT).unwrap();
    assert_eq!(out.code, Some(1), "{args:?}: {}", out.stderr);
    assert!(out.stderr.contains(expected), "{args:?}: {}", out.stderr);
}

#[test]
fn limits_given_as_flags_stop_hostile_guests() {
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().display().to_string();
    let burner = path("fuel-burner");
    let hog = path("memory-hog");
    fails_with(
        &[
            "run",
            &burner,
            "--invoke",
            "x",
            "--fuel",
            "1000000",
            "--data-dir",
            &data_dir,
        ],
        "the guest ran out of fuel (budget 1000000 units)",
    );
    fails_with(
        &[
            "run",
            &burner,
            "--invoke",
            "x",
            "--fuel",
            "off",
            "--timeout",
            "200ms",
            "--data-dir",
            &data_dir,
        ],
        "ran past its deadline of 200ms",
    );
    fails_with(
        &[
            "run",
            &hog,
            "--invoke",
            "x",
            "--memory",
            "8MiB",
            "--data-dir",
            &data_dir,
        ],
        "hit its memory limit of 8MiB",
    );
}

#[test]
fn bad_components_get_clear_errors_and_no_panic() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data").display().to_string();
    let core = dir.path().join("core.wasm");
    std::fs::write(&core, b"\0asm\x01\0\0\0").unwrap();
    let truncated = dir.path().join("truncated.wasm");
    let echo = std::fs::read(wasm_path("echo-worker").unwrap()).unwrap();
    std::fs::write(&truncated, &echo[..echo.len() / 3]).unwrap();
    let missing = dir.path().join("missing.wasm");

    let cases: Vec<(String, Vec<&str>, &str)> = vec![
        (
            core.display().to_string(),
            vec![],
            "is a core WebAssembly module, not a component",
        ),
        (
            truncated.display().to_string(),
            vec![],
            "is not a valid component",
        ),
        (missing.display().to_string(), vec![], "cannot read"),
        (
            path("hello-http"),
            vec!["--kind", "worker", "--invoke", "x"],
            "does not target the worker world",
        ),
        (path("echo-worker"), vec![], "pass --invoke DATA"),
    ];
    for (file, extra, expected) in cases {
        let mut args = vec!["run", file.as_str(), "--data-dir", &data_dir];
        args.extend(extra);
        let out = shoal(&args, LIMIT).unwrap();
        assert_eq!(out.code, Some(1), "{args:?}: {}", out.stderr);
        assert!(out.stderr.contains(expected), "{args:?}: {}", out.stderr);
        assert!(!out.stderr.contains("panicked"), "{args:?}: {}", out.stderr);
    }
}

#[test]
fn bad_usage_exits_with_two() {
    let out = shoal(&["run"], LIMIT).unwrap();
    assert_eq!(out.code, Some(2));
    let out = shoal(&["run", "x.wasm", "--memory", "lots"], LIMIT).unwrap();
    assert_eq!(out.code, Some(2));
    assert!(
        out.stderr.contains("invalid size \"lots\""),
        "{}",
        out.stderr
    );
    let out = shoal(&["frobnicate"], LIMIT).unwrap();
    assert_eq!(out.code, Some(2));
}

#[test]
fn every_example_spec_is_valid() {
    let examples = repo_root().join("examples");
    let mut specs: Vec<String> = std::fs::read_dir(&examples)
        .unwrap()
        .map(|e| e.unwrap().path().join("app.toml"))
        .filter(|p| p.is_file())
        .map(|p| p.display().to_string())
        .collect();
    specs.sort();
    assert!(specs.len() >= 5, "{specs:?}");
    let mut args = vec!["validate"];
    args.extend(specs.iter().map(String::as_str));
    let out = shoal(&args, LIMIT).unwrap();
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(out.stdout.lines().count(), specs.len());
}

#[test]
fn invalid_specs_are_refused_with_every_problem_and_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "malformed.toml",
            "name = \"x\"\n[components.web\n",
            "malformed.toml:2:",
        ),
        (
            "unknown.toml",
            "name = \"x\"\n[components.web]\nsource = \"a.wasm\"\nkind = \"http\"\nroute = \"/\"\nreplica = 2\n",
            "unknown.toml:6:1: components.web.replica: unknown field `replica`",
        ),
        (
            "sizes.toml",
            "name = \"x\"\n[components.w]\nsource = \"a.wasm\"\nkind = \"worker\"\nlimits = { memory = \"64 megs\" }\n",
            "components.w.limits.memory: invalid size \"64 megs\"",
        ),
    ];
    for (file, text, expected) in cases {
        let spec = dir.path().join(file);
        std::fs::write(&spec, text).unwrap();
        let out = shoal(&["validate", &spec.display().to_string()], LIMIT).unwrap();
        assert_eq!(out.code, Some(1), "{file}: {}", out.stderr);
        assert!(out.stderr.contains(expected), "{file}: {}", out.stderr);
        assert!(!out.stderr.contains("panicked"));
    }
}
