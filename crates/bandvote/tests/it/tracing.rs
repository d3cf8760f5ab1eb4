//! Following one vote through the logs: each service runs as its own `bandvote` process with JSON
//! logs, and the gateway's, the producer's and the consumer's lines for a vote id carry the trace
//! id of the request's `traceparent` (or of the trace the gateway started when it had none, or an
//! invalid one).

use std::{
    process::Stdio,
    sync::{Arc, Mutex},
};

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::support::{KAFKA, MONGO, PATIENCE, TestEnv, free_port, wait_for, wait_ready};

const LOG: &str = "warn,bandvote_ingest=debug,bandvote_wasm=debug,bandvote_consumer=debug";

/// A `bandvote` child process whose JSON log lines are collected.
struct Service {
    name: &'static str,
    lines: Arc<Mutex<Vec<Value>>>,
    _process: tokio::process::Child,
}

impl Service {
    fn spawn(name: &'static str, args: &[&str]) -> Self {
        let mut process = tokio::process::Command::new(env!("CARGO_BIN_EXE_bandvote"))
            .args(args)
            .env("RUST_LOG", LOG)
            .env("BANDVOTE_LOG_FORMAT", "json")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("{name} starts: {e}"));
        let lines = Arc::new(Mutex::new(Vec::new()));
        let mut stderr = BufReader::new(process.stderr.take().expect("stderr")).lines();
        let sink = Arc::clone(&lines);
        tokio::spawn(async move {
            while let Ok(Some(line)) = stderr.next_line().await {
                let value = serde_json::from_str(&line).unwrap_or_else(|_| panic!("a JSON log line: {line}"));
                sink.lock().expect("log lines").push(value);
            }
        });
        Self { name, lines, _process: process }
    }

    /// The lines about `vote_id`: in a span for it, or with it as a field.
    fn lines_for(&self, vote_id: &str) -> Vec<Value> {
        let lines = self.lines.lock().expect("log lines");
        lines.iter().filter(|line| vote_id_of(line) == Some(vote_id)).cloned().collect()
    }

    /// The trace ids on this service's lines about `vote_id`, once there are `at_least` lines.
    async fn trace_ids(&self, vote_id: &str, at_least: usize) -> Vec<String> {
        let what = format!("{} log lines of {} about vote {vote_id}", at_least, self.name);
        let lines = wait_for(&what, PATIENCE, || async {
            let lines = self.lines_for(vote_id);
            (lines.len() >= at_least).then_some(lines)
        })
        .await;
        lines
            .iter()
            .map(|line| trace_id_of(line).unwrap_or_else(|| panic!("{}: no trace id in {line}", self.name)).to_owned())
            .collect()
    }
}

fn field<'a>(line: &'a Value, name: &str) -> Option<&'a str> {
    line["fields"][name].as_str().or_else(|| line["span"][name].as_str())
}

fn vote_id_of(line: &Value) -> Option<&str> {
    field(line, "vote_id")
}

fn trace_id_of(line: &Value) -> Option<&str> {
    field(line, "trace_id")
}

struct Stack {
    grpc_gateway: Service,
    grpc_producer: Service,
    wasm_gateway: Service,
    http_producer: Service,
    consumer: Service,
    grpc_url: String,
    wasm_url: String,
}

async fn start(env: &TestEnv) -> Stack {
    let ports: Vec<String> = (0..5).map(|_| format!("127.0.0.1:{}", free_port())).collect();
    let kafka = ["--kafka-brokers", KAFKA, "--kafka-topic", &env.topic];
    let grpc_producer =
        Service::spawn("grpc-producer", &[&["grpc-producer", "--listen", &ports[0]][..], &kafka].concat());
    let http_producer =
        Service::spawn("http-producer", &[&["http-producer", "--listen", &ports[1]][..], &kafka].concat());
    let (grpc_upstream, http_upstream) = (format!("http://{}", ports[0]), format!("http://{}", ports[1]));
    let grpc_gateway =
        Service::spawn("grpc-gateway", &["grpc-gateway", "--listen", &ports[2], "--upstream", &grpc_upstream]);
    let wasm_gateway =
        Service::spawn("wasm-gateway", &["wasm-gateway", "--listen", &ports[3], "--upstream", &http_upstream]);
    let redis_url = env.redis_url();
    let (tally_group, log_group) = (format!("tally-{}", env.id), format!("log-{}", env.id));
    let consumer = Service::spawn(
        "consumer",
        &[
            &["consumer", "--listen", &ports[4], "--session-timeout-ms", "3000"][..],
            &kafka,
            &["--redis-url", &redis_url, "--mongo-url", MONGO, "--mongo-db", &env.mongo_db],
            &["--tally-group", &tally_group, "--log-group", &log_group],
        ]
        .concat(),
    );
    for port in &ports {
        wait_ready(&format!("http://{port}")).await;
    }
    Stack {
        grpc_gateway,
        grpc_producer,
        wasm_gateway,
        http_producer,
        consumer,
        grpc_url: format!("http://{}/grpc/votes", ports[2]),
        wasm_url: format!("http://{}/wasm/votes", ports[3]),
    }
}

/// Posts one vote with `traceparent` (if any); returns its id.
async fn vote(url: &str, traceparent: Option<&str>, key: Option<&str>) -> String {
    let client = reqwest::Client::new();
    let body = r#"{"name":"Alux Nahual","album":"El Viaje","year":"2011","rank":"8.6"}"#;
    let mut request = client.post(url).header("content-type", "application/json").body(body);
    if let Some(traceparent) = traceparent {
        request = request.header("traceparent", traceparent);
    }
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    let response = request.send().await.expect("vote sent");
    assert_eq!(response.status().as_u16(), 202);
    let body: Value = response.json().await.expect("JSON answer");
    body["id"].as_str().expect("id").to_owned()
}

/// Every line of the gateway, the producer and both consumer pipelines about `vote_id` carries
/// one trace id; returns it.
async fn one_trace(stack: &Stack, gateway: &Service, producer: &Service, vote_id: &str) -> String {
    let mut ids = gateway.trace_ids(vote_id, 1).await;
    ids.extend(producer.trace_ids(vote_id, 1).await);
    // One line per pipeline: tally and log.
    ids.extend(stack.consumer.trace_ids(vote_id, 2).await);
    let pipelines: Vec<String> = stack
        .consumer
        .lines_for(vote_id)
        .iter()
        .filter_map(|line| line["fields"]["pipeline"].as_str().map(str::to_owned))
        .collect();
    assert!(pipelines.contains(&"tally".into()) && pipelines.contains(&"log".into()), "{pipelines:?}");
    let first = ids[0].clone();
    assert!(ids.iter().all(|id| *id == first), "vote {vote_id}: the services logged different trace ids: {ids:?}");
    assert_eq!(first.len(), 32, "{first}");
    first
}

#[tokio::test]
async fn a_vote_is_followed_from_its_request_to_its_count_by_its_trace_id() {
    let env = TestEnv::new().await;
    let stack = start(&env).await;

    // gRPC path, with the client's trace context and idempotency key.
    let grpc_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let traceparent = format!("00-{grpc_trace}-00f067aa0ba902b7-01");
    let key = format!("traced-{}", env.id);
    let grpc_id = vote(&stack.grpc_url, Some(&traceparent), Some(&key)).await;
    assert_eq!(grpc_id, key);

    // Wasm path, with a trace context and no key: the gateway learns the id from the producer.
    let wasm_trace = "0af7651916cd43dd8448eb211c80319c";
    let wasm_id = vote(&stack.wasm_url, Some(&format!("00-{wasm_trace}-b7ad6b7169203331-01")), None).await;

    // An invalid trace context is replaced by a new trace, followed just the same.
    let forged = "00-ffffffffffffffffffffffffffffffff-zzzzzzzzzzzzzzzz-01";
    let untrusted_id = vote(&stack.grpc_url, Some(forged), None).await;

    assert_eq!(one_trace(&stack, &stack.grpc_gateway, &stack.grpc_producer, &grpc_id).await, grpc_trace);
    assert_eq!(one_trace(&stack, &stack.wasm_gateway, &stack.http_producer, &wasm_id).await, wasm_trace);
    let replaced = one_trace(&stack, &stack.grpc_gateway, &stack.grpc_producer, &untrusted_id).await;
    assert_ne!(replaced, "ffffffffffffffffffffffffffffffff");

    // The request's span is on the gateway's lines: its path and vote id beside the trace id.
    let line = &stack.grpc_gateway.lines_for(&grpc_id)[0];
    assert_eq!(line["span"]["name"], "vote", "{line}");
    assert_eq!(line["span"]["path"], "grpc", "{line}");
}
