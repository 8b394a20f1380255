//! The presence registry of a cluster: one sorted set per user in Redis.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use redis::aio::ConnectionManager;

use crate::{
    domain::UserId,
    presence::{Presence, PresenceEntry, PresenceError},
};

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

    async fn run<T: redis::FromRedisValue>(
        &self,
        pipe: &redis::Pipeline,
    ) -> Result<T, PresenceError> {
        let mut conn = self.conn.clone();
        tokio::time::timeout(self.timeout, pipe.query_async::<T>(&mut conn))
            .await
            .map_err(|_| PresenceError::Unavailable("timed out".into()))?
            .map_err(|e| PresenceError::Unavailable(format!("redis: {e}")))
    }
}

/// A score: milliseconds since the epoch of `now + after`.
fn epoch_ms(now: DateTime<Utc>, after: Duration) -> i64 {
    let after = i64::try_from(after.as_millis()).unwrap_or(i64::MAX);
    now.timestamp_millis().saturating_add(after)
}

#[async_trait]
impl Presence for RedisPresence {
    async fn refresh(
        &self,
        entries: &[PresenceEntry],
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> Result<(), PresenceError> {
        if entries.is_empty() {
            return Ok(());
        }
        let until = epoch_ms(now, ttl);
        let now = epoch_ms(now, Duration::ZERO);
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

    async fn remove(
        &self,
        user: &UserId,
        conn: &str,
        now: DateTime<Utc>,
    ) -> Result<(), PresenceError> {
        let key = self.key(user);
        let mut pipe = redis::pipe();
        pipe.zrem(&key, conn)
            .ignore()
            .zrembyscore(&key, "-inf", epoch_ms(now, Duration::ZERO))
            .ignore();
        self.run(&pipe).await
    }

    async fn online(
        &self,
        users: &[UserId],
        now: DateTime<Utc>,
    ) -> Result<Vec<bool>, PresenceError> {
        if users.is_empty() {
            return Ok(Vec::new());
        }
        let now = epoch_ms(now, Duration::ZERO);
        let mut pipe = redis::pipe();
        for user in users {
            pipe.zcount(self.key(user), format!("({now}"), "+inf");
        }
        let counts: Vec<u64> = self.run(&pipe).await?;
        Ok(counts.into_iter().map(|n| n > 0).collect())
    }
}
