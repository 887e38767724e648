//! Errors as JSON responses, and extractors that report bad input as such.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::DeserializeOwned;
use serde_json::json;
use sundial_core::Error;

/// An error answer: status, a stable code and a message for people.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    /// An error with this status, code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    /// 422: a field of the request is not valid.
    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", message)
    }

    /// 404 for an unknown job id.
    pub(crate) fn job_not_found(id: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no job with id '{id}'"),
        )
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The stable error code, such as `not_found`.
    pub fn code(&self) -> &'static str {
        self.code
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.code, self.status, self.message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.code, "message": self.message}});
        (self.status, Json(body)).into_response()
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        let (status, code) = match &e {
            Error::JobNotFound { .. } => (StatusCode::NOT_FOUND, "not_found"),
            Error::ConflictingId { .. } => (StatusCode::CONFLICT, "conflict"),
            Error::JobChanged { .. } => (StatusCode::CONFLICT, "changed"),
            Error::MaxInstancesReached { .. } => (StatusCode::CONFLICT, "max_instances"),
            Error::UnreadableJob { .. } => (StatusCode::CONFLICT, "unreadable"),
            Error::InvalidTrigger { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_trigger"),
            Error::InvalidArgs { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_args"),
            Error::UnknownTask { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "unknown_task"),
            Error::UnknownStore { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "unknown_store"),
            Error::UnknownExecutor { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "unknown_executor"),
            Error::InvalidJob(_) | Error::Serialization { .. } => {
                (StatusCode::UNPROCESSABLE_ENTITY, "invalid")
            }
            Error::NotRunning => (StatusCode::SERVICE_UNAVAILABLE, "not_running"),
            Error::Store { .. } | Error::LeaseLost { .. } => {
                (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable")
            }
            Error::Config(_) => (StatusCode::CONFLICT, "rejected"),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        if status == StatusCode::INTERNAL_SERVER_ERROR || status == StatusCode::SERVICE_UNAVAILABLE
        {
            tracing::warn!(error = %e, "admin API request failed");
        }
        ApiError::new(status, code, e.to_string())
    }
}

fn rejection_code(status: StatusCode) -> &'static str {
    match status {
        StatusCode::PAYLOAD_TOO_LARGE => "too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "not_json",
        StatusCode::UNPROCESSABLE_ENTITY => "invalid",
        _ => "bad_request",
    }
}

/// A JSON body whose rejection is an [`ApiError`].
#[derive(Debug)]
pub(crate) struct Body<T>(pub(crate) T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(Body(v)),
            Err(r) => Err(json_rejection(r)),
        }
    }
}

fn json_rejection(r: JsonRejection) -> ApiError {
    let status = r.status();
    ApiError::new(status, rejection_code(status), r.body_text())
}

/// Query parameters whose rejection is an [`ApiError`].
#[derive(Debug)]
pub(crate) struct Params<T>(pub(crate) T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(q) => Ok(Params(q.0)),
            Err(r) => Err(query_rejection(r)),
        }
    }
}

fn query_rejection(r: QueryRejection) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "bad_query", r.body_text())
}
