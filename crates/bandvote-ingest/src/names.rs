//! The cap on distinct names: without a contest list anyone may vote for any band, so the number of
//! distinct bands, and of distinct albums (`<band> / <album>`), that are counted is capped
//! (`--max-names`). A vote for a name already known always passes; a vote for a new name beyond the
//! cap is a `400` naming the field, before anything is stored. Only votes the voter policy admitted
//! take a place: the gateways [`Names::check`] a vote first and [`Names::admit`] it after the policy.
//!
//! With a Redis URL shared by every gateway replica (the fair-voting one) the known names are two
//! Redis sets, `names:band` and `names:album`, and one Lua script admits a vote atomically across
//! replicas; each process keeps a local copy of the names it has seen admitted, so only a vote for a
//! name it does not know costs a round trip. The sets are seeded at start from the counters'
//! hashes (`votes:band`, `votes:album`) in the same Redis, so names counted before the cap existed
//! stay known. Without Redis the cap holds within this process, seeded by [`Names::seed`] (`bandvote
//! up` seeds it from its embedded counters, so that a restart keeps the cap honest).

use std::{
    collections::HashSet,
    sync::{Mutex, MutexGuard},
    time::Duration,
};

use anyhow::Context;
use axum::http::StatusCode;
use bandvote_core::Vote;
use bandvote_runtime::http::ApiError;
use bandvote_runtime::redis_client::{Redis, RedisTarget, Timeouts};
use redis::Script;
use secrecy::{ExposeSecret, SecretString};

/// Distinct bands, and distinct albums, counted at most when none is configured (`--max-names`).
pub const DEFAULT_MAX_NAMES: usize = 1000;

/// Redis set of the known bands.
pub const KNOWN_BANDS: &str = "names:band";
/// Redis set of the known albums (`<band> / <album>`).
pub const KNOWN_ALBUMS: &str = "names:album";
/// The counters' hashes the sets are seeded from (`bandvote_store::keys::BAND` and `ALBUM`).
const COUNTED: [&str; 2] = ["votes:band", "votes:album"];

/// How long a Redis call may take before the vote gets `503`.
const REDIS_TIMEOUT: Duration = Duration::from_secs(2);

/// The cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NamesConfig {
    /// Distinct bands counted at most, and distinct albums counted at most; 0: no cap. Default
    /// [`DEFAULT_MAX_NAMES`]. Applies only without a contest list.
    pub max_names: usize,
}

impl Default for NamesConfig {
    fn default() -> Self {
        Self { max_names: DEFAULT_MAX_NAMES }
    }
}

/// Why a vote's names are refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NamesError {
    /// The vote names a new band and the cap is reached.
    #[error("no new band is accepted: this show counts at most {0} distinct bands")]
    TooManyBands(usize),
    /// The vote names a new album and the cap is reached.
    #[error("no new album is accepted: this show counts at most {0} distinct albums")]
    TooManyAlbums(usize),
    /// Redis did not answer.
    #[error("names cap: redis: {0}")]
    Unavailable(String),
}

impl From<NamesError> for ApiError {
    fn from(error: NamesError) -> Self {
        match error {
            NamesError::TooManyBands(_) => ApiError::client(StatusCode::BAD_REQUEST, error.to_string(), Some("name")),
            NamesError::TooManyAlbums(_) => ApiError::client(StatusCode::BAD_REQUEST, error.to_string(), Some("album")),
            NamesError::Unavailable(_) => ApiError::unavailable(error, Duration::from_secs(1)),
        }
    }
}

/// The names known so far.
#[derive(Debug, Default)]
struct Known {
    bands: HashSet<String>,
    albums: HashSet<String>,
}

impl Known {
    /// Admits `band` and `album` (an album key), adding the new ones when `record`, unless one is
    /// new beyond `max`.
    fn admit(&mut self, max: usize, band: &str, album: &str, record: bool) -> Result<(), NamesError> {
        let (new_band, new_album) = (!self.bands.contains(band), !self.albums.contains(album));
        if new_band && self.bands.len() >= max {
            return Err(NamesError::TooManyBands(max));
        }
        if new_album && self.albums.len() >= max {
            return Err(NamesError::TooManyAlbums(max));
        }
        if record {
            self.remember(band, album);
        }
        Ok(())
    }

    fn remember(&mut self, band: &str, album: &str) {
        if !self.bands.contains(band) {
            self.bands.insert(band.to_owned());
        }
        if !self.albums.contains(album) {
            self.albums.insert(album.to_owned());
        }
    }
}

/// The same rule as [`Known::admit`], atomically in Redis: 0 admitted, 1 band refused, 2 album refused.
const ADMIT: &str = r"
-- KEYS: known bands, known albums; ARGV: band, album key, max, 1 to record the new names (else 0)
local max = tonumber(ARGV[3])
local new_band = redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 0
local new_album = redis.call('SISMEMBER', KEYS[2], ARGV[2]) == 0
if new_band and redis.call('SCARD', KEYS[1]) >= max then return 1 end
if new_album and redis.call('SCARD', KEYS[2]) >= max then return 2 end
if ARGV[4] ~= '1' then return 0 end
if new_band then redis.call('SADD', KEYS[1], ARGV[1]) end
if new_album then redis.call('SADD', KEYS[2], ARGV[2]) end
return 0
";

/// Adds every field of a counters hash to a known-names set.
const SEED: &str = r"
-- KEYS: counters hash, known set
local names = redis.call('HKEYS', KEYS[1])
for i = 1, #names, 1000 do
  redis.call('SADD', KEYS[2], unpack(names, i, math.min(i + 999, #names)))
end
return #names
";

/// The cap of one process, shared by its gateways.
pub struct Names {
    max: usize,
    /// Every name known: all of them without Redis, the ones seen admitted with Redis.
    known: Mutex<Known>,
    redis: Option<(Redis, Script)>,
}

impl Names {
    /// The cap within this process; `None` when `config` has none.
    pub fn local(config: NamesConfig) -> Option<Self> {
        (config.max_names > 0).then(|| Self { max: config.max_names, known: Mutex::default(), redis: None })
    }

    /// The cap across every replica sharing `redis_url` (seeding its sets from the counters there),
    /// or within this process without one; `None` when `config` has none.
    pub async fn connect(config: NamesConfig, redis_url: Option<&SecretString>) -> anyhow::Result<Option<Self>> {
        let Some(mut names) = Self::local(config) else { return Ok(None) };
        let Some(url) = redis_url else { return Ok(Some(names)) };
        let target = RedisTarget::parse(url.expose_secret()).context("invalid redis url for the names cap")?;
        let mut connection = target.connect(Timeouts::default()).await?;
        let seed = Script::new(SEED);
        for (counted, known) in COUNTED.into_iter().zip([KNOWN_BANDS, KNOWN_ALBUMS]) {
            let _: i64 = seed
                .key(counted)
                .key(known)
                .invoke_async(&mut connection)
                .await
                .with_context(|| format!("failed to seed {known} from {counted}"))?;
        }
        let (bands, albums): (Vec<String>, Vec<String>) = redis::pipe()
            .smembers(KNOWN_BANDS)
            .smembers(KNOWN_ALBUMS)
            .query_async(&mut connection)
            .await
            .context("failed to read the known names")?;
        names.seed(bands, albums);
        names.redis = Some((connection, Script::new(ADMIT)));
        Ok(Some(names))
    }

    /// Adds names already counted (they stay admitted even beyond the cap).
    pub fn seed(&self, bands: impl IntoIterator<Item = String>, albums: impl IntoIterator<Item = String>) {
        let mut known = self.known();
        known.bands.extend(bands);
        known.albums.extend(albums);
    }

    fn known(&self) -> MutexGuard<'_, Known> {
        self.known.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Admits a valid vote's band and album, remembering the new ones, or says which one is a new
    /// name beyond the cap.
    pub async fn admit(&self, vote: &Vote) -> Result<(), NamesError> {
        self.run(vote, true).await
    }

    /// Whether [`Names::admit`] would admit `vote` now, without remembering its names (the cap
    /// counts only the votes the voter policy admits: [`crate::fairness`]).
    pub async fn check(&self, vote: &Vote) -> Result<(), NamesError> {
        self.run(vote, false).await
    }

    async fn run(&self, vote: &Vote, record: bool) -> Result<(), NamesError> {
        let album = vote.album_key();
        let Some((connection, script)) = &self.redis else {
            return self.known().admit(self.max, &vote.name, &album, record);
        };
        {
            let known = self.known();
            if known.bands.contains(&vote.name) && known.albums.contains(&album) {
                return Ok(());
            }
        }
        let mut connection = connection.clone();
        let mut call = script.prepare_invoke();
        call.key(KNOWN_BANDS).key(KNOWN_ALBUMS).arg(&vote.name).arg(&album).arg(self.max).arg(u8::from(record));
        let reply = match tokio::time::timeout(REDIS_TIMEOUT, call.invoke_async::<i64>(&mut connection)).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(error)) => return Err(NamesError::Unavailable(error.to_string())),
            Err(_) => return Err(NamesError::Unavailable("no answer".into())),
        };
        match reply {
            0 => {
                if record {
                    self.known().remember(&vote.name, &album);
                }
                Ok(())
            }
            1 => Err(NamesError::TooManyBands(self.max)),
            _ => Err(NamesError::TooManyAlbums(self.max)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vote(band: &str, album: &str) -> Vote {
        Vote::from_strings(band, album, "1997", "9.5").expect("a valid vote")
    }

    #[tokio::test]
    async fn a_new_band_beyond_the_cap_is_refused_and_known_ones_still_pass() {
        let names = Names::local(NamesConfig { max_names: 2 }).expect("a cap");
        names.admit(&vote("A", "x")).await.expect("first band");
        names.admit(&vote("B", "x")).await.expect("second band");
        assert_eq!(names.admit(&vote("C", "x")).await, Err(NamesError::TooManyBands(2)));
        names.admit(&vote("A", "x")).await.expect("a known band and album");
        names.admit(&vote("B", "x")).await.expect("a known band and album");
    }

    #[tokio::test]
    async fn a_new_album_beyond_the_cap_is_refused_without_adding_its_band() {
        let names = Names::local(NamesConfig { max_names: 2 }).expect("a cap");
        names.admit(&vote("A", "x")).await.expect("A / x");
        names.admit(&vote("A", "y")).await.expect("A / y");
        assert_eq!(names.admit(&vote("B", "z")).await, Err(NamesError::TooManyAlbums(2)));
        names.admit(&vote("B", "x")).await.expect_err("B / x is a third album");
        assert_eq!(names.known().bands.len(), 1, "B was not remembered by a refused vote");
    }

    #[tokio::test]
    async fn a_check_remembers_nothing() {
        let names = Names::local(NamesConfig { max_names: 1 }).expect("a cap");
        names.check(&vote("A", "x")).await.expect("room for one");
        names.check(&vote("B", "y")).await.expect("still room: A was only checked");
        names.admit(&vote("B", "y")).await.expect("B takes the place");
        assert_eq!(names.check(&vote("A", "x")).await, Err(NamesError::TooManyBands(1)));
    }

    #[tokio::test]
    async fn seeded_names_pass_even_beyond_the_cap() {
        let names = Names::local(NamesConfig { max_names: 1 }).expect("a cap");
        names.seed(["A".to_owned(), "B".to_owned()], ["A / x".to_owned(), "B / y".to_owned()]);
        names.admit(&vote("B", "y")).await.expect("seeded");
        assert_eq!(names.admit(&vote("C", "y")).await, Err(NamesError::TooManyBands(1)));
    }

    #[test]
    fn zero_means_no_cap_and_refusals_are_400_naming_the_field() {
        assert!(Names::local(NamesConfig { max_names: 0 }).is_none());
        let band: ApiError = NamesError::TooManyBands(3).into();
        let album: ApiError = NamesError::TooManyAlbums(3).into();
        assert_eq!((band.status(), album.status()), (StatusCode::BAD_REQUEST, StatusCode::BAD_REQUEST));
        let unavailable: ApiError = NamesError::Unavailable("down".into()).into();
        assert_eq!(unavailable.status(), StatusCode::SERVICE_UNAVAILABLE);
    }

    /// A Redis database of this test's own, locked the way the integration tests lock theirs.
    async fn redis_database() -> (redis::aio::MultiplexedConnection, u32) {
        let client = redis::Client::open("redis://127.0.0.1:6379/0").expect("redis url");
        let mut redis =
            client.get_multiplexed_async_connection().await.expect("redis is not running: scripts/services up");
        for db in (1..=255).rev() {
            let taken: Option<String> = redis::cmd("SET")
                .arg(format!("bandvote-test-lock:{db}"))
                .arg("names-unit-test")
                .arg("NX")
                .arg("EX")
                .arg(120)
                .query_async(&mut redis)
                .await
                .expect("redis SET");
            if taken.is_some() {
                return (redis, db);
            }
        }
        panic!("no free redis database");
    }

    #[tokio::test]
    async fn the_redis_cap_holds_across_processes_and_is_seeded_from_the_counters() {
        let (mut lock, db) = redis_database().await;
        let url = SecretString::from(format!("redis://127.0.0.1:6379/{db}"));
        let client = redis::Client::open(url.expose_secret()).expect("redis url");
        let mut own = client.get_multiplexed_async_connection().await.expect("redis");
        let _: () = redis::cmd("FLUSHDB").query_async(&mut own).await.expect("flushdb");
        for (hash, field) in [(COUNTED[0], "Old"), (COUNTED[1], "Old / x")] {
            let _: () = redis::cmd("HSET").arg(hash).arg(field).arg(5).query_async(&mut own).await.expect("hset");
        }
        let config = NamesConfig { max_names: 2 };
        let one = Names::connect(config, Some(&url)).await.expect("connect").expect("a cap");
        let two = Names::connect(config, Some(&url)).await.expect("connect").expect("a cap");
        one.admit(&vote("Old", "x")).await.expect("counted before the cap: seeded");
        one.check(&vote("Checked", "x")).await.expect("room for a second band");
        one.admit(&vote("New", "x")).await.expect("the second band: the check took no place");
        assert_eq!(two.admit(&vote("Third", "x")).await, Err(NamesError::TooManyBands(2)), "seen by the other");
        two.admit(&vote("New", "x")).await.expect("known through redis");
        let _: () = redis::cmd("FLUSHDB").query_async(&mut own).await.expect("flushdb");
        let _: () =
            redis::cmd("DEL").arg(format!("bandvote-test-lock:{db}")).query_async(&mut lock).await.expect("unlock");
    }
}
