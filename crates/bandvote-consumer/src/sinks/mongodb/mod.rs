//! The MongoDB log: one document per vote, `_id` = vote id, so a replayed vote is a duplicate key
//! and never a second document.

use std::time::Duration;

use mongodb::{
    Client, Collection, IndexModel,
    bson::{DateTime, Document, doc},
    error::{ErrorKind, WriteFailure},
    options::{ClientOptions, IndexOptions},
};

use crate::sources::kafka::Vote;

/// MongoDB's duplicate-key error code.
const DUPLICATE_KEY: i32 = 11000;

/// The collection of vote logs.
pub const COLLECTION: &str = "logs";

/// The MongoDB side of the log pipeline.
#[derive(Clone)]
pub struct MongoLog {
    logs: Collection<Document>,
}

/// What an insert did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inserted {
    /// New documents.
    pub inserted: u64,
    /// Votes already logged (replays).
    pub duplicates: u64,
}

impl MongoLog {
    /// Connects to `url`, database `db`, and makes sure the `received_at` index exists.
    pub async fn connect(url: &str, db: &str) -> mongodb::error::Result<Self> {
        let client = connect_client(url).await?;
        let logs = client.database(db).collection::<Document>(COLLECTION);
        Ok(Self { logs })
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
        let docs = votes.iter().map(|vote| to_document(vote, counted_at));
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
    pub async fn ping(&self) -> Result<(), String> {
        self.logs
            .client()
            .database("admin")
            .run_command(doc! {"ping": 1})
            .await
            .map(drop)
            .map_err(|e| format!("mongodb: {e}"))
    }
}

/// A client that gives up on an unreachable server within seconds, not the driver's 30 s.
pub async fn connect_client(url: &str) -> mongodb::error::Result<Client> {
    let mut options = ClientOptions::parse(url).await?;
    options.server_selection_timeout.get_or_insert(Duration::from_secs(5));
    options.connect_timeout.get_or_insert(Duration::from_secs(3));
    options.app_name.get_or_insert_with(|| "bandvote".to_owned());
    Client::with_options(options)
}

/// The log document of a vote: `{_id, data: {name, album, year, rank}, path, received_at, counted_at}`.
pub fn to_document(vote: &Vote, counted_at: DateTime) -> Document {
    let message = &vote.message;
    let received_at = bandvote_core::time::parse(&message.received_at)
        .map_or(counted_at, |at| DateTime::from_millis(at.timestamp_millis()));
    doc! {
        "_id": &message.id,
        "data": {"name": &message.name, "album": &message.album, "year": &message.year, "rank": &message.rank},
        "path": message.path.as_str(),
        "received_at": received_at,
        "counted_at": counted_at,
    }
}
