//! `bandvote api`: what the web app and anyone else reads.
//! - [`store`]: the live counters (Redis, read in one consistent snapshot) and the vote log (MongoDB);
//! - [`stream`]: ONE shared reader that turns changes into events, fanned out to every SSE client;
//! - [`routes`]: `GET /api/results`, `GET /api/logs`, `GET /api/stream`, `GET /api/openapi.json`,
//!   `GET /api/config`, and the embedded web app at `/`.

pub mod routes;
pub mod store;
pub mod stream;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::Router;
use bandvote_runtime::{health, http};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{store::Store, stream::Events};

/// Configuration of the API.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Listener. Default `0.0.0.0:8000`.
    pub listen: SocketAddr,
    /// Redis URL (a database number is honoured). Default `redis://127.0.0.1:6379`.
    pub redis_url: String,
    /// MongoDB URL. Default `mongodb://127.0.0.1:27017`.
    pub mongo_url: String,
    /// MongoDB database. Default `bandvote`.
    pub mongo_db: String,
    /// Origins allowed to call the API from a browser; none by default.
    pub cors_origins: Vec<String>,
    /// Longest drain on shutdown. Default 10 s.
    pub grace: Duration,
    /// Where the web app posts votes: `Some("")` for this origin (`up`), a base URL for another host,
    /// `None` to hide the vote form (the API alone has no vote endpoints).
    pub vote_url: Option<String>,
    /// Pieces read from `bandvote up`'s embedded database instead of Redis or MongoDB.
    pub embedded: Option<store::EmbeddedReads>,
    /// Secret of the signed voter tokens (`POST /api/voter-token`), shared with the gateways.
    pub voter_secret: Option<String>,
    /// The header the gateways read the voter (token) from, told to the web app.
    pub voter_header: String,
    /// Administrative operations (`POST /api/admin/recount`), behind a bearer token; off when `None`.
    pub admin: Option<routes::admin::AdminConfig>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 8000)),
            redis_url: "redis://127.0.0.1:6379".into(),
            mongo_url: "mongodb://127.0.0.1:27017".into(),
            mongo_db: "bandvote".into(),
            cors_origins: Vec::new(),
            grace: Duration::from_secs(10),
            vote_url: None,
            embedded: None,
            voter_secret: None,
            voter_header: "x-voter-id".into(),
            admin: None,
        }
    }
}

/// Shared state of the API's handlers.
#[derive(Clone)]
pub struct ApiState {
    /// Where results and logs are read.
    pub store: Arc<Store>,
    /// The shared event stream.
    pub events: Events,
    /// Cancelled on shutdown; open streams end with it.
    pub shutdown: CancellationToken,
    /// Where the web app posts votes (see [`ApiConfig::vote_url`]).
    pub vote_url: Option<String>,
    /// Issues voter tokens, when a secret is configured.
    pub voter_tokens: Option<bandvote_core::voter_token::VoterTokens>,
    /// The gateways' voter header.
    pub voter_header: String,
    /// Administrative operations, when enabled.
    pub admin: Option<Arc<routes::admin::AdminConfig>>,
}

impl ApiState {
    /// Connects (lazily) to Redis and MongoDB and starts nothing yet.
    pub async fn new(config: &ApiConfig, shutdown: CancellationToken) -> anyhow::Result<Self> {
        let store = Arc::new(
            Store::with_embedded(&config.redis_url, &config.mongo_url, &config.mongo_db, config.embedded.as_ref())
                .await?,
        );
        Ok(Self {
            events: Events::new(),
            store,
            shutdown,
            vote_url: config.vote_url.clone(),
            voter_tokens: config
                .voter_secret
                .as_deref()
                .map(|s| bandvote_core::voter_token::VoterTokens::new(s.as_bytes())),
            voter_header: config.voter_header.clone(),
            admin: config.admin.clone().map(Arc::new),
        })
    }

    /// Starts the one reader behind `/api/stream`; it stops with `shutdown`.
    pub fn start_stream(&self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(stream::run_reader(Arc::clone(&self.store), self.events.clone(), self.shutdown.clone()))
    }
}

/// The API's routes.
pub fn router(state: ApiState) -> Router {
    routes::router(state)
}

/// Readiness checks of the API's two stores.
pub fn store_checks(store: &Arc<Store>) -> Vec<(&'static str, health::Check)> {
    let (counters_name, logs_name) = store.names();
    let (counters, logs) = (Arc::clone(store), Arc::clone(store));
    let mut checks = vec![(
        counters_name,
        health::check(move || {
            let store = Arc::clone(&counters);
            async move { store.ping_counters().await }
        }),
    )];
    if logs_name != counters_name {
        checks.push((
            logs_name,
            health::check(move || {
                let store = Arc::clone(&logs);
                async move { store.ping_logs().await }
            }),
        ));
    }
    checks
}

/// A built API, bound and ready to run.
pub struct App {
    listener: TcpListener,
    router: Router,
    state: ApiState,
    grace: Duration,
}

impl App {
    /// Prepares the stores (connections are made on first use) and binds the listener.
    pub async fn build(config: ApiConfig) -> anyhow::Result<Self> {
        let state = ApiState::new(&config, CancellationToken::new()).await?;
        let checks = store_checks(&state.store);
        // CORS wraps everything, fallbacks included, so that preflights reach it.
        let router = http::with_cors(
            http::with_fallbacks(router(state.clone()).merge(health::router(checks))),
            &config.cors_origins,
            &[axum::http::Method::GET],
            &[],
        );
        let listener = http::bind(config.listen).await?;
        Ok(Self { listener, router, state, grace: config.grace })
    }

    /// The bound address.
    pub fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        http::local_addr(&self.listener)
    }

    /// Serves until `shutdown`; open streams end at once, then in-flight requests drain.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        tracing::info!(addr = %self.local_addr()?, "api listening");
        let inner = self.state.shutdown.clone();
        let relay = tokio::spawn({
            let shutdown = shutdown.clone();
            async move {
                shutdown.cancelled().await;
                inner.cancel();
            }
        });
        let reader = self.state.start_stream();
        let served = http::serve(self.listener, self.router, shutdown, self.grace).await;
        relay.abort();
        reader.abort();
        served
    }
}
