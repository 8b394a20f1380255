//! The REST API as an OpenAPI 3.1 document, generated from the handlers' annotations and
//! served at `/openapi.json`. A schema-driven fuzzer (schemathesis) runs against it in the
//! test command, so the document and the behaviour cannot drift apart unnoticed.

use serde::Serialize;
use utoipa::{
    IntoResponses, Modify, OpenApi, ToSchema,
    openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
};

use chatd_protocol::state::{MessageState, ReactionCount, ReplyPreview};

use super::{me, ops, push, rooms};
use crate::{
    chat::{MemberPresence, RoomPresence},
    domain::{EntryKind, Message, Role, Room, RoomKind, RoomSummary},
    protocol::ErrorCode,
    store::{MemberReceipt, Order, UserSettings},
};

/// Every error answer: `{"error": {"code", "message", "retryAfterMs"?}}`.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErrorDetail {
    pub code: ErrorCode,
    pub message: String,
    /// With `rate_limited`: when a retry will be accepted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
    /// With `store_unavailable`, `bus_unavailable` and `internal`: the id under which the
    /// server logged the detail.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// The errors any authenticated route can answer.
#[derive(IntoResponses)]
#[allow(dead_code)] // a description of responses, never built
pub enum CommonErrors {
    /// Malformed input; `code` says which kind and `message` which field.
    #[response(status = 400)]
    BadRequest(ErrorBody),
    /// No token, or an invalid or expired one.
    #[response(status = 401)]
    Unauthorized(ErrorBody),
    /// No such room, or not the caller's (the same answer on purpose).
    #[response(status = 404)]
    NotFound(ErrorBody),
    /// The request did not arrive within `server.request_timeout_ms`.
    #[response(status = 408)]
    Timeout(ErrorBody),
    /// The body is larger than `limits.max_body_bytes`.
    #[response(status = 413)]
    TooLarge(ErrorBody),
    /// Too many requests; `retryAfterMs` and `Retry-After` say when to retry.
    #[response(status = 429)]
    RateLimited(ErrorBody),
    /// The store or the bus is unreachable; retry later (sends: with the same clientMsgId).
    #[response(status = 503)]
    Unavailable(ErrorBody),
}

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "HS256, RS256 or ES256 (as configured); `sub` = user id, `exp` required",
                    ))
                    .build(),
            ),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "chatd REST API",
        description = "Rooms, members, history and read positions. Real-time traffic uses the \
                       WebSocket at /ws (docs/protocol.md).",
        version = "1"
    ),
    paths(
        rooms::list,
        rooms::create_group,
        rooms::open_direct,
        rooms::get,
        rooms::add_members,
        rooms::remove_member,
        rooms::set_role,
        rooms::history,
        rooms::post_message,
        rooms::mark_read,
        rooms::presence,
        rooms::receipts,
        ops::me,
        me::settings,
        me::update_settings,
        push::offer,
        push::devices,
        push::register,
        push::remove,
        push::notifications,
        ops::dev_login,
        ops::healthz,
        ops::readyz,
    ),
    components(schemas(
        ErrorBody, ErrorDetail, ErrorCode, Message, MessageState, ReactionCount, ReplyPreview, EntryKind, Role, Room, RoomKind, RoomSummary, MemberPresence, RoomPresence, MemberReceipt, UserSettings, Order,
        rooms::RoomPage, push::Devices, push::Notifications
    )),
    modifiers(&BearerAuth),
    security(("bearer" = []))
)]
pub struct ApiDoc;

pub async fn document() -> axum::Json<utoipa::openapi::OpenApi> {
    axum::Json(ApiDoc::openapi())
}
