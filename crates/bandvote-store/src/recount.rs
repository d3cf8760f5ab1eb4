//! `bandvote recount`: rebuilds the Redis counters from the MongoDB log, the durable record.
//!
//! The log and the counters must describe the same votes, so the recount takes a consistent cut:
//! it requires the log pipeline to have logged everything in the topic (its committed offsets equal
//! the partitions' ends) before and after reading MongoDB, then writes the counters together with
//! the tally's offsets at that cut, in one transaction. A tally pipeline that resumes afterwards
//! continues from the cut; nothing is counted twice.

use std::time::Duration;

use anyhow::Context;
use bandvote_core::Counts;
use bandvote_queue::KafkaConfig;
use rdkafka::{
    Offset, TopicPartitionList,
    consumer::{BaseConsumer, Consumer},
};
use secrecy::{ExposeSecret, SecretString};

use crate::{
    keys, log,
    redis_client::{RedisTarget, Timeouts},
};

/// Configuration of a recount.
#[derive(Debug, Clone)]
pub struct RecountConfig {
    /// Kafka (to read the cut).
    pub kafka: KafkaConfig,
    /// Redis URL (may hold a password).
    pub redis_url: SecretString,
    /// MongoDB URL (may hold a password).
    pub mongo_url: SecretString,
    /// MongoDB database.
    pub mongo_db: String,
    /// The log pipeline's consumer group.
    pub log_group: String,
    /// How long a client's idempotency key is remembered.
    pub idempotency_ttl: Duration,
    /// Recount even if the log pipeline is behind or votes are arriving (the counters then match
    /// the log, not the topic).
    pub force: bool,
}

/// Why a recount did not write.
#[derive(Debug, thiserror::Error)]
pub enum RecountError {
    /// The log pipeline has not logged everything in the topic: the log is not the whole record yet.
    #[error("the log pipeline is {0} votes behind the topic; wait until it catches up (or pass --force)")]
    Behind(i64),
    /// Votes arrived while the log was read: the cut is not consistent.
    #[error("votes arrived during the recount; pause the producers and run it again")]
    Moved,
    /// A store could not be read or written.
    #[error(transparent)]
    Failed(#[from] anyhow::Error),
}

/// Per partition: (log group's committed offset, end of the partition).
type Cut = Vec<(i32, i64, i64)>;

fn read_cut(kafka: &KafkaConfig, group: &str) -> anyhow::Result<Cut> {
    let consumer: BaseConsumer = kafka
        .client_config()
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .context("failed to create a kafka client")?;
    let timeout = Duration::from_secs(10);
    let metadata = consumer.fetch_metadata(Some(&kafka.topic), timeout).context("failed to read kafka metadata")?;
    let topic = metadata.topics().first().context("kafka returned no metadata for the votes topic")?;
    let mut list = TopicPartitionList::new();
    for partition in topic.partitions() {
        list.add_partition(&kafka.topic, partition.id());
    }
    let committed = consumer.committed_offsets(list, timeout).context("failed to read committed offsets")?;
    let mut cut = Vec::new();
    for element in committed.elements() {
        let (low, high) = consumer
            .fetch_watermarks(&kafka.topic, element.partition(), timeout)
            .context("failed to read partition ends")?;
        let committed = match element.offset() {
            Offset::Offset(offset) => offset,
            _ => low,
        };
        cut.push((element.partition(), committed, high));
    }
    cut.sort_unstable();
    Ok(cut)
}

async fn cut(config: &RecountConfig) -> anyhow::Result<Cut> {
    log_cut(&config.kafka, &config.log_group).await
}

/// Per partition of the votes topic: (the log group's committed offset, the end of the partition).
pub async fn log_cut(kafka: &KafkaConfig, log_group: &str) -> anyhow::Result<Vec<(i32, i64, i64)>> {
    let (kafka, group) = (kafka.clone(), log_group.to_owned());
    tokio::task::spawn_blocking(move || read_cut(&kafka, &group)).await.context("kafka task failed")?
}

/// How long a recount waits for the log group's offsets to reach the topic's end before it says the
/// log is behind: a log pipeline commits what it wrote within its batch linger, its fetch wait and
/// 100 ms (400 ms by default) of the votes' stopping, and within its commit interval (1 s) while
/// they keep coming.
const CATCH_UP: Duration = Duration::from_secs(3);

/// Rebuilds the counters. See the module documentation for the consistency rule.
pub async fn recount(config: &RecountConfig) -> Result<Counts, RecountError> {
    let waited = tokio::time::Instant::now();
    let before = loop {
        let cut = cut(config).await?;
        let behind: i64 = cut.iter().map(|(_, committed, high)| (high - committed).max(0)).sum();
        if behind == 0 || config.force {
            break cut;
        }
        if waited.elapsed() >= CATCH_UP {
            return Err(RecountError::Behind(behind));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    let logs = log::collection(config.mongo_url.expose_secret(), &config.mongo_db)
        .await
        .context("failed to configure mongodb")?;
    let log::Scan { counts: mut report, mut rounds, newest, recent } = log::scan(&logs, config.idempotency_ttl).await?;

    let after = cut(config).await?;
    let moved = before.iter().zip(&after).any(|(b, a)| b.2 != a.2);
    if moved && !config.force {
        return Err(RecountError::Moved);
    }

    let mut redis = RedisTarget::parse(config.redis_url.expose_secret())?.connect(Timeouts::default()).await?;
    // Votes set aside as late (for a round already final) are in the log and counted nowhere.
    let late = crate::rounds::late(&mut redis).await.context("failed to read the late votes")?;
    report.subtract(&crate::audit::Audit::late_of(&late, None));
    for (id, counts) in &late {
        if let Some(round) = rounds.get_mut(id) {
            round.subtract(counts);
        }
    }
    // Idempotency keys first: a client retry after the recount must still be recognised.
    for chunk in recent.chunks(10_000) {
        let mut pipe = redis::pipe();
        for (id, ttl) in chunk {
            pipe.cmd("SET").arg(format!("{}{id}", keys::SEEN_PREFIX)).arg(1).arg("EX").arg(*ttl).ignore();
        }
        pipe.query_async::<()>(&mut redis).await.context("failed to write idempotency keys")?;
    }
    // Every round's counters are rebuilt too: those of the rounds known and of those in the log.
    let known: Vec<String> =
        redis::cmd("HKEYS").arg(keys::ROUNDS).query_async(&mut redis).await.context("failed to read the rounds")?;
    let mut pipe = redis::pipe();
    pipe.atomic();
    // The fingerprints belong to the offsets replaced here: a later check would find them stale.
    pipe.del(&[keys::BAND, keys::ALBUM, keys::TOTAL, keys::LAST, keys::OFFSETS, keys::MARKS]).ignore();
    for id in known.iter().chain(rounds.keys()) {
        pipe.del(&keys::round(id)).ignore();
    }
    for (id, counts) in &rounds {
        let [band, album, total] = keys::round(id);
        for (name, n) in &counts.bands {
            pipe.hset(&band, name, *n).ignore();
        }
        for (key, n) in &counts.albums {
            pipe.hset(&album, key, *n).ignore();
        }
        pipe.set(&total, counts.total).ignore();
    }
    for (band, n) in &report.bands {
        pipe.hset(keys::BAND, band, *n).ignore();
    }
    for (album, n) in &report.albums {
        pipe.hset(keys::ALBUM, album, *n).ignore();
    }
    pipe.set(keys::TOTAL, report.total).ignore();
    if let Some(newest) = newest {
        let received = chrono::DateTime::from_timestamp_millis(newest.timestamp_millis()).unwrap_or_default();
        pipe.hset_multiple(
            keys::LAST,
            &[("received_at", bandvote_core::time::format(received)), ("counted_at", bandvote_core::time::now())],
        )
        .ignore();
    }
    for (partition, _, high) in &after {
        if *high > 0 {
            pipe.hset(keys::OFFSETS, format!("{}:{partition}", config.kafka.topic), high - 1).ignore();
        }
    }
    pipe.query_async::<()>(&mut redis).await.context("failed to write the counters")?;
    Ok(report)
}
