//! The REST API (JSON) and the router that puts it beside the WebSocket gateway.
//! Every route but the health checks, metrics and static files needs a bearer token.

use std::{sync::Arc, time::Duration};

use axum::{
    Router,
    extract::{DefaultBodyLimit, Request, State},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{delete, get, post, put},
};
use tower_http::trace::TraceLayer;

use crate::{gateway, protocol::ErrorCode, state::Node};

mod admin;
mod error;
mod extract;
mod me;
mod openapi;
mod ops;
mod push;
mod rooms;
mod web;

pub use error::{ApiError, status_of};
pub use extract::{ApiJson, ApiPath, ApiQuery, AuthUser};
pub use openapi::ApiDoc;

pub fn router(node: Arc<Node>) -> Router {
    let max_body = node.settings.limits.max_body_bytes;
    let mut router = Router::new();
    // A route that is switched off does not exist: it reads nothing and answers 404.
    if node.settings.auth.dev_login {
        router = router.route("/v1/dev/login", post(ops::dev_login));
    }
    if !node.settings.admin.token.is_empty() {
        router = router.merge(admin::routes());
    }
    router
        .route("/ws", get(gateway::upgrade))
        .route("/v1/rooms", get(rooms::list).post(rooms::create_group))
        .route("/v1/rooms/direct", post(rooms::open_direct))
        .route("/v1/rooms/{room}", get(rooms::get))
        .route("/v1/rooms/{room}/members", post(rooms::add_members))
        .route(
            "/v1/rooms/{room}/members/{user}",
            delete(rooms::remove_member),
        )
        .route("/v1/rooms/{room}/members/{user}/role", put(rooms::set_role))
        .route(
            "/v1/rooms/{room}/messages",
            get(rooms::history).post(rooms::post_message),
        )
        .route("/v1/rooms/{room}/read", post(rooms::mark_read))
        .route("/v1/rooms/{room}/presence", get(rooms::presence))
        .route("/v1/rooms/{room}/receipts", get(rooms::receipts))
        .route("/v1/me", get(ops::me))
        .route(
            "/v1/me/settings",
            get(me::settings).put(me::update_settings),
        )
        .route("/v1/push", get(push::offer))
        .route("/v1/me/devices", get(push::devices).post(push::register))
        .route("/v1/me/devices/{id}", delete(push::remove))
        .route("/v1/me/notifications", get(push::notifications))
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
        .layer(middleware::from_fn_with_state(
            node.clone(),
            request_deadline,
        ))
        .layer(node.origins.cors())
        .layer(TraceLayer::new_for_http().make_span_with(request_span))
        .with_state(node)
}

/// The span of one HTTP request: method and path, never the query string (a WebSocket
/// URL carries its token there) nor headers (they carry tokens too).
fn request_span(request: &Request) -> tracing::Span {
    tracing::debug_span!(
        "request",
        method = %request.method(),
        path = %request.uri().path(),
    )
}

/// The whole request, its body included, within `server.request_timeout_ms` (headers alone
/// are bounded by the HTTP server's handshake deadline): a client that trickles its body
/// holds a connection for that long at most. Answered 408 `request_timeout`; the
/// connection is then closed.
async fn request_deadline(State(node): State<Arc<Node>>, request: Request, next: Next) -> Response {
    let limit = Duration::from_millis(node.settings.server.request_timeout_ms);
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            let mut response = ApiError::new(
                ErrorCode::RequestTimeout,
                "the request took too long to arrive",
            )
            .into_response();
            response.headers_mut().insert(
                axum::http::header::CONNECTION,
                axum::http::HeaderValue::from_static("close"),
            );
            response
        }
    }
}
