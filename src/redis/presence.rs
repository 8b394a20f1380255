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

    /// One command (see [`super::retrying`]).
    async fn run<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> PresenceResult<T> {
        super::retrying(self.timeout, || {
            let mut conn = self.conn.clone();
            let cmd = cmd.clone();
            async move { cmd.query_async::<T>(&mut conn).await }
        })
        .await
        .map_err(PresenceError::Unavailable)
    }

    async fn run_pipe<T: redis::FromRedisValue>(
        &self,
        pipe: &redis::Pipeline,
    ) -> PresenceResult<T> {
        super::retrying(self.timeout, || {
            let mut conn = self.conn.clone();
            let pipe = pipe.clone();
            async move { pipe.query_async::<T>(&mut conn).await }
        })
        .await
        .map_err(PresenceError::Unavailable)
    }

    /// A script with these keys and arguments.
    async fn run_script(
        &self,
        script: &redis::Script,
        keys: &[String],
        args: &[String],
    ) -> PresenceResult<i64> {
        super::retrying(self.timeout, || {
            let mut conn = self.conn.clone();
            let mut invocation = script.prepare_invoke();
            for key in keys {
                invocation.key(key);
            }
            for arg in args {
                invocation.arg(arg);
            }
            async move { invocation.invoke_async::<i64>(&mut conn).await }
        })
        .await
        .map_err(PresenceError::Unavailable)
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
        self.run_pipe(&pipe).await
    }

    async fn swap(
        &self,
        user: &UserId,
        expected: Option<&str>,
        record: &str,
        due: Option<Millis>,
    ) -> PresenceResult<bool> {
        let keys = [self.record_key(user), self.due_key()];
        let args = [
            if expected.is_some() { "1" } else { "0" }.to_owned(),
            expected.unwrap_or_default().to_owned(),
            record.to_owned(),
            due.map(|d| d.to_string()).unwrap_or_default(),
            user.to_string(),
            RECORD_TTL_MS.to_string(),
        ];
        // Run twice (a reply lost on a broken connection), the second finds its own write
        // and answers false: the caller reads again and sees its change made.
        Ok(self.run_script(&self.swap, &keys, &args).await? == 1)
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
        let args = [node.to_owned(), now.to_string(), until.to_string()];
        let claimed = self
            .run_script(&self.claim, &[self.leases_key()], &args)
            .await?;
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
        self.run_pipe(&pipe).await
    }
}
