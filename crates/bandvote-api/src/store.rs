//! Reading the contract's stores: the counters (Redis, or `bandvote up`'s embedded database) and
//! the vote log (MongoDB, or the embedded database).

use std::{
    collections::{BTreeMap, HashSet, VecDeque},
    sync::Arc,
    time::Duration,
};

use bandvote_core::{
    Counts,
    merkle::{Leaf, Lookup, Proof},
    round::{DEFAULT_ROUND, Round, RoundStore},
};
use bandvote_embedded::{EmbeddedRounds, Storage};
use bandvote_runtime::health::CheckError;
use bandvote_store::{
    audit::Audit,
    keys,
    redis_client::{Redis, RedisTarget, Timeouts},
    rounds::RedisRounds,
};

use futures::{StreamExt, TryStreamExt, stream::BoxStream};
use mongodb::{
    Collection,
    bson::{Document, doc},
    options::ClientOptions,
};
use serde::Serialize;
use tokio::sync::OnceCell;

/// How long one read may take before the API answers 503.
pub const READ_TIMEOUT: Duration = Duration::from_secs(3);

/// How long an audit's scan of the log may take.
const AUDIT_TIMEOUT: Duration = Duration::from_secs(60);

/// A dependency that did not answer.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Unavailable(pub String);

/// `GET /api/results`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Results {
    /// `total`, `bands`, `albums`.
    #[serde(flatten)]
    pub counts: Counts,
    /// When the newest counted vote was counted (`null` before the first vote).
    pub updated_at: Option<String>,
    /// How long after its `received_at` the newest vote was counted, in ms (`null` before the first).
    pub freshness_ms: Option<i64>,
}

/// `GET /api/results`: the results of one round.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RoundResults {
    /// `total`, `bands`, `albums`, `updated_at`, `freshness_ms`.
    #[serde(flatten)]
    pub results: Results,
    /// The round.
    pub round: String,
    /// Whether the public sees only its total.
    pub hidden: bool,
    /// Whether every vote answered `202` for it is counted and its counters agree with the log.
    #[serde(rename = "final")]
    pub is_final: bool,
}

/// One `GET /api/logs` item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogEntry {
    /// The round it counts in.
    pub round: String,
    /// The vote id.
    pub id: String,
    /// `{name, album, year, rank}` (`rank` `null` when the voter gave none).
    pub data: BTreeMap<String, Option<String>>,
    /// `grpc` or `wasm`.
    pub path: String,
    /// RFC 3339, ms, `Z`.
    pub received_at: String,
}

/// Which pieces `bandvote up` reads from its embedded database instead of a server.
#[derive(Debug, Clone)]
pub struct EmbeddedReads {
    /// The embedded database.
    pub storage: Arc<Storage>,
    /// Read the counters from it (else from Redis).
    pub counters: bool,
    /// Read the log from it (else from MongoDB).
    pub logs: bool,
}

// One per process: the size difference between the variants does not matter.
#[allow(clippy::large_enum_variant)]
enum Counters {
    Redis { target: RedisTarget, connection: OnceCell<Redis> },
    Embedded(Arc<Storage>),
}

enum Logs {
    Mongo(Collection<Document>),
    Embedded(Arc<Storage>),
}

/// A read from Redis within [`READ_TIMEOUT`]; its error, or no answer, as [`Unavailable`].
async fn redis_read<T>(read: impl std::future::Future<Output = redis::RedisResult<T>>) -> Result<T, Unavailable> {
    match tokio::time::timeout(READ_TIMEOUT, read).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(Unavailable(format!("redis: {error}"))),
        Err(_) => Err(Unavailable("redis: no answer".into())),
    }
}

/// Where results and logs are read: Redis (connected on first use, then kept and re-established)
/// or the embedded database, and MongoDB or the embedded database.
pub struct Store {
    counters: Counters,
    logs: Logs,
    rounds: Arc<dyn RoundStore>,
}

impl Store {
    /// Prepares both connections; nothing is contacted yet, so the API starts even if they are down.
    pub async fn new(redis_url: &str, mongo_url: &str, mongo_db: &str) -> anyhow::Result<Self> {
        Self::with_embedded(redis_url, mongo_url, mongo_db, None).await
    }

    /// Like [`Store::new`], with some pieces read from the embedded database.
    pub async fn with_embedded(
        redis_url: &str,
        mongo_url: &str,
        mongo_db: &str,
        embedded: Option<&EmbeddedReads>,
    ) -> anyhow::Result<Self> {
        let counters = match embedded {
            Some(e) if e.counters => Counters::Embedded(Arc::clone(&e.storage)),
            _ => Counters::Redis { target: RedisTarget::parse(redis_url)?, connection: OnceCell::new() },
        };
        let logs = match embedded {
            Some(e) if e.logs => Logs::Embedded(Arc::clone(&e.storage)),
            _ => {
                let mut options = ClientOptions::parse(mongo_url).await?;
                options.server_selection_timeout = Some(READ_TIMEOUT);
                options.connect_timeout = Some(Duration::from_secs(2));
                Logs::Mongo(
                    mongodb::Client::with_options(options)?
                        .database(mongo_db)
                        .collection(bandvote_store::log::COLLECTION),
                )
            }
        };
        // The rounds live beside the counters: in the embedded database when `up` counts there,
        // else in the counters' Redis (where `up`'s gateways read them too).
        let rounds: Arc<dyn RoundStore> = match embedded {
            Some(e) if e.counters => Arc::new(EmbeddedRounds(Arc::clone(&e.storage))),
            _ => Arc::new(RedisRounds::new(redis_url)?),
        };
        Ok(Self { counters, logs, rounds })
    }

    /// Where the rounds are.
    pub fn rounds(&self) -> &Arc<dyn RoundStore> {
        &self.rounds
    }

    /// Every round, as stored.
    pub async fn load_rounds(&self) -> Result<Vec<Round>, Unavailable> {
        match tokio::time::timeout(READ_TIMEOUT, self.rounds.load()).await {
            Ok(Ok(stored)) => Ok(stored.rounds),
            Ok(Err(error)) => Err(Unavailable(error.to_string())),
            Err(_) => Err(Unavailable("round store: no answer".into())),
        }
    }

    /// Round `id`'s votes refused at the gateways, by reason.
    pub async fn round_refusals(&self, id: &str) -> Result<BTreeMap<String, u64>, Unavailable> {
        match tokio::time::timeout(READ_TIMEOUT, self.rounds.refusals(id)).await {
            Ok(Ok(refusals)) => Ok(refusals),
            Ok(Err(error)) => Err(Unavailable(error.to_string())),
            Err(_) => Err(Unavailable("round store: no answer".into())),
        }
    }

    /// The ids of the rounds whose results are hidden.
    pub async fn hidden_rounds(&self) -> Result<HashSet<String>, Unavailable> {
        Ok(self.load_rounds().await?.into_iter().filter(Round::is_hidden).map(|r| r.id).collect())
    }

    /// Round `id`'s total.
    pub async fn round_total(&self, id: &str) -> Result<u64, Unavailable> {
        match &self.counters {
            Counters::Redis { target, connection } if id != DEFAULT_ROUND => {
                let mut redis = Self::redis(target, connection).await?;
                let [_, _, total] = keys::round(id);
                let mut get = redis::cmd("GET");
                get.arg(total);
                match tokio::time::timeout(READ_TIMEOUT, get.query_async::<Option<u64>>(&mut redis)).await {
                    Ok(Ok(total)) => Ok(total.unwrap_or(0)),
                    Ok(Err(error)) => Err(Unavailable(format!("redis: {error}"))),
                    Err(_) => Err(Unavailable("redis: no answer".into())),
                }
            }
            _ => Ok(self.round_counts(id).await?.total),
        }
    }

    /// The results the API answers for `round` (`None`: the open round, else the latest closed
    /// one, else `default`); `None` for a round that does not exist. A hidden round's bands and
    /// albums are left out unless `operator`.
    pub async fn round_results(
        &self,
        round: Option<&str>,
        operator: bool,
    ) -> Result<Option<RoundResults>, Unavailable> {
        let rounds = self.load_rounds().await?;
        let chosen = match round {
            Some(DEFAULT_ROUND) => None,
            Some(id) => match rounds.iter().find(|r| r.id == id) {
                Some(found) => Some(found),
                None => return Ok(None),
            },
            None => bandvote_core::round::current(&rounds, chrono::Utc::now()),
        };
        let mut results = self.results().await?;
        let (id, hidden, is_final) = match chosen {
            Some(chosen) => {
                results.counts = self.round_counts(&chosen.id).await?;
                (chosen.id.clone(), chosen.is_hidden(), chosen.certified.is_some())
            }
            None => {
                // The all-time view leaves every hidden round out for the public, read after the
                // all-time counters so that it takes out at least what they hold of it.
                if !operator {
                    for hidden in rounds.iter().filter(|r| r.is_hidden()) {
                        results.counts.subtract(&self.round_counts(&hidden.id).await?);
                    }
                }
                (DEFAULT_ROUND.to_owned(), false, false)
            }
        };
        if hidden && !operator {
            results.counts.bands.clear();
            results.counts.albums.clear();
        }
        Ok(Some(RoundResults { results, round: id, hidden, is_final }))
    }

    /// Round `id`'s counters (the `default` round's are the all-time ones).
    pub async fn round_counts(&self, id: &str) -> Result<Counts, Unavailable> {
        if id == DEFAULT_ROUND {
            return Ok(self.results().await?.counts);
        }
        match &self.counters {
            Counters::Embedded(storage) => storage.round_counts(id).await.map_err(|e| Unavailable(e.to_string())),
            Counters::Redis { target, connection } => {
                let mut redis = Self::redis(target, connection).await?;
                redis_read(bandvote_store::rounds::counts(&mut redis, id)).await
            }
        }
    }

    /// How many votes the log holds.
    pub async fn logged_total(&self) -> Result<u64, Unavailable> {
        let counting = async {
            match &self.logs {
                Logs::Mongo(logs) => logs.estimated_document_count().await.map_err(anyhow::Error::from),
                Logs::Embedded(storage) => storage.logged().await.map_err(anyhow::Error::from),
            }
        };
        match tokio::time::timeout(READ_TIMEOUT, counting).await {
            Ok(Ok(total)) => Ok(total),
            Ok(Err(error)) => Err(Unavailable(format!("{error:#}"))),
            Err(_) => Err(Unavailable("the log: no answer".into())),
        }
    }

    /// The log's votes counted, round `round`'s or all of them: a whole scan, for audits.
    pub async fn logged_counts(&self, round: Option<&str>) -> Result<Counts, Unavailable> {
        let counting = async {
            match (&self.logs, round) {
                (Logs::Mongo(logs), Some(id)) => bandvote_store::log::round_counts(logs, id).await,
                (Logs::Mongo(logs), None) => bandvote_store::log::counts(logs).await,
                (Logs::Embedded(storage), round) => storage.logged_counts(round).await.map_err(anyhow::Error::from),
            }
        };
        match tokio::time::timeout(AUDIT_TIMEOUT, counting).await {
            Ok(Ok(counts)) => Ok(counts),
            Ok(Err(error)) => Err(Unavailable(format!("{error:#}"))),
            Err(_) => Err(Unavailable("the log: no answer".into())),
        }
    }

    /// The votes set aside as late (for a round already final), counted per round.
    pub async fn late(&self) -> Result<BTreeMap<String, Counts>, Unavailable> {
        match &self.counters {
            Counters::Embedded(storage) => storage.late().await.map_err(|e| Unavailable(e.to_string())),
            Counters::Redis { target, connection } => {
                let mut redis = Self::redis(target, connection).await?;
                redis_read(bandvote_store::rounds::late(&mut redis)).await
            }
        }
    }

    /// Compares the counters with the log (less the late votes) and, for a final round, with its
    /// certificate: all-time, or round `round`'s.
    pub async fn audit(&self, round: Option<&str>) -> Result<Audit, Unavailable> {
        let round = round.filter(|id| *id != DEFAULT_ROUND);
        let (counted, certified) = match round {
            Some(id) => {
                let certified = self.load_rounds().await?.into_iter().find(|r| r.id == id).and_then(|r| r.certified);
                (self.round_counts(id).await?, certified)
            }
            None => (self.results().await?.counts, None),
        };
        let logged = self.logged_counts(round).await?;
        let late = Audit::late_of(&self.late().await?, round);
        Ok(Audit::new(round.map(str::to_owned), counted, logged, late, certified))
    }

    /// The names of the two stores, for readiness: `redis` or `storage`, `mongodb` or `storage`.
    pub fn names(&self) -> (&'static str, &'static str) {
        let counters = if matches!(self.counters, Counters::Redis { .. }) { "redis" } else { "storage" };
        let logs = if matches!(self.logs, Logs::Mongo(_)) { "mongodb" } else { "storage" };
        (counters, logs)
    }

    async fn redis(target: &RedisTarget, cell: &OnceCell<Redis>) -> Result<Redis, Unavailable> {
        let timeouts = Timeouts { response: READ_TIMEOUT, ..Timeouts::default() };
        let connect = cell.get_or_try_init(|| target.connect(timeouts));
        match tokio::time::timeout(READ_TIMEOUT, connect).await {
            Ok(Ok(connection)) => Ok(connection.clone()),
            Ok(Err(error)) => Err(Unavailable(format!("redis: {error:#}"))),
            Err(_) => Err(Unavailable("redis: no answer".into())),
        }
    }

    /// The counters, read in one transaction so that they agree with each other.
    pub async fn results(&self) -> Result<Results, Unavailable> {
        let (counts, received, counted) = match &self.counters {
            Counters::Embedded(storage) => {
                let c = storage.counters().await.map_err(|e| Unavailable(e.to_string()))?;
                (c.counts, c.received_at, c.counted_at)
            }
            Counters::Redis { target, connection } => {
                let mut redis = Self::redis(target, connection).await?;
                let mut pipe = redis::pipe();
                pipe.atomic()
                    .hgetall(keys::BAND)
                    .hgetall(keys::ALBUM)
                    .get(keys::TOTAL)
                    .cmd("HMGET")
                    .arg(keys::LAST)
                    .arg("received_at")
                    .arg("counted_at");
                type Snapshot =
                    (BTreeMap<String, u64>, BTreeMap<String, u64>, Option<u64>, (Option<String>, Option<String>));
                let read = tokio::time::timeout(READ_TIMEOUT, pipe.query_async::<Snapshot>(&mut redis)).await;
                match read {
                    Ok(Ok((bands, albums, total, (received, counted)))) => {
                        (Counts { total: total.unwrap_or(0), bands, albums }, received, counted)
                    }
                    Ok(Err(error)) => return Err(Unavailable(format!("redis: {error}"))),
                    Err(_) => return Err(Unavailable("redis: no answer".into())),
                }
            }
        };
        let parse = |t: &Option<String>| t.as_deref().and_then(bandvote_core::time::parse);
        let freshness_ms = match (parse(&received), parse(&counted)) {
            (Some(received), Some(counted)) => Some((counted - received).num_milliseconds().max(0)),
            _ => None,
        };
        Ok(Results { counts, updated_at: counted, freshness_ms })
    }

    /// The newest `limit` votes of the log, newest first.
    pub async fn latest_logs(&self, limit: i64) -> Result<Vec<LogEntry>, Unavailable> {
        match &self.logs {
            Logs::Mongo(logs) => find(logs, doc! {}, doc! {"received_at": -1}, limit).await,
            Logs::Embedded(storage) => embedded(storage.latest_logs(limit.max(0) as u64).await),
        }
    }

    /// Votes logged at or after `since_ms` (Unix ms; oldest first), at most `limit`.
    pub async fn logs_since(&self, since_ms: i64, limit: i64) -> Result<Vec<LogEntry>, Unavailable> {
        match &self.logs {
            Logs::Mongo(logs) => {
                let since = mongodb::bson::DateTime::from_millis(since_ms);
                find(logs, doc! {"received_at": {"$gte": since}}, doc! {"received_at": 1}, limit).await
            }
            Logs::Embedded(storage) => embedded(storage.logs_since(since_ms, limit.max(0) as u64).await),
        }
    }

    /// Round `id`'s logged votes, oldest first, read as they are sent (a page or a cursor batch at a
    /// time, so memory stays flat however many there are); a store error ends the stream with it.
    pub fn round_votes(&self, id: &str) -> BoxStream<'static, Result<LogEntry, Unavailable>> {
        match &self.logs {
            Logs::Mongo(logs) => {
                let (logs, filter) = (logs.clone(), bandvote_store::log::round_filter(id));
                let find =
                    async move { logs.find(filter).sort(doc! {"received_at": 1, "_id": 1}).batch_size(1000).await };
                futures::stream::once(find)
                    .try_flatten()
                    .map_err(|error| Unavailable(format!("mongodb: {error}")))
                    .try_filter_map(|doc| async move { Ok(to_entry(&doc)) })
                    .boxed()
            }
            Logs::Embedded(storage) => {
                const PAGE: u64 = 1000;
                let (storage, id) = (Arc::clone(storage), id.to_owned());
                let start = Some((None::<(i64, String)>, VecDeque::<bandvote_embedded::Logged>::new()));
                futures::stream::unfold(start, move |state| {
                    let (storage, id) = (Arc::clone(&storage), id.clone());
                    async move {
                        let (mut after, mut page) = state?;
                        if page.is_empty() {
                            match storage.round_logs_after(&id, after.clone(), PAGE).await {
                                Ok(next) => page = next.into(),
                                Err(error) => return Some((Err(Unavailable(error.to_string())), None)),
                            }
                        }
                        let logged = page.pop_front()?;
                        let ms = bandvote_core::time::parse(&logged.received_at).map_or(0, |t| t.timestamp_millis());
                        after = Some((ms, logged.id.clone()));
                        let entry = embedded(Ok(vec![logged])).map(|mut entries| entries.remove(0));
                        Some((entry, Some((after, page))))
                    }
                })
                .boxed()
            }
        }
    }

    /// The ids of round `id`'s votes set aside as late (read where the counters are).
    pub async fn late_ids(&self, id: &str) -> Result<std::collections::HashSet<String>, Unavailable> {
        match &self.counters {
            Counters::Embedded(storage) => storage.late_ids(id).await.map_err(|e| Unavailable(e.to_string())),
            Counters::Redis { target, connection } => {
                let mut redis = Self::redis(target, connection).await?;
                redis_read(bandvote_store::rounds::late_ids(&mut redis, id)).await
            }
        }
    }

    /// Vote `vote`'s proof in final round `id`'s tree (stored where the counters are), with its leaf
    /// from the log; `None` when the vote is not a leaf of it; unavailable while no tree is stored
    /// (the consumer stores it again from the log).
    pub async fn proof(&self, id: &str, vote: &str) -> Result<Option<(Proof, Leaf)>, Unavailable> {
        let proof = match &self.counters {
            Counters::Embedded(storage) => storage.proof(id, vote).await.map_err(|e| Unavailable(e.to_string()))?,
            Counters::Redis { target, connection } => {
                let mut redis = Self::redis(target, connection).await?;
                redis_read(bandvote_store::merkle::proof(&mut redis, id, vote)).await?
            }
        };
        let proof = match proof {
            Lookup::Found(proof) => proof,
            Lookup::NotALeaf => return Ok(None),
            Lookup::NoTree => return Err(Unavailable(format!("round {id}'s tree is not stored yet"))),
        };
        let leaf = match &self.logs {
            Logs::Mongo(logs) => {
                match tokio::time::timeout(READ_TIMEOUT, bandvote_store::log::leaf(logs, id, vote)).await {
                    Ok(Ok(leaf)) => leaf,
                    Ok(Err(error)) => return Err(Unavailable(format!("{error:#}"))),
                    Err(_) => return Err(Unavailable("the log: no answer".into())),
                }
            }
            Logs::Embedded(storage) => storage.leaf(id, vote).await.map_err(|e| Unavailable(e.to_string()))?,
        };
        Ok(leaf.map(|leaf| (proof, leaf)))
    }

    /// Round `id`'s votes in the log as the leaves of its tree, in order (by id), those in `late`
    /// left out; read a page at a time, so that the bulletin board streams in constant memory.
    pub fn round_leaves(
        &self,
        id: &str,
        late: std::collections::HashSet<String>,
    ) -> BoxStream<'static, Result<Leaf, Unavailable>> {
        let late = Arc::new(late);
        let stream = match &self.logs {
            Logs::Mongo(logs) => {
                let (logs, filter) = (logs.clone(), bandvote_store::log::round_filter(id));
                let find = async move { logs.find(filter).sort(doc! {"_id": 1}).batch_size(1000).await };
                futures::stream::once(find)
                    .try_flatten()
                    .map_err(|error| Unavailable(format!("mongodb: {error}")))
                    .try_filter_map(|doc| async move { Ok(bandvote_store::log::leaf_of(&doc)) })
                    .boxed()
            }
            Logs::Embedded(storage) => {
                const PAGE: u64 = 1000;
                let (storage, id) = (Arc::clone(storage), id.to_owned());
                let start = Some((None::<String>, VecDeque::<Leaf>::new()));
                futures::stream::unfold(start, move |state| {
                    let (storage, id) = (Arc::clone(&storage), id.clone());
                    async move {
                        let (mut after, mut page) = state?;
                        if page.is_empty() {
                            match storage.round_leaves_after(&id, after.clone(), PAGE).await {
                                Ok(next) => page = next.into(),
                                Err(error) => return Some((Err(Unavailable(error.to_string())), None)),
                            }
                        }
                        let leaf = page.pop_front()?;
                        after = Some(leaf.id.clone());
                        Some((Ok(leaf), Some((after, page))))
                    }
                })
                .boxed()
            }
        };
        stream
            .try_filter(move |leaf| {
                let counted = !late.contains(&leaf.id);
                async move { counted }
            })
            .boxed()
    }

    /// For readiness: the counters' store answers.
    pub async fn ping_counters(&self) -> Result<(), CheckError> {
        match &self.counters {
            Counters::Embedded(storage) => Ok(storage.ping().await?),
            Counters::Redis { target, connection } => {
                let mut redis = Self::redis(target, connection).await.map_err(|e| e.0)?;
                Ok(redis::cmd("PING").query_async::<String>(&mut redis).await.map(drop)?)
            }
        }
    }

    /// For readiness: the log's store answers.
    pub async fn ping_logs(&self) -> Result<(), CheckError> {
        match &self.logs {
            Logs::Embedded(storage) => Ok(storage.ping().await?),
            Logs::Mongo(logs) => {
                let admin = logs.client().database("admin");
                let ping = admin.run_command(doc! {"ping": 1});
                match tokio::time::timeout(READ_TIMEOUT, ping).await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(error)) => Err(error.into()),
                    Err(_) => Err("mongodb: no answer".into()),
                }
            }
        }
    }
}

async fn find(
    logs: &Collection<Document>,
    filter: Document,
    sort: Document,
    limit: i64,
) -> Result<Vec<LogEntry>, Unavailable> {
    let read = async {
        let cursor = logs.find(filter).sort(sort).limit(limit).await?;
        cursor.try_collect::<Vec<Document>>().await
    };
    match tokio::time::timeout(READ_TIMEOUT, read).await {
        Ok(Ok(docs)) => Ok(docs.iter().filter_map(to_entry).collect()),
        Ok(Err(error)) => Err(Unavailable(format!("mongodb: {error}"))),
        Err(_) => Err(Unavailable("mongodb: no answer".into())),
    }
}

fn embedded(
    read: Result<Vec<bandvote_embedded::Logged>, bandvote_embedded::StorageError>,
) -> Result<Vec<LogEntry>, Unavailable> {
    let logged = read.map_err(|e| Unavailable(e.to_string()))?;
    Ok(logged
        .into_iter()
        .map(|l| LogEntry {
            id: l.id,
            data: BTreeMap::from([
                ("name".to_owned(), Some(l.name)),
                ("album".to_owned(), Some(l.album)),
                ("year".to_owned(), Some(l.year)),
                ("rank".to_owned(), Some(l.rank).filter(|rank| !rank.is_empty())),
            ]),
            path: l.path,
            received_at: l.received_at,
            round: l.round,
        })
        .collect())
}

fn to_entry(doc: &Document) -> Option<LogEntry> {
    let data = doc.get_document("data").ok()?;
    let field = |name: &str| (name.to_owned(), data.get_str(name).ok().map(str::to_owned));
    let received = doc.get_datetime("received_at").ok()?;
    let received = chrono::DateTime::from_timestamp_millis(received.timestamp_millis())?;
    Some(LogEntry {
        id: doc.get_str("_id").ok()?.to_owned(),
        data: ["name", "album", "year", "rank"].into_iter().map(field).collect(),
        path: doc.get_str("path").unwrap_or_default().to_owned(),
        received_at: bandvote_core::time::format(received),
        round: doc.get_str("round").unwrap_or(DEFAULT_ROUND).to_owned(),
    })
}
