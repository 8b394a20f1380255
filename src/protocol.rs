//! The WebSocket protocol, version 1: every frame is a JSON text frame, an object with a
//! `type`. docs/protocol.md is the reference for clients; this file is the implementation and
//! the two must agree (the tests check the codes and shapes used here).

use std::{borrow::Cow, collections::BTreeMap};

use axum::extract::ws::Utf8Bytes;
use serde::{Deserialize, Serialize};
use serde_json::error::Category;

use crate::{
    domain::{Message, Room, RoomId, Seq, UserId},
    store::MAX_SEQ,
};

pub const PROTOCOL_VERSION: u32 = 1;
/// Rooms one `resume` frame may name.
pub const MAX_RESUME_ROOMS: usize = 1000;
/// The subprotocol a browser offers (with `bearer.<token>`); the server selects it.
pub const SUBPROTOCOL: &str = "chatd.v1";

/// Stable error codes, shared by WebSocket `error` frames and REST error bodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The frame or body is not valid JSON, or not a JSON object.
    BadJson,
    /// `type` names no frame of this protocol version.
    UnknownType,
    /// A field is missing, of the wrong type, or out of range; the message names it.
    BadField,
    EmptyText,
    TextTooLong,
    BinaryUnsupported,
    FrameTooLarge,
    /// The room does not exist or the caller is not a member: the two are indistinguishable
    /// on purpose, so nobody learns about rooms they are not in.
    RoomNotFound,
    /// A member asked for something members may not do (e.g. add people to a direct room).
    Forbidden,
    RateLimited,
    /// The message store cannot be reached. Nothing was stored; retry with the same clientMsgId.
    StoreUnavailable,
    /// Stored, but not yet announced to the other nodes. Retry with the same clientMsgId:
    /// the retry returns the stored message and announces it.
    BusUnavailable,
    Unauthorized,
    TokenExpired,
    TooManyConnections,
    /// The user is a member of `limits.max_rooms_per_user` rooms already.
    TooManyRooms,
    BadRequest,
    PayloadTooLarge,
    /// The request (headers and body) did not arrive within `server.request_timeout_ms`.
    RequestTimeout,
    /// The node holds `server.max_http_connections` HTTP connections; try again (elsewhere).
    Overloaded,
    NotFound,
    MethodNotAllowed,
    Internal,
}

impl ErrorCode {
    /// Whether repeating the same request later can succeed.
    pub fn retryable(self) -> bool {
        matches!(
            self,
            ErrorCode::StoreUnavailable
                | ErrorCode::BusUnavailable
                | ErrorCode::RateLimited
                | ErrorCode::RequestTimeout
                | ErrorCode::Overloaded
                | ErrorCode::Internal
        )
    }

    /// Codes whose cause lies inside the node (a dependency, a bug): the client gets a fixed
    /// message and a `requestId`; the detail goes to the log under that id.
    pub fn is_internal(self) -> bool {
        matches!(
            self,
            ErrorCode::StoreUnavailable | ErrorCode::BusUnavailable | ErrorCode::Internal
        )
    }

    /// The fixed message a client gets for an internal code.
    pub fn public_message(self) -> &'static str {
        match self {
            ErrorCode::StoreUnavailable => {
                "the message store is unavailable; nothing was stored, retry with the same clientMsgId"
            }
            ErrorCode::BusUnavailable => {
                "stored, but not yet delivered; retry with the same clientMsgId"
            }
            _ => "internal error",
        }
    }
}

/// Why the server closes a connection, and the close code that tells the client what to do.
/// Codes are grouped by the client's next step (docs/protocol.md): 1000, 1001, 1005, 1006,
/// 1012 and 4000-4099 reconnect at once; 1002, 1003, 1007-1011, 1013 and 4100-4199 reconnect
/// with backoff; 4400-4499 do not reconnect until something changes (a new token).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The client closed, or the server has nothing more to say.
    Normal,
    /// The node is shutting down (drain): reconnect now, to another node.
    ServiceRestart,
    /// The client went silent past the idle timeout.
    HeartbeatTimeout,
    /// A frame exceeded `limits.max_frame_bytes`.
    TooBig,
    /// The client keeps breaking the protocol.
    PolicyViolation,
    /// A WebSocket protocol error (RFC 6455: unmasked frame, reserved opcode or bits,
    /// oversized or fragmented control frame...).
    ProtocolError,
    /// A text frame that is not UTF-8.
    InvalidData,
    /// The client does not read fast enough; its queue filled up. Resume later, nothing is lost.
    SlowConsumer,
    RateLimited,
    TooManyConnections,
    /// A dependency (store, bus) is down; try again later.
    TryAgainLater,
    Internal,
    Unauthorized,
    TokenExpired,
}

impl CloseReason {
    pub fn code(self) -> u16 {
        match self {
            CloseReason::Normal => 1000,
            CloseReason::ProtocolError => 1002,
            CloseReason::InvalidData => 1007,
            CloseReason::PolicyViolation => 1008,
            CloseReason::TooBig => 1009,
            CloseReason::Internal => 1011,
            CloseReason::ServiceRestart => 1012,
            CloseReason::TryAgainLater => 1013,
            CloseReason::HeartbeatTimeout => 4000,
            CloseReason::SlowConsumer => 4100,
            CloseReason::RateLimited => 4101,
            CloseReason::TooManyConnections => 4102,
            CloseReason::Unauthorized => 4401,
            CloseReason::TokenExpired => 4402,
        }
    }

    pub fn text(self) -> &'static str {
        match self {
            CloseReason::Normal => "bye",
            CloseReason::ServiceRestart => "node restarting, reconnect",
            CloseReason::HeartbeatTimeout => "heartbeat timeout",
            CloseReason::TooBig => "frame too large",
            CloseReason::PolicyViolation => "protocol violation",
            CloseReason::ProtocolError => "websocket protocol error",
            CloseReason::InvalidData => "text frame is not utf-8",
            CloseReason::SlowConsumer => "slow consumer: outbound queue full",
            CloseReason::RateLimited => "rate limit exceeded repeatedly",
            CloseReason::TooManyConnections => "too many connections",
            CloseReason::TryAgainLater => "temporarily unavailable",
            CloseReason::Internal => "internal error",
            CloseReason::Unauthorized => "unauthorized",
            CloseReason::TokenExpired => "token expired",
        }
    }

    /// Whether frames already queued for the client go out before the close frame. A slow
    /// consumer's queue is the problem, so it is dropped; a draining node flushes its acks.
    pub fn flush_queue_first(self) -> bool {
        !matches!(
            self,
            CloseReason::SlowConsumer
                | CloseReason::TooBig
                | CloseReason::HeartbeatTimeout
                | CloseReason::ProtocolError
                | CloseReason::InvalidData
        )
    }
}

// ---------------------------------------------------------------------------------------------
// Client -> server

#[derive(Debug, Clone, PartialEq)]
pub enum ClientFrame {
    Send(SendFrame),
    Resume(ResumeFrame),
    Read(ReadFrame),
    Ping(PingFrame),
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SendFrame {
    pub room: String,
    pub client_msg_id: String,
    pub text: String,
}

/// "I have everything up to `seq` in each of these rooms": the server replays what follows.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ResumeFrame {
    pub rooms: BTreeMap<String, Seq>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ReadFrame {
    pub room: String,
    pub seq: Seq,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct PingFrame {
    #[serde(default)]
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
        "send" => fields(text).map(ClientFrame::Send),
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
        "ping" => fields(text).map(ClientFrame::Ping),
        other => Err(FrameError::new(
            ErrorCode::UnknownType,
            format!("unknown frame type {other:?}"),
        )),
    }
}

fn seq_too_large(field: &str) -> FrameError {
    FrameError::new(
        ErrorCode::BadField,
        format!("{field}: a seq is at most {MAX_SEQ}"),
    )
}

// ---------------------------------------------------------------------------------------------
// Server -> client

#[derive(Debug, Clone, Serialize)]
#[serde(
    tag = "type",
    rename_all = "snake_case",
    rename_all_fields = "camelCase"
)]
pub enum ServerFrame<'a> {
    Welcome {
        v: u32,
        conn_id: &'a str,
        user: &'a UserId,
        node: &'a str,
        heartbeat_ms: u64,
        resume_wait_ms: u64,
        max_text_chars: usize,
    },
    /// The sender's confirmation: the message is stored with this id, seq and createdAt.
    Ack {
        client_msg_id: &'a str,
        room: &'a RoomId,
        id: &'a str,
        seq: Seq,
        #[serde(with = "crate::domain::timestamp")]
        created_at: chrono::DateTime<chrono::Utc>,
        /// True when this clientMsgId had been stored before (a retry).
        duplicate: bool,
    },
    Message(&'a Message),
    /// End of a resume: per room, the last seq replayed and whether more remain (page them
    /// over REST history).
    Resumed {
        rooms: BTreeMap<&'a RoomId, ResumedRoom>,
    },
    Pong {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a serde_json::Value>,
    },
    Receipt {
        room: &'a RoomId,
        user: &'a UserId,
        read_seq: Seq,
    },
    /// The user was added to a room (it is now live on this connection).
    RoomAdded {
        room: &'a Room,
    },
    /// The user left or was removed from a room; nothing more of it arrives here.
    RoomRemoved {
        room: &'a RoomId,
    },
    /// A room this user is in changed its members.
    Members {
        room: &'a RoomId,
        members: &'a [UserId],
    },
    Error {
        code: ErrorCode,
        message: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        client_msg_id: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        room: Option<&'a str>,
        /// Several rooms at once (a resume's unknown rooms).
        #[serde(skip_serializing_if = "Option::is_none")]
        rooms: Option<&'a [&'a str]>,
        #[serde(skip_serializing_if = "Option::is_none")]
        retry_after_ms: Option<u64>,
        /// For internal codes: the id under which the server logged the detail.
        #[serde(skip_serializing_if = "Option::is_none")]
        request_id: Option<&'a str>,
    },
}

#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ResumedRoom {
    pub last_seq: Seq,
    pub more: bool,
}

impl ServerFrame<'_> {
    /// Serializes once; the bytes are shared (reference-counted) by every recipient.
    pub fn encode(&self) -> Utf8Bytes {
        Utf8Bytes::from(serde_json::to_string(self).expect("server frames always serialize"))
    }

    pub fn error(code: ErrorCode, message: &str) -> ServerFrame<'_> {
        ServerFrame::Error {
            code,
            message,
            client_msg_id: None,
            room: None,
            rooms: None,
            retry_after_ms: None,
            request_id: None,
        }
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
                text: "hi".into()
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
        let frame = ServerFrame::Error {
            code: ErrorCode::RateLimited,
            message: "slow down",
            client_msg_id: Some("c1"),
            room: None,
            rooms: None,
            retry_after_ms: Some(250),
            request_id: None,
        };
        let v: serde_json::Value = serde_json::from_str(&frame.encode()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"type":"error","code":"rate_limited","message":"slow down",
                               "clientMsgId":"c1","retryAfterMs":250})
        );
    }
}
