//! `AuthError`: why a request's access token was refused, in the two kinds
//! RFC 6750 tells apart. The handlers turn it into `400 invalid_request` or
//! `401 invalid_token` with a `WWW-Authenticate: Bearer` challenge
//! (`crate::mercure::error`).

/// Why a presented token was refused.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    /// The token is presented wrongly (a malformed `Authorization` header,
    /// a token in the URL, a cookie publish from a foreign origin): the
    /// message is for the client.
    #[error("{0}")]
    InvalidRequest(String),
    /// The token does not validate (signature, `typ`, `iss`, `aud`, `exp`,
    /// `nbf`, `authorization_details`). The reason is logged; the client is
    /// only told the token is invalid, as RFC 6750 and the spec advise.
    #[error("{0}")]
    InvalidToken(String),
}

impl AuthError {
    /// An invalid token, for `why`.
    pub fn token(why: impl std::fmt::Display) -> Self {
        Self::InvalidToken(why.to_string())
    }
}
