//! The embedded web app at `/` and its configuration at `/api/config`.

use axum::{
    Json, Router,
    extract::State,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};

use std::time::Duration;

use bandvote_runtime::{http::ApiError, per_client::Limited};

use crate::ApiState;

mod assets {
    include!(concat!(env!("OUT_DIR"), "/assets.rs"));
}

/// Every file of the built web app: (URL path, contents).
pub use assets::ASSETS;

/// The content type of a file, by its extension.
fn content_type(path: &str) -> &'static str {
    match path.rsplit('.').next() {
        Some("html") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("json") => "application/json",
        Some("woff2") => "font/woff2",
        Some("txt") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// One embedded file. Hashed build outputs (`/assets/...`) are cached for a year; the rest revalidate.
fn file(path: &'static str, body: &'static [u8], csp: HeaderValue) -> Response {
    let cache = if path.starts_with("/assets/") { "public, max-age=31536000, immutable" } else { "no-cache" };
    let mut response = (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type(path))),
            (header::CACHE_CONTROL, HeaderValue::from_static(cache)),
            (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
        ],
        body,
    )
        .into_response();
    if path.ends_with(".html") {
        response.headers_mut().insert(header::CONTENT_SECURITY_POLICY, csp);
    }
    response
}

/// The page's Content-Security-Policy: everything from this origin, plus the vote service when it is
/// elsewhere; no other host.
fn csp(vote_url: Option<&str>) -> HeaderValue {
    let vote_origin =
        vote_url.filter(|u| !u.is_empty()).map(|u| format!(" {}", u.trim_end_matches('/'))).unwrap_or_default();
    HeaderValue::from_str(&format!(
        "default-src 'self'; connect-src 'self'{vote_origin}; img-src 'self' data:; style-src 'self' 'unsafe-inline'; \
         frame-ancestors 'none'; base-uri 'self'; form-action 'self'"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("default-src 'self'"))
}

/// `GET /api/config`: what the web app needs to know about this deployment.
async fn get_config(State(state): State<ApiState>) -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "vote_url": state.vote_url.as_deref(),
        "public_url": state.public_url.as_deref(),
        "voter_token": state.voter_tokens.is_some(),
        "voter_header": state.voter_header,
    }))
}

/// How long a voter token lasts.
const VOTER_TOKEN_LIFETIME: chrono::Duration = chrono::Duration::hours(24);

/// `POST /api/voter-token`: a signed token naming a new voter, for the vote form to send in the
/// gateways' voter header (404 when no secret is configured). A token makes a browser's voter
/// sticky, not unique: anyone may ask again, so each client address gets a few a minute (`429`
/// with `Retry-After` beyond).
async fn post_voter_token(
    State(state): State<ApiState>,
    headers: axum::http::HeaderMap,
    uri: axum::http::Uri,
    extensions: axum::http::Extensions,
) -> Result<Json<serde_json::Value>, ApiError> {
    let tokens = state
        .voter_tokens
        .as_ref()
        .ok_or_else(|| ApiError::client(StatusCode::NOT_FOUND, "voter tokens are not enabled here", None))?;
    // A page on another site must never read a token made for its visitor's address, whatever the
    // CORS origins allow for the rest of the API (`*` included).
    if let Some(origin) = headers.get(axum::http::header::ORIGIN)
        && !token_origin_allowed(&state, origin.as_bytes(), own_host(&headers, &uri))
    {
        return Err(ApiError::client(
            StatusCode::FORBIDDEN,
            "voter tokens are issued to this site's own pages only",
            None,
        ));
    }
    if let Some(client) = bandvote_runtime::per_client::client_address(&extensions) {
        match state.voter_token_limit.check(client) {
            Ok(()) => {}
            Err(Limited::Empty(wait)) => {
                let message =
                    format!("at most {} voter tokens per minute from one client", state.voter_token_limit.burst());
                let retry = Duration::from_secs(wait.as_secs() + 1);
                return Err(ApiError::client(StatusCode::TOO_MANY_REQUESTS, message, None).with_retry_after(retry));
            }
            Err(Limited::Crowded) => {
                return Err(ApiError::unavailable_because("too many clients at once", Duration::from_secs(1)));
            }
        }
    }
    // Unique, not secret: only the signature makes a token genuine.
    let voter = bandvote_core::VoteId::generate().as_str().to_owned();
    let expires = chrono::Utc::now() + VOTER_TOKEN_LIFETIME;
    let token = tokens.issue(&voter, expires.timestamp());
    Ok(Json(serde_json::json!({ "token": token, "voter": voter, "expires_at": bandvote_core::time::format(expires) })))
}

/// Whether a browser page on `origin` may get a voter token: a page of this very host (`Host`),
/// of the configured public address, or of an origin listed by name in `--cors-origins` (never
/// through `*`).
fn token_origin_allowed(state: &ApiState, origin: &[u8], host: Option<&str>) -> bool {
    let Ok(origin) = std::str::from_utf8(origin) else { return false };
    let own = origin.strip_prefix("https://").or_else(|| origin.strip_prefix("http://"));
    if own.is_some_and(|own| host.is_some_and(|host| host.eq_ignore_ascii_case(own))) {
        return true;
    }
    state.voter_token_origins.iter().any(|allowed| allowed.eq_ignore_ascii_case(origin))
}

/// The host a request was sent to: `Host` (HTTP/1.1), else the URI's authority (HTTP/2).
fn own_host<'a>(headers: &'a axum::http::HeaderMap, uri: &'a axum::http::Uri) -> Option<&'a str> {
    headers
        .get(header::HOST)
        .and_then(|host| host.to_str().ok())
        .or_else(|| uri.authority().map(axum::http::uri::Authority::as_str))
}

/// The origin (`scheme://host[:port]`) of a URL.
pub(crate) fn origin_of(url: &str) -> Option<String> {
    let (scheme, rest) = url.trim().split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next().filter(|a| !a.is_empty())?;
    Some(format!("{scheme}://{authority}"))
}

/// `/` (the audience's page), `/screen` (the projector), `/admin` (the console), every file of the build, `/api/config` and `/api/voter-token`.
pub fn router(state: ApiState) -> Router {
    let policy = csp(state.vote_url.as_deref());
    let mut router = Router::new()
        .route("/api/config", get(get_config))
        .route("/api/voter-token", axum::routing::post(post_voter_token));
    for &(path, body) in ASSETS {
        let serve = |policy: HeaderValue| get(move || std::future::ready(file(path, body, policy.clone())));
        router = router.route(path, serve(policy.clone()));
        if path == "/index.html" {
            // One page, three views: the audience's, the projector's and the operator console.
            router = router
                .route("/", serve(policy.clone()))
                .route("/screen", serve(policy.clone()))
                .route("/admin", serve(policy.clone()));
        }
    }
    router.with_state(state)
}
