//! `bandvote round …`: the operator's side of a show, through the API's rounds routes.

use anyhow::Context;
use bandvote_core::round::{Certified, Entry};
use secrecy::ExposeSecret;
use serde_json::{Value, json};

use crate::cli::{RoundArgs, RoundCommand, RoundSpec};

/// Runs one round command and prints the API's answer (JSON) on stdout.
pub async fn run(args: RoundArgs) -> anyhow::Result<()> {
    let client = reqwest::Client::builder().timeout(std::time::Duration::from_secs(10)).build()?;
    let api = args.api.trim_end_matches('/');
    let request = match &args.command {
        RoundCommand::Verify(verify) => return crate::receipts::verify(&client, api, verify).await,
        RoundCommand::List => client.get(format!("{api}/api/rounds")),
        RoundCommand::Create(spec) => client.post(format!("{api}/api/admin/rounds")).json(&body_of(spec)?),
        RoundCommand::Edit(spec) => client.put(format!("{api}/api/admin/rounds/{}", spec.id)).json(&body_of(spec)?),
        RoundCommand::Delete { id } => client.delete(format!("{api}/api/admin/rounds/{id}")),
        RoundCommand::Open { id } => client.post(format!("{api}/api/admin/rounds/{id}/open")),
        RoundCommand::Close { id } => client.post(format!("{api}/api/admin/rounds/{id}/close")),
        RoundCommand::Reveal { id } => client.post(format!("{api}/api/admin/rounds/{id}/reveal")),
        RoundCommand::Hide { id } => client.post(format!("{api}/api/admin/rounds/{id}/hide")),
        RoundCommand::Results { id } => client.get(format!("{api}/api/results?round={id}")),
        RoundCommand::Result { id } => client.get(format!("{api}/api/rounds/{id}/result")),
    };
    let request = match args.admin.token()? {
        Some(token) => request.bearer_auth(token.expose_secret()),
        None => request,
    };
    let answer = request.send().await.with_context(|| format!("failed to reach the API at {api}"))?;
    let status = answer.status();
    if status == reqwest::StatusCode::NO_CONTENT {
        return print(&json!({"deleted": true}));
    }
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
    print(&body)
}

/// Prints `body` as pretty JSON on stdout.
fn print(body: &Value) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    std::io::Write::write_all(&mut out, serde_json::to_string_pretty(body)?.as_bytes())?;
    std::io::Write::write_all(&mut out, b"\n")?;
    Ok(())
}

/// The API body of a round: `{"id", "title", "opens_at"?, "closes_at"?, "results"?, "ballot"?}`.
fn body_of(spec: &RoundSpec) -> anyhow::Result<Value> {
    let mut body = json!({"id": spec.id, "title": spec.title.as_deref().unwrap_or(&spec.id)});
    if let Some(at) = &spec.opens_at {
        body["opens_at"] = json!(at);
    }
    if let Some(at) = &spec.closes_at {
        body["closes_at"] = json!(at);
    }
    if spec.hidden {
        body["results"] = json!("hidden");
    }
    if let Some(path) = &spec.ballot {
        let text = std::fs::read_to_string(path).with_context(|| format!("failed to read {}", path.display()))?;
        body["ballot"] = json!(parse_ballot(&text).with_context(|| format!("{} is not a ballot", path.display()))?);
    }
    Ok(body)
}

/// A ballot from a JSON list of entries or CSV lines `name,album,year` (a first line naming the
/// columns is skipped; a field may be quoted, `""` inside quotes being a quote).
fn parse_ballot(text: &str) -> anyhow::Result<Vec<Entry>> {
    if text.trim_start().starts_with('[') {
        return serde_json::from_str(text).context("a JSON ballot is a list of {\"name\", \"album\", \"year\"}");
    }
    let mut entries = Vec::new();
    for (n, line) in text.lines().enumerate().filter(|(_, line)| !line.trim().is_empty()) {
        let fields = csv_fields(line);
        if n == 0 && fields.first().is_some_and(|f| f.trim().eq_ignore_ascii_case("name")) {
            continue;
        }
        let [name, album, year] = fields.as_slice() else {
            anyhow::bail!("line {}: expected name,album,year", n + 1);
        };
        let year = year.trim().parse().with_context(|| format!("line {}: the year is not a number", n + 1))?;
        entries.push(Entry { name: name.clone(), album: album.clone(), year });
    }
    Ok(entries)
}

/// The fields of one CSV line.
fn csv_fields(line: &str) -> Vec<String> {
    let (mut fields, mut field, mut quoted, mut chars) = (Vec::new(), String::new(), false, line.chars().peekable());
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            ('"', _) => quoted = !quoted,
            (',', false) => fields.push(std::mem::take(&mut field)),
            (c, _) => field.push(c),
        }
    }
    fields.push(field);
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ballot_is_read_from_csv_or_json() {
        let csv = "name,album,year\nAlux Nahual,El Viaje,2011\n\"Bohemia, Suburbana\",\"Mis \"\"palabras\"\"\",1997\n";
        let entries = parse_ballot(csv).expect("a CSV ballot");
        assert_eq!(entries.len(), 2);
        assert_eq!(
            (entries[1].name.as_str(), entries[1].album.as_str(), entries[1].year),
            ("Bohemia, Suburbana", "Mis \"palabras\"", 1997)
        );
        let json = r#"[{"name":"Alux Nahual","album":"El Viaje","year":2011}]"#;
        assert_eq!(parse_ballot(json).expect("a JSON ballot"), entries[..1]);
        assert!(parse_ballot("Alux Nahual,El Viaje\n").is_err());
        assert!(parse_ballot("Alux Nahual,El Viaje,soon\n").is_err());
    }
}
