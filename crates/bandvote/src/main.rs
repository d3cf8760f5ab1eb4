//! `bandvote`: one binary, one subcommand per service. `main` only parses the command line, starts
//! telemetry, builds the service's configuration and runs it until SIGTERM or SIGINT.

mod cli;
mod load;
mod up;

use clap::Parser;

use crate::cli::{Cli, Command};

/// mimalloc: the services allocate and free many small buffers per vote (HTTP, gRPC, JSON), where it
/// is measurably faster than the system allocator (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    bandvote_runtime::telemetry::init(cli.log_format.is_json());
    match run(cli.command).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "bandvote failed");
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    let shutdown = bandvote_runtime::shutdown::CancellationToken::new();
    bandvote_runtime::shutdown::cancel_on_signal(shutdown.clone());
    match command {
        Command::Up(args) => up::run(args.into_config(), shutdown).await,
        Command::GrpcGateway(args) => {
            bandvote_ingest::grpc_gateway::App::build(args.into_config()).await?.run(shutdown).await
        }
        Command::GrpcProducer(args) => {
            bandvote_ingest::grpc_producer::App::build(args.into_config()).await?.run(shutdown).await
        }
        Command::WasmGateway(args) => bandvote_wasm::App::build(args.into_config()).await?.run(shutdown).await,
        Command::HttpProducer(args) => {
            bandvote_ingest::http_producer::App::build(args.into_config()).await?.run(shutdown).await
        }
        Command::Api(args) => bandvote_api::App::build(args.into_config()).await?.run(shutdown).await,
        Command::Consumer(args) => bandvote_consumer::App::build(args.into_config()).await?.run(shutdown).await,
        Command::Load(args) => load::run(args, shutdown).await,
        Command::Audit(args) => {
            let audit =
                bandvote_consumer::audit::audit(&args.stores.redis_url, &args.stores.mongo_url, &args.stores.mongo_db)
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
            let report = bandvote_consumer::recount::recount(&args.into_config()).await?;
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
