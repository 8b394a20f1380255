//! The node directory: every node announces itself (id, address, version, connections,
//! start) with an expiry, renewed with its presence lease, so an operator sees the whole
//! cluster from any node (`GET /v1/admin/nodes`). A node that dies drops out when its
//! announcement expires; a node that stops withdraws at once. In Redis for a cluster
//! (`crate::redis::RedisNodeDirectory`), in memory on one node ([`LocalNodeDirectory`]).

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeInfo {
    pub id: String,
    /// Where the node listens (`server.host:server.port`).
    pub address: String,
    pub version: String,
    pub connections: usize,
    #[serde(with = "crate::domain::timestamp")]
    pub started_at: DateTime<Utc>,
    pub draining: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("node directory unavailable: {0}")]
pub struct DirectoryError(pub String);

#[async_trait]
pub trait NodeDirectory: Send + Sync + 'static {
    /// Announces (or renews) `node` until `ttl` from now.
    async fn announce(&self, node: &NodeInfo, ttl: Duration) -> Result<(), DirectoryError>;

    /// Takes `id` out of the directory at once (a graceful stop).
    async fn withdraw(&self, id: &str) -> Result<(), DirectoryError>;

    /// Every node whose announcement has not expired, by id.
    async fn nodes(&self) -> Result<Vec<NodeInfo>, DirectoryError>;
}

/// One node on its own: it is the directory.
#[derive(Default)]
pub struct LocalNodeDirectory {
    node: std::sync::Mutex<Option<(NodeInfo, std::time::Instant)>>,
}

#[async_trait]
impl NodeDirectory for LocalNodeDirectory {
    async fn announce(&self, node: &NodeInfo, ttl: Duration) -> Result<(), DirectoryError> {
        let until = std::time::Instant::now() + ttl;
        *self.node.lock().expect("not poisoned") = Some((node.clone(), until));
        Ok(())
    }

    async fn withdraw(&self, id: &str) -> Result<(), DirectoryError> {
        let mut node = self.node.lock().expect("not poisoned");
        if node.as_ref().is_some_and(|(n, _)| n.id == id) {
            *node = None;
        }
        Ok(())
    }

    async fn nodes(&self) -> Result<Vec<NodeInfo>, DirectoryError> {
        let node = self.node.lock().expect("not poisoned");
        Ok(node
            .iter()
            .filter(|(_, until)| *until > std::time::Instant::now())
            .map(|(n, _)| n.clone())
            .collect())
    }
}
