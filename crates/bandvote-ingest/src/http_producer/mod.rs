//! The HTTP front door of the producer ([`crate::producer`], `bandvote http-producer`): the votes
//! of the wasm path, written to the queue with the same producer and guarantees as the gRPC front
//! door.
//! - `POST /votes`, one vote as the WebAssembly guest sends it (JSON, `Idempotency-Key`):
//!   `202 {"id", "path": "wasm"}` only after the queue acknowledged the vote, `503` when it did not;
//! - `POST /votes/batch`, several votes in one request, as the wasm gateway's host sends the votes
//!   its guests send at the same time ([`crate::calls`]): the gRPC hop's `SubmitVotesRequest` in
//!   protobuf (`application/x-protobuf`), answered `200` with a `SubmitVotesResponse`, each vote
//!   queued and answered on its own as `POST /votes` would.

use std::{sync::Arc, time::Duration};

use crate::{
    edge,
    grpc_producer::{MAX_VOTES_PER_CALL, VoteServer},
    rounds::RoundGate,
};
use axum::{
    Router,
    body::Body,
    extract::State,
    http::{HeaderMap, HeaderValue, StatusCode, header::CONTENT_TYPE},
    response::{IntoResponse, Response},
};
use bandvote_core::{IngestPath, VoteMessage};
use bandvote_proto::v1::{SubmitVotesRequest, SubmitVotesResponse};
use bandvote_queue::{QueueError, VoteQueue};
use bandvote_runtime::http::{ApiError, json};
use prost::Message;
use serde_json::json;
use tracing::Instrument;

/// The batch route.
pub const BATCH_ROUTE: &str = "/votes/batch";

/// The media type of the batch route's request and answer.
pub const BATCH_CONTENT_TYPE: &str = "application/x-protobuf";

/// The largest batch body: the most votes of a call, each at most a vote's body and its fields.
const BATCH_MAX_BYTES: usize = MAX_VOTES_PER_CALL * (bandvote_core::MAX_BODY_BYTES + 1024);

/// The producer's routes over any queue: `POST /votes` and `POST /votes/batch` (with `rounds`, for a
/// round that could take the votes now only).
pub fn router(queue: Arc<dyn VoteQueue>, rounds: Option<Arc<RoundGate>>) -> Router {
    let batches = Arc::new(VoteServer::new(Arc::clone(&queue), IngestPath::Wasm, rounds.clone()));
    Router::new()
        .route("/votes", axum::routing::post(post_vote))
        .with_state(Single { queue, rounds })
        .merge(Router::new().route(BATCH_ROUTE, axum::routing::post(post_votes)).with_state(batches))
}

/// What `POST /votes` writes to, and for which rounds.
#[derive(Clone)]
pub struct Single {
    queue: Arc<dyn VoteQueue>,
    rounds: Option<Arc<RoundGate>>,
}

/// Queues the votes of a `SubmitVotesRequest`, each as `POST /votes` would (the producer
/// validates every one), and answers their outcomes in a `SubmitVotesResponse`.
pub async fn post_votes(
    State(server): State<Arc<VoteServer>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let media_type = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok());
    if media_type.and_then(|v| v.split(';').next()).map(str::trim) != Some(BATCH_CONTENT_TYPE) {
        let message = format!("content-type must be {BATCH_CONTENT_TYPE}");
        return Err(ApiError::client(StatusCode::UNSUPPORTED_MEDIA_TYPE, message, None));
    }
    let bytes = bandvote_runtime::http::read_body(body, BATCH_MAX_BYTES)
        .await
        .map_err(|error| error.into_api_error(BATCH_MAX_BYTES))?;
    let request = SubmitVotesRequest::decode(bytes)
        .map_err(|error| ApiError::bad_request(format!("the body is not a SubmitVotesRequest: {error}"), None))?;
    let outcomes =
        server.submit_all(request.votes).await.map_err(|status| ApiError::bad_request(status.message(), None))?;
    let answer = SubmitVotesResponse { outcomes }.encode_to_vec();
    Ok(([(CONTENT_TYPE, BATCH_CONTENT_TYPE)], answer).into_response())
}

/// Validates a vote (the guest did too; the producer trusts no caller) and queues it.
pub async fn post_vote(
    State(Single { queue, rounds }): State<Single>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    // Accepted votes and latency are counted at the edge (the wasm gateway), not here.
    let accepted = edge::read_vote(IngestPath::Wasm, &headers, body).await?;
    // The wasm host gave a ballot vote its entry's year before its guest sent it.
    let vote = accepted.vote.require_year().map_err(|e| ApiError::bad_request(e.message, e.field))?;
    let accepted = edge::AcceptedVote { vote, ..accepted };
    let trace = crate::trace::from_headers(&headers);
    let stamped = headers.get(crate::rounds::ROUND_HEADER).map(|v| v.to_str().unwrap_or("-"));
    let Some(round) = crate::rounds::stamped(stamped.unwrap_or_default()) else {
        return Err(ApiError::bad_request("invalid round id", Some("round")));
    };
    if let Some(rounds) = &rounds {
        rounds.hands_over(&round).map_err(|status| crate::calls::status_to_error(&status, "http-producer"))?;
    }
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
