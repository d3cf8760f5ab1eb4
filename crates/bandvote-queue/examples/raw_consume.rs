//! The consumer's floor in the cost benchmark: two consumer groups, as the tally and the log
//! pipelines, reading the votes topic through the consumer's own Kafka source with its batching
//! settings and committing every batch, but writing nowhere: what reading the votes costs before
//! any sink.
//!
//! `cargo run --release -p bandvote-queue --example raw_consume -- BROKERS TOPIC [IDLE_SECONDS]`
//!
//! Prints `READY` once each group has read a first message (so produce a few before starting it),
//! then reads until nothing has arrived for IDLE_SECONDS (3) after a first vote (or for 60 s before
//! one) and prints
//! `RESULT consumed=N cpu_us_per_vote=C`: N votes read by each group after `READY`, C this
//! process's CPU time (all threads) from `READY` to the last vote, per vote.

#![allow(missing_docs, clippy::print_stdout)]

#[path = "support/cpu.rs"]
mod cpu;

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use bandvote_queue::{KafkaConfig, KafkaSource, QueueSource, SourceConfig};
use tokio_util::sync::CancellationToken;

/// The longest wait for the first vote after `READY`.
const FIRST_WAIT: Duration = Duration::from_secs(60);

/// Reads batches and commits them until `shutdown`, counting the records into `read`.
async fn read(source: KafkaSource, read: Arc<AtomicU64>, shutdown: CancellationToken) -> anyhow::Result<()> {
    while let Some(batch) = source.next_batch(&shutdown).await {
        source.commit(&batch).await?;
        read.fetch_add(batch.len() as u64, Ordering::Relaxed);
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let brokers = args.next().unwrap_or_else(|| "127.0.0.1:9092".into());
    let topic = args.next().unwrap_or_else(|| "votes-raw".into());
    let idle = Duration::from_secs(args.next().map(|s| s.parse()).transpose()?.unwrap_or(3));
    let kafka = KafkaConfig { brokers, topic, ..KafkaConfig::default() };
    let shutdown = CancellationToken::new();
    let stamp = std::process::id();
    let mut counters = Vec::new();
    let mut readers = Vec::new();
    // The consumer's defaults: the tally's batches wait 10 ms to fill, the log's 250 ms.
    for (pipeline, linger) in [("tally", 10), ("log", 250)] {
        let source = KafkaSource::subscribe(
            &kafka,
            SourceConfig {
                group: format!("raw-consume-{pipeline}-{stamp}"),
                session_timeout: Duration::from_secs(10),
                batch_max: 5000,
                batch_linger: Duration::from_millis(linger),
                fetch_wait: Duration::from_millis(50),
                commit_interval: Duration::from_secs(1),
            },
        )?;
        let counter = Arc::new(AtomicU64::new(0));
        readers.push(tokio::spawn(read(source, Arc::clone(&counter), shutdown.clone())));
        counters.push(counter);
    }
    let total = || counters.iter().map(|c| c.load(Ordering::Relaxed)).collect::<Vec<_>>();
    while total().contains(&0) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (start, cpu_start) = (total(), cpu::seconds()?);
    println!("READY");
    // Until the first vote after `READY` the wait is longer: the producer may still be starting.
    let (mut seen, mut last_change, mut cpu_last, mut quiet) = (start.clone(), Instant::now(), cpu_start, FIRST_WAIT);
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = total();
        if now != seen {
            (seen, last_change, cpu_last, quiet) = (now, Instant::now(), cpu::seconds()?, idle);
        } else if last_change.elapsed() >= quiet {
            break;
        }
    }
    shutdown.cancel();
    for reader in readers {
        reader.await??;
    }
    let consumed = seen.iter().zip(&start).map(|(end, start)| end - start).min().unwrap_or(0);
    println!("RESULT consumed={consumed} cpu_us_per_vote={:.1}", (cpu_last - cpu_start) * 1e6 / consumed.max(1) as f64);
    Ok(())
}
