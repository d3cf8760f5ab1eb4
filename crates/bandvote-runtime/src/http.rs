//! HTTP plumbing shared by every service: binding with a clear error, serving until shutdown, and
//! the one error type whose 4xx bodies are `{"error", "field"}`.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use axum::{
    Json, Router,
    http::{HeaderName, HeaderValue, Method, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;
use tokio::{net::TcpListener, sync::Semaphore};
use tokio_util::sync::CancellationToken;
use tower_http::cors::{AllowOrigin, CorsLayer};

/// Binds a listener, saying which address failed and why.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.with_context(|| format!("failed to listen on {addr}"))
}

/// The limits every listener applies to its clients.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections open at once; the next ones are closed at once (`BANDVOTE_MAX_CONNECTIONS`).
    pub max_connections: usize,
    /// Time a client has to send a request's headers (HTTP/1); slower clients are disconnected.
    pub header_timeout: Duration,
    /// Headers per request (HTTP/1); more is answered `431`.
    pub max_headers: usize,
}

impl Default for Limits {
    fn default() -> Self {
        let max_connections =
            std::env::var("BANDVOTE_MAX_CONNECTIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000);
        Self { max_connections, header_timeout: Duration::from_secs(10), max_headers: 64 }
    }
}

/// Time a client has to send a request body (slow-drip bodies get `408`).
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a request body could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyError {
    /// More than the limit.
    TooLarge,
    /// Not complete within [`BODY_TIMEOUT`].
    TooSlow,
    /// The client broke off, or sent a malformed chunked body.
    Broken,
}

impl BodyError {
    /// The answer for this error: 413, 408 or 400.
    pub fn into_api_error(self, limit: usize) -> ApiError {
        match self {
            Self::TooLarge => {
                ApiError::client(StatusCode::PAYLOAD_TOO_LARGE, format!("body must be at most {limit} bytes"), None)
            }
            Self::TooSlow => ApiError::client(
                StatusCode::REQUEST_TIMEOUT,
                format!("the body did not arrive within {} s", BODY_TIMEOUT.as_secs()),
                None,
            ),
            Self::Broken => ApiError::bad_request("could not read the request body", None),
        }
    }
}

/// Reads a whole request body of at most `limit` bytes within [`BODY_TIMEOUT`].
pub async fn read_body(body: axum::body::Body, limit: usize) -> Result<bytes::Bytes, BodyError> {
    use http_body_util::{BodyExt, LengthLimitError, Limited};
    match tokio::time::timeout(BODY_TIMEOUT, Limited::new(body, limit).collect()).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(error)) if error.downcast_ref::<LengthLimitError>().is_some() => Err(BodyError::TooLarge),
        Ok(Err(_)) => Err(BodyError::Broken),
        Err(_) => Err(BodyError::TooSlow),
    }
}

/// Serves `router` until `shutdown` is cancelled, then lets in-flight requests finish, bounded by
/// `grace`. Applies [`Limits::default`]: a connection limit, a header timeout and a header count.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
    grace: Duration,
) -> anyhow::Result<()> {
    serve_with(listener, router, shutdown, grace, Limits::default()).await
}

/// [`serve`] with explicit limits.
pub async fn serve_with(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
    grace: Duration,
    limits: Limits,
) -> anyhow::Result<()> {
    use hyper_util::{
        rt::{TokioExecutor, TokioIo, TokioTimer},
        server::{conn::auto::Builder, graceful::GracefulShutdown},
        service::TowerToHyperService,
    };

    let mut builder = Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(limits.header_timeout).max_headers(limits.max_headers);
    builder.http2().timer(TokioTimer::new()).max_header_list_size(64 * 1024);
    let graceful = GracefulShutdown::new();
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    loop {
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors, usually: wait a little rather than spin.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            metrics::counter!(crate::metrics::CONNECTIONS_REFUSED).increment(1);
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(router.clone().layer(axum::Extension(axum::extract::ConnectInfo(peer))));
        let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service).into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            let _ = connection.await;
            drop(permit);
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => Ok(()),
        () = tokio::time::sleep(grace) => {
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

    /// Adds a `Retry-After` to the answer.
    pub fn with_retry_after(mut self, after: Duration) -> Self {
        self.retry_after = Some(after);
        self
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

/// Lets browsers on `origins` call `router` with `methods`, sending `headers` and reading
/// `Retry-After`; `router` unchanged when `origins` is empty (CORS closed, the default). Apply it
/// last: a fallback set after it would answer preflights itself.
/// Origins that are not valid header values are ignored.
pub fn with_cors(router: Router, origins: &[String], methods: &[Method], headers: &[HeaderName]) -> Router {
    let origins: Vec<HeaderValue> = origins.iter().filter_map(|o| HeaderValue::from_str(o.trim()).ok()).collect();
    if origins.is_empty() {
        return router;
    }
    router.layer(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins))
            .allow_methods(methods.to_vec())
            .allow_headers(headers.to_vec())
            .expose_headers([header::RETRY_AFTER]),
    )
}

/// The address a listener is bound to, for logs and tests.
pub fn local_addr(listener: &TcpListener) -> anyhow::Result<SocketAddr> {
    listener.local_addr().context("failed to read the bound address")
}

/// Returns `Json(value)`, for handlers that answer a serialisable body.
pub fn json<T: Serialize>(status: StatusCode, value: T) -> Response {
    (status, Json(value)).into_response()
}
