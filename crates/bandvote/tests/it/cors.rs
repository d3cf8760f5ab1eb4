//! CORS, closed by default. With `--cors-origins`, a page on a listed origin (the web app served by
//! the API on another host, as on Cloud Run) may post votes through either gateway and read the
//! API with `GET`; pages on other origins may not. The producers write to embedded storage here,
//! so no server is needed.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use bandvote_ingest::{
    grpc_gateway::GatewayConfig,
    producer::{self, FrontDoor},
};
use bandvote_queue::VoteQueue;
use bandvote_runtime::shutdown::CancellationToken;
use bandvote_wasm::WasmGatewayConfig;
use reqwest::{Client, Method, Response};

const APP: &str = "https://results.example";
const VOTE: &str = r#"{"name":"Alux Nahual","album":"El Viaje","year":"2011","rank":"8.6"}"#;

/// Both gateways in front of producers writing to embedded storage in `dir`, each gateway
/// allowing `origins`; their vote URLs (gRPC, wasm), once each has accepted a vote.
async fn vote_urls(dir: &std::path::Path, origins: &[&str], shutdown: &CancellationToken) -> [String; 2] {
    let storage = bandvote_embedded::Storage::open(dir, Duration::from_secs(3600)).expect("storage");
    let queue: Arc<dyn VoteQueue> = storage;
    let local = SocketAddr::from(([127, 0, 0, 1], 0));
    let grace = Duration::from_secs(1);
    let grpc =
        producer::App::with_queue(local, Arc::clone(&queue), None, grace, &[FrontDoor::Grpc], &Default::default())
            .await;
    let http =
        producer::App::with_queue(local, Arc::clone(&queue), None, grace, &[FrontDoor::Http], &Default::default())
            .await;
    let (grpc, http) = (grpc.expect("producer"), http.expect("producer"));
    let (grpc_upstream, http_upstream) = (
        format!("http://{}", grpc.local_addr().expect("addr")),
        format!("http://{}", http.local_addr().expect("addr")),
    );
    tokio::spawn(grpc.run(shutdown.clone()));
    tokio::spawn(http.run(shutdown.clone()));

    let cors_origins: Vec<String> = origins.iter().map(|o| (*o).to_owned()).collect();
    let gateway = bandvote_ingest::grpc_gateway::App::build(GatewayConfig {
        listen: local,
        upstream: grpc_upstream,
        cors_origins: cors_origins.clone(),
        ..GatewayConfig::default()
    })
    .await
    .expect("grpc-gateway");
    let wasm = bandvote_wasm::App::build(WasmGatewayConfig {
        listen: local,
        upstream: http_upstream,
        cors_origins,
        max_instances: 16,
        ..WasmGatewayConfig::default()
    })
    .await
    .expect("wasm-gateway");
    let bases = (
        format!("http://{}", gateway.local_addr().expect("addr")),
        format!("http://{}", wasm.local_addr().expect("addr")),
    );
    tokio::spawn(gateway.run(shutdown.clone()));
    tokio::spawn(wasm.run(shutdown.clone()));
    let urls = [format!("{}/grpc/votes", bases.0), format!("{}/wasm/votes", bases.1)];
    let client = Client::new();
    for url in &urls {
        crate::support::wait_for("the producer behind the gateway", crate::support::PATIENCE, || async {
            (vote(&client, url, APP).await.status() == 202).then_some(())
        })
        .await;
    }
    urls
}

/// The browser's preflight before a cross-origin vote with a key and a voter token.
async fn preflight(client: &Client, url: &str, origin: &str) -> Response {
    client
        .request(Method::OPTIONS, url)
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type,idempotency-key,x-voter-id")
        .send()
        .await
        .expect("preflight answered")
}

/// The vote itself, as the browser sends it after the preflight.
async fn vote(client: &Client, url: &str, origin: &str) -> Response {
    client
        .post(url)
        .header("origin", origin)
        .header("content-type", "application/json")
        .header("idempotency-key", uuid::Uuid::now_v7().to_string())
        .body(VOTE)
        .send()
        .await
        .expect("vote answered")
}

/// A fresh data directory for this test.
fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("bandvote-cors-{name}-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir).expect("scratch directory");
    dir
}

fn header<'a>(response: &'a Response, name: &str) -> Option<&'a str> {
    response.headers().get(name).and_then(|v| v.to_str().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listed_origins_may_post_votes_through_both_gateways_and_others_may_not() {
    bandvote_runtime::telemetry::init_for_tests();
    let dir = scratch("listed");
    let shutdown = CancellationToken::new();
    let urls = vote_urls(&dir, &[APP, "https://other-app.example"], &shutdown).await;
    let client = Client::new();
    for url in urls {
        let allowed = preflight(&client, &url, APP).await;
        assert!(allowed.status().is_success(), "{url}: preflight answered {}", allowed.status());
        assert_eq!(header(&allowed, "access-control-allow-origin"), Some(APP), "{url}");
        assert!(header(&allowed, "access-control-allow-methods").is_some_and(|m| m.contains("POST")), "{url}");
        let headers = header(&allowed, "access-control-allow-headers").unwrap_or_default().to_ascii_lowercase();
        for needed in ["content-type", "idempotency-key", "x-voter-id"] {
            assert!(headers.contains(needed), "{url}: {needed} not allowed in {headers:?}");
        }

        let accepted = vote(&client, &url, APP).await;
        assert_eq!(accepted.status(), 202, "{url}");
        assert_eq!(header(&accepted, "access-control-allow-origin"), Some(APP), "{url}");
        assert!(
            header(&accepted, "access-control-expose-headers")
                .is_some_and(|h| h.to_ascii_lowercase().contains("retry-after")),
            "{url}: the page can read Retry-After"
        );

        let stranger = "https://elsewhere.example";
        assert_eq!(header(&preflight(&client, &url, stranger).await, "access-control-allow-origin"), None, "{url}");
        assert_eq!(header(&vote(&client, &url, stranger).await, "access-control-allow-origin"), None, "{url}");
    }
    shutdown.cancel();
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_cors_origins_no_page_on_another_origin_may_post() {
    bandvote_runtime::telemetry::init_for_tests();
    let dir = scratch("closed");
    let shutdown = CancellationToken::new();
    let urls = vote_urls(&dir, &[], &shutdown).await;
    let client = Client::new();
    for url in urls {
        let answer = preflight(&client, &url, APP).await;
        assert_eq!(header(&answer, "access-control-allow-origin"), None, "{url}: {}", answer.status());
        assert_eq!(header(&vote(&client, &url, APP).await, "access-control-allow-origin"), None, "{url}");
    }
    shutdown.cancel();
    let _ = std::fs::remove_dir_all(dir);
}

/// The API alone (in this process) allowing `origins`; its base URL. Only `/api/config`, which
/// reads no store, is fetched, so no server is needed.
async fn api(origins: &[&str], shutdown: &CancellationToken) -> String {
    let api = bandvote_api::App::build(
        bandvote_api::ApiConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            cors_origins: origins.iter().map(|o| (*o).to_owned()).collect(),
            ..bandvote_api::ApiConfig::default()
        },
        shutdown.clone(),
    )
    .await
    .expect("api builds");
    let base = format!("http://{}", api.local_addr().expect("addr"));
    tokio::spawn(api.run(shutdown.clone()));
    base
}

/// The browser's preflight before a cross-origin `method` on `url`.
async fn api_preflight(client: &Client, url: &str, origin: &str, method: &str) -> Response {
    client
        .request(Method::OPTIONS, url)
        .header("origin", origin)
        .header("access-control-request-method", method)
        .send()
        .await
        .expect("preflight answered")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_lets_listed_origins_read_with_get_only_and_no_other_origin() {
    bandvote_runtime::telemetry::init_for_tests();
    let shutdown = CancellationToken::new();
    let base = api(&[APP], &shutdown).await;
    let client = Client::new();
    for path in ["/api/results", "/api/logs", "/api/stream", "/api/config"] {
        let url = format!("{base}{path}");
        let allowed = api_preflight(&client, &url, APP, "GET").await;
        assert!(allowed.status().is_success(), "{path}: preflight answered {}", allowed.status());
        assert_eq!(header(&allowed, "access-control-allow-origin"), Some(APP), "{path}");
        let methods = header(&allowed, "access-control-allow-methods").unwrap_or_default().to_owned();
        assert!(methods.contains("GET") && !methods.contains("POST"), "{path}: {methods:?}");
        let stranger = api_preflight(&client, &url, "https://elsewhere.example", "GET").await;
        assert_eq!(header(&stranger, "access-control-allow-origin"), None, "{path}");
    }
    let url = format!("{base}/api/config");
    let read = client.get(&url).header("origin", APP).send().await.expect("config");
    assert_eq!((read.status().as_u16(), header(&read, "access-control-allow-origin")), (200, Some(APP)));
    let other = client.get(&url).header("origin", "https://elsewhere.example").send().await.expect("config");
    assert_eq!(header(&other, "access-control-allow-origin"), None);
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_cors_origins_no_page_on_another_origin_may_read_the_api() {
    bandvote_runtime::telemetry::init_for_tests();
    let shutdown = CancellationToken::new();
    let base = api(&[], &shutdown).await;
    let client = Client::new();
    let url = format!("{base}/api/config");
    let answer = api_preflight(&client, &url, APP, "GET").await;
    assert_eq!(header(&answer, "access-control-allow-origin"), None, "{}", answer.status());
    let read = client.get(&url).header("origin", APP).send().await.expect("config");
    assert_eq!((read.status().as_u16(), header(&read, "access-control-allow-origin")), (200, None));
    shutdown.cancel();
}

/// A voter token is never readable by a page on another site, not even with `--cors-origins '*'`:
/// a request from a foreign origin gets `403` and no token; the API's own pages, and origins listed
/// by name, get one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn voter_tokens_are_never_issued_to_other_sites_even_with_any_origin_allowed() {
    bandvote_runtime::telemetry::init_for_tests();
    let shutdown = CancellationToken::new();
    let mut bases = Vec::new();
    for origins in [vec!["*".to_owned()], vec![APP.to_owned()]] {
        let api = bandvote_api::App::build(
            bandvote_api::ApiConfig {
                listen: SocketAddr::from(([127, 0, 0, 1], 0)),
                cors_origins: origins,
                voter_secret: Some("voter-secret-for-cors".into()),
                ..bandvote_api::ApiConfig::default()
            },
            shutdown.clone(),
        )
        .await
        .expect("api builds");
        let base = format!("http://{}", api.local_addr().expect("addr"));
        tokio::spawn(api.run(shutdown.clone()));
        bases.push(base);
    }
    let client = Client::new();
    let issue = |base: &str, origin: Option<&str>| {
        let mut request = client.post(format!("{base}/api/voter-token"));
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        async move {
            let answer = request.send().await.expect("answered");
            let status = answer.status().as_u16();
            let allowed = header(&answer, "access-control-allow-origin").map(str::to_owned);
            let body: serde_json::Value = answer.json().await.unwrap_or_default();
            (status, allowed, body["token"].is_string())
        }
    };
    for base in &bases {
        for stranger in ["https://elsewhere.example", "null", APP.replace("https", "http").as_str()] {
            let (status, _, token) = issue(base, Some(stranger)).await;
            assert_eq!((status, token), (403, false), "{base}: a page on {stranger}");
        }
        assert_eq!(issue(base, None).await.0, 200, "{base}: no Origin (not a browser page)");
        let (status, _, token) = issue(base, Some(base)).await;
        assert_eq!((status, token), (200, true), "{base}: the API's own page");
    }
    let (status, allowed, token) = issue(&bases[1], Some(APP)).await;
    assert_eq!((status, allowed.as_deref(), token), (200, Some(APP), true), "an origin listed by name");
    shutdown.cancel();
}
