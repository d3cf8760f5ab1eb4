//! `bandvote consumer`: reads the queue and writes every vote exactly once to the live counters and
//! the vote log, through two independent pipelines (DESIGN.md, "Exactly once"). The pipelines read
//! through [`bandvote_queue::QueueSource`] (Kafka, or `bandvote up`'s embedded queue) and write
//! through [`sinks::Counters`] and [`sinks::VoteLog`], so one tally and one log pipeline serve
//! every deployment.
//! - [`pipelines`]: the tally and log loops; [`Consumer`]: the pipelines a process runs;
//! - [`sinks::redis`]: the atomic tally script; [`sinks::mongodb`]: the vote log;
//!   [`sinks::embedded`]: both in the embedded database;
//! - [`dead_letter`]: messages that are not votes.
//!
//! The stores' contract (keys, the log document) and `recount`/`audit` live in `bandvote-store`.

pub mod dead_letter;
pub mod finality;
pub mod pipelines;
pub mod sinks;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use axum::Router;
use bandvote_core::round::RoundStore;
use bandvote_embedded::{EmbeddedSource, Storage, pipelines as positions};
use bandvote_queue::{KafkaConfig, KafkaSource, QueueSource, SourceConfig};
use bandvote_runtime::{health, http, metrics as names, service::Service, shutdown::spawn_named};
use bandvote_store::{
    redact,
    redis_client::{RedisTarget, Timeouts},
    rounds::RedisRounds,
};
use secrecy::{ExposeSecret, SecretString};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{
    dead_letter::DeadLetters,
    pipelines::{log::LogPipeline, tally::TallyPipeline},
    sinks::{Counters, VoteLog, mongodb::MongoLog, redis::RedisTally},
};

/// Configuration of the consumer.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// Listener for the health and metrics endpoints. Default `0.0.0.0:9100`.
    pub listen: SocketAddr,
    /// Kafka.
    pub kafka: KafkaConfig,
    /// Redis URL (may hold a password); a database number in it is honoured. Default
    /// `redis://127.0.0.1:6379`.
    pub redis_url: SecretString,
    /// MongoDB URL (may hold a password). Default `mongodb://127.0.0.1:27017`.
    pub mongo_url: SecretString,
    /// MongoDB database. Default `bandvote`.
    pub mongo_db: String,
    /// Consumer group of the tally pipeline. Default `bandvote-tally`.
    pub tally_group: String,
    /// Consumer group of the log pipeline. Default `bandvote-log`.
    pub log_group: String,
    /// Kafka group session timeout. Default 10 s.
    pub session_timeout: Duration,
    /// Largest batch, in messages. Default 5000.
    pub batch_max: usize,
    /// How long a tally pipeline's batch waits to fill after its first message (Kafka); on the embedded queue, the
    /// least time between two reads while votes keep coming, where [`Consumer::embedded`] always
    /// uses the default. Default 10 ms.
    pub batch_linger: Duration,
    /// How long a log pipeline's batch waits to fill after its first message (Kafka): the log
    /// store takes fuller batches for less, and nothing live waits for it. Default 250 ms.
    pub log_batch_linger: Duration,
    /// How long the broker may hold a fetch to gather votes (Kafka): what the live counters may
    /// wait more, for fewer, fuller fetches. Default 50 ms.
    pub fetch_wait: Duration,
    /// How often each pipeline commits its offsets to its group (Kafka). Default 1 s.
    pub commit_interval: Duration,
    /// How long a client's idempotency key is remembered. Default 24 h.
    pub idempotency_ttl: Duration,
    /// Which pipelines this process runs. Default both.
    pub pipelines: Pipelines,
    /// Longest drain on shutdown. Default 10 s.
    pub grace: Duration,
    /// Limits on the listener's clients (`--max-connections`). Default [`http::Limits::default`].
    pub limits: http::Limits,
}

/// The pipelines a consumer process runs: both by default; one only to scale or measure them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pipelines {
    /// The tally pipeline (Kafka → Redis counters).
    pub tally: bool,
    /// The log pipeline (Kafka → MongoDB log).
    pub log: bool,
}

impl Default for Pipelines {
    fn default() -> Self {
        Self { tally: true, log: true }
    }
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 9100)),
            kafka: KafkaConfig::default(),
            redis_url: bandvote_store::DEFAULT_REDIS_URL.into(),
            mongo_url: bandvote_store::DEFAULT_MONGO_URL.into(),
            mongo_db: bandvote_store::DEFAULT_MONGO_DB.into(),
            tally_group: "bandvote-tally".into(),
            log_group: "bandvote-log".into(),
            session_timeout: Duration::from_secs(10),
            batch_max: 5000,
            batch_linger: Duration::from_millis(10),
            log_batch_linger: Duration::from_millis(250),
            fetch_wait: Duration::from_millis(50),
            commit_interval: Duration::from_secs(1),
            idempotency_ttl: Duration::from_secs(24 * 3600),
            pipelines: Pipelines::default(),
            grace: Duration::from_secs(10),
            limits: http::Limits::default(),
        }
    }
}

/// The pipelines one process runs, with what they read and write.
pub struct Consumer {
    tally: Option<TallyPipeline>,
    log: Option<LogPipeline>,
    /// The embedded queue to prune of what both pipelines applied, when both write to it.
    prune: Option<Arc<Storage>>,
    /// The queue's name in readiness checks.
    queue: &'static str,
}

impl Consumer {
    /// Both pipelines over `bandvote up`'s embedded queue, writing to `counters` and `log` (the
    /// embedded database's, or Redis and MongoDB). The queue is pruned only when both sinks are the
    /// embedded database's: Redis may lose its last second and need to read it again.
    pub async fn embedded(
        storage: Arc<Storage>,
        counters: Arc<dyn Counters>,
        log: Arc<dyn VoteLog>,
        prune: bool,
    ) -> anyhow::Result<Self> {
        bandvote_runtime::metrics::announce_consumer();
        let ConsumerConfig { batch_max, batch_linger, .. } = ConsumerConfig::default();
        let source = |pipeline| {
            let storage = Arc::clone(&storage);
            async move {
                let source = EmbeddedSource::open(storage, pipeline, batch_max)
                    .await
                    .with_context(|| format!("failed to read the {pipeline} position"))?
                    .with_linger(batch_linger);
                anyhow::Ok(Arc::new(source) as Arc<dyn QueueSource>)
            }
        };
        Ok(Self {
            tally: Some(TallyPipeline { source: source(positions::TALLY).await?, counters, dead_letters: None }),
            log: Some(LogPipeline { source: source(positions::LOG).await?, log }),
            prune: prune.then_some(storage),
            queue: "embedded queue",
        })
    }

    /// Readiness checks of what the pipelines write to and read from.
    pub fn checks(&self) -> Vec<(&'static str, health::Check)> {
        let mut checks = Vec::new();
        if let Some(tally) = &self.tally {
            let counters = Arc::clone(&tally.counters);
            checks.push((
                tally.counters.store(),
                health::check(move || {
                    let counters = Arc::clone(&counters);
                    async move { counters.ping().await }
                }),
            ));
        }
        if let Some(log) = &self.log {
            let sink = Arc::clone(&log.log);
            checks.push((
                log.log.store(),
                health::check(move || {
                    let sink = Arc::clone(&sink);
                    async move { sink.ping().await }
                }),
            ));
        }
        if let Some(source) = self.tally.as_ref().map(|t| &t.source).or(self.log.as_ref().map(|l| &l.source)) {
            let source = Arc::clone(source);
            checks.push((
                self.queue,
                health::check(move || {
                    let source = Arc::clone(&source);
                    async move { source.check().await }
                }),
            ));
        }
        checks
    }

    /// The pipelines as a service: no routes, the stores' readiness, the pipelines as one task.
    pub fn into_service(self) -> Service {
        let checks = self.checks();
        Service::new(Router::new()).checks(checks).task("pipelines", move |shutdown| self.run(shutdown))
    }

    /// Runs the pipelines (and the lag gauge, and pruning) until `shutdown`; each pipeline
    /// finishes its batch.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let mut sources = Vec::new();
        let mut tasks = Vec::new();
        if let Some(tally) = self.tally {
            sources.push(("tally", Arc::clone(&tally.source)));
            tasks.push(spawn_named("tally", shutdown.clone(), tally.run(shutdown.clone())));
        }
        if let Some(log) = self.log {
            sources.push(("log", Arc::clone(&log.source)));
            tasks.push(spawn_named("log", shutdown.clone(), log.run(shutdown.clone())));
        }
        let lag = tokio::spawn(report_lag(sources, shutdown.clone()));
        let pruning = self.prune.map(|storage| tokio::spawn(prune(storage, shutdown.clone())));
        let results = futures::future::join_all(tasks).await;
        lag.abort();
        if let Some(pruning) = pruning {
            pruning.abort();
        }
        for result in results {
            result.context("a pipeline panicked")??;
        }
        Ok(())
    }
}

/// A built consumer: connected, subscribed and bound, ready to run.
pub struct App {
    listener: TcpListener,
    service: Service,
    grace: Duration,
}

impl App {
    /// Connects to Redis and MongoDB, joins both consumer groups and binds the listener.
    pub async fn build(config: ConsumerConfig) -> anyhow::Result<Self> {
        let (listen, grace, limits) = (config.listen, config.grace, config.limits.clone());
        let service = service(config).await?.limits(limits);
        let listener = http::bind(listen).await?;
        Ok(Self { listener, service, grace })
    }

    /// The bound address of the health and metrics listener.
    pub fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        http::local_addr(&self.listener)
    }

    /// Runs the pipelines and the listener until `shutdown`; each pipeline finishes its batch.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        tracing::info!(addr = %self.local_addr()?, "consumer listening");
        self.service.serve(self.listener, shutdown, self.grace).await
    }
}

/// The Kafka consumer: connects to Redis and MongoDB and joins both consumer groups (as
/// `config.pipelines` asks); creates the topics in the background while Kafka is away.
pub async fn service(config: ConsumerConfig) -> anyhow::Result<Service> {
    bandvote_runtime::metrics::announce_consumer();
    // Create the topics now if Kafka answers, so that the subscriptions find them; if it does
    // not, `run` keeps trying in the background.
    if let Err(error) =
        tokio::time::timeout(Duration::from_secs(5), config.kafka.ensure_topics()).await.unwrap_or(Ok(()))
    {
        tracing::warn!(%error, "kafka topics not created yet");
    }
    let source = |group: &str, batch_linger: Duration| {
        KafkaSource::subscribe(
            &config.kafka,
            SourceConfig {
                group: group.to_owned(),
                session_timeout: config.session_timeout,
                batch_max: config.batch_max,
                batch_linger,
                fetch_wait: config.fetch_wait,
                commit_interval: config.commit_interval,
            },
        )
        .map(|source| Arc::new(source) as Arc<dyn QueueSource>)
        .with_context(|| format!("failed to join kafka consumer group {group}"))
    };
    let tally = if config.pipelines.tally {
        let counters =
            RedisTally::connect(config.redis_url.expose_secret(), config.idempotency_ttl.as_secs().max(1)).await?;
        Some(TallyPipeline {
            source: source(&config.tally_group, config.batch_linger)?,
            counters: Arc::new(counters),
            dead_letters: Some(DeadLetters::new(config.kafka.clone())),
        })
    } else {
        None
    };
    let log = if config.pipelines.log {
        let log = MongoLog::connect(config.mongo_url.expose_secret(), &config.mongo_db)
            .await
            .with_context(|| format!("failed to configure mongodb at {}", redact(config.mongo_url.expose_secret())))?;
        Some(LogPipeline { source: source(&config.log_group, config.log_batch_linger)?, log: Arc::new(log) })
    } else {
        None
    };
    if tally.is_none() && log.is_none() {
        anyhow::bail!("no pipeline to run: enable the tally pipeline, the log pipeline or both");
    }
    // Closed rounds become final here: the consumer sees the queue, the counters and the log.
    let rounds: Arc<dyn RoundStore> = Arc::new(RedisRounds::new(config.redis_url.expose_secret())?);
    let progress = finality::KafkaProgress {
        kafka: config.kafka.clone(),
        log_group: config.log_group.clone(),
        redis: RedisTarget::parse(config.redis_url.expose_secret())?.connect(Timeouts::default()).await?,
        logs: bandvote_store::log::collection(config.mongo_url.expose_secret(), &config.mongo_db).await?,
    };
    let kafka = config.kafka;
    let service = Consumer { tally, log, prune: None, queue: "kafka" }
        .into_service()
        .task("topics", move |shutdown| async move {
            kafka.ensure_topics_until_done(&shutdown).await;
            Ok(())
        })
        .task("finality", move |shutdown| finality::run(rounds, Arc::new(progress), shutdown));
    Ok(service)
}

async fn report_lag(sources: Vec<(&'static str, Arc<dyn QueueSource>)>, shutdown: CancellationToken) {
    // Every 2 s, starting now (the gauge exists as soon as a partition is assigned).
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        for (pipeline, source) in &sources {
            if let Ok(lag) = source.lag().await {
                metrics::gauge!(names::CONSUMER_LAG, "pipeline" => *pipeline).set(lag as f64);
            }
        }
    }
}

/// Every minute: drops queue entries both pipelines applied, and expired idempotency keys.
async fn prune(storage: Arc<Storage>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let (tally, log) = (storage.position(positions::TALLY).await, storage.position(positions::LOG).await);
        if let (Ok(tally), Ok(log)) = (tally, log) {
            let now = chrono::Utc::now().timestamp_millis();
            if let Err(error) = storage.prune(tally.min(log), now).await {
                tracing::warn!(%error, "embedded storage: pruning failed");
            }
        }
    }
}
