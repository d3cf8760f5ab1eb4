//! Where a vote lands in the votes topic does not change whether it counts. The producers send the
//! votes without a client's key of one short window to one partition and the next window's to the
//! next (sticky partitioning); a client's key follows its hash, yet its retry can still land on
//! another partition than its first try (the topic given more partitions in between, a writer that
//! partitions otherwise) and be read by another consumer, before or after a rebalance.

use std::{collections::BTreeSet, time::Duration};

use bandvote_core::{IngestPath, Vote, VoteId, VoteMessage};
use rdkafka::{
    ClientConfig,
    message::{Header, OwnedHeaders},
    producer::{FutureProducer, FutureRecord},
};

use crate::support::{KAFKA, TestEnv, expected, mix, post_vote};

/// Votes retried with their keys through the gateway across the sticky windows, the same keys
/// written again straight into every partition of the topic (as a client's retries could land),
/// and one of the two consumer processes killed in the middle: each key is counted and logged once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_retried_key_on_every_partition_is_counted_and_logged_once() {
    let env = TestEnv::new().await;
    let base = env.start_grpc_path().await;
    let (mut doomed, _) = env.spawn_consumer_process().await;
    let (_survivor, _) = env.spawn_consumer_process().await;
    let url = format!("{base}/grpc/votes");
    let client = reqwest::Client::new();
    let votes = mix(40);
    let keys: Vec<String> = (0..votes.len()).map(|i| format!("sticky-{i}")).collect();

    // Each vote sent, then retried with its key a window or two later.
    for (vote, key) in votes[..20].iter().zip(&keys) {
        assert_eq!(post_vote(&client, &url, vote.body(), Some(key)).await.0, 202);
    }
    tokio::time::sleep(Duration::from_millis(15)).await;
    for (vote, key) in votes[..20].iter().zip(&keys) {
        assert_eq!(post_vote(&client, &url, vote.body(), Some(key)).await.0, 202);
    }
    env.wait_for_total(20).await;

    // The same keys, as messages on every partition, while a consumer dies and the other takes its
    // partitions over.
    let producer: FutureProducer = ClientConfig::new().set("bootstrap.servers", KAFKA).create().expect("producer");
    let written = async {
        for (vote, key) in votes.iter().zip(&keys) {
            let id = VoteId::from_client_key(key).expect("a valid key");
            let vote = Vote::from_strings(vote.name, vote.album, vote.year, vote.rank).expect("a vote");
            let now = bandvote_core::time::format(chrono::Utc::now());
            let message = VoteMessage::new(&id, vote, IngestPath::Grpc, now, "default".to_owned()).to_json();
            for partition in 0..6 {
                let header = Header { key: bandvote_queue::kafka::CLIENT_KEY_HEADER, value: Some("1") };
                let record = FutureRecord::to(&env.topic)
                    .partition(partition)
                    .key(id.as_str())
                    .payload(&message)
                    .headers(OwnedHeaders::new().insert(header));
                producer.send(record, Duration::from_secs(10)).await.expect("the message is written");
            }
        }
    };
    let killed = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        doomed.start_kill().expect("the consumer is killed");
    };
    tokio::join!(written, killed);

    // Read to the topic's end (all 280 messages), not one more counted.
    let counts = env.wait_for_total(40).await;
    assert_eq!(counts, expected(&votes), "each key counted once, whatever partitions it was on");
    let logged = env.wait_for_logs(40).await;
    let ids: BTreeSet<String> = logged.iter().map(|d| d.get_str("_id").expect("_id").to_owned()).collect();
    let want: BTreeSet<String> =
        keys.iter().map(|k| VoteId::from_client_key(k).expect("key").as_str().to_owned()).collect();
    assert_eq!(ids, want, "one log document per key");
}
