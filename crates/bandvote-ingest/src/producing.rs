//! What the two producer services (gRPC and HTTP) share around their Kafka producer.

use std::time::Duration;

use axum::Router;
use bandvote_queue::{KafkaProducer, VoteQueue};
use bandvote_runtime::{health, http};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The readiness check of a producer: the votes topic's metadata can be fetched.
pub(crate) fn kafka_checks(producer: &KafkaProducer) -> Vec<(&'static str, health::Check)> {
    let probe = producer.clone();
    vec![(
        "kafka",
        health::check(move || {
            let probe = probe.clone();
            async move { probe.check_topic().await }
        }),
    )]
}

/// Serves `router` until `shutdown` while creating the topics in the background (so the service
/// starts, and answers 503, even while Kafka is down); then drains and flushes the producer.
pub(crate) async fn serve(
    name: &'static str,
    listener: TcpListener,
    router: Router,
    producer: &KafkaProducer,
    shutdown: CancellationToken,
    grace: Duration,
) -> anyhow::Result<()> {
    tracing::info!(addr = %http::local_addr(&listener)?, "{name} listening");
    let kafka = producer.config().clone();
    let topics_shutdown = shutdown.clone();
    let topics = tokio::spawn(async move { kafka.ensure_topics_until_done(&topics_shutdown).await });
    let served = http::serve(listener, router, shutdown, grace).await;
    topics.abort();
    producer.flush().await;
    served
}
