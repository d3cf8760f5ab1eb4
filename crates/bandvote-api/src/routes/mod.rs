//! The API's routes, one module per resource.

pub mod admin;
mod logs;
mod openapi;
mod results;
mod rounds;
mod stream;
mod web;

use axum::{Router, routing::get};

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

impl From<Unavailable> for bandvote_runtime::http::ApiError {
    fn from(error: Unavailable) -> Self {
        bandvote_runtime::http::ApiError::unavailable_because(error.0, std::time::Duration::from_secs(1))
    }
}
