//! Tokens are checked on every connection and request; rooms are invisible to non-members.

use std::{collections::BTreeMap, time::Duration};

use base64::Engine;
use chatd::domain::RoomId;
use chatd_client::{Connection, ServerFrame};
use serde_json::{Value, json};

use crate::helpers::*;

fn forged(claims: Value, alg: &str, secret: &str) -> String {
    let b64 = |v: &Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
    };
    let head = b64(&json!({"alg": alg, "typ": "JWT"}));
    let body = b64(&claims);
    if alg == "none" {
        return format!("{head}.{body}.");
    }
    let key = jsonwebtoken::EncodingKey::from_secret(secret.as_bytes());
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &key,
    )
    .unwrap()
}

fn bad_tokens(app: &TestApp) -> Vec<(&'static str, Option<String>, &'static str)> {
    let secret = app.settings.auth.jwt_secret.clone();
    let future = chrono::Utc::now().timestamp() + 3600;
    let past = chrono::Utc::now().timestamp() - 3600;
    vec![
        ("no token", None, "unauthorized"),
        ("garbage", Some("not.a.jwt".into()), "unauthorized"),
        (
            "expired",
            Some(forged(
                json!({"sub": "alice", "exp": past}),
                "HS256",
                &secret,
            )),
            "token_expired",
        ),
        (
            "bad signature",
            Some(forged(
                json!({"sub": "alice", "exp": future}),
                "HS256",
                "some-other-secret-xx",
            )),
            "unauthorized",
        ),
        (
            "alg none",
            Some(forged(json!({"sub": "alice", "exp": future}), "none", "")),
            "unauthorized",
        ),
        (
            "no exp",
            Some(forged(json!({"sub": "alice"}), "HS256", &secret)),
            "unauthorized",
        ),
        (
            "bad sub",
            Some(forged(
                json!({"sub": "a b", "exp": future}),
                "HS256",
                &secret,
            )),
            "unauthorized",
        ),
    ]
}

#[tokio::test]
async fn websocket_refuses_bad_tokens_with_a_readable_close() {
    let app = TestApp::spawn().await;
    for (what, token, code) in bad_tokens(&app) {
        let url = match &token {
            Some(t) => format!("{}?token={t}", app.ws_url()),
            None => app.ws_url(),
        };
        let mut conn = Connection::open(&url).await.unwrap();
        match conn.event(WAIT).await.unwrap() {
            ServerFrame::Error(chatd_client::ErrorFrame { code: got, .. }) => {
                assert_eq!(got, code, "{what}")
            }
            other => panic!("{what}: {other:?}"),
        }
        let close = conn.closed(WAIT).await.unwrap();
        let expected = if code == "token_expired" { 4402 } else { 4401 };
        assert_eq!(close, expected, "{what}");
    }
}

#[tokio::test]
async fn rest_refuses_bad_tokens_with_401() {
    let app = TestApp::spawn().await;
    for (what, token, code) in bad_tokens(&app) {
        let r = match token {
            Some(token) => app.get_json_with(&token, "/v1/rooms").await,
            None => app.get_json("/v1/rooms").await,
        };
        assert_eq!((r.status, r.code()), (401, code), "{what}");
    }
}

#[tokio::test]
async fn a_browser_can_send_its_token_as_a_subprotocol() {
    let app = TestApp::spawn().await;
    let protocols = format!("chatd.v1, bearer.{}", app.token("alice"));
    let mut conn =
        Connection::open_with_headers(&app.ws_url(), &[("sec-websocket-protocol", &protocols)])
            .await
            .expect("handshake accepts the selected subprotocol");
    match conn.event(WAIT).await.unwrap() {
        ServerFrame::Welcome { user, v, .. } => assert_eq!((user.as_str(), v), ("alice", 1)),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn non_members_cannot_read_send_list_or_observe() {
    let app = TestApp::spawn().await;
    let room = app.client("alice").open_direct("bob").await.unwrap();
    let mut bob = app.connect("bob").await;
    let mut mallory = app.connect("mallory").await;
    let mallory_rest = app.client("mallory");

    // Sending: the same answer as for a room that does not exist.
    mallory.send(&room.id, "m1", "let me in").await;
    let (code, _) = mallory.error().await;
    assert_eq!(code, "room_not_found");
    let unknown = RoomId::new_group();
    mallory.send(&unknown, "m2", "anyone?").await;
    assert_eq!(mallory.error().await.0, "room_not_found");

    // Reading, details, members, listing.
    let path = format!("/v1/rooms/{}", room.id);
    for path in [format!("{path}/messages"), path.clone()] {
        let r = app.get_json_as("mallory", &path).await;
        assert_eq!(r.status, 404, "{path}");
    }
    let r = app
        .post_json_as(
            "mallory",
            &format!("{path}/members"),
            json!({"members": ["mallory"]}),
        )
        .await;
    assert_eq!(r.status, 404);
    let r = app
        .post_json_as(
            "mallory",
            &format!("{path}/messages"),
            json!({"clientMsgId": "x", "text": "x"}),
        )
        .await;
    assert_eq!(r.status, 404);
    assert!(mallory_rest.rooms().await.unwrap().is_empty());

    // Resume names the room: refused, nothing replayed.
    let mut alice = app.connect("alice").await;
    alice.send_acked(&room.id, "a1", "secret").await;
    let mut snoop = app.client("mallory").connect().await.unwrap();
    snoop.event(WAIT).await.unwrap();
    snoop
        .resume(&BTreeMap::from([(room.id.clone(), 0)]))
        .await
        .unwrap();
    match snoop.event(WAIT).await.unwrap() {
        ServerFrame::Error(chatd_client::ErrorFrame { code, .. }) => {
            assert_eq!(code, "room_not_found")
        }
        other => panic!("{other:?}"),
    }
    match snoop.event(WAIT).await.unwrap() {
        ServerFrame::Resumed { rooms } => assert!(rooms.is_empty()),
        other => panic!("{other:?}"),
    }
    // Live: bob gets it, mallory's connections get nothing.
    assert_eq!(bob.messages(&room.id, 1).await[0].text, "secret");
    mallory.no_message_within(Duration::from_millis(300)).await;
    assert!(
        snoop.next(Duration::from_millis(300)).await.is_err(),
        "snoop got a frame"
    );
    // Nothing was stored by the attempts.
    assert_eq!(
        app.client("bob")
            .history_after(&room.id, 0)
            .await
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn dev_login_is_off_when_disabled() {
    let app = TestApp::spawn_with(|s| s.auth.dev_login = false).await;
    let r = app
        .post_json("/v1/dev/login", json!({"user": "alice"}))
        .await;
    assert_eq!(r.status, 404);
    let on = TestApp::spawn().await;
    let client = chatd_client::Client::dev_login(&on.base, "alice")
        .await
        .unwrap();
    assert!(client.rooms().await.unwrap().is_empty());
}

/// With `server.allowed_origins` listing one origin: a WebSocket handshake from another
/// origin is refused with 403 before its token is looked at; the listed origin, the node's
/// own pages and clients without an Origin get in. REST answers CORS preflights for allowed
/// origins only.
#[tokio::test]
async fn browser_origins_are_checked_at_the_handshake_and_by_cors() {
    let app =
        TestApp::spawn_with(|s| s.server.allowed_origins = vec!["https://app.example".into()])
            .await;
    let url = app.client("alice").ws_url();
    let open = |origin: Option<String>| {
        let url = url.clone();
        async move {
            let headers: Vec<(&str, &str)> = match &origin {
                Some(o) => vec![("Origin", o.as_str())],
                None => Vec::new(),
            };
            Connection::open_with_headers(&url, &headers).await
        }
    };
    let refused = open(Some("https://evil.example".into()))
        .await
        .err()
        .expect("refused");
    assert!(refused.to_string().contains("403"), "{refused}");
    let own = app.base.clone(); // the node's own page: its Origin names the Host
    for origin in [Some("https://app.example".to_owned()), Some(own), None] {
        let mut conn = open(origin.clone())
            .await
            .unwrap_or_else(|e| panic!("{origin:?}: {e}"));
        assert!(matches!(
            conn.event(WAIT).await.unwrap(),
            ServerFrame::Welcome { .. }
        ));
    }

    let preflight = |origin: &'static str| {
        app.http()
            .request(reqwest::Method::OPTIONS, format!("{}/v1/rooms", app.base))
            .header("Origin", origin)
            .header("Access-Control-Request-Method", "GET")
            .header("Access-Control-Request-Headers", "authorization")
            .send()
    };
    let allowed = preflight("https://app.example").await.unwrap();
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    let other = preflight("https://evil.example").await.unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());
}

/// Behind nginx (the shipped template) with the production default (own pages only), the
/// web app's own origin gets in: nginx passes the Host with its port, which the Origin of a
/// page served through it names. Another origin does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_nginx_the_own_origin_is_recognised() {
    use crate::servers::{ChatdNode, Nginx};
    let dir = tempfile::TempDir::new().unwrap();
    let env: Vec<(String, String)> = [
        ("CHATD__SERVER__ALLOWED_ORIGINS", "[]".to_owned()),
        (
            "CHATD__STORE__SQLITE_PATH",
            dir.path().join("chatd.db").display().to_string(),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let node = tokio::task::spawn_blocking(move || ChatdNode::start("origins", &env))
        .await
        .unwrap();
    let port = node.port;
    let nginx = tokio::task::spawn_blocking(move || Nginx::start(&[port]))
        .await
        .unwrap();
    let token = chatd_client::token::mint(
        chatd::auth::DEV_SECRET,
        &chatd::domain::UserId::parse("alice").unwrap(),
        Duration::from_secs(600),
    );
    let url = format!(
        "{}/ws?token={token}",
        nginx.base().replacen("http", "ws", 1)
    );
    let mut conn = Connection::open_with_headers(&url, &[("Origin", &nginx.base())])
        .await
        .expect("the own origin gets in through nginx");
    assert!(matches!(
        conn.event(WAIT).await.unwrap(),
        ServerFrame::Welcome { .. }
    ));
    let refused = Connection::open_with_headers(&url, &[("Origin", "https://evil.example")])
        .await
        .err()
        .expect("another origin is refused");
    assert!(refused.to_string().contains("403"), "{refused}");
    drop(node);
}

/// Tokens never reach the log, at any level: the WebSocket URL's query (which carries one)
/// is left out of request spans, and so are headers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_never_reach_the_log() {
    use crate::servers::ChatdNode;
    let dir = tempfile::TempDir::new().unwrap();
    let name = format!("tokens-{}", &crate::servers::unique("t")[2..8]);
    let env: Vec<(String, String)> = [
        ("CHATD__LOG__LEVEL", "trace".to_owned()),
        (
            "CHATD__STORE__SQLITE_PATH",
            dir.path().join("chatd.db").display().to_string(),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let node = {
        let name = name.clone();
        tokio::task::spawn_blocking(move || ChatdNode::start(&name, &env))
            .await
            .unwrap()
    };
    let user = chatd::domain::UserId::parse("alice").unwrap();
    let token = chatd_client::token::mint(chatd::auth::DEV_SECRET, &user, Duration::from_secs(600));
    let client = chatd_client::Client::new(node.base(), token.clone());
    let mut conn = client.connect().await.unwrap();
    assert!(matches!(
        conn.event(WAIT).await.unwrap(),
        ServerFrame::Welcome { .. }
    ));
    client.rooms().await.unwrap(); // a bearer header too
    conn.close().await;
    drop(node); // the process exits: its log is complete
    let log = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(format!("target/test-logs/chatd-{name}.log")),
    )
    .unwrap();
    assert!(log.contains("/ws"), "requests are logged at this level");
    let signature = token.rsplit('.').next().unwrap();
    assert!(!log.contains(signature), "a token reached the log");
}
