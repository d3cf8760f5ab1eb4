//! W3C trace context (`traceparent`): the request id that follows one vote from its HTTP request
//! across the gRPC hop or the wasm guest's outgoing request, into the Kafka message headers and to
//! the consumer's log line for it.
//!
//! A valid incoming `traceparent` is continued (same trace id, a span id of our own); anything
//! else starts a new trace. Values are fixed-size and `Copy`: carrying one costs no allocation.

use std::{
    fmt,
    hash::{BuildHasher, Hasher},
};

/// The header (and gRPC metadata key, and Kafka header) that carries the context.
pub const TRACEPARENT: &str = "traceparent";

/// Longest `traceparent` value read. Version `00` is exactly 55 characters; later versions may
/// append fields, which are ignored.
pub const MAX_TRACEPARENT_LEN: usize = 512;

/// Length of a version `00` `traceparent`: `00-<32 hex>-<16 hex>-<2 hex>`.
const LEN: usize = 55;

/// A trace context: which trace a request belongs to and which span sent it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceContext {
    trace_id: [u8; 16],
    span_id: [u8; 8],
    flags: u8,
}

/// A trace id, displayed as 32 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceId([u8; 16]);

/// A formatted `traceparent` value, on the stack.
#[derive(Clone, Copy)]
pub struct Traceparent([u8; LEN]);

impl TraceContext {
    /// Parses a `traceparent` value; `None` unless it is valid: a known layout, lowercase hex, a
    /// non-zero trace id and span id, version not `ff`, at most [`MAX_TRACEPARENT_LEN`] bytes.
    pub fn parse(value: &[u8]) -> Option<Self> {
        if value.len() < LEN || value.len() > MAX_TRACEPARENT_LEN {
            return None;
        }
        let version = hex_byte(&value[0..2])?;
        // Version 00 has exactly four fields; a later version may add fields after a dash.
        if version == 0xff || (version == 0 && value.len() != LEN) || (value.len() > LEN && value[LEN] != b'-') {
            return None;
        }
        if value[2] != b'-' || value[35] != b'-' || value[52] != b'-' {
            return None;
        }
        let mut trace_id = [0; 16];
        for (i, byte) in trace_id.iter_mut().enumerate() {
            *byte = hex_byte(&value[3 + 2 * i..5 + 2 * i])?;
        }
        let mut span_id = [0; 8];
        for (i, byte) in span_id.iter_mut().enumerate() {
            *byte = hex_byte(&value[36 + 2 * i..38 + 2 * i])?;
        }
        let flags = hex_byte(&value[53..55])?;
        if trace_id == [0; 16] || span_id == [0; 8] {
            return None;
        }
        Some(Self { trace_id, span_id, flags })
    }

    /// A new trace (sampled).
    pub fn generate() -> Self {
        let mut trace_id = [0; 16];
        trace_id[..8].copy_from_slice(&random_u64().to_be_bytes());
        trace_id[8..].copy_from_slice(&random_u64().to_be_bytes());
        Self { trace_id, span_id: span_id(), flags: 1 }
    }

    /// The context of a span that continues `incoming` (a header value) when it is valid, else of
    /// a new trace: an invalid value is never trusted, only replaced.
    pub fn continue_from(incoming: Option<&[u8]>) -> Self {
        match incoming.and_then(Self::parse) {
            Some(parent) => parent.child(),
            None => Self::generate(),
        }
    }

    /// A child span in the same trace: same trace id and flags, a new span id.
    pub fn child(&self) -> Self {
        Self { span_id: span_id(), ..*self }
    }

    /// The trace id.
    pub fn trace_id(&self) -> TraceId {
        TraceId(self.trace_id)
    }

    /// The `traceparent` value that names this span as the parent.
    pub fn traceparent(&self) -> Traceparent {
        let mut out = [b'-'; LEN];
        out[0..2].copy_from_slice(b"00");
        write_hex(&mut out[3..35], &self.trace_id);
        write_hex(&mut out[36..52], &self.span_id);
        write_hex(&mut out[53..55], &[self.flags]);
        Traceparent(out)
    }
}

impl fmt::Debug for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.traceparent().as_str())
    }
}

impl fmt::Display for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.traceparent().as_str())
    }
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = [0; 32];
        write_hex(&mut out, &self.0);
        f.write_str(as_str(&out))
    }
}

impl fmt::Debug for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Traceparent {
    /// The value as text.
    pub fn as_str(&self) -> &str {
        as_str(&self.0)
    }
}

fn as_str(hex: &[u8]) -> &str {
    // Only ASCII hex digits and dashes are ever written.
    std::str::from_utf8(hex).unwrap_or_default()
}

fn span_id() -> [u8; 8] {
    loop {
        let id = random_u64();
        if id != 0 {
            return id.to_be_bytes();
        }
    }
}

/// 64 random bits without a system call: each `RandomState` takes new keys (from a per-thread seed
/// that the standard library draws from the OS), and hashing with them mixes well. Ids need to be
/// unique, not secret.
fn random_u64() -> u64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u8(0);
    hasher.finish()
}

fn hex_byte(pair: &[u8]) -> Option<u8> {
    fn digit(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        }
    }
    Some(digit(pair[0])? << 4 | digit(pair[1])?)
}

fn write_hex(out: &mut [u8], bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (i, byte) in bytes.iter().enumerate() {
        out[2 * i] = DIGITS[usize::from(byte >> 4)];
        out[2 * i + 1] = DIGITS[usize::from(byte & 0xf)];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn parses_and_formats_a_valid_traceparent() {
        let context = TraceContext::parse(VALID.as_bytes()).expect("valid");
        assert_eq!(context.traceparent().as_str(), VALID);
        assert_eq!(context.trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
    }

    #[test]
    fn continuing_keeps_the_trace_and_makes_a_new_span() {
        let child = TraceContext::continue_from(Some(VALID.as_bytes()));
        assert_eq!(child.trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        let text = child.traceparent();
        assert!(text.as_str().starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
        assert!(text.as_str().ends_with("-01"));
        assert_ne!(&text.as_str()[36..52], "00f067aa0ba902b7");
        assert_eq!(TraceContext::parse(text.as_str().as_bytes()), Some(child));
    }

    #[test]
    fn replaces_invalid_values_instead_of_trusting_them() {
        let long = format!("{VALID}-{}", "a".repeat(MAX_TRACEPARENT_LEN));
        let invalid = [
            "",
            "00",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01extra",
            "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\n",
            "00-\u{e9}f92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",
            &long,
        ];
        for value in invalid {
            assert_eq!(TraceContext::parse(value.as_bytes()), None, "{value:?}");
            let replaced = TraceContext::continue_from(Some(value.as_bytes()));
            assert_ne!(replaced.trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736", "{value:?}");
        }
        // A later version may add fields; they are ignored.
        let future = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-comes-next";
        assert!(TraceContext::parse(future.as_bytes()).is_some());
    }

    #[test]
    fn generated_contexts_are_valid_and_distinct() {
        let a = TraceContext::generate();
        let b = TraceContext::generate();
        assert_ne!(a.trace_id(), b.trace_id());
        assert_eq!(TraceContext::parse(a.traceparent().as_str().as_bytes()), Some(a));
        assert_eq!(TraceContext::continue_from(None).traceparent().as_str().len(), 55);
    }
}
