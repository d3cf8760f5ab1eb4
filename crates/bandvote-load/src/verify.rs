//! `--verify`: after a run, wait until the API's counts include every accepted vote, then compare.

use std::{collections::BTreeMap, fmt, time::Duration};

use anyhow::Context as _;
use serde::Serialize;
use tokio::time::Instant;

pub use bandvote_core::Counts;

/// Reads the current counts from the API at `api` (its base URL, e.g. `http://127.0.0.1:8080`).
pub async fn fetch_counts(client: &reqwest::Client, api: &str) -> anyhow::Result<Counts> {
    let url = format!("{}/api/results", api.trim_end_matches('/'));
    let response = client.get(&url).send().await.with_context(|| format!("GET {url}"))?;
    anyhow::ensure!(response.status().is_success(), "GET {url}: {}", response.status());
    response.json().await.with_context(|| format!("GET {url}: not a results document"))
}

/// One count that does not match the run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Difference {
    /// `total`, `band <name>` or `album <band> / <album>`.
    pub what: String,
    /// Votes the run had accepted for it.
    pub accepted: u64,
    /// Of the votes with no answer, how many were for it (each may or may not count).
    pub unknown: u64,
    /// What the counts gained during the run.
    pub counted: u64,
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = if self.counted < self.accepted { "missing" } else { "counted twice" };
        let expected = if self.unknown == 0 {
            self.accepted.to_string()
        } else {
            format!("{}..={}", self.accepted, self.accepted + self.unknown)
        };
        write!(f, "{}: accepted {expected}, counted {} ({verdict})", self.what, self.counted)
    }
}

/// The verdict of `--verify`.
#[derive(Debug, Clone, Serialize)]
pub struct Verification {
    /// Whether every count matches the votes the run accepted.
    pub ok: bool,
    /// Milliseconds from the end of the run until the counts matched (if they did).
    pub converged_ms: Option<u64>,
    /// What did not match, when it did not.
    pub differences: Vec<Difference>,
}

impl fmt::Display for Verification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.converged_ms {
            Some(ms) if self.ok => write!(f, "verify: every accepted vote counted exactly once, {ms} ms after the run"),
            _ => {
                writeln!(f, "verify FAILED: the counts do not match the accepted votes")?;
                for difference in &self.differences {
                    writeln!(f, "  {difference}")?;
                }
                Ok(())
            }
        }
    }
}

/// Every count the run touched: what it gained (`after - before`) must be at least the accepted
/// votes and at most accepted + unknown.
fn compare(before: &Counts, after: &Counts, accepted: &Counts, unknown: &Counts) -> Vec<Difference> {
    let mut differences = Vec::new();
    let mut check = |what: String, before: u64, after: u64, accepted: u64, unknown: u64| {
        let counted = after.saturating_sub(before);
        if counted < accepted || counted > accepted + unknown {
            differences.push(Difference { what, accepted, unknown, counted });
        }
    };
    check("total".to_owned(), before.total, after.total, accepted.total, unknown.total);
    let keys = |a: &BTreeMap<String, u64>, b: &BTreeMap<String, u64>, c: &BTreeMap<String, u64>| {
        let mut keys: Vec<String> = a.keys().chain(b.keys()).chain(c.keys()).cloned().collect();
        keys.sort();
        keys.dedup();
        keys
    };
    let get = |map: &BTreeMap<String, u64>, key: &str| map.get(key).copied().unwrap_or(0);
    for band in keys(&accepted.bands, &unknown.bands, &after.bands) {
        check(
            format!("band {band}"),
            get(&before.bands, &band),
            get(&after.bands, &band),
            get(&accepted.bands, &band),
            get(&unknown.bands, &band),
        );
    }
    for album in keys(&accepted.albums, &unknown.albums, &after.albums) {
        check(
            format!("album {album}"),
            get(&before.albums, &album),
            get(&after.albums, &album),
            get(&accepted.albums, &album),
            get(&unknown.albums, &album),
        );
    }
    differences
}

/// How long the counts must go on matching once they first match: a vote counted twice a moment
/// later (a replay after a crash) must not slip through.
pub const HOLD: Duration = Duration::from_secs(2);

/// Polls the API until its counts, compared with `before` (read just before the run), match the
/// run's accepted votes, or until `timeout`; then checks that they still match for `HOLD` (2 s). A
/// count above what the run can explain fails at once (counts never go down); a count below keeps
/// being polled until the counts first match. Assumes no other client votes meanwhile.
pub async fn verify(
    client: &reqwest::Client,
    api: &str,
    before: &Counts,
    accepted: &Counts,
    unknown: &Counts,
    timeout: Duration,
) -> anyhow::Result<Verification> {
    let start = Instant::now();
    let mut matched: Option<(u64, Instant)> = None;
    loop {
        // A store restarting makes the API answer 503 for a moment: keep polling until the timeout.
        let after = match fetch_counts(client, api).await {
            Ok(counts) => counts,
            Err(error) if start.elapsed() < timeout => {
                tracing::debug!(error = format!("{error:#}"), "verify: the API did not answer, polling again");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            Err(error) => return Err(error),
        };
        let differences = compare(before, &after, accepted, unknown);
        match (differences.is_empty(), matched) {
            (true, Some((converged_ms, at))) if at.elapsed() >= HOLD => {
                return Ok(Verification { ok: true, converged_ms: Some(converged_ms), differences });
            }
            (true, Some(_)) => {}
            (true, None) => matched = Some((start.elapsed().as_millis() as u64, Instant::now())),
            // Once they matched, any change is a vote counted again.
            (false, Some(_)) => return Ok(Verification { ok: false, converged_ms: None, differences }),
            (false, None) => {
                let too_many = differences.iter().any(|d| d.counted > d.accepted + d.unknown);
                if too_many || start.elapsed() >= timeout {
                    return Ok(Verification { ok: false, converged_ms: None, differences });
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(total: u64, bands: &[(&str, u64)], albums: &[(&str, u64)]) -> Counts {
        Counts {
            total,
            bands: bands.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect(),
            albums: albums.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect(),
        }
    }

    /// An API whose total is `first` until `later_after`, then `later`.
    async fn api_counting(first: u64, later: u64, later_after: Duration) -> String {
        let started = std::time::Instant::now();
        let app = axum::Router::new().route(
            "/api/results",
            axum::routing::get(move || async move {
                let total = if started.elapsed() < later_after { first } else { later };
                axum::Json(serde_json::json!({"total": total, "bands": {"A": total}, "albums": {"A / x": total}}))
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}")
    }

    #[tokio::test]
    async fn a_vote_counted_again_after_the_counts_matched_fails_the_verification() {
        let client = reqwest::Client::new();
        let accepted = counts(3, &[("A", 3)], &[("A / x", 3)]);
        let api = api_counting(3, 4, Duration::from_millis(500)).await;
        let verdict = verify(&client, &api, &Counts::default(), &accepted, &Counts::default(), Duration::from_secs(10))
            .await
            .expect("the API answers");
        assert!(!verdict.ok, "the fourth count came after the first match: {verdict}");
        let api = api_counting(3, 3, Duration::ZERO).await;
        let verdict = verify(&client, &api, &Counts::default(), &accepted, &Counts::default(), Duration::from_secs(10))
            .await
            .expect("the API answers");
        assert!(verdict.ok, "{verdict}");
    }

    #[test]
    fn gains_are_compared_with_the_accepted_votes() {
        let before = counts(5, &[("A", 5)], &[("A / x", 5)]);
        let accepted = counts(3, &[("A", 2), ("B", 1)], &[("A / x", 2), ("B / y", 1)]);
        let exact = counts(8, &[("A", 7), ("B", 1)], &[("A / x", 7), ("B / y", 1)]);
        assert!(compare(&before, &exact, &accepted, &Counts::default()).is_empty());

        let missing = counts(7, &[("A", 7)], &[("A / x", 7)]);
        let differences = compare(&before, &missing, &accepted, &Counts::default());
        let lines: Vec<_> = differences.iter().map(ToString::to_string).collect();
        assert_eq!(
            lines,
            [
                "total: accepted 3, counted 2 (missing)",
                "band B: accepted 1, counted 0 (missing)",
                "album B / y: accepted 1, counted 0 (missing)"
            ]
        );

        let twice = counts(9, &[("A", 8), ("B", 1)], &[("A / x", 8), ("B / y", 1)]);
        let differences = compare(&before, &twice, &accepted, &Counts::default());
        assert_eq!(differences[0].to_string(), "total: accepted 3, counted 4 (counted twice)");
        // A vote with no answer may or may not have been counted.
        let unknown = counts(1, &[("A", 1)], &[("A / x", 1)]);
        assert!(compare(&before, &twice, &accepted, &unknown).is_empty());
        assert!(compare(&before, &exact, &accepted, &unknown).is_empty());
    }
}
