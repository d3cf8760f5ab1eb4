//! Rounds: the show's voting windows (DESIGN.md, "Rounds").
//!
//! A round is stored as a [`Round`]: its window (`opens_at`, `closes_at`) and how its results are
//! shown. Its state is not stored but read from the window at an instant, so a scheduled round
//! opens and closes at its instants on every replica without a timer, and an operator's open or
//! close is a change of the window. The operations ([`create`], [`change`]) are pure: they take the
//! rounds as read and return the round to write; [`update`] writes it through a [`RoundStore`]
//! with a compare-and-set, so that two operators never open two rounds at once.

use std::{future::Future, pin::Pin, time::Duration};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The implicit round of every vote until the first round is created.
pub const DEFAULT_ROUND: &str = "default";
/// Longest round id.
pub const MAX_ID_CHARS: usize = 64;
/// Longest round title.
pub const MAX_TITLE_CHARS: usize = 200;
/// Most rounds at once (a show has a handful; every gateway reads them all five times a second).
pub const MAX_ROUNDS: usize = 100;

/// Whether `id` is a round id: 1–64 of `a–z 0–9 -`, starting with a letter or a digit.
pub fn is_valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_CHARS
        && !id.starts_with('-')
        && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// How a round's results are shown to the public (operators always see everything).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Visibility {
    /// Counts to everyone as they arrive.
    #[default]
    Live,
    /// Only the total until the operator reveals.
    Hidden,
    /// Revealed by the operator.
    Revealed,
}

/// A round's state at an instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Not open yet (with or without an opening instant).
    Scheduled,
    /// Votes are accepted in it.
    Open,
    /// Its window has ended.
    Closed,
}

/// A round as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Round {
    /// The id (see [`is_valid_id`]).
    pub id: String,
    /// What the audience sees.
    pub title: String,
    /// When it opens (by itself, or when the operator opened it); `None`: not scheduled.
    #[serde(with = "instant")]
    pub opens_at: Option<DateTime<Utc>>,
    /// When it closes (by itself, or when the operator closed it); `None`: open until closed.
    #[serde(with = "instant")]
    pub closes_at: Option<DateTime<Utc>>,
    /// How its results are shown.
    pub results: Visibility,
    /// When it was created (rounds are listed newest first).
    #[serde(with = "instant")]
    pub created_at: Option<DateTime<Utc>>,
    /// Its certified result, once final.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certified: Option<Certified>,
    /// The choices a vote in it must be one of; empty: free text.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ballot: Vec<Entry>,
}

/// Most entries on a ballot.
pub const MAX_BALLOT_ENTRIES: usize = 64;

/// One choice on a round's ballot: a band, its album and the album's year.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// The band.
    pub name: String,
    /// The album.
    pub album: String,
    /// The album's year, 1000–9999.
    pub year: u16,
}

/// Why a vote does not fit the open round's ballot.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BallotError {
    /// Its band or album is no entry of the ballot, or its year is not the entry's (`422` naming
    /// the field).
    #[error("not on the ballot")]
    NotOnBallot(&'static str),
    /// The vote lacks what a vote needs without a ballot (`400`).
    #[error(transparent)]
    Invalid(#[from] crate::VoteError),
}

/// The vote as it counts in a round with `ballot`: with a ballot, one of its entries (the entry's
/// year when the vote gives none, and a year it gives must be the entry's); without, free text
/// with its year.
pub fn complete(ballot: &[Entry], mut vote: crate::Vote) -> Result<crate::Vote, BallotError> {
    if ballot.is_empty() {
        return Ok(vote.require_year()?);
    }
    let Some(entry) = ballot.iter().find(|e| e.name == vote.name && e.album == vote.album) else {
        let field = if ballot.iter().any(|e| e.name == vote.name) { "album" } else { "name" };
        return Err(BallotError::NotOnBallot(field));
    };
    let year = entry.year.to_string();
    match &vote.year {
        Some(given) if *given != year => return Err(BallotError::NotOnBallot("year")),
        Some(_) => {}
        None => vote.year = Some(year),
    }
    Ok(vote)
}

/// The ballot checked and normalised as votes are (trimmed, NFC): 1–64 valid entries, none twice.
fn checked_ballot(ballot: Vec<Entry>) -> Result<Vec<Entry>, RoundError> {
    if ballot.len() > MAX_BALLOT_ENTRIES {
        return Err(invalid("ballot", format!("a ballot has at most {MAX_BALLOT_ENTRIES} entries")));
    }
    let mut checked: Vec<Entry> = Vec::with_capacity(ballot.len());
    for (i, entry) in ballot.into_iter().enumerate() {
        let vote = crate::Vote::from_strings(&entry.name, &entry.album, &entry.year.to_string(), "")
            .map_err(|e| invalid("ballot", format!("ballot entry {}: {e}", i + 1)))?;
        if checked.iter().any(|c| c.name == vote.name && c.album == vote.album) {
            return Err(invalid(
                "ballot",
                format!("ballot entry {}: {} / {} is on it twice", i + 1, vote.name, vote.album),
            ));
        }
        checked.push(Entry { name: vote.name, album: vote.album, year: entry.year });
    }
    Ok(checked)
}

/// The longest a gateway may wait for its producer before answering (the wasm guest's time, the gRPC
/// gateway's request timeout), in ms: a longer one is refused, as it could answer `202` for a vote
/// queued after [`SETTLE`].
pub const MAX_GATEWAY_WAIT_MS: u64 = 10_000;

/// The longest a producer may wait for the queue's acknowledgement, in ms (refused beyond).
pub const MAX_PRODUCE_TIMEOUT_MS: u64 = 5_000;

/// The oldest view of the rounds a gateway or a producer takes a vote for a round on, in ms: an
/// operator's close is seen only through the rounds' store, so an older view answers `503`.
pub const MAX_ROUNDS_VIEW_AGE_MS: u64 = 1_000;

/// [`MAX_ROUNDS_VIEW_AGE_MS`].
pub const MAX_ROUNDS_VIEW_AGE: Duration = Duration::from_millis(MAX_ROUNDS_VIEW_AGE_MS);

/// The longest a producer waits for the queue beyond its produce timeout (its delivery report), in ms.
pub const PRODUCE_REPORT_SLACK_MS: u64 = 1_000;

/// How long after a round's close a vote a gateway admitted for it may still reach its producer: the
/// gateway's view of the rounds at its oldest and the longest a gateway waits for its producer. A
/// producer refuses a vote for a round closed longer ago than this: no gateway sent it.
pub const HANDOFF: Duration = Duration::from_millis(MAX_ROUNDS_VIEW_AGE_MS + MAX_GATEWAY_WAIT_MS);

/// How long after a round's close a vote answered `202` for it may still reach the queue: the
/// hand-off ([`HANDOFF`]), the producer's produce timeout ([`MAX_PRODUCE_TIMEOUT_MS`]) and its wait
/// for the delivery report beyond it, with a margin for the clocks. A round is sealed and made final
/// once the counters have applied everything queued this long after its close.
pub const SETTLE: Duration = Duration::from_millis(
    MAX_ROUNDS_VIEW_AGE_MS + MAX_GATEWAY_WAIT_MS + MAX_PRODUCE_TIMEOUT_MS + PRODUCE_REPORT_SLACK_MS + 1_600,
);

/// A final round's result: `{"round", "closed_at", "total", "bands", "albums", "sha256"}`, where
/// `sha256` is the hex SHA-256 of the object without it, as canonical JSON (keys sorted, no
/// spaces).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Certified {
    /// The round.
    pub round: String,
    /// When it closed (RFC 3339, ms, `Z`).
    pub closed_at: String,
    /// Votes in all.
    pub total: u64,
    /// Band → votes.
    pub bands: std::collections::BTreeMap<String, u64>,
    /// `<band> / <album>` → votes.
    pub albums: std::collections::BTreeMap<String, u64>,
    /// The votes in its Merkle tree (see [`crate::merkle`]): one leaf per counted vote.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leaves: Option<u64>,
    /// The tree's root, lowercase hex: each voter's receipt is proved against it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merkle_root: Option<String>,
    /// Hex SHA-256 of the canonical JSON of the other fields.
    pub sha256: String,
}

impl Certified {
    /// The certified result of `round`, closed at `closed_at`, with `counts` and the Merkle tree of
    /// its votes (`tree`: its leaves and root).
    pub fn new(round: &str, closed_at: DateTime<Utc>, counts: crate::Counts, tree: Option<(u64, String)>) -> Self {
        let (leaves, merkle_root) = tree.map_or((None, None), |(leaves, root)| (Some(leaves), Some(root)));
        let mut certified = Self {
            round: round.to_owned(),
            closed_at: crate::time::format(closed_at),
            total: counts.total,
            bands: counts.bands,
            albums: counts.albums,
            leaves,
            merkle_root,
            sha256: String::new(),
        };
        certified.sha256 = certified.digest();
        certified
    }

    /// The canonical JSON of the result without `sha256`: keys sorted, no spaces.
    pub fn canonical_json(&self) -> String {
        let mut value = serde_json::json!({
            "round": self.round,
            "closed_at": self.closed_at,
            "total": self.total,
            "bands": self.bands,
            "albums": self.albums,
        });
        // A result certified before receipts existed has neither.
        if let (Some(leaves), Some(root)) = (self.leaves, &self.merkle_root) {
            value["leaves"] = leaves.into();
            value["merkle_root"] = root.clone().into();
        }
        let mut out = String::new();
        write_canonical(&value, &mut out);
        out
    }

    /// The hex SHA-256 of [`Certified::canonical_json`].
    pub fn digest(&self) -> String {
        use sha2::Digest;
        sha2::Sha256::digest(self.canonical_json().as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Whether `sha256` is the digest of the rest.
    pub fn verifies(&self) -> bool {
        self.sha256 == self.digest()
    }
}

impl Round {
    /// The state at `now`.
    pub fn state(&self, now: DateTime<Utc>) -> State {
        match (self.opens_at, self.closes_at) {
            (_, Some(closes)) if now >= closes && self.opens_at.is_some_and(|opens| opens <= closes) => State::Closed,
            (Some(opens), _) if now >= opens => State::Open,
            _ => State::Scheduled,
        }
    }

    /// Whether the public sees only the total.
    pub fn is_hidden(&self) -> bool {
        self.results == Visibility::Hidden
    }

    /// The contract's view at `now`: `{id, title, state, opens_at, closes_at, results, final, total}`.
    pub fn view(&self, now: DateTime<Utc>, total: u64) -> serde_json::Value {
        serde_json::json!({
            "id": self.id,
            "title": self.title,
            "state": self.state(now),
            "opens_at": self.opens_at.map(crate::time::format),
            "closes_at": self.closes_at.map(crate::time::format),
            "results": self.results,
            "final": self.certified.is_some(),
            "total": total,
            "ballot": self.ballot,
        })
    }

    /// Whether it is closed, not yet final, and closed at least [`SETTLE`] before `now`.
    pub fn awaits_final(&self, now: DateTime<Utc>) -> bool {
        let settled = self
            .closes_at
            .is_some_and(|closes| chrono::Duration::from_std(SETTLE).is_ok_and(|settle| now >= closes + settle));
        self.certified.is_none() && self.state(now) == State::Closed && settled
    }

    /// The window `[opens_at, closes_at)`, when it has a start.
    fn window(&self) -> Option<(DateTime<Utc>, Option<DateTime<Utc>>)> {
        self.opens_at.map(|opens| (opens, self.closes_at))
    }
}

/// Which round a vote received at an instant counts in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// In this round (`default` while no round exists).
    Open(String),
    /// Voting is closed; the next round opens by itself in this long, if one is scheduled.
    Closed {
        /// Time until the next scheduled opening.
        opens_in: Option<Duration>,
    },
}

/// Which round a vote received at `now` counts in.
pub fn admit(rounds: &[Round], now: DateTime<Utc>) -> Admission {
    if rounds.is_empty() {
        return Admission::Open(DEFAULT_ROUND.to_owned());
    }
    if let Some(open) = rounds.iter().find(|r| r.state(now) == State::Open) {
        return Admission::Open(open.id.clone());
    }
    let next = rounds.iter().filter_map(|r| r.opens_at.filter(|at| *at > now)).min();
    Admission::Closed { opens_in: next.and_then(|at| (at - now).to_std().ok()) }
}

/// The round `GET /api/results` shows without `?round=`: the open one, else the latest closed one
/// (by closing instant), else none (the `default` round).
pub fn current(rounds: &[Round], now: DateTime<Utc>) -> Option<&Round> {
    rounds
        .iter()
        .find(|r| r.state(now) == State::Open)
        .or_else(|| rounds.iter().filter(|r| r.state(now) == State::Closed).max_by_key(|r| (r.closes_at, r.id.clone())))
}

/// Rounds newest first.
pub fn newest_first(rounds: &mut [Round]) {
    rounds.sort_by(|a, b| b.created_at.cmp(&a.created_at).then_with(|| b.id.cmp(&a.id)));
}

/// Why an operation on rounds was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoundError {
    /// A field is invalid (`400` naming it).
    #[error("{message}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// What is wrong, for a person.
        message: String,
    },
    /// No round has this id (`404`).
    #[error("no round {0}")]
    NotFound(String),
    /// The operation conflicts with the rounds' state (`409`).
    #[error("{0}")]
    Conflict(String),
}

/// A round to create: `{"id", "title", "opens_at"?, "closes_at"?, "results"?}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewRound {
    /// The id.
    pub id: String,
    /// The title.
    pub title: String,
    /// RFC 3339.
    #[serde(default)]
    pub opens_at: Option<String>,
    /// RFC 3339.
    #[serde(default)]
    pub closes_at: Option<String>,
    /// `live` (default) or `hidden`.
    #[serde(default)]
    pub results: Visibility,
    /// The choices; none: free text.
    #[serde(default)]
    pub ballot: Vec<Entry>,
}

fn invalid(field: &'static str, message: impl Into<String>) -> RoundError {
    RoundError::Invalid { field, message: message.into() }
}

fn instant_field(field: &'static str, text: Option<&str>) -> Result<Option<DateTime<Utc>>, RoundError> {
    text.map(|t| crate::time::parse(t).ok_or_else(|| invalid(field, format!("{field} must be an RFC 3339 instant"))))
        .transpose()
}

/// The round created from `new` at `now`, checked against the existing `rounds`.
pub fn create(rounds: &[Round], new: NewRound, now: DateTime<Utc>) -> Result<Round, RoundError> {
    if !is_valid_id(&new.id) {
        return Err(invalid("id", "id must be 1-64 of a-z, 0-9 and -, starting with a letter or a digit"));
    }
    let title = new.title.trim();
    // Format characters too: a bidi override (U+202E) would show the projector another title.
    if title.is_empty()
        || title.chars().count() > MAX_TITLE_CHARS
        || title.chars().any(crate::vote::is_control_or_format)
    {
        return Err(invalid(
            "title",
            format!("title must be 1-{MAX_TITLE_CHARS} characters without control or format characters"),
        ));
    }
    if let Some(problem) = crate::vote::look_alike(title) {
        return Err(invalid("title", format!("title {problem}")));
    }
    let opens_at = instant_field("opens_at", new.opens_at.as_deref())?;
    let closes_at = instant_field("closes_at", new.closes_at.as_deref())?;
    if let Some(closes) = closes_at {
        if closes <= now {
            return Err(invalid("closes_at", "closes_at must be in the future"));
        }
        if opens_at.is_some_and(|opens| opens >= closes) {
            return Err(invalid("closes_at", "closes_at must be after opens_at"));
        }
    }
    if new.results == Visibility::Revealed {
        return Err(invalid("results", "results must be live or hidden"));
    }
    let ballot = checked_ballot(new.ballot)?;
    if new.id == DEFAULT_ROUND || rounds.iter().any(|r| r.id == new.id) {
        return Err(RoundError::Conflict(format!("round {} exists", new.id)));
    }
    if rounds.len() >= MAX_ROUNDS {
        return Err(RoundError::Conflict(format!("at most {MAX_ROUNDS} rounds: delete one that never opened")));
    }
    let round = Round {
        id: new.id,
        title: title.to_owned(),
        // An opening instant in the past opens the round now.
        opens_at: opens_at.map(|at| at.max(now)),
        closes_at,
        results: new.results,
        created_at: Some(now),
        certified: None,
        ballot,
    };
    check_overlap(rounds, &round, now)?;
    Ok(round)
}

/// Round `id` as `new` describes it (`PUT`): only a round that never opened changes; an open or
/// closed round's window and ballot are frozen.
pub fn replace(rounds: &[Round], id: &str, new: NewRound, now: DateTime<Utc>) -> Result<Round, RoundError> {
    let existing = unopened(rounds, id, now)?;
    if new.id != id {
        return Err(invalid("id", "a round's id cannot change"));
    }
    let others: Vec<Round> = rounds.iter().filter(|r| r.id != id).cloned().collect();
    let round = create(&others, new, now)?;
    Ok(Round { created_at: existing.created_at, ..round })
}

/// Round `id`, if it never opened (it may be changed or deleted).
pub fn unopened<'a>(rounds: &'a [Round], id: &str, now: DateTime<Utc>) -> Result<&'a Round, RoundError> {
    let round = rounds.iter().find(|r| r.id == id).ok_or_else(|| RoundError::NotFound(id.to_owned()))?;
    if round.state(now) != State::Scheduled {
        return Err(RoundError::Conflict(format!("round {id} has opened: its window and ballot are frozen")));
    }
    Ok(round)
}

/// What an operator does to a round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Opens it now (it closes at its `closes_at`, if any).
    Open,
    /// Closes it now.
    Close,
    /// Shows its results to everyone.
    Reveal,
    /// Shows the public only its total.
    Hide,
}

impl Action {
    /// Parses `open`, `close`, `reveal` or `hide`.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "open" => Some(Self::Open),
            "close" => Some(Self::Close),
            "reveal" => Some(Self::Reveal),
            "hide" => Some(Self::Hide),
            _ => None,
        }
    }
}

/// Round `id` after `action` at `now`.
pub fn change(rounds: &[Round], id: &str, action: Action, now: DateTime<Utc>) -> Result<Round, RoundError> {
    let mut round = rounds.iter().find(|r| r.id == id).cloned().ok_or_else(|| RoundError::NotFound(id.to_owned()))?;
    match (action, round.state(now)) {
        (Action::Open, State::Open) => {}
        (Action::Open, State::Closed) => {
            return Err(RoundError::Conflict(format!("round {id} is closed; create another round")));
        }
        (Action::Open, State::Scheduled) => {
            if let Some(open) = rounds.iter().find(|r| r.id != id && r.state(now) == State::Open) {
                return Err(RoundError::Conflict(format!("round {} is open; close it first", open.id)));
            }
            round.opens_at = Some(now);
            if round.closes_at.is_some_and(|closes| closes <= now) {
                round.closes_at = None;
            }
            check_overlap(rounds, &round, now)?;
        }
        (Action::Close, State::Open) => round.closes_at = Some(now),
        (Action::Close, State::Closed) => {}
        (Action::Close, State::Scheduled) => {
            return Err(RoundError::Conflict(format!("round {id} is not open")));
        }
        (Action::Reveal, _) => {
            if round.results == Visibility::Hidden {
                round.results = Visibility::Revealed;
            }
        }
        (Action::Hide, _) => round.results = Visibility::Hidden,
    }
    Ok(round)
}

/// Refuses a window that would have two rounds open at once.
fn check_overlap(rounds: &[Round], round: &Round, now: DateTime<Utc>) -> Result<(), RoundError> {
    let Some((opens, closes)) = round.window() else { return Ok(()) };
    for other in rounds.iter().filter(|r| r.id != round.id) {
        let Some((other_opens, other_closes)) = other.window() else { continue };
        if other.state(now) == State::Closed {
            continue;
        }
        let before = closes.is_some_and(|c| c <= other_opens);
        let after = other_closes.is_some_and(|c| c <= opens);
        if !before && !after {
            return Err(RoundError::Conflict(format!(
                "round {} would be open at the same time (at most one round is open)",
                other.id
            )));
        }
    }
    Ok(())
}

/// A boxed future, for the store's object-safe trait.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The rounds as read, with the version a write must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stored {
    /// Changes so far (a compare-and-set's expected value).
    pub version: u64,
    /// Every round, in no order.
    pub rounds: Vec<Round>,
}

/// A round store that did not answer.
#[derive(Debug, Clone, thiserror::Error)]
#[error("round store: {0}")]
pub struct StoreError(pub String);

/// Where the rounds live: one place every gateway replica and the API read (Redis, or `bandvote
/// up`'s embedded database).
pub trait RoundStore: Send + Sync {
    /// Every round and the version.
    fn load(&self) -> BoxFuture<'_, Result<Stored, StoreError>>;
    /// Writes `round` if the version is still `version` (then it is one more); `false` if another
    /// change came first.
    fn save<'a>(&'a self, version: u64, round: &'a Round) -> BoxFuture<'a, Result<bool, StoreError>>;
    /// Removes round `id` if the version is still `version` (then it is one more); `false` if another
    /// change came first.
    fn remove<'a>(&'a self, version: u64, id: &'a str) -> BoxFuture<'a, Result<bool, StoreError>>;
    /// Adds votes refused at the gateways to their rounds' counts: (round, reason, votes).
    fn add_refusals<'a>(&'a self, refusals: &'a [(String, &'static str, u64)])
    -> BoxFuture<'a, Result<(), StoreError>>;
    /// Round `id`'s refused votes by reason.
    fn refusals<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, Result<std::collections::BTreeMap<String, u64>, StoreError>>;
    /// Publishes the rounds' ids in [`picker_order`] where dashboards read them (Redis's
    /// `rounds:picker`); a store no dashboard reads keeps nothing.
    fn publish_picker<'a>(&'a self, order: &'a [String]) -> BoxFuture<'a, Result<(), StoreError>> {
        let _ = order;
        Box::pin(async { Ok(()) })
    }
}

/// The rounds' ids in the order a round picker offers them, so that its first is the one to watch:
/// the open rounds (the latest opened first), then the scheduled ones (the soonest first, those
/// with no opening time last), then the closed ones (the latest closed first).
pub fn picker_order(rounds: &[Round], now: DateTime<Utc>) -> Vec<String> {
    let mut sorted: Vec<&Round> = rounds.iter().collect();
    sorted.sort_by_key(|round| {
        let at = |instant: Option<DateTime<Utc>>| instant.map_or(i64::MAX, |at| at.timestamp_millis());
        match round.state(now) {
            State::Open => (0, -round.opens_at.map_or(0, |at| at.timestamp_millis())),
            State::Scheduled => (1, at(round.opens_at)),
            State::Closed => (2, -round.closes_at.map_or(0, |at| at.timestamp_millis())),
        }
    });
    sorted.into_iter().map(|round| round.id.clone()).collect()
}

/// Why [`update`] did not change a round.
#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    /// The operation was refused.
    #[error(transparent)]
    Refused(#[from] RoundError),
    /// The store did not answer, or kept changing under the operation.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Reads the rounds, applies `operation` and writes its round if nothing changed meanwhile (else
/// tries again with the new rounds).
pub async fn update(
    store: &dyn RoundStore,
    operation: impl Fn(&[Round], DateTime<Utc>) -> Result<Round, RoundError>,
) -> Result<Round, UpdateError> {
    for _ in 0..16 {
        let stored = store.load().await?;
        let round = operation(&stored.rounds, Utc::now())?;
        if store.save(stored.version, &round).await? {
            return Ok(round);
        }
    }
    Err(StoreError("the rounds kept changing; try again".into()).into())
}

/// Deletes round `id` if it never opened, unless the rounds change meanwhile (then it looks again).
pub async fn delete(store: &dyn RoundStore, id: &str) -> Result<(), UpdateError> {
    for _ in 0..16 {
        let stored = store.load().await?;
        unopened(&stored.rounds, id, Utc::now())?;
        if store.remove(stored.version, id).await? {
            return Ok(());
        }
    }
    Err(StoreError("the rounds kept changing; try again".into()).into())
}

/// Writes `value` as JSON with every object's keys sorted and no spaces, whatever order serde_json
/// keeps them in (a dependency may turn on its `preserve_order`).
pub(crate) fn write_canonical(value: &serde_json::Value, out: &mut String) {
    match value {
        serde_json::Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (key, value)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&serde_json::Value::from(key.as_str()).to_string());
                out.push(':');
                write_canonical(value, out);
            }
            out.push('}');
        }
        serde_json::Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// `Option<DateTime<Utc>>` as the contract's RFC 3339 text or `null`.
mod instant {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(at: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
        match at {
            Some(at) => s.serialize_str(&crate::time::format(*at)),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
        match Option::<String>::deserialize(d)? {
            None => Ok(None),
            Some(text) => {
                crate::time::parse(&text).map(Some).ok_or_else(|| serde::de::Error::custom("not an RFC 3339 instant"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        crate::time::parse(s).expect("instant")
    }

    fn new(id: &str) -> NewRound {
        NewRound {
            id: id.into(),
            title: format!("Round {id}"),
            opens_at: None,
            closes_at: None,
            results: Visibility::Live,
            ballot: Vec::new(),
        }
    }

    fn entry(name: &str, album: &str, year: u16) -> Entry {
        Entry { name: name.into(), album: album.into(), year }
    }

    #[test]
    fn ids_follow_the_contract() {
        for good in ["final", "semi-1", "2026", "a"] {
            assert!(is_valid_id(good), "{good}");
        }
        for bad in ["", "-x", "Final", "semi_1", "a b", &"a".repeat(65)] {
            assert!(!is_valid_id(bad), "{bad}");
        }
    }

    #[test]
    fn with_no_round_votes_count_in_default() {
        assert_eq!(admit(&[], Utc::now()), Admission::Open(DEFAULT_ROUND.into()));
    }

    #[test]
    fn a_scheduled_round_opens_and_closes_by_itself() {
        let now = at("2026-12-01T20:00:00Z");
        let mut semi = new("semi");
        semi.opens_at = Some("2026-12-01T20:10:00Z".into());
        semi.closes_at = Some("2026-12-01T20:20:00Z".into());
        let round = create(&[], semi, now).expect("created");
        let rounds = [round];
        assert_eq!(admit(&rounds, now), Admission::Closed { opens_in: Some(Duration::from_secs(600)) });
        assert_eq!(admit(&rounds, at("2026-12-01T20:10:00Z")), Admission::Open("semi".into()));
        assert_eq!(rounds[0].state(at("2026-12-01T20:19:59.999Z")), State::Open);
        assert_eq!(rounds[0].state(at("2026-12-01T20:20:00Z")), State::Closed);
        assert_eq!(admit(&rounds, at("2026-12-01T20:20:00Z")), Admission::Closed { opens_in: None });
    }

    #[test]
    fn the_picker_offers_the_open_round_first() {
        let now = at("2026-12-01T21:00:00Z");
        let round = |id: &str, opens: Option<&str>, closes: Option<&str>| {
            let mut round = create(&[], new(id), at("2026-12-01T19:00:00Z")).expect("created");
            round.opens_at = opens.map(at);
            round.closes_at = closes.map(at);
            round
        };
        let rounds = [
            round("a-first-heat", Some("2026-12-01T19:00:00Z"), Some("2026-12-01T19:30:00Z")),
            round("b-second-heat", Some("2026-12-01T20:00:00Z"), Some("2026-12-01T20:30:00Z")),
            round("encore", None, None),
            round("final", Some("2026-12-01T22:00:00Z"), None),
            round("semi", Some("2026-12-01T20:45:00Z"), None),
            round("z-later", Some("2026-12-01T23:00:00Z"), None),
        ];
        assert_eq!(rounds[4].state(now), State::Open);
        let order = picker_order(&rounds, now);
        assert_eq!(order, ["semi", "final", "z-later", "encore", "b-second-heat", "a-first-heat"]);
        // At the final's opening time it is the one to watch.
        assert_eq!(picker_order(&rounds, at("2026-12-01T22:00:00Z"))[0], "final");
        assert!(picker_order(&[], now).is_empty());
    }

    #[test]
    fn at_most_one_round_is_open() {
        let now = at("2026-12-01T20:00:00Z");
        let semi = create(&[], new("semi"), now).expect("created");
        let final_ = create(std::slice::from_ref(&semi), new("final"), now).expect("created");
        let semi = change(&[semi, final_.clone()], "semi", Action::Open, now).expect("opened");
        let rounds = [semi.clone(), final_];
        assert!(matches!(change(&rounds, "final", Action::Open, now), Err(RoundError::Conflict(_))));
        let later = at("2026-12-01T20:05:00Z");
        let semi = change(&rounds, "semi", Action::Close, later).expect("closed");
        assert_eq!(semi.state(later), State::Closed);
        let rounds = [semi, rounds[1].clone()];
        let final_ = change(&rounds, "final", Action::Open, later).expect("opened");
        assert_eq!(final_.state(later), State::Open);
        assert!(matches!(change(&rounds, "semi", Action::Open, later), Err(RoundError::Conflict(_))));
        assert!(matches!(change(&rounds, "nope", Action::Open, later), Err(RoundError::NotFound(_))));
    }

    #[test]
    fn a_schedule_that_overlaps_an_open_round_is_refused() {
        let now = at("2026-12-01T20:00:00Z");
        let semi = change(&[create(&[], new("semi"), now).expect("created")], "semi", Action::Open, now).expect("open");
        let mut final_ = new("final");
        final_.opens_at = Some("2026-12-01T21:00:00Z".into());
        assert!(matches!(create(std::slice::from_ref(&semi), final_, now), Err(RoundError::Conflict(_))));
    }

    #[test]
    fn bad_fields_are_named() {
        let now = Utc::now();
        let mut round = new("x");
        round.title = " ".into();
        assert!(matches!(create(&[], round, now), Err(RoundError::Invalid { field: "title", .. })));
        let mut round = new("x");
        round.closes_at = Some("yesterday".into());
        assert!(matches!(create(&[], round, now), Err(RoundError::Invalid { field: "closes_at", .. })));
        assert!(matches!(create(&[], new("Bad"), now), Err(RoundError::Invalid { field: "id", .. })));
        assert!(matches!(create(&[], new("default"), now), Err(RoundError::Conflict(_))));
        let mut round = new("x");
        round.title = "Final \u{202e}lanif".into();
        assert!(matches!(create(&[], round, now), Err(RoundError::Invalid { field: "title", .. })));
    }

    #[test]
    fn rounds_are_capped() {
        let now = Utc::now();
        let mut rounds = Vec::new();
        for i in 0..MAX_ROUNDS {
            rounds.push(create(&rounds, new(&format!("r{i}")), now).expect("created"));
        }
        assert!(matches!(create(&rounds, new("one-more"), now), Err(RoundError::Conflict(_))));
        // Changing one that exists is not a new round.
        let mut again = new("r0");
        again.title = "Again".into();
        assert!(replace(&rounds, "r0", again, now).is_ok());
    }

    #[test]
    fn hidden_results_are_revealed_and_hidden_again() {
        let now = Utc::now();
        let mut round = new("prize");
        round.results = Visibility::Hidden;
        let round = create(&[], round, now).expect("created");
        assert!(round.is_hidden());
        let revealed = change(&[round], "prize", Action::Reveal, now).expect("revealed");
        assert_eq!(revealed.results, Visibility::Revealed);
        let hidden = change(&[revealed], "prize", Action::Hide, now).expect("hidden");
        assert!(hidden.is_hidden());
    }

    #[test]
    fn a_certified_result_carries_the_digest_of_its_canonical_json() {
        let mut counts = crate::Counts::default();
        counts.add("Alux Nahual", "El Viaje");
        counts.add("Bohemia Suburbana", "Mis palabras");
        // Certified before receipts existed: no tree.
        let certified = Certified::new("final", at("2026-12-01T21:15:00Z"), counts.clone(), None);
        assert_eq!(
            certified.canonical_json(),
            r#"{"albums":{"Alux Nahual / El Viaje":1,"Bohemia Suburbana / Mis palabras":1},"bands":{"Alux Nahual":1,"Bohemia Suburbana":1},"closed_at":"2026-12-01T21:15:00.000Z","round":"final","total":2}"#
        );
        assert_eq!(certified.sha256.len(), 64);
        assert!(certified.verifies());
        let mut altered = certified.clone();
        altered.total = 3;
        assert!(!altered.verifies());
        // With its tree: the leaves and the root are covered by the digest too.
        let root = "ab".repeat(32);
        let certified = Certified::new("final", at("2026-12-01T21:15:00Z"), counts, Some((2, root.clone())));
        assert!(certified.canonical_json().contains(&format!(r#""leaves":2,"merkle_root":"{root}","round""#)));
        assert!(certified.verifies());
        let mut altered = certified.clone();
        altered.merkle_root = Some("cd".repeat(32));
        assert!(!altered.verifies());
        let mut altered = certified;
        altered.leaves = Some(3);
        assert!(!altered.verifies());
    }

    #[test]
    fn a_closed_round_awaits_its_final_result_once_settled() {
        let now = at("2026-12-01T20:00:00Z");
        let round =
            change(&[create(&[], new("semi"), now).expect("created")], "semi", Action::Open, now).expect("open");
        let round = change(&[round], "semi", Action::Close, at("2026-12-01T20:10:00Z")).expect("closed");
        assert!(!round.awaits_final(at("2026-12-01T20:10:10Z")));
        assert!(!round.awaits_final(at("2026-12-01T20:10:18Z")));
        assert!(round.awaits_final(at("2026-12-01T20:10:19Z")));
    }

    #[test]
    fn a_ballot_is_checked_and_normalised_when_the_round_is_made() {
        let now = Utc::now();
        let mut round = new("final");
        round.ballot = vec![entry(" Alux Nahual ", "El Viaje", 2011), entry("Cafe\u{301} Tacvba", "Re", 1994)];
        let made = create(&[], round, now).expect("created");
        assert_eq!(made.ballot, [entry("Alux Nahual", "El Viaje", 2011), entry("Caf\u{e9} Tacvba", "Re", 1994)]);
        for ballot in [
            vec![entry("A", "x", 2000), entry("A ", "x", 2001)],
            vec![entry("A", "x", 999)],
            vec![entry("", "x", 2000)],
            vec![entry("A / B", "x", 2000)],
            (0..65).map(|i| entry(&format!("Band {i}"), "x", 2000)).collect(),
        ] {
            let mut round = new("final");
            round.ballot = ballot.clone();
            assert!(matches!(create(&[], round, now), Err(RoundError::Invalid { field: "ballot", .. })), "{ballot:?}");
        }
    }

    #[test]
    fn a_vote_is_one_entry_of_the_ballot_and_takes_its_year() {
        let ballot = [entry("Alux Nahual", "El Viaje", 2011), entry("Alux Nahual", "Alux", 1984)];
        let vote = |body: &str| crate::Vote::parse_json(body.as_bytes()).expect("valid");
        let taken = complete(&ballot, vote(r#"{"name":"Alux Nahual","album":"Alux"}"#)).expect("on the ballot");
        assert_eq!((taken.year.as_deref(), taken.rank), (Some("1984"), None));
        assert!(complete(&ballot, vote(r#"{"name":"Alux Nahual","album":"El Viaje","year":2011}"#)).is_ok());
        for (body, field) in [
            (r#"{"name":"Spam","album":"El Viaje"}"#, "name"),
            (r#"{"name":"Alux Nahual","album":"FREE TICKETS"}"#, "album"),
            (r#"{"name":"Alux Nahual","album":"El Viaje","year":"1999"}"#, "year"),
        ] {
            assert_eq!(complete(&ballot, vote(body)), Err(BallotError::NotOnBallot(field)), "{body}");
        }
        // Without a ballot a vote is free text, with its year.
        assert!(complete(&[], vote(r#"{"name":"Spam","album":"x","year":"2000"}"#)).is_ok());
        assert!(matches!(complete(&[], vote(r#"{"name":"Spam","album":"x"}"#)), Err(BallotError::Invalid(_))));
    }

    #[test]
    fn only_a_round_that_never_opened_is_changed() {
        let now = at("2026-12-01T20:00:00Z");
        let mut scheduled = new("final");
        scheduled.opens_at = Some("2026-12-01T21:00:00Z".into());
        let round = create(&[], scheduled.clone(), now).expect("created");
        scheduled.title = "The final".into();
        scheduled.ballot = vec![entry("A", "x", 2000)];
        let changed = replace(std::slice::from_ref(&round), "final", scheduled.clone(), now).expect("replaced");
        assert_eq!(
            (changed.title.as_str(), changed.ballot.len(), changed.created_at),
            ("The final", 1, round.created_at)
        );
        assert!(matches!(
            replace(std::slice::from_ref(&round), "other", scheduled.clone(), now),
            Err(RoundError::NotFound(_))
        ));
        let mut renamed = scheduled.clone();
        renamed.id = "semi".into();
        assert!(matches!(
            replace(std::slice::from_ref(&round), "final", renamed, now),
            Err(RoundError::Invalid { field: "id", .. })
        ));
        let open = change(&[round], "final", Action::Open, now).expect("opened");
        assert!(matches!(replace(std::slice::from_ref(&open), "final", scheduled, now), Err(RoundError::Conflict(_))));
        assert!(matches!(unopened(&[open], "final", now), Err(RoundError::Conflict(_))));
    }

    #[test]
    fn a_round_round_trips_through_json() {
        let round = create(&[], new("semi"), at("2026-12-01T20:00:00Z")).expect("created");
        let json = serde_json::to_string(&round).expect("json");
        assert!(json.contains(r#""created_at":"2026-12-01T20:00:00.000Z""#), "{json}");
        assert_eq!(serde_json::from_str::<Round>(&json).expect("parses"), round);
        let view = round.view(at("2026-12-01T20:00:00Z"), 3);
        assert_eq!(view["state"], "scheduled");
        assert_eq!(view["results"], "live");
        assert_eq!(view["total"], 3);
    }
}
