//! Receipts (DESIGN.md, "Receipts: a voter can check their own vote"): a round run on both paths
//! (keyed votes, some retried under their key, and votes without a key), made final; then every
//! receipt's proof and the root recomputed from `leaves.jsonl` are checked with an implementation
//! of RFC 6962 written here from the RFC's text (not bandvote's), and with `bandvote round verify`,
//! which refuses a forged leaf, a wrong index and a truncated path. On `up`'s embedded storage and on
//! the real servers (Kafka, Redis, MongoDB).

use std::{collections::BTreeMap, time::Duration};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::support::{PATIENCE, TestEnv, embedded_up, mix, spawn_listening, up, wait_for, wait_ready};

const TOKEN: &str = "operator-token-receipts-01";

// RFC 6962, section 2.1, as written there.

fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part);
    }
    hasher.finalize().into()
}

/// MTH(D[n]).
fn mth(leaves: &[Vec<u8>]) -> [u8; 32] {
    match leaves.len() {
        0 => sha256(&[]),
        1 => sha256(&[&[0], &leaves[0]]),
        n => {
            // k: the largest power of two smaller than n.
            let k = 1usize << (usize::BITS - 1 - (n - 1).leading_zeros());
            sha256(&[&[1], &mth(&leaves[..k]), &mth(&leaves[k..])])
        }
    }
}

/// RFC 9162, 2.1.3.2: verifying an inclusion proof.
fn included(leaf: &[u8], index: u64, size: u64, path: &[[u8; 32]], root: &[u8; 32]) -> bool {
    if index >= size {
        return false;
    }
    let (mut f, mut s) = (index, size - 1);
    let mut r = sha256(&[&[0], leaf]);
    for p in path {
        if s == 0 {
            return false;
        }
        if f % 2 == 1 || f == s {
            r = sha256(&[&[1], p, &r]);
            if f % 2 == 0 {
                while f % 2 == 0 && f != 0 {
                    f >>= 1;
                    s >>= 1;
                }
            }
        } else {
            r = sha256(&[&[1], &r, p]);
        }
        f >>= 1;
        s >>= 1;
    }
    s == 0 && r == *root
}

fn unhex(text: &str) -> [u8; 32] {
    let bytes: Vec<u8> = (0..64).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex")).collect();
    bytes.try_into().expect("32 bytes")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A leaf's bytes as the contract defines them: the object's keys sorted, no spaces, UTF-8.
fn canonical(leaf: &Value) -> Vec<u8> {
    let sorted: BTreeMap<&String, &Value> = leaf.as_object().expect("an object").iter().collect();
    serde_json::to_vec(&sorted).expect("json")
}

#[test]
fn the_independent_implementation_holds_the_certificate_transparency_vectors() {
    let leaves: Vec<Vec<u8>> = ["", "00", "10", "2021", "3031", "40414243", "5051525354555657"]
        .iter()
        .map(|h| (0..h.len()).step_by(2).map(|i| u8::from_str_radix(&h[i..i + 2], 16).expect("hex")).collect())
        .collect();
    assert_eq!(hex(&mth(&leaves[..1])), "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d");
    assert_eq!(hex(&mth(&leaves[..7])), "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c");
    assert_eq!(hex(&mth(&[])), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

struct Show {
    base: String,
    client: reqwest::Client,
}

impl Show {
    async fn admin(&self, path: &str, body: Option<Value>) -> u16 {
        let mut request = self.client.post(format!("{}/api/admin/{path}", self.base)).bearer_auth(TOKEN);
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send().await.expect("answer").status().as_u16()
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let answer = self.client.get(format!("{}{path}", self.base)).send().await.expect("answer");
        let status = answer.status().as_u16();
        (status, answer.json().await.unwrap_or(Value::Null))
    }
}

/// A round on both paths, final, every receipt checked. `base`: a running `up` with the admin
/// token; `dir`: a scratch directory for saved files.
async fn receipts_hold(base: &str, dir: &std::path::Path) {
    let show = Show { base: base.to_owned(), client: reqwest::Client::new() };
    assert_eq!(show.admin("rounds", Some(json!({"id": "semi", "title": "Semi-final"}))).await, 201);
    // Until the gateways see the round, a vote counts in `default`: wait for their 409 (with a vote
    // no round takes, free text without its year).
    for path in ["grpc", "wasm"] {
        wait_for("the gateways to see the scheduled round", Duration::from_secs(10), || async {
            let url = format!("{base}/{path}/votes");
            let body = json!({"name": "Nadie", "album": "Nada"}).to_string();
            (crate::support::post_vote(&show.client, &url, body, None).await.0 == 409).then_some(())
        })
        .await;
    }
    assert_eq!(show.admin("rounds/semi/open", None).await, 200);
    let votes = mix(40);
    let mut receipts: Vec<String> = Vec::new();
    for (i, vote) in votes.iter().enumerate() {
        let path = if i % 2 == 0 { "grpc" } else { "wasm" };
        let url = format!("{base}/{path}/votes");
        // Every third vote without a key: its receipt is the id the gateway made.
        let key = (i % 3 != 0).then(|| format!("phone-{i}"));
        let answer = wait_for("the gateways to see the open round", Duration::from_secs(10), || async {
            let (status, body) = crate::support::post_vote(&show.client, &url, vote.body(), key.as_deref()).await;
            (status == 202).then_some(body)
        })
        .await;
        receipts.push(answer["id"].as_str().expect("an id").to_owned());
        // A retry under the same key: the same receipt, counted once.
        if let Some(key) = key.as_deref().filter(|_| i % 5 == 1) {
            let (status, again) = crate::support::post_vote(&show.client, &url, vote.body(), Some(key)).await;
            assert_eq!((status, again["id"].as_str()), (202, Some(key)));
        }
    }
    // Before the round is final: 409.
    assert_eq!(show.get(&format!("/api/rounds/semi/proof/{}", receipts[1])).await.0, 409);
    assert_eq!(show.admin("rounds/semi/close", None).await, 200);
    let result = wait_for("round semi final", Duration::from_secs(90), || async {
        let (status, result) = show.get("/api/rounds/semi/result").await;
        (status == 200).then_some(result)
    })
    .await;
    assert_eq!(result["total"], votes.len() as u64, "{result}");
    assert_eq!(result["leaves"], votes.len() as u64);
    let root = unhex(result["merkle_root"].as_str().expect("a root"));
    let certified: bandvote_core::round::Certified = serde_json::from_value(result.clone()).expect("a result");
    assert!(certified.verifies(), "the sha256 covers the root too");

    // The bulletin board: one canonical leaf per vote, by id; its counts and root are the result's.
    let leaves = show.client.get(format!("{base}/api/rounds/semi/leaves.jsonl")).send().await.expect("leaves");
    assert_eq!(leaves.status(), 200);
    let text = leaves.text().await.expect("text");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), votes.len());
    let mut bands: BTreeMap<String, u64> = BTreeMap::new();
    let mut ids = Vec::new();
    for line in &lines {
        let leaf: Value = serde_json::from_str(line).expect("a leaf");
        assert_eq!(canonical(&leaf), line.as_bytes(), "canonical: {line}");
        assert_eq!(leaf["round"], "semi");
        *bands.entry(leaf["band"].as_str().expect("band").to_owned()).or_default() += 1;
        ids.push(leaf["id"].as_str().expect("id").to_owned());
    }
    assert!(ids.windows(2).all(|w| w[0].as_bytes() < w[1].as_bytes()), "ordered by id, bytewise, once each");
    let mut sorted_receipts = receipts.clone();
    sorted_receipts.sort();
    assert_eq!(ids, sorted_receipts, "one leaf per receipt");
    assert_eq!(serde_json::to_value(&bands).expect("json"), result["bands"]);
    let bytes: Vec<Vec<u8>> = lines.iter().map(|line| line.as_bytes().to_vec()).collect();
    assert_eq!(mth(&bytes), root, "the root recomputed from leaves.jsonl");

    // Every receipt: its proof leads from its leaf to the root; a forged leaf, another index or a
    // cut path does not.
    for receipt in &receipts {
        let (status, proof) = show.get(&format!("/api/rounds/semi/proof/{receipt}")).await;
        assert_eq!(status, 200, "{receipt}: {proof}");
        assert_eq!(proof["leaf"]["id"], receipt.as_str());
        let leaf = canonical(&proof["leaf"]);
        let (index, size) = (proof["index"].as_u64().expect("index"), proof["size"].as_u64().expect("size"));
        let path: Vec<[u8; 32]> =
            proof["path"].as_array().expect("path").iter().map(|p| unhex(p.as_str().expect("hex"))).collect();
        assert!(included(&leaf, index, size, &path, &root), "{receipt}");
        assert_eq!(lines[index as usize].as_bytes(), leaf.as_slice());
        let mut forged = proof["leaf"].clone();
        forged["band"] = json!("Someone Else");
        assert!(!included(&canonical(&forged), index, size, &path, &root));
        assert!(!included(&leaf, (index + 1) % size, size, &path, &root));
        assert!(!included(&leaf, index, size, &path[..path.len() - 1], &root));
    }
    assert_eq!(show.get("/api/rounds/semi/proof/not-a-vote-of-it").await.0, 404);

    // `bandvote round verify`, from the API and offline; each tampering named.
    let verify = |args: Vec<String>| async move {
        let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_bandvote"))
            .args(["round", "verify", "semi", "--api", base])
            .args(args)
            .output()
            .await
            .expect("bandvote round verify");
        (output.status.success(), String::from_utf8_lossy(&output.stderr).into_owned())
    };
    let (ok, said) =
        verify(vec!["--receipt".into(), receipts[0].clone(), "--receipt".into(), receipts[1].clone()]).await;
    assert!(ok, "{said}");
    std::fs::create_dir_all(dir).expect("dir");
    let (result_file, leaves_file, proof_file) =
        (dir.join("result.json"), dir.join("leaves.jsonl"), dir.join("proof.json"));
    std::fs::write(&result_file, result.to_string()).expect("write");
    std::fs::write(&leaves_file, &text).expect("write");
    let (_, proof) = show.get(&format!("/api/rounds/semi/proof/{}", receipts[2])).await;
    std::fs::write(&proof_file, proof.to_string()).expect("write");
    let offline = |leaves: &std::path::Path, proof: &std::path::Path| {
        let files = [("--result", result_file.as_path()), ("--leaves", leaves), ("--proof", proof)];
        files.iter().flat_map(|(flag, file)| [flag.to_string(), file.display().to_string()]).collect::<Vec<_>>()
    };
    let (ok, said) = verify(offline(&leaves_file, &proof_file)).await;
    assert!(ok, "{said}");
    // A leaf changed on the board: its counts and root no longer match.
    let tampered = dir.join("tampered.jsonl");
    std::fs::write(&tampered, text.replacen(r#""band":""#, r#""band":"X"#, 1)).expect("write");
    let (ok, said) = verify(offline(&tampered, &proof_file)).await;
    assert!(!ok && said.contains("band"), "{said}");
    // A proof with another index, and one cut short.
    for (name, change) in
        [("index", json!({"index": (proof["index"].as_u64().unwrap() + 1) % votes.len() as u64})), ("path", json!({}))]
    {
        let mut bad = proof.clone();
        if name == "path" {
            bad["path"].as_array_mut().expect("path").pop();
        } else {
            bad["index"] = change["index"].clone();
        }
        let file = dir.join(format!("bad-{name}.json"));
        std::fs::write(&file, bad.to_string()).expect("write");
        let (ok, said) = verify(offline(&leaves_file, &file)).await;
        assert!(!ok && said.contains("does not lead"), "{name}: {said}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_receipt_of_a_final_round_is_proved_on_embedded_storage() {
    let dir = std::env::temp_dir().join(format!("bandvote-receipts-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut command = embedded_up(0, &dir.join("data"));
    command.args(["--admin-token", TOKEN]);
    let (_up, base) = spawn_listening(&mut command).await;
    wait_ready(&base).await;
    receipts_hold(&base, &dir.join("files")).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_receipt_of_a_final_round_is_proved_on_the_real_servers() {
    let env = TestEnv::new().await;
    let mut command = up(&env, 0);
    command.args(["--admin-token", TOKEN]);
    let (_up, base) = spawn_listening(&mut command).await;
    wait_ready(&base).await;
    let dir = std::env::temp_dir().join(format!("bandvote-receipts-servers-{}", env.id));
    receipts_hold(&base, &dir).await;
    // The tree lives beside the counters in Redis; the leaves come from MongoDB.
    let mut redis = env.redis().await;
    let size: Option<u64> =
        redis::cmd("HGET").arg("votes:round:semi:merkle").arg("size").query_async(&mut redis).await.expect("hget");
    assert_eq!(size, Some(40));
    // A Redis that lost the tree (a recount does not touch it; a lost Redis does): the consumer stores
    // it again from the log, with the certified root, and the proofs answer again.
    let keys: Vec<String> =
        redis::cmd("KEYS").arg("votes:round:semi:merkle*").query_async(&mut redis).await.expect("keys");
    assert!(keys.len() >= 3, "{keys:?}");
    let _: () = redis::cmd("DEL").arg(&keys).query_async(&mut redis).await.expect("del");
    let client = reqwest::Client::new();
    let proof = wait_for("the tree stored again", PATIENCE, || async {
        let answer = client.get(format!("{base}/api/rounds/semi/proof/phone-1")).send().await.ok()?;
        (answer.status() == 200).then_some(answer.json::<Value>().await.ok()?)
    })
    .await;
    assert_eq!(proof["size"], 40);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The peak resident memory of this process so far, in MiB.
fn peak_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("status");
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmHWM");
    kib / 1024.0
}

/// The median and p99 of `samples`, in ms.
fn quantiles(mut samples: Vec<Duration>) -> (f64, f64) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize].as_secs_f64() * 1000.0;
    (at(0.5), at(0.99))
}

/// BENCHMARKS.md, "Receipts": the tree of a million votes (hashing the leaves, building the
/// levels; time and memory), stored in Redis and in the embedded database, and a proof's latency
/// from each (1,000 proofs of random leaves). `cargo test --release -p bandvote --test it --
/// --ignored receipts::a_million --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: scripts/bench receipts runs it in a release build"]
#[allow(clippy::print_stdout, reason = "a benchmark: its table is its output")]
async fn a_million_votes_tree_and_proofs() {
    use bandvote_core::merkle::{Leaf, Tree};
    let n: usize = std::env::var("RECEIPTS_LEAVES").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let bands = ["Alux Nahual", "Bohemia Suburbana", "Ranferí Aguilar", "Viernes Verde 🎸"];
    let before = peak_mib();
    let started = std::time::Instant::now();
    let mut ids: Vec<String> = (0..n).map(|i| format!("phone-{i:09}")).collect();
    ids.sort();
    let hashes: Vec<[u8; 32]> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let band = bands[i % bands.len()].to_owned();
            Leaf {
                id: id.clone(),
                round: "final".into(),
                band,
                album: "El Viaje".into(),
                year: "2011".into(),
                rank: None,
            }
            .hash()
        })
        .collect();
    let hashed = started.elapsed();
    let tree = Tree::new(hashes);
    let built = started.elapsed() - hashed;
    let levels_mib = tree.levels().iter().map(|l| l.len() * 32).sum::<usize>() as f64 / (1 << 20) as f64;
    let peak = peak_mib() - before;

    let env = TestEnv::new().await;
    let mut redis = env.redis().await;
    let started = std::time::Instant::now();
    bandvote_store::merkle::store(&mut redis, "final", &tree, &ids).await.expect("stored in redis");
    let redis_store = started.elapsed();
    let used: String = redis::cmd("INFO").arg("memory").query_async(&mut redis).await.expect("info");
    let redis_mib = used
        .lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or(0.0)
        / (1 << 20) as f64;
    let dir = std::env::temp_dir().join(format!("bandvote-receipts-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let storage = bandvote_embedded::Storage::open(&dir, Duration::from_secs(3600)).expect("storage");
    let started = std::time::Instant::now();
    storage.store_tree("final", &tree, ids.clone()).await.expect("stored embedded");
    let embedded_store = started.elapsed();

    let (mut from_redis, mut from_embedded) = (Vec::new(), Vec::new());
    let root = tree.root();
    for k in 0..1000u64 {
        let index = (k * 7_919 + 13) % n as u64;
        let vote = &ids[index as usize];
        let started = std::time::Instant::now();
        let bandvote_core::merkle::Lookup::Found(proof) =
            bandvote_store::merkle::proof(&mut redis, "final", vote).await.expect("proof")
        else {
            panic!("{vote} is a leaf")
        };
        from_redis.push(started.elapsed());
        assert!(bandvote_core::merkle::verify(&tree.levels()[0][index as usize], index, n as u64, &proof.path, &root));
        let started = std::time::Instant::now();
        let bandvote_core::merkle::Lookup::Found(proof) = storage.proof("final", vote).await.expect("proof") else {
            panic!("{vote} is a leaf")
        };
        from_embedded.push(started.elapsed());
        assert_eq!(proof.index, index);
    }
    let ((redis_p50, redis_p99), (embedded_p50, embedded_p99)) = (quantiles(from_redis), quantiles(from_embedded));
    println!(
        "| leaves | hash the leaves | build the levels | levels | peak RSS added | store: Redis / embedded | Redis memory after | proof p50 / p99: Redis | embedded |"
    );
    println!("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    println!(
        "| {n} | {:.2} s | {:.2} s | {levels_mib:.0} MiB | {peak:.0} MiB | {:.1} s / {:.1} s | {redis_mib:.0} MiB | {redis_p50:.2} / {redis_p99:.2} ms | {embedded_p50:.2} / {embedded_p99:.2} ms |",
        hashed.as_secs_f64(),
        built.as_secs_f64(),
        redis_store.as_secs_f64(),
        embedded_store.as_secs_f64(),
    );
    let _ = std::fs::remove_dir_all(&dir);
}
