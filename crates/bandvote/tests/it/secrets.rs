//! No password, token or secret given to any role shows in its output: `--help`, its logs (at
//! `debug`), its `/metrics`, its answers, and its error when it cannot start or finish. Every store
//! is unreachable, so that connection errors are logged and answered.

use std::{
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use crate::support::PATIENCE;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

const SECRETS: [&str; 5] = ["rpw-1f3a9e", "mpw-9c1e7b", "fpw-4b2d8c", "adm-5d2b6f", "vsec-8e4c1d"];

/// Every role of the binary.
const ROLES: [&str; 11] = [
    "up",
    "grpc-gateway",
    "grpc-producer",
    "wasm-gateway",
    "http-producer",
    "consumer",
    "api",
    "recount",
    "audit",
    "load",
    "probe",
];

/// A `bandvote` command with every secret in the environment (each role reads the ones it has a
/// setting for) and every server unreachable.
fn command(args: &[&str]) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_bandvote"));
    command
        .args(args)
        .env("BANDVOTE_REDIS_URL", format!("redis://:{}@127.0.0.1:1/", SECRETS[0]))
        .env("BANDVOTE_MONGO_URL", format!("mongodb://voter:{}@127.0.0.1:1/?authSource=admin", SECRETS[1]))
        .env("BANDVOTE_FAIRNESS_REDIS_URL", format!("redis://:{}@127.0.0.1:1/", SECRETS[2]))
        .env("BANDVOTE_ADMIN_TOKEN", SECRETS[3])
        .env("BANDVOTE_VOTER_SECRET", SECRETS[4])
        .env("BANDVOTE_KAFKA_BROKERS", "127.0.0.1:1")
        .env("BANDVOTE_VOTE_POLICY", "per-minute:3")
        .env("RUST_LOG", "debug")
        .env_remove("BANDVOTE_LISTEN")
        .env_remove("PORT")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

/// Copies `stream` line by line into `seen`.
fn collect(stream: impl AsyncRead + Unpin + Send + 'static, seen: Arc<Mutex<String>>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut lines = BufReader::new(stream).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let mut seen = seen.lock().expect("lock");
            seen.push_str(&line);
            seen.push('\n');
        }
    })
}

/// The address in a `... listening addr=ADDR` log line or the `web app: http://ADDR/` banner.
fn listening(output: &str) -> Option<String> {
    output.lines().find_map(|line| {
        if let Some(rest) = line.trim().strip_prefix("web app: http://") {
            return Some(rest.trim_end_matches('/').to_owned());
        }
        let rest = line.split(" listening").nth(1)?;
        let addr = rest.split("addr=").nth(1)?.split_whitespace().next()?;
        Some(addr.trim_matches('"').to_owned())
    })
}

/// Runs `bandvote ARGS` until it listens (then asks every `path` of it, and posts a vote) or exits
/// by itself; everything it wrote and was answered.
async fn run(args: &[&str], paths: &[&str]) -> String {
    let seen = Arc::new(Mutex::new(String::new()));
    let mut command = command(args);
    if args[0] == "up" {
        // The embedded queue, with the unreachable Redis and MongoDB.
        command.env_remove("BANDVOTE_KAFKA_BROKERS");
    }
    let mut child = command.spawn().expect("bandvote starts");
    let out = collect(child.stdout.take().expect("stdout"), Arc::clone(&seen));
    let err = collect(child.stderr.take().expect("stderr"), Arc::clone(&seen));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let addr = loop {
        if let Some(addr) = listening(&seen.lock().expect("lock")) {
            break Some(addr);
        }
        if child.try_wait().expect("status").is_some() || tokio::time::Instant::now() > deadline {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut answers = String::new();
    if let Some(addr) = addr {
        let client = reqwest::Client::builder().timeout(Duration::from_secs(20)).build().expect("client");
        for path in paths {
            if let Ok(answer) = client.get(format!("http://{addr}{path}")).send().await {
                answers.push_str(&format!("{path}: {} {}\n", answer.status(), answer.text().await.unwrap_or_default()));
            }
        }
        for path in ["/grpc/votes", "/wasm/votes", "/votes", "/api/admin/recount", "/api/voter-token"] {
            let vote = client
                .post(format!("http://{addr}{path}"))
                .header("content-type", "application/json")
                .header("x-voter-id", "not-a-token")
                .bearer_auth("wrong")
                .body(r#"{"name":"Alux Nahual","album":"El Viaje","year":"2011","rank":"8.6"}"#)
                .send()
                .await;
            if let Ok(answer) = vote {
                answers.push_str(&format!("{path}: {} {}\n", answer.status(), answer.text().await.unwrap_or_default()));
            }
        }
    }
    let _ = child.start_kill();
    let _ = tokio::time::timeout(PATIENCE, child.wait()).await.expect("exits after a kill");
    let _ = tokio::join!(out, err);
    let output = seen.lock().expect("lock").clone();
    format!("{output}{answers}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_role_shows_a_secret_in_its_help_logs_metrics_answers_or_errors() {
    let dir = std::env::temp_dir().join(format!("bandvote-secrets-{}", uuid::Uuid::now_v7().simple()));
    let data = dir.to_str().expect("utf-8").to_owned();
    let topic = format!("secrets-{}", uuid::Uuid::now_v7().simple());
    let paths = ["/readyz", "/healthz", "/metrics", "/api/results", "/api/logs", "/api/config", "/nope"];
    let mut leaks = Vec::new();
    for role in ROLES {
        let help = command(&[role, "--help"]).output().await.expect("help");
        assert!(help.status.success(), "{role} --help");
        let mut seen = String::from_utf8_lossy(&help.stdout).into_owned();
        seen.push_str(&String::from_utf8_lossy(&help.stderr));
        let listen = "127.0.0.1:0";
        let args: Vec<&str> = match role {
            "up" => vec!["up", "--listen", listen, "--data-dir", &data],
            "recount" => vec!["recount", "--kafka-topic", &topic],
            "audit" => vec!["audit"],
            "load" => vec!["load", "--target-url", "http://127.0.0.1:1/grpc/votes", "--duration", "1s", "--rate", "5"],
            "probe" => vec!["probe", "http://127.0.0.1:1/readyz"],
            "consumer" => vec!["consumer", "--listen", listen, "--kafka-topic", &topic],
            _ => vec![role, "--listen", listen],
        };
        let output = run(&args, &paths).await;
        assert!(!output.trim().is_empty(), "{role} said something");
        seen.push_str(&output);
        for secret in SECRETS {
            if seen.contains(secret) {
                let line = seen.lines().find(|l| l.contains(secret)).unwrap_or_default().to_owned();
                leaks.push(format!("{role}: {secret} in {line:?}"));
            }
        }
    }
    let _ = std::fs::remove_dir_all(dir);
    assert!(leaks.is_empty(), "secrets leaked:\n{}", leaks.join("\n"));
}
