//! The component runtime against real components compiled from `examples/`:
//! limits stop hostile guests, the host goes on serving, nothing leaks
//! between invocations, and the precompile cache is used on a second start.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use shoal_api::{ByteSize, ComponentKind, Digest, DurationSpec, Fuel, Limits};
use shoal_host::{
    CacheStatus, ComponentSettings, InvokeError, LoadError, LoadedComponent, MemorySink, Message,
    Runtime, RuntimeOptions, Stream,
};
use shoal_tests::wasm_bytes;

fn runtime(dir: &tempfile::TempDir) -> (Runtime, MemorySink) {
    let sink = MemorySink::default();
    let rt = Runtime::new(
        RuntimeOptions::new(dir.path().join("cache")).log_sink(Arc::new(sink.clone())),
    )
    .unwrap();
    (rt, sink)
}

fn limits(memory: &str, fuel: Fuel, timeout: &str) -> Limits {
    Limits {
        memory: ByteSize::parse(memory).unwrap(),
        fuel,
        timeout: DurationSpec::parse(timeout).unwrap(),
        concurrency: 8,
    }
}

fn load(rt: &Runtime, example: &str, limits: Limits) -> Arc<LoadedComponent> {
    let settings = ComponentSettings {
        kind: None,
        limits,
        ..Default::default()
    };
    rt.load(example, &wasm_bytes(example).unwrap(), settings)
        .unwrap()
}

fn msg(payload: &str) -> Message {
    Message {
        subject: "test.subject".into(),
        headers: vec![("trace".into(), "1".into())],
        payload: payload.as_bytes().to_vec(),
    }
}

async fn echo_works(echo: &LoadedComponent) {
    let (reply, _) = echo
        .invoke(msg("still here"))
        .await
        .expect("the host goes on serving");
    assert_eq!(reply.payload, b"still here");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_worker_returns_its_input_and_its_output_is_captured() {
    let dir = tempfile::tempdir().unwrap();
    let (rt, sink) = runtime(&dir);
    let echo = load(&rt, "echo-worker", Limits::default());
    assert_eq!(echo.kind(), ComponentKind::Worker);
    let (reply, usage) = echo.invoke(msg("hello, shoal")).await.unwrap();
    assert_eq!(reply.payload, b"hello, shoal");
    assert_eq!(
        reply.headers,
        vec![("echoed-from".to_string(), "test.subject".to_string())]
    );
    assert!(usage.fuel.unwrap() > 0);

    echo.invoke(msg("again")).await.unwrap();
    let lines = sink.lines();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[0].text, "echoing 12 bytes from test.subject");
    assert_eq!(lines[1].text, "echoing 5 bytes from test.subject");
    assert!(
        lines
            .iter()
            .all(|l| &*l.component == "echo-worker" && l.stream == Stream::Stdout)
    );
    assert_ne!(
        lines[0].invocation, lines[1].invocation,
        "each line names its invocation"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counter_starts_from_scratch_on_every_invocation() {
    let dir = tempfile::tempdir().unwrap();
    let (rt, _) = runtime(&dir);
    let counter = load(&rt, "counter", Limits::default());
    for _ in 0..5 {
        let (reply, _) = counter.invoke(msg("")).await.unwrap();
        assert_eq!(
            reply.payload, b"1",
            "state leaked from an earlier invocation"
        );
    }
    // Concurrent invocations are isolated too.
    let calls: Vec<_> = (0..8)
        .map(|_| {
            let c = counter.clone();
            tokio::spawn(async move { c.invoke(msg("")).await })
        })
        .collect();
    for call in calls {
        assert_eq!(call.await.unwrap().unwrap().0.payload, b"1");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fuel_burner_is_stopped_by_its_fuel_budget() {
    let dir = tempfile::tempdir().unwrap();
    let (rt, _) = runtime(&dir);
    let burner = load(
        &rt,
        "fuel-burner",
        limits("16MiB", Fuel::Units(5_000_000), "10s"),
    );
    let echo = load(&rt, "echo-worker", Limits::default());
    let started = Instant::now();
    let err = burner.invoke(msg("x")).await.unwrap_err();
    assert_eq!(err, InvokeError::FuelExhausted { budget: 5_000_000 });
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "fuel, not the deadline, stopped it"
    );
    assert!(err.to_string().contains("ran out of fuel"), "{err}");
    echo_works(&echo).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fuel_burner_with_fuel_off_is_stopped_by_its_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let (rt, _) = runtime(&dir);
    let burner = load(&rt, "fuel-burner", limits("16MiB", Fuel::Off, "300ms"));
    let echo = load(&rt, "echo-worker", Limits::default());
    let started = Instant::now();
    let err = burner.invoke(msg("x")).await.unwrap_err();
    let took = started.elapsed();
    assert_eq!(
        err,
        InvokeError::Deadline {
            timeout: Duration::from_millis(300)
        }
    );
    assert!(
        took >= Duration::from_millis(300),
        "stopped early: {took:?}"
    );
    assert!(took < Duration::from_secs(3), "stopped late: {took:?}");
    echo_works(&echo).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_guest_does_not_stall_others() {
    let dir = tempfile::tempdir().unwrap();
    let (rt, _) = runtime(&dir);
    let burner = load(&rt, "fuel-burner", limits("16MiB", Fuel::Off, "2s"));
    let echo = load(&rt, "echo-worker", Limits::default());
    // Two burners on a two-thread runtime: without the per-tick yield the
    // echo below would wait for a deadline.
    let busy: Vec<_> = (0..2)
        .map(|_| {
            let b = burner.clone();
            tokio::spawn(async move { b.invoke(msg("x")).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    echo_works(&echo).await;
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "echo waited {:?}",
        started.elapsed()
    );
    for b in busy {
        assert!(matches!(
            b.await.unwrap(),
            Err(InvokeError::Deadline { .. })
        ));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_hog_is_stopped_at_its_memory_cap() {
    let dir = tempfile::tempdir().unwrap();
    let (rt, sink) = runtime(&dir);
    let hog = load(&rt, "memory-hog", limits("24MiB", Fuel::Off, "10s"));
    let echo = load(
        &rt,
        "echo-worker",
        limits("24MiB", Fuel::Units(10_000_000), "2s"),
    );
    match hog.invoke(msg("x")).await.unwrap_err() {
        InvokeError::MemoryLimit { limit, asked } => {
            assert_eq!(limit, ByteSize::mib(24));
            assert!(asked > limit, "asked {asked} under the limit {limit}");
        }
        other => panic!("expected a memory limit, got {other:?}"),
    }
    // The guest's own complaint is captured on stderr.
    assert!(
        sink.lines()
            .iter()
            .any(|l| l.stream == Stream::Stderr && l.text.contains("memory allocation")),
        "{:?}",
        sink.lines()
    );
    // A guest under the same limit succeeds.
    echo_works(&echo).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_start_loads_from_the_precompile_cache() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = wasm_bytes("echo-worker").unwrap();
    {
        let (rt, _) = runtime(&dir);
        let first = rt
            .load("echo-worker", &bytes, ComponentSettings::default())
            .unwrap();
        assert_eq!(first.cache_status(), CacheStatus::Compiled);
        assert!(rt.cache().entry_path(&first.digest()).is_file());
    }
    // A new runtime, as after a restart: nothing is compiled.
    let (rt, _) = runtime(&dir);
    let second = rt
        .load("echo-worker", &bytes, ComponentSettings::default())
        .unwrap();
    assert_eq!(second.cache_status(), CacheStatus::Hit);
    echo_works(&second).await;
    // Loaded again while it runs, it shares the code already loaded.
    let again = rt
        .load("echo-worker", &bytes, ComponentSettings::default())
        .unwrap();
    assert_eq!(again.cache_status(), CacheStatus::Shared);
    echo_works(&again).await;
    drop((second, again));

    // A corrupt entry is detected and recompiled, never executed.
    let entry = rt.cache().entry_path(&Digest::of(&bytes));
    let mut data = std::fs::read(&entry).unwrap();
    let mid = data.len() / 2;
    data[mid] ^= 0xff;
    std::fs::write(&entry, &data).unwrap();
    let third = rt
        .load("echo-worker", &bytes, ComponentSettings::default())
        .unwrap();
    assert_eq!(third.cache_status(), CacheStatus::Compiled);
    echo_works(&third).await;
    drop(third);

    // A truncated entry too.
    std::fs::write(&entry, &data[..100]).unwrap();
    let fourth = rt
        .load("echo-worker", &bytes, ComponentSettings::default())
        .unwrap();
    assert_eq!(fourth.cache_status(), CacheStatus::Compiled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_components_are_refused_with_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (rt, _) = runtime(&dir);
    let load = |name: &str, bytes: &[u8], kind| {
        let settings = ComponentSettings {
            kind,
            ..Default::default()
        };
        rt.load(name, bytes, settings).unwrap_err()
    };

    let err = load("text", b"this is not wasm at all", None);
    assert!(matches!(err, LoadError::NotWasm { .. }), "{err:?}");

    // The smallest core module: header only.
    let err = load("core", b"\0asm\x01\0\0\0", None);
    assert!(matches!(err, LoadError::CoreModule { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains("core WebAssembly module, not a component"),
        "{err}"
    );

    let echo = wasm_bytes("echo-worker").unwrap();
    for cut in [6, 100, echo.len() / 2, echo.len() - 1] {
        let err = load("truncated", &echo[..cut], None);
        assert!(
            matches!(err, LoadError::Invalid { .. }),
            "cut at {cut}: {err:?}"
        );
        assert!(
            err.to_string()
                .contains("truncated is not a valid component"),
            "{err}"
        );
    }

    let http = wasm_bytes("hello-http").unwrap();
    let err = load("hello-http", &http, Some(ComponentKind::Worker));
    assert!(matches!(err, LoadError::WrongWorld { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "hello-http does not target the worker world: it lacks the export \
         shoal:workload/handler@0.1.0 (it looks like an http component)"
    );
    let err = load("echo-worker", &echo, Some(ComponentKind::Job));
    assert!(
        err.to_string().contains("lacks the export wasi:cli/run"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asking_a_component_for_the_wrong_thing_fails_that_call_only() {
    let dir = tempfile::tempdir().unwrap();
    let (rt, _) = runtime(&dir);
    let http = load(&rt, "hello-http", Limits::default());
    let err = http.invoke(msg("x")).await.unwrap_err();
    assert!(matches!(err, InvokeError::WrongKind { .. }), "{err:?}");
    let echo = load(&rt, "echo-worker", Limits::default());
    assert!(echo.run_job().await.is_err());
    echo_works(&echo).await;
}
