//! The Redis tally: live counters, applied by one Lua script per partition batch (`tally.lua`) that
//! checks and stores the partition's offset in the same atomic step.

use std::collections::HashMap;

use redis::{Script, aio::ConnectionManager};

use crate::sources::kafka::Vote;

/// Keys of the contract (DESIGN.md), read by Grafana and the API.
pub mod keys {
    /// Hash band → count.
    pub const BAND: &str = "votes:band";
    /// Hash `<band> / <album>` → count.
    pub const ALBUM: &str = "votes:album";
    /// Integer, all counted votes.
    pub const TOTAL: &str = "votes:total";
    /// Hash `{received_at, counted_at}` of the newest counted vote.
    pub const LAST: &str = "votes:last";
    /// Stream, one entry per applied batch: `n`, `total`.
    pub const TIMELINE: &str = "votes:timeline";
    /// Hash `<topic>:<partition>` → last applied offset.
    pub const OFFSETS: &str = "votes:offsets";
    /// Prefix of the idempotency-key markers.
    pub const SEEN_PREFIX: &str = "votes:seen:";
}

/// A run of consecutive messages of one partition, ready to be applied.
#[derive(Debug)]
pub struct PartitionBatch<'a> {
    /// Topic name.
    pub topic: &'a str,
    /// Partition number.
    pub partition: i32,
    /// Offset of the first message.
    pub first: i64,
    /// Offset of the last message.
    pub last: i64,
    /// The first offset of the partition, expected when Redis stores none.
    pub partition_start: i64,
    /// The valid votes among the messages (invalid ones only advance the offset).
    pub votes: Vec<&'a Vote>,
}

/// What the script did with a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// Applied: votes counted, votes skipped as retries of a known key, and the new total.
    Counted {
        /// Votes counted.
        counted: u64,
        /// Votes skipped because their idempotency key was already counted.
        duplicates: u64,
        /// `votes:total` afterwards.
        total: u64,
    },
    /// Refused: the batch does not continue the stored offset (`None`: nothing stored).
    Refused {
        /// The stored offset.
        stored: Option<i64>,
    },
}

/// The Redis side of the tally pipeline.
#[derive(Clone)]
pub struct RedisTally {
    connection: ConnectionManager,
    script: Script,
    seen_ttl_secs: u64,
}

impl RedisTally {
    /// Connects (with automatic reconnection) to the Redis at `url` (a database number is honoured).
    pub async fn connect(url: &str, seen_ttl_secs: u64) -> redis::RedisResult<Self> {
        let client = redis::Client::open(url)?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(std::time::Duration::from_secs(2)))
            .set_response_timeout(Some(std::time::Duration::from_secs(5)))
            .set_number_of_retries(2);
        let connection = ConnectionManager::new_with_config(client, config).await?;
        Ok(Self { connection, script: Script::new(include_str!("tally.lua")), seen_ttl_secs })
    }

    /// The connection, for readers of the same keys.
    pub fn connection(&self) -> ConnectionManager {
        self.connection.clone()
    }

    /// Applies one partition batch atomically (see `tally.lua`).
    pub async fn apply(&self, batch: &PartitionBatch<'_>, counted_at: &str) -> redis::RedisResult<Applied> {
        let mut groups: HashMap<(&str, String), u64> = HashMap::new();
        let mut newest_unkeyed = "";
        let mut keyed = Vec::new();
        for vote in &batch.votes {
            if vote.client_key {
                keyed.push(*vote);
            } else {
                *groups.entry((vote.message.name.as_str(), vote.album_key.clone())).or_default() += 1;
                if vote.message.received_at.as_str() > newest_unkeyed {
                    newest_unkeyed = &vote.message.received_at;
                }
            }
        }
        let mut invocation = self.script.prepare_invoke();
        invocation
            .arg(format!("{}:{}", batch.topic, batch.partition))
            .arg(batch.first)
            .arg(batch.last)
            .arg(batch.partition_start)
            .arg(counted_at)
            .arg(self.seen_ttl_secs)
            .arg(newest_unkeyed)
            .arg(groups.len());
        for ((band, album), n) in &groups {
            invocation.arg(*band).arg(album).arg(*n);
        }
        for vote in keyed {
            invocation
                .arg(&vote.message.id)
                .arg(&vote.message.name)
                .arg(&vote.album_key)
                .arg(&vote.message.received_at);
        }
        let mut connection = self.connection.clone();
        let reply: Vec<i64> = invocation.invoke_async(&mut connection).await?;
        match reply.as_slice() {
            [1, counted, duplicates, total] => Ok(Applied::Counted {
                counted: u64::try_from(*counted).unwrap_or(0),
                duplicates: u64::try_from(*duplicates).unwrap_or(0),
                total: u64::try_from(*total).unwrap_or(0),
            }),
            [0, stored] => Ok(Applied::Refused { stored: (*stored >= 0).then_some(*stored) }),
            other => Err(redis::RedisError::from((
                redis::ErrorKind::UnexpectedReturnType,
                "unexpected reply from the tally script",
                format!("{other:?}"),
            ))),
        }
    }

    /// `PING`, for readiness.
    pub async fn ping(&self) -> Result<(), String> {
        let mut connection = self.connection.clone();
        redis::cmd("PING").query_async::<String>(&mut connection).await.map(drop).map_err(|e| format!("redis: {e}"))
    }
}
