//! The operator's routes, behind `Authorization: Bearer <admin token>` (`401` without it; the
//! routes exist only when a token is configured): `POST /api/admin/recount` rebuilds the Redis
//! counters from the MongoDB log (the same consistent cut as `bandvote recount`); the rounds'
//! routes are in `routes/rounds.rs`.

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
    /// How to recount (Kafka, the stores, the log group); `None` where there is nothing to recount
    /// (`up` on its embedded storage).
    pub recount: Option<RecountConfig>,
}

/// Whether `headers` carry `Authorization: Bearer <token>`, compared in constant time.
pub(crate) fn authorised(headers: &HeaderMap, token: &str) -> bool {
    let Some(given) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) else { return false };
    let Some(given) = given.strip_prefix("Bearer ") else { return false };
    let (a, b) = (given.as_bytes(), token.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

/// Whether the request is an operator's (the admin token is configured and given).
pub(crate) fn is_operator(state: &ApiState, headers: &HeaderMap) -> bool {
    state.admin.as_ref().is_some_and(|admin| authorised(headers, admin.token.expose_secret()))
}

/// The answer to a request that is not an operator's (`404` without a configured token, `401`);
/// `None` for an operator's.
pub(crate) fn refusal(state: &ApiState, headers: &HeaderMap) -> Option<Response> {
    let Some(admin) = state.admin.as_ref() else {
        return Some(ApiError::client(StatusCode::NOT_FOUND, "no such route", None).into_response());
    };
    if authorised(headers, admin.token.expose_secret()) {
        return None;
    }
    let mut response =
        ApiError::client(StatusCode::UNAUTHORIZED, "an administrator's bearer token is required", None).into_response();
    response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    Some(response)
}

async fn post_recount(State(state): State<ApiState>, headers: HeaderMap) -> Result<Response, ApiError> {
    if let Some(refused) = refusal(&state, &headers) {
        return Ok(refused);
    }
    let Some(config) = state.admin.as_ref().and_then(|admin| admin.recount.as_ref()) else {
        return Err(ApiError::client(StatusCode::NOT_FOUND, "no such route", None));
    };
    match recount(config).await {
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

/// `?round=` of the audit.
#[derive(Debug, serde::Deserialize)]
pub(crate) struct AuditQuery {
    round: Option<String>,
}

/// `GET /api/admin/audit[?round=ID]`: the counters against the log, all-time or one round's (a
/// whole scan of the log: an operator's check, not a dashboard's).
async fn get_audit(
    State(state): State<ApiState>,
    headers: HeaderMap,
    axum::extract::Query(query): axum::extract::Query<AuditQuery>,
) -> Result<Response, ApiError> {
    if let Some(refused) = refusal(&state, &headers) {
        return Ok(refused);
    }
    if let Some(id) = query.round.as_deref() {
        super::rounds::find(&state, id).await?;
    }
    let audit = state.store.audit(query.round.as_deref()).await?;
    Ok(Json(audit).into_response())
}

/// `GET /api/admin/pipeline`: how far the log is behind the counters, and how fresh they are.
async fn get_pipeline(State(state): State<ApiState>, headers: HeaderMap) -> Result<Response, ApiError> {
    if let Some(refused) = refusal(&state, &headers) {
        return Ok(refused);
    }
    let (results, logged) = tokio::try_join!(state.store.results(), state.store.logged_total())?;
    Ok(Json(serde_json::json!({
        "counted": results.counts.total,
        "logged": logged,
        "updated_at": results.updated_at,
        "freshness_ms": results.freshness_ms,
    }))
    .into_response())
}

/// The admin routes, when a token is configured.
pub fn router(state: ApiState) -> Router {
    if state.admin.is_none() {
        return Router::new();
    }
    Router::new()
        .route("/api/admin/recount", post(post_recount))
        .route("/api/admin/audit", axum::routing::get(get_audit))
        .route("/api/admin/pipeline", axum::routing::get(get_pipeline))
        .route("/api/admin/rounds", post(super::rounds::post_round))
        .route(
            "/api/admin/rounds/{id}",
            axum::routing::put(super::rounds::put_round).delete(super::rounds::delete_round),
        )
        .route("/api/admin/rounds/{id}/stats", axum::routing::get(super::rounds::get_round_stats))
        .route("/api/admin/rounds/{id}/{action}", post(super::rounds::post_round_action))
        .with_state(state)
}
