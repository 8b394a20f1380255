//! The admin API against real nodes: absent without `admin.token`, refused without it; the
//! node directory of a 3-node cluster (MongoDB-wire server, Redis) and a node that dies
//! dropping out of it; a user disconnected on every node, their older tokens refused, newer
//! ones accepted.

use std::time::{Duration, Instant};

use chatd::config::Settings;
use chatd_client::{Client, ServerFrame};
use serde_json::{Value, json};

use crate::{
    alive::Deployment,
    helpers::{WAIT, reply},
};

const ADMIN: &str = "an-operator-token-of-some-length";

fn admin_env() -> [(&'static str, &'static str); 1] {
    [("CHATD__ADMIN__TOKEN", ADMIN)]
}

/// A token for `user` issued at `iat` (seconds from now), signed like the nodes' own.
fn token_issued(user: &str, iat: i64) -> String {
    let now = chrono::Utc::now().timestamp();
    let claims = json!({"sub": user, "iat": now + iat, "exp": now + 3600});
    let key =
        jsonwebtoken::EncodingKey::from_secret(Settings::defaults().auth.jwt_secret.as_bytes());
    jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).unwrap()
}

async fn call(base: &str, method: &str, path: &str, token: Option<&str>) -> (u16, Value) {
    let http = reqwest::Client::new();
    let url = format!("{base}{path}");
    let mut request = match method {
        "POST" => http.post(url).json(&json!({})),
        _ => http.get(url),
    };
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let r = reply(request).await;
    (r.status, r.body)
}

/// The directory's node ids, once `done` holds for them (or the deadline passed).
async fn nodes_until(
    base: &str,
    within: Duration,
    done: impl Fn(&[String]) -> bool,
) -> Vec<String> {
    let deadline = Instant::now() + within;
    loop {
        let (status, body) = call(base, "GET", "/v1/admin/nodes", Some(ADMIN)).await;
        assert_eq!(status, 200, "{body}");
        let ids: Vec<String> = body["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["id"].as_str().unwrap().to_owned())
            .collect();
        if done(&ids) || Instant::now() > deadline {
            return ids;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn without_a_token_configured_there_is_no_admin_api() {
    let d = Deployment::single(&[]);
    let (status, body) = call(&d.base(0), "GET", "/v1/admin/nodes", Some(ADMIN)).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
}

#[tokio::test]
async fn one_node_lists_itself() {
    let advertised = ("CHATD__SERVER__ADVERTISE_ADDRESS", "chat-1.internal:8080");
    let d = Deployment::single(&[admin_env()[0], advertised]);
    let base = d.base(0);
    for token in [None, Some("wrong"), Some(&ADMIN[1..])] {
        let (status, body) = call(&base, "GET", "/v1/admin/node", token).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (401, Some("unauthorized"))
        );
    }
    let _alice = d.live(0, "alice").await;
    let (status, this) = call(&base, "GET", "/v1/admin/node", Some(ADMIN)).await;
    assert_eq!(status, 200);
    assert_eq!(this["connections"], 1);
    assert_eq!(this["address"], "chat-1.internal:8080");
    assert_eq!(this["draining"], false);
    let ids = nodes_until(&base, WAIT, |ids| ids.len() == 1).await;
    assert_eq!(ids, [this["id"].as_str().unwrap()]);
}

#[tokio::test]
async fn the_directory_shows_every_node_and_drops_a_dead_one() {
    let mut d = Deployment::cluster(3, &admin_env());
    let base = d.base(0);
    let ids = nodes_until(&base, WAIT, |ids| ids.len() == 3).await;
    assert_eq!(ids.len(), 3, "{ids:?}");
    let (_, dead) = call(&d.base(2), "GET", "/v1/admin/node", Some(ADMIN)).await;
    let dead = dead["id"].as_str().unwrap().to_owned();
    d.nodes[2].kill();
    let killed = Instant::now();
    // Its announcement lives as long as a presence lease (presence.ttl_ms: 3 s here).
    let ids = nodes_until(&base, Duration::from_secs(8), |ids| !ids.contains(&dead)).await;
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert!(killed.elapsed() < Duration::from_secs(8));
    // A node asked to drain leaves at once (it stops, and withdraws on its way out).
    let (status, body) = call(&d.base(1), "POST", "/v1/admin/drain", Some(ADMIN)).await;
    assert_eq!((status, body["draining"].as_bool()), (202, Some(true)));
    let ids = nodes_until(&base, WAIT, |ids| ids.len() == 1).await;
    assert_eq!(ids.len(), 1, "{ids:?}");
}

/// Disconnecting a user closes their connections on every node with 4403; tokens issued
/// before are refused (REST and WebSocket), later ones work; others are untouched.
async fn a_disconnected_user_is_out_everywhere(d: Deployment) {
    let bob = d.user("bob");
    let nodes = d.nodes.len();
    let old = token_issued(&bob, -60);
    let mut conns = Vec::new();
    for node in 0..nodes {
        let mut conn = Client::new(d.base(node), old.clone())
            .connect()
            .await
            .unwrap();
        assert!(matches!(
            conn.event(WAIT).await.unwrap(),
            ServerFrame::Welcome { .. }
        ));
        conns.push(conn);
    }
    let mut alice = d.live(0, "alice").await;
    let path = format!("/v1/admin/users/{bob}/disconnect");
    let (status, body) = call(&d.base(nodes - 1), "POST", &path, None).await;
    assert_eq!(status, 401, "{body}");
    let (status, body) = call(&d.base(nodes - 1), "POST", &path, Some(ADMIN)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user"], bob);
    for conn in &mut conns {
        assert_eq!(conn.closed(WAIT).await.unwrap(), 4403);
    }
    for node in 0..nodes {
        let (status, body) = call(&d.base(node), "GET", "/v1/me", Some(&old)).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (401, Some("unauthorized"))
        );
        let mut conn = Client::new(d.base(node), old.clone())
            .connect()
            .await
            .unwrap();
        match conn.event(WAIT).await.unwrap() {
            ServerFrame::Error(e) => assert_eq!(e.code, "unauthorized"),
            other => panic!("{other:?}"),
        }
        assert_eq!(conn.closed(WAIT).await.unwrap(), 4401);
        // A token issued after the revocation (the second it happened in, or later) works.
        let new = token_issued(&bob, 1);
        let (status, _) = call(&d.base(node), "GET", "/v1/me", Some(&new)).await;
        assert_eq!(status, 200);
    }
    // alice was never touched.
    alice.send(json!({"type": "ping", "id": 1})).await;
    alice
        .next_matching(|f| matches!(f, ServerFrame::Pong { .. }))
        .await;
}

#[tokio::test]
async fn a_disconnected_user_is_out_on_one_node() {
    a_disconnected_user_is_out_everywhere(Deployment::single(&admin_env())).await;
}

#[tokio::test]
async fn a_disconnected_user_is_out_across_nodes() {
    a_disconnected_user_is_out_everywhere(Deployment::cluster(3, &admin_env())).await;
}

/// Why is U online: their connections, on which node, whether that node is alive.
#[tokio::test]
async fn why_a_user_shows_online() {
    let d = Deployment::cluster(2, &admin_env());
    let _phone = d.live(0, "carol").await;
    let _laptop = d.live(1, "carol").await;
    let path = format!("/v1/admin/users/{}/presence", d.user("carol"));
    let (status, body) = call(&d.base(0), "GET", &path, Some(ADMIN)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["shown"], "online");
    let connections = body["connections"].as_array().unwrap();
    assert_eq!(connections.len(), 2, "{body}");
    assert!(connections.iter().all(|c| c["nodeAlive"] == true));
    let mut nodes: Vec<&str> = connections
        .iter()
        .map(|c| c["node"].as_str().unwrap())
        .collect();
    nodes.dedup();
    assert_eq!(nodes.len(), 2, "one connection on each node: {body}");
}

/// One message followed across the cluster from the JSON logs: stored and published by the
/// sender's node, delivered on each node where a member is connected, one trace id all the
/// way; `chatd trace` prints that path. The logs never hold the text or a token.
#[tokio::test]
async fn a_message_is_followed_across_the_cluster_in_the_logs() {
    let d = Deployment::cluster(3, &[("CHATD__LOG__FORMAT", "json")]);
    let bob = d.user("bob");
    let room = d.client(0, "alice").open_direct(&bob).await.unwrap().id;
    let mut alice = d.live(0, "alice").await;
    let mut bob1 = d.live(1, "bob").await;
    let _bob2 = d.live(2, "bob").await;
    let secret = format!("secret-text-{}", d.user("x"));
    let seq = alice.send_acked(&room, &secret).await;
    bob1.next_matching(|f| matches!(f, ServerFrame::Message(m) if m.seq == seq))
        .await;
    let delivered_everywhere = |logs: &[String]| {
        logs.iter()
            .all(|log| log.contains("\"hop\":\"delivered\"") && log.contains(room.as_str()))
    };
    let deadline = Instant::now() + WAIT;
    let mut logs: Vec<String> = d.nodes.iter().map(|n| n.output()).collect();
    while !delivered_everywhere(&logs) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        logs = d.nodes.iter().map(|n| n.output()).collect();
    }
    let lines: Vec<&str> = logs.iter().flat_map(|l| l.lines()).collect();
    let hops = chatd::telemetry::message_path(lines.iter().copied(), room.as_str(), seq);
    let names: Vec<&str> = d.nodes.iter().map(|n| n.name.as_str()).collect();
    let at = |hop: &str| -> Vec<&str> {
        let mut nodes: Vec<&str> = hops
            .iter()
            .filter(|h| h.hop == hop)
            .map(|h| h.node.as_str())
            .collect();
        nodes.sort();
        nodes
    };
    // Deliveries elsewhere may be logged before the publish call returned here.
    assert_eq!(hops[0].hop, "stored", "{hops:?}");
    assert_eq!(
        (at("stored"), at("published")),
        (vec![names[0]], vec![names[0]])
    );
    assert_eq!(
        at("delivered"),
        names,
        "delivered on every node with a member connected"
    );
    assert!(
        hops.iter()
            .all(|h| h.trace == hops[0].trace && !h.trace.is_empty())
    );
    for log in &logs {
        assert!(!log.contains(&secret), "a log holds the text");
        assert!(
            !log.contains(d.client(0, "alice").token()),
            "a log holds a token"
        );
    }
    // The command prints the same path from the log files.
    let files: Vec<std::path::PathBuf> = d
        .nodes
        .iter()
        .map(|n| crate::servers::log_dir().join(format!("chatd-{}.log", n.name)))
        .collect();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_chatd"))
        .args(["trace", room.as_str(), &seq.to_string()])
        .args(&files)
        .env(
            "CHATD_CONFIG_DIR",
            concat!(env!("CARGO_MANIFEST_DIR"), "/config"),
        )
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{printed}");
    assert!(printed.lines().count() >= 5, "{printed}");
    assert!(printed.contains(&hops[0].trace));
}

/// A node that answered "not revoked" a moment before the revocation (made on another node,
/// where the user had no connection) may let an old token through its handshake, but the
/// connection is checked against the store once it listens for revocations: closed, 4403.
#[tokio::test]
async fn a_connection_let_in_by_a_stale_answer_is_closed_once_live() {
    let d = Deployment::cluster(2, &admin_env());
    let bob = d.user("bob");
    let old = token_issued(&bob, -60);
    let (status, _) = call(&d.base(1), "GET", "/v1/me", Some(&old)).await;
    assert_eq!(status, 200, "node 1 now remembers: not revoked");
    let path = format!("/v1/admin/users/{bob}/disconnect");
    let (status, body) = call(&d.base(0), "POST", &path, Some(ADMIN)).await;
    assert_eq!(status, 200, "{body}");
    let mut conn = Client::new(d.base(1), old).connect().await.unwrap();
    assert_eq!(conn.closed(WAIT).await.unwrap(), 4403);
}
