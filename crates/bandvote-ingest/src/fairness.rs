//! Fair voting, checked by the gateways before a vote is accepted (all off by default, as in the
//! original contest):
//! - a per-client rate limit on the vote endpoints (per client address, per gateway process);
//! - the contest's list of bands and albums: a vote for anything else is a `400`;
//! - a voter policy on a voter identity header: unlimited, at most N votes per voter per minute, or
//!   one vote per voter; a voter over the limit gets `429` with `Retry-After`. With a Redis URL the
//!   policy holds across every gateway replica (one Lua script decides atomically); without, within
//!   this process (`bandvote up`). A retry of a vote under the same `Idempotency-Key` is never
//!   refused: it is the same vote.

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
use bandvote_core::{Vote, voter_token::VoterTokens};
use bandvote_runtime::http::ApiError;
use redis::{Script, aio::ConnectionManager};

/// How many votes a voter may cast.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VotePolicy {
    /// No limit (the default, as in the original).
    #[default]
    Unlimited,
    /// At most N per voter in any 60 s.
    PerMinute(u32),
    /// One vote per voter.
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
    /// Redis shared by every gateway replica; `None`: this process only.
    pub redis_url: Option<String>,
    /// JSON file `[{"name": band, "album": album}, ...]`: the only votes accepted.
    pub contest: Option<PathBuf>,
    /// Votes per second per client address (0: no limit).
    pub rate_limit: u32,
    /// With a secret, the voter header must carry a voter token the API signed with it
    /// (`POST /api/voter-token`), and the voter is the one the token names.
    pub voter_secret: Option<String>,
}

impl Default for FairnessConfig {
    fn default() -> Self {
        Self {
            policy: VotePolicy::Unlimited,
            voter_header: "x-voter-id".into(),
            redis_url: None,
            contest: None,
            rate_limit: 0,
            voter_secret: None,
        }
    }
}

enum Voters {
    Local(Mutex<HashMap<String, Vec<(String, Instant)>>>),
    Redis(ConnectionManager, Script),
}

/// The checks of one process, shared by its gateways.
pub struct Fairness {
    policy: VotePolicy,
    header: HeaderName,
    voters: Voters,
    contest: Option<HashMap<String, HashSet<String>>>,
    rate_limit: u32,
    buckets: Mutex<HashMap<IpAddr, (f64, Instant)>>,
    tokens: Option<VoterTokens>,
}

/// Longest voter identity accepted.
const MAX_VOTER_CHARS: usize = 256;

const SCRIPT: &str = r"
-- KEYS[1]: the voter's hash (vote key -> ms); ARGV: vote key, now ms, window ms (0 = forever), limit
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
if window > 0 then redis.call('PEXPIRE', voter, window) end
return {1, 0}
";

impl Fairness {
    /// Builds the checks; `None` when nothing is enabled.
    pub async fn new(config: &FairnessConfig) -> anyhow::Result<Option<Arc<Self>>> {
        if config.policy == VotePolicy::Unlimited && config.contest.is_none() && config.rate_limit == 0 {
            return Ok(None);
        }
        let header = HeaderName::from_str(&config.voter_header.to_ascii_lowercase())
            .with_context(|| format!("invalid voter header name {:?}", config.voter_header))?;
        let voters = match &config.redis_url {
            Some(url) if config.policy != VotePolicy::Unlimited => {
                let client = redis::Client::open(url.as_str()).context("invalid redis url for the voter policy")?;
                Voters::Redis(
                    ConnectionManager::new(client).await.context("failed to connect to redis")?,
                    Script::new(SCRIPT),
                )
            }
            _ => Voters::Local(Mutex::new(HashMap::new())),
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
            rate_limit: config.rate_limit,
            buckets: Mutex::new(HashMap::new()),
            tokens: config.voter_secret.as_deref().map(|secret| VoterTokens::new(secret.as_bytes())),
        })))
    }

    /// Admits a valid vote, or says why not: `429` (rate or voter limit, with `Retry-After`) or `400`
    /// (not in the contest, no voter identity). `vote_key` is the vote's id: a retry is admitted.
    pub async fn admit(
        &self,
        headers: &HeaderMap,
        client: Option<IpAddr>,
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
        let Some((limit, window)) = self.policy.limit() else { return Ok(()) };
        let voter = headers
            .get(&self.header)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty() && v.chars().count() <= MAX_VOTER_CHARS)
            .ok_or_else(|| {
                ApiError::bad_request(format!("a voter identity (1-{MAX_VOTER_CHARS} characters) is required"), None)
            })?;
        let verified;
        let voter = match &self.tokens {
            None => voter,
            Some(tokens) => {
                verified = tokens.verify(voter, chrono::Utc::now().timestamp()).map_err(|error| {
                    ApiError::client(StatusCode::UNAUTHORIZED, format!("{error}: get a new one"), None)
                })?;
                verified.as_str()
            }
        };
        let retry_ms = match &self.voters {
            Voters::Local(voters) => local_admit(voters, voter, vote_key, limit, window),
            Voters::Redis(connection, script) => {
                let now = chrono::Utc::now().timestamp_millis();
                let mut connection = connection.clone();
                let reply: (i64, i64) = script
                    .key(format!("voters:{voter}"))
                    .arg(vote_key)
                    .arg(now)
                    .arg(window.as_millis() as i64)
                    .arg(limit)
                    .invoke_async(&mut connection)
                    .await
                    .map_err(|e| ApiError::unavailable(format!("voter policy: redis: {e}"), Duration::from_secs(1)))?;
                (reply.0 == 0).then_some(reply.1)
            }
        };
        match retry_ms {
            None => Ok(()),
            Some(ms) => {
                let (message, retry) = if ms < 0 {
                    ("this voter has already voted".to_owned(), Duration::from_secs(24 * 3600))
                } else {
                    (format!("at most {limit} votes per voter per minute"), Duration::from_millis(ms as u64))
                };
                Err(ApiError::client(StatusCode::TOO_MANY_REQUESTS, message, None).with_retry_after(retry))
            }
        }
    }

    /// A token bucket per client address: `rate_limit` tokens per second, as many in a burst.
    fn rate(&self, client: IpAddr) -> Result<(), ApiError> {
        if self.rate_limit == 0 {
            return Ok(());
        }
        let rate = f64::from(self.rate_limit);
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if buckets.len() > 100_000 {
            buckets.retain(|_, (_, at)| now.duration_since(*at) < Duration::from_secs(10));
        }
        let (tokens, at) = buckets.entry(client).or_insert((rate, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * rate).min(rate);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            let message = format!("at most {} votes per second from one client", self.rate_limit);
            Err(ApiError::client(StatusCode::TOO_MANY_REQUESTS, message, None).with_retry_after(Duration::from_secs(1)))
        }
    }
}

/// The voter policy within this process: the same rule as the Redis script.
fn local_admit(
    voters: &Mutex<HashMap<String, Vec<(String, Instant)>>>,
    voter: &str,
    vote_key: &str,
    limit: u32,
    window: Duration,
) -> Option<i64> {
    let mut voters = voters.lock().unwrap_or_else(|e| e.into_inner());
    let now = Instant::now();
    let votes = voters.entry(voter.to_owned()).or_default();
    if votes.iter().any(|(key, _)| key == vote_key) {
        return None;
    }
    if !window.is_zero() {
        votes.retain(|(_, at)| now.duration_since(*at) < window);
    }
    if votes.len() >= limit as usize {
        return Some(match votes.iter().map(|(_, at)| *at).min() {
            Some(oldest) if !window.is_zero() => (window.saturating_sub(now.duration_since(oldest))).as_millis() as i64,
            _ => -1,
        });
    }
    votes.push((vote_key.to_owned(), now));
    None
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
        let voters = Mutex::new(HashMap::new());
        let minute = Duration::from_secs(60);
        assert_eq!(local_admit(&voters, "v", "k1", 2, minute), None);
        assert_eq!(local_admit(&voters, "v", "k1", 2, minute), None, "a retry of k1");
        assert_eq!(local_admit(&voters, "v", "k2", 2, minute), None);
        assert!(local_admit(&voters, "v", "k3", 2, minute).is_some_and(|ms| ms > 59_000));
        assert_eq!(local_admit(&voters, "w", "k3", 2, minute), None, "another voter");
        assert_eq!(local_admit(&voters, "once", "a", 1, Duration::ZERO), None);
        assert_eq!(local_admit(&voters, "once", "b", 1, Duration::ZERO), Some(-1));
    }
}
