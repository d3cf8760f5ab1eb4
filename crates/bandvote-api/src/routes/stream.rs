//! `GET /api/stream`: Server-Sent Events from the one shared reader.

use std::{collections::HashMap, time::Duration};

use axum::{
    body::{Body, Bytes},
    extract::{Query, State},
    http::{HeaderMap, StatusCode, header},
    response::Response,
};
use bandvote_runtime::http::ApiError;
use futures::stream;

use crate::{
    ApiState,
    stream::{Next, Subscription},
};

/// Largest `logs`: as many as the reader reads in one interval.
const MAX_LOGS: i64 = crate::stream::MAX_LOGS_PER_TICK;

/// How long a client refused for the client cap is asked to wait.
const RETRY_AFTER: Duration = Duration::from_secs(5);

/// `event: results` whenever the counters change (at most every 250 ms), `event: log` for each
/// logged vote, `event: status` when a store stops or resumes answering, `event: round` when a
/// round changes; every event has an `id:`, and a client reconnecting with `Last-Event-ID` first
/// gets the buffered events after it. The current results and rounds come first, so a new page has
/// data at once and misses no round that changed while it loaded. A `ping` event after 15 s of silence;
/// ends on shutdown. Beyond the client cap, or its address's share of it, `503` with `Retry-After`; a client too slow to take
/// its events is disconnected (it reconnects to the latest state). `?logs=N` (0–500): at most the
/// newest N `log` events of each 250 ms (a phone showing the latest 20 votes needs 20, not the
/// 2,000 a second of a busy show); all of them without it.
pub async fn get_stream(
    State(state): State<ApiState>,
    headers: HeaderMap,
    extensions: axum::http::Extensions,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let max_logs = super::query_integer(&query, "logs", 0..=MAX_LOGS)?
        .map_or(usize::MAX, |n| usize::try_from(n).unwrap_or(usize::MAX));
    let client = bandvote_runtime::per_client::client_address(&extensions);
    let slot = state.events.reserve(client).map_err(|full| {
        ApiError::client(StatusCode::SERVICE_UNAVAILABLE, full.to_string(), None).with_retry_after(RETRY_AFTER)
    })?;
    let last_event_id =
        headers.get("last-event-id").and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse::<u64>().ok());
    // While nobody listened the reader published nothing: read the results once for this client
    // and publish them, so that the clients arriving together share them.
    let mut first = None;
    if !state.events.has_results() {
        // The public's view, as the reader publishes it: a hidden round's bands are never in it.
        let results = state
            .store
            .round_results(None, false)
            .await
            .and_then(|r| r.ok_or_else(|| crate::store::Unavailable("no current round".into())));
        match results {
            Ok(results) => match serde_json::to_vec(&results) {
                Ok(json) => {
                    state.events.publish_results(&json);
                }
                Err(error) => return Err(ApiError::internal(format!("results could not be serialised: {error}"))),
            },
            Err(error) => {
                let data = serde_json::json!({"status": error.to_string()});
                first = Some(Bytes::from(format!("event: status\ndata: {data}\n\n")));
            }
        }
    }
    let subscription = state.events.subscribe(slot, last_event_id, first, max_logs);
    let frames = stream::unfold(Some((subscription, state.shutdown.clone())), next_frame);
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(frames))
        .map_err(|error| ApiError::internal(format!("stream response: {error}")))
}

type ClientState = Option<(Subscription, tokio_util::sync::CancellationToken)>;

/// The client's next frame; a dropped client's response ends with an error, which closes its
/// connection rather than ending the response cleanly.
async fn next_frame(state: ClientState) -> Option<(Result<Bytes, std::io::Error>, ClientState)> {
    let (subscription, shutdown) = state?;
    match subscription.next(&shutdown).await? {
        Next::Frame(bytes) => Some((Ok(bytes), Some((subscription, shutdown)))),
        Next::Dropped => Some((Err(std::io::Error::other("too slow to take the live stream")), None)),
    }
}
