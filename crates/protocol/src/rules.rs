//! The rules table: what every client must agree on, as data. The close codes the server
//! sends and what a client does after each (and after any other code), the error codes with
//! their HTTP status and whether a retry can succeed, and one sample of every frame.
//!
//! It is checked in as docs/protocol-rules.json; the JS SDK's tests hold the SDK to it, and
//! the test below fails when the file is stale (`CHATD_WRITE_RULES=1 cargo test -p
//! chatd-protocol` writes it).

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::{
    ClientAction, ClientFrame, CloseReason, DeleteFrame, DeliveredFrame, EditFrame, ErrorCode,
    ErrorFrame, PROTOCOL_VERSION, PingFrame, ReactFrame, ReadFrame, ResumeFrame, ResumedRoom,
    SUBPROTOCOL, SendFrame, ServerFrame, TypingFrame,
    codes::CLOSE_ACTIONS,
    model::{
        EntryKind, Message, PresenceState, Role, Room, RoomId, RoomKind, Seq, UserId, UserPresence,
        timestamp,
    },
    state::Fold,
};

/// The table, as JSON.
pub fn document() -> Value {
    let codes: BTreeMap<String, Value> = CloseReason::ALL
        .iter()
        .map(|r| {
            let entry = json!({"reason": r.text(), "action": r.client_action()});
            (r.code().to_string(), entry)
        })
        .collect();
    let ranges: Vec<Value> = CLOSE_ACTIONS
        .iter()
        .map(|(from, to, action)| json!({"from": from, "to": to, "action": action}))
        .collect();
    let errors: BTreeMap<&str, Value> = ErrorCode::ALL
        .iter()
        .map(|c| {
            let entry = json!({"http": c.http_status(), "retryable": c.retryable()});
            (c.as_str(), entry)
        })
        .collect();
    let by_type = |frames: Vec<Value>| -> BTreeMap<String, Value> {
        frames
            .into_iter()
            .map(|v| (v["type"].as_str().expect("typed").to_owned(), v))
            .collect()
    };
    let client = by_type(sample_client_frames().iter().map(json_of).collect());
    let server = by_type(sample_server_frames().iter().map(json_of).collect());
    json!({
        "version": PROTOCOL_VERSION,
        "subprotocol": SUBPROTOCOL,
        "close": {"codes": codes, "ranges": ranges, "otherwise": ClientAction::Backoff},
        "errors": errors,
        "frames": {"client": client, "server": server},
        "fold": sample_fold(),
    })
}

fn json_of<T: serde::Serialize>(frame: &T) -> Value {
    serde_json::to_value(frame).expect("frames serialize")
}

fn sample_room() -> RoomId {
    RoomId::parse("6f1c2a4e-2b7d-4d3f-9a1e-0c5b7e9d2f10").expect("a uuid")
}

fn user(name: &str) -> UserId {
    UserId::parse(name).expect("a valid user id")
}

fn sample_message() -> Message {
    Message {
        id: "01935b7e-0c6b-7c1e-9a55-0e6c3b1f2a10".into(),
        room: sample_room(),
        seq: 42,
        sender: user("alice"),
        client_msg_id: "c1".into(),
        kind: EntryKind::Message,
        text: "hi".into(),
        target: None,
        reply_to: None,
        emoji: None,
        deleted: false,
        created_at: timestamp::from_millis(1_790_000_000_123),
    }
}

/// A room's log with every kind of change, some racing, and the state it folds to as
/// `viewer` sees it: the JS SDK's tests fold `entries` in several orders and must get `state`.
fn sample_fold() -> Value {
    let at = |seq: Seq| timestamp::from_millis(1_790_000_000_000 + 1000 * seq as i64);
    let entry =
        |seq: Seq, sender: &str, kind: EntryKind, target: Option<Seq>, text: &str| Message {
            id: format!("01935b7e-0c6b-7c1e-9a55-{seq:012}"),
            seq,
            sender: user(sender),
            client_msg_id: format!("c{seq}"),
            kind,
            target,
            text: text.into(),
            created_at: at(seq),
            ..sample_message()
        };
    let react = |seq, sender, target, emoji: &str, on: bool| Message {
        emoji: Some(emoji.into()),
        ..entry(
            seq,
            sender,
            if on {
                EntryKind::React
            } else {
                EntryKind::Unreact
            },
            Some(target),
            "",
        )
    };
    let entries = vec![
        entry(1, "alice", EntryKind::Message, None, "lunch at noon?"),
        entry(2, "bob", EntryKind::Message, None, "sure"),
        Message {
            reply_to: Some(1),
            ..entry(3, "carol", EntryKind::Message, None, "where?")
        },
        entry(4, "alice", EntryKind::Edit, Some(1), "lunch at one?"),
        entry(5, "alice", EntryKind::Edit, Some(1), "lunch at 1pm?"),
        react(6, "bob", 1, "👍", true),
        react(7, "carol", 1, "👍", true),
        react(8, "bob", 1, "👍", true),
        react(9, "bob", 1, "❤️", true),
        react(10, "bob", 1, "❤️", false),
        react(11, "carol", 2, "😂", true),
        Message {
            deleted: true,
            ..entry(12, "bob", EntryKind::Message, None, "")
        },
        Message {
            deleted: true,
            ..entry(13, "bob", EntryKind::Edit, Some(12), "")
        },
        entry(14, "bob", EntryKind::Delete, Some(12), ""),
        Message {
            reply_to: Some(12),
            ..entry(15, "alice", EntryKind::Message, None, "what did you say?")
        },
        // Reacting again keeps the emoji's place; taken back and given again, it moves last.
        react(16, "alice", 2, "👍", true),
        react(17, "alice", 2, "😂", true),
        react(18, "carol", 2, "😂", false),
        react(19, "carol", 2, "😂", true),
        // Text the store removed, its delete not held (a history page may end just before it).
        Message {
            deleted: true,
            ..entry(20, "carol", EntryKind::Message, None, "")
        },
        react(21, "bob", 20, "👍", true),
    ];
    let viewer = user("bob");
    let mut fold = Fold::new();
    entries.iter().for_each(|e| fold.apply(e));
    json!({"viewer": viewer, "entries": entries, "state": fold.states(&viewer)})
}

fn sample_client_frames() -> Vec<ClientFrame> {
    vec![
        ClientFrame::Send(SendFrame {
            room: sample_room().to_string(),
            client_msg_id: "c1".into(),
            text: "hi".into(),
            reply_to: Some(41),
        }),
        ClientFrame::Edit(EditFrame {
            room: sample_room().to_string(),
            client_msg_id: "c2".into(),
            seq: 42,
            text: "hi there".into(),
        }),
        ClientFrame::Delete(DeleteFrame {
            room: sample_room().to_string(),
            client_msg_id: "c3".into(),
            seq: 42,
        }),
        ClientFrame::React(ReactFrame {
            room: sample_room().to_string(),
            client_msg_id: "c4".into(),
            seq: 42,
            emoji: "👍".into(),
            remove: false,
        }),
        ClientFrame::Resume(ResumeFrame {
            rooms: BTreeMap::from([(sample_room().to_string(), 41)]),
        }),
        ClientFrame::Read(ReadFrame {
            room: sample_room().to_string(),
            seq: 42,
            private: false,
        }),
        ClientFrame::Delivered(DeliveredFrame {
            room: sample_room().to_string(),
            seq: 42,
        }),
        ClientFrame::Typing(TypingFrame {
            room: sample_room().to_string(),
            typing: true,
        }),
        ClientFrame::Active,
        // What the SDK sends; `id` is optional (any JSON, echoed in the pong).
        ClientFrame::Ping(PingFrame { id: None }),
    ]
}

fn sample_server_frames() -> Vec<ServerFrame> {
    let message = sample_message();
    let room = Room {
        id: sample_room(),
        kind: RoomKind::Group,
        name: Some("Trip".into()),
        members: vec![user("alice"), user("bob")],
        roles: BTreeMap::from([(user("alice"), Role::Owner)]),
        created_by: user("alice"),
        created_at: timestamp::from_millis(1_790_000_000_000),
    };
    vec![
        ServerFrame::Welcome {
            v: PROTOCOL_VERSION,
            conn_id: "node1:17".into(),
            user: user("alice"),
            node: "node1".into(),
            heartbeat_ms: 20_000,
            resume_wait_ms: 2_000,
            max_text_chars: 4_000,
            typing_ttl_ms: 6_000,
        },
        ServerFrame::Ack {
            client_msg_id: "c1".into(),
            room: sample_room(),
            id: message.id.clone(),
            seq: 42,
            created_at: message.created_at,
            duplicate: false,
        },
        ServerFrame::Message(message),
        ServerFrame::Resumed {
            rooms: BTreeMap::from([(
                sample_room(),
                ResumedRoom {
                    last_seq: 42,
                    more: false,
                },
            )]),
        },
        ServerFrame::Pong { id: Some(json!(7)) },
        ServerFrame::Receipt {
            room: sample_room(),
            user: user("bob"),
            delivered_seq: 42,
            read_seq: 41,
        },
        ServerFrame::Unread {
            room: sample_room(),
            unread: 3,
            read_seq: 39,
            total: 5,
        },
        ServerFrame::Presence {
            snapshot: true,
            users: vec![
                UserPresence {
                    user: user("bob"),
                    state: PresenceState::Online,
                    last_seen: None,
                    v: 7,
                },
                UserPresence {
                    user: user("carol"),
                    state: PresenceState::Offline,
                    last_seen: Some(timestamp::from_millis(1_790_000_000_000)),
                    v: 3,
                },
            ],
        },
        ServerFrame::Typing {
            room: sample_room(),
            users: vec![user("bob")],
        },
        ServerFrame::RoomAdded { room: room.clone() },
        ServerFrame::RoomRemoved {
            room: sample_room(),
        },
        ServerFrame::Members {
            room: sample_room(),
            members: room.members.clone(),
            roles: room.roles.clone(),
        },
        ServerFrame::Error(ErrorFrame {
            client_msg_id: Some("c1".into()),
            room: Some(sample_room().to_string()),
            rooms: Some(vec![sample_room().to_string()]),
            retry_after_ms: Some(250),
            request_id: Some("5f0c3e2a9b8d4c7e".into()),
            ..ErrorFrame::new(
                ErrorCode::StoreUnavailable,
                ErrorCode::StoreUnavailable.public_message(),
            )
        }),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/protocol-rules.json"
    );

    /// Objects with sorted keys, whatever serde_json's map keeps (a dependency may turn on
    /// its insertion order), so the file is the same in every build.
    fn canonical(value: Value) -> Value {
        match value {
            Value::Object(map) => {
                let sorted: BTreeMap<String, Value> =
                    map.into_iter().map(|(k, v)| (k, canonical(v))).collect();
                Value::Object(sorted.into_iter().collect())
            }
            Value::Array(items) => Value::Array(items.into_iter().map(canonical).collect()),
            other => other,
        }
    }

    #[test]
    fn the_checked_in_table_is_current() {
        let fresh = serde_json::to_string_pretty(&canonical(document())).unwrap() + "\n";
        if std::env::var_os("CHATD_WRITE_RULES").is_some() {
            std::fs::write(FILE, &fresh).unwrap();
        }
        let checked_in = std::fs::read_to_string(FILE).unwrap_or_default();
        assert!(
            checked_in == fresh,
            "docs/protocol-rules.json is stale: run CHATD_WRITE_RULES=1 cargo test -p chatd-protocol"
        );
    }

    #[test]
    fn every_sample_frame_reads_back_as_itself() {
        for frame in sample_server_frames() {
            let back: ServerFrame = serde_json::from_str(&frame.to_json()).unwrap();
            assert_eq!(back, frame);
        }
        for frame in sample_client_frames() {
            let parsed = crate::parse_client_frame(&frame.to_json()).unwrap();
            assert_eq!(parsed, frame);
            assert_eq!(json_of(&frame)["type"], frame.kind());
        }
    }
}
