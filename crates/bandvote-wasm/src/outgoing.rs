//! The guest's outgoing HTTP: only the configured upstream is reachable, over one pooled keep-alive
//! client shared by every instance (the default would open a connection per request).

use std::{future::Future, time::Duration};

use bandvote_core::{TraceContext, trace::TRACEPARENT};
use bandvote_ingest::trace::VOTE_ID_HEADER;
use http::HeaderValue;
use http_body_util::BodyExt;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use tracing::Span;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

/// How long the guest may wait for the upstream's first byte when it sets no timeout itself.
const FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(10);

/// The pooled client to the upstream.
pub type UpstreamClient = Client<HttpConnector, WasiBody>;

/// Builds the pooled keep-alive client.
pub fn client() -> UpstreamClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(2)));
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(1024)
        .build(connector)
}

/// `wasi:http` hooks of one guest instance: requests to `authority` go through the pooled client,
/// with the `traceparent` of the instance's request; every other request is denied.
#[derive(Clone)]
pub struct UpstreamOnly {
    /// The pooled client.
    pub client: UpstreamClient,
    /// `host:port` of the upstream.
    pub authority: String,
    /// The trace context of the request the instance handles (the guest needs not know it).
    pub trace: Option<TraceContext>,
    /// The request's `vote` span, which learns the vote id from the upstream's answer.
    pub span: Span,
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
            let response = match tokio::time::timeout(timeout, hooks.client.request(request)).await {
                Ok(Ok(response)) => response,
                Ok(Err(error)) if error.is_connect() => return Err(Error::ConnectionRefused),
                Ok(Err(error)) => return Err(Error::InternalError(Some(error.to_string()))),
                Err(_) => return Err(Error::ConnectionReadTimeout),
            };
            if let Some(id) = response.headers().get(VOTE_ID_HEADER).and_then(|id| id.to_str().ok()) {
                hooks.span.record("vote_id", id);
            }
            let response = response.map(|body| body.map_err(Error::from).boxed_unsync());
            Ok((response, Box::new(async { Ok(()) }) as BoxedIo))
        })
    }
}
