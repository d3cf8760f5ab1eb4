//! `GET /api/results`.

use axum::{Json, extract::State};
use bandvote_runtime::http::ApiError;

use crate::{ApiState, store::Results};

/// The live counters: `{total, bands, albums, updated_at, freshness_ms}`.
pub async fn get_results(State(state): State<ApiState>) -> Result<Json<Results>, ApiError> {
    Ok(Json(state.store.results().await?))
}
