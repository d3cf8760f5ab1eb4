//! The embedded storage on a real SQLite file in a temporary directory.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use bandvote_core::{IngestPath, Vote, VoteId, VoteMessage};
use bandvote_embedded::{EmbeddedSource, Queued, Storage, StorageError, TallyApplied, pipelines};
use bandvote_queue::QueueSource;

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("bandvote-embedded-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn message(id: &str, band: &str, album: &str) -> VoteMessage {
    let vote = Vote::from_strings(band, album, "1997", "9.5").unwrap();
    let id = VoteId::from_client_key(id).unwrap();
    VoteMessage::new(&id, vote, IngestPath::Grpc, "2026-11-26T16:04:05.123Z".into(), "default".into())
}

/// Applies queued votes as the tally pipeline would (their first and last positions, their votes).
async fn tally(storage: &Arc<Storage>, queued: &[Queued], counted_at: &str) -> TallyApplied {
    let votes = queued.iter().map(|q| bandvote_queue::Vote::new(q.message.clone(), q.client_key)).collect();
    let (first, last) = (queued[0].seq, queued[queued.len() - 1].seq);
    storage.apply_tally(first, last, votes, counted_at.into()).await.unwrap()
}

fn open(dir: &Path) -> Arc<Storage> {
    Storage::open(dir, Duration::from_secs(24 * 3600)).unwrap()
}

#[tokio::test]
async fn votes_are_counted_and_logged_once_in_order_of_the_queue() {
    let dir = temp_dir("count");
    let storage = open(&dir);
    for (i, (band, album)) in [("A", "x"), ("B", "y"), ("A", "x"), ("A", "z")].iter().enumerate() {
        assert_eq!(storage.append(&message(&format!("k{i}"), band, album), true).await.unwrap(), i as u64 + 1);
    }
    // A client retry of k1: queued again, counted once.
    assert_eq!(storage.append(&message("k1", "B", "y"), true).await.unwrap(), 5);
    let queued = storage.read_queue(0, 100).await.unwrap();
    assert_eq!(queued.iter().map(|q| q.seq).collect::<Vec<_>>(), [1, 2, 3, 4, 5]);

    // A batch that does not continue the stored position is refused.
    let refused = tally(&storage, &queued[1..], "2026-11-26T16:04:06.000Z").await;
    assert_eq!(refused, TallyApplied::Refused { stored: 0 });
    let applied = tally(&storage, &queued[..3], "2026-11-26T16:04:06.000Z").await;
    assert_eq!(applied, TallyApplied::Counted { counted: 3, duplicates: 0, total: 3, late: 0 });
    // Replaying the same batch (a crash before the caller saw the answer) is refused, not recounted.
    let replay = tally(&storage, &queued[..3], "2026-11-26T16:04:06.000Z").await;
    assert_eq!(replay, TallyApplied::Refused { stored: 3 });
    let rest = tally(&storage, &queued[3..], "2026-11-26T16:04:07.000Z").await;
    assert_eq!(rest, TallyApplied::Counted { counted: 1, duplicates: 1, total: 4, late: 0 });

    let counters = storage.counters().await.unwrap();
    assert_eq!(counters.counts.total, 4);
    assert_eq!(counters.counts.bands.get("A"), Some(&3));
    assert_eq!(counters.counts.albums.get("A / x"), Some(&2));
    assert_eq!(counters.counted_at.as_deref(), Some("2026-11-26T16:04:07.000Z"));

    let messages: Vec<VoteMessage> = queued.iter().map(|q| q.message.clone()).collect();
    assert_eq!(storage.log_votes(messages.clone(), "2026-11-26T16:04:07.000Z".into()).await.unwrap(), 4);
    assert_eq!(storage.log_votes(messages, "2026-11-26T16:04:07.000Z".into()).await.unwrap(), 0, "replays skipped");
    assert_eq!(storage.logged().await.unwrap(), 4);
    assert_eq!(storage.latest_logs(2).await.unwrap().len(), 2);

    // Everything survives a reopen; pruning keeps positions going.
    storage.prune(5, 0).await.unwrap();
    drop(storage);
    let storage = open(&dir);
    assert_eq!(storage.counters().await.unwrap().counts.total, 4);
    assert_eq!(storage.position(pipelines::TALLY).await.unwrap(), 5);
    assert_eq!(storage.append(&message("k9", "C", "w"), true).await.unwrap(), 6, "positions continue after pruning");
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_returns_only_once_its_transaction_committed() {
    let dir = temp_dir("committed");
    let storage = open(&dir);
    // Another connection sees only what is committed.
    let outside = rusqlite::Connection::open(dir.join(bandvote_embedded::DATABASE_FILE)).unwrap();
    let outside = Arc::new(std::sync::Mutex::new(outside));
    // Many at once, so that they are grouped into shared transactions.
    let appends: Vec<_> = (0..200)
        .map(|i| {
            let (storage, outside) = (Arc::clone(&storage), Arc::clone(&outside));
            tokio::spawn(async move {
                let seq = storage.append(&message(&format!("c-{i}"), "A", "x"), true).await.unwrap();
                let db = outside.lock().unwrap();
                let found: i64 =
                    db.query_row("SELECT count(*) FROM queue WHERE seq = ?1", [seq as i64], |r| r.get(0)).unwrap();
                assert_eq!(found, 1, "append {i} returned position {seq} before its transaction committed");
            })
        })
        .collect();
    for append in appends {
        append.await.unwrap();
    }
    drop(storage);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn a_second_process_on_the_same_directory_is_refused() {
    let dir = temp_dir("lock");
    let _first = open(&dir);
    let error = Storage::open(&dir, Duration::from_secs(1)).unwrap_err().to_string();
    assert!(error.contains("another bandvote process is using it"), "{error}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn a_damaged_or_foreign_database_is_a_clear_error() {
    let dir = temp_dir("corrupt");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("bandvote.db"), b"this is not a database, just some text that is long enough").unwrap();
    let error = Storage::open(&dir, Duration::from_secs(1)).unwrap_err();
    assert!(matches!(error, StorageError::Corrupt { .. }), "{error}");
    assert!(error.to_string().contains("move it away"), "{error}");

    // A valid file of overwritten pages: SQLite's own check finds it.
    std::fs::remove_dir_all(&dir).unwrap();
    {
        let storage = open(&dir);
        for i in 0..2000 {
            storage.append(&message(&format!("k{i}"), "A", "x"), true).await.unwrap();
        }
    }
    let path = dir.join("bandvote.db");
    let _ = std::fs::remove_file(dir.join("bandvote.db-wal"));
    let mut bytes = std::fs::read(&path).unwrap();
    if bytes.len() > 12_288 {
        for b in &mut bytes[8192..12_288] {
            *b = 0xA5;
        }
    }
    std::fs::write(&path, bytes).unwrap();
    let error = Storage::open(&dir, Duration::from_secs(1)).unwrap_err();
    assert!(matches!(error, StorageError::Corrupt { .. }), "{error}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn an_unusable_directory_is_a_clear_error() {
    // A regular file where the directory should be.
    let file = temp_dir("file");
    std::fs::write(&file, b"x").unwrap();
    let error = Storage::open(&file, Duration::from_secs(1)).unwrap_err();
    assert!(matches!(error, StorageError::Directory { .. }), "{error}");
    assert!(error.to_string().contains("cannot create it"), "{error}");
    std::fs::remove_file(file).unwrap();
}

#[tokio::test]
async fn a_source_reads_after_its_committed_position_and_seeks_back() {
    let dir = temp_dir("source");
    let storage = open(&dir);
    for i in 0..5 {
        storage.append(&message(&format!("s{i}"), "A", "x"), true).await.unwrap();
    }
    let shutdown = tokio_util::sync::CancellationToken::new();
    let source = EmbeddedSource::open(Arc::clone(&storage), pipelines::LOG, 3).await.unwrap();
    let offsets = |batch: &[bandvote_queue::Record]| batch.iter().map(|r| r.offset).collect::<Vec<_>>();
    let first = source.next_batch(&shutdown).await.unwrap();
    assert_eq!(offsets(&first), [1, 2, 3]);
    assert!(!storage.stored_at_least(pipelines::LOG, 3));
    source.commit(&first).await.unwrap();
    assert!(storage.stored_at_least(pipelines::LOG, 3) && !storage.stored_at_least(pipelines::LOG, 4));
    assert_eq!(offsets(&source.next_batch(&shutdown).await.unwrap()), [4, 5]);
    assert_eq!(source.lag().await.unwrap(), 0);
    assert_eq!(source.end_offset(0).await.unwrap(), 6);
    source.seek(0, 2).unwrap();
    assert_eq!(offsets(&source.next_batch(&shutdown).await.unwrap()), [2, 3, 4]);
    // A new reader begins after the committed position.
    let again = EmbeddedSource::open(Arc::clone(&storage), pipelines::LOG, 10).await.unwrap();
    assert_eq!(offsets(&again.next_batch(&shutdown).await.unwrap()), [4, 5]);
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn the_tally_position_stored_with_the_counters_is_not_written_again_by_its_source() {
    let dir = temp_dir("tally-commit");
    let storage = open(&dir);
    for i in 0..3 {
        storage.append(&message(&format!("t{i}"), "A", "x"), true).await.unwrap();
    }
    let shutdown = tokio_util::sync::CancellationToken::new();
    let source = EmbeddedSource::open(Arc::clone(&storage), pipelines::TALLY, 10).await.unwrap();
    let batch = source.next_batch(&shutdown).await.unwrap();
    let queued = storage.read_queue(0, 10).await.unwrap();
    assert!(matches!(
        tally(&storage, &queued, "2026-11-26T16:04:07.000Z").await,
        TallyApplied::Counted { counted: 3, .. }
    ));
    assert!(storage.stored_at_least(pipelines::TALLY, 3), "the counters' transaction stored it");
    source.commit(&batch).await.unwrap();
    assert_eq!(storage.position(pipelines::TALLY).await.unwrap(), 3);
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn under_load_a_source_reads_at_most_once_per_linger_but_at_once_after_a_quiet_spell() {
    let dir = temp_dir("linger");
    let storage = open(&dir);
    let shutdown = tokio_util::sync::CancellationToken::new();
    let linger = Duration::from_secs(1);
    let source = EmbeddedSource::open(Arc::clone(&storage), pipelines::LOG, 100).await.unwrap().with_linger(linger);
    let offsets = |batch: &[bandvote_queue::Record]| batch.iter().map(|r| r.offset).collect::<Vec<_>>();
    storage.append(&message("l0", "A", "x"), false).await.unwrap();
    // Taken before the read, so never after the moment the source handed the batch out.
    let handed_out = std::time::Instant::now();
    assert_eq!(offsets(&source.next_batch(&shutdown).await.unwrap()), [1]);
    // Votes that come meanwhile wait for the linger, and are read together.
    let appending = {
        let storage = Arc::clone(&storage);
        tokio::spawn(async move {
            for i in 1..4 {
                storage.append(&message(&format!("l{i}"), "A", "x"), false).await.unwrap();
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let batch = source.next_batch(&shutdown).await.unwrap();
    assert!(handed_out.elapsed() >= linger, "read after {:?}", handed_out.elapsed());
    appending.await.unwrap();
    assert_eq!(offsets(&batch), [2, 3, 4]);
    // After a quiet spell longer than the linger, the next vote is read without waiting for it.
    tokio::time::sleep(linger * 2).await;
    storage.append(&message("l4", "A", "x"), false).await.unwrap();
    let appended = std::time::Instant::now();
    assert_eq!(offsets(&source.next_batch(&shutdown).await.unwrap()), [5]);
    assert!(appended.elapsed() < linger, "read after {:?}", appended.elapsed());
    // A full batch leaves a backlog: the next read takes it without lingering.
    let small = EmbeddedSource::open(Arc::clone(&storage), pipelines::TALLY, 2).await.unwrap().with_linger(linger);
    assert_eq!(offsets(&small.next_batch(&shutdown).await.unwrap()), [1, 2]);
    let full = std::time::Instant::now();
    assert_eq!(offsets(&small.next_batch(&shutdown).await.unwrap()), [3, 4]);
    assert!(full.elapsed() < linger, "read after {:?}", full.elapsed());
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn pruning_past_several_slices_deletes_what_every_pipeline_applied_and_keeps_the_rest() {
    let dir = temp_dir("prune");
    let storage = open(&dir);
    let total = 2 * bandvote_embedded::PRUNE_SLICE + 5;
    // Appended at once, so that the writer groups them into a few transactions.
    let appends: Vec<_> = (0..total)
        .map(|i| {
            let storage = Arc::clone(&storage);
            tokio::spawn(async move { storage.append(&message(&format!("p{i}"), "A", "x"), false).await.unwrap() })
        })
        .collect();
    for append in appends {
        append.await.unwrap();
    }
    let applied = (total - 3) as u64;
    storage.prune(applied, 0).await.unwrap();
    let left: Vec<u64> = storage.read_queue(0, total).await.unwrap().iter().map(|q| q.seq).collect();
    assert_eq!(left, (applied + 1..=total as u64).collect::<Vec<_>>());
    std::fs::remove_dir_all(dir).unwrap();
}

#[cfg(unix)]
#[test]
fn a_new_data_directory_is_private_to_its_user() {
    use std::os::unix::fs::PermissionsExt;
    let dir = temp_dir("private").join("nested");
    let _storage = open(&dir);
    let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "{mode:o}");
    std::fs::remove_dir_all(dir.parent().unwrap()).unwrap();
}

/// A data directory that existed with the usual permissions (0755, files 0644): the database, its
/// journal and the lock are made readable by this user only.
#[cfg(unix)]
#[tokio::test]
async fn the_database_files_are_private_even_in_a_directory_that_existed() {
    use std::os::unix::fs::PermissionsExt;
    let dir = temp_dir("private-existing");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    // A database left by an earlier run with looser permissions.
    drop(open(&dir));
    for file in ["bandvote.db", "bandvote.lock"] {
        std::fs::set_permissions(dir.join(file), std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let storage = open(&dir);
    storage.append(&message("private-1", "A", "x"), true).await.unwrap();
    for file in ["bandvote.db", "bandvote.db-wal", "bandvote.lock"] {
        let mode =
            std::fs::metadata(dir.join(file)).unwrap_or_else(|e| panic!("{file}: {e}")).permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{file}: {mode:o}");
    }
    drop(storage);
    std::fs::remove_dir_all(&dir).unwrap();
}
