//! The recent-message cache in Redis: one sorted set per room, score = seq, member = the
//! message as JSON (the rules it keeps are in `crate::cache`).

use std::time::Duration;

use async_trait::async_trait;
use redis::aio::ConnectionManager;

use crate::{
    cache::{CacheError, RecentCache},
    domain::{Message, RoomId},
};

/// Rooms idle this long drop out of the cache.
const IDLE_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// One sorted set per room: score = seq, member = the message as JSON.
pub struct RedisRecentCache {
    conn: ConnectionManager,
    prefix: String,
    size: usize,
    /// Every Redis call answers within this.
    timeout: Duration,
}

impl RedisRecentCache {
    pub fn new(conn: ConnectionManager, prefix: &str, size: usize, timeout: Duration) -> Self {
        Self {
            conn,
            prefix: prefix.to_owned(),
            size,
            timeout,
        }
    }

    fn key(&self, room: &RoomId) -> String {
        format!("{}:recent:{room}", self.prefix)
    }

    async fn query(&self, cmd: &redis::Cmd) -> Option<Vec<Message>> {
        let mut conn = self.conn.clone();
        let found =
            tokio::time::timeout(self.timeout, cmd.query_async::<Vec<String>>(&mut conn)).await;
        match found {
            Ok(Ok(jsons)) => jsons.iter().map(|j| serde_json::from_str(j).ok()).collect(),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "recent cache read failed; using the store");
                None
            }
            Err(_) => None,
        }
    }
}

/// Whether seqs step by exactly one in the given direction.
fn contiguous(messages: &[Message], step: i64) -> bool {
    messages
        .windows(2)
        .all(|w| w[1].seq as i64 - w[0].seq as i64 == step)
}

#[async_trait]
impl RecentCache for RedisRecentCache {
    async fn push(&self, message: &Message) -> Result<(), CacheError> {
        let key = self.key(&message.room);
        let json = serde_json::to_string(message).expect("messages serialize");
        let mut pipe = redis::pipe();
        pipe.atomic()
            .zadd(&key, json, message.seq)
            .ignore()
            .zremrangebyrank(&key, 0, -(self.size as isize) - 1)
            .ignore()
            .pexpire(&key, IDLE_TTL.as_millis() as i64)
            .ignore();
        let mut conn = self.conn.clone();
        tokio::time::timeout(self.timeout, pipe.query_async::<()>(&mut conn))
            .await
            .map_err(|_| CacheError::Unavailable("write timed out".into()))?
            .map_err(|e| CacheError::Unavailable(format!("redis: {e}")))
    }

    async fn forget(&self, room: &RoomId) -> Result<(), CacheError> {
        let mut conn = self.conn.clone();
        let del = redis::cmd("DEL").arg(self.key(room)).to_owned();
        tokio::time::timeout(self.timeout, del.query_async::<()>(&mut conn))
            .await
            .map_err(|_| CacheError::Unavailable("write timed out".into()))?
            .map_err(|e| CacheError::Unavailable(format!("redis: {e}")))
    }

    async fn latest(&self, room: &RoomId, limit: usize) -> Option<Vec<Message>> {
        let mut cmd = redis::cmd("ZRANGE");
        cmd.arg(self.key(room))
            .arg(0)
            .arg(limit as isize - 1)
            .arg("REV");
        let found = self.query(&cmd).await?;
        let complete = found.len() == limit || found.last().is_some_and(|m| m.seq == 1);
        (complete && contiguous(&found, -1)).then_some(found)
    }
}
