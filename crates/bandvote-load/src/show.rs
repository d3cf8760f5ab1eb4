//! A show around a load run: phones connected first, a hidden round opened, the votes sent, the
//! round closed and revealed, and how long the last phones took to hear each change; with the
//! server's process id, its memory per connected phone and its CPU in each phase.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::{Context, bail};
use serde::Serialize;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::{
    LoadConfig, Report,
    phones::{Change, Phones},
};

/// How the show is run.
#[derive(Debug, Clone)]
pub struct ShowConfig {
    /// The API (and web app) base URL, e.g. `http://127.0.0.1:8080`.
    pub api: String,
    /// The operator's bearer token.
    pub admin_token: String,
    /// Phones following the live stream.
    pub phones: usize,
    /// The server's process, to read its memory and CPU time (`/proc`), if known.
    pub server_pid: Option<u32>,
    /// Longest wait for the phones to connect, and for them to hear a change.
    pub patience: Duration,
}

/// What the show measured.
#[derive(Debug, Clone, Serialize)]
pub struct ShowReport {
    /// The round it ran.
    pub round: String,
    /// Phones asked for, and connected before the round opened.
    pub phones: usize,
    /// Phones whose stream was open when the round opened.
    pub connected: usize,
    /// Streams that ended or were refused during the show (each reconnected).
    pub drops: usize,
    /// Server memory (VmRSS, KiB) before the phones, with them idle, and at the end.
    pub rss_kib: Option<[u64; 3]>,
    /// (With phones idle − before) / connected phones, in KiB.
    pub kib_per_phone: Option<f64>,
    /// Server CPU (cores busy on average) while the phones were idle, during the votes, and from the
    /// close to the last phone hearing the reveal.
    pub cpu_cores: Option<[f64; 3]>,
    /// How long after the operator's close the phones heard it: p50, p99, max (ms), and how many.
    pub close: Delays,
    /// The same for the reveal.
    pub reveal: Delays,
    /// Bytes the phones read, in all.
    pub bytes: u64,
}

/// Delays of one change over the phones.
#[derive(Debug, Clone, Serialize)]
pub struct Delays {
    /// Phones that heard it.
    pub heard: usize,
    /// Median, ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Slowest, ms.
    pub max_ms: f64,
}

impl Delays {
    fn of(delays: &[Duration]) -> Self {
        let at = |q: f64| {
            if delays.is_empty() {
                return f64::NAN;
            }
            let i = ((delays.len() as f64 * q).ceil() as usize).clamp(1, delays.len()) - 1;
            delays[i].as_secs_f64() * 1000.0
        };
        Self { heard: delays.len(), p50_ms: at(0.5), p99_ms: at(0.99), max_ms: at(1.0) }
    }
}

impl std::fmt::Display for ShowReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "show: round {}, {} of {} phones connected, {} drops",
            self.round, self.connected, self.phones, self.drops
        )?;
        if let (Some([before, idle, end]), Some(per_phone)) = (self.rss_kib, self.kib_per_phone) {
            writeln!(
                f,
                "server memory: {before} KiB before, {idle} KiB with the phones idle ({per_phone:.1} KiB per phone), {end} KiB at the end"
            )?;
        }
        if let Some([idle, votes, after]) = self.cpu_cores {
            writeln!(
                f,
                "server CPU: {idle:.2} cores with the phones idle, {votes:.2} during the votes, {after:.2} from the close to the reveal heard"
            )?;
        }
        for (what, d) in [("close", &self.close), ("reveal", &self.reveal)] {
            writeln!(
                f,
                "{what} heard by {} phones: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
                d.heard, d.p50_ms, d.p99_ms, d.max_ms
            )?;
        }
        writeln!(f, "the phones read {:.1} MiB", self.bytes as f64 / (1024.0 * 1024.0))
    }
}

/// Runs `load` inside a show (see the module's doc).
pub async fn run(config: ShowConfig, load: LoadConfig) -> anyhow::Result<(Report, ShowReport)> {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?;
    let server = server_address(&config.api)?;
    let round = format!("load-{}", unix_seconds());
    let stop = CancellationToken::new();
    let _stop_on_return = stop.clone().drop_guard();
    let rss_before = config.server_pid.and_then(rss_kib);
    let phones = Phones::start(server, config.phones, 256, stop.clone());
    phones.watch(&round);
    let deadline = Instant::now() + config.patience;
    while phones.connected() < config.phones && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Let the connections settle before reading the memory they cost.
    let idle = Sampler::start(config.server_pid);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss_idle = config.server_pid.and_then(rss_kib);
    let cpu_idle = idle.cores();
    let connected = phones.connected();

    let admin = |path: String, body: Option<serde_json::Value>| {
        let mut request = client.post(format!("{}/api/admin/{path}", config.api)).bearer_auth(&config.admin_token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        async move {
            let answer = request.send().await.context("the API did not answer")?;
            if !answer.status().is_success() {
                bail!("{path}: the API answered {}: {}", answer.status(), answer.text().await.unwrap_or_default());
            }
            Ok(())
        }
    };
    let body = serde_json::json!({"id": round, "title": "Load", "results": "hidden"});
    admin("rounds".into(), Some(body)).await?;
    admin(format!("rounds/{round}/open"), None).await?;
    // The gateways read the rounds every 200 ms.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let voting = Sampler::start(config.server_pid);
    let report = crate::run(load).await?;
    let cpu_votes = voting.cores();

    let after = Sampler::start(config.server_pid);
    let closed_at = Instant::now();
    admin(format!("rounds/{round}/close"), None).await?;
    wait_heard(&phones, Change::Closed, connected, config.patience).await;
    let revealed_at = Instant::now();
    admin(format!("rounds/{round}/reveal"), None).await?;
    wait_heard(&phones, Change::Revealed, connected, config.patience).await;
    let cpu_after = after.cores();
    let rss_end = config.server_pid.and_then(rss_kib);
    let rss = match (rss_before, rss_idle, rss_end) {
        (Some(a), Some(b), Some(c)) => Some([a, b, c]),
        _ => None,
    };
    let show = ShowReport {
        round,
        phones: config.phones,
        connected,
        drops: phones.drops(),
        kib_per_phone: rss.filter(|_| connected > 0).map(|[a, b, _]| (b as f64 - a as f64) / connected as f64),
        rss_kib: rss,
        cpu_cores: match (cpu_idle, cpu_votes, cpu_after) {
            (Some(a), Some(b), Some(c)) => Some([a, b, c]),
            _ => None,
        },
        close: Delays::of(&phones.delays(Change::Closed, closed_at)),
        reveal: Delays::of(&phones.delays(Change::Revealed, revealed_at)),
        bytes: phones.bytes(),
    };
    Ok((report, show))
}

async fn wait_heard(phones: &Arc<Phones>, change: Change, of: usize, patience: Duration) {
    let deadline = Instant::now() + patience;
    while phones.heard(change) < of && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Seconds since the Unix epoch, for a round id of its own.
fn unix_seconds() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The socket address of `http://host:port`.
fn server_address(api: &str) -> anyhow::Result<SocketAddr> {
    let url = reqwest::Url::parse(api).with_context(|| format!("not a URL: {api}"))?;
    let addrs = url.socket_addrs(|| Some(80)).with_context(|| format!("no address for {api}"))?;
    addrs.into_iter().find(SocketAddr::is_ipv4).with_context(|| format!("the phones need an IPv4 address: {api}"))
}

/// A process's resident memory, KiB.
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// A process's CPU time (user + system), in clock ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces: fields are counted after its closing parenthesis.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// CPU time of a process over a phase.
struct Sampler {
    pid: Option<u32>,
    ticks: Option<u64>,
    started: Instant,
}

impl Sampler {
    fn start(pid: Option<u32>) -> Self {
        Self { pid, ticks: pid.and_then(cpu_ticks), started: Instant::now() }
    }

    /// Cores busy on average since the start (ticks are 1/100 s on Linux).
    fn cores(&self) -> Option<f64> {
        let now = cpu_ticks(self.pid?)?;
        let elapsed = self.started.elapsed().as_secs_f64();
        Some((now.saturating_sub(self.ticks?)) as f64 / 100.0 / elapsed.max(1e-3))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_come_from_the_sorted_delays() {
        let delays: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        let d = Delays::of(&delays);
        assert_eq!((d.heard, d.p50_ms, d.p99_ms, d.max_ms), (100, 50.0, 99.0, 100.0));
        assert!(Delays::of(&[]).p99_ms.is_nan());
    }

    #[test]
    fn this_process_has_memory_and_cpu_time() {
        let me = std::process::id();
        assert!(rss_kib(me).is_some_and(|kib| kib > 0));
        assert!(cpu_ticks(me).is_some());
    }
}
