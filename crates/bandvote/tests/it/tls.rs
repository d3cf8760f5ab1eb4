//! Redis over TLS: `bandvote up` counts into, and the API reads from, a Redis that only speaks TLS
//! (`rediss://`), here with a throw-away self-signed certificate (hence `#insecure`: no
//! verification; a real deployment gives a certificate its roots trust).

use std::{process::Stdio, time::Duration};

use crate::support::{PATIENCE, embedded_up, expected, free_port, mix, post_all, wait_for, wait_ready};
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn votes_are_counted_in_a_redis_reached_over_tls() {
    let dir = std::env::temp_dir().join(format!("bandvote-tls-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("mkdir");
    let made = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost"])
        .args(["-keyout", "key.pem", "-out", "cert.pem"])
        .current_dir(&dir)
        .stderr(Stdio::null())
        .status()
        .expect("openssl runs");
    assert!(made.success(), "a certificate");
    let tls_port = free_port();
    let _redis = tokio::process::Command::new("redis-server")
        .args(["--port", "0", "--tls-port", &tls_port.to_string(), "--tls-auth-clients", "no"])
        .args(["--tls-cert-file", "cert.pem", "--tls-key-file", "key.pem", "--save", "", "--appendonly", "no"])
        .current_dir(&dir)
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("redis-server with TLS starts");
    wait_for("the TLS port", Duration::from_secs(10), || async {
        tokio::net::TcpStream::connect(("127.0.0.1", tls_port)).await.ok().map(drop)
    })
    .await;

    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let url = format!("rediss://127.0.0.1:{tls_port}/#insecure");
    let _up =
        embedded_up(port, &dir.join("data")).args(["--redis-url", &url]).stderr(Stdio::null()).spawn().expect("up");
    wait_ready(&base).await;
    let votes = mix(60);
    post_all(&format!("{base}/grpc/votes"), &votes, 4).await;
    let want = expected(&votes);
    let results: Value = wait_for("the votes counted over TLS", PATIENCE, || async {
        let r: Value = reqwest::get(format!("{base}/api/results")).await.ok()?.json().await.ok()?;
        (r["total"].as_u64()? >= 60).then_some(r)
    })
    .await;
    assert_eq!(results["total"].as_u64(), Some(want.total));
    let bands: std::collections::BTreeMap<String, u64> =
        serde_json::from_value(results["bands"].clone()).expect("bands");
    assert_eq!(bands, want.bands);
    let ready: Value = reqwest::get(format!("{base}/readyz")).await.expect("readyz").json().await.expect("json");
    assert_eq!(ready["checks"]["redis"], "ok");
    let _ = std::fs::remove_dir_all(dir);
}
