//! The ceiling of the cost benchmark: vote messages of the same shape, produced with the same
//! producer settings as the services (idempotent, `acks=all`, the same linger, batch size and
//! compression), straight from one process with nothing in front: what Kafka itself accepts here.
//!
//! `cargo run --release -p bandvote-queue --example raw_produce -- BROKERS TOPIC SECONDS [IN_FLIGHT] [RATE]`
//!
//! Without RATE (or with 0) it produces as fast as IN_FLIGHT messages in flight allow; with RATE,
//! one message every 1/RATE s (each at its scheduled time, as the services receive votes), so that
//! what Kafka and its client cost per message can be read at the rate the services were measured.
//!
//! Prints `RESULT produced=N seconds=S rate=R cpu_us_per_vote=C` (C: this process's CPU time, all
//! threads, per acknowledged message).

#![allow(missing_docs, clippy::print_stdout)]

#[path = "support/cpu.rs"]
mod cpu;

use std::time::{Duration, Instant};

use bandvote_core::{IngestPath, Vote, VoteId, VoteMessage};
use bandvote_queue::{KafkaConfig, KafkaProducer, VoteQueue};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let brokers = args.next().unwrap_or_else(|| "127.0.0.1:9092".into());
    let topic = args.next().unwrap_or_else(|| "votes-raw".into());
    let seconds: u64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(10);
    let in_flight: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(256);
    let rate: u32 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(0);
    let period = (rate > 0).then(|| Duration::from_secs(1) / rate);
    let producer = KafkaProducer::new(KafkaConfig { brokers, topic, ..KafkaConfig::default() })?;
    producer.prepare_topics(&CancellationToken::new()).await;
    let vote = Vote::from_strings("Bohemia Suburbana", "Mis palabras", "1997", "9.5")?;
    let message = || {
        let at = "2026-12-02T18:00:00.000Z".to_owned();
        VoteMessage::new(&VoteId::generate(), vote.clone(), IngestPath::Grpc, at, "default".into())
    };
    let produce = |deadline: Instant| {
        let (start, producer, message) = (tokio::time::Instant::now(), &producer, &message);
        futures::stream::iter(0u32..)
            .take_while(move |_| std::future::ready(Instant::now() < deadline))
            .map(move |i| {
                let message = message();
                async move {
                    if let Some(period) = period {
                        tokio::time::sleep_until(start + period * i).await;
                    }
                    producer.enqueue(&message, false).await.is_ok()
                }
            })
            .buffer_unordered(in_flight)
            .filter(|ok| std::future::ready(*ok))
            .count()
    };
    // Warm-up: connections, metadata, the idempotent producer's id.
    produce(Instant::now() + Duration::from_secs(1)).await;
    let (cpu, started) = (cpu::seconds()?, Instant::now());
    let produced = produce(started + Duration::from_secs(seconds)).await;
    let (cpu, elapsed) = (cpu::seconds()? - cpu, started.elapsed().as_secs_f64());
    println!(
        "RESULT produced={produced} seconds={elapsed:.2} rate={:.0} cpu_us_per_vote={:.1}",
        produced as f64 / elapsed,
        cpu * 1e6 / produced.max(1) as f64
    );
    Ok(())
}
