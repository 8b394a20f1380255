//! Registering a device: what a client may send, and the checks that keep the node from
//! POSTing to addresses of a user's choosing.

use serde::Deserialize;

use super::{Push, webpush};
use crate::{
    chat::{ChatError, ChatResult},
    domain::UserId,
    protocol::ErrorCode,
    store::push::{Device, DeviceTarget, Registered},
};

pub const MAX_DEVICE_NAME: usize = 100;
const MAX_APP_ID: usize = 64;
const MAX_PUSH_KEY: usize = 512;
const MAX_DATA_BYTES: usize = 1024;
const MAX_ENDPOINT: usize = 2048;

/// `POST /v1/me/devices`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(
    tag = "kind",
    rename_all = "lowercase",
    rename_all_fields = "camelCase"
)]
pub enum Registration {
    Webpush {
        subscription: Subscription,
        #[serde(default)]
        name: String,
    },
    Gateway {
        app_id: String,
        push_key: String,
        #[serde(default)]
        #[schema(value_type = Object)]
        data: serde_json::Map<String, serde_json::Value>,
        #[serde(default)]
        name: String,
    },
}

/// A browser's `PushSubscription.toJSON()`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct Subscription {
    pub endpoint: String,
    pub keys: SubscriptionKeys,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct SubscriptionKeys {
    pub p256dh: String,
    pub auth: String,
}

/// A device as its user sees it.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeviceView {
    pub id: String,
    pub kind: crate::store::push::DeviceKind,
    pub name: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub push_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub data: Option<serde_json::Map<String, serde_json::Value>>,
}

impl From<&Device> for DeviceView {
    fn from(device: &Device) -> Self {
        let mut view = DeviceView {
            id: device.id.clone(),
            kind: device.target.kind(),
            name: device.name.clone(),
            created_at: device.created_at,
            endpoint: None,
            app_id: None,
            push_key: None,
            data: None,
        };
        match &device.target {
            DeviceTarget::Webpush { endpoint, .. } => view.endpoint = Some(endpoint.clone()),
            DeviceTarget::Gateway {
                app_id,
                push_key,
                data,
            } => {
                view.app_id = Some(app_id.clone());
                view.push_key = Some(push_key.clone());
                view.data = Some(data.clone());
            }
        }
        view
    }
}

fn bad(message: impl Into<String>) -> ChatError {
    ChatError::bad_field(message)
}

fn printable(s: &str, max: usize) -> bool {
    !s.is_empty() && s.len() <= max && s.chars().all(|c| c.is_ascii_graphic())
}

/// Whether `host` is one of `allowed` ("*.example.com" matches its subdomains; "*": any).
pub fn host_allowed(host: &str, allowed: &[String]) -> bool {
    let host = host.to_ascii_lowercase();
    allowed.iter().any(|pattern| {
        let pattern = pattern.to_ascii_lowercase();
        match pattern.strip_prefix("*.") {
            _ if pattern == "*" => true,
            Some(domain) => host.ends_with(&format!(".{domain}")),
            None => host == pattern,
        }
    })
}

impl Push {
    /// Registers `user`'s device (see docs/protocol.md, "Devices"); true if it is new.
    pub async fn register(
        &self,
        user: &UserId,
        registration: Registration,
    ) -> ChatResult<(DeviceView, bool)> {
        let (target, name) = self.target(registration)?;
        if name.chars().count() > MAX_DEVICE_NAME {
            return Err(bad(format!(
                "name is longer than {MAX_DEVICE_NAME} characters"
            )));
        }
        let device = Device {
            id: uuid::Uuid::now_v7().to_string(),
            user: user.clone(),
            name,
            created_at: self.clock.now(),
            target,
        };
        match self
            .store
            .register_device(device, self.settings.max_devices_per_user)
            .await?
        {
            Registered::Created(device) => Ok((DeviceView::from(&device), true)),
            Registered::Existing(device) => Ok((DeviceView::from(&device), false)),
            Registered::TooMany => Err(ChatError::invalid(
                ErrorCode::TooManyDevices,
                format!(
                    "at most {} devices per user; remove one first",
                    self.settings.max_devices_per_user
                ),
            )),
        }
    }

    pub async fn devices(&self, user: &UserId) -> ChatResult<Vec<DeviceView>> {
        let devices = self.store.devices(std::slice::from_ref(user)).await?;
        Ok(devices.iter().map(DeviceView::from).collect())
    }

    pub async fn remove(&self, user: &UserId, id: &str) -> ChatResult<()> {
        if self.store.remove_device(user, id).await? {
            Ok(())
        } else {
            Err(ChatError::invalid(
                ErrorCode::DeviceNotFound,
                "no such device",
            ))
        }
    }

    fn target(&self, registration: Registration) -> ChatResult<(DeviceTarget, String)> {
        let not_offered = |kind: &str| {
            ChatError::invalid(
                ErrorCode::PushNotConfigured,
                format!("this server sends no {kind} notifications"),
            )
        };
        match registration {
            Registration::Webpush { subscription, name } => {
                if self.webpush.is_none() {
                    return Err(not_offered("Web Push"));
                }
                let endpoint = self.check_endpoint(&subscription.endpoint)?;
                let keys = subscription.keys;
                webpush::parse_keys(&keys.p256dh, &keys.auth).map_err(bad)?;
                let target = DeviceTarget::Webpush {
                    endpoint,
                    p256dh: keys.p256dh,
                    auth: keys.auth,
                };
                Ok((target, name))
            }
            Registration::Gateway {
                app_id,
                push_key,
                data,
                name,
            } => {
                if self.gateway.is_none() {
                    return Err(not_offered("gateway"));
                }
                if !printable(&app_id, MAX_APP_ID) {
                    return Err(bad(format!(
                        "appId must be 1 to {MAX_APP_ID} printable ASCII characters"
                    )));
                }
                if push_key.is_empty() || push_key.len() > MAX_PUSH_KEY {
                    return Err(bad(format!("pushKey must be 1 to {MAX_PUSH_KEY} bytes")));
                }
                let size = serde_json::to_vec(&data).map_or(usize::MAX, |d| d.len());
                if size > MAX_DATA_BYTES {
                    return Err(bad(format!("data must be at most {MAX_DATA_BYTES} bytes")));
                }
                let target = DeviceTarget::Gateway {
                    app_id,
                    push_key,
                    data,
                };
                Ok((target, name))
            }
        }
    }

    /// The endpoint as it will be requested (normalized), if this node may send to it.
    fn check_endpoint(&self, endpoint: &str) -> ChatResult<String> {
        let url = reqwest::Url::parse(endpoint)
            .ok()
            .filter(|_| endpoint.len() <= MAX_ENDPOINT)
            .ok_or_else(|| bad("subscription.endpoint must be a URL"))?;
        let scheme_ok = match url.scheme() {
            "https" => true,
            "http" => self.settings.webpush_allow_http,
            _ => false,
        };
        if !scheme_ok {
            return Err(bad("subscription.endpoint must be https"));
        }
        let host = url.host_str().unwrap_or("");
        if !host_allowed(host, &self.settings.webpush_allowed_hosts) {
            return Err(bad(
                "subscription.endpoint is not on a push service this server sends to",
            ));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(bad("subscription.endpoint must not carry credentials"));
        }
        let normalized = url.as_str().to_owned();
        if normalized.parse::<http::Uri>().is_err() {
            return Err(bad("subscription.endpoint must be a URL"));
        }
        Ok(normalized)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_match_exactly_or_as_subdomains() {
        let allowed = vec!["fcm.googleapis.com".to_owned(), "*.push.example".to_owned()];
        assert!(host_allowed("fcm.googleapis.com", &allowed));
        assert!(host_allowed("FCM.googleapis.com", &allowed));
        assert!(host_allowed("a.push.example", &allowed));
        assert!(!host_allowed("push.example", &allowed));
        assert!(!host_allowed("evilpush.example", &allowed));
        assert!(!host_allowed("fcm.googleapis.com.evil", &allowed));
        assert!(host_allowed("anything", &["*".to_owned()]));
    }
}
