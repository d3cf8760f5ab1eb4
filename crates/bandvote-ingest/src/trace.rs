//! One `vote` span per vote request, carrying the vote id and the trace id of its W3C trace context
//! (continued from the request's `traceparent`, else new). The context travels on: in the vote's
//! `traceparent` field of the call to the gRPC producer, as a header of the wasm guest's outgoing
//! request to the HTTP producer, and into the Kafka message headers, so the consumer's log line
//! for a vote links back to its request.

use axum::http::HeaderMap;
use bandvote_core::{IngestPath, TraceContext, trace::TRACEPARENT};
use tracing::Span;

/// Header of the HTTP producer's answer naming the vote id, for the wasm gateway's span (the guest
/// relays only the status and the body, so clients never see it).
pub const VOTE_ID_HEADER: &str = "bandvote-vote-id";

/// The context of this service's span for a request with `headers`.
pub fn from_headers(headers: &HeaderMap) -> TraceContext {
    TraceContext::continue_from(headers.get(TRACEPARENT).map(|value| value.as_bytes()))
}

/// The request's span. Its fields are only formatted when it is enabled (`RUST_LOG`); a `vote_id`
/// of `None` can be recorded later.
pub fn vote_span(path: IngestPath, vote_id: Option<&str>, trace: &TraceContext) -> Span {
    tracing::info_span!("vote", path = path.as_str(), vote_id, trace_id = %trace.trace_id())
}
