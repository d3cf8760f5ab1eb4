//! `bandvote audit`: compares the Redis counters with the MongoDB log, the durable record. Every
//! vote counted once and logged once means the two agree band by band and album by album; the
//! fault suite (scripts/chaos) ends each scenario with it. `--round ID` compares one round's
//! counters with that round's votes in the log, and, once the round is final, with its certificate.
//! Votes set aside as late (for a round already final, see `bandvote_consumer::finality`) are in the
//! log and counted nowhere: they are shown, and left out of the log's side.

use std::collections::BTreeMap;

use anyhow::Context;
use serde::Serialize;

use bandvote_core::{Counts, round::Certified};

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
    /// Votes in the log for a round that was already final when they reached the tally: set aside,
    /// counted nowhere.
    pub late: Counts,
    /// The round's certified result, once it is final; the counters must equal it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certified: Option<Certified>,
    /// Whether they agree exactly: the counters with the log less the late votes, and with the
    /// certificate (whose digest must hold) if there is one.
    pub agree: bool,
}

impl Audit {
    /// Compares `counted` with `logged` less `late`, and with `certified`.
    pub fn new(
        round: Option<String>,
        counted: Counts,
        logged: Counts,
        late: Counts,
        certified: Option<Certified>,
    ) -> Self {
        let mut expected = logged.clone();
        expected.subtract(&late);
        let certificate_holds = certified.as_ref().is_none_or(|c| {
            c.verifies() && c.total == counted.total && c.bands == counted.bands && c.albums == counted.albums
        });
        Self { round, agree: counted == expected && certificate_holds, counted, logged, late, certified }
    }

    /// The late votes of `round` (`None`: of every round), from the per-round counts.
    pub fn late_of(late: &BTreeMap<String, Counts>, round: Option<&str>) -> Counts {
        match round {
            Some(id) => late.get(id).cloned().unwrap_or_default(),
            None => late.values().fold(Counts::default(), |mut all, counts| {
                all.total += counts.total;
                for (map, theirs) in [(&mut all.bands, &counts.bands), (&mut all.albums, &counts.albums)] {
                    for (key, n) in theirs {
                        *map.entry(key.clone()).or_default() += n;
                    }
                }
                all
            }),
        }
    }
}

/// Reads both stores and compares them: all-time, or round `round`'s (whose certificate is read
/// from the rounds in `rounds_redis_url`).
pub async fn audit(
    redis_url: &str,
    rounds_redis_url: &str,
    mongo_url: &str,
    mongo_db: &str,
    round: Option<&str>,
) -> anyhow::Result<Audit> {
    let mut redis = RedisTarget::parse(redis_url)?.connect(Timeouts::default()).await?;
    let logs = log::collection(mongo_url, mongo_db).await.context("failed to configure mongodb")?;
    let late = crate::rounds::late(&mut redis).await.context("failed to read the late votes")?;
    if let Some(id) = round.filter(|id| *id != bandvote_core::round::DEFAULT_ROUND) {
        let rounds = crate::rounds::RedisRounds::new(rounds_redis_url)?;
        let stored = bandvote_core::round::RoundStore::load(&rounds).await.context("failed to read the rounds")?;
        let certified = stored.rounds.into_iter().find(|r| r.id == id).and_then(|r| r.certified);
        let counted = crate::rounds::counts(&mut redis, id).await.context("failed to read the counters")?;
        let logged = log::round_counts(&logs, id).await?;
        return Ok(Audit::new(Some(id.to_owned()), counted, logged, Audit::late_of(&late, Some(id)), certified));
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
    Ok(Audit::new(round.map(str::to_owned), counted, logged, Audit::late_of(&late, None), None))
}
