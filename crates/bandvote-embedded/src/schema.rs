//! The database's tables, its settings and its integrity check.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension};

/// The schema version this build writes.
const VERSION: i64 = 2;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
-- The queue: one row per accepted vote, positions without gaps.
CREATE TABLE IF NOT EXISTS queue (
    seq INTEGER PRIMARY KEY,
    message BLOB NOT NULL,
    client_key INTEGER NOT NULL
);
-- Each pipeline's last applied position.
CREATE TABLE IF NOT EXISTS positions (pipeline TEXT PRIMARY KEY, seq INTEGER NOT NULL);
-- The counters (votes:band, votes:album, votes:total, votes:last).
CREATE TABLE IF NOT EXISTS bands (name TEXT PRIMARY KEY, votes INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS albums (key TEXT PRIMARY KEY, votes INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS totals (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    total INTEGER NOT NULL,
    received_at TEXT,
    counted_at TEXT
);
INSERT OR IGNORE INTO totals (id, total) VALUES (1, 0);
-- votes:timeline: one row per applied batch.
CREATE TABLE IF NOT EXISTS timeline (at TEXT NOT NULL, n INTEGER NOT NULL, total INTEGER NOT NULL);
-- votes:seen: clients' idempotency keys already counted.
CREATE TABLE IF NOT EXISTS seen (id TEXT PRIMARY KEY, expires_ms INTEGER NOT NULL);
-- The log (MongoDB's logs collection).
CREATE TABLE IF NOT EXISTS logs (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    album TEXT NOT NULL,
    year TEXT NOT NULL,
    rank TEXT NOT NULL,
    path TEXT NOT NULL,
    received_at TEXT NOT NULL,
    received_ms INTEGER NOT NULL,
    counted_at TEXT NOT NULL,
    round TEXT NOT NULL DEFAULT 'default'
);
CREATE INDEX IF NOT EXISTS logs_by_received ON logs (received_ms, id);
-- The rounds (Redis's rounds hash): id -> the round's JSON; meta's rounds_version counts changes.
CREATE TABLE IF NOT EXISTS rounds (id TEXT PRIMARY KEY, round TEXT NOT NULL);
-- Each round's counters (votes:round:<id>:band, :album, :total); the default round's are the totals.
CREATE TABLE IF NOT EXISTS round_bands (
    round TEXT NOT NULL, name TEXT NOT NULL, votes INTEGER NOT NULL, PRIMARY KEY (round, name)
);
CREATE TABLE IF NOT EXISTS round_albums (
    round TEXT NOT NULL, key TEXT NOT NULL, votes INTEGER NOT NULL, PRIMARY KEY (round, key)
);
CREATE TABLE IF NOT EXISTS round_totals (round TEXT PRIMARY KEY, total INTEGER NOT NULL);
-- Votes refused at the gateways, per round and reason (votes:round:<id>:refused).
CREATE TABLE IF NOT EXISTS round_refusals (
    round TEXT NOT NULL, reason TEXT NOT NULL, votes INTEGER NOT NULL, PRIMARY KEY (round, reason)
);
-- Final rounds: the tally counts no more of their votes (votes:sealed).
CREATE TABLE IF NOT EXISTS sealed (round TEXT PRIMARY KEY, at TEXT NOT NULL);
-- Votes for a sealed round that reached the tally afterwards, set aside, counted nowhere (votes:late).
CREATE TABLE IF NOT EXISTS late (id TEXT PRIMARY KEY, round TEXT NOT NULL, name TEXT NOT NULL, album TEXT NOT NULL);
-- A final round's Merkle tree: each level's hashes (32 bytes each) in one blob, read by range; the
-- leaves' vote ids with their index; size and root, written last (votes:round:<id>:merkle*).
CREATE TABLE IF NOT EXISTS merkle_levels (round TEXT NOT NULL, level INTEGER NOT NULL, hashes BLOB NOT NULL);
CREATE UNIQUE INDEX IF NOT EXISTS merkle_levels_by_round ON merkle_levels (round, level);
CREATE TABLE IF NOT EXISTS merkle_ids (
    round TEXT NOT NULL, id TEXT NOT NULL, idx INTEGER NOT NULL, PRIMARY KEY (round, id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS merkle_meta (round TEXT PRIMARY KEY, size INTEGER NOT NULL, root TEXT NOT NULL);
";

/// Run after [`SCHEMA`] and the upgrades, which may add the columns they index.
const INDEXES: &str = "CREATE INDEX IF NOT EXISTS logs_by_round ON logs (round, received_ms, id);
    CREATE INDEX IF NOT EXISTS logs_by_round_id ON logs (round, id);";

/// Opens a connection with the settings every connection uses: WAL, fsync on commit, a wait when
/// another connection holds the write lock.
pub(crate) fn connect(path: &Path) -> rusqlite::Result<Connection> {
    let db = Connection::open(path)?;
    db.busy_timeout(std::time::Duration::from_secs(10))?;
    db.pragma_update(None, "journal_mode", "WAL")?;
    db.pragma_update(None, "synchronous", "FULL")?;
    db.pragma_update(None, "foreign_keys", "ON")?;
    Ok(db)
}

/// Checks the file (a damaged page, or a database that is not ours, is an error) and creates or
/// upgrades the tables.
pub(crate) fn check_and_migrate(db: &Connection) -> rusqlite::Result<()> {
    let check: String = db.query_row("PRAGMA quick_check", [], |r| r.get(0))?;
    if check != "ok" {
        return Err(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CORRUPT),
            Some(format!("integrity check failed: {check}")),
        ));
    }
    let tables: i64 = db.query_row("SELECT count(*) FROM sqlite_schema WHERE type = 'table'", [], |r| r.get(0))?;
    let has_meta: bool =
        db.query_row("SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = 'meta'", [], |r| r.get(0))?;
    if tables > 0 && !has_meta {
        return Err(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CORRUPT),
            Some("not a bandvote database (it has other tables)".into()),
        ));
    }
    db.execute_batch(SCHEMA)?;
    let version: Option<String> =
        db.query_row("SELECT value FROM meta WHERE key = 'schema_version'", [], |r| r.get(0)).optional()?;
    match version.as_deref().map(str::parse::<i64>) {
        None => {
            db.execute("INSERT INTO meta (key, value) VALUES ('schema_version', ?1)", [VERSION.to_string()])?;
        }
        Some(Ok(VERSION)) => {}
        // Version 1 had no rounds: its votes are the default round's.
        Some(Ok(1)) => {
            db.execute_batch(
                "ALTER TABLE logs ADD COLUMN round TEXT NOT NULL DEFAULT 'default';
                 UPDATE meta SET value = '2' WHERE key = 'schema_version';",
            )?;
        }
        Some(other) => {
            return Err(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CORRUPT),
                Some(format!("not a bandvote database of schema {VERSION} (found {other:?})")),
            ));
        }
    }
    db.execute_batch(INDEXES)
}
