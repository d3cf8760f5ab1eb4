//! The Kafka source: one consumer-group member reading the votes topic in batches.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use bandvote_core::{TraceContext, VoteMessage};
use rdkafka::{
    Message, Offset, TopicPartitionList,
    consumer::{CommitMode, Consumer, StreamConsumer},
    error::KafkaError,
    message::{BorrowedMessage, Headers},
};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{CLIENT_KEY_HEADER, KafkaConfig, TRACEPARENT_HEADER, TopicError};
use crate::{
    BoxFuture, CheckError,
    source::{Payload, QueueSource, Record, SourceError, Vote},
};

fn record(message: &BorrowedMessage<'_>) -> Record {
    let (mut client_key, mut trace) = (false, None);
    for header in message.headers().iter().flat_map(|headers| headers.iter()) {
        match header.key {
            CLIENT_KEY_HEADER => client_key = true,
            TRACEPARENT_HEADER => trace = header.value.and_then(TraceContext::parse),
            _ => {}
        }
    }
    let value = message.payload();
    let payload = match value.map(VoteMessage::decode) {
        Some(Ok(vote)) => Payload::Vote(Vote::new(vote, client_key).with_trace(trace)),
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
    Record { partition: message.partition(), offset: message.offset(), payload }
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
    /// How long the broker may hold a fetch to gather 256 KiB of votes before it
    /// answers with what it has: at a show's rate a fetch then carries this long's votes, not one
    /// produce request's.
    pub fetch_wait: Duration,
    /// How often the offsets of what the sink wrote are committed to the group (and once more when
    /// the member leaves or loses a partition).
    pub commit_interval: Duration,
}

/// What a fetch waits to gather before the broker answers, unless [`SourceConfig::fetch_wait`]
/// passes first: a thousand votes or more (the batches are compressed).
const FETCH_MIN_BYTES: usize = 256 * 1024;

/// How much longer than a fetch's wait a source waits for the next vote before it commits what it
/// stored since the last commit: once the votes stop, the group's offsets reach what was written
/// within this and the fetch's wait, not within the commit interval (`bandvote recount` and a
/// round's finality read them). While votes keep coming a fetch never waits this long.
const IDLE_COMMIT: Duration = Duration::from_millis(100);

/// One member of a consumer group on the votes topic.
pub struct KafkaSource {
    consumer: Arc<StreamConsumer>,
    topic: String,
    config: SourceConfig,
}

impl KafkaSource {
    /// Joins `config.group` on the votes topic. An offset is stored only after the sink wrote what
    /// comes before it, and the stored offsets are committed every `config.commit_interval`.
    pub fn subscribe(kafka: &KafkaConfig, config: SourceConfig) -> Result<Self, KafkaError> {
        let session_ms = config.session_timeout.as_millis().max(1000);
        let consumer: StreamConsumer = kafka
            .client_config()
            .set("group.id", &config.group)
            // librdkafka commits the stored offsets on its interval, when a partition is revoked
            // and when the consumer closes; it stores none by itself.
            .set("enable.auto.commit", "true")
            .set("auto.commit.interval.ms", config.commit_interval.as_millis().max(1).to_string())
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", session_ms.to_string())
            .set("heartbeat.interval.ms", (session_ms / 3).max(300).to_string())
            .set("max.poll.interval.ms", "60000")
            .set("fetch.wait.max.ms", config.fetch_wait.as_millis().max(1).to_string())
            .set("fetch.min.bytes", FETCH_MIN_BYTES.to_string())
            .set("queued.min.messages", "20000")
            .set("enable.partition.eof", "false")
            .create()?;
        consumer.subscribe(&[&kafka.topic])?;
        Ok(Self { consumer: Arc::new(consumer), topic: kafka.topic.clone(), config })
    }

    /// Commits the offsets stored since the last commit, as the interval's commit does: librdkafka
    /// sends those of the partitions this member still holds, where the stored offset is past the
    /// committed one (a partition given to another member since may have been read further there,
    /// and this member's older offset must not set its commit back).
    fn commit_stored(&self) {
        if let Err(error) = self.consumer.commit_consumer_state(CommitMode::Async) {
            tracing::debug!(group = %self.config.group, %error, "idle commit not made (nothing new, or the interval's commit follows)");
        }
    }

    fn offsets(&self, next: &BTreeMap<i32, i64>) -> Result<TopicPartitionList, KafkaError> {
        let mut list = TopicPartitionList::new();
        for (&partition, &offset) in next {
            list.add_partition_offset(&self.topic, partition, Offset::Offset(offset))?;
        }
        Ok(list)
    }

    fn watermarks(&self, partition: i32) -> BoxFuture<'_, Result<(i64, i64), SourceError>> {
        let consumer = Arc::clone(&self.consumer);
        let topic = self.topic.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || consumer.fetch_watermarks(&topic, partition, Duration::from_secs(5)))
                .await
                .unwrap_or(Err(KafkaError::Canceled))
                .map_err(SourceError::from)
        })
    }
}

impl QueueSource for KafkaSource {
    fn name(&self) -> &str {
        &self.topic
    }

    /// The first message, then whatever else arrives within the linger time, up to the batch size.
    fn next_batch<'a>(&'a self, shutdown: &'a CancellationToken) -> BoxFuture<'a, Option<Vec<Record>>> {
        Box::pin(async move {
            let mut batch = Vec::new();
            // While the brokers are away librdkafka queues an error event per failed attempt; they
            // are informational (the client reconnects by itself), so they are drained quickly
            // rather than waited on one by one, with a pause only if they keep coming.
            let mut errors = 0u32;
            let idle = tokio::time::sleep(self.config.fetch_wait + IDLE_COMMIT);
            tokio::pin!(idle);
            let mut idle_committed = false;
            loop {
                let received = tokio::select! {
                    () = shutdown.cancelled() => return None,
                    received = self.consumer.recv() => received,
                    () = &mut idle, if !idle_committed => {
                        self.commit_stored();
                        idle_committed = true;
                        continue;
                    }
                };
                match received {
                    Ok(message) => {
                        batch.push(record(&message));
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
                    Ok(Ok(message)) => batch.push(record(&message)),
                    Ok(Err(error)) => {
                        tracing::warn!(group = %self.config.group, %error, "kafka receive failed");
                        break;
                    }
                    Err(_) => break,
                }
            }
            Some(batch)
        })
    }

    fn seek(&self, partition: i32, offset: i64) -> Result<(), SourceError> {
        Ok(self.consumer.seek(&self.topic, partition, Offset::Offset(offset), Duration::from_secs(5))?)
    }

    /// Stores, per partition, the offset after the last record of `records`: committed to the group
    /// within [`SourceConfig::commit_interval`], and when the partition is revoked or the member
    /// closes. A member killed before that is read again from the last commit by whoever takes its
    /// partitions; the sinks are idempotent.
    fn commit<'a>(&'a self, records: &'a [Record]) -> BoxFuture<'a, Result<(), SourceError>> {
        Box::pin(async move {
            let mut next: BTreeMap<i32, i64> = BTreeMap::new();
            for record in records {
                let entry = next.entry(record.partition).or_insert(0);
                *entry = (*entry).max(record.offset + 1);
            }
            if next.is_empty() {
                return Ok(());
            }
            Ok(self.consumer.store_offsets(&self.offsets(&next)?)?)
        })
    }

    fn first_offset(&self, partition: i32) -> BoxFuture<'_, Result<i64, SourceError>> {
        Box::pin(async move { self.watermarks(partition).await.map(|(low, _)| low) })
    }

    fn end_offset(&self, partition: i32) -> BoxFuture<'_, Result<i64, SourceError>> {
        Box::pin(async move { self.watermarks(partition).await.map(|(_, high)| high) })
    }

    /// Messages between this member's positions and the end of its assigned partitions.
    fn lag(&self) -> BoxFuture<'_, Result<i64, SourceError>> {
        let consumer = Arc::clone(&self.consumer);
        let topic = self.topic.clone();
        Box::pin(async move {
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
            .map_err(SourceError::from)
        })
    }

    fn check(&self) -> BoxFuture<'_, Result<(), CheckError>> {
        let consumer = Arc::clone(&self.consumer);
        let topic = self.topic.clone();
        Box::pin(async move {
            let fetch = move || consumer.fetch_metadata(Some(&topic), Duration::from_secs(2)).map(drop);
            tokio::task::spawn_blocking(fetch).await.map_err(TopicError::from)?.map_err(TopicError::from)?;
            Ok(())
        })
    }
}
