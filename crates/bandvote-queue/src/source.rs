//! The reading side of the queue: [`QueueSource`], what a pipeline reads votes through, whatever the
//! queue (Kafka, or `bandvote up`'s embedded queue), and the [`Record`]s it yields.
//!
//! A queue is a set of partitions, each an append-only log whose offsets have no gaps. A source is
//! one reader (one per pipeline): it yields batches in offset order per partition, can be moved
//! back to an offset, and records how far its pipeline got (`commit`, a hint for where a restarted
//! reader begins: the sinks that must count exactly once keep their own position).

use bandvote_core::{TraceContext, VoteMessage};
use tokio_util::sync::CancellationToken;

use crate::BoxFuture;

/// A valid vote read from the queue.
#[derive(Debug, Clone)]
pub struct Vote {
    /// The message.
    pub message: VoteMessage,
    /// Whether the id is a client's idempotency key.
    pub client_key: bool,
    /// `<band> / <album>`.
    pub album_key: String,
    /// The trace context of the request that sent it, when the queue carries one (Kafka headers).
    pub trace: Option<TraceContext>,
}

impl Vote {
    /// A vote read from the queue.
    pub fn new(message: VoteMessage, client_key: bool) -> Self {
        let album_key = bandvote_core::vote::album_key(&message.name, &message.album);
        Self { message, client_key, album_key, trace: None }
    }

    /// The same vote, sent by the request traced by `trace`.
    pub fn with_trace(mut self, trace: Option<TraceContext>) -> Self {
        self.trace = trace;
        self
    }
}

/// What a record carried.
#[derive(Debug, Clone)]
pub enum Payload {
    /// A vote.
    Vote(Vote),
    /// Not a vote: it goes to the dead-letter topic and only advances the offset.
    Invalid {
        /// Why it is not a vote.
        reason: String,
        /// The message key.
        key: Option<Vec<u8>>,
        /// The message value.
        value: Option<Vec<u8>>,
    },
}

/// One record of the queue.
#[derive(Debug, Clone)]
pub struct Record {
    /// Partition (the embedded queue has one, 0).
    pub partition: i32,
    /// Offset in the partition.
    pub offset: i64,
    /// Decoded content.
    pub payload: Payload,
}

impl Record {
    /// The vote, if the record is one.
    pub fn vote(&self) -> Option<&Vote> {
        match &self.payload {
            Payload::Vote(vote) => Some(vote),
            Payload::Invalid { .. } => None,
        }
    }

    /// What identifies this record's content, stored beside a pipeline's position so that a queue
    /// that was reset (a recreated topic, a lost log) is told apart from the one the position was
    /// taken in: a vote's id and the instant it was received.
    pub fn fingerprint(&self) -> String {
        match &self.payload {
            Payload::Vote(vote) => format!("{} {}", vote.message.id, vote.message.received_at),
            Payload::Invalid { key, value, .. } => {
                let length = value.as_ref().map_or(0, Vec::len);
                format!("invalid {} {length}", key.as_deref().map(String::from_utf8_lossy).unwrap_or_default())
            }
        }
    }
}

/// Why a source operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// Kafka answered with an error.
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// The embedded queue's database failed.
    #[error("embedded queue: {0}")]
    Embedded(String),
}

/// A reader of the queue, one per pipeline.
pub trait QueueSource: Send + Sync + 'static {
    /// The queue's name in stored positions (`<name>:<partition>`): the topic, or `embedded`.
    fn name(&self) -> &str;

    /// Waits for the next batch (records in offset order within each partition); `None` once
    /// `shutdown` is cancelled.
    fn next_batch<'a>(&'a self, shutdown: &'a CancellationToken) -> BoxFuture<'a, Option<Vec<Record>>>;

    /// Moves the read position of `partition` to `offset`: the next batch of that partition starts
    /// there, and records already fetched past it are dropped.
    fn seek(&self, partition: i32, offset: i64) -> Result<(), SourceError>;

    /// Records that `records` were written by the pipeline: a restarted reader begins after them
    /// (Kafka: once the source has committed them, within its commit interval; a reader that
    /// begins earlier reads again votes the sinks already hold, and the sinks drop them).
    fn commit<'a>(&'a self, records: &'a [Record]) -> BoxFuture<'a, Result<(), SourceError>>;

    /// The first offset still present in `partition`.
    fn first_offset(&self, partition: i32) -> BoxFuture<'_, Result<i64, SourceError>>;

    /// The offset the next record appended to `partition` will get.
    fn end_offset(&self, partition: i32) -> BoxFuture<'_, Result<i64, SourceError>>;

    /// Records between this reader's position and the end of its partitions.
    fn lag(&self) -> BoxFuture<'_, Result<i64, SourceError>>;

    /// Whether the queue answers, for readiness.
    fn check(&self) -> BoxFuture<'_, Result<(), crate::CheckError>>;
}
