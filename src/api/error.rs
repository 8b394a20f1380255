//! REST errors: an HTTP status and a JSON body `{"error": {"code", "message"}}` whose `code`
//! is the same stable [`ErrorCode`] a WebSocket `error` frame carries.

use std::time::Duration;

use axum::{
    Json,
    http::{StatusCode, header::RETRY_AFTER},
    response::{IntoResponse, Response},
};
use serde_json::json;

use crate::{auth::AuthError, chat::ChatError, protocol::ErrorCode};

#[derive(Debug)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    /// For `rate_limited`: when a retry will be accepted (also sent as `Retry-After`).
    pub retry_after: Option<Duration>,
    /// For internal codes: the id under which the detail was logged.
    pub request_id: Option<String>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            retry_after: None,
            request_id: None,
        }
    }

    /// A request over the user's `kind` of limit (`sends`, `reads`, `resumes`).
    pub fn rate_limited(wait: Duration, kind: &'static str) -> Self {
        metrics::counter!("chatd_rate_limited_total", "kind" => kind).increment(1);
        Self {
            retry_after: Some(wait),
            ..Self::new(ErrorCode::RateLimited, "too many requests; retry later")
        }
    }
}

/// The HTTP status of a REST answer with `code` (the protocol crate's table).
pub fn status_of(code: ErrorCode) -> StatusCode {
    code.http_status()
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::BAD_REQUEST)
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut error = json!({"code": self.code, "message": self.message});
        if let Some(id) = &self.request_id {
            error["requestId"] = json!(id);
        }
        let mut response = match self.retry_after {
            Some(wait) => {
                let ms = wait.as_millis().max(1) as u64;
                error["retryAfterMs"] = json!(ms);
                let seconds = ms.div_ceil(1000).to_string();
                let body = Json(json!({ "error": error }));
                ([(RETRY_AFTER, seconds)], body).into_response()
            }
            None => Json(json!({ "error": error })).into_response(),
        };
        *response.status_mut() = status_of(self.code);
        response
    }
}

impl From<ChatError> for ApiError {
    fn from(e: ChatError) -> Self {
        let public = e.public();
        Self {
            request_id: public.request_id,
            ..Self::new(public.code, public.message)
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        let code = match e {
            AuthError::Expired => ErrorCode::TokenExpired,
            AuthError::Unavailable(_) => {
                let cause = crate::store::StoreError::Unavailable(e.to_string());
                return crate::chat::ChatError::Store(cause).into();
            }
            _ => ErrorCode::Unauthorized,
        };
        Self::new(code, e.to_string())
    }
}
