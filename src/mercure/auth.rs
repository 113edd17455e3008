//! Mercure authorization: finding the JWT a request presents and checking it.
//!
//! A token travels, in this order of precedence (as in the reference hub),
//! in the `Authorization: Bearer …` header, the `authorization` query
//! parameter, or the `mercureAuthorization` cookie. A cookie on a `POST` is
//! accepted only from an origin in `mercure.publish_origins` (a browser
//! sends cookies with cross-site forms, so this stops request forgery).
//!
//! Tokens are checked with exactly the configured algorithm and key, one key
//! per role; `exp` and `nbf` are enforced when present, with no leeway. The
//! claims are `mercure.publish`, `mercure.subscribe` (topic selectors) and
//! `mercure.payload`; the namespaced `https://mercure.rocks/` claim is
//! accepted as well. The publish and subscribe handlers in
//! [`routes`](super::routes) are the only users.

use std::{
    str::FromStr,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use actix_web::{HttpRequest, http::header};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode};
use serde::Deserialize;
use serde_json::Value;

use super::topic::TopicSelector;
use crate::config::MercureSettings;

/// Name of the cookie a browser carries its token in.
pub const COOKIE_NAME: &str = "mercureAuthorization";
/// Name of the query parameter that may carry a token.
pub const QUERY_PARAMETER: &str = "authorization";
/// Most selectors one claim may list (as in the reference hub).
pub const MAX_CLAIM_SELECTORS: usize = 1000;

/// Which key checks a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Publisher,
    Subscriber,
}

/// Why a presented token was refused (always answered 401).
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("invalid \"Authorization\" HTTP header")]
    InvalidHeader,
    #[error("invalid \"authorization\" query parameter")]
    InvalidQuery,
    #[error("an \"Origin\" or a \"Referer\" HTTP header must be present to publish with a cookie")]
    NoOrigin,
    #[error("origin {0:?} is not allowed to publish with a cookie")]
    OriginNotAllowed(String),
    #[error("invalid JWT: {0}")]
    InvalidToken(String),
    #[error("no key is configured for this role")]
    NoKey,
}

/// What a valid token grants.
#[derive(Debug, Clone, Default)]
pub struct Claims {
    /// `mercure.publish`: topics the bearer may publish to (`None`: none).
    pub publish: Option<Vec<TopicSelector>>,
    /// `mercure.subscribe`: topics whose private updates the bearer may read.
    pub subscribe: Option<Vec<TopicSelector>>,
    /// `mercure.payload`, shown in subscription events and the API.
    pub payload: Option<Value>,
    /// `exp`: a subscriber's stream ends then.
    pub expires_at: Option<SystemTime>,
}

#[derive(Debug, Deserialize)]
struct RawClaims {
    mercure: Option<MercureClaim>,
    #[serde(rename = "https://mercure.rocks/")]
    namespaced: Option<MercureClaim>,
    exp: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
struct MercureClaim {
    publish: Option<Vec<String>>,
    subscribe: Option<Vec<String>>,
    payload: Option<Value>,
}

/// Checks tokens with the configured keys; built once at start.
pub struct TokenChecker {
    publisher: Option<DecodingKey>,
    subscriber: Option<DecodingKey>,
    validation: Validation,
    publish_origins: Vec<String>,
}

impl TokenChecker {
    /// Reads the keys; an unknown algorithm or unreadable PEM key is an error.
    pub fn from_settings(settings: &MercureSettings) -> Result<Self, String> {
        let algorithm = Algorithm::from_str(&settings.jwt_algorithm)
            .map_err(|_| format!("unknown jwt_algorithm {:?}", settings.jwt_algorithm))?;
        let key = |text: &str, name: &str| -> Result<Option<DecodingKey>, String> {
            if text.is_empty() {
                return Ok(None);
            }
            let key = match algorithm {
                Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
                    DecodingKey::from_secret(text.as_bytes())
                }
                Algorithm::RS256 | Algorithm::RS384 | Algorithm::RS512 => {
                    DecodingKey::from_rsa_pem(text.as_bytes())
                }
                Algorithm::ES256 | Algorithm::ES384 => DecodingKey::from_ec_pem(text.as_bytes()),
                other => return Err(format!("jwt_algorithm {other:?} is not supported")),
            };
            key.map(Some)
                .map_err(|err| format!("{name} is not a valid PEM public key: {err}"))
        };
        let mut validation = Validation::new(algorithm);
        validation.set_required_spec_claims::<&str>(&[]);
        validation.validate_aud = false;
        validation.validate_nbf = true;
        validation.validate_exp = true;
        validation.leeway = 0;
        Ok(Self {
            publisher: key(&settings.publisher_jwt_key, "publisher_jwt_key")?,
            subscriber: key(&settings.subscriber_jwt_key, "subscriber_jwt_key")?,
            validation,
            publish_origins: settings.publish_origins.clone(),
        })
    }

    /// Whether tokens of this role are checked at all.
    pub fn has_key(&self, role: Role) -> bool {
        match role {
            Role::Publisher => self.publisher.is_some(),
            Role::Subscriber => self.subscriber.is_some(),
        }
    }

    /// The claims of the token `req` presents; `Ok(None)` when it presents none.
    pub fn authorize(
        &self,
        req: &HttpRequest,
        query_tokens: &[String],
        role: Role,
    ) -> Result<Option<Claims>, AuthError> {
        match self.presented_token(req, query_tokens, role)? {
            Some(token) => self.check(&token, role).map(Some),
            None => Ok(None),
        }
    }

    fn presented_token(
        &self,
        req: &HttpRequest,
        query_tokens: &[String],
        role: Role,
    ) -> Result<Option<String>, AuthError> {
        let mut headers = req.headers().get_all(header::AUTHORIZATION);
        if let Some(first) = headers.next() {
            let value = first.to_str().map_err(|_| AuthError::InvalidHeader)?;
            if headers.next().is_some() || value.len() < 48 {
                return Err(AuthError::InvalidHeader);
            }
            let token = value
                .strip_prefix("Bearer ")
                .ok_or(AuthError::InvalidHeader)?;
            return Ok(Some(token.to_owned()));
        }
        if !query_tokens.is_empty() {
            if query_tokens.len() != 1 || query_tokens[0].len() < 41 {
                return Err(AuthError::InvalidQuery);
            }
            return Ok(Some(query_tokens[0].clone()));
        }
        let Some(cookie) = req.cookie(COOKIE_NAME) else {
            return Ok(None);
        };
        if role == Role::Publisher {
            self.check_origin(req)?;
        }
        Ok(Some(cookie.value().to_owned()))
    }

    /// A cookie-authenticated publish must come from an allowed origin.
    fn check_origin(&self, req: &HttpRequest) -> Result<(), AuthError> {
        let header_text = |name| {
            req.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .filter(|v| !v.is_empty())
        };
        let origin = match header_text(header::ORIGIN) {
            Some(origin) => origin.to_owned(),
            None => {
                let referer = header_text(header::REFERER).ok_or(AuthError::NoOrigin)?;
                origin_of(referer).ok_or(AuthError::NoOrigin)?
            }
        };
        if self
            .publish_origins
            .iter()
            .any(|allowed| allowed == "*" || *allowed == origin)
        {
            Ok(())
        } else {
            Err(AuthError::OriginNotAllowed(origin))
        }
    }

    /// Verifies signature, algorithm, `exp` and `nbf`, and reads the claims.
    pub fn check(&self, token: &str, role: Role) -> Result<Claims, AuthError> {
        let key = match role {
            Role::Publisher => self.publisher.as_ref(),
            Role::Subscriber => self.subscriber.as_ref(),
        }
        .ok_or(AuthError::NoKey)?;
        let data = decode::<RawClaims>(token, key, &self.validation)
            .map_err(|err| AuthError::InvalidToken(err.to_string()))?;
        let raw = data.claims;
        let claim = raw.namespaced.or(raw.mercure).unwrap_or_default();
        let selectors = |list: Option<Vec<String>>| -> Result<_, AuthError> {
            match list {
                Some(list) if list.len() > MAX_CLAIM_SELECTORS => Err(AuthError::InvalidToken(
                    format!("more than {MAX_CLAIM_SELECTORS} topic selectors"),
                )),
                Some(list) => Ok(Some(
                    list.iter()
                        .map(|s| TopicSelector::new(s))
                        .collect::<Vec<_>>(),
                )),
                None => Ok(None),
            }
        };
        Ok(Claims {
            publish: selectors(claim.publish)?,
            subscribe: selectors(claim.subscribe)?,
            payload: claim.payload.filter(|p| !p.is_null()),
            expires_at: raw
                .exp
                .filter(|exp| exp.is_finite() && *exp >= 0.0)
                .map(|exp| UNIX_EPOCH + Duration::from_secs_f64(exp.min(1e11))),
        })
    }
}

/// `scheme://host[:port]` of a URL.
fn origin_of(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let host = rest.split(['/', '?', '#']).next()?;
    (!scheme.is_empty() && !host.is_empty()).then(|| format!("{scheme}://{host}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;
    use jsonwebtoken::{EncodingKey, Header, encode};

    fn checker() -> TokenChecker {
        TokenChecker::from_settings(&Settings::defaults().mercure).expect("defaults are valid")
    }

    fn token(claims: serde_json::Value, key: &str) -> String {
        encode(
            &Header::default(),
            &claims,
            &EncodingKey::from_secret(key.as_bytes()).expect("a secret"),
        )
        .expect("encodes")
    }

    /// Mercure's documented development token is accepted by the defaults.
    #[test]
    fn development_token_is_accepted() {
        let claims = checker()
            .check(
                &token(
                    serde_json::json!({"mercure": {"publish": ["*"], "subscribe": ["https://example.com/{id}"], "payload": {"u": 1}}}),
                    crate::config::MERCURE_DEVELOPMENT_KEY,
                ),
                Role::Publisher,
            )
            .expect("valid");
        assert!(claims.publish.unwrap()[0].matches("anything"));
        assert!(claims.subscribe.unwrap()[0].matches("https://example.com/1"));
        assert_eq!(claims.payload, Some(serde_json::json!({"u": 1})));
    }

    /// Wrong key, expired tokens and other algorithms are refused.
    #[test]
    fn bad_tokens_are_refused() {
        let checker = checker();
        let wrong_key = token(serde_json::json!({"mercure": {}}), "another-key");
        assert!(checker.check(&wrong_key, Role::Subscriber).is_err());
        let expired = token(
            serde_json::json!({"exp": 1000, "mercure": {}}),
            crate::config::MERCURE_DEVELOPMENT_KEY,
        );
        assert!(checker.check(&expired, Role::Subscriber).is_err());
        let hs512 = encode(
            &Header::new(Algorithm::HS512),
            &serde_json::json!({"mercure": {}}),
            &EncodingKey::from_secret(crate::config::MERCURE_DEVELOPMENT_KEY.as_bytes())
                .expect("a secret"),
        )
        .unwrap();
        assert!(checker.check(&hs512, Role::Subscriber).is_err());
        assert!(checker.check("not.a.token", Role::Subscriber).is_err());
    }

    /// Origins come from Origin, or from the Referer's scheme and host.
    #[test]
    fn origin_from_referer() {
        assert_eq!(
            origin_of("https://app.example.com:8443/page?x=1").as_deref(),
            Some("https://app.example.com:8443")
        );
        assert_eq!(origin_of("nonsense"), None);
    }
}
