//! The web app in headless Chromium (Debian's `chromium`, driven by playwright-core) against
//! `bandvote up` on the real servers: votes through both paths show up live, errors are clear, and
//! the freshness badge turns red when the server goes away. Screenshots go to target/screenshots.

use std::{process::Stdio, time::Duration};

use crate::support::{TestEnv, repo_root, start_up};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs Chromium and the web app's node modules; scripts/test installs them and runs this test"]
async fn the_web_app_follows_votes_live_in_a_browser() {
    let env = TestEnv::new().await;
    let (up, base) = start_up(&env).await;
    browse(up, &base, "target/screenshots").await;
}

/// The same, against `bandvote up` on its embedded storage (the README's first command).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs Chromium and the web app's node modules; scripts/test installs them and runs this test"]
async fn the_web_app_follows_votes_live_on_embedded_storage() {
    let dir = std::env::temp_dir().join(format!("bandvote-web-embedded-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (up, base) = crate::support::spawn_listening(&mut crate::support::embedded_up(0, &dir)).await;
    crate::support::wait_ready(&base).await;
    browse(up, &base, "target/screenshots/embedded").await;
    let _ = std::fs::remove_dir_all(dir);
}

/// A round on the audience's page: opened, hidden, revealed, closed and made final while the page
/// is open (web/e2e/rounds.mjs), against `bandvote up` on its embedded storage.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs Chromium and the web app's node modules; scripts/test installs them and runs this test"]
async fn the_web_app_follows_a_round_from_open_to_final() {
    run_as_operator("rounds", &["round-hidden.png", "round-closed.png", "round-final.png"]).await;
}

/// The operator console at `/admin` runs a round beside the audience's page: sign-in, create, open,
/// hidden results, close with both pages open, final and certified, audit, export, reveal
/// (web/e2e/admin.mjs), against `bandvote up` on its embedded storage.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs Chromium and the web app's node modules; scripts/test installs them and runs this test"]
async fn the_operator_console_runs_a_round_in_a_browser() {
    run_as_operator("admin", &["console-open.png", "console-final.png", "audience-final.png"]).await;
}

/// A whole show in Spanish (web/e2e/show.mjs), against `bandvote up` on its embedded storage: the
/// console edits a ballot and runs the rounds, a phone (390×844, touch) votes in one tap and keeps
/// its receipt across a reload, the projector (1920×1080) shows a QR code that decodes to the
/// audience's page and reveals the winner; a double-click on Close never reveals, the closed round
/// offers nothing to tap, and a hidden round's bands reach no public answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs Chromium and the web app's node modules; scripts/test installs them and runs this test"]
async fn a_whole_show_runs_on_phone_projector_and_console() {
    let shots = [
        "phone.png",
        "phone-offline.png",
        "phone-receipt.png",
        "receipt-verified.png",
        "screen-reveal.png",
        "screen.png",
        "admin.png",
    ];
    run_as_operator("show", &shots).await;
}

/// Runs web/e2e/`script`.mjs against a fresh `bandvote up` with an admin token, and checks that it
/// passed and saved `screenshots` (in target/screenshots/`script`).
async fn run_as_operator(script: &str, screenshots: &[&str]) {
    const TOKEN: &str = "e2e-admin-token-7c1a";
    let dir = std::env::temp_dir().join(format!("bandvote-web-{script}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut command = crate::support::embedded_up(0, &dir);
    command.args(["--admin-token", TOKEN]);
    let (_up, base) = crate::support::spawn_listening(&mut command).await;
    crate::support::wait_ready(&base).await;
    let shots = repo_root().join("target/screenshots").join(script);
    let output = tokio::time::timeout(
        Duration::from_secs(180),
        tokio::process::Command::new("node")
            .arg(format!("e2e/{script}.mjs"))
            .arg(&base)
            .arg(TOKEN)
            .arg(&shots)
            .current_dir(repo_root().join("web"))
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the browser test finishes")
    .expect("node runs the browser test");
    let said = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "browser test failed; its output:\n{said}");
    assert!(said.contains("OK: "), "{said}");
    for shot in screenshots {
        let size = std::fs::metadata(shots.join(shot)).map(|m| m.len()).unwrap_or(0);
        assert!(size > 10_000, "screenshot {shot} was saved ({size} bytes)");
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// Runs web/e2e/live.mjs against `base`, killing `up` when the script asks for it.
async fn browse(mut up: tokio::process::Child, base: &str, screenshots: &str) {
    let shots = repo_root().join(screenshots);
    let mut browser = tokio::process::Command::new("node")
        .arg("e2e/live.mjs")
        .arg(base)
        .arg(&shots)
        .current_dir(repo_root().join("web"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node runs the browser test");
    let mut stdin = browser.stdin.take().expect("stdin");
    let mut lines = BufReader::new(browser.stdout.take().expect("stdout")).lines();
    let mut said = Vec::new();
    let stop = tokio::time::timeout(Duration::from_secs(180), async {
        while let Some(line) = lines.next_line().await.expect("read the browser test's output") {
            said.push(line.clone());
            if line == "STOP_THE_SERVER" {
                return true;
            }
        }
        false
    })
    .await
    .expect("the browser test reaches the outage step");
    if stop {
        // The server goes away (SIGKILL: no goodbye on the stream); the page must notice.
        up.kill().await.expect("kill bandvote up");
        stdin.write_all(b"stopped\n").await.expect("tell the browser test");
        while let Ok(Some(line)) = lines.next_line().await {
            said.push(line);
        }
    }
    let status =
        tokio::time::timeout(Duration::from_secs(60), browser.wait()).await.expect("finishes").expect("status");
    assert!(status.success(), "browser test failed ({status}); its output:\n{}", said.join("\n"));
    assert!(said.iter().any(|l| l.starts_with("OK: ")), "{}", said.join("\n"));
    for shot in ["empty.png", "live.png", "vote-error.png", "phone.png", "stream-lost.png"] {
        let size = std::fs::metadata(shots.join(shot)).map(|m| m.len()).unwrap_or(0);
        assert!(size > 10_000, "screenshot {shot} was saved ({size} bytes)");
    }
}
