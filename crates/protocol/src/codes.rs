//! The codes of the protocol: error codes (WebSocket `error` frames and REST bodies, with
//! their HTTP status and whether a retry can succeed) and close codes (with what a client
//! should do next).

use serde::{Deserialize, Serialize};

/// Stable error codes, shared by WebSocket `error` frames and REST error bodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
    /// The seq of a change (or a reply) names no message of the room, or a deleted one.
    MessageNotFound,
    /// The message is older than `limits.edit_window_ms`.
    EditWindowClosed,
    RateLimited,
    /// The message store cannot be reached. Nothing was stored; retry with the same clientMsgId.
    StoreUnavailable,
    /// Stored, but not yet announced to the other nodes. Retry with the same clientMsgId:
    /// the retry returns the stored message and announces it.
    BusUnavailable,
    Unauthorized,
    TokenExpired,
    TooManyConnections,
    /// No device of the caller's has this id.
    DeviceNotFound,
    /// The user has `push.max_devices_per_user` devices already.
    TooManyDevices,
    /// The deployment sends no notifications of that kind (no VAPID key, or no gateway).
    PushNotConfigured,
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
    /// A code this version does not know (from a newer server); treat it as not retryable.
    #[serde(other)]
    Unknown,
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
                "the message bus is unavailable; retry (a send: with the same clientMsgId, it is stored once)"
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
    /// An administrator revoked the user's tokens (and maybe banned them): get a new token.
    Revoked,
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
            CloseReason::Revoked => 4403,
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
            CloseReason::Revoked => "token revoked",
        }
    }
}

impl ErrorCode {
    /// Every code the server sends, in the order docs/protocol.md lists them.
    pub const ALL: [ErrorCode; 28] = [
        ErrorCode::BadJson,
        ErrorCode::UnknownType,
        ErrorCode::BadField,
        ErrorCode::EmptyText,
        ErrorCode::TextTooLong,
        ErrorCode::BinaryUnsupported,
        ErrorCode::FrameTooLarge,
        ErrorCode::RoomNotFound,
        ErrorCode::Forbidden,
        ErrorCode::MessageNotFound,
        ErrorCode::EditWindowClosed,
        ErrorCode::RateLimited,
        ErrorCode::StoreUnavailable,
        ErrorCode::BusUnavailable,
        ErrorCode::Unauthorized,
        ErrorCode::TokenExpired,
        ErrorCode::TooManyConnections,
        ErrorCode::DeviceNotFound,
        ErrorCode::TooManyDevices,
        ErrorCode::PushNotConfigured,
        ErrorCode::TooManyRooms,
        ErrorCode::BadRequest,
        ErrorCode::PayloadTooLarge,
        ErrorCode::RequestTimeout,
        ErrorCode::Overloaded,
        ErrorCode::NotFound,
        ErrorCode::MethodNotAllowed,
        ErrorCode::Internal,
    ];

    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadJson => "bad_json",
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::BadField => "bad_field",
            ErrorCode::EmptyText => "empty_text",
            ErrorCode::TextTooLong => "text_too_long",
            ErrorCode::BinaryUnsupported => "binary_unsupported",
            ErrorCode::FrameTooLarge => "frame_too_large",
            ErrorCode::RoomNotFound => "room_not_found",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::MessageNotFound => "message_not_found",
            ErrorCode::EditWindowClosed => "edit_window_closed",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::StoreUnavailable => "store_unavailable",
            ErrorCode::BusUnavailable => "bus_unavailable",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::TokenExpired => "token_expired",
            ErrorCode::TooManyConnections => "too_many_connections",
            ErrorCode::DeviceNotFound => "device_not_found",
            ErrorCode::TooManyDevices => "too_many_devices",
            ErrorCode::PushNotConfigured => "push_not_configured",
            ErrorCode::TooManyRooms => "too_many_rooms",
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::RequestTimeout => "request_timeout",
            ErrorCode::Overloaded => "overloaded",
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::Internal => "internal",
            ErrorCode::Unknown => "unknown",
        }
    }

    /// The HTTP status of a REST answer with this code; `None` for codes only WebSocket
    /// clients see (or only clients make up).
    pub fn http_status(self) -> Option<u16> {
        use ErrorCode::*;
        Some(match self {
            BadJson | UnknownType | BadField | EmptyText | TextTooLong | BadRequest => 400,
            Unauthorized | TokenExpired => 401,
            Forbidden | EditWindowClosed => 403,
            RoomNotFound | MessageNotFound | DeviceNotFound | NotFound => 404,
            MethodNotAllowed => 405,
            RequestTimeout => 408,
            TooManyRooms | TooManyDevices | PushNotConfigured => 409,
            PayloadTooLarge => 413,
            RateLimited | TooManyConnections => 429,
            Internal => 500,
            StoreUnavailable | BusUnavailable | Overloaded => 503,
            BinaryUnsupported | FrameTooLarge | Unknown => return None,
        })
    }
}

/// Codes compare with their wire names: `assert_eq!(code, "rate_limited")`.
impl PartialEq<&str> for ErrorCode {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a client does after the server closed its connection with a code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAction {
    /// Reconnect at once (to any node) and resume.
    Now,
    /// Reconnect with exponential backoff and jitter, then resume.
    Backoff,
    /// Get a new token first (the user may need to sign in again).
    Reauth,
    /// Do not reconnect until the user or app acts.
    Stop,
}

/// The client's action per range of close codes: the first range that holds the code wins;
/// codes in none of them back off.
pub const CLOSE_ACTIONS: [(u16, u16, ClientAction); 6] = [
    (1000, 1001, ClientAction::Now),
    (1005, 1006, ClientAction::Now),
    (1012, 1012, ClientAction::Now),
    (4000, 4099, ClientAction::Now),
    (4401, 4403, ClientAction::Reauth),
    (4400, 4499, ClientAction::Stop),
];

/// What to do after a close with `code` (any code, including ones this version never sends).
pub fn close_action(code: u16) -> ClientAction {
    CLOSE_ACTIONS
        .iter()
        .find(|(from, to, _)| (*from..=*to).contains(&code))
        .map_or(ClientAction::Backoff, |(_, _, action)| *action)
}

impl CloseReason {
    /// Every reason the server closes with.
    pub const ALL: [CloseReason; 15] = [
        CloseReason::Normal,
        CloseReason::ServiceRestart,
        CloseReason::HeartbeatTimeout,
        CloseReason::TooBig,
        CloseReason::PolicyViolation,
        CloseReason::ProtocolError,
        CloseReason::InvalidData,
        CloseReason::SlowConsumer,
        CloseReason::RateLimited,
        CloseReason::TooManyConnections,
        CloseReason::TryAgainLater,
        CloseReason::Internal,
        CloseReason::Unauthorized,
        CloseReason::TokenExpired,
        CloseReason::Revoked,
    ];

    pub fn client_action(self) -> ClientAction {
        close_action(self.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_names_are_the_serde_names() {
        for code in ErrorCode::ALL {
            assert_eq!(serde_json::to_value(code).unwrap(), code.as_str());
        }
    }

    #[test]
    fn close_codes_map_to_the_documented_actions() {
        assert_eq!(close_action(1006), ClientAction::Now);
        assert_eq!(close_action(1002), ClientAction::Backoff);
        assert_eq!(close_action(1007), ClientAction::Backoff);
        assert_eq!(close_action(4100), ClientAction::Backoff);
        assert_eq!(close_action(4401), ClientAction::Reauth);
        assert_eq!(close_action(4403), ClientAction::Reauth);
        assert_eq!(close_action(4404), ClientAction::Stop);
        assert_eq!(close_action(3000), ClientAction::Backoff);
    }
}
