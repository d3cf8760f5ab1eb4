//! The schedule, the senders and the collector of one run.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::{
    sync::{Semaphore, mpsc},
    time::Instant,
};

use crate::{
    report::{Collector, Report},
    source::VoteSource,
};

/// What to send, where, and how fast.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// Vote endpoints (full URLs), used in turn: one for a single path, two to interleave both.
    pub targets: Vec<String>,
    /// Arrival rates in votes per second, one per step (one entry = a constant rate).
    pub rates: Vec<f64>,
    /// How long each rate step lasts.
    pub step: Duration,
    /// Stop after this many votes, even if the steps are not over.
    pub count: Option<u64>,
    /// The votes to send.
    pub source: VoteSource,
    /// Requests allowed in flight at once; votes due beyond it wait, and their wait counts as latency.
    pub max_in_flight: usize,
    /// Time allowed for one request.
    pub timeout: Duration,
    /// Retries of a vote that got a 5xx or no answer, with the same `Idempotency-Key`.
    pub retries: u32,
    /// Send an `Idempotency-Key` with every vote (always on when `retries` > 0).
    pub keys: bool,
    /// Draw a progress bar on stderr.
    pub progress: bool,
}

impl LoadConfig {
    /// Number of votes the schedule holds.
    pub fn planned(&self) -> u64 {
        let per_steps: u64 = self.rates.iter().map(|rate| (rate * self.step.as_secs_f64()).floor() as u64).sum();
        self.count.map_or(per_steps, |count| count.min(per_steps))
    }
}

/// The send times of a run, as offsets from its start: `floor(rate × step)` votes evenly spaced in
/// each step.
fn schedule(rates: &[f64], step: Duration, count: Option<u64>) -> impl Iterator<Item = Duration> + '_ {
    rates
        .iter()
        .enumerate()
        .flat_map(move |(k, &rate)| {
            let n = (rate * step.as_secs_f64()).floor() as u64;
            let begin = step * k as u32;
            (0..n).map(move |i| begin + Duration::from_secs_f64(i as f64 / rate))
        })
        .take(count.map_or(usize::MAX, |c| c as usize))
}

/// How one vote ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// `202`: the vote is durable.
    Accepted,
    /// A 4xx: the server refused the vote (it is not counted).
    Rejected(u16),
    /// A 5xx or no answer after every retry: the vote may or may not have been queued.
    Failed(Option<u16>),
}

/// One answered (or abandoned) vote, as the senders report it to the collector.
#[derive(Debug)]
pub(crate) struct Sample {
    pub(crate) target: usize,
    pub(crate) vote: usize,
    pub(crate) intended: Duration,
    pub(crate) latency: Duration,
    pub(crate) retries: u32,
    pub(crate) outcome: Outcome,
}

/// Counters the progress bar reads.
#[derive(Debug, Default)]
struct Progress {
    due: AtomicU64,
    done: AtomicU64,
    accepted: AtomicU64,
    failed: AtomicU64,
}

/// Runs the schedule to the end, waits for every answer and returns the report.
pub async fn run(config: LoadConfig) -> anyhow::Result<Report> {
    anyhow::ensure!(!config.targets.is_empty(), "no target to send votes to");
    anyhow::ensure!(config.rates.iter().all(|r| r.is_finite() && *r > 0.0), "every rate must be > 0");
    anyhow::ensure!(config.max_in_flight > 0, "max in flight must be > 0");
    let client = reqwest::Client::builder()
        .timeout(config.timeout)
        .pool_max_idle_per_host(config.max_in_flight)
        .tcp_nodelay(true)
        .build()?;
    let config = Arc::new(config);
    let planned = config.planned();
    let run_id = uuid::Uuid::now_v7().simple().to_string();
    let progress = Arc::new(Progress::default());
    let bar = config.progress.then(|| progress_bar(planned));
    let (samples, mut receiver) = mpsc::unbounded_channel::<Sample>();
    let collector = {
        let config = config.clone();
        tokio::spawn(async move {
            let mut collector = Collector::new(config.targets.clone(), config.source.clone());
            while let Some(sample) = receiver.recv().await {
                collector.record(&sample);
            }
            collector
        })
    };
    let ticker = bar.clone().map(|bar| {
        let progress = progress.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(200));
            loop {
                tick.tick().await;
                let done = progress.done.load(Ordering::Relaxed);
                bar.set_position(done);
                bar.set_message(format!(
                    "due {} · accepted {} · failed {} · in flight {}",
                    progress.due.load(Ordering::Relaxed),
                    progress.accepted.load(Ordering::Relaxed),
                    progress.failed.load(Ordering::Relaxed),
                    progress.due.load(Ordering::Relaxed).saturating_sub(done),
                ));
            }
        })
    });

    let in_flight = Arc::new(Semaphore::new(config.max_in_flight));
    let mut picker = config.source.picker();
    let start = Instant::now() + Duration::from_millis(5);
    let mut senders = tokio::task::JoinSet::new();
    for (seq, offset) in schedule(&config.rates, config.step, config.count).enumerate() {
        let intended = start + offset;
        if intended > Instant::now() {
            tokio::time::sleep_until(intended).await;
        }
        progress.due.fetch_add(1, Ordering::Relaxed);
        let vote = picker.next_index();
        let target = seq % config.targets.len();
        let key = (config.keys || config.retries > 0).then(|| format!("load-{run_id}-{seq}"));
        let (client, config, in_flight, samples, progress) =
            (client.clone(), config.clone(), in_flight.clone(), samples.clone(), progress.clone());
        senders.spawn(async move {
            let Ok(_permit) = in_flight.acquire().await else { return };
            let (outcome, retries) =
                send(&client, &config.targets[target], &config.source.get(vote).json, key.as_deref(), &config).await;
            progress.done.fetch_add(1, Ordering::Relaxed);
            match outcome {
                Outcome::Accepted => progress.accepted.fetch_add(1, Ordering::Relaxed),
                Outcome::Failed(_) => progress.failed.fetch_add(1, Ordering::Relaxed),
                Outcome::Rejected(_) => 0,
            };
            let sample = Sample { target, vote, intended: offset, latency: intended.elapsed(), retries, outcome };
            let _ = samples.send(sample);
        });
        // Finished senders are reaped as the run goes, so that the set stays the size of the
        // requests in flight.
        while senders.try_join_next().is_some() {}
    }
    let sending = start.elapsed();
    while senders.join_next().await.is_some() {}
    let elapsed = start.elapsed();
    drop(samples);
    let collector = collector.await?;
    if let Some(ticker) = ticker {
        ticker.abort();
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    Ok(collector.finish(&config.rates, config.step, planned, sending, elapsed))
}

/// Sends one vote, retrying a 5xx or a missing answer with the same key; returns how it ended and
/// how many retries it took.
async fn send(
    client: &reqwest::Client,
    url: &str,
    body: &[u8],
    key: Option<&str>,
    config: &LoadConfig,
) -> (Outcome, u32) {
    let mut attempt = 0;
    loop {
        let mut request =
            client.post(url).header(reqwest::header::CONTENT_TYPE, "application/json").body(body.to_vec());
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        let (outcome, retry_after) = match request.send().await {
            Ok(response) => {
                let status = response.status();
                let retry_after = response
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok())
                    .map(Duration::from_secs);
                // Read the body so that the connection goes back to the pool.
                let _ = response.bytes().await;
                match status.as_u16() {
                    202 => (Outcome::Accepted, None),
                    code @ 400..=499 => (Outcome::Rejected(code), None),
                    code => (Outcome::Failed(Some(code)), retry_after),
                }
            }
            Err(_) => (Outcome::Failed(None), None),
        };
        if !matches!(outcome, Outcome::Failed(_)) || attempt >= config.retries {
            return (outcome, attempt);
        }
        attempt += 1;
        let backoff = Duration::from_millis(50 << attempt.min(5));
        tokio::time::sleep(retry_after.unwrap_or(backoff).min(Duration::from_secs(2))).await;
    }
}

fn progress_bar(planned: u64) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::with_draw_target(Some(planned), indicatif::ProgressDrawTarget::stderr());
    bar.set_style(
        indicatif::ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {msg}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_spaces_votes_evenly_within_each_step() {
        let offsets: Vec<_> = schedule(&[4.0, 2.0], Duration::from_secs(1), None).collect();
        let millis: Vec<_> = offsets.iter().map(|d| d.as_millis()).collect();
        assert_eq!(millis, [0, 250, 500, 750, 1000, 1500]);
        assert_eq!(schedule(&[4.0, 2.0], Duration::from_secs(1), Some(3)).count(), 3);
    }
}
