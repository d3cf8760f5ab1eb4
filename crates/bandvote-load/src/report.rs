//! What a run measured: totals, latency percentiles per target and per second, the votes each band
//! and album should have gained, and the table, JSON and HTML views of it.

use std::{collections::BTreeMap, fmt::Write as _, time::Duration};

use bandvote_core::Counts as Tally;
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::{
    run::{Outcome, Sample},
    source::VoteSource,
};

/// Latency percentiles, in milliseconds, measured from each vote's intended send time.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Latency {
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Slowest answer.
    pub max_ms: f64,
}

impl Latency {
    fn of(histogram: &Histogram<u64>) -> Self {
        let ms = |micros: u64| micros as f64 / 1000.0;
        if histogram.is_empty() {
            return Self::default();
        }
        Self {
            p50_ms: ms(histogram.value_at_quantile(0.50)),
            p90_ms: ms(histogram.value_at_quantile(0.90)),
            p99_ms: ms(histogram.value_at_quantile(0.99)),
            p999_ms: ms(histogram.value_at_quantile(0.999)),
            max_ms: ms(histogram.max()),
        }
    }
}

/// The outcome counts and latency of one target (or of all of them).
#[derive(Debug, Clone, Serialize)]
pub struct Breakdown {
    /// The endpoint, or `all`.
    pub target: String,
    /// Votes sent.
    pub sent: u64,
    /// Answered `202`.
    pub accepted: u64,
    /// Answered 4xx (not counted).
    pub rejected: u64,
    /// 5xx or no answer after every retry (may or may not be counted).
    pub errors: u64,
    /// Accepted votes per second over the run.
    pub accepted_per_s: f64,
    /// Latency of every answer, accepted or not.
    pub latency: Latency,
}

/// One second of the run (by intended send time).
#[derive(Debug, Clone, Serialize)]
pub struct Second {
    /// Seconds from the start.
    pub second: u64,
    /// Votes due in this second.
    pub sent: u64,
    /// Of those, answered `202`.
    pub accepted: u64,
    /// Of those, 5xx or no answer.
    pub errors: u64,
    /// Median latency of the votes due in this second.
    pub p50_ms: f64,
    /// 99th percentile of the votes due in this second.
    pub p99_ms: f64,
    /// Slowest of the votes due in this second.
    pub max_ms: f64,
}

/// Everything one run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Requested arrival rates (votes/s), one per step.
    pub requested_rates: Vec<f64>,
    /// Seconds each step lasted.
    pub step_s: f64,
    /// Votes the schedule held.
    pub planned: u64,
    /// Votes sent per second while sending (the offered rate actually achieved).
    pub achieved_rate: f64,
    /// Seconds from the first send to the last answer.
    pub elapsed_s: f64,
    /// Retries made (5xx or no answer, resent with the same key).
    pub retries: u64,
    /// All targets together.
    pub all: Breakdown,
    /// Each target.
    pub targets: Vec<Breakdown>,
    /// Status codes of the answers that were not `202` (`none` when there was no answer).
    pub statuses: BTreeMap<String, u64>,
    /// Second by second.
    pub seconds: Vec<Second>,
    /// What the accepted votes add to the counts.
    pub accepted: Tally,
    /// Votes whose fate is unknown (no `202` after every retry): each may or may not be counted.
    pub unknown: Tally,
}

fn histogram() -> Histogram<u64> {
    // 1 µs to 10 min, 3 significant digits; slower answers are clamped to the top.
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

struct Counts {
    sent: u64,
    accepted: u64,
    rejected: u64,
    errors: u64,
    histogram: Histogram<u64>,
}

impl Counts {
    fn new() -> Self {
        Self { sent: 0, accepted: 0, rejected: 0, errors: 0, histogram: histogram() }
    }

    fn record(&mut self, sample: &Sample) {
        self.sent += 1;
        match sample.outcome {
            Outcome::Accepted => self.accepted += 1,
            Outcome::Rejected(_) => self.rejected += 1,
            Outcome::Failed(_) => self.errors += 1,
        }
        self.histogram.saturating_record(sample.latency.as_micros().max(1) as u64);
    }

    fn breakdown(&self, target: String, elapsed: Duration) -> Breakdown {
        Breakdown {
            target,
            sent: self.sent,
            accepted: self.accepted,
            rejected: self.rejected,
            errors: self.errors,
            accepted_per_s: self.accepted as f64 / elapsed.as_secs_f64().max(1e-9),
            latency: Latency::of(&self.histogram),
        }
    }
}

/// Folds the senders' samples into a report.
pub(crate) struct Collector {
    names: Vec<String>,
    source: VoteSource,
    all: Counts,
    targets: Vec<Counts>,
    seconds: Vec<Counts>,
    statuses: BTreeMap<String, u64>,
    retries: u64,
    accepted: Tally,
    unknown: Tally,
}

impl Collector {
    pub(crate) fn new(names: Vec<String>, source: VoteSource) -> Self {
        let targets = names.iter().map(|_| Counts::new()).collect();
        Self {
            names,
            source,
            all: Counts::new(),
            targets,
            seconds: Vec::new(),
            statuses: BTreeMap::new(),
            retries: 0,
            accepted: Tally::default(),
            unknown: Tally::default(),
        }
    }

    pub(crate) fn record(&mut self, sample: &Sample) {
        self.all.record(sample);
        self.targets[sample.target].record(sample);
        let second = sample.intended.as_secs() as usize;
        while self.seconds.len() <= second {
            self.seconds.push(Counts::new());
        }
        self.seconds[second].record(sample);
        self.retries += u64::from(sample.retries);
        let vote = &self.source.get(sample.vote).vote;
        match sample.outcome {
            Outcome::Accepted => self.accepted.add(&vote.name, &vote.album),
            Outcome::Rejected(code) => *self.statuses.entry(code.to_string()).or_default() += 1,
            Outcome::Failed(code) => {
                self.unknown.add(&vote.name, &vote.album);
                *self.statuses.entry(code.map_or_else(|| "none".to_owned(), |c| c.to_string())).or_default() += 1;
            }
        }
    }

    pub(crate) fn finish(
        self,
        rates: &[f64],
        step: Duration,
        planned: u64,
        sending: Duration,
        elapsed: Duration,
    ) -> Report {
        let seconds = self
            .seconds
            .iter()
            .enumerate()
            .map(|(second, counts)| {
                let latency = Latency::of(&counts.histogram);
                Second {
                    second: second as u64,
                    sent: counts.sent,
                    accepted: counts.accepted,
                    errors: counts.errors,
                    p50_ms: latency.p50_ms,
                    p99_ms: latency.p99_ms,
                    max_ms: latency.max_ms,
                }
            })
            .collect();
        Report {
            requested_rates: rates.to_vec(),
            step_s: step.as_secs_f64(),
            planned,
            achieved_rate: self.all.sent as f64 / sending.as_secs_f64().max(1e-9),
            elapsed_s: elapsed.as_secs_f64(),
            retries: self.retries,
            all: self.all.breakdown("all".to_owned(), elapsed),
            targets: self.targets.iter().zip(&self.names).map(|(c, name)| c.breakdown(name.clone(), elapsed)).collect(),
            statuses: self.statuses,
            seconds,
            accepted: self.accepted,
            unknown: self.unknown,
        }
    }
}

impl Report {
    /// The summary table printed at the end of a run.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let rates: Vec<_> = self.requested_rates.iter().map(|r| format!("{r}")).collect();
        let _ = writeln!(
            out,
            "requested {} votes/s ({} s per step), achieved {:.1} votes/s; {} sent in {:.2} s, {} retries",
            rates.join(" → "),
            self.step_s,
            self.achieved_rate,
            self.all.sent,
            self.elapsed_s,
            self.retries
        );
        let _ = writeln!(
            out,
            "{:<36} {:>8} {:>8} {:>8} {:>7} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8}",
            "target",
            "sent",
            "accepted",
            "rejected",
            "errors",
            "accept/s",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "p99.9 ms",
            "max ms"
        );
        let rows = self.targets.iter().chain((self.targets.len() > 1).then_some(&self.all));
        for row in rows {
            let l = row.latency;
            let _ = writeln!(
                out,
                "{:<36} {:>8} {:>8} {:>8} {:>7} {:>9.1} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8.2}",
                row.target,
                row.sent,
                row.accepted,
                row.rejected,
                row.errors,
                row.accepted_per_s,
                l.p50_ms,
                l.p90_ms,
                l.p99_ms,
                l.p999_ms,
                l.max_ms
            );
        }
        if !self.statuses.is_empty() {
            let statuses: Vec<_> = self.statuses.iter().map(|(s, n)| format!("{s}: {n}")).collect();
            let _ = writeln!(out, "answers other than 202: {}", statuses.join(", "));
        }
        out
    }
}

/// Writes the report as a self-contained HTML page (inline SVG, no external resources) with the
/// latency-over-time and throughput charts.
pub fn write_html(report: &Report, path: &std::path::Path) -> anyhow::Result<()> {
    let seconds = &report.seconds;
    let xs: Vec<f64> = seconds.iter().map(|s| s.second as f64).collect();
    let latency = chart(
        "Latency by intended send second (ms)",
        &xs,
        &[
            ("p50", "#2b7bb9", seconds.iter().map(|s| s.p50_ms).collect()),
            ("p99", "#e8743b", seconds.iter().map(|s| s.p99_ms).collect()),
            ("max", "#b82e2e", seconds.iter().map(|s| s.max_ms).collect()),
        ],
    );
    let throughput = chart(
        "Votes per second (by intended send second)",
        &xs,
        &[
            ("sent", "#7a7a7a", seconds.iter().map(|s| s.sent as f64).collect()),
            ("accepted", "#2e9e44", seconds.iter().map(|s| s.accepted as f64).collect()),
            ("errors", "#b82e2e", seconds.iter().map(|s| s.errors as f64).collect()),
        ],
    );
    let table = escape(&report.table());
    let json = escape(&serde_json::to_string_pretty(report)?);
    let html = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>bandvote load report</title>\
         <style>body{{font-family:system-ui,sans-serif;margin:2rem;max-width:60rem}}\
         pre{{background:#f4f4f4;padding:1rem;overflow-x:auto}}svg{{max-width:100%;height:auto}}</style>\
         </head><body><h1>bandvote load report</h1><pre>{table}</pre>{latency}{throughput}\
         <details><summary>JSON</summary><pre>{json}</pre></details></body></html>\n"
    );
    std::fs::write(path, html)?;
    Ok(())
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// A line chart as an SVG element: one polyline per series, axes labelled with their extremes.
fn chart(title: &str, xs: &[f64], series: &[(&str, &str, Vec<f64>)]) -> String {
    const W: f64 = 800.0;
    const H: f64 = 260.0;
    const PAD: f64 = 50.0;
    let x_max = xs.iter().copied().fold(1.0, f64::max);
    let y_max = series.iter().flat_map(|(_, _, ys)| ys.iter().copied()).fold(1e-9, f64::max);
    let x = |v: f64| PAD + v / x_max * (W - 2.0 * PAD);
    let y = |v: f64| H - PAD + -v / y_max * (H - 2.0 * PAD);
    let mut svg = format!(
        "<figure><figcaption>{}</figcaption><svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {W} {H}\" \
         role=\"img\" aria-label=\"{}\"><rect width=\"{W}\" height=\"{H}\" fill=\"white\"/>",
        escape(title),
        escape(title)
    );
    let _ = write!(
        svg,
        "<line x1=\"{PAD}\" y1=\"{b}\" x2=\"{r}\" y2=\"{b}\" stroke=\"#444\"/><line x1=\"{PAD}\" y1=\"{PAD}\" \
         x2=\"{PAD}\" y2=\"{b}\" stroke=\"#444\"/><text x=\"{PAD}\" y=\"{t}\" font-size=\"12\">0 s</text>\
         <text x=\"{r}\" y=\"{t}\" font-size=\"12\" text-anchor=\"end\">{x_max} s</text>\
         <text x=\"{l}\" y=\"{PAD}\" font-size=\"12\" text-anchor=\"end\">{y_max:.1}</text>\
         <text x=\"{l}\" y=\"{b}\" font-size=\"12\" text-anchor=\"end\">0</text>",
        b = H - PAD,
        r = W - PAD,
        t = H - PAD + 16.0,
        l = PAD - 4.0,
    );
    for (i, (name, colour, ys)) in series.iter().enumerate() {
        let points: Vec<_> = xs.iter().zip(ys).map(|(&a, &b)| format!("{:.1},{:.1}", x(a), y(b))).collect();
        let _ = write!(
            svg,
            "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" points=\"{}\"/>\
             <text x=\"{}\" y=\"20\" font-size=\"12\" fill=\"{colour}\">{name}</text>",
            points.join(" "),
            PAD + 90.0 * i as f64
        );
    }
    svg.push_str("</svg></figure>");
    svg
}
