//! `bandvote wasm-gateway`: the wasmtime host of the WebAssembly ingest path.
//!
//! Every request to `/wasm/...` is handled by a fresh instance of the guest component
//! (`crates/bandvote-guest`, a standard `wasi:http` proxy), which validates the vote with the same
//! domain code as the native gateways and hands it back to the host in its answer; the host
//! carries it to the HTTP producer with the votes of the other guests.
//! - [`host`]: the engine (pooling allocator, epoch interruption), the component compiled once and
//!   pre-instantiated, one `Store` per request with memory and time limits, and the votes the
//!   guests hand back;
//! - [`outgoing`]: the calls that carry the guests' votes to the upstream together, and the guest's
//!   only way out (with `--guest-sends`, or for anything else): requests to the configured
//!   upstream, over a pooled keep-alive client; anything else is denied.

pub mod host;
pub mod outgoing;

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use anyhow::Context;
use axum::{Router, extract::State, response::Response};
use bandvote_runtime::{health, http, service::Service};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use bandvote_ingest::rounds::RoundGate;
pub use host::Host;

/// The guest component built with this binary (`crates/bandvote-guest`).
pub static EMBEDDED_GUEST: &[u8] = include_bytes!(env!("BANDVOTE_EMBEDDED_GUEST"));

/// Configuration of the wasm gateway.
#[derive(Debug, Clone)]
pub struct WasmGatewayConfig {
    /// Listener for `/wasm/votes` and the health endpoints. Default `0.0.0.0:8080`.
    pub listen: SocketAddr,
    /// The HTTP producer, the only address the guest may reach. Default `http://127.0.0.1:8001`.
    pub upstream: String,
    /// HTTP/2 connections to the upstream, used round-robin. Default
    /// [`outgoing::DEFAULT_UPSTREAM_CONNECTIONS`] (2).
    pub upstream_connections: usize,
    /// Calls carrying the guests' votes to the upstream's `POST /votes/batch` in flight at once
    /// over those connections; the votes that arrive meanwhile go together in the next call.
    /// Default [`outgoing::DEFAULT_UPSTREAM_CALLS`] (2).
    pub upstream_calls: usize,
    /// Each guest sends the vote it accepts to the upstream itself, as an outgoing `wasi:http`
    /// request whose answer it relays (as under `wasmtime serve`), instead of handing it back to
    /// the host in its answer for the host to carry. Off by default: the hand-back skips a round
    /// trip through the outgoing handler and frees the instance before the producer answers.
    pub guest_sends: bool,
    /// A component file to run instead of the embedded guest.
    pub component: Option<PathBuf>,
    /// Largest linear memory of one guest instance, in bytes. Default 32 MiB.
    pub max_memory_bytes: usize,
    /// Longest a guest may take for one request (wall clock, enforced by epoch interruption and
    /// a host timeout). Default 10 s (above the producer's 5 s produce timeout).
    pub request_timeout: Duration,
    /// Guest instances that may exist at once (the pooling allocator's slots). Default 1000.
    pub max_instances: u32,
    /// Longest drain on shutdown. Default 10 s.
    pub grace: Duration,
    /// Limits on the listener's clients (`--max-connections`). Default [`http::Limits::default`].
    pub limits: http::Limits,
    /// Fair voting: rate limit, contest list, voter policy (all off by default).
    pub fairness: bandvote_ingest::fairness::FairnessConfig,
    /// The cap on distinct names without a contest list (across replicas with the fair-voting Redis).
    pub names: bandvote_ingest::names::NamesConfig,
    /// Origins whose pages may post votes from a browser (CORS). None by default.
    pub cors_origins: Vec<String>,
    /// The Redis where the rounds are (the counters' Redis); without it every vote counts in the
    /// `default` round at any time.
    pub rounds_redis_url: Option<secrecy::SecretString>,
    /// How the host reaches the upstream beyond its URL: in process (`bandvote up`), and with the
    /// secret the producers require.
    pub reach: outgoing::Reach,
}

impl Default for WasmGatewayConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            upstream: "http://127.0.0.1:8001".into(),
            upstream_connections: outgoing::DEFAULT_UPSTREAM_CONNECTIONS,
            upstream_calls: outgoing::DEFAULT_UPSTREAM_CALLS,
            guest_sends: false,
            component: None,
            max_memory_bytes: 32 << 20,
            request_timeout: Duration::from_secs(10),
            max_instances: 1000,
            grace: Duration::from_secs(10),
            limits: http::Limits::default(),
            fairness: bandvote_ingest::fairness::FairnessConfig::default(),
            names: bandvote_ingest::names::NamesConfig::default(),
            cors_origins: Vec::new(),
            rounds_redis_url: None,
            reach: outgoing::Reach::default(),
        }
    }
}

/// The wasm gateway's routes: everything under `/wasm/` goes to the guest.
pub fn router(host: Arc<Host>) -> Router {
    bandvote_runtime::metrics::announce_gateway("wasm");
    Router::new()
        .route("/wasm", axum::routing::any(handle))
        .route("/wasm/{*rest}", axum::routing::any(handle))
        .with_state(host)
}

async fn handle(State(host): State<Arc<Host>>, request: axum::extract::Request) -> Response {
    host.handle(request).await
}

/// The component to run: the configured file, or the embedded guest.
pub fn component(config: &WasmGatewayConfig) -> anyhow::Result<Vec<u8>> {
    match &config.component {
        Some(path) => std::fs::read(path).with_context(|| format!("failed to read the component {}", path.display())),
        None => Ok(EMBEDDED_GUEST.to_vec()),
    }
}

/// The gateway over `fairness` and `rounds` (shared with another gateway in `up`, which runs the
/// gate's refresh): its routes, the readiness of the HTTP producer, the epoch ticker that
/// interrupts guests past their time, and CORS for `config.cors_origins`. Compiles the component
/// (once).
pub fn service(
    config: &WasmGatewayConfig,
    fairness: Option<Arc<bandvote_ingest::fairness::Fairness>>,
    rounds: Option<Arc<RoundGate>>,
) -> anyhow::Result<Service> {
    let host = Arc::new(Host::new(config, &component(config)?)?.with_fairness(fairness).with_rounds(rounds));
    let (probe, ticker) = (Arc::clone(&host), Arc::clone(&host));
    let (origins, voter_header) = (config.cors_origins.clone(), config.fairness.voter_header.clone());
    Ok(Service::new(router(host))
        .check(
            "http-producer",
            health::check(move || {
                let probe = Arc::clone(&probe);
                async move { probe.check_upstream().await }
            }),
        )
        .task("epoch-ticker", move |shutdown| async move {
            ticker.start_epoch_ticker(shutdown).await.context("the epoch ticker panicked")
        })
        .wrap(move |router| bandvote_ingest::edge::with_vote_cors(router, &origins, &voter_header)))
}

/// A built wasm gateway, bound and ready to run.
pub struct App {
    listener: TcpListener,
    service: Service,
    grace: Duration,
}

impl App {
    /// Compiles the component (once), binds the listener and prepares the pooled upstream client.
    pub async fn build(config: WasmGatewayConfig) -> anyhow::Result<Self> {
        let names = bandvote_ingest::names::Names::connect(config.names, config.fairness.redis_url.as_ref()).await?;
        let fairness = bandvote_ingest::fairness::Fairness::with_names(&config.fairness, names).await?;
        let gate = RoundGate::from_redis(config.rounds_redis_url.as_ref())?;
        let mut service = service(&config, fairness, gate.clone())?.limits(config.limits);
        if let Some(gate) = &gate {
            service = bandvote_ingest::rounds::with_gate(service, gate);
        }
        let listener = http::bind(config.listen).await?;
        Ok(Self { listener, service, grace: config.grace })
    }

    /// The bound address.
    pub fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        http::local_addr(&self.listener)
    }

    /// Serves until `shutdown`, then drains in-flight requests.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        tracing::info!(addr = %self.local_addr()?, "wasm-gateway listening");
        self.service.serve(self.listener, shutdown, self.grace).await
    }
}
