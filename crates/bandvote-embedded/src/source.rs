//! The embedded queue as a [`QueueSource`]: one partition (0) whose offsets are the queue's
//! positions, read by one reader per pipeline whose committed position is stored in the database.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use bandvote_queue::{BoxFuture, CheckError, Payload, QueueSource, Record, SourceError, Vote};
use tokio_util::sync::CancellationToken;

use crate::{Storage, StorageError};

/// The name of the embedded queue in stored positions (`embedded:0` in Redis's `votes:offsets`).
pub const QUEUE_NAME: &str = "embedded";

/// One pipeline's reader of the embedded queue.
pub struct EmbeddedSource {
    storage: Arc<Storage>,
    pipeline: &'static str,
    /// The last position handed out (or sought to, minus one).
    after: AtomicU64,
    batch_max: usize,
    /// The least time from one batch handed out to the next read (see [`Self::with_linger`]).
    linger: Duration,
    /// When the last batch was handed out.
    handed_out: Mutex<Option<Instant>>,
}

impl EmbeddedSource {
    /// A reader for `pipeline` (see [`crate::pipelines`]), starting after its stored position.
    pub async fn open(storage: Arc<Storage>, pipeline: &'static str, batch_max: usize) -> Result<Self, StorageError> {
        let after = storage.position(pipeline).await?;
        Ok(Self {
            storage,
            pipeline,
            after: AtomicU64::new(after),
            batch_max,
            linger: Duration::ZERO,
            handed_out: Mutex::new(None),
        })
    }

    /// Reads at most once per `linger` while votes keep coming, so that under load a batch holds
    /// what arrived meanwhile (one transaction, and one disk sync, for many votes) rather than the
    /// few of one append. A vote after a quiet spell, or a backlog after a full batch, is read at
    /// once.
    pub fn with_linger(mut self, linger: Duration) -> Self {
        self.linger = linger;
        self
    }

    /// How long to wait before the next read: what is left of the linger since the last batch.
    fn wait_before_read(&self) -> Duration {
        let handed_out = *self.handed_out.lock().unwrap_or_else(|e| e.into_inner());
        handed_out.map_or(Duration::ZERO, |at| self.linger.saturating_sub(at.elapsed()))
    }
}

fn embedded(error: StorageError) -> SourceError {
    SourceError::Embedded(error.to_string())
}

impl QueueSource for EmbeddedSource {
    fn name(&self) -> &str {
        QUEUE_NAME
    }

    /// Waits for an append (or polls every 100 ms) when nothing is queued after the position.
    fn next_batch<'a>(&'a self, shutdown: &'a CancellationToken) -> BoxFuture<'a, Option<Vec<Record>>> {
        Box::pin(async move {
            loop {
                let wait = self.wait_before_read();
                if !wait.is_zero() {
                    tokio::select! {
                        () = shutdown.cancelled() => return None,
                        () = tokio::time::sleep(wait) => {}
                    }
                }
                let appended = self.storage.appended().notified();
                tokio::pin!(appended);
                appended.as_mut().enable();
                let after = self.after.load(Ordering::Acquire);
                match self.storage.read_queue(after, self.batch_max).await {
                    Ok(queued) if !queued.is_empty() => {
                        // A seek while reading wins: its position is kept and this batch dropped.
                        let last = queued.last().map_or(after, |q| q.seq);
                        if self.after.compare_exchange(after, last, Ordering::AcqRel, Ordering::Acquire).is_ok() {
                            // A full batch leaves a backlog, which the next read takes at once.
                            let full = queued.len() >= self.batch_max;
                            *self.handed_out.lock().unwrap_or_else(|e| e.into_inner()) = (!full).then(Instant::now);
                            return Some(
                                queued
                                    .into_iter()
                                    .map(|q| Record {
                                        partition: 0,
                                        offset: q.seq as i64,
                                        payload: Payload::Vote(Vote::new(q.message, q.client_key)),
                                    })
                                    .collect(),
                            );
                        }
                        continue;
                    }
                    Ok(_) => {}
                    Err(error) => tracing::warn!(%error, "embedded queue: read failed"),
                }
                tokio::select! {
                    () = shutdown.cancelled() => return None,
                    () = &mut appended => {}
                    () = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
            }
        })
    }

    fn seek(&self, _partition: i32, offset: i64) -> Result<(), SourceError> {
        self.after.store(offset.max(1) as u64 - 1, Ordering::Release);
        Ok(())
    }

    /// Stores the position, unless it is already stored: the embedded counters store theirs in the
    /// transaction that applied the batch, and a second write would cost a disk sync for nothing.
    fn commit<'a>(&'a self, records: &'a [Record]) -> BoxFuture<'a, Result<(), SourceError>> {
        Box::pin(async move {
            match records.iter().map(|r| r.offset as u64).max() {
                Some(last) if !self.storage.stored_at_least(self.pipeline, last) => {
                    self.storage.set_position(self.pipeline, last).await.map_err(embedded)
                }
                _ => Ok(()),
            }
        })
    }

    /// Positions start at 1 and are never reused.
    fn first_offset(&self, _partition: i32) -> BoxFuture<'_, Result<i64, SourceError>> {
        Box::pin(async { Ok(1) })
    }

    fn end_offset(&self, _partition: i32) -> BoxFuture<'_, Result<i64, SourceError>> {
        Box::pin(async move { self.storage.end_position().await.map(|end| end as i64).map_err(embedded) })
    }

    fn lag(&self) -> BoxFuture<'_, Result<i64, SourceError>> {
        Box::pin(async move {
            let end = self.storage.end_position().await.map_err(embedded)?;
            Ok(end.saturating_sub(self.after.load(Ordering::Acquire) + 1) as i64)
        })
    }

    fn check(&self) -> BoxFuture<'_, Result<(), CheckError>> {
        Box::pin(async move { Ok(self.storage.ping().await?) })
    }
}
