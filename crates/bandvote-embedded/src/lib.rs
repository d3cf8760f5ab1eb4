//! Embedded storage for `bandvote up`: the vote queue, the live counters and the vote log in one
//! SQLite database (`bandvote.db`) in a data directory, so the whole system runs with no server.
//!
//! The same guarantees as the distributed deployment, from SQLite's transactions:
//! - a vote is answered `202` only after the transaction that appended it to the queue committed
//!   (WAL, `synchronous=FULL`: on disk); appends are grouped into one transaction per burst;
//! - the queue's sequence numbers have no gaps (one writer assigns them), so a pipeline's position
//!   is one number; the counters (and the log) are updated in the same transaction that stores
//!   their pipeline's new position, so after a crash each batch is either wholly applied or not at
//!   all, and is read again from the stored position;
//! - a client's idempotency key is counted once (`seen`, 24 h), and the log's primary key is the
//!   vote id.
//!
//! The database file is locked for the process that opened it: a second `bandvote up` on the same
//! data directory fails at once with a clear message.

mod schema;
mod source;
mod writer;

use std::{
    collections::{BTreeMap, HashMap},
    fs::File,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use bandvote_core::{
    Counts, VoteMessage,
    merkle::{Leaf, Lookup, Proof, Tree},
    round::{self, DEFAULT_ROUND, Round, RoundStore, Stored},
};
use bandvote_queue::{BoxFuture, CheckError, QueueError, Vote, VoteQueue};
use rusqlite::{Connection, OptionalExtension, params};
pub use source::EmbeddedSource;
use tokio::sync::Notify;

/// Most rows one pruning transaction deletes from a table.
pub const PRUNE_SLICE: usize = 10_000;

/// The database file inside the data directory.
pub const DATABASE_FILE: &str = "bandvote.db";
/// The lock file inside the data directory.
const LOCK_FILE: &str = "bandvote.lock";

/// Pipelines whose position is stored in the database.
pub mod pipelines {
    /// The counters.
    pub const TALLY: &str = "tally";
    /// The log.
    pub const LOG: &str = "log";
}

/// Why the storage could not be opened or used.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The data directory cannot be created, written or locked.
    #[error("data directory {dir}: {message}")]
    Directory {
        /// The directory.
        dir: PathBuf,
        /// What went wrong, for a person.
        message: String,
    },
    /// The database is damaged or is not a bandvote database.
    #[error("data directory {dir}: {message}")]
    Corrupt {
        /// The directory.
        dir: PathBuf,
        /// What went wrong, for a person.
        message: String,
    },
    /// The queue could not be written (disk full, file removed).
    #[error("embedded queue: {0}")]
    Write(String),
    /// A statement failed.
    #[error("embedded storage: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The writer thread is gone (the storage is shutting down).
    #[error("embedded storage is closed")]
    Closed,
}

/// One queued vote.
#[derive(Debug, Clone)]
pub struct Queued {
    /// Position in the queue (1, 2, 3, ... without gaps).
    pub seq: u64,
    /// The vote.
    pub message: VoteMessage,
    /// Whether the id is a client's idempotency key.
    pub client_key: bool,
}

/// What applying a batch to the embedded counters did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TallyApplied {
    /// Counted: new votes, retries of a known key skipped, and the total afterwards.
    Counted {
        /// Votes counted.
        counted: u64,
        /// Retries skipped.
        duplicates: u64,
        /// Total afterwards.
        total: u64,
        /// Votes for a sealed round, set aside.
        late: u64,
    },
    /// The batch does not continue the stored position: read again after `stored`.
    Refused {
        /// The stored position.
        stored: u64,
    },
}

/// The counters, read in one transaction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    /// `total`, `bands`, `albums`.
    pub counts: Counts,
    /// `received_at` of the newest counted vote.
    pub received_at: Option<String>,
    /// When it was counted.
    pub counted_at: Option<String>,
}

/// One logged vote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logged {
    /// The vote id.
    pub id: String,
    /// Band.
    pub name: String,
    /// Album.
    pub album: String,
    /// Year.
    pub year: String,
    /// Rank; empty when the voter gave none.
    pub rank: String,
    /// `grpc` or `wasm`.
    pub path: String,
    /// RFC 3339, ms, `Z`.
    pub received_at: String,
    /// The round it counts in.
    pub round: String,
}

/// The embedded storage of one data directory.
pub struct Storage {
    dir: PathBuf,
    appender: writer::Appender,
    /// The consumer's connection (writes counters and the log).
    sink: Mutex<Connection>,
    /// The readers' connection (the API).
    reader: Mutex<Connection>,
    appended: Arc<Notify>,
    /// Held by whoever writes (the queue's writer thread, the consumer): SQLite has one writer at a
    /// time, and waiting here wakes at once where SQLite's busy handler would poll with sleeps.
    write: Arc<Mutex<()>>,
    /// Positions this process stored, per pipeline: a source need not store them again.
    stored: Mutex<HashMap<&'static str, u64>>,
    seen_ttl: Duration,
    _lock: File,
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Storage").field("dir", &self.dir).finish_non_exhaustive()
    }
}

impl Storage {
    /// Opens (creating if needed) the storage in `dir`, checks the database's integrity and takes
    /// the directory's lock. `seen_ttl`: how long a client's idempotency key is remembered.
    pub fn open(dir: &Path, seen_ttl: Duration) -> Result<Arc<Self>, StorageError> {
        let directory = |message: String| StorageError::Directory { dir: dir.to_owned(), message };
        create_private_dir(dir).map_err(|e| directory(format!("cannot create it: {e}")))?;
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(LOCK_FILE))
            .map_err(|e| directory(format!("cannot write in it: {e}")))?;
        lock.try_lock().map_err(|_| {
            directory("another bandvote process is using it (stop it, or choose another --data-dir)".into())
        })?;
        let path = dir.join(DATABASE_FILE);
        // Votes, voters' idempotency keys and the rounds: readable by this user only, even in a
        // directory that existed before with looser permissions.
        make_private(dir, &[LOCK_FILE, DATABASE_FILE])
            .map_err(|e| directory(format!("cannot restrict its files: {e}")))?;
        let open = || schema::connect(&path).map_err(|e| classify(dir, e));
        let first = open()?;
        schema::check_and_migrate(&first).map_err(|e| classify(dir, e))?;
        let appended = Arc::new(Notify::new());
        let write = Arc::new(Mutex::new(()));
        let appender = writer::Appender::start(first, Arc::clone(&appended), Arc::clone(&write));
        Ok(Arc::new(Self {
            dir: dir.to_owned(),
            appender,
            sink: Mutex::new(open()?),
            reader: Mutex::new(open()?),
            appended,
            write,
            stored: Mutex::new(HashMap::new()),
            seen_ttl,
            _lock: lock,
        }))
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Appends a vote to the queue; returns once the transaction holding it committed.
    pub async fn append(&self, message: &VoteMessage, client_key: bool) -> Result<u64, StorageError> {
        self.appender.append(message.to_json(), client_key).await
    }

    /// Woken after every committed append.
    pub fn appended(&self) -> &Notify {
        &self.appended
    }

    /// Up to `max` queued votes after position `after`, in order.
    pub async fn read_queue(self: &Arc<Self>, after: u64, max: usize) -> Result<Vec<Queued>, StorageError> {
        self.with_sink(move |db| {
            let mut statement =
                db.prepare_cached("SELECT seq, message, client_key FROM queue WHERE seq > ?1 ORDER BY seq LIMIT ?2")?;
            let rows = statement.query_map(params![after as i64, max as i64], |row| {
                Ok((row.get::<_, i64>(0)?, row.get::<_, Vec<u8>>(1)?, row.get::<_, bool>(2)?))
            })?;
            let mut queued = Vec::new();
            for row in rows {
                let (seq, bytes, client_key) = row?;
                match VoteMessage::decode(&bytes) {
                    Ok(message) => queued.push(Queued { seq: seq as u64, message, client_key }),
                    // Only this process writes the queue, from validated votes: this is damage.
                    Err(error) => {
                        return Err(rusqlite::Error::ToSqlConversionFailure(
                            format!("queue entry {seq} is not a vote: {error}").into(),
                        ));
                    }
                }
            }
            Ok(queued)
        })
        .await
    }

    /// The stored position of `pipeline` (0: nothing applied yet).
    pub async fn position(self: &Arc<Self>, pipeline: &'static str) -> Result<u64, StorageError> {
        self.with_sink(move |db| position(db, pipeline)).await
    }

    /// Stores the position of `pipeline` (for sinks outside this database, after they applied).
    pub async fn set_position(self: &Arc<Self>, pipeline: &'static str, seq: u64) -> Result<(), StorageError> {
        self.with_sink_write(move |db| set_position(db, pipeline, seq)).await?;
        self.note_stored(pipeline, seq);
        Ok(())
    }

    /// Whether this process stored `pipeline`'s position at `seq` or later.
    pub fn stored_at_least(&self, pipeline: &str, seq: u64) -> bool {
        self.stored.lock().unwrap_or_else(|e| e.into_inner()).get(pipeline).is_some_and(|&stored| stored >= seq)
    }

    fn note_stored(&self, pipeline: &'static str, seq: u64) {
        self.stored.lock().unwrap_or_else(|e| e.into_inner()).insert(pipeline, seq);
    }

    /// Applies the votes of positions `first..=last` to the counters, in one transaction with the
    /// tally position, only if they continue the stored position.
    pub async fn apply_tally(
        self: &Arc<Self>,
        first: u64,
        last: u64,
        votes: Vec<Vote>,
        counted_at: String,
    ) -> Result<TallyApplied, StorageError> {
        let ttl = self.seen_ttl.as_millis() as i64;
        let applied = self.with_sink_write(move |db| {
            let tx = db.transaction()?;
            let stored = position(&tx, pipelines::TALLY)?;
            if first != stored + 1 || last < first {
                return Ok(TallyApplied::Refused { stored });
            }
            let now = bandvote_core::time::parse(&counted_at).map_or(0, |t| t.timestamp_millis());
            let (mut counted, mut duplicates, mut late) = (0, 0, 0);
            let mut newest: Option<&str> = None;
            {
                let mut is_sealed = tx.prepare_cached("SELECT count(*) FROM sealed WHERE round = ?1")?;
                let mut known = tx.prepare_cached("SELECT count(*) FROM seen WHERE id = ?1 AND expires_ms >= ?2")?;
                let mut set_aside =
                    tx.prepare_cached("INSERT OR IGNORE INTO late (id, round, name, album) VALUES (?1, ?2, ?3, ?4)")?;
                let mut sealed: HashMap<&str, bool> = HashMap::new();
                let mut seen = tx.prepare_cached(
                    "INSERT INTO seen (id, expires_ms) VALUES (?1, ?2) \
                     ON CONFLICT (id) DO UPDATE SET expires_ms = excluded.expires_ms WHERE seen.expires_ms < ?3",
                )?;
                let mut band = tx.prepare_cached(
                    "INSERT INTO bands (name, votes) VALUES (?1, ?2) ON CONFLICT (name) DO UPDATE SET votes = votes + ?2",
                )?;
                let mut album = tx.prepare_cached(
                    "INSERT INTO albums (key, votes) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET votes = votes + ?2",
                )?;
                // Increments are summed per band and album first: one statement each per batch.
                let mut bands: HashMap<&str, i64> = HashMap::new();
                let mut albums: HashMap<&str, i64> = HashMap::new();
                // The same per round (the default round's counters are the totals).
                let mut round_bands: HashMap<(&str, &str), i64> = HashMap::new();
                let mut round_albums: HashMap<(&str, &str), i64> = HashMap::new();
                let mut round_totals: HashMap<&str, i64> = HashMap::new();
                for vote in &votes {
                    let round = vote.message.round.as_str();
                    if round != DEFAULT_ROUND {
                        let final_round = match sealed.get(round) {
                            Some(known) => *known,
                            None => {
                                let found = is_sealed.query_row([round], |r| r.get::<_, i64>(0))? > 0;
                                *sealed.entry(round).or_default() = found;
                                found
                            }
                        };
                        // A final round's votes are set aside, but for retries of a counted key.
                        if final_round {
                            let m = &vote.message;
                            if vote.client_key && known.query_row(params![m.id, now], |r| r.get::<_, i64>(0))? > 0 {
                                duplicates += 1;
                            } else {
                                late += set_aside.execute(params![m.id, round, m.name, m.album])? as u64;
                            }
                            continue;
                        }
                    }
                    // A client's key already counted (and not expired) is a retry.
                    if vote.client_key && seen.execute(params![vote.message.id, now + ttl, now])? == 0 {
                        duplicates += 1;
                        continue;
                    }
                    *bands.entry(&vote.message.name).or_default() += 1;
                    *albums.entry(&vote.album_key).or_default() += 1;
                    if round != DEFAULT_ROUND {
                        *round_bands.entry((round, &vote.message.name)).or_default() += 1;
                        *round_albums.entry((round, &vote.album_key)).or_default() += 1;
                        *round_totals.entry(round).or_default() += 1;
                    }
                    counted += 1;
                    let received = vote.message.received_at.as_str();
                    if newest.is_none_or(|n| received > n) {
                        newest = Some(received);
                    }
                }
                for (name, n) in bands {
                    band.execute(params![name, n])?;
                }
                for (key, n) in albums {
                    album.execute(params![key, n])?;
                }
                let mut band = tx.prepare_cached(
                    "INSERT INTO round_bands (round, name, votes) VALUES (?1, ?2, ?3) \
                     ON CONFLICT (round, name) DO UPDATE SET votes = votes + ?3",
                )?;
                for ((round, name), n) in round_bands {
                    band.execute(params![round, name, n])?;
                }
                let mut album = tx.prepare_cached(
                    "INSERT INTO round_albums (round, key, votes) VALUES (?1, ?2, ?3) \
                     ON CONFLICT (round, key) DO UPDATE SET votes = votes + ?3",
                )?;
                for ((round, key), n) in round_albums {
                    album.execute(params![round, key, n])?;
                }
                let mut total = tx.prepare_cached(
                    "INSERT INTO round_totals (round, total) VALUES (?1, ?2) \
                     ON CONFLICT (round) DO UPDATE SET total = total + ?2",
                )?;
                for (round, n) in round_totals {
                    total.execute(params![round, n])?;
                }
            }
            if let Some(newest) = newest {
                tx.execute(
                    "UPDATE totals SET total = total + ?1, received_at = ?2, counted_at = ?3 WHERE id = 1",
                    params![counted, newest, counted_at],
                )?;
                tx.execute(
                    "INSERT INTO timeline (at, n, total) SELECT ?1, ?2, total FROM totals WHERE id = 1",
                    params![counted_at, counted],
                )?;
            }
            set_position(&tx, pipelines::TALLY, last)?;
            let total: i64 = tx.query_row("SELECT total FROM totals WHERE id = 1", [], |r| r.get(0))?;
            tx.commit()?;
            Ok(TallyApplied::Counted { counted, duplicates, total: total as u64, late })
        })
        .await?;
        // The position is on disk either way: the source's commit after this has nothing to store.
        match applied {
            TallyApplied::Counted { .. } => self.note_stored(pipelines::TALLY, last),
            TallyApplied::Refused { stored } => self.note_stored(pipelines::TALLY, stored),
        }
        Ok(applied)
    }

    /// Logs votes (ids already logged are replays and are skipped); returns how many were new. The
    /// log's position is its source's to store, after this (the insert is idempotent).
    pub async fn log_votes(self: &Arc<Self>, votes: Vec<VoteMessage>, counted_at: String) -> Result<u64, StorageError> {
        self.with_sink_write(move |db| {
            let tx = db.transaction()?;
            let mut inserted = 0;
            {
                let mut insert = tx.prepare_cached(
                    "INSERT OR IGNORE INTO logs \
                     (id, name, album, year, rank, path, received_at, received_ms, counted_at, round) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                )?;
                for m in &votes {
                    let received_ms = bandvote_core::time::parse(&m.received_at).map_or(0, |t| t.timestamp_millis());
                    inserted += insert.execute(params![
                        m.id,
                        m.name,
                        m.album,
                        m.year,
                        // The column predates votes without a rank: empty is none.
                        m.rank.as_deref().unwrap_or_default(),
                        m.path.as_str(),
                        m.received_at,
                        received_ms,
                        counted_at,
                        m.round
                    ])? as u64;
                }
            }
            tx.commit()?;
            Ok(inserted)
        })
        .await
    }

    /// The position the next appended vote will get.
    pub async fn end_position(self: &Arc<Self>) -> Result<u64, StorageError> {
        // Pruning may have emptied the queue; positions never go back, so they bound it too.
        self.with_sink(|db| {
            db.query_row(
                "SELECT max((SELECT coalesce(max(seq), 0) FROM queue), (SELECT coalesce(max(seq), 0) FROM positions))",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n as u64 + 1)
        })
        .await
    }

    /// Forgets idempotency keys past their expiry and queue entries every pipeline has applied, in
    /// slices of at most [`PRUNE_SLICE`] rows of each table, each slice its own turn at the write
    /// lock (and each delete its own transaction): a minute of queue at the peak is a million rows,
    /// and the queue's writer (every vote's answer) waits while a slice is deleted.
    pub async fn prune(self: &Arc<Self>, applied_by_all: u64, now_ms: i64) -> Result<(), StorageError> {
        loop {
            let deleted = self
                .with_sink_write(move |db| {
                    let seen = db.execute(
                        "DELETE FROM seen WHERE id IN (SELECT id FROM seen WHERE expires_ms < ?1 LIMIT ?2)",
                        params![now_ms, PRUNE_SLICE],
                    )?;
                    let queue = db.execute(
                        "DELETE FROM queue WHERE seq IN (SELECT seq FROM queue WHERE seq <= ?1 ORDER BY seq LIMIT ?2)",
                        params![applied_by_all as i64, PRUNE_SLICE],
                    )?;
                    Ok(seen.max(queue))
                })
                .await?;
            if deleted < PRUNE_SLICE {
                return Ok(());
            }
        }
    }

    /// The counters, consistent with each other.
    pub async fn counters(self: &Arc<Self>) -> Result<Counters, StorageError> {
        self.with_reader(|db| {
            let tx = db.transaction()?;
            let mut counters = Counters::default();
            {
                let mut bands = tx.prepare_cached("SELECT name, votes FROM bands")?;
                for row in bands.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))? {
                    let (name, votes) = row?;
                    counters.counts.bands.insert(name, votes as u64);
                }
                let mut albums = tx.prepare_cached("SELECT key, votes FROM albums")?;
                for row in albums.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))? {
                    let (key, votes) = row?;
                    counters.counts.albums.insert(key, votes as u64);
                }
            }
            let (total, received, counted) =
                tx.query_row("SELECT total, received_at, counted_at FROM totals WHERE id = 1", [], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, Option<String>>(1)?, r.get::<_, Option<String>>(2)?))
                })?;
            counters.counts.total = total as u64;
            counters.received_at = received;
            counters.counted_at = counted;
            tx.finish()?;
            Ok(counters)
        })
        .await
    }

    /// Round `id`'s counters (the default round's are [`Storage::counters`]).
    pub async fn round_counts(self: &Arc<Self>, id: &str) -> Result<Counts, StorageError> {
        let id = id.to_owned();
        self.with_reader(move |db| {
            let tx = db.transaction()?;
            let mut counts = Counts::default();
            {
                let mut bands = tx.prepare_cached("SELECT name, votes FROM round_bands WHERE round = ?1")?;
                for row in bands.query_map([&id], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))? {
                    let (name, votes) = row?;
                    counts.bands.insert(name, votes as u64);
                }
                let mut albums = tx.prepare_cached("SELECT key, votes FROM round_albums WHERE round = ?1")?;
                for row in albums.query_map([&id], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))? {
                    let (key, votes) = row?;
                    counts.albums.insert(key, votes as u64);
                }
            }
            let total: Option<i64> =
                tx.query_row("SELECT total FROM round_totals WHERE round = ?1", [&id], |r| r.get(0)).optional()?;
            counts.total = total.unwrap_or(0) as u64;
            tx.finish()?;
            Ok(counts)
        })
        .await
    }

    /// Round `id`'s votes in the log, counted.
    pub async fn logged_round_counts(self: &Arc<Self>, id: &str) -> Result<Counts, StorageError> {
        self.logged_counts(Some(id)).await
    }

    /// The votes in the log, counted: round `round`'s, or all of them.
    pub async fn logged_counts(self: &Arc<Self>, round: Option<&str>) -> Result<Counts, StorageError> {
        let round = round.map(str::to_owned);
        self.with_reader(move |db| {
            let mut statement = db.prepare_cached("SELECT name, album FROM logs WHERE ?1 IS NULL OR round = ?1")?;
            let mut counts = Counts::default();
            for row in statement.query_map([&round], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))? {
                let (band, album) = row?;
                counts.add(&band, &album);
            }
            Ok(counts)
        })
        .await
    }

    /// Seals round `id`: the tally counts no more of its votes (see [`TallyApplied::Counted::late`]).
    /// Idempotent.
    pub async fn seal(self: &Arc<Self>, id: &str) -> Result<(), StorageError> {
        let (id, at) = (id.to_owned(), bandvote_core::time::now());
        self.with_sink_write(move |db| {
            db.execute("INSERT OR IGNORE INTO sealed (round, at) VALUES (?1, ?2)", params![id, at]).map(drop)
        })
        .await
    }

    /// The votes set aside as late, counted per round.
    pub async fn late(self: &Arc<Self>) -> Result<BTreeMap<String, Counts>, StorageError> {
        self.with_reader(|db| {
            let mut statement = db.prepare_cached("SELECT round, name, album FROM late")?;
            let mut rounds: BTreeMap<String, Counts> = BTreeMap::new();
            let rows = statement.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get(2)?)))?;
            for row in rows {
                let (round, band, album): (String, String, String) = row?;
                rounds.entry(round).or_default().add(&band, &album);
            }
            Ok(rounds)
        })
        .await
    }

    /// Whether the counters and the log have applied everything queued so far.
    pub async fn caught_up(self: &Arc<Self>) -> Result<bool, StorageError> {
        let last = self.end_position().await? - 1;
        Ok(self.position(pipelines::TALLY).await? >= last && self.position(pipelines::LOG).await? >= last)
    }

    /// The newest `limit` logged votes, newest first.
    pub async fn latest_logs(self: &Arc<Self>, limit: u64) -> Result<Vec<Logged>, StorageError> {
        self.with_reader(move |db| {
            query_logs(
                db,
                "SELECT id, name, album, year, rank, path, received_at, round FROM logs \
                 ORDER BY received_ms DESC, id DESC LIMIT ?1",
                params![limit as i64],
            )
        })
        .await
    }

    /// Votes received at or after `since_ms` (Unix ms), oldest first, at most `limit`.
    pub async fn logs_since(self: &Arc<Self>, since_ms: i64, limit: u64) -> Result<Vec<Logged>, StorageError> {
        self.with_reader(move |db| {
            query_logs(
                db,
                "SELECT id, name, album, year, rank, path, received_at, round FROM logs \
                 WHERE received_ms >= ?1 ORDER BY received_ms, id LIMIT ?2",
                params![since_ms, limit as i64],
            )
        })
        .await
    }

    /// Up to `limit` votes of round `id`, oldest first, after the vote `after` (its `received_at` in
    /// Unix ms and its id; `None`: from the first).
    pub async fn round_logs_after(
        self: &Arc<Self>,
        id: &str,
        after: Option<(i64, String)>,
        limit: u64,
    ) -> Result<Vec<Logged>, StorageError> {
        let id = id.to_owned();
        let (after_ms, after_id) = after.unwrap_or((i64::MIN, String::new()));
        self.with_reader(move |db| {
            query_logs(
                db,
                "SELECT id, name, album, year, rank, path, received_at, round FROM logs \
                 WHERE round = ?1 AND (received_ms, id) > (?2, ?3) ORDER BY received_ms, id LIMIT ?4",
                params![id, after_ms, after_id, limit as i64],
            )
        })
        .await
    }

    /// Round `id`'s logged votes as leaves of its Merkle tree, by id (bytewise), after `after`, at
    /// most `limit` (the votes set aside as late among them: the caller leaves them out).
    pub async fn round_leaves_after(
        self: &Arc<Self>,
        id: &str,
        after: Option<String>,
        limit: u64,
    ) -> Result<Vec<Leaf>, StorageError> {
        let (id, after) = (id.to_owned(), after.unwrap_or_default());
        self.with_reader(move |db| {
            let mut statement = db.prepare_cached(
                "SELECT id, name, album, year, rank FROM logs WHERE round = ?1 AND id > ?2 ORDER BY id LIMIT ?3",
            )?;
            let rows = statement.query_map(params![id, after, limit as i64], |r| leaf_of(r, &id))?;
            rows.collect()
        })
        .await
    }

    /// Round `id`'s logged votes as leaves, in order, but those in `late` (see
    /// [`Self::round_leaves_after`]).
    pub async fn round_leaves(
        self: &Arc<Self>,
        id: &str,
        late: &std::collections::HashSet<String>,
    ) -> Result<Vec<Leaf>, StorageError> {
        let (mut leaves, mut after): (Vec<Leaf>, Option<String>) = (Vec::new(), None);
        loop {
            let page = self.round_leaves_after(id, after.take(), 50_000).await?;
            let Some(last) = page.last() else { return Ok(leaves) };
            after = Some(last.id.clone());
            leaves.extend(page.into_iter().filter(|leaf| !late.contains(&leaf.id)));
        }
    }

    /// The ids of round `id`'s votes set aside as late.
    pub async fn late_ids(self: &Arc<Self>, id: &str) -> Result<std::collections::HashSet<String>, StorageError> {
        let id = id.to_owned();
        self.with_reader(move |db| {
            let mut statement = db.prepare_cached("SELECT id FROM late WHERE round = ?1")?;
            let ids = statement.query_map([&id], |r| r.get::<_, String>(0))?;
            ids.collect()
        })
        .await
    }

    /// Vote `vote` of round `round` in the log, as a leaf.
    pub async fn leaf(self: &Arc<Self>, round: &str, vote: &str) -> Result<Option<Leaf>, StorageError> {
        let (round, vote) = (round.to_owned(), vote.to_owned());
        self.with_reader(move |db| {
            db.query_row(
                "SELECT id, name, album, year, rank FROM logs WHERE id = ?1 AND round = ?2",
                [&vote, &round],
                |r| leaf_of(r, &round),
            )
            .optional()
        })
        .await
    }

    /// Stores round `id`'s Merkle tree, whose leaves are the votes `ids` (in the leaves' order).
    pub async fn store_tree(self: &Arc<Self>, id: &str, tree: &Tree, ids: Vec<String>) -> Result<(), StorageError> {
        let id = id.to_owned();
        let levels: Vec<Vec<u8>> =
            tree.levels().iter().map(|level| level.iter().flatten().copied().collect()).collect();
        let (size, root) = (tree.size() as i64, bandvote_core::merkle::hex(&tree.root()));
        self.with_sink_write(move |db| {
            let tx = db.transaction()?;
            for table in ["merkle_meta", "merkle_levels", "merkle_ids"] {
                tx.execute(&format!("DELETE FROM {table} WHERE round = ?1"), [&id])?;
            }
            {
                let mut level_row =
                    tx.prepare_cached("INSERT INTO merkle_levels (round, level, hashes) VALUES (?1, ?2, ?3)")?;
                for (level, hashes) in levels.iter().enumerate() {
                    level_row.execute(params![id, level as i64, hashes])?;
                }
                let mut id_row = tx.prepare_cached("INSERT INTO merkle_ids (round, id, idx) VALUES (?1, ?2, ?3)")?;
                for (index, vote) in ids.iter().enumerate() {
                    id_row.execute(params![id, vote, index as i64])?;
                }
            }
            tx.execute("INSERT INTO merkle_meta (round, size, root) VALUES (?1, ?2, ?3)", params![id, size, root])?;
            tx.commit()
        })
        .await
    }

    /// The root of round `id`'s stored tree, if one is stored.
    pub async fn tree_root(self: &Arc<Self>, id: &str) -> Result<Option<String>, StorageError> {
        let id = id.to_owned();
        self.with_reader(move |db| {
            db.query_row("SELECT root FROM merkle_meta WHERE round = ?1", [&id], |r| r.get(0)).optional()
        })
        .await
    }

    /// What round `id`'s stored tree says of vote `vote` (its proof, or not a leaf, or no tree). Each
    /// node of the path is read from its level by range.
    pub async fn proof(self: &Arc<Self>, id: &str, vote: &str) -> Result<Lookup, StorageError> {
        let (id, vote) = (id.to_owned(), vote.to_owned());
        self.with_reader(move |db| {
            let tx = db.transaction()?;
            let meta: Option<(i64, String)> = tx
                .query_row("SELECT size, root FROM merkle_meta WHERE round = ?1", [&id], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?;
            let index: Option<i64> = tx
                .query_row("SELECT idx FROM merkle_ids WHERE round = ?1 AND id = ?2", [&id, &vote], |r| r.get(0))
                .optional()?;
            let Some((size, root)) = meta else { return Ok(Lookup::NoTree) };
            let Some(index) = index else { return Ok(Lookup::NotALeaf) };
            let Some(positions) = bandvote_core::merkle::path_positions(size as u64, index as u64) else {
                return Ok(Lookup::NotALeaf);
            };
            // Each level's row, found once.
            let rows: HashMap<i64, i64> = {
                let mut levels = tx.prepare_cached("SELECT level, rowid FROM merkle_levels WHERE round = ?1")?;
                levels.query_map([&id], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<rusqlite::Result<_>>()?
            };
            let mut path = Vec::with_capacity(positions.len());
            for (level, i) in positions {
                let rowid = *rows.get(&(level as i64)).ok_or(rusqlite::Error::QueryReturnedNoRows)?;
                let blob = tx.blob_open(rusqlite::MAIN_DB, "merkle_levels", "hashes", rowid, true)?;
                let mut node = [0u8; 32];
                blob.read_at_exact(&mut node, (i * 32) as usize)?;
                path.push(node);
            }
            tx.finish()?;
            Ok(Lookup::Found(Proof { index: index as u64, size: size as u64, path, root }))
        })
        .await
    }

    /// Votes in the log.
    pub async fn logged(self: &Arc<Self>) -> Result<u64, StorageError> {
        self.with_reader(|db| db.query_row("SELECT count(*) FROM logs", [], |r| r.get::<_, i64>(0)).map(|n| n as u64))
            .await
    }

    /// A trivial read, for readiness.
    pub async fn ping(self: &Arc<Self>) -> Result<(), StorageError> {
        self.with_reader(|db| db.query_row("SELECT 1", [], |r| r.get::<_, i64>(0)).map(drop)).await
    }

    async fn with_sink<T: Send + 'static>(
        self: &Arc<Self>,
        work: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StorageError> {
        let storage = Arc::clone(self);
        run_blocking(move || work(&mut storage.sink.lock().unwrap_or_else(|e| e.into_inner()))).await
    }

    async fn with_sink_write<T: Send + 'static>(
        self: &Arc<Self>,
        work: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StorageError> {
        let storage = Arc::clone(self);
        run_blocking(move || {
            let _writing = storage.write.lock().unwrap_or_else(|e| e.into_inner());
            work(&mut storage.sink.lock().unwrap_or_else(|e| e.into_inner()))
        })
        .await
    }

    async fn with_reader<T: Send + 'static>(
        self: &Arc<Self>,
        work: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StorageError> {
        let storage = Arc::clone(self);
        run_blocking(move || work(&mut storage.reader.lock().unwrap_or_else(|e| e.into_inner()))).await
    }
}

async fn run_blocking<T: Send + 'static>(
    work: impl FnOnce() -> rusqlite::Result<T> + Send + 'static,
) -> Result<T, StorageError> {
    tokio::task::spawn_blocking(work).await.map_err(|_| StorageError::Closed)?.map_err(StorageError::from)
}

fn position(db: &Connection, pipeline: &str) -> rusqlite::Result<u64> {
    let seq: Option<i64> =
        db.query_row("SELECT seq FROM positions WHERE pipeline = ?1", params![pipeline], |r| r.get(0)).optional()?;
    Ok(seq.unwrap_or(0) as u64)
}

fn set_position(db: &Connection, pipeline: &str, seq: u64) -> rusqlite::Result<()> {
    db.execute(
        "INSERT INTO positions (pipeline, seq) VALUES (?1, ?2) ON CONFLICT (pipeline) DO UPDATE SET seq = excluded.seq",
        params![pipeline, seq as i64],
    )
    .map(drop)
}

/// A row `id, name, album, year, rank` of the log as a leaf of round `round`'s tree.
fn leaf_of(row: &rusqlite::Row<'_>, round: &str) -> rusqlite::Result<Leaf> {
    let rank: String = row.get(4)?;
    Ok(Leaf {
        id: row.get(0)?,
        round: round.to_owned(),
        band: row.get(1)?,
        album: row.get(2)?,
        year: row.get(3)?,
        // The column predates votes without a rank: empty is none.
        rank: (!rank.is_empty()).then_some(rank),
    })
}

fn query_logs(db: &Connection, sql: &str, params: impl rusqlite::Params) -> rusqlite::Result<Vec<Logged>> {
    let mut statement = db.prepare_cached(sql)?;
    let rows = statement.query_map(params, |r| {
        Ok(Logged {
            id: r.get(0)?,
            name: r.get(1)?,
            album: r.get(2)?,
            year: r.get(3)?,
            rank: r.get(4)?,
            path: r.get(5)?,
            received_at: r.get(6)?,
            round: r.get(7)?,
        })
    })?;
    rows.collect()
}

/// Creates `dir` (and its parents) readable by this user only: it holds every vote and voter key.
/// An existing directory keeps its permissions (the operator chose them).
/// Creates `files` in `dir` if missing and makes them and SQLite's journal files (which take the
/// database file's permissions when SQLite creates them) readable and writable by this user only.
fn make_private(dir: &Path, files: &[&str]) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        for file in files {
            File::options().create(true).truncate(false).write(true).mode(0o600).open(dir.join(file))?;
        }
        let journals = [format!("{DATABASE_FILE}-wal"), format!("{DATABASE_FILE}-shm")];
        for file in files.iter().map(|f| (*f).to_owned()).chain(journals) {
            match std::fs::set_permissions(dir.join(&file), std::fs::Permissions::from_mode(0o600)) {
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                other => other?,
            }
        }
    }
    #[cfg(not(unix))]
    let _ = (dir, files);
    Ok(())
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// Turns SQLite's errors at open time into messages that say what to do.
fn classify(dir: &Path, error: rusqlite::Error) -> StorageError {
    let text = error.to_string();
    let corrupt = matches!(
        error.sqlite_error_code(),
        Some(rusqlite::ErrorCode::NotADatabase | rusqlite::ErrorCode::DatabaseCorrupt)
    ) || text.contains("corrupt")
        || text.contains("not a bandvote database");
    if corrupt {
        StorageError::Corrupt {
            dir: dir.to_owned(),
            message: format!(
                "{DATABASE_FILE} is damaged or not a bandvote database ({text}); move it away to start afresh, or \
                 choose another --data-dir"
            ),
        }
    } else if matches!(error.sqlite_error_code(), Some(rusqlite::ErrorCode::ReadOnly | rusqlite::ErrorCode::CannotOpen))
    {
        StorageError::Directory { dir: dir.to_owned(), message: format!("cannot write {DATABASE_FILE}: {text}") }
    } else {
        StorageError::Sqlite(error)
    }
}

impl VoteQueue for Storage {
    fn enqueue<'a>(&'a self, message: &'a VoteMessage, client_key: bool) -> BoxFuture<'a, Result<(), QueueError>> {
        Box::pin(async move {
            match self.append(message, client_key).await {
                Ok(_) => Ok(()),
                Err(error) => Err(QueueError::Unavailable(error.to_string())),
            }
        })
    }

    fn check(&self) -> BoxFuture<'_, Result<(), CheckError>> {
        Box::pin(async move { if self.appender.is_running() { Ok(()) } else { Err("embedded queue stopped".into()) } })
    }

    fn flush(&self) -> BoxFuture<'_, ()> {
        // Every answered append is already committed.
        Box::pin(async {})
    }
}

/// The rounds in the embedded database (`bandvote up`'s round store).
#[derive(Debug, Clone)]
pub struct EmbeddedRounds(pub Arc<Storage>);

impl RoundStore for EmbeddedRounds {
    fn load(&self) -> round::BoxFuture<'_, Result<Stored, round::StoreError>> {
        Box::pin(async move {
            let read = self.0.with_reader(|db| {
                let version = rounds_version(db)?;
                let mut statement = db.prepare_cached("SELECT round FROM rounds")?;
                let rounds: Vec<String> = statement.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?;
                Ok((version, rounds))
            });
            let (version, texts) = read.await.map_err(|e| round::StoreError(e.to_string()))?;
            let rounds = texts
                .iter()
                .map(|text| serde_json::from_str::<Round>(text))
                .collect::<Result<_, _>>()
                .map_err(|e| round::StoreError(format!("a stored round is not a round: {e}")))?;
            Ok(Stored { version, rounds })
        })
    }

    fn save<'a>(&'a self, version: u64, round: &'a Round) -> round::BoxFuture<'a, Result<bool, round::StoreError>> {
        Box::pin(async move {
            let json = serde_json::to_string(round).map_err(|e| round::StoreError(e.to_string()))?;
            let id = round.id.clone();
            let write = self.0.with_sink_write(move |db| {
                let tx = db.transaction()?;
                if rounds_version(&tx)? != version {
                    return Ok(false);
                }
                tx.execute(
                    "INSERT INTO rounds (id, round) VALUES (?1, ?2) ON CONFLICT (id) DO UPDATE SET round = excluded.round",
                    params![id, json],
                )?;
                bump_rounds_version(&tx, version)?;
                tx.commit()?;
                Ok(true)
            });
            write.await.map_err(|e| round::StoreError(e.to_string()))
        })
    }

    fn add_refusals<'a>(
        &'a self,
        refusals: &'a [(String, &'static str, u64)],
    ) -> round::BoxFuture<'a, Result<(), round::StoreError>> {
        let refusals = refusals.to_vec();
        Box::pin(async move {
            let write = self.0.with_sink_write(move |db| {
                let tx = db.transaction()?;
                {
                    let mut add = tx.prepare_cached(
                        "INSERT INTO round_refusals (round, reason, votes) VALUES (?1, ?2, ?3) \
                         ON CONFLICT (round, reason) DO UPDATE SET votes = votes + excluded.votes",
                    )?;
                    for (round, reason, n) in &refusals {
                        add.execute(params![round, reason, *n as i64])?;
                    }
                }
                tx.commit()
            });
            write.await.map_err(|e| round::StoreError(e.to_string()))
        })
    }

    fn refusals<'a>(
        &'a self,
        id: &'a str,
    ) -> round::BoxFuture<'a, Result<std::collections::BTreeMap<String, u64>, round::StoreError>> {
        let id = id.to_owned();
        Box::pin(async move {
            let read = self.0.with_reader(move |db| {
                let mut statement = db.prepare_cached("SELECT reason, votes FROM round_refusals WHERE round = ?1")?;
                let rows = statement.query_map([id], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64)))?;
                rows.collect::<rusqlite::Result<std::collections::BTreeMap<_, _>>>()
            });
            read.await.map_err(|e| round::StoreError(e.to_string()))
        })
    }

    fn remove<'a>(&'a self, version: u64, id: &'a str) -> round::BoxFuture<'a, Result<bool, round::StoreError>> {
        Box::pin(async move {
            let id = id.to_owned();
            let write = self.0.with_sink_write(move |db| {
                let tx = db.transaction()?;
                if rounds_version(&tx)? != version {
                    return Ok(false);
                }
                tx.execute("DELETE FROM rounds WHERE id = ?1", params![id])?;
                bump_rounds_version(&tx, version)?;
                tx.commit()?;
                Ok(true)
            });
            write.await.map_err(|e| round::StoreError(e.to_string()))
        })
    }
}

fn bump_rounds_version(db: &Connection, version: u64) -> rusqlite::Result<()> {
    db.execute(
        "INSERT INTO meta (key, value) VALUES ('rounds_version', ?1) \
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        [(version + 1).to_string()],
    )?;
    Ok(())
}

fn rounds_version(db: &Connection) -> rusqlite::Result<u64> {
    let stored: Option<String> =
        db.query_row("SELECT value FROM meta WHERE key = 'rounds_version'", [], |r| r.get(0)).optional()?;
    Ok(stored.and_then(|v| v.parse().ok()).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection's journal mode and synchronous level (2 is `FULL`: the WAL is synced to disk at
    /// every commit, so a committed vote survives a power cut, which a `kill -9` cannot show).
    fn settings(db: &Connection) -> (String, i64) {
        let mode = db.query_row("PRAGMA journal_mode", [], |r| r.get(0)).expect("journal_mode");
        let synchronous = db.query_row("PRAGMA synchronous", [], |r| r.get(0)).expect("synchronous");
        (mode, synchronous)
    }

    #[test]
    fn every_connection_syncs_each_commit_to_disk() {
        let dir = std::env::temp_dir().join(format!("bandvote-embedded-settings-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let storage = Storage::open(&dir, Duration::from_secs(60)).expect("opens");
        let full = ("wal".to_owned(), 2);
        // The queue's writer runs on a connection made by the same function.
        let connection = schema::connect(&dir.join(DATABASE_FILE)).expect("connects");
        assert_eq!(settings(&connection), full, "a connection as the queue's writer opens it");
        assert_eq!(settings(&storage.sink.lock().expect("sink")), full, "the pipelines' connection");
        assert_eq!(settings(&storage.reader.lock().expect("reader")), full, "the readers' connection");
        drop((connection, storage));
        std::fs::remove_dir_all(&dir).expect("removed");
    }
}
