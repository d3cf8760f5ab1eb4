//! The guest's outgoing HTTP: only the configured upstream is reachable, over one pooled keep-alive
//! client shared by every instance (the default would open a connection per request), with at most
//! a fixed number of requests in flight, so that the connections to the upstream stay below its
//! per-client cap however many guests run at once.

use std::{
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use bandvote_core::{TraceContext, trace::TRACEPARENT};
use bandvote_ingest::trace::VOTE_ID_HEADER;
use http::HeaderValue;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::Span;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

/// How long the guest may wait for the upstream's first byte when it sets no timeout itself.
const FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(10);

/// Requests to the upstream in flight at once by default (`--upstream-connections`): half the
/// http-producer's default cap on one client's connections, so that a connection closed and one
/// opened in its place never meet the cap.
pub const DEFAULT_UPSTREAM_CONNECTIONS: usize = bandvote_runtime::http::DEFAULT_MAX_CONNECTIONS_PER_CLIENT / 2;

/// The pooled client to the upstream.
pub type UpstreamClient = Client<HttpConnector, WasiBody>;

/// The pooled keep-alive client and the permits that bound its requests in flight, hence its
/// connections: a request holds a permit until the guest is done with the answer's body, and
/// the pool hands a finished connection to the next request before it opens another.
#[derive(Clone)]
pub struct Upstream {
    client: UpstreamClient,
    in_flight: Arc<Semaphore>,
}

impl Upstream {
    /// A client keeping at most `connections` requests in flight (and as many idle connections).
    pub fn new(connections: usize) -> Self {
        let connections = connections.max(1);
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(2)));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(connections)
            .build(connector);
        Self { client, in_flight: Arc::new(Semaphore::new(connections)) }
    }

    /// Sends `request` once fewer than the bound are in flight; the caller keeps the permit until
    /// it is done with the answer's body.
    pub async fn send(
        &self,
        request: http::Request<WasiBody>,
    ) -> Result<(http::Response<Incoming>, OwnedSemaphorePermit), hyper_util::client::legacy::Error> {
        let permit = Arc::clone(&self.in_flight).acquire_owned().await.expect("the semaphore is never closed");
        Ok((self.client.request(request).await?, permit))
    }

    /// Sends `request` at once, outside the bound: for the readiness probe, which must not queue
    /// behind the votes (one connection beyond the bound, well within the upstream's cap).
    pub async fn probe(
        &self,
        request: http::Request<WasiBody>,
    ) -> Result<http::Response<Incoming>, hyper_util::client::legacy::Error> {
        self.client.request(request).await
    }
}

/// `wasi:http` hooks of one guest instance: requests to `authority` go through the pooled client,
/// with the `traceparent` of the instance's request; every other request is denied.
#[derive(Clone)]
pub struct UpstreamOnly {
    /// The pooled client.
    pub upstream: Upstream,
    /// `host:port` of the upstream.
    pub authority: String,
    /// The trace context of the request the instance handles (the guest needs not know it).
    pub trace: Option<TraceContext>,
    /// The request's `vote` span, which learns the vote id from the upstream's answer.
    pub span: Span,
    /// Set while the instance waits for the upstream's answer (for a permit, then for its head):
    /// an instance out of time then is the upstream's delay, not the guest's fault.
    pub waiting: Arc<AtomicBool>,
}

type BoxedIo = Box<dyn Future<Output = Result<(), Error>> + Send>;

impl WasiHttpHooks for UpstreamOnly {
    fn send_request(
        &mut self,
        mut request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _io: BoxedIo,
    ) -> Box<dyn Future<Output = Result<(http::Response<WasiBody>, BoxedIo), Error>> + Send> {
        let hooks = self.clone();
        Box::new(async move {
            let allowed = request.uri().scheme_str() == Some("http")
                && request.uri().authority().is_some_and(|a| a.as_str() == hooks.authority);
            if !allowed {
                tracing::warn!(uri = %request.uri(), "guest tried to reach a host other than its upstream");
                return Err(Error::HttpRequestDenied);
            }
            if let Some(trace) = hooks.trace
                && let Ok(value) = HeaderValue::from_str(trace.traceparent().as_str())
            {
                request.headers_mut().insert(TRACEPARENT, value);
            }
            let timeout = options.and_then(|o| o.first_byte_timeout).unwrap_or(FIRST_BYTE_TIMEOUT);
            // The wait for a permit counts in the timeout: a guest queued behind a stuck upstream
            // fails as if the upstream were slow to answer.
            hooks.waiting.store(true, Ordering::Relaxed);
            let sent = tokio::time::timeout(timeout, hooks.upstream.send(request)).await;
            hooks.waiting.store(false, Ordering::Relaxed);
            let (response, permit) = match sent {
                Ok(Ok(answer)) => answer,
                Ok(Err(error)) if error.is_connect() => return Err(Error::ConnectionRefused),
                Ok(Err(error)) => return Err(Error::InternalError(Some(error.to_string()))),
                Err(_) => return Err(Error::ConnectionReadTimeout),
            };
            if let Some(id) = response.headers().get(VOTE_ID_HEADER).and_then(|id| id.to_str().ok()) {
                hooks.span.record("vote_id", id);
            }
            // The body keeps the permit: its connection is busy until the guest has read it.
            let response = response.map(|body| {
                body.map_frame(move |frame| {
                    let _held = &permit;
                    frame
                })
                .map_err(Error::from)
                .boxed_unsync()
            });
            Ok((response, Box::new(async { Ok(()) }) as BoxedIo))
        })
    }
}
