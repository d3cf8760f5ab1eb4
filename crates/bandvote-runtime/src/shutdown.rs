//! One shutdown coordinator per process: a [`CancellationToken`] cancelled by SIGTERM or SIGINT, or
//! by any task that fails.

use std::future::Future;

use tokio::task::JoinHandle;
pub use tokio_util::sync::CancellationToken;

/// Cancels `token` on the first SIGTERM or SIGINT.
pub fn cancel_on_signal(token: CancellationToken) -> JoinHandle<()> {
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown requested, draining");
        token.cancel();
    })
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
