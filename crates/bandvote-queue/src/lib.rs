//! The vote queue of bandvote.
//! - [`VoteQueue`]: the seam the producers write through (answer `202` only once it returns `Ok`);
//! - [`kafka`]: Apache Kafka behind that seam: an idempotent producer (`acks=all`), topic
//!   administration through the admin API, and the client settings shared with the consumers.

use std::{future::Future, pin::Pin};

use bandvote_core::VoteMessage;

pub mod kafka;

pub use kafka::{KafkaConfig, KafkaProducer};

/// A boxed future, for the object-safe [`VoteQueue`].
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why a vote could not be queued.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The queue did not acknowledge the vote in time (broker down, partition leaderless): the client
    /// should retry, with the same id.
    #[error("queue unavailable: {0}")]
    Unavailable(String),
    /// The queue refused the message for good (too large, not authorised).
    #[error("queue refused the message: {0}")]
    Refused(String),
}

/// Where accepted votes go. An implementation returns `Ok` only once the vote is durable.
pub trait VoteQueue: Send + Sync + 'static {
    /// Queues one vote, keyed by its id; `client_key` marks ids that are a client's idempotency key.
    fn enqueue<'a>(&'a self, message: &'a VoteMessage, client_key: bool) -> BoxFuture<'a, Result<(), QueueError>>;

    /// Whether the queue answers right now (for `/readyz`).
    fn check(&self) -> BoxFuture<'_, Result<(), String>>;

    /// Waits, up to the queue's own timeout, for everything queued to be acknowledged.
    fn flush(&self) -> BoxFuture<'_, ()>;
}
