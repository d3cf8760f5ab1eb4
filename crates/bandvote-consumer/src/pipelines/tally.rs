//! The tally pipeline (group `bandvote-tally`): the queue → the live counters, exactly once,
//! whatever the queue (Kafka, the embedded queue) and the counters (Redis, the embedded database).
//!
//! Each partition batch is applied in one atomic step that also stores the batch's last offset, and
//! only if the batch continues the stored offset. The counters, not the queue, hold the tally's
//! position:
//! - a batch that overlaps what is stored (a replay after a crash or rebalance) is trimmed to its
//!   new part, once the record at the stored offset is shown to be the one counted there;
//! - a batch that starts after the stored offset (Redis lost its last second, or the group's commit
//!   ran ahead) is dropped and the partition is re-read from the stored offset + 1;
//! - a queue that was reset under the stored offset (a recreated topic, a lost log: the partition
//!   ends before it, or holds another record there) is counted again from its start, with an error
//!   in the log and [`names::CONSUMER_QUEUE_RESETS`]: never skipped silently.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
    time::Duration,
};

use bandvote_queue::{QueueSource, Record};
use bandvote_runtime::metrics as names;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use super::backoff;
use crate::{
    dead_letter::DeadLetters,
    sinks::{Applied, Counters, PartitionBatch},
};

/// The pipeline's parts.
pub struct TallyPipeline {
    /// Source.
    pub source: Arc<dyn QueueSource>,
    /// Sink.
    pub counters: Arc<dyn Counters>,
    /// Where records that are not votes go (the embedded queue holds only votes).
    pub dead_letters: Option<DeadLetters>,
}

/// What happened to one partition's records.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// Applied or already applied: its position may be committed.
    Done,
    /// Dropped and re-read from another offset.
    Rewound,
    /// Shutdown came first.
    Stopped,
}

/// Whether the records read are the ones the stored offset was taken in.
#[derive(Debug, PartialEq, Eq)]
enum Identity {
    /// The record at the stored offset is the one counted there (or nothing is known to compare).
    Same,
    /// The record at the stored offset is another one: the queue was reset.
    Reset,
    /// The record at the stored offset is not among these records.
    Unknown,
}

/// Compares the record at `stored` among `records` with the fingerprint stored with it.
fn identity(records: &[&Record], stored: i64, mark: Option<&str>) -> Identity {
    match (records.iter().find(|r| r.offset == stored), mark) {
        (None, _) => Identity::Unknown,
        (Some(_), None) => Identity::Same,
        (Some(record), Some(mark)) if record.fingerprint() == mark => Identity::Same,
        (Some(_), Some(_)) => Identity::Reset,
    }
}

/// Per partition: its first offset (cached) and a stale stored offset to forget after a reset.
#[derive(Default)]
struct Partitions {
    starts: HashMap<i32, i64>,
    resets: HashMap<i32, i64>,
}

impl TallyPipeline {
    /// Runs until `shutdown`; the batch in hand is finished first.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let state = Mutex::new(Partitions::default());
        while let Some(batch) = self.source.next_batch(&shutdown).await {
            if let Some(dead_letters) = &self.dead_letters
                && !dead_letters.send_all(&batch, &shutdown).await
            {
                break;
            }
            let mut partitions: BTreeMap<i32, Vec<&Record>> = BTreeMap::new();
            for record in &batch {
                partitions.entry(record.partition).or_default().push(record);
            }
            let outcomes = futures::future::join_all(
                partitions
                    .into_iter()
                    .map(|(partition, records)| self.apply_partition(partition, records, &state, &shutdown)),
            )
            .await;
            let done: Vec<i32> = outcomes.iter().filter(|(_, o)| *o == Outcome::Done).map(|(p, _)| *p).collect();
            // The source's committed position is only a hint for where a restarted reader begins:
            // the counters hold the tally's real position, checked by every batch.
            let committable: Vec<Record> = batch.iter().filter(|r| done.contains(&r.partition)).cloned().collect();
            if let Err(error) = self.source.commit(&committable).await {
                tracing::debug!(%error, "tally: commit failed (the position is kept with the counters)");
            }
            if outcomes.iter().any(|(_, o)| *o == Outcome::Stopped) {
                break;
            }
        }
        Ok(())
    }

    async fn apply_partition(
        &self,
        partition: i32,
        mut records: Vec<&Record>,
        state: &Mutex<Partitions>,
        shutdown: &CancellationToken,
    ) -> (i32, Outcome) {
        let mut delay = Duration::from_millis(100);
        let mut start_checked = false;
        loop {
            let (Some(first), Some(last)) = (records.first(), records.last()) else {
                return (partition, Outcome::Done);
            };
            let partition_start = match self.partition_start(partition, state, false).await {
                Some(start) => start,
                None if backoff(&mut delay, Duration::from_secs(5), shutdown).await => continue,
                None => return (partition, Outcome::Stopped),
            };
            let batch = PartitionBatch {
                queue: self.source.name(),
                partition,
                first: first.offset,
                last: last.offset,
                partition_start,
                mark: last.fingerprint(),
                reset_from: state.lock().await.resets.get(&partition).copied(),
                votes: records.iter().filter_map(|r| r.vote()).collect(),
            };
            let started = std::time::Instant::now();
            match self.counters.apply(&batch, &bandvote_core::time::now()).await {
                Ok(Applied::Counted { counted, duplicates, late, .. }) => {
                    super::trace_votes("tally", batch.votes.iter().copied());
                    metrics::counter!(names::CONSUMER_VOTES, "pipeline" => "tally").increment(counted);
                    metrics::counter!(names::CONSUMER_BATCHES, "pipeline" => "tally").increment(1);
                    metrics::histogram!(names::CONSUMER_BATCH_DURATION, "pipeline" => "tally")
                        .record(started.elapsed().as_secs_f64());
                    if duplicates > 0 {
                        metrics::counter!(names::CONSUMER_DUPLICATES, "pipeline" => "tally", "reason" => "idempotency_key")
                            .increment(duplicates);
                    }
                    if late > 0 {
                        tracing::warn!(late, "tally: votes for a final round set aside, not counted");
                        metrics::counter!(names::CONSUMER_LATE).increment(late);
                    }
                    if batch.reset_from.is_some() {
                        state.lock().await.resets.remove(&partition);
                    }
                    record_freshness(&batch);
                    return (partition, Outcome::Done);
                }
                Ok(Applied::Refused { stored: Some(stored), mark }) if stored >= batch.first => {
                    // The batch overlaps what is counted: trim it, once its records are shown to be
                    // the ones counted (a reset queue reuses the offsets with other records).
                    let identity = match identity(&records, stored, mark.as_deref()) {
                        Identity::Unknown => match self.source.end_offset(partition).await {
                            Ok(end) if stored >= end => Identity::Reset,
                            Ok(_) if mark.is_some() => Identity::Unknown,
                            Ok(_) => Identity::Same,
                            Err(error) => {
                                tracing::warn!(partition, %error, "tally: could not read the partition's end");
                                if !backoff(&mut delay, Duration::from_secs(5), shutdown).await {
                                    return (partition, Outcome::Stopped);
                                }
                                continue;
                            }
                        },
                        known => known,
                    };
                    match identity {
                        Identity::Same => {
                            let before = records.len();
                            records.retain(|r| r.offset > stored);
                            metrics::counter!(names::CONSUMER_DUPLICATES, "pipeline" => "tally", "reason" => "offset")
                                .increment((before - records.len()) as u64);
                            continue;
                        }
                        // Read the record at the stored offset, to compare it.
                        Identity::Unknown => return (partition, self.seek(partition, stored)),
                        Identity::Reset => {
                            tracing::error!(
                                partition,
                                queue = self.source.name(),
                                stored,
                                "tally: the queue was reset under the stored offset (a recreated topic or a lost \
                                 log); counting the partition again from its start"
                            );
                            metrics::counter!(names::CONSUMER_QUEUE_RESETS, "pipeline" => "tally").increment(1);
                            state.lock().await.resets.insert(partition, stored);
                            let Some(start) = self.partition_start(partition, state, true).await else { continue };
                            if batch.first != start {
                                return (partition, self.seek(partition, start));
                            }
                        }
                    }
                }
                Ok(Applied::Refused { stored, .. }) => {
                    metrics::counter!(names::CONSUMER_REFUSALS).increment(1);
                    if stored.is_none() && partition_start > batch.first {
                        // The partition's start moved past records still in hand (retention).
                        records.retain(|r| r.offset >= partition_start);
                        continue;
                    }
                    if stored.is_none() && !start_checked {
                        // The partition's start may have moved (retention): look again once.
                        start_checked = true;
                        self.partition_start(partition, state, true).await;
                        continue;
                    }
                    let expected = stored.map_or(partition_start, |s| s + 1);
                    tracing::info!(
                        partition,
                        from = expected,
                        batch_first = batch.first,
                        "tally: re-reading partition from the stored offset"
                    );
                    return (partition, self.seek(partition, expected));
                }
                Err(error) => {
                    metrics::counter!(names::CONSUMER_SINK_ERRORS, "pipeline" => "tally").increment(1);
                    tracing::warn!(partition, %error, "tally: counters write failed, retrying the batch");
                    if !backoff(&mut delay, Duration::from_secs(5), shutdown).await {
                        return (partition, Outcome::Stopped);
                    }
                }
            }
        }
    }

    fn seek(&self, partition: i32, offset: i64) -> Outcome {
        if let Err(error) = self.source.seek(partition, offset) {
            tracing::warn!(partition, %error, "tally: seek failed (partition revoked?)");
        }
        Outcome::Rewound
    }

    async fn partition_start(&self, partition: i32, state: &Mutex<Partitions>, refresh: bool) -> Option<i64> {
        if !refresh && let Some(start) = state.lock().await.starts.get(&partition) {
            return Some(*start);
        }
        match self.source.first_offset(partition).await {
            Ok(start) => {
                state.lock().await.starts.insert(partition, start);
                Some(start)
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

#[cfg(test)]
mod tests {
    use bandvote_core::{IngestPath, VoteId, VoteMessage};
    use bandvote_queue::{Payload, Vote};

    use super::*;

    fn record(offset: i64, id: &str) -> Record {
        let vote = bandvote_core::Vote::from_strings("A", "x", "1997", "9.5").expect("a valid vote");
        let id = VoteId::from_client_key(id).expect("a valid key");
        let message =
            VoteMessage::new(&id, vote, IngestPath::Grpc, "2026-11-26T16:04:05.123Z".into(), "default".into());
        Record { partition: 0, offset, payload: Payload::Vote(Vote::new(message, false)) }
    }

    #[test]
    fn the_record_at_the_stored_offset_decides_whether_the_queue_was_reset() {
        let records = [record(3, "a"), record(4, "b"), record(5, "c")];
        let refs: Vec<&Record> = records.iter().collect();
        let mark = records[1].fingerprint();
        assert_eq!(identity(&refs, 4, Some(&mark)), Identity::Same);
        assert_eq!(identity(&refs, 4, Some(&records[2].fingerprint())), Identity::Reset);
        assert_eq!(identity(&refs, 9, Some(&mark)), Identity::Unknown);
        // Counters that keep no fingerprint trust the offset.
        assert_eq!(identity(&refs, 4, None), Identity::Same);
    }
}
