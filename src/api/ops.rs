//! Operations and identity: health, readiness, metrics, the dev login, "who am I".

use std::{sync::Arc, time::Duration};

use axum::{
    Json,
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use super::{ApiError, ApiJson, AuthUser, openapi::ErrorBody};
use crate::{domain::UserId, protocol::ErrorCode, state::Node, telemetry};

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "operations", security(()),
    responses((status = 200, body = Object, example = json!({"status": "ok"}))))]
pub async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// Readiness: the store and the bus answer. A load balancer sends no new clients otherwise,
/// and none to a node that is draining.
#[utoipa::path(get, path = "/readyz", tag = "operations", security(()),
    responses(
        (status = 200, body = Object, example = json!({"status": "ready", "store": "ok", "bus": "ok", "node": "node1"})),
        (status = 503, body = Object, example = json!({"status": "unavailable", "store": "unavailable", "bus": "ok", "node": "node1"}))))]
pub async fn readyz(State(node): State<Arc<Node>>) -> Response {
    let within = Duration::from_secs(2);
    let store = tokio::time::timeout(within, node.store.ping()).await;
    let bus = tokio::time::timeout(within, node.bus.ping()).await;
    let describe = |ok: bool| if ok { "ok" } else { "unavailable" };
    let store_ok = matches!(store, Ok(Ok(())));
    let bus_ok = matches!(bus, Ok(Ok(())));
    let draining = node.shutdown.is_cancelled();
    let ready = store_ok && bus_ok && !draining;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "status": if ready { "ready" } else if draining { "draining" } else { "unavailable" },
        "store": describe(store_ok),
        "bus": describe(bus_ok),
        "node": node.id,
    });
    (status, Json(body)).into_response()
}

pub async fn metrics() -> String {
    telemetry::render_metrics()
}

#[derive(Serialize, ToSchema)]
pub struct Me {
    user: UserId,
}

/// Who the token says the caller is.
#[utoipa::path(get, path = "/v1/me", tag = "operations",
    responses((status = 200, body = Me), (status = 401, body = ErrorBody)))]
pub async fn me(AuthUser(user): AuthUser) -> Json<Me> {
    Json(Me { user })
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DevLogin {
    #[schema(pattern = "^[A-Za-z0-9_.@-]{1,64}$")]
    user: String,
}

#[derive(Serialize, ToSchema)]
pub struct DevToken {
    token: String,
    user: UserId,
}

/// Development only: a token for any user name. The route does not exist (404) when
/// `auth.dev_login` is off.
#[utoipa::path(post, path = "/v1/dev/login", tag = "operations", security(()), request_body = DevLogin,
    responses(
        (status = 200, body = DevToken),
        (status = 400, body = ErrorBody),
        (status = 404, description = "the dev login is disabled", body = ErrorBody),
        (status = 413, body = ErrorBody)))]
pub async fn dev_login(
    State(node): State<Arc<Node>>,
    ApiJson(body): ApiJson<DevLogin>,
) -> Result<Json<DevToken>, ApiError> {
    let user = UserId::parse(&body.user)
        .map_err(|e| ApiError::new(ErrorCode::BadField, format!("user: {e}")))?;
    let ttl = Duration::from_secs(node.settings.auth.dev_token_ttl_secs);
    let token = node.auth.mint(&user, ttl);
    Ok(Json(DevToken { token, user }))
}
