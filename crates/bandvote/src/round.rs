//! `bandvote round …`: the operator's side of a show, through the API's rounds routes.

use anyhow::Context;
use bandvote_core::round::Certified;
use secrecy::ExposeSecret;
use serde_json::{Value, json};

use crate::cli::{RoundArgs, RoundCommand};

/// Runs one round command and prints the API's answer (JSON) on stdout.
pub async fn run(args: RoundArgs) -> anyhow::Result<()> {
    let client = reqwest::Client::builder().timeout(std::time::Duration::from_secs(10)).build()?;
    let api = args.api.trim_end_matches('/');
    let request = match &args.command {
        RoundCommand::List => client.get(format!("{api}/api/rounds")),
        RoundCommand::Create { id, title, opens_at, closes_at, hidden } => {
            let mut body = json!({"id": id, "title": title.as_deref().unwrap_or(id)});
            if let Some(at) = opens_at {
                body["opens_at"] = json!(at);
            }
            if let Some(at) = closes_at {
                body["closes_at"] = json!(at);
            }
            if *hidden {
                body["results"] = json!("hidden");
            }
            client.post(format!("{api}/api/admin/rounds")).json(&body)
        }
        RoundCommand::Open { id } => client.post(format!("{api}/api/admin/rounds/{id}/open")),
        RoundCommand::Close { id } => client.post(format!("{api}/api/admin/rounds/{id}/close")),
        RoundCommand::Reveal { id } => client.post(format!("{api}/api/admin/rounds/{id}/reveal")),
        RoundCommand::Hide { id } => client.post(format!("{api}/api/admin/rounds/{id}/hide")),
        RoundCommand::Results { id } => client.get(format!("{api}/api/results?round={id}")),
        RoundCommand::Result { id } => client.get(format!("{api}/api/rounds/{id}/result")),
    };
    let request = match &args.admin_token {
        Some(token) => request.bearer_auth(token.expose_secret()),
        None => request,
    };
    let answer = request.send().await.with_context(|| format!("failed to reach the API at {api}"))?;
    let status = answer.status();
    let body: Value = answer.json().await.with_context(|| format!("the API answered {status} without JSON"))?;
    if !status.is_success() {
        let error = body["error"].as_str().unwrap_or("no reason given");
        anyhow::bail!("the API answered {status}: {error}");
    }
    if let RoundCommand::Result { id } = &args.command {
        let certified: Certified = serde_json::from_value(body.clone()).context("the API's result is not a result")?;
        anyhow::ensure!(certified.round == *id, "the API answered the result of round {}", certified.round);
        anyhow::ensure!(
            certified.verifies(),
            "round {id}'s result does NOT verify: its sha256 {} is not the digest of its content ({})",
            certified.sha256,
            certified.digest()
        );
        eprintln!("round {id}: final, {} votes, sha256 {} verified", certified.total, certified.sha256);
    }
    let mut out = std::io::stdout().lock();
    std::io::Write::write_all(&mut out, serde_json::to_string_pretty(&body)?.as_bytes())?;
    std::io::Write::write_all(&mut out, b"\n")?;
    Ok(())
}
