//! HTTP plumbing shared by every service: binding with a clear error, serving until shutdown, and
//! the one error type whose 4xx bodies are `{"error", "field"}`.

use std::{convert::Infallible, net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use axum::{
    Json, Router,
    http::{HeaderName, HeaderValue, Method, Request, StatusCode, header},
    response::{IntoResponse, Response},
};
use hyper::body::Incoming;
use hyper_util::service::TowerToHyperService;
use serde::Serialize;
use tokio::{
    net::TcpListener,
    sync::{Semaphore, watch},
    time::Instant,
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::{
    client::{ClientAddress, TrustedProxies},
    event_stream::{self, First},
};

/// Binds a listener, saying which address failed and why.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.with_context(|| format!("failed to listen on {addr}"))
}

/// Connections a listener keeps open at once by default (`--max-connections`).
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Connections one client address keeps open at once by default (`--max-connections-per-client`).
pub const DEFAULT_MAX_CONNECTIONS_PER_CLIENT: usize = 256;
/// Time a client has to send a request's head by default (`--header-timeout-ms`).
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Time a connection may stay open with no request in flight by default (`--idle-timeout-ms`).
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// The limits every listener applies to its clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Connections open at once; the next ones are closed at once. Default
    /// [`DEFAULT_MAX_CONNECTIONS`] (`--max-connections`).
    pub max_connections: usize,
    /// Connections open at once from one client address (the TCP peer, IPv6 by /64:
    /// [`client_group`](crate::client::client_group)); the next ones are closed at once. A trusted proxy's connections are
    /// not counted per client (they carry many clients). 0: no such cap. Default
    /// [`DEFAULT_MAX_CONNECTIONS_PER_CLIENT`] (`--max-connections-per-client`).
    pub max_connections_per_client: usize,
    /// Time a connection has to deliver a complete request head, from its opening, whatever its
    /// protocol (HTTP/1, HTTP/2, or bytes that are neither), and for HTTP/1 from the end of the
    /// previous request; a connection too slow is closed. Default [`DEFAULT_HEADER_TIMEOUT`]
    /// (`--header-timeout-ms`).
    pub header_timeout: Duration,
    /// Time a connection may stay open with no request in flight once it served one (an HTTP/2
    /// connection with no open stream, however many pings it answers); then it is closed
    /// gracefully (HTTP/2 GOAWAY). Default [`DEFAULT_IDLE_TIMEOUT`] (`--idle-timeout-ms`).
    pub idle_timeout: Duration,
    /// Headers per request (HTTP/1); more is answered `431`.
    pub max_headers: usize,
    /// Bytes of one request head (HTTP/1: the request line and headers; HTTP/2: the decoded
    /// header list); more is answered `431` (or the stream is reset). Default 64 KiB.
    pub max_header_bytes: usize,
    /// Proxies whose `X-Forwarded-For` names the client ([`ClientAddress`]); none by default
    /// (`--trusted-proxies`).
    pub trusted_proxies: TrustedProxies,
    /// Paths of long-lived event streams: a connection whose first request is a plain HTTP/1.1
    /// `GET` of one of them is answered without hyper's per-connection buffers, its body ending
    /// with the connection (see `event_stream`). Set by the service that has them
    /// ([`Service::event_stream`](crate::service::Service::event_stream)); none by default.
    pub event_streams: Vec<&'static str>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_client: DEFAULT_MAX_CONNECTIONS_PER_CLIENT,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_headers: 64,
            max_header_bytes: 64 * 1024,
            trusted_proxies: TrustedProxies::none(),
            event_streams: Vec::new(),
        }
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

/// Where a server takes its connections from: a TCP listener, or [`crate::inproc::Listener`].
pub trait Accept: Send {
    /// A connection.
    type Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static;
    /// The next connection and its peer's address.
    fn accept(&mut self) -> impl std::future::Future<Output = std::io::Result<(Self::Io, SocketAddr)>> + Send;
}

impl Accept for TcpListener {
    type Io = tokio::net::TcpStream;

    async fn accept(&mut self) -> std::io::Result<(Self::Io, SocketAddr)> {
        let (stream, peer) = TcpListener::accept(self).await?;
        let _ = stream.set_nodelay(true);
        Ok((stream, peer))
    }
}

impl Accept for crate::inproc::Listener {
    type Io = tokio::io::DuplexStream;

    async fn accept(&mut self) -> std::io::Result<(Self::Io, SocketAddr)> {
        Ok(crate::inproc::Listener::accept(self).await)
    }
}

/// Serves `router` until `shutdown` is cancelled, then lets in-flight requests finish, bounded by
/// `grace`. Applies [`Limits::default`]: connection limits, a header timeout, an idle timeout and
/// head size limits.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
    grace: Duration,
) -> anyhow::Result<()> {
    serve_with(listener, router, shutdown, grace, Limits::default()).await
}

/// [`serve`] with explicit limits. Every request carries the TCP peer (`ConnectInfo<SocketAddr>`)
/// and the resolved [`ClientAddress`] in its extensions.
pub async fn serve_with<L: Accept>(
    mut listener: L,
    router: Router,
    shutdown: CancellationToken,
    grace: Duration,
    limits: Limits,
) -> anyhow::Result<()> {
    use hyper_util::{
        rt::{TokioExecutor, TokioIo, TokioTimer},
        server::conn::auto::Builder,
    };

    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_headers(limits.max_headers)
        // The read buffer must hold a whole head: its size bounds the head (hyper's minimum is 8 KiB).
        .max_buf_size(limits.max_header_bytes.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        // A peer that stops answering pings is gone even if a stream is open (a stalled stream).
        .keep_alive_interval(H2_PING_INTERVAL)
        .keep_alive_timeout(H2_PING_TIMEOUT);
    let builder = Arc::new(builder);
    let event_streams: Arc<[&'static str]> = limits.event_streams.clone().into();
    let connections = TaskTracker::new();
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let per_client = crate::per_client::PerClient::new(limits.max_connections_per_client);
    let trusted = Arc::new(limits.trusted_proxies.clone());
    let timeouts = Timeouts { header: limits.header_timeout, idle: limits.idle_timeout };
    loop {
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = Accept::accept(&mut listener) => match accepted {
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
            metrics::counter!(crate::metrics::CONNECTIONS_REFUSED, "reason" => "max_connections").increment(1);
            drop(stream);
            continue;
        };
        // A trusted proxy carries many clients: only the listener's limit applies to it.
        let slot = if trusted.contains(peer.ip()) { Some(None) } else { per_client.enter(peer.ip()).map(Some) };
        let Some(slot) = slot else {
            metrics::counter!(crate::metrics::CONNECTIONS_REFUSED, "reason" => "per_client").increment(1);
            drop(stream);
            continue;
        };
        let shutdown = shutdown.clone();
        let (builder, event_streams, router) = (Arc::clone(&builder), Arc::clone(&event_streams), router.clone());
        let trusted = Arc::clone(&trusted);
        let (max_headers, max_head_bytes) = (limits.max_headers, limits.max_header_bytes);
        connections.spawn(async move {
            let opened = Instant::now();
            let mut stream = stream;
            let first = if event_streams.is_empty() {
                First::Other(bytes::Bytes::new())
            } else {
                let deadline = opened + timeouts.header;
                tokio::select! {
                    first = event_stream::read_first(&mut stream, &event_streams, max_headers, max_head_bytes, deadline) => first,
                    () = shutdown.cancelled() => First::Gone { late: false },
                }
            };
            match first {
                First::Gone { late } => {
                    if late {
                        metrics::counter!(crate::metrics::CONNECTIONS_CLOSED, "reason" => "header_timeout").increment(1);
                    }
                }
                First::Stream(request) => {
                    metrics::counter!(crate::metrics::EVENT_STREAM_CONNECTIONS).increment(1);
                    event_stream::serve(stream, *request, router, peer, &trusted, timeouts.idle).await;
                }
                First::Other(read) => {
                    let (activity, watched) = tokio::sync::watch::channel(Activity::default());
                    let service = Tracked {
                        inner: TowerToHyperService::new(router),
                        peer,
                        trusted,
                        activity: Arc::new(activity),
                        close_after_get: !event_streams.is_empty(),
                    };
                    let io = TokioIo::new(event_stream::Replayed::new(read, stream));
                    let connection = builder.serve_connection_with_upgrades(io, service).into_owned();
                    supervise(connection, watched, opened, timeouts, shutdown).await;
                }
            }
            drop((permit, slot));
        });
    }
    drop(listener);
    connections.close();
    tokio::select! {
        () = connections.wait() => Ok(()),
        () = tokio::time::sleep(grace) => {
            tracing::warn!(grace_s = grace.as_secs_f64(), "drain took longer than the grace period");
            Ok(())
        }
    }
}

/// How often an HTTP/2 connection is pinged, and how long the answer may take before the
/// connection is closed.
const H2_PING_INTERVAL: Duration = Duration::from_secs(20);
const H2_PING_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Debug, Clone, Copy)]
struct Timeouts {
    header: Duration,
    idle: Duration,
}

/// What a connection's requests tell its supervisor.
#[derive(Debug, Clone, Copy, Default)]
struct Activity {
    /// Requests whose answer is not yet completely sent (HTTP/2: open streams).
    in_flight: usize,
    /// Requests whose head arrived, since the connection opened.
    started: u64,
}

type Connection<Io> = hyper_util::server::conn::auto::UpgradeableConnection<
    'static,
    hyper_util::rt::TokioIo<event_stream::Replayed<Io>>,
    Tracked,
    hyper_util::rt::TokioExecutor,
>;

/// Drives one connection and closes it when its client is too slow to send a first request head
/// (whatever the protocol: the version detection has no timer of its own), when it stays idle
/// past the idle timeout, or on shutdown (gracefully).
async fn supervise<Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static>(
    connection: Connection<Io>,
    mut activity: watch::Receiver<Activity>,
    opened: Instant,
    timeouts: Timeouts,
    shutdown: CancellationToken,
) {
    let mut connection = std::pin::pin!(connection);
    let mut changed_at = opened;
    // Once a graceful close has begun, the instant it must be over.
    let mut closing: Option<Instant> = None;
    let mut draining = false;
    loop {
        let now = *activity.borrow_and_update();
        let deadline = match closing {
            Some(deadline) => Some(deadline),
            None if now.started == 0 => Some(opened + timeouts.header),
            None if now.in_flight == 0 => Some(changed_at + timeouts.idle),
            None => None,
        };
        tokio::select! {
            _ = connection.as_mut() => return,
            Ok(()) = activity.changed() => changed_at = Instant::now(),
            () = shutdown.cancelled(), if !draining => {
                // The drain is bounded by the server's grace period, not here.
                draining = true;
                closing = None;
                connection.as_mut().graceful_shutdown();
            }
            () = sleep_until_some(deadline), if !draining => {
                if closing.is_some() || now.started == 0 {
                    let reason = if now.started == 0 { "header_timeout" } else { "idle" };
                    metrics::counter!(crate::metrics::CONNECTIONS_CLOSED, "reason" => reason).increment(1);
                    return;
                }
                // Idle: a GOAWAY (HTTP/2) or a close (HTTP/1); a peer that does not take part in
                // the goodbye is cut off after a header timeout more.
                connection.as_mut().graceful_shutdown();
                closing = Some(Instant::now() + timeouts.header);
            }
        }
    }
}

async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// The router as one connection's service: each request gets the peer and the client address in
/// its extensions, and is counted in flight until its answer has been sent (or dropped).
#[derive(Clone)]
struct Tracked {
    inner: hyper_util::service::TowerToHyperService<Router>,
    peer: SocketAddr,
    trusted: Arc<TrustedProxies>,
    activity: Arc<watch::Sender<Activity>>,
    /// Whether an HTTP/1 `GET` is answered `Connection: close` (a listener with event streams): a
    /// browser opens its page's live stream on an idle connection of the page's if it finds one,
    /// and the stream is then hyper's, with its buffers, for the whole show; with none idle it
    /// opens a new one, whose first request the stream's own writer takes. Votes (`POST`) keep
    /// their connections.
    close_after_get: bool,
}

impl hyper::service::Service<Request<Incoming>> for Tracked {
    type Response = Response;
    type Error = Infallible;
    type Future = std::pin::Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn call(&self, mut request: Request<Incoming>) -> Self::Future {
        let guard = InFlight::enter(Arc::clone(&self.activity));
        identify(&mut request, self.peer, &self.trusted);
        let close = self.close_after_get
            && request.method() == Method::GET
            && matches!(request.version(), axum::http::Version::HTTP_10 | axum::http::Version::HTTP_11);
        let answer = self.inner.call(request);
        Box::pin(async move {
            let mut response = answer.await?;
            if close {
                response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            Ok(response.map(|body| axum::body::Body::new(CountedBody { body, _guard: guard })))
        })
    }
}

/// Puts the TCP peer (`ConnectInfo<SocketAddr>`) and the client it stands for ([`ClientAddress`])
/// in `request`'s extensions.
pub(crate) fn identify<B>(request: &mut Request<B>, peer: SocketAddr, trusted: &TrustedProxies) {
    let client = trusted.client_address(peer.ip(), request.headers());
    request.extensions_mut().insert(axum::extract::ConnectInfo(peer));
    request.extensions_mut().insert(ClientAddress(client));
}

/// One request in flight; dropping it ends it.
struct InFlight(Arc<watch::Sender<Activity>>);

impl InFlight {
    fn enter(activity: Arc<watch::Sender<Activity>>) -> Self {
        activity.send_modify(|a| {
            a.in_flight += 1;
            a.started += 1;
        });
        Self(activity)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.send_modify(|a| a.in_flight = a.in_flight.saturating_sub(1));
    }
}

/// A response body that keeps its request in flight until it is sent or dropped.
struct CountedBody {
    body: axum::body::Body,
    _guard: InFlight,
}

impl hyper::body::Body for CountedBody {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// An error answered to an HTTP client. 4xx answers say what is wrong; 5xx answers are opaque and
/// their cause is logged once, when the answer is made ([`IntoResponse`]), not when the value is
/// built: an error a caller handles is never logged.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    field: Option<&'static str>,
    retry_after: Option<Duration>,
    /// What went wrong, with its chain, for the log (5xx only).
    cause: Option<String>,
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
        Self { status, message: message.into(), field, retry_after: None, cause: None }
    }

    /// `400 Bad Request`.
    pub fn bad_request(message: impl Into<String>, field: Option<&'static str>) -> Self {
        Self::client(StatusCode::BAD_REQUEST, message, field)
    }

    /// `503 Service Unavailable` with `Retry-After`; `cause` is logged when answered, not answered.
    pub fn unavailable(cause: impl std::fmt::Display, retry_after: Duration) -> Self {
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: "the vote queue is unavailable, retry later".into(),
            field: None,
            retry_after: Some(retry_after),
            cause: Some(format!("{cause:#}")),
        }
    }

    /// `503 Service Unavailable` naming the dependency that did not answer (for read APIs, where
    /// saying which store is down helps and reveals nothing).
    pub fn unavailable_because(cause: impl std::fmt::Display, retry_after: Duration) -> Self {
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: format!("unavailable: {cause}"),
            field: None,
            retry_after: Some(retry_after),
            cause: Some(format!("{cause:#}")),
        }
    }

    /// `500 Internal Server Error`; `cause` is logged with its chain when answered, not answered.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: "internal error".into(),
            field: None,
            retry_after: None,
            cause: Some(format!("{cause:#}")),
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
        let cause = self.cause.as_deref().unwrap_or(&self.message);
        match self.status.as_u16() {
            500 => tracing::error!(status = 500, cause, "internal error"),
            501.. => tracing::warn!(status = self.status.as_u16(), cause, "answering {}", self.status),
            // The client's mistake, answered in full: nothing for an operator to do.
            _ => tracing::debug!(status = self.status.as_u16(), error = self.message, "answering {}", self.status),
        }
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
/// `Retry-After`; `router` unchanged when `origins` is empty (CORS closed, the default). `*` among
/// them means any origin (never with credentials: no cookie or `Authorization` is shared with
/// other sites). Apply it last: a fallback set after it would answer preflights itself.
/// Origins that are not valid header values are ignored.
pub fn with_cors(router: Router, origins: &[String], methods: &[Method], headers: &[HeaderName]) -> Router {
    let allow = if origins.iter().any(|o| o.trim() == "*") {
        AllowOrigin::any()
    } else {
        let origins: Vec<HeaderValue> = origins.iter().filter_map(|o| HeaderValue::from_str(o.trim()).ok()).collect();
        if origins.is_empty() {
            return router;
        }
        AllowOrigin::list(origins)
    };
    router.layer(
        CorsLayer::new()
            .allow_origin(allow)
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

#[cfg(test)]
mod tests {
    use std::{
        sync::{Arc, Mutex},
        time::Duration,
    };

    use axum::response::IntoResponse;
    use tracing_subscriber::{Layer, layer::Context, prelude::*};

    use super::ApiError;

    /// Records the level and fields of every event.
    #[derive(Clone, Default)]
    struct Events(Arc<Mutex<Vec<String>>>);

    impl<S: tracing::Subscriber> Layer<S> for Events {
        fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
            struct Fields(String);
            impl tracing::field::Visit for Fields {
                fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                    self.0.push_str(&format!(" {}={value:?}", field.name()));
                }
            }
            let mut fields = Fields(event.metadata().level().to_string());
            event.record(&mut fields);
            self.0.lock().expect("lock").push(fields.0);
        }
    }

    fn logged(f: impl FnOnce()) -> Vec<String> {
        let events = Events::default();
        tracing::subscriber::with_default(tracing_subscriber::registry().with(events.clone()), f);
        events.0.lock().expect("lock").clone()
    }

    #[test]
    fn connections_are_capped_per_client_group_and_freed_when_closed() {
        let per_client = crate::per_client::PerClient::new(2);
        let ip = |text: &str| text.parse::<std::net::IpAddr>().unwrap();
        let first = per_client.enter(ip("2001:db8:1:2::1")).expect("first");
        let _second = per_client.enter(ip("2001:db8:1:2::2")).expect("second, same /64");
        assert!(per_client.enter(ip("2001:db8:1:2:ffff::9")).is_none(), "a third from the same /64");
        assert!(per_client.enter(ip("2001:db8:1:3::1")).is_some(), "another /64");
        assert!(per_client.enter(ip("192.0.2.1")).is_some());
        drop(first);
        assert!(per_client.enter(ip("2001:db8:1:2::3")).is_some(), "a closed connection frees its slot");
        let unlimited = crate::per_client::PerClient::new(0);
        let held: Vec<_> = (0..1000).map(|_| unlimited.enter(ip("192.0.2.1")).expect("no cap")).collect();
        assert_eq!(held.len(), 1000);
    }

    async fn preflight(router: axum::Router, origin: &str) -> axum::http::Response<axum::body::Body> {
        use hyper::service::Service as _;
        let request = axum::http::Request::builder()
            .method("OPTIONS")
            .uri("/x")
            .header("origin", origin)
            .header("access-control-request-method", "GET")
            .body(axum::body::Body::empty())
            .expect("request");
        hyper_util::service::TowerToHyperService::new(router).call(request).await.expect("infallible")
    }

    #[tokio::test]
    async fn a_star_among_the_cors_origins_allows_any_origin_without_credentials() {
        use axum::http::Method;
        let router = || axum::Router::new().route("/x", axum::routing::get(|| async { "x" }));
        let any = super::with_cors(router(), &["https://a.example".into(), " * ".into()], &[Method::GET], &[]);
        let answer = preflight(any, "https://anyone.example").await;
        assert_eq!(answer.headers()["access-control-allow-origin"], "*");
        assert!(answer.headers().get("access-control-allow-credentials").is_none());

        let listed = super::with_cors(router(), &["https://a.example".into()], &[Method::GET], &[]);
        assert_eq!(
            preflight(listed.clone(), "https://a.example").await.headers()["access-control-allow-origin"],
            "https://a.example"
        );
        assert!(preflight(listed, "https://b.example").await.headers().get("access-control-allow-origin").is_none());
    }

    #[test]
    fn errors_are_logged_when_answered_not_when_built() {
        let built = logged(|| {
            let _ = ApiError::unavailable("kafka: broker down", Duration::from_secs(1));
            let _ = ApiError::internal("task panicked");
        });
        assert_eq!(built, Vec::<String>::new());

        let answered = logged(|| {
            let cause = anyhow::anyhow!("connection refused").context("failed to reach redis");
            let _ = ApiError::internal(cause).into_response();
            let _ = ApiError::unavailable("kafka: broker down", Duration::from_secs(1)).into_response();
            let _ = ApiError::bad_request("name is required", Some("name")).into_response();
        });
        assert_eq!(answered.len(), 3, "{answered:?}");
        assert!(answered[0].starts_with("ERROR"), "{answered:?}");
        assert!(answered[0].contains("failed to reach redis: connection refused"), "the chain: {answered:?}");
        assert!(answered[1].starts_with("WARN") && answered[1].contains("kafka: broker down"), "{answered:?}");
        assert!(answered[2].starts_with("DEBUG"), "a client error is no warning: {answered:?}");
    }
}
