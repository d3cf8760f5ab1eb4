//! The embedded web app at `/` and its configuration at `/api/config`.

use axum::{
    Json, Router,
    extract::State,
    http::{HeaderValue, header},
    response::{IntoResponse, Response},
    routing::get,
};

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
    Json(serde_json::json!({ "vote_url": state.vote_url.as_deref() }))
}

/// `/` (the app), every file of the build, and `/api/config`.
pub fn router(state: ApiState) -> Router {
    let policy = csp(state.vote_url.as_deref());
    let mut router = Router::new().route("/api/config", get(get_config));
    for &(path, body) in ASSETS {
        let serve = |policy: HeaderValue| get(move || std::future::ready(file(path, body, policy.clone())));
        router = router.route(path, serve(policy.clone()));
        if path == "/index.html" {
            router = router.route("/", serve(policy.clone()));
        }
    }
    router.with_state(state)
}
