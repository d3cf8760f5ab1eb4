//! No side door: `bandvote up` listens on its public port only (its gateways reach the producer in
//! process), and in a cluster the producers take votes from the gateways only (the shared ingest
//! secret) and only for a round that could take them now.

use std::{net::SocketAddr, time::Duration};

use bandvote_core::round::{self, Action, NewRound, RoundStore};
use bandvote_ingest::{
    ingest_secret::{IngestSecret, SECRET_HEADER},
    producer::{FrontDoor, Guard, ProducerConfig},
    rounds::RoundGate,
};
use bandvote_proto::v1::{SubmitVoteRequest, Vote, vote_service_client::VoteServiceClient};
use secrecy::SecretString;

use crate::support::{TestEnv, embedded_up, mix, spawn_listening, wait_ready};

/// The TCP ports process `pid` listens on, from `/proc`.
fn listening_ports(pid: u32) -> Vec<u16> {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("/proc fd")
        .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .filter_map(|link| link.to_str()?.strip_prefix("socket:[")?.strip_suffix(']').map(str::to_owned))
        .collect();
    let mut ports = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // local_address, state (0A: listening) and inode.
            let (Some(local), Some(state), Some(inode)) = (fields.get(1), fields.get(3), fields.get(9)) else {
                continue;
            };
            if *state == "0A" && inodes.iter().any(|i| i == inode) {
                let port = local.rsplit(':').next().and_then(|p| u16::from_str_radix(p, 16).ok());
                ports.extend(port);
            }
        }
    }
    ports.sort_unstable();
    ports.dedup();
    ports
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_listens_on_its_public_port_only() {
    let dir = std::env::temp_dir().join(format!("bandvote-one-listener-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (up, base) = spawn_listening(&mut embedded_up(0, &dir)).await;
    wait_ready(&base).await;
    // Both paths work, through the producer inside.
    let client = reqwest::Client::new();
    for path in ["grpc", "wasm"] {
        let url = format!("{base}/{path}/votes");
        let (status, body) = crate::support::post_vote(&client, &url, mix(1)[0].body(), None).await;
        assert_eq!(status, 202, "{path}: {body}");
    }
    let public: u16 = base.rsplit(':').next().and_then(|p| p.parse().ok()).expect("the port");
    assert_eq!(listening_ports(up.id().expect("pid")), [public]);
    let _ = std::fs::remove_dir_all(&dir);
}

const SECRET: &str = "a-secret-of-the-gateways-0123456789";

/// Rounds in `env`'s Redis: `semi` open, `old` closed an hour ago, `later` not yet open.
async fn rounds(env: &TestEnv) {
    let store = bandvote_store::rounds::RedisRounds::new(&env.redis_url()).expect("rounds");
    let new = |id: &str| NewRound {
        id: id.into(),
        title: id.into(),
        opens_at: None,
        closes_at: None,
        results: round::Visibility::default(),
        ballot: Vec::new(),
    };
    for id in ["semi", "old", "later"] {
        round::update(&store, |rounds, now| round::create(rounds, new(id), now)).await.expect("created");
    }
    round::update(&store, |rounds, now| round::change(rounds, "semi", Action::Open, now)).await.expect("opened");
    round::update(&store, |rounds, now| {
        let mut old = rounds.iter().find(|r| r.id == "old").cloned().expect("old");
        old.opens_at = Some(now - Duration::from_secs(7200));
        old.closes_at = Some(now - Duration::from_secs(3600));
        Ok(old)
    })
    .await
    .expect("closed long ago");
    assert_eq!(store.load().await.expect("rounds").rounds.len(), 3);
}

/// Starts a grpc-producer behind [`guard`]; its base URL.
async fn grpc_producer(env: &TestEnv) -> String {
    let config = ProducerConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        kafka: env.kafka(),
        guard: guard(env),
        ..ProducerConfig::default()
    };
    let producer = bandvote_ingest::producer::App::build(config, FrontDoor::Grpc).await.expect("producer");
    let upstream = format!("http://{}", producer.local_addr().expect("addr"));
    tokio::spawn(producer.run(env.shutdown.clone()));
    upstream
}

fn guard(env: &TestEnv) -> Guard {
    let url = SecretString::from(env.redis_url());
    Guard {
        secret: Some(IngestSecret::new(&SecretString::from(SECRET)).expect("a secret")),
        rounds: RoundGate::from_redis(Some(&url)).expect("rounds"),
    }
}

/// `POST /votes` to the http-producer at `addr`, with `secret` and `round` if given.
async fn post(client: &reqwest::Client, addr: SocketAddr, secret: Option<&str>, round: Option<&str>) -> u16 {
    let mut request =
        client.post(format!("http://{addr}/votes")).header("content-type", "application/json").body(mix(1)[0].body());
    if let Some(secret) = secret {
        request = request.header(SECRET_HEADER, secret);
    }
    if let Some(round) = round {
        request = request.header("bandvote-round", round);
    }
    request.send().await.expect("answer").status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producers_take_votes_from_the_gateways_only_for_a_round_that_could_take_them() {
    let env = TestEnv::new().await;
    rounds(&env).await;
    let client = reqwest::Client::new();

    // The http-producer.
    let http = env.start_http_producer(ProducerConfig { guard: guard(&env), ..env.http_producer_config() }).await;
    assert_eq!(post(&client, http, None, Some("semi")).await, 401, "no secret");
    assert_eq!(post(&client, http, Some("a-guess-of-the-same-length-0123456"), Some("semi")).await, 401);
    for round in [Some("old"), Some("later"), Some("nope"), None] {
        assert_eq!(post(&client, http, Some(SECRET), round).await, 409, "{round:?}");
    }
    assert_eq!(post(&client, http, Some(SECRET), Some("semi")).await, 202);
    let metrics =
        client.get(format!("http://{http}/metrics")).send().await.expect("metrics").text().await.expect("text");
    let line = |name: &str| metrics.lines().find(|l| l.starts_with(name)).unwrap_or_default().to_owned();
    assert_eq!(line("bandvote_producer_unauthenticated_total"), "bandvote_producer_unauthenticated_total 2");
    assert_eq!(line("bandvote_producer_round_refusals_total"), "bandvote_producer_round_refusals_total 4");

    // The grpc-producer.
    let upstream = grpc_producer(&env).await;
    wait_ready(&upstream).await;
    let mut grpc = VoteServiceClient::connect(upstream.clone()).await.expect("connects");
    let vote = |round: &str, secret: Option<&str>| {
        let vote = Vote { name: "A".into(), album: "x".into(), year: "1999".into(), rank: String::new() };
        let mut request = tonic::Request::new(SubmitVoteRequest {
            vote: Some(vote),
            round: round.into(),
            ..SubmitVoteRequest::default()
        });
        if let Some(secret) = secret {
            request.metadata_mut().insert(SECRET_HEADER, secret.parse().expect("ascii"));
        }
        request
    };
    let refused = grpc.submit_vote(vote("semi", None)).await.expect_err("no secret");
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");
    let refused = grpc.submit_vote(vote("old", Some(SECRET))).await.expect_err("a round long closed");
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition, "{refused:?}");
    grpc.submit_vote(vote("semi", Some(SECRET))).await.expect("the open round");

    // Gateways that know the secret get their votes through; one that does not, does not.
    let gateway = |secret: Option<IngestSecret>| bandvote_ingest::grpc_gateway::GatewayConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        upstream: upstream.clone(),
        rounds_redis_url: Some(SecretString::from(env.redis_url())),
        ingest_secret: secret,
        request_timeout: Duration::from_secs(3),
        ..Default::default()
    };
    for (secret, expected) in [(guard(&env).secret, 202), (None, 500)] {
        let app = bandvote_ingest::grpc_gateway::App::build(gateway(secret)).await.expect("gateway");
        let base = format!("http://{}", app.local_addr().expect("addr"));
        tokio::spawn(app.run(env.shutdown.clone()));
        wait_ready(&base).await;
        let url = format!("{base}/grpc/votes");
        let (status, body) = crate::support::post_vote(&client, &url, mix(1)[0].body(), None).await;
        assert_eq!(status, expected, "{body}");
    }
    let mut config = TestEnv::wasm_gateway_config(&format!("http://{http}"), None);
    config.rounds_redis_url = Some(SecretString::from(env.redis_url()));
    config.reach.secret = guard(&env).secret;
    let base = env.start_wasm_gateway_from(config).await;
    wait_ready(&base).await;
    let (status, body) =
        crate::support::post_vote(&client, &format!("{base}/wasm/votes"), mix(1)[0].body(), None).await;
    assert_eq!(status, 202, "{body}");
}

/// The cluster's layout, each service on its own (gateways and producers reading the rounds from
/// Redis, the shared secret between them, the consumer, the API): a round scheduled to open and
/// close by itself takes votes only inside its window on both paths, and becomes final with exactly
/// the votes answered 202.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_scheduled_round_on_separate_services_counts_exactly_its_window_and_becomes_final() {
    let env = TestEnv::new().await;
    let url = SecretString::from(env.redis_url());
    let store = bandvote_store::rounds::RedisRounds::new(&env.redis_url()).expect("rounds");
    let now = chrono::Utc::now();
    let (opens, closes) = (now + Duration::from_secs(4), now + Duration::from_secs(10));
    let scheduled = NewRound {
        id: "semi".into(),
        title: "Semi-final".into(),
        opens_at: Some(bandvote_core::time::format(opens)),
        closes_at: Some(bandvote_core::time::format(closes)),
        results: round::Visibility::default(),
        ballot: Vec::new(),
    };
    round::update(&store, |rounds, now| round::create(rounds, scheduled.clone(), now)).await.expect("scheduled");

    // The gRPC path and the wasm path, each a producer and a gateway, with the secret and the rounds.
    let upstream = grpc_producer(&env).await;
    let gateway = bandvote_ingest::grpc_gateway::App::build(bandvote_ingest::grpc_gateway::GatewayConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        upstream,
        rounds_redis_url: Some(url.clone()),
        ingest_secret: guard(&env).secret,
        ..Default::default()
    })
    .await
    .expect("gateway");
    let grpc = format!("http://{}/grpc/votes", gateway.local_addr().expect("addr"));
    tokio::spawn(gateway.run(env.shutdown.clone()));
    let http = env.start_http_producer(ProducerConfig { guard: guard(&env), ..env.http_producer_config() }).await;
    let mut config = TestEnv::wasm_gateway_config(&format!("http://{http}"), None);
    config.rounds_redis_url = Some(url.clone());
    config.reach.secret = guard(&env).secret;
    let wasm = format!("{}/wasm/votes", env.start_wasm_gateway_from(config).await);
    env.start_consumer().await;
    let api = env.start_api().await;

    // Send on both paths, each vote under its own key, until a while after the close.
    let client = reqwest::Client::new();
    let votes = mix(400);
    let mut answered = Vec::new();
    for (i, vote) in votes.iter().enumerate() {
        let at = chrono::Utc::now();
        if at > closes + Duration::from_secs(1) {
            break;
        }
        let url = if i % 2 == 0 { &grpc } else { &wasm };
        let (status, body) = crate::support::post_vote(&client, url, vote.body(), Some(&format!("w-{i}"))).await;
        let answered_at = chrono::Utc::now();
        match status {
            202 => {
                // The gateway decided between `at` and `answered_at`, inside the window.
                assert!(answered_at >= opens && at < closes, "vote {i}: a 202 outside the window");
                answered.push(vote.clone());
            }
            409 => assert!(at < opens || answered_at >= closes, "vote {i}: a 409 inside the window: {body}"),
            other => panic!("vote {i}: {other} {body}"),
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(answered.len() > 20, "votes accepted in the window: {}", answered.len());

    // Final with exactly the 202s, as the API says.
    let result = crate::support::wait_for("the round final", Duration::from_secs(60), || async {
        let answer = client.get(format!("{api}/api/rounds/semi/result")).send().await.ok()?;
        (answer.status() == 200).then_some(())?;
        answer.json::<bandvote_core::round::Certified>().await.ok()
    })
    .await;
    assert!(result.verifies());
    assert_eq!(result.total, answered.len() as u64);
    let mut expected = bandvote_core::Counts::default();
    for vote in &answered {
        expected.add(vote.name, vote.album);
    }
    assert_eq!((result.bands, result.albums), (expected.bands, expected.albums));
}
