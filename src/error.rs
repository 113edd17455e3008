//! `ApiError`: every way a request can fail, mapped in one place to an HTTP
//! status and an RFC 9457 `application/problem+json` body.
//!
//! Handlers return `Result<_, ApiError>`; errors raised by actix-web itself
//! (unknown route, wrong method, malformed query) are rewritten into the same
//! shape by [`problem_for_framework_errors`]. A leaf: the broker's errors are
//! turned into `ApiError`s by the HTTP layer (`crate::http`), which knows both.

use actix_web::{
    HttpResponse, ResponseError,
    body::{BoxBody, EitherBody, MessageBody},
    dev::ServiceResponse,
    http::{StatusCode, header},
    middleware::ErrorHandlerResponse,
};
use serde::Serialize;

/// Media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    InvalidChannel(String),
    #[error("{0}")]
    InvalidEventType(String),
    #[error("{0}")]
    InvalidLastEventId(String),
    #[error("the body is not valid JSON: {0}")]
    InvalidJson(String),
    #[error("{0}")]
    InvalidBody(String),
    /// A query parameter out of its range.
    #[error("{0}")]
    InvalidQuery(String),
    #[error("the body is larger than the limit of {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    TooManyChannels(String),
    #[error("{0}")]
    Unavailable(String),
    /// No token where one is needed (401, `WWW-Authenticate: Bearer`).
    #[error("{0}")]
    MissingToken(String),
    /// A token that is expired, badly signed or malformed (401).
    #[error("{0}")]
    InvalidToken(String),
    /// A valid token that does not cover this channel (403).
    #[error("{0}")]
    Forbidden(String),
    /// Too many requests from one client (429 with the wait in Retry-After).
    #[error("{detail}")]
    RateLimited {
        detail: String,
        retry_after_secs: u64,
    },
    /// Too many open streams from one client IP (429).
    #[error("{0}")]
    TooManyStreams(String),
    /// A channel or the broker holds its maximum of subscribers (503).
    #[error("{0}")]
    TooManySubscribers(String),
    /// The application's hook did not answer (`hooks.failure_policy =
    /// "deny"`): 503 with the wait in Retry-After.
    #[error("{detail}")]
    HookUnavailable {
        detail: String,
        retry_after_secs: u64,
    },
    /// An `Idempotency-Key` (or a batch item's `idempotencyKey`) that is
    /// not 1–128 printable ASCII characters (400).
    #[error("{0}")]
    InvalidIdempotencyKey(String),
    /// An idempotency key reused with another request within its window
    /// (422, as the IETF Idempotency-Key draft asks).
    #[error("{0}")]
    IdempotencyKeyReused(String),
    /// An idempotency key whose first publish is still in progress (409,
    /// as the IETF Idempotency-Key draft asks): retry.
    #[error("{0}")]
    IdempotencyKeyInFlight(String),
}

impl ApiError {
    /// A stable, documented identifier for the kind of problem.
    fn slug(&self) -> &'static str {
        match self {
            Self::InvalidChannel(_) => "invalid-channel",
            Self::InvalidEventType(_) => "invalid-event-type",
            Self::InvalidLastEventId(_) => "invalid-last-event-id",
            Self::InvalidJson(_) => "invalid-json",
            Self::InvalidBody(_) => "invalid-body",
            Self::InvalidQuery(_) => "invalid-query",
            Self::PayloadTooLarge { .. } => "payload-too-large",
            Self::UnsupportedMediaType(_) => "unsupported-media-type",
            Self::NotFound(_) => "not-found",
            Self::TooManyChannels(_) => "too-many-channels",
            Self::Unavailable(_) => "unavailable",
            Self::MissingToken(_) => "missing-token",
            Self::InvalidToken(_) => "invalid-token",
            Self::Forbidden(_) => "forbidden",
            Self::RateLimited { .. } => "rate-limited",
            Self::TooManyStreams(_) => "too-many-streams",
            Self::TooManySubscribers(_) => "too-many-subscribers",
            Self::HookUnavailable { .. } => "hook-unavailable",
            Self::InvalidIdempotencyKey(_) => "invalid-idempotency-key",
            Self::IdempotencyKeyReused(_) => "idempotency-key-reused",
            Self::IdempotencyKeyInFlight(_) => "idempotency-key-in-flight",
        }
    }

    fn title(&self) -> &'static str {
        match self {
            Self::InvalidChannel(_) => "Invalid channel name",
            Self::InvalidEventType(_) => "Invalid event type",
            Self::InvalidLastEventId(_) => "Invalid Last-Event-ID",
            Self::InvalidJson(_) => "Invalid JSON",
            Self::InvalidBody(_) => "Invalid request body",
            Self::InvalidQuery(_) => "Invalid query parameter",
            Self::PayloadTooLarge { .. } => "Payload too large",
            Self::UnsupportedMediaType(_) => "Unsupported media type",
            Self::NotFound(_) => "Not found",
            Self::TooManyChannels(_) => "Too many channels",
            Self::Unavailable(_) => "Service unavailable",
            Self::MissingToken(_) => "Authentication required",
            Self::InvalidToken(_) => "Invalid token",
            Self::Forbidden(_) => "Forbidden",
            Self::RateLimited { .. } => "Too many requests",
            Self::TooManyStreams(_) => "Too many streams",
            Self::TooManySubscribers(_) => "Too many subscribers",
            Self::HookUnavailable { .. } => "Authorization unavailable",
            Self::InvalidIdempotencyKey(_) => "Invalid idempotency key",
            Self::IdempotencyKeyReused(_) => "Idempotency key reused",
            Self::IdempotencyKeyInFlight(_) => "Idempotency key in use",
        }
    }
}

/// The body of every error response.
#[derive(Debug, Serialize)]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
}

impl Problem {
    pub fn new(slug: &str, title: &str, status: StatusCode, detail: String) -> Self {
        Self {
            kind: format!("urn:sse-broker:problem:{slug}"),
            title: title.into(),
            status: status.as_u16(),
            detail,
        }
    }

    pub fn response(&self) -> HttpResponse {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = HttpResponse::build(status);
        response.content_type(PROBLEM_JSON);
        if matches!(
            status,
            StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS
        ) {
            response.insert_header((header::RETRY_AFTER, "5"));
        }
        response.body(serde_json::to_string(self).unwrap_or_default())
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::InvalidChannel(_)
            | Self::InvalidEventType(_)
            | Self::InvalidLastEventId(_)
            | Self::InvalidJson(_)
            | Self::InvalidBody(_)
            | Self::InvalidQuery(_)
            | Self::InvalidIdempotencyKey(_) => StatusCode::BAD_REQUEST,
            Self::IdempotencyKeyReused(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::IdempotencyKeyInFlight(_) => StatusCode::CONFLICT,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::TooManyChannels(_)
            | Self::Unavailable(_)
            | Self::TooManySubscribers(_)
            | Self::HookUnavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::MissingToken(_) | Self::InvalidToken(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::RateLimited { .. } | Self::TooManyStreams(_) => StatusCode::TOO_MANY_REQUESTS,
        }
    }

    fn error_response(&self) -> HttpResponse<BoxBody> {
        let mut response = Problem::new(
            self.slug(),
            self.title(),
            self.status_code(),
            self.to_string(),
        )
        .response();
        let headers = response.headers_mut();
        match self {
            // RFC 6750: the scheme, and for a token that was refused, why.
            Self::MissingToken(_) => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    header::HeaderValue::from_static("Bearer realm=\"sse-broker\""),
                );
            }
            Self::InvalidToken(_) => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    header::HeaderValue::from_static(
                        "Bearer realm=\"sse-broker\", error=\"invalid_token\"",
                    ),
                );
            }
            Self::RateLimited {
                retry_after_secs, ..
            }
            | Self::HookUnavailable {
                retry_after_secs, ..
            } => {
                headers.insert(header::RETRY_AFTER, (*retry_after_secs).max(1).into());
            }
            _ => {}
        }
        response
    }
}

/// Middleware hook: turns an error response that is not problem+json yet
/// (actix-web's own 404/405/400s) into one, keeping its status.
pub fn problem_for_framework_errors<B: MessageBody + 'static>(
    res: ServiceResponse<B>,
) -> actix_web::Result<ErrorHandlerResponse<B>> {
    // Problems, and JSON bodies a handler built on purpose (e.g. `/readyz`
    // listing its failed checks), are kept as they are.
    let is_json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .ends_with("json")
        });
    if is_json {
        return Ok(ErrorHandlerResponse::Response(res.map_into_left_body()));
    }
    let status = res.status();
    let detail = match (status, res.response().error()) {
        (_, Some(err)) => err.to_string(),
        (StatusCode::NOT_FOUND, None) => format!("no resource at {}", res.request().path()),
        (StatusCode::METHOD_NOT_ALLOWED, None) => {
            format!(
                "{} is not allowed on {}",
                res.request().method(),
                res.request().path()
            )
        }
        _ => status.canonical_reason().unwrap_or("error").to_owned(),
    };
    let slug = match status {
        StatusCode::NOT_FOUND => "not-found",
        StatusCode::METHOD_NOT_ALLOWED => "method-not-allowed",
        s if s.is_server_error() => "internal",
        _ => "bad-request",
    };
    let title = status.canonical_reason().unwrap_or("Error");
    let (req, _) = res.into_parts();
    let response = Problem::new(slug, title, status, detail).response();
    let res: ServiceResponse<EitherBody<B>> =
        ServiceResponse::new(req, response).map_into_right_body();
    Ok(ErrorHandlerResponse::Response(res))
}
