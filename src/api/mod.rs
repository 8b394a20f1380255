//! The REST API (JSON) and the router that puts it beside the WebSocket gateway.
//! Every route but the health checks, metrics and static files needs a bearer token.

use std::sync::Arc;

use axum::{
    Router,
    extract::DefaultBodyLimit,
    routing::{delete, get, post},
};
use tower_http::trace::TraceLayer;

use crate::{gateway, protocol::ErrorCode, startup::Node};

mod error;
mod extract;
mod openapi;
mod ops;
mod rooms;
mod web;

pub use error::{ApiError, status_of};
pub use extract::{ApiJson, ApiQuery, AuthUser};
pub use openapi::ApiDoc;

pub fn router(node: Arc<Node>) -> Router {
    let max_body = node.settings.limits.max_body_bytes;
    Router::new()
        .route("/ws", get(gateway::upgrade))
        .route("/v1/rooms", get(rooms::list).post(rooms::create_group))
        .route("/v1/rooms/direct", post(rooms::open_direct))
        .route("/v1/rooms/{room}", get(rooms::get))
        .route("/v1/rooms/{room}/members", post(rooms::add_members))
        .route(
            "/v1/rooms/{room}/members/{user}",
            delete(rooms::remove_member),
        )
        .route(
            "/v1/rooms/{room}/messages",
            get(rooms::history).post(rooms::post_message),
        )
        .route("/v1/rooms/{room}/read", post(rooms::mark_read))
        .route("/v1/rooms/{room}/presence", get(rooms::presence))
        .route("/v1/me", get(ops::me))
        .route("/v1/dev/login", post(ops::dev_login))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route("/openapi.json", get(openapi::document))
        .merge(web::routes())
        .fallback(|| async { ApiError::new(ErrorCode::NotFound, "no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                ErrorCode::MethodNotAllowed,
                "method not allowed on this route",
            )
        })
        .layer(DefaultBodyLimit::max(max_body))
        .layer(TraceLayer::new_for_http())
        .with_state(node)
}
