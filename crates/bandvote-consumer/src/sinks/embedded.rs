//! `bandvote up`'s embedded database as the counters and the log. The counters store their position
//! in the same transaction as their counts, in the same database as the queue, so the two cannot
//! drift apart and no fingerprint is kept.

use std::sync::Arc;

use bandvote_embedded::{Storage, TallyApplied};
use bandvote_queue::{BoxFuture, CheckError, Vote};

use super::{Applied, Counters, Inserted, PartitionBatch, SinkError, VoteLog};

/// The embedded counters.
#[derive(Clone)]
pub struct EmbeddedCounters(pub Arc<Storage>);

/// The embedded log.
#[derive(Clone)]
pub struct EmbeddedLog(pub Arc<Storage>);

impl Counters for EmbeddedCounters {
    fn store(&self) -> &'static str {
        "embedded"
    }

    fn apply<'a>(
        &'a self,
        batch: &'a PartitionBatch<'a>,
        counted_at: &'a str,
    ) -> BoxFuture<'a, Result<Applied, SinkError>> {
        Box::pin(async move {
            let votes = batch.votes.iter().map(|v| (*v).clone()).collect();
            let (first, last) = (batch.first.max(0) as u64, batch.last.max(0) as u64);
            Ok(match self.0.apply_tally(first, last, votes, counted_at.to_owned()).await? {
                TallyApplied::Counted { counted, duplicates, total, late } => {
                    Applied::Counted { counted, duplicates, total, late }
                }
                TallyApplied::Refused { stored } => {
                    Applied::Refused { stored: (stored > 0).then_some(stored as i64), mark: None }
                }
            })
        })
    }

    fn ping(&self) -> BoxFuture<'_, Result<(), CheckError>> {
        Box::pin(async move { Ok(self.0.ping().await?) })
    }
}

impl VoteLog for EmbeddedLog {
    fn store(&self) -> &'static str {
        "embedded"
    }

    fn prepare(&self) -> BoxFuture<'_, Result<(), SinkError>> {
        Box::pin(async { Ok(()) })
    }

    fn insert<'a>(&'a self, votes: &'a [&'a Vote]) -> BoxFuture<'a, Result<Inserted, SinkError>> {
        Box::pin(async move {
            let messages = votes.iter().map(|v| v.message.clone()).collect();
            let inserted = self.0.log_votes(messages, bandvote_core::time::now()).await?;
            Ok(Inserted { inserted, duplicates: votes.len() as u64 - inserted })
        })
    }

    fn ping(&self) -> BoxFuture<'_, Result<(), CheckError>> {
        Box::pin(async move { Ok(self.0.ping().await?) })
    }
}
