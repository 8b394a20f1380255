//! The application state: everything a request or a connection needs, shared by all of
//! them. Built by `startup`; the REST API and the WebSocket gateway only read it, so the
//! modules below (chat, hub, store, bus) never import the ones above.

use std::sync::Arc;

use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    auth::TokenAuthority, bus::Bus, chat::Chat, clock::Clock, config::Settings, hub::Hub,
    presence::PresenceService, store::Store, throttle::UserLimits,
};

impl Node {
    /// A token's user, if its signature and claims hold and it was not revoked.
    pub async fn authenticate(
        &self,
        token: &str,
    ) -> Result<crate::auth::Verified, crate::auth::AuthError> {
        let verified = self.auth.verify(token).await?;
        self.hub.revocations.check(&verified).await?;
        Ok(verified)
    }

    /// This node as the directory lists it.
    pub fn info(&self) -> crate::nodes::NodeInfo {
        crate::nodes::NodeInfo {
            id: self.id.clone(),
            address: self.address.clone(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            connections: self.hub.connection_count(),
            started_at: self.started_at,
            draining: self.shutdown.is_cancelled(),
        }
    }
}

/// Everything a request or a connection needs, shared by all of them.
pub struct Node {
    pub id: String,
    pub settings: Settings,
    pub auth: TokenAuthority,
    pub chat: Chat,
    pub hub: Arc<Hub>,
    pub store: Arc<dyn Store>,
    pub bus: Arc<dyn Bus>,
    /// Offline notifications: devices, decisions, sending.
    pub push: Arc<crate::push::Push>,
    /// Who is online: the only way into the presence registry.
    pub presence: Arc<PresenceService>,
    /// The node's one clock (token expiry included).
    pub clock: Arc<dyn Clock>,
    /// Per-user limits on sends, reads and resumes (WebSocket and REST).
    pub limits: UserLimits,
    /// Browser origins allowed to open WebSockets and read REST answers.
    pub origins: crate::origins::Origins,
    /// Where this node listens.
    pub address: String,
    pub started_at: chrono::DateTime<chrono::Utc>,
    /// Every node of the cluster (this one announces itself).
    pub directory: Arc<dyn crate::nodes::NodeDirectory>,
    /// Cancelled when the node starts to stop.
    pub shutdown: CancellationToken,
    /// Connection and background tasks, awaited (up to the grace period) on shutdown.
    pub tasks: TaskTracker,
}
