//! Push notifications: what the deployment offers, the caller's devices, and their ledger
//! (docs/protocol.md, "Push notifications").

use std::sync::Arc;

use axum::{Json, extract::State, http::StatusCode};
use serde::{Deserialize, Serialize};

use super::{ApiError, ApiJson, ApiPath, ApiQuery, AuthUser, openapi::CommonErrors};
use crate::{
    chat::ChatError,
    domain::RoomId,
    push::{
        PushOffer,
        devices::{DeviceView, Registration},
    },
    state::Node,
    store::push::LedgerEntry,
};

const MAX_LEDGER_PAGE: usize = 200;
const DEFAULT_LEDGER_PAGE: usize = 50;

/// Which notifications this deployment sends: the Web Push key browsers subscribe with,
/// whether there is a gateway, whether notifications carry text.
#[utoipa::path(get, path = "/v1/push", tag = "push",
    responses((status = 200, body = PushOffer), CommonErrors))]
pub async fn offer(State(node): State<Arc<Node>>, AuthUser(_caller): AuthUser) -> Json<PushOffer> {
    Json(node.push.offer())
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Devices {
    devices: Vec<DeviceView>,
}

/// The caller's devices, oldest first.
#[utoipa::path(get, path = "/v1/me/devices", tag = "push",
    responses((status = 200, body = Devices), CommonErrors))]
pub async fn devices(
    State(node): State<Arc<Node>>,
    AuthUser(user): AuthUser,
) -> Result<Json<Devices>, ApiError> {
    Ok(Json(Devices {
        devices: node.push.devices(&user).await?,
    }))
}

/// Registers a device of the caller's: 201 when new, 200 when they had registered it.
#[utoipa::path(post, path = "/v1/me/devices", tag = "push", request_body = Registration,
    responses((status = 201, body = DeviceView), (status = 200, body = DeviceView), CommonErrors))]
pub async fn register(
    State(node): State<Arc<Node>>,
    AuthUser(user): AuthUser,
    ApiJson(registration): ApiJson<Registration>,
) -> Result<(StatusCode, Json<DeviceView>), ApiError> {
    let (device, created) = node.push.register(&user, registration).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(device)))
}

/// Removes a device of the caller's.
#[utoipa::path(delete, path = "/v1/me/devices/{id}", tag = "push",
    params(("id" = String, Path)),
    responses((status = 204), CommonErrors))]
pub async fn remove(
    State(node): State<Arc<Node>>,
    AuthUser(user): AuthUser,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    node.push.remove(&user, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct LedgerQuery {
    /// 1 to 200 (default 50).
    limit: Option<usize>,
    /// Only this room's.
    room: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Notifications {
    notifications: Vec<LedgerEntry>,
}

/// Why the caller got (or did not get) a notification of each recent message.
#[utoipa::path(get, path = "/v1/me/notifications", tag = "push", params(LedgerQuery),
    responses((status = 200, body = Notifications), CommonErrors))]
pub async fn notifications(
    State(node): State<Arc<Node>>,
    AuthUser(user): AuthUser,
    ApiQuery(query): ApiQuery<LedgerQuery>,
) -> Result<Json<Notifications>, ApiError> {
    let limit = query.limit.unwrap_or(DEFAULT_LEDGER_PAGE);
    if !(1..=MAX_LEDGER_PAGE).contains(&limit) {
        return Err(ChatError::bad_field(format!("limit must be 1 to {MAX_LEDGER_PAGE}")).into());
    }
    let room = match query.room.as_deref() {
        None => None,
        Some(room) => {
            Some(RoomId::parse(room).map_err(|_| ChatError::bad_field("room is not a room id"))?)
        }
    };
    let notifications = node
        .store
        .ledger(&user, room.as_ref(), limit)
        .await
        .map_err(ChatError::from)?;
    Ok(Json(Notifications { notifications }))
}
