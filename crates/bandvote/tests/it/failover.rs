//! Failover of replicated servers under a running pipeline (`scripts/services ha up`: a Redis
//! primary and replica watched by three Sentinels). These kill servers, so they are ignored in the
//! parallel suite and run alone by `scripts/test`.

use std::{process::Command, time::Duration};

use bandvote_consumer::ConsumerConfig;
use bandvote_store::redis_client::{RedisTarget, Timeouts};
use futures::StreamExt;

use crate::support::{MONGO, PATIENCE, TestEnv, TestVote, expected, mix, post_vote, repo_root, wait_for};

const SENTINELS: &str = "127.0.0.1:26379,127.0.0.1:26380,127.0.0.1:26381";

/// `scripts/services ha ARGS…`; its output.
fn ha(args: &[&str]) -> String {
    let output = Command::new(repo_root().join("scripts/services"))
        .arg("ha")
        .args(args)
        .output()
        .expect("scripts/services runs");
    assert!(
        output.status.success(),
        "scripts/services ha {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// Starts the replicated Redis nodes again even if the test fails half-way.
struct RestartRedisOnDrop;

impl Drop for RestartRedisOnDrop {
    fn drop(&mut self) {
        ha(&["start", "redis-1"]);
        ha(&["start", "redis-2"]);
    }
}

/// Posts every vote under its own Idempotency-Key, `concurrency` at a time, retrying each until it
/// is answered 202 (the same key: a retry is the same vote).
async fn post_keyed(url: String, votes: Vec<TestVote>, concurrency: usize) {
    let client = reqwest::Client::new();
    futures::stream::iter(votes.into_iter().enumerate())
        .for_each_concurrent(concurrency, |(i, vote)| {
            let (client, url) = (client.clone(), url.clone());
            async move {
                let key = format!("failover-{i:05}");
                for _ in 0..100 {
                    let (status, _) = post_vote(&client, &url, vote.body(), Some(&key)).await;
                    if status == 202 {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                panic!("vote {key} was never accepted");
            }
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "kills the replicated Redis primary; scripts/test runs it alone after `scripts/services ha up`"]
async fn the_consumer_follows_a_redis_failover_and_counts_every_vote_once() {
    let env = TestEnv::new().await;
    let redis_url = format!("redis-sentinel://{SENTINELS}/{}#bandvote", env.redis_db);
    let target = RedisTarget::parse(&redis_url).expect("sentinel url");
    let mut redis = target.connect(Timeouts::default()).await.expect("the sentinels name a primary");
    let _: () = redis::cmd("FLUSHDB").query_async(&mut redis).await.expect("flushdb");

    let consumer = ConsumerConfig { redis_url: redis_url.clone().into(), ..env.consumer_config() };
    let app = bandvote_consumer::App::build(consumer).await.expect("consumer builds through the sentinels");
    tokio::spawn(app.run(env.shutdown.clone()));
    let base = env.start_grpc_path().await;

    let votes = mix(1200);
    let sender = tokio::spawn(post_keyed(format!("{base}/grpc/votes"), votes.clone(), 4));
    let total = || {
        let mut redis = redis.clone();
        async move { redis::cmd("GET").arg("votes:total").query_async::<Option<u64>>(&mut redis).await.ok().flatten() }
    };
    wait_for("the first votes counted", PATIENCE, || async { total().await.filter(|n| *n >= 200) }).await;

    let _restart = RestartRedisOnDrop;
    let before = ha(&["primary"]);
    ha(&["kill", "primary"]);
    let after = wait_for("a replica promoted by the sentinels", Duration::from_secs(30), || async {
        let now = ha(&["primary"]);
        (now != before).then_some(now)
    })
    .await;
    eprintln!("failover: primary {before} -> {after}");

    sender.await.expect("every vote accepted");
    let want = expected(&votes);
    let audit = wait_for("every vote counted on the new primary", Duration::from_secs(60), || async {
        let audit = bandvote_store::audit::audit(&redis_url, &redis_url, MONGO, &env.mongo_db, None).await.ok()?;
        (audit.counted.total >= want.total && audit.logged.total >= want.total).then_some(audit)
    })
    .await;
    assert_eq!(audit.counted.total, want.total, "counted exactly once after the failover");
    assert_eq!(audit.counted.bands, want.bands, "every band counted exactly once after the failover");
    assert_eq!(audit.counted.albums, want.albums, "every album counted exactly once after the failover");
    assert!(audit.agree, "the counters agree with the log");
    env.shutdown.cancel();
}
