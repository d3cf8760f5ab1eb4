//! `bandvote grpc-producer`: the gRPC server (`bandvote.v1.VoteService`) that writes each vote to
//! the queue and answers only after the queue acknowledged it. The standard gRPC health service and
//! `/healthz`, `/readyz`, `/metrics` share its port.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::Router;
use bandvote_core::{IngestPath, Vote, VoteId, VoteMessage};
use bandvote_proto::v1::{
    SubmitVoteRequest, SubmitVoteResponse,
    vote_service_server::{VoteService, VoteServiceServer},
};
use bandvote_queue::{KafkaConfig, KafkaProducer, QueueError, VoteQueue};
use bandvote_runtime::{health, http};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, metadata::MetadataValue};

use crate::producing;

/// Configuration of the gRPC producer.
#[derive(Debug, Clone)]
pub struct ProducerConfig {
    /// Listener for gRPC and the health endpoints. Default `0.0.0.0:3001`.
    pub listen: SocketAddr,
    /// Kafka.
    pub kafka: KafkaConfig,
    /// Longest drain on shutdown. Default 10 s.
    pub grace: Duration,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 3001)),
            kafka: KafkaConfig::default(),
            grace: Duration::from_secs(10),
        }
    }
}

/// The `VoteService` implementation over any [`VoteQueue`].
pub struct VoteServer {
    queue: Arc<dyn VoteQueue>,
}

impl VoteServer {
    /// A server writing to `queue`.
    pub fn new(queue: Arc<dyn VoteQueue>) -> Self {
        Self { queue }
    }
}

fn invalid(message: impl Into<String>, field: &'static str) -> Status {
    let mut status = Status::invalid_argument(message);
    status.metadata_mut().insert("field", MetadataValue::from_static(field));
    status
}

#[tonic::async_trait]
impl VoteService for VoteServer {
    async fn submit_vote(&self, request: Request<SubmitVoteRequest>) -> Result<Response<SubmitVoteResponse>, Status> {
        let request = request.into_inner();
        let proto = request.vote.ok_or_else(|| Status::invalid_argument("vote is required"))?;
        // The gateway validated already; the producer does not trust its callers.
        let vote = Vote::from_strings(&proto.name, &proto.album, &proto.year, &proto.rank)
            .map_err(|e| invalid(e.message, e.field.unwrap_or("vote")))?;
        let id = if request.client_key {
            VoteId::from_client_key(&request.id).map_err(|e| invalid(e.to_string(), "id"))?
        } else if request.id.is_empty() {
            VoteId::generate()
        } else {
            VoteId::from_parts(request.id, false)
        };
        let received_at = match bandvote_core::time::parse(&request.received_at) {
            Some(at) => bandvote_core::time::format(at),
            None => bandvote_core::time::now(),
        };
        let message = VoteMessage::new(&id, vote, IngestPath::Grpc, received_at);
        match self.queue.enqueue(&message, id.is_client_supplied()).await {
            Ok(()) => Ok(Response::new(SubmitVoteResponse { id: message.id })),
            Err(QueueError::Unavailable(cause)) => Err(Status::unavailable(cause)),
            Err(QueueError::Refused(cause)) => Err(Status::internal(cause)),
        }
    }
}

/// A built producer, bound and ready to run.
pub struct App {
    listener: TcpListener,
    router: Router,
    queue: Arc<dyn VoteQueue>,
    kafka: Option<KafkaProducer>,
    grace: Duration,
}

impl App {
    /// Binds the listener and builds the Kafka producer (topics are created in the background by
    /// [`App::run`], so the service starts, and answers 503, even while Kafka is down).
    pub async fn build(config: ProducerConfig) -> anyhow::Result<Self> {
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
        let (reporter, health_service) = tonic_health::server::health_reporter();
        reporter.set_serving::<VoteServiceServer<VoteServer>>().await;
        let grpc = tonic::service::Routes::new(VoteServiceServer::new(VoteServer::new(Arc::clone(&queue))))
            .add_service(health_service)
            .into_axum_router();
        // Plain HTTP paths first; everything else is gRPC.
        let router = health::router(checks).fallback_service(grpc);
        let listener = http::bind(listen).await?;
        Ok(Self { listener, router, queue, kafka, grace })
    }

    /// The bound address.
    pub fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        http::local_addr(&self.listener)
    }

    /// Serves until `shutdown`; then drains in-flight calls and flushes the producer.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        producing::serve("grpc-producer", self.listener, self.router, &self.queue, self.kafka, shutdown, self.grace)
            .await
    }
}
