//! `bandvote up`: every service in one process (the API included), behind one listener, with the same public paths
//! as every other deployment. The gRPC and wasm hops stay real (a loopback gRPC channel, a real
//! WebAssembly guest), so the two ingest paths can still be compared.

use std::{net::SocketAddr, sync::Arc};

use anyhow::Context;
use bandvote_api::{ApiConfig, ApiState};
use bandvote_consumer::ConsumerConfig;
use bandvote_ingest::{
    grpc_gateway::{self, GatewayConfig, GatewayState},
    grpc_producer::{self, ProducerConfig},
    http_producer::{self, HttpProducerConfig},
};
use bandvote_runtime::{health, http, shutdown::CancellationToken, shutdown::spawn_named};
use bandvote_wasm::{Host, WasmGatewayConfig};

/// What `up` runs.
#[derive(Debug, Clone)]
pub struct UpConfig {
    /// The one public listener.
    pub listen: SocketAddr,
    /// The consumer (Kafka, Redis and MongoDB settings are taken from it).
    pub consumer: ConsumerConfig,
}

/// Starts everything, prints where, and serves until `shutdown`.
pub async fn run(config: UpConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    let internal = SocketAddr::from(([127, 0, 0, 1], 0));
    let kafka = config.consumer.kafka.clone();
    // Bind the public port first: a second `up` fails here, before starting anything.
    let listener = http::bind(config.listen)
        .await
        .map_err(|error| anyhow::anyhow!("{error:#} (is another `bandvote up` running on it?)"))?;

    let grpc_producer =
        grpc_producer::App::build(ProducerConfig { listen: internal, kafka: kafka.clone(), ..Default::default() })
            .await
            .context("failed to start the grpc-producer")?;
    let grpc_upstream = format!("http://{}", grpc_producer.local_addr()?);
    let http_producer =
        http_producer::App::build(HttpProducerConfig { listen: internal, kafka: kafka.clone(), ..Default::default() })
            .await
            .context("failed to start the http-producer")?;
    let http_upstream = format!("http://{}", http_producer.local_addr()?);
    let consumer = bandvote_consumer::App::build(ConsumerConfig { listen: internal, ..config.consumer.clone() })
        .await
        .context("failed to start the consumer")?;

    let gateway = GatewayState::connect(&GatewayConfig { upstream: grpc_upstream.clone(), ..Default::default() })?;
    let wasm_config = WasmGatewayConfig { upstream: http_upstream.clone(), ..Default::default() };
    let host = Arc::new(Host::new(&wasm_config, bandvote_wasm::EMBEDDED_GUEST)?);
    let checks = vec![
        ("grpc-producer", upstream_check(grpc_upstream)),
        ("http-producer", upstream_check(http_upstream)),
        ("consumer", upstream_check(format!("http://{}", consumer.local_addr()?))),
    ];
    let api_config = ApiConfig {
        redis_url: config.consumer.redis_url.clone(),
        mongo_url: config.consumer.mongo_url.clone(),
        mongo_db: config.consumer.mongo_db.clone(),
        // The vote paths are on this same listener.
        vote_url: Some(String::new()),
        ..ApiConfig::default()
    };
    let api = ApiState::new(&api_config, shutdown.child_token()).await.context("failed to prepare the api")?;
    let router = http::with_fallbacks(
        grpc_gateway::router(gateway)
            .merge(bandvote_wasm::router(Arc::clone(&host)))
            .merge(bandvote_api::router(api.clone(), &[]))
            .merge(health::router(checks)),
    );

    let public = http::local_addr(&listener)?;
    eprintln!("bandvote up: grpc-producer, http-producer, consumer, grpc and wasm gateways in one process");
    eprintln!(
        "  Kafka {} (topic {}), Redis {}, MongoDB {} (database {})",
        kafka.brokers,
        kafka.topic,
        bandvote_consumer::redact(&config.consumer.redis_url),
        bandvote_consumer::redact(&config.consumer.mongo_url),
        config.consumer.mongo_db
    );
    eprintln!("  vote:    curl -X POST http://{public}/grpc/votes -H 'content-type: application/json' \\");
    eprintln!(
        "             -d '{{\"name\":\"Bohemia Suburbana\",\"album\":\"Mis palabras\",\"year\":\"1997\",\"rank\":\"9.5\"}}'"
    );
    eprintln!("           (or /wasm/votes for the WebAssembly path)");
    eprintln!(
        "  results: http://{public}/api/results   log: http://{public}/api/logs   live: http://{public}/api/stream"
    );
    eprintln!("  health:  http://{public}/readyz    metrics: http://{public}/metrics");
    eprintln!("  Ctrl-C drains and stops.");

    let tasks = vec![
        spawn_named("grpc-producer", shutdown.clone(), grpc_producer.run(shutdown.clone())),
        spawn_named("http-producer", shutdown.clone(), http_producer.run(shutdown.clone())),
        spawn_named("consumer", shutdown.clone(), consumer.run(shutdown.clone())),
    ];
    let ticker = host.start_epoch_ticker(shutdown.clone());
    let reader = api.start_stream();
    let served = http::serve(listener, router, shutdown.clone(), GatewayConfig::default().grace).await;
    shutdown.cancel();
    ticker.abort();
    reader.abort();
    for task in futures::future::join_all(tasks).await {
        task.context("a service panicked")??;
    }
    served
}

/// Readiness of an in-process service: its own `/readyz`.
fn upstream_check(base: String) -> health::Check {
    let client = reqwest::Client::builder().timeout(std::time::Duration::from_secs(2)).build().unwrap_or_default();
    health::check(move || {
        let (client, url) = (client.clone(), format!("{base}/readyz"));
        async move {
            match client.get(&url).send().await {
                Ok(answer) if answer.status().is_success() => Ok(()),
                Ok(answer) => Err(format!("{url} answered {}", answer.status())),
                Err(error) => Err(format!("{url}: {error}")),
            }
        }
    })
}
