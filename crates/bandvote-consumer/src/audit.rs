//! `bandvote audit`: compares the Redis counters with the MongoDB log, the durable record. Every
//! vote counted once and logged once means the two agree band by band and album by album; the
//! fault suite (scripts/chaos) ends each scenario with it.

use std::{collections::BTreeMap, time::Duration};

use anyhow::Context;
use serde::Serialize;

use crate::{recount::scan_log, sinks::mongodb::MongoLog, sinks::redis::keys};

/// Counts from one store.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Votes in all.
    pub total: u64,
    /// Band → votes.
    pub bands: BTreeMap<String, u64>,
    /// `<band> / <album>` → votes.
    pub albums: BTreeMap<String, u64>,
}

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
    let client = redis::Client::open(redis_url).context("invalid redis url")?;
    let mut redis = client.get_multiplexed_async_connection().await.context("failed to connect to redis")?;
    let (bands, albums, total): (BTreeMap<String, u64>, BTreeMap<String, u64>, Option<u64>) = redis::pipe()
        .atomic()
        .hgetall(keys::BAND)
        .hgetall(keys::ALBUM)
        .get(keys::TOTAL)
        .query_async(&mut redis)
        .await
        .context("failed to read the counters")?;
    let counted = Counts { total: total.unwrap_or(0), bands, albums };
    let log = MongoLog::connect(mongo_url, mongo_db).await.context("failed to configure mongodb")?;
    let (scan, _, _) = scan_log(&log, Duration::ZERO).await?;
    let logged = Counts {
        total: scan.total,
        bands: scan.bands.into_iter().collect(),
        albums: scan.albums.into_iter().collect(),
    };
    Ok(Audit { agree: counted == logged, counted, logged })
}
