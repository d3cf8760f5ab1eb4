//! The guest's outgoing HTTP: only the configured upstream is reachable, over a few HTTP/2
//! connections shared by every instance and used round-robin (the default would open a connection
//! per request), with at most a fixed number of requests in flight; the guests beyond it wait their
//! turn.

use std::{
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
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

/// HTTP/2 connections to the upstream by default (`--upstream-connections`), as the gRPC gateway
/// keeps: a Service in front of several producers spreads connections, not requests.
pub const DEFAULT_UPSTREAM_CONNECTIONS: usize = 2;

/// Requests to the upstream in flight at once by default (`--upstream-in-flight`), below the
/// streams one HTTP/2 connection of the http-producer takes at once (200).
pub const DEFAULT_UPSTREAM_IN_FLIGHT: usize = 128;

/// The pooled client to the upstream.
pub type UpstreamClient = Client<HttpConnector, WasiBody>;

/// The clients, one HTTP/2 connection each, and the permits that bound the requests in flight: a
/// request holds a permit until the guest is done with the answer's body.
///
/// HTTP/2 rather than one HTTP/1 request per connection: the requests in flight share a few
/// connections, whose writes and reads carry many of them at once, on both sides of the hop.
#[derive(Clone)]
pub struct Upstream {
    clients: Arc<[UpstreamClient]>,
    next: Arc<AtomicUsize>,
    in_flight: Arc<Semaphore>,
}

impl Upstream {
    /// `connections` HTTP/2 connections (prior knowledge, as the http-producer serves both
    /// versions on one port), at most `in_flight` requests at once over them.
    pub fn new(connections: usize, in_flight: usize) -> Self {
        let clients = (0..connections.max(1))
            .map(|_| {
                let mut connector = HttpConnector::new();
                connector.set_nodelay(true);
                connector.set_connect_timeout(Some(Duration::from_secs(2)));
                // Each client pools its own connection: one per client, shared by its requests.
                // It lets an idle connection go before the producer would (after 60 s), so that
                // no request is sent on a connection the producer is closing.
                Client::builder(TokioExecutor::new())
                    .pool_idle_timeout(Duration::from_secs(30))
                    .http2_only(true)
                    .build(connector)
            })
            .collect();
        Self { clients, next: Arc::new(AtomicUsize::new(0)), in_flight: Arc::new(Semaphore::new(in_flight.max(1))) }
    }

    /// The next connection's client, round-robin.
    fn client(&self) -> &UpstreamClient {
        &self.clients[self.next.fetch_add(1, Ordering::Relaxed) % self.clients.len()]
    }

    /// Sends `request` once fewer than the bound are in flight; the caller keeps the permit until
    /// it is done with the answer's body.
    pub async fn send(
        &self,
        request: http::Request<WasiBody>,
    ) -> Result<(http::Response<Incoming>, OwnedSemaphorePermit), hyper_util::client::legacy::Error> {
        let permit = Arc::clone(&self.in_flight).acquire_owned().await.expect("the semaphore is never closed");
        Ok((self.client().request(request).await?, permit))
    }

    /// Sends `request` at once, outside the bound: for the readiness probe, which must not queue
    /// behind the votes.
    pub async fn probe(
        &self,
        request: http::Request<WasiBody>,
    ) -> Result<http::Response<Incoming>, hyper_util::client::legacy::Error> {
        self.client().request(request).await
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
