//! `bandvote recount`: rebuilds the Redis counters from the MongoDB log, the durable record.
//!
//! The log and the counters must describe the same votes, so the recount takes a consistent cut:
//! it requires the log pipeline to have logged everything in the topic (its committed offsets equal
//! the partitions' ends) before and after reading MongoDB, then writes the counters together with
//! the tally's offsets at that cut, in one transaction. A tally pipeline that resumes afterwards
//! continues from the cut; nothing is counted twice.

use std::{collections::HashMap, time::Duration};

use anyhow::{Context, bail};
use bandvote_queue::KafkaConfig;
use futures::TryStreamExt;
use mongodb::bson::{Document, doc};
use rdkafka::{
    Offset, TopicPartitionList,
    consumer::{BaseConsumer, Consumer},
};

use crate::sinks::{mongodb::MongoLog, redis::keys};

/// Configuration of a recount.
#[derive(Debug, Clone)]
pub struct RecountConfig {
    /// Kafka (to read the cut).
    pub kafka: KafkaConfig,
    /// Redis URL.
    pub redis_url: String,
    /// MongoDB URL.
    pub mongo_url: String,
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

/// What a recount wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecountReport {
    /// Votes counted.
    pub total: u64,
    /// Per band.
    pub bands: HashMap<String, u64>,
    /// Per `<band> / <album>`.
    pub albums: HashMap<String, u64>,
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
    let kafka = config.kafka.clone();
    let group = config.log_group.clone();
    tokio::task::spawn_blocking(move || read_cut(&kafka, &group)).await.context("kafka task failed")?
}

/// Rebuilds the counters. See the module documentation for the consistency rule.
pub async fn recount(config: &RecountConfig) -> anyhow::Result<RecountReport> {
    let before = cut(config).await?;
    let behind: i64 = before.iter().map(|(_, committed, high)| (high - committed).max(0)).sum();
    if behind > 0 && !config.force {
        bail!("the log pipeline is {behind} votes behind the topic; wait until it catches up (or pass --force)");
    }

    let log = MongoLog::connect(&config.mongo_url, &config.mongo_db).await.context("failed to configure mongodb")?;
    let (report, newest, recent) = scan_log(&log, config.idempotency_ttl).await?;

    let after = cut(config).await?;
    let moved = before.iter().zip(&after).any(|(b, a)| b.2 != a.2);
    if moved && !config.force {
        bail!("votes arrived during the recount; pause the producers and run it again");
    }

    let client = redis::Client::open(config.redis_url.as_str()).context("invalid redis url")?;
    let mut redis = client.get_multiplexed_async_connection().await.context("failed to connect to redis")?;
    // Idempotency keys first: a client retry after the recount must still be recognised.
    for chunk in recent.chunks(10_000) {
        let mut pipe = redis::pipe();
        for (id, ttl) in chunk {
            pipe.cmd("SET").arg(format!("{}{id}", keys::SEEN_PREFIX)).arg(1).arg("EX").arg(*ttl).ignore();
        }
        pipe.query_async::<()>(&mut redis).await.context("failed to write idempotency keys")?;
    }
    let mut pipe = redis::pipe();
    pipe.atomic();
    pipe.del(&[keys::BAND, keys::ALBUM, keys::TOTAL, keys::LAST, keys::OFFSETS]).ignore();
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

/// A newest `received_at` and the ids still within the idempotency window (with their remaining
/// seconds), beside the counts.
type Scan = (RecountReport, Option<mongodb::bson::DateTime>, Vec<(String, u64)>);

/// Counts the whole vote log.
pub(crate) async fn scan_log(log: &MongoLog, idempotency_ttl: Duration) -> anyhow::Result<Scan> {
    let projection = doc! {"_id": 1, "data.name": 1, "data.album": 1, "received_at": 1};
    let mut cursor =
        log.collection().find(doc! {}).projection(projection).await.context("failed to read the vote log")?;
    let mut report = RecountReport { total: 0, bands: HashMap::new(), albums: HashMap::new() };
    let mut newest: Option<mongodb::bson::DateTime> = None;
    let ttl_ms = i64::try_from(idempotency_ttl.as_millis()).unwrap_or(i64::MAX);
    let now = mongodb::bson::DateTime::now();
    let mut recent: Vec<(String, u64)> = Vec::new();
    while let Some(document) = cursor.try_next().await.context("failed to read the vote log")? {
        let (Some(id), Some((band, album))) = (document.get_str("_id").ok(), data_of(&document)) else {
            tracing::warn!(?document, "skipping a log document without band or album");
            continue;
        };
        report.total += 1;
        *report.bands.entry(band.to_owned()).or_default() += 1;
        *report.albums.entry(bandvote_core::vote::album_key(band, album)).or_default() += 1;
        if let Ok(received) = document.get_datetime("received_at") {
            newest = newest.max(Some(*received));
            let age = now.timestamp_millis() - received.timestamp_millis();
            if age < ttl_ms {
                recent.push((id.to_owned(), u64::try_from((ttl_ms - age) / 1000).unwrap_or(1).max(1)));
            }
        }
    }
    Ok((report, newest, recent))
}

fn data_of(document: &Document) -> Option<(&str, &str)> {
    let data = document.get_document("data").ok()?;
    Some((data.get_str("name").ok()?, data.get_str("album").ok()?))
}
