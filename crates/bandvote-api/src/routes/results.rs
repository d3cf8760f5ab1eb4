//! `GET /api/results[?round=<id>]`.

use std::collections::HashMap;

use axum::{
    Json,
    extract::{Query, State},
    http::{HeaderMap, StatusCode},
};
use bandvote_runtime::http::ApiError;

use crate::{ApiState, routes::admin::is_operator, store::RoundResults};

/// A round's counters: `{total, bands, albums, updated_at, freshness_ms, round, hidden, final}`;
/// without `round`, the open round, else the latest closed one, else `default`. While a round is
/// hidden the public gets its total only; the admin token gets everything.
pub async fn get_results(
    State(state): State<ApiState>,
    headers: HeaderMap,
    extensions: axum::http::Extensions,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<RoundResults>, ApiError> {
    let round = query.get("round").map(String::as_str);
    let operator = is_operator(&state, &headers, bandvote_runtime::per_client::client_address(&extensions));
    match state.store.round_results(round, operator).await? {
        Some(results) => Ok(Json(results)),
        None => Err(ApiError::client(StatusCode::NOT_FOUND, "no such round", Some("round"))),
    }
}
