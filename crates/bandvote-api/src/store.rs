//! Reading the contract's stores: the Redis counters and the MongoDB vote log.

use std::{collections::BTreeMap, time::Duration};

use futures::TryStreamExt;
use mongodb::{
    Collection,
    bson::{Document, doc},
    options::ClientOptions,
};
use redis::aio::ConnectionManager;
use serde::Serialize;
use tokio::sync::OnceCell;

/// How long one read may take before the API answers 503.
pub const READ_TIMEOUT: Duration = Duration::from_secs(3);

/// A dependency that did not answer.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Unavailable(pub String);

/// `GET /api/results`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Results {
    /// All counted votes.
    pub total: u64,
    /// Per band.
    pub bands: BTreeMap<String, u64>,
    /// Per `<band> / <album>`.
    pub albums: BTreeMap<String, u64>,
    /// When the newest counted vote was counted (`null` before the first vote).
    pub updated_at: Option<String>,
    /// How long after its `received_at` the newest vote was counted, in ms (`null` before the first).
    pub freshness_ms: Option<i64>,
}

/// One `GET /api/logs` item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogEntry {
    /// The vote id.
    pub id: String,
    /// `{name, album, year, rank}`.
    pub data: BTreeMap<String, String>,
    /// `grpc` or `wasm`.
    pub path: String,
    /// RFC 3339, ms, `Z`.
    pub received_at: String,
}

/// Connections to Redis (made on first use, then kept and re-established) and MongoDB.
pub struct Store {
    redis_client: redis::Client,
    redis: OnceCell<ConnectionManager>,
    logs: Collection<Document>,
}

impl Store {
    /// Prepares both connections; nothing is contacted yet, so the API starts even if they are down.
    pub async fn new(redis_url: &str, mongo_url: &str, mongo_db: &str) -> anyhow::Result<Self> {
        let redis_client = redis::Client::open(redis_url)?;
        let mut options = ClientOptions::parse(mongo_url).await?;
        options.server_selection_timeout = Some(READ_TIMEOUT);
        options.connect_timeout = Some(Duration::from_secs(2));
        let logs = mongodb::Client::with_options(options)?.database(mongo_db).collection("logs");
        Ok(Self { redis_client, redis: OnceCell::new(), logs })
    }

    async fn redis(&self) -> Result<ConnectionManager, Unavailable> {
        let connect = self.redis.get_or_try_init(|| async {
            let config = redis::aio::ConnectionManagerConfig::new()
                .set_connection_timeout(Some(Duration::from_secs(2)))
                .set_response_timeout(Some(READ_TIMEOUT));
            ConnectionManager::new_with_config(self.redis_client.clone(), config).await
        });
        match tokio::time::timeout(READ_TIMEOUT, connect).await {
            Ok(Ok(connection)) => Ok(connection.clone()),
            Ok(Err(error)) => Err(Unavailable(format!("redis: {error}"))),
            Err(_) => Err(Unavailable("redis: no answer".into())),
        }
    }

    /// The counters, read in one transaction so that they agree with each other.
    pub async fn results(&self) -> Result<Results, Unavailable> {
        let mut redis = self.redis().await?;
        let mut pipe = redis::pipe();
        pipe.atomic()
            .hgetall("votes:band")
            .hgetall("votes:album")
            .get("votes:total")
            .cmd("HMGET")
            .arg("votes:last")
            .arg("received_at")
            .arg("counted_at");
        type Snapshot = (BTreeMap<String, u64>, BTreeMap<String, u64>, Option<u64>, (Option<String>, Option<String>));
        let read = tokio::time::timeout(READ_TIMEOUT, pipe.query_async::<Snapshot>(&mut redis)).await;
        let (bands, albums, total, (received, counted)) = match read {
            Ok(Ok(snapshot)) => snapshot,
            Ok(Err(error)) => return Err(Unavailable(format!("redis: {error}"))),
            Err(_) => return Err(Unavailable("redis: no answer".into())),
        };
        let parse = |t: &Option<String>| t.as_deref().and_then(bandvote_core::time::parse);
        let freshness_ms = match (parse(&received), parse(&counted)) {
            (Some(received), Some(counted)) => Some((counted - received).num_milliseconds().max(0)),
            _ => None,
        };
        Ok(Results { total: total.unwrap_or(0), bands, albums, updated_at: counted, freshness_ms })
    }

    /// The newest `limit` votes of the log, newest first.
    pub async fn latest_logs(&self, limit: i64) -> Result<Vec<LogEntry>, Unavailable> {
        self.find(doc! {}, doc! {"received_at": -1}, limit).await
    }

    /// Votes logged at or after `since` (oldest first), at most `limit`.
    pub async fn logs_since(&self, since: mongodb::bson::DateTime, limit: i64) -> Result<Vec<LogEntry>, Unavailable> {
        self.find(doc! {"received_at": {"$gte": since}}, doc! {"received_at": 1}, limit).await
    }

    async fn find(&self, filter: Document, sort: Document, limit: i64) -> Result<Vec<LogEntry>, Unavailable> {
        let read = async {
            let cursor = self.logs.find(filter).sort(sort).limit(limit).await?;
            cursor.try_collect::<Vec<Document>>().await
        };
        match tokio::time::timeout(READ_TIMEOUT, read).await {
            Ok(Ok(docs)) => Ok(docs.iter().filter_map(to_entry).collect()),
            Ok(Err(error)) => Err(Unavailable(format!("mongodb: {error}"))),
            Err(_) => Err(Unavailable("mongodb: no answer".into())),
        }
    }

    /// For readiness.
    pub async fn ping_redis(&self) -> Result<(), String> {
        let mut redis = self.redis().await.map_err(|e| e.0)?;
        redis::cmd("PING").query_async::<String>(&mut redis).await.map(drop).map_err(|e| format!("redis: {e}"))
    }

    /// For readiness.
    pub async fn ping_mongo(&self) -> Result<(), String> {
        let admin = self.logs.client().database("admin");
        let ping = admin.run_command(doc! {"ping": 1});
        match tokio::time::timeout(READ_TIMEOUT, ping).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(error)) => Err(format!("mongodb: {error}")),
            Err(_) => Err("mongodb: no answer".into()),
        }
    }
}

fn to_entry(doc: &Document) -> Option<LogEntry> {
    let data = doc.get_document("data").ok()?;
    let field = |name: &str| data.get_str(name).ok().map(|v| (name.to_owned(), v.to_owned()));
    let received = doc.get_datetime("received_at").ok()?;
    let received = chrono::DateTime::from_timestamp_millis(received.timestamp_millis())?;
    Some(LogEntry {
        id: doc.get_str("_id").ok()?.to_owned(),
        data: ["name", "album", "year", "rank"].into_iter().filter_map(field).collect(),
        path: doc.get_str("path").unwrap_or_default().to_owned(),
        received_at: bandvote_core::time::format(received),
    })
}
