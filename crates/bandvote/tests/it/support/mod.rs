//! Shared set-up of the black-box tests: real Kafka, Redis and MongoDB-wire servers on their default
//! loopback ports (started by `scripts/services up`), and, per test, its own topic, consumer groups,
//! Redis database number and Mongo database, so tests run in parallel without seeing each other.

#![allow(dead_code, missing_docs)]

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::PathBuf,
    process::Stdio,
    time::{Duration, Instant},
};

use bandvote_consumer::ConsumerConfig;
use bandvote_ingest::{
    grpc_gateway::GatewayConfig,
    producer::{FrontDoor, ProducerConfig},
};
use bandvote_queue::KafkaConfig;
use bandvote_runtime::shutdown::CancellationToken;
use bandvote_wasm::WasmGatewayConfig;
use mongodb::bson::{Document, doc};
use redis::AsyncCommands;
use serde_json::Value;

pub const REDIS: &str = "redis://127.0.0.1:6379";
pub const MONGO: &str = "mongodb://127.0.0.1:27017";
pub const KAFKA: &str = "127.0.0.1:9092";

/// How long any asynchronous result may take before a test fails instead of hanging.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// Polls `check` until it returns `Some`, or panics with `what` after `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `votes:offsets`, `votes:band`, `votes:album`, `votes:total`.
type TallyKeys = (BTreeMap<String, i64>, BTreeMap<String, u64>, BTreeMap<String, u64>, Option<u64>);

/// One test's private slice of the shared servers.
pub struct TestEnv {
    pub id: String,
    pub topic: String,
    pub redis_db: u32,
    pub mongo_db: String,
    pub shutdown: CancellationToken,
}

impl TestEnv {
    /// Takes a free Redis database (a lock key in database 0 marks it taken) and fresh names.
    pub async fn new() -> Self {
        bandvote_runtime::telemetry::init_for_tests();
        let id = uuid::Uuid::now_v7().simple().to_string();
        let short = &id[id.len() - 12..];
        let client = redis::Client::open(REDIS).expect("redis url");
        let mut redis = client
            .get_multiplexed_async_connection()
            .await
            .expect("redis is not running: start it with `scripts/services up`");
        let mut redis_db = 0;
        for attempt in 0..1000u32 {
            let candidate = 1 + (u32::from_str_radix(&short[..6], 16).unwrap_or(attempt) + attempt * 7) % 255;
            let taken: bool = redis::cmd("SET")
                .arg(format!("bandvote-test-lock:{candidate}"))
                .arg(&id)
                .arg("NX")
                .arg("EX")
                .arg(1800)
                .query_async::<Option<String>>(&mut redis)
                .await
                .expect("redis SET")
                .is_some();
            if taken {
                redis_db = candidate;
                break;
            }
        }
        assert_ne!(redis_db, 0, "no free redis database for the test");
        let env = Self {
            topic: format!("votes-test-{short}"),
            mongo_db: format!("bandvote_test_{short}"),
            redis_db,
            id,
            shutdown: CancellationToken::new(),
        };
        let _: () = redis::cmd("FLUSHDB").query_async(&mut env.redis().await).await.expect("flushdb");
        env
    }

    pub fn redis_url(&self) -> String {
        format!("{REDIS}/{}", self.redis_db)
    }

    pub async fn redis(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.redis_url())
            .expect("redis url")
            .get_multiplexed_async_connection()
            .await
            .expect("redis connection")
    }

    pub fn kafka(&self) -> KafkaConfig {
        KafkaConfig { brokers: KAFKA.into(), topic: self.topic.clone(), ..KafkaConfig::default() }
    }

    pub fn consumer_config(&self) -> ConsumerConfig {
        ConsumerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            kafka: self.kafka(),
            redis_url: self.redis_url().into(),
            mongo_url: MONGO.into(),
            mongo_db: self.mongo_db.clone(),
            tally_group: self.tally_group(),
            log_group: self.log_group(),
            session_timeout: Duration::from_secs(3),
            ..ConsumerConfig::default()
        }
    }

    /// A recount of this test's stores, after its log group.
    pub fn recount_config(&self, force: bool) -> bandvote_store::recount::RecountConfig {
        let consumer = self.consumer_config();
        bandvote_store::recount::RecountConfig {
            kafka: consumer.kafka,
            redis_url: consumer.redis_url,
            mongo_url: consumer.mongo_url,
            mongo_db: consumer.mongo_db,
            log_group: consumer.log_group,
            idempotency_ttl: Duration::from_secs(3600),
            force,
        }
    }

    /// Starts a grpc-producer and a grpc-gateway in this process; returns the gateway's base URL.
    pub async fn start_grpc_path(&self) -> String {
        self.start_grpc_path_with(self.kafka()).await
    }

    pub async fn start_grpc_path_with(&self, kafka: KafkaConfig) -> String {
        let (base, upstream) = self.spawn_grpc_path(kafka).await;
        // Ready once the votes topic is: until then the producer answers 503.
        wait_ready(&upstream).await;
        base
    }

    /// Starts a grpc-producer and a grpc-gateway without waiting for either to be ready; returns the
    /// gateway's and the producer's base URLs.
    pub async fn spawn_grpc_path(&self, kafka: KafkaConfig) -> (String, String) {
        let config =
            ProducerConfig { listen: SocketAddr::from(([127, 0, 0, 1], 0)), kafka, ..ProducerConfig::default() };
        let producer = bandvote_ingest::producer::App::build(config, FrontDoor::Grpc).await.expect("producer builds");
        let upstream = format!("http://{}", producer.local_addr().expect("addr"));
        tokio::spawn(producer.run(self.shutdown.clone()));
        let gateway = bandvote_ingest::grpc_gateway::App::build(GatewayConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            upstream: upstream.clone(),
            ..GatewayConfig::default()
        })
        .await
        .expect("gateway builds");
        let base = format!("http://{}", gateway.local_addr().expect("addr"));
        tokio::spawn(gateway.run(self.shutdown.clone()));
        (base, upstream)
    }

    /// Starts an http-producer and a wasm-gateway in this process; returns the gateway's base URL.
    pub async fn start_wasm_path(&self) -> String {
        self.start_wasm_gateway(None).await.0
    }

    /// Starts an http-producer and a wasm-gateway running `component` (the embedded guest if
    /// `None`); returns the gateway's base URL and the producer's address.
    pub async fn start_wasm_gateway(&self, component: Option<PathBuf>) -> (String, SocketAddr) {
        self.start_wasm_gateway_with(self.kafka(), component).await
    }

    /// As [`TestEnv::start_wasm_gateway`], with the http-producer's Kafka settings given.
    pub async fn start_wasm_gateway_with(
        &self,
        kafka: KafkaConfig,
        component: Option<PathBuf>,
    ) -> (String, SocketAddr) {
        let config = ProducerConfig { kafka, ..self.http_producer_config() };
        let producer_addr = self.start_http_producer(config).await;
        let base = self.start_wasm_gateway_for(&format!("http://{producer_addr}"), component).await;
        (base, producer_addr)
    }

    /// An http-producer's configuration on a free local port and this test's topic.
    pub fn http_producer_config(&self) -> ProducerConfig {
        ProducerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            kafka: self.kafka(),
            ..ProducerConfig::default_for(FrontDoor::Http)
        }
    }

    /// Starts an http-producer in this process and waits until it is ready; returns its address.
    pub async fn start_http_producer(&self, config: ProducerConfig) -> SocketAddr {
        let producer =
            bandvote_ingest::producer::App::build(config, FrontDoor::Http).await.expect("http-producer builds");
        let producer_addr = producer.local_addr().expect("addr");
        tokio::spawn(producer.run(self.shutdown.clone()));
        wait_ready(&format!("http://{producer_addr}")).await;
        producer_addr
    }

    /// A wasm-gateway's configuration on a free local port, forwarding to `upstream`.
    pub fn wasm_gateway_config(upstream: &str, component: Option<PathBuf>) -> WasmGatewayConfig {
        WasmGatewayConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            upstream: upstream.to_owned(),
            component,
            request_timeout: Duration::from_secs(3),
            max_instances: 64,
            ..WasmGatewayConfig::default()
        }
    }

    /// Starts a wasm-gateway whose guest forwards to `upstream`.
    pub async fn start_wasm_gateway_for(&self, upstream: &str, component: Option<PathBuf>) -> String {
        self.start_wasm_gateway_from(Self::wasm_gateway_config(upstream, component)).await
    }

    /// Starts a wasm-gateway with `config`; returns its base URL.
    pub async fn start_wasm_gateway_from(&self, config: WasmGatewayConfig) -> String {
        let gateway = bandvote_wasm::App::build(config).await.expect("wasm-gateway builds");
        let base = format!("http://{}", gateway.local_addr().expect("addr"));
        tokio::spawn(gateway.run(self.shutdown.clone()));
        base
    }

    /// Starts the API in this process on this test's Redis database and Mongo database.
    pub async fn start_api(&self) -> String {
        self.start_api_with(bandvote_api::ApiConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            redis_url: self.redis_url().into(),
            mongo_url: MONGO.into(),
            mongo_db: self.mongo_db.clone(),
            ..bandvote_api::ApiConfig::default()
        })
        .await
    }

    pub async fn start_api_with(&self, config: bandvote_api::ApiConfig) -> String {
        let api = bandvote_api::App::build(config, self.shutdown.clone()).await.expect("api builds");
        let base = format!("http://{}", api.local_addr().expect("addr"));
        tokio::spawn(api.run(self.shutdown.clone()));
        base
    }

    /// Starts a consumer in this process.
    pub async fn start_consumer(&self) {
        let app = bandvote_consumer::App::build(self.consumer_config()).await.expect("consumer builds");
        tokio::spawn(app.run(self.shutdown.clone()));
    }

    /// Starts `bandvote consumer` as a child process (so that it can be killed with SIGKILL), on a
    /// port the kernel chooses; returns it and that port (for health and metrics).
    pub async fn spawn_consumer_process(&self) -> (tokio::process::Child, u16) {
        self.spawn_consumer_process_with(MONGO).await
    }

    /// As [`Self::spawn_consumer_process`], with the log written through `mongo_url`.
    pub async fn spawn_consumer_process_with(&self, mongo_url: &str) -> (tokio::process::Child, u16) {
        self.spawn_consumer_process_args(mongo_url, &[]).await
    }

    /// As [`Self::spawn_consumer_process_with`], with more flags.
    pub async fn spawn_consumer_process_args(&self, mongo_url: &str, flags: &[&str]) -> (tokio::process::Child, u16) {
        use tokio::io::AsyncBufReadExt;
        let config = self.consumer_config();
        let log = std::env::var("BANDVOTE_TEST_CONSUMER_LOG").unwrap_or_else(|_| "warn".into());
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_bandvote"))
            .args(["consumer", "--listen", "127.0.0.1:0", "--session-timeout-ms", "3000"])
            .args(["--kafka-brokers", KAFKA, "--kafka-topic", &self.topic])
            .args(["--redis-url", &self.redis_url(), "--mongo-url", mongo_url, "--mongo-db", &config.mongo_db])
            .args(["--tally-group", &config.tally_group, "--log-group", &config.log_group])
            .args(flags)
            // Its listening line names the port.
            .env("RUST_LOG", format!("{log},bandvote_consumer=info"))
            .env("BANDVOTE_LOG_FORMAT", "json")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("consumer process starts");
        let mut lines = tokio::io::BufReader::new(child.stderr.take().expect("stderr piped")).lines();
        let port = tokio::time::timeout(PATIENCE, async {
            while let Some(line) = lines.next_line().await.expect("stderr") {
                let Ok(event) = serde_json::from_str::<Value>(&line) else { continue };
                let addr = event["fields"]["addr"].as_str().or_else(|| event["addr"].as_str());
                if let Some(port) = addr.and_then(|a| a.rsplit(':').next()?.parse::<u16>().ok()) {
                    return port;
                }
            }
            panic!("the consumer exited before it listened");
        })
        .await
        .expect("the consumer listens in time");
        // The rest of its log, drained so that it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        (child, port)
    }

    pub async fn mongo(&self) -> mongodb::Collection<Document> {
        mongodb::Client::with_uri_str(MONGO).await.expect("mongo client").database(&self.mongo_db).collection("logs")
    }

    /// The counters as the contract's Redis keys hold them.
    pub async fn counts(&self) -> Counts {
        let mut redis = self.redis().await;
        let bands: BTreeMap<String, u64> = redis.hgetall("votes:band").await.expect("votes:band");
        let albums: BTreeMap<String, u64> = redis.hgetall("votes:album").await.expect("votes:album");
        let total: Option<u64> = redis.get("votes:total").await.expect("votes:total");
        Counts { bands, albums, total: total.unwrap_or(0) }
    }

    /// The tally's stored position per partition (`votes:offsets`).
    pub async fn offsets(&self) -> BTreeMap<String, i64> {
        self.redis().await.hgetall("votes:offsets").await.expect("votes:offsets")
    }

    /// Waits until the tally has applied every message of the topic (`votes:offsets` at the
    /// topic's end, read in the same transaction as the counters) with `votes:total` at `total`.
    /// An over-count fails at once, and a late one cannot slip by: the counters are compared only
    /// once nothing of the topic is left to apply.
    pub async fn wait_for_total(&self, total: u64) -> Counts {
        let deadline = Instant::now() + PATIENCE;
        loop {
            // The topic's end first: the snapshot after it covers at least that much.
            let end = topic_end(&self.topic).await;
            let (offsets, counts) = self.tally_snapshot().await;
            assert!(counts.total <= total, "over-counted: {} > {total} (offsets {offsets:?})", counts.total);
            let behind: Vec<_> = end
                .iter()
                .filter(|(partition, high)| {
                    offsets.get(&format!("{}:{partition}", self.topic)).is_none_or(|last| last + 1 < **high)
                })
                .collect();
            if behind.is_empty() && counts.total == total {
                return counts;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {PATIENCE:?} waiting for votes:total = {total} with the topic read to its end \
                 (have {}; offsets {offsets:?}; topic end {end:?})",
                counts.total,
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `votes:offsets` and the counters, read atomically (the tally writes them together).
    async fn tally_snapshot(&self) -> (BTreeMap<String, i64>, Counts) {
        let (offsets, bands, albums, total): TallyKeys = redis::pipe()
            .atomic()
            .hgetall("votes:offsets")
            .hgetall("votes:band")
            .hgetall("votes:album")
            .get("votes:total")
            .query_async(&mut self.redis().await)
            .await
            .expect("the tally's keys");
        (offsets, Counts { bands, albums, total: total.unwrap_or(0) })
    }

    /// Waits until the log pipeline has committed every message of the topic (this test's log
    /// group, or the default one of `bandvote up`) and the log holds `n` documents; an over-log
    /// fails at once.
    pub async fn wait_for_logs(&self, n: u64) -> Vec<Document> {
        let logs = self.mongo().await;
        let deadline = Instant::now() + PATIENCE;
        loop {
            let end = topic_end(&self.topic).await;
            let mut read_to_end = false;
            for group in [self.log_group(), "bandvote-log".to_owned()] {
                let committed = committed_offsets(&group, &self.topic, end.keys().copied().collect()).await;
                read_to_end |= end.iter().all(|(partition, high)| committed.get(partition).is_some_and(|c| c >= high));
            }
            let count = logs.count_documents(doc! {}).await.expect("count");
            assert!(count <= n, "over-logged: {count} > {n}");
            if read_to_end && count == n {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {PATIENCE:?} waiting for {n} log documents with the topic read to its end \
                 (have {count}; read to end: {read_to_end})"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut cursor = logs.find(doc! {}).await.expect("find");
        let mut docs = Vec::new();
        while cursor.advance().await.expect("cursor") {
            docs.push(cursor.deserialize_current().expect("document"));
        }
        assert_eq!(docs.len() as u64, n, "the log read back");
        docs
    }

    pub fn log_group(&self) -> String {
        format!("log-{}", self.id)
    }

    pub fn tally_group(&self) -> String {
        format!("tally-{}", self.id)
    }
}

/// The end (high watermark) of each partition of a Kafka topic that holds messages; empty if the
/// topic is not on the Kafka cluster (the embedded queue).
pub async fn topic_end(topic: &str) -> BTreeMap<i32, i64> {
    use rdkafka::{
        ClientConfig,
        consumer::{BaseConsumer, Consumer},
    };
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || {
        let probe: BaseConsumer = ClientConfig::new().set("bootstrap.servers", KAFKA).create().expect("client");
        let timeout = Duration::from_secs(10);
        let metadata = probe.fetch_metadata(Some(&topic), timeout).expect("topic metadata");
        let mut end = BTreeMap::new();
        for partition in metadata.topics().iter().flat_map(|t| t.partitions()) {
            let (_, high) = probe.fetch_watermarks(&topic, partition.id(), timeout).expect("watermarks");
            if high > 0 {
                end.insert(partition.id(), high);
            }
        }
        end
    })
    .await
    .expect("watermarks task")
}

/// How many members `group` has once it is stable (every member holding its partitions), or `None`
/// while it is rebalancing or unknown.
pub async fn stable_group_members(group: &str) -> Option<usize> {
    use rdkafka::{
        ClientConfig,
        consumer::{BaseConsumer, Consumer},
    };
    let group = group.to_owned();
    tokio::task::spawn_blocking(move || {
        let probe: BaseConsumer = ClientConfig::new().set("bootstrap.servers", KAFKA).create().ok()?;
        let list = probe.fetch_group_list(Some(&group), Duration::from_secs(5)).ok()?;
        let described = list.groups().iter().find(|g| g.name() == group)?;
        (described.state() == "Stable").then(|| described.members().len())
    })
    .await
    .ok()
    .flatten()
}

/// The offsets `group` has committed on `partitions` of `topic` (the next offset it will read).
pub async fn committed_offsets(group: &str, topic: &str, partitions: Vec<i32>) -> BTreeMap<i32, i64> {
    use rdkafka::{
        ClientConfig, Offset, TopicPartitionList,
        consumer::{BaseConsumer, Consumer},
    };
    let (group, topic) = (group.to_owned(), topic.to_owned());
    tokio::task::spawn_blocking(move || {
        let probe: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", KAFKA)
            .set("group.id", &group)
            .set("enable.auto.commit", "false")
            .create()
            .expect("client");
        let mut list = TopicPartitionList::new();
        for partition in partitions {
            list.add_partition(&topic, partition);
        }
        let committed = probe.committed_offsets(list, Duration::from_secs(10)).expect("committed offsets");
        committed
            .elements()
            .iter()
            .filter_map(|e| match e.offset() {
                Offset::Offset(offset) => Some((e.partition(), offset)),
                _ => None,
            })
            .collect()
    })
    .await
    .expect("committed offsets task")
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        self.shutdown.cancel();
        let (topic, database) = (self.topic.clone(), self.mongo_db.clone());
        // On a thread of its own: the drop may run inside the test's runtime, which must not block.
        let _ = std::thread::spawn(move || remove_topic_and_database(&topic, &database)).join();
        let lock = format!("bandvote-test-lock:{}", self.redis_db);
        if let Ok(client) = redis::Client::open(REDIS)
            && let Ok(mut connection) = client.get_connection()
        {
            let _: Result<(), _> = redis::cmd("DEL").arg(lock).query(&mut connection);
        }
    }
}

/// Deletes a test's topic, its dead-letter topic and its Mongo database, within 10 s whatever state
/// the servers are in: a machine that runs the suite many times keeps no partitions behind (each
/// one slows the broker's restart, which the outage tests wait for).
fn remove_topic_and_database(topic: &str, database: &str) {
    use rdkafka::{
        ClientConfig,
        admin::{AdminClient, AdminOptions},
        client::DefaultClientContext,
    };
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
        return;
    };
    runtime.block_on(async {
        let removed = async {
            if let Ok(admin) =
                ClientConfig::new().set("bootstrap.servers", KAFKA).create::<AdminClient<DefaultClientContext>>()
            {
                let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(5)));
                let dead_letters =
                    KafkaConfig { topic: topic.to_owned(), ..KafkaConfig::default() }.dead_letter_topic();
                let _ = admin.delete_topics(&[topic, &dead_letters], &options).await;
            }
            if let Ok(client) = mongodb::Client::with_uri_str(MONGO).await {
                let _ = client.database(database).drop().await;
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(10), removed).await;
    });
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counts {
    pub bands: BTreeMap<String, u64>,
    pub albums: BTreeMap<String, u64>,
    pub total: u64,
}

/// A vote to send, and what it should count as.
#[derive(Debug, Clone)]
pub struct TestVote {
    pub name: &'static str,
    pub album: &'static str,
    pub year: &'static str,
    pub rank: &'static str,
}

impl TestVote {
    pub fn body(&self) -> String {
        serde_json::json!({"name": self.name, "album": self.album, "year": self.year, "rank": self.rank}).to_string()
    }
}

/// A known mix: the original's two bands and albums, plus non-ASCII names.
pub fn mix(n: usize) -> Vec<TestVote> {
    const KINDS: [TestVote; 6] = [
        TestVote { name: "Bohemia Suburbana", album: "Mis palabras", year: "1997", rank: "9.5" },
        TestVote { name: "Bohemia Suburbana", album: "Imaginaria Sonora", year: "2015", rank: "5.2" },
        TestVote { name: "Alux Nahual", album: "Rock chapin", year: "2014", rank: "6.4" },
        TestVote { name: "Alux Nahual", album: "El Viaje", year: "2011", rank: "8.6" },
        TestVote { name: "Ranferí Aguilar", album: "Canción de cuna — ñ", year: "2003", rank: "7" },
        TestVote { name: "Viernes Verde 🎸", album: "Güiro y marimba", year: "2019", rank: "10" },
    ];
    (0..n).map(|i| KINDS[(i * 7 + i / 3) % KINDS.len()].clone()).collect()
}

/// The counts a list of votes should produce.
pub fn expected(votes: &[TestVote]) -> Counts {
    let mut counts = Counts { bands: BTreeMap::new(), albums: BTreeMap::new(), total: 0 };
    for vote in votes {
        *counts.bands.entry(vote.name.to_owned()).or_default() += 1;
        *counts.albums.entry(format!("{} / {}", vote.name, vote.album)).or_default() += 1;
        counts.total += 1;
    }
    counts
}

/// Posts one vote; returns the status and the JSON body.
pub async fn post_vote(client: &reqwest::Client, url: &str, body: String, key: Option<&str>) -> (u16, Value) {
    let mut request = client.post(url).header("content-type", "application/json").body(body);
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    let response = request.send().await.expect("request sent");
    let status = response.status().as_u16();
    let body = response.json::<Value>().await.unwrap_or(Value::Null);
    (status, body)
}

/// Posts every vote, `concurrency` at a time; returns the ids answered 202 (panics on any other).
pub async fn post_all(url: &str, votes: &[TestVote], concurrency: usize) -> Vec<String> {
    use futures::StreamExt;
    let client = reqwest::Client::new();
    futures::stream::iter(votes.iter().cloned())
        .map(|vote| {
            let client = client.clone();
            async move {
                let (status, body) = post_vote(&client, url, vote.body(), None).await;
                assert_eq!(status, 202, "vote {vote:?} answered {status} {body}");
                let path = if url.contains("/wasm/") { "wasm" } else { "grpc" };
                assert_eq!(body["path"], path, "{body}");
                body["id"].as_str().expect("id").to_owned()
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await
}

/// The repository root (for `scripts/services`).
/// `bandvote up` on `port` against this test's topic, Redis database and MongoDB database.
pub fn up(env: &TestEnv, port: u16) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_bandvote"));
    command
        .args(["up", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--kafka-brokers", KAFKA, "--kafka-topic", &env.topic])
        .args(["--redis-url", &env.redis_url(), "--mongo-url", MONGO, "--mongo-db", &env.mongo_db])
        // The test's own groups: `bandvote consumer` processes of this test share its partitions.
        .args(["--tally-group", &env.tally_group(), "--log-group", &env.log_group()])
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true);
    command
}

/// Starts `bandvote up` on a port the kernel picks and waits until it is ready; returns it and its
/// base URL.
pub async fn start_up(env: &TestEnv) -> (tokio::process::Child, String) {
    let (process, base) = spawn_listening(&mut up(env, 0)).await;
    wait_ready(&base).await;
    (process, base)
}

/// Spawns a `bandvote up` command listening on port 0 and reads the address it bound from its
/// banner (`web app: http://ADDR/`) on stderr, so that no other process can take the port between
/// a test choosing it and the child binding it. The rest of stderr is drained in the background.
pub async fn spawn_listening(command: &mut tokio::process::Command) -> (tokio::process::Child, String) {
    let (child, base, _) = spawn_listening_with_stderr(command).await;
    (child, base)
}

/// As [`spawn_listening`]; the rest of stderr is kept, line by line, in the returned buffer.
pub async fn spawn_listening_with_stderr(
    command: &mut tokio::process::Command,
) -> (tokio::process::Child, String, std::sync::Arc<std::sync::Mutex<String>>) {
    use tokio::io::AsyncBufReadExt;
    let mut child = command.stderr(Stdio::piped()).spawn().expect("bandvote starts");
    let mut lines = tokio::io::BufReader::new(child.stderr.take().expect("stderr piped")).lines();
    let mut seen = String::new();
    let found = tokio::time::timeout(PATIENCE, async {
        while let Some(line) = lines.next_line().await.expect("stderr") {
            if let Some(addr) = line.trim().strip_prefix("web app: http://") {
                return Some(format!("http://{}", addr.trim_end_matches('/')));
            }
            seen.push_str(&line);
            seen.push('\n');
        }
        None
    })
    .await;
    let base = match found {
        Ok(Some(base)) => base,
        Ok(None) => panic!("bandvote exited before listening: {seen}"),
        Err(_) => panic!("no listening address within {PATIENCE:?}: {seen}"),
    };
    let rest = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let kept = std::sync::Arc::clone(&rest);
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            let mut kept = kept.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            kept.push_str(&line);
            kept.push('\n');
        }
    });
    (child, base, rest)
}

/// The port of `base` (`http://host:port`).
pub fn port_of(base: &str) -> u16 {
    base.rsplit(':').next().and_then(|port| port.parse().ok()).unwrap_or_else(|| panic!("no port in {base}"))
}

/// Waits until `base/readyz` answers 200.
pub async fn wait_ready(base: &str) {
    let client = reqwest::Client::new();
    wait_for("the service to be ready", PATIENCE, || async {
        let answer = client.get(format!("{base}/readyz")).send().await.ok()?;
        (answer.status() == 200).then_some(())
    })
    .await;
}

/// `bandvote up` on `port` with only a data directory: every backend variable removed, so that
/// nothing in the environment switches a piece to a server.
pub fn embedded_up(port: u16, data_dir: &std::path::Path) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_bandvote"));
    command
        .args(["up", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(data_dir)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    for name in ["BANDVOTE_KAFKA_BROKERS", "BANDVOTE_REDIS_URL", "BANDVOTE_MONGO_URL", "BANDVOTE_DATA_DIR"] {
        command.env_remove(name);
    }
    command
}

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// The value of a counter in a Prometheus page, summed over the series whose labels contain `labels`.
pub fn metric(page: &str, name: &str, labels: &str) -> f64 {
    page.lines()
        .filter(|line| line.starts_with(name) && line.contains(labels))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Fetches `/metrics` of a service on `port` (empty if it does not answer).
pub async fn scrape(port: u16) -> String {
    let url = format!("http://127.0.0.1:{port}/metrics");
    match reqwest::get(url).await {
        Ok(response) => response.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// A TCP proxy in front of a server that a test can take down and bring back: while it is down,
/// open connections are cut and new ones are closed at once, as if the server had crashed.
pub struct SwitchableProxy {
    pub port: u16,
    up: tokio::sync::watch::Sender<bool>,
}

impl SwitchableProxy {
    pub async fn start(target: &'static str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().expect("addr").port();
        let (up, watch) = tokio::sync::watch::channel(true);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let mut watch = watch.clone();
                if !*watch.borrow() {
                    continue; // dropped: the connection is closed
                }
                tokio::spawn(async move {
                    let Ok(server) = tokio::net::TcpStream::connect(target).await else { return };
                    let (mut client_read, mut client_write) = client.into_split();
                    let (mut server_read, mut server_write) = server.into_split();
                    tokio::select! {
                        _ = tokio::io::copy(&mut client_read, &mut server_write) => {}
                        _ = tokio::io::copy(&mut server_read, &mut client_write) => {}
                        _ = watch.wait_for(|up| !*up) => {}
                    }
                });
            }
        });
        Self { port, up }
    }

    pub fn set_up(&self, up: bool) {
        self.up.send_replace(up);
    }
}

/// Content type, idempotency key, body, expected status, expected field.
type BadInput<'a> = (&'a str, Option<&'a str>, String, u16, Option<&'a str>);

/// Sends every kind of bad vote to `{base}/{path}/votes` and checks each status and JSON error;
/// then one valid vote, and checks that only it was counted and logged.
pub async fn assert_bad_input_is_refused_and_nothing_written(env: &TestEnv, base: &str, path: &str) {
    let client = reqwest::Client::new();
    let url = format!("{base}/{path}/votes");
    let valid = r#"{"name":"Alux Nahual","album":"El Viaje","year":"2011","rank":"8.6"}"#;
    let huge = format!(r#"{{"name":"{}","album":"a","year":"2000","rank":"1"}}"#, "x".repeat(20_000));
    let long_key = "k".repeat(129);
    let cases: Vec<BadInput<'_>> = vec![
        ("application/json", None, "{not json".into(), 400, None),
        ("application/json", None, "[1,2,3]".into(), 400, None),
        ("application/json", None, r#"{"name":7,"album":"a","year":"2000","rank":"1"}"#.into(), 400, Some("name")),
        ("application/json", None, r#"{"name":"  ","album":"a","year":"2000","rank":"1"}"#.into(), 400, Some("name")),
        ("application/json", None, r#"{"name":"n","year":"2000","rank":"1"}"#.into(), 400, Some("album")),
        ("application/json", None, r#"{"name":"n","album":"a","year":"20000","rank":"1"}"#.into(), 400, Some("year")),
        ("application/json", None, r#"{"name":"n","album":"a","year":true,"rank":"1"}"#.into(), 400, Some("year")),
        ("application/json", None, r#"{"name":"n","album":"a","year":"2000","rank":"-1"}"#.into(), 400, Some("rank")),
        ("application/json", None, r#"{"name":"n","album":"a","year":"2000","rank":"NaN"}"#.into(), 400, Some("rank")),
        ("application/json", None, huge, 413, None),
        ("text/plain", None, valid.into(), 415, None),
        ("application/x-www-form-urlencoded", None, valid.into(), 415, None),
        ("application/json", Some("has spaces"), valid.into(), 400, Some("Idempotency-Key")),
        ("application/json", Some(&long_key), valid.into(), 400, Some("Idempotency-Key")),
    ];
    for (content_type, key, body, status, field) in cases {
        let mut request = client.post(&url).header("content-type", content_type).body(body.clone());
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        let response = request.send().await.expect("sent");
        assert_eq!(response.status().as_u16(), status, "{path}: {content_type} {key:?} {body:.80}");
        let json: Value = response.json().await.expect("error body is JSON");
        assert!(json["error"].as_str().is_some_and(|e| !e.is_empty()), "error message in {json}");
        assert_eq!(json["field"].as_str(), field, "field in {json}");
    }
    let response = client.get(format!("{base}/{path}/no/such/route")).send().await.expect("sent");
    assert_eq!(response.status().as_u16(), 404);
    assert!(response.json::<Value>().await.expect("json")["error"].is_string());
    let response = client.get(&url).send().await.expect("sent");
    assert_eq!(response.status().as_u16(), 405);
    assert!(response.json::<Value>().await.expect("json")["error"].is_string());

    // One valid vote afterwards: once it is counted, everything before it has been consumed.
    let (status, _) = post_vote(&client, &url, valid.into(), None).await;
    assert_eq!(status, 202);
    let counts = env.wait_for_total(1).await;
    assert_eq!(counts.bands.len(), 1, "only the valid vote was counted: {counts:?}");
    assert_eq!(env.wait_for_logs(1).await.len(), 1);
}

/// Sends `request` on `stream` and reads the answer's head within `limit`: its HTTP/1.1 status, or
/// `None` when the server closed the connection without one. Fails when nothing came in time.
pub async fn raw_status(stream: &mut tokio::net::TcpStream, request: &[u8], limit: Duration) -> Option<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = stream.write_all(request).await;
    let mut answer = Vec::new();
    let read = tokio::time::timeout(limit, async {
        let mut buffer = [0u8; 4096];
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    answer.extend_from_slice(&buffer[..n]);
                    if answer.windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
            }
        }
    })
    .await;
    assert!(
        read.is_ok(),
        "no answer within {limit:?} to {:?}",
        String::from_utf8_lossy(&request[..request.len().min(80)])
    );
    let text = String::from_utf8_lossy(&answer);
    text.strip_prefix("HTTP/1.1 ").and_then(|rest| rest.get(..3)).and_then(|code| code.parse().ok())
}

/// Writes `messages` (value, whether it carries a client's key) straight into `topic`, as a client of
/// the Kafka cluster that skips every gateway would.
pub async fn produce_raw(topic: &str, messages: Vec<(Vec<u8>, bool)>) {
    use rdkafka::{
        ClientConfig,
        message::{Header, OwnedHeaders},
        producer::{FutureProducer, FutureRecord},
    };
    let producer: FutureProducer = ClientConfig::new().set("bootstrap.servers", KAFKA).create().expect("producer");
    for (i, (value, keyed)) in messages.iter().enumerate() {
        let key = format!("raw-{i}");
        let mut record = FutureRecord::to(topic).payload(value).key(&key);
        if *keyed {
            let header = Header { key: bandvote_queue::kafka::CLIENT_KEY_HEADER, value: Some("1") };
            record = record.headers(OwnedHeaders::new().insert(header));
        }
        producer.send(record, Duration::from_secs(10)).await.expect("the message is written");
    }
}
