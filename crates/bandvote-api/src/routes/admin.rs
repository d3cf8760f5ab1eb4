//! `POST /api/admin/recount`: rebuilds the Redis counters from the MongoDB log (the same consistent
//! cut as `bandvote recount`), for an operator holding the admin token. The route exists only when
//! a token is configured; a request without the right `Authorization: Bearer` gets `401`.

use axum::{
    Json, Router,
    extract::State,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::post,
};
use bandvote_runtime::http::ApiError;
use bandvote_store::recount::{RecountConfig, RecountError, recount};
use secrecy::{ExposeSecret, SecretString};

use crate::ApiState;

/// Administrative operations' settings.
#[derive(Debug, Clone)]
pub struct AdminConfig {
    /// The bearer token (from a secret).
    pub token: SecretString,
    /// How to recount (Kafka, the stores, the log group).
    pub recount: RecountConfig,
}

/// Whether `headers` carry `Authorization: Bearer <token>`, compared in constant time.
fn authorised(headers: &HeaderMap, token: &str) -> bool {
    let Some(given) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) else { return false };
    let Some(given) = given.strip_prefix("Bearer ") else { return false };
    let (a, b) = (given.as_bytes(), token.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

async fn post_recount(State(state): State<ApiState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let admin = state.admin.as_ref().ok_or_else(|| ApiError::client(StatusCode::NOT_FOUND, "no such route", None))?;
    if !authorised(&headers, admin.token.expose_secret()) {
        let mut response =
            ApiError::client(StatusCode::UNAUTHORIZED, "an administrator's bearer token is required", None)
                .into_response();
        response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return Ok(response);
    }
    match recount(&admin.recount).await {
        Ok(counts) => {
            tracing::info!(total = counts.total, "recount done through the admin API");
            Ok(Json(counts).into_response())
        }
        // The consistency rule refused: say why, the operator can retry.
        Err(error @ (RecountError::Behind(_) | RecountError::Moved)) => {
            Err(ApiError::client(StatusCode::CONFLICT, error.to_string(), None))
        }
        Err(RecountError::Failed(error)) => {
            Err(ApiError::unavailable_because(format!("{error:#}"), std::time::Duration::from_secs(5)))
        }
    }
}

/// The admin routes, when a token is configured.
pub fn router(state: ApiState) -> Router {
    if state.admin.is_none() {
        return Router::new();
    }
    Router::new().route("/api/admin/recount", post(post_recount)).with_state(state)
}
