//! The tally pipeline (group `bandvote-tally`): Kafka → Redis counters, exactly once.
//!
//! Each partition batch is applied by one Lua script that also stores the batch's last offset, and
//! only if the batch continues the stored offset. Redis, not Kafka, holds the tally's position:
//! - a batch that overlaps what is stored (a replay after a crash or rebalance) is trimmed to its
//!   new part;
//! - a batch that starts after the stored offset (Redis lost its last second, or the group's Kafka
//!   commit ran ahead) is dropped and the partition is re-read from the stored offset + 1.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
    time::Duration,
};

use bandvote_runtime::metrics as names;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use super::backoff;
use crate::{
    dead_letter::DeadLetters,
    sinks::redis::{Applied, PartitionBatch, RedisTally},
    sources::kafka::{KafkaSource, Record},
};

/// The pipeline's parts.
pub struct TallyPipeline {
    /// Source.
    pub source: Arc<KafkaSource>,
    /// Sink.
    pub tally: RedisTally,
    /// Where non-votes go.
    pub dead_letters: DeadLetters,
}

/// What happened to one partition's records.
enum Outcome {
    /// Applied or already applied: its position may be committed.
    Done,
    /// Dropped and re-read from an earlier offset.
    Rewound,
    /// Shutdown came first.
    Stopped,
}

impl TallyPipeline {
    /// Runs until `shutdown`; the batch in hand is finished first.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let starts = Mutex::new(HashMap::new());
        while let Some(batch) = self.source.next_batch(&shutdown).await {
            if !self.dead_letters.send_all(&batch, &shutdown).await {
                break;
            }
            let mut partitions: BTreeMap<i32, Vec<&Record>> = BTreeMap::new();
            for record in &batch {
                partitions.entry(record.partition).or_default().push(record);
            }
            let outcomes = futures::future::join_all(
                partitions
                    .into_iter()
                    .map(|(partition, records)| self.apply_partition(partition, records, &starts, &shutdown)),
            )
            .await;
            let done: Vec<i32> = outcomes.iter().filter(|(_, o)| matches!(o, Outcome::Done)).map(|(p, _)| *p).collect();
            // Kafka's committed offsets are only a hint for where a restarted member begins: Redis
            // holds the tally's real position, checked by every batch.
            let committable: Vec<Record> = batch.iter().filter(|r| done.contains(&r.partition)).cloned().collect();
            if let Err(error) = self.source.commit(&committable) {
                tracing::debug!(%error, "tally: kafka commit failed (position is kept in redis)");
            }
            if outcomes.iter().any(|(_, o)| matches!(o, Outcome::Stopped)) {
                break;
            }
        }
        Ok(())
    }

    async fn apply_partition(
        &self,
        partition: i32,
        mut records: Vec<&Record>,
        starts: &Mutex<HashMap<i32, i64>>,
        shutdown: &CancellationToken,
    ) -> (i32, Outcome) {
        let mut delay = Duration::from_millis(100);
        let mut start_checked = false;
        loop {
            let (Some(first), Some(last)) = (records.first(), records.last()) else {
                return (partition, Outcome::Done);
            };
            let partition_start = match self.partition_start(partition, starts, false).await {
                Some(start) => start,
                None if backoff(&mut delay, Duration::from_secs(5), shutdown).await => continue,
                None => return (partition, Outcome::Stopped),
            };
            let batch = PartitionBatch {
                topic: self.source.topic(),
                partition,
                first: first.offset,
                last: last.offset,
                partition_start,
                votes: records.iter().filter_map(|r| r.vote()).collect(),
            };
            let started = std::time::Instant::now();
            match self.tally.apply(&batch, &bandvote_core::time::now()).await {
                Ok(Applied::Counted { counted, duplicates, .. }) => {
                    metrics::counter!(names::CONSUMER_VOTES, "pipeline" => "tally").increment(counted);
                    metrics::counter!(names::CONSUMER_BATCHES, "pipeline" => "tally").increment(1);
                    metrics::histogram!(names::CONSUMER_BATCH_DURATION, "pipeline" => "tally")
                        .record(started.elapsed().as_secs_f64());
                    if duplicates > 0 {
                        metrics::counter!(names::CONSUMER_DUPLICATES, "pipeline" => "tally", "reason" => "idempotency_key")
                            .increment(duplicates);
                    }
                    record_freshness(&batch);
                    return (partition, Outcome::Done);
                }
                Ok(Applied::Refused { stored }) => {
                    metrics::counter!(names::CONSUMER_REFUSALS).increment(1);
                    let expected = stored.map_or(partition_start, |s| s + 1);
                    if expected > batch.first {
                        let before = records.len();
                        records.retain(|r| r.offset >= expected);
                        metrics::counter!(names::CONSUMER_DUPLICATES, "pipeline" => "tally", "reason" => "offset")
                            .increment((before - records.len()) as u64);
                        continue;
                    }
                    if stored.is_none() && !start_checked {
                        // The partition's start may have moved (retention): look again once.
                        start_checked = true;
                        self.partition_start(partition, starts, true).await;
                        continue;
                    }
                    tracing::info!(
                        partition,
                        from = expected,
                        batch_first = batch.first,
                        "tally: re-reading partition from the stored offset"
                    );
                    if let Err(error) = self.source.seek(partition, expected) {
                        tracing::warn!(partition, %error, "tally: seek failed (partition revoked?)");
                    }
                    return (partition, Outcome::Rewound);
                }
                Err(error) => {
                    metrics::counter!(names::CONSUMER_SINK_ERRORS, "pipeline" => "tally").increment(1);
                    tracing::warn!(partition, %error, "tally: redis write failed, retrying the batch");
                    if !backoff(&mut delay, Duration::from_secs(5), shutdown).await {
                        return (partition, Outcome::Stopped);
                    }
                }
            }
        }
    }

    async fn partition_start(&self, partition: i32, starts: &Mutex<HashMap<i32, i64>>, refresh: bool) -> Option<i64> {
        if !refresh && let Some(start) = starts.lock().await.get(&partition) {
            return Some(*start);
        }
        match self.source.low_watermark(partition).await {
            Ok(low) => {
                starts.lock().await.insert(partition, low);
                Some(low)
            }
            Err(error) => {
                tracing::warn!(partition, %error, "tally: could not read the partition's first offset");
                None
            }
        }
    }
}

fn record_freshness(batch: &PartitionBatch<'_>) {
    let newest = batch.votes.iter().map(|v| v.message.received_at.as_str()).max();
    if let Some(at) = newest.and_then(bandvote_core::time::parse) {
        let lag = chrono::Utc::now().signed_duration_since(at).num_milliseconds().max(0);
        metrics::gauge!(names::CONSUMER_FRESHNESS).set(lag as f64 / 1000.0);
    }
}
