//! The Kafka source: one consumer-group member reading the votes topic in batches.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use bandvote_core::VoteMessage;
use bandvote_queue::{KafkaConfig, kafka::CLIENT_KEY_HEADER};
use rdkafka::{
    Message, Offset, TopicPartitionList,
    consumer::{CommitMode, Consumer, StreamConsumer},
    error::KafkaError,
    message::{BorrowedMessage, Headers},
};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// A valid vote read from the topic.
#[derive(Debug, Clone)]
pub struct Vote {
    /// The message.
    pub message: VoteMessage,
    /// Whether the id is a client's idempotency key.
    pub client_key: bool,
    /// `<band> / <album>`.
    pub album_key: String,
}

/// What a message carried.
#[derive(Debug, Clone)]
pub enum Payload {
    /// A vote.
    Vote(Vote),
    /// Not a vote: it goes to the dead-letter topic and only advances the offset.
    Invalid {
        /// Why it is not a vote.
        reason: String,
        /// The message key.
        key: Option<Vec<u8>>,
        /// The message value.
        value: Option<Vec<u8>>,
    },
}

/// One message of the votes topic.
#[derive(Debug, Clone)]
pub struct Record {
    /// Partition.
    pub partition: i32,
    /// Offset in the partition.
    pub offset: i64,
    /// Decoded content.
    pub payload: Payload,
}

impl Record {
    fn from_message(message: &BorrowedMessage<'_>) -> Self {
        let client_key = message.headers().is_some_and(|headers| headers.iter().any(|h| h.key == CLIENT_KEY_HEADER));
        let value = message.payload();
        let payload = match value.map(VoteMessage::decode) {
            Some(Ok(vote)) => {
                let album_key = bandvote_core::vote::album_key(&vote.name, &vote.album);
                Payload::Vote(Vote { message: vote, client_key, album_key })
            }
            Some(Err(error)) => Payload::Invalid {
                reason: error.to_string(),
                key: message.key().map(<[u8]>::to_vec),
                value: value.map(<[u8]>::to_vec),
            },
            None => Payload::Invalid {
                reason: "message has no value".into(),
                key: message.key().map(<[u8]>::to_vec),
                value: None,
            },
        };
        Self { partition: message.partition(), offset: message.offset(), payload }
    }

    /// The vote, if the message is one.
    pub fn vote(&self) -> Option<&Vote> {
        match &self.payload {
            Payload::Vote(vote) => Some(vote),
            Payload::Invalid { .. } => None,
        }
    }
}

/// Batching and group settings of a source.
#[derive(Debug, Clone)]
pub struct SourceConfig {
    /// Consumer group.
    pub group: String,
    /// Group session timeout (a dead member's partitions move after this long).
    pub session_timeout: Duration,
    /// Largest batch.
    pub batch_max: usize,
    /// How long a batch waits to fill after its first message.
    pub batch_linger: Duration,
}

/// One member of a consumer group on the votes topic.
pub struct KafkaSource {
    consumer: Arc<StreamConsumer>,
    topic: String,
    config: SourceConfig,
}

impl KafkaSource {
    /// Joins `config.group` on the votes topic. Offsets are committed by hand, after the sink wrote.
    pub fn subscribe(kafka: &KafkaConfig, config: SourceConfig) -> Result<Self, KafkaError> {
        let session_ms = config.session_timeout.as_millis().max(1000);
        let consumer: StreamConsumer = kafka
            .client_config()
            .set("group.id", &config.group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", session_ms.to_string())
            .set("heartbeat.interval.ms", (session_ms / 3).max(300).to_string())
            .set("max.poll.interval.ms", "60000")
            .set("fetch.wait.max.ms", "50")
            .set("queued.min.messages", "20000")
            .set("enable.partition.eof", "false")
            .create()?;
        consumer.subscribe(&[&kafka.topic])?;
        Ok(Self { consumer: Arc::new(consumer), topic: kafka.topic.clone(), config })
    }

    /// The topic read.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Waits for the next batch: the first message, then whatever else arrives within the linger
    /// time, up to the batch size. `None` once `shutdown` is cancelled.
    pub async fn next_batch(&self, shutdown: &CancellationToken) -> Option<Vec<Record>> {
        let mut batch = Vec::new();
        // While the brokers are away librdkafka queues an error event per failed attempt; they are
        // informational (the client reconnects by itself), so they are drained quickly rather than
        // waited on one by one, with a pause only if they keep coming.
        let mut errors = 0u32;
        loop {
            let received = tokio::select! {
                () = shutdown.cancelled() => return None,
                received = self.consumer.recv() => received,
            };
            match received {
                Ok(message) => {
                    batch.push(Record::from_message(&message));
                    break;
                }
                Err(error) => {
                    if errors.is_multiple_of(200) {
                        tracing::warn!(group = %self.config.group, %error, "kafka receive failed, retrying");
                    }
                    errors += 1;
                    if errors.is_multiple_of(100) {
                        tokio::select! {
                            () = shutdown.cancelled() => return None,
                            () = tokio::time::sleep(Duration::from_millis(200)) => {}
                        }
                    }
                }
            }
        }
        let deadline = Instant::now() + self.config.batch_linger;
        while batch.len() < self.config.batch_max {
            match tokio::time::timeout_at(deadline, self.consumer.recv()).await {
                Ok(Ok(message)) => batch.push(Record::from_message(&message)),
                Ok(Err(error)) => {
                    tracing::warn!(group = %self.config.group, %error, "kafka receive failed");
                    break;
                }
                Err(_) => break,
            }
        }
        Some(batch)
    }

    /// Moves the read position of `partition` to `offset`; messages already fetched past it are
    /// dropped by the client.
    pub fn seek(&self, partition: i32, offset: i64) -> Result<(), KafkaError> {
        self.consumer.seek(&self.topic, partition, Offset::Offset(offset), Duration::from_secs(5))
    }

    /// Commits, per partition, the offset after the last record of `records`.
    pub fn commit(&self, records: &[Record]) -> Result<(), KafkaError> {
        let mut next: BTreeMap<i32, i64> = BTreeMap::new();
        for record in records {
            let entry = next.entry(record.partition).or_insert(0);
            *entry = (*entry).max(record.offset + 1);
        }
        let mut list = TopicPartitionList::new();
        for (partition, offset) in next {
            list.add_partition_offset(&self.topic, partition, Offset::Offset(offset))?;
        }
        if list.count() == 0 {
            return Ok(());
        }
        self.consumer.commit(&list, CommitMode::Async)
    }

    /// The first offset still present in `partition`.
    pub async fn low_watermark(&self, partition: i32) -> Result<i64, KafkaError> {
        let consumer = Arc::clone(&self.consumer);
        let topic = self.topic.clone();
        tokio::task::spawn_blocking(move || {
            consumer.fetch_watermarks(&topic, partition, Duration::from_secs(5)).map(|(low, _)| low)
        })
        .await
        .unwrap_or(Err(KafkaError::Canceled))
    }

    /// Messages between this member's positions and the end of its assigned partitions.
    pub async fn lag(&self) -> Result<i64, KafkaError> {
        let consumer = Arc::clone(&self.consumer);
        let topic = self.topic.clone();
        tokio::task::spawn_blocking(move || {
            let assignment = consumer.assignment()?;
            let positions = consumer.position()?;
            let mut lag = 0;
            for element in assignment.elements_for_topic(&topic) {
                let (_, high) = consumer.fetch_watermarks(&topic, element.partition(), Duration::from_secs(2))?;
                let position = positions
                    .find_partition(&topic, element.partition())
                    .and_then(|p| p.offset().to_raw())
                    .filter(|o| *o >= 0);
                if let Some(position) = position {
                    lag += (high - position).max(0);
                }
            }
            Ok(lag)
        })
        .await
        .unwrap_or(Err(KafkaError::Canceled))
    }

    /// Whether the brokers answer, for readiness.
    pub async fn check(&self) -> Result<(), String> {
        let consumer = Arc::clone(&self.consumer);
        let topic = self.topic.clone();
        tokio::task::spawn_blocking(move || {
            consumer.fetch_metadata(Some(&topic), Duration::from_secs(2)).map(drop).map_err(|e| format!("kafka: {e}"))
        })
        .await
        .unwrap_or_else(|e| Err(format!("kafka check failed: {e}")))
    }
}
