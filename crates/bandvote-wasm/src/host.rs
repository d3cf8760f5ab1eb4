//! The wasmtime host: one engine and one pre-instantiated component for the process, a fresh
//! instance (in its own `Store`) per request.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, anyhow};
use axum::{
    body::Body,
    http::{HeaderValue, StatusCode, Uri},
    response::{IntoResponse, Response},
};
use bandvote_core::{
    IngestPath, TraceContext,
    http::{HAND_BACK_ENV, HAND_BACK_HEADER},
};
use bandvote_ingest::{
    edge::{AcceptedVote, IDEMPOTENCY_KEY},
    rounds::ROUND_HEADER,
};
use bandvote_runtime::metrics as names;
use http_body_util::BodyExt;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, Span};
use wasmtime::{
    Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store,
    component::{Component, Linker, ResourceTable},
};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{
    WasiHttpCtx, WasiHttpCtxView, WasiHttpView,
    p2::bindings::{ProxyPre, http::types::Scheme},
};

use crate::{
    WasmGatewayConfig,
    outgoing::{self, OutOfTime, UpstreamOnly},
};

/// Bytes of each reused linear memory kept resident and reset by memset: the guest's stack
/// (128 KiB, see its build script), data and the heap of a typical request fit in this.
const KEEP_RESIDENT: usize = 512 << 10;

/// The guest's one vote route; the host validates and admits what is posted to it.
const VOTE_ROUTE: &str = "/wasm/votes";

/// How often the epoch advances; a guest's deadline is counted in these ticks.
const EPOCH_TICK: Duration = Duration::from_millis(10);

/// What one guest instance sees: its WASI context (with `BANDVOTE_UPSTREAM` and, unless the guests
/// send their votes themselves, `BANDVOTE_HAND_BACK=1` in its environment), its HTTP context and the
/// hooks that keep it to its upstream.
pub struct GuestState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    hooks: UpstreamOnly,
}

impl WasiView for GuestState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl WasiHttpView for GuestState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView { ctx: &mut self.http, table: &mut self.table, hooks: &mut self.hooks }
    }
}

/// The engine, the pre-instantiated component and the pooled upstream client.
pub struct Host {
    engine: Engine,
    pre: ProxyPre<GuestState>,
    upstream: String,
    hooks: UpstreamOnly,
    deadline_ticks: u64,
    request_timeout: Duration,
    hand_back: bool,
    fairness: Option<Arc<bandvote_ingest::fairness::Fairness>>,
    rounds: Option<Arc<bandvote_ingest::rounds::RoundGate>>,
}

impl Host {
    /// Compiles `component` once (pooling allocator, epoch interruption), links the `wasi:http`
    /// proxy world and starts the task that makes the calls carrying the guests' votes (in the
    /// current tokio runtime).
    pub fn new(config: &WasmGatewayConfig, component: &[u8]) -> anyhow::Result<Self> {
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(config.max_instances)
            .total_core_instances(config.max_instances * 4)
            .total_memories(config.max_instances * 2)
            .total_tables(config.max_instances * 4)
            .total_stacks(config.max_instances)
            .max_memory_size(config.max_memory_bytes)
            // Reused slots are reset by memset instead of being unmapped: a request then touches
            // warm pages rather than page-faulting through the guest's stack and heap again.
            .linear_memory_keep_resident(KEEP_RESIDENT)
            // Where the kernel has PAGEMAP_SCAN (Linux 6.7+), only the pages the instance wrote are
            // reset, not the whole resident region: the guest's 190 KB of data is no longer copied
            // back on every request.
            .pagemap_scan(Enabled::Auto)
            .table_keep_resident(64 << 10)
            .async_stack_keep_resident(256 << 10)
            .decommit_batch_size(64);
        let mut engine_config = Config::new();
        engine_config
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
            .epoch_interruption(true)
            // Linear memories are reserved up to the limit, not the 4 GiB default.
            .memory_reservation(config.max_memory_bytes as u64)
            .memory_reservation_for_growth(0);
        let engine = Engine::new(&engine_config).map_err(|e| anyhow!("failed to create the wasm engine: {e:?}"))?;
        let component =
            Component::new(&engine, component).map_err(|e| anyhow!("failed to compile the guest component: {e:?}"))?;
        let mut linker = Linker::new(&engine);
        // WASI (the guest reads its upstream from its environment) plus wasi:http, as
        // `wasmtime serve -Scli` links them.
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(|e| anyhow!("failed to link WASI: {e:?}"))?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)
            .map_err(|e| anyhow!("failed to link wasi:http: {e:?}"))?;
        let pre = linker
            .instantiate_pre(&component)
            .and_then(ProxyPre::new)
            .map_err(|e| anyhow!("the component is not a wasi:http proxy: {e:?}"))?;
        let uri: Uri = config.upstream.parse().with_context(|| format!("invalid upstream URL {}", config.upstream))?;
        let authority = uri.authority().context("the upstream URL has no host")?.to_string();
        let ticks = config.request_timeout.as_millis() / EPOCH_TICK.as_millis();
        Ok(Self {
            engine,
            pre,
            upstream: config.upstream.trim_end_matches('/').to_owned(),
            hooks: UpstreamOnly {
                upstream: outgoing::Upstream::new(
                    &config.upstream,
                    config.upstream_connections,
                    config.upstream_calls,
                    config.reach.clone(),
                )
                .with_context(|| format!("invalid upstream URL {}", config.upstream))?,
                authority,
                trace: None,
                span: Span::none(),
                waiting: Arc::default(),
            },
            deadline_ticks: u64::try_from(ticks).unwrap_or(u64::MAX).max(1),
            request_timeout: config.request_timeout,
            hand_back: !config.guest_sends,
            fairness: None,
            rounds: None,
        })
    }

    /// Advances the engine's epoch every tick until `shutdown`, so that guest deadlines fire.
    pub fn start_epoch_ticker(&self, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
        let engine = self.engine.clone();
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(EPOCH_TICK);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    _ = interval.tick() => engine.increment_epoch(),
                }
            }
        })
    }

    /// A fresh store for one request, and its instance's hooks (whose flag the instance sets while
    /// it waits for the upstream).
    fn store(&self, trace: TraceContext) -> (Store<GuestState>, UpstreamOnly) {
        let mut wasi = WasiCtx::builder();
        wasi.env("BANDVOTE_UPSTREAM", &self.upstream);
        if self.hand_back {
            wasi.env(HAND_BACK_ENV, "1");
        }
        let hooks = UpstreamOnly {
            trace: Some(trace),
            span: Span::current(),
            waiting: Arc::new(AtomicBool::new(false)),
            ..self.hooks.clone()
        };
        let state = GuestState {
            wasi: wasi.build(),
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            hooks: hooks.clone(),
        };
        let mut store = Store::new(&self.engine, state);
        store.set_epoch_deadline(self.deadline_ticks);
        store.epoch_deadline_trap();
        (store, hooks)
    }

    /// The same host, with fair-voting checks before a guest is started for a vote.
    pub fn with_fairness(mut self, fairness: Option<Arc<bandvote_ingest::fairness::Fairness>>) -> Self {
        self.fairness = fairness;
        self
    }

    /// The same host, stamping each vote with its round (and refusing votes while voting is
    /// closed).
    pub fn with_rounds(mut self, rounds: Option<Arc<bandvote_ingest::rounds::RoundGate>>) -> Self {
        self.rounds = rounds;
        self
    }

    /// Runs one request through a fresh guest instance, within the request's `vote` span (whose
    /// vote id is the producer's answer's). A guest that traps, runs out of memory or time yields
    /// `500` for this request only; one out of time while it waits for the http-producer yields
    /// `503` with `Retry-After`, as the other path answers a producer too slow to answer.
    pub async fn handle(&self, request: axum::extract::Request) -> Response {
        let trace = bandvote_ingest::trace::from_headers(request.headers());
        let span = bandvote_ingest::trace::vote_span(IngestPath::Wasm, None, &trace);
        let vote = request.method() == axum::http::Method::POST && request.uri().path() == VOTE_ROUTE;
        let response = self.handle_traced(request, trace).instrument(span.clone()).await;
        // A refused vote counts in its round's refusals, which the operator's console shows.
        if let Some(gate) = &self.rounds
            && vote
            && response.status().is_client_error()
        {
            gate.note_refusal(response.status());
        }
        span.in_scope(|| tracing::debug!(status = response.status().as_u16(), "vote answered"));
        response
    }

    async fn handle_traced(&self, request: axum::extract::Request, trace: TraceContext) -> Response {
        let started = Instant::now();
        let mut checked = None;
        let (mut parts, body) = request.into_parts();
        // The round is the host's to say: a client's header of that name never reaches the guest.
        parts.headers.remove(ROUND_HEADER);
        let body = if parts.method == axum::http::Method::POST && parts.uri.path() == VOTE_ROUTE {
            // A vote is validated here, as the other path's edge does (media type, key, size,
            // fields), before anything else: a refused vote costs no instance and is never admitted
            // by the voter policy or remembered.
            let (accepted, body) =
                match bandvote_ingest::edge::read_vote_and_body(IngestPath::Wasm, &parts.headers, body).await {
                    Ok(read) => read,
                    // Counted as rejected by the edge, with its reason.
                    Err(error) => return error.into_response(),
                };
            let key = parts.headers.get(IDEMPOTENCY_KEY).cloned();
            // Before the voter policy: a vote refused for a closed round or off its ballot is not
            // one of the voter's.
            let given_year = accepted.vote.year.is_some();
            let admitted = match &self.rounds {
                Some(gate) => gate.admit(accepted.vote),
                None => bandvote_ingest::rounds::complete(&[], accepted.vote).map(|vote| (String::new(), vote)),
            };
            let (round, vote) = match admitted {
                Ok(admitted) => admitted,
                Err(refused) => {
                    let response = refused.into_response();
                    record(response.status(), started);
                    return response;
                }
            };
            if self.rounds.is_some() {
                match HeaderValue::from_str(&round) {
                    Ok(round) => parts.headers.insert(ROUND_HEADER, round),
                    Err(_) => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
                };
            }
            // A ballot vote that left its year out is handed to the guest with the entry's year, as
            // the producer needs it.
            let body = if given_year {
                body
            } else {
                parts.headers.remove(axum::http::header::CONTENT_LENGTH);
                bytes::Bytes::from(vote.to_json())
            };
            let accepted = AcceptedVote { vote, ..accepted };
            if let Some(fairness) = &self.fairness {
                let client = bandvote_runtime::per_client::client_address(&parts.extensions);
                if let Err(refused) =
                    fairness.admit(&parts.headers, client, &round, &accepted.vote, accepted.id.as_str()).await
                {
                    let response = refused.into_response();
                    record(response.status(), started);
                    return response;
                }
            }
            checked = Some(Checked { accepted, body: body.clone(), key });
            body
        } else {
            // Anything else is the guest's to answer (404, 405), with its body read here within the
            // size and time limits: a huge or slow-drip body costs no instance.
            match bandvote_runtime::http::read_body(body, bandvote_core::MAX_BODY_BYTES).await {
                Ok(bytes) => bytes,
                Err(error) => {
                    let response = error.into_api_error(bandvote_core::MAX_BODY_BYTES).into_response();
                    record(response.status(), started);
                    return response;
                }
            }
        };
        let request = axum::extract::Request::from_parts(parts, Body::from(body));
        let response = match self.run_guest(request, trace, checked).await {
            Ok(response) => response,
            Err(error) if error.is::<UpstreamTooSlow>() => {
                bandvote_runtime::http::ApiError::unavailable(error, UPSTREAM_RETRY_AFTER).into_response()
            }
            Err(error) => {
                metrics::counter!(names::WASM_GUEST_FAILURES).increment(1);
                tracing::warn!(error = format!("{error:#}"), "guest failed");
                let body = bandvote_core::http::error_body("internal error", None);
                (StatusCode::INTERNAL_SERVER_ERROR, [("content-type", "application/json")], body).into_response()
            }
        };
        record(response.status(), started);
        response
    }

    async fn run_guest(
        &self,
        request: axum::extract::Request,
        trace: TraceContext,
        checked: Option<Checked>,
    ) -> anyhow::Result<Response> {
        let deadline = tokio::time::Instant::now() + self.request_timeout;
        let (mut store, hooks) = self.store(trace);
        let (mut parts, body) = request.into_parts();
        // The guest sees an absolute URI, as a proxy would.
        if parts.uri.authority().is_none() {
            let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
            parts.uri = format!("http://localhost{path}").parse().context("request URI")?;
        }
        let body = body.map_err(|e| wasmtime_wasi_http::Error::InternalError(Some(e.to_string())));
        let request = hyper::Request::from_parts(parts, body);
        let incoming = store
            .data_mut()
            .http()
            .new_incoming_request(Scheme::Http, request)
            .map_err(|e| anyhow!("failed to hand the request to the guest: {e:?}"))?;
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let outparam =
            store.data_mut().http().new_response_outparam(sender).map_err(|e| anyhow!("response outparam: {e:?}"))?;
        let pre = self.pre.clone();
        let guest = tokio::spawn(async move {
            let started = Instant::now();
            let proxy = pre.instantiate_async(&mut store).await.map_err(|e| anyhow!("instantiation failed: {e:?}"))?;
            metrics::histogram!(names::WASM_INSTANTIATE_DURATION).record(started.elapsed().as_secs_f64());
            proxy
                .wasi_http_incoming_handler()
                .call_handle(&mut store, incoming, outparam)
                .await
                .map_err(|e| anyhow!("guest trapped: {e:?}"))
        });
        match tokio::time::timeout_at(deadline, receiver).await {
            Ok(Ok(Ok(response))) if self.hand_back && response.headers().contains_key(HAND_BACK_HEADER) => {
                self.carry(&hooks, response, deadline, checked).await
            }
            Ok(Ok(Ok(response))) => {
                let (parts, body) = response.into_parts();
                let body = body.map_err(|e| std::io::Error::other(format!("{e:?}")));
                Ok(Response::from_parts(parts, Body::new(body)))
            }
            Ok(Ok(Err(code))) => Err(anyhow!("guest answered with an error: {code:?}")),
            // The guest dropped its response without setting it: its task says why.
            Ok(Err(_)) => match guest.await {
                Ok(Err(error)) => Err(error),
                Ok(Ok(())) => Err(anyhow!("guest returned without a response")),
                Err(join) => Err(anyhow!("guest task failed: {join}")),
            },
            Err(_) => {
                guest.abort();
                if hooks.waiting.load(Ordering::Relaxed) {
                    return Err(UpstreamTooSlow(self.request_timeout).into());
                }
                Err(anyhow!("guest gave no response within {:?}", self.request_timeout))
            }
        }
    }

    /// Carries the vote a guest handed back in its answer as the vote it would have sent is carried
    /// (the same checks, the same call, the same answer), its instance already gone. A hand-back
    /// the guest did not finish in its time fails as the guest. The checks are not run twice on
    /// the same bytes: a hand-back of the body and key the host checked before the guest ran is
    /// that vote.
    async fn carry(
        &self,
        hooks: &UpstreamOnly,
        handed: hyper::Response<wasmtime_wasi_http::p2::body::HyperOutgoingBody>,
        deadline: tokio::time::Instant,
        checked: Option<Checked>,
    ) -> anyhow::Result<Response> {
        let (parts, body) = handed.into_parts();
        let body = http_body_util::Limited::new(body, bandvote_core::MAX_BODY_BYTES);
        let body = match tokio::time::timeout_at(deadline, body.collect()).await {
            Ok(Ok(body)) => body.to_bytes(),
            Ok(Err(error)) => return Err(anyhow!("the guest's hand-back broke off: {error}")),
            Err(_) => return Err(anyhow!("the guest did not finish its hand-back within {:?}", self.request_timeout)),
        };
        let carried = match checked.filter(|checked| checked.is(&parts.headers, &body)) {
            Some(checked) => hooks.submit(checked.accepted, &parts.headers, deadline).await,
            None => hooks.carry(&parts.headers, Body::from(body), deadline).await,
        };
        carried.map_err(|OutOfTime| UpstreamTooSlow(self.request_timeout).into())
    }

    /// Whether the upstream answers its `/healthz`, for readiness.
    pub async fn check_upstream(&self) -> Result<(), bandvote_runtime::health::CheckError> {
        let uri: Uri = format!("{}/healthz", self.upstream).parse().map_err(|e| format!("upstream URL: {e}"))?;
        let body = http_body_util::Empty::<bytes::Bytes>::new().map_err(|never| match never {}).boxed_unsync();
        let request = hyper::Request::get(uri).body(body)?;
        match self.hooks.upstream.probe(request).await {
            Ok(response) if response.status().is_success() => Ok(()),
            Ok(response) => Err(format!("http-producer answered {}", response.status()).into()),
            Err(error) => Err(format!("http-producer: {error}").into()),
        }
    }
}

/// A vote the host checked before its guest ran: the result, and the body and key it came from.
struct Checked {
    accepted: AcceptedVote,
    body: bytes::Bytes,
    key: Option<HeaderValue>,
}

impl Checked {
    /// Whether a hand-back of `headers` and `body` is this vote: the same bytes, the same key, and
    /// JSON, so that checking it again would give the same vote.
    fn is(&self, headers: &axum::http::HeaderMap, body: &[u8]) -> bool {
        let json = headers
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .is_some_and(bandvote_core::http::is_json_media_type);
        json && *body == *self.body && headers.get(IDEMPOTENCY_KEY) == self.key.as_ref()
    }
}

/// `Retry-After` of a vote whose guest ran out of time waiting for the http-producer.
const UPSTREAM_RETRY_AFTER: Duration = Duration::from_secs(1);

/// The guest ran out of its time while it waited for the http-producer's answer.
#[derive(Debug)]
struct UpstreamTooSlow(Duration);

impl std::fmt::Display for UpstreamTooSlow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "http-producer gave no answer within the guest's {:?}", self.0)
    }
}

impl std::error::Error for UpstreamTooSlow {}

fn record(status: StatusCode, started: Instant) {
    if status == StatusCode::ACCEPTED {
        metrics::counter!(names::VOTES_ACCEPTED, "path" => "wasm").increment(1);
        metrics::histogram!(names::VOTE_REQUEST_DURATION, "path" => "wasm").record(started.elapsed().as_secs_f64());
    } else if status.is_client_error() {
        let reason = bandvote_ingest::rounds::refusal_reason(status);
        metrics::counter!(names::VOTES_REJECTED, "path" => "wasm", "reason" => reason).increment(1);
    } else if status.is_server_error() {
        metrics::counter!(names::VOTES_UNAVAILABLE, "path" => "wasm").increment(1);
    }
}
