//! The log pipeline (group `bandvote-log`): Kafka → one MongoDB document per vote.
//!
//! Unordered `insert_many` with `_id` = vote id, then the Kafka commit: a crash between the two
//! replays the batch, and the replayed documents are duplicate keys, ignored.

use std::{sync::Arc, time::Duration};

use bandvote_runtime::metrics as names;
use tokio_util::sync::CancellationToken;

use super::backoff;
use crate::{
    sinks::mongodb::MongoLog,
    sources::kafka::{KafkaSource, Record},
};

/// The pipeline's parts.
pub struct LogPipeline {
    /// Source.
    pub source: Arc<KafkaSource>,
    /// Sink.
    pub log: MongoLog,
}

impl LogPipeline {
    /// Runs until `shutdown`; a batch is committed only after it is written.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        if let Err(error) = self.log.ensure_indexes().await {
            tracing::warn!(%error, "log: could not create the received_at index yet");
        }
        while let Some(batch) = self.source.next_batch(&shutdown).await {
            let votes: Vec<_> = batch.iter().filter_map(Record::vote).collect();
            let mut delay = Duration::from_millis(100);
            loop {
                let started = std::time::Instant::now();
                match self.log.insert(&votes).await {
                    Ok(inserted) => {
                        metrics::counter!(names::CONSUMER_VOTES, "pipeline" => "log").increment(inserted.inserted);
                        metrics::counter!(names::CONSUMER_BATCHES, "pipeline" => "log").increment(1);
                        metrics::histogram!(names::CONSUMER_BATCH_DURATION, "pipeline" => "log")
                            .record(started.elapsed().as_secs_f64());
                        if inserted.duplicates > 0 {
                            metrics::counter!(names::CONSUMER_DUPLICATES, "pipeline" => "log", "reason" => "duplicate_id")
                                .increment(inserted.duplicates);
                        }
                        break;
                    }
                    Err(error) => {
                        metrics::counter!(names::CONSUMER_SINK_ERRORS, "pipeline" => "log").increment(1);
                        tracing::warn!(%error, "log: mongodb write failed, retrying the batch");
                        if !backoff(&mut delay, Duration::from_secs(5), &shutdown).await {
                            // Not committed: the batch is read again after restart.
                            return Ok(());
                        }
                    }
                }
            }
            if let Err(error) = self.source.commit(&batch) {
                tracing::warn!(%error, "log: kafka commit failed; the batch may be replayed (duplicates are ignored)");
            }
        }
        Ok(())
    }
}
