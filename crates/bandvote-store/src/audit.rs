//! `bandvote audit`: compares the Redis counters with the MongoDB log, the durable record. Every
//! vote counted once and logged once means the two agree band by band and album by album; the
//! fault suite (scripts/chaos) ends each scenario with it. `--round ID` compares one round's
//! counters with that round's votes in the log.

use std::collections::BTreeMap;

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
    /// The round audited; `None` for the all-time counters and the whole log.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub round: Option<String>,
    /// The Redis counters.
    pub counted: Counts,
    /// The MongoDB log, counted.
    pub logged: Counts,
    /// Whether they agree exactly.
    pub agree: bool,
}

impl Audit {
    /// Compares `counted` with `logged`.
    pub fn new(round: Option<String>, counted: Counts, logged: Counts) -> Self {
        Self { round, agree: counted == logged, counted, logged }
    }
}

/// Reads both stores and compares them: all-time, or round `round`'s.
pub async fn audit(redis_url: &str, mongo_url: &str, mongo_db: &str, round: Option<&str>) -> anyhow::Result<Audit> {
    let mut redis = RedisTarget::parse(redis_url)?.connect(Timeouts::default()).await?;
    let logs = log::collection(mongo_url, mongo_db).await.context("failed to configure mongodb")?;
    if let Some(id) = round.filter(|id| *id != bandvote_core::round::DEFAULT_ROUND) {
        let counted = crate::rounds::counts(&mut redis, id).await.context("failed to read the counters")?;
        let logged = log::round_counts(&logs, id).await?;
        return Ok(Audit::new(Some(id.to_owned()), counted, logged));
    }
    let (bands, albums, total): (BTreeMap<String, u64>, BTreeMap<String, u64>, Option<u64>) = redis::pipe()
        .atomic()
        .hgetall(keys::BAND)
        .hgetall(keys::ALBUM)
        .get(keys::TOTAL)
        .query_async(&mut redis)
        .await
        .context("failed to read the counters")?;
    let counted = Counts { total: total.unwrap_or(0), bands, albums };
    let logged = log::counts(&logs).await?;
    Ok(Audit::new(round.map(str::to_owned), counted, logged))
}
