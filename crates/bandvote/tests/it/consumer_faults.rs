//! The consumer's exactly-once promise under crashes and replicas, against the real servers:
//! consumers run as separate `bandvote consumer` processes so they can be killed with SIGKILL.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use mongodb::bson::doc;

use crate::support::{
    MONGO, PATIENCE, SwitchableProxy, TestEnv, TestVote, committed_offsets, expected, metric, mix, post_all, post_vote,
    scrape, topic_end, wait_for,
};
use tokio::sync::Mutex;

/// Sends votes from `votes` in order, `concurrency` at a time, until they run out or `stop` is set;
/// returns the votes answered 202.
fn stream_votes(
    url: String,
    votes: Vec<TestVote>,
    concurrency: usize,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Vec<TestVote>> {
    tokio::spawn(async move {
        let client = reqwest::Client::new();
        let queue = Arc::new(Mutex::new(votes.into_iter()));
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let workers: Vec<_> = (0..concurrency)
            .map(|_| {
                let (client, url, queue, accepted, stop) =
                    (client.clone(), url.clone(), Arc::clone(&queue), Arc::clone(&accepted), Arc::clone(&stop));
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        let Some(vote) = queue.lock().await.next() else {
                            break;
                        };
                        let (status, body) = post_vote(&client, &url, vote.body(), None).await;
                        assert_eq!(status, 202, "{body}");
                        accepted.lock().await.push(vote);
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                })
            })
            .collect();
        for worker in workers {
            worker.await.expect("sender");
        }
        Arc::try_unwrap(accepted).expect("senders done").into_inner()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn consumer_counts_each_vote_once_after_kill_9_mid_stream() {
    let env = TestEnv::new().await;
    let base = env.start_grpc_path().await;
    let (mut consumer, _) = env.spawn_consumer_process().await;
    let sender = stream_votes(format!("{base}/grpc/votes"), mix(3000), 8, Arc::new(AtomicBool::new(false)));

    for round in 1..=3u64 {
        // Kill while votes are flowing and the consumer is applying batches.
        let seen = env.counts().await.total;
        wait_for("the consumer to count more votes", PATIENCE, || async {
            (env.counts().await.total > seen + 200).then_some(())
        })
        .await;
        consumer.start_kill().expect("SIGKILL");
        consumer.wait().await.expect("reaped");
        tracing::info!(round, total = env.counts().await.total, "consumer killed");
        consumer = env.spawn_consumer_process().await.0;
    }

    let accepted = sender.await.expect("sender");
    assert_eq!(accepted.len(), 3000);
    assert_eq!(env.wait_for_total(3000).await, expected(&accepted));
    assert_eq!(env.wait_for_logs(3000).await.len(), 3000);
    drop(consumer);
}

/// The consumer commits its offsets on an interval, not after each batch: one killed between two
/// commits leaves the votes it wrote since the last one to be read again. Here the interval is an
/// hour (only the commit made once the votes stop is left), and the consumer is killed while the
/// log holds votes its group has not committed: the next consumer reads them again, the log drops
/// them as duplicates, the tally skips them by its stored offsets, and each vote counts once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_consumer_killed_between_two_commits_reads_its_votes_again_and_counts_them_once() {
    let env = TestEnv::new().await;
    let base = env.start_grpc_path().await;
    let hourly = ["--kafka-commit-interval-ms", "3600000"];
    let (mut consumer, _) = env.spawn_consumer_process_args(MONGO, &hourly).await;
    let sender = stream_votes(format!("{base}/grpc/votes"), mix(2000), 8, Arc::new(AtomicBool::new(false)));

    // Kill it once the log holds votes beyond what the group has committed.
    let group = env.log_group();
    let logs = env.mongo().await;
    wait_for("logged votes the log group has not committed", PATIENCE, || async {
        let end = topic_end(&env.topic).await;
        let committed: i64 = committed_offsets(&group, &env.topic, end.keys().copied().collect()).await.values().sum();
        let logged = logs.count_documents(doc! {}).await.expect("count");
        (logged >= 300 && i64::try_from(logged).expect("count") > committed).then_some(())
    })
    .await;
    consumer.start_kill().expect("SIGKILL");
    consumer.wait().await.expect("reaped");
    let (_consumer, port) = env.spawn_consumer_process_args(MONGO, &hourly).await;

    let accepted = sender.await.expect("sender");
    assert_eq!(env.wait_for_total(2000).await, expected(&accepted));
    // Read to the topic's end and committed: the commit made once the votes stopped.
    assert_eq!(env.wait_for_logs(2000).await.len(), 2000);
    let page = scrape(port).await;
    assert!(
        metric(&page, "bandvote_consumer_duplicates_total", "pipeline=\"log\"") > 0.0,
        "the next consumer read again votes already logged:\n{page}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_consumer_replicas_split_the_work_and_count_exactly() {
    let env = TestEnv::new().await;
    let base = env.start_grpc_path().await;
    let (first, second) = (env.spawn_consumer_process().await, env.spawn_consumer_process().await);
    let ports = [first.1, second.1];
    let replicas = [first.0, second.0];

    // Keep voting until both replicas have counted some votes (each owns some partitions).
    let stop = Arc::new(AtomicBool::new(false));
    let sender = stream_votes(format!("{base}/grpc/votes"), mix(20_000), 8, Arc::clone(&stop));
    wait_for("both replicas to count votes", PATIENCE, || async {
        let mut both = true;
        for port in ports {
            let page = scrape(port).await;
            both &= metric(&page, "bandvote_consumer_votes_total", "pipeline=\"tally\"") > 0.0;
        }
        both.then_some(())
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    let accepted = sender.await.expect("sender");
    let n = accepted.len() as u64;
    assert!(n > 0);
    assert_eq!(env.wait_for_total(n).await, expected(&accepted));
    assert_eq!(env.wait_for_logs(n).await.len() as u64, n);

    let mut per_replica = Vec::new();
    for port in ports {
        per_replica.push(metric(&scrape(port).await, "bandvote_consumer_votes_total", "pipeline=\"tally\"") as u64);
    }
    assert_eq!(per_replica.iter().sum::<u64>(), n, "the replicas' counts add up: {per_replica:?}");
    drop(replicas);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn log_pipeline_loses_nothing_when_killed_while_mongodb_is_down_and_counters_keep_going() {
    let env = TestEnv::new().await;
    let base = env.start_grpc_path().await;
    let url = format!("{base}/grpc/votes");
    let mongo = SwitchableProxy::start("127.0.0.1:27017").await;
    let mongo_url = format!("mongodb://127.0.0.1:{}", mongo.port);
    let (mut consumer, port) = env.spawn_consumer_process_with(&mongo_url).await;

    let first = mix(200);
    post_all(&url, &first, 8).await;
    env.wait_for_logs(200).await;

    // MongoDB goes away: the live counters keep counting, the log pipeline retries its batch.
    mongo.set_up(false);
    let second = mix(300);
    post_all(&url, &second, 8).await;
    let all: Vec<_> = first.iter().chain(&second).cloned().collect();
    assert_eq!(env.wait_for_total(500).await, expected(&all), "counting does not wait for the log");
    wait_for("the log pipeline to fail a write", PATIENCE, || async {
        (metric(&scrape(port).await, "bandvote_consumer_sink_errors_total", "pipeline=\"log\"") > 0.0).then_some(())
    })
    .await;

    // The consumer dies while its batch is unwritten; MongoDB comes back; a new consumer starts.
    consumer.start_kill().expect("SIGKILL");
    consumer.wait().await.expect("reaped");
    mongo.set_up(true);
    let _consumer = env.spawn_consumer_process_with(&mongo_url).await;
    assert_eq!(env.wait_for_logs(500).await.len(), 500, "every vote logged once");
    assert_eq!(env.counts().await, expected(&all), "and counted once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn consumer_counts_every_vote_of_a_topic_recreated_under_it() {
    use rdkafka::admin::{AdminClient, AdminOptions};

    let env = TestEnv::new().await;
    let url = format!("{}/grpc/votes", env.start_grpc_path().await);
    let (_consumer, port) = env.spawn_consumer_process().await;

    let before = mix(120);
    post_all(&url, &before, 8).await;
    env.wait_for_total(120).await;
    let stored = env.offsets().await;

    // The topic is deleted and created again (a Kafka that lost its log does the same): its offsets
    // start again at 0, far below the ones Redis stored for the old one.
    let admin: AdminClient<_> = env.kafka().client_config().create().expect("admin client");
    let deleted = admin.delete_topics(&[&env.topic], &AdminOptions::new()).await.expect("delete request");
    assert!(deleted.iter().all(Result::is_ok), "{deleted:?}");
    let producer = bandvote_queue::KafkaProducer::new(env.kafka()).expect("producer");
    wait_for("the votes topic to be recreated with every partition answering", PATIENCE, || async {
        let _ = env.kafka().ensure_topics().await;
        producer.partitions_answer(&env.topic).await.ok()
    })
    .await;

    // New producers (the old ones' idempotence state belongs to the old topic): fewer votes than
    // before (every new offset is below a stored one), then more (the new partitions grow past the
    // stored offsets, with other votes at them): all are counted.
    let url = format!("{}/grpc/votes", env.start_grpc_path().await);
    let small = mix(30);
    post_all(&url, &small, 4).await;
    env.wait_for_total(150).await;
    let large = mix(240);
    post_all(&url, &large, 8).await;
    let all: Vec<_> = before.iter().chain(&small).chain(&large).cloned().collect();
    assert_eq!(env.wait_for_total(390).await, expected(&all), "stored offsets before the reset: {stored:?}");
    assert_eq!(env.wait_for_logs(390).await.len(), 390);
    let resets = metric(&scrape(port).await, "bandvote_consumer_queue_resets_total", "pipeline=\"tally\"");
    assert!(resets >= 1.0, "the reset is reported: {resets}");
}

/// A Redis that lost its last writes (a replica promoted before it had them, an append-only file
/// cut short) goes back in time with its counters and its stored offsets together. The consumer,
/// still running and already past those offsets, must find at its next batch that the batch does
/// not continue what is stored, seek back, and count again exactly what is missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_redis_that_lost_its_last_writes_is_caught_up_from_its_stored_offsets() {
    let env = TestEnv::new().await;
    let url = format!("{}/grpc/votes", env.start_grpc_path().await);
    let (_consumer, port) = env.spawn_consumer_process().await;

    let first = mix(100);
    post_all(&url, &first, 8).await;
    env.wait_for_total(100).await;
    // The snapshot: every key of this test's database as DUMP gives it, with its time to live.
    let mut redis = env.redis().await;
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query_async(&mut redis).await.expect("keys");
    let mut snapshot = Vec::new();
    for key in keys {
        let dump: Vec<u8> = redis::cmd("DUMP").arg(&key).query_async(&mut redis).await.expect("dump");
        let ttl: i64 = redis::cmd("PTTL").arg(&key).query_async(&mut redis).await.expect("pttl");
        snapshot.push((key, dump, ttl.max(0)));
    }
    let stored = env.offsets().await;

    let second = mix(150);
    post_all(&url, &second, 8).await;
    env.wait_for_total(250).await;
    let refused_before = metric(&scrape(port).await, "bandvote_consumer_refused_batches_total", "");

    // Everything written after the snapshot is lost.
    let _: () = redis::cmd("FLUSHDB").query_async(&mut redis).await.expect("flushdb");
    for (key, dump, ttl) in &snapshot {
        let _: () = redis::cmd("RESTORE").arg(key).arg(*ttl).arg(dump).query_async(&mut redis).await.expect("restore");
    }
    assert_eq!(env.offsets().await, stored, "Redis is back at the snapshot");
    assert_eq!(env.counts().await.total, 100, "Redis is back at the snapshot");

    // The next votes (enough to reach every partition) make the consumer notice and re-read.
    let third = mix(120);
    post_all(&url, &third, 8).await;
    let all: Vec<_> = first.iter().chain(&second).chain(&third).cloned().collect();
    assert_eq!(env.wait_for_total(370).await, expected(&all), "counted exactly once after the lost writes");
    let refused = metric(&scrape(port).await, "bandvote_consumer_refused_batches_total", "") - refused_before;
    assert!(refused >= 1.0, "the batches after the loss were refused and re-read ({refused})");
}
