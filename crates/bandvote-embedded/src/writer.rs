//! The queue's single writer: one thread that appends votes, grouping every vote that arrived
//! while the previous transaction committed into the next one (group commit), so that one fsync
//! serves many votes.

use std::sync::{
    Arc, Mutex,
    atomic::{AtomicBool, Ordering},
};

use rusqlite::{Connection, params};
use tokio::sync::{Notify, mpsc, oneshot};

use crate::StorageError;

/// Largest number of votes in one transaction.
const MAX_GROUP: usize = 4096;

struct Append {
    message: Vec<u8>,
    client_key: bool,
    done: oneshot::Sender<Result<u64, String>>,
}

/// The handle the producers use.
pub(crate) struct Appender {
    sender: mpsc::Sender<Append>,
    running: Arc<AtomicBool>,
}

impl Appender {
    /// Starts the writer thread on `db`.
    pub(crate) fn start(db: Connection, appended: Arc<Notify>, write: Arc<Mutex<()>>) -> Self {
        let (sender, receiver) = mpsc::channel(16 * 1024);
        let running = Arc::new(AtomicBool::new(true));
        let flag = Arc::clone(&running);
        std::thread::Builder::new()
            .name("bandvote-queue-writer".into())
            .spawn(move || {
                write_loop(db, receiver, &appended, &write);
                flag.store(false, Ordering::SeqCst);
            })
            .expect("the writer thread starts");
        Self { sender, running }
    }

    /// Appends one vote; answers with its position once committed.
    pub(crate) async fn append(&self, message: Vec<u8>, client_key: bool) -> Result<u64, StorageError> {
        let (done, answer) = oneshot::channel();
        self.sender.send(Append { message, client_key, done }).await.map_err(|_| StorageError::Closed)?;
        match answer.await {
            Ok(Ok(seq)) => Ok(seq),
            Ok(Err(error)) => Err(StorageError::Write(error)),
            Err(_) => Err(StorageError::Closed),
        }
    }

    /// Whether the writer thread is alive.
    pub(crate) fn is_running(&self) -> bool {
        self.running.load(Ordering::SeqCst)
    }
}

fn write_loop(mut db: Connection, mut receiver: mpsc::Receiver<Append>, appended: &Notify, write: &Mutex<()>) {
    let mut next: i64 = match db.query_row("SELECT coalesce(max(seq), 0) FROM queue", [], |r| r.get::<_, i64>(0)) {
        Ok(max) => {
            // The queue may have been pruned: continue after whatever any pipeline has applied too.
            let applied: i64 =
                db.query_row("SELECT coalesce(max(seq), 0) FROM positions", [], |r| r.get(0)).unwrap_or(0);
            max.max(applied) + 1
        }
        Err(error) => {
            tracing::error!(%error, "queue writer cannot read the queue");
            return;
        }
    };
    let mut group = Vec::with_capacity(MAX_GROUP);
    while let Some(first) = receiver.blocking_recv() {
        group.push(first);
        while group.len() < MAX_GROUP {
            match receiver.try_recv() {
                Ok(more) => group.push(more),
                Err(_) => break,
            }
        }
        let written = {
            let _writing = write.lock().unwrap_or_else(|e| e.into_inner());
            write_group(&mut db, next, &group)
        };
        match written {
            Ok(()) => {
                let first = next;
                next += group.len() as i64;
                for (i, append) in group.drain(..).enumerate() {
                    let _ = append.done.send(Ok(first as u64 + i as u64));
                }
                appended.notify_waiters();
            }
            Err(error) => {
                tracing::error!(%error, "queue append failed");
                for append in group.drain(..) {
                    let _ = append.done.send(Err(format!("cannot write the queue: {error}")));
                }
            }
        }
    }
}

fn write_group(db: &mut Connection, first: i64, group: &[Append]) -> rusqlite::Result<()> {
    let tx = db.transaction()?;
    {
        let mut insert = tx.prepare_cached("INSERT INTO queue (seq, message, client_key) VALUES (?1, ?2, ?3)")?;
        for (i, append) in group.iter().enumerate() {
            insert.execute(params![first + i as i64, append.message, append.client_key])?;
        }
    }
    tx.commit()
}
