//! Extractors that answer bad input with an [`ApiError`] (JSON body, stable code) instead of
//! axum's plain-text rejections.

use std::sync::Arc;

use axum::{
    extract::{
        FromRequest, FromRequestParts, Json, Path, Query, Request,
        rejection::{JsonRejection, PathRejection, QueryRejection},
    },
    http::{StatusCode, header::AUTHORIZATION, request::Parts},
};
use serde::de::DeserializeOwned;

use super::ApiError;
use crate::{
    auth::{AuthError, token_from_authorization},
    domain::UserId,
    protocol::ErrorCode,
    state::Node,
};

/// The caller, from `Authorization: Bearer <token>`.
pub struct AuthUser(pub UserId);

impl FromRequestParts<Arc<Node>> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, node: &Arc<Node>) -> Result<Self, ApiError> {
        let token = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(token_from_authorization)
            .ok_or(AuthError::Missing)?;
        Ok(AuthUser(node.authenticate(token).await?.user))
    }
}

/// Path parameters. Every parameterized route names a room, so a path that cannot be
/// decoded (invalid UTF-8, say) names no room: 404 `room_not_found`, like an unknown one.
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(v)| ApiPath(v))
            .map_err(|_: PathRejection| ApiError::new(ErrorCode::RoomNotFound, "room not found"))
    }
}

/// A JSON body.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(value)) => Ok(ApiJson(value)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    let message = rejection.body_text();
    let code = match &rejection {
        _ if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => ErrorCode::PayloadTooLarge,
        JsonRejection::JsonDataError(_) => ErrorCode::BadField,
        JsonRejection::JsonSyntaxError(_) => ErrorCode::BadJson,
        _ => ErrorCode::BadRequest,
    };
    ApiError::new(code, message)
}

/// Query parameters.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(v)| ApiQuery(v))
            .map_err(|r: QueryRejection| ApiError::new(ErrorCode::BadField, r.body_text()))
    }
}
