//! Who may do what: the access policy every way in asks ([`policy`]), our
//! tokens, which carry a caller's rights on channels ([`token`]), and the
//! channel patterns both name channels with ([`pattern`]).
//!
//! This module only decides; the protocols find the credential in a
//! request and apply the decisions (`http::access`, the Mercure hub), and
//! [`crate::error::ApiError`] turns refusals into 401/403. It owns its
//! settings ([`AuthSettings`], the `[auth]` section): a leaf that the
//! configuration embeds, importing nothing but `crate::names`.

pub mod pattern;
pub mod policy;
pub mod token;

use std::{path::PathBuf, time::Duration};

use serde::Deserialize;

pub use pattern::Pattern;
pub use policy::{AccessPolicy, Action, Denied, Rights};
pub use token::{
    Auth, AuthSetupError, CLAIM, Claims, Grant, Permissions, TokenError, Verifier, load_secret,
    mint,
};

/// Signature algorithms the broker verifies (one per deployment).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum JwtAlgorithm {
    HS256,
    HS384,
    HS512,
    RS256,
    ES256,
}

impl JwtAlgorithm {
    /// HMAC algorithms use a shared secret; the others a public key file.
    pub fn is_hmac(self) -> bool {
        matches!(self, Self::HS256 | Self::HS384 | Self::HS512)
    }
}

/// The `[auth]` section of the configuration (each key is explained in
/// `config/default.toml`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    /// Require tokens from publishers (and subscribers of private channels).
    pub enabled: bool,
    /// The one algorithm tokens must be signed with.
    pub algorithm: JwtAlgorithm,
    /// Shared HMAC secret (HS*); prefer `secret_file` or the environment.
    pub secret: String,
    /// File holding the shared HMAC secret (trailing newline ignored).
    pub secret_file: Option<PathBuf>,
    /// PEM public key (RS256: RSA, ES256: P-256) for verification.
    pub public_key_file: Option<PathBuf>,
    /// Clock skew tolerated on `exp` (and `nbf`).
    #[serde(with = "humantime_serde")]
    pub leeway: Duration,
    /// Channel patterns whose subscribers need a token.
    pub private_channels: Vec<String>,
    /// Whether anonymous clients may subscribe to public channels.
    pub anonymous_subscribe: bool,
    /// Cookie a browser may carry its subscriber token in.
    pub cookie_name: String,
}

impl AuthSettings {
    /// The access policy these settings describe; a `private_channels`
    /// entry that is not a valid pattern is an error.
    pub fn policy(&self) -> Result<AccessPolicy, AuthSetupError> {
        let private = self
            .private_channels
            .iter()
            .map(|p| Pattern::parse(p).map_err(AuthSetupError::Invalid))
            .collect::<Result<_, _>>()?;
        Ok(AccessPolicy::new(
            self.enabled,
            private,
            self.anonymous_subscribe,
        ))
    }
}
