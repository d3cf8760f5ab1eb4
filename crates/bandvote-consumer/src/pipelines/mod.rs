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
