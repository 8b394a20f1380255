//! The WebSocket protocol as the server speaks it: the shared protocol crate's frames and
//! codes, plus what only the server decides (how a frame becomes shared bytes, which closes
//! flush the queue first).

use axum::extract::ws::Utf8Bytes;

pub use chatd_protocol::{
    ClientAction, ClientFrame, CloseReason, ErrorCode, ErrorFrame, FrameError, MAX_RESUME_ROOMS,
    PROTOCOL_VERSION, ResumeFrame, ResumedRoom, SUBPROTOCOL, ServerFrame, parse_client_frame,
};

/// Serializes once; the bytes are shared (reference-counted) by every recipient.
pub fn encode(frame: &ServerFrame) -> Utf8Bytes {
    Utf8Bytes::from(frame.to_json())
}

/// The `type` of an encoded server frame (serde writes the tag first), for the frames-out
/// metric: one of the known types, else "other" (a bounded label set).
pub fn frame_type(encoded: &str) -> &'static str {
    const TYPES: [&str; 13] = [
        "welcome",
        "ack",
        "message",
        "resumed",
        "pong",
        "receipt",
        "unread",
        "presence",
        "typing",
        "room_added",
        "room_removed",
        "members",
        "error",
    ];
    let name = encoded
        .strip_prefix(r#"{"type":""#)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_default();
    TYPES.into_iter().find(|t| *t == name).unwrap_or("other")
}

/// Whether frames already queued for the client go out before the close frame. A slow
/// consumer's queue is the problem, so it is dropped; a draining node flushes its acks.
pub fn flush_queue_first(reason: CloseReason) -> bool {
    !matches!(
        reason,
        CloseReason::SlowConsumer
            | CloseReason::Revoked
            | CloseReason::TooBig
            | CloseReason::HeartbeatTimeout
            | CloseReason::ProtocolError
            | CloseReason::InvalidData
    )
}
