//! Fair voting, checked by the gateways before a vote is accepted (all off by default, as in the
//! original contest):
//! - a per-client rate limit on the vote endpoints (per client address as the listener resolved it,
//!   IPv6 by /64, per gateway process);
//! - the contest's list of bands and albums: a vote for anything else is a `400`;
//! - a voter policy on a voter identity header: unlimited, at most N votes per voter per minute, or
//!   one vote per voter; a voter over the limit gets `429` with `Retry-After`. With a Redis URL the
//!   policy holds across every gateway replica (one Lua script decides atomically); without, within
//!   this process (`bandvote up`). A retry of a vote under the same `Idempotency-Key` is never
//!   refused: it is the same vote. Voters are remembered for their window (per minute) or
//!   `voter_memory` (once), then forgotten.
//!
//! The voter is the header's value, NFC-normalised and lowercased (`Alice` = `ALICE`); or the voter
//! a token signed with `--voter-secret` names; or the `sub` of a JWT from the show's identity
//! provider, verified with `--voter-jwt-key` ([`crate::voter_jwt`]). A token that is not genuine
//! or has expired is a `401`. Every check runs before the vote is forwarded: nothing is stored for
//! a refused vote.

use std::{
    collections::{HashMap, HashSet},
    net::IpAddr,
    path::PathBuf,
    str::FromStr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Context;
use axum::http::{HeaderMap, HeaderName, StatusCode};
use bandvote_core::{
    Vote,
    voter_token::{VoterTokens, normalise_voter},
};
use bandvote_runtime::{
    http::ApiError,
    per_client::{Limited, RateLimiter},
};

use crate::{names::NamesError, voter_jwt::VoterJwt};
use bandvote_runtime::redis_client::{Redis, RedisTarget, Timeouts};
use redis::Script;
use secrecy::{ExposeSecret, SecretString};

/// How many votes a voter may cast.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VotePolicy {
    /// No limit (the default, as in the original).
    #[default]
    Unlimited,
    /// At most N per voter in any 60 s.
    PerMinute(u32),
    /// One vote per voter in each round.
    Once,
}

impl FromStr for VotePolicy {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "unlimited" => Ok(Self::Unlimited),
            "once" => Ok(Self::Once),
            _ => match text.strip_prefix("per-minute:").and_then(|n| n.parse::<u32>().ok()) {
                Some(n) if n > 0 => Ok(Self::PerMinute(n)),
                _ => Err(format!("{text:?}: expected unlimited, once or per-minute:N (N > 0)")),
            },
        }
    }
}

impl VotePolicy {
    /// (limit, window; zero = forever), or `None` for no limit.
    fn limit(self) -> Option<(u32, Duration)> {
        match self {
            Self::Unlimited => None,
            Self::PerMinute(n) => Some((n, Duration::from_secs(60))),
            Self::Once => Some((1, Duration::ZERO)),
        }
    }
}

/// What the gateways check before accepting a vote.
#[derive(Debug, Clone)]
pub struct FairnessConfig {
    /// The voter policy.
    pub policy: VotePolicy,
    /// The header carrying the voter identity. Default `x-voter-id`.
    pub voter_header: String,
    /// Redis shared by every gateway replica (its URL may hold a password); `None`: this process only.
    pub redis_url: Option<SecretString>,
    /// JSON file `[{"name": band, "album": album}, ...]`: the only votes accepted.
    pub contest: Option<PathBuf>,
    /// Votes per second per client address (0: no limit).
    pub rate_limit: u32,
    /// With a secret, the voter header must carry a voter token the API signed with it
    /// (`POST /api/voter-token`), and the voter is the one the token names.
    pub voter_secret: Option<SecretString>,
    /// PEM public key (Ed25519, P-256 or RSA) of the show's identity provider: the voter header must
    /// then carry a JWT it signed, and the voter is its `sub`. Exclusive with `voter_secret`.
    pub voter_jwt_key: Option<PathBuf>,
    /// The `aud` a voter JWT must carry (a token without one is refused); `None`: not checked.
    pub voter_jwt_audience: Option<String>,
    /// Longest lifetime of a voter JWT (`exp - iat`, or `exp - now` without `iat`); longer-lived
    /// tokens get `401`. Default [`crate::voter_jwt::DEFAULT_MAX_LIFETIME`] (24 h).
    pub voter_jwt_max_lifetime: Duration,
    /// How long a voter's vote under `once` is remembered (then the voter may vote again). Default 72 h.
    pub voter_memory: Duration,
    /// Voters remembered within this process (without Redis); when every one of them is current, a
    /// new voter gets `503` rather than an old vote being forgotten. Default 1,000,000.
    pub max_local_voters: usize,
    /// Voter tokens the API issues per minute to one client address (IPv6: one /64). Default 10.
    pub voter_tokens_per_minute: u32,
}

/// Default of [`FairnessConfig::voter_memory`].
pub const DEFAULT_VOTER_MEMORY: Duration = Duration::from_secs(72 * 3600);

/// Default of [`FairnessConfig::voter_tokens_per_minute`].
pub const DEFAULT_VOTER_TOKENS_PER_MINUTE: u32 = 10;

impl Default for FairnessConfig {
    fn default() -> Self {
        Self {
            policy: VotePolicy::Unlimited,
            voter_header: "x-voter-id".into(),
            redis_url: None,
            contest: None,
            rate_limit: 0,
            voter_secret: None,
            voter_jwt_key: None,
            voter_jwt_audience: None,
            voter_jwt_max_lifetime: crate::voter_jwt::DEFAULT_MAX_LIFETIME,
            voter_memory: DEFAULT_VOTER_MEMORY,
            max_local_voters: 1_000_000,
            voter_tokens_per_minute: DEFAULT_VOTER_TOKENS_PER_MINUTE,
        }
    }
}

enum Voters {
    Local(Mutex<LocalVoters>),
    Redis(Redis, Script),
}

/// Who the voter header names.
enum Identity {
    /// Whoever the header says (normalised).
    Asserted,
    /// The voter of a token signed with the voter secret.
    Signed(VoterTokens),
    /// The `sub` of a JWT from the show's identity provider.
    Jwt(Box<VoterJwt>),
}

/// The checks of one process, shared by its gateways.
pub struct Fairness {
    policy: VotePolicy,
    header: HeaderName,
    voters: Voters,
    contest: Option<HashMap<String, HashSet<String>>>,
    rate: Option<RateLimiter>,
    identity: Identity,
    memory: Duration,
    names: Option<crate::names::Names>,
}

/// Longest voter identity accepted.
const MAX_VOTER_CHARS: usize = 256;

/// Longest voter token (a JWT signed with a 4096-bit RSA key and a few claims fits easily).
const MAX_TOKEN_BYTES: usize = 8 << 10;

/// Client addresses the vote rate limit tracks at once (idle ones are forgotten after a second).
const MAX_RATE_CLIENTS: usize = 100_000;

const SCRIPT: &str = r"
-- KEYS[1]: the voter's hash (vote key -> ms); ARGV: vote key, now ms, window ms (0 = forever), limit,
-- how long the hash is kept after this vote (ms): the window, or the voter memory under once
local voter = KEYS[1]
if redis.call('HEXISTS', voter, ARGV[1]) == 1 then return {1, 0} end
local now, window, limit = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local fields = redis.call('HGETALL', voter)
local count, oldest = 0, nil
for i = 1, #fields, 2 do
  local at = tonumber(fields[i + 1])
  if window > 0 and at <= now - window then
    redis.call('HDEL', voter, fields[i])
  else
    count = count + 1
    if oldest == nil or at < oldest then oldest = at end
  end
end
if count >= limit then
  if window > 0 then return {0, oldest + window - now} end
  return {0, -1}
end
redis.call('HSET', voter, ARGV[1], now)
redis.call('PEXPIRE', voter, tonumber(ARGV[5]))
return {1, 0}
";

impl Fairness {
    /// Builds the checks; `None` when nothing is enabled.
    pub async fn new(config: &FairnessConfig) -> anyhow::Result<Option<Arc<Self>>> {
        Self::with_names(config, None).await
    }

    /// [`Fairness::new`] plus the cap on distinct names ([`crate::names`]), checked when there is
    /// no contest list, after the voter's identity; a vote's names are recorded only once the voter
    /// policy admitted it.
    pub async fn with_names(
        config: &FairnessConfig,
        names: Option<crate::names::Names>,
    ) -> anyhow::Result<Option<Arc<Self>>> {
        let names = names.filter(|_| config.contest.is_none());
        if names.is_none()
            && config.policy == VotePolicy::Unlimited
            && config.contest.is_none()
            && config.rate_limit == 0
            && config.voter_secret.is_none()
            && config.voter_jwt_key.is_none()
        {
            return Ok(None);
        }
        let identity = match (&config.voter_secret, &config.voter_jwt_key) {
            (Some(_), Some(_)) => {
                anyhow::bail!("--voter-secret and --voter-jwt-key are two ways to name voters: choose one")
            }
            (Some(secret), None) => Identity::Signed(VoterTokens::new(secret.expose_secret().as_bytes())),
            (None, Some(path)) => {
                let jwt = VoterJwt::from_pem_file(path, config.voter_jwt_audience.as_deref())?;
                Identity::Jwt(Box::new(jwt.with_max_lifetime(config.voter_jwt_max_lifetime)))
            }
            (None, None) => Identity::Asserted,
        };
        let header = HeaderName::from_str(&config.voter_header.to_ascii_lowercase())
            .with_context(|| format!("invalid voter header name {:?}", config.voter_header))?;
        let voters = match &config.redis_url {
            Some(url) if config.policy != VotePolicy::Unlimited => {
                let target =
                    RedisTarget::parse(url.expose_secret()).context("invalid redis url for the voter policy")?;
                Voters::Redis(target.connect(Timeouts::default()).await?, Script::new(SCRIPT))
            }
            _ => {
                let lifetime = match config.policy.limit() {
                    Some((_, window)) if !window.is_zero() => window,
                    _ => config.voter_memory,
                };
                Voters::Local(Mutex::new(LocalVoters::new(config.max_local_voters, lifetime)))
            }
        };
        let contest = match &config.contest {
            None => None,
            Some(path) => {
                let text =
                    std::fs::read(path).with_context(|| format!("cannot read the contest file {}", path.display()))?;
                let entries: Vec<HashMap<String, String>> = serde_json::from_slice(&text)
                    .with_context(|| format!("{}: expected [{{\"name\": ..., \"album\": ...}}]", path.display()))?;
                let mut bands: HashMap<String, HashSet<String>> = HashMap::new();
                for entry in entries {
                    let (Some(name), Some(album)) = (entry.get("name"), entry.get("album")) else {
                        anyhow::bail!("{}: every entry needs a name and an album", path.display());
                    };
                    bands.entry(name.trim().to_owned()).or_default().insert(album.trim().to_owned());
                }
                Some(bands)
            }
        };
        Ok(Some(Arc::new(Self {
            policy: config.policy,
            header,
            voters,
            contest,
            rate: (config.rate_limit > 0)
                .then(|| RateLimiter::new(config.rate_limit, Duration::from_secs(1), MAX_RATE_CLIENTS)),
            identity,
            memory: config.voter_memory.max(Duration::from_secs(1)),
            names,
        })))
    }

    /// Admits a valid vote, or says why not: `429` (rate or voter limit, with `Retry-After`), `400`
    /// (not in the contest, no voter identity), `401` (a voter token that is not genuine or has
    /// expired) or `503` (the in-process voter register is full). `client` is the request's client
    /// ([`bandvote_runtime::per_client::client_address`]); `vote_key` is the vote's id: a retry is
    /// admitted.
    pub async fn admit(
        &self,
        headers: &HeaderMap,
        client: Option<IpAddr>,
        round: &str,
        vote: &Vote,
        vote_key: &str,
    ) -> Result<(), ApiError> {
        if let Some(client) = client {
            self.rate(client)?;
        }
        if let Some(contest) = &self.contest {
            match contest.get(&vote.name) {
                None => {
                    return Err(ApiError::bad_request(format!("{} is not in this contest", vote.name), Some("name")));
                }
                Some(albums) if !albums.contains(&vote.album) => {
                    let message = format!("{} is not an album of {} in this contest", vote.album, vote.name);
                    return Err(ApiError::bad_request(message, Some("album")));
                }
                Some(_) => {}
            }
        }
        let voter = self.voter(headers)?;
        // The names cap counts only votes the voter policy admits: a vote for a new name is first
        // checked against the cap without being remembered, then goes through the policy, and only
        // then are its names recorded. A vote the cap refuses at that point (another vote took the
        // last place meanwhile) gives its voter's vote back.
        if let Some(names) = &self.names {
            names.check(vote).await?;
        }
        let recorded = self.policy(round, voter, vote_key).await?;
        if let Some(names) = &self.names
            && let Err(error) = names.admit(vote).await
        {
            if let (Some(voter), NamesError::TooManyBands(_) | NamesError::TooManyAlbums(_)) = (recorded, &error) {
                self.forget(&voter, vote_key).await;
            }
            return Err(error.into());
        }
        Ok(())
    }

    /// Forgets `voter`'s vote `vote_key` (refused after the policy admitted it); a vote that cannot
    /// be forgotten (Redis down) stays counted against its voter, as a `503` does.
    async fn forget(&self, voter: &str, vote_key: &str) {
        match &self.voters {
            Voters::Local(voters) => voters.lock().unwrap_or_else(|e| e.into_inner()).forget(voter, vote_key),
            Voters::Redis(connection, _) => {
                let mut connection = connection.clone();
                let forgot: Result<i64, _> =
                    redis::cmd("HDEL").arg(format!("voters:{voter}")).arg(vote_key).query_async(&mut connection).await;
                if let Err(error) = forgot {
                    tracing::warn!(%error, "could not give a refused vote back to its voter");
                }
            }
        }
    }

    /// The voter policy: the voter's key in the register (its vote now remembered under
    /// `vote_key`), `None` when no policy applies, or the refusal.
    async fn policy(&self, round: &str, voter: Option<String>, vote_key: &str) -> Result<Option<String>, ApiError> {
        let (Some((limit, window)), Some(voter)) = (self.policy.limit(), voter) else { return Ok(None) };
        // Under once, one vote in each round: the voter is remembered per round (a round id holds no
        // `:`, so the pair is unambiguous); the per-minute limit spans the rounds.
        let voter = match self.policy {
            VotePolicy::Once => {
                format!("{}:{voter}", if round.is_empty() { bandvote_core::round::DEFAULT_ROUND } else { round })
            }
            _ => voter,
        };
        // Under once, a vote is remembered for the voter memory; per minute, for its window.
        let lifetime = if window.is_zero() { self.memory } else { window };
        let retry_ms = match &self.voters {
            Voters::Local(voters) => {
                let mut voters = voters.lock().unwrap_or_else(|e| e.into_inner());
                voters.admit(&voter, vote_key, limit, window, Instant::now()).map_err(|Full| {
                    ApiError::unavailable_because("the voter register of this process is full", Duration::from_secs(60))
                })?
            }
            Voters::Redis(connection, script) => {
                let now = chrono::Utc::now().timestamp_millis();
                let mut connection = connection.clone();
                let reply: (i64, i64) = script
                    .key(format!("voters:{voter}"))
                    .arg(vote_key)
                    .arg(now)
                    .arg(window.as_millis() as i64)
                    .arg(limit)
                    .arg(lifetime.as_millis() as i64)
                    .invoke_async(&mut connection)
                    .await
                    .map_err(|e| ApiError::unavailable(format!("voter policy: redis: {e}"), Duration::from_secs(1)))?;
                (reply.0 == 0).then_some(reply.1)
            }
        };
        match retry_ms {
            None => Ok(Some(voter)),
            Some(ms) => {
                let (message, retry) = if ms < 0 {
                    ("this voter has already voted".to_owned(), Duration::from_secs(24 * 3600).min(lifetime))
                } else {
                    (format!("at most {limit} votes per voter per minute"), Duration::from_millis(ms as u64))
                };
                Err(ApiError::client(StatusCode::TOO_MANY_REQUESTS, message, None).with_retry_after(retry))
            }
        }
    }

    /// The voter the header names, verified when it carries a token; `None` when no voter is
    /// needed (no policy, no token configured) and none is given.
    fn voter(&self, headers: &HeaderMap) -> Result<Option<String>, ApiError> {
        let needed = self.policy != VotePolicy::Unlimited || !matches!(self.identity, Identity::Asserted);
        // UTF-8, not only visible ASCII: a voter id may be a name, which is why it is normalised.
        let value = headers.get(&self.header).map(|v| std::str::from_utf8(v.as_bytes()).map(str::trim));
        let value = match value {
            Some(Ok(value)) if !value.is_empty() => value,
            _ if !needed => return Ok(None),
            _ => {
                return Err(match self.identity {
                    Identity::Asserted => ApiError::bad_request(
                        format!("a voter identity (1-{MAX_VOTER_CHARS} characters) is required"),
                        None,
                    ),
                    Identity::Signed(_) | Identity::Jwt(_) => unauthorized("a voter token is required"),
                });
            }
        };
        match &self.identity {
            Identity::Asserted => {
                let voter = normalise_voter(value);
                if voter.is_empty() || voter.chars().count() > MAX_VOTER_CHARS {
                    return Err(ApiError::bad_request(
                        format!("a voter identity (1-{MAX_VOTER_CHARS} characters) is required"),
                        None,
                    ));
                }
                Ok(Some(voter))
            }
            _ if value.len() > MAX_TOKEN_BYTES => Err(unauthorized("the voter token is too long")),
            Identity::Signed(tokens) => tokens
                .verify(value, chrono::Utc::now().timestamp())
                .map(Some)
                .map_err(|error| unauthorized(&format!("{error}: get a new one"))),
            Identity::Jwt(jwt) => jwt.verify(value).map(Some).map_err(|error| unauthorized(&error.to_string())),
        }
    }

    /// The vote rate limit: a token bucket per client group, `rate_limit` a second, as many in a burst.
    fn rate(&self, client: IpAddr) -> Result<(), ApiError> {
        let Some(rate) = &self.rate else { return Ok(()) };
        match rate.check(client) {
            Ok(()) => Ok(()),
            Err(Limited::Empty(_)) => {
                let message = format!("at most {} votes per second from one client", rate.burst());
                Err(ApiError::client(StatusCode::TOO_MANY_REQUESTS, message, None)
                    .with_retry_after(Duration::from_secs(1)))
            }
            Err(Limited::Crowded) => {
                Err(ApiError::unavailable_because("too many clients at once", Duration::from_secs(1)))
            }
        }
    }
}

fn unauthorized(message: &str) -> ApiError {
    ApiError::client(StatusCode::UNAUTHORIZED, message, None)
}

/// The in-process register is full of current voters.
#[derive(Debug, PartialEq, Eq)]
struct Full;

/// The voter policy within this process: the same rule as the Redis script, with every vote
/// forgotten after `lifetime` (the policy's window, or the voter memory under once) and at most
/// `max` voters.
struct LocalVoters {
    voters: HashMap<String, Vec<(String, Instant)>>,
    max: usize,
    lifetime: Duration,
    swept: Instant,
}

/// How often the register drops the votes that outlived their lifetime.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

impl LocalVoters {
    fn new(max: usize, lifetime: Duration) -> Self {
        Self { voters: HashMap::new(), max: max.max(1), lifetime, swept: Instant::now() }
    }

    /// `None`: admitted (and remembered for the lifetime); `Some(ms)`: refused, retry in `ms`
    /// (`-1`: not within the window).
    fn admit(
        &mut self,
        voter: &str,
        vote_key: &str,
        limit: u32,
        window: Duration,
        now: Instant,
    ) -> Result<Option<i64>, Full> {
        let lifetime = self.lifetime;
        let current = |at: &Instant| now.saturating_duration_since(*at) < lifetime;
        if !self.voters.contains_key(voter) {
            if self.voters.len() >= self.max || now.saturating_duration_since(self.swept) >= SWEEP_EVERY {
                self.voters.retain(|_, votes| {
                    votes.retain(|(_, at)| current(at));
                    !votes.is_empty()
                });
                self.swept = now;
            }
            if self.voters.len() >= self.max {
                return Err(Full);
            }
        }
        let votes = self.voters.entry(voter.to_owned()).or_default();
        votes.retain(|(_, at)| current(at));
        if votes.iter().any(|(key, _)| key == vote_key) {
            return Ok(None);
        }
        if votes.len() >= limit as usize {
            return Ok(Some(match votes.iter().map(|(_, at)| *at).min() {
                Some(oldest) if !window.is_zero() => {
                    (window.saturating_sub(now.saturating_duration_since(oldest))).as_millis() as i64
                }
                _ => -1,
            }));
        }
        votes.push((vote_key.to_owned(), now));
        Ok(None)
    }

    /// Forgets `voter`'s vote `vote_key`.
    fn forget(&mut self, voter: &str, vote_key: &str) {
        if let Some(votes) = self.voters.get_mut(voter) {
            votes.retain(|(key, _)| key != vote_key);
            if votes.is_empty() {
                self.voters.remove(voter);
            }
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.voters.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_parse() {
        assert_eq!("unlimited".parse(), Ok(VotePolicy::Unlimited));
        assert_eq!("once".parse(), Ok(VotePolicy::Once));
        assert_eq!("per-minute:3".parse(), Ok(VotePolicy::PerMinute(3)));
        assert!("per-minute:0".parse::<VotePolicy>().is_err());
        assert!("twice".parse::<VotePolicy>().is_err());
    }

    #[test]
    fn local_policy_counts_distinct_votes_and_admits_retries() {
        let (minute, now) = (Duration::from_secs(60), Instant::now());
        let mut voters = LocalVoters::new(100, minute);
        assert_eq!(voters.admit("v", "k1", 2, minute, now), Ok(None));
        assert_eq!(voters.admit("v", "k1", 2, minute, now), Ok(None), "a retry of k1");
        assert_eq!(voters.admit("v", "k2", 2, minute, now), Ok(None));
        assert!(voters.admit("v", "k3", 2, minute, now).is_ok_and(|r| r.is_some_and(|ms| ms > 59_000)));
        assert_eq!(voters.admit("w", "k3", 2, minute, now), Ok(None), "another voter");
        let mut once = LocalVoters::new(100, DEFAULT_VOTER_MEMORY);
        assert_eq!(once.admit("once", "a", 1, Duration::ZERO, now), Ok(None));
        assert_eq!(once.admit("once", "b", 1, Duration::ZERO, now), Ok(Some(-1)));
        assert_eq!(once.admit("once", "a", 1, Duration::ZERO, now), Ok(None), "a retry of a");
    }

    #[test]
    fn local_per_minute_votes_are_forgotten_after_their_window() {
        let (minute, start) = (Duration::from_secs(60), Instant::now());
        let mut voters = LocalVoters::new(2, minute);
        assert_eq!(voters.admit("a", "1", 1, minute, start), Ok(None));
        assert_eq!(voters.admit("b", "1", 1, minute, start), Ok(None));
        assert!(voters.admit("a", "2", 1, minute, start).is_ok_and(|r| r.is_some()));
        // Full of current voters: a new voter is refused rather than an old vote forgotten.
        assert_eq!(voters.admit("c", "1", 1, minute, start + minute / 2), Err(Full));
        // A window later both are forgotten: the register makes room and "a" votes again.
        assert_eq!(voters.admit("c", "1", 1, minute, start + minute), Ok(None));
        assert_eq!(voters.len(), 1);
        assert_eq!(voters.admit("a", "2", 1, minute, start + minute), Ok(None));
    }

    #[test]
    fn local_once_votes_last_the_voter_memory_then_are_forgotten() {
        let (memory, start) = (Duration::from_secs(3 * 3600), Instant::now());
        let mut voters = LocalVoters::new(2, memory);
        assert_eq!(voters.admit("once", "a", 1, Duration::ZERO, start), Ok(None));
        let within = start + memory - Duration::from_secs(1);
        assert_eq!(voters.admit("once", "b", 1, Duration::ZERO, within), Ok(Some(-1)), "still remembered");
        assert_eq!(voters.admit("other", "a", 1, Duration::ZERO, within), Ok(None));
        assert_eq!(voters.admit("third", "a", 1, Duration::ZERO, within), Err(Full), "never forgets early");
        assert_eq!(voters.admit("once", "b", 1, Duration::ZERO, start + memory), Ok(None), "forgotten");
        // The periodic sweep drops every expired voter, not only the one voting.
        let much_later = start + 3 * memory;
        assert_eq!(voters.admit("fourth", "a", 1, Duration::ZERO, much_later), Ok(None));
        assert_eq!(voters.len(), 1);
    }
}
