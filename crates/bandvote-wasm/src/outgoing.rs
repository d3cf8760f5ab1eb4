//! The guest's outgoing HTTP: only the configured upstream is reachable, over a few HTTP/2
//! connections shared by every instance and used round-robin (the default would open a connection
//! per request).
//!
//! A vote a guest hands back in its answer, or sends itself (`POST /votes` below the upstream's
//! base path, with `--guest-sends`), goes in the host's next call to the http-producer's `POST
//! /votes/batch` with the votes other guests hand back or send at the same time
//! ([`bandvote_ingest::calls`], as the gRPC gateway sends them), at most a few calls in flight, and
//! gets the answer `POST /votes` would have given. Each vote is still validated by its own guest
//! and answered on its own; what the calls share is the hop, its HTTP/2 frames, the producer's
//! wake-ups and Kafka's produce requests. Any other request goes on its own, at most
//! [`OTHER_IN_FLIGHT`] at once.

use std::{
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::response::IntoResponse;
use bandvote_core::{IngestPath, TraceContext, trace::TRACEPARENT};
use bandvote_ingest::{
    calls::{self, Call, Calls, Carrier},
    edge,
    http_producer::{BATCH_CONTENT_TYPE, BATCH_ROUTE},
    ingest_secret::{IngestSecret, SECRET_HEADER},
    rounds::ROUND_HEADER,
    trace::VOTE_ID_HEADER,
};
use bandvote_proto::v1::{SubmitVoteRequest, SubmitVotesRequest, SubmitVotesResponse};
use bandvote_runtime::{
    http::json,
    inproc::{Connector, InProcess},
    metrics as names,
};
use bytes::Bytes;
use http::{HeaderValue, StatusCode, Uri, header::CONTENT_TYPE};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use prost::Message;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::Status;
use tracing::Span;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

/// How long the guest may wait for the upstream's first byte when it sets no timeout itself.
const FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(10);

/// HTTP/2 connections to the upstream by default (`--upstream-connections`), as the gRPC gateway
/// keeps: a Service in front of several producers spreads connections, not requests.
pub const DEFAULT_UPSTREAM_CONNECTIONS: usize = 2;

/// Calls to the http-producer's batch route in flight at once by default (`--upstream-calls`);
/// the votes that arrive meanwhile go together in the next call.
pub const DEFAULT_UPSTREAM_CALLS: usize = 2;

/// Requests other than votes in flight at once, below the streams one HTTP/2 connection of the
/// http-producer takes at once (200); the guests beyond it wait their turn.
pub const OTHER_IN_FLIGHT: usize = 128;

/// Longest a call to the batch route may take: the producer's produce timeout (5 s) plus a margin.
const CALL_TIMEOUT: Duration = Duration::from_secs(6);

/// The largest answer of the batch route read.
const MAX_ANSWER_BYTES: usize = 4 << 20;

/// The pooled client to the upstream.
pub type UpstreamClient = Client<Connector, WasiBody>;

/// How the host reaches its upstream, beyond its URL.
#[derive(Debug, Clone, Default)]
pub struct Reach {
    /// The producer inside this process (`bandvote up`), reached without a socket.
    pub in_process: Option<InProcess>,
    /// The secret the producers require, added to every request (the guest never sees it).
    pub secret: Option<IngestSecret>,
}

/// The clients, one HTTP/2 connection each, the calls that carry the guests' votes, and the permits
/// that bound the other requests in flight: such a request holds a permit until the guest is done
/// with the answer's body.
///
/// HTTP/2 rather than one HTTP/1 request per connection: the requests in flight share a few
/// connections, whose writes and reads carry many of them at once, on both sides of the hop.
#[derive(Clone)]
pub struct Upstream {
    clients: Clients,
    calls: Calls,
    vote_path: Arc<str>,
    in_flight: Arc<Semaphore>,
    secret: Option<HeaderValue>,
}

/// The pooled clients, used round-robin.
#[derive(Clone)]
struct Clients {
    clients: Arc<[UpstreamClient]>,
    next: Arc<AtomicUsize>,
}

impl Clients {
    /// The next connection's client, round-robin.
    fn next(&self) -> &UpstreamClient {
        &self.clients[self.next.fetch_add(1, Ordering::Relaxed) % self.clients.len()]
    }
}

/// The calls to the http-producer's batch route.
struct Batches {
    clients: Clients,
    uri: Uri,
    secret: Option<HeaderValue>,
}

impl Carrier for Batches {
    fn carry(&self, votes: Vec<SubmitVoteRequest>) -> Call {
        metrics::counter!(names::WASM_PRODUCER_CALLS).increment(1);
        let client = self.clients.next().clone();
        let body = Full::new(Bytes::from(SubmitVotesRequest { votes }.encode_to_vec()))
            .map_err(|never| match never {})
            .boxed_unsync();
        let mut request = http::Request::post(self.uri.clone()).header(CONTENT_TYPE, BATCH_CONTENT_TYPE);
        if let Some(secret) = &self.secret {
            request = request.header(SECRET_HEADER, secret);
        }
        let request = request.body(body);
        Box::pin(async move {
            let request = request.map_err(|e| Status::internal(format!("batch request: {e}")))?;
            let answered = tokio::time::timeout(CALL_TIMEOUT, async move {
                let response = client.request(request).await.map_err(|e| Status::unavailable(format!("{e}")))?;
                let status = response.status();
                let body = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
                    .collect()
                    .await
                    .map_err(|e| Status::unavailable(format!("the answer broke off: {e}")))?
                    .to_bytes();
                Ok::<_, Status>((status, body))
            })
            .await;
            let (status, body) = answered.map_err(|_| Status::deadline_exceeded("no answer in time"))??;
            if status == StatusCode::OK {
                let answer = SubmitVotesResponse::decode(body)
                    .map_err(|e| Status::internal(format!("the answer is not a SubmitVotesResponse: {e}")))?;
                return Ok(answer.outcomes);
            }
            let text = String::from_utf8_lossy(&body);
            Err(if status.is_server_error() {
                Status::unavailable(format!("answered {status}: {text}"))
            } else {
                Status::internal(format!("refused the batch with {status}: {text}"))
            })
        })
    }
}

impl Upstream {
    /// `connections` HTTP/2 connections (prior knowledge, as the http-producer serves both
    /// versions on one port) to `base` (the upstream's URL), at most `calls` calls carrying the
    /// guests' votes at once over them. Starts the task that makes the calls (in the current tokio
    /// runtime).
    pub fn new(base: &str, connections: usize, calls: usize, reach: Reach) -> Result<Self, http::uri::InvalidUri> {
        let base = base.trim_end_matches('/');
        let uri: Uri = format!("{base}{BATCH_ROUTE}").parse()?;
        let vote_path = format!("{}/votes", uri.path().trim_end_matches(BATCH_ROUTE)).into();
        let clients = (0..connections.max(1))
            .map(|_| {
                let connector = match &reach.in_process {
                    Some(producer) => producer.connector(),
                    None => {
                        let mut tcp = HttpConnector::new();
                        tcp.set_nodelay(true);
                        tcp.set_connect_timeout(Some(Duration::from_secs(2)));
                        Connector::Tcp(tcp)
                    }
                };
                // Each client pools its own connection: one per client, shared by its requests.
                // It lets an idle connection go before the producer would (after 60 s), so that
                // no request is sent on a connection the producer is closing.
                Client::builder(TokioExecutor::new())
                    .pool_idle_timeout(Duration::from_secs(30))
                    .http2_only(true)
                    .build(connector)
            })
            .collect();
        let clients = Clients { clients, next: Arc::new(AtomicUsize::new(0)) };
        let secret = reach.secret.map(|secret| secret.header().clone());
        let batches = Batches { clients: clients.clone(), uri, secret: secret.clone() };
        let calls = Calls::start(Arc::new(batches), calls);
        Ok(Self { clients, calls, vote_path, in_flight: Arc::new(Semaphore::new(OTHER_IN_FLIGHT)), secret })
    }

    /// Sends `request`, not a vote, once fewer than the bound are in flight; the caller keeps the
    /// permit until it is done with the answer's body.
    pub async fn send(
        &self,
        mut request: http::Request<WasiBody>,
    ) -> Result<(http::Response<Incoming>, OwnedSemaphorePermit), hyper_util::client::legacy::Error> {
        self.sign(&mut request);
        let permit = Arc::clone(&self.in_flight).acquire_owned().await.expect("the semaphore is never closed");
        Ok((self.clients.next().request(request).await?, permit))
    }

    /// Sends `request` at once, outside the bound: for the readiness probe, which must not queue
    /// behind the votes.
    pub async fn probe(
        &self,
        mut request: http::Request<WasiBody>,
    ) -> Result<http::Response<Incoming>, hyper_util::client::legacy::Error> {
        self.sign(&mut request);
        self.clients.next().request(request).await
    }

    /// Adds the ingest secret, in place of any the guest set.
    fn sign(&self, request: &mut http::Request<WasiBody>) {
        request.headers_mut().remove(SECRET_HEADER);
        if let Some(secret) = &self.secret {
            request.headers_mut().insert(SECRET_HEADER, secret.clone());
        }
    }
}

/// `wasi:http` hooks of one guest instance: a vote goes in the next call, other requests to
/// `authority` through the pooled client, with the `traceparent` of the instance's request; every
/// other request is denied.
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
    /// Set while the instance waits for the upstream's answer (for a call or a permit, then for
    /// the answer): an instance out of time then is the upstream's delay, not the guest's fault.
    pub waiting: Arc<AtomicBool>,
}

type BoxedIo = Box<dyn Future<Output = Result<(), Error>> + Send>;

/// No answer from the http-producer before the deadline.
#[derive(Debug)]
pub struct OutOfTime;

impl UpstreamOnly {
    /// A vote the guest sends: it goes in the next call to the batch route (see [`Self::carry`]).
    async fn vote(
        &self,
        request: http::Request<WasiBody>,
        timeout: Duration,
    ) -> Result<http::Response<WasiBody>, Error> {
        let deadline = tokio::time::Instant::now() + timeout;
        let (parts, body) = request.into_parts();
        let body = axum::body::Body::new(body.map_err(|e| std::io::Error::other(format!("{e:?}"))));
        match self.carry(&parts.headers, body, deadline).await {
            Ok(response) => Ok(to_wasi(response)),
            Err(OutOfTime) => Err(Error::ConnectionReadTimeout),
        }
    }

    /// Carries a vote, given as the headers and body of a `POST /votes` to the http-producer, in
    /// the next call to the batch route, and gives the answer `POST /votes` would have given: the
    /// vote is checked the same way (media type, key, body, fields, round) and queued with the trace
    /// context of the guest's request.
    pub async fn carry(
        &self,
        headers: &http::HeaderMap,
        body: axum::body::Body,
        deadline: tokio::time::Instant,
    ) -> Result<axum::response::Response, OutOfTime> {
        match edge::read_vote(IngestPath::Wasm, headers, body).await {
            Ok(accepted) => self.submit(accepted, headers, deadline).await,
            Err(refused) => Ok(refused.into_response()),
        }
    }

    /// Puts a vote already checked in the next call to the batch route, in the round `headers`
    /// name, and gives the answer `POST /votes` would have given.
    pub async fn submit(
        &self,
        accepted: edge::AcceptedVote,
        headers: &http::HeaderMap,
        deadline: tokio::time::Instant,
    ) -> Result<axum::response::Response, OutOfTime> {
        // An unreadable round is passed on as an invalid one, which the producer refuses.
        let round = headers.get(ROUND_HEADER).map_or("", |value| value.to_str().unwrap_or("-"));
        let vote = calls::vote_request(accepted, round.to_owned(), self.trace.as_ref());
        // The wait for a call counts in the timeout: a guest queued behind a stuck upstream fails
        // as if the upstream were slow to answer.
        self.waiting.store(true, Ordering::Relaxed);
        let outcome = tokio::time::timeout_at(deadline, self.upstream.calls.submit(vote, deadline.into_std())).await;
        self.waiting.store(false, Ordering::Relaxed);
        match outcome {
            Ok(Ok(id)) => {
                self.span.record("vote_id", id.as_str());
                let mut response = json(StatusCode::ACCEPTED, serde_json::json!({"id": id, "path": "wasm"}));
                if let Ok(id) = HeaderValue::from_str(&id) {
                    response.headers_mut().insert(VOTE_ID_HEADER, id);
                }
                Ok(response)
            }
            Ok(Err(status)) => Ok(calls::status_to_error(&status, "http-producer").into_response()),
            Err(_) => Err(OutOfTime),
        }
    }
}

/// An answer made here, as the guest reads it.
fn to_wasi(response: axum::response::Response) -> http::Response<WasiBody> {
    response.map(|body| body.map_err(|e| Error::InternalError(Some(e.to_string()))).boxed_unsync())
}

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
            let timeout = options.and_then(|o| o.first_byte_timeout).unwrap_or(FIRST_BYTE_TIMEOUT);
            if request.method() == http::Method::POST && request.uri().path() == &*hooks.upstream.vote_path {
                return Ok((hooks.vote(request, timeout).await?, Box::new(async { Ok(()) }) as BoxedIo));
            }
            if let Some(trace) = hooks.trace
                && let Ok(value) = HeaderValue::from_str(trace.traceparent().as_str())
            {
                request.headers_mut().insert(TRACEPARENT, value);
            }
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

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use bandvote_core::VoteMessage;
    use bandvote_queue::{CheckError, QueueError, VoteQueue};
    use futures::future::BoxFuture;
    use tokio::sync::watch;

    use super::*;

    /// A queue that remembers what it queued and holds every vote while `held` is true.
    struct Held {
        queued: Mutex<Vec<VoteMessage>>,
        held: watch::Receiver<bool>,
        arrived: tokio::sync::mpsc::UnboundedSender<String>,
    }

    impl VoteQueue for Held {
        fn enqueue<'a>(&'a self, message: &'a VoteMessage, _: bool) -> BoxFuture<'a, Result<(), QueueError>> {
            Box::pin(async move {
                drop(self.arrived.send(message.id.clone()));
                self.held.clone().wait_for(|held| !held).await.expect("the test holds the sender");
                self.queued.lock().expect("queued").push(message.clone());
                Ok(())
            })
        }

        fn check(&self) -> BoxFuture<'_, Result<(), CheckError>> {
            Box::pin(async { Ok(()) })
        }

        fn flush(&self) -> BoxFuture<'_, ()> {
            Box::pin(async {})
        }
    }

    /// The hooks of one guest instance sending to `upstream`.
    fn hooks(upstream: &Upstream, authority: &str) -> UpstreamOnly {
        UpstreamOnly {
            upstream: upstream.clone(),
            authority: authority.to_owned(),
            trace: None,
            span: Span::none(),
            waiting: Arc::default(),
        }
    }

    /// A guest's vote request: `body` with `headers`.
    fn request(authority: &str, headers: &[(&str, &str)], body: &str) -> http::Request<WasiBody> {
        let mut request = http::Request::post(format!("http://{authority}/votes"));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let body = Full::new(Bytes::from(body.to_owned())).map_err(|never| match never {}).boxed_unsync();
        request.body(body).expect("a request")
    }

    /// The status and the JSON body of an answer.
    async fn answer(response: http::Response<WasiBody>) -> (u16, serde_json::Value) {
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.expect("the body").to_bytes();
        (status, serde_json::from_slice(&body).expect("JSON"))
    }

    const VOTE: &str = r#"{"name":"Soda Stereo","album":"Signos","year":1986,"rank":1}"#;
    const JSON: (&str, &str) = ("content-type", "application/json");

    #[tokio::test]
    async fn the_votes_of_guests_that_send_together_go_in_one_call_each_answered_on_its_own() {
        let (release, held) = watch::channel(true);
        let (arrived, mut arrivals) = tokio::sync::mpsc::unbounded_channel();
        let queue = Arc::new(Held { queued: Mutex::default(), held, arrived });
        let batches = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&batches);
        let producer = bandvote_ingest::http_producer::router(Arc::clone(&queue) as Arc<dyn VoteQueue>, None).layer(
            axum::middleware::from_fn(move |request: axum::extract::Request, next: axum::middleware::Next| {
                if request.uri().path() == BATCH_ROUTE {
                    counted.fetch_add(1, Ordering::SeqCst);
                }
                next.run(request)
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let authority = listener.local_addr().expect("addr").to_string();
        tokio::spawn(async move { axum::serve(listener, producer).await });
        let upstream = Upstream::new(&format!("http://{authority}"), 1, 1, Reach::default()).expect("upstream");
        let send = |headers: &'static [(&'static str, &'static str)]| {
            let (hooks, request) = (hooks(&upstream, &authority), request(&authority, headers, VOTE));
            tokio::spawn(
                async move { answer(hooks.vote(request, Duration::from_secs(5)).await.expect("answered")).await },
            )
        };

        // The first vote's call is in flight, held by the queue.
        let first = send(&[JSON, ("idempotency-key", "first")]);
        assert_eq!(arrivals.recv().await.as_deref(), Some("first"));
        // These three wait for it, then go together; the producer checks each on its own.
        let rest = [
            send(&[JSON, ("idempotency-key", "second")]),
            send(&[JSON]),
            send(&[JSON, ("idempotency-key", "third"), (ROUND_HEADER, "not a round id")]),
        ];
        tokio::time::sleep(Duration::from_millis(200)).await;
        release.send(false).expect("the queue listens");
        assert_eq!(first.await.expect("joined"), (202, serde_json::json!({"id": "first", "path": "wasm"})));
        let [second, generated, third] = rest;
        assert_eq!(second.await.expect("joined"), (202, serde_json::json!({"id": "second", "path": "wasm"})));
        let (status, body) = generated.await.expect("joined");
        assert_eq!((status, &body["path"]), (202, &serde_json::json!("wasm")), "{body}");
        let third = third.await.expect("joined");
        assert_eq!(third, (400, serde_json::json!({"error": "invalid round id", "field": "round"})));
        assert_eq!(batches.load(Ordering::SeqCst), 2, "one call for the first vote, one for the three after it");

        let queued = queue.queued.lock().expect("queued").clone();
        let ids: Vec<_> = queued.iter().map(|m| m.id.as_str()).collect();
        assert_eq!(ids.len(), 3, "{ids:?}");
        assert!(ids.contains(&"first") && ids.contains(&"second") && ids.contains(&body["id"].as_str().expect("id")));
        assert!(queued.iter().all(|m| m.path == IngestPath::Wasm && m.name == "Soda Stereo" && m.round == "default"));

        // What the producer would refuse is refused here, without a call.
        let guest = hooks(&upstream, &authority);
        let refused = guest.vote(request(&authority, &[JSON], "{}"), Duration::from_secs(5)).await;
        let (status, body) = answer(refused.expect("answered")).await;
        assert_eq!((status, body["field"].as_str()), (400, Some("name")), "{body}");
        let refused = guest.vote(request(&authority, &[], VOTE), Duration::from_secs(5)).await;
        assert_eq!(answer(refused.expect("answered")).await.0, 415);
        assert_eq!(batches.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_vote_for_a_producer_that_does_not_answer_is_a_503_to_retry() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let authority = listener.local_addr().expect("addr").to_string();
        drop(listener);
        let upstream = Upstream::new(&format!("http://{authority}"), 1, 1, Reach::default()).expect("upstream");
        let guest = hooks(&upstream, &authority);
        let response = guest.vote(request(&authority, &[JSON], VOTE), Duration::from_secs(5)).await.expect("answered");
        assert_eq!(response.headers().get("retry-after").and_then(|v| v.to_str().ok()), Some("1"));
        assert_eq!(answer(response).await.0, 503);
    }
}
