//! The API's routes, one module per resource.

pub mod admin;
mod logs;
mod openapi;
mod results;
mod rounds;
mod stream;
mod web;

use std::{collections::HashMap, ops::RangeInclusive};

use axum::{Router, routing::get};
use bandvote_runtime::http::ApiError;

use crate::{ApiState, store::Unavailable};

pub use logs::get_logs;
pub use openapi::get_openapi;
pub use results::get_results;
pub use stream::get_stream;
pub use web::ASSETS;
pub(crate) use web::origin_of as web_origin;

/// `/api/results`, `/api/rounds`, `/api/logs`, `/api/stream`, `/api/openapi.json`, `/api/config`,
/// the operator's `/api/admin/...` and the web app.
pub fn router(state: ApiState) -> Router {
    let web = web::router(state.clone());
    let admin = admin::router(state.clone());
    Router::new()
        .route("/api/results", get(get_results))
        .route("/api/rounds", get(rounds::get_rounds))
        .route("/api/rounds/{id}/result", get(rounds::get_round_result))
        .route("/api/rounds/{id}/proof/{vote}", get(rounds::get_round_proof))
        .route("/api/rounds/{id}/leaves.jsonl", get(rounds::get_round_leaves))
        .route("/api/logs", get(get_logs))
        .route("/api/stream", get(get_stream))
        .route("/api/openapi.json", get(get_openapi))
        .with_state(state)
        .merge(web)
        .merge(admin)
}

/// The integer query parameter `name`, if given; outside `range` (or not an integer) a `400` naming it.
fn query_integer(
    query: &HashMap<String, String>,
    name: &'static str,
    range: RangeInclusive<i64>,
) -> Result<Option<i64>, ApiError> {
    let Some(text) = query.get(name) else { return Ok(None) };
    match text.parse::<i64>() {
        Ok(n) if range.contains(&n) => Ok(Some(n)),
        _ => {
            let message = format!("{name} must be an integer from {} to {}", range.start(), range.end());
            Err(ApiError::bad_request(message, Some(name)))
        }
    }
}

impl From<Unavailable> for bandvote_runtime::http::ApiError {
    fn from(error: Unavailable) -> Self {
        bandvote_runtime::http::ApiError::unavailable_because(error.0, std::time::Duration::from_secs(1))
    }
}
