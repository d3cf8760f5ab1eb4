//! The dead-letter topic: messages that are not votes are copied to `<topic>.dlq` (with the reason
//! in a header) and counted, so they never block or crash the consumer.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use bandvote_queue::{KafkaProducer, Payload, Record};
use bandvote_runtime::metrics as names;
use rdkafka::message::{Header, OwnedHeaders};
use tokio_util::sync::CancellationToken;

use crate::pipelines::backoff;

/// Writes invalid messages to the dead-letter topic.
#[derive(Clone)]
pub struct DeadLetters {
    producer: KafkaProducer,
    topic: String,
    topic_ready: Arc<AtomicBool>,
}

impl DeadLetters {
    /// Dead letters go to `producer`'s `<topic>.dlq`.
    pub fn new(producer: KafkaProducer) -> Self {
        let topic = producer.config().dead_letter_topic();
        Self { producer, topic, topic_ready: Arc::new(AtomicBool::new(false)) }
    }

    /// Waits, before the first write, until every partition of the dead-letter topic answers on its
    /// leader (as the producers do for the votes topic: writes to a topic still being created were
    /// acknowledged and lost); `false` if shutdown came first.
    async fn wait_topic(&self, shutdown: &CancellationToken) -> bool {
        let mut delay = Duration::from_millis(100);
        while !self.topic_ready.load(Ordering::Acquire) {
            match self.producer.partitions_answer(&self.topic).await {
                Ok(_) => self.topic_ready.store(true, Ordering::Release),
                Err(error) => {
                    tracing::debug!(error = %bandvote_runtime::health::chain(&error), "dead-letter topic not ready yet");
                    if !backoff(&mut delay, Duration::from_secs(2), shutdown).await {
                        return false;
                    }
                }
            }
        }
        true
    }

    /// Copies every invalid record of `batch` to the dead-letter topic, retrying until each is
    /// acknowledged (at least once); `false` if shutdown came first.
    pub async fn send_all(&self, batch: &[Record], shutdown: &CancellationToken) -> bool {
        for record in batch {
            let Payload::Invalid { reason, key, value } = &record.payload else {
                continue;
            };
            tracing::warn!(partition = record.partition, offset = record.offset, %reason, "message is not a vote, sending it to the dead-letter topic");
            if !self.wait_topic(shutdown).await {
                return false;
            }
            let mut delay = Duration::from_millis(100);
            loop {
                let partition = record.partition.to_string();
                let offset = record.offset.to_string();
                let headers = OwnedHeaders::new()
                    .insert(Header { key: "reason", value: Some(reason.as_str()) })
                    .insert(Header { key: "source-partition", value: Some(partition.as_str()) })
                    .insert(Header { key: "source-offset", value: Some(offset.as_str()) });
                let sent = self
                    .producer
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
