//! The admin API, under `/v1/admin/`, for operators: this node, every node of the cluster,
//! draining, disconnecting a user everywhere (their tokens issued before a time refused from
//! then on), and why a user shows online. It exists only when `admin.token` is set, and
//! every route needs that token as a bearer token (compared in constant time). Not in the
//! OpenAPI document: it is not for apps (docs/protocol.md, "Admin API").

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::{FromRequestParts, State},
    http::{StatusCode, header::AUTHORIZATION, request::Parts},
    routing::{get, post},
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::Digest;
use subtle::ConstantTimeEq;

use super::{ApiError, ApiJson, ApiPath};
use crate::{
    auth::token_from_authorization,
    bus::{BusEvent, Topic},
    domain::{UserId, timestamp},
    nodes::NodeInfo,
    protocol::ErrorCode,
    state::Node,
};

type ApiResult<T> = Result<T, ApiError>;

pub fn routes() -> Router<Arc<Node>> {
    Router::new()
        .route("/v1/admin/node", get(this_node))
        .route("/v1/admin/nodes", get(nodes))
        .route("/v1/admin/drain", post(drain))
        .route("/v1/admin/users/{user}/disconnect", post(disconnect))
        .route("/v1/admin/users/{user}/presence", get(presence))
}

/// An operator: the request carries `admin.token`.
pub struct Admin;

impl FromRequestParts<Arc<Node>> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, node: &Arc<Node>) -> Result<Self, ApiError> {
        let wanted = node.settings.admin.token.as_bytes();
        let given = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(token_from_authorization)
            .unwrap_or_default()
            .as_bytes();
        // Digests, so that the comparison takes the same time whatever the lengths.
        let digest = |token: &[u8]| sha2::Sha256::digest(token);
        if !wanted.is_empty() && bool::from(digest(given).ct_eq(&digest(wanted))) {
            return Ok(Admin);
        }
        Err(ApiError::new(
            ErrorCode::Unauthorized,
            "the admin API needs 'Authorization: Bearer <admin.token>'",
        ))
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ThisNode {
    #[serde(flatten)]
    node: NodeInfo,
    uptime_secs: i64,
    /// Rooms with at least one member connected here.
    rooms: usize,
    /// Users with at least one connection here.
    users: usize,
}

async fn this_node(State(node): State<Arc<Node>>, _: Admin) -> Json<ThisNode> {
    let info = node.info();
    Json(ThisNode {
        uptime_secs: (node.clock.now() - info.started_at).num_seconds(),
        rooms: node.hub.room_count(),
        users: node.hub.user_count(),
        node: info,
    })
}

#[derive(Serialize)]
struct Nodes {
    nodes: Vec<NodeInfo>,
}

async fn nodes(State(node): State<Arc<Node>>, _: Admin) -> ApiResult<Json<Nodes>> {
    let nodes = node.directory.nodes().await.map_err(unavailable)?;
    Ok(Json(Nodes { nodes }))
}

/// Starts this node's orderly stop (as SIGTERM does): its connections are told to reconnect
/// elsewhere (1012), and the process exits after `server.shutdown_grace_ms` at most.
async fn drain(State(node): State<Arc<Node>>, _: Admin) -> (StatusCode, Json<NodeInfo>) {
    tracing::info!(node = %node.id, "drain asked by an operator");
    node.shutdown.cancel();
    (StatusCode::ACCEPTED, Json(node.info()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Disconnect {
    /// Tokens issued before this are refused (default: now).
    #[serde(default, with = "timestamp::option")]
    before: Option<DateTime<Utc>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Disconnected {
    user: UserId,
    #[serde(with = "timestamp")]
    revoked_before: DateTime<Utc>,
}

/// Closes the user's connections on every node (4403) whose token was issued before
/// `before`, and refuses such tokens from now on.
async fn disconnect(
    State(node): State<Arc<Node>>,
    _: Admin,
    ApiPath(user): ApiPath<String>,
    ApiJson(body): ApiJson<Disconnect>,
) -> ApiResult<Json<Disconnected>> {
    let user = parse_user(&user)?;
    let before = body.before.unwrap_or_else(|| node.clock.now());
    let revoked_before = node
        .hub
        .revocations
        .revoke(&user, before)
        .await
        .map_err(crate::chat::ChatError::Store)?;
    let event = BusEvent::Revoked {
        before: revoked_before,
    };
    node.bus
        .publish(&Topic::User(user.clone()), event.encode())
        .await
        .map_err(|e| crate::chat::ChatError::Bus(e.to_string()))?;
    tracing::info!(user = %user, before = %timestamp::format(&revoked_before), "user disconnected by an operator");
    Ok(Json(Disconnected {
        user,
        revoked_before,
    }))
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Connection {
    node: String,
    /// The connection's id on that node.
    conn: String,
    #[serde(with = "timestamp")]
    active_at: DateTime<Utc>,
    /// Whether that node is in the directory (alive, as far as the cluster knows).
    node_alive: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WhyOnline {
    user: UserId,
    /// What contacts see, and its version.
    shown: crate::domain::PresenceState,
    v: u64,
    hidden: bool,
    connections: Vec<Connection>,
    /// A dropped connection keeps the user shown as they were until then.
    #[serde(default, with = "timestamp::option")]
    grace_until: Option<DateTime<Utc>>,
    #[serde(default, with = "timestamp::option")]
    last_seen: Option<DateTime<Utc>>,
}

/// The presence registry's record of the user: which connections, on which nodes, when
/// last active, and whether those nodes are alive.
async fn presence(
    State(node): State<Arc<Node>>,
    _: Admin,
    ApiPath(user): ApiPath<String>,
) -> ApiResult<Json<WhyOnline>> {
    let user = parse_user(&user)?;
    let record = node
        .presence
        .record(&user)
        .await
        .map_err(|e| crate::chat::ChatError::Bus(format!("presence registry: {e}")))?;
    let alive: Vec<String> = node
        .directory
        .nodes()
        .await
        .map_err(unavailable)?
        .into_iter()
        .map(|n| n.id)
        .collect();
    let at = crate::domain::timestamp::from_millis;
    let connections = record
        .conns
        .iter()
        .map(|(key, entry)| Connection {
            conn: key
                .strip_prefix(&format!("{}:", entry.node))
                .unwrap_or(key)
                .to_owned(),
            node_alive: alive.contains(&entry.node),
            node: entry.node.clone(),
            active_at: at(entry.active_at),
        })
        .collect();
    Ok(Json(WhyOnline {
        user,
        shown: record.shown.state,
        v: record.v,
        hidden: record.hidden,
        connections,
        grace_until: record.grace_until.map(at),
        last_seen: record.last_seen.map(at),
    }))
}

fn parse_user(user: &str) -> ApiResult<UserId> {
    UserId::parse(user).map_err(|e| ApiError::new(ErrorCode::BadField, format!("user: {e}")))
}

fn unavailable(e: crate::nodes::DirectoryError) -> ApiError {
    crate::chat::ChatError::Bus(e.to_string()).into()
}
