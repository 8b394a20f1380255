//! chatd's wire protocol, version 1, shared by the server and the Rust client: the ids and
//! data ([`model`]), the WebSocket frames in and out ([`frames`]), the error and close codes
//! ([`codes`]), and the rules table every client follows ([`rules`], checked in as
//! docs/protocol-rules.json for the JS SDK). docs/protocol.md is the prose reference.

pub mod codes;
pub mod frames;
pub mod model;
pub mod rules;
pub mod state;

pub use codes::{ClientAction, CloseReason, ErrorCode, close_action};
pub use frames::{
    ClientFrame, DeleteFrame, DeliveredFrame, EditFrame, ErrorFrame, FrameError, MAX_RESUME_ROOMS,
    PROTOCOL_VERSION, PingFrame, ReactFrame, ReadFrame, ResumeFrame, ResumedRoom, SUBPROTOCOL,
    SendFrame, ServerFrame, TypingFrame, parse_client_frame,
};

/// The secret of the development configuration (`config/default.toml`): public, so a server
/// refuses it in production and on network addresses; tools use it against local nodes.
pub const DEV_SECRET: &str = "chatd-development-secret-do-not-use-in-production";
