//! Where Redis is, for every role that uses it (consumer, API, the gateways' fair voting, recount,
//! audit): one fixed URL, or the primary that Redis Sentinel names. Both are a URL, so every flag,
//! variable and config key that takes a Redis URL takes either:
//!
//! - `redis://[:PASSWORD@]HOST:PORT[/DB]` (or `rediss://` for TLS): one server;
//! - `redis-sentinel://[:PASSWORD@]SENTINEL:PORT[,SENTINEL:PORT…][/DB]#MASTER`: the primary of
//!   `MASTER` as the Sentinels name it (the password and database are the data nodes'; `MASTER`
//!   defaults to `bandvote`). The command line also builds it from `--redis-sentinel` and
//!   `--redis-master`.
//!
//! Through Sentinel the
//! connection follows a failover by itself: a command that fails because the primary went away
//! (connection lost, timed out, or the node became a read-only replica) fails as it would against
//! one server (every caller already retries or answers 503), and the next command asks the
//! Sentinels for the primary again.

use std::{
    fmt,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::Context;
use redis::{
    Cmd, ErrorKind, IntoConnectionInfo, Pipeline, RedisError, RedisFuture, RedisResult, ServerErrorKind, Value,
    aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection},
    sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType},
};
use secrecy::{ExposeSecret, SecretString};

/// Where the Redis of the counters (or of the voter policy) is.
#[derive(Clone)]
pub enum RedisTarget {
    /// One server (a database number in the path is honoured).
    Url(SecretString),
    /// The primary of `master` as the Sentinels at `sentinels` (`HOST:PORT`) name it. `url` gives
    /// what the data nodes need besides their address: database number, user and password.
    Sentinel {
        /// `HOST:PORT` of each Sentinel.
        sentinels: Vec<String>,
        /// The master name the Sentinels monitor.
        master: String,
        /// Database, user and password of the data nodes (its host is not used).
        url: SecretString,
    },
}

/// The scheme of a URL naming Sentinels.
pub const SENTINEL_SCHEME: &str = "redis-sentinel://";
/// The master name when a Sentinel URL names none.
pub const DEFAULT_MASTER: &str = "bandvote";

impl RedisTarget {
    /// A fixed URL.
    pub fn url(url: impl Into<String>) -> Self {
        Self::Url(SecretString::from(url.into()))
    }

    /// Reads a `redis://` or `redis-sentinel://` URL (module documentation).
    pub fn parse(url: &str) -> anyhow::Result<Self> {
        let Some(rest) = url.strip_prefix(SENTINEL_SCHEME) else {
            url.into_connection_info().with_context(|| format!("invalid redis url {}", crate::url::redact(url)))?;
            return Ok(Self::url(url));
        };
        let invalid = || format!("invalid redis sentinel url {}", crate::url::redact(url));
        let (rest, master) = match rest.split_once('#') {
            Some((rest, master)) if !master.is_empty() => (rest, master.to_owned()),
            Some(_) => anyhow::bail!("{}: the master name after # is empty", invalid()),
            None => (rest, DEFAULT_MASTER.to_owned()),
        };
        let (credentials, rest) = match rest.rsplit_once('@') {
            Some((credentials, rest)) => (Some(credentials), rest),
            None => (None, rest),
        };
        let (hosts, db) = rest.split_once('/').unwrap_or((rest, ""));
        let sentinels: Vec<String> =
            hosts.split(',').map(str::trim).filter(|h| !h.is_empty()).map(str::to_owned).collect();
        anyhow::ensure!(!sentinels.is_empty(), "{}: no sentinel named", invalid());
        for sentinel in &sentinels {
            let port = sentinel.rsplit_once(':').map(|(_, port)| port);
            anyhow::ensure!(
                port.is_some_and(|port| port.parse::<u16>().is_ok()),
                "{}: {sentinel:?} is not HOST:PORT",
                invalid()
            );
        }
        // What the data nodes need (database, user, password), as a URL the client reads.
        let node = match credentials {
            Some(credentials) => format!("redis://{credentials}@127.0.0.1/{db}"),
            None => format!("redis://127.0.0.1/{db}"),
        };
        node.as_str().into_connection_info().with_context(invalid)?;
        Ok(Self::Sentinel { sentinels, master, url: SecretString::from(node) })
    }

    /// The `redis-sentinel://` URL of `sentinels` (`HOST:PORT`) and `master`, with the password and
    /// database of `url` (a `redis://` URL); `url` itself when no sentinel is named.
    pub fn sentinel_url(url: &SecretString, sentinels: &[String], master: &str) -> SecretString {
        if sentinels.is_empty() {
            return url.clone();
        }
        let url = url.expose_secret();
        let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
        let (credentials, rest) = after_scheme.rsplit_once('@').map_or((None, after_scheme), |(c, r)| (Some(c), r));
        let db = rest.split_once('/').map_or("", |(_, db)| db);
        let credentials = credentials.map(|c| format!("{c}@")).unwrap_or_default();
        SecretString::from(format!("{SENTINEL_SCHEME}{credentials}{}/{db}#{master}", sentinels.join(",")))
    }

    /// Connects; the first connection must succeed (a dead Redis at start-up is an error).
    pub async fn connect(&self, timeouts: Timeouts) -> anyhow::Result<Redis> {
        match self {
            Self::Url(url) => {
                let client = redis::Client::open(url.expose_secret())
                    .with_context(|| format!("invalid redis url {}", crate::url::redact(url.expose_secret())))?;
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(timeouts.connect))
                    .set_response_timeout(Some(timeouts.response))
                    .set_number_of_retries(timeouts.retries);
                let manager = ConnectionManager::new_with_config(client, config).await.with_context(|| {
                    format!("failed to connect to redis at {}", crate::url::redact(url.expose_secret()))
                })?;
                let db = manager.get_db();
                Ok(Redis { inner: Inner::Direct(manager), db })
            }
            Self::Sentinel { sentinels, master, url } => {
                let info = url
                    .expose_secret()
                    .into_connection_info()
                    .with_context(|| format!("invalid redis url {}", crate::url::redact(url.expose_secret())))?;
                let db = info.redis_settings().db();
                let node =
                    SentinelNodeConnectionInfo::default().set_redis_connection_info(info.redis_settings().clone());
                let addresses: Vec<String> = sentinels.iter().map(|sentinel| format!("redis://{sentinel}")).collect();
                let client = SentinelClient::build(addresses, master.clone(), Some(node), SentinelServerType::Master)
                    .context("invalid redis sentinel addresses")?;
                let sentinel = Arc::new(Sentinel {
                    client: tokio::sync::Mutex::new(client),
                    current: Mutex::new(None),
                    timeouts,
                    description: format!("master {master} via sentinels {}", sentinels.join(",")),
                });
                sentinel
                    .connection()
                    .await
                    .with_context(|| format!("failed to connect to redis {}", sentinel.description))?;
                Ok(Redis { inner: Inner::Sentinel(sentinel), db })
            }
        }
    }
}

impl fmt::Display for RedisTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Url(url) => f.write_str(&crate::url::redact(url.expose_secret())),
            Self::Sentinel { sentinels, master, .. } => {
                write!(f, "master {master} via sentinels {}", sentinels.join(","))
            }
        }
    }
}

impl fmt::Debug for RedisTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RedisTarget({self})")
    }
}

/// How long a connection may take to open and a command to answer, and how often opening a
/// connection is retried.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// Opening a connection.
    pub connect: Duration,
    /// One command's answer.
    pub response: Duration,
    /// Attempts to reconnect before a command fails.
    pub retries: usize,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self { connect: Duration::from_secs(2), response: Duration::from_secs(5), retries: 2 }
    }
}

/// A connection to Redis (cheap to clone; clones share it).
#[derive(Clone)]
pub struct Redis {
    inner: Inner,
    db: i64,
}

#[derive(Clone)]
enum Inner {
    Direct(ConnectionManager),
    Sentinel(Arc<Sentinel>),
}

struct Sentinel {
    client: tokio::sync::Mutex<SentinelClient>,
    current: Mutex<Option<MultiplexedConnection>>,
    timeouts: Timeouts,
    description: String,
}

impl Sentinel {
    /// The connection to the current primary, opened (after asking the Sentinels) when there is none.
    async fn connection(&self) -> RedisResult<MultiplexedConnection> {
        if let Some(connection) = self.current.lock().expect("redis connection lock").clone() {
            return Ok(connection);
        }
        let mut client = self.client.lock().await;
        // Another caller may have connected while this one waited.
        if let Some(connection) = self.current.lock().expect("redis connection lock").clone() {
            return Ok(connection);
        }
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeouts.connect))
            .set_response_timeout(Some(self.timeouts.response));
        let connection =
            tokio::time::timeout(self.timeouts.connect * 2, client.get_async_connection_with_config(&config))
                .await
                .map_err(|_| RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut)))??;
        *self.current.lock().expect("redis connection lock") = Some(connection.clone());
        tracing::info!(redis = %self.description, "connected to the redis primary");
        Ok(connection)
    }

    /// Forgets the connection after an error that means the primary may have moved.
    fn observe<T>(&self, result: RedisResult<T>) -> RedisResult<T> {
        if let Err(error) = &result
            && primary_may_have_moved(error)
        {
            tracing::warn!(redis = %self.description, %error, "redis primary lost: asking the sentinels again");
            self.current.lock().expect("redis connection lock").take();
        }
        result
    }
}

/// Errors after which the primary is looked up again: the connection is gone, or the node answers
/// as a read-only replica (a failover demoted it).
fn primary_may_have_moved(error: &RedisError) -> bool {
    error.is_io_error()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
        || error.is_timeout()
        || matches!(error.kind(), ErrorKind::Server(ServerErrorKind::ReadOnly))
        || error.to_string().contains("READONLY")
}

impl ConnectionLike for Redis {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match &mut self.inner {
            Inner::Direct(manager) => manager.req_packed_command(cmd),
            Inner::Sentinel(sentinel) => Box::pin(async move {
                let result = match sentinel.connection().await {
                    Ok(mut connection) => connection.req_packed_command(cmd).await,
                    Err(error) => Err(error),
                };
                sentinel.observe(result)
            }),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match &mut self.inner {
            Inner::Direct(manager) => manager.req_packed_commands(pipeline, offset, count),
            Inner::Sentinel(sentinel) => Box::pin(async move {
                let result = match sentinel.connection().await {
                    Ok(mut connection) => connection.req_packed_commands(pipeline, offset, count).await,
                    Err(error) => Err(error),
                };
                sentinel.observe(result)
            }),
        }
    }

    fn get_db(&self) -> i64 {
        self.db
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentinel_urls_name_sentinels_master_database_and_password() {
        let target = RedisTarget::parse("redis-sentinel://:hunter2@127.0.0.1:26379,127.0.0.1:26380/3#show").unwrap();
        let RedisTarget::Sentinel { sentinels, master, url } = &target else { panic!("{target}") };
        assert_eq!(sentinels, &["127.0.0.1:26379", "127.0.0.1:26380"]);
        assert_eq!(master, "show");
        let node = url.expose_secret().into_connection_info().unwrap();
        assert_eq!(node.redis_settings().db(), 3);
        assert_eq!(target.to_string(), "master show via sentinels 127.0.0.1:26379,127.0.0.1:26380");
        assert!(!format!("{target:?}").contains("hunter2"));

        let plain = RedisTarget::parse("redis-sentinel://sentinel:26379").unwrap();
        assert!(matches!(&plain, RedisTarget::Sentinel { master, .. } if master == DEFAULT_MASTER));
        assert!(matches!(RedisTarget::parse("redis://:hunter2@127.0.0.1:6379/3").unwrap(), RedisTarget::Url(_)));
        assert!(!RedisTarget::url("redis://:hunter2@127.0.0.1:6379/3").to_string().contains("hunter2"));
    }

    #[test]
    fn bad_sentinel_urls_say_what_is_wrong_without_the_password() {
        for (url, expected) in [
            ("redis-sentinel://:hunter2@/0", "no sentinel named"),
            ("redis-sentinel://:hunter2@host/0", "\"host\" is not HOST:PORT"),
            ("redis-sentinel://:hunter2@host:26379/0#", "master name"),
            ("redis-sentinel://:hunter2@host:26379/zero", "invalid redis sentinel url"),
        ] {
            let error = format!("{:#}", RedisTarget::parse(url).unwrap_err());
            assert!(error.contains(expected), "{url}: {error}");
            assert!(!error.contains("hunter2"), "{error}");
        }
    }

    #[test]
    fn flags_build_the_sentinel_url_from_the_plain_one() {
        let url = SecretString::from("redis://:hunter2@redis:6379/2".to_owned());
        let sentinels = vec!["s1:26379".to_owned(), "s2:26379".to_owned()];
        let built = RedisTarget::sentinel_url(&url, &sentinels, "bandvote");
        assert_eq!(built.expose_secret(), "redis-sentinel://:hunter2@s1:26379,s2:26379/2#bandvote");
        assert_eq!(RedisTarget::sentinel_url(&url, &[], "bandvote").expose_secret(), url.expose_secret());
        let RedisTarget::Sentinel { url: node, .. } = RedisTarget::parse(built.expose_secret()).unwrap() else {
            panic!()
        };
        assert_eq!(node.expose_secret().into_connection_info().unwrap().redis_settings().db(), 2);
    }

    #[test]
    fn a_demoted_primary_or_a_lost_connection_sends_the_client_back_to_the_sentinels() {
        let readonly = RedisError::from((ErrorKind::Server(ServerErrorKind::ReadOnly), "READONLY"));
        assert!(primary_may_have_moved(&readonly));
        let io = RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert!(primary_may_have_moved(&io));
        let script = RedisError::from((ErrorKind::Server(ServerErrorKind::ResponseError), "bad batch"));
        assert!(!primary_may_have_moved(&script));
    }
}
