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

use bandvote_consumer::{ConsumerConfig, sinks::mongodb::to_document, sources::kafka::Vote};
use bandvote_core::{IngestPath, VoteId, VoteMessage};
use bandvote_queue::{KafkaConfig, KafkaProducer, VoteQueue};
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
    VoteMessage::new(
        &VoteId::generate(),
        vote,
        IngestPath::Grpc,
        bandvote_core::time::now(),
    )
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let run = uuid::Uuid::now_v7().simple().to_string();
    let run = &run[run.len() - 10..];
    let redis_url = format!("redis://127.0.0.1:6379/{}", args.redis_db);
    let mongo_db = format!("bandvote_bench_{run}");
    let kafka = KafkaConfig {
        topic: format!("votes-bench-{run}"),
        ..KafkaConfig::default()
    };
    kafka.ensure_topics().await?;

    let redis_client = redis::Client::open(redis_url.as_str())?;
    let mut redis = redis_client.get_multiplexed_async_connection().await?;
    redis::cmd("FLUSHDB").query_async::<()>(&mut redis).await?;

    // Fill the backlog.
    let producer = KafkaProducer::new(kafka.clone())?;
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
    eprintln!(
        "backlog: {} votes produced in {:.1?}",
        args.votes,
        started.elapsed()
    );

    // The consumer drains it.
    let shutdown = CancellationToken::new();
    let config = ConsumerConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        kafka: kafka.clone(),
        redis_url: redis_url.clone(),
        mongo_db: mongo_db.clone(),
        tally_group: format!("bench-tally-{run}"),
        log_group: format!("bench-log-{run}"),
        batch_max: args.batch_max,
        session_timeout: Duration::from_secs(3),
        ..ConsumerConfig::default()
    };
    let app = bandvote_consumer::App::build(config).await?;
    let started = Instant::now();
    let consumer = tokio::spawn(app.run(shutdown.clone()));
    let mongo = mongodb::Client::with_uri_str("mongodb://127.0.0.1:27017").await?;
    let logs = mongo
        .database(&mongo_db)
        .collection::<mongodb::bson::Document>("logs");
    let (mut first_count, mut tally_done, mut log_done) = (None, None, None);
    while tally_done.is_none() || log_done.is_none() {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let total: Option<u64> = redis::cmd("GET")
            .arg("votes:total")
            .query_async(&mut redis)
            .await?;
        if first_count.is_none() && total.unwrap_or(0) > 0 {
            first_count = Some(started.elapsed());
        }
        if tally_done.is_none() && total == Some(args.votes as u64) {
            tally_done = Some(started.elapsed());
        }
        if log_done.is_none() && logs.estimated_document_count().await? >= args.votes as u64 {
            log_done = Some(started.elapsed());
        }
    }
    shutdown.cancel();
    let _ = consumer.await;
    let join = first_count.unwrap_or_default();
    let tally_s = (tally_done.unwrap_or_default() - join).as_secs_f64();
    let log_s = (log_done.unwrap_or_default() - join).as_secs_f64();

    // Baseline 1: raw pipelined HINCRBY, one per vote, 1000 per round trip.
    redis::cmd("FLUSHDB").query_async::<()>(&mut redis).await?;
    let started = Instant::now();
    for chunk in (0..args.votes).collect::<Vec<_>>().chunks(1000) {
        let mut pipe = redis::pipe();
        for i in chunk {
            pipe.cmd("HINCRBY")
                .arg("votes:band")
                .arg(BANDS[i % BANDS.len()].0)
                .arg(1)
                .ignore();
        }
        pipe.query_async::<()>(&mut redis).await?;
    }
    let hincrby_s = started.elapsed().as_secs_f64();

    // Baseline 2: raw unordered insert_many of the same documents, in batches of the consumer's size.
    let raw = mongo
        .database(&format!("{mongo_db}_raw"))
        .collection::<mongodb::bson::Document>("logs");
    let now = mongodb::bson::DateTime::now();
    let docs: Vec<_> = (0..args.votes)
        .map(|i| {
            let vote = Vote {
                message: message(i),
                client_key: false,
                album_key: String::new(),
            };
            to_document(&vote, now)
        })
        .collect();
    let started = Instant::now();
    for chunk in docs.chunks(args.batch_max) {
        raw.insert_many(chunk.to_vec()).ordered(false).await?;
    }
    let insert_s = started.elapsed().as_secs_f64();

    redis::cmd("FLUSHDB").query_async::<()>(&mut redis).await?;
    mongo.database(&mongo_db).drop().await?;
    mongo.database(&format!("{mongo_db}_raw")).drop().await?;
    let n = args.votes as f64;
    eprintln!("consumer joined and counted its first vote after {join:.1?}");
    let rows = [
        ("tally pipeline → Redis", n / tally_s),
        ("raw pipelined HINCRBY (baseline)", n / hincrby_s),
        ("log pipeline → MongoDB-wire", n / log_s),
        ("raw insert_many (baseline)", n / insert_s),
    ];
    println!("| drain of {} votes | votes/s |", args.votes);
    println!("| --- | ---: |");
    for (what, rate) in rows {
        println!("| {what} | {rate:.0} |");
    }
    println!(
        "tally/HINCRBY ratio: {:.2}; log/insert_many ratio: {:.2}",
        hincrby_s / tally_s,
        insert_s / log_s
    );
    Ok(())
}
