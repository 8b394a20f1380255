//! Everything chatd keeps in Redis, in cluster mode: the bus (Pub/Sub between nodes), the
//! recent-message cache and the presence registry. They share one command connection per
//! node ([`connect_manager`]); the bus has its own Pub/Sub connection. Every call answers
//! within `bus.timeout_ms`.

use std::time::Duration;

use redis::{
    Client,
    aio::{ConnectionManager, ConnectionManagerConfig},
};

mod bus;
mod cache;
mod presence;

pub use bus::RedisBus;
pub use cache::RedisRecentCache;
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

impl From<RedisError> for crate::bus::BusError {
    fn from(e: RedisError) -> Self {
        crate::bus::BusError::Unavailable(e.to_string())
    }
}
