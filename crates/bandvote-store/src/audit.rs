//! `bandvote audit`: compares the Redis counters with the MongoDB log, the durable record. Every
//! vote counted once and logged once means the two agree band by band and album by album; the
//! fault suite (scripts/chaos) ends each scenario with it.

use std::{collections::BTreeMap, time::Duration};

use anyhow::Context;
use serde::Serialize;

use bandvote_core::Counts;

use crate::{
    keys, log,
    redis_client::{RedisTarget, Timeouts},
};

/// What `audit` found.
#[derive(Debug, Clone, Serialize)]
pub struct Audit {
    /// The Redis counters.
    pub counted: Counts,
    /// The MongoDB log, counted.
    pub logged: Counts,
    /// Whether they agree exactly.
    pub agree: bool,
}

/// Reads both stores and compares them.
pub async fn audit(redis_url: &str, mongo_url: &str, mongo_db: &str) -> anyhow::Result<Audit> {
    let mut redis = RedisTarget::parse(redis_url)?.connect(Timeouts::default()).await?;
    let (bands, albums, total): (BTreeMap<String, u64>, BTreeMap<String, u64>, Option<u64>) = redis::pipe()
        .atomic()
        .hgetall(keys::BAND)
        .hgetall(keys::ALBUM)
        .get(keys::TOTAL)
        .query_async(&mut redis)
        .await
        .context("failed to read the counters")?;
    let counted = Counts { total: total.unwrap_or(0), bands, albums };
    let logs = log::collection(mongo_url, mongo_db).await.context("failed to configure mongodb")?;
    let logged = log::scan(&logs, Duration::ZERO).await?.counts;
    Ok(Audit { agree: counted == logged, counted, logged })
}
