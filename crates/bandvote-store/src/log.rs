//! The MongoDB vote log: database `bandvote` (configurable), collection `logs`, one document per
//! vote, `{_id: <vote id>, data: {name, album, year, rank}, path, received_at: Date, counted_at:
//! Date, round}`, indexed on `received_at` descending.

use std::{collections::BTreeMap, time::Duration};

use anyhow::Context;
use bandvote_core::{Counts, VoteMessage};
use futures::TryStreamExt;
use mongodb::{
    Client, Collection,
    bson::{DateTime, Document, doc},
    options::ClientOptions,
};

/// The collection of vote logs.
pub const COLLECTION: &str = "logs";

/// A client that gives up on an unreachable server within seconds, not the driver's 30 s.
pub async fn connect_client(url: &str) -> mongodb::error::Result<Client> {
    let mut options = ClientOptions::parse(url).await?;
    options.server_selection_timeout.get_or_insert(Duration::from_secs(5));
    options.connect_timeout.get_or_insert(Duration::from_secs(3));
    options.app_name.get_or_insert_with(|| "bandvote".to_owned());
    Client::with_options(options)
}

/// The log collection of database `db` at `url` (nothing is contacted yet).
pub async fn collection(url: &str, db: &str) -> mongodb::error::Result<Collection<Document>> {
    Ok(connect_client(url).await?.database(db).collection(COLLECTION))
}

/// The log document of a vote.
pub fn to_document(message: &VoteMessage, counted_at: DateTime) -> Document {
    let received_at = bandvote_core::time::parse(&message.received_at)
        .map_or(counted_at, |at| DateTime::from_millis(at.timestamp_millis()));
    doc! {
        "_id": &message.id,
        "data": {"name": &message.name, "album": &message.album, "year": &message.year, "rank": &message.rank},
        "path": message.path.as_str(),
        "received_at": received_at,
        "counted_at": counted_at,
        "round": &message.round,
    }
}

/// The filter of round `id`'s votes (the default round's include those logged before rounds).
pub fn round_filter(id: &str) -> Document {
    if id == bandvote_core::round::DEFAULT_ROUND {
        doc! {"$or": [{"round": id}, {"round": {"$exists": false}}]}
    } else {
        doc! {"round": id}
    }
}

/// A log document as a leaf of its round's Merkle tree.
pub fn leaf_of(document: &Document) -> Option<bandvote_core::merkle::Leaf> {
    let data = document.get_document("data").ok()?;
    Some(bandvote_core::merkle::Leaf {
        id: document.get_str("_id").ok()?.to_owned(),
        round: document.get_str("round").unwrap_or(bandvote_core::round::DEFAULT_ROUND).to_owned(),
        band: data.get_str("name").ok()?.to_owned(),
        album: data.get_str("album").ok()?.to_owned(),
        year: data.get_str("year").ok()?.to_owned(),
        rank: data.get_str("rank").ok().map(str::to_owned),
    })
}

/// Round `id`'s votes in the log as leaves, in the leaves' order (by id, bytewise), leaving out the
/// votes `late` (set aside for the round once it was final).
pub async fn round_leaves(
    logs: &Collection<Document>,
    id: &str,
    late: &std::collections::HashSet<String>,
) -> anyhow::Result<Vec<bandvote_core::merkle::Leaf>> {
    let projection = doc! {"_id": 1, "data": 1, "round": 1};
    let mut cursor = logs.find(round_filter(id)).projection(projection).await.context("failed to read the vote log")?;
    let mut leaves = Vec::new();
    while let Some(document) = cursor.try_next().await.context("failed to read the vote log")? {
        if let Some(leaf) = leaf_of(&document).filter(|leaf| !late.contains(&leaf.id)) {
            leaves.push(leaf);
        }
    }
    leaves.sort_unstable_by(|a, b| a.id.as_bytes().cmp(b.id.as_bytes()));
    Ok(leaves)
}

/// One logged vote of round `round` as a leaf; `None` when it is not in the log (or in another round).
pub async fn leaf(
    logs: &Collection<Document>,
    round: &str,
    vote: &str,
) -> anyhow::Result<Option<bandvote_core::merkle::Leaf>> {
    let document = logs.find_one(doc! {"_id": vote}).await.context("failed to read the vote log")?;
    Ok(document.as_ref().and_then(leaf_of).filter(|leaf| leaf.round == round))
}

/// Round `id`'s votes in the log, counted.
pub async fn round_counts(logs: &Collection<Document>, id: &str) -> anyhow::Result<Counts> {
    let projection = doc! {"data.name": 1, "data.album": 1};
    let mut cursor = logs.find(round_filter(id)).projection(projection).await.context("failed to read the vote log")?;
    let mut counts = Counts::default();
    while let Some(document) = cursor.try_next().await.context("failed to read the vote log")? {
        if let Some((band, album)) = data_of(&document) {
            counts.add(band, album);
        }
    }
    Ok(counts)
}

/// Every vote in the log, counted.
pub async fn counts(logs: &Collection<Document>) -> anyhow::Result<Counts> {
    Ok(scan(logs, Duration::ZERO).await?.counts)
}

/// The whole log, counted: the counts, the newest `received_at`, and the ids still within
/// `idempotency_ttl` with their remaining seconds.
pub(crate) struct Scan {
    pub(crate) counts: Counts,
    /// Each round's counts but `default`'s (the all-time counts).
    pub(crate) rounds: BTreeMap<String, Counts>,
    pub(crate) newest: Option<DateTime>,
    pub(crate) recent: Vec<(String, u64)>,
}

/// Counts the whole vote log.
pub(crate) async fn scan(logs: &Collection<Document>, idempotency_ttl: Duration) -> anyhow::Result<Scan> {
    let projection = doc! {"_id": 1, "data.name": 1, "data.album": 1, "received_at": 1, "round": 1};
    let mut cursor = logs.find(doc! {}).projection(projection).await.context("failed to read the vote log")?;
    let mut scan = Scan { counts: Counts::default(), rounds: BTreeMap::new(), newest: None, recent: Vec::new() };
    let ttl_ms = i64::try_from(idempotency_ttl.as_millis()).unwrap_or(i64::MAX);
    let now = DateTime::now();
    while let Some(document) = cursor.try_next().await.context("failed to read the vote log")? {
        let (Some(id), Some((band, album))) = (document.get_str("_id").ok(), data_of(&document)) else {
            tracing::warn!(?document, "skipping a log document without band or album");
            continue;
        };
        scan.counts.add(band, album);
        match document.get_str("round") {
            Ok(round) if round != bandvote_core::round::DEFAULT_ROUND => {
                scan.rounds.entry(round.to_owned()).or_default().add(band, album);
            }
            _ => {}
        }
        if let Ok(received) = document.get_datetime("received_at") {
            scan.newest = scan.newest.max(Some(*received));
            let age = now.timestamp_millis() - received.timestamp_millis();
            if age < ttl_ms {
                scan.recent.push((id.to_owned(), u64::try_from((ttl_ms - age) / 1000).unwrap_or(1).max(1)));
            }
        }
    }
    Ok(scan)
}

fn data_of(document: &Document) -> Option<(&str, &str)> {
    let data = document.get_document("data").ok()?;
    Some((data.get_str("name").ok()?, data.get_str("album").ok()?))
}
