//! The dead-letter topic: messages that are not votes are copied to `<topic>.dlq` (with the reason
//! in a header) and counted, so they never block or crash the consumer.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use bandvote_queue::{KafkaConfig, KafkaProducer, Payload, Record};
use bandvote_runtime::metrics as names;
use rdkafka::message::{Header, OwnedHeaders};
use tokio_util::sync::CancellationToken;

use crate::pipelines::backoff;

/// Writes invalid messages to the dead-letter topic.
#[derive(Clone)]
pub struct DeadLetters {
    kafka: KafkaConfig,
    /// Made at the first dead letter: an idle Kafka producer costs a polling thread's wake-ups.
    producer: Arc<tokio::sync::OnceCell<KafkaProducer>>,
    topic: String,
    topic_ready: Arc<AtomicBool>,
}

impl DeadLetters {
    /// Dead letters go to `kafka`'s `<topic>.dlq`, through a producer made when the first comes.
    pub fn new(kafka: KafkaConfig) -> Self {
        let topic = kafka.dead_letter_topic();
        Self { kafka, producer: Arc::default(), topic, topic_ready: Arc::new(AtomicBool::new(false)) }
    }

    /// The producer, once every partition of the dead-letter topic answers on its leader (as the
    /// producers wait for the votes topic: writes to a topic still being created were acknowledged
    /// and lost); `None` if shutdown came first.
    async fn ready(&self, shutdown: &CancellationToken) -> Option<&KafkaProducer> {
        let mut delay = Duration::from_millis(100);
        loop {
            let error = match self.producer.get_or_try_init(|| async { KafkaProducer::new(self.kafka.clone()) }).await {
                Ok(producer) if self.topic_ready.load(Ordering::Acquire) => return Some(producer),
                Ok(producer) => match producer.partitions_answer(&self.topic).await {
                    Ok(_) => {
                        self.topic_ready.store(true, Ordering::Release);
                        return Some(producer);
                    }
                    Err(error) => bandvote_runtime::health::chain(&error),
                },
                Err(error) => error.to_string(),
            };
            tracing::debug!(%error, "dead-letter topic not ready yet");
            if !backoff(&mut delay, Duration::from_secs(2), shutdown).await {
                return None;
            }
        }
    }

    /// Copies every invalid record of `batch` to the dead-letter topic, retrying until each is
    /// acknowledged (at least once); `false` if shutdown came first.
    pub async fn send_all(&self, batch: &[Record], shutdown: &CancellationToken) -> bool {
        for record in batch {
            let Payload::Invalid { reason, key, value } = &record.payload else {
                continue;
            };
            tracing::warn!(partition = record.partition, offset = record.offset, %reason, "message is not a vote, sending it to the dead-letter topic");
            let Some(producer) = self.ready(shutdown).await else {
                return false;
            };
            let mut delay = Duration::from_millis(100);
            loop {
                let partition = record.partition.to_string();
                let offset = record.offset.to_string();
                let headers = OwnedHeaders::new()
                    .insert(Header { key: "reason", value: Some(reason.as_str()) })
                    .insert(Header { key: "source-partition", value: Some(partition.as_str()) })
                    .insert(Header { key: "source-offset", value: Some(offset.as_str()) });
                let sent = producer
                    .send(
                        &self.topic,
                        key.as_deref().unwrap_or_default(),
                        value.as_deref().unwrap_or_default(),
                        Some(headers),
                    )
                    .await;
                match sent {
                    Ok(()) => {
                        metrics::counter!(names::CONSUMER_DEAD_LETTERS).increment(1);
                        break;
                    }
                    Err(error) => {
                        tracing::warn!(%error, "dead-letter write failed, retrying");
                        if !backoff(&mut delay, Duration::from_secs(5), shutdown).await {
                            return false;
                        }
                    }
                }
            }
        }
        true
    }
}
