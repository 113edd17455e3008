//! Our tokens: JWTs signed with the one configured algorithm (HS256/384/512
//! with a shared secret, RS256 or ES256 with a public key). Their claims
//! follow Mercure's shape under the claim name [`CLAIM`]:
//!
//! ```json
//! {"sse": {"publish": ["orders.*"], "subscribe": ["orders.*", "news"], "monitor": true},
//!  "exp": 1767225600, "sub": "billing-job"}
//! ```
//!
//! `exp` is required. `sub` (or else `jti`) names the bearer for the publish
//! rate limit. Each entry of `publish`/`subscribe` is a [`Pattern`];
//! `monitor` lets an operator's console see every channel's metadata and
//! the pulse book. A verified token is a [`Grant`], whose [`Rights`] the
//! access policy ([`super::policy`]) weighs.

use std::{
    path::Path,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use jsonwebtoken::{
    Algorithm, DecodingKey, EncodingKey, Header, Validation, decode, encode, errors::ErrorKind,
};
use serde::{Deserialize, Serialize};

use super::{
    AuthSettings, JwtAlgorithm,
    pattern::Pattern,
    policy::{Action, Rights},
};
use crate::names::ChannelName;

/// The claim that holds the broker's permissions.
pub const CLAIM: &str = "sse";

/// The permissions in a token.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Permissions {
    #[serde(default)]
    pub publish: Vec<String>,
    #[serde(default)]
    pub subscribe: Vec<String>,
    /// See every channel's metadata and the pulse book (no events).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub monitor: bool,
}

/// The claims the broker reads (others are ignored).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    #[serde(default)]
    pub sse: Permissions,
    /// Required: the validation refuses a token without it before this
    /// default could matter.
    #[serde(default)]
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
}

/// A verified token.
#[derive(Debug, Clone)]
pub struct Grant {
    publish: Vec<Pattern>,
    subscribe: Vec<Pattern>,
    monitor: bool,
    /// When the token stops being accepted (its `exp` plus the leeway).
    pub expires_at: SystemTime,
    /// `sub`, else `jti`: who the bearer is, for rate limits and logs.
    pub subject: Option<String>,
}

impl Rights for Grant {
    fn covers(&self, action: Action, channel: &ChannelName) -> bool {
        let patterns = match action {
            Action::Publish => &self.publish,
            Action::Subscribe => &self.subscribe,
            Action::Inspect => return false,
        };
        patterns.iter().any(|p| p.matches(channel.as_str()))
    }

    fn monitors(&self) -> bool {
        self.monitor
    }
}

/// The most clock skew `auth.leeway` may tolerate: a day is far more than
/// any clock is off, and it keeps the token library's `now ± leeway` far
/// from the ends of its integers.
pub const MAX_LEEWAY: Duration = Duration::from_secs(86_400);

/// The latest expiry a token can have: `exp` beyond it (the claim is any
/// JSON number up to `u64::MAX`) counts as this, about the year 5138, so
/// no arithmetic on a client's claim can overflow.
const LATEST_EXPIRY: Duration = Duration::from_secs(100_000_000_000);

/// When a token with this `exp` (seconds since the epoch) and `leeway`
/// stops being accepted, saturating at [`LATEST_EXPIRY`].
pub fn expiry(exp: u64, leeway: Duration) -> SystemTime {
    let at = Duration::from_secs(exp)
        .saturating_add(leeway)
        .min(LATEST_EXPIRY);
    UNIX_EPOCH + at
}

/// Why a token was refused. The messages are safe to show: they never
/// contain the token, the key or the secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token has expired")]
    Expired,
    #[error("the token's signature is not valid")]
    BadSignature,
    #[error("the token must be signed with {0:?}")]
    WrongAlgorithm(JwtAlgorithm),
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token has no {0:?} claim")]
    MissingClaim(String),
    #[error("the token is not a well-formed JWT signed with {0:?}")]
    Malformed(JwtAlgorithm),
}

/// Why the auth configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum AuthSetupError {
    #[error("cannot read {what} {path}: {err}")]
    Read {
        what: &'static str,
        path: String,
        err: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

/// Checks tokens against the configured key.
pub struct Verifier {
    key: DecodingKey,
    validation: Validation,
    algorithm: JwtAlgorithm,
    leeway: Duration,
}

impl std::fmt::Debug for Verifier {
    /// Never prints the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

fn jwt_algorithm(alg: JwtAlgorithm) -> Algorithm {
    match alg {
        JwtAlgorithm::HS256 => Algorithm::HS256,
        JwtAlgorithm::HS384 => Algorithm::HS384,
        JwtAlgorithm::HS512 => Algorithm::HS512,
        JwtAlgorithm::RS256 => Algorithm::RS256,
        JwtAlgorithm::ES256 => Algorithm::ES256,
    }
}

/// The shared secret from `secret` or `secret_file` (trailing newline cut).
pub fn load_secret(settings: &AuthSettings) -> Result<Option<Vec<u8>>, AuthSetupError> {
    if !settings.secret.is_empty() {
        return Ok(Some(settings.secret.as_bytes().to_vec()));
    }
    let Some(path) = &settings.secret_file else {
        return Ok(None);
    };
    let text = read(path, "auth.secret_file")?;
    let secret = text.trim_end_matches(['\n', '\r']).as_bytes().to_vec();
    if secret.len() < 32 {
        return Err(AuthSetupError::Invalid(format!(
            "the secret in {} must be at least 32 bytes",
            path.display()
        )));
    }
    Ok(Some(secret))
}

fn read(path: &Path, what: &'static str) -> Result<String, AuthSetupError> {
    std::fs::read_to_string(path).map_err(|err| AuthSetupError::Read {
        what,
        path: path.display().to_string(),
        err,
    })
}

impl Verifier {
    /// Loads the key the settings name.
    pub fn from_settings(settings: &AuthSettings) -> Result<Self, AuthSetupError> {
        let algorithm = settings.algorithm;
        let key = if algorithm.is_hmac() {
            let secret = load_secret(settings)?.ok_or_else(|| {
                AuthSetupError::Invalid("auth needs auth.secret or auth.secret_file".into())
            })?;
            DecodingKey::from_secret(&secret)
                .map_err(|err| AuthSetupError::Invalid(format!("auth.secret: {err}")))?
        } else {
            let path = settings
                .public_key_file
                .as_ref()
                .ok_or_else(|| AuthSetupError::Invalid("auth needs auth.public_key_file".into()))?;
            let pem = read(path, "auth.public_key_file")?;
            let key = match algorithm {
                JwtAlgorithm::RS256 => DecodingKey::from_rsa_pem(pem.as_bytes()),
                _ => DecodingKey::from_ec_pem(pem.as_bytes()),
            };
            key.map_err(|err| {
                AuthSetupError::Invalid(format!(
                    "auth.public_key_file {} is not a {algorithm:?} public key: {err}",
                    path.display()
                ))
            })?
        };
        let mut validation = Validation::new(jwt_algorithm(algorithm));
        validation.set_required_spec_claims(&["exp"]);
        validation.validate_aud = false;
        validation.validate_nbf = true;
        validation.leeway = settings.leeway.as_secs();
        Ok(Self {
            key,
            validation,
            algorithm,
            leeway: Duration::from_secs(settings.leeway.as_secs()),
        })
    }

    /// Verifies a token's signature, algorithm and times, and reads its claims.
    pub fn verify(&self, token: &str) -> Result<Grant, TokenError> {
        let data = decode::<Claims>(token, &self.key, &self.validation).map_err(|err| match err
            .kind()
        {
            ErrorKind::ExpiredSignature => TokenError::Expired,
            ErrorKind::InvalidSignature => TokenError::BadSignature,
            ErrorKind::InvalidAlgorithm => TokenError::WrongAlgorithm(self.algorithm),
            ErrorKind::ImmatureSignature => TokenError::NotYetValid,
            ErrorKind::MissingRequiredClaim(claim) => TokenError::MissingClaim(claim.clone()),
            _ => TokenError::Malformed(self.algorithm),
        })?;
        let claims = data.claims;
        // A pattern that does not parse grants nothing (rather than failing
        // the whole token): the others still apply.
        let patterns = |list: &[String]| -> Vec<Pattern> {
            list.iter().filter_map(|p| Pattern::parse(p).ok()).collect()
        };
        Ok(Grant {
            publish: patterns(&claims.sse.publish),
            subscribe: patterns(&claims.sse.subscribe),
            monitor: claims.sse.monitor,
            expires_at: expiry(claims.exp, self.leeway),
            subject: claims.sub.or(claims.jti),
        })
    }
}

/// How the HTTP layer checks our tokens: the verifier (none with auth off)
/// and the cookie a browser may carry its token in.
#[derive(Debug)]
pub struct Auth {
    /// `None` when auth is off: no token is ever read.
    pub verifier: Option<Verifier>,
    pub cookie_name: String,
}

impl Auth {
    pub fn from_settings(settings: &AuthSettings) -> Result<Self, AuthSetupError> {
        let verifier = if settings.enabled {
            Some(Verifier::from_settings(settings)?)
        } else {
            None
        };
        Ok(Self {
            verifier,
            cookie_name: settings.cookie_name.clone(),
        })
    }
}

/// Mints a token with the configured HMAC secret (the `token` subcommand).
pub fn mint(
    settings: &AuthSettings,
    permissions: Permissions,
    ttl: Duration,
    subject: Option<String>,
) -> Result<String, AuthSetupError> {
    if !settings.algorithm.is_hmac() {
        return Err(AuthSetupError::Invalid(format!(
            "auth.algorithm is {:?}: tokens are minted with the private key, which the broker \
             does not hold; `token` only works with HS256/HS384/HS512",
            settings.algorithm
        )));
    }
    let secret = load_secret(settings)?.ok_or_else(|| {
        AuthSetupError::Invalid(
            "no secret configured: set auth.secret, auth.secret_file or SSE_BROKER__AUTH__SECRET"
                .into(),
        )
    })?;
    for pattern in permissions.publish.iter().chain(&permissions.subscribe) {
        Pattern::parse(pattern).map_err(AuthSetupError::Invalid)?;
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let claims = Claims {
        sse: permissions,
        exp: now.saturating_add(ttl.as_secs().max(1)),
        sub: subject,
        jti: None,
        iat: Some(now),
    };
    let key = EncodingKey::from_secret(&secret)
        .map_err(|err| AuthSetupError::Invalid(format!("auth.secret: {err}")))?;
    encode(
        &Header::new(jwt_algorithm(settings.algorithm)),
        &claims,
        &key,
    )
    .map_err(|err| AuthSetupError::Invalid(format!("cannot sign the token: {err}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> AuthSettings {
        AuthSettings {
            enabled: true,
            algorithm: JwtAlgorithm::HS256,
            secret: "0123456789abcdef0123456789abcdef".into(),
            secret_file: None,
            public_key_file: None,
            leeway: Duration::ZERO,
            private_channels: Vec::new(),
            anonymous_subscribe: true,
            cookie_name: "sse_token".into(),
        }
    }

    #[test]
    fn minted_tokens_verify() {
        let s = settings();
        let token = mint(
            &s,
            Permissions {
                publish: vec!["orders.*".into()],
                subscribe: vec!["news".into()],
                monitor: false,
            },
            Duration::from_secs(60),
            Some("job".into()),
        )
        .unwrap();
        let grant = Verifier::from_settings(&s).unwrap().verify(&token).unwrap();
        let channel = |name| ChannelName::parse(name).unwrap();
        assert!(grant.covers(Action::Publish, &channel("orders.1")));
        assert!(!grant.covers(Action::Publish, &channel("news")));
        assert!(grant.covers(Action::Subscribe, &channel("news")));
        assert!(!grant.monitors());
        assert_eq!(grant.subject.as_deref(), Some("job"));
    }

    #[test]
    fn errors_never_show_the_secret() {
        let s = settings();
        let verifier = Verifier::from_settings(&s).unwrap();
        for token in ["", "a.b.c", "not a token"] {
            let err = verifier.verify(token).unwrap_err().to_string();
            assert!(!err.contains(&s.secret));
        }
        assert!(!format!("{verifier:?}").contains(&s.secret));
    }

    /// Signs `claims` (any JSON) with the test secret.
    fn signed(claims: &serde_json::Value) -> String {
        let key = EncodingKey::from_secret(settings().secret.as_bytes()).expect("an HMAC key");
        encode(&Header::new(Algorithm::HS256), claims, &key).expect("JSON claims encode")
    }

    /// Any JSON value a client may put in a numeric claim.
    fn claim_value() -> impl proptest::strategy::Strategy<Value = serde_json::Value> {
        use proptest::prelude::*;
        use serde_json::json;
        prop_oneof![
            any::<u64>().prop_map(|n| json!(n)),
            any::<i64>().prop_map(|n| json!(n)),
            any::<f64>().prop_map(|n| json!(n)),
            Just(json!(u64::MAX)),
            Just(json!(1u64 << 63)),
            Just(json!(1e300)),
            Just(json!(-1)),
            ".{0,20}".prop_map(|s| json!(s)),
            Just(serde_json::Value::Null),
            Just(json!([1, 2])),
        ]
    }

    proptest::proptest! {
        /// No claim value panics verification: every token is a grant or a
        /// refusal, and a grant's expiry is a time the clock can hold.
        #[test]
        fn no_claim_value_panics(
            exp in claim_value(),
            nbf in claim_value(),
            iat in claim_value(),
            sub in claim_value(),
            leeway in 0u64..=MAX_LEEWAY.as_secs(),
        ) {
            let mut s = settings();
            s.leeway = Duration::from_secs(leeway);
            let verifier = Verifier::from_settings(&s).expect("valid settings");
            let token = signed(&serde_json::json!({
                "sse": {"subscribe": ["*"]}, "exp": exp, "nbf": nbf, "iat": iat, "sub": sub,
            }));
            if let Ok(grant) = verifier.verify(&token) {
                proptest::prop_assert!(grant.expires_at <= UNIX_EPOCH + LATEST_EXPIRY);
            }
        }
    }

    /// A validly signed token with `exp` at or past 2^63 is accepted with
    /// the latest expiry, not a panic.
    #[test]
    fn huge_expiry_saturates() {
        let verifier = Verifier::from_settings(&settings()).expect("valid settings");
        for exp in [1u64 << 63, u64::MAX] {
            let token = signed(&serde_json::json!({"sse": {}, "exp": exp}));
            let grant = verifier.verify(&token).expect("a valid token");
            assert_eq!(grant.expires_at, UNIX_EPOCH + LATEST_EXPIRY);
        }
        assert_eq!(expiry(u64::MAX, Duration::MAX), UNIX_EPOCH + LATEST_EXPIRY);
    }
}
