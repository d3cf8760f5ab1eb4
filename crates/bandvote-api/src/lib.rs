//! `bandvote api`: what the web app and anyone else reads.
//! - [`store`]: the live counters (Redis, read in one consistent snapshot) and the vote log (MongoDB);
//! - [`stream`]: ONE shared reader that turns changes into events, fanned out to every SSE client;
//! - [`routes`]: `GET /api/results`, `GET /api/logs`, `GET /api/stream`, `GET /api/openapi.json`,
//!   `GET /api/config`, and the embedded web app at `/`.

pub mod routes;
pub mod store;
pub mod stream;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use axum::Router;
use bandvote_runtime::{health, http, service::Service};
use secrecy::{ExposeSecret, SecretString};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{store::Store, stream::Events};

/// Configuration of the API.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Listener. Default `0.0.0.0:8000`.
    pub listen: SocketAddr,
    /// Redis URL (may hold a password; a database number is honoured). Default
    /// `redis://127.0.0.1:6379`.
    pub redis_url: SecretString,
    /// MongoDB URL (may hold a password). Default `mongodb://127.0.0.1:27017`.
    pub mongo_url: SecretString,
    /// MongoDB database. Default `bandvote`.
    pub mongo_db: String,
    /// Origins allowed to call the API from a browser; none by default.
    pub cors_origins: Vec<String>,
    /// Longest drain on shutdown. Default 10 s.
    pub grace: Duration,
    /// Limits on the listener's clients (`--max-connections`). Default [`http::Limits::default`].
    pub limits: http::Limits,
    /// Where the web app posts votes: `Some("")` for this origin (`up`), a base URL for another host,
    /// `None` to hide the vote form (the API alone has no vote endpoints).
    pub vote_url: Option<String>,
    /// The audience page's address, for the projector's QR code; `None`: the request's own origin.
    pub public_url: Option<String>,
    /// Pieces read from `bandvote up`'s embedded database instead of Redis or MongoDB.
    pub embedded: Option<store::EmbeddedReads>,
    /// Secret of the signed voter tokens (`POST /api/voter-token`), shared with the gateways.
    pub voter_secret: Option<SecretString>,
    /// The header the gateways read the voter (token) from, told to the web app.
    pub voter_header: String,
    /// Voter tokens issued per minute to one client address (IPv6: one /64), as a burst and a
    /// steady rate. Default 10.
    pub voter_tokens_per_minute: u32,
    /// Administrative operations (`POST /api/admin/recount`), behind a bearer token; off when `None`.
    pub admin: Option<routes::admin::AdminConfig>,
    /// Clients of `/api/stream` at once; the next get `503` (`--max-stream-clients`). Default
    /// [`stream::DEFAULT_MAX_CLIENTS`].
    pub max_stream_clients: usize,
    /// Of those, at most this many from one client address (`--max-stream-clients-per-address`;
    /// 0: no such cap). Default [`stream::DEFAULT_MAX_CLIENTS_PER_ADDRESS`].
    pub max_stream_clients_per_address: usize,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 8000)),
            redis_url: bandvote_store::DEFAULT_REDIS_URL.into(),
            mongo_url: bandvote_store::DEFAULT_MONGO_URL.into(),
            mongo_db: bandvote_store::DEFAULT_MONGO_DB.into(),
            cors_origins: Vec::new(),
            grace: Duration::from_secs(10),
            limits: http::Limits::default(),
            vote_url: None,
            public_url: None,
            embedded: None,
            voter_secret: None,
            voter_header: "x-voter-id".into(),
            voter_tokens_per_minute: DEFAULT_VOTER_TOKENS_PER_MINUTE,
            admin: None,
            max_stream_clients: stream::DEFAULT_MAX_CLIENTS,
            max_stream_clients_per_address: stream::DEFAULT_MAX_CLIENTS_PER_ADDRESS,
        }
    }
}

/// Default of [`ApiConfig::voter_tokens_per_minute`].
pub const DEFAULT_VOTER_TOKENS_PER_MINUTE: u32 = 10;

/// Client addresses the voter-token limit tracks at once (each forgotten after a quiet minute).
const MAX_TOKEN_CLIENTS: usize = 100_000;

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
    /// The audience page's address (see [`ApiConfig::public_url`]).
    pub public_url: Option<String>,
    /// Issues voter tokens, when a secret is configured.
    pub voter_tokens: Option<bandvote_core::voter_token::VoterTokens>,
    /// How many voter tokens each client gets.
    pub voter_token_limit: Arc<bandvote_runtime::per_client::RateLimiter>,
    /// The gateways' voter header.
    pub voter_header: String,
    /// Origins besides the API's own whose pages may get voter tokens: the public address's and
    /// the CORS origins listed by name (not `*`).
    pub voter_token_origins: Arc<Vec<String>>,
    /// Administrative operations, when enabled.
    pub admin: Option<Arc<routes::admin::AdminConfig>>,
    /// The wrong admin tokens seen per client address.
    pub admin_failures: Arc<routes::admin::Failures>,
}

impl ApiState {
    /// Connects (lazily) to Redis and MongoDB and starts nothing yet.
    pub async fn new(config: &ApiConfig, shutdown: CancellationToken) -> anyhow::Result<Self> {
        if let Some(admin) = &config.admin {
            routes::admin::check_token(&admin.token)?;
            bandvote_runtime::metrics::install();
            for reason in ["wrong", "limited"] {
                metrics::counter!(bandvote_runtime::metrics::ADMIN_AUTH_FAILURES, "reason" => reason).increment(0);
            }
        }
        let store = Arc::new(
            Store::with_embedded(
                config.redis_url.expose_secret(),
                config.mongo_url.expose_secret(),
                &config.mongo_db,
                config.embedded.as_ref(),
            )
            .await?,
        );
        Ok(Self {
            events: Events::new(config.max_stream_clients, config.max_stream_clients_per_address),
            store,
            shutdown,
            vote_url: config.vote_url.clone(),
            public_url: config.public_url.clone(),
            voter_tokens: config
                .voter_secret
                .as_ref()
                .map(|s| bandvote_core::voter_token::VoterTokens::new(s.expose_secret().as_bytes())),
            voter_header: config.voter_header.clone(),
            voter_token_origins: Arc::new(
                config
                    .cors_origins
                    .iter()
                    .map(|origin| origin.trim().trim_end_matches('/').to_owned())
                    .filter(|origin| !origin.is_empty() && origin != "*")
                    .chain(config.public_url.as_deref().and_then(routes::web_origin))
                    .collect(),
            ),
            voter_token_limit: Arc::new(bandvote_runtime::per_client::RateLimiter::new(
                config.voter_tokens_per_minute,
                Duration::from_secs(60),
                MAX_TOKEN_CLIENTS,
            )),
            admin: config.admin.clone().map(Arc::new),
            admin_failures: Arc::default(),
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

/// The API: its routes over the stores, their readiness, the shared stream reader, and CORS for
/// `config.cors_origins`. Open streams end when `shutdown` is cancelled.
pub async fn service(config: &ApiConfig, shutdown: CancellationToken) -> anyhow::Result<Service> {
    let state = ApiState::new(config, shutdown).await?;
    let checks = store_checks(&state.store);
    let origins = config.cors_origins.clone();
    let reader = state.clone();
    Ok(Service::new(router(state))
        // Phones hold it for the whole show: served without hyper's per-connection buffers.
        .event_stream("/api/stream")
        .checks(checks)
        .task(
            "stream-reader",
            move |_| async move { reader.start_stream().await.context("the stream reader panicked") },
        )
        // CORS wraps everything, fallbacks included, so that preflights reach it.
        .wrap(move |router| http::with_cors(router, &origins, &[axum::http::Method::GET], &[])))
}

/// A built API, bound and ready to run.
pub struct App {
    listener: TcpListener,
    service: Service,
    grace: Duration,
}

impl App {
    /// Prepares the stores (connections are made on first use) and binds the listener; open
    /// streams end when `shutdown` is cancelled (the token `run` is given).
    pub async fn build(config: ApiConfig, shutdown: CancellationToken) -> anyhow::Result<Self> {
        let service = service(&config, shutdown).await?.limits(config.limits);
        let listener = http::bind(config.listen).await?;
        Ok(Self { listener, service, grace: config.grace })
    }

    /// The bound address.
    pub fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        http::local_addr(&self.listener)
    }

    /// Serves until `shutdown`; open streams end at once, then in-flight requests drain.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        tracing::info!(addr = %self.local_addr()?, "api listening");
        self.service.serve(self.listener, shutdown, self.grace).await
    }
}
