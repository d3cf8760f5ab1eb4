//! `POST /grpc/votes`.

use std::{net::IpAddr, time::Instant};

use axum::{
    body::Body,
    extract::State,
    http::{Extensions, HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use bandvote_core::{IngestPath, TraceContext};
use bandvote_runtime::{
    http::{ApiError, json},
    metrics as names,
};
use serde_json::json;
use tracing::Instrument;

use super::GatewayState;
use crate::edge::{self, AcceptedVote};

/// Validates a vote and forwards it to the gRPC producer; `202 {"id", "path": "grpc"}` once the
/// producer reports it queued.
pub async fn post_grpc_vote(
    State(state): State<GatewayState>,
    extensions: Extensions,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let client = bandvote_runtime::per_client::client_address(&extensions);
    let rounds = state.rounds.clone();
    let answer = match edge::read_vote(IngestPath::Grpc, &headers, body).await {
        Ok(accepted) => {
            let trace = crate::trace::from_headers(&headers);
            let span = crate::trace::vote_span(IngestPath::Grpc, Some(accepted.id.as_str()), &trace);
            // The answer is made within the span: a 5xx is logged where it is made, with the vote's
            // fields.
            let answer = async { forward(state, client, &headers, accepted, trace, started).await.into_response() };
            answer.instrument(span).await
        }
        Err(refused) => refused.into_response(),
    };
    // A refused vote counts in its round's refusals, which the operator's console shows.
    if let Some(gate) = rounds
        && answer.status().is_client_error()
    {
        gate.note_refusal(answer.status());
    }
    Ok(answer)
}

/// Checks the vote's fairness, then forwards it within its request's span.
async fn forward(
    state: GatewayState,
    client: Option<IpAddr>,
    headers: &HeaderMap,
    accepted: AcceptedVote,
    trace: TraceContext,
    started: Instant,
) -> Result<Response, ApiError> {
    // Before the voter policy: a vote refused for a closed round or off its ballot is not one of
    // the voter's.
    let admitted = match &state.rounds {
        Some(gate) => gate.admit(accepted.vote),
        None => crate::rounds::complete(&[], accepted.vote).map(|vote| (String::new(), vote)),
    };
    let (round, vote) = admitted.inspect_err(|refused| {
        let reason = crate::rounds::refusal_reason(refused.status());
        metrics::counter!(names::VOTES_REJECTED, "path" => "grpc", "reason" => reason).increment(1);
    })?;
    let accepted = AcceptedVote { vote, ..accepted };
    if let Some(fairness) = &state.fairness
        && let Err(refused) = fairness.admit(headers, client, &round, &accepted.vote, accepted.id.as_str()).await
    {
        metrics::counter!(names::VOTES_REJECTED, "path" => "grpc", "reason" => "fairness").increment(1);
        return Err(refused);
    }
    let vote = crate::calls::vote_request(accepted, round, Some(&trace));
    // The call is made by the gateway's call task, not here: a client that hangs up does not
    // cancel a vote already on its way to the queue (its retry with the same key is then counted
    // once), and the shared HTTP/2 connection is not flooded with stream resets by departing
    // clients.
    let deadline = tokio::time::Instant::now() + state.request_timeout;
    let submitted = state.calls.submit(vote, deadline.into_std());
    let result = match tokio::time::timeout_at(deadline, submitted).await {
        Ok(Ok(id)) => Ok(json(StatusCode::ACCEPTED, json!({"id": id, "path": "grpc"}))),
        Ok(Err(status)) => Err(crate::calls::status_to_error(&status, "grpc-producer")),
        Err(_) => Err(ApiError::unavailable("grpc-producer did not answer in time", crate::calls::RETRY_AFTER)),
    };
    match &result {
        Ok(_) => {
            tracing::debug!("vote accepted");
            metrics::counter!(names::VOTES_ACCEPTED, "path" => "grpc").increment(1);
            metrics::histogram!(names::VOTE_REQUEST_DURATION, "path" => "grpc").record(started.elapsed().as_secs_f64());
        }
        Err(error) if error.status().is_server_error() => {
            tracing::debug!(status = error.status().as_u16(), "vote not accepted");
            metrics::counter!(names::VOTES_UNAVAILABLE, "path" => "grpc").increment(1);
        }
        Err(error) => {
            tracing::debug!(status = error.status().as_u16(), "vote refused");
            metrics::counter!(names::VOTES_REJECTED, "path" => "grpc", "reason" => "invalid").increment(1);
        }
    }
    result
}
