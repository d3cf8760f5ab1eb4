//! One shutdown coordinator per process: a [`CancellationToken`] cancelled by SIGTERM or SIGINT, or
//! by any task that fails; the drain that follows is bounded by a grace period, and a second signal
//! ends the process at once ([`run_until_shutdown`]).

use std::{future::Future, time::Duration};

use tokio::task::JoinHandle;
pub use tokio_util::sync::CancellationToken;

/// The exit code after a second signal: 128 + SIGINT, as a shell reports an interrupted program.
pub const SECOND_SIGNAL_EXIT_CODE: i32 = 130;

/// Runs `service` until it ends. The first SIGTERM or SIGINT cancels `token` (the service drains);
/// if the drain is still going after `grace`, this returns an error and the work left is
/// abandoned; a second signal exits the process at once with [`SECOND_SIGNAL_EXIT_CODE`].
pub async fn run_until_shutdown<F>(token: CancellationToken, grace: Duration, service: F) -> anyhow::Result<()>
where
    F: Future<Output = anyhow::Result<()>>,
{
    let signals = tokio::spawn(handle_signals(token.clone()));
    let bounded = async {
        token.cancelled().await;
        tokio::time::sleep(grace).await;
    };
    let result = tokio::select! {
        result = service => result,
        () = bounded => Err(anyhow::anyhow!(
            "the drain took longer than the {}s grace period; exiting with work left undone",
            grace.as_secs_f64()
        )),
    };
    signals.abort();
    result
}

async fn handle_signals(token: CancellationToken) {
    wait_for_signal().await;
    tracing::info!("shutdown requested, draining (a second signal exits at once)");
    token.cancel();
    wait_for_signal().await;
    tracing::warn!("second signal: exiting at once");
    std::process::exit(SECOND_SIGNAL_EXIT_CODE);
}

#[cfg(unix)]
async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() {
    let _ = tokio::signal::ctrl_c().await;
}

/// Spawns a long-lived task by name. If it fails, the failure is logged and `token` is cancelled so
/// the rest of the process drains and exits; the handle yields the task's result.
pub fn spawn_named<F>(name: &'static str, token: CancellationToken, task: F) -> JoinHandle<anyhow::Result<()>>
where
    F: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    tokio::spawn(async move {
        let result = task.await;
        if let Err(error) = &result {
            tracing::error!(task = name, error = format!("{error:#}"), "task failed, shutting down");
            token.cancel();
        }
        result
    })
}
