//! The MongoDB log: one document per vote, `_id` = vote id, so a replayed vote is a duplicate key
//! and never a second document.

use mongodb::{
    Collection, IndexModel,
    bson::{DateTime, Document, doc},
    error::{ErrorKind, WriteFailure},
    options::IndexOptions,
};

use bandvote_queue::{BoxFuture, CheckError, Vote};

use super::{Inserted, SinkError, VoteLog};

/// MongoDB's duplicate-key error code.
const DUPLICATE_KEY: i32 = 11000;

/// The MongoDB side of the log pipeline.
#[derive(Clone)]
pub struct MongoLog {
    logs: Collection<Document>,
}

impl MongoLog {
    /// Connects to `url`, database `db`, and makes sure the `received_at` index exists.
    pub async fn connect(url: &str, db: &str) -> mongodb::error::Result<Self> {
        Ok(Self { logs: bandvote_store::log::collection(url, db).await? })
    }

    /// Creates the `received_at` descending index if it is missing.
    pub async fn ensure_indexes(&self) -> mongodb::error::Result<()> {
        let index = IndexModel::builder()
            .keys(doc! {"received_at": -1})
            .options(IndexOptions::builder().name("received_at_desc".to_owned()).build())
            .build();
        self.logs.create_index(index).await.map(drop)
    }

    /// The collection, for readers.
    pub fn collection(&self) -> &Collection<Document> {
        &self.logs
    }

    /// Inserts the votes, unordered; duplicates of already logged votes are ignored.
    pub async fn insert(&self, votes: &[&Vote]) -> mongodb::error::Result<Inserted> {
        if votes.is_empty() {
            return Ok(Inserted { inserted: 0, duplicates: 0 });
        }
        let counted_at = DateTime::now();
        let docs = votes.iter().map(|vote| bandvote_store::log::to_document(&vote.message, counted_at));
        let total = votes.len() as u64;
        match self.logs.insert_many(docs).ordered(false).await {
            Ok(result) => Ok(Inserted { inserted: result.inserted_ids.len() as u64, duplicates: 0 }),
            Err(error) => match *error.kind {
                ErrorKind::InsertMany(ref failure)
                    if failure.write_concern_error.is_none()
                        && failure
                            .write_errors
                            .as_ref()
                            .is_some_and(|errors| errors.iter().all(|e| e.code == DUPLICATE_KEY)) =>
                {
                    let duplicates = failure.write_errors.as_ref().map_or(0, |e| e.len() as u64);
                    Ok(Inserted { inserted: total - duplicates, duplicates })
                }
                ErrorKind::Write(WriteFailure::WriteError(ref e)) if e.code == DUPLICATE_KEY => {
                    Ok(Inserted { inserted: 0, duplicates: total })
                }
                _ => Err(error),
            },
        }
    }

    /// `ping`, for readiness.
    pub async fn ping(&self) -> Result<(), mongodb::error::Error> {
        self.logs.client().database("admin").run_command(doc! {"ping": 1}).await.map(drop)
    }
}

impl VoteLog for MongoLog {
    fn store(&self) -> &'static str {
        "mongodb"
    }

    fn prepare(&self) -> BoxFuture<'_, Result<(), SinkError>> {
        Box::pin(async move { Ok(self.ensure_indexes().await?) })
    }

    fn insert<'a>(&'a self, votes: &'a [&'a Vote]) -> BoxFuture<'a, Result<Inserted, SinkError>> {
        Box::pin(async move { Ok(MongoLog::insert(self, votes).await?) })
    }

    fn ping(&self) -> BoxFuture<'_, Result<(), CheckError>> {
        Box::pin(async move { Ok(MongoLog::ping(self).await?) })
    }
}
