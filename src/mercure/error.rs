//! `MercureError`: how a Mercure request fails. The statuses are the ones
//! the Mercure specification and the reference hub use (400 malformed, 401
//! no or invalid token, 403 a valid token without the right, 413 too large);
//! the bodies are our usual `application/problem+json`, and 401/403 carry a
//! `WWW-Authenticate: Bearer` challenge (RFC 6750).

use actix_web::{HttpResponse, ResponseError, body::BoxBody, http::StatusCode, http::header};

use crate::{broker::BrokerError, error::ApiError, error::Problem};

#[derive(Debug, thiserror::Error)]
pub enum MercureError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("the body is larger than the limit of {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("{0}")]
    Unavailable(String),
    /// One of the broker's limits (streams per IP, publish rate, total
    /// subscriptions): answered as for our channels (429 or 503 with
    /// Retry-After).
    #[error("{0}")]
    Limit(ApiError),
}

impl MercureError {
    fn slug(&self) -> &'static str {
        match self {
            Self::BadRequest(_) => "mercure-bad-request",
            Self::Unauthorized(_) => "mercure-unauthorized",
            Self::Forbidden(_) => "mercure-forbidden",
            Self::NotFound(_) => "not-found",
            Self::PayloadTooLarge { .. } => "payload-too-large",
            Self::Unavailable(_) => "unavailable",
            Self::Limit(_) => "limit",
        }
    }
}

impl From<BrokerError> for MercureError {
    fn from(err: BrokerError) -> Self {
        Self::Unavailable(err.to_string())
    }
}

impl From<ApiError> for MercureError {
    /// Errors of the shared HTTP helpers (body reading, limits, opening a
    /// stream).
    fn from(err: ApiError) -> Self {
        match err {
            ApiError::PayloadTooLarge { limit } => Self::PayloadTooLarge { limit },
            limit @ (ApiError::RateLimited { .. }
            | ApiError::TooManyStreams(_)
            | ApiError::TooManySubscribers(_)
            | ApiError::TooManyChannels(_)) => Self::Limit(limit),
            ApiError::Unavailable(why) => Self::Unavailable(why),
            ApiError::NotFound(why) => Self::NotFound(why),
            other => Self::BadRequest(other.to_string()),
        }
    }
}

impl ResponseError for MercureError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Limit(limit) => limit.status_code(),
        }
    }

    fn error_response(&self) -> HttpResponse<BoxBody> {
        if let Self::Limit(limit) = self {
            return limit.error_response();
        }
        let status = self.status_code();
        let title = status.canonical_reason().unwrap_or("Error");
        let mut response = Problem::new(self.slug(), title, status, self.to_string()).response();
        let challenge = match self {
            Self::Unauthorized(_) => Some("Bearer"),
            Self::Forbidden(_) => Some("Bearer error=\"insufficient_scope\""),
            _ => None,
        };
        if let Some(challenge) = challenge {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static(challenge),
            );
        }
        response
    }
}
