//! The vote queue of bandvote, both ways.
//! - [`VoteQueue`]: the seam the producers write through (answer `202` only once it returns `Ok`);
//! - [`source::QueueSource`]: the seam the pipelines read through (batches, seek, commit), with
//!   the [`Record`]s it yields;
//! - [`kafka`]: Apache Kafka behind both seams: an idempotent producer (`acks=all`), consumer-group
//!   members ([`kafka::KafkaSource`]), topic administration through the admin API, and the client
//!   settings they share. `bandvote-embedded` implements both seams over SQLite.

use std::{future::Future, pin::Pin};

use bandvote_core::{TraceContext, VoteMessage};

pub mod kafka;
pub mod source;

pub use kafka::{KafkaConfig, KafkaProducer, KafkaSource, SourceConfig, TopicError};
pub use source::{Payload, QueueSource, Record, SourceError, Vote};

/// A boxed future, for the object-safe [`VoteQueue`].
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

pub use bandvote_runtime::health::CheckError;

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

    /// As [`Self::enqueue`], for the request traced by `trace`: a queue that can carry the trace
    /// context beside the message (Kafka, in a `traceparent` header) does; others ignore it.
    fn enqueue_traced<'a>(
        &'a self,
        message: &'a VoteMessage,
        client_key: bool,
        trace: TraceContext,
    ) -> BoxFuture<'a, Result<(), QueueError>> {
        let _ = trace;
        self.enqueue(message, client_key)
    }

    /// Whether the queue answers right now (for `/readyz`).
    fn check(&self) -> BoxFuture<'_, Result<(), CheckError>>;

    /// Waits, up to the queue's own timeout, for everything queued to be acknowledged.
    fn flush(&self) -> BoxFuture<'_, ()>;
}
