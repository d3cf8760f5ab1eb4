//! `GET /api/stream`: Server-Sent Events from the one shared reader.

use std::{convert::Infallible, time::Duration};

use axum::{
    extract::State,
    response::sse::{Event as SseEvent, KeepAlive, Sse},
};
use futures::{Stream, StreamExt, stream};
use tokio_stream::wrappers::BroadcastStream;

use crate::{ApiState, stream::Event};

/// `event: results` whenever the counters change (at most every 250 ms), `event: log` for each
/// logged vote, `event: status` when a store stops or resumes answering. The current results come
/// first, so a new page has data at once. Keep-alive comments every 15 s; ends on shutdown.
pub async fn get_stream(State(state): State<ApiState>) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let receiver = state.events.subscribe();
    let first = match state.store.results().await {
        Ok(results) => Event::Results(results.into()),
        Err(error) => Event::Status(error.to_string().into()),
    };
    let updates = BroadcastStream::new(receiver).filter_map(|event| async move { event.ok() });
    let events = stream::once(async move { first })
        .chain(updates)
        .filter_map(|event| async move { to_sse(&event).map(Ok) })
        .take_until(state.shutdown.cancelled_owned());
    Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

fn to_sse(event: &Event) -> Option<SseEvent> {
    let (name, data) = match event {
        Event::Results(results) => ("results", serde_json::to_string(results.as_ref()).ok()?),
        Event::Log(entry) => ("log", serde_json::to_string(entry.as_ref()).ok()?),
        Event::Status(status) => ("status", serde_json::json!({"status": status.as_str()}).to_string()),
    };
    Some(SseEvent::default().event(name).data(data))
}
