//! Real HTTP servers on 127.0.0.1 that receive chatd's notifications, written from
//! docs/protocol.md and the RFCs, not from chatd's code:
//! - [`Gateway`]: a push gateway that checks `X-Chatd-Signature` (HMAC by `ring`, not the
//!   crate chatd signs with), answers as it is told (accept, reject push keys, fail, hang)
//!   and de-duplicates by `Idempotency-Key`;
//! - [`PushService`]: the receiving side of RFC 8030 that decrypts each payload with the
//!   subscription keys the test made (RFC 8291, by hand with p256, HKDF and AES-GCM) and
//!   checks the VAPID token (RFC 8292, with `jsonwebtoken`).

use std::{
    collections::HashSet,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use aes_gcm::{Aes128Gcm, KeyInit, aead::Aead};
use axum::{
    Router,
    body::Bytes,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    response::IntoResponse,
    routing::post,
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use serde_json::{Value, json};
use web_push_native::p256;

use crate::helpers::WAIT;

async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    format!("http://{addr}")
}

/// Polls `check` until it gives a value, or panics after `WAIT` with `what`.
pub async fn eventually<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `X-Chatd-Signature` as docs/protocol.md defines it, checked in constant time.
pub fn signature_holds(secret: &[u8], timestamp: &str, body: &[u8], signature: &str) -> bool {
    let Some(hex_mac) = signature.strip_prefix("sha256=") else {
        return false;
    };
    let Ok(mac) = hex::decode(hex_mac) else {
        return false;
    };
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let mut signed = timestamp.as_bytes().to_vec();
    signed.push(b'.');
    signed.extend_from_slice(body);
    ring::hmac::verify(&key, &signed, &mac).is_ok()
}

#[derive(Debug, Clone)]
pub enum Behaviour {
    Accept,
    /// 200 with these push keys in `rejected`.
    Reject(Vec<String>),
    Status(u16),
    /// Never answers (until the sender gives up).
    Hang,
}

#[derive(Debug, Clone)]
pub struct GatewayRequest {
    pub key: String,
    pub timestamp: String,
    pub signature: String,
    pub raw: Vec<u8>,
    pub body: Value,
    pub signed: bool,
    pub at: Instant,
    /// The status it was answered with (0: held).
    pub answered: u16,
}

impl GatewayRequest {
    pub fn notification(&self) -> &Value {
        &self.body["notification"]
    }
}

struct GatewayState {
    secret: Vec<u8>,
    behaviour: Mutex<Behaviour>,
    requests: Mutex<Vec<GatewayRequest>>,
    delivered: Mutex<HashSet<String>>,
    held: AtomicUsize,
}

pub struct Gateway {
    pub url: String,
    state: Arc<GatewayState>,
}

async fn gateway_notify(
    State(state): State<Arc<GatewayState>>,
    headers: HeaderMap,
    raw: Bytes,
) -> axum::response::Response {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let (timestamp, signature) = (header("x-chatd-timestamp"), header("x-chatd-signature"));
    let fresh = timestamp
        .parse::<i64>()
        .is_ok_and(|t| (chrono::Utc::now().timestamp() - t).abs() <= 300);
    let signed = fresh && signature_holds(&state.secret, &timestamp, &raw, &signature);
    let behaviour = state.behaviour.lock().unwrap().clone();
    let key = header("idempotency-key");
    let status = match (&behaviour, signed) {
        (_, false) => 401,
        (Behaviour::Hang, _) => 0,
        (Behaviour::Status(s), _) => *s,
        (Behaviour::Accept | Behaviour::Reject(_), _) => 200,
    };
    state.requests.lock().unwrap().push(GatewayRequest {
        key: key.clone(),
        timestamp,
        signature,
        body: serde_json::from_slice(&raw).unwrap_or(Value::Null),
        raw: raw.to_vec(),
        signed,
        at: Instant::now(),
        answered: status,
    });
    match behaviour {
        _ if !signed => StatusCode::UNAUTHORIZED.into_response(),
        Behaviour::Hang => {
            state.held.fetch_add(1, Ordering::SeqCst);
            // Dropped (and counted down) when chatd gives up on the request.
            struct Held(Arc<GatewayState>);
            impl Drop for Held {
                fn drop(&mut self) {
                    self.0.held.fetch_sub(1, Ordering::SeqCst);
                }
            }
            let _held = Held(state.clone());
            std::future::pending::<()>().await;
            unreachable!()
        }
        Behaviour::Status(s) => StatusCode::from_u16(s).unwrap().into_response(),
        Behaviour::Accept | Behaviour::Reject(_) => {
            // A key seen before was delivered already: answer, do nothing again.
            state.delivered.lock().unwrap().insert(key);
            let rejected = match behaviour {
                Behaviour::Reject(keys) => keys,
                _ => Vec::new(),
            };
            axum::Json(json!({ "rejected": rejected })).into_response()
        }
    }
}

impl Gateway {
    pub async fn start(secret: &str) -> Self {
        let state = Arc::new(GatewayState {
            secret: secret.as_bytes().to_vec(),
            behaviour: Mutex::new(Behaviour::Accept),
            requests: Mutex::default(),
            delivered: Mutex::default(),
            held: AtomicUsize::new(0),
        });
        let router = Router::new()
            .route("/_matrix/push/v1/notify", post(gateway_notify))
            .with_state(state.clone());
        let base = serve(router).await;
        Self {
            url: format!("{base}/_matrix/push/v1/notify"),
            state,
        }
    }

    pub fn set(&self, behaviour: Behaviour) {
        *self.state.behaviour.lock().unwrap() = behaviour;
    }

    pub fn requests(&self) -> Vec<GatewayRequest> {
        self.state.requests.lock().unwrap().clone()
    }

    /// Requests whose notification is about `room`.
    pub fn requests_for(&self, room: &str) -> Vec<GatewayRequest> {
        self.requests()
            .into_iter()
            .filter(|r| r.notification()["room_id"] == room)
            .collect()
    }

    /// Idempotency keys answered 200 (each counted once, however often it came).
    pub fn delivered(&self) -> HashSet<String> {
        self.state.delivered.lock().unwrap().clone()
    }

    /// Requests being held open right now.
    pub fn held(&self) -> usize {
        self.state.held.load(Ordering::SeqCst)
    }

    /// Waits until at least `n` requests about `room` arrived; returns them all.
    pub async fn wait_for(&self, room: &str, n: usize) -> Vec<GatewayRequest> {
        eventually(&format!("{n} gateway requests for room {room}"), || {
            let got = self.requests_for(room);
            (got.len() >= n).then_some(got)
        })
        .await
    }
}

/// A browser's push subscription, made by the test: its private key decrypts.
pub struct Subscriber {
    pub id: String,
    secret: p256::SecretKey,
    auth: [u8; 16],
}

impl Subscriber {
    fn new(id: &str) -> Self {
        let secret = loop {
            let bytes: [u8; 32] = rand::random();
            if let Ok(key) = p256::SecretKey::from_slice(&bytes) {
                break key;
            }
        };
        Self {
            id: id.to_owned(),
            secret,
            auth: rand::random(),
        }
    }

    fn public_bytes(&self) -> Vec<u8> {
        use p256::elliptic_curve::sec1::ToEncodedPoint;
        self.secret
            .public_key()
            .to_encoded_point(false)
            .as_bytes()
            .to_vec()
    }

    /// `PushSubscription.toJSON()` of this subscription at `base`.
    pub fn subscription(&self, base: &str) -> Value {
        json!({
            "endpoint": format!("{base}/push/{}", self.id),
            "expirationTime": null,
            "keys": {
                "p256dh": URL_SAFE_NO_PAD.encode(self.public_bytes()),
                "auth": URL_SAFE_NO_PAD.encode(self.auth),
            }
        })
    }

    /// RFC 8291 §3.4 and RFC 8188: the plaintext of an `aes128gcm` body for this subscription.
    pub fn decrypt(&self, body: &[u8]) -> Result<Vec<u8>, String> {
        use hkdf::Hkdf;
        use sha2::Sha256;
        let (salt, rest) = body.split_at_checked(16).ok_or("short header")?;
        let (_record_size, rest) = rest.split_at_checked(4).ok_or("short header")?;
        let (&id_len, rest) = rest.split_first().ok_or("short header")?;
        let (key_id, ciphertext) = rest
            .split_at_checked(usize::from(id_len))
            .ok_or("short key id")?;
        let sender = p256::PublicKey::from_sec1_bytes(key_id).map_err(|e| e.to_string())?;
        let shared =
            p256::ecdh::diffie_hellman(self.secret.to_nonzero_scalar(), sender.as_affine());
        let mut key_info = b"WebPush: info\0".to_vec();
        key_info.extend(self.public_bytes());
        key_info.extend(key_id);
        let mut ikm = [0u8; 32];
        Hkdf::<Sha256>::new(Some(&self.auth), shared.raw_secret_bytes())
            .expand(&key_info, &mut ikm)
            .map_err(|e| e.to_string())?;
        let prk = Hkdf::<Sha256>::new(Some(salt), &ikm);
        let (mut cek, mut nonce) = ([0u8; 16], [0u8; 12]);
        prk.expand(b"Content-Encoding: aes128gcm\0", &mut cek)
            .map_err(|e| e.to_string())?;
        prk.expand(b"Content-Encoding: nonce\0", &mut nonce)
            .map_err(|e| e.to_string())?;
        let mut plain = Aes128Gcm::new(&cek.into())
            .decrypt(&nonce.into(), ciphertext)
            .map_err(|_| "AEAD tag does not verify".to_owned())?;
        // The last (only) record ends with the delimiter 2, then zero padding.
        while plain.last() == Some(&0) {
            plain.pop();
        }
        match plain.pop() {
            Some(2) => Ok(plain),
            _ => Err("no last-record delimiter".into()),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Pushed {
    pub subscriber: String,
    pub payload: Value,
    pub ttl: String,
    pub urgency: String,
    pub topic: String,
    /// The VAPID `k` the request carried.
    pub vapid_key: String,
    /// The VAPID token verified with `k`, for this origin, with a `sub`.
    pub vapid_ok: bool,
}

struct ServiceState {
    subscribers: Mutex<Vec<Arc<Subscriber>>>,
    received: Mutex<Vec<Pushed>>,
    status: Mutex<u16>,
    origin: Mutex<String>,
}

pub struct PushService {
    pub base: String,
    state: Arc<ServiceState>,
}

/// RFC 8292 §2: `vapid t=<JWT>, k=<key>`; the token must verify with `k`, name this origin
/// as its audience and carry a subject.
fn vapid_holds(authorization: &str, origin: &str) -> (String, bool) {
    let Some(rest) = authorization.strip_prefix("vapid ") else {
        return (String::new(), false);
    };
    let mut token = "";
    let mut key = "";
    for part in rest.split(',').map(str::trim) {
        if let Some(t) = part.strip_prefix("t=") {
            token = t;
        } else if let Some(k) = part.strip_prefix("k=") {
            key = k;
        }
    }
    let point = URL_SAFE_NO_PAD.decode(key).unwrap_or_default();
    if point.len() != 65 || point[0] != 4 {
        return (key.to_owned(), false);
    }
    let Ok(decoding) = jsonwebtoken::DecodingKey::from_ec_components(
        &URL_SAFE_NO_PAD.encode(&point[1..33]),
        &URL_SAFE_NO_PAD.encode(&point[33..]),
    ) else {
        return (key.to_owned(), false);
    };
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    validation.set_audience(&[origin]);
    validation.set_required_spec_claims(&["exp", "aud", "sub"]);
    let ok = jsonwebtoken::decode::<Value>(token, &decoding, &validation)
        .is_ok_and(|t| t.claims["sub"].as_str().is_some_and(|s| !s.is_empty()));
    (key.to_owned(), ok)
}

async fn push_receive(
    State(state): State<Arc<ServiceState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let subscriber = state
        .subscribers
        .lock()
        .unwrap()
        .iter()
        .find(|s| s.id == id)
        .cloned();
    let Some(subscriber) = subscriber else {
        return StatusCode::NOT_FOUND;
    };
    if header("content-encoding") != "aes128gcm" {
        return StatusCode::BAD_REQUEST;
    }
    let Ok(plain) = subscriber.decrypt(&body) else {
        return StatusCode::BAD_REQUEST;
    };
    let origin = state.origin.lock().unwrap().clone();
    let (vapid_key, vapid_ok) = vapid_holds(&header("authorization"), &origin);
    state.received.lock().unwrap().push(Pushed {
        subscriber: id,
        payload: serde_json::from_slice(&plain).unwrap_or(Value::Null),
        ttl: header("ttl"),
        urgency: header("urgency"),
        topic: header("topic"),
        vapid_key,
        vapid_ok,
    });
    StatusCode::from_u16(*state.status.lock().unwrap()).unwrap()
}

impl PushService {
    pub async fn start() -> Self {
        let state = Arc::new(ServiceState {
            subscribers: Mutex::default(),
            received: Mutex::default(),
            status: Mutex::new(201),
            origin: Mutex::default(),
        });
        let router = Router::new()
            .route("/push/{id}", post(push_receive))
            .with_state(state.clone());
        let base = serve(router).await;
        // The VAPID audience is the push service's origin; the crate chatd uses names
        // scheme and host (real push services listen on the default port).
        *state.origin.lock().unwrap() = base.rsplit_once(':').unwrap().0.to_owned();
        Self { base, state }
    }

    pub fn subscriber(&self, id: &str) -> Arc<Subscriber> {
        let s = Arc::new(Subscriber::new(id));
        self.state.subscribers.lock().unwrap().push(s.clone());
        s
    }

    /// What later pushes are answered with (201; 410: the subscription is gone).
    pub fn answer(&self, status: u16) {
        *self.state.status.lock().unwrap() = status;
    }

    pub fn received(&self) -> Vec<Pushed> {
        self.state.received.lock().unwrap().clone()
    }

    pub async fn wait_for(&self, n: usize) -> Vec<Pushed> {
        eventually(&format!("{n} web pushes"), || {
            let got = self.received();
            (got.len() >= n).then_some(got)
        })
        .await
    }
}
