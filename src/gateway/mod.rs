//! The WebSocket gateway: `GET /ws` upgrades, then one [`connection`] task reads and one
//! [`writer`] task writes. The token is checked before anything else; a bad one gets an
//! `error` frame and close code 4401/4402, which a browser can read (an HTTP 401 on the
//! upgrade would reach browser code only as an anonymous failure).

use std::sync::Arc;

use axum::{
    extract::{
        State,
        ws::{WebSocketUpgrade, rejection::WebSocketUpgradeRejection},
    },
    http::{HeaderMap, header::SEC_WEBSOCKET_PROTOCOL},
    response::{IntoResponse, Response},
};
use serde::Deserialize;

use crate::{
    api::{ApiError, ApiQuery},
    auth::{AuthError, token_from_subprotocols},
    protocol::{ErrorCode, SUBPROTOCOL},
    state::Node,
};

mod admission;
pub mod connection;
pub mod order;
mod resume;
pub mod writer;

pub use admission::{Admitted, Refusal};

#[derive(Debug, Deserialize)]
pub struct ConnectParams {
    token: Option<String>,
}

pub async fn upgrade(
    State(node): State<Arc<Node>>,
    ApiQuery(params): ApiQuery<ConnectParams>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let ws = match ws {
        Ok(ws) => ws,
        Err(rejection) => {
            return ApiError::new(ErrorCode::BadRequest, rejection.body_text()).into_response();
        }
    };
    // Browsers send any page's Origin to any WebSocket (no CORS): refused here, before the
    // token is even looked at.
    if !node.origins.allow(&headers) {
        tracing::info!(origin = ?headers.get(axum::http::header::ORIGIN), "websocket origin refused");
        return ApiError::new(ErrorCode::Forbidden, "this origin may not connect").into_response();
    }
    let subprotocol_token = headers
        .get(SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok())
        .and_then(token_from_subprotocols)
        .map(str::to_owned);
    let verified = match params.token.or(subprotocol_token) {
        Some(token) => node.authenticate(&token).await,
        None => Err(AuthError::Missing),
    };
    let limits = &node.settings.limits;
    // The slot is reserved before the upgrade, so concurrent handshakes cannot overshoot.
    let admission = match verified {
        Err(e) => Err(Refusal::Auth(e)),
        Ok(verified) => match node.hub.reserve(
            &verified.user,
            limits.max_connections,
            limits.max_connections_per_user,
        ) {
            Ok(slot) => Ok(Admitted { verified, slot }),
            Err(why) => Err(Refusal::Full(verified.user, why)),
        },
    };
    ws.protocols([SUBPROTOCOL])
        .read_buffer_size(node.settings.websocket.read_buffer_bytes)
        // The writer task feeds what is queued and flushes once (see `writer`): at most
        // WRITE_BUFFER_BYTES gather before a write, and a hard cap above that.
        .write_buffer_size(writer::WRITE_BUFFER_BYTES)
        .max_write_buffer_size(writer::WRITE_BUFFER_BYTES + limits.max_frame_bytes * 2)
        .max_message_size(limits.max_frame_bytes)
        .max_frame_size(limits.max_frame_bytes)
        .on_failed_upgrade(|e| tracing::debug!(error = %e, "websocket upgrade failed"))
        .on_upgrade(move |socket| {
            // Every log line of the connection says where and whose (its id once it has one).
            let user = match &admission {
                Ok(admitted) => admitted.verified.user.to_string(),
                Err(_) => String::new(),
            };
            let span = tracing::info_span!(
                "conn", node = %node.id, user = %user, conn = tracing::field::Empty
            );
            tracing::Instrument::instrument(connection::serve(socket, node, admission), span)
        })
}
