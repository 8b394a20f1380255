//! The edges of a node, as an attacker or a careless client finds them: sockets that trickle
//! their requests, switched-off routes, absurd tokens, numbers beyond a store's range,
//! WebSocket protocol violations, costly frames repeated, caps raced, a drain under a busy
//! sender. Each gets a documented answer, and nothing is stored or leaked because of it.
//!
//! Over 400 lines: one short test per edge, independent of each other, in one place that a
//! reviewer of the limits can read through.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use chatd::domain::{RoomId, UserId};
use chatd_client::{Incoming, ServerFrame};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::helpers::*;

fn addr(app: &TestApp) -> String {
    app.base.trim_start_matches("http://").to_owned()
}

/// A socket that sends request headers announcing a body it then trickles, a byte at a time.
async fn trickler(addr: &str, path: &str) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: chatd\r\nContent-Type: application/json\r\n\
         Content-Length: 100000\r\n\r\n{{"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream
}

/// Reads a whole HTTP/1.1 response that ends with the connection (Connection: close).
async fn read_until_closed(stream: &mut TcpStream) -> String {
    let mut bytes = Vec::new();
    let _ = tokio::time::timeout(WAIT, stream.read_to_end(&mut bytes)).await;
    String::from_utf8_lossy(&bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_trickling_bodies_do_not_stop_health_logins_or_chat() {
    let app = TestApp::spawn_with(|s| s.server.request_timeout_ms = 3000).await;
    let addr = addr(&app);
    let mut tricklers = Vec::new();
    for i in 0..2000 {
        let path = if i % 2 == 0 {
            "/v1/dev/login"
        } else {
            "/v1/rooms"
        };
        tricklers.push(trickler(&addr, path).await);
    }
    // While they hold their requests open (one more byte each, now and then)...
    let keep_trickling = async {
        for _ in 0..5 {
            for t in tricklers.iter_mut() {
                let _ = t.write_all(b" ").await;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    // ...everyone else is served.
    let others = async {
        assert_eq!(app.get_json("/healthz").await.status, 200);
        let login = app
            .post_json("/v1/dev/login", json!({"user": "alice"}))
            .await;
        assert_eq!((login.status, &login.body["user"]), (200, &json!("alice")));
        let room = app.client("alice").open_direct("bob").await.unwrap();
        let mut bob = app.connect("bob").await;
        let mut alice = app.connect("alice").await;
        alice.send_acked(&room.id, "during", "still chatting").await;
        assert_eq!(bob.messages(&room.id, 1).await[0].text, "still chatting");
    };
    tokio::join!(keep_trickling, others);
    // The request deadline then answers each trickler 408 and closes it.
    let mut sample = tricklers.swap_remove(0);
    let response = read_until_closed(&mut sample).await;
    assert!(response.starts_with("HTTP/1.1 408"), "{response}");
    assert!(response.contains("request_timeout"), "{response}");
}

#[tokio::test]
async fn past_the_http_connection_cap_new_connections_get_a_fast_503() {
    let app = TestApp::spawn_with(|s| {
        s.server.max_http_connections = 20;
        s.server.handshake_timeout_ms = 1000;
    })
    .await;
    let addr = addr(&app);
    let mut silent = Vec::new();
    for _ in 0..20 {
        silent.push(TcpStream::connect(&addr).await.unwrap());
    }
    // The accept loop sees the 20 before the next one: wait until all are counted.
    let mut over = TcpStream::connect(&addr).await.unwrap();
    let response = read_until_closed(&mut over).await;
    assert!(response.starts_with("HTTP/1.1 503"), "{response}");
    let body: Value = serde_json::from_str(response.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(body["error"]["code"], "overloaded");
    // The silent ones are closed by the handshake deadline; the node serves again.
    for s in silent.iter_mut() {
        read_until_closed(s).await;
    }
    assert_eq!(app.get_json("/healthz").await.status, 200);
}

#[tokio::test]
async fn a_switched_off_dev_login_does_not_exist_and_reads_nothing() {
    let app = TestApp::spawn_with(|s| s.auth.dev_login = false).await;
    // Headers announcing a body that never comes: answered at once, without waiting for it.
    let mut stream = trickler(&addr(&app), "/v1/dev/login").await;
    let mut first = [0u8; 12];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut first))
        .await
        .expect("answered without the body")
        .unwrap();
    assert_eq!(&first, b"HTTP/1.1 404");
}

#[tokio::test]
async fn absurd_token_dates_are_refused_and_far_ones_leak_nothing() {
    let app = TestApp::spawn_with(|s| {
        s.auth.leeway_secs = 3600;
        s.limits.max_connections_per_user = 3;
    })
    .await;
    let sign = |exp: Value| {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &json!({"sub": "alice", "exp": exp}),
            &jsonwebtoken::EncodingKey::from_secret(app.settings.auth.jwt_secret.as_bytes()),
        )
        .unwrap()
    };
    // Beyond year 9999 (chrono's maximum is within reach of the leeway there): refused.
    let absurd = sign(json!(8_210_266_876_799_i64));
    let mut conn = chatd_client::Connection::open(&format!("{}?token={absurd}", app.ws_url()))
        .await
        .unwrap();
    match conn.event(WAIT).await.unwrap() {
        ServerFrame::Error(chatd_client::ErrorFrame { code, .. }) => {
            assert_eq!(code, "unauthorized")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(conn.closed(WAIT).await.unwrap(), 4401);
    // The latest accepted date works, and each connection gives its slot back: more
    // connections in a row than the per-user cap all get in.
    let far = sign(json!(chatd::auth::MAX_EXP));
    let client = chatd_client::Client::new(&app.base, far);
    for _ in 0..6 {
        let conn = TestConn::connect(&client).await;
        conn.conn.close().await;
        wait_until(|| app.node.hub.connection_count() == 0).await;
    }
    let alice = UserId::parse("alice").unwrap();
    let states = app.node.presence.snapshot(&[alice]).await.unwrap();
    assert_eq!(states[0].state, chatd::domain::PresenceState::Offline);
}

#[tokio::test]
async fn a_connection_slot_is_given_back_even_by_a_task_that_panics() {
    let app = TestApp::spawn_with(|s| s.limits.max_connections_per_user = 1).await;
    let alice = UserId::parse("alice").unwrap();
    let hub = app.node.hub.clone();
    let user = alice.clone();
    let panicked = tokio::spawn(async move {
        let _slot = hub.reserve(&user, 10, 1).unwrap();
        panic!("a bug in a connection task");
    })
    .await;
    assert!(panicked.unwrap_err().is_panic());
    assert!(app.node.hub.reserve(&alice, 10, 1).is_ok());
    // And the WebSocket path works after it.
    app.connect("alice").await;
}

/// Polls `condition` until it holds (every wait has a deadline).
async fn wait_until(mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !condition() {
        assert!(Instant::now() < deadline, "condition never held");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_read_that_moves_nothing_tells_nobody_and_reads_are_limited() {
    let app = TestApp::spawn_with(|s| {
        s.limits.reads_per_second = 1;
        s.limits.reads_burst = 4;
    })
    .await;
    let room = app.client("alice").open_direct("bob").await.unwrap();
    let mut bob = app.connect("bob").await;
    let mut alice = app.connect("alice").await;
    alice.send_acked(&room.id, "m1", "hello").await;
    bob.messages(&room.id, 1).await;
    let path = format!("/v1/rooms/{}/read", room.id);
    let read = |seq: u64| app.post_json_as("bob", &path, json!({ "seq": seq }));
    assert_eq!(read(1).await.status, 200);
    let receipt = alice
        .wait_for(|e| match e {
            ServerFrame::Receipt { read_seq, .. } => Some(read_seq),
            _ => None,
        })
        .await;
    assert_eq!(receipt, 1);
    // The same position again, and one behind it: answered, but nobody hears of it.
    assert_eq!(read(1).await.status, 200);
    bob.send_json(json!({"type": "read", "room": room.id, "seq": 0}))
        .await;
    // A marker: bob's next message arrives after anything the reads could have caused.
    bob.send_acked(&room.id, "marker", "after the reads").await;
    let seen = alice
        .wait_for(|e| match e {
            ServerFrame::Receipt { .. } => Some(true),
            ServerFrame::Message(m) if m.client_msg_id == "marker" => Some(false),
            _ => None,
        })
        .await;
    assert!(!seen, "a read that moved nothing was announced");
    // The burst is spent (3 reads); one more passes, the next is refused.
    assert_eq!(read(1).await.status, 200);
    let refused = read(1).await;
    assert_eq!(refused.status, 429);
    assert!(refused.headers.contains_key("retry-after"));
}

#[tokio::test]
async fn a_resume_answers_unknown_rooms_in_one_frame_and_costs_per_room() {
    let app = TestApp::spawn_with(|s| {
        s.limits.resume_rooms_per_second = 1;
        s.limits.resume_rooms_burst = 1500;
    })
    .await;
    let room = app.client("alice").open_direct("bob").await.unwrap();
    let mut alice = app.connect("alice").await; // its empty resume cost nothing
    let mut rooms: BTreeMap<String, u64> = (0..999)
        .map(|_| (RoomId::new_group().to_string(), 0))
        .collect();
    rooms.insert(room.id.to_string(), 0);
    alice
        .send_json(json!({"type": "resume", "rooms": rooms}))
        .await;
    let mut errors = 0;
    let resumed = loop {
        match alice.event().await {
            ServerFrame::Error(chatd_client::ErrorFrame { code, rooms, .. }) => {
                assert_eq!(code, "room_not_found");
                assert_eq!(rooms.unwrap().len(), 999);
                errors += 1;
            }
            ServerFrame::Resumed { rooms } => break rooms,
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(errors, 1, "one frame for all unknown rooms");
    assert_eq!(resumed.keys().collect::<Vec<_>>(), [&room.id]);
    // 1,000 of the 1,500 rooms are spent: another 1,000 must wait.
    alice
        .send_json(json!({"type": "resume", "rooms": rooms}))
        .await;
    let (code, _) = alice.error().await;
    assert_eq!(code, "rate_limited");
}

/// A raw WebSocket: the handshake by hand, so the test can send frames no client library
/// would (unmasked, reserved opcodes, invalid UTF-8).
async fn raw_websocket(app: &TestApp, user: &str) -> TcpStream {
    let mut stream = TcpStream::connect(addr(app)).await.unwrap();
    let request = format!(
        "GET /ws?token={} HTTP/1.1\r\nHost: chatd\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        app.token(user)
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        stream.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"));
    stream
}

/// Reads server frames until the close frame; returns its code.
async fn close_code(stream: &mut TcpStream) -> u16 {
    let read = async {
        loop {
            let mut header = [0u8; 2];
            stream.read_exact(&mut header).await?;
            let mut len = u64::from(header[1] & 0x7f);
            if len == 126 {
                len = u64::from(stream.read_u16().await?);
            } else if len == 127 {
                len = stream.read_u64().await?;
            }
            let mut payload = vec![0u8; len as usize];
            stream.read_exact(&mut payload).await?;
            if header[0] & 0x0f == 0x8 {
                return Ok::<_, std::io::Error>(u16::from_be_bytes([payload[0], payload[1]]));
            }
        }
    };
    tokio::time::timeout(WAIT, read)
        .await
        .expect("a close frame in time")
        .expect("a close frame, not a dropped socket")
}

/// A client frame with a zero mask (so the payload goes as is).
fn masked(first_byte: u8, payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![first_byte];
    if payload.len() < 126 {
        frame.push(0x80 | payload.len() as u8);
    } else {
        frame.push(0x80 | 126);
        frame.extend((payload.len() as u16).to_be_bytes());
    }
    frame.extend([0, 0, 0, 0]);
    frame.extend(payload);
    frame
}

#[tokio::test]
async fn websocket_protocol_violations_close_with_the_rfc_codes() {
    let app = TestApp::spawn().await;
    let cases: [(&str, Vec<u8>, u16); 4] = [
        ("unmasked frame", vec![0x81, 0x02, b'h', b'i'], 1002),
        ("reserved opcode", masked(0x83, b""), 1002),
        ("invalid UTF-8", masked(0x81, &[0xff, 0xfe, 0xfd]), 1007),
        ("oversized control frame", masked(0x89, &[b'x'; 200]), 1002),
    ];
    for (what, frame, expected) in cases {
        let mut ws = raw_websocket(&app, "alice").await;
        ws.write_all(&frame).await.unwrap();
        assert_eq!(close_code(&mut ws).await, expected, "{what}");
    }
}

#[tokio::test]
async fn control_frames_count_against_the_frame_budget() {
    let app = TestApp::spawn_with(|s| {
        s.limits.frames_per_second = 2;
        s.limits.frames_burst = 4;
        s.limits.rate_limit_strikes = 5;
    })
    .await;
    let url = format!("{}?token={}", app.ws_url(), app.token("alice"));
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    for _ in 0..50 {
        let ping = tokio_tungstenite::tungstenite::Message::Ping(vec![1, 2, 3].into());
        if ws.send(ping).await.is_err() {
            break;
        }
    }
    let code = tokio::time::timeout(WAIT, async {
        while let Some(Ok(frame)) = ws.next().await {
            if let tokio_tungstenite::tungstenite::Message::Close(Some(close)) = frame {
                return u16::from(close.code);
            }
        }
        0
    })
    .await
    .unwrap();
    assert_eq!(code, 4101);
}

#[tokio::test]
async fn seqs_beyond_the_stores_range_are_refused_not_wrapped() {
    let app = TestApp::spawn().await;
    let room = app.client("alice").open_direct("bob").await.unwrap();
    let mut alice = app.connect("alice").await;
    alice.send_acked(&room.id, "m1", "one").await;
    let huge = "18446744073709551615";
    alice
        .conn
        .send_text(format!(
            r#"{{"type":"resume","rooms":{{"{}":{huge}}}}}"#,
            room.id
        ))
        .await
        .unwrap();
    assert_eq!(alice.error().await.0, "bad_field");
    alice
        .conn
        .send_text(format!(
            r#"{{"type":"read","room":"{}","seq":9223372036854775808}}"#,
            room.id
        ))
        .await
        .unwrap();
    assert_eq!(alice.error().await.0, "bad_field");
    for query in [format!("after={huge}"), "before=9223372036854775808".into()] {
        let path = format!("/v1/rooms/{}/messages?{query}", room.id);
        let r = app.get_json_as("alice", &path).await;
        assert_eq!((r.status, r.code()), (400, "bad_field"), "{query}");
    }
    let path = format!("/v1/rooms/{}/read", room.id);
    let r = app
        .post_json_as("alice", &path, json!({"seq": 9223372036854775808_u64}))
        .await;
    assert_eq!(r.status, 400);
    // Nothing moved.
    let membership = app
        .node
        .store
        .membership(&room.id, &UserId::parse("alice").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(membership.read_seq, 0);
}

#[tokio::test]
async fn malformed_paths_and_dot_user_ids_get_json_answers() {
    let app = TestApp::spawn().await;
    let r = app.get_json_as("alice", "/v1/rooms/%FF%FE").await;
    assert_eq!((r.status, r.code()), (404, "room_not_found"));
    for peer in [".", ".."] {
        let r = app
            .post_json_as("alice", "/v1/rooms/direct", json!({ "peer": peer }))
            .await;
        assert_eq!(r.status, 400, "{peer}");
    }
}

#[tokio::test]
async fn rooms_are_capped_per_user_and_listed_in_pages() {
    let app = TestApp::spawn_with(|s| s.limits.max_rooms_per_user = 7).await;
    let alice = app.client("alice");
    for i in 0..6 {
        alice
            .create_group(&format!("g{i}"), &["bob"])
            .await
            .unwrap();
    }
    alice.open_direct("bob").await.unwrap(); // the 7th room of both
    let create = |members: Value| {
        let body = json!({"name": "one more", "members": members});
        app.post_json_as("carol", "/v1/rooms", body)
    };
    let refused = create(json!(["alice"])).await;
    assert_eq!((refused.status, refused.code()), (409, "too_many_rooms"));
    assert_eq!(create(json!(["dave"])).await.status, 201);
    // Pages of 3: 3 + 3 + 1, each cursor leading on, every room once.
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    for expected in [3, 3, 1] {
        let mut path = "/v1/rooms?limit=3".to_owned();
        if let Some(a) = &after {
            path.push_str(&format!("&after={a}"));
        }
        let page = app.get_json_as("alice", &path).await.body;
        let rooms = page["rooms"].as_array().unwrap();
        assert_eq!(rooms.len(), expected, "{page}");
        seen.extend(rooms.iter().map(|r| r["id"].as_str().unwrap().to_owned()));
        after = page["next"].as_str().map(str::to_owned);
    }
    assert_eq!(after, None, "the last page has no next cursor");
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 7);
    assert_eq!(alice.rooms().await.unwrap().len(), 7);
}

#[tokio::test]
async fn connection_caps_hold_exactly_under_a_race() {
    let app = TestApp::spawn_with(|s| s.limits.max_connections_per_user = 30).await;
    let attempts = (0..60).map(|_| async {
        let url = format!("{}?token={}", app.ws_url(), app.token("alice"));
        let mut conn = chatd_client::Connection::open(&url).await.unwrap();
        let first = conn.event(WAIT).await.unwrap();
        (matches!(first, ServerFrame::Welcome { .. }), conn)
    });
    let outcomes = futures_util::future::join_all(attempts).await;
    let admitted = outcomes.iter().filter(|(ok, _)| *ok).count();
    assert_eq!(admitted, 30);
}

#[tokio::test]
async fn a_drain_closes_with_1012_however_fast_a_client_sends() {
    let app = TestApp::spawn_with(|s| s.server.shutdown_grace_ms = 60_000).await;
    let room = app.client("alice").open_direct("bob").await.unwrap();
    let alice = app.connect("alice").await;
    let (mut tx, mut rx) = alice.conn.split();
    let room_id = room.id.clone();
    let sender = tokio::spawn(async move {
        for i in 0..1_000_000 {
            if tx
                .send_message(&room_id, &format!("m{i}"), "busy")
                .await
                .is_err()
            {
                return i;
            }
        }
        1_000_000
    });
    // Acks flow; then the node is told to stop.
    let mut last_acked = 0;
    while last_acked < 50 {
        if let Incoming::Event(ServerFrame::Ack { seq, .. }) = rx.next(WAIT).await.unwrap() {
            last_acked = seq;
        }
    }
    let node = app.node.clone();
    let stopping = tokio::spawn(app.stop());
    let code = loop {
        match rx
            .next(WAIT)
            .await
            .expect("a close frame before the test's deadline")
        {
            Incoming::Closed { code, .. } => break code,
            Incoming::Event(ServerFrame::Ack { seq, .. }) => last_acked = seq,
            Incoming::Event(_) => {}
        }
    };
    assert_eq!(code, 1012);
    // Every message the node stored was acked before the close: none left unconfirmed.
    let stored = node.store.last_seq(&room.id).await.unwrap();
    assert_eq!(
        last_acked, stored,
        "the acks of handled frames are flushed first"
    );
    tokio::time::timeout(WAIT, stopping)
        .await
        .expect("the node stops long before its grace period")
        .unwrap();
    sender.abort();
}

/// A node on the shared Redis and MongoDB-wire servers, inside the test process.
async fn cluster_app() -> TestApp {
    let (redis, mongo) = tokio::task::spawn_blocking(|| {
        (
            crate::servers::Redis::shared().url(),
            crate::servers::Mongo::shared().uri.clone(),
        )
    })
    .await
    .unwrap();
    TestApp::spawn_with(|s| {
        s.store.kind = chatd::config::StoreKind::Mongodb;
        s.store.mongodb_uri = mongo;
        s.store.mongodb_database = crate::servers::unique("chatd_edges");
        s.bus.kind = chatd::config::BusKind::Redis;
        s.bus.redis_url = redis;
        s.bus.redis_prefix = crate::servers::unique("chatd_edges");
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_recent_cache_answers_only_what_reaches_the_stores_last_seq() {
    let app = cluster_app().await;
    let room = app.client("alice").open_direct("bob").await.unwrap();
    let mut alice = app.connect("alice").await;
    alice.send_acked(&room.id, "m1", "one").await;
    alice.send_acked(&room.id, "m2", "two").await;
    // A node that died between storing and caching: the store holds seq 3, the cache not.
    let lost = new_message(&room.id, "alice", "m3");
    app.node
        .store
        .append(lost, chrono::Utc::now())
        .await
        .unwrap();
    let bob = app.client("bob");
    let (newest, _) = bob
        .history_page(&room.id, "order=desc&limit=50")
        .await
        .unwrap();
    assert_eq!(seqs(&newest), [3, 2, 1]);
    let listed = bob.rooms().await.unwrap();
    assert_eq!(
        listed[0].last_message.as_ref().map(|m| m.message.seq),
        Some(3)
    );
    let resume = BTreeMap::from([(room.id.clone(), 1)]);
    let (_bob, replayed) = TestConn::connect_and_replay(&bob, &resume).await;
    assert_eq!(seqs(&replayed), [2, 3]);
}
