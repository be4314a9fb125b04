//! Trace context: which trace the request or message being handled
//! belongs to.
//!
//! Shoal starts a W3C trace at its ingress (or continues the caller's) and
//! hands every invocation its own span in the `traceparent` header: on an
//! HTTP [`Request`](crate::http::Request) and on a worker's
//! [`Message`](crate::Message). Outbound HTTP requests and published
//! messages carry it on without the guest doing anything; read it here to
//! put the trace id in a log line or a reply.
//!
//! ```ignore
//! if let Some(trace) = shoal_sdk::trace::TraceContext::from_headers(&msg.headers) {
//!     println!("handling {} in trace {}", msg.subject, trace.trace_id);
//! }
//! ```

/// The header the context travels in.
pub const TRACEPARENT: &str = "traceparent";

/// A W3C trace context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    /// The trace: 32 lower-case hex digits, the same on every hop.
    pub trace_id: String,
    /// This invocation's span: 16 lower-case hex digits.
    pub span_id: String,
    /// Whether the trace is being recorded.
    pub sampled: bool,
}

impl TraceContext {
    /// Parses a `traceparent` value (`00-<trace id>-<span id>-<flags>`).
    // The host's parser lives in `shoal-api`, which guests do not link
    // (it brings NATS and key handling): this small one stands in for it.
    pub fn parse(value: &str) -> Option<TraceContext> {
        let mut fields = value.trim().split('-');
        let (version, trace, span, flags) = (
            fields.next()?,
            fields.next()?,
            fields.next()?,
            fields.next()?,
        );
        let hex = |s: &str, len: usize| {
            s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        };
        let zero = |s: &str| s.bytes().all(|b| b == b'0');
        if !hex(version, 2)
            || version == "ff"
            || !hex(trace, 32)
            || !hex(span, 16)
            || !hex(flags, 2)
        {
            return None;
        }
        if zero(trace) || zero(span) {
            return None;
        }
        let flags = u8::from_str_radix(flags, 16).ok()?;
        Some(TraceContext {
            trace_id: trace.to_string(),
            span_id: span.to_string(),
            sampled: flags & 1 == 1,
        })
    }

    /// The context in `headers` (a worker message's), if there is one.
    pub fn from_headers(headers: &[(String, String)]) -> Option<TraceContext> {
        headers
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(TRACEPARENT))
            .and_then(|(_, value)| TraceContext::parse(value))
    }

    /// The context of an HTTP request, if it has one.
    pub fn of_request(request: &crate::http::Request) -> Option<TraceContext> {
        request.header(TRACEPARENT).and_then(TraceContext::parse)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_traceparent_and_refuses_a_bad_one() {
        let ok =
            TraceContext::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        assert_eq!(ok.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(ok.span_id, "00f067aa0ba902b7");
        assert!(ok.sampled);
        assert!(
            TraceContext::parse("00-00000000000000000000000000000000-00f067aa0ba902b7-01")
                .is_none()
        );
        assert!(
            TraceContext::parse("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01")
                .is_none()
        );
        assert!(TraceContext::parse("nonsense").is_none());
        let headers = vec![(
            "Traceparent".to_string(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00".to_string(),
        )];
        assert!(!TraceContext::from_headers(&headers).unwrap().sampled);
    }
}
