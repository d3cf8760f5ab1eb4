//! The consumer's two independent pipelines, each its own consumer group, so that the live counters
//! never wait for the log store.

pub mod log;
pub mod tally;

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Sleeps for `delay` (doubling it up to `max` for the next call) unless shutdown comes first;
/// returns `false` on shutdown.
pub(crate) async fn backoff(delay: &mut Duration, max: Duration, shutdown: &CancellationToken) -> bool {
    let wait = *delay;
    *delay = (*delay * 2).min(max);
    tokio::select! {
        () = shutdown.cancelled() => false,
        () = tokio::time::sleep(wait) => true,
    }
}

/// One DEBUG line per vote of a written batch, with its vote id and the trace id of the request
/// that sent it (when the queue carried one): how a vote is followed from its request to its count.
/// Nothing is done at all unless DEBUG is enabled for the pipelines.
pub(crate) fn trace_votes<'a>(pipeline: &'static str, votes: impl IntoIterator<Item = &'a bandvote_queue::Vote>) {
    if !tracing::enabled!(tracing::Level::DEBUG) {
        return;
    }
    for vote in votes {
        tracing::debug!(
            pipeline,
            vote_id = %vote.message.id,
            trace_id = vote.trace.map(|trace| tracing::field::display(trace.trace_id())),
            "vote written"
        );
    }
}
