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
    let limit = match query.get("limit") {
        None => 20,
        Some(text) => match text.parse::<i64>() {
            Ok(limit) if (1..=MAX_LIMIT).contains(&limit) => limit,
            _ => {
                let message = format!("limit must be an integer from 1 to {MAX_LIMIT}");
                return Err(ApiError::bad_request(message, Some("limit")));
            }
        },
    };
    let mut logs = state.store.latest_logs(limit).await?;
    if !is_operator(&state, &headers, bandvote_runtime::per_client::client_address(&extensions)) {
        let hidden = state.store.hidden_rounds().await?;
        logs.retain(|entry| !hidden.contains(&entry.round));
    }
    Ok(Json(logs))
}
