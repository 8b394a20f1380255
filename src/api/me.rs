//! The caller's own settings.

use std::sync::Arc;

use axum::{Json, extract::State};

use super::{ApiError, ApiJson, AuthUser, openapi::CommonErrors};
use crate::{state::Node, store::UserSettings};

/// The caller's settings.
#[utoipa::path(get, path = "/v1/me/settings", tag = "me",
    responses((status = 200, body = UserSettings), CommonErrors))]
pub async fn settings(
    State(node): State<Arc<Node>>,
    AuthUser(user): AuthUser,
) -> Result<Json<UserSettings>, ApiError> {
    Ok(Json(node.chat.settings(&user).await?))
}

/// Replaces the caller's settings; `hidePresence` takes effect at once for every contact.
#[utoipa::path(put, path = "/v1/me/settings", tag = "me", request_body = UserSettings,
    responses((status = 200, body = UserSettings), CommonErrors))]
pub async fn update_settings(
    State(node): State<Arc<Node>>,
    AuthUser(user): AuthUser,
    ApiJson(settings): ApiJson<UserSettings>,
) -> Result<Json<UserSettings>, ApiError> {
    Ok(Json(node.chat.update_settings(&user, settings).await?))
}
