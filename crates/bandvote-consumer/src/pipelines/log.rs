//! The log pipeline (group `bandvote-log`): the queue → one log entry per vote (MongoDB, or the
//! embedded database), whatever the queue.
//!
//! An unordered insert keyed by vote id, then the source's commit: a crash between the two replays
//! the batch, and the replayed entries are duplicate keys, ignored.

use std::{sync::Arc, time::Duration};

use bandvote_queue::{QueueSource, Record};
use bandvote_runtime::metrics as names;
use tokio_util::sync::CancellationToken;

use super::backoff;
use crate::sinks::VoteLog;

/// The pipeline's parts.
pub struct LogPipeline {
    /// Source.
    pub source: Arc<dyn QueueSource>,
    /// Sink.
    pub log: Arc<dyn VoteLog>,
}

impl LogPipeline {
    /// Runs until `shutdown`; a batch is committed only after it is written.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        if let Err(error) = self.log.prepare().await {
            tracing::warn!(%error, "log: could not create the received_at index yet");
        }
        while let Some(batch) = self.source.next_batch(&shutdown).await {
            let votes: Vec<_> = batch.iter().filter_map(Record::vote).collect();
            let mut delay = Duration::from_millis(100);
            loop {
                let started = std::time::Instant::now();
                match self.log.insert(&votes).await {
                    Ok(inserted) => {
                        super::trace_votes("log", votes.iter().copied());
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
                        tracing::warn!(%error, "log: write failed, retrying the batch");
                        if !backoff(&mut delay, Duration::from_secs(5), &shutdown).await {
                            // Not committed: the batch is read again after restart.
                            return Ok(());
                        }
                    }
                }
            }
            if let Err(error) = self.source.commit(&batch).await {
                tracing::warn!(%error, "log: commit failed; the batch may be replayed (duplicates are ignored)");
            }
        }
        Ok(())
    }
}
