//! The push gateway: notifications for apps, in the shape of the Matrix Push Gateway API
//! (`POST /_matrix/push/v1/notify`), so an existing gateway (Sygnal) can take them to FCM
//! or APNs. chatd signs each request and names it with an idempotency key
//! (docs/protocol.md, "Push gateway").

use hmac::{KeyInit, Mac};
use serde_json::{Value, json};

use super::Delivery;

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// `sha256=<hex HMAC-SHA256(secret, timestamp + "." + body)>`: the `X-Chatd-Signature` of a
/// body sent at `timestamp` (seconds since the epoch).
pub fn signature(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// One device as the gateway API names it.
pub struct GatewayDevice<'a> {
    pub app_id: &'a str,
    pub push_key: &'a str,
    pub data: &'a serde_json::Map<String, Value>,
}

pub struct Gateway {
    url: String,
    secret: Vec<u8>,
    http: reqwest::Client,
}

impl Gateway {
    pub fn new(url: &str, secret: &str, http: reqwest::Client) -> Self {
        Self {
            url: url.to_owned(),
            secret: secret.as_bytes().to_vec(),
            http,
        }
    }

    /// Sends `notification` (the API's `notification` object without `devices`) to these
    /// devices in one request; returns what became of each, in their order.
    pub async fn send(
        &self,
        idempotency_key: &str,
        mut notification: serde_json::Map<String, Value>,
        devices: &[GatewayDevice<'_>],
    ) -> Vec<Delivery> {
        let listed: Vec<Value> = devices
            .iter()
            .map(|d| json!({"app_id": d.app_id, "pushkey": d.push_key, "data": d.data}))
            .collect();
        notification.insert("devices".into(), Value::Array(listed));
        let body = serde_json::to_vec(&json!({ "notification": notification }))
            .expect("JSON values serialize");
        let timestamp = chrono::Utc::now().timestamp();
        let sent = self
            .http
            .post(&self.url)
            .header("content-type", "application/json")
            .header("idempotency-key", idempotency_key)
            .header("x-chatd-timestamp", timestamp.to_string())
            .header(
                "x-chatd-signature",
                signature(&self.secret, timestamp, &body),
            )
            .body(body)
            .send()
            .await;
        let everyone = |delivery: Delivery| vec![delivery; devices.len()];
        let response = match sent {
            Ok(response) => response,
            Err(e) if e.is_timeout() => {
                return everyone(Delivery::Retry("gateway did not answer in time".into()));
            }
            Err(_) => return everyone(Delivery::Retry("gateway unreachable".into())),
        };
        let status = response.status();
        match status.as_u16() {
            200..=299 => {}
            429 | 500..=599 => {
                return everyone(Delivery::Retry(format!("gateway answered {status}")));
            }
            _ => return everyone(Delivery::Refused(format!("gateway answered {status}"))),
        }
        // A 200 whose body does not parse rejected nobody.
        let rejected: Vec<String> = response
            .json::<Value>()
            .await
            .ok()
            .and_then(|v| serde_json::from_value(v.get("rejected")?.clone()).ok())
            .unwrap_or_default();
        devices
            .iter()
            .map(|d| {
                if rejected.iter().any(|r| r == d.push_key) {
                    Delivery::Rejected("gateway rejected the push key".into())
                } else {
                    Delivery::Sent
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The signature of RFC 4231's test case 2 key over a known message, checked against
    /// `openssl dgst -sha256 -hmac Jefe` of "1700000000.what do ya want for nothing?".
    #[test]
    fn the_signature_is_hmac_sha256_of_timestamp_dot_body() {
        let sig = signature(b"Jefe", 1_700_000_000, b"what do ya want for nothing?");
        assert_eq!(
            sig,
            "sha256=1cdd0650c8be1cb0974b1788d458b1e781206cfef59b85faafc582d2e182c57e"
        );
        assert_ne!(
            sig,
            signature(b"Jefe", 1_700_000_001, b"what do ya want for nothing?")
        );
        assert_ne!(
            sig,
            signature(b"Jefe", 1_700_000_000, b"what do ya want for nothing!")
        );
    }
}
