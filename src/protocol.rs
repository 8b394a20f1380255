//! The WebSocket protocol as the server speaks it: the shared protocol crate's frames and
//! codes, plus what only the server decides (how a frame becomes shared bytes, which closes
//! flush the queue first).

use axum::extract::ws::Utf8Bytes;

pub use chatd_protocol::{
    ClientAction, ClientFrame, CloseReason, ErrorCode, ErrorFrame, FrameError, MAX_RESUME_ROOMS,
    PROTOCOL_VERSION, ResumeFrame, ResumedRoom, SUBPROTOCOL, SendFrame, ServerFrame,
    parse_client_frame,
};

/// Serializes once; the bytes are shared (reference-counted) by every recipient.
pub fn encode(frame: &ServerFrame) -> Utf8Bytes {
    Utf8Bytes::from(frame.to_json())
}

/// The server frame types the frames-out metric tells apart; anything else is "other" (a
/// bounded label set).
pub const FRAME_TYPES: [&str; 14] = [
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
    "other",
];

/// The index in [`FRAME_TYPES`] of an encoded server frame's `type` (serde writes the tag
/// first).
pub fn frame_type(encoded: &str) -> usize {
    let name = encoded
        .strip_prefix(r#"{"type":""#)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_default();
    let other = FRAME_TYPES.len() - 1;
    FRAME_TYPES[..other]
        .iter()
        .position(|t| *t == name)
        .unwrap_or(other)
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
