//! The command line: every flag has a `BANDVOTE_*` environment variable and a compiled-in default.

use std::{net::SocketAddr, time::Duration};

use bandvote_api::{ApiConfig, routes::admin::AdminConfig};
use bandvote_consumer::{ConsumerConfig, Pipelines, recount::RecountConfig};
use bandvote_ingest::{
    fairness::{FairnessConfig, VotePolicy},
    grpc_gateway::GatewayConfig,
    grpc_producer::ProducerConfig,
    http_producer::HttpProducerConfig,
};
use bandvote_queue::KafkaConfig;
use bandvote_wasm::WasmGatewayConfig;
use clap::{Args, Parser, Subcommand, ValueEnum};

/// bandvote: a real-time voting system for a live music contest.
#[derive(Debug, Parser)]
#[command(name = "bandvote", version, about, long_about = None)]
pub struct Cli {
    /// Log format.
    #[arg(long, env = "BANDVOTE_LOG_FORMAT", default_value = "text", global = true)]
    pub log_format: LogFormat,
    /// The service to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Log output format.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

impl LogFormat {
    /// Whether logs are JSON.
    pub fn is_json(self) -> bool {
        matches!(self, Self::Json)
    }
}

/// One subcommand per service.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Every service in one process behind one listener (/grpc/votes, /wasm/votes, /healthz, ...).
    Up(UpArgs),
    /// HTTP gateway of the gRPC path: POST /grpc/votes, forwarded over gRPC to grpc-producer.
    GrpcGateway(GatewayArgs),
    /// gRPC server that writes votes to Kafka and answers once Kafka acknowledged them.
    GrpcProducer(ProducerArgs),
    /// HTTP gateway of the wasm path: POST /wasm/votes, each handled by a fresh WebAssembly guest.
    WasmGateway(WasmGatewayArgs),
    /// HTTP server that writes votes (POST /votes, from the wasm guest) to Kafka.
    HttpProducer(HttpProducerArgs),
    /// Reads the votes topic and counts every vote exactly once in Redis and logs it in MongoDB.
    Consumer(ConsumerArgs),
    /// REST and SSE API: /api/results, /api/logs, /api/stream, /api/openapi.json.
    Api(ApiArgs),
    /// Rebuilds the Redis counters from the MongoDB log.
    Recount(RecountArgs),
    /// Open-model load generator: votes at a fixed arrival rate, latency from intended send time.
    Load(LoadArgs),
    /// Compares the Redis counters with the MongoDB log; prints both as JSON, fails if they differ.
    Audit(AuditArgs),
    /// Health probe for images without curl: GET the URL, exit 0 on a 2xx answer, 1 otherwise.
    Probe(ProbeArgs),
}

/// Flags of `audit`.
#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Redis and MongoDB.
    #[command(flatten)]
    pub stores: StoreArgs,
}

/// Flags of `probe`.
#[derive(Debug, Args)]
pub struct ProbeArgs {
    /// The URL to GET (e.g. http://127.0.0.1:3000/readyz).
    pub url: String,
    /// Seconds to wait for the answer.
    #[arg(long, default_value_t = 3)]
    pub timeout_secs: u64,
}

/// Kafka connection flags.
#[derive(Debug, Args)]
pub struct KafkaArgs {
    /// Kafka bootstrap brokers (host:port, comma-separated).
    #[arg(long, env = "BANDVOTE_KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    pub kafka_brokers: String,
    /// The votes topic (its dead-letter topic is TOPIC.dlq).
    #[arg(long, env = "BANDVOTE_KAFKA_TOPIC", default_value = "votes")]
    pub kafka_topic: String,
    /// Partitions of the votes topic, when it has to be created.
    #[arg(long, env = "BANDVOTE_KAFKA_PARTITIONS", default_value_t = 6)]
    pub kafka_partitions: i32,
    /// Replication factor of the topics, when they have to be created.
    #[arg(long, env = "BANDVOTE_KAFKA_REPLICATION", default_value_t = 1)]
    pub kafka_replication: i32,
    /// Milliseconds a vote may wait for Kafka's acknowledgement before the client gets 503.
    #[arg(long, env = "BANDVOTE_PRODUCE_TIMEOUT_MS", default_value_t = 5000)]
    pub produce_timeout_ms: u64,
    /// Milliseconds the producer waits to fill a batch (fractions allowed).
    #[arg(long, env = "BANDVOTE_KAFKA_LINGER_MS", default_value_t = 1.0)]
    pub kafka_linger_ms: f64,
}

impl KafkaArgs {
    fn into_config(self) -> KafkaConfig {
        KafkaConfig {
            brokers: self.kafka_brokers,
            topic: self.kafka_topic,
            partitions: self.kafka_partitions,
            replication: self.kafka_replication,
            produce_timeout: Duration::from_millis(self.produce_timeout_ms),
            linger: Duration::from_secs_f64(self.kafka_linger_ms.clamp(0.0, 1000.0) / 1000.0),
        }
    }
}

/// Redis and MongoDB connection flags.
#[derive(Debug, Args)]
pub struct StoreArgs {
    /// Redis URL (a database number in the path is honoured).
    #[arg(long, env = "BANDVOTE_REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    pub redis_url: String,
    /// MongoDB URL.
    #[arg(long, env = "BANDVOTE_MONGO_URL", default_value = "mongodb://127.0.0.1:27017")]
    pub mongo_url: String,
    /// MongoDB database.
    #[arg(long, env = "BANDVOTE_MONGO_DB", default_value = "bandvote")]
    pub mongo_db: String,
    /// Hours a client's Idempotency-Key is remembered.
    #[arg(long, env = "BANDVOTE_IDEMPOTENCY_TTL_HOURS", default_value_t = 24)]
    pub idempotency_ttl_hours: u64,
}

/// Fair-voting flags of the gateways (all off by default).
#[derive(Debug, Args)]
pub struct FairnessArgs {
    /// Votes per voter: unlimited, per-minute:N or once (the voter is named by --voter-header).
    #[arg(long, env = "BANDVOTE_VOTE_POLICY", default_value = "unlimited")]
    pub vote_policy: VotePolicy,
    /// Header carrying the voter identity (with a --vote-policy other than unlimited).
    #[arg(long, env = "BANDVOTE_VOTER_HEADER", default_value = "x-voter-id")]
    pub voter_header: String,
    /// Redis that every gateway replica shares for the voter policy [default: within this process;
    /// `up` uses --redis-url when given].
    #[arg(long, env = "BANDVOTE_FAIRNESS_REDIS_URL")]
    pub fairness_redis_url: Option<String>,
    /// JSON file `[{"name": band, "album": album}, ...]`: votes for anything else are refused (400).
    #[arg(long, env = "BANDVOTE_CONTEST")]
    pub contest: Option<std::path::PathBuf>,
    /// Votes per second accepted from one client address (0: no limit); more get 429.
    #[arg(long, env = "BANDVOTE_RATE_LIMIT", default_value_t = 0)]
    pub rate_limit: u32,
    /// Secret of the signed voter tokens: the voter header must then carry a token from the API's
    /// POST /api/voter-token, signed with the same secret.
    #[arg(long, env = "BANDVOTE_VOTER_SECRET", hide_env_values = true)]
    pub voter_secret: Option<String>,
}

impl FairnessArgs {
    /// The gateways' fair-voting configuration.
    pub fn into_config(self) -> FairnessConfig {
        FairnessConfig {
            policy: self.vote_policy,
            voter_header: self.voter_header,
            redis_url: self.fairness_redis_url,
            contest: self.contest,
            rate_limit: self.rate_limit,
            voter_secret: self.voter_secret,
        }
    }
}

/// Flags of `grpc-gateway`.
#[derive(Debug, Args)]
pub struct GatewayArgs {
    /// Listener for POST /grpc/votes, /healthz, /readyz and /metrics.
    #[arg(long, env = "BANDVOTE_LISTEN", default_value = "0.0.0.0:3000")]
    pub listen: SocketAddr,
    /// The grpc-producer.
    #[arg(long, env = "BANDVOTE_UPSTREAM", default_value = "http://127.0.0.1:3001")]
    pub upstream: String,
    /// HTTP/2 connections to the producer, used round-robin.
    #[arg(long, env = "BANDVOTE_UPSTREAM_CONNECTIONS", default_value_t = 2)]
    pub upstream_connections: usize,
    /// Milliseconds to wait for the producer before answering 503.
    #[arg(long, env = "BANDVOTE_REQUEST_TIMEOUT_MS", default_value_t = 6000)]
    pub request_timeout_ms: u64,
    /// Origins whose pages may post votes from a browser, comma-separated (CORS; for a web app
    /// served from another origin, such as the API on Cloud Run); none by default.
    #[arg(long, env = "BANDVOTE_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Vec<String>,
    /// Fair voting.
    #[command(flatten)]
    pub fairness: FairnessArgs,
}

impl GatewayArgs {
    /// The gateway's configuration.
    pub fn into_config(self) -> GatewayConfig {
        GatewayConfig {
            listen: self.listen,
            upstream: self.upstream,
            connections: self.upstream_connections,
            request_timeout: Duration::from_millis(self.request_timeout_ms),
            fairness: self.fairness.into_config(),
            cors_origins: self.cors_origins,
            ..GatewayConfig::default()
        }
    }
}

/// Flags of `grpc-producer`.
#[derive(Debug, Args)]
pub struct ProducerArgs {
    /// Listener for gRPC (bandvote.v1.VoteService, grpc.health.v1.Health), /healthz, /readyz, /metrics.
    #[arg(long, env = "BANDVOTE_LISTEN", default_value = "0.0.0.0:3001")]
    pub listen: SocketAddr,
    /// Kafka.
    #[command(flatten)]
    pub kafka: KafkaArgs,
}

impl ProducerArgs {
    /// The producer's configuration.
    pub fn into_config(self) -> ProducerConfig {
        ProducerConfig { listen: self.listen, kafka: self.kafka.into_config(), ..ProducerConfig::default() }
    }
}

/// Flags of `up`.
#[derive(Debug, Args)]
pub struct UpArgs {
    /// The one public listener (the web app, /grpc/votes, /wasm/votes, /api/..., /metrics).
    #[arg(long, env = "BANDVOTE_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Directory of the embedded storage (queue, counters and log in one SQLite database), used for
    /// every piece not switched to a server below.
    #[arg(long, env = "BANDVOTE_DATA_DIR", default_value = "./bandvote-data")]
    pub data_dir: std::path::PathBuf,
    /// Queue votes in Kafka at these brokers instead of the embedded queue (needs --redis-url and
    /// --mongo-url too: the Kafka consumer counts into Redis and logs into MongoDB).
    #[arg(long, env = "BANDVOTE_KAFKA_BROKERS")]
    pub kafka_brokers: Option<String>,
    /// The Kafka votes topic (with --kafka-brokers).
    #[arg(long, env = "BANDVOTE_KAFKA_TOPIC", default_value = "votes")]
    pub kafka_topic: String,
    /// Count votes in Redis at this URL instead of the embedded counters.
    #[arg(long, env = "BANDVOTE_REDIS_URL")]
    pub redis_url: Option<String>,
    /// Log votes in MongoDB at this URL instead of the embedded log.
    #[arg(long, env = "BANDVOTE_MONGO_URL")]
    pub mongo_url: Option<String>,
    /// MongoDB database (with --mongo-url).
    #[arg(long, env = "BANDVOTE_MONGO_DB", default_value = "bandvote")]
    pub mongo_db: String,
    /// Hours a client's Idempotency-Key is remembered.
    #[arg(long, env = "BANDVOTE_IDEMPOTENCY_TTL_HOURS", default_value_t = 24)]
    pub idempotency_ttl_hours: u64,
    /// Fair voting.
    #[command(flatten)]
    pub fairness: FairnessArgs,
}

impl UpArgs {
    /// What `up` runs.
    pub fn into_config(self) -> crate::up::UpConfig {
        let mut fairness = self.fairness.into_config();
        if fairness.redis_url.is_none() {
            fairness.redis_url.clone_from(&self.redis_url);
        }
        crate::up::UpConfig {
            fairness,
            listen: self.listen,
            data_dir: self.data_dir,
            kafka: self.kafka_brokers.map(|brokers| KafkaConfig {
                brokers,
                topic: self.kafka_topic,
                ..KafkaConfig::default()
            }),
            redis_url: self.redis_url,
            mongo_url: self.mongo_url,
            mongo_db: self.mongo_db,
            idempotency_ttl: Duration::from_secs(self.idempotency_ttl_hours.max(1) * 3600),
        }
    }
}

/// Flags of `wasm-gateway`.
#[derive(Debug, Args)]
pub struct WasmGatewayArgs {
    /// Listener for POST /wasm/votes, /healthz, /readyz and /metrics.
    #[arg(long, env = "BANDVOTE_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
    /// The http-producer: the only address the guest may reach.
    #[arg(long, env = "BANDVOTE_UPSTREAM", default_value = "http://127.0.0.1:8001")]
    pub upstream: String,
    /// Run this component file instead of the embedded guest.
    #[arg(long, env = "BANDVOTE_COMPONENT")]
    pub component: Option<std::path::PathBuf>,
    /// Largest linear memory of one guest instance, in MiB.
    #[arg(long, env = "BANDVOTE_GUEST_MEMORY_MIB", default_value_t = 32)]
    pub guest_memory_mib: usize,
    /// Milliseconds a guest may take for one request.
    #[arg(long, env = "BANDVOTE_GUEST_TIMEOUT_MS", default_value_t = 10_000)]
    pub guest_timeout_ms: u64,
    /// Guest instances that may exist at once.
    #[arg(long, env = "BANDVOTE_GUEST_INSTANCES", default_value_t = 1000)]
    pub guest_instances: u32,
    /// Origins whose pages may post votes from a browser, comma-separated (CORS; for a web app
    /// served from another origin, such as the API on Cloud Run); none by default.
    #[arg(long, env = "BANDVOTE_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Vec<String>,
    /// Fair voting.
    #[command(flatten)]
    pub fairness: FairnessArgs,
}

impl WasmGatewayArgs {
    /// The wasm gateway's configuration.
    pub fn into_config(self) -> WasmGatewayConfig {
        WasmGatewayConfig {
            listen: self.listen,
            upstream: self.upstream,
            component: self.component,
            max_memory_bytes: self.guest_memory_mib.max(1) << 20,
            request_timeout: Duration::from_millis(self.guest_timeout_ms.max(1)),
            max_instances: self.guest_instances.max(1),
            fairness: self.fairness.into_config(),
            cors_origins: self.cors_origins,
            ..WasmGatewayConfig::default()
        }
    }
}

/// Flags of `http-producer`.
#[derive(Debug, Args)]
pub struct HttpProducerArgs {
    /// Listener for POST /votes, /healthz, /readyz and /metrics.
    #[arg(long, env = "BANDVOTE_LISTEN", default_value = "0.0.0.0:8001")]
    pub listen: SocketAddr,
    /// Kafka.
    #[command(flatten)]
    pub kafka: KafkaArgs,
}

impl HttpProducerArgs {
    /// The HTTP producer's configuration.
    pub fn into_config(self) -> HttpProducerConfig {
        HttpProducerConfig { listen: self.listen, kafka: self.kafka.into_config(), ..HttpProducerConfig::default() }
    }
}

/// Flags of `consumer`.
#[derive(Debug, Args)]
pub struct ConsumerArgs {
    /// Listener for /healthz, /readyz and /metrics.
    #[arg(long, env = "BANDVOTE_LISTEN", default_value = "0.0.0.0:9100")]
    pub listen: SocketAddr,
    /// Kafka.
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Redis and MongoDB.
    #[command(flatten)]
    pub stores: StoreArgs,
    /// Consumer group of the tally pipeline (Kafka → Redis).
    #[arg(long, env = "BANDVOTE_TALLY_GROUP", default_value = "bandvote-tally")]
    pub tally_group: String,
    /// Consumer group of the log pipeline (Kafka → MongoDB).
    #[arg(long, env = "BANDVOTE_LOG_GROUP", default_value = "bandvote-log")]
    pub log_group: String,
    /// Kafka group session timeout, in milliseconds.
    #[arg(long, env = "BANDVOTE_SESSION_TIMEOUT_MS", default_value_t = 10_000)]
    pub session_timeout_ms: u64,
    /// Largest batch, in messages.
    #[arg(long, env = "BANDVOTE_BATCH_MAX", default_value_t = 5000)]
    pub batch_max: usize,
    /// Milliseconds a batch waits to fill after its first message.
    #[arg(long, env = "BANDVOTE_BATCH_LINGER_MS", default_value_t = 10)]
    pub batch_linger_ms: u64,
    /// Pipelines to run in this process (scale or measure them apart).
    #[arg(long, env = "BANDVOTE_PIPELINES", value_delimiter = ',', default_value = "tally,log")]
    pub pipelines: Vec<PipelineName>,
}

/// A consumer pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PipelineName {
    /// Kafka → Redis counters.
    Tally,
    /// Kafka → MongoDB log.
    Log,
}

impl ConsumerArgs {
    /// The consumer's configuration.
    pub fn into_config(self) -> ConsumerConfig {
        ConsumerConfig {
            listen: self.listen,
            kafka: self.kafka.into_config(),
            redis_url: self.stores.redis_url,
            mongo_url: self.stores.mongo_url,
            mongo_db: self.stores.mongo_db,
            tally_group: self.tally_group,
            log_group: self.log_group,
            session_timeout: Duration::from_millis(self.session_timeout_ms),
            batch_max: self.batch_max.max(1),
            batch_linger: Duration::from_millis(self.batch_linger_ms),
            idempotency_ttl: Duration::from_secs(self.stores.idempotency_ttl_hours.max(1) * 3600),
            pipelines: Pipelines {
                tally: self.pipelines.contains(&PipelineName::Tally),
                log: self.pipelines.contains(&PipelineName::Log),
            },
            ..ConsumerConfig::default()
        }
    }
}

/// Flags of `api`.
#[derive(Debug, Args)]
pub struct ApiArgs {
    /// Listener for /, /api/..., /healthz, /readyz and /metrics [default: 0.0.0.0:$PORT when PORT is
    /// set, as on Cloud Run, else 0.0.0.0:8000].
    #[arg(long, env = "BANDVOTE_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Redis and MongoDB.
    #[command(flatten)]
    pub stores: StoreArgs,
    /// Origins allowed to call the API from a browser (comma-separated); none by default.
    #[arg(long, env = "BANDVOTE_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Vec<String>,
    /// Base URL the web app posts votes to (its /grpc/votes and /wasm/votes); "" for this origin.
    /// Without it the web app shows no vote form.
    #[arg(long, env = "BANDVOTE_VOTE_URL")]
    pub vote_url: Option<String>,
    /// Secret of the signed voter tokens: enables POST /api/voter-token (the gateways check the
    /// tokens with the same secret).
    #[arg(long, env = "BANDVOTE_VOTER_SECRET", hide_env_values = true)]
    pub voter_secret: Option<String>,
    /// The gateways' voter header, which the web app sends its token in.
    #[arg(long, env = "BANDVOTE_VOTER_HEADER", default_value = "x-voter-id")]
    pub voter_header: String,
    /// Bearer token for POST /api/admin/recount (from a secret); without it the route does not exist.
    #[arg(long, env = "BANDVOTE_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Kafka (for the admin recount's consistent cut).
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// The log pipeline's consumer group (for the admin recount).
    #[arg(long, env = "BANDVOTE_LOG_GROUP", default_value = "bandvote-log")]
    pub log_group: String,
}

impl ApiArgs {
    /// The API's configuration.
    pub fn into_config(self) -> ApiConfig {
        let port = std::env::var("PORT").ok().and_then(|p| p.parse::<u16>().ok()).unwrap_or(8000);
        let admin = self.admin_token.map(|token| AdminConfig {
            token,
            recount: RecountConfig {
                kafka: self.kafka.into_config(),
                redis_url: self.stores.redis_url.clone(),
                mongo_url: self.stores.mongo_url.clone(),
                mongo_db: self.stores.mongo_db.clone(),
                log_group: self.log_group,
                idempotency_ttl: Duration::from_secs(self.stores.idempotency_ttl_hours.max(1) * 3600),
                force: false,
            },
        });
        ApiConfig {
            listen: self.listen.unwrap_or(SocketAddr::from(([0, 0, 0, 0], port))),
            redis_url: self.stores.redis_url,
            mongo_url: self.stores.mongo_url,
            mongo_db: self.stores.mongo_db,
            cors_origins: self.cors_origins,
            vote_url: self.vote_url,
            voter_secret: self.voter_secret,
            voter_header: self.voter_header,
            admin,
            ..ApiConfig::default()
        }
    }
}

/// Flags of `recount`.
#[derive(Debug, Args)]
pub struct RecountArgs {
    /// Kafka (to read the log pipeline's position).
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Redis and MongoDB.
    #[command(flatten)]
    pub stores: StoreArgs,
    /// Consumer group of the log pipeline.
    #[arg(long, env = "BANDVOTE_LOG_GROUP", default_value = "bandvote-log")]
    pub log_group: String,
    /// Recount even if the log pipeline is behind or votes are arriving.
    #[arg(long)]
    pub force: bool,
}

impl RecountArgs {
    /// The recount's configuration.
    pub fn into_config(self) -> RecountConfig {
        RecountConfig {
            kafka: self.kafka.into_config(),
            redis_url: self.stores.redis_url,
            mongo_url: self.stores.mongo_url,
            mongo_db: self.stores.mongo_db,
            log_group: self.log_group,
            idempotency_ttl: Duration::from_secs(self.stores.idempotency_ttl_hours.max(1) * 3600),
            force: self.force,
        }
    }
}

/// Which vote endpoint `load` sends to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LoadPath {
    /// POST /grpc/votes.
    Grpc,
    /// POST /wasm/votes.
    Wasm,
    /// Both, interleaved vote by vote.
    Both,
}

/// Flags of `load`.
#[derive(Debug, Args)]
pub struct LoadArgs {
    /// Base URL of the system (its public listener).
    #[arg(long, env = "BANDVOTE_LOAD_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Vote path to load.
    #[arg(long, env = "BANDVOTE_LOAD_PATH", default_value = "grpc")]
    pub path: LoadPath,
    /// Send to these exact URLs (repeat the flag, or separate with commas; used in turn) instead of
    /// a vote path of --url: a bare baseline server, or gateways on their own ports.
    #[arg(long, env = "BANDVOTE_LOAD_TARGET_URL", value_delimiter = ',', conflicts_with = "path")]
    pub target_url: Vec<String>,
    /// Arrival rate in votes/s; several (comma-separated) make a stepped run, one step each.
    #[arg(long, env = "BANDVOTE_LOAD_RATE", value_delimiter = ',', default_value = "1000")]
    pub rate: Vec<f64>,
    /// How long each rate step lasts (e.g. 10s, 500ms, 2m).
    #[arg(long, env = "BANDVOTE_LOAD_DURATION", default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Stop after this many votes (default: a traffic file's length, else rate × duration).
    #[arg(long, env = "BANDVOTE_LOAD_COUNT")]
    pub count: Option<u64>,
    /// JSON array of votes, sent in order (default: the original contest's albums, weighted at random).
    #[arg(long, env = "BANDVOTE_LOAD_TRAFFIC")]
    pub traffic: Option<std::path::PathBuf>,
    /// Seed of the random mix.
    #[arg(long, env = "BANDVOTE_LOAD_SEED", default_value_t = 1)]
    pub seed: u64,
    /// Requests in flight at most; votes due beyond it wait (and their wait counts as latency).
    #[arg(long, env = "BANDVOTE_LOAD_MAX_IN_FLIGHT", default_value_t = 1024)]
    pub max_in_flight: usize,
    /// Time allowed for one request (e.g. 10s).
    #[arg(long, env = "BANDVOTE_LOAD_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Retries of a vote answered 5xx or not at all, with the same Idempotency-Key.
    #[arg(long, env = "BANDVOTE_LOAD_RETRIES", default_value_t = 0)]
    pub retries: u32,
    /// Send an Idempotency-Key with every vote (implied by --retries).
    #[arg(long, env = "BANDVOTE_LOAD_KEYS")]
    pub keys: bool,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Write an HTML report with latency-over-time and throughput charts to this file.
    #[arg(long, env = "BANDVOTE_LOAD_REPORT")]
    pub report: Option<std::path::PathBuf>,
    /// After the run, wait until the API's counts include every accepted vote and compare them.
    #[arg(long, env = "BANDVOTE_LOAD_VERIFY")]
    pub verify: bool,
    /// Base URL of the API that --verify reads (default: --url).
    #[arg(long, env = "BANDVOTE_LOAD_API")]
    pub api: Option<String>,
    /// How long --verify waits for the counts (e.g. 60s).
    #[arg(long, env = "BANDVOTE_LOAD_VERIFY_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub verify_timeout: Duration,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// Parses `10s`, `500ms`, `2m` or a plain number of seconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let value: f64 = number.trim().parse().map_err(|_| format!("not a duration: {text:?} (e.g. 10s, 500ms, 2m)"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        _ => return Err(format!("unknown unit {unit:?} in {text:?} (ms, s or m)")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("{text:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use std::time::Duration;

    use super::{Cli, parse_duration};

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5h").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn command_line_is_consistent() {
        Cli::command().debug_assert();
    }
}
