//! The WebSocket frames of protocol version 1: every frame is a JSON text frame, an object
//! with a `type`. docs/protocol.md is the reference for clients; these types are the
//! implementation on both sides (the server and the Rust client use them; the JS SDK's tests
//! check it against docs/protocol-rules.json, which is generated from them).

use std::{borrow::Cow, collections::BTreeMap};

use serde::{Deserialize, Serialize};
use serde_json::error::Category;

use crate::{
    codes::ErrorCode,
    model::{MAX_SEQ, Message, Role, Room, RoomId, Seq, UserId, UserPresence},
};

pub const PROTOCOL_VERSION: u32 = 1;
/// Rooms one `resume` frame may name.
pub const MAX_RESUME_ROOMS: usize = 1000;
/// The subprotocol a browser offers (with `bearer.<token>`); the server selects it.
pub const SUBPROTOCOL: &str = "chatd.v1";

// ---------------------------------------------------------------------------------------------
// Client -> server

/// A frame from a client. Servers parse it with [`parse_client_frame`] (precise errors);
/// clients encode it with [`ClientFrame::to_json`].
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientFrame {
    Send(SendFrame),
    Edit(EditFrame),
    Delete(DeleteFrame),
    React(ReactFrame),
    Resume(ResumeFrame),
    Read(ReadFrame),
    Delivered(DeliveredFrame),
    Typing(TypingFrame),
    /// The user is active on this connection (presence `online` rather than `away`).
    Active,
    Ping(PingFrame),
}

impl ClientFrame {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("client frames always serialize")
    }

    /// The frame's `type`.
    pub fn kind(&self) -> &'static str {
        match self {
            ClientFrame::Send(_) => "send",
            ClientFrame::Edit(_) => "edit",
            ClientFrame::Delete(_) => "delete",
            ClientFrame::React(_) => "react",
            ClientFrame::Resume(_) => "resume",
            ClientFrame::Read(_) => "read",
            ClientFrame::Delivered(_) => "delivered",
            ClientFrame::Typing(_) => "typing",
            ClientFrame::Active => "active",
            ClientFrame::Ping(_) => "ping",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SendFrame {
    pub room: String,
    pub client_msg_id: String,
    pub text: String,
    /// The seq of the message this one answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<Seq>,
}

/// New text for the sender's message at `seq`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EditFrame {
    pub room: String,
    pub client_msg_id: String,
    pub seq: Seq,
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeleteFrame {
    pub room: String,
    pub client_msg_id: String,
    pub seq: Seq,
}

/// Adds (or with `remove`, takes back) the user's `emoji` on the message at `seq`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReactFrame {
    pub room: String,
    pub client_msg_id: String,
    pub seq: Seq,
    pub emoji: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub remove: bool,
}

impl ClientFrame {
    /// The room and clientMsgId of a frame that writes to a room's log (send and changes).
    pub fn entry_ids(&self) -> Option<(&str, &str)> {
        match self {
            ClientFrame::Send(f) => Some((&f.room, &f.client_msg_id)),
            ClientFrame::Edit(f) => Some((&f.room, &f.client_msg_id)),
            ClientFrame::Delete(f) => Some((&f.room, &f.client_msg_id)),
            ClientFrame::React(f) => Some((&f.room, &f.client_msg_id)),
            _ => None,
        }
    }
}

/// "I have everything up to `seq` in each of these rooms": the server replays what follows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResumeFrame {
    pub rooms: BTreeMap<String, Seq>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReadFrame {
    pub room: String,
    pub seq: Seq,
    /// Moves the user's own position (unread counts) without telling the members.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub private: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeliveredFrame {
    pub room: String,
    pub seq: Seq,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TypingFrame {
    pub room: String,
    /// Started (true) or stopped (false).
    pub typing: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PingFrame {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<serde_json::Value>,
}

/// A frame the client got wrong; answered with an `error` frame, the connection stays open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameError {
    pub code: ErrorCode,
    pub message: String,
}

impl FrameError {
    fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

#[derive(Deserialize)]
struct TypeTag<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<TypeValue<'a>>,
}

/// The `type` field: a string, or anything else (which is a field error, not bad JSON).
#[derive(Deserialize)]
#[serde(untagged)]
enum TypeValue<'a> {
    Name(#[serde(borrow)] Cow<'a, str>),
    Other(serde::de::IgnoredAny),
}

/// Parses one text frame. Two passes over a small frame buy precise errors: the first finds the
/// type (bad JSON vs unknown type), the second names the exact field that is missing or wrong.
pub fn parse_client_frame(text: &str) -> Result<ClientFrame, FrameError> {
    let tag: TypeTag = serde_json::from_str(text).map_err(|e| match e.classify() {
        Category::Data => FrameError::new(ErrorCode::BadJson, "a frame must be a JSON object"),
        _ => FrameError::new(ErrorCode::BadJson, format!("malformed JSON: {e}")),
    })?;
    let kind = match tag.kind {
        Some(TypeValue::Name(kind)) => kind,
        Some(TypeValue::Other(_)) => {
            return Err(FrameError::new(
                ErrorCode::BadField,
                "`type` must be a string",
            ));
        }
        None => return Err(FrameError::new(ErrorCode::BadField, "missing field `type`")),
    };
    fn fields<'a, T: Deserialize<'a>>(text: &'a str) -> Result<T, FrameError> {
        serde_json::from_str(text).map_err(|e| FrameError::new(ErrorCode::BadField, e.to_string()))
    }
    match kind.as_ref() {
        "send" => {
            let send: SendFrame = fields(text)?;
            check_seq("replyTo", send.reply_to.unwrap_or(0))?;
            Ok(ClientFrame::Send(send))
        }
        "edit" => {
            let edit: EditFrame = fields(text)?;
            check_seq("seq", edit.seq)?;
            Ok(ClientFrame::Edit(edit))
        }
        "delete" => {
            let delete: DeleteFrame = fields(text)?;
            check_seq("seq", delete.seq)?;
            Ok(ClientFrame::Delete(delete))
        }
        "react" => {
            let react: ReactFrame = fields(text)?;
            check_seq("seq", react.seq)?;
            Ok(ClientFrame::React(react))
        }
        "resume" => {
            let resume: ResumeFrame = fields(text)?;
            if resume.rooms.len() > MAX_RESUME_ROOMS {
                return Err(FrameError::new(
                    ErrorCode::BadField,
                    format!("rooms: at most {MAX_RESUME_ROOMS} per resume"),
                ));
            }
            if resume.rooms.values().any(|&seq| seq > MAX_SEQ) {
                return Err(seq_too_large("rooms"));
            }
            Ok(ClientFrame::Resume(resume))
        }
        "read" => {
            let read: ReadFrame = fields(text)?;
            if read.seq > MAX_SEQ {
                return Err(seq_too_large("seq"));
            }
            Ok(ClientFrame::Read(read))
        }
        "delivered" => {
            let delivered: DeliveredFrame = fields(text)?;
            if delivered.seq > MAX_SEQ {
                return Err(seq_too_large("seq"));
            }
            Ok(ClientFrame::Delivered(delivered))
        }
        "typing" => fields(text).map(ClientFrame::Typing),
        "active" => Ok(ClientFrame::Active),
        "ping" => fields(text).map(ClientFrame::Ping),
        other => Err(FrameError::new(
            ErrorCode::UnknownType,
            format!("unknown frame type {other:?}"),
        )),
    }
}

fn check_seq(field: &str, seq: Seq) -> Result<(), FrameError> {
    if seq > MAX_SEQ {
        return Err(seq_too_large(field));
    }
    Ok(())
}

fn seq_too_large(field: &str) -> FrameError {
    FrameError::new(
        ErrorCode::BadField,
        format!("{field}: a seq is at most {MAX_SEQ}"),
    )
}

// ---------------------------------------------------------------------------------------------
// Server -> client

/// A frame from the server. Servers encode it; clients decode it (a frame type this version
/// does not know decodes as [`ServerFrame::Unknown`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    tag = "type",
    rename_all = "snake_case",
    rename_all_fields = "camelCase"
)]
pub enum ServerFrame {
    Welcome {
        v: u32,
        conn_id: String,
        user: UserId,
        node: String,
        heartbeat_ms: u64,
        resume_wait_ms: u64,
        max_text_chars: usize,
        /// How long a typing entry lasts after its last start (clients re-send starts at
        /// about half of it while the user types).
        #[serde(default)]
        typing_ttl_ms: u64,
    },
    /// The sender's confirmation: the message is stored with this id, seq and createdAt.
    Ack {
        client_msg_id: String,
        room: RoomId,
        id: String,
        seq: Seq,
        #[serde(with = "crate::model::timestamp")]
        created_at: chrono::DateTime<chrono::Utc>,
        /// True when this clientMsgId had been stored before (a retry).
        duplicate: bool,
    },
    Message(Message),
    /// End of a resume: per room, the last seq replayed and whether more remain (page them
    /// over REST history).
    Resumed {
        rooms: BTreeMap<RoomId, ResumedRoom>,
    },
    Pong {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<serde_json::Value>,
    },
    /// A member's public positions in a room moved.
    Receipt {
        room: RoomId,
        user: UserId,
        delivered_seq: Seq,
        read_seq: Seq,
    },
    /// This user's own read position in `room` moved (on any of their devices).
    Unread {
        room: RoomId,
        unread: u64,
        read_seq: Seq,
        /// Over all the user's rooms.
        total: u64,
    },
    /// Contacts' presence: all of them (`snapshot`), or those that changed.
    Presence {
        snapshot: bool,
        users: Vec<UserPresence>,
    },
    /// Who else is typing in `room` now.
    Typing {
        room: RoomId,
        users: Vec<UserId>,
    },
    /// The user was added to a room (it is now live on this connection).
    RoomAdded {
        room: Room,
    },
    /// The user left or was removed from a room; nothing more of it arrives here.
    RoomRemoved {
        room: RoomId,
    },
    /// A room this user is in changed its members or their roles.
    Members {
        room: RoomId,
        members: Vec<UserId>,
        #[serde(default)]
        roles: BTreeMap<UserId, Role>,
    },
    Error(ErrorFrame),
    /// A frame type this version does not know (a newer server): ignore it.
    #[serde(other)]
    Unknown,
}

/// An `error` frame: `code` says what went wrong; the other fields say what it is about.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorFrame {
    pub code: ErrorCode,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_msg_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
    /// Several rooms at once (a resume's unknown rooms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rooms: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
    /// For internal codes: the id under which the server logged the detail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

impl ErrorFrame {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            client_msg_id: None,
            room: None,
            rooms: None,
            retry_after_ms: None,
            request_id: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResumedRoom {
    pub last_seq: Seq,
    pub more: bool,
}

impl ServerFrame {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("server frames always serialize")
    }

    pub fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        ServerFrame::Error(ErrorFrame::new(code, message))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code_of(text: &str) -> ErrorCode {
        parse_client_frame(text).unwrap_err().code
    }

    #[test]
    fn parses_each_frame() {
        let f = parse_client_frame(r#"{"type":"send","room":"r","clientMsgId":"c","text":"hi"}"#);
        assert_eq!(
            f.unwrap(),
            ClientFrame::Send(SendFrame {
                room: "r".into(),
                client_msg_id: "c".into(),
                text: "hi".into(),
                reply_to: None,
            })
        );
        assert!(matches!(
            parse_client_frame(r#"{"type":"resume","rooms":{"r":3}}"#),
            Ok(ClientFrame::Resume(_))
        ));
        assert!(matches!(
            parse_client_frame(r#"{"type":"ping"}"#),
            Ok(ClientFrame::Ping(_))
        ));
    }

    #[test]
    fn classifies_mistakes() {
        assert_eq!(code_of("{not json"), ErrorCode::BadJson);
        assert_eq!(code_of("[1,2]"), ErrorCode::BadJson);
        assert_eq!(code_of(r#"{"room":"r"}"#), ErrorCode::BadField);
        assert_eq!(code_of(r#"{"type":"dance"}"#), ErrorCode::UnknownType);
        assert_eq!(code_of(r#"{"type":5}"#), ErrorCode::BadField);
        assert_eq!(code_of(r#"{"type":null}"#), ErrorCode::BadField);
        // Seqs beyond what a store holds are refused, not wrapped.
        assert_eq!(
            code_of(r#"{"type":"resume","rooms":{"r":18446744073709551615}}"#),
            ErrorCode::BadField
        );
        assert_eq!(
            code_of(r#"{"type":"read","room":"r","seq":9223372036854775808}"#),
            ErrorCode::BadField
        );
        assert!(
            parse_client_frame(r#"{"type":"read","room":"r","seq":9223372036854775807}"#).is_ok()
        );
        assert_eq!(
            code_of(r#"{"type":"send","room":"r","text":"hi"}"#),
            ErrorCode::BadField
        );
        assert_eq!(
            code_of(r#"{"type":"send","room":"r","clientMsgId":7,"text":"hi"}"#),
            ErrorCode::BadField
        );
        assert_eq!(
            code_of(r#"{"type":"resume","rooms":{"r":-1}}"#),
            ErrorCode::BadField
        );
        let e = parse_client_frame(r#"{"type":"send","room":"r","text":"hi"}"#).unwrap_err();
        assert!(e.message.contains("clientMsgId"), "{}", e.message);
    }

    #[test]
    fn server_frames_have_snake_types_and_camel_fields() {
        let frame = ServerFrame::Error(ErrorFrame {
            client_msg_id: Some("c1".into()),
            retry_after_ms: Some(250),
            ..ErrorFrame::new(ErrorCode::RateLimited, "slow down")
        });
        let v: serde_json::Value = serde_json::from_str(&frame.to_json()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"type":"error","code":"rate_limited","message":"slow down",
                               "clientMsgId":"c1","retryAfterMs":250})
        );
        let back: ServerFrame = serde_json::from_value(v).unwrap();
        assert_eq!(back, frame);
        let newer: ServerFrame = serde_json::from_str(r#"{"type":"sparkle","room":"r"}"#).unwrap();
        assert_eq!(newer, ServerFrame::Unknown);
    }
}
