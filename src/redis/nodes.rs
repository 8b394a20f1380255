//! The node directory in Redis: `<prefix>:nodes`, a sorted set of node ids by the time
//! their announcement expires, and `<prefix>:node-info`, a hash of id -> the node as JSON.
//! Reading drops what expired from the set; a withdraw removes both.

use std::time::Duration;

use async_trait::async_trait;
use redis::aio::ConnectionManager;

use crate::nodes::{DirectoryError, NodeDirectory, NodeInfo};

pub struct RedisNodeDirectory {
    conn: ConnectionManager,
    prefix: String,
    /// Every Redis call answers within this.
    timeout: Duration,
}

impl RedisNodeDirectory {
    pub fn new(conn: ConnectionManager, prefix: &str, timeout: Duration) -> Self {
        Self {
            conn,
            prefix: prefix.to_owned(),
            timeout,
        }
    }

    fn keys(&self) -> (String, String) {
        (
            format!("{}:nodes", self.prefix),
            format!("{}:node-info", self.prefix),
        )
    }

    async fn run<T: redis::FromRedisValue>(
        &self,
        pipe: &redis::Pipeline,
    ) -> Result<T, DirectoryError> {
        super::retrying(self.timeout, || {
            let mut conn = self.conn.clone();
            let pipe = pipe.clone();
            async move { pipe.query_async::<T>(&mut conn).await }
        })
        .await
        .map_err(DirectoryError)
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[async_trait]
impl NodeDirectory for RedisNodeDirectory {
    async fn announce(&self, node: &NodeInfo, ttl: Duration) -> Result<(), DirectoryError> {
        let (expiries, infos) = self.keys();
        let json = serde_json::to_string(node).expect("node info serializes");
        let until = now_ms() + ttl.as_millis() as i64;
        let mut pipe = redis::pipe();
        pipe.atomic()
            .zadd(&expiries, &node.id, until)
            .ignore()
            .hset(&infos, &node.id, json)
            .ignore();
        self.run(&pipe).await
    }

    async fn withdraw(&self, id: &str) -> Result<(), DirectoryError> {
        let (expiries, infos) = self.keys();
        let mut pipe = redis::pipe();
        pipe.atomic()
            .zrem(&expiries, id)
            .ignore()
            .hdel(&infos, id)
            .ignore();
        self.run(&pipe).await
    }

    async fn nodes(&self) -> Result<Vec<NodeInfo>, DirectoryError> {
        let (expiries, infos) = self.keys();
        let now = now_ms();
        let mut pipe = redis::pipe();
        pipe.zrangebyscore(&expiries, now, "+inf");
        let (live,): (Vec<String>,) = self.run(&pipe).await?;
        // What expired leaves the set (its info stays until a withdraw: a node announcing
        // again meanwhile must not lose it; the hash holds one entry per node id ever seen).
        let mut sweep = redis::pipe();
        sweep.zrembyscore(&expiries, "-inf", now - 1).ignore();
        self.run::<()>(&sweep).await?;
        if live.is_empty() {
            return Ok(Vec::new());
        }
        let mut read = redis::pipe();
        read.cmd("HMGET").arg(&infos).arg(&live);
        let (jsons,): (Vec<Option<String>>,) = self.run(&read).await?;
        let mut nodes: Vec<NodeInfo> = jsons
            .into_iter()
            .flatten()
            .filter_map(|j| serde_json::from_str(&j).ok())
            .collect();
        nodes.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(nodes)
    }
}
