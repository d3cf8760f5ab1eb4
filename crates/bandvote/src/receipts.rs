//! `bandvote round verify`: a final round's certified result against its leaves (the counts and
//! the Merkle root recomputed from the bulletin board) and receipts against their proofs
//! (DESIGN.md, "Receipts"), from the API or offline from saved files.

use anyhow::{Context, bail, ensure};
use bandvote_core::{
    Counts,
    merkle::{self, Hash, Leaf},
    round::Certified,
};
use serde_json::{Value, json};

use crate::cli::VerifyArgs;

/// Checks everything `args` names; prints a summary, or fails naming the first mismatch.
pub async fn verify(client: &reqwest::Client, api: &str, args: &VerifyArgs) -> anyhow::Result<()> {
    let id = &args.id;
    let result: Value = match &args.result {
        Some(path) => read_json(path)?,
        None => get_json(client, &format!("{api}/api/rounds/{id}/result")).await?,
    };
    let certified: Certified = serde_json::from_value(result).context("the result is not a certified result")?;
    ensure!(certified.round == *id, "the result is round {}'s, not {id}'s", certified.round);
    ensure!(
        certified.verifies(),
        "the result's sha256 {} is not the digest of its content ({})",
        certified.sha256,
        certified.digest()
    );
    let (Some(size), Some(root_hex)) = (certified.leaves, certified.merkle_root.clone()) else {
        bail!("round {id} was certified without receipts (no leaves and no merkle_root)");
    };
    let root = merkle::parse_hex(&root_hex).context("the result's merkle_root is not a SHA-256 in hex")?;

    // The bulletin board: every leaf, canonical, in order, for this round; its counts and root.
    let text = match &args.leaves {
        Some(path) => std::fs::read_to_string(path).with_context(|| format!("failed to read {}", path.display()))?,
        None => {
            let answer = client.get(format!("{api}/api/rounds/{id}/leaves.jsonl")).send().await?;
            ensure!(answer.status().is_success(), "the API answered {} for the leaves", answer.status());
            answer.text().await?
        }
    };
    let leaves = check_leaves(id, &text)?;
    let mut counts = Counts::default();
    for leaf in &leaves {
        counts.add(&leaf.band, &leaf.album);
    }
    ensure!(leaves.len() as u64 == size, "{} leaves, but the result certifies {size}", leaves.len());
    ensure!(counts.total == certified.total, "the leaves hold {} votes, the result {}", counts.total, certified.total);
    for (name, theirs, ours) in
        [("band", &certified.bands, &counts.bands), ("album", &certified.albums, &counts.albums)]
    {
        if let Some((key, n)) = theirs.iter().find(|(key, n)| ours.get(*key) != Some(n)) {
            bail!("{name} {key}: the result certifies {n} votes, the leaves hold {}", ours.get(key).unwrap_or(&0));
        }
        if let Some(key) = ours.keys().find(|key| !theirs.contains_key(*key)) {
            bail!("{name} {key} is in the leaves but not in the result");
        }
    }
    let hashes: Vec<Hash> = leaves.iter().map(Leaf::hash).collect();
    let recomputed = merkle::Tree::new(hashes.clone()).root();
    ensure!(recomputed == root, "the leaves' root is {}, the result's {root_hex}", merkle::hex(&recomputed));

    // Receipts: each proof must put its vote at its place in that tree.
    let mut proofs: Vec<(String, Value)> = Vec::new();
    for vote in &args.receipts {
        let url = format!("{api}/api/rounds/{id}/proof/{}", urlencode(vote));
        proofs.push((vote.clone(), get_json(client, &url).await.with_context(|| format!("receipt {vote}"))?));
    }
    for path in &args.proofs {
        proofs.push((String::new(), read_json(path)?));
    }
    let mut checked = Vec::new();
    for (vote, proof) in proofs {
        let leaf = check_proof(id, &vote, &proof, size, &root, &hashes)?;
        checked.push(json!({"receipt": leaf.id, "band": leaf.band, "album": leaf.album}));
    }
    eprintln!(
        "round {id}: {size} leaves, counts and root {root_hex} verified; {} receipt(s) in the certified result",
        checked.len()
    );
    let summary = json!({"round": id, "leaves": size, "merkle_root": root_hex, "receipts": checked, "ok": true});
    let mut out = std::io::stdout().lock();
    std::io::Write::write_all(&mut out, format!("{}\n", serde_json::to_string_pretty(&summary)?).as_bytes())?;
    Ok(())
}

/// The leaves of `text` (JSON lines): each the canonical JSON of a leaf of round `id`, strictly
/// increasing by id (bytewise).
fn check_leaves(id: &str, text: &str) -> anyhow::Result<Vec<Leaf>> {
    let mut leaves: Vec<Leaf> = Vec::new();
    for (n, line) in text.lines().enumerate().map(|(i, line)| (i + 1, line)) {
        let leaf: Leaf = serde_json::from_str(line).with_context(|| format!("leaf {n} is not a leaf"))?;
        ensure!(leaf.canonical_json() == line, "leaf {n} is not in canonical form");
        ensure!(leaf.round == id, "leaf {n} ({}) is a vote of round {}", leaf.id, leaf.round);
        if let Some(previous) = leaves.last() {
            ensure!(
                previous.id.as_bytes() < leaf.id.as_bytes(),
                "leaf {n} ({}) is out of order or repeated after {}",
                leaf.id,
                previous.id
            );
        }
        leaves.push(leaf);
    }
    Ok(leaves)
}

/// Checks one proof (`{"round", "leaf", "index", "size", "path", "merkle_root"}`) for receipt
/// `vote` (empty: any) against the certified tree.
fn check_proof(id: &str, vote: &str, proof: &Value, size: u64, root: &Hash, hashes: &[Hash]) -> anyhow::Result<Leaf> {
    let leaf: Leaf = serde_json::from_value(proof["leaf"].clone()).context("the proof has no leaf")?;
    let what = if vote.is_empty() { leaf.id.clone() } else { vote.to_owned() };
    ensure!(vote.is_empty() || leaf.id == vote, "receipt {what}: the proof is for vote {}", leaf.id);
    ensure!(proof["round"] == id && leaf.round == id, "receipt {what}: the proof is not for round {id}");
    ensure!(proof["merkle_root"] == merkle::hex(root), "receipt {what}: the proof's root is not the certified one");
    let index = proof["index"].as_u64().context("the proof has no index")?;
    ensure!(proof["size"].as_u64() == Some(size), "receipt {what}: the proof is for a tree of another size");
    let path: Option<Vec<Hash>> = proof["path"]
        .as_array()
        .context("the proof has no path")?
        .iter()
        .map(|node| node.as_str().and_then(merkle::parse_hex))
        .collect();
    let path = path.context("the proof's path holds something other than SHA-256s in hex")?;
    ensure!(
        merkle::verify(&leaf.hash(), index, size, &path, root),
        "receipt {what}: the proof does not lead from its leaf to the certified root"
    );
    ensure!(
        hashes.get(index as usize) == Some(&leaf.hash()),
        "receipt {what}: leaf {index} of the leaves is another vote"
    );
    Ok(leaf)
}

fn read_json(path: &std::path::Path) -> anyhow::Result<Value> {
    let text = std::fs::read_to_string(path).with_context(|| format!("failed to read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))
}

async fn get_json(client: &reqwest::Client, url: &str) -> anyhow::Result<Value> {
    let answer = client.get(url).send().await.with_context(|| format!("failed to reach {url}"))?;
    let status = answer.status();
    let body: Value = answer.json().await.with_context(|| format!("{url} answered {status} without JSON"))?;
    ensure!(status.is_success(), "{url} answered {status}: {}", body["error"].as_str().unwrap_or("no reason given"));
    Ok(body)
}

/// Percent-encodes a path segment (a vote id may hold any visible ASCII).
fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
