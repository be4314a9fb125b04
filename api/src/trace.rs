//! Tracing across processes: the W3C trace context every request and
//! message carries ([`TraceParent`], in the `traceparent` header), and the
//! record of one invocation's host calls that `shoal invoke --trace` shows
//! ([`HostCall`]).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The header that carries a [`TraceParent`], as the W3C spells it.
pub const TRACEPARENT: &str = "traceparent";

/// A W3C trace context (`traceparent`, version 00): the trace a request
/// belongs to, and the span that sent it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceParent {
    /// The trace: the same on every hop of one request.
    pub trace_id: [u8; 16],
    /// The span that made this hop (the parent of the next one).
    pub span_id: [u8; 8],
    /// Whether the caller records this trace (flag bit 0).
    pub sampled: bool,
}

/// Why a `traceparent` value was not taken. A bad one is replaced by a new
/// trace, as the W3C recommends, so this never fails a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TraceParentError {
    /// Not `version-traceid-spanid-flags` in lower-case hex.
    #[error("not a W3C traceparent (want 00-<32 hex>-<16 hex>-<2 hex>)")]
    Malformed,
    /// Version `ff`, which the W3C forbids.
    #[error("traceparent version ff is invalid")]
    ForbiddenVersion,
    /// A trace or span id of all zeros.
    #[error("a traceparent id of all zeros is invalid")]
    ZeroId,
}

impl TraceParent {
    /// The trace id as 32 lower-case hex digits.
    pub fn trace_id_hex(&self) -> String {
        hex(&self.trace_id)
    }

    /// The same trace, sent on by `span_id`.
    pub fn child(&self, span_id: [u8; 8]) -> TraceParent {
        TraceParent { span_id, ..*self }
    }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{}-{}-{:02x}",
            hex(&self.trace_id),
            hex(&self.span_id),
            u8::from(self.sampled)
        )
    }
}

impl FromStr for TraceParent {
    type Err = TraceParentError;

    /// Parses a `traceparent` value. A later version is read by its first
    /// four fields, as the W3C asks, so longer values are accepted there.
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let value = value.trim();
        let mut fields = value.split('-');
        let (Some(version), Some(trace), Some(span), Some(flags)) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            return Err(TraceParentError::Malformed);
        };
        let version = unhex::<1>(version).ok_or(TraceParentError::Malformed)?[0];
        if version == 0xff {
            return Err(TraceParentError::ForbiddenVersion);
        }
        if version == 0 && (fields.next().is_some() || value.len() != 55) {
            return Err(TraceParentError::Malformed);
        }
        let trace_id = unhex::<16>(trace).ok_or(TraceParentError::Malformed)?;
        let span_id = unhex::<8>(span).ok_or(TraceParentError::Malformed)?;
        let flags = unhex::<1>(flags).ok_or(TraceParentError::Malformed)?[0];
        if trace_id == [0; 16] || span_id == [0; 8] {
            return Err(TraceParentError::ZeroId);
        }
        Ok(TraceParent {
            trace_id,
            span_id,
            sampled: flags & 1 == 1,
        })
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

/// `N` bytes from exactly `2N` lower-case hex digits.
fn unhex<const N: usize>(text: &str) -> Option<[u8; N]> {
    let digits = text.as_bytes();
    if digits.len() != N * 2 {
        return None;
    }
    let nibble = |d: u8| match d {
        b'0'..=b'9' => Some(d - b'0'),
        b'a'..=b'f' => Some(d - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; N];
    for (i, pair) in digits.chunks_exact(2).enumerate() {
        out[i] = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Some(out)
}

/// One call a guest made into the host during an invocation, as
/// `shoal invoke --trace` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HostCall {
    /// The interface called (`keyvalue`, `messaging`, `http`, …).
    pub capability: String,
    /// The function (`set`, `publish`, `GET`, …).
    pub function: String,
    /// What the call names, when that is not a secret: a key, a subject,
    /// a URL's host and path. Never a value.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub target: String,
    /// Bytes the guest passed in (values, payloads, bodies).
    pub sent_bytes: u64,
    /// How it ended.
    pub outcome: CallOutcome,
    /// When the call began, in microseconds since the invocation began.
    pub at_us: u64,
    /// How long it took, in microseconds.
    pub took_us: u64,
}

/// The host calls of one invocation, as its reply carries them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HostCalls {
    /// The calls, in the order they began.
    pub calls: Vec<HostCall>,
    /// Calls made past the most one invocation records, not listed.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub dropped: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// How a [`HostCall`] ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case", tag = "result")]
pub enum CallOutcome {
    /// It succeeded, handing back `bytes` bytes.
    Ok {
        /// Bytes handed back to the guest.
        bytes: u64,
    },
    /// It failed with the error the guest saw.
    Error {
        /// The error, as the guest saw it.
        error: String,
    },
}

impl fmt::Display for CallOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallOutcome::Ok { bytes } => write!(f, "ok ({bytes} B)"),
            CallOutcome::Error { error } => write!(f, "error: {error}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_traceparent_round_trips() {
        let text = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let parsed: TraceParent = text.parse().unwrap();
        assert!(parsed.sampled);
        assert_eq!(parsed.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(parsed.to_string(), text);
        let child = parsed.child([1; 8]);
        assert_eq!(child.trace_id, parsed.trace_id);
        assert_eq!(
            child.to_string(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0101010101010101-01"
        );
    }

    #[test]
    fn bad_traceparents_are_refused() {
        let bad = [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ];
        for text in bad {
            assert_eq!(
                text.parse::<TraceParent>(),
                Err(TraceParentError::Malformed),
                "{text}"
            );
        }
        assert_eq!(
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".parse::<TraceParent>(),
            Err(TraceParentError::ForbiddenVersion)
        );
        assert_eq!(
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01".parse::<TraceParent>(),
            Err(TraceParentError::ZeroId)
        );
        // A later version may carry more fields.
        assert!(
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-more"
                .parse::<TraceParent>()
                .is_ok()
        );
    }

    #[test]
    fn host_calls_serialize_stably() {
        let call = HostCall {
            capability: "keyvalue".into(),
            function: "set".into(),
            target: "greeting".into(),
            sent_bytes: 5,
            outcome: CallOutcome::Ok { bytes: 0 },
            at_us: 12,
            took_us: 300,
        };
        let json = serde_json::to_string(&call).unwrap();
        assert_eq!(
            json,
            r#"{"capability":"keyvalue","function":"set","target":"greeting","sent_bytes":5,"outcome":{"result":"ok","bytes":0},"at_us":12,"took_us":300}"#
        );
        assert_eq!(serde_json::from_str::<HostCall>(&json).unwrap(), call);
    }
}
