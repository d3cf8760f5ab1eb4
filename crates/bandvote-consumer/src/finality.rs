//! Final rounds: a closed round becomes final, with its certified result, once every vote answered
//! `202` for it is counted and its counters agree with the log.
//!
//! A vote of a round reaches the queue at the latest [`round::SETTLE`] after the round's close (the
//! gateways' refresh, their longest wait for the producer, the produce timeout). So once that long
//! has passed, the queue's end marks every vote of the round; when both pipelines have applied the
//! queue up to that end, nothing of the round is still in flight. Then the round's counters are
//! compared with its votes in the log and, if they agree, written as its certified result (through
//! the round store's compare-and-set: several consumers may do it, the first one writes).
//!
//! Before that comparison the round is sealed in the counters, in one atomic step between two tally
//! batches: from then on the tally counts none of its votes. A vote for it that still reaches the
//! queue (written there directly, or through a door that skips the gateways' round check) is set
//! aside as late, by its id, counted nowhere; the log keeps it, and every comparison of counters
//! and log (this one, `bandvote audit`, `bandvote recount`) leaves the late votes out of the log's
//! side. So the counters of a final round never move again, and neither does its certificate.

use std::{collections::HashMap, sync::Arc, time::Duration};

use anyhow::Context;
use bandvote_core::{
    Counts,
    merkle::{Leaf, Tree},
    round::{self, Certified, RoundError, RoundStore},
};
use bandvote_embedded::Storage;
use bandvote_queue::{BoxFuture, KafkaConfig};
use bandvote_store::{keys, redis_client::Redis};
use mongodb::{Collection, bson::Document};
use tokio_util::sync::CancellationToken;

/// How often closed rounds are looked at.
const INTERVAL: Duration = Duration::from_secs(1);

/// How long a final round whose log does not make its certified root waits before it is looked at again.
const RETRY_MISMATCH: Duration = Duration::from_secs(60);

/// Where the pipelines' progress and a round's two tallies are read.
pub trait Progress: Send + Sync {
    /// Whether both pipelines have applied everything the queue holds now.
    fn caught_up(&self) -> BoxFuture<'_, anyhow::Result<bool>>;
    /// Round `id`'s counters and its votes in the log, counted, less those set aside as late.
    fn tallies<'a>(&'a self, id: &'a str) -> BoxFuture<'a, anyhow::Result<(Counts, Counts)>>;
    /// Seals round `id` in the counters (idempotent).
    fn seal<'a>(&'a self, id: &'a str) -> BoxFuture<'a, anyhow::Result<()>>;
    /// Round `id`'s votes in the log as the leaves of its Merkle tree, in order, less the late ones.
    fn leaves<'a>(&'a self, id: &'a str) -> BoxFuture<'a, anyhow::Result<Vec<Leaf>>>;
    /// Stores round `id`'s tree beside its counters, whose leaves are the votes `ids`.
    fn store_tree<'a>(&'a self, id: &'a str, tree: &'a Tree, ids: Vec<String>) -> BoxFuture<'a, anyhow::Result<()>>;
    /// The root of round `id`'s stored tree, if one is stored.
    fn tree_root<'a>(&'a self, id: &'a str) -> BoxFuture<'a, anyhow::Result<Option<String>>>;
}

/// Kafka, the Redis counters and the MongoDB log.
pub struct KafkaProgress {
    /// The votes topic.
    pub kafka: KafkaConfig,
    /// The log pipeline's consumer group.
    pub log_group: String,
    /// The counters (and the tally's offsets).
    pub redis: Redis,
    /// The log.
    pub logs: Collection<Document>,
}

impl Progress for KafkaProgress {
    fn caught_up(&self) -> BoxFuture<'_, anyhow::Result<bool>> {
        Box::pin(async move {
            let cut = bandvote_store::recount::log_cut(&self.kafka, &self.log_group).await?;
            let mut redis = self.redis.clone();
            let applied: HashMap<String, i64> = redis::cmd("HGETALL")
                .arg(keys::OFFSETS)
                .query_async(&mut redis)
                .await
                .context("failed to read the tally's offsets")?;
            Ok(cut.iter().all(|(partition, logged, end)| {
                let counted = applied.get(&format!("{}:{partition}", self.kafka.topic)).map_or(0, |last| last + 1);
                *end == 0 || (*logged >= *end && counted >= *end)
            }))
        })
    }

    fn tallies<'a>(&'a self, id: &'a str) -> BoxFuture<'a, anyhow::Result<(Counts, Counts)>> {
        Box::pin(async move {
            let mut redis = self.redis.clone();
            let counters =
                bandvote_store::rounds::counts(&mut redis, id).await.context("failed to read the counters")?;
            let mut logged = bandvote_store::log::round_counts(&self.logs, id).await?;
            let late = bandvote_store::rounds::late(&mut redis).await.context("failed to read the late votes")?;
            if let Some(late) = late.get(id) {
                logged.subtract(late);
            }
            Ok((counters, logged))
        })
    }

    fn seal<'a>(&'a self, id: &'a str) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            bandvote_store::rounds::seal(&mut self.redis.clone(), id).await.context("failed to seal the round")
        })
    }

    fn leaves<'a>(&'a self, id: &'a str) -> BoxFuture<'a, anyhow::Result<Vec<Leaf>>> {
        Box::pin(async move {
            let late = bandvote_store::rounds::late_ids(&mut self.redis.clone(), id).await?;
            bandvote_store::log::round_leaves(&self.logs, id, &late).await
        })
    }

    fn store_tree<'a>(&'a self, id: &'a str, tree: &'a Tree, ids: Vec<String>) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            bandvote_store::merkle::store(&mut self.redis.clone(), id, tree, &ids)
                .await
                .context("failed to store the round's tree")
        })
    }

    fn tree_root<'a>(&'a self, id: &'a str) -> BoxFuture<'a, anyhow::Result<Option<String>>> {
        Box::pin(async move { Ok(bandvote_store::merkle::stored_root(&mut self.redis.clone(), id).await?) })
    }
}

/// `bandvote up`'s embedded queue (both pipelines store their positions in it, wherever they write),
/// with the counters in it or in Redis, and the log in it or in MongoDB.
pub struct EmbeddedProgress {
    /// The embedded queue (and the counters and log that are not on a server).
    pub storage: Arc<Storage>,
    /// The counters' Redis, when the counters are there.
    pub redis: Option<Redis>,
    /// The MongoDB log, when the log is there.
    pub logs: Option<Collection<Document>>,
}

impl Progress for EmbeddedProgress {
    fn caught_up(&self) -> BoxFuture<'_, anyhow::Result<bool>> {
        Box::pin(async move { Ok(self.storage.caught_up().await?) })
    }

    fn tallies<'a>(&'a self, id: &'a str) -> BoxFuture<'a, anyhow::Result<(Counts, Counts)>> {
        Box::pin(async move {
            let counters = match &self.redis {
                Some(redis) => bandvote_store::rounds::counts(&mut redis.clone(), id)
                    .await
                    .context("failed to read the counters")?,
                None => self.storage.round_counts(id).await?,
            };
            let mut logged = match &self.logs {
                Some(logs) => bandvote_store::log::round_counts(logs, id).await?,
                None => self.storage.logged_round_counts(id).await?,
            };
            let late = match &self.redis {
                Some(redis) => {
                    bandvote_store::rounds::late(&mut redis.clone()).await.context("failed to read the late votes")?
                }
                None => self.storage.late().await?,
            };
            if let Some(late) = late.get(id) {
                logged.subtract(late);
            }
            Ok((counters, logged))
        })
    }

    fn seal<'a>(&'a self, id: &'a str) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            match &self.redis {
                Some(redis) => {
                    bandvote_store::rounds::seal(&mut redis.clone(), id).await.context("failed to seal the round")?
                }
                None => self.storage.seal(id).await?,
            }
            Ok(())
        })
    }

    fn leaves<'a>(&'a self, id: &'a str) -> BoxFuture<'a, anyhow::Result<Vec<Leaf>>> {
        Box::pin(async move {
            let late = match &self.redis {
                Some(redis) => bandvote_store::rounds::late_ids(&mut redis.clone(), id).await?,
                None => self.storage.late_ids(id).await?,
            };
            match &self.logs {
                Some(logs) => bandvote_store::log::round_leaves(logs, id, &late).await,
                None => Ok(self.storage.round_leaves(id, &late).await?),
            }
        })
    }

    fn store_tree<'a>(&'a self, id: &'a str, tree: &'a Tree, ids: Vec<String>) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            match &self.redis {
                Some(redis) => bandvote_store::merkle::store(&mut redis.clone(), id, tree, &ids)
                    .await
                    .context("failed to store the round's tree")?,
                None => self.storage.store_tree(id, tree, ids).await?,
            }
            Ok(())
        })
    }

    fn tree_root<'a>(&'a self, id: &'a str) -> BoxFuture<'a, anyhow::Result<Option<String>>> {
        Box::pin(async move {
            Ok(match &self.redis {
                Some(redis) => bandvote_store::merkle::stored_root(&mut redis.clone(), id).await?,
                None => self.storage.tree_root(id).await?,
            })
        })
    }
}

/// Makes closed rounds final until `shutdown`.
pub async fn run(
    rounds: Arc<dyn RoundStore>,
    progress: Arc<dyn Progress>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let (mut disagreeing, mut unrestorable) = (Vec::new(), HashMap::new());
    let mut picker = Picker::default();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            () = tokio::time::sleep(INTERVAL) => {}
        }
        // One read of the rounds for the pass.
        let stored = match rounds.load().await {
            Ok(stored) => stored.rounds,
            Err(error) => {
                tracing::debug!(%error, "the rounds could not be read");
                continue;
            }
        };
        picker.publish(rounds.as_ref(), &stored).await;
        let restored = restore_trees(&stored, progress.as_ref(), &mut unrestorable).await;
        if let Err(error) = restored {
            tracing::debug!(error = format!("{error:#}"), "a final round's tree not stored again yet");
        }
        if let Err(error) = certify(rounds.as_ref(), &stored, progress.as_ref(), &mut disagreeing).await {
            tracing::debug!(error = format!("{error:#}"), "rounds not made final yet");
        }
    }
}

/// How often the round picker's order is written again though unchanged (a restarted Redis may
/// have lost it).
const PICKER_REFRESH: Duration = Duration::from_secs(10);

/// The round picker's order as last published (see [`round::picker_order`]).
#[derive(Default)]
struct Picker {
    published: Option<(Vec<String>, std::time::Instant)>,
}

impl Picker {
    /// Publishes the order of `stored` if it changed (a scheduled round opened by itself, a round
    /// was created, closed or removed) or was last written [`PICKER_REFRESH`] ago.
    async fn publish(&mut self, rounds: &dyn RoundStore, stored: &[round::Round]) {
        let order = round::picker_order(stored, chrono::Utc::now());
        let fresh = self.published.as_ref().is_some_and(|(last, at)| *last == order && at.elapsed() < PICKER_REFRESH);
        if fresh {
            return;
        }
        match rounds.publish_picker(&order).await {
            Ok(()) => self.published = Some((order, std::time::Instant::now())),
            Err(error) => tracing::debug!(%error, "the round picker's order not written"),
        }
    }
}

/// Round `id`'s Merkle tree from its votes in the log (less the late ones), the counts of those
/// votes, and their ids in the leaves' order.
async fn build_tree(progress: &dyn Progress, id: &str) -> anyhow::Result<((Tree, Counts), Vec<String>)> {
    let leaves = progress.leaves(id).await?;
    let mut counts = Counts::default();
    let mut hashes = Vec::with_capacity(leaves.len());
    let mut ids = Vec::with_capacity(leaves.len());
    for leaf in leaves {
        counts.add(&leaf.band, &leaf.album);
        hashes.push(leaf.hash());
        ids.push(leaf.id);
    }
    Ok(((Tree::new(hashes), counts), ids))
}

/// Stores again the tree of a final round whose tree is gone (Redis lost it, or the round was made
/// final before receipts existed and has no root): rebuilt from the log, it must have the certified
/// root, else the log no longer holds the certified votes (logged as an error, nothing stored).
async fn restore_tree(
    progress: &dyn Progress,
    id: &str,
    certified: &Certified,
    reported: &mut HashMap<String, std::time::Instant>,
) -> anyhow::Result<()> {
    let Some(root) = &certified.merkle_root else { return Ok(()) };
    let recently = reported.get(id).is_some_and(|at| at.elapsed() < RETRY_MISMATCH);
    if recently || progress.tree_root(id).await?.is_some() {
        return Ok(());
    }
    let ((tree, _), ids) = build_tree(progress, id).await?;
    if bandvote_core::merkle::hex(&tree.root()) != *root {
        // A late vote logged before the tally set it aside makes a passing difference; anything
        // else stays. Looked at again a minute later.
        tracing::error!(round = id, "the log's votes of a final round do not make its certified root");
        reported.insert(id.to_owned(), std::time::Instant::now());
        return Ok(());
    }
    progress.store_tree(id, &tree, ids).await?;
    tracing::info!(round = id, leaves = tree.size(), "a final round's tree stored again from the log");
    Ok(())
}

/// Seals the final rounds again (a Redis that lost its last writes may have lost a seal; sealing is
/// idempotent) and stores again the trees they lost (see [`restore_tree`]).
async fn restore_trees(
    stored: &[round::Round],
    progress: &dyn Progress,
    reported: &mut HashMap<String, std::time::Instant>,
) -> anyhow::Result<()> {
    for round in stored {
        if let Some(certified) = &round.certified {
            progress.seal(&round.id).await?;
            restore_tree(progress, &round.id, certified, reported).await?;
        }
    }
    Ok(())
}

/// One look at the closed rounds among `stored` (the rounds as read for this pass); a result is
/// written through `rounds`.
async fn certify(
    rounds: &dyn RoundStore,
    stored: &[round::Round],
    progress: &dyn Progress,
    disagreeing: &mut Vec<String>,
) -> anyhow::Result<()> {
    let now = chrono::Utc::now();
    let waiting: Vec<_> = stored.iter().filter(|r| r.awaits_final(now)).cloned().collect();
    if waiting.is_empty() || !progress.caught_up().await? {
        return Ok(());
    }
    // Sealed first, then compared once both pipelines have applied everything queued after the
    // seal: the counters no longer move, and the log holds every vote they counted.
    for candidate in &waiting {
        progress.seal(&candidate.id).await?;
    }
    if !progress.caught_up().await? {
        return Ok(());
    }
    for candidate in waiting {
        let (counters, logged) = progress.tallies(&candidate.id).await?;
        if counters != logged {
            if !disagreeing.contains(&candidate.id) {
                tracing::error!(
                    round = candidate.id,
                    counted = counters.total,
                    logged = logged.total,
                    "a closed round's counters disagree with the log: not final (a recount rebuilds the counters)"
                );
                disagreeing.push(candidate.id.clone());
            }
            continue;
        }
        let Some(closed_at) = candidate.closes_at else { continue };
        // The receipts' tree, from the log's votes of the round: they must be the votes counted.
        let (tree, ids) = build_tree(progress, &candidate.id).await?;
        if tree.1 != counters {
            let tree_key = format!("{} (leaves)", candidate.id);
            if !disagreeing.contains(&tree_key) {
                tracing::error!(
                    round = candidate.id,
                    "a closed round's votes in the log are not its counters: not final"
                );
                disagreeing.push(tree_key);
            }
            continue;
        }
        let root = bandvote_core::merkle::hex(&tree.0.root());
        progress.store_tree(&candidate.id, &tree.0, ids).await?;
        let certified = Certified::new(&candidate.id, closed_at, counters, Some((tree.0.size(), root)));
        let written = round::update(rounds, |stored, _| {
            let mut round = stored
                .iter()
                .find(|r| r.id == candidate.id)
                .cloned()
                .ok_or(RoundError::NotFound(candidate.id.clone()))?;
            // Another consumer came first: keep its (identical) result.
            if round.certified.is_some() {
                return Err(RoundError::Conflict("already final".into()));
            }
            round.certified = Some(certified.clone());
            Ok(round)
        })
        .await;
        match written {
            Ok(_) => {
                tracing::info!(round = candidate.id, total = certified.total, sha256 = certified.sha256, "round final")
            }
            Err(round::UpdateError::Refused(_)) => {}
            Err(error) => return Err(error.into()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Mutex,
        atomic::{AtomicBool, Ordering},
    };

    use bandvote_core::round::{Round, StoreError, Stored, Visibility};

    use super::*;

    /// The rounds in memory.
    #[derive(Default)]
    struct Memory(Mutex<Stored>);

    impl RoundStore for Memory {
        fn load(&self) -> BoxFuture<'_, Result<Stored, StoreError>> {
            let stored = self.0.lock().expect("lock").clone();
            Box::pin(async move { Ok(stored) })
        }

        fn save<'a>(&'a self, version: u64, round: &'a Round) -> BoxFuture<'a, Result<bool, StoreError>> {
            let mut stored = self.0.lock().expect("lock");
            let saved = stored.version == version;
            if saved {
                stored.version += 1;
                stored.rounds.retain(|r| r.id != round.id);
                stored.rounds.push(round.clone());
            }
            Box::pin(async move { Ok(saved) })
        }

        fn remove<'a>(&'a self, _: u64, _: &'a str) -> BoxFuture<'a, Result<bool, StoreError>> {
            Box::pin(async { Ok(false) })
        }

        fn add_refusals<'a>(&'a self, _: &'a [(String, &'static str, u64)]) -> BoxFuture<'a, Result<(), StoreError>> {
            Box::pin(async { Ok(()) })
        }

        fn refusals<'a>(
            &'a self,
            _: &'a str,
        ) -> BoxFuture<'a, Result<std::collections::BTreeMap<String, u64>, StoreError>> {
            Box::pin(async { Ok(Default::default()) })
        }
    }

    /// Pipelines whose progress and tallies the test sets, and what was asked of them, in order.
    #[derive(Default)]
    struct Fake {
        caught_up: AtomicBool,
        counters: Mutex<Counts>,
        logged: Mutex<Counts>,
        leaves: Mutex<Vec<Leaf>>,
        root: Mutex<Option<String>>,
        asked: Mutex<Vec<String>>,
    }

    impl Progress for Fake {
        fn caught_up(&self) -> BoxFuture<'_, anyhow::Result<bool>> {
            let caught_up = self.caught_up.load(Ordering::SeqCst);
            Box::pin(async move { Ok(caught_up) })
        }

        fn tallies<'a>(&'a self, id: &'a str) -> BoxFuture<'a, anyhow::Result<(Counts, Counts)>> {
            self.asked.lock().expect("lock").push(format!("tallies {id}"));
            let tallies = (self.counters.lock().expect("lock").clone(), self.logged.lock().expect("lock").clone());
            Box::pin(async move { Ok(tallies) })
        }

        fn seal<'a>(&'a self, id: &'a str) -> BoxFuture<'a, anyhow::Result<()>> {
            self.asked.lock().expect("lock").push(format!("seal {id}"));
            Box::pin(async { Ok(()) })
        }

        fn leaves<'a>(&'a self, _: &'a str) -> BoxFuture<'a, anyhow::Result<Vec<Leaf>>> {
            let leaves = self.leaves.lock().expect("lock").clone();
            Box::pin(async move { Ok(leaves) })
        }

        fn store_tree<'a>(&'a self, id: &'a str, tree: &'a Tree, _: Vec<String>) -> BoxFuture<'a, anyhow::Result<()>> {
            self.asked.lock().expect("lock").push(format!("tree {id}"));
            *self.root.lock().expect("lock") = Some(bandvote_core::merkle::hex(&tree.root()));
            Box::pin(async { Ok(()) })
        }

        fn tree_root<'a>(&'a self, _: &'a str) -> BoxFuture<'a, anyhow::Result<Option<String>>> {
            let root = self.root.lock().expect("lock").clone();
            Box::pin(async move { Ok(root) })
        }
    }

    fn leaf(id: &str, band: &str, album: &str) -> Leaf {
        let (id, round, band, album, year) = (id.into(), "semi".into(), band.into(), album.into(), "1999".into());
        Leaf { id, round, band, album, year, rank: None }
    }

    fn closed(id: &str, ago: Duration) -> Round {
        let closes = chrono::Utc::now() - ago;
        Round {
            id: id.into(),
            title: id.into(),
            opens_at: Some(closes - chrono::Duration::minutes(5)),
            closes_at: Some(closes),
            results: Visibility::default(),
            created_at: None,
            certified: None,
            ballot: Vec::new(),
        }
    }

    fn counts(votes: &[(&str, &str)]) -> Counts {
        let mut counts = Counts::default();
        for (band, album) in votes {
            counts.add(band, album);
        }
        counts
    }

    /// One pass of `certify` over the rounds as stored now.
    async fn look(rounds: &Memory, progress: &Fake, disagreeing: &mut Vec<String>) {
        let stored = rounds.load().await.expect("rounds").rounds;
        certify(rounds, &stored, progress, disagreeing).await.expect("a look");
    }

    async fn certified(rounds: &Memory, id: &str) -> Option<Certified> {
        rounds.load().await.expect("rounds").rounds.into_iter().find(|r| r.id == id)?.certified
    }

    /// Each gate on its own: the settle bound, the queue read to its end, the counters equal to
    /// the log; the seal before the comparison.
    #[tokio::test]
    async fn a_closed_round_is_final_only_once_settled_caught_up_and_agreeing_and_sealed_first() {
        let settle = bandvote_core::round::SETTLE;
        let rounds = Memory::default();
        for round in [closed("semi", settle + Duration::from_secs(3)), closed("late", settle / 2)] {
            rounds.save(rounds.load().await.expect("rounds").version, &round).await.expect("saved");
        }
        let progress = Fake::default();
        *progress.counters.lock().expect("lock") = counts(&[("A", "x"), ("A", "x"), ("B", "y")]);
        *progress.logged.lock().expect("lock") = counts(&[("A", "x"), ("B", "y")]);
        let mut disagreeing = Vec::new();

        // Not caught up: nothing is compared, sealed or certified.
        look(&rounds, &progress, &mut disagreeing).await;
        assert!(progress.asked.lock().expect("lock").is_empty());
        assert!(certified(&rounds, "semi").await.is_none());

        // Caught up, but the counters hold a vote the log does not: sealed, not final.
        progress.caught_up.store(true, Ordering::SeqCst);
        look(&rounds, &progress, &mut disagreeing).await;
        assert_eq!(*progress.asked.lock().expect("lock"), ["seal semi", "tallies semi"]);
        assert!(certified(&rounds, "semi").await.is_none());
        assert_eq!(disagreeing, ["semi"]);

        // Agreeing, but the log's votes (the tree's leaves) are not the counted ones: not final.
        *progress.logged.lock().expect("lock") = counts(&[("A", "x"), ("A", "x"), ("B", "y")]);
        *progress.leaves.lock().expect("lock") = vec![leaf("1", "A", "x"), leaf("2", "B", "y")];
        look(&rounds, &progress, &mut disagreeing).await;
        assert!(certified(&rounds, "semi").await.is_none());

        // Agreeing: final with the counters and the tree of its votes, the round closed too recently
        // still not looked at.
        let leaves = vec![leaf("1", "A", "x"), leaf("2", "B", "y"), leaf("3", "A", "x")];
        *progress.leaves.lock().expect("lock") = leaves.clone();
        look(&rounds, &progress, &mut disagreeing).await;
        let result = certified(&rounds, "semi").await.expect("final");
        assert_eq!((result.total, result.bands["A"]), (3, 2));
        assert!(result.verifies());
        let root = bandvote_core::merkle::hex(&Tree::new(leaves.iter().map(Leaf::hash).collect()).root());
        assert_eq!((result.leaves, result.merkle_root.as_deref()), (Some(3), Some(root.as_str())));
        assert!(progress.asked.lock().expect("lock").contains(&"tree semi".to_owned()));
        assert!(certified(&rounds, "late").await.is_none());
        assert!(!progress.asked.lock().expect("lock").iter().any(|asked| asked.ends_with("late")));
    }
}
