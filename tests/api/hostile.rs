//! Hostile and careless clients: rate limits, connection caps, the handshake deadline, and a
//! client that stops reading. Each is answered with a documented code, nothing is lost, and
//! the server's memory for the client stays bounded.

use std::{
    collections::BTreeMap,
    io::{Read, Write},
    net::TcpStream,
    time::{Duration, Instant},
};

use chatd_client::{Connection, RoomLog, ServerFrame};
use serde_json::json;

use crate::helpers::*;

async fn expect_refusal(app: &TestApp, user: &str) -> (String, u16) {
    let mut conn = Connection::open(&app.client(user).ws_url()).await.unwrap();
    let code = match conn.event(WAIT).await.unwrap() {
        ServerFrame::Error(chatd_client::ErrorFrame { code, .. }) => code,
        other => panic!("expected a refusal, got {other:?}"),
    };
    (code.to_string(), conn.closed(WAIT).await.unwrap())
}

#[tokio::test]
async fn a_connection_over_its_frame_rate_is_told_when_to_retry_then_closed_if_it_insists() {
    let app = TestApp::spawn_with(|s| {
        s.limits.frames_per_second = 2;
        s.limits.frames_burst = 4;
        s.limits.rate_limit_strikes = 5;
    })
    .await;
    let room = app.client("alice").open_direct("bob").await.unwrap();
    // The burst: connect's resume used one token.
    let mut alice = app.connect("alice").await;
    for i in 0..3 {
        alice
            .send_acked(&room.id, &format!("ok{i}"), "within the burst")
            .await;
    }
    alice.send(&room.id, "over", "one too many").await;
    let (retry_after, client_msg_id) = alice
        .wait_for(|e| match e {
            ServerFrame::Error(chatd_client::ErrorFrame {
                code,
                retry_after_ms,
                client_msg_id,
                ..
            }) if code == "rate_limited" => Some((retry_after_ms, client_msg_id)),
            _ => None,
        })
        .await;
    let wait = retry_after.expect("retryAfterMs");
    assert!(wait > 0 && wait <= 500, "{wait}");
    assert_eq!(client_msg_id.as_deref(), Some("over"));
    // Retrying after the wait works.
    tokio::time::sleep(Duration::from_millis(wait + 20)).await;
    alice
        .send_acked(&room.id, "over", "retried after the wait")
        .await;
    // Ignoring the limit gets the connection closed with 4101.
    for i in 0..10 {
        let _ = alice
            .conn
            .send_json(&json!({"type": "ping", "id": i}))
            .await;
    }
    let code = loop {
        match alice.conn.next(WAIT).await.unwrap() {
            chatd_client::Incoming::Closed { code, .. } => break code,
            chatd_client::Incoming::Event(_) => {}
        }
    };
    assert_eq!(code, 4101);
    let history = app.client("bob").history_after(&room.id, 0).await.unwrap();
    let ids: Vec<&str> = history.iter().map(|m| m.client_msg_id.as_str()).collect();
    assert_eq!(
        ids,
        ["ok0", "ok1", "ok2", "over"],
        "refused frames stored nothing"
    );
}

#[tokio::test]
async fn a_user_is_limited_across_connections_and_rest() {
    let app = TestApp::spawn_with(|s| {
        s.limits.sends_per_second = 1;
        s.limits.sends_burst = 3;
    })
    .await;
    let room = app.client("alice").open_direct("bob").await.unwrap();
    let mut laptop = app.connect("alice").await;
    let mut phone = app.connect("alice").await;
    laptop.send_acked(&room.id, "a", "1").await;
    phone.send_acked(&room.id, "b", "2").await;
    laptop.send_acked(&room.id, "c", "3").await;
    phone.send(&room.id, "d", "4").await;
    assert_eq!(phone.error().await.0, "rate_limited");
    let response = app
        .post_json_as(
            "alice",
            &format!("/v1/rooms/{}/messages", room.id),
            json!({"clientMsgId": "e", "text": "5"}),
        )
        .await;
    assert_eq!(response.status, 429);
    let retry_after: u64 = response.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry_after));
    assert_eq!(response.code(), "rate_limited");
    assert!(response.body["error"]["retryAfterMs"].as_u64().unwrap() > 0);
    // Bob has his own bucket.
    app.connect("bob")
        .await
        .send_acked(&room.id, "x", "bob is fine")
        .await;
}

#[tokio::test]
async fn connections_are_capped_per_user_and_per_node() {
    let app = TestApp::spawn_with(|s| {
        s.limits.max_connections_per_user = 2;
        s.limits.max_connections = 3;
    })
    .await;
    let _a1 = app.connect("alice").await;
    let _a2 = app.connect("alice").await;
    assert_eq!(
        expect_refusal(&app, "alice").await,
        ("too_many_connections".into(), 4102)
    );
    let _b1 = app.connect("bob").await;
    assert_eq!(
        expect_refusal(&app, "carol").await,
        ("too_many_connections".into(), 4102)
    );
    drop(_a1);
    // Room again once a connection has gone.
    let deadline = Instant::now() + WAIT;
    loop {
        let mut conn = Connection::open(&app.client("carol").ws_url())
            .await
            .unwrap();
        if let ServerFrame::Welcome { .. } = conn.event(WAIT).await.unwrap() {
            break;
        }
        assert!(Instant::now() < deadline, "the freed slot never came back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_socket_that_never_completes_its_handshake_is_closed() {
    let app = TestApp::spawn_with(|s| s.server.handshake_timeout_ms = 300).await;
    let addr = app.base.trim_start_matches("http://").to_owned();
    let started = Instant::now();
    let closed = tokio::task::spawn_blocking(move || {
        let silent = TcpStream::connect(&addr).unwrap();
        let mut half = TcpStream::connect(&addr).unwrap();
        half.write_all(b"GET /ws?token=x HTTP/1.1\r\nHost: chatd\r\n")
            .unwrap();
        silent
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        half.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        // Closed by the server: reads end with 0 (after an error page, if any).
        let closed_by_server = |mut stream: TcpStream| {
            let mut buf = [0u8; 512];
            loop {
                match stream.read(&mut buf) {
                    Ok(0) => return true,
                    Ok(_) => continue,
                    Err(_) => return false, // timed out: still open
                }
            }
        };
        closed_by_server(silent) && closed_by_server(half)
    })
    .await
    .unwrap();
    assert!(closed, "the server kept a socket without a request");
    assert!(started.elapsed() < Duration::from_secs(5));
}

/// A client that stops reading while its room is busy: once its queue is full it is closed
/// (4100); when it resumes it gets everything, in order, once.
#[tokio::test]
async fn a_client_that_stops_reading_is_cut_off_and_resumes_without_loss() {
    const MESSAGES: usize = 600;
    let app = TestApp::spawn_with(|s| {
        s.limits.outbound_queue = 16;
        s.limits.max_text_chars = 8000;
        s.limits.max_frame_bytes = 16384;
    })
    .await;
    let room = app.client("alice").open_direct("bob").await.unwrap();
    let bob = app.connect("bob").await; // connected, then never reads

    // Alice posts over REST (a WebSocket of hers would get every message back too).
    let big = "x".repeat(8000);
    let path = format!("/v1/rooms/{}/messages", room.id);
    for i in 0..MESSAGES {
        let body = json!({"clientMsgId": format!("m{i}"), "text": big});
        assert_eq!(app.post_json_as("alice", &path, body).await.status, 201);
    }

    // Bob finally reads: what was written before the cut, then the close.
    let mut log = RoomLog::default();
    let mut bob = bob;
    let code = loop {
        match bob.conn.next(WAIT).await.unwrap() {
            chatd_client::Incoming::Event(ServerFrame::Message(m)) => {
                log.insert(m);
            }
            chatd_client::Incoming::Event(_) => {}
            chatd_client::Incoming::Closed { code, .. } => break code,
        }
    };
    assert_eq!(code, 4100, "closed as a slow consumer");
    assert!(log.len() < MESSAGES, "it was cut off before the end");
    let resume = BTreeMap::from([(room.id.clone(), log.contiguous())]);
    let (mut bob, replayed) = TestConn::connect_and_replay(&app.client("bob"), &resume).await;
    for m in replayed {
        log.insert(m);
    }
    // The replay stops at resume_max_per_room; the rest comes from history, as the SDK does.
    for m in app
        .client("bob")
        .history_after(&room.id, log.contiguous())
        .await
        .unwrap()
    {
        log.insert(m);
    }
    assert_eq!(log.seqs(), (1..=MESSAGES as u64).collect::<Vec<_>>());
    assert_eq!(log.duplicates(), 0);
    bob.no_message_within(Duration::from_millis(200)).await;
}
