//! `bandvote grpc-gateway`: receives `POST /grpc/votes` over HTTP and forwards each vote to the
//! gRPC producer over long-lived, multiplexed HTTP/2 channels (never a connection per request),
//! the votes that arrive together in one call ([`crate::calls`]).

mod routes;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use axum::Router;
use bandvote_runtime::{health, http, service::Service};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};

pub use routes::post_grpc_vote;

/// Configuration of the gRPC gateway.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Listener for `POST /grpc/votes` and the health endpoints. Default `0.0.0.0:3000`.
    pub listen: SocketAddr,
    /// The gRPC producer. Default `http://127.0.0.1:3001`.
    pub upstream: String,
    /// HTTP/2 connections to the producer, used round-robin. Default 2.
    pub connections: usize,
    /// Calls to the producer in flight at once; the votes that arrive meanwhile go together in
    /// the next call. Default 2.
    pub calls_in_flight: usize,
    /// Longest wait for the producer's answer before answering `503`. Default 6 s: the produce
    /// timeout (5 s) plus a margin above [`crate::calls::MAX_WAIT`], the longest a vote waits for a call.
    pub request_timeout: Duration,
    /// Longest drain on shutdown. Default 10 s.
    pub grace: Duration,
    /// Limits on the listener's clients (`--max-connections`). Default [`http::Limits::default`].
    pub limits: http::Limits,
    /// Fair voting: rate limit, contest list, voter policy (all off by default).
    pub fairness: crate::fairness::FairnessConfig,
    /// The cap on distinct names without a contest list (across replicas with the fair-voting Redis).
    pub names: crate::names::NamesConfig,
    /// Origins whose pages may post votes from a browser (CORS). None by default.
    pub cors_origins: Vec<String>,
    /// The Redis where the rounds are (the counters' Redis); without it every vote counts in the
    /// `default` round at any time.
    pub rounds_redis_url: Option<secrecy::SecretString>,
    /// The secret the producers require ([`crate::ingest_secret`]), sent with every call.
    pub ingest_secret: Option<crate::ingest_secret::IngestSecret>,
    /// The producer inside this process (`bandvote up`), reached without a socket; `upstream` then
    /// only names it.
    pub in_process: Option<bandvote_runtime::inproc::InProcess>,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 3000)),
            upstream: "http://127.0.0.1:3001".into(),
            connections: 2,
            calls_in_flight: 2,
            request_timeout: Duration::from_secs(6),
            grace: Duration::from_secs(10),
            limits: http::Limits::default(),
            fairness: crate::fairness::FairnessConfig::default(),
            names: crate::names::NamesConfig::default(),
            cors_origins: Vec::new(),
            rounds_redis_url: None,
            ingest_secret: None,
            in_process: None,
        }
    }
}

/// Shared state of the gateway's handlers.
#[derive(Clone)]
pub struct GatewayState {
    channels: Arc<[Channel]>,
    calls: crate::calls::Calls,
    request_timeout: Duration,
    pub(crate) fairness: Option<Arc<crate::fairness::Fairness>>,
    pub(crate) rounds: Option<Arc<crate::rounds::RoundGate>>,
}

impl GatewayState {
    /// Opens (lazily) the channels to the producer and starts the task that makes the calls (in
    /// the current tokio runtime).
    pub fn connect(config: &GatewayConfig) -> anyhow::Result<Self> {
        let endpoint = Endpoint::from_shared(config.upstream.clone())
            .with_context(|| format!("invalid upstream URL {}", config.upstream))?
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(2))
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(20))
            .initial_stream_window_size(Some(1 << 20))
            .initial_connection_window_size(Some(8 << 20));
        let channels: Arc<[Channel]> = (0..config.connections.max(1))
            .map(|_| match &config.in_process {
                Some(producer) => endpoint.connect_with_connector_lazy(producer.connector()),
                None => endpoint.connect_lazy(),
            })
            .collect();
        let calls = crate::calls::Calls::grpc(
            Arc::clone(&channels),
            config.calls_in_flight,
            config.request_timeout,
            config.ingest_secret.clone(),
        );
        Ok(Self { calls, channels, request_timeout: config.request_timeout, fairness: None, rounds: None })
    }

    /// The same gateway, with fair-voting checks before every vote.
    pub fn with_fairness(mut self, fairness: Option<Arc<crate::fairness::Fairness>>) -> Self {
        self.fairness = fairness;
        self
    }

    async fn check_upstream(&self) -> Result<(), health::CheckError> {
        let mut client = HealthClient::new(self.channels[0].clone());
        let request = HealthCheckRequest { service: String::new() };
        match client.check(request).await {
            Ok(answer) if answer.get_ref().status() == ServingStatus::Serving => Ok(()),
            Ok(answer) => Err(format!("grpc-producer is {:?}", answer.get_ref().status()).into()),
            Err(status) => Err(format!("grpc-producer: {}", status.message()).into()),
        }
    }
}

/// The gateway's routes: `POST /grpc/votes`.
pub fn router(state: GatewayState) -> Router {
    bandvote_runtime::metrics::announce_gateway("grpc");
    Router::new().route("/grpc/votes", axum::routing::post(post_grpc_vote)).with_state(state)
}

/// The gateway over `fairness` and `rounds` (shared with another gateway in `up`, which runs the
/// gate's refresh): its route, the readiness of the gRPC producer, and CORS for
/// `config.cors_origins`.
pub fn service(
    config: &GatewayConfig,
    fairness: Option<Arc<crate::fairness::Fairness>>,
    rounds: Option<Arc<crate::rounds::RoundGate>>,
) -> anyhow::Result<Service> {
    let mut state = GatewayState::connect(config)?.with_fairness(fairness);
    state.rounds = rounds;
    let probe = state.clone();
    let (origins, voter_header) = (config.cors_origins.clone(), config.fairness.voter_header.clone());
    Ok(Service::new(router(state))
        .check(
            "grpc-producer",
            health::check(move || {
                let probe = probe.clone();
                async move { probe.check_upstream().await }
            }),
        )
        .wrap(move |router| crate::edge::with_vote_cors(router, &origins, &voter_header)))
}

/// A built gateway, bound and ready to run.
pub struct App {
    listener: TcpListener,
    service: Service,
    grace: Duration,
}

impl App {
    /// Binds the listener (port 0 allowed) and prepares the channels to the producer.
    pub async fn build(config: GatewayConfig) -> anyhow::Result<Self> {
        let names = crate::names::Names::connect(config.names, config.fairness.redis_url.as_ref()).await?;
        let fairness = crate::fairness::Fairness::with_names(&config.fairness, names).await?;
        let gate = crate::rounds::RoundGate::from_redis(config.rounds_redis_url.as_ref())?;
        let mut service = service(&config, fairness, gate.clone())?.limits(config.limits);
        if let Some(gate) = &gate {
            service = crate::rounds::with_gate(service, gate);
        }
        let listener = http::bind(config.listen).await?;
        Ok(Self { listener, service, grace: config.grace })
    }

    /// The bound address.
    pub fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        http::local_addr(&self.listener)
    }

    /// Serves until `shutdown`, then drains in-flight votes.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        tracing::info!(addr = %self.local_addr()?, "grpc-gateway listening");
        self.service.serve(self.listener, shutdown, self.grace).await
    }
}
