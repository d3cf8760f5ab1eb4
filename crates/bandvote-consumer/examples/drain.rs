//! Consumer backlog drain benchmark, against the real servers (`scripts/services up`).
//!
//! Fills a fresh topic with N votes, then starts the consumer and measures how fast each pipeline
//! drains the backlog: the tally into Redis and the log into MongoDB. In the same run it measures
//! two baselines on the same servers: raw pipelined `HINCRBY` (one command per vote, 1000 per
//! round trip) and raw unordered `insert_many` of the same documents (batches of the consumer's
//! size).
//!
//! `cargo run --release -p bandvote-consumer --example drain -- --votes 200000`

#![allow(clippy::print_stdout, missing_docs)]

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use bandvote_consumer::{ConsumerConfig, Pipelines};
use bandvote_core::{IngestPath, VoteId, VoteMessage};
use bandvote_queue::{KafkaConfig, KafkaProducer, Vote, VoteQueue};
use bandvote_store::log::to_document;
use clap::Parser;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
struct Args {
    /// Votes in the backlog.
    #[arg(long, default_value_t = 200_000)]
    votes: usize,
    /// Redis database used for the run (flushed first).
    #[arg(long, default_value_t = 15)]
    redis_db: u32,
    /// Largest consumer batch.
    #[arg(long, default_value_t = 5000)]
    batch_max: usize,
}

const BANDS: [(&str, &str); 4] = [
    ("Bohemia Suburbana", "Mis palabras"),
    ("Bohemia Suburbana", "Imaginaria Sonora"),
    ("Alux Nahual", "Rock chapin"),
    ("Alux Nahual", "El Viaje"),
];

fn message(i: usize) -> VoteMessage {
    let (name, album) = BANDS[i % BANDS.len()];
    let vote = bandvote_core::Vote::from_strings(name, album, "1997", "9.5").expect("valid");
    VoteMessage::new(&VoteId::generate(), vote, IngestPath::Grpc, bandvote_core::time::now(), "default".into())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let metrics = bandvote_runtime::metrics::install();
    let run = uuid::Uuid::now_v7().simple().to_string();
    let run = &run[run.len() - 10..];
    let redis_url = format!("redis://127.0.0.1:6379/{}", args.redis_db);
    let mongo_db = format!("bandvote_bench_{run}");
    let kafka = KafkaConfig { topic: format!("votes-bench-{run}"), ..KafkaConfig::default() };

    let redis_client = redis::Client::open(redis_url.as_str())?;
    let mut redis = redis_client.get_multiplexed_async_connection().await?;
    redis::cmd("FLUSHDB").query_async::<()>(&mut redis).await?;

    // Fill the backlog.
    let producer = KafkaProducer::new(kafka.clone())?;
    producer.prepare_topics(&tokio_util::sync::CancellationToken::new()).await;
    let started = Instant::now();
    futures::stream::iter(0..args.votes)
        .map(|i| {
            let producer = producer.clone();
            async move {
                let message = message(i);
                producer.enqueue(&message, false).await
            }
        })
        .buffer_unordered(4096)
        .for_each(|r| async move { r.expect("produced") })
        .await;
    eprintln!("backlog: {} votes produced in {:.1?}", args.votes, started.elapsed());

    // The consumer drains it: each pipeline alone, then both together (as deployed).
    let mongo = mongodb::Client::with_uri_str("mongodb://127.0.0.1:27017").await?;
    let n = args.votes as f64;
    let mut runs = Vec::new();
    for (label, pipelines) in [
        ("tally", Pipelines { tally: true, log: false }),
        ("log", Pipelines { tally: false, log: true }),
        ("both", Pipelines::default()),
    ] {
        redis::cmd("FLUSHDB").query_async::<()>(&mut redis).await?;
        let db = format!("{mongo_db}_{label}");
        let shutdown = CancellationToken::new();
        let config = ConsumerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            kafka: kafka.clone(),
            redis_url: redis_url.clone().into(),
            mongo_db: db.clone(),
            tally_group: format!("bench-tally-{run}-{label}"),
            log_group: format!("bench-log-{run}-{label}"),
            batch_max: args.batch_max,
            session_timeout: Duration::from_secs(3),
            pipelines,
            ..ConsumerConfig::default()
        };
        let app = bandvote_consumer::App::build(config).await?;
        let started = Instant::now();
        let consumer = tokio::spawn(app.run(shutdown.clone()));
        // Progress comes from the consumer's own counters (in this process), so that measuring
        // does not load the servers being measured.
        let counted = |pipeline: &str| counter(&metrics.render(), pipeline);
        let (tally_before, log_before) = (counted("tally"), counted("log"));
        let (mut first, mut tally_done, mut log_done) = (None, None, None);
        loop {
            tokio::time::sleep(Duration::from_millis(10)).await;
            let tallied = counted("tally") - tally_before;
            let logged = counted("log") - log_before;
            if first.is_none() && (tallied > 0.0 || logged > 0.0) {
                first = Some(started.elapsed());
            }
            if tally_done.is_none() && tallied >= n {
                tally_done = Some(started.elapsed());
            }
            if log_done.is_none() && logged >= n {
                log_done = Some(started.elapsed());
            }
            if (!pipelines.tally || tally_done.is_some()) && (!pipelines.log || log_done.is_some()) {
                break;
            }
        }
        shutdown.cancel();
        let _ = consumer.await;
        mongo.database(&db).drop().await?;
        let first = first.unwrap_or_default();
        let rate = |done: Option<Duration>| done.map(|d| n / (d - first).as_secs_f64());
        runs.push((label, rate(tally_done), rate(log_done)));
        eprintln!("{label}: first vote written after {first:.1?}");
    }

    // Baseline 1: raw pipelined HINCRBY, one per vote, 1000 per round trip.
    redis::cmd("FLUSHDB").query_async::<()>(&mut redis).await?;
    let started = Instant::now();
    for chunk in (0..args.votes).collect::<Vec<_>>().chunks(1000) {
        let mut pipe = redis::pipe();
        for i in chunk {
            pipe.cmd("HINCRBY").arg("votes:band").arg(BANDS[i % BANDS.len()].0).arg(1).ignore();
        }
        pipe.query_async::<()>(&mut redis).await?;
    }
    let hincrby_s = started.elapsed().as_secs_f64();

    // Baseline 2: raw unordered insert_many of the same documents, in batches of the consumer's size.
    let raw = mongo.database(&format!("{mongo_db}_raw")).collection::<mongodb::bson::Document>("logs");
    let now = mongodb::bson::DateTime::now();
    let docs: Vec<_> = (0..args.votes)
        .map(|i| {
            let vote = Vote { message: message(i), client_key: false, album_key: String::new(), trace: None };
            to_document(&vote.message, now)
        })
        .collect();
    let started = Instant::now();
    for chunk in docs.chunks(args.batch_max) {
        raw.insert_many(chunk.to_vec()).ordered(false).await?;
    }
    let insert_s = started.elapsed().as_secs_f64();

    redis::cmd("FLUSHDB").query_async::<()>(&mut redis).await?;
    mongo.database(&format!("{mongo_db}_raw")).drop().await?;
    let (hincrby, insert) = (n / hincrby_s, n / insert_s);
    let show = |rate: Option<f64>| rate.map_or("-".to_owned(), |r| format!("{r:.0}"));
    println!("| drain of {} votes | votes/s | vs. its raw baseline |", args.votes);
    println!("| --- | ---: | ---: |");
    for (label, tally, log) in &runs {
        if let Some(tally) = tally {
            println!("| tally pipeline → Redis ({label} running) | {} | {:.2} |", show(Some(*tally)), tally / hincrby);
        }
        if let Some(log) = log {
            println!("| log pipeline → MongoDB-wire ({label} running) | {} | {:.2} |", show(Some(*log)), log / insert);
        }
    }
    println!("| raw pipelined HINCRBY, 1000 per round trip (baseline) | {hincrby:.0} | 1.00 |");
    println!("| raw unordered insert_many, {} per call, same index (baseline) | {insert:.0} | 1.00 |", args.batch_max);
    Ok(())
}

/// The value of `bandvote_consumer_votes_total{pipeline="..."}` in a Prometheus page.
fn counter(page: &str, pipeline: &str) -> f64 {
    let series = format!("bandvote_consumer_votes_total{{pipeline=\"{pipeline}\"}}");
    page.lines()
        .filter(|line| line.starts_with(&series))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
