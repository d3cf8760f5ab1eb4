//! `bandvote wasm-gateway`: the wasmtime host of the WebAssembly ingest path.
//!
//! Every request to `/wasm/...` is handled by a fresh instance of the guest component
//! (`crates/bandvote-guest`, a standard `wasi:http` proxy), which validates the vote with the same
//! domain code as the native gateways and forwards it to the HTTP producer.
//! - [`host`]: the engine (pooling allocator, epoch interruption), the component compiled once and
//!   pre-instantiated, and one `Store` per request with memory and time limits;
//! - [`outgoing`]: the guest's only way out: requests to the configured upstream, over a pooled
//!   keep-alive client; anything else is denied.

pub mod host;
pub mod outgoing;

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use anyhow::Context;
use axum::{Router, extract::State, response::Response};
use bandvote_runtime::{health, http};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

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
    /// Fair voting: rate limit, contest list, voter policy (all off by default).
    pub fairness: bandvote_ingest::fairness::FairnessConfig,
    /// Origins whose pages may post votes from a browser (CORS). None by default.
    pub cors_origins: Vec<String>,
}

impl Default for WasmGatewayConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            upstream: "http://127.0.0.1:8001".into(),
            component: None,
            max_memory_bytes: 32 << 20,
            request_timeout: Duration::from_secs(10),
            max_instances: 1000,
            grace: Duration::from_secs(10),
            fairness: bandvote_ingest::fairness::FairnessConfig::default(),
            cors_origins: Vec::new(),
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

/// A built wasm gateway, bound and ready to run.
pub struct App {
    listener: TcpListener,
    router: Router,
    host: Arc<Host>,
    grace: Duration,
}

impl App {
    /// Compiles the component (once), binds the listener and prepares the pooled upstream client.
    pub async fn build(config: WasmGatewayConfig) -> anyhow::Result<Self> {
        let component = match &config.component {
            Some(path) => {
                std::fs::read(path).with_context(|| format!("failed to read the component {}", path.display()))?
            }
            None => EMBEDDED_GUEST.to_vec(),
        };
        let fairness = bandvote_ingest::fairness::Fairness::new(&config.fairness).await?;
        let host = Arc::new(Host::new(&config, &component)?.with_fairness(fairness));
        let probe = Arc::clone(&host);
        let checks = vec![(
            "http-producer",
            health::check(move || {
                let probe = Arc::clone(&probe);
                async move { probe.check_upstream().await }
            }),
        )];
        // CORS wraps everything, fallbacks included, so that preflights reach it.
        let router = bandvote_ingest::edge::with_vote_cors(
            http::with_fallbacks(router(Arc::clone(&host)).merge(health::router(checks))),
            &config.cors_origins,
            &config.fairness.voter_header,
        );
        let listener = http::bind(config.listen).await?;
        Ok(Self { listener, router, host, grace: config.grace })
    }

    /// The bound address.
    pub fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        http::local_addr(&self.listener)
    }

    /// Serves until `shutdown`, then drains in-flight requests.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        tracing::info!(addr = %self.local_addr()?, "wasm-gateway listening");
        let ticker = self.host.start_epoch_ticker(shutdown.clone());
        let served = http::serve(self.listener, self.router, shutdown, self.grace).await;
        ticker.abort();
        served
    }
}
