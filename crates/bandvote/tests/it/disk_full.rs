//! `bandvote up` on a data directory whose filesystem fills up: votes get `503`, never a `202` that
//! is later lost; the database stays intact; voting resumes once space is freed, and every vote
//! answered `202` is counted and logged exactly once. The filesystem is a small tmpfs the test
//! mounts, which needs root: the test is ignored in the parallel suite and run by `scripts/test`.

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use serde_json::Value;

use crate::support::{
    PATIENCE, TestVote, embedded_up, expected, mix, post_vote, spawn_listening, wait_for, wait_ready,
};

/// A tmpfs of `size` mounted on a fresh directory; unmounted and removed on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(size: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("bandvote-disk-full-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("mount point");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700"), "tmpfs"])
            .arg(&dir)
            .status()
            .expect("mount runs");
        assert!(status.success(), "mounting a {size} tmpfs on {} failed (it needs root)", dir.display());
        Self(dir)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Writes `path` until its filesystem has no byte left; the bytes written.
fn fill(path: &Path) -> u64 {
    let mut file = std::fs::File::create(path).expect("filler file");
    let mut written = 0u64;
    for size in [1 << 16, 4096, 1] {
        let chunk = vec![0u8; size];
        loop {
            match file.write(&chunk) {
                Ok(0) => break,
                Ok(n) => written += n as u64,
                Err(error) if error.kind() == std::io::ErrorKind::StorageFull => break,
                Err(error) => panic!("filling {}: {error}", path.display()),
            }
        }
    }
    written
}

/// Posts vote `i` under its key `disk-<i>`, on one path or the other; the status.
async fn send(client: &reqwest::Client, base: &str, votes: &[TestVote], i: usize) -> (u16, Value) {
    let path = if i.is_multiple_of(2) { "grpc" } else { "wasm" };
    post_vote(client, &format!("{base}/{path}/votes"), votes[i].body(), Some(&format!("disk-{i}"))).await
}

async fn results(client: &reqwest::Client, base: &str) -> Option<Value> {
    client.get(format!("{base}/api/results")).send().await.ok()?.json().await.ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "mounts a tmpfs (root); scripts/test runs it alone"]
async fn a_full_disk_answers_503_never_a_lost_202_and_voting_resumes_once_space_is_freed() {
    let fs = Tmpfs::mount("6m");
    let dir = fs.0.join("data");
    let (mut up, base) = spawn_listening(&mut embedded_up(0, &dir)).await;
    wait_ready(&base).await;
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("client");
    let votes = mix(4000);

    // Votes are accepted while there is room.
    let mut sent = 0;
    while sent < 100 {
        let (status, body) = send(&client, &base, &votes, sent).await;
        assert_eq!(status, 202, "vote {sent} before the disk filled: {body}");
        sent += 1;
    }

    // Then the disk fills: every answer is 202 or 503, and 503s come.
    let filler = fs.0.join("filler");
    let filled = fill(&filler);
    let mut refused = Vec::new();
    while sent < votes.len() && refused.len() < 50 {
        let (status, body) = send(&client, &base, &votes, sent).await;
        match status {
            202 => {}
            503 => refused.push(sent),
            other => panic!("vote {sent} on a full disk: {other} {body}"),
        }
        sent += 1;
    }
    assert!(!refused.is_empty(), "{sent} votes accepted with the disk full ({filled} bytes of filler)");
    eprintln!("disk full after {filled} bytes of filler: {} of {sent} votes refused with 503", refused.len());

    // Space comes back: every refused vote, and only those, is sent again under its key until it is
    // accepted. A vote answered 202 is not sent again: if it was lost, the count below comes short.
    std::fs::remove_file(&filler).expect("free the space");
    for &i in &refused {
        wait_for(&format!("vote {i} accepted once space is free"), PATIENCE, || async {
            (send(&client, &base, &votes, i).await.0 == 202).then_some(())
        })
        .await;
    }

    // Every vote counted exactly once, and nothing more comes later.
    let want = expected(&votes[..sent]);
    let counted = wait_for("every vote counted", PATIENCE, || async {
        results(&client, &base).await.filter(|r| r["total"].as_u64() >= Some(want.total))
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let later = results(&client, &base).await.expect("results");
    assert_eq!(counted["total"].as_u64(), Some(want.total), "counted exactly once");
    assert_eq!(later["total"], counted["total"], "nothing counted twice later");
    let bands: std::collections::BTreeMap<String, u64> =
        serde_json::from_value(counted["bands"].clone()).expect("bands");
    assert_eq!(bands, want.bands, "every band counted exactly once");

    // The database is intact (checked when it opens) and holds every vote in its log.
    let pid = up.id().expect("pid").to_string();
    Command::new("kill").args(["-TERM", &pid]).status().expect("kill");
    let exit = tokio::time::timeout(PATIENCE, up.wait()).await.expect("up exits").expect("status");
    assert!(exit.success(), "a clean exit: {exit}");
    let storage = bandvote_embedded::Storage::open(&dir, Duration::from_secs(3600)).expect("the database opens intact");
    assert_eq!(storage.logged().await.expect("logged"), want.total, "every vote logged exactly once");
}
