//! The gRPC path end to end against real Kafka, Redis and a MongoDB-wire server:
//! `POST /grpc/votes` → grpc-gateway → grpc-producer → Kafka → consumer → Redis + MongoDB.

use std::{collections::HashSet, time::Duration};

use crate::support::{
    PATIENCE, TestEnv, assert_bad_input_is_refused_and_nothing_written, expected, mix, post_all, post_vote, wait_for,
};
use futures::StreamExt;
use mongodb::bson::doc;
use redis::AsyncCommands;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn known_mix_is_counted_exactly_in_every_redis_key_and_logged_once() {
    let env = TestEnv::new().await;
    let base = env.start_grpc_path().await;
    env.start_consumer().await;
    let votes = mix(600);
    let ids = post_all(&format!("{base}/grpc/votes"), &votes, 16).await;
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), votes.len(), "ids are unique");

    let counts = env.wait_for_total(votes.len() as u64).await;
    assert_eq!(counts, expected(&votes));

    let mut redis = env.redis().await;
    let offsets: std::collections::HashMap<String, i64> = redis.hgetall("votes:offsets").await.expect("offsets");
    let applied: i64 = offsets.values().map(|last| last + 1).sum();
    assert_eq!(applied, votes.len() as i64, "offsets cover every message: {offsets:?}");
    let timeline: redis::streams::StreamRangeReply = redis.xrange_all("votes:timeline").await.expect("timeline");
    let n: u64 = timeline.ids.iter().map(|e| e.get::<u64>("n").expect("n")).sum();
    assert_eq!(n, votes.len() as u64, "timeline entries add up to the total");
    let last_total = timeline.ids.iter().filter_map(|e| e.get::<u64>("total")).max();
    assert_eq!(last_total, Some(votes.len() as u64));
    let last: std::collections::HashMap<String, String> = redis.hgetall("votes:last").await.expect("last");
    let received = bandvote_core::time::parse(&last["received_at"]).expect("received_at is RFC 3339");
    let counted = bandvote_core::time::parse(&last["counted_at"]).expect("counted_at is RFC 3339");
    assert!(counted >= received, "counted after received: {last:?}");

    let docs = env.wait_for_logs(votes.len() as u64).await;
    let logged: HashSet<String> = docs.iter().map(|d| d.get_str("_id").expect("_id").to_owned()).collect();
    assert_eq!(logged, ids.iter().cloned().collect::<HashSet<_>>(), "one document per accepted vote");
    let first = &docs[0];
    let data = first.get_document("data").expect("data");
    for field in ["name", "album", "year", "rank"] {
        assert!(data.get_str(field).is_ok(), "data.{field} is a string in {first}");
    }
    assert_eq!(first.get_str("path").expect("path"), "grpc");
    assert!(first.get_datetime("received_at").is_ok() && first.get_datetime("counted_at").is_ok());
    let non_ascii = env.mongo().await.count_documents(doc! {"data.name": "Viernes Verde 🎸"}).await.expect("count");
    assert_eq!(non_ascii, expected(&votes).bands["Viernes Verde 🎸"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn same_idempotency_key_twice_is_counted_once_and_the_first_body_wins() {
    let env = TestEnv::new().await;
    let base = env.start_grpc_path().await;
    env.start_consumer().await;
    let client = reqwest::Client::new();
    let url = format!("{base}/grpc/votes");
    let first = r#"{"name":"Alux Nahual","album":"El Viaje","year":"2011","rank":"8.6"}"#;
    let retry = r#"{"name":"Bohemia Suburbana","album":"Mis palabras","year":"1997","rank":"9.5"}"#;
    let (s1, b1) = post_vote(&client, &url, first.into(), Some("show-1:vote.42")).await;
    let (s2, b2) = post_vote(&client, &url, first.into(), Some("show-1:vote.42")).await;
    let (s3, b3) = post_vote(&client, &url, retry.into(), Some("show-1:vote.42")).await;
    assert_eq!((s1, s2, s3), (202, 202, 202));
    for body in [&b1, &b2, &b3] {
        assert_eq!(body["id"], "show-1:vote.42");
        assert_eq!(body["path"], "grpc");
    }
    // A different key is a different vote.
    let (s4, b4) = post_vote(&client, &url, first.into(), Some("show-1:vote.43")).await;
    assert_eq!((s4, b4["id"].as_str()), (202, Some("show-1:vote.43")));

    let counts = env.wait_for_total(2).await;
    assert_eq!(counts.bands.get("Alux Nahual"), Some(&2));
    assert_eq!(counts.bands.get("Bohemia Suburbana"), None, "the retry's different body is not counted");
    let docs = env.wait_for_logs(2).await;
    let kept = docs.iter().find(|d| d.get_str("_id") == Ok("show-1:vote.42")).expect("logged");
    assert_eq!(kept.get_document("data").expect("data").get_str("name"), Ok("Alux Nahual"));
    // The tally remembers a client's key for the default 24 h: a retry a day later is a new vote.
    let mut redis = env.redis().await;
    let ttl: i64 = redis::cmd("PTTL").arg("votes:seen:show-1:vote.42").query_async(&mut redis).await.expect("pttl");
    let day = 24 * 3600 * 1000;
    assert!((day - 300_000..=day).contains(&ttl), "votes:seen:show-1:vote.42 expires in {ttl} ms, not in 24 h");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_input_gets_its_status_and_error_and_writes_nothing() {
    let env = TestEnv::new().await;
    let base = env.start_grpc_path().await;
    env.start_consumer().await;
    assert_bad_input_is_refused_and_nothing_written(&env, &base, "grpc").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_message_that_is_not_a_vote_goes_to_the_dead_letter_topic_and_counting_goes_on() {
    let env = TestEnv::new().await;
    let base = env.start_grpc_path().await;
    env.start_consumer().await;
    let url = format!("{base}/grpc/votes");
    let before = mix(20);
    post_all(&url, &before, 4).await;
    // Wait for the topic to exist (created by the services) before writing to it directly.
    env.wait_for_total(20).await;
    let producer = bandvote_queue::KafkaProducer::new(env.kafka()).expect("producer");
    let poison: [&[u8]; 3] = [b"not json at all", br#"{"v":1,"id":"x","name":"n"}"#, br#"{"v":9,"id":"y"}"#];
    for (i, payload) in poison.iter().enumerate() {
        producer.send(&env.topic, format!("poison-{i}").as_bytes(), payload, None).await.expect("poison sent");
    }
    let after = mix(30);
    post_all(&url, &after, 4).await;
    let all: Vec<_> = before.iter().chain(&after).cloned().collect();
    assert_eq!(env.wait_for_total(50).await, expected(&all));
    assert_eq!(env.wait_for_logs(50).await.len(), 50);

    let dead = read_topic(&format!("{}.dlq", env.topic), 1, poison.len()).await;
    let payloads: HashSet<Vec<u8>> = dead.into_iter().map(|(_, payload)| payload).collect();
    for payload in poison {
        assert!(payloads.contains(payload), "{} is in the dead-letter topic", String::from_utf8_lossy(payload));
    }
}

/// Reads at least `n` messages from partitions `0..partitions` of `topic`, from the beginning; their
/// keys and payloads.
async fn read_topic(topic: &str, partitions: i32, n: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
    use rdkafka::{
        ClientConfig, Message, Offset, TopicPartitionList,
        consumer::{Consumer, StreamConsumer},
    };
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", crate::support::KAFKA)
        .set("group.id", format!("reader-{}", uuid::Uuid::now_v7()))
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut list = TopicPartitionList::new();
    for partition in 0..partitions {
        list.add_partition_offset(topic, partition, Offset::Beginning).expect("partition");
    }
    consumer.assign(&list).expect("assign");
    let mut stream = consumer.stream();
    let mut messages = Vec::new();
    while messages.len() < n {
        let message = tokio::time::timeout(PATIENCE, stream.next()).await.expect("message within patience");
        let message = message.expect("stream open").expect("message");
        messages.push((message.key().unwrap_or_default().to_vec(), message.payload().unwrap_or_default().to_vec()));
    }
    messages
}

/// Votes that arrive while the producer is still creating the votes topic are either refused with
/// 503 (and retried by the client) or stored: none is acknowledged and lost. A
/// producer that wrote as soon as the topic's metadata appeared had votes acknowledged and never
/// stored in about one start in ten; five starts per run.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn votes_sent_while_the_topic_is_being_created_are_acknowledged_only_once_stored() {
    for start in 0..5 {
        let env = TestEnv::new().await;
        let (base, _) = env.spawn_grpc_path(env.kafka()).await;
        let url = format!("{base}/grpc/votes");
        let client = reqwest::Client::new();
        let votes = mix(120);
        let refused = std::sync::atomic::AtomicUsize::new(0);
        let accepted: HashSet<String> = futures::stream::iter(&votes)
            .map(|vote| {
                let (client, url, refused) = (client.clone(), url.clone(), &refused);
                async move {
                    wait_for("the vote to be accepted", PATIENCE, || async {
                        let (status, body) = post_vote(&client, &url, vote.body(), None).await;
                        match status {
                            202 => Some(body["id"].as_str().expect("id").to_owned()),
                            503 => {
                                refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                None
                            }
                            other => panic!("vote answered {other} {body}"),
                        }
                    })
                    .await
                }
            })
            .buffer_unordered(16)
            .collect()
            .await;
        let stored: HashSet<String> = topic_keys(&env.topic).await.into_iter().collect();
        let lost: Vec<_> = accepted.difference(&stored).collect();
        assert!(lost.is_empty(), "start {start}: answered 202 but not in the topic: {lost:?}");
        tracing::info!(start, refused = refused.into_inner(), "all accepted votes stored");
    }
}

/// The keys of every message of the votes topic `topic` (6 partitions), as far as its end right now.
async fn topic_keys(topic: &str) -> Vec<String> {
    use rdkafka::{
        ClientConfig,
        consumer::{BaseConsumer, Consumer},
    };
    let probe: BaseConsumer =
        ClientConfig::new().set("bootstrap.servers", crate::support::KAFKA).create().expect("client");
    let mut end = 0;
    for partition in 0..6 {
        let (low, high) = probe.fetch_watermarks(topic, partition, Duration::from_secs(5)).expect("watermarks");
        end += high - low;
    }
    let end = usize::try_from(end).expect("a message count");
    read_topic(topic, 6, end).await.into_iter().map(|(key, _)| String::from_utf8_lossy(&key).into_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn producer_and_gateway_report_ready_only_when_their_dependencies_answer() {
    let env = TestEnv::new().await;
    let base = env.start_grpc_path().await;
    let client = reqwest::Client::new();
    let ready = wait_for("gateway ready", PATIENCE, || async {
        let response = client.get(format!("{base}/readyz")).send().await.ok()?;
        (response.status() == 200).then_some(())
    })
    .await;
    let () = ready;
    assert_eq!(client.get(format!("{base}/healthz")).send().await.expect("healthz").status(), 200);
    // The gateway's own series are on its page, and an accepted vote moves its counter (the
    // recorder is shared by the tests in this process: others may move it too, never back).
    let scrape =
        async || client.get(format!("{base}/metrics")).send().await.expect("metrics").text().await.expect("text");
    let accepted = "bandvote_votes_accepted_total";
    let before = scrape().await;
    assert!(before.contains(&format!("# TYPE {accepted} counter")), "{before:.400}");
    assert!(before.contains("bandvote_votes_unavailable_total{path=\"grpc\"}"), "{before:.400}");
    let (status, _) = post_vote(&client, &format!("{base}/grpc/votes"), mix(1)[0].body(), None).await;
    assert_eq!(status, 202);
    let after = scrape().await;
    let grpc = "path=\"grpc\"";
    assert!(
        crate::support::metric(&after, accepted, grpc) >= crate::support::metric(&before, accepted, grpc) + 1.0,
        "{after:.400}"
    );

    // A gateway whose producer is not there is alive but not ready, and answers votes with 503.
    let lonely = bandvote_ingest::grpc_gateway::App::build(bandvote_ingest::grpc_gateway::GatewayConfig {
        listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        upstream: "http://127.0.0.1:1".into(),
        ..Default::default()
    })
    .await
    .expect("gateway builds");
    let lonely_base = format!("http://{}", lonely.local_addr().expect("addr"));
    tokio::spawn(lonely.run(env.shutdown.clone()));
    assert_eq!(client.get(format!("{lonely_base}/healthz")).send().await.expect("healthz").status(), 200);
    assert_eq!(client.get(format!("{lonely_base}/readyz")).send().await.expect("readyz").status(), 503);
    let started = std::time::Instant::now();
    let response = client
        .post(format!("{lonely_base}/grpc/votes"))
        .header("content-type", "application/json")
        .body(r#"{"name":"a","album":"b","year":"2000","rank":"1"}"#)
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status().as_u16(), 503);
    assert!(response.headers().contains_key("retry-after"));
    assert!(started.elapsed() < Duration::from_secs(10), "answered, not hung");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn votes_sent_together_are_each_answered_as_if_sent_alone() {
    use bandvote_proto::v1::{SubmitVoteRequest, SubmitVotesRequest, Vote, vote_service_client::VoteServiceClient};
    let env = TestEnv::new().await;
    let (_, producer) = env.spawn_grpc_path(env.kafka()).await;
    crate::support::wait_ready(&producer).await;
    env.start_consumer().await;
    let mut client = VoteServiceClient::connect(producer).await.expect("connects");
    let vote = |name: &str, year: &str, id: &str, client_key: bool| SubmitVoteRequest {
        vote: Some(Vote { name: name.into(), album: "Warm Up".into(), year: year.into(), rank: "8.5".into() }),
        id: id.into(),
        client_key,
        ..SubmitVoteRequest::default()
    };
    let votes = vec![
        vote("Los Caracoles", "2019", "", false),
        vote("Los Caracoles", "not a year", "", false),
        vote("Trueno Azul", "2021", "together-key-1", true),
        vote("Trueno Azul", "2021", "not a key \u{1}", true),
        vote("Trueno Azul", "2021", "together-key-1", true),
    ];
    let outcomes = client.submit_votes(SubmitVotesRequest { votes }).await.expect("answered").into_inner().outcomes;
    let summary: Vec<(i32, &str)> = outcomes.iter().map(|o| (o.code, o.field.as_str())).collect();
    let invalid = tonic::Code::InvalidArgument as i32;
    assert_eq!(summary, [(0, ""), (invalid, "year"), (0, ""), (invalid, "id"), (0, "")]);
    assert!(!outcomes[0].id.is_empty());
    assert_eq!((outcomes[2].id.as_str(), outcomes[4].id.as_str()), ("together-key-1", "together-key-1"));
    // Three queued, the key's two copies counted once.
    let counts = env.wait_for_total(2).await;
    assert_eq!(counts.bands.get("Trueno Azul"), Some(&1), "{counts:?}");
    assert_eq!(counts.bands.get("Los Caracoles"), Some(&1), "{counts:?}");

    // Past the bound the whole call is refused, and nothing of it is queued.
    let too_many = (0..=512).map(|_| vote("Los Caracoles", "2019", "", false)).collect();
    let status = client.submit_votes(SubmitVotesRequest { votes: too_many }).await.expect_err("refused");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(env.counts().await.total, 2);
}
