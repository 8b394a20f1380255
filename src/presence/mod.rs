//! Who is online: each live connection is an entry with an expiry, refreshed by its node.
//! A node that dies stops refreshing, so its users go offline within `presence.ttl_ms`,
//! with nobody having to notice the death. In-process for one node, Redis for a cluster.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use async_trait::async_trait;
use redis::aio::ConnectionManager;

use crate::{bus::BusError, domain::UserId};

/// One connection: its user and a key unique in the cluster ("<node>:<conn id>").
pub type PresenceEntry = (UserId, String);

#[async_trait]
pub trait Presence: Send + Sync + 'static {
    /// Marks these connections online for `ttl` from now.
    async fn refresh(&self, entries: &[PresenceEntry], ttl: Duration) -> Result<(), BusError>;

    /// Marks one connection offline now.
    async fn remove(&self, user: &UserId, conn: &str) -> Result<(), BusError>;

    /// Whether each user has at least one live connection anywhere.
    async fn online(&self, users: &[UserId]) -> Result<Vec<bool>, BusError>;
}

/// The registry of a single node.
#[derive(Default)]
pub struct LocalPresence {
    entries: Mutex<HashMap<UserId, HashMap<String, Instant>>>,
}

#[async_trait]
impl Presence for LocalPresence {
    async fn refresh(&self, entries: &[PresenceEntry], ttl: Duration) -> Result<(), BusError> {
        let until = Instant::now() + ttl;
        let mut map = self.entries.lock().expect("presence lock");
        for (user, conn) in entries {
            map.entry(user.clone())
                .or_default()
                .insert(conn.clone(), until);
        }
        Ok(())
    }

    async fn remove(&self, user: &UserId, conn: &str) -> Result<(), BusError> {
        let mut map = self.entries.lock().expect("presence lock");
        if let Some(conns) = map.get_mut(user) {
            conns.remove(conn);
            if conns.is_empty() {
                map.remove(user);
            }
        }
        Ok(())
    }

    async fn online(&self, users: &[UserId]) -> Result<Vec<bool>, BusError> {
        let now = Instant::now();
        let mut map = self.entries.lock().expect("presence lock");
        Ok(users
            .iter()
            .map(|user| {
                let Some(conns) = map.get_mut(user) else {
                    return false;
                };
                conns.retain(|_, until| *until > now);
                !conns.is_empty()
            })
            .collect())
    }
}

/// One sorted set per user: member = connection key, score = expiry (ms since the epoch).
/// Expired members are pruned whenever the user's set is written, so a set holds the user's
/// live connections plus at most those that expired since its last write.
pub struct RedisPresence {
    conn: ConnectionManager,
    prefix: String,
    /// Every Redis call answers within this.
    timeout: Duration,
}

impl RedisPresence {
    pub fn new(conn: ConnectionManager, prefix: &str, timeout: Duration) -> Self {
        Self {
            conn,
            prefix: prefix.to_owned(),
            timeout,
        }
    }

    fn key(&self, user: &UserId) -> String {
        format!("{}:presence:{user}", self.prefix)
    }

    async fn run<T: redis::FromRedisValue>(&self, pipe: &redis::Pipeline) -> Result<T, BusError> {
        let mut conn = self.conn.clone();
        tokio::time::timeout(self.timeout, pipe.query_async::<T>(&mut conn))
            .await
            .map_err(|_| BusError::Unavailable("presence timed out".into()))?
            .map_err(|e| BusError::Unavailable(format!("presence: {e}")))
    }
}

fn epoch_ms(after: Duration) -> i64 {
    (SystemTime::now() + after)
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[async_trait]
impl Presence for RedisPresence {
    async fn refresh(&self, entries: &[PresenceEntry], ttl: Duration) -> Result<(), BusError> {
        if entries.is_empty() {
            return Ok(());
        }
        let now = epoch_ms(Duration::ZERO);
        let until = epoch_ms(ttl);
        let mut pipe = redis::pipe();
        for (user, conn) in entries {
            let key = self.key(user);
            pipe.zrembyscore(&key, "-inf", now)
                .ignore()
                .zadd(&key, conn, until)
                .ignore()
                // The whole key outlives its entries a little, then goes by itself.
                .pexpire(&key, 2 * ttl.as_millis() as i64)
                .ignore();
        }
        self.run(&pipe).await
    }

    async fn remove(&self, user: &UserId, conn: &str) -> Result<(), BusError> {
        let key = self.key(user);
        let mut pipe = redis::pipe();
        pipe.zrem(&key, conn)
            .ignore()
            .zrembyscore(&key, "-inf", epoch_ms(Duration::ZERO))
            .ignore();
        self.run(&pipe).await
    }

    async fn online(&self, users: &[UserId]) -> Result<Vec<bool>, BusError> {
        if users.is_empty() {
            return Ok(Vec::new());
        }
        let now = epoch_ms(Duration::ZERO);
        let mut pipe = redis::pipe();
        for user in users {
            pipe.zcount(self.key(user), format!("({now}"), "+inf");
        }
        let counts: Vec<u64> = self.run(&pipe).await?;
        Ok(counts.into_iter().map(|n| n > 0).collect())
    }
}
