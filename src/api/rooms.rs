//! Rooms, members, history and read positions. Room ids in paths that are malformed, unknown
//! or not the caller's all answer 404 `room_not_found`, so nothing leaks about other rooms.

use std::sync::Arc;

use axum::{Json, extract::State, http::StatusCode};
use chatd_protocol::state::MessageState;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{
    ApiError, ApiJson, ApiPath, ApiQuery, AuthUser,
    openapi::{CommonErrors, ErrorBody},
};
use crate::{
    chat::{DEFAULT_PAGE, DEFAULT_ROOM_PAGE, RoomPresence, Write},
    domain::{Message, Role, Room, RoomId, RoomSummary, Seq, UserId},
    protocol::ErrorCode,
    state::Node,
    store::{Entries, HistoryQuery, MAX_SEQ, Mark, MemberReceipt, Order},
};

type ApiResult<T> = Result<T, ApiError>;

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RoomListParams {
    /// 1 to 500 (default 100).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<usize>,
    /// The `next` cursor of the previous page.
    after: Option<String>,
}

/// A page of the caller's rooms.
#[derive(Serialize, ToSchema)]
pub struct RoomPage {
    /// In room id order (sort by activity on the client).
    rooms: Vec<RoomSummary>,
    /// Pass as `after` for the next page; null on the last page.
    #[schema(value_type = Option<String>)]
    next: Option<RoomId>,
}

/// The caller's rooms, a page at a time.
#[utoipa::path(get, path = "/v1/rooms", tag = "rooms", params(RoomListParams),
    responses((status = 200, body = RoomPage), CommonErrors))]
pub async fn list(
    State(node): State<Arc<Node>>,
    AuthUser(user): AuthUser,
    ApiQuery(params): ApiQuery<RoomListParams>,
) -> ApiResult<Json<RoomPage>> {
    let limit = params.limit.unwrap_or(DEFAULT_ROOM_PAGE);
    // A page costs reads per room: it draws on the same per-user budget as resumed rooms.
    let cost = u32::try_from(limit).unwrap_or(u32::MAX).max(1);
    node.limits
        .resumed_rooms
        .check_n(&user, cost)
        .map_err(|w| ApiError::rate_limited(w, "resumes"))?;
    let (rooms, next) = node
        .chat
        .list_rooms(&user, params.after.as_deref(), limit)
        .await?;
    Ok(Json(RoomPage { rooms, next }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OpenDirect {
    #[schema(pattern = "^[A-Za-z0-9_.@-]{1,64}$")]
    peer: String,
}

/// The direct room of the caller and `peer`: the same room whoever asks, however often.
#[utoipa::path(post, path = "/v1/rooms/direct", tag = "rooms", request_body = OpenDirect,
    responses(
        (status = 201, description = "created by this call", body = Room),
        (status = 200, description = "it existed", body = Room),
        CommonErrors))]
pub async fn open_direct(
    State(node): State<Arc<Node>>,
    AuthUser(user): AuthUser,
    ApiJson(body): ApiJson<OpenDirect>,
) -> ApiResult<(StatusCode, Json<Room>)> {
    let (room, created) = node.chat.open_direct(&user, &body.peer).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(room)))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateGroup {
    #[schema(min_length = 1, max_length = 100)]
    name: String,
    #[serde(default)]
    #[schema(inline, value_type = Vec<UserId>)]
    members: Vec<String>,
}

/// A new group with the caller and `members`.
#[utoipa::path(post, path = "/v1/rooms", tag = "rooms", request_body = CreateGroup,
    responses((status = 201, body = Room), CommonErrors))]
pub async fn create_group(
    State(node): State<Arc<Node>>,
    AuthUser(user): AuthUser,
    ApiJson(body): ApiJson<CreateGroup>,
) -> ApiResult<(StatusCode, Json<Room>)> {
    let room = node
        .chat
        .create_group(&user, &body.name, &body.members)
        .await?;
    Ok((StatusCode::CREATED, Json(room)))
}

/// A room of the caller's.
#[utoipa::path(get, path = "/v1/rooms/{room}", tag = "rooms",
    params(("room" = String, Path, description = "room id")),
    responses((status = 200, body = Room), CommonErrors))]
pub async fn get(
    State(node): State<Arc<Node>>,
    AuthUser(user): AuthUser,
    ApiPath(room): ApiPath<String>,
) -> ApiResult<Json<Room>> {
    Ok(Json(node.chat.room(&user, &room).await?))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddMembers {
    #[schema(min_items = 1, value_type = Vec<UserId>)]
    members: Vec<String>,
}

/// Adds members to a group (403 for direct rooms).
#[utoipa::path(post, path = "/v1/rooms/{room}/members", tag = "rooms", request_body = AddMembers,
    params(("room" = String, Path, description = "room id")),
    responses((status = 200, body = Room), (status = 403, body = ErrorBody), CommonErrors))]
pub async fn add_members(
    State(node): State<Arc<Node>>,
    AuthUser(user): AuthUser,
    ApiPath(room): ApiPath<String>,
    ApiJson(body): ApiJson<AddMembers>,
) -> ApiResult<Json<Room>> {
    Ok(Json(
        node.chat.add_members(&user, &room, &body.members).await?,
    ))
}

/// Removes a member from a group: anyone may leave; owners may remove anyone, admins plain
/// members (403 otherwise).
#[utoipa::path(delete, path = "/v1/rooms/{room}/members/{user}", tag = "rooms",
    params(("room" = String, Path, description = "room id"), ("user" = String, Path, description = "user id")),
    responses((status = 204, description = "removed (or was not a member)"), (status = 403, body = ErrorBody), CommonErrors))]
pub async fn remove_member(
    State(node): State<Arc<Node>>,
    AuthUser(user): AuthUser,
    ApiPath((room, target)): ApiPath<(String, String)>,
) -> ApiResult<StatusCode> {
    node.chat.remove_member(&user, &room, &target).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetRole {
    #[schema(inline)]
    role: Role,
}

/// Gives a member of a group a role; owners only (403 otherwise and for direct rooms).
#[utoipa::path(put, path = "/v1/rooms/{room}/members/{user}/role", tag = "rooms", request_body = SetRole,
    params(("room" = String, Path, description = "room id"), ("user" = String, Path, description = "user id")),
    responses((status = 200, body = Room), (status = 403, body = ErrorBody), CommonErrors))]
pub async fn set_role(
    State(node): State<Arc<Node>>,
    AuthUser(user): AuthUser,
    ApiPath((room, target)): ApiPath<(String, String)>,
    ApiJson(body): ApiJson<SetRole>,
) -> ApiResult<Json<Room>> {
    Ok(Json(
        node.chat.set_role(&user, &room, &target, body.role).await?,
    ))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct HistoryParams {
    /// Only messages with a greater seq.
    #[param(minimum = 0, maximum = 9223372036854775807_i64)]
    after: Option<Seq>,
    /// Only messages with a smaller seq.
    #[param(minimum = 0, maximum = 9223372036854775807_i64)]
    before: Option<Seq>,
    /// RFC 3339; inclusive.
    #[param(format = DateTime)]
    since: Option<String>,
    /// RFC 3339; exclusive.
    #[param(format = DateTime)]
    until: Option<String>,
    /// 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    limit: Option<usize>,
    /// `asc` (default) or `desc`, by seq.
    #[serde(default)]
    #[param(inline)]
    order: Order,
    /// `log` (default): every entry of the room's log; `state`: messages only, each in its
    /// current state.
    #[serde(default)]
    #[param(inline)]
    view: View,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum View {
    #[default]
    Log,
    State,
}

#[derive(Serialize, ToSchema)]
pub struct HistoryPageBody {
    /// Log entries (`view=log`), or messages in their current state (`view=state`: with
    /// `editedAt`, `deletedAt`, `reactions` and `reply`).
    #[schema(value_type = Vec<MessageState>)]
    messages: HistoryEntries,
    /// More messages match beyond this page.
    more: bool,
}

/// The entries of a page, in the view asked for.
#[derive(Serialize)]
#[serde(untagged)]
enum HistoryEntries {
    Log(Vec<Message>),
    State(Vec<MessageState>),
}

/// Seqs beyond what a store holds are refused rather than wrapped.
fn check_seq(name: &str, seq: Option<Seq>) -> ApiResult<Option<Seq>> {
    match seq {
        Some(seq) if seq > MAX_SEQ => Err(ApiError::new(
            ErrorCode::BadField,
            format!("{name}: a seq is at most {MAX_SEQ}"),
        )),
        _ => Ok(seq),
    }
}

fn parse_time(name: &str, value: Option<String>) -> ApiResult<Option<DateTime<Utc>>> {
    value
        .map(|v| {
            DateTime::parse_from_rfc3339(&v)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|e| ApiError::new(ErrorCode::BadField, format!("{name}: {e}")))
        })
        .transpose()
}

/// A page of a room's history, by seq and/or time.
#[utoipa::path(get, path = "/v1/rooms/{room}/messages", tag = "messages",
    params(("room" = String, Path, description = "room id"), HistoryParams),
    responses((status = 200, body = HistoryPageBody), CommonErrors))]
pub async fn history(
    State(node): State<Arc<Node>>,
    AuthUser(user): AuthUser,
    ApiPath(room): ApiPath<String>,
    ApiQuery(params): ApiQuery<HistoryParams>,
) -> ApiResult<Json<HistoryPageBody>> {
    let query = HistoryQuery {
        after: check_seq("after", params.after)?,
        before: check_seq("before", params.before)?,
        since: parse_time("since", params.since)?,
        until: parse_time("until", params.until)?,
        order: params.order,
        limit: params.limit.unwrap_or(DEFAULT_PAGE),
        entries: Entries::All,
    };
    let (messages, more) = match params.view {
        View::Log => {
            let page = node.chat.history(&user, &room, query).await?;
            (HistoryEntries::Log(page.messages), page.more)
        }
        View::State => {
            let page = node.chat.history_state(&user, &room, query).await?;
            (HistoryEntries::State(page.messages), page.more)
        }
    };
    Ok(Json(HistoryPageBody { messages, more }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PostMessage {
    /// Chosen by the client, unique per room and sender: a retry with the same one is safe.
    #[schema(pattern = "^[!-~]{1,64}$")]
    client_msg_id: String,
    /// Not only whitespace; at most `limits.max_text_chars` characters.
    #[schema(min_length = 1, pattern = "\\S")]
    text: String,
    /// The seq of the message this one answers.
    #[schema(minimum = 1, maximum = 9223372036854775807_i64)]
    reply_to: Option<Seq>,
}

/// The same pipeline as a WebSocket `send`, for bots and backends.
#[utoipa::path(post, path = "/v1/rooms/{room}/messages", tag = "messages", request_body = PostMessage,
    params(("room" = String, Path, description = "room id")),
    responses(
        (status = 201, description = "stored", body = Message),
        (status = 200, description = "a retry: the message stored before", body = Message),
        CommonErrors))]
pub async fn post_message(
    State(node): State<Arc<Node>>,
    AuthUser(user): AuthUser,
    ApiPath(room): ApiPath<String>,
    ApiJson(body): ApiJson<PostMessage>,
) -> ApiResult<(StatusCode, Json<Message>)> {
    node.limits
        .sends
        .check(&user)
        .map_err(|w| ApiError::rate_limited(w, "sends"))?;
    let message = Write::Message {
        text: &body.text,
        reply_to: check_seq("replyTo", body.reply_to)?,
    };
    let appended = node
        .chat
        .write(&user, &room, &body.client_msg_id, message)
        .await?;
    let status = if appended.duplicate {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(appended.message)))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MarkRead {
    #[schema(minimum = 0, maximum = 9223372036854775807_i64)]
    seq: Seq,
    /// Clears the caller's own unread count without telling the members.
    #[serde(default)]
    private: bool,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReadPosition {
    read_seq: Seq,
}

/// Moves the caller's read position forward (never back, never past the newest message);
/// members hear of it only if it moved. Limited per user (`limits.reads_per_second`).
#[utoipa::path(post, path = "/v1/rooms/{room}/read", tag = "rooms", request_body = MarkRead,
    params(("room" = String, Path, description = "room id")),
    responses((status = 200, body = ReadPosition), CommonErrors))]
pub async fn mark_read(
    State(node): State<Arc<Node>>,
    AuthUser(user): AuthUser,
    ApiPath(room): ApiPath<String>,
    ApiJson(body): ApiJson<MarkRead>,
) -> ApiResult<Json<ReadPosition>> {
    node.limits
        .reads
        .check(&user)
        .map_err(|w| ApiError::rate_limited(w, "reads"))?;
    let seq = check_seq("seq", Some(body.seq))?.unwrap_or_default();
    let mark = if body.private {
        Mark::PrivateRead
    } else {
        Mark::Read
    };
    let read_seq = node.chat.mark(&user, &room, mark, seq).await?;
    Ok(Json(ReadPosition { read_seq }))
}

/// The members' presence: each member's state for direct rooms and groups up to
/// `presence.roster_max_members`, only the counts for larger groups.
#[utoipa::path(get, path = "/v1/rooms/{room}/presence", tag = "rooms",
    params(("room" = String, Path, description = "room id")),
    responses((status = 200, body = RoomPresence), CommonErrors))]
pub async fn presence(
    State(node): State<Arc<Node>>,
    AuthUser(user): AuthUser,
    ApiPath(room): ApiPath<String>,
) -> ApiResult<Json<RoomPresence>> {
    // It reads every member's record: it costs like a read.
    node.limits
        .reads
        .check(&user)
        .map_err(|w| ApiError::rate_limited(w, "reads"))?;
    Ok(Json(node.chat.presence(&user, &room).await?))
}

#[derive(Serialize, ToSchema)]
pub struct Receipts {
    members: Vec<MemberReceipt>,
}

/// Every member's public delivered and read positions (private reads not included).
#[utoipa::path(get, path = "/v1/rooms/{room}/receipts", tag = "rooms",
    params(("room" = String, Path, description = "room id")),
    responses((status = 200, body = Receipts), CommonErrors))]
pub async fn receipts(
    State(node): State<Arc<Node>>,
    AuthUser(user): AuthUser,
    ApiPath(room): ApiPath<String>,
) -> ApiResult<Json<Receipts>> {
    let members = node.chat.receipts(&user, &room).await?;
    Ok(Json(Receipts { members }))
}
