//! `GET /api/logs?limit=N`.

use std::collections::HashMap;

use axum::{
    Json,
    extract::{Query, State},
    http::HeaderMap,
};
use bandvote_runtime::http::ApiError;

use crate::{ApiState, routes::admin::is_operator, store::LogEntry};

/// Largest `limit`.
pub const MAX_LIMIT: i64 = 1000;

/// The newest votes of the log, newest first; `limit` 1–1000, default 20. The votes of a hidden
/// round are the operator's only.
pub async fn get_logs(
    State(state): State<ApiState>,
    headers: HeaderMap,
    extensions: axum::http::Extensions,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Vec<LogEntry>>, ApiError> {
    let limit = super::query_integer(&query, "limit", 1..=MAX_LIMIT)?.unwrap_or(20);
    let mut logs = state.store.latest_logs(limit).await?;
    if !is_operator(&state, &headers, bandvote_runtime::per_client::client_address(&extensions)) {
        let hidden = state.store.hidden_rounds().await?;
        logs.retain(|entry| !hidden.contains(&entry.round));
    }
    Ok(Json(logs))
}
