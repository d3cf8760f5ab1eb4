//! The producer service: writes each vote to the queue and answers only after the queue
//! acknowledged it. One app with two front doors: gRPC (`bandvote.v1.VoteService`, see
//! [`crate::grpc_producer`]) for the gRPC gateway, plain HTTP `POST /votes` and `POST
//! /votes/batch` (see [`crate::http_producer`]) for the WebAssembly path. `bandvote grpc-producer` and `bandvote
//! http-producer` each open one door; `bandvote up` opens both on one loopback listener.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use bandvote_queue::{KafkaConfig, KafkaProducer, VoteQueue};
use bandvote_runtime::{health, http, service::Service};

use crate::{ingest_secret::IngestSecret, rounds::RoundGate};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// A way votes come in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrontDoor {
    /// gRPC `bandvote.v1.VoteService/SubmitVote` (and the standard gRPC health service).
    Grpc,
    /// `POST /votes` and `POST /votes/batch`.
    Http,
}

impl FrontDoor {
    fn name(self) -> &'static str {
        match self {
            Self::Grpc => "grpc-producer",
            Self::Http => "http-producer",
        }
    }
}

/// Configuration of a producer.
#[derive(Debug, Clone)]
pub struct ProducerConfig {
    /// Listener for the front door and the health endpoints. Default `0.0.0.0:3001` (gRPC),
    /// `0.0.0.0:8001` (HTTP).
    pub listen: SocketAddr,
    /// Kafka.
    pub kafka: KafkaConfig,
    /// Longest drain on shutdown. Default 10 s.
    pub grace: Duration,
    /// Limits on the listener's clients (`--max-connections`). Default [`http::Limits::default`].
    pub limits: http::Limits,
    /// Whom it takes votes from, and for which rounds.
    pub guard: Guard,
}

/// Whom a producer takes votes from, and for which rounds. Default: anyone, any round (a producer
/// reachable by the gateways only).
#[derive(Debug, Clone, Default)]
pub struct Guard {
    /// The secret the gateways send ([`crate::ingest_secret`]): calls without it are refused.
    pub secret: Option<IngestSecret>,
    /// The rounds (their store): a vote stamped for a round that could not have taken it now is
    /// refused ([`RoundGate::hands_over`]).
    pub rounds: Option<Arc<RoundGate>>,
}

impl std::fmt::Debug for RoundGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RoundGate(..)")
    }
}

impl ProducerConfig {
    /// The defaults of the producer behind `door`.
    pub fn default_for(door: FrontDoor) -> Self {
        let port = match door {
            FrontDoor::Grpc => 3001,
            FrontDoor::Http => 8001,
        };
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], port)),
            kafka: KafkaConfig::default(),
            grace: Duration::from_secs(10),
            limits: http::Limits::default(),
            guard: Guard::default(),
        }
    }
}

impl Default for ProducerConfig {
    fn default() -> Self {
        Self::default_for(FrontDoor::Grpc)
    }
}

/// The producer over `queue` (`kafka`: the producer when the queue is Kafka, whose topics are
/// prepared in the background, so the service starts, and answers 503, while Kafka is down), with
/// the given front doors, behind `guard`.
pub async fn service(
    queue: Arc<dyn VoteQueue>,
    kafka: Option<KafkaProducer>,
    doors: &[FrontDoor],
    guard: &Guard,
) -> Service {
    bandvote_runtime::metrics::announce_producer();
    let mut router = axum::Router::new();
    if doors.contains(&FrontDoor::Http) {
        router = router.merge(crate::http_producer::router(Arc::clone(&queue), guard.rounds.clone()));
    }
    if doors.contains(&FrontDoor::Grpc) {
        router = router.merge(crate::grpc_producer::routes(Arc::clone(&queue), guard.rounds.clone()).await);
    }
    if let Some(secret) = &guard.secret {
        router = secret.require(router);
    }
    // The gate's refresh is its owner's to run: a producer of its own (`App::build`), or `up`, whose
    // gateways share it.
    let mut service = Service::new(router);
    service = match kafka {
        Some(kafka) => {
            let probe = kafka.clone();
            service
                .check(
                    "kafka",
                    health::check(move || {
                        let probe = probe.clone();
                        async move { Ok(probe.check_topic().await?) }
                    }),
                )
                .task("topics", move |shutdown| async move {
                    kafka.prepare_topics(&shutdown).await;
                    Ok(())
                })
        }
        None => {
            let probe = Arc::clone(&queue);
            service.check(
                "queue",
                health::check(move || {
                    let probe = Arc::clone(&probe);
                    async move { probe.check().await }
                }),
            )
        }
    };
    service.after_drain(async move {
        queue.flush().await;
        Ok(())
    })
}

/// A built producer, bound and ready to run.
pub struct App {
    name: &'static str,
    listener: TcpListener,
    service: Service,
    grace: Duration,
}

impl App {
    /// Binds the listener and builds the Kafka producer behind `door`.
    pub async fn build(config: ProducerConfig, door: FrontDoor) -> anyhow::Result<Self> {
        let producer = KafkaProducer::new(config.kafka.clone())?;
        let queue = Arc::new(producer.clone());
        let mut app =
            Self::with_queue(config.listen, queue, Some(producer), config.grace, &[door], &config.guard).await?;
        app.service = app.service.limits(config.limits);
        // The rounds are read again every refresh, as at the gateways.
        if let Some(gate) = &config.guard.rounds {
            app.service = crate::rounds::with_gate(app.service, gate);
        }
        Ok(app)
    }

    /// Binds the listener for a producer writing to `queue` through `doors`.
    pub async fn with_queue(
        listen: SocketAddr,
        queue: Arc<dyn VoteQueue>,
        kafka: Option<KafkaProducer>,
        grace: Duration,
        doors: &[FrontDoor],
        guard: &Guard,
    ) -> anyhow::Result<Self> {
        let name = match doors {
            [door] => door.name(),
            _ => "producer",
        };
        let service = service(queue, kafka, doors, guard).await;
        let listener = http::bind(listen).await?;
        Ok(Self { name, listener, service, grace })
    }

    /// The bound address.
    pub fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        http::local_addr(&self.listener)
    }

    /// The readiness checks, for a listener that reports this producer's readiness (`up`).
    pub fn readiness(&self) -> Vec<(&'static str, health::Check)> {
        self.service.readiness()
    }

    /// Serves until `shutdown`; then drains in-flight votes and flushes the producer.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        tracing::info!(addr = %self.local_addr()?, "{} listening", self.name);
        self.service.serve(self.listener, shutdown, self.grace).await
    }
}
