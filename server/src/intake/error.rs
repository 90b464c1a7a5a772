//! Intake's errors and their one translation to each wire: a JSON body with a
//! status for HTTP, a `tonic::Status` (with `google.rpc.BadRequest` field
//! violations) for gRPC. Internal detail is logged, not sent.

use axum::{
    http::{header, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use serde_json::json;
use tonic_types::{ErrorDetails, StatusExt};

use super::{auth::AuthError, event::FieldError};
use crate::{publish::PublishError, store::SubmitError};

/// Seconds a client should wait before retrying after a 503.
const RETRY_AFTER_SECS: &str = "1";

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("malformed JSON at line {line}, column {column}: {message}")]
    Malformed {
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{0}")]
    Unauthorized(#[from] AuthError),
    /// A webhook whose signature does not verify.
    #[error("{0}")]
    BadSignature(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("the body is larger than the limit of {limit} bytes")]
    TooLarge { limit: usize },
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("the event is not valid")]
    Validation(Vec<FieldError>),
    /// A flow run's inputs.
    #[error("the inputs are not valid")]
    InvalidInputs(Vec<FieldError>),
    /// A payload its event type's schema refused (paths from the event's
    /// root: `payload/amount`). Counted by the publish pipeline.
    #[error("the payload does not match its event type")]
    Schema(Vec<FieldError>),
    #[error("{0}")]
    BadRequest(String),
    #[error("the rate limit of {scope} is used up; retry in {retry_after_secs} s")]
    RateLimited {
        retry_after_secs: u64,
        scope: String,
    },
    #[error("the daemon is overloaded; retry shortly")]
    Overloaded,
    #[error("storage is unavailable; nothing was stored, retry shortly")]
    Unavailable(String),
}

impl From<SubmitError> for ApiError {
    fn from(e: SubmitError) -> Self {
        match e {
            SubmitError::Overloaded => ApiError::Overloaded,
            SubmitError::Unavailable(detail) => ApiError::Unavailable(detail),
            SubmitError::Refused(e) => match e {
                crate::store::Error::NotFound { .. } => ApiError::NotFound(e.to_string()),
                crate::store::Error::AlreadyExists(m) => ApiError::Conflict(m),
                crate::store::Error::StaleVersion { .. } => ApiError::Conflict(e.to_string()),
                crate::store::Error::FailedPrecondition(m) => ApiError::Conflict(m),
                crate::store::Error::Unavailable(m) | crate::store::Error::Fatal(m) => {
                    ApiError::Unavailable(m)
                }
            },
        }
    }
}

impl From<PublishError> for ApiError {
    fn from(e: PublishError) -> Self {
        match e {
            PublishError::Overloaded => ApiError::Overloaded,
            PublishError::Unavailable(detail) => ApiError::Unavailable(detail),
            conflict @ PublishError::Conflict { .. } => ApiError::Conflict(conflict.to_string()),
            PublishError::Invalid { fields, .. } => ApiError::schema(&["payload"], fields),
        }
    }
}

impl ApiError {
    /// Schema violations named from the event's root: `prefix` is where
    /// the payload sits (`payload`, or `data` for a CloudEvent).
    pub fn schema(prefix: &[&str], fields: Vec<FieldError>) -> ApiError {
        ApiError::Schema(
            fields
                .into_iter()
                .map(|mut f| {
                    f.path.splice(0..0, prefix.iter().map(|s| s.to_string()));
                    f
                })
                .collect(),
        )
    }

    fn status(&self) -> StatusCode {
        match self {
            ApiError::Malformed { .. } | ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) | ApiError::BadSignature(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Validation(_) | ApiError::InvalidInputs(_) | ApiError::Schema(_) => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Overloaded | ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// What a refusal at an event door is counted as in `/metrics`;
    /// `None` for what the publish pipeline counts itself (conflicts,
    /// overload, storage) or what is no event at all.
    pub fn refusal(&self) -> Option<&'static str> {
        match self {
            ApiError::Malformed { .. }
            | ApiError::BadRequest(_)
            | ApiError::TooLarge { .. }
            | ApiError::UnsupportedMediaType(_)
            | ApiError::Validation(_)
            | ApiError::InvalidInputs(_) => Some("invalid"),
            ApiError::Unauthorized(_) | ApiError::BadSignature(_) | ApiError::Forbidden(_) => {
                Some("unauthorized")
            }
            ApiError::RateLimited { .. } => Some("rate_limited"),
            ApiError::NotFound(_)
            | ApiError::Conflict(_)
            | ApiError::Schema(_)
            | ApiError::Overloaded
            | ApiError::Unavailable(_) => None,
        }
    }

    /// A short machine-readable name, also the reason rejections are counted under.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Malformed { .. } => "malformed_json",
            ApiError::BadRequest(_) => "bad_request",
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::BadSignature(_) => "invalid_signature",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound(_) => "not_found",
            ApiError::Conflict(_) => "conflict",
            ApiError::TooLarge { .. } => "payload_too_large",
            ApiError::UnsupportedMediaType(_) => "unsupported_media_type",
            ApiError::Validation(_) | ApiError::InvalidInputs(_) | ApiError::Schema(_) => {
                "validation_failed"
            }
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::Overloaded | ApiError::Unavailable(_) => "unavailable",
        }
    }

    fn log(&self) {
        if let ApiError::Unavailable(detail) = self {
            tracing::warn!(%detail, "Refused an event: storage unavailable.");
        }
    }

    /// The gRPC status; field violations are named under `field_prefix`
    /// (`event` for Publish).
    pub fn into_status(self, field_prefix: &str) -> tonic::Status {
        self.log();
        let message = self.to_string();
        match self {
            ApiError::Validation(fields)
            | ApiError::InvalidInputs(fields)
            | ApiError::Schema(fields) => {
                let mut details = ErrorDetails::new();
                for f in &fields {
                    details.add_bad_request_violation(f.dotted(field_prefix), f.message.clone());
                }
                let summary = fields
                    .iter()
                    .map(|f| format!("{}: {}", f.dotted(field_prefix), f.message))
                    .collect::<Vec<_>>()
                    .join("; ");
                tonic::Status::with_error_details(
                    tonic::Code::InvalidArgument,
                    format!("{message}: {summary}"),
                    details,
                )
            }
            ApiError::Malformed { .. }
            | ApiError::BadRequest(_)
            | ApiError::TooLarge { .. }
            | ApiError::UnsupportedMediaType(_)
                if !field_prefix.is_empty() =>
            {
                // The whole field is at fault (`inputs` that are not JSON).
                let mut details = ErrorDetails::new();
                details.add_bad_request_violation(field_prefix, message.clone());
                tonic::Status::with_error_details(
                    tonic::Code::InvalidArgument,
                    format!("{field_prefix}: {message}"),
                    details,
                )
            }
            ApiError::Malformed { .. }
            | ApiError::BadRequest(_)
            | ApiError::TooLarge { .. }
            | ApiError::UnsupportedMediaType(_) => tonic::Status::invalid_argument(message),
            ApiError::Unauthorized(_) | ApiError::BadSignature(_) => {
                tonic::Status::unauthenticated(message)
            }
            ApiError::Forbidden(_) => tonic::Status::permission_denied(message),
            ApiError::NotFound(_) => tonic::Status::not_found(message),
            ApiError::Conflict(_) => tonic::Status::already_exists(message),
            ApiError::Overloaded => tonic::Status::resource_exhausted(message),
            ApiError::RateLimited {
                retry_after_secs, ..
            } => tonic::Status::with_error_details(
                tonic::Code::ResourceExhausted,
                message,
                ErrorDetails::with_retry_info(Some(std::time::Duration::from_secs(
                    retry_after_secs,
                ))),
            ),
            ApiError::Unavailable(_) => tonic::Status::unavailable(message),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.log();
        let status = self.status();
        let fields: Vec<_> = match &self {
            ApiError::Validation(fields)
            | ApiError::InvalidInputs(fields)
            | ApiError::Schema(fields) => fields
                .iter()
                .map(|f| json!({"pointer": f.pointer(), "message": f.message}))
                .collect(),
            _ => Vec::new(),
        };
        let message = match &self {
            ApiError::Validation(fields)
            | ApiError::InvalidInputs(fields)
            | ApiError::Schema(fields) => format!(
                "{self}: {}",
                fields
                    .iter()
                    .map(|f| format!("{} {}", f.pointer(), f.message))
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
            other => other.to_string(),
        };
        let body = json!({"error": {"code": self.code(), "message": message, "fields": fields}});
        let mut response = (status, Json(body)).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from_static(RETRY_AFTER_SECS),
            );
        }
        if let ApiError::RateLimited {
            retry_after_secs, ..
        } = self
        {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
        }
        if matches!(self, ApiError::Unauthorized(_)) {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}
