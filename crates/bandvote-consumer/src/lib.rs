//! `bandvote consumer`: reads the votes topic and writes every vote exactly once to the Redis
//! counters and the MongoDB log, through two independent pipelines (DESIGN.md, "Exactly once").
//! - [`sources::kafka`]: consumer-group members reading the topic in batches;
//! - [`sinks::redis`]: the atomic tally script; [`sinks::mongodb`]: the vote log;
//! - [`pipelines`]: the tally and log loops; [`dead_letter`]: messages that are not votes;
//! - [`recount`]: rebuilding the Redis counters from the MongoDB log;
//! - [`embedded`]: the same pipelines over `bandvote up`'s embedded queue.

pub mod audit;
pub mod dead_letter;
pub mod embedded;
pub mod pipelines;
pub mod recount;
pub mod sinks;
pub mod sources;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use axum::Router;
use bandvote_queue::{KafkaConfig, KafkaProducer};
use bandvote_runtime::{health, http, metrics as names, shutdown::spawn_named};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{
    dead_letter::DeadLetters,
    pipelines::{log::LogPipeline, tally::TallyPipeline},
    sinks::{mongodb::MongoLog, redis::RedisTally},
    sources::kafka::{KafkaSource, SourceConfig},
};

/// Configuration of the consumer.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// Listener for the health and metrics endpoints. Default `0.0.0.0:9100`.
    pub listen: SocketAddr,
    /// Kafka.
    pub kafka: KafkaConfig,
    /// Redis URL; a database number in it is honoured. Default `redis://127.0.0.1:6379`.
    pub redis_url: String,
    /// MongoDB URL. Default `mongodb://127.0.0.1:27017`.
    pub mongo_url: String,
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
    /// How long a batch waits to fill after its first message. Default 10 ms.
    pub batch_linger: Duration,
    /// How long a client's idempotency key is remembered. Default 24 h.
    pub idempotency_ttl: Duration,
    /// Which pipelines this process runs. Default both.
    pub pipelines: Pipelines,
    /// Longest drain on shutdown. Default 10 s.
    pub grace: Duration,
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
            redis_url: "redis://127.0.0.1:6379".into(),
            mongo_url: "mongodb://127.0.0.1:27017".into(),
            mongo_db: "bandvote".into(),
            tally_group: "bandvote-tally".into(),
            log_group: "bandvote-log".into(),
            session_timeout: Duration::from_secs(10),
            batch_max: 5000,
            batch_linger: Duration::from_millis(10),
            idempotency_ttl: Duration::from_secs(24 * 3600),
            pipelines: Pipelines::default(),
            grace: Duration::from_secs(10),
        }
    }
}

/// A built consumer: connected, subscribed and bound, ready to run.
pub struct App {
    listener: TcpListener,
    router: Router,
    kafka: KafkaConfig,
    tally: Option<TallyPipeline>,
    log: Option<LogPipeline>,
    grace: Duration,
}

impl App {
    /// Connects to Redis and MongoDB, joins both consumer groups and binds the listener.
    pub async fn build(config: ConsumerConfig) -> anyhow::Result<Self> {
        bandvote_runtime::metrics::announce_consumer();
        let tally = RedisTally::connect(&config.redis_url, config.idempotency_ttl.as_secs().max(1))
            .await
            .with_context(|| format!("failed to connect to redis at {}", redact(&config.redis_url)))?;
        let log = MongoLog::connect(&config.mongo_url, &config.mongo_db)
            .await
            .with_context(|| format!("failed to configure mongodb at {}", redact(&config.mongo_url)))?;
        // Create the topics now if Kafka answers, so that the subscriptions find them; if it does
        // not, `run` keeps trying in the background.
        if let Err(error) =
            tokio::time::timeout(Duration::from_secs(5), config.kafka.ensure_topics()).await.unwrap_or(Ok(()))
        {
            tracing::warn!(%error, "kafka topics not created yet");
        }
        let source = |group: &str| {
            KafkaSource::subscribe(
                &config.kafka,
                SourceConfig {
                    group: group.to_owned(),
                    session_timeout: config.session_timeout,
                    batch_max: config.batch_max,
                    batch_linger: config.batch_linger,
                },
            )
            .map(Arc::new)
            .with_context(|| format!("failed to join kafka consumer group {group}"))
        };
        let mut checks = Vec::new();
        let mut kafka_probe = None;
        let tally = if config.pipelines.tally {
            let source = source(&config.tally_group)?;
            let dead_letters = DeadLetters::new(KafkaProducer::new(config.kafka.clone())?);
            let probe = tally.clone();
            checks.push((
                "redis",
                health::check(move || {
                    let probe = probe.clone();
                    async move { probe.ping().await }
                }),
            ));
            kafka_probe = Some(Arc::clone(&source));
            Some(TallyPipeline { source, tally, dead_letters })
        } else {
            None
        };
        let log = if config.pipelines.log {
            let source = source(&config.log_group)?;
            let probe = log.clone();
            checks.push((
                "mongodb",
                health::check(move || {
                    let probe = probe.clone();
                    async move { probe.ping().await }
                }),
            ));
            kafka_probe.get_or_insert_with(|| Arc::clone(&source));
            Some(LogPipeline { source, log })
        } else {
            None
        };
        let Some(kafka_probe) = kafka_probe else {
            anyhow::bail!("no pipeline to run: enable the tally pipeline, the log pipeline or both");
        };
        checks.push((
            "kafka",
            health::check(move || {
                let probe = Arc::clone(&kafka_probe);
                async move { probe.check().await }
            }),
        ));
        let router = http::with_fallbacks(health::router(checks));
        let listener = http::bind(config.listen).await?;
        Ok(Self { listener, router, kafka: config.kafka, tally, log, grace: config.grace })
    }

    /// The bound address of the health and metrics listener.
    pub fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        http::local_addr(&self.listener)
    }

    /// Runs the pipelines and the listener until `shutdown`; each pipeline finishes its batch.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        tracing::info!(addr = %self.local_addr()?, "consumer listening");
        let kafka = self.kafka.clone();
        let topics_shutdown = shutdown.clone();
        let topics = tokio::spawn(async move { kafka.ensure_topics_until_done(&topics_shutdown).await });
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
        let served = http::serve(self.listener, self.router, shutdown.clone(), self.grace).await;
        shutdown.cancel();
        let results = futures::future::join_all(tasks).await;
        topics.abort();
        lag.abort();
        served?;
        for result in results {
            result.context("a pipeline panicked")??;
        }
        Ok(())
    }
}

async fn report_lag(sources: Vec<(&'static str, Arc<KafkaSource>)>, shutdown: CancellationToken) {
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

/// A URL with its password replaced, for logs and errors.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            match credentials.find(':') {
                Some(colon) => format!("{}{}:***{}", &url[..scheme + 3], &credentials[..colon], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn redact_hides_passwords_only() {
        assert_eq!(redact("redis://:secret@host:6379/2"), "redis://:***@host:6379/2");
        assert_eq!(redact("mongodb://user:pw@db:27017"), "mongodb://user:***@db:27017");
        assert_eq!(redact("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
    }
}
