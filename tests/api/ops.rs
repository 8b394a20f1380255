//! What operators and integrators see: health, readiness, metrics, the OpenAPI document,
//! and the web app's files.

use std::{collections::BTreeMap, path::Path};

use chatd::{config::Settings, domain::UserId};
use chatd_client::Client;
use serde_json::Value;

use crate::{
    helpers::*,
    servers::{ChatdNode, unique},
};

#[tokio::test]
async fn health_and_readiness() {
    let app = TestApp::spawn().await;
    let health = app.get_json("/healthz").await;
    assert_eq!((health.status, &health.body["status"]), (200, &"ok".into()));
    let ready = app.get_json("/readyz").await;
    assert_eq!(ready.status, 200);
    assert_eq!(
        (ready.body["store"].as_str(), ready.body["bus"].as_str()),
        (Some("ok"), Some("ok"))
    );
}

/// A node's Prometheus text as series (name with labels) and values.
pub(crate) async fn scrape(base: &str) -> BTreeMap<String, f64> {
    let text = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').expect("series and value");
            (series.to_owned(), value.parse().expect("a number"))
        })
        .collect()
}

/// The `chatd_*` names in a text.
fn metric_names(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("chatd_") {
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || *c == '_')
            .collect();
        rest = &rest[at + name.len()..];
        names.push(name);
    }
    names
}

/// The metrics of one node process (the recorder is process-wide: an in-process node would
/// share it with every other test's). Counters move by exactly what a known conversation did.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_what_the_node_did() {
    let dir = tempfile::TempDir::new().unwrap();
    let env = vec![(
        "CHATD__STORE__SQLITE_PATH".to_owned(),
        dir.path().join("chatd.db").display().to_string(),
    )];
    let name = format!("metrics-{}", &unique("m")[2..10]);
    let node = tokio::task::spawn_blocking(move || ChatdNode::start(&name, &env))
        .await
        .unwrap();
    let defaults = Settings::defaults();
    let client = |user: &str| {
        let token = authority(&defaults).mint(
            &UserId::parse(user).unwrap(),
            std::time::Duration::from_secs(3600),
        );
        Client::new(node.base(), token)
    };
    // A fresh node shows every family, described, before anything happened.
    let fresh = reqwest::get(format!("{}/metrics", node.base()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for family in [
        "chatd_connections",
        "chatd_connects_total",
        "chatd_disconnects_total",
        "chatd_refused_connections_total",
        "chatd_frames_in_total",
        "chatd_frames_out_total",
        "chatd_rate_limited_total",
        "chatd_messages_stored_total",
        "chatd_deliveries_total",
        "chatd_slow_consumer_closes_total",
        "chatd_gap_fills_total",
        "chatd_bus_resyncs_total",
        "chatd_recent_cache_reads_total",
        "chatd_store_timeouts_total",
        "chatd_http_overloaded_total",
        "chatd_presence_announcements_total",
        "chatd_receipts_published_total",
        "chatd_typing_events_total",
        "chatd_errors_total",
        "chatd_store_append_seconds",
        "chatd_bus_publish_seconds",
        "chatd_delivery_seconds",
        "chatd_resume_replayed_messages",
        "chatd_process_resident_memory_bytes",
        "chatd_process_open_fds",
    ] {
        assert!(
            fresh.contains(&format!("# HELP {family} ")),
            "{family} not described:\n{fresh}"
        );
        assert!(
            fresh
                .lines()
                .any(|l| l.starts_with(family) && !l.starts_with('#')),
            "{family} not exposed at start:\n{fresh}"
        );
    }
    let (alice_rest, bob_rest) = (client("alice"), client("bob"));
    let room = alice_rest.open_direct("bob").await.unwrap();
    let mut alice = TestConn::connect(&alice_rest).await;
    let mut bob = TestConn::connect(&bob_rest).await;

    let before = scrape(&node.base()).await;
    // Three messages, each delivered to both connections, and one retry of the first.
    for id in ["m1", "m2", "m3"] {
        alice.send_acked(&room.id, id, "counted").await;
    }
    alice.send(&room.id, "m1", "counted").await;
    match alice.ack("m1").await {
        chatd_client::ServerFrame::Ack { duplicate, .. } => assert!(duplicate),
        _ => unreachable!(),
    }
    assert_eq!(seqs(&bob.messages(&room.id, 3).await), [1, 2, 3]);
    // A delivery is counted right after the frames are queued: wait until the counter has
    // caught up with what bob read (an overshoot fails below all the same).
    let caught_up = |m: &BTreeMap<String, f64>| {
        let at =
            |series: &str, map: &BTreeMap<String, f64>| map.get(series).copied().unwrap_or(0.0);
        let out = r#"chatd_frames_out_total{type="message"}"#;
        at("chatd_deliveries_total", m) >= at("chatd_deliveries_total", &before) + 6.0
            && at(out, m) >= at(out, &before) + 6.0
    };
    let deadline = tokio::time::Instant::now() + WAIT;
    let after = loop {
        let now = scrape(&node.base()).await;
        if caught_up(&now) || tokio::time::Instant::now() > deadline {
            break now;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };

    let moved = |series: &str| {
        let at = |m: &BTreeMap<String, f64>| m.get(series).copied().unwrap_or(0.0);
        at(&after) - at(&before)
    };
    assert_eq!(
        [
            moved(r#"chatd_messages_stored_total{duplicate="false"}"#),
            moved(r#"chatd_messages_stored_total{duplicate="true"}"#),
            moved("chatd_deliveries_total"),
            moved("chatd_gap_fills_total"),
            moved(r#"chatd_frames_in_total{type="send"}"#),
            moved(r#"chatd_frames_out_total{type="message"}"#),
            moved(r#"chatd_frames_out_total{type="ack"}"#),
            // Every send is stored (the retry finds its message) and announced again.
            moved("chatd_store_append_seconds_count"),
            moved("chatd_bus_publish_seconds_count"),
        ],
        [3.0, 1.0, 6.0, 0.0, 4.0, 6.0, 4.0, 4.0, 4.0],
        "before: {before:?}\nafter: {after:?}"
    );
    assert_eq!(after.get("chatd_connections"), Some(&2.0), "{after:?}");
    // The dashboard and the alert rules use only families a node exposes (histograms show
    // once they have a sample: after the conversation).
    let exposed = reqwest::get(format!("{}/metrics", node.base()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let monitoring = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/monitoring");
    let dashboard =
        std::fs::read_to_string(monitoring.join("grafana/dashboards/chatd.json")).unwrap();
    let parsed: serde_json::Value =
        serde_json::from_str(&dashboard).expect("the dashboard is JSON");
    assert!(parsed["panels"].as_array().is_some_and(|p| !p.is_empty()));
    let alerts = std::fs::read_to_string(monitoring.join("alerts.yml")).unwrap();
    for text in [&dashboard, &alerts] {
        for used in metric_names(text) {
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| used.strip_suffix(suffix))
                .unwrap_or(&used);
            assert!(
                exposed.contains(&format!("# HELP {family} ")),
                "{used} is used by config/monitoring but no node exposes it"
            );
        }
    }
}

#[tokio::test]
async fn the_openapi_document_describes_every_rest_route() {
    let app = TestApp::spawn().await;
    let doc: Value = app.get_json("/openapi.json").await.json();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths: Vec<&str> = doc["paths"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    for path in [
        "/v1/rooms",
        "/v1/rooms/direct",
        "/v1/rooms/{room}",
        "/v1/rooms/{room}/members",
        "/v1/rooms/{room}/members/{user}",
        "/v1/rooms/{room}/messages",
        "/v1/rooms/{room}/read",
        "/v1/rooms/{room}/presence",
        "/v1/me",
        "/v1/dev/login",
        "/healthz",
        "/readyz",
    ] {
        assert!(paths.contains(&path), "{path} missing from {paths:?}");
    }
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
}

#[tokio::test]
async fn the_web_app_and_sdk_are_served_without_a_cdn() {
    let app = TestApp::spawn().await;
    for (path, content_type, needle) in [
        ("/", "text/html", "/app.js"),
        ("/app.js", "text/javascript", "ChatClient"),
        ("/app.css", "text/css", ".msg"),
        (
            "/sdk/chatd.js",
            "text/javascript",
            "export class ChatClient",
        ),
        (
            "/sdk/chatd.d.ts",
            "text/plain",
            "export declare class ChatClient",
        ),
    ] {
        let response = app
            .http()
            .get(format!("{}{path}", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let headers = response.headers().clone();
        assert!(
            headers["content-type"]
                .to_str()
                .unwrap()
                .starts_with(content_type),
            "{path}"
        );
        assert!(
            headers["content-security-policy"]
                .to_str()
                .unwrap()
                .contains("default-src 'self'")
        );
        let body = response.text().await.unwrap();
        assert!(body.contains(needle), "{path}");
        if !path.ends_with(".d.ts") {
            assert!(
                !body.contains("https://"),
                "{path} loads something from elsewhere"
            );
        }
    }
}
