//! The HTTP front door of the producer ([`crate::producer`], `bandvote http-producer`): `POST
//! /votes` over plain HTTP (called by the WebAssembly guest of the wasm path), written to the queue
//! with the same producer and guarantees as the gRPC front door:
//! `202 {"id", "path": "wasm"}` only after the queue acknowledged the vote, `503` when it did not.

use std::{sync::Arc, time::Duration};

use crate::edge;
use axum::{
    Router,
    body::Body,
    extract::State,
    http::{HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};
use bandvote_core::{IngestPath, VoteMessage};
use bandvote_queue::{QueueError, VoteQueue};
use bandvote_runtime::http::{ApiError, json};
use serde_json::json;
use tracing::Instrument;

/// The producer's routes over any queue: `POST /votes`.
pub fn router(queue: Arc<dyn VoteQueue>) -> Router {
    Router::new().route("/votes", axum::routing::post(post_vote)).with_state(queue)
}

/// Validates a vote (the guest did too; the producer trusts no caller) and queues it.
pub async fn post_vote(
    State(queue): State<Arc<dyn VoteQueue>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    // Accepted votes and latency are counted at the edge (the wasm gateway), not here.
    let accepted = edge::read_vote(IngestPath::Wasm, &headers, body).await?;
    let trace = crate::trace::from_headers(&headers);
    let stamped = headers.get(crate::rounds::ROUND_HEADER).map(|v| v.to_str().unwrap_or("-"));
    let Some(round) = crate::rounds::stamped(stamped.unwrap_or_default()) else {
        return Err(ApiError::bad_request("invalid round id", Some("round")));
    };
    let message = VoteMessage::new(&accepted.id, accepted.vote, IngestPath::Wasm, bandvote_core::time::now(), round);
    let span = crate::trace::vote_span(IngestPath::Wasm, Some(&message.id), &trace);
    let queued = queue.enqueue_traced(&message, accepted.id.is_client_supplied(), trace).instrument(span.clone()).await;
    // The answer is made within the span: a 5xx is logged where it is made, with the vote's fields.
    let answer = span.in_scope(|| match queued {
        Ok(()) => {
            tracing::debug!("vote queued");
            let mut response = json(StatusCode::ACCEPTED, json!({"id": message.id, "path": "wasm"}));
            if let Ok(id) = HeaderValue::from_str(&message.id) {
                response.headers_mut().insert(crate::trace::VOTE_ID_HEADER, id);
            }
            response
        }
        Err(error) => {
            tracing::debug!(%error, "vote not queued");
            match error {
                QueueError::Unavailable(cause) => ApiError::unavailable(cause, Duration::from_secs(1)),
                QueueError::Refused(cause) => ApiError::internal(cause),
            }
            .into_response()
        }
    });
    Ok(answer)
}
