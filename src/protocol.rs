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

/// Whether frames already queued for the client go out before the close frame. A slow
/// consumer's queue is the problem, so it is dropped; a draining node flushes its acks.
pub fn flush_queue_first(reason: CloseReason) -> bool {
    !matches!(
        reason,
        CloseReason::SlowConsumer
            | CloseReason::TooBig
            | CloseReason::HeartbeatTimeout
            | CloseReason::ProtocolError
            | CloseReason::InvalidData
    )
}
