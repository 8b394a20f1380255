//! Everything chatd keeps in Redis, in cluster mode: the bus (Pub/Sub between nodes), the
//! recent-message cache, the presence registry and the node directory. They share one command connection per
//! node ([`connect_manager`]); the bus has its own Pub/Sub connection. Every call answers
//! within `bus.timeout_ms`.

use std::time::Duration;

use redis::{
    Client,
    aio::{ConnectionManager, ConnectionManagerConfig},
};

mod bus;
mod cache;
mod nodes;
mod presence;

pub use bus::RedisBus;
pub use cache::RedisRecentCache;
pub use nodes::RedisNodeDirectory;
pub use presence::RedisPresence;

/// Redis could not be reached (or did not answer in time) while connecting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("redis: {0}")]
pub struct RedisError(pub String);

/// A reconnecting connection for commands, shared (cloned) by everything Redis in a node.
/// Every command answers within `timeout` or fails.
pub async fn connect_manager(
    client: &Client,
    timeout: Duration,
) -> Result<ConnectionManager, RedisError> {
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout))
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_secs(1));
    tokio::time::timeout(
        timeout * 2,
        ConnectionManager::new_with_config(client.clone(), config),
    )
    .await
    .map_err(|_| RedisError("connect timed out".into()))?
    .map_err(|e| RedisError(e.to_string()))
}

/// Runs `call` within `timeout`, and once more if it failed on a broken connection: a
/// `ConnectionManager` reconnects only after a command failed on the dead connection, so
/// the first command after Redis came back fails although Redis answers again. Only for
/// commands that may run twice (every one chatd sends: publishes are de-duplicated by
/// their receivers, registry writes are compare-and-swap or idempotent).
pub(crate) async fn retrying<T, F, Fut>(timeout: Duration, mut call: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = redis::RedisResult<T>>,
{
    let broken = |e: &redis::RedisError| {
        e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal()
    };
    match tokio::time::timeout(timeout, call()).await {
        Ok(Ok(value)) => return Ok(value),
        Ok(Err(e)) if broken(&e) => {
            tracing::debug!(error = %e, "redis connection broken; once more")
        }
        Ok(Err(e)) => return Err(format!("redis: {e}")),
        Err(_) => return Err("timed out".into()),
    }
    tokio::time::timeout(timeout, call())
        .await
        .map_err(|_| "timed out".to_owned())?
        .map_err(|e| format!("redis: {e}"))
}

impl From<RedisError> for crate::bus::BusError {
    fn from(e: RedisError) -> Self {
        crate::bus::BusError::Unavailable(e.to_string())
    }
}
