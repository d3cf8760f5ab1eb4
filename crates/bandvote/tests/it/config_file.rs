//! `bandvote --config FILE`: the file's settings under the environment and the flags.

use std::path::{Path, PathBuf};

use crate::support::{PATIENCE, free_port, wait_ready};

/// A config file and a data directory of this test, removed when dropped.
struct Files {
    dir: PathBuf,
}

impl Files {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("bandvote-config-{name}-{}", uuid::Uuid::now_v7().simple()));
        std::fs::create_dir_all(&dir).expect("create the test directory");
        Self { dir }
    }

    fn config(&self, text: &str) -> PathBuf {
        let path = self.dir.join("bandvote.toml");
        std::fs::write(&path, text).expect("write the config file");
        path
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }
}

impl Drop for Files {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `bandvote --config CONFIG up` with nothing in the environment that the file could set.
fn up_with(config: &Path) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_bandvote"));
    command
        .arg("--config")
        .arg(config)
        .arg("up")
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    for name in [
        "BANDVOTE_CONFIG",
        "BANDVOTE_LISTEN",
        "BANDVOTE_DATA_DIR",
        "BANDVOTE_KAFKA_BROKERS",
        "BANDVOTE_REDIS_URL",
        "BANDVOTE_MONGO_URL",
    ] {
        command.env_remove(name);
    }
    command
}

fn up_file(listen: &str, data: &Path) -> String {
    format!("[up]\nlisten = \"{listen}\"\ndata-dir = \"{}\"\n", data.display())
}

#[tokio::test]
async fn up_listens_where_its_config_file_says() {
    let files = Files::new("listen");
    let port = free_port();
    let config = files.config(&up_file(&format!("127.0.0.1:{port}"), &files.data()));
    let mut up = up_with(&config).spawn().expect("up starts");
    wait_ready(&format!("http://127.0.0.1:{port}")).await;
    assert!(files.data().exists(), "the file's data-dir is used");
    up.start_kill().expect("kill");
    let _ = tokio::time::timeout(PATIENCE, up.wait()).await.expect("up exits");
}

#[tokio::test]
async fn the_environment_beats_the_config_file() {
    let files = Files::new("env");
    let (from_file, from_env) = (free_port(), free_port());
    let config = files.config(&up_file(&format!("127.0.0.1:{from_file}"), &files.data()));
    let mut up = up_with(&config).env("BANDVOTE_LISTEN", format!("127.0.0.1:{from_env}")).spawn().expect("up starts");
    wait_ready(&format!("http://127.0.0.1:{from_env}")).await;
    assert!(reqwest::get(format!("http://127.0.0.1:{from_file}/healthz")).await.is_err(), "not on the file's port");
    up.start_kill().expect("kill");
    let _ = tokio::time::timeout(PATIENCE, up.wait()).await.expect("up exits");
}

#[tokio::test]
async fn a_config_file_with_unknown_keys_stops_up_naming_each() {
    let files = Files::new("unknown");
    let config = files.config("[up]\nlisen = \"127.0.0.1:1\"\ndata-dri = \"x\"\n");
    let output = tokio::time::timeout(PATIENCE, up_with(&config).output()).await.expect("exits").expect("runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("`lisen`") && stderr.contains("`data-dri`"), "{stderr}");
}
