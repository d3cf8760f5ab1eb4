//! The rounds in Redis, where every gateway replica and the API read them: hash `rounds` (id →
//! the round's JSON) and `rounds:version` (incremented by every change, the compare-and-set that
//! keeps two operators from opening two rounds at once).

use std::{collections::BTreeMap, time::Duration};

use bandvote_core::{
    Counts,
    round::{BoxFuture, Round, RoundStore, StoreError, Stored},
};
use redis::Script;
use tokio::sync::OnceCell;

use crate::{
    keys,
    redis_client::{Redis, RedisTarget, Timeouts},
};

/// Writes a round only if the version is the expected one.
const SAVE: &str = r"
if (redis.call('GET', KEYS[2]) or '0') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
redis.call('INCR', KEYS[2])
return 1
";

/// Removes a round only if the version is the expected one.
const REMOVE: &str = r"
if (redis.call('GET', KEYS[2]) or '0') ~= ARGV[1] then return 0 end
redis.call('HDEL', KEYS[1], ARGV[2])
redis.call('INCR', KEYS[2])
return 1
";

/// Longest wait for one read or write.
const TIMEOUT: Duration = Duration::from_secs(2);

/// The rounds in the Redis at a URL, connected on first use.
pub struct RedisRounds {
    target: RedisTarget,
    connection: OnceCell<Redis>,
    save: Script,
    remove: Script,
}

impl RedisRounds {
    /// The rounds in the Redis at `url` (`redis://` or `redis-sentinel://`); nothing is contacted
    /// yet.
    pub fn new(url: &str) -> anyhow::Result<Self> {
        Ok(Self {
            target: RedisTarget::parse(url)?,
            connection: OnceCell::new(),
            save: Script::new(SAVE),
            remove: Script::new(REMOVE),
        })
    }

    async fn connection(&self) -> Result<Redis, StoreError> {
        let timeouts = Timeouts { response: TIMEOUT, ..Timeouts::default() };
        let connect = self.connection.get_or_try_init(|| self.target.connect(timeouts));
        match tokio::time::timeout(TIMEOUT, connect).await {
            Ok(Ok(connection)) => Ok(connection.clone()),
            Ok(Err(error)) => Err(StoreError(format!("redis: {error:#}"))),
            Err(_) => Err(StoreError("redis: no answer".into())),
        }
    }
}

fn failed(error: redis::RedisError) -> StoreError {
    StoreError(format!("redis: {error}"))
}

impl RoundStore for RedisRounds {
    fn load(&self) -> BoxFuture<'_, Result<Stored, StoreError>> {
        Box::pin(async move {
            let mut redis = self.connection().await?;
            let mut pipe = redis::pipe();
            pipe.atomic().hvals(keys::ROUNDS).get(keys::ROUNDS_VERSION);
            let (values, version): (Vec<String>, Option<u64>) = pipe.query_async(&mut redis).await.map_err(failed)?;
            let mut rounds = Vec::with_capacity(values.len());
            for value in values {
                match serde_json::from_str::<Round>(&value) {
                    Ok(round) => rounds.push(round),
                    Err(error) => return Err(StoreError(format!("a stored round is not a round: {error}"))),
                }
            }
            Ok(Stored { version: version.unwrap_or(0), rounds })
        })
    }

    fn save<'a>(&'a self, version: u64, round: &'a Round) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move {
            let mut redis = self.connection().await?;
            let json = serde_json::to_string(round).map_err(|e| StoreError(e.to_string()))?;
            let saved: i64 = self
                .save
                .key(keys::ROUNDS)
                .key(keys::ROUNDS_VERSION)
                .arg(version.to_string())
                .arg(&round.id)
                .arg(json)
                .invoke_async(&mut redis)
                .await
                .map_err(failed)?;
            Ok(saved == 1)
        })
    }

    fn remove<'a>(&'a self, version: u64, id: &'a str) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move {
            let mut redis = self.connection().await?;
            let removed: i64 = self
                .remove
                .key(keys::ROUNDS)
                .key(keys::ROUNDS_VERSION)
                .arg(version.to_string())
                .arg(id)
                .invoke_async(&mut redis)
                .await
                .map_err(failed)?;
            Ok(removed == 1)
        })
    }

    fn add_refusals<'a>(
        &'a self,
        refusals: &'a [(String, &'static str, u64)],
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let mut redis = self.connection().await?;
            let mut pipe = redis::pipe();
            for (round, reason, n) in refusals {
                pipe.hincr(keys::round_refused(round), *reason, *n).ignore();
            }
            pipe.query_async::<()>(&mut redis).await.map_err(failed)
        })
    }

    fn refusals<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, Result<std::collections::BTreeMap<String, u64>, StoreError>> {
        Box::pin(async move {
            let mut redis = self.connection().await?;
            redis::cmd("HGETALL").arg(keys::round_refused(id)).query_async(&mut redis).await.map_err(failed)
        })
    }

    fn publish_picker<'a>(&'a self, order: &'a [String]) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let mut redis = self.connection().await?;
            let mut pipe = redis::pipe();
            pipe.atomic().del(keys::ROUNDS_PICKER).ignore();
            if !order.is_empty() {
                pipe.rpush(keys::ROUNDS_PICKER, order).ignore();
            }
            pipe.query_async::<()>(&mut redis).await.map_err(failed)
        })
    }
}

/// Round `id`'s counters in Redis (`votes:round:<id>:band`, `:album`, `:total`), read together.
pub async fn counts(redis: &mut Redis, id: &str) -> redis::RedisResult<Counts> {
    let [band, album, total] = keys::round(id);
    let mut pipe = redis::pipe();
    pipe.atomic().hgetall(band).hgetall(album).get(total);
    let (bands, albums, total): (BTreeMap<String, u64>, BTreeMap<String, u64>, Option<u64>) =
        pipe.query_async(redis).await?;
    Ok(Counts { total: total.unwrap_or(0), bands, albums })
}

/// The votes set aside as late (see [`keys::LATE`]), counted per round.
pub async fn late(redis: &mut Redis) -> redis::RedisResult<BTreeMap<String, Counts>> {
    let entries: BTreeMap<String, String> = redis::cmd("HGETALL").arg(keys::LATE).query_async(redis).await?;
    Ok(late_counts(entries.values().map(String::as_str)))
}

/// The ids of round `id`'s votes set aside as late.
pub async fn late_ids(redis: &mut Redis, id: &str) -> redis::RedisResult<std::collections::HashSet<String>> {
    let entries: BTreeMap<String, String> = redis::cmd("HGETALL").arg(keys::LATE).query_async(redis).await?;
    let prefix = format!("{id}\n");
    Ok(entries.into_iter().filter(|(_, entry)| entry.starts_with(&prefix)).map(|(vote, _)| vote).collect())
}

/// Counts `<round>\n<band>\n<album>` entries per round.
pub fn late_counts<'a>(entries: impl IntoIterator<Item = &'a str>) -> BTreeMap<String, Counts> {
    let mut rounds: BTreeMap<String, Counts> = BTreeMap::new();
    for entry in entries {
        let mut parts = entry.splitn(3, '\n');
        if let (Some(round), Some(band), Some(album)) = (parts.next(), parts.next(), parts.next()) {
            rounds.entry(round.to_owned()).or_default().add(band, album);
        }
    }
    rounds
}

/// Seals round `id` in the Redis counters: the tally counts no more of its votes. Idempotent.
pub async fn seal(redis: &mut Redis, id: &str) -> redis::RedisResult<()> {
    redis::cmd("HSETNX").arg(keys::SEALED).arg(id).arg(bandvote_core::time::now()).query_async(redis).await
}
