//! The Redis tally: live counters, applied by one Lua script per partition batch (`tally.lua`) that
//! checks and stores the partition's offset in the same atomic step (keys: [`bandvote_store::keys`]).

use std::collections::HashMap;

use redis::Script;

use bandvote_queue::{BoxFuture, CheckError};
use bandvote_store::{
    keys,
    redis_client::{Redis, RedisTarget, Timeouts},
};

use super::{Applied, Counters, PartitionBatch, SinkError};

/// The Redis side of the tally pipeline.
#[derive(Clone)]
pub struct RedisTally {
    connection: Redis,
    script: Script,
    seen_ttl_secs: u64,
}

impl RedisTally {
    /// Connects (with automatic reconnection, following a Sentinel failover) to the Redis at `url`
    /// (`redis://` or `redis-sentinel://`; a database number is honoured).
    pub async fn connect(url: &str, seen_ttl_secs: u64) -> anyhow::Result<Self> {
        let connection = RedisTarget::parse(url)?.connect(Timeouts::default()).await?;
        Ok(Self { connection, script: Script::new(include_str!("tally.lua")), seen_ttl_secs })
    }

    /// Applies one partition batch atomically (see `tally.lua`).
    pub async fn apply(&self, batch: &PartitionBatch<'_>, counted_at: &str) -> redis::RedisResult<Applied> {
        let mut groups: HashMap<(&str, &str, &str), u64> = HashMap::new();
        let mut newest_unkeyed = "";
        // Only the default round's votes are summed: any other round may be sealed, and a vote set
        // aside is kept by its id.
        let mut single = Vec::new();
        for vote in &batch.votes {
            if vote.client_key || vote.message.round != bandvote_core::round::DEFAULT_ROUND {
                single.push(*vote);
            } else {
                let group = (vote.message.round.as_str(), vote.message.name.as_str(), vote.album_key.as_str());
                *groups.entry(group).or_default() += 1;
                if vote.message.received_at.as_str() > newest_unkeyed {
                    newest_unkeyed = &vote.message.received_at;
                }
            }
        }
        let mut invocation = self.script.prepare_invoke();
        for key in [
            keys::OFFSETS,
            keys::MARKS,
            keys::BAND,
            keys::ALBUM,
            keys::TOTAL,
            keys::LAST,
            keys::TIMELINE,
            keys::SEALED,
            keys::LATE,
        ] {
            invocation.key(key);
        }
        invocation
            .arg(format!("{}:{}", batch.queue, batch.partition))
            .arg(batch.first)
            .arg(batch.last)
            .arg(batch.partition_start)
            .arg(counted_at)
            .arg(self.seen_ttl_secs)
            .arg(newest_unkeyed)
            .arg(&batch.mark)
            .arg(batch.reset_from.map(|offset| offset.to_string()).unwrap_or_default())
            .arg(groups.len())
            .arg(keys::SEEN_PREFIX)
            .arg(keys::ROUND_PREFIX);
        for ((round, band, album), n) in &groups {
            invocation.arg(*round).arg(*band).arg(*album).arg(*n);
        }
        for vote in single {
            invocation
                .arg(if vote.client_key { "1" } else { "0" })
                .arg(&vote.message.id)
                .arg(&vote.message.round)
                .arg(&vote.message.name)
                .arg(&vote.message.album)
                .arg(&vote.message.received_at);
        }
        let mut connection = self.connection.clone();
        let reply: Vec<redis::Value> = invocation.invoke_async(&mut connection).await?;
        let int = |value: &redis::Value| match value {
            redis::Value::Int(n) => Some(*n),
            _ => None,
        };
        let ints: Vec<Option<i64>> = reply.iter().map(int).collect();
        match (ints.as_slice(), reply.get(2)) {
            ([Some(1), Some(counted), Some(duplicates), Some(total), Some(late)], _) => Ok(Applied::Counted {
                counted: u64::try_from(*counted).unwrap_or(0),
                duplicates: u64::try_from(*duplicates).unwrap_or(0),
                total: u64::try_from(*total).unwrap_or(0),
                late: u64::try_from(*late).unwrap_or(0),
            }),
            ([Some(0), Some(stored), _], Some(mark)) => Ok(Applied::Refused {
                stored: (*stored >= 0).then_some(*stored),
                mark: redis::from_redis_value::<String>(mark.clone()).ok().filter(|m| !m.is_empty()),
            }),
            _ => Err(redis::RedisError::from((
                redis::ErrorKind::UnexpectedReturnType,
                "unexpected reply from the tally script",
                format!("{reply:?}"),
            ))),
        }
    }

    /// `PING`, for readiness.
    pub async fn ping(&self) -> Result<(), redis::RedisError> {
        let mut connection = self.connection.clone();
        redis::cmd("PING").query_async::<String>(&mut connection).await.map(drop)
    }
}

impl Counters for RedisTally {
    fn store(&self) -> &'static str {
        "redis"
    }

    fn apply<'a>(
        &'a self,
        batch: &'a PartitionBatch<'a>,
        counted_at: &'a str,
    ) -> BoxFuture<'a, Result<Applied, SinkError>> {
        Box::pin(async move { Ok(RedisTally::apply(self, batch, counted_at).await?) })
    }

    fn ping(&self) -> BoxFuture<'_, Result<(), CheckError>> {
        Box::pin(async move { Ok(RedisTally::ping(self).await?) })
    }
}
