//! What the two producer services (gRPC and HTTP) share around their Kafka producer.

use std::time::Duration;

use axum::Router;
use std::sync::Arc;

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

/// The readiness check of a producer writing to another queue (the embedded one).
pub fn queue_checks(queue: &Arc<dyn VoteQueue>) -> Vec<(&'static str, health::Check)> {
    let probe = Arc::clone(queue);
    vec![(
        "queue",
        health::check(move || {
            let probe = Arc::clone(&probe);
            async move { probe.check().await }
        }),
    )]
}

/// Serves `router` until `shutdown` while preparing Kafka's topics in the background, when the queue
/// is Kafka (so the service starts, and answers 503, while Kafka is down or the topic is not ready);
/// then drains and flushes the queue.
pub(crate) async fn serve(
    name: &'static str,
    listener: TcpListener,
    router: Router,
    queue: &Arc<dyn VoteQueue>,
    kafka: Option<KafkaProducer>,
    shutdown: CancellationToken,
    grace: Duration,
) -> anyhow::Result<()> {
    tracing::info!(addr = %http::local_addr(&listener)?, "{name} listening");
    let topics_shutdown = shutdown.clone();
    let topics = kafka.map(|kafka| tokio::spawn(async move { kafka.prepare_topics(&topics_shutdown).await }));
    let served = http::serve(listener, router, shutdown, grace).await;
    if let Some(topics) = topics {
        topics.abort();
    }
    queue.flush().await;
    served
}
