//! Where the pipelines write, whatever the queue they read: the live counters ([`Counters`]: Redis,
//! or `bandvote up`'s embedded database) and the vote log ([`VoteLog`]: MongoDB, or the embedded
//! database). The counters keep their own position per partition, checked and stored in the same
//! atomic step as the counts; the log is idempotent by vote id.

pub mod embedded;
pub mod mongodb;
pub mod redis;

use bandvote_queue::{BoxFuture, CheckError, Vote};

/// A run of consecutive records of one partition, ready to be applied to the counters.
#[derive(Debug)]
pub struct PartitionBatch<'a> {
    /// The queue's name (the topic, or `embedded`).
    pub queue: &'a str,
    /// Partition number.
    pub partition: i32,
    /// Offset of the first record.
    pub first: i64,
    /// Offset of the last record.
    pub last: i64,
    /// The first offset of the partition, expected when no offset is stored.
    pub partition_start: i64,
    /// The last record's fingerprint, stored beside its offset (see [`bandvote_queue::Record::fingerprint`]).
    pub mark: String,
    /// A stored offset that belongs to a queue since reset: if it is still the stored one, it is
    /// forgotten and the batch must start at the partition's start.
    pub reset_from: Option<i64>,
    /// The valid votes among the records (invalid ones only advance the offset).
    pub votes: Vec<&'a Vote>,
}

/// What the counters did with a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// Applied: votes counted, votes skipped as retries of a known key, the new total, and votes
    /// set aside because their round is sealed.
    Counted {
        /// Votes counted.
        counted: u64,
        /// Votes skipped because their idempotency key was already counted.
        duplicates: u64,
        /// The total afterwards.
        total: u64,
        /// Votes for a sealed (final) round, set aside and counted nowhere.
        late: u64,
    },
    /// Refused: the batch does not continue the stored offset.
    Refused {
        /// The stored offset (`None`: nothing stored).
        stored: Option<i64>,
        /// The fingerprint stored with it, where the counters keep one.
        mark: Option<String>,
    },
}

/// What a log insert did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inserted {
    /// New entries.
    pub inserted: u64,
    /// Votes already logged (replays).
    pub duplicates: u64,
}

/// Why a sink could not write.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// Redis.
    #[error("redis: {0}")]
    Redis(#[from] ::redis::RedisError),
    /// MongoDB.
    #[error("mongodb: {0}")]
    Mongo(#[from] ::mongodb::error::Error),
    /// The embedded database.
    #[error(transparent)]
    Embedded(#[from] bandvote_embedded::StorageError),
}

/// The live counters: apply a partition batch exactly once (only if it continues the stored offset).
pub trait Counters: Send + Sync + 'static {
    /// The store's name in readiness checks (`redis`, `embedded`).
    fn store(&self) -> &'static str;

    /// Applies `batch` atomically with its position, or refuses it.
    fn apply<'a>(
        &'a self,
        batch: &'a PartitionBatch<'a>,
        counted_at: &'a str,
    ) -> BoxFuture<'a, Result<Applied, SinkError>>;

    /// Whether the store answers, for readiness.
    fn ping(&self) -> BoxFuture<'_, Result<(), CheckError>>;
}

/// The vote log: one entry per vote id, replays ignored.
pub trait VoteLog: Send + Sync + 'static {
    /// The store's name in readiness checks (`mongodb`, `embedded`).
    fn store(&self) -> &'static str;

    /// Prepares the store (indexes) before the first write.
    fn prepare(&self) -> BoxFuture<'_, Result<(), SinkError>>;

    /// Logs `votes`, unordered.
    fn insert<'a>(&'a self, votes: &'a [&'a Vote]) -> BoxFuture<'a, Result<Inserted, SinkError>>;

    /// Whether the store answers, for readiness.
    fn ping(&self) -> BoxFuture<'_, Result<(), CheckError>>;
}
