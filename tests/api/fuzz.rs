//! Property-based fuzzing of everything that parses client input: the WebSocket frame
//! parser, the id parsers, and the REST inputs (queries, bodies, paths) through a live node.
//! No input may panic or produce a server error; every refusal must be a documented code.

use std::{sync::OnceLock, time::Duration};

use chatd::{
    domain::{RoomId, UserId},
    protocol::{ErrorCode, parse_client_frame},
};
use proptest::prelude::*;
use serde_json::{Value, json};

use crate::helpers::TestApp;

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,40}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(".{0,12}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Objects shaped like frames: a known (or unknown) type and plausible or wrong fields.
fn arb_frame() -> impl Strategy<Value = Value> {
    let kind = prop_oneof![
        Just("send"),
        Just("resume"),
        Just("read"),
        Just("ping"),
        Just("SEND"),
        Just("")
    ];
    let field = prop_oneof![
        Just("room"),
        Just("clientMsgId"),
        Just("text"),
        Just("rooms"),
        Just("seq"),
        Just("id"),
        Just("type")
    ];
    (kind, prop::collection::vec((field, arb_json()), 0..6)).prop_map(|(kind, fields)| {
        let mut object = serde_json::Map::new();
        object.insert("type".into(), json!(kind));
        for (name, value) in fields {
            object.insert(name.into(), value);
        }
        Value::Object(object)
    })
}

const FRAME_ERRORS: [ErrorCode; 3] = [
    ErrorCode::BadJson,
    ErrorCode::UnknownType,
    ErrorCode::BadField,
];

fn check_frame(text: &str) -> Result<(), TestCaseError> {
    match parse_client_frame(text) {
        Ok(frame) => {
            let value: Value = serde_json::from_str(text).expect("accepted frames are JSON");
            // What was parsed is the frame the text named.
            prop_assert_eq!(value["type"].as_str(), Some(frame.kind()));
        }
        Err(e) => {
            prop_assert!(FRAME_ERRORS.contains(&e.code), "{:?}", e.code);
            prop_assert!(!e.message.is_empty());
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn the_frame_parser_takes_any_text(text in ".{0,200}") {
        check_frame(&text)?;
    }

    #[test]
    fn the_frame_parser_takes_any_json(value in arb_json()) {
        check_frame(&value.to_string())?;
    }

    #[test]
    fn the_frame_parser_takes_frame_shaped_objects(value in arb_frame()) {
        check_frame(&value.to_string())?;
    }

    #[test]
    fn id_parsers_take_any_text(text in ".{0,80}") {
        if let Ok(user) = UserId::parse(&text) {
            let back: UserId = serde_json::from_value(json!(text)).unwrap();
            prop_assert_eq!(back, user);
        }
        if let Ok(room) = RoomId::parse(&text) {
            prop_assert_eq!(RoomId::parse(room.as_str()).unwrap(), room);
        }
    }
}

/// One node and runtime shared by the REST cases (proptest bodies are synchronous).
fn live() -> &'static (tokio::runtime::Runtime, TestApp, String, String) {
    static LIVE: OnceLock<(tokio::runtime::Runtime, TestApp, String, String)> = OnceLock::new();
    LIVE.get_or_init(|| {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let (app, room) = runtime.block_on(async {
            let app = TestApp::spawn_with(|s| s.limits.max_body_bytes = 4096).await;
            let room = app.client("alice").open_direct("bob").await.unwrap();
            (app, room.id.to_string())
        });
        let token = app.token("alice");
        (runtime, app, room, token)
    })
}

fn arb_query_value() -> impl Strategy<Value = String> {
    prop_oneof![
        ".{0,30}",
        any::<i64>().prop_map(|n| n.to_string()),
        any::<u64>().prop_map(|n| n.to_string()),
        Just("2026-01-01T00:00:00Z".to_owned()),
        Just("asc".to_owned()),
        Just("desc".to_owned()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn rest_inputs_never_cause_a_server_error(
        path in prop_oneof![
            Just("/v1/rooms/{room}/messages"),
            Just("/v1/rooms/{room}"),
            Just("/v1/rooms/{room}/read"),
            Just("/v1/rooms/{room}/members"),
            Just("/v1/rooms/direct"),
            Just("/v1/rooms"),
            Just("/v1/dev/login"),
            Just("/v1/rooms/{other}/messages"),
        ],
        other in ".{0,40}",
        post in any::<bool>(),
        query in prop::collection::vec(
            (prop_oneof![Just("after"), Just("before"), Just("since"), Just("until"), Just("limit"), Just("order"), Just("x")], arb_query_value()),
            0..4,
        ),
        body in prop_oneof![arb_json().prop_map(|v| v.to_string()), ".{0,100}"],
    ) {
        let (runtime, app, room, token) = live();
        let path = path
            .replace("{room}", room)
            .replace("{other}", &url_escape(&other));
        let query: Vec<(String, String)> = query.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        let (status, json) = runtime.block_on(async {
            let url = format!("{}{path}", app.base);
            let request = if post {
                app.http().post(url).header("content-type", "application/json").body(body)
            } else {
                app.http().get(url).query(&query)
            };
            let response = tokio::time::timeout(Duration::from_secs(10), request.bearer_auth(token).send())
                .await
                .expect("answered in time")
                .expect("request sent");
            let status = response.status().as_u16();
            let text = response.text().await.unwrap_or_default();
            (status, serde_json::from_str::<Value>(&text).ok())
        });
        prop_assert!(status < 500, "{status} for {path}");
        if status >= 400 {
            let json = json.expect("error bodies are JSON");
            prop_assert!(json["error"]["code"].is_string(), "{json}");
        }
    }
}

fn url_escape(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
