//! Everything a client can get wrong gets a clear, documented answer and stores nothing.

use std::time::Duration;

use chatd::domain::RoomId;
use chatd_client::ServerFrame;
use serde_json::json;

use crate::helpers::*;

async fn small_limits() -> TestApp {
    TestApp::spawn_with(|s| {
        s.limits.max_text_chars = 100;
        s.limits.max_frame_bytes = 2048;
        s.limits.max_body_bytes = 2048;
    })
    .await
}

#[tokio::test]
async fn bad_frames_get_error_frames_and_the_connection_stays_open() {
    let app = small_limits().await;
    let room = app.client("alice").open_direct("bob").await.unwrap();
    let mut alice = app.connect("alice").await;
    let r = room.id.to_string();
    let cases: Vec<(&str, String)> = vec![
        ("bad_json", "{not json".into()),
        ("bad_json", "[1, 2, 3]".into()),
        ("bad_field", json!({"room": r}).to_string()),
        ("unknown_type", json!({"type": "dance"}).to_string()),
        (
            "bad_field",
            json!({"type": "send", "room": r, "text": "no id"}).to_string(),
        ),
        (
            "bad_field",
            json!({"type": "send", "room": r, "clientMsgId": 5, "text": "x"}).to_string(),
        ),
        (
            "bad_field",
            json!({"type": "send", "room": r, "clientMsgId": "", "text": "x"}).to_string(),
        ),
        (
            "bad_field",
            json!({"type": "send", "room": r, "clientMsgId": "has space", "text": "x"}).to_string(),
        ),
        (
            "bad_field",
            json!({"type": "send", "room": 7, "clientMsgId": "c", "text": "x"}).to_string(),
        ),
        (
            "empty_text",
            json!({"type": "send", "room": r, "clientMsgId": "c1", "text": ""}).to_string(),
        ),
        (
            "empty_text",
            json!({"type": "send", "room": r, "clientMsgId": "c2", "text": " \n\t "}).to_string(),
        ),
        (
            "text_too_long",
            json!({"type": "send", "room": r, "clientMsgId": "c3", "text": "é".repeat(101)})
                .to_string(),
        ),
        (
            "room_not_found",
            json!({"type": "send", "room": RoomId::new_group(), "clientMsgId": "c4", "text": "x"})
                .to_string(),
        ),
        (
            "room_not_found",
            json!({"type": "send", "room": "not-a-uuid", "clientMsgId": "c5", "text": "x"})
                .to_string(),
        ),
        (
            "bad_field",
            json!({"type": "resume", "rooms": {r.as_str(): -1}}).to_string(),
        ),
        ("bad_field", json!({"type": "read", "room": r}).to_string()),
    ];
    for (code, frame) in &cases {
        alice.conn.send_text(frame.clone()).await.unwrap();
        let (got, message) = alice.error().await;
        assert_eq!(&got, code, "frame {frame} -> {message}");
        assert!(!message.is_empty());
    }
    alice.conn.send_binary(vec![1, 2, 3]).await.unwrap();
    assert_eq!(alice.error().await.0, "binary_unsupported");

    // Exactly max_text_chars characters is fine, and the connection still works.
    alice.send_acked(&room.id, "ok", &"é".repeat(100)).await;
    alice.send_json(json!({"type": "ping", "id": 42})).await;
    let pong = alice
        .wait_for(|e| match e {
            ServerFrame::Pong { id } => Some(id),
            _ => None,
        })
        .await;
    assert_eq!(pong, Some(json!(42)));
    let history = app.client("bob").history_after(&room.id, 0).await.unwrap();
    assert_eq!(history.len(), 1, "only the valid message was stored");
}

#[tokio::test]
async fn an_oversized_frame_closes_with_1009_and_stores_nothing() {
    let app = small_limits().await;
    let room = app.client("alice").open_direct("bob").await.unwrap();
    let mut alice = app.connect("alice").await;
    let huge =
        json!({"type": "send", "room": room.id, "clientMsgId": "big", "text": "x".repeat(4000)});
    alice.send_json(huge).await;
    assert_eq!(alice.closed().await, 1009);
    let history = app.client("bob").history_after(&room.id, 0).await.unwrap();
    assert!(history.is_empty());
}

#[tokio::test]
async fn a_client_that_keeps_sending_garbage_is_closed_with_1008() {
    let app = TestApp::spawn().await;
    let mut alice = app.connect("alice").await;
    for _ in 0..20 {
        alice.conn.send_text("garbage").await.unwrap();
    }
    assert_eq!(alice.closed().await, 1008);
}

#[tokio::test]
async fn rest_errors_are_json_with_stable_codes() {
    let app = small_limits().await;
    let http = app.http();
    let token = app.token("alice");
    let room = app.client("alice").open_direct("bob").await.unwrap();
    let messages = format!("{}/v1/rooms/{}/messages", app.base, room.id);

    let post = |url: String, body: &'static str| {
        http.post(url)
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .body(body)
    };
    let cases = vec![
        (post(messages.clone(), "{oops"), 400, "bad_json"),
        (
            post(messages.clone(), r#"{"text":"no id"}"#),
            400,
            "bad_field",
        ),
        (
            post(messages.clone(), r#"{"clientMsgId":"a","text":""}"#),
            400,
            "empty_text",
        ),
        (
            post(
                format!("{}/v1/rooms", app.base),
                r#"{"name":"","members":[]}"#,
            ),
            400,
            "bad_field",
        ),
        (
            post(
                format!("{}/v1/rooms", app.base),
                r#"{"name":"x","members":["no spaces allowed"]}"#,
            ),
            400,
            "bad_field",
        ),
        (
            post(
                format!("{}/v1/rooms/direct", app.base),
                r#"{"peer":"alice"}"#,
            ),
            400,
            "bad_field",
        ),
        (
            post(
                messages.clone(),
                Box::leak(
                    format!(r#"{{"clientMsgId":"a","text":"{}"}}"#, "x".repeat(3000))
                        .into_boxed_str(),
                ),
            ),
            413,
            "payload_too_large",
        ),
        (
            http.get(format!("{messages}?limit=201"))
                .bearer_auth(&token),
            400,
            "bad_field",
        ),
        (
            http.get(format!("{messages}?limit=ten"))
                .bearer_auth(&token),
            400,
            "bad_field",
        ),
        (
            http.get(format!("{messages}?since=yesterday"))
                .bearer_auth(&token),
            400,
            "bad_field",
        ),
        (
            http.get(format!("{messages}?order=sideways"))
                .bearer_auth(&token),
            400,
            "bad_field",
        ),
        (
            http.get(format!(
                "{}/v1/rooms/{}/messages",
                app.base,
                RoomId::new_group()
            ))
            .bearer_auth(&token),
            404,
            "room_not_found",
        ),
        (
            http.get(format!("{}/v1/rooms/nope", app.base))
                .bearer_auth(&token),
            404,
            "room_not_found",
        ),
        (
            http.get(format!("{}/v1/nothing-here", app.base)),
            404,
            "not_found",
        ),
        (
            http.delete(format!("{}/v1/rooms", app.base))
                .bearer_auth(&token),
            405,
            "method_not_allowed",
        ),
        (
            http.get(format!("{}/v1/rooms", app.base)),
            401,
            "unauthorized",
        ),
        (
            http.get(format!("{}/ws", app.base)).bearer_auth(&token),
            400,
            "bad_request",
        ),
    ];
    for (request, status, code) in cases {
        let (client, request) = request.build_split();
        let request = request.unwrap();
        let what = format!("{} {}", request.method(), request.url());
        let got = reply(reqwest::RequestBuilder::from_parts(client, request)).await;
        assert_eq!((got.status, got.code()), (status, code), "{what}");
    }
    let history = app.client("bob").history_after(&room.id, 0).await.unwrap();
    assert!(history.is_empty(), "nothing stored by bad requests");
    tokio::time::sleep(Duration::from_millis(1)).await;
}
