//! Web Push (RFC 8030) to browsers, with the payload encrypted per RFC 8291 and VAPID
//! (RFC 8292), by the `web-push-native` crate; this module only adds chatd's keys, headers
//! and the reading of the push service's answer.

use std::time::Duration;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use web_push_native::{
    Auth, WebPushBuilder,
    jwt_simple::algorithms::{ECDSAP256PublicKeyLike, ES256KeyPair},
    p256,
};

use super::Delivery;

/// RFC 8292: a VAPID token expires within 24 hours; half of that leaves room for skewed
/// clocks at the push service.
const VAPID_VALIDITY: Duration = Duration::from_secs(12 * 3600);

/// The node's VAPID key pair.
pub struct VapidKey {
    pair: ES256KeyPair,
    /// Uncompressed P-256 point, base64url: the `applicationServerKey` browsers subscribe with.
    public: String,
}

impl VapidKey {
    /// From the base64url private scalar (32 bytes), as `chatd vapid-keys` prints it.
    pub fn parse(private: &str) -> Result<Self, String> {
        let bytes = URL_SAFE_NO_PAD
            .decode(private.trim())
            .map_err(|e| format!("not base64url: {e}"))?;
        let pair = ES256KeyPair::from_bytes(&bytes).map_err(|e| format!("not a P-256 key: {e}"))?;
        let public = URL_SAFE_NO_PAD.encode(pair.public_key().public_key().to_bytes_uncompressed());
        Ok(Self { pair, public })
    }

    /// A new pair: (private, public), base64url.
    pub fn generate() -> (String, String) {
        let pair = ES256KeyPair::generate();
        let private = URL_SAFE_NO_PAD.encode(pair.to_bytes());
        let public = URL_SAFE_NO_PAD.encode(pair.public_key().public_key().to_bytes_uncompressed());
        (private, public)
    }

    pub fn public(&self) -> &str {
        &self.public
    }
}

/// A subscription's keys as the browser gave them, checked.
pub fn parse_keys(p256dh: &str, auth: &str) -> Result<(p256::PublicKey, Auth), &'static str> {
    let point = URL_SAFE_NO_PAD
        .decode(p256dh.trim_end_matches('='))
        .ok()
        .and_then(|b| p256::PublicKey::from_sec1_bytes(&b).ok())
        .ok_or("subscription.keys.p256dh must be a base64url P-256 public key")?;
    let secret = URL_SAFE_NO_PAD
        .decode(auth.trim_end_matches('='))
        .ok()
        .filter(|b| b.len() == 16)
        .ok_or("subscription.keys.auth must be 16 bytes, base64url")?;
    Ok((point, Auth::clone_from_slice(&secret)))
}

/// How soon the push service should deliver (RFC 8030 §5.3).
#[derive(Debug, Clone, Copy)]
pub enum Urgency {
    High,
    Low,
}

pub struct WebPush {
    key: VapidKey,
    subject: String,
    ttl_secs: u64,
    http: reqwest::Client,
}

impl WebPush {
    pub fn new(key: VapidKey, subject: &str, ttl_secs: u64, http: reqwest::Client) -> Self {
        Self {
            key,
            subject: subject.to_owned(),
            ttl_secs,
            http,
        }
    }

    pub fn public_key(&self) -> &str {
        self.key.public()
    }

    /// Sends `payload` to one subscription. `topic` lets the push service replace an
    /// undelivered earlier notification of the same topic.
    pub async fn send(
        &self,
        endpoint: &str,
        p256dh: &str,
        auth: &str,
        payload: &[u8],
        urgency: Urgency,
        topic: &str,
    ) -> Delivery {
        let request = match self.request(endpoint, p256dh, auth, payload, urgency, topic) {
            Ok(request) => request,
            // Registration checked the keys; a stored one that no longer parses is useless.
            Err(e) => return Delivery::Rejected(e),
        };
        match self.http.execute(request).await {
            Ok(response) => match response.status().as_u16() {
                200..=299 => Delivery::Sent,
                404 | 410 => {
                    Delivery::Rejected(format!("push service answered {}", response.status()))
                }
                429 | 500..=599 => {
                    Delivery::Retry(format!("push service answered {}", response.status()))
                }
                _ => Delivery::Refused(format!("push service answered {}", response.status())),
            },
            Err(e) if e.is_timeout() => {
                Delivery::Retry("push service did not answer in time".into())
            }
            Err(_) => Delivery::Retry("push service unreachable".into()),
        }
    }

    fn request(
        &self,
        endpoint: &str,
        p256dh: &str,
        auth: &str,
        payload: &[u8],
        urgency: Urgency,
        topic: &str,
    ) -> Result<reqwest::Request, String> {
        let uri: http::Uri = endpoint.parse().map_err(|_| "bad endpoint".to_owned())?;
        let (public, secret) = parse_keys(p256dh, auth)?;
        let mut request = WebPushBuilder::new(uri, public, secret)
            .with_valid_duration(VAPID_VALIDITY)
            .with_vapid(&self.key.pair, &self.subject)
            .build(payload.to_vec())
            .map_err(|e| format!("cannot encrypt: {e}"))?;
        let headers = request.headers_mut();
        headers.insert("ttl", self.ttl_secs.into());
        let urgency = match urgency {
            Urgency::High => "high",
            Urgency::Low => "low",
        };
        headers.insert("urgency", http::HeaderValue::from_static(urgency));
        if let Ok(topic) = http::HeaderValue::from_str(topic) {
            headers.insert("topic", topic);
        }
        reqwest::Request::try_from(request).map_err(|e| format!("bad request: {e}"))
    }
}
