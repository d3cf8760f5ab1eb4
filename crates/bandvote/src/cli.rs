//! The command line: every flag has a `BANDVOTE_*` environment variable and a compiled-in default,
//! and may be set in the `--config` file ([`crate::config_file`]).

use std::{net::SocketAddr, time::Duration};

use bandvote_api::{ApiConfig, routes::admin::AdminConfig};
use bandvote_consumer::{ConsumerConfig, Pipelines};
use bandvote_ingest::{
    fairness::{FairnessConfig, VotePolicy},
    grpc_gateway::GatewayConfig,
    ingest_secret::IngestSecret,
    names::NamesConfig,
    producer::{FrontDoor, ProducerConfig},
};
use bandvote_queue::KafkaConfig;
use bandvote_runtime::{client::TrustedProxies, http};
use bandvote_store::recount::RecountConfig;
use bandvote_wasm::WasmGatewayConfig;
use clap::{Args, Parser, Subcommand, ValueEnum};
use secrecy::{ExposeSecret, SecretString};

/// bandvote: a real-time voting system for a live music contest.
#[derive(Debug, Parser)]
#[command(name = "bandvote", version, about, long_about = None)]
pub struct Cli {
    /// TOML file of settings, under the environment and the flags: its keys are the long flags,
    /// top-level for the options of every subcommand and in a table per subcommand for the others
    /// (`[up]` with `listen = "0.0.0.0:8080"`, `data-dir = "..."`); unknown keys are refused.
    #[arg(long, env = "BANDVOTE_CONFIG", global = true, value_name = "FILE")]
    pub config: Option<std::path::PathBuf>,
    /// Log format.
    #[arg(long, env = "BANDVOTE_LOG_FORMAT", default_value = "text", global = true)]
    pub log_format: LogFormat,
    /// After SIGTERM or SIGINT, the longest the drain may take before the process exits with an
    /// error, in seconds; keep it below the pod's terminationGracePeriodSeconds. A second signal
    /// exits at once (code 130).
    #[arg(long, env = "BANDVOTE_SHUTDOWN_GRACE_SECS", default_value_t = 25, global = true)]
    pub shutdown_grace_secs: u64,
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
    /// The show's rounds through the API: list, create, open, close, reveal, hide, results, result.
    Round(RoundArgs),
    /// Health probe for images without curl: GET the URL, exit 0 on a 2xx answer, 1 otherwise.
    Probe(ProbeArgs),
}

/// Flags of `round`.
#[derive(Debug, Args)]
pub struct RoundArgs {
    /// The API (`bandvote up`'s address, or the api service).
    #[arg(long, env = "BANDVOTE_API", default_value = "http://127.0.0.1:8080", global = true)]
    pub api: String,
    /// The API's admin token (every command but list and results needs it).
    #[command(flatten)]
    pub admin: AdminTokenArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: RoundCommand,
}

/// A round command.
#[derive(Debug, Subcommand)]
pub enum RoundCommand {
    /// Every round, newest first, with the server's time.
    List,
    /// Creates a round (scheduled with --opens-at/--closes-at, or opened later with `open`).
    Create(RoundSpec),
    /// Changes a round that never opened (its title, window, results and ballot, all replaced).
    Edit(RoundSpec),
    /// Deletes a round that never opened.
    Delete {
        /// The round.
        id: String,
    },
    /// Opens a round now.
    Open {
        /// The round.
        id: String,
    },
    /// Closes a round now: later votes get 409.
    Close {
        /// The round.
        id: String,
    },
    /// Shows a hidden round's results to everyone.
    Reveal {
        /// The round.
        id: String,
    },
    /// Shows the public only a round's total.
    Hide {
        /// The round.
        id: String,
    },
    /// A round's results (everything with the admin token, even while hidden).
    Results {
        /// The round.
        id: String,
    },
    /// A final round's certified result, its SHA-256 checked (fails before the round is final).
    Result {
        /// The round.
        id: String,
    },
    /// Checks a final round's certified result against its leaves (the bulletin board: the counts
    /// and the Merkle root recomputed), and receipts against their proofs; from the API, or offline
    /// from saved files. Exits non-zero on any mismatch, saying which.
    Verify(VerifyArgs),
}

/// Flags of `round verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The round.
    pub id: String,
    /// The certified result, saved from GET /api/rounds/ID/result [default: from the API].
    #[arg(long, value_name = "FILE")]
    pub result: Option<std::path::PathBuf>,
    /// The leaves, saved from GET /api/rounds/ID/leaves.jsonl [default: from the API].
    #[arg(long, value_name = "FILE")]
    pub leaves: Option<std::path::PathBuf>,
    /// A receipt (a vote id) whose proof the API gives (repeatable).
    #[arg(long = "receipt", value_name = "VOTE_ID")]
    pub receipts: Vec<String>,
    /// A proof saved from GET /api/rounds/ID/proof/VOTE_ID (repeatable).
    #[arg(long = "proof", value_name = "FILE")]
    pub proofs: Vec<std::path::PathBuf>,
}

/// A round as `round create` and `round edit` describe it.
#[derive(Debug, Args)]
pub struct RoundSpec {
    /// Its id: 1-64 of a-z, 0-9 and -.
    pub id: String,
    /// What the audience sees [default: the id].
    #[arg(long)]
    pub title: Option<String>,
    /// Opens by itself at this RFC 3339 instant.
    #[arg(long)]
    pub opens_at: Option<String>,
    /// Closes by itself at this RFC 3339 instant.
    #[arg(long)]
    pub closes_at: Option<String>,
    /// The public sees only the total until `reveal`.
    #[arg(long)]
    pub hidden: bool,
    /// The ballot: a file of `name,album,year` lines (CSV, an optional header) or a JSON list of
    /// `{"name", "album", "year"}`; votes must then be one of its entries [default: free text].
    #[arg(long)]
    pub ballot: Option<std::path::PathBuf>,
}

/// Flags of `audit`.
#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Redis and MongoDB.
    #[command(flatten)]
    pub stores: StoreArgs,
    /// Audit one round: its counters against its votes in the log and, once it is final, its
    /// certified result (default: all-time).
    #[arg(long)]
    pub round: Option<String>,
    /// The Redis holding the rounds, when it is not the counters' (`--redis-url`).
    #[arg(long, env = "BANDVOTE_ROUNDS_REDIS_URL", hide_env_values = true)]
    pub rounds_redis_url: Option<SecretString>,
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
    /// Milliseconds a vote may wait for Kafka's acknowledgement before the client gets 503 (at most
    /// 5000: a round becomes final 18.6 s after its close, once no vote answered 202 can still arrive).
    #[arg(long, env = "BANDVOTE_PRODUCE_TIMEOUT_MS", default_value_t = 5000,
          value_parser = clap::value_parser!(u64).range(1..=bandvote_core::round::MAX_PRODUCE_TIMEOUT_MS))]
    pub produce_timeout_ms: u64,
    /// Milliseconds the producer waits to fill a batch (fractions allowed).
    #[arg(long, env = "BANDVOTE_KAFKA_LINGER_MS", default_value_t = 5.0)]
    pub kafka_linger_ms: f64,
    /// Milliseconds the votes go to one partition before the next takes them (sticky
    /// partitioning: fuller batches); 0 spreads them by the hash of their id.
    #[arg(long, env = "BANDVOTE_KAFKA_STICKY_MS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(0..=1000))]
    pub kafka_sticky_ms: u64,
    /// Compression of the produce requests.
    #[arg(long, env = "BANDVOTE_KAFKA_COMPRESSION", default_value = "lz4",
          value_parser = ["none", "snappy", "lz4"])]
    pub kafka_compression: String,
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
            sticky: Duration::from_millis(self.kafka_sticky_ms),
            compression: self.kafka_compression,
        }
    }
}

/// Redis and MongoDB connection flags.
#[derive(Debug, Args)]
pub struct StoreArgs {
    /// Redis URL (a database number in the path is honoured; a password in it is never printed).
    /// `redis-sentinel://[:PASSWORD@]HOST:PORT,…[/DB]#MASTER` names Sentinels instead.
    #[arg(long, env = "BANDVOTE_REDIS_URL", hide_env_values = true, default_value = bandvote_store::DEFAULT_REDIS_URL)]
    pub redis_url: SecretString,
    /// Redis Sentinels, HOST:PORT comma-separated: Redis is then the primary they name for
    /// --redis-master (password and database from --redis-url), found again after a failover.
    #[arg(long, env = "BANDVOTE_REDIS_SENTINEL", value_delimiter = ',')]
    pub redis_sentinel: Vec<String>,
    /// The master name the Sentinels monitor (with --redis-sentinel).
    #[arg(long, env = "BANDVOTE_REDIS_MASTER", default_value = bandvote_store::redis_client::DEFAULT_MASTER)]
    pub redis_master: String,
    /// MongoDB URL (a password in it is never printed).
    #[arg(long, env = "BANDVOTE_MONGO_URL", hide_env_values = true, default_value = bandvote_store::DEFAULT_MONGO_URL)]
    pub mongo_url: SecretString,
    /// MongoDB database.
    #[arg(long, env = "BANDVOTE_MONGO_DB", default_value = bandvote_store::DEFAULT_MONGO_DB)]
    pub mongo_db: String,
    /// Hours a client's Idempotency-Key is remembered.
    #[arg(long, env = "BANDVOTE_IDEMPOTENCY_TTL_HOURS", default_value_t = 24)]
    pub idempotency_ttl_hours: u64,
}

impl StoreArgs {
    /// The Redis to use: --redis-url, or the Sentinels' primary when --redis-sentinel is given.
    pub fn redis(&self) -> SecretString {
        bandvote_store::redis_client::RedisTarget::sentinel_url(
            &self.redis_url,
            &self.redis_sentinel,
            &self.redis_master,
        )
    }
}

/// Limits every listener applies to its clients.
#[derive(Debug, Args)]
pub struct LimitArgs {
    /// Connections the listener keeps open at once; the next ones are closed at once.
    #[arg(long, env = "BANDVOTE_MAX_CONNECTIONS", default_value_t = http::DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,
    /// Connections one client address keeps open at once (IPv6: per /64; a trusted proxy is not
    /// capped); the next ones are closed at once. 0: no cap.
    #[arg(long, env = "BANDVOTE_MAX_CONNECTIONS_PER_CLIENT", default_value_t = http::DEFAULT_MAX_CONNECTIONS_PER_CLIENT)]
    pub max_connections_per_client: usize,
    /// Milliseconds a connection has to send a complete request head (from its opening, whatever
    /// its protocol, and between HTTP/1 requests); slower connections are closed.
    #[arg(long, env = "BANDVOTE_HEADER_TIMEOUT_MS", default_value_t = millis(http::DEFAULT_HEADER_TIMEOUT))]
    pub header_timeout_ms: u64,
    /// Milliseconds a connection may stay open with no request in flight (an HTTP/2 connection with
    /// no open stream) before it is closed.
    #[arg(long, env = "BANDVOTE_IDLE_TIMEOUT_MS", default_value_t = millis(http::DEFAULT_IDLE_TIMEOUT))]
    pub idle_timeout_ms: u64,
    /// Proxies (addresses or CIDR networks, comma-separated) whose X-Forwarded-For names the
    /// client, for the limits that count per client; none by default (the TCP peer is the client).
    #[arg(long, env = "BANDVOTE_TRUSTED_PROXIES", value_name = "CIDR,...")]
    pub trusted_proxies: Option<TrustedProxies>,
}

const fn millis(duration: Duration) -> u64 {
    duration.as_secs() * 1000 + duration.subsec_millis() as u64
}

impl LimitArgs {
    fn into_limits(self) -> http::Limits {
        http::Limits {
            max_connections: self.max_connections.max(1),
            max_connections_per_client: self.max_connections_per_client,
            header_timeout: Duration::from_millis(self.header_timeout_ms.max(1)),
            idle_timeout: Duration::from_millis(self.idle_timeout_ms.max(1)),
            trusted_proxies: self.trusted_proxies.unwrap_or_default(),
            ..http::Limits::default()
        }
    }
}

/// The gateways' cap on distinct names.
#[derive(Debug, Args)]
pub struct NamesArgs {
    /// Distinct bands, and distinct albums, counted at most when there is no --contest list (0: no
    /// cap): a vote for a new one beyond it gets 400. Across replicas with --fairness-redis-url.
    #[arg(long, env = "BANDVOTE_MAX_NAMES", default_value_t = bandvote_ingest::names::DEFAULT_MAX_NAMES)]
    pub max_names: usize,
}

impl NamesArgs {
    fn into_config(self) -> NamesConfig {
        NamesConfig { max_names: self.max_names }
    }
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
    /// Redis that every gateway replica shares for the voter policy and the names cap: `redis://`,
    /// or `redis-sentinel://HOST:PORT,.../DB#MASTER` to follow a failover [default: within this
    /// process; `up` uses --redis-url when given].
    #[arg(long, env = "BANDVOTE_FAIRNESS_REDIS_URL", hide_env_values = true)]
    pub fairness_redis_url: Option<SecretString>,
    /// JSON file `[{"name": band, "album": album}, ...]`: votes for anything else are refused (400).
    #[arg(long, env = "BANDVOTE_CONTEST")]
    pub contest: Option<std::path::PathBuf>,
    /// Votes per second accepted from one client address (0: no limit); more get 429.
    #[arg(long, env = "BANDVOTE_RATE_LIMIT", default_value_t = 0)]
    pub rate_limit: u32,
    /// Secret of the signed voter tokens: the voter header must then carry a token from the API's
    /// POST /api/voter-token, signed with the same secret.
    #[arg(long, env = "BANDVOTE_VOTER_SECRET", hide_env_values = true)]
    pub voter_secret: Option<SecretString>,
    /// PEM public key (Ed25519, P-256 or RSA) of the show's identity provider: the voter header
    /// must then carry a JWT it signed (EdDSA, ES256 or RS256, with `sub` and `exp`); `sub` is the
    /// voter; a forged, altered or expired token gets 401.
    #[arg(long, env = "BANDVOTE_VOTER_JWT_KEY")]
    pub voter_jwt_key: Option<std::path::PathBuf>,
    /// The `aud` a voter JWT must carry (a token without `aud` gets 401) [default: not checked].
    #[arg(long, env = "BANDVOTE_VOTER_JWT_AUDIENCE")]
    pub voter_jwt_audience: Option<String>,
    /// Hours a voter JWT may be made to last at most (`exp - iat`, or `exp - now` without `iat`);
    /// longer-lived tokens get 401.
    #[arg(long, env = "BANDVOTE_VOTER_JWT_MAX_LIFETIME_HOURS", default_value_t = 24)]
    pub voter_jwt_max_lifetime_hours: u64,
    /// Hours a vote under --vote-policy once is remembered (the voter may vote again after that).
    #[arg(long, env = "BANDVOTE_VOTER_MEMORY_HOURS", default_value_t = 72)]
    pub voter_memory_hours: u64,
    /// Voter tokens POST /api/voter-token issues per minute to one client address.
    #[arg(long, env = "BANDVOTE_VOTER_TOKENS_PER_MINUTE", default_value_t = 10)]
    pub voter_tokens_per_minute: u32,
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
            voter_jwt_key: self.voter_jwt_key,
            voter_jwt_audience: self.voter_jwt_audience,
            voter_jwt_max_lifetime: Duration::from_secs(self.voter_jwt_max_lifetime_hours.max(1) * 3600),
            voter_memory: Duration::from_secs(self.voter_memory_hours.max(1) * 3600),
            voter_tokens_per_minute: self.voter_tokens_per_minute.max(1),
            ..FairnessConfig::default()
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
    /// Calls to the producer in flight at once; the votes that arrive meanwhile go together in
    /// the next call (at a low rate every vote goes at once in a call of its own).
    #[arg(long, env = "BANDVOTE_UPSTREAM_CALLS", default_value_t = 2)]
    pub upstream_calls: usize,
    /// Milliseconds to wait for the producer before answering 503; keep it above the producer's
    /// produce timeout (5 s) plus 500 ms, the longest a vote waits for a call to the producer (at
    /// most 10000, the bound a round's finality counts on).
    #[arg(long, env = "BANDVOTE_REQUEST_TIMEOUT_MS", default_value_t = 6000,
          value_parser = clap::value_parser!(u64).range(1..=bandvote_core::round::MAX_GATEWAY_WAIT_MS))]
    pub request_timeout_ms: u64,
    /// Origins whose pages may post votes from a browser, comma-separated (CORS; for a web app
    /// served from another origin, such as the API on Cloud Run); none by default.
    #[arg(long, env = "BANDVOTE_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Vec<String>,
    /// The Redis where the show's rounds are (the counters' Redis: `redis://` or
    /// `redis-sentinel://`); without it every vote counts in the default round at any time.
    #[arg(long, env = "BANDVOTE_ROUNDS_REDIS_URL", hide_env_values = true)]
    pub rounds_redis_url: Option<SecretString>,
    /// The secret the producers require.
    #[command(flatten)]
    pub ingest: IngestSecretArgs,
    /// Fair voting.
    #[command(flatten)]
    pub fairness: FairnessArgs,
    /// The cap on distinct names.
    #[command(flatten)]
    pub names: NamesArgs,
    /// Client limits.
    #[command(flatten)]
    pub limits: LimitArgs,
}

impl GatewayArgs {
    /// The gateway's configuration.
    pub fn into_config(self) -> anyhow::Result<GatewayConfig> {
        Ok(GatewayConfig {
            ingest_secret: self.ingest.secret()?,
            listen: self.listen,
            upstream: self.upstream,
            connections: self.upstream_connections,
            calls_in_flight: self.upstream_calls.max(1),
            request_timeout: Duration::from_millis(self.request_timeout_ms),
            fairness: self.fairness.into_config(),
            names: self.names.into_config(),
            cors_origins: self.cors_origins,
            limits: self.limits.into_limits(),
            rounds_redis_url: self.rounds_redis_url,
            ..GatewayConfig::default()
        })
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
    /// Who may hand it votes, and for which rounds.
    #[command(flatten)]
    pub guard: GuardArgs,
    /// Client limits.
    #[command(flatten)]
    pub limits: LimitArgs,
}

impl ProducerArgs {
    /// The producer's configuration.
    pub fn into_config(self) -> anyhow::Result<ProducerConfig> {
        Ok(ProducerConfig {
            listen: self.listen,
            kafka: self.kafka.into_config(),
            limits: self.limits.into_limits(),
            guard: self.guard.into_guard()?,
            ..ProducerConfig::default()
        })
    }
}

/// A producer's guard: the gateways' secret and the rounds.
#[derive(Debug, Args)]
pub struct GuardArgs {
    /// The secret the gateways send.
    #[command(flatten)]
    pub ingest: IngestSecretArgs,
    /// The Redis where the show's rounds are: a vote for a round that could not take it now (not
    /// open, closed longer ago than a gateway may take to hand it over) is refused.
    #[arg(long, env = "BANDVOTE_ROUNDS_REDIS_URL", hide_env_values = true)]
    pub rounds_redis_url: Option<SecretString>,
}

impl GuardArgs {
    /// The guard.
    pub fn into_guard(self) -> anyhow::Result<bandvote_ingest::producer::Guard> {
        Ok(bandvote_ingest::producer::Guard {
            secret: self.ingest.secret()?,
            rounds: bandvote_ingest::rounds::RoundGate::from_redis(self.rounds_redis_url.as_ref())?,
        })
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
    /// Consumer group of the tally pipeline (with --kafka-brokers; `bandvote consumer` processes in
    /// the same group share the partitions with `up`).
    #[arg(long, env = "BANDVOTE_TALLY_GROUP", default_value = "bandvote-tally")]
    pub tally_group: String,
    /// Consumer group of the log pipeline (with --kafka-brokers).
    #[arg(long, env = "BANDVOTE_LOG_GROUP", default_value = "bandvote-log")]
    pub log_group: String,
    /// Count votes in Redis at this URL instead of the embedded counters.
    #[arg(long, env = "BANDVOTE_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<SecretString>,
    /// Log votes in MongoDB at this URL instead of the embedded log.
    #[arg(long, env = "BANDVOTE_MONGO_URL", hide_env_values = true)]
    pub mongo_url: Option<SecretString>,
    /// MongoDB database (with --mongo-url).
    #[arg(long, env = "BANDVOTE_MONGO_DB", default_value = bandvote_store::DEFAULT_MONGO_DB)]
    pub mongo_db: String,
    /// Hours a client's Idempotency-Key is remembered.
    #[arg(long, env = "BANDVOTE_IDEMPOTENCY_TTL_HOURS", default_value_t = 24)]
    pub idempotency_ttl_hours: u64,
    /// Fair voting.
    #[command(flatten)]
    pub fairness: FairnessArgs,
    /// Clients of /api/stream at once; the next get 503 with Retry-After.
    #[arg(long, env = "BANDVOTE_MAX_STREAM_CLIENTS", default_value_t = bandvote_api::stream::DEFAULT_MAX_CLIENTS)]
    pub max_stream_clients: usize,
    /// Of those, at most this many from one client address (IPv6: one /64; 0: no such cap). A
    /// venue's Wi-Fi puts its phones behind one address: raise it there.
    #[arg(long, env = "BANDVOTE_MAX_STREAM_CLIENTS_PER_ADDRESS",
          default_value_t = bandvote_api::stream::DEFAULT_MAX_CLIENTS_PER_ADDRESS)]
    pub max_stream_clients_per_address: usize,
    /// The operator's routes (/api/admin/rounds...); without a token they do not exist.
    #[command(flatten)]
    pub admin: AdminTokenArgs,
    /// The audience page's public address, which the projector (/screen) shows as a QR code
    /// [default: the address the projector's browser used].
    #[arg(long, env = "BANDVOTE_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// The cap on distinct names.
    #[command(flatten)]
    pub names: NamesArgs,
    /// Client limits.
    #[command(flatten)]
    pub limits: LimitArgs,
}

impl UpArgs {
    /// What `up` runs; fails when the admin token file cannot be read.
    pub fn into_config(self) -> anyhow::Result<crate::up::UpConfig> {
        let admin_token = self.admin.token()?;
        let mut fairness = self.fairness.into_config();
        if fairness.redis_url.is_none() {
            fairness.redis_url.clone_from(&self.redis_url);
        }
        let mut idempotency_ttl = Duration::from_secs(self.idempotency_ttl_hours.max(1) * 3600);
        // A retried key is never a second vote: under once the voter policy and the tally remember a
        // key equally long (the longer of the two), so the policy never admits as a retry a key the
        // tally has forgotten, nor the tally forgets a key the policy would admit again.
        if fairness.policy == bandvote_ingest::fairness::VotePolicy::Once {
            let memory = fairness.voter_memory.max(idempotency_ttl);
            (fairness.voter_memory, idempotency_ttl) = (memory, memory);
        }
        Ok(crate::up::UpConfig {
            fairness,
            listen: self.listen,
            data_dir: self.data_dir,
            kafka: self.kafka_brokers.map(|brokers| KafkaConfig {
                brokers,
                topic: self.kafka_topic,
                ..KafkaConfig::default()
            }),
            tally_group: self.tally_group,
            log_group: self.log_group,
            redis_url: self.redis_url,
            mongo_url: self.mongo_url,
            mongo_db: self.mongo_db,
            idempotency_ttl,
            limits: self.limits.into_limits(),
            names: self.names.into_config(),
            public_url: self.public_url,
            max_stream_clients: self.max_stream_clients.max(1),
            max_stream_clients_per_address: self.max_stream_clients_per_address,
            admin_token,
        })
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
    /// HTTP/2 connections to the http-producer, used round-robin.
    #[arg(long, env = "BANDVOTE_UPSTREAM_CONNECTIONS", default_value_t = bandvote_wasm::outgoing::DEFAULT_UPSTREAM_CONNECTIONS)]
    pub upstream_connections: usize,
    /// Calls to the http-producer in flight at once, each carrying the votes the guests sent
    /// meanwhile (at a low rate every vote goes at once in a call of its own).
    #[arg(long, env = "BANDVOTE_UPSTREAM_CALLS", default_value_t = bandvote_wasm::outgoing::DEFAULT_UPSTREAM_CALLS)]
    pub upstream_calls: usize,
    /// Each guest sends its vote to the http-producer itself, as an outgoing wasi:http request, and
    /// relays the answer (as under `wasmtime serve`), instead of handing it back to the gateway to
    /// carry: costlier per vote, kept to compare the two.
    #[arg(long, env = "BANDVOTE_GUEST_SENDS")]
    pub guest_sends: bool,
    /// Run this component file instead of the embedded guest.
    #[arg(long, env = "BANDVOTE_COMPONENT")]
    pub component: Option<std::path::PathBuf>,
    /// Largest linear memory of one guest instance, in MiB.
    #[arg(long, env = "BANDVOTE_GUEST_MEMORY_MIB", default_value_t = 32)]
    pub guest_memory_mib: usize,
    /// Milliseconds a guest may take for one request (at most 10000, the bound a round's finality
    /// counts on).
    #[arg(long, env = "BANDVOTE_GUEST_TIMEOUT_MS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(1..=bandvote_core::round::MAX_GATEWAY_WAIT_MS))]
    pub guest_timeout_ms: u64,
    /// Guest instances that may exist at once.
    #[arg(long, env = "BANDVOTE_GUEST_INSTANCES", default_value_t = 1000)]
    pub guest_instances: u32,
    /// Origins whose pages may post votes from a browser, comma-separated (CORS; for a web app
    /// served from another origin, such as the API on Cloud Run); none by default.
    #[arg(long, env = "BANDVOTE_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Vec<String>,
    /// The Redis where the show's rounds are (the counters' Redis: `redis://` or
    /// `redis-sentinel://`); without it every vote counts in the default round at any time.
    #[arg(long, env = "BANDVOTE_ROUNDS_REDIS_URL", hide_env_values = true)]
    pub rounds_redis_url: Option<SecretString>,
    /// The secret the producers require.
    #[command(flatten)]
    pub ingest: IngestSecretArgs,
    /// Fair voting.
    #[command(flatten)]
    pub fairness: FairnessArgs,
    /// The cap on distinct names.
    #[command(flatten)]
    pub names: NamesArgs,
    /// Client limits.
    #[command(flatten)]
    pub limits: LimitArgs,
}

impl WasmGatewayArgs {
    /// The wasm gateway's configuration.
    pub fn into_config(self) -> anyhow::Result<WasmGatewayConfig> {
        let reach = bandvote_wasm::outgoing::Reach { in_process: None, secret: self.ingest.secret()? };
        Ok(WasmGatewayConfig {
            reach,
            listen: self.listen,
            upstream: self.upstream,
            upstream_connections: self.upstream_connections.max(1),
            upstream_calls: self.upstream_calls.max(1),
            guest_sends: self.guest_sends,
            component: self.component,
            max_memory_bytes: self.guest_memory_mib.max(1) << 20,
            request_timeout: Duration::from_millis(self.guest_timeout_ms.max(1)),
            max_instances: self.guest_instances.max(1),
            fairness: self.fairness.into_config(),
            names: self.names.into_config(),
            cors_origins: self.cors_origins,
            limits: self.limits.into_limits(),
            rounds_redis_url: self.rounds_redis_url,
            ..WasmGatewayConfig::default()
        })
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
    /// Who may hand it votes, and for which rounds.
    #[command(flatten)]
    pub guard: GuardArgs,
    /// Client limits.
    #[command(flatten)]
    pub limits: LimitArgs,
}

impl HttpProducerArgs {
    /// The HTTP producer's configuration.
    pub fn into_config(self) -> anyhow::Result<ProducerConfig> {
        let defaults = ProducerConfig::default_for(FrontDoor::Http);
        Ok(ProducerConfig {
            listen: self.listen,
            kafka: self.kafka.into_config(),
            limits: self.limits.into_limits(),
            guard: self.guard.into_guard()?,
            ..defaults
        })
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
    /// Milliseconds a tally pipeline's batch waits to fill after its first message.
    #[arg(long, env = "BANDVOTE_BATCH_LINGER_MS", default_value_t = 10)]
    pub batch_linger_ms: u64,
    /// Milliseconds a log pipeline's batch waits to fill after its first message (the log store
    /// takes fuller batches for less; nothing live waits for it).
    #[arg(long, env = "BANDVOTE_LOG_BATCH_LINGER_MS", default_value_t = 250)]
    pub log_batch_linger_ms: u64,
    /// Milliseconds the broker may hold a fetch to gather votes before it answers with what it
    /// has: fewer, fuller fetches, for a live count up to this much later.
    #[arg(long, env = "BANDVOTE_KAFKA_FETCH_WAIT_MS", default_value_t = 50)]
    pub kafka_fetch_wait_ms: u64,
    /// Milliseconds between two commits of a pipeline's offsets to its group (a consumer killed
    /// reads again, at most, this long's votes, which the stores drop as already written).
    #[arg(long, env = "BANDVOTE_KAFKA_COMMIT_INTERVAL_MS", default_value_t = 1000)]
    pub kafka_commit_interval_ms: u64,
    /// Pipelines to run in this process (scale or measure them apart).
    #[arg(long, env = "BANDVOTE_PIPELINES", value_delimiter = ',', default_value = "tally,log")]
    pub pipelines: Vec<PipelineName>,
    /// Client limits.
    #[command(flatten)]
    pub limits: LimitArgs,
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
            redis_url: self.stores.redis(),
            mongo_url: self.stores.mongo_url,
            mongo_db: self.stores.mongo_db,
            tally_group: self.tally_group,
            log_group: self.log_group,
            session_timeout: Duration::from_millis(self.session_timeout_ms),
            batch_max: self.batch_max.max(1),
            batch_linger: Duration::from_millis(self.batch_linger_ms),
            log_batch_linger: Duration::from_millis(self.log_batch_linger_ms),
            fetch_wait: Duration::from_millis(self.kafka_fetch_wait_ms),
            commit_interval: Duration::from_millis(self.kafka_commit_interval_ms),
            idempotency_ttl: Duration::from_secs(self.stores.idempotency_ttl_hours.max(1) * 3600),
            pipelines: Pipelines {
                tally: self.pipelines.contains(&PipelineName::Tally),
                log: self.pipelines.contains(&PipelineName::Log),
            },
            limits: self.limits.into_limits(),
            ..ConsumerConfig::default()
        }
    }
}

/// Whether a secret flag was given a value (an empty `BANDVOTE_ADMIN_TOKEN=` is no token: it would
/// let anyone in).
fn is_set(secret: &SecretString) -> bool {
    !secret.expose_secret().is_empty()
}

/// The operator's bearer token, given on the command line, in the environment or in a file.
#[derive(Debug, Args)]
pub struct AdminTokenArgs {
    /// Bearer token of the operator's routes (at least 16 characters; from a secret). A flag's
    /// value shows in `ps`: prefer BANDVOTE_ADMIN_TOKEN or --admin-token-file.
    #[arg(long, env = "BANDVOTE_ADMIN_TOKEN", hide_env_values = true, global = true)]
    pub admin_token: Option<SecretString>,
    /// A file holding the admin token (its trailing newline is ignored), such as a mounted secret.
    #[arg(long, env = "BANDVOTE_ADMIN_TOKEN_FILE", value_name = "PATH", global = true, conflicts_with = "admin_token")]
    pub admin_token_file: Option<std::path::PathBuf>,
}

impl AdminTokenArgs {
    /// The token, read from its file when one is named; `None` when none is given (or it is empty).
    pub fn token(&self) -> anyhow::Result<Option<SecretString>> {
        let Some(path) = &self.admin_token_file else { return Ok(self.admin_token.clone().filter(is_set)) };
        read_secret_file(path, "admin token").map(Some)
    }
}

/// Reads a secret from the file at `path` (its trailing newline is ignored); `what` names it in errors.
fn read_secret_file(path: &std::path::Path, what: &str) -> anyhow::Result<SecretString> {
    let text = std::fs::read_to_string(path)
        .map_err(|error| anyhow::anyhow!("failed to read the {what} file {}: {error}", path.display()))?;
    let secret = text.strip_suffix('\n').unwrap_or(&text);
    let secret = secret.strip_suffix('\r').unwrap_or(secret);
    anyhow::ensure!(!secret.is_empty(), "the {what} file {} is empty", path.display());
    Ok(SecretString::from(secret.to_owned()))
}

/// The secret the gateways send and the producers require, so that nothing but a gateway can hand
/// a producer a vote (beside the NetworkPolicy).
#[derive(Debug, Args)]
pub struct IngestSecretArgs {
    /// The gateways' and producers' shared secret (at least 16 characters). A flag's value shows in
    /// `ps`: prefer BANDVOTE_INGEST_SECRET or --ingest-secret-file. Without it a producer takes
    /// votes from anyone who reaches it.
    #[arg(long, env = "BANDVOTE_INGEST_SECRET", hide_env_values = true)]
    pub ingest_secret: Option<SecretString>,
    /// A file holding the shared secret (its trailing newline is ignored), such as a mounted secret.
    #[arg(long, env = "BANDVOTE_INGEST_SECRET_FILE", value_name = "PATH", conflicts_with = "ingest_secret")]
    pub ingest_secret_file: Option<std::path::PathBuf>,
}

impl IngestSecretArgs {
    /// The secret, if one is given.
    pub fn secret(&self) -> anyhow::Result<Option<IngestSecret>> {
        let secret = match &self.ingest_secret_file {
            Some(path) => Some(read_secret_file(path, "ingest secret")?),
            None => self.ingest_secret.clone().filter(is_set),
        };
        secret.map(|secret| IngestSecret::new(&secret)).transpose()
    }
}

/// The API's port when neither --listen nor PORT is given.
const API_PORT: u16 = 8000;

/// Flags of `api`.
#[derive(Debug, Args)]
pub struct ApiArgs {
    /// Listener for /, /api/..., /healthz, /readyz and /metrics; without it, 0.0.0.0:$PORT (see
    /// --port; Cloud Run sets PORT) [default: 0.0.0.0:8000].
    #[arg(long, env = "BANDVOTE_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Port to listen on, on every interface, when --listen is not given (Cloud Run sets PORT).
    #[arg(long, env = "PORT", default_value_t = API_PORT)]
    pub port: u16,
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
    /// The audience page's public address, which the projector (/screen) shows as a QR code
    /// [default: the address the projector's browser used].
    #[arg(long, env = "BANDVOTE_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Secret of the signed voter tokens: enables POST /api/voter-token (the gateways check the
    /// tokens with the same secret).
    #[arg(long, env = "BANDVOTE_VOTER_SECRET", hide_env_values = true)]
    pub voter_secret: Option<SecretString>,
    /// The gateways' voter header, which the web app sends its token in.
    #[arg(long, env = "BANDVOTE_VOTER_HEADER", default_value = "x-voter-id")]
    pub voter_header: String,
    /// Voter tokens POST /api/voter-token issues per minute to one client address.
    #[arg(long, env = "BANDVOTE_VOTER_TOKENS_PER_MINUTE", default_value_t = 10)]
    pub voter_tokens_per_minute: u32,
    /// Clients of /api/stream at once; the next get 503 with Retry-After.
    #[arg(long, env = "BANDVOTE_MAX_STREAM_CLIENTS", default_value_t = bandvote_api::stream::DEFAULT_MAX_CLIENTS)]
    pub max_stream_clients: usize,
    /// Of those, at most this many from one client address (IPv6: one /64; 0: no such cap). A
    /// venue's Wi-Fi puts its phones behind one address: raise it there.
    #[arg(long, env = "BANDVOTE_MAX_STREAM_CLIENTS_PER_ADDRESS",
          default_value_t = bandvote_api::stream::DEFAULT_MAX_CLIENTS_PER_ADDRESS)]
    pub max_stream_clients_per_address: usize,
    /// The operator's routes (POST /api/admin/recount, /api/admin/rounds...); without a token they
    /// do not exist.
    #[command(flatten)]
    pub admin: AdminTokenArgs,
    /// Kafka (for the admin recount's consistent cut).
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// The log pipeline's consumer group (for the admin recount).
    #[arg(long, env = "BANDVOTE_LOG_GROUP", default_value = "bandvote-log")]
    pub log_group: String,
    /// Client limits.
    #[command(flatten)]
    pub limits: LimitArgs,
}

impl ApiArgs {
    /// The API's configuration; fails when the admin token file cannot be read.
    pub fn into_config(self) -> anyhow::Result<ApiConfig> {
        let admin = self.admin.token()?.map(|token| AdminConfig {
            token,
            recount: Some(RecountConfig {
                kafka: self.kafka.into_config(),
                redis_url: self.stores.redis(),
                mongo_url: self.stores.mongo_url.clone(),
                mongo_db: self.stores.mongo_db.clone(),
                log_group: self.log_group,
                idempotency_ttl: Duration::from_secs(self.stores.idempotency_ttl_hours.max(1) * 3600),
                force: false,
            }),
        });
        Ok(ApiConfig {
            listen: self.listen.unwrap_or(SocketAddr::from(([0, 0, 0, 0], self.port))),
            redis_url: self.stores.redis(),
            mongo_url: self.stores.mongo_url,
            mongo_db: self.stores.mongo_db,
            cors_origins: self.cors_origins,
            vote_url: self.vote_url,
            public_url: self.public_url,
            voter_secret: self.voter_secret,
            voter_header: self.voter_header,
            voter_tokens_per_minute: self.voter_tokens_per_minute.max(1),
            max_stream_clients: self.max_stream_clients.max(1),
            max_stream_clients_per_address: self.max_stream_clients_per_address,
            admin,
            limits: self.limits.into_limits(),
            ..ApiConfig::default()
        })
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
            redis_url: self.stores.redis(),
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
    /// Requests in flight at most, hence connections; votes due beyond it wait (and their wait
    /// counts as latency). The default keeps one generator below the services' default cap on one
    /// client's connections (256), which would refuse the connections beyond it.
    #[arg(long, env = "BANDVOTE_LOAD_MAX_IN_FLIGHT", default_value_t = http::DEFAULT_MAX_CONNECTIONS_PER_CLIENT / 2)]
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
    /// Run a show around the votes: this many phones follow /api/stream from loopback addresses
    /// 127.0.0.2 on (200 each), a hidden round opens, the votes are sent, the round is closed and
    /// revealed, and the time each phone took to hear the close and the reveal is reported. Needs
    /// the admin token (BANDVOTE_ADMIN_TOKEN).
    #[arg(long, env = "BANDVOTE_LOAD_PHONES")]
    pub phones: Option<usize>,
    /// The operator's token, for --phones.
    #[arg(long, env = "BANDVOTE_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<SecretString>,
    /// The server's process id, for --phones: its memory per phone and CPU per phase (/proc).
    #[arg(long)]
    pub server_pid: Option<u32>,
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

    use clap::Parser;

    use bandvote_ingest::fairness::FairnessConfig;
    use bandvote_runtime::http;

    use super::{Cli, Command, parse_duration};

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

    /// A timeout past the bound a round's finality counts on is refused: a certified result could
    /// otherwise miss a vote answered 202.
    #[test]
    fn timeouts_past_the_settle_bound_are_refused() {
        for args in [
            &["bandvote", "wasm-gateway", "--guest-timeout-ms", "20000"][..],
            &["bandvote", "grpc-gateway", "--request-timeout-ms", "10001"],
            &["bandvote", "grpc-producer", "--produce-timeout-ms", "30000"],
            &["bandvote", "http-producer", "--produce-timeout-ms", "5001"],
        ] {
            assert!(Cli::try_parse_from(args).is_err(), "{args:?}");
        }
        assert!(Cli::try_parse_from(["bandvote", "wasm-gateway", "--guest-timeout-ms", "10000"]).is_ok());
    }

    /// `bandvote ARGS` as parsed with no environment variable read: the compiled-in defaults.
    fn parse_without_env(args: &[&str]) -> Command {
        let mut command = Cli::command();
        let roles: Vec<String> = command.get_subcommands().map(|s| s.get_name().to_owned()).collect();
        for role in roles {
            command = command.mut_subcommand(role, |sub| sub.mut_args(|arg| arg.env(None)));
        }
        let command = command.mut_args(|arg| arg.env(None));
        let matches = command.try_get_matches_from(args).expect("parses");
        <Cli as clap::FromArgMatches>::from_arg_matches(&matches).expect("parses").command
    }

    /// Each service's flags default to what its config's `Default` says: the two cannot drift.
    #[test]
    fn flag_defaults_are_the_configs_defaults() {
        use bandvote_ingest::producer::{FrontDoor, ProducerConfig};
        let same = |role: &str, parsed: String, default: String| assert_eq!(parsed, default, "{role}");
        match parse_without_env(&["bandvote", "grpc-gateway"]) {
            Command::GrpcGateway(args) => same(
                "grpc-gateway",
                format!("{:?}", args.into_config().expect("no secret file")),
                format!("{:?}", bandvote_ingest::grpc_gateway::GatewayConfig::default()),
            ),
            other => panic!("{other:?}"),
        }
        match parse_without_env(&["bandvote", "grpc-producer"]) {
            Command::GrpcProducer(args) => same(
                "grpc-producer",
                format!("{:?}", args.into_config().expect("no secret file")),
                format!("{:?}", ProducerConfig::default_for(FrontDoor::Grpc)),
            ),
            other => panic!("{other:?}"),
        }
        match parse_without_env(&["bandvote", "http-producer"]) {
            Command::HttpProducer(args) => same(
                "http-producer",
                format!("{:?}", args.into_config().expect("no secret file")),
                format!("{:?}", ProducerConfig::default_for(FrontDoor::Http)),
            ),
            other => panic!("{other:?}"),
        }
        match parse_without_env(&["bandvote", "wasm-gateway"]) {
            Command::WasmGateway(args) => same(
                "wasm-gateway",
                format!("{:?}", args.into_config().expect("no secret file")),
                format!("{:?}", bandvote_wasm::WasmGatewayConfig::default()),
            ),
            other => panic!("{other:?}"),
        }
        match parse_without_env(&["bandvote", "consumer"]) {
            Command::Consumer(args) => same(
                "consumer",
                format!("{:?}", args.into_config()),
                format!("{:?}", bandvote_consumer::ConsumerConfig::default()),
            ),
            other => panic!("{other:?}"),
        }
        match parse_without_env(&["bandvote", "api"]) {
            Command::Api(args) => {
                let config = args.into_config().expect("no token file");
                same("api", format!("{config:?}"), format!("{:?}", bandvote_api::ApiConfig::default()));
                // Debug hides the URLs; they come from one constant on both sides.
                use secrecy::ExposeSecret;
                assert_eq!(config.redis_url.expose_secret(), bandvote_store::DEFAULT_REDIS_URL);
                assert_eq!(config.mongo_url.expose_secret(), bandvote_store::DEFAULT_MONGO_URL);
            }
            other => panic!("{other:?}"),
        }
        // `up` has no config of its own to compare with: its pieces' defaults.
        match parse_without_env(&["bandvote", "up", "--kafka-brokers", "k:9092"]) {
            Command::Up(args) => {
                let config = args.into_config().expect("no token file");
                let kafka = bandvote_queue::KafkaConfig { brokers: "k:9092".into(), ..Default::default() };
                same("up", format!("{:?}", config.kafka), format!("{:?}", Some(kafka)));
                let consumer = bandvote_consumer::ConsumerConfig::default();
                same("up", format!("{:?}", config.idempotency_ttl), format!("{:?}", consumer.idempotency_ttl));
                same("up", config.mongo_db, consumer.mongo_db);
                same("up", format!("{:?}", config.fairness), format!("{:?}", FairnessConfig::default()));
                same("up", format!("{:?}", config.limits), format!("{:?}", http::Limits::default()));
                same(
                    "up",
                    format!("{:?}", config.names),
                    format!("{:?}", bandvote_ingest::names::NamesConfig::default()),
                );
                same(
                    "up",
                    config.max_stream_clients.to_string(),
                    bandvote_api::ApiConfig::default().max_stream_clients.to_string(),
                );
            }
            other => panic!("{other:?}"),
        }
    }

    const SECRETS: [&str; 4] = ["rpw-0a1b", "mpw-2c3d", "adm-4e5f-long-enough", "vsec-6a7b"];

    fn with_secrets(role: &str) -> Vec<String> {
        let mut args = vec!["bandvote".to_owned(), role.to_owned()];
        args.extend(
            [
                "--redis-url",
                &format!("redis://:{}@127.0.0.1:6379/", SECRETS[0]),
                "--mongo-url",
                &format!("mongodb://voter:{}@127.0.0.1:27017/", SECRETS[1]),
                "--voter-secret",
                SECRETS[3],
            ]
            .map(str::to_owned),
        );
        if role == "api" {
            args.extend(["--admin-token".to_owned(), SECRETS[2].to_owned()]);
        }
        args
    }

    fn assert_hidden(role: &str, debug: &str) {
        for secret in SECRETS {
            assert!(!debug.contains(secret), "{role}: {secret} in {debug}");
        }
    }

    #[test]
    fn debug_of_the_command_line_and_the_configs_never_prints_a_secret() {
        let cli = Cli::parse_from(with_secrets("api"));
        assert_hidden("api", &format!("{cli:?}"));
        let Command::Api(args) = cli.command else { panic!("api") };
        let config = args.into_config().expect("no token file");
        assert!(config.admin.is_some(), "the admin token was read");
        assert_hidden("api", &format!("{config:?}"));

        let cli = Cli::parse_from(with_secrets("up"));
        assert_hidden("up", &format!("{cli:?}"));
        let Command::Up(args) = cli.command else { panic!("up") };
        assert_hidden("up", &format!("{:?}", args.into_config().expect("no token file")));

        let cli = Cli::parse_from(&with_secrets("consumer")[..6]);
        assert_hidden("consumer", &format!("{cli:?}"));
        let Command::Consumer(args) = cli.command else { panic!("consumer") };
        assert_hidden("consumer", &format!("{:?}", args.into_config()));
    }

    #[test]
    fn the_admin_token_file_is_read_without_its_trailing_newline_on_every_command_that_takes_a_token() {
        use secrecy::ExposeSecret;
        let path = std::env::temp_dir().join(format!("bandvote-admin-token-{}", std::process::id()));
        std::fs::write(&path, "token-from-a-file-0123\n").expect("written");
        let file = path.to_str().expect("utf-8 path");
        let Command::Api(api) = parse_without_env(&["bandvote", "api", "--admin-token-file", file]) else { panic!() };
        let admin = api.into_config().expect("read").admin.expect("a token");
        assert_eq!(admin.token.expose_secret(), "token-from-a-file-0123");
        let Command::Up(up) = parse_without_env(&["bandvote", "up", "--admin-token-file", file]) else { panic!() };
        let token = up.into_config().expect("read").admin_token.expect("a token");
        assert_eq!(token.expose_secret(), "token-from-a-file-0123");
        let Command::Round(round) = parse_without_env(&["bandvote", "round", "open", "x", "--admin-token-file", file])
        else {
            panic!()
        };
        assert_eq!(round.admin.token().expect("read").expect("a token").expose_secret(), "token-from-a-file-0123");
        std::fs::write(&path, "\n").expect("written");
        let Command::Api(api) = parse_without_env(&["bandvote", "api", "--admin-token-file", file]) else { panic!() };
        assert!(api.into_config().expect_err("empty").to_string().contains("empty"));
        std::fs::remove_file(&path).expect("removed");
        let Command::Api(api) = parse_without_env(&["bandvote", "api", "--admin-token-file", file]) else { panic!() };
        assert!(api.into_config().expect_err("missing").to_string().contains("admin token file"));
        let both = ["bandvote", "api", "--admin-token", "token-on-the-line-0", "--admin-token-file", file];
        assert!(Cli::try_parse_from(both).is_err(), "one way or the other");
    }

    #[test]
    fn help_never_prints_the_value_of_a_secret_variable() {
        let secret =
            ["redis_url", "mongo_url", "fairness_redis_url", "voter_secret", "admin_token", "rounds_redis_url"];
        let command = Cli::command();
        let mut checked = 0;
        for sub in command.get_subcommands() {
            for arg in sub.get_arguments().filter(|a| secret.contains(&a.get_id().as_str())) {
                assert!(arg.is_hide_env_values_set(), "{} --{}", sub.get_name(), arg.get_id());
                checked += 1;
            }
        }
        assert!(checked >= 15, "only {checked} secret settings found");
    }
}
