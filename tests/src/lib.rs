//! Shared start-up code for Shoal's end-to-end tests: where the compiled
//! example components and the `shoal` binary are, and how to run a
//! process under a time limit and talk HTTP to it.
//!
//! The components come from the project's own build step
//! (`scripts/build-examples`), never from a build script calling cargo.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use rustix::process::Signal;

pub mod cluster;
pub mod control;
pub mod recorder;
pub mod specs;

/// The repository's root directory.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".."))
}

/// The compiled example `name` (`target/wasm/<name>.wasm`).
pub fn wasm_path(name: &str) -> anyhow::Result<PathBuf> {
    let path = repo_root().join("target/wasm").join(format!("{name}.wasm"));
    if !path.is_file() {
        bail!(
            "{} is missing: build the example components first with scripts/build-examples",
            path.display()
        );
    }
    Ok(path)
}

/// The bytes of the compiled example `name`.
pub fn wasm_bytes(name: &str) -> anyhow::Result<Vec<u8>> {
    let path = wasm_path(name)?;
    std::fs::read(&path).with_context(|| format!("reading {}", path.display()))
}

/// The `shoal` binary of this build (`target/<profile>/shoal`).
pub fn shoal_bin() -> anyhow::Result<PathBuf> {
    // Test executables live in target/<profile>/deps/.
    let exe = std::env::current_exe()?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| anyhow!("cannot find the target directory from {}", exe.display()))?;
    let bin = profile_dir.join(format!("shoal{}", std::env::consts::EXE_SUFFIX));
    if !bin.is_file() {
        bail!(
            "{} is missing: build it first with `cargo build -p shoal-cli`",
            bin.display()
        );
    }
    // `cargo test -p shoal-tests` does not rebuild the binary: refuse to
    // test an old one rather than pass or fail on stale code.
    static FRESH: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    FRESH
        .get_or_init(|| {
            let built = std::fs::metadata(&bin)
                .and_then(|m| m.modified())
                .map_err(|e| e.to_string())?;
            let root = repo_root();
            let newest = ["api", "host", "scheduler", "cli"]
                .iter()
                .filter_map(|c| newest_file(&root.join(c).join("src")))
                .max_by_key(|(t, _)| *t);
            match newest {
                Some((changed, file)) if changed > built => Err(format!(
                    "{} is older than {}: rebuild it with `cargo build -p shoal-cli` (or run scripts/test)",
                    bin.display(),
                    file.display()
                )),
                _ => Ok(()),
            }
        })
        .clone()
        .map_err(|e| anyhow!(e))?;
    Ok(bin)
}

/// The most recently modified Rust source under `dir`, and when.
fn newest_file(dir: &Path) -> Option<(std::time::SystemTime, PathBuf)> {
    let mut newest: Option<(std::time::SystemTime, PathBuf)> = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let found = if path.is_dir() {
            newest_file(&path)
        } else if path.extension().is_none_or(|e| e != "rs") {
            // Only sources make the binary; snapshots and data do not.
            None
        } else {
            entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .map(|t| (t, path))
        };
        if let Some(found) = found
            && newest.as_ref().is_none_or(|(t, _)| found.0 > *t)
        {
            newest = Some(found);
        }
    }
    newest
}

/// Starts `shoal ARGS…` with piped output and extra environment variables.
/// Every `shoal` a test starts gets a client config of its own unless the
/// test names one: never the user's.
fn spawn_shoal(args: &[&str], env: &[(&str, &str)]) -> anyhow::Result<Child> {
    let own_config = std::env::temp_dir()
        .join(format!("shoal-tests-{}", std::process::id()))
        .join("config.toml");
    Command::new(shoal_bin()?)
        .args(args)
        .env("SHOAL_CONFIG", own_config)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting shoal")
}

/// What a finished command left behind.
#[derive(Debug)]
pub struct Output {
    /// The exit code (`None` when killed by a signal).
    pub code: Option<i32>,
    /// Everything written to stdout.
    pub stdout: String,
    /// Everything written to stderr.
    pub stderr: String,
}

/// Runs `shoal ARGS…` to completion, killing it after `limit`.
pub fn shoal(args: &[&str], limit: Duration) -> anyhow::Result<Output> {
    shoal_with_env(args, &[], limit)
}

/// Runs `shoal ARGS…` with extra environment variables, killing it after `limit`.
pub fn shoal_with_env(
    args: &[&str],
    env: &[(&str, &str)],
    limit: Duration,
) -> anyhow::Result<Output> {
    let mut child = spawn_shoal(args, env)?;
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("shoal {args:?} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Ok(Output {
        code: status.code(),
        stdout: stdout.recv_timeout(limit).unwrap_or_default(),
        stderr: stderr.recv_timeout(limit).unwrap_or_default(),
    })
}

fn drain<R: Read + Send + 'static>(pipe: Option<R>) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_string(&mut text);
        }
        let _ = tx.send(text);
    });
    rx
}

/// A long-running `shoal` process, killed when dropped.
pub struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Running {
    /// Starts `shoal ARGS…`, collecting stdout and stderr lines.
    pub fn start(args: &[&str]) -> anyhow::Result<Self> {
        Running::start_with_env(args, &[])
    }

    /// Starts `shoal ARGS…` with extra environment variables.
    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> anyhow::Result<Self> {
        let mut child = spawn_shoal(args, env)?;
        let (tx, lines) = mpsc::channel();
        forward_lines(child.stdout.take(), tx.clone());
        forward_stderr(child.stderr.take(), tx);
        Ok(Running {
            child,
            lines,
            seen: Vec::new(),
        })
    }

    /// Waits up to `limit` for a line containing `needle`, and returns it.
    pub fn wait_for_line(&mut self, needle: &str, limit: Duration) -> anyhow::Result<String> {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return Ok(line);
                    }
                }
                Err(_) => bail!(
                    "no line containing {needle:?} within {limit:?}; output so far:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// Every line seen so far, and any waiting.
    pub fn output(&mut self) -> Vec<String> {
        while let Ok(line) = self.lines.try_recv() {
            self.seen.push(line);
        }
        self.seen.clone()
    }

    /// Freezes the process (SIGSTOP), as a hung machine would be.
    pub fn pause(&self) {
        self.signal(Signal::STOP);
    }

    /// Lets a frozen process go on (SIGCONT).
    pub fn resume(&self) {
        self.signal(Signal::CONT);
    }

    fn signal(&self, signal: Signal) {
        let pid = i32::try_from(self.child.id())
            .ok()
            .and_then(rustix::process::Pid::from_raw);
        if let Some(pid) = pid {
            let _ = rustix::process::kill_process(pid, signal);
        }
    }

    /// Sends SIGTERM and waits up to `limit` for the exit code.
    /// Waits up to `limit` for the process to exit by itself; its exit code.
    pub fn wait_exit(&mut self, limit: Duration) -> anyhow::Result<Option<i32>> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status.code());
            }
            if Instant::now() > deadline {
                bail!("shoal did not exit within {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stops the process with SIGTERM, waiting up to `limit`; its exit code.
    pub fn stop(&mut self, limit: Duration) -> anyhow::Result<Option<i32>> {
        self.signal(Signal::TERM);
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status.code());
            }
            if Instant::now() > deadline {
                bail!("shoal did not stop within {limit:?} of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn forward_lines(pipe: Option<ChildStdout>, tx: mpsc::Sender<String>) {
    if let Some(pipe) = pipe {
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
    }
}

fn forward_stderr(pipe: Option<ChildStderr>, tx: mpsc::Sender<String>) {
    if let Some(pipe) = pipe {
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
    }
}

/// A minimal HTTP/1.1 response.
#[derive(Debug)]
pub struct HttpReply {
    /// The status code.
    pub status: u16,
    /// The body, decoded from chunked transfer encoding if needed.
    pub body: String,
    /// Headers, names in lower case.
    pub headers: Vec<(String, String)>,
}

impl HttpReply {
    /// The first header called `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Sends one request and reads the whole response, within `limit`.
pub fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    limit: Duration,
) -> anyhow::Result<HttpReply> {
    http_request_to(addr, &addr.to_string(), method, path, limit)
}

/// Like [`http_request`], with `host` as the `Host` header.
pub fn http_request_to(
    addr: SocketAddr,
    host: &str,
    method: &str,
    path: &str,
    limit: Duration,
) -> anyhow::Result<HttpReply> {
    http_request_with(addr, host, &[], method, path, limit)
}

/// Like [`http_request`], with a bearer token (an API call).
pub fn http_request_as(
    addr: SocketAddr,
    token: &str,
    method: &str,
    path: &str,
    limit: Duration,
) -> anyhow::Result<HttpReply> {
    let auth = format!("Bearer {token}");
    http_request_with(
        addr,
        &addr.to_string(),
        &[("Authorization", &auth)],
        method,
        path,
        limit,
    )
}

/// Like [`http_request`], with a body.
pub fn http_send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &[u8],
    limit: Duration,
) -> anyhow::Result<HttpReply> {
    http_exchange(addr, &addr.to_string(), &[], method, path, body, limit)
}

/// Sends only the head of a request declaring a `content_length`-byte
/// body, none of which is sent, and reads the response: for limits a
/// server must enforce from the headers alone.
pub fn http_head_only(
    addr: SocketAddr,
    method: &str,
    path: &str,
    content_length: usize,
    limit: Duration,
) -> anyhow::Result<HttpReply> {
    let mut stream = TcpStream::connect_timeout(&addr, limit)?;
    stream.set_read_timeout(Some(limit))?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {content_length}\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    parse_response(&raw)
}

/// Like [`http_request`], with a bearer token and a JSON body (an API
/// call that takes one).
pub fn http_post_json_as(
    addr: SocketAddr,
    token: &str,
    path: &str,
    body: &serde_json::Value,
    limit: Duration,
) -> anyhow::Result<HttpReply> {
    let auth = format!("Bearer {token}");
    http_exchange(
        addr,
        &addr.to_string(),
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        "POST",
        path,
        body.to_string().as_bytes(),
        limit,
    )
}

/// An API call as `token` with extra `headers` and a raw `body`: for the
/// requests a client gets wrong.
pub fn http_call_as(
    addr: SocketAddr,
    token: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    limit: Duration,
) -> anyhow::Result<HttpReply> {
    let auth = format!("Bearer {token}");
    let mut all = vec![("Authorization", auth.as_str())];
    all.extend_from_slice(headers);
    http_exchange(addr, &addr.to_string(), &all, method, path, body, limit)
}

/// One HTTP/1.1 request with `host` as the `Host` header and `headers`.
pub fn http_request_with(
    addr: SocketAddr,
    host: &str,
    headers: &[(&str, &str)],
    method: &str,
    path: &str,
    limit: Duration,
) -> anyhow::Result<HttpReply> {
    http_exchange(addr, host, headers, method, path, &[], limit)
}

/// One HTTP/1.1 request with `host` as the `Host` header, `headers` and
/// a `body`, read to the end of its response.
pub fn http_exchange(
    addr: SocketAddr,
    host: &str,
    headers: &[(&str, &str)],
    method: &str,
    path: &str,
    body: &[u8],
    limit: Duration,
) -> anyhow::Result<HttpReply> {
    let mut stream = TcpStream::connect_timeout(&addr, limit)?;
    stream.set_read_timeout(Some(limit))?;
    stream.set_write_timeout(Some(limit))?;
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )?;
    stream.write_all(body)?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    parse_response(&raw)
}

/// A whole HTTP/1.1 response as read off the wire.
fn parse_response(raw: &[u8]) -> anyhow::Result<HttpReply> {
    let text = String::from_utf8_lossy(raw).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("malformed HTTP response: {text:?}"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("no status in {head:?}"))?;
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
    });
    let body = if chunked {
        dechunk(body)?
    } else {
        body.to_string()
    };
    let headers = head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Ok(HttpReply {
        status,
        body,
        headers,
    })
}

fn dechunk(mut body: &str) -> anyhow::Result<String> {
    let mut out = String::new();
    loop {
        let (size, rest) = body
            .split_once("\r\n")
            .ok_or_else(|| anyhow!("bad chunk framing"))?;
        let size = usize::from_str_radix(size.trim(), 16)?;
        if size == 0 {
            return Ok(out);
        }
        out.push_str(rest.get(..size).ok_or_else(|| anyhow!("short chunk"))?);
        body = rest.get(size + 2..).ok_or_else(|| anyhow!("short chunk"))?;
    }
}

/// Clients sending `GET path` in a loop, over the given ingresses in turn,
/// until [`finish`](Load::finish)ed: the continuous load of rollout and
/// hand-over tests.
pub struct Load {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    clients: Vec<std::thread::JoinHandle<Vec<(u64, HttpReply)>>>,
}

impl Load {
    /// Starts `clients` threads sending requests for `path`. A `{n}` in
    /// `path` becomes a number of its own in each request (client and
    /// count), so that no two requests ask for the same thing.
    pub fn start(ingresses: Vec<SocketAddr>, path: &str, clients: usize) -> Load {
        Load::start_paced(ingresses, path, clients, None)
    }

    /// [`Load::start`], sending at most `per_second` requests a second in
    /// all when given: a long run then stays within the ports a machine
    /// has for new connections (each request is a connection of its own).
    pub fn start_paced(
        ingresses: Vec<SocketAddr>,
        path: &str,
        clients: usize,
        per_second: Option<u32>,
    ) -> Load {
        use std::sync::atomic::Ordering;
        // Each client's gap between requests.
        let gap = per_second
            .filter(|n| *n > 0)
            .map(|n| Duration::from_secs_f64(clients.max(1) as f64 / f64::from(n)));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let clients = (0..clients)
            .map(|client| {
                let (stop, ingresses, path) = (stop.clone(), ingresses.clone(), path.to_string());
                std::thread::spawn(move || {
                    let mut seen = Vec::new();
                    let mut i = 0usize;
                    let began = std::time::Instant::now();
                    while !stop.load(Ordering::Relaxed) {
                        if let Some(gap) = gap {
                            let due = began + gap * u32::try_from(i).unwrap_or(u32::MAX);
                            std::thread::sleep(
                                due.saturating_duration_since(std::time::Instant::now()),
                            );
                        }
                        let addr = ingresses[i % ingresses.len()];
                        let path = path.replace("{n}", &format!("{client}-{i}"));
                        i += 1;
                        let reply = http_request(addr, "GET", &path, Duration::from_secs(5))
                            .unwrap_or_else(|e| HttpReply {
                                status: 0,
                                body: format!("{e:#}"),
                                headers: Vec::new(),
                            });
                        seen.push((shoal_api::wire::now_ms(), reply));
                    }
                    seen
                })
            })
            .collect();
        Load { stop, clients }
    }

    /// Stops the clients; every answer they had with when it arrived (ms
    /// since the epoch), in order of arrival.
    pub fn finish_timed(self) -> Vec<(u64, HttpReply)> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut all: Vec<(u64, HttpReply)> = self
            .clients
            .into_iter()
            .flat_map(|c| c.join().unwrap_or_default())
            .collect();
        all.sort_by_key(|(at, _)| *at);
        all
    }

    /// Stops the clients; every answer they had, a failed connection as
    /// status 0 with the error as its body.
    pub fn finish(self) -> Vec<HttpReply> {
        self.finish_timed().into_iter().map(|(_, r)| r).collect()
    }
}
