//! `bandvote up`: every service in one process (the API and the web app included), behind one
//! listener, with the same public paths as every other deployment. Each service is the one its own
//! process runs ([`bandvote_runtime::service::Service`]: routes, readiness checks, tasks), merged
//! onto one listener. The gRPC and wasm hops stay real (HTTP/2 and gRPC to the producer's two front
//! doors, a real WebAssembly guest), so the two ingest paths can still be compared; but they run
//! over in-memory pipes ([`bandvote_runtime::inproc`]), not a socket: the public listener is the
//! only way in, and every vote passes a gateway's round check, voter policy and limits. The
//! producer checks the round again, as in a cluster.
//!
//! Storage, piece by piece: the queue is the embedded one (SQLite in `--data-dir`) unless
//! `--kafka-brokers` is given; the counters are embedded unless `--redis-url`; the log is embedded
//! unless `--mongo-url`. With Kafka the usual consumer runs, which needs Redis and MongoDB.

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use anyhow::Context;
use bandvote_api::{ApiConfig, routes::admin::AdminConfig, store::EmbeddedReads};
use bandvote_consumer::{
    Consumer, ConsumerConfig,
    finality::{self, EmbeddedProgress},
    sinks::{
        Counters, VoteLog,
        embedded::{EmbeddedCounters, EmbeddedLog},
        mongodb::MongoLog,
        redis::RedisTally,
    },
};
use bandvote_core::round::RoundStore;
use bandvote_embedded::{EmbeddedRounds, Storage};
use bandvote_ingest::{
    grpc_gateway::{self, GatewayConfig},
    producer::{self, FrontDoor},
    rounds::RoundGate,
};
use bandvote_queue::{KafkaConfig, KafkaProducer, VoteQueue};
use bandvote_runtime::{http, service::Service, shutdown::CancellationToken, shutdown::spawn_named};
use bandvote_wasm::WasmGatewayConfig;
use secrecy::{ExposeSecret, SecretString};

/// What `up` runs.
#[derive(Debug, Clone)]
pub struct UpConfig {
    /// The one public listener.
    pub listen: SocketAddr,
    /// The embedded storage's directory.
    pub data_dir: PathBuf,
    /// Kafka as the queue, instead of the embedded one.
    pub kafka: Option<KafkaConfig>,
    /// The Kafka consumer's tally group.
    pub tally_group: String,
    /// The Kafka consumer's log group.
    pub log_group: String,
    /// Redis for the counters, instead of the embedded ones (the URL may hold a password).
    pub redis_url: Option<SecretString>,
    /// MongoDB for the log, instead of the embedded one (the URL may hold a password).
    pub mongo_url: Option<SecretString>,
    /// MongoDB database.
    pub mongo_db: String,
    /// How long a client's idempotency key is remembered.
    pub idempotency_ttl: Duration,
    /// Fair voting, for both gateways.
    pub fairness: bandvote_ingest::fairness::FairnessConfig,
    /// Limits on the public listener's clients.
    pub limits: http::Limits,
    /// The cap on distinct names without a contest list.
    pub names: bandvote_ingest::names::NamesConfig,
    /// Clients of `/api/stream` at once.
    pub max_stream_clients: usize,
    /// Of those, at most this many from one client address.
    pub max_stream_clients_per_address: usize,
    /// Bearer token of the operator's routes (rounds); they do not exist without it.
    pub admin_token: Option<SecretString>,
    /// The audience page's address for the projector's QR code; `None`: the request's origin.
    pub public_url: Option<String>,
}

/// Starts everything, prints where, and serves until `shutdown`.
pub async fn run(config: UpConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    if config.kafka.is_some() && (config.redis_url.is_none() || config.mongo_url.is_none()) {
        anyhow::bail!(
            "--kafka-brokers needs --redis-url and --mongo-url too: the Kafka consumer counts into Redis and logs into \
             MongoDB (leave all three out to run on the embedded storage)"
        );
    }
    if let Some(token) = &config.admin_token {
        bandvote_api::routes::admin::check_token(token)?;
    }
    // Bind the public port first: a second `up` fails here, before starting anything.
    let listener = http::bind(config.listen)
        .await
        .map_err(|error| anyhow::anyhow!("{error:#} (is another `bandvote up` running on it?)"))?;
    let embedded = (config.kafka.is_none() || config.redis_url.is_none() || config.mongo_url.is_none())
        .then(|| Storage::open(&config.data_dir, config.idempotency_ttl))
        .transpose()
        .map_err(|error| anyhow::anyhow!("{error}"))?;

    // The rounds live beside the counters (the seals the tally reads are there too): in Redis when
    // the counters are, where the dashboards read them as well; else in the embedded database. The
    // gateways, the producer, the API and the finality task all read them there.
    let rounds: Arc<dyn RoundStore> = match (&embedded, &config.redis_url) {
        (_, Some(url)) => Arc::new(bandvote_store::rounds::RedisRounds::new(url.expose_secret())?),
        (Some(storage), None) => Arc::new(EmbeddedRounds(Arc::clone(storage))),
        (None, None) => unreachable!("without Redis the embedded storage is open"),
    };
    if let (Some(storage), Some(_)) = (&embedded, &config.redis_url)
        && let Err(error) = carry_rounds_over(storage, rounds.as_ref()).await
    {
        // Redis down at the start is the readiness check's to report; the rounds stay where they are.
        tracing::warn!(
            error = format!("{error:#}"),
            "the rounds kept in the embedded database not carried over to redis"
        );
    }
    let gate = RoundGate::new(Arc::clone(&rounds));

    // The producer, both front doors, served in process: the gRPC and HTTP hops stay real.
    let grace = GatewayConfig::default().grace;
    let both = [FrontDoor::Grpc, FrontDoor::Http];
    let guard = producer::Guard { secret: None, rounds: Some(Arc::clone(&gate)) };
    let (producer, consumer) = match (&config.kafka, &embedded) {
        (Some(kafka), _) => {
            let kafka_producer = KafkaProducer::new(kafka.clone())?;
            let producer =
                producer::service(Arc::new(kafka_producer.clone()), Some(kafka_producer), &both, &guard).await;
            let consumer = bandvote_consumer::service(ConsumerConfig {
                kafka: kafka.clone(),
                redis_url: config.redis_url.clone().unwrap_or_default(),
                mongo_url: config.mongo_url.clone().unwrap_or_default(),
                mongo_db: config.mongo_db.clone(),
                tally_group: config.tally_group.clone(),
                log_group: config.log_group.clone(),
                idempotency_ttl: config.idempotency_ttl,
                ..ConsumerConfig::default()
            })
            .await
            .context("failed to start the consumer")?;
            (producer, consumer)
        }
        (None, Some(storage)) => {
            let queue: Arc<dyn VoteQueue> = Arc::clone(storage) as Arc<dyn VoteQueue>;
            let producer = producer::service(queue, None, &both, &guard).await;
            let counters: Arc<dyn Counters> = match &config.redis_url {
                Some(url) => {
                    Arc::new(RedisTally::connect(url.expose_secret(), config.idempotency_ttl.as_secs().max(1)).await?)
                }
                None => Arc::new(EmbeddedCounters(Arc::clone(storage))),
            };
            let log: Arc<dyn VoteLog> = match &config.mongo_url {
                Some(url) => {
                    Arc::new(MongoLog::connect(url.expose_secret(), &config.mongo_db).await.with_context(|| {
                        format!("failed to connect to mongodb at {}", bandvote_store::redact(url.expose_secret()))
                    })?)
                }
                None => Arc::new(EmbeddedLog(Arc::clone(storage))),
            };
            let prune = config.redis_url.is_none() && config.mongo_url.is_none();
            let mut consumer = Consumer::embedded(Arc::clone(storage), counters, log, prune).await?.into_service();
            // Closed rounds become final here, wherever the counters and the log are: the embedded
            // queue holds both pipelines' positions.
            let rounds = Arc::clone(&rounds);
            let redis = match &config.redis_url {
                Some(url) => Some(
                    bandvote_store::redis_client::RedisTarget::parse(url.expose_secret())?
                        .connect(bandvote_store::redis_client::Timeouts::default())
                        .await
                        .context("failed to connect to redis for the rounds' finality")?,
                ),
                None => None,
            };
            let logs = match &config.mongo_url {
                Some(url) => Some(
                    bandvote_store::log::collection(url.expose_secret(), &config.mongo_db)
                        .await
                        .context("failed to configure mongodb for the rounds' finality")?,
                ),
                None => None,
            };
            let progress = Arc::new(EmbeddedProgress { storage: Arc::clone(storage), redis, logs });
            consumer = consumer.task("finality", move |shutdown| finality::run(rounds, progress, shutdown));
            (producer, consumer)
        }
        (None, None) => unreachable!("without Kafka the embedded storage is open"),
    };
    let (in_process, producer_listener) = bandvote_runtime::inproc::pair();
    // Only names the producer: the gateways reach it through `in_process`.
    let upstream = "http://producer.in-process".to_owned();

    // The gateways share one fair-voting state, so that a voter's limit holds across both paths.
    // So does the cap on distinct names; on embedded counters it starts from the names counted, so
    // that a restart keeps it honest (with Redis the sets are seeded from the counters there).
    let names = bandvote_ingest::names::Names::connect(config.names, config.fairness.redis_url.as_ref()).await?;
    if let (Some(names), Some(storage), None) = (&names, &embedded, &config.redis_url) {
        let counted = storage.counters().await.context("failed to read the counted names")?.counts;
        names.seed(counted.bands.into_keys(), counted.albums.into_keys());
    }
    let fairness = bandvote_ingest::fairness::Fairness::with_names(&config.fairness, names).await?;
    let gateway = grpc_gateway::service(
        &GatewayConfig {
            upstream: upstream.clone(),
            fairness: config.fairness.clone(),
            in_process: Some(in_process.clone()),
            ..Default::default()
        },
        fairness.clone(),
        Some(Arc::clone(&gate)),
    )?;
    let reach = bandvote_wasm::outgoing::Reach { in_process: Some(in_process), secret: None };
    let wasm = bandvote_wasm::service(
        &WasmGatewayConfig { upstream, fairness: config.fairness.clone(), reach, ..Default::default() },
        fairness,
        Some(Arc::clone(&gate)),
    )?;
    let api_config = ApiConfig {
        redis_url: config.redis_url.clone().unwrap_or_else(|| ApiConfig::default().redis_url),
        mongo_url: config.mongo_url.clone().unwrap_or_else(|| ApiConfig::default().mongo_url),
        mongo_db: config.mongo_db.clone(),
        // The vote paths are on this same listener.
        vote_url: Some(String::new()),
        public_url: config.public_url.clone(),
        max_stream_clients: config.max_stream_clients,
        max_stream_clients_per_address: config.max_stream_clients_per_address,
        voter_secret: config.fairness.voter_secret.clone(),
        voter_header: config.fairness.voter_header.clone(),
        voter_tokens_per_minute: config.fairness.voter_tokens_per_minute,
        admin: config.admin_token.clone().map(|token| AdminConfig { token, recount: recount_config(&config) }),
        embedded: embedded.as_ref().map(|storage| EmbeddedReads {
            storage: Arc::clone(storage),
            counters: config.redis_url.is_none(),
            logs: config.mongo_url.is_none(),
        }),
        ..ApiConfig::default()
    };
    let api = bandvote_api::service(&api_config, shutdown.clone()).await.context("failed to prepare the api")?;
    let public = gateway.merge(wasm).merge(api).merge(consumer).merge(Service::default().checks(producer.readiness()));
    let public = bandvote_ingest::rounds::with_gate(public, &gate);

    print_banner(&config, embedded.as_deref(), http::local_addr(&listener)?);
    let producer =
        spawn_named("producer", shutdown.clone(), producer.serve(producer_listener, shutdown.clone(), grace));
    let served = public.limits(config.limits).serve(listener, shutdown.clone(), grace).await;
    shutdown.cancel();
    producer.await.context("the producer panicked")??;
    served
}

/// Rounds an earlier `up` kept in its embedded database beside counters in Redis (before the rounds
/// moved to Redis with them) are written to Redis once, if it has none yet.
async fn carry_rounds_over(storage: &Arc<Storage>, redis: &dyn RoundStore) -> anyhow::Result<()> {
    let kept = EmbeddedRounds(Arc::clone(storage)).load().await?.rounds;
    let mut current = redis.load().await?;
    if kept.is_empty() || !current.rounds.is_empty() {
        return Ok(());
    }
    for round in &kept {
        anyhow::ensure!(redis.save(current.version, round).await?, "the rounds in redis changed while carried over");
        current.version += 1;
    }
    tracing::info!(rounds = kept.len(), "the rounds kept in the embedded database carried over to redis");
    Ok(())
}

/// What runs where, and the URLs to open.
fn print_banner(config: &UpConfig, storage: Option<&Storage>, public: SocketAddr) {
    let dir = storage.map(|s| s.dir().display().to_string()).unwrap_or_default();
    let queue = match &config.kafka {
        Some(kafka) => format!("Kafka {} (topic {})", kafka.brokers, kafka.topic),
        None => format!("embedded ({dir})"),
    };
    let counters = config
        .redis_url
        .as_ref()
        .map_or_else(|| "embedded".to_owned(), |url| bandvote_store::redact(url.expose_secret()));
    let log = match &config.mongo_url {
        Some(url) => format!("MongoDB {} (database {})", bandvote_store::redact(url.expose_secret()), config.mongo_db),
        None => "embedded".to_owned(),
    };
    eprintln!("bandvote up: gRPC and wasm gateways, both producers, the consumer and the API in one process");
    eprintln!("  queue: {queue}   counters: {counters}   log: {log}");
    eprintln!();
    eprintln!("  web app: http://{public}/");
    eprintln!("  vote:    curl -X POST http://{public}/grpc/votes -H 'content-type: application/json' \\");
    eprintln!(
        "             -d '{{\"name\":\"Bohemia Suburbana\",\"album\":\"Mis palabras\",\"year\":\"1997\",\"rank\":\"9.5\"}}'"
    );
    eprintln!("           (or /wasm/votes for the WebAssembly path)");
    eprintln!(
        "  results: http://{public}/api/results   log: http://{public}/api/logs   live: http://{public}/api/stream"
    );
    eprintln!("  health:  http://{public}/readyz    metrics: http://{public}/metrics");
    eprintln!("  Ctrl-C drains and stops.");
}

/// How the admin API recounts: only on the servers (Kafka, Redis and MongoDB), the embedded
/// counters and log being one database.
fn recount_config(config: &UpConfig) -> Option<bandvote_store::recount::RecountConfig> {
    let (Some(kafka), Some(redis_url), Some(mongo_url)) = (&config.kafka, &config.redis_url, &config.mongo_url) else {
        return None;
    };
    Some(bandvote_store::recount::RecountConfig {
        kafka: kafka.clone(),
        redis_url: redis_url.clone(),
        mongo_url: mongo_url.clone(),
        mongo_db: config.mongo_db.clone(),
        log_group: config.log_group.clone(),
        idempotency_ttl: config.idempotency_ttl,
        force: false,
    })
}
