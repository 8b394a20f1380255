//! Rooms, members, history and read positions. Room ids in paths that are malformed, unknown
//! or not the caller's all answer 404 `room_not_found`, so nothing leaks about other rooms.

use std::sync::Arc;

use axum::{
    Json,
    extract::{Path, State},
    http::StatusCode,
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{ApiError, ApiJson, ApiQuery, AuthUser};
use crate::{
    chat::DEFAULT_PAGE,
    domain::{Message, Room, RoomSummary, Seq},
    protocol::ErrorCode,
    startup::Node,
    store::{HistoryQuery, Order},
};

type ApiResult<T> = Result<T, ApiError>;

pub async fn list(
    State(node): State<Arc<Node>>,
    AuthUser(user): AuthUser,
) -> ApiResult<Json<Vec<RoomSummary>>> {
    Ok(Json(node.chat.list_rooms(&user).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenDirect {
    peer: String,
}

/// 201 when the room was created by this call, 200 when it already existed.
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateGroup {
    name: String,
    #[serde(default)]
    members: Vec<String>,
}

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

pub async fn get(
    State(node): State<Arc<Node>>,
    AuthUser(user): AuthUser,
    Path(room): Path<String>,
) -> ApiResult<Json<Room>> {
    Ok(Json(node.chat.room(&user, &room).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddMembers {
    members: Vec<String>,
}

pub async fn add_members(
    State(node): State<Arc<Node>>,
    AuthUser(user): AuthUser,
    Path(room): Path<String>,
    ApiJson(body): ApiJson<AddMembers>,
) -> ApiResult<Json<Room>> {
    Ok(Json(
        node.chat.add_members(&user, &room, &body.members).await?,
    ))
}

pub async fn remove_member(
    State(node): State<Arc<Node>>,
    AuthUser(user): AuthUser,
    Path((room, target)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    node.chat.remove_member(&user, &room, &target).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryParams {
    after: Option<Seq>,
    before: Option<Seq>,
    /// RFC 3339; inclusive.
    since: Option<String>,
    /// RFC 3339; exclusive.
    until: Option<String>,
    limit: Option<usize>,
    #[serde(default)]
    order: Order,
}

#[derive(Serialize)]
pub struct HistoryPageBody {
    messages: Vec<Message>,
    /// More messages match beyond this page.
    more: bool,
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

pub async fn history(
    State(node): State<Arc<Node>>,
    AuthUser(user): AuthUser,
    Path(room): Path<String>,
    ApiQuery(params): ApiQuery<HistoryParams>,
) -> ApiResult<Json<HistoryPageBody>> {
    let query = HistoryQuery {
        after: params.after,
        before: params.before,
        since: parse_time("since", params.since)?,
        until: parse_time("until", params.until)?,
        order: params.order,
        limit: params.limit.unwrap_or(DEFAULT_PAGE),
    };
    let page = node.chat.history(&user, &room, query).await?;
    Ok(Json(HistoryPageBody {
        messages: page.messages,
        more: page.more,
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PostMessage {
    client_msg_id: String,
    text: String,
}

/// The same pipeline as a WebSocket `send`, for bots and backends. 201 for a new message,
/// 200 for a retry of a stored one.
pub async fn post_message(
    State(node): State<Arc<Node>>,
    AuthUser(user): AuthUser,
    Path(room): Path<String>,
    ApiJson(body): ApiJson<PostMessage>,
) -> ApiResult<(StatusCode, Json<Message>)> {
    node.sends.check(&user).map_err(ApiError::rate_limited)?;
    let appended = node
        .chat
        .send(&user, &room, &body.client_msg_id, &body.text)
        .await?;
    let status = if appended.duplicate {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(appended.message)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MarkRead {
    seq: Seq,
}

pub async fn mark_read(
    State(node): State<Arc<Node>>,
    AuthUser(user): AuthUser,
    Path(room): Path<String>,
    ApiJson(body): ApiJson<MarkRead>,
) -> ApiResult<Json<serde_json::Value>> {
    let read_seq = node.chat.mark_read(&user, &room, body.seq).await?;
    Ok(Json(json!({"readSeq": read_seq})))
}

pub async fn presence(
    State(node): State<Arc<Node>>,
    AuthUser(user): AuthUser,
    Path(room): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    let members = node.chat.presence(&user, &room).await?;
    Ok(Json(json!({"members": members})))
}
