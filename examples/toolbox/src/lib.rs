//! `toolbox`: a worker that exercises every capability on command, so the
//! grants of an app spec can be tried from the command line:
//!
//! ```text
//! shoal invoke tools/toolbox --data "config greeting"
//! shoal invoke tools/toolbox --data "secret db-password"
//! shoal invoke tools/toolbox --data "write /data/note.txt hello"
//! ```
//!
//! Commands: `env KEY`, `config KEY`, `secret NAME`, `read PATH`,
//! `write PATH TEXT`, `fill PATH BYTES`, `ls PATH`, `publish SUBJECT TEXT`,
//! `call COMPONENT TEXT`, `kv-set KEY VALUE`, `kv-set-env KEY VAR` (the
//! value of environment variable `VAR`), `kv-fill KEY BYTES`,
//! `kv-get KEY`, `kv-del KEY`, `kv-keys`, `print LINES`, `http-get URL`,
//! `trap` (a Wasm trap in `crash_on_purpose`, for core dumps).
//! A refused capability comes back as the handler's error, with the host's
//! reason.

use std::time::Duration;

use shoal_sdk::{HandlerError, Message, Reply, Worker, config, keyvalue, messaging, secrets};

struct Toolbox;

fn run(op: &str, a: &str, b: &str) -> Result<String, String> {
    let err = |e: &dyn std::fmt::Display| e.to_string();
    match op {
        "env" => Ok(std::env::var(a).unwrap_or_else(|_| "<unset>".into())),
        "config" => Ok(config::get(a).unwrap_or_else(|| "<unset>".into())),
        "secret" => secrets::get_string(a).map_err(|e| e.describe()),
        "read" => std::fs::read_to_string(a).map_err(|e| err(&e)),
        "write" => std::fs::write(a, b)
            .map(|()| "ok".into())
            .map_err(|e| err(&e)),
        "fill" => {
            let n: usize = b.parse().map_err(|_| "fill PATH BYTES".to_string())?;
            std::fs::write(a, vec![b'x'; n])
                .map(|()| "ok".into())
                .map_err(|e| err(&e))
        }
        "ls" => {
            let mut names = Vec::new();
            for entry in std::fs::read_dir(a).map_err(|e| err(&e))? {
                names.push(
                    entry
                        .map_err(|e| err(&e))?
                        .file_name()
                        .to_string_lossy()
                        .into_owned(),
                );
            }
            names.sort();
            Ok(names.join(","))
        }
        "publish" => messaging::publish(&Message::new(a, b))
            .map(|()| "ok".into())
            .map_err(|e| e.describe()),
        "call" => messaging::request(a, &Message::new("call", b), Duration::from_secs(2))
            .map(|m| String::from_utf8_lossy(&m.payload).into_owned())
            .map_err(|e| e.describe()),
        "kv-set" => keyvalue::set(a, b.as_bytes())
            .map(|()| "ok".into())
            .map_err(|e| e.describe()),
        "kv-set-env" => keyvalue::set(a, std::env::var(b).unwrap_or_default().as_bytes())
            .map(|()| "ok".into())
            .map_err(|e| e.describe()),
        "kv-get" => keyvalue::get(a)
            .map(|v| {
                v.map_or("<none>".into(), |v| {
                    String::from_utf8_lossy(&v).into_owned()
                })
            })
            .map_err(|e| e.describe()),
        "kv-fill" => {
            let n: usize = b.parse().map_err(|_| "kv-fill KEY BYTES".to_string())?;
            keyvalue::set(a, &vec![b'x'; n])
                .map(|()| "ok".into())
                .map_err(|e| e.describe())
        }
        "print" => {
            let n: usize = a.parse().map_err(|_| "print LINES".to_string())?;
            for i in 0..n {
                println!("line {i} of {n}");
            }
            Ok("ok".into())
        }
        "kv-del" => keyvalue::delete(a)
            .map(|()| "ok".into())
            .map_err(|e| e.describe()),
        "kv-keys" => keyvalue::keys()
            .map(|k| k.join(","))
            .map_err(|e| e.describe()),
        "http-get" => shoal_sdk::http::get(a)
            .map(|r| format!("{} {}", r.status, String::from_utf8_lossy(&r.body)))
            .map_err(|e| err(&e)),
        "trap" => crash_on_purpose(),
        other => Err(format!("unknown command {other:?}")),
    }
}

/// Traps with `unreachable`: the guest fault that core dumps and restart
/// policies are shown with.
#[inline(never)]
fn crash_on_purpose() -> ! {
    core::arch::wasm32::unreachable()
}

impl Worker for Toolbox {
    fn handle(msg: Message) -> Result<Reply, HandlerError> {
        let Some(text) = msg.text() else {
            return Err(HandlerError::InvalidInput("send a command as text".into()));
        };
        let mut parts = text.splitn(3, ' ');
        let op = parts.next().unwrap_or("");
        let a = parts.next().unwrap_or("");
        let b = parts.next().unwrap_or("");
        run(op, a, b).map(Reply::new).map_err(HandlerError::Failed)
    }
}

shoal_sdk::export_worker!(Toolbox);
