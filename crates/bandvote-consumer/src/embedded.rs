//! The consumer of `bandvote up`'s embedded queue: the same two pipelines (tally and log), reading
//! the SQLite queue instead of Kafka, writing to the embedded counters and log or, piece by piece,
//! to Redis (the same atomic tally script, the queue being one partition) and MongoDB.
//!
//! Positions: the embedded counters and log store theirs in the same transaction as their effect;
//! Redis stores the tally position in `votes:offsets` (`embedded:0`) with its counters; the MongoDB
//! log's position is stored in the embedded database after the (idempotent) insert.

use std::{sync::Arc, time::Duration};

use bandvote_embedded::{Queued, Storage, TallyApplied, pipelines};
use bandvote_runtime::metrics as names;
use tokio_util::sync::CancellationToken;

use crate::{
    sinks::{
        mongodb::MongoLog,
        redis::{Applied, PartitionBatch, RedisTally},
    },
    sources::kafka::Vote,
};

/// The topic name the embedded queue has in Redis's `votes:offsets`.
pub const EMBEDDED_TOPIC: &str = "embedded";

/// Where the counters go.
#[derive(Clone)]
pub enum CounterSink {
    /// The embedded database.
    Embedded,
    /// Redis (the contract's keys).
    Redis(RedisTally),
}

/// Where the log goes.
#[derive(Clone)]
pub enum LogSink {
    /// The embedded database.
    Embedded,
    /// MongoDB (the contract's `logs` collection).
    Mongo(MongoLog),
}

/// The embedded queue's consumer.
pub struct EmbeddedConsumer {
    storage: Arc<Storage>,
    counters: CounterSink,
    log: LogSink,
    batch_max: usize,
}

impl EmbeddedConsumer {
    /// A consumer of `storage`'s queue writing to `counters` and `log`.
    pub fn new(storage: Arc<Storage>, counters: CounterSink, log: LogSink) -> Self {
        bandvote_runtime::metrics::announce_consumer();
        Self { storage, counters, log, batch_max: 5000 }
    }

    /// Runs both pipelines (and the pruning of what both applied) until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let prune = matches!((&self.counters, &self.log), (CounterSink::Embedded, LogSink::Embedded));
        let tally =
            tokio::spawn(tally_loop(Arc::clone(&self.storage), self.counters, self.batch_max, shutdown.clone()));
        let log = tokio::spawn(log_loop(Arc::clone(&self.storage), self.log, self.batch_max, shutdown.clone()));
        let pruning = prune.then(|| tokio::spawn(prune_loop(Arc::clone(&self.storage), shutdown.clone())));
        let (tally, log) = tokio::join!(tally, log);
        if let Some(pruning) = pruning {
            pruning.abort();
        }
        tally?;
        log?;
        Ok(())
    }
}

/// The next votes after `after`: waits for an append (or polls every 100 ms); `None` on shutdown.
async fn next_batch(
    storage: &Arc<Storage>,
    after: u64,
    max: usize,
    shutdown: &CancellationToken,
) -> Option<Vec<Queued>> {
    loop {
        let appended = storage.appended().notified();
        tokio::pin!(appended);
        appended.as_mut().enable();
        match storage.read_queue(after, max).await {
            Ok(batch) if !batch.is_empty() => return Some(batch),
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "embedded queue: read failed"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return None,
            () = &mut appended => {}
            () = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
}

fn record(pipeline: &'static str, counted: u64, duplicates: u64, batch: &[Queued], counted_at: &str) {
    metrics::counter!(names::CONSUMER_VOTES, "pipeline" => pipeline).increment(counted);
    metrics::counter!(names::CONSUMER_BATCHES, "pipeline" => pipeline).increment(1);
    if duplicates > 0 {
        metrics::counter!(names::CONSUMER_DUPLICATES, "pipeline" => pipeline, "reason" => "idempotency_key")
            .increment(duplicates);
    }
    if pipeline == pipelines::TALLY
        && let (Some(last), Some(counted_at)) = (batch.last(), bandvote_core::time::parse(counted_at))
        && let Some(received) = bandvote_core::time::parse(&last.message.received_at)
    {
        let freshness = (counted_at - received).num_milliseconds().max(0) as f64 / 1000.0;
        metrics::gauge!(names::CONSUMER_FRESHNESS).set(freshness);
    }
}

fn sink_error(pipeline: &'static str, error: &dyn std::fmt::Display) {
    metrics::counter!(names::CONSUMER_SINK_ERRORS, "pipeline" => pipeline).increment(1);
    tracing::warn!(%error, pipeline, "embedded consumer: sink failed, retrying");
}

fn as_votes(batch: &[Queued]) -> Vec<Vote> {
    batch
        .iter()
        .map(|q| Vote {
            album_key: bandvote_core::vote::album_key(&q.message.name, &q.message.album),
            message: q.message.clone(),
            client_key: q.client_key,
        })
        .collect()
}

async fn tally_loop(storage: Arc<Storage>, sink: CounterSink, max: usize, shutdown: CancellationToken) {
    // The embedded position; for Redis a hint that Redis's own offset corrects on the first batch.
    let mut after = storage.position(pipelines::TALLY).await.unwrap_or(0);
    while let Some(batch) = next_batch(&storage, after, max, &shutdown).await {
        let counted_at = bandvote_core::time::now();
        let last = batch.last().map_or(after, |q| q.seq);
        match &sink {
            CounterSink::Embedded => match storage.apply_tally(batch.clone(), counted_at.clone()).await {
                Ok(TallyApplied::Counted { counted, duplicates, .. }) => {
                    record(pipelines::TALLY, counted, duplicates, &batch, &counted_at);
                    after = last;
                }
                Ok(TallyApplied::Refused { stored }) => after = stored,
                Err(error) => {
                    sink_error(pipelines::TALLY, &error);
                    backoff(&shutdown).await;
                }
            },
            CounterSink::Redis(redis) => {
                let votes = as_votes(&batch);
                let partition = PartitionBatch {
                    topic: EMBEDDED_TOPIC,
                    partition: 0,
                    first: batch[0].seq as i64,
                    last: last as i64,
                    partition_start: 1,
                    votes: votes.iter().collect(),
                };
                match redis.apply(&partition, &counted_at).await {
                    Ok(Applied::Counted { counted, duplicates, .. }) => {
                        record(pipelines::TALLY, counted, duplicates, &batch, &counted_at);
                        after = last;
                        let _ = storage.set_position(pipelines::TALLY, last).await;
                    }
                    Ok(Applied::Refused { stored }) => after = stored.map_or(0, |s| s.max(0) as u64),
                    Err(error) => {
                        sink_error(pipelines::TALLY, &error);
                        backoff(&shutdown).await;
                    }
                }
            }
        }
    }
}

async fn log_loop(storage: Arc<Storage>, sink: LogSink, max: usize, shutdown: CancellationToken) {
    let mut after = storage.position(pipelines::LOG).await.unwrap_or(0);
    while let Some(batch) = next_batch(&storage, after, max, &shutdown).await {
        let counted_at = bandvote_core::time::now();
        let last = batch.last().map_or(after, |q| q.seq);
        let inserted = match &sink {
            LogSink::Embedded => storage.apply_log(batch.clone(), counted_at.clone()).await.map_err(|e| e.to_string()),
            LogSink::Mongo(mongo) => {
                let votes = as_votes(&batch);
                let refs: Vec<&Vote> = votes.iter().collect();
                match mongo.insert(&refs).await {
                    // The insert is idempotent: the position is stored after it.
                    Ok(inserted) => storage
                        .set_position(pipelines::LOG, last)
                        .await
                        .map(|()| inserted.inserted)
                        .map_err(|e| e.to_string()),
                    Err(error) => Err(format!("mongodb: {error}")),
                }
            }
        };
        match inserted {
            Ok(inserted) => {
                let replays = batch.len() as u64 - inserted.min(batch.len() as u64);
                record(pipelines::LOG, inserted, replays, &batch, &counted_at);
                after = last;
            }
            Err(error) => {
                sink_error(pipelines::LOG, &error);
                backoff(&shutdown).await;
            }
        }
    }
}

/// Every minute: drop queue entries both pipelines applied, and expired idempotency keys.
async fn prune_loop(storage: Arc<Storage>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let (tally, log) = (storage.position(pipelines::TALLY).await, storage.position(pipelines::LOG).await);
        if let (Ok(tally), Ok(log)) = (tally, log) {
            let now = chrono::Utc::now().timestamp_millis();
            if let Err(error) = storage.prune(tally.min(log), now).await {
                tracing::warn!(%error, "embedded storage: pruning failed");
            }
        }
    }
}

async fn backoff(shutdown: &CancellationToken) {
    tokio::select! {
        () = shutdown.cancelled() => {}
        () = tokio::time::sleep(Duration::from_millis(500)) => {}
    }
}
