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
    let config = ProducerConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        kafka: env.kafka(),
        guard: guard(&env),
        ..ProducerConfig::default()
    };
    let producer = bandvote_ingest::producer::App::build(config, FrontDoor::Grpc).await.expect("producer");
    let upstream = format!("http://{}", producer.local_addr().expect("addr"));
    tokio::spawn(producer.run(env.shutdown.clone()));
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
