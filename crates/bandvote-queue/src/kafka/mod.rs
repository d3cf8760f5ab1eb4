//! Apache Kafka: the idempotent producer, the consumer-group source, topic administration and the
//! client settings they share.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU32, Ordering},
    },
    time::{Duration, Instant},
};

use bandvote_core::{TraceContext, VoteMessage, trace::TRACEPARENT};
use bandvote_runtime::metrics as names;
use rdkafka::{
    ClientConfig,
    admin::{AdminClient, AdminOptions, NewTopic, TopicReplication},
    client::DefaultClientContext,
    error::{KafkaError, RDKafkaErrorCode},
    message::{Header, OwnedHeaders},
    producer::{FutureProducer, FutureRecord, Producer},
    util::Timeout,
};
use tokio_util::sync::CancellationToken;

use crate::{BoxFuture, CheckError, QueueError, VoteQueue};

mod source;

pub use source::{KafkaSource, SourceConfig};

/// Why a topic cannot be written to (yet).
#[derive(Debug, thiserror::Error)]
pub enum TopicError {
    /// The producer is still preparing the votes topic.
    #[error("kafka: topic {0} is not ready yet")]
    NotReady(String),
    /// The topic does not exist or has no partitions.
    #[error("kafka: topic {0} is missing")]
    Missing(String),
    /// The leader of a partition did not answer.
    #[error("kafka: partition {partition} does not answer")]
    Partition {
        /// The partition.
        partition: i32,
        /// What the client said.
        source: KafkaError,
    },
    /// Kafka did not answer.
    #[error("kafka did not answer")]
    Kafka(#[from] KafkaError),
    /// The blocking client call did not finish.
    #[error("kafka check failed")]
    Task(#[from] tokio::task::JoinError),
}

/// Kafka header that marks a message whose id is a client's `Idempotency-Key`.
pub const CLIENT_KEY_HEADER: &str = "bandvote-client-key";

/// Kafka header with the W3C trace context of the producer's span for the vote, so that the
/// consumer's log line for a vote links back to its request.
pub const TRACEPARENT_HEADER: &str = TRACEPARENT;

/// Where and how to reach Kafka.
#[derive(Debug, Clone)]
pub struct KafkaConfig {
    /// Bootstrap brokers, `host:port[,host:port]`. Default `127.0.0.1:9092`.
    pub brokers: String,
    /// The votes topic. Default `votes`.
    pub topic: String,
    /// Partitions of the votes topic when this service creates it. Default 6.
    pub partitions: i32,
    /// Replication factor of topics this service creates. Default 1.
    pub replication: i32,
    /// How long a vote may wait for Kafka's acknowledgement before the client gets `503`.
    /// Default 5 s.
    pub produce_timeout: Duration,
    /// How long the producer waits to fill a batch before sending it. Default 5 ms: at a show's
    /// rate (2,000 votes/s) it halves the whole path's CPU per vote against 1 ms, for ~5 ms more
    /// latency (BENCHMARKS.md, "Fuller produce requests").
    pub linger: Duration,
    /// How long votes go to one partition before the next takes them ([`DEFAULT_STICKY`]); zero
    /// spreads them by the hash of their id.
    pub sticky: Duration,
    /// The produce requests' compression (`compression.type`: none, snappy or lz4, the codecs
    /// built into librdkafka here). Default lz4.
    pub compression: String,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            brokers: "127.0.0.1:9092".into(),
            topic: "votes".into(),
            partitions: 6,
            replication: 1,
            produce_timeout: Duration::from_secs(5),
            linger: Duration::from_millis(5),
            sticky: DEFAULT_STICKY,
            compression: "lz4".into(),
        }
    }
}

impl KafkaConfig {
    /// The dead-letter topic beside the votes topic: `<topic>.dlq`.
    pub fn dead_letter_topic(&self) -> String {
        format!("{}.dlq", self.topic)
    }

    /// Client settings every Kafka client of bandvote starts from.
    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.brokers)
            .set("socket.keepalive.enable", "true")
            .set("reconnect.backoff.max.ms", "1000")
            .set("topic.metadata.refresh.interval.ms", "10000");
        config
    }

    /// Creates the votes topic and its dead-letter topic if they are missing (broker-side topic
    /// auto-creation stays off). Existing topics are left as they are.
    pub async fn ensure_topics(&self) -> Result<(), KafkaError> {
        let admin: AdminClient<DefaultClientContext> = self.client_config().create()?;
        let dlq = self.dead_letter_topic();
        let topics = [
            NewTopic::new(&self.topic, self.partitions, TopicReplication::Fixed(self.replication)),
            NewTopic::new(&dlq, 1, TopicReplication::Fixed(self.replication)),
        ];
        let options = AdminOptions::new().request_timeout(Some(Duration::from_secs(10)));
        for result in admin.create_topics(&topics, &options).await? {
            match result {
                Ok(name) => tracing::info!(topic = %name, "created topic"),
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((name, code)) => {
                    return Err(KafkaError::AdminOp(code)).inspect_err(|_| {
                        tracing::warn!(topic = %name, %code, "could not create topic");
                    });
                }
            }
        }
        Ok(())
    }

    /// Keeps trying [`Self::ensure_topics`] until it succeeds or `shutdown` is cancelled.
    pub async fn ensure_topics_until_done(&self, shutdown: &CancellationToken) {
        let mut delay = Duration::from_millis(200);
        loop {
            match self.ensure_topics().await {
                Ok(()) => return,
                Err(error) => tracing::warn!(%error, "kafka topics not ready yet, retrying"),
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    }
}

/// The idempotent Kafka producer of votes: `enable.idempotence=true`, `acks=all`, and an answer
/// only after the delivery report.
///
/// It writes nothing until [`KafkaProducer::prepare_topics`] has seen every partition of the votes
/// topic answer on its leader. Writes sent while a new topic was being created (announced in the
/// metadata, its partitions' logs not all made yet) were acknowledged and some never stored: the
/// broker kept a new partition's later sequence numbers and not its first ones.
#[derive(Clone)]
pub struct KafkaProducer {
    inner: Arc<Inner>,
}

struct Inner {
    producer: FutureProducer,
    config: KafkaConfig,
    topic_ready: AtomicBool,
    sticky: Sticky,
}

/// How long votes keep going to one partition before the next takes them ([`KafkaConfig::sticky`]).
pub const DEFAULT_STICKY: Duration = Duration::from_millis(10);

/// Which partition a vote without a client's key goes to: every such vote of one window
/// ([`KafkaConfig::sticky`]) to the same partition, the next window's to the next partition, round
/// the topic (Kafka's sticky partitioning, KIP-480, by time rather than by batch). Hashing each
/// vote's id instead spreads consecutive votes over every partition, so that a produce request
/// carries a batch of one or two votes per partition; here it carries one fuller batch, and each
/// consumer reads fuller batches too.
///
/// Only votes without a client's key go round: their id is made by the gateway and a message with
/// it is only ever sent again identical (a resend of the same bytes), so wherever a copy lands, the
/// tally's idempotency keys (`votes:seen:<key>`) and the log's `_id`, global to the topic, keep one,
/// and it is the same in both. A client's key can come back in a message that differs from its
/// first (another body; another round, stamped when the retry arrived): counted once wherever it
/// lands, but which of the two is counted, and which is logged, would then depend on the order each
/// pipeline reads the partitions in. So those follow their key's hash, as before: the first is
/// first in both.
struct Sticky {
    /// The votes topic's partitions, once known; 0 until then (the key's hash decides).
    partitions: AtomicU32,
    /// Where this producer starts in the round, so that replicas do not all write one partition.
    offset: u32,
    /// How long one partition takes the votes; zero: never (the key's hash decides).
    window: Duration,
    started: Instant,
}

impl Sticky {
    fn new(window: Duration) -> Self {
        let offset = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
        Self { partitions: AtomicU32::new(0), offset: offset ^ std::process::id(), window, started: Instant::now() }
    }

    /// The votes topic has `partitions` now (0: unknown, the key's hash decides).
    fn learn(&self, partitions: usize) {
        self.partitions.store(u32::try_from(partitions).unwrap_or(0), Ordering::Relaxed);
    }

    /// The partition for a vote sent now; `None` while the partitions are unknown.
    fn pick(&self) -> Option<i32> {
        self.pick_at(self.started.elapsed())
    }

    /// The partition for a vote sent `elapsed` after this producer started.
    fn pick_at(&self, elapsed: Duration) -> Option<i32> {
        let partitions = self.partitions.load(Ordering::Relaxed);
        if partitions == 0 || self.window.is_zero() {
            return None;
        }
        let window = (elapsed.as_millis() / self.window.as_millis().max(1)) as u32;
        i32::try_from(window.wrapping_add(self.offset) % partitions).ok()
    }
}

impl KafkaProducer {
    /// Builds the producer; no connection is made until the first message or check.
    pub fn new(config: KafkaConfig) -> Result<Self, KafkaError> {
        let timeout_ms = config.produce_timeout.as_millis().max(1).to_string();
        let producer: FutureProducer = config
            .client_config()
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", format!("{}", config.linger.as_secs_f64() * 1000.0))
            .set("batch.num.messages", "10000")
            .set("compression.type", &config.compression)
            .set("queue.buffering.max.messages", "1000000")
            .set("message.timeout.ms", &timeout_ms)
            .set("request.timeout.ms", &timeout_ms)
            .create()?;
        let sticky = Sticky::new(config.sticky);
        let inner = Inner { producer, config, topic_ready: AtomicBool::new(false), sticky };
        Ok(Self { inner: Arc::new(inner) })
    }

    /// The configuration this producer was built with.
    pub fn config(&self) -> &KafkaConfig {
        &self.inner.config
    }

    /// Sends one record to the partition of its key's hash and waits for its delivery report,
    /// bounded by the produce timeout.
    pub async fn send(
        &self,
        topic: &str,
        key: &[u8],
        payload: &[u8],
        headers: Option<OwnedHeaders>,
    ) -> Result<(), QueueError> {
        self.send_to(topic, key, payload, headers, None).await
    }

    /// As [`Self::send`], to `partition` if given.
    async fn send_to(
        &self,
        topic: &str,
        key: &[u8],
        payload: &[u8],
        headers: Option<OwnedHeaders>,
        partition: Option<i32>,
    ) -> Result<(), QueueError> {
        let timeout = self.inner.config.produce_timeout;
        let mut record = FutureRecord::to(topic).key(key).payload(payload);
        if let Some(partition) = partition {
            record = record.partition(partition);
        }
        if let Some(headers) = headers {
            record = record.headers(headers);
        }
        let started = Instant::now();
        let delivery = self.inner.producer.send(record, Timeout::After(timeout));
        // librdkafka reports every message within `message.timeout.ms`; the outer bound only guards
        // against a report that never comes.
        let slack = Duration::from_millis(bandvote_core::round::PRODUCE_REPORT_SLACK_MS);
        let result = match tokio::time::timeout(timeout + slack, delivery).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err((error, _))) => {
                if error.rdkafka_error_code() == Some(RDKafkaErrorCode::UnknownPartition) {
                    // Fewer partitions than last seen (the topic made again): the key's hash
                    // decides until the next check of the topic counts them.
                    self.inner.sticky.learn(0);
                }
                Err(classify(error))
            }
            Err(_) => Err(QueueError::Unavailable("no delivery report within the produce timeout".into())),
        };
        match &result {
            Ok(()) => {
                metrics::counter!(names::MESSAGES_PRODUCED).increment(1);
                metrics::histogram!(names::PRODUCE_DURATION).record(started.elapsed().as_secs_f64());
            }
            Err(error) => {
                let reason = match error {
                    QueueError::Unavailable(_) => "unavailable",
                    QueueError::Refused(_) => "refused",
                };
                metrics::counter!(names::PRODUCE_ERRORS, "reason" => reason).increment(1);
            }
        }
        result
    }

    /// Creates the topics if they are missing, then waits until every partition of the votes topic
    /// answers on its leader; from then on votes are sent. Retries until done or `shutdown`. A topic
    /// that exists is used even if this client may not create topics.
    pub async fn prepare_topics(&self, shutdown: &CancellationToken) {
        let mut delay = Duration::from_millis(100);
        let mut attempts = 0u32;
        loop {
            let created = self.inner.config.ensure_topics().await;
            match self.partitions_answer(&self.inner.config.topic).await {
                Ok(partitions) => {
                    self.inner.sticky.learn(partitions);
                    self.inner.topic_ready.store(true, Ordering::Release);
                    tracing::info!(topic = %self.inner.config.topic, partitions, "votes topic ready");
                    return;
                }
                Err(error) if attempts % 10 == 9 => {
                    let created = created.err().map(|e| e.to_string()).unwrap_or_else(|| "ok".into());
                    let error = bandvote_runtime::health::chain(&error);
                    tracing::warn!(%error, creation = %created, "votes topic not ready yet, retrying");
                }
                Err(error) => {
                    tracing::debug!(error = %bandvote_runtime::health::chain(&error), "votes topic not ready yet")
                }
            }
            attempts += 1;
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(Duration::from_secs(2));
        }
    }

    /// Whether [`Self::prepare_topics`] has finished.
    pub fn topic_ready(&self) -> bool {
        self.inner.topic_ready.load(Ordering::Acquire)
    }

    /// Asks the leader of every partition of `topic` for its offsets (which, unlike the metadata,
    /// needs the partition's log); the number of partitions when all answer. Before a first write to
    /// a topic other than the votes topic (the dead-letter topic), for the reason in this type's
    /// documentation.
    pub async fn partitions_answer(&self, topic: &str) -> Result<usize, TopicError> {
        let inner = Arc::clone(&self.inner);
        let topic = topic.to_owned();
        tokio::task::spawn_blocking(move || {
            let client = inner.producer.client();
            let metadata = client.fetch_metadata(Some(&topic), Duration::from_secs(2))?;
            let partitions = match metadata.topics().first() {
                Some(found) if found.error().is_none() && !found.partitions().is_empty() => found.partitions(),
                _ => return Err(TopicError::Missing(topic)),
            };
            for partition in partitions.iter().map(|p| p.id()) {
                client
                    .fetch_watermarks(&topic, partition, Duration::from_secs(2))
                    .map_err(|source| TopicError::Partition { partition, source })?;
            }
            Ok(partitions.len())
        })
        .await?
    }

    /// Whether the votes topic is ready and its metadata can be fetched right now.
    pub async fn check_topic(&self) -> Result<(), TopicError> {
        if !self.topic_ready() {
            return Err(TopicError::NotReady(self.inner.config.topic.clone()));
        }
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            let metadata = inner.producer.client().fetch_metadata(Some(&inner.config.topic), Duration::from_secs(2))?;
            match metadata.topics().first() {
                Some(topic) if topic.error().is_none() && !topic.partitions().is_empty() => {
                    // A topic made again may have other partitions: the sticky round follows.
                    inner.sticky.learn(topic.partitions().len());
                    Ok(())
                }
                _ => Err(TopicError::Missing(inner.config.topic.clone())),
            }
        })
        .await?
    }
}

fn classify(error: KafkaError) -> QueueError {
    match error.rdkafka_error_code() {
        Some(
            RDKafkaErrorCode::MessageSizeTooLarge
            | RDKafkaErrorCode::InvalidMessage
            | RDKafkaErrorCode::TopicAuthorizationFailed
            | RDKafkaErrorCode::InvalidMessageSize,
        ) => QueueError::Refused(error.to_string()),
        _ => QueueError::Unavailable(error.to_string()),
    }
}

impl KafkaProducer {
    async fn enqueue_with(
        &self,
        message: &VoteMessage,
        client_key: bool,
        trace: Option<TraceContext>,
    ) -> Result<(), QueueError> {
        if !self.topic_ready() {
            metrics::counter!(names::PRODUCE_ERRORS, "reason" => "unavailable").increment(1);
            return Err(QueueError::Unavailable(format!(
                "the votes topic {} is not ready yet",
                self.inner.config.topic
            )));
        }
        let mut headers = None;
        if client_key {
            headers =
                Some(OwnedHeaders::new_with_capacity(2).insert(Header { key: CLIENT_KEY_HEADER, value: Some("1") }));
        }
        if let Some(trace) = trace {
            let value = trace.traceparent();
            let header = Header { key: TRACEPARENT_HEADER, value: Some(value.as_str()) };
            headers = Some(headers.unwrap_or_else(|| OwnedHeaders::new_with_capacity(1)).insert(header));
        }
        // A client's key may come again in a message that differs (another body, or another round
        // stamped at the retry's arrival): it follows its first message in the key's partition,
        // so that both pipelines see the same first. A vote without one is never sent again with
        // other content: it goes where the sticky round is.
        let partition = if client_key { None } else { self.inner.sticky.pick() };
        let (topic, id) = (&self.inner.config.topic, message.id.as_bytes());
        self.send_to(topic, id, &message.to_json(), headers, partition).await
    }
}

impl VoteQueue for KafkaProducer {
    fn enqueue<'a>(&'a self, message: &'a VoteMessage, client_key: bool) -> BoxFuture<'a, Result<(), QueueError>> {
        Box::pin(self.enqueue_with(message, client_key, None))
    }

    fn enqueue_traced<'a>(
        &'a self,
        message: &'a VoteMessage,
        client_key: bool,
        trace: TraceContext,
    ) -> BoxFuture<'a, Result<(), QueueError>> {
        Box::pin(self.enqueue_with(message, client_key, Some(trace)))
    }

    fn check(&self) -> BoxFuture<'_, Result<(), CheckError>> {
        Box::pin(async move { Ok(self.check_topic().await?) })
    }

    fn flush(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let inner = Arc::clone(&self.inner);
            let timeout = inner.config.produce_timeout;
            let _ = tokio::task::spawn_blocking(move || {
                if let Err(error) = inner.producer.flush(Timeout::After(timeout)) {
                    tracing::error!(%error, "kafka flush on shutdown failed; unacknowledged votes were answered 503");
                }
            })
            .await;
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn a_window_goes_to_one_partition_and_the_windows_go_round_the_topic() {
        let sticky = Sticky::new(DEFAULT_STICKY);
        assert_eq!(sticky.pick_at(Duration::ZERO), None, "until the partitions are known, the key's hash decides");
        sticky.learn(6);
        let window = |n: u32| DEFAULT_STICKY * n;
        let first = sticky.pick_at(window(7)).expect("a partition");
        assert_eq!(sticky.pick_at(window(7) + DEFAULT_STICKY / 2), Some(first), "one window, one partition");
        let round: BTreeSet<i32> = (0..6).map(|n| sticky.pick_at(window(7 + n)).expect("a partition")).collect();
        assert_eq!(round, (0..6).collect::<BTreeSet<_>>(), "six windows in a row write every partition once");
        assert_ne!(sticky.pick_at(window(8)), Some(first), "the next window, the next partition");
        let hashed = Sticky::new(Duration::ZERO);
        hashed.learn(6);
        assert_eq!(hashed.pick_at(window(3)), None, "zero: the key's hash decides");
        sticky.learn(2);
        assert!((0..100).all(|n| sticky.pick_at(window(n)).is_some_and(|p| (0..2).contains(&p))));
    }
}
