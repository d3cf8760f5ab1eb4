//! The storage contract of bandvote, spelled once (DESIGN.md, "Redis" and "MongoDB"), and the tools
//! that read one store to check or rebuild the other:
//! - [`keys`]: the Redis keys of the live counters, read by the API and Grafana, written by the
//!   tally pipeline;
//! - [`log`]: the MongoDB vote log: its collection, its document, a client that fails fast;
//! - [`recount`]: rebuilding the Redis counters from the log; [`audit`]: comparing the two;
//! - [`rounds`]: the show's rounds in Redis, read by every gateway replica and the API;
//! - [`redis_client`] (from bandvote-runtime, where the gateways find it too): where Redis is (one
//!   URL, or the primary Sentinel names) and a connection that follows a failover;
//! - [`redact`]: a store URL fit for logs and errors.

#[cfg(feature = "log")]
pub mod audit;
#[cfg(feature = "log")]
pub mod log;
pub mod merkle;
#[cfg(feature = "log")]
pub mod recount;
pub mod rounds;

pub use bandvote_runtime::{redis_client, url::redact};

/// Redis URL of every service when none is given.
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";
/// MongoDB URL of every service when none is given.
pub const DEFAULT_MONGO_URL: &str = "mongodb://127.0.0.1:27017";
/// MongoDB database of every service when none is given.
pub const DEFAULT_MONGO_DB: &str = "bandvote";

/// Redis keys of the contract, read by Grafana and the API.
pub mod keys {
    /// Hash band → count.
    pub const BAND: &str = "votes:band";
    /// Hash `<band> / <album>` → count.
    pub const ALBUM: &str = "votes:album";
    /// Integer, all counted votes.
    pub const TOTAL: &str = "votes:total";
    /// Hash `{received_at, counted_at}` of the newest counted vote.
    pub const LAST: &str = "votes:last";
    /// Stream, one entry per applied batch: `n`, `total`.
    pub const TIMELINE: &str = "votes:timeline";
    /// Hash `<topic>:<partition>` → last applied offset.
    pub const OFFSETS: &str = "votes:offsets";
    /// Hash `<topic>:<partition>` → fingerprint of the record at that offset (a reset queue is told
    /// apart by it).
    pub const MARKS: &str = "votes:offsets:marks";
    /// Prefix of the idempotency-key markers.
    pub const SEEN_PREFIX: &str = "votes:seen:";
    /// Prefix of a round's counters: `votes:round:<id>:band`, `:album`, `:total`.
    pub const ROUND_PREFIX: &str = "votes:round:";
    /// Hash round id → the round (JSON).
    pub const ROUNDS: &str = "rounds";
    /// Integer, changes to `rounds` so far.
    pub const ROUNDS_VERSION: &str = "rounds:version";
    /// List of the rounds' ids, the one to watch first (open, then scheduled, then closed; see
    /// `bandvote_core::round::picker_order`): the dashboards' round picker. The consumers write it.
    pub const ROUNDS_PICKER: &str = "rounds:picker";
    /// Hash round id → when it was sealed: the tally counts no more votes for these rounds.
    pub const SEALED: &str = "votes:sealed";
    /// Hash vote id → `<round>\n<band>\n<album>`: votes for a sealed round that reached the tally
    /// afterwards, set aside and never counted (they are in the log, which the audit allows for).
    pub const LATE: &str = "votes:late";

    /// The keys of round `id`'s counters: band, album, total.
    pub fn round(id: &str) -> [String; 3] {
        ["band", "album", "total"].map(|suffix| format!("{ROUND_PREFIX}{id}:{suffix}"))
    }

    /// Round `id`'s votes refused at the gateways, by reason (a hash).
    pub fn round_refused(id: &str) -> String {
        format!("{ROUND_PREFIX}{id}:refused")
    }
}
