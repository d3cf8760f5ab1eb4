//! `bandvote`: one binary, one subcommand per service. `main` only parses the command line, starts
//! telemetry, builds the service's configuration and runs it until SIGTERM or SIGINT, then drains it
//! within `--shutdown-grace-secs` (a second signal exits at once).

mod cli;
mod config_file;
mod load;
mod receipts;
mod round;
mod up;

use crate::cli::Command;

/// mimalloc: the services allocate and free many small buffers per vote (HTTP, gRPC, JSON), where it
/// is measurably faster than the system allocator (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = config_file::parse_from(std::env::args_os()).unwrap_or_else(|error| error.exit());
    bandvote_runtime::telemetry::init(cli.log_format.is_json());
    let shutdown = bandvote_runtime::shutdown::CancellationToken::new();
    let grace = std::time::Duration::from_secs(cli.shutdown_grace_secs);
    match bandvote_runtime::shutdown::run_until_shutdown(shutdown.clone(), grace, run(cli.command, shutdown)).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "bandvote failed");
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(command: Command, shutdown: bandvote_runtime::shutdown::CancellationToken) -> anyhow::Result<()> {
    match command {
        Command::Up(args) => up::run(args.into_config()?, shutdown).await,
        Command::GrpcGateway(args) => {
            bandvote_ingest::grpc_gateway::App::build(args.into_config()?).await?.run(shutdown).await
        }
        Command::GrpcProducer(args) => {
            let door = bandvote_ingest::producer::FrontDoor::Grpc;
            bandvote_ingest::producer::App::build(args.into_config()?, door).await?.run(shutdown).await
        }
        Command::WasmGateway(args) => bandvote_wasm::App::build(args.into_config()?).await?.run(shutdown).await,
        Command::HttpProducer(args) => {
            let door = bandvote_ingest::producer::FrontDoor::Http;
            bandvote_ingest::producer::App::build(args.into_config()?, door).await?.run(shutdown).await
        }
        Command::Api(args) => {
            bandvote_api::App::build(args.into_config()?, shutdown.clone()).await?.run(shutdown).await
        }
        Command::Consumer(args) => bandvote_consumer::App::build(args.into_config()).await?.run(shutdown).await,
        Command::Load(args) => load::run(args, shutdown).await,
        Command::Round(args) => round::run(args).await,
        Command::Audit(args) => {
            use secrecy::ExposeSecret;
            let stores = &args.stores;
            let redis = stores.redis();
            let rounds = args.rounds_redis_url.as_ref().unwrap_or(&redis);
            let audit = bandvote_store::audit::audit(
                redis.expose_secret(),
                rounds.expose_secret(),
                stores.mongo_url.expose_secret(),
                &stores.mongo_db,
                args.round.as_deref(),
            )
            .await?;
            let mut out = std::io::stdout().lock();
            std::io::Write::write_all(&mut out, serde_json::to_string_pretty(&audit)?.as_bytes())?;
            std::io::Write::write_all(&mut out, b"\n")?;
            anyhow::ensure!(audit.agree, "the counters and the log disagree");
            Ok(())
        }
        Command::Probe(args) => {
            let client =
                reqwest::Client::builder().timeout(std::time::Duration::from_secs(args.timeout_secs)).build()?;
            let answer = client.get(&args.url).send().await?;
            anyhow::ensure!(answer.status().is_success(), "{} answered {}", args.url, answer.status());
            Ok(())
        }
        Command::Recount(args) => {
            let report = bandvote_store::recount::recount(&args.into_config()).await?;
            tracing::info!(
                total = report.total,
                bands = report.bands.len(),
                albums = report.albums.len(),
                "recount done"
            );
            eprintln!(
                "recounted {} votes ({} bands, {} albums) from the log into the counters",
                report.total,
                report.bands.len(),
                report.albums.len()
            );
            Ok(())
        }
    }
}
