//! The presence registry of a cluster, in Redis:
//! - `<prefix>:presence:<user>`: the user's record (a string), kept 30 days after its last
//!   change so that `lastSeen` outlives short absences;
//! - `<prefix>:presence-due`: a sorted set of users by the time their record must be
//!   re-evaluated;
//! - `<prefix>:presence-leases`: a sorted set of nodes by the time their lease runs out;
//! - `<prefix>:presence-node:<node>`: the set of users with connections on that node.
//!
//! The compare-and-swap of a record and its schedule is one Lua script, so it is atomic.

use std::time::Duration;

use async_trait::async_trait;
use redis::aio::ConnectionManager;

use crate::{
    domain::UserId,
    presence::{Millis, PresenceError, PresenceRegistry, PresenceResult},
};

/// Records of users nobody changed for this long go (their `lastSeen` with them).
const RECORD_TTL_MS: i64 = 30 * 24 * 3600 * 1000;

/// KEYS: record, due set. ARGV: has expected (0/1), expected, new record, due ms ("" for
/// none), user, record ttl ms.
const SWAP: &str = r"
local current = redis.call('GET', KEYS[1])
if ARGV[1] == '1' then
  if current ~= ARGV[2] then return 0 end
elseif current then
  return 0
end
redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[6])
if ARGV[4] == '' then
  redis.call('ZREM', KEYS[2], ARGV[5])
else
  redis.call('ZADD', KEYS[2], ARGV[4], ARGV[5])
end
return 1
";

/// KEYS: leases. ARGV: node, now ms, until ms.
const CLAIM: &str = r"
local lease = redis.call('ZSCORE', KEYS[1], ARGV[1])
if lease and tonumber(lease) < tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
  return 1
end
return 0
";

pub struct RedisPresence {
    conn: ConnectionManager,
    prefix: String,
    swap: redis::Script,
    claim: redis::Script,
    /// Every Redis call answers within this.
    timeout: Duration,
}

impl RedisPresence {
    pub fn new(conn: ConnectionManager, prefix: &str, timeout: Duration) -> Self {
        Self {
            conn,
            prefix: prefix.to_owned(),
            swap: redis::Script::new(SWAP),
            claim: redis::Script::new(CLAIM),
            timeout,
        }
    }

    fn record_key(&self, user: &UserId) -> String {
        format!("{}:presence:{user}", self.prefix)
    }

    fn due_key(&self) -> String {
        format!("{}:presence-due", self.prefix)
    }

    fn leases_key(&self) -> String {
        format!("{}:presence-leases", self.prefix)
    }

    fn node_key(&self, node: &str) -> String {
        format!("{}:presence-node:{node}", self.prefix)
    }

    async fn within<T>(
        &self,
        call: impl Future<Output = redis::RedisResult<T>>,
    ) -> PresenceResult<T> {
        tokio::time::timeout(self.timeout, call)
            .await
            .map_err(|_| PresenceError::Unavailable("timed out".into()))?
            .map_err(|e| PresenceError::Unavailable(format!("redis: {e}")))
    }

    async fn run<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> PresenceResult<T> {
        let mut conn = self.conn.clone();
        self.within(cmd.query_async::<T>(&mut conn)).await
    }
}

/// User ids as stored; an id that no longer parses is skipped (it cannot have connections).
fn users(ids: Vec<String>) -> Vec<UserId> {
    ids.iter()
        .filter_map(|id| UserId::from_stored(id).ok())
        .collect()
}

#[async_trait]
impl PresenceRegistry for RedisPresence {
    async fn load(&self, users: &[UserId]) -> PresenceResult<Vec<Option<String>>> {
        if users.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = users.iter().map(|u| self.record_key(u)).collect();
        // MGET of one key answers a bare value; a pipeline keeps the shape a list.
        let mut pipe = redis::pipe();
        for key in &keys {
            pipe.get(key);
        }
        let mut conn = self.conn.clone();
        self.within(pipe.query_async::<Vec<Option<String>>>(&mut conn))
            .await
    }

    async fn swap(
        &self,
        user: &UserId,
        expected: Option<&str>,
        record: &str,
        due: Option<Millis>,
    ) -> PresenceResult<bool> {
        let mut invocation = self.swap.prepare_invoke();
        invocation
            .key(self.record_key(user))
            .key(self.due_key())
            .arg(if expected.is_some() { "1" } else { "0" })
            .arg(expected.unwrap_or_default())
            .arg(record)
            .arg(due.map(|d| d.to_string()).unwrap_or_default())
            .arg(user.as_str())
            .arg(RECORD_TTL_MS);
        let mut conn = self.conn.clone();
        let swapped: i64 = self.within(invocation.invoke_async(&mut conn)).await?;
        Ok(swapped == 1)
    }

    async fn due(&self, now: Millis, limit: usize) -> PresenceResult<Vec<UserId>> {
        let mut cmd = redis::cmd("ZRANGEBYSCORE");
        cmd.arg(self.due_key())
            .arg("-inf")
            .arg(now)
            .arg("LIMIT")
            .arg(0)
            .arg(limit);
        Ok(users(self.run(&cmd).await?))
    }

    async fn renew_lease(&self, node: &str, until: Millis) -> PresenceResult<()> {
        self.run(
            redis::cmd("ZADD")
                .arg(self.leases_key())
                .arg(until)
                .arg(node),
        )
        .await
    }

    async fn expired_nodes(&self, now: Millis) -> PresenceResult<Vec<String>> {
        let mut cmd = redis::cmd("ZRANGEBYSCORE");
        cmd.arg(self.leases_key())
            .arg("-inf")
            .arg(format!("({now}"));
        self.run(&cmd).await
    }

    async fn claim_expired(&self, node: &str, now: Millis, until: Millis) -> PresenceResult<bool> {
        let mut invocation = self.claim.prepare_invoke();
        invocation
            .key(self.leases_key())
            .arg(node)
            .arg(now)
            .arg(until);
        let mut conn = self.conn.clone();
        let claimed: i64 = self.within(invocation.invoke_async(&mut conn)).await?;
        Ok(claimed == 1)
    }

    async fn set_node_user(&self, node: &str, user: &UserId, present: bool) -> PresenceResult<()> {
        let op = if present { "SADD" } else { "SREM" };
        self.run(redis::cmd(op).arg(self.node_key(node)).arg(user.as_str()))
            .await
    }

    async fn node_users(&self, node: &str) -> PresenceResult<Vec<UserId>> {
        Ok(users(
            self.run(redis::cmd("SMEMBERS").arg(self.node_key(node)))
                .await?,
        ))
    }

    async fn forget_node(&self, node: &str) -> PresenceResult<()> {
        let mut pipe = redis::pipe();
        pipe.zrem(self.leases_key(), node)
            .ignore()
            .del(self.node_key(node))
            .ignore();
        let mut conn = self.conn.clone();
        self.within(pipe.query_async::<()>(&mut conn)).await
    }
}
