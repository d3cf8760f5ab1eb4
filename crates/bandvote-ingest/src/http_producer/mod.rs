//! `bandvote http-producer`: `POST /votes` over plain HTTP (called by the WebAssembly guest of the
//! wasm path), written to the queue with the same producer and guarantees as the gRPC producer:
//! `202 {"id", "path": "wasm"}` only after the queue acknowledged the vote, `503` when it did not.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::{
    Router,
    body::Body,
    extract::State,
    http::{HeaderMap, StatusCode},
    response::Response,
};
use bandvote_core::{IngestPath, VoteMessage};
use bandvote_queue::{KafkaConfig, KafkaProducer, QueueError, VoteQueue};
use bandvote_runtime::{
    health,
    http::{self, ApiError, json},
};
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{edge, producing};

/// Configuration of the HTTP producer.
#[derive(Debug, Clone)]
pub struct HttpProducerConfig {
    /// Listener for `POST /votes` and the health endpoints. Default `0.0.0.0:8001`.
    pub listen: SocketAddr,
    /// Kafka.
    pub kafka: KafkaConfig,
    /// Longest drain on shutdown. Default 10 s.
    pub grace: Duration,
}

impl Default for HttpProducerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 8001)),
            kafka: KafkaConfig::default(),
            grace: Duration::from_secs(10),
        }
    }
}

/// The producer's routes over any queue: `POST /votes`.
pub fn router(queue: Arc<dyn VoteQueue>) -> Router {
    Router::new().route("/votes", axum::routing::post(post_vote)).with_state(queue)
}

/// Validates a vote (the guest did too; the producer trusts no caller) and queues it.
pub async fn post_vote(
    State(queue): State<Arc<dyn VoteQueue>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    // Accepted votes and latency are counted at the edge (the wasm gateway), not here.
    let accepted = edge::read_vote(IngestPath::Wasm, &headers, body).await?;
    let message = VoteMessage::new(&accepted.id, accepted.vote, IngestPath::Wasm, bandvote_core::time::now());
    match queue.enqueue(&message, accepted.id.is_client_supplied()).await {
        Ok(()) => Ok(json(StatusCode::ACCEPTED, json!({"id": message.id, "path": "wasm"}))),
        Err(QueueError::Unavailable(cause)) => Err(ApiError::unavailable(cause, Duration::from_secs(1))),
        Err(QueueError::Refused(cause)) => Err(ApiError::internal(cause)),
    }
}

/// A built HTTP producer, bound and ready to run.
pub struct App {
    listener: TcpListener,
    router: Router,
    queue: Arc<dyn VoteQueue>,
    kafka: Option<KafkaProducer>,
    grace: Duration,
}

impl App {
    /// Binds the listener and builds the Kafka producer (topics are created in the background).
    pub async fn build(config: HttpProducerConfig) -> anyhow::Result<Self> {
        let producer = KafkaProducer::new(config.kafka.clone())?;
        let checks = producing::kafka_checks(&producer);
        Self::with_queue(config.listen, Arc::new(producer.clone()), Some(producer), checks, config.grace).await
    }

    /// Binds the listener for a producer writing to `queue` (`kafka`: the producer when it is Kafka,
    /// whose topics [`App::run`] prepares).
    pub async fn with_queue(
        listen: SocketAddr,
        queue: Arc<dyn VoteQueue>,
        kafka: Option<KafkaProducer>,
        checks: Vec<(&'static str, health::Check)>,
        grace: Duration,
    ) -> anyhow::Result<Self> {
        bandvote_runtime::metrics::announce_producer();
        let router = http::with_fallbacks(router(Arc::clone(&queue)).merge(health::router(checks)));
        let listener = http::bind(listen).await?;
        Ok(Self { listener, router, queue, kafka, grace })
    }

    /// The bound address.
    pub fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        http::local_addr(&self.listener)
    }

    /// Serves until `shutdown`; then drains in-flight votes and flushes the producer.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        producing::serve("http-producer", self.listener, self.router, &self.queue, self.kafka, shutdown, self.grace)
            .await
    }
}
