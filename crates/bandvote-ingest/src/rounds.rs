//! Rounds at the gateways: the round a vote counts in, or `409 {"error": "voting is closed"}`.
//!
//! Each gateway keeps the rounds as last read from the store every replica shares (Redis, or `up`'s
//! embedded database) and reads them again every [`REFRESH`]. A scheduled opening or closing is
//! decided from the rounds' instants and the gateway's clock, so it is exact; an operator's open or
//! close reaches every gateway within one refresh (plus the store's answer). The round is stamped
//! on the vote here and travels with it: the gRPC request's `round`, the wasm guest's
//! [`ROUND_HEADER`], the queue message's `round`.

use std::{
    sync::{Arc, RwLock},
    time::Duration,
};

use axum::http::StatusCode;
use bandvote_core::{
    Vote,
    round::{self, Admission, BallotError, Round, RoundStore},
};
use bandvote_runtime::{health, http::ApiError, service::Service};
use tokio_util::sync::CancellationToken;

/// How often a gateway reads the rounds again: the bound on how long after an operator's close a
/// gateway may still accept a vote (in that round).
pub const REFRESH: Duration = Duration::from_millis(200);

/// The header that carries the round from the wasm host through the guest to the HTTP producer.
pub const ROUND_HEADER: &str = "bandvote-round";

/// The round a producer writes for a gateway's stamp: the stamp when it is a round id, `default`
/// when there is none, `None` when it is not a round id.
pub fn stamped(stamp: &str) -> Option<String> {
    match stamp {
        "" => Some(round::DEFAULT_ROUND.to_owned()),
        id if round::is_valid_id(id) => Some(id.to_owned()),
        _ => None,
    }
}

/// The rounds as a gateway last read them.
pub struct RoundGate {
    store: Arc<dyn RoundStore>,
    known: RwLock<Option<Arc<Vec<Round>>>>,
    /// When the rounds were last read.
    read_at: RwLock<Option<std::time::Instant>>,
    /// Votes refused since the last write to the store: (round, reason) → votes.
    refused: std::sync::Mutex<std::collections::HashMap<(String, &'static str), u64>>,
}

impl RoundGate {
    /// A gate over `store`, which knows no round until its first read.
    pub fn new(store: Arc<dyn RoundStore>) -> Arc<Self> {
        Arc::new(Self { store, known: RwLock::new(None), read_at: RwLock::new(None), refused: Default::default() })
    }

    /// A gate over the rounds in the Redis at `url`, if one is given.
    pub fn from_redis(url: Option<&secrecy::SecretString>) -> anyhow::Result<Option<Arc<Self>>> {
        use secrecy::ExposeSecret;
        let Some(url) = url else { return Ok(None) };
        Ok(Some(Self::new(Arc::new(bandvote_store::rounds::RedisRounds::new(url.expose_secret())?))))
    }

    /// The round a vote received now counts in, and the vote as it counts there (one entry of the
    /// round's ballot, with the entry's year), or the refusal to answer: `409` while voting is
    /// closed, `422` for a vote not on the ballot, `400` for a free-text vote without its year.
    pub fn admit(&self, vote: Vote) -> Result<(String, Vote), ApiError> {
        let known = self.known.read().unwrap_or_else(|e| e.into_inner()).clone();
        // Until the rounds were read once, a vote may be one for a closed round.
        let Some(rounds) = known else {
            return Err(ApiError::unavailable_because("the rounds are not known yet", Duration::from_secs(1)));
        };
        match round::admit(&rounds, chrono::Utc::now()) {
            // An operator's close is seen only through the store: a view older than the bound a
            // round's finality counts on may take a vote after the close. Refused until read again.
            Admission::Open(id) if id != round::DEFAULT_ROUND && self.stale() => {
                Err(ApiError::unavailable_because("the rounds cannot be read right now", Duration::from_secs(1)))
            }
            Admission::Open(id) => {
                let ballot = rounds.iter().find(|r| r.id == id).map_or(&[][..], |r| &r.ballot);
                Ok((id, complete(ballot, vote)?))
            }
            Admission::Closed { opens_in } => {
                let closed = ApiError::client(StatusCode::CONFLICT, "voting is closed", None);
                Err(match opens_in {
                    Some(wait) => closed.with_retry_after(wait.max(Duration::from_secs(1))),
                    None => closed,
                })
            }
        }
    }

    /// Whether a producer takes a vote a gateway stamped with `round` now: the round is open, or
    /// closed less than [`round::HANDOFF`] ago (a gateway may have admitted it just before the
    /// close); `default` only while there are no rounds. Anything else did not come from a gateway
    /// that knew the rounds: `FAILED_PRECONDITION` (`409 voting is closed` at the gateway).
    pub fn hands_over(&self, round: &str) -> Result<(), tonic::Status> {
        let Some(rounds) = self.known.read().unwrap_or_else(|e| e.into_inner()).clone() else {
            return Err(tonic::Status::unavailable("the rounds are not known yet"));
        };
        if round != round::DEFAULT_ROUND && self.stale() {
            return Err(tonic::Status::unavailable("the rounds cannot be read right now"));
        }
        let now = chrono::Utc::now();
        let handoff = chrono::Duration::from_std(round::HANDOFF).unwrap_or_default();
        let taken = match rounds.iter().find(|r| r.id == round) {
            None => round == round::DEFAULT_ROUND && rounds.is_empty(),
            Some(r) => match r.state(now) {
                round::State::Open => true,
                round::State::Closed => r.certified.is_none() && r.closes_at.is_some_and(|at| now < at + handoff),
                round::State::Scheduled => false,
            },
        };
        if taken {
            return Ok(());
        }
        metrics::counter!(bandvote_runtime::metrics::PRODUCER_ROUND_REFUSALS).increment(1);
        Err(tonic::Status::failed_precondition("voting is closed"))
    }

    /// Counts a vote refused with `status` (see [`refusal_reason`]) in the round it was meant for:
    /// the open round, else the latest closed one (a late vote), else none. Written to the store
    /// with the next refresh, where the operator's console reads it.
    pub fn note_refusal(&self, status: StatusCode) {
        let Some(rounds) = self.known.read().unwrap_or_else(|e| e.into_inner()).clone() else { return };
        let round = match round::current(&rounds, chrono::Utc::now()) {
            Some(round) => round.id.clone(),
            None if rounds.is_empty() => round::DEFAULT_ROUND.to_owned(),
            None => return,
        };
        let mut refused = self.refused.lock().unwrap_or_else(|e| e.into_inner());
        *refused.entry((round, refusal_reason(status))).or_default() += 1;
    }

    /// Writes the refusals counted since the last write (kept for the next one if the store fails).
    async fn flush_refusals(&self) -> Result<(), round::StoreError> {
        let taken = std::mem::take(&mut *self.refused.lock().unwrap_or_else(|e| e.into_inner()));
        if taken.is_empty() {
            return Ok(());
        }
        let refusals: Vec<_> = taken.iter().map(|((round, reason), n)| (round.clone(), *reason, *n)).collect();
        let written = self.store.add_refusals(&refusals).await;
        if written.is_err() {
            let mut refused = self.refused.lock().unwrap_or_else(|e| e.into_inner());
            for (key, n) in taken {
                *refused.entry(key).or_default() += n;
            }
        }
        written
    }

    /// Reads the rounds again.
    pub async fn refresh(&self) -> Result<(), round::StoreError> {
        let asked = std::time::Instant::now();
        let stored = self.store.load().await?;
        *self.known.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(stored.rounds));
        *self.read_at.write().unwrap_or_else(|e| e.into_inner()) = Some(asked);
        Ok(())
    }

    /// Whether the rounds were last read longer ago than [`round::MAX_ROUNDS_VIEW_AGE`].
    fn stale(&self) -> bool {
        self.read_at
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .is_none_or(|at| at.elapsed() > round::MAX_ROUNDS_VIEW_AGE)
    }

    /// Reads the rounds every [`REFRESH`] until `shutdown`. While the store does not answer, the
    /// rounds last read still hold for what they refuse (scheduled instants are decided here), but
    /// once they are older than [`round::MAX_ROUNDS_VIEW_AGE`] a vote for a round gets `503`: the
    /// store alone tells an operator's close.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) -> anyhow::Result<()> {
        let mut failing = false;
        loop {
            let refreshed = self.refresh().await;
            let refreshed = match refreshed {
                Ok(()) => self.flush_refusals().await,
                failed => failed,
            };
            match refreshed {
                Ok(()) if failing => {
                    tracing::info!("the rounds are read again");
                    failing = false;
                }
                Ok(()) => {}
                Err(error) if !failing => {
                    tracing::warn!(%error, "cannot read the rounds; votes for a round get 503 until they are read again");
                    failing = true;
                }
                Err(_) => {}
            }
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                () = tokio::time::sleep(REFRESH) => {}
            }
        }
    }

    /// Readiness: the rounds were read at least once.
    pub fn check(self: &Arc<Self>) -> health::Check {
        let gate = Arc::clone(self);
        health::check(move || {
            let gate = Arc::clone(&gate);
            async move {
                if gate.known.read().unwrap_or_else(|e| e.into_inner()).is_some() {
                    Ok(())
                } else {
                    Err("the rounds were never read".into())
                }
            }
        })
    }
}

/// The vote as it counts in a round with `ballot` (empty: free text), or the refusal: `422` naming
/// the field for a vote not on the ballot, `400` for one without its year.
pub fn complete(ballot: &[round::Entry], vote: Vote) -> Result<Vote, ApiError> {
    round::complete(ballot, vote).map_err(|error| match error {
        BallotError::NotOnBallot(field) => {
            ApiError::client(StatusCode::UNPROCESSABLE_ENTITY, error.to_string(), Some(field))
        }
        BallotError::Invalid(error) => ApiError::bad_request(error.message, error.field),
    })
}

/// The metrics' `reason` for a vote refused with `status` before it was forwarded: `closed` (`409`,
/// voting is closed), `ballot` (`422`), `fairness` (`401`, `429`), else `invalid`.
pub fn refusal_reason(status: StatusCode) -> &'static str {
    match status {
        StatusCode::CONFLICT => "closed",
        StatusCode::UNPROCESSABLE_ENTITY => "ballot",
        StatusCode::UNAUTHORIZED | StatusCode::TOO_MANY_REQUESTS => "fairness",
        _ => "invalid",
    }
}

/// A gateway service with its rounds: the gate's readiness and refresh task.
pub fn with_gate(service: Service, gate: &Arc<RoundGate>) -> Service {
    let refresh = Arc::clone(gate);
    service.check("rounds", gate.check()).task("rounds", move |shutdown| refresh.run(shutdown))
}

#[cfg(test)]
mod tests {
    use bandvote_core::round::{BoxFuture, StoreError, Stored};

    use super::*;

    struct Fixed(Vec<Round>);

    impl RoundStore for Fixed {
        fn load(&self) -> BoxFuture<'_, Result<Stored, StoreError>> {
            let rounds = self.0.clone();
            Box::pin(async move { Ok(Stored { version: 1, rounds }) })
        }

        fn save<'a>(&'a self, _: u64, _: &'a Round) -> BoxFuture<'a, Result<bool, StoreError>> {
            Box::pin(async { Ok(false) })
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

    fn vote(body: &str) -> Vote {
        Vote::parse_json(body.as_bytes()).expect("a valid vote")
    }

    const VOTE: &str = r#"{"name":"Alux Nahual","album":"El Viaje","year":"2011"}"#;

    fn round(id: &str, opens_in_secs: i64) -> Round {
        let opens = chrono::Utc::now() + chrono::Duration::seconds(opens_in_secs);
        Round {
            id: id.into(),
            title: id.into(),
            opens_at: Some(opens),
            closes_at: None,
            results: round::Visibility::Live,
            created_at: Some(opens),
            certified: None,
            ballot: Vec::new(),
        }
    }

    #[tokio::test]
    async fn a_gate_refuses_until_it_has_read_the_rounds() {
        let gate = RoundGate::new(Arc::new(Fixed(vec![])));
        assert_eq!(gate.admit(vote(VOTE)).map_err(|e| e.status()).err(), Some(StatusCode::SERVICE_UNAVAILABLE));
        gate.refresh().await.expect("read");
        assert_eq!(gate.admit(vote(VOTE)).map_err(|e| e.status()).map(|(round, _)| round), Ok("default".to_owned()));
    }

    #[tokio::test]
    async fn votes_count_in_the_open_round_and_are_refused_between_rounds() {
        let gate = RoundGate::new(Arc::new(Fixed(vec![round("semi", -5)])));
        gate.refresh().await.expect("read");
        assert_eq!(gate.admit(vote(VOTE)).map_err(|e| e.status()).map(|(round, _)| round), Ok("semi".to_owned()));
        let gate = RoundGate::new(Arc::new(Fixed(vec![round("final", 90)])));
        gate.refresh().await.expect("read");
        let refused = gate.admit(vote(VOTE)).expect_err("closed");
        assert_eq!(refused.status(), StatusCode::CONFLICT);
        let response = axum::response::IntoResponse::into_response(refused);
        let retry: u64 = response.headers()["retry-after"].to_str().expect("text").parse().expect("seconds");
        assert!((85..=90).contains(&retry), "{retry}");
    }

    #[tokio::test]
    async fn a_view_of_the_rounds_older_than_the_bound_takes_no_vote_for_a_round() {
        let gate = RoundGate::new(Arc::new(Fixed(vec![round("semi", -5)])));
        gate.refresh().await.expect("read");
        assert!(gate.admit(vote(VOTE)).is_ok() && gate.hands_over("semi").is_ok());
        // The store stopped answering a while ago: an operator's close would not be seen.
        let old = std::time::Instant::now() - round::MAX_ROUNDS_VIEW_AGE - Duration::from_millis(100);
        *gate.read_at.write().expect("lock") = Some(old);
        assert_eq!(gate.admit(vote(VOTE)).map_err(|e| e.status()).err(), Some(StatusCode::SERVICE_UNAVAILABLE));
        assert_eq!(gate.hands_over("semi").map_err(|s| s.code()).err(), Some(tonic::Code::Unavailable));
        // Without rounds nothing closes: the default round still takes votes.
        let gate = RoundGate::new(Arc::new(Fixed(vec![])));
        gate.refresh().await.expect("read");
        *gate.read_at.write().expect("lock") = Some(old);
        assert!(gate.admit(vote(VOTE)).is_ok() && gate.hands_over("default").is_ok());
    }

    #[tokio::test]
    async fn a_vote_off_the_open_rounds_ballot_is_refused_naming_the_field() {
        let mut open = round("final", -5);
        open.ballot = vec![round::Entry { name: "Alux Nahual".into(), album: "El Viaje".into(), year: 2011 }];
        let gate = RoundGate::new(Arc::new(Fixed(vec![open])));
        gate.refresh().await.expect("read");
        let (_, taken) = gate.admit(vote(r#"{"name":"Alux Nahual","album":"El Viaje"}"#)).expect("on the ballot");
        assert_eq!(taken.year.as_deref(), Some("2011"));
        let refused = gate.admit(vote(r#"{"name":"FREE TICKETS","album":"El Viaje"}"#)).expect_err("off the ballot");
        assert_eq!((refused.status(), refusal_reason(refused.status())), (StatusCode::UNPROCESSABLE_ENTITY, "ballot"));
        gate.note_refusal(refused.status());
        gate.note_refusal(StatusCode::TOO_MANY_REQUESTS);
        let refused = gate.refused.lock().expect("lock").clone();
        assert_eq!(refused, [(("final".into(), "ballot"), 1), (("final".into(), "fairness"), 1)].into());
    }

    #[test]
    fn producers_accept_round_ids_and_no_stamp() {
        assert_eq!(stamped(""), Some("default".into()));
        assert_eq!(stamped("final"), Some("final".into()));
        assert_eq!(stamped("Final!"), None);
    }
}
