//! `bandvote up`: every service in one process (the API and the web app included), behind one
//! listener, with the same public paths as every other deployment. The gRPC and wasm hops stay
//! real (a loopback gRPC channel, a real WebAssembly guest), so the two ingest paths can still be
//! compared.
//!
//! Storage, piece by piece: the queue is the embedded one (SQLite in `--data-dir`) unless
//! `--kafka-brokers` is given; the counters are embedded unless `--redis-url`; the log is embedded
//! unless `--mongo-url`. With Kafka the usual consumer runs, which needs Redis and MongoDB.

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use anyhow::Context;
use bandvote_api::{ApiConfig, ApiState, store::EmbeddedReads};
use bandvote_consumer::{
    ConsumerConfig,
    embedded::{CounterSink, EmbeddedConsumer, LogSink},
    sinks::{mongodb::MongoLog, redis::RedisTally},
};
use bandvote_embedded::Storage;
use bandvote_ingest::{
    grpc_gateway::{self, GatewayConfig, GatewayState},
    grpc_producer::{self, ProducerConfig},
    http_producer::{self, HttpProducerConfig},
};
use bandvote_queue::{KafkaConfig, VoteQueue};
use bandvote_runtime::{health, http, shutdown::CancellationToken, shutdown::spawn_named};
use bandvote_wasm::{Host, WasmGatewayConfig};

/// What `up` runs.
#[derive(Debug, Clone)]
pub struct UpConfig {
    /// The one public listener.
    pub listen: SocketAddr,
    /// The embedded storage's directory.
    pub data_dir: PathBuf,
    /// Kafka as the queue, instead of the embedded one.
    pub kafka: Option<KafkaConfig>,
    /// Redis for the counters, instead of the embedded ones.
    pub redis_url: Option<String>,
    /// MongoDB for the log, instead of the embedded one.
    pub mongo_url: Option<String>,
    /// MongoDB database.
    pub mongo_db: String,
    /// How long a client's idempotency key is remembered.
    pub idempotency_ttl: Duration,
    /// Fair voting, for both gateways.
    pub fairness: bandvote_ingest::fairness::FairnessConfig,
}

/// Starts everything, prints where, and serves until `shutdown`.
pub async fn run(config: UpConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    let internal = SocketAddr::from(([127, 0, 0, 1], 0));
    if config.kafka.is_some() && (config.redis_url.is_none() || config.mongo_url.is_none()) {
        anyhow::bail!(
            "--kafka-brokers needs --redis-url and --mongo-url too: the Kafka consumer counts into Redis and logs into \
             MongoDB (leave all three out to run on the embedded storage)"
        );
    }
    // Bind the public port first: a second `up` fails here, before starting anything.
    let listener = http::bind(config.listen)
        .await
        .map_err(|error| anyhow::anyhow!("{error:#} (is another `bandvote up` running on it?)"))?;
    let embedded = (config.kafka.is_none() || config.redis_url.is_none() || config.mongo_url.is_none())
        .then(|| Storage::open(&config.data_dir, config.idempotency_ttl))
        .transpose()
        .map_err(|error| anyhow::anyhow!("{error}"))?;

    let grace = GatewayConfig::default().grace;
    let (grpc_producer, http_producer, mut tasks, mut checks) = match (&config.kafka, &embedded) {
        (Some(kafka), _) => {
            let grpc = grpc_producer::App::build(ProducerConfig { listen: internal, kafka: kafka.clone(), grace })
                .await
                .context("failed to start the grpc-producer")?;
            let http = http_producer::App::build(HttpProducerConfig { listen: internal, kafka: kafka.clone(), grace })
                .await
                .context("failed to start the http-producer")?;
            let consumer = bandvote_consumer::App::build(ConsumerConfig {
                listen: internal,
                kafka: kafka.clone(),
                redis_url: config.redis_url.clone().unwrap_or_default(),
                mongo_url: config.mongo_url.clone().unwrap_or_default(),
                mongo_db: config.mongo_db.clone(),
                idempotency_ttl: config.idempotency_ttl,
                ..ConsumerConfig::default()
            })
            .await
            .context("failed to start the consumer")?;
            let check = ("consumer", upstream_check(format!("http://{}", consumer.local_addr()?)));
            (grpc, http, vec![spawn_named("consumer", shutdown.clone(), consumer.run(shutdown.clone()))], vec![check])
        }
        (None, Some(storage)) => {
            let queue: Arc<dyn VoteQueue> = Arc::clone(storage) as Arc<dyn VoteQueue>;
            let queue_checks = || bandvote_ingest::queue_checks(&queue);
            let grpc = grpc_producer::App::with_queue(internal, Arc::clone(&queue), None, queue_checks(), grace)
                .await
                .context("failed to start the grpc-producer")?;
            let http = http_producer::App::with_queue(internal, Arc::clone(&queue), None, queue_checks(), grace)
                .await
                .context("failed to start the http-producer")?;
            let counters = match &config.redis_url {
                Some(url) => CounterSink::Redis(
                    RedisTally::connect(url, config.idempotency_ttl.as_secs().max(1))
                        .await
                        .with_context(|| format!("failed to connect to redis at {}", bandvote_consumer::redact(url)))?,
                ),
                None => CounterSink::Embedded,
            };
            let log =
                match &config.mongo_url {
                    Some(url) => LogSink::Mongo(MongoLog::connect(url, &config.mongo_db).await.with_context(|| {
                        format!("failed to connect to mongodb at {}", bandvote_consumer::redact(url))
                    })?),
                    None => LogSink::Embedded,
                };
            let consumer = EmbeddedConsumer::new(Arc::clone(storage), counters, log);
            (grpc, http, vec![spawn_named("consumer", shutdown.clone(), consumer.run(shutdown.clone()))], vec![])
        }
        (None, None) => unreachable!("without Kafka the embedded storage is open"),
    };
    let grpc_upstream = format!("http://{}", grpc_producer.local_addr()?);
    let http_upstream = format!("http://{}", http_producer.local_addr()?);

    let fairness = bandvote_ingest::fairness::Fairness::new(&config.fairness).await?;
    let gateway = GatewayState::connect(&GatewayConfig { upstream: grpc_upstream.clone(), ..Default::default() })?
        .with_fairness(fairness.clone());
    let wasm_config = WasmGatewayConfig { upstream: http_upstream.clone(), ..Default::default() };
    let host = Arc::new(Host::new(&wasm_config, bandvote_wasm::EMBEDDED_GUEST)?.with_fairness(fairness));
    let api_config = ApiConfig {
        redis_url: config.redis_url.clone().unwrap_or_else(|| ApiConfig::default().redis_url),
        mongo_url: config.mongo_url.clone().unwrap_or_else(|| ApiConfig::default().mongo_url),
        mongo_db: config.mongo_db.clone(),
        // The vote paths are on this same listener.
        vote_url: Some(String::new()),
        voter_secret: config.fairness.voter_secret.clone(),
        voter_header: config.fairness.voter_header.clone(),
        embedded: embedded.as_ref().map(|storage| EmbeddedReads {
            storage: Arc::clone(storage),
            counters: config.redis_url.is_none(),
            logs: config.mongo_url.is_none(),
        }),
        ..ApiConfig::default()
    };
    let api = ApiState::new(&api_config, shutdown.child_token()).await.context("failed to prepare the api")?;
    checks.insert(0, ("grpc-producer", upstream_check(grpc_upstream)));
    checks.insert(1, ("http-producer", upstream_check(http_upstream)));
    checks.extend(bandvote_api::store_checks(&api.store));
    let router = http::with_fallbacks(
        grpc_gateway::router(gateway)
            .merge(bandvote_wasm::router(Arc::clone(&host)))
            .merge(bandvote_api::router(api.clone()))
            .merge(health::router(checks)),
    );

    print_banner(&config, embedded.as_deref(), http::local_addr(&listener)?);
    tasks.push(spawn_named("grpc-producer", shutdown.clone(), grpc_producer.run(shutdown.clone())));
    tasks.push(spawn_named("http-producer", shutdown.clone(), http_producer.run(shutdown.clone())));
    let ticker = host.start_epoch_ticker(shutdown.clone());
    let reader = api.start_stream();
    let served = http::serve(listener, router, shutdown.clone(), grace).await;
    shutdown.cancel();
    ticker.abort();
    reader.abort();
    for task in futures::future::join_all(tasks).await {
        task.context("a service panicked")??;
    }
    served
}

/// What runs where, and the URLs to open.
fn print_banner(config: &UpConfig, storage: Option<&Storage>, public: SocketAddr) {
    let dir = storage.map(|s| s.dir().display().to_string()).unwrap_or_default();
    let queue = match &config.kafka {
        Some(kafka) => format!("Kafka {} (topic {})", kafka.brokers, kafka.topic),
        None => format!("embedded ({dir})"),
    };
    let counters = config.redis_url.as_deref().map_or_else(|| "embedded".to_owned(), bandvote_consumer::redact);
    let log = match &config.mongo_url {
        Some(url) => format!("MongoDB {} (database {})", bandvote_consumer::redact(url), config.mongo_db),
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

/// Readiness of an in-process service: its own `/readyz`.
fn upstream_check(base: String) -> health::Check {
    let client = reqwest::Client::builder().timeout(std::time::Duration::from_secs(2)).build().unwrap_or_default();
    health::check(move || {
        let (client, url) = (client.clone(), format!("{base}/readyz"));
        async move {
            match client.get(&url).send().await {
                Ok(answer) if answer.status().is_success() => Ok(()),
                Ok(answer) => Err(format!("{url} answered {}", answer.status())),
                Err(error) => Err(format!("{url}: {error}")),
            }
        }
    })
}
