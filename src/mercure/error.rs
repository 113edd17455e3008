//! `MercureError`: how a Mercure request fails, with the statuses and
//! challenges the spec asks for (RFC 6750 §3):
//! - no token where one is needed: `401` with a bare `WWW-Authenticate:
//!   Bearer` challenge (no error code);
//! - a token that does not validate: `401`, `error="invalid_token"`;
//! - a valid token without the right: `403`, `error="insufficient_scope"`;
//! - a token presented wrongly: `400`, `error="invalid_request"`;
//!
//! every challenge naming the protected resource metadata
//! (`resource_metadata`, RFC 9728). Other malformed requests are plain
//! `400`s. Bodies are our usual `application/problem+json`; the OAuth
//! error code stays in the challenge, and an invalid token's body never
//! says why (the reason is logged).

use actix_web::{HttpResponse, ResponseError, body::BoxBody, http::StatusCode, http::header};

use super::{auth::AuthError, identity::HubIdentity};
use crate::{broker::BrokerError, error::ApiError, error::Problem};

/// An RFC 6750 error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BearerCode {
    InvalidRequest,
    InvalidToken,
    InsufficientScope,
}

impl BearerCode {
    fn as_str(self) -> &'static str {
        match self {
            Self::InvalidRequest => "invalid_request",
            Self::InvalidToken => "invalid_token",
            Self::InsufficientScope => "insufficient_scope",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MercureError {
    /// A request malformed independently of its token.
    #[error("{0}")]
    BadRequest(String),
    /// An authorization failure, answered with a Bearer challenge.
    #[error("{detail}")]
    Bearer {
        /// `None`: no token was presented (401, bare challenge).
        code: Option<BearerCode>,
        detail: String,
        /// Where the protected resource metadata is.
        resource_metadata: Option<String>,
    },
    #[error("{0}")]
    NotFound(String),
    #[error("the body is larger than the limit of {limit} bytes")]
    PayloadTooLarge { limit: usize },
    /// Too many topics in one update (the spec asks for 413).
    #[error("{0}")]
    TooManyTopics(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    Unavailable(String),
    /// One of the broker's limits (streams per IP, publish rate, total
    /// subscriptions): answered as for our channels (429 or 503 with
    /// Retry-After).
    #[error("{0}")]
    Limit(ApiError),
    /// The application's hook refused the subscriber, or could not be
    /// asked (`docs/hooks.md`): answered as on our channels (403, or 503
    /// with Retry-After).
    #[error("{0}")]
    Hook(ApiError),
}

impl MercureError {
    /// No token, where one is needed.
    pub fn token_required(hub: &HubIdentity) -> Self {
        Self::Bearer {
            code: None,
            detail: "an access token is required".into(),
            resource_metadata: hub.metadata_url.clone(),
        }
    }

    /// A valid token that does not grant what the request needs.
    pub fn insufficient_scope(hub: &HubIdentity, detail: impl Into<String>) -> Self {
        Self::Bearer {
            code: Some(BearerCode::InsufficientScope),
            detail: detail.into(),
            resource_metadata: hub.metadata_url.clone(),
        }
    }

    /// A refused token.
    pub fn auth(hub: &HubIdentity, err: AuthError) -> Self {
        let (code, detail) = match err {
            AuthError::InvalidRequest(detail) => (BearerCode::InvalidRequest, detail),
            AuthError::InvalidToken(_) => (
                BearerCode::InvalidToken,
                "the access token is invalid".to_owned(),
            ),
        };
        Self::Bearer {
            code: Some(code),
            detail,
            resource_metadata: hub.metadata_url.clone(),
        }
    }

    fn slug(&self) -> &'static str {
        match self {
            Self::BadRequest(_) => "mercure-bad-request",
            Self::Bearer { code: None, .. } => "mercure-unauthorized",
            Self::Bearer {
                code: Some(BearerCode::InvalidRequest),
                ..
            } => "mercure-bad-request",
            Self::Bearer {
                code: Some(BearerCode::InvalidToken),
                ..
            } => "mercure-unauthorized",
            Self::Bearer {
                code: Some(BearerCode::InsufficientScope),
                ..
            } => "mercure-forbidden",
            Self::NotFound(_) => "not-found",
            Self::PayloadTooLarge { .. } | Self::TooManyTopics(_) => "payload-too-large",
            Self::UnsupportedMediaType(_) => "unsupported-media-type",
            Self::Unavailable(_) => "unavailable",
            Self::Limit(_) => "limit",
            Self::Hook(_) => "hook",
        }
    }

    /// The `WWW-Authenticate` value of a Bearer error.
    fn challenge(&self) -> Option<String> {
        let Self::Bearer {
            code,
            resource_metadata,
            ..
        } = self
        else {
            return None;
        };
        let mut params = Vec::new();
        if let Some(code) = code {
            params.push(format!("error=\"{}\"", code.as_str()));
        }
        if let Some(url) = resource_metadata {
            params.push(format!(
                "resource_metadata=\"{}\"",
                url.replace(['"', '\\'], "")
            ));
        }
        Some(match params.is_empty() {
            true => "Bearer".to_owned(),
            false => format!("Bearer {}", params.join(", ")),
        })
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
            hook @ (ApiError::Forbidden(_) | ApiError::HookUnavailable { .. }) => Self::Hook(hook),
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
            Self::Bearer { code, .. } => match code {
                None | Some(BearerCode::InvalidToken) => StatusCode::UNAUTHORIZED,
                Some(BearerCode::InvalidRequest) => StatusCode::BAD_REQUEST,
                Some(BearerCode::InsufficientScope) => StatusCode::FORBIDDEN,
            },
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::PayloadTooLarge { .. } | Self::TooManyTopics(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Limit(limit) | Self::Hook(limit) => limit.status_code(),
        }
    }

    fn error_response(&self) -> HttpResponse<BoxBody> {
        if let Self::Limit(limit) | Self::Hook(limit) = self {
            return limit.error_response();
        }
        let status = self.status_code();
        let title = status.canonical_reason().unwrap_or("Error");
        let mut response = Problem::new(self.slug(), title, status, self.to_string()).response();
        if let Some(challenge) = self
            .challenge()
            .and_then(|c| header::HeaderValue::from_str(&c).ok())
        {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, challenge);
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bearer(code: Option<BearerCode>) -> MercureError {
        MercureError::Bearer {
            code,
            detail: "x".into(),
            resource_metadata: Some("https://hub/.well-known/oauth-protected-resource/x".into()),
        }
    }

    /// Each RFC 6750 case has its status and challenge.
    #[test]
    fn bearer_challenges() {
        let cases = [
            (
                None,
                401,
                "Bearer resource_metadata=\"https://hub/.well-known/oauth-protected-resource/x\"",
            ),
            (
                Some(BearerCode::InvalidToken),
                401,
                "Bearer error=\"invalid_token\", resource_metadata=\"https://hub/.well-known/oauth-protected-resource/x\"",
            ),
            (
                Some(BearerCode::InsufficientScope),
                403,
                "Bearer error=\"insufficient_scope\", resource_metadata=\"https://hub/.well-known/oauth-protected-resource/x\"",
            ),
            (
                Some(BearerCode::InvalidRequest),
                400,
                "Bearer error=\"invalid_request\", resource_metadata=\"https://hub/.well-known/oauth-protected-resource/x\"",
            ),
        ];
        for (code, status, challenge) in cases {
            let response = bearer(code).error_response();
            assert_eq!(response.status().as_u16(), status);
            assert_eq!(
                response.headers().get(header::WWW_AUTHENTICATE).unwrap(),
                challenge
            );
        }
        let plain = MercureError::BadRequest("no topic".into()).error_response();
        assert!(plain.headers().get(header::WWW_AUTHENTICATE).is_none());
    }
}
