//! HTTP plumbing shared by every service: binding with a clear error, serving until shutdown, and
//! the one error type whose 4xx bodies are `{"error", "field"}`.

use std::{net::SocketAddr, time::Duration};

use anyhow::Context;
use axum::{
    Json, Router,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Binds a listener, saying which address failed and why.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.with_context(|| format!("failed to listen on {addr}"))
}

/// Serves `router` until `shutdown` is cancelled, then lets in-flight requests finish, bounded by
/// `grace`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
    grace: Duration,
) -> anyhow::Result<()> {
    let stop = shutdown.clone();
    let server = axum::serve(listener, router.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(async move { stop.cancelled().await });
    let mut server = std::pin::pin!(server.into_future());
    tokio::select! {
        result = &mut server => result.context("server failed"),
        () = async { shutdown.cancelled().await; tokio::time::sleep(grace).await } => {
            tracing::warn!(grace_s = grace.as_secs_f64(), "drain took longer than the grace period");
            Ok(())
        }
    }
}

/// An error answered to an HTTP client. 4xx answers say what is wrong; 5xx answers are opaque and
/// their cause is logged once, here.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    field: Option<&'static str>,
    retry_after: Option<Duration>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'static str>,
}

impl ApiError {
    /// A client error with a message and, when one field is at fault, its name.
    pub fn client(status: StatusCode, message: impl Into<String>, field: Option<&'static str>) -> Self {
        Self { status, message: message.into(), field, retry_after: None }
    }

    /// `400 Bad Request`.
    pub fn bad_request(message: impl Into<String>, field: Option<&'static str>) -> Self {
        Self::client(StatusCode::BAD_REQUEST, message, field)
    }

    /// `503 Service Unavailable` with `Retry-After`; `cause` is logged, not answered.
    pub fn unavailable(cause: impl std::fmt::Display, retry_after: Duration) -> Self {
        tracing::warn!(cause = %cause, "answering 503");
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: "the vote queue is unavailable, retry later".into(),
            field: None,
            retry_after: Some(retry_after),
        }
    }

    /// `503 Service Unavailable` naming the dependency that did not answer (for read APIs, where
    /// saying which store is down helps and reveals nothing).
    pub fn unavailable_because(cause: impl std::fmt::Display, retry_after: Duration) -> Self {
        tracing::warn!(cause = %cause, "answering 503");
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: format!("unavailable: {cause}"),
            field: None,
            retry_after: Some(retry_after),
        }
    }

    /// `500 Internal Server Error`; `cause` is logged with its chain, not answered.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(cause = %cause, "internal error");
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: "internal error".into(),
            field: None,
            retry_after: None,
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody { error: &self.message, field: self.field };
        let mut response = (self.status, Json(body)).into_response();
        if let Some(after) = self.retry_after {
            let secs = after.as_secs().max(1).to_string();
            if let Ok(value) = HeaderValue::from_str(&secs) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
        }
        response
    }
}

/// The fallback of every router: unknown routes are a JSON 404.
pub async fn not_found() -> ApiError {
    ApiError::client(StatusCode::NOT_FOUND, "no such route", None)
}

/// A known route with the wrong method: a JSON 405.
pub async fn method_not_allowed() -> ApiError {
    ApiError::client(StatusCode::METHOD_NOT_ALLOWED, "method not allowed on this route", None)
}

/// Adds the JSON 404 and 405 fallbacks to a router.
pub fn with_fallbacks(router: Router) -> Router {
    router.fallback(not_found).method_not_allowed_fallback(method_not_allowed)
}

/// The address a listener is bound to, for logs and tests.
pub fn local_addr(listener: &TcpListener) -> anyhow::Result<SocketAddr> {
    listener.local_addr().context("failed to read the bound address")
}

/// Returns `Json(value)`, for handlers that answer a serialisable body.
pub fn json<T: Serialize>(status: StatusCode, value: T) -> Response {
    (status, Json(value)).into_response()
}
