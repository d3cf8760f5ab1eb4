//! `bandvote load`: runs the generator, prints its table (or JSON), writes the HTML report and
//! verifies the counts.

use std::io::Write as _;

use anyhow::Context as _;
use bandvote_load::{LoadConfig, VoteSource, show::ShowConfig};
use bandvote_runtime::shutdown::CancellationToken;
use secrecy::ExposeSecret as _;

use crate::cli::{LoadArgs, LoadPath};

/// Runs `bandvote load`; fails when --verify finds a difference.
pub async fn run(args: LoadArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let base = args.url.trim_end_matches('/').to_owned();
    let targets = match args.path {
        _ if !args.target_url.is_empty() => args.target_url.clone(),
        LoadPath::Grpc => vec![format!("{base}/grpc/votes")],
        LoadPath::Wasm => vec![format!("{base}/wasm/votes")],
        LoadPath::Both => vec![format!("{base}/grpc/votes"), format!("{base}/wasm/votes")],
    };
    let source = match &args.traffic {
        Some(path) => VoteSource::from_traffic_file(path)?,
        None => VoteSource::original_mix(args.seed),
    };
    // A traffic file is sent once through unless a count says otherwise.
    let count = args.count.or_else(|| (args.traffic.is_some()).then_some(source.len() as u64));
    let config = LoadConfig {
        targets,
        rates: args.rate.clone(),
        step: args.duration,
        count,
        source,
        max_in_flight: args.max_in_flight,
        timeout: args.timeout,
        retries: args.retries,
        keys: args.keys,
        progress: !args.quiet && !args.json,
    };
    let api = args.api.clone().unwrap_or(base);
    let client = reqwest::Client::builder().timeout(std::time::Duration::from_secs(10)).build()?;
    let before = match args.verify {
        true => Some(bandvote_load::fetch_counts(&client, &api).await.context("--verify reads the counts first")?),
        false => None,
    };
    let run = async {
        let Some(phones) = args.phones else { return Ok((bandvote_load::run(config).await?, None)) };
        let Some(token) = &args.admin_token else { anyhow::bail!("--phones runs a round: it needs --admin-token") };
        let show = ShowConfig {
            api: api.clone(),
            admin_token: token.expose_secret().to_owned(),
            phones,
            server_pid: args.server_pid,
            patience: std::time::Duration::from_secs(60),
        };
        let (report, show) = bandvote_load::show::run(show, config).await?;
        Ok((report, Some(show)))
    };
    let (report, show) = tokio::select! {
        ran = run => ran?,
        () = shutdown.cancelled() => anyhow::bail!("interrupted; no report"),
    };
    let verification = match &before {
        Some(before) => Some(
            bandvote_load::verify(&client, &api, before, &report.accepted, &report.unknown, args.verify_timeout)
                .await?,
        ),
        None => None,
    };
    if let Some(path) = &args.report {
        bandvote_load::write_html(&report, path).with_context(|| format!("cannot write {}", path.display()))?;
    }
    let mut out = std::io::stdout().lock();
    if args.json {
        let document = serde_json::json!({ "report": report, "verify": verification, "show": show });
        writeln!(out, "{}", serde_json::to_string_pretty(&document)?)?;
    } else {
        write!(out, "{}", report.table())?;
        if let Some(show) = &show {
            write!(out, "{show}")?;
        }
        if let Some(verification) = &verification {
            writeln!(out, "{verification}")?;
        }
        if let Some(path) = &args.report {
            writeln!(out, "report: {}", path.display())?;
        }
    }
    match verification {
        Some(v) if !v.ok => anyhow::bail!("--verify: {} count(s) differ from the accepted votes", v.differences.len()),
        _ => Ok(()),
    }
}
