//! The operator's routes, behind `Authorization: Bearer <admin token>` (`401` without it; the
//! routes exist only when a token is configured): `POST /api/admin/recount` rebuilds the Redis
//! counters from the MongoDB log (the same consistent cut as `bandvote recount`); the rounds'
//! routes are in `routes/rounds.rs`. The token is checked before the body is read, a body is at
//! most [`BODY_LIMIT`] and must arrive within 10 s, and an address that sends more than
//! [`MAX_FAILURES`] wrong tokens a minute gets `429`.

use std::{net::IpAddr, time::Duration};

use axum::{
    Json, Router,
    extract::{Request, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::post,
};
use bandvote_runtime::{
    http::ApiError,
    metrics::ADMIN_AUTH_FAILURES,
    per_client::{Limited, RateLimiter, client_address},
};
use bandvote_store::recount::{RecountConfig, RecountError, recount};
use secrecy::{ExposeSecret, SecretString};

use crate::ApiState;

/// Administrative operations' settings.
#[derive(Debug, Clone)]
pub struct AdminConfig {
    /// The bearer token (from a secret), at least [`MIN_TOKEN_CHARS`] characters.
    pub token: SecretString,
    /// How to recount (Kafka, the stores, the log group); `None` where there is nothing to recount
    /// (`up` on its embedded storage).
    pub recount: Option<RecountConfig>,
}

/// Shortest admin token accepted at start-up.
pub const MIN_TOKEN_CHARS: usize = 16;

/// Largest body of an operator's request: the largest valid round (64 ballot entries of 200
/// four-byte characters twice, about 110 KB) fits.
pub const BODY_LIMIT: usize = 256 << 10;

/// Wrong admin tokens one client address (IPv6: one /64) may send per minute; beyond
/// them every request of that address to the operator's routes gets `429` until its count refills.
pub const MAX_FAILURES: u32 = 10;
const FAILURE_PERIOD: Duration = Duration::from_secs(60);
/// Client addresses whose wrong tokens are counted at once.
const MAX_FAILING_CLIENTS: usize = 100_000;

/// Refuses an admin token too short to resist guessing.
pub fn check_token(token: &SecretString) -> anyhow::Result<()> {
    let chars = token.expose_secret().chars().count();
    anyhow::ensure!(
        chars >= MIN_TOKEN_CHARS,
        "the admin token has {chars} characters: it must have at least {MIN_TOKEN_CHARS} \
         (for example `openssl rand -hex 24`)"
    );
    Ok(())
}

/// The wrong admin tokens seen per client address: how many lately (for the `429`), and when a
/// `401` was last logged (at most once a minute per address).
#[derive(Debug)]
pub struct Failures {
    wrong: RateLimiter,
    logged: RateLimiter,
}

impl Default for Failures {
    fn default() -> Self {
        Self {
            wrong: RateLimiter::new(MAX_FAILURES, FAILURE_PERIOD, MAX_FAILING_CLIENTS),
            logged: RateLimiter::new(1, Duration::from_secs(60), MAX_FAILING_CLIENTS),
        }
    }
}

/// Whether `headers` carry `Authorization: Bearer <token>`. Both sides are hashed first and the
/// digests compared in constant time, so that neither the time nor the answer tells how long the
/// token is or how much of it a guess got right.
pub(crate) fn authorised(headers: &HeaderMap, token: &str) -> bool {
    let Some(given) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) else { return false };
    let Some(given) = given.strip_prefix("Bearer ") else { return false };
    bandvote_core::http::same_secret(given.as_bytes(), token.as_bytes())
}

/// Whether the request is an operator's (the admin token is configured and given). A wrong token
/// counts as a failure of `client`, as on the operator's routes.
pub(crate) fn is_operator(state: &ApiState, headers: &HeaderMap, client: Option<IpAddr>) -> bool {
    state.admin.is_some() && headers.contains_key(header::AUTHORIZATION) && refusal(state, headers, client).is_none()
}

/// The answer to a request that is not an operator's (`404` without a configured token, `401`,
/// `429` with `Retry-After` for an address that sent too many wrong tokens lately); `None` for an
/// operator's. Each wrong token is counted in [`ADMIN_AUTH_FAILURES`] and against `client`.
pub(crate) fn refusal(state: &ApiState, headers: &HeaderMap, client: Option<IpAddr>) -> Option<Response> {
    let Some(admin) = state.admin.as_ref() else {
        return Some(ApiError::client(StatusCode::NOT_FOUND, "no such route", None).into_response());
    };
    let failures = &state.admin_failures;
    // A limited address is refused before its token is even looked at: a right guess must not
    // show either.
    if let Some(wait) = client.and_then(|client| failures.wrong.waiting(client)) {
        metrics::counter!(ADMIN_AUTH_FAILURES, "reason" => "limited").increment(1);
        return Some(too_many(wait));
    }
    if authorised(headers, admin.token.expose_secret()) {
        return None;
    }
    // A request without a token guessed nothing: only a wrong token is a failure.
    if headers.contains_key(header::AUTHORIZATION) {
        metrics::counter!(ADMIN_AUTH_FAILURES, "reason" => "wrong").increment(1);
        if let Some(client) = client {
            if failures.logged.check(client).is_ok() {
                tracing::warn!(%client, "a wrong admin token was refused (logged once a minute per address)");
            }
            match failures.wrong.check(client) {
                Ok(()) => {}
                Err(Limited::Empty(wait)) => return Some(too_many(wait)),
                Err(Limited::Crowded) => return Some(too_many(FAILURE_PERIOD)),
            }
        }
    }
    let mut response =
        ApiError::client(StatusCode::UNAUTHORIZED, "an administrator's bearer token is required", None).into_response();
    response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    Some(response)
}

fn too_many(wait: Duration) -> Response {
    let message = format!("too many wrong admin tokens from this address: at most {MAX_FAILURES} a minute");
    ApiError::client(StatusCode::TOO_MANY_REQUESTS, message, None)
        .with_retry_after(Duration::from_secs(wait.as_secs() + 1))
        .into_response()
}

/// Checks the bearer token before anything else: the handlers behind it (and their body
/// extractors) run only for an operator, so that no one else can hold a connection open on a slow
/// body or make the process buffer one.
pub(crate) async fn require_operator(State(state): State<ApiState>, request: Request, next: Next) -> Response {
    match refusal(&state, request.headers(), client_address(request.extensions())) {
        Some(refused) => refused,
        None => next.run(request).await,
    }
}

/// An operator's request body: at most [`BODY_LIMIT`] bytes within the vote routes' body timeout
/// (`413`, `408`).
pub(crate) async fn read_body(body: axum::body::Body) -> Result<axum::body::Bytes, ApiError> {
    bandvote_runtime::http::read_body(body, BODY_LIMIT).await.map_err(|error| error.into_api_error(BODY_LIMIT))
}

async fn post_recount(State(state): State<ApiState>) -> Result<Response, ApiError> {
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
    axum::extract::Query(query): axum::extract::Query<AuditQuery>,
) -> Result<Response, ApiError> {
    if let Some(id) = query.round.as_deref() {
        super::rounds::find(&state, id).await?;
    }
    let audit = state.store.audit(query.round.as_deref()).await?;
    Ok(Json(audit).into_response())
}

/// `GET /api/admin/pipeline`: how far the log is behind the counters, and how fresh they are.
async fn get_pipeline(State(state): State<ApiState>) -> Result<Response, ApiError> {
    let (results, logged) = tokio::try_join!(state.store.results(), state.store.logged_total())?;
    Ok(Json(serde_json::json!({
        "counted": results.counts.total,
        "logged": logged,
        "updated_at": results.updated_at,
        "freshness_ms": results.freshness_ms,
    }))
    .into_response())
}

/// The admin routes, when a token is configured, and the operator's CSV exports, every one behind
/// `require_operator` (the token before the body).
pub fn router(state: ApiState) -> Router {
    let exports = Router::new()
        .route("/api/rounds/{id}/results.csv", axum::routing::get(super::rounds::get_results_csv))
        .route("/api/rounds/{id}/votes.csv", axum::routing::get(super::rounds::get_votes_csv));
    if state.admin.is_none() {
        return exports.route_layer(middleware::from_fn_with_state(state.clone(), require_operator)).with_state(state);
    }
    exports
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
        .route_layer(middleware::from_fn_with_state(state.clone(), require_operator))
        .with_state(state)
}
