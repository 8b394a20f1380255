//! Tokens from an identity provider: ES256 keys published as a JWKS by a real HTTP server on
//! 127.0.0.1 (keys generated here), refreshed when a token names an unknown kid, kept when
//! the JWKS is down; RS256 with a PEM public key made by openssl; HS256 beside them.

use std::sync::{
    Arc, Mutex,
    atomic::{AtomicBool, AtomicUsize, Ordering},
};

use base64::Engine;
use chatd_client::{Connection, ServerFrame};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use ring::{
    rand::SystemRandom,
    signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair},
};
use serde_json::{Value, json};

use crate::helpers::*;

/// An ES256 key: what signs tokens, and its public half as a JWK.
struct EcKey {
    kid: String,
    signing: EncodingKey,
    jwk: Value,
}

impl EcKey {
    fn generate(kid: &str) -> Self {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .unwrap();
        let point = pair.public_key().as_ref(); // 0x04 || x || y
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        Self {
            kid: kid.to_owned(),
            signing: EncodingKey::from_ec_der(pkcs8.as_ref()),
            jwk: json!({
                "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": kid,
                "x": b64(&point[1..33]), "y": b64(&point[33..65]),
            }),
        }
    }

    fn token(&self, user: &str) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        let exp = chrono::Utc::now().timestamp() + 600;
        jsonwebtoken::encode(&header, &json!({"sub": user, "exp": exp}), &self.signing).unwrap()
    }
}

/// The identity provider's key endpoint: serves `keys`, or 500 while `down`.
#[derive(Clone, Default)]
struct Jwks {
    keys: Arc<Mutex<Vec<Value>>>,
    down: Arc<AtomicBool>,
    fetches: Arc<AtomicUsize>,
}

impl Jwks {
    async fn serve(&self) -> String {
        let state = self.clone();
        let app = axum::Router::new().route(
            "/.well-known/jwks.json",
            axum::routing::get(move || {
                let state = state.clone();
                async move {
                    state.fetches.fetch_add(1, Ordering::SeqCst);
                    if state.down.load(Ordering::SeqCst) {
                        return Err(axum::http::StatusCode::INTERNAL_SERVER_ERROR);
                    }
                    let keys = state.keys.lock().unwrap().clone();
                    Ok(axum::Json(json!({ "keys": keys })))
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "http://{}/.well-known/jwks.json",
            listener.local_addr().unwrap()
        );
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        url
    }
}

async fn me(app: &TestApp, token: &str) -> u16 {
    app.get_json_with(token, "/v1/me").await.status
}

#[tokio::test]
async fn jwks_keys_verify_rotate_and_survive_an_outage() {
    let first = EcKey::generate("key-1");
    let jwks = Jwks::default();
    jwks.keys.lock().unwrap().push(first.jwk.clone());
    let url = jwks.serve().await;
    let app = TestApp::spawn_with(|s| {
        s.auth.jwks_url = url;
        s.auth.jwks_refresh_min_ms = 1;
    })
    .await;
    assert_eq!(jwks.fetches.load(Ordering::SeqCst), 1, "fetched at start");

    // REST and WebSocket accept the provider's tokens; HS256 still works beside them.
    assert_eq!(me(&app, &first.token("alice")).await, 200);
    assert_eq!(me(&app, &app.token("alice")).await, 200);
    let url = format!("{}?token={}", app.ws_url(), first.token("alice"));
    let mut conn = Connection::open(&url).await.unwrap();
    assert!(matches!(
        conn.event(WAIT).await.unwrap(),
        ServerFrame::Welcome { .. }
    ));

    // The provider rotates: a token with the new kid makes the node fetch the set again.
    let second = EcKey::generate("key-2");
    jwks.keys.lock().unwrap().push(second.jwk.clone());
    assert_eq!(me(&app, &second.token("bob")).await, 200);
    assert_eq!(jwks.fetches.load(Ordering::SeqCst), 2);

    // The provider goes down: known keys keep working, unknown ones are refused.
    jwks.down.store(true, Ordering::SeqCst);
    assert_eq!(me(&app, &first.token("alice")).await, 200);
    assert_eq!(me(&app, &second.token("bob")).await, 200);
    let stranger = EcKey::generate("key-3");
    assert_eq!(me(&app, &stranger.token("mallory")).await, 401);
    assert_eq!(jwks.fetches.load(Ordering::SeqCst), 3, "it tried once more");

    // The provider comes back serving no usable key (a broken deploy): the cache is kept.
    jwks.down.store(false, Ordering::SeqCst);
    jwks.keys.lock().unwrap().clear();
    assert_eq!(me(&app, &EcKey::generate("key-4").token("eve")).await, 401);
    assert_eq!(jwks.fetches.load(Ordering::SeqCst), 4);
    assert_eq!(
        me(&app, &first.token("alice")).await,
        200,
        "cached keys survive"
    );

    // A key with a known kid but another key's material fails the signature check.
    let impostor = EcKey {
        kid: "key-1".into(),
        ..EcKey::generate("key-1")
    };
    assert_eq!(me(&app, &impostor.token("alice")).await, 401);
}

#[tokio::test]
async fn an_rs256_pem_key_verifies_and_cannot_be_used_as_an_hmac_secret() {
    let dir = tempfile::TempDir::new().unwrap();
    let private = dir.path().join("private.pem");
    let public = dir.path().join("public.pem");
    let openssl = |args: &[&str]| {
        let status = std::process::Command::new("openssl")
            .args(args)
            .stderr(std::process::Stdio::null())
            .status()
            .expect("openssl (scripts/test installs it)");
        assert!(status.success(), "openssl {args:?}");
    };
    let (private_s, public_s) = (private.to_str().unwrap(), public.to_str().unwrap());
    openssl(&[
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:2048",
        "-out",
        private_s,
    ]);
    openssl(&["pkey", "-in", private_s, "-pubout", "-out", public_s]);
    let app = TestApp::spawn_with(|s| {
        s.auth.public_key_file = public_s.to_owned();
        s.auth.audience = "chatd".into();
    })
    .await;
    let signing = EncodingKey::from_rsa_pem(&std::fs::read(&private).unwrap()).unwrap();
    let exp = chrono::Utc::now().timestamp() + 600;
    let sign = |claims: Value| {
        jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, &signing).unwrap()
    };
    assert_eq!(
        me(
            &app,
            &sign(json!({"sub": "alice", "exp": exp, "aud": "chatd"}))
        )
        .await,
        200
    );
    // The audience is checked when configured.
    assert_eq!(
        me(
            &app,
            &sign(json!({"sub": "alice", "exp": exp, "aud": "other"}))
        )
        .await,
        401
    );
    // The classic confusion: an HS256 token "signed" with the public key as its secret.
    let pem = std::fs::read(&public).unwrap();
    let confused = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &json!({"sub": "alice", "exp": exp, "aud": "chatd"}),
        &EncodingKey::from_secret(&pem),
    )
    .unwrap();
    assert_eq!(me(&app, &confused).await, 401);
}
