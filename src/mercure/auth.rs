//! Mercure authorization: finding the JWT a request presents and checking it.
//!
//! A token travels, in this order of precedence (as in the reference hub
//! and draft-08), in the `Authorization: Bearer …` header (scheme compared
//! case-insensitively), the `authorization` or `access_token` query
//! parameter, or the `mercureAuthorization` cookie, else the
//! `mercureAccessToken` cookie. A cookie on a `POST` is accepted only from
//! the hub's own origin or an origin in `mercure.publish_origins` (a
//! browser sends cookies with cross-site forms, so this stops request
//! forgery).
//!
//! Tokens are checked with exactly the configured algorithm and key, one key
//! per role; `exp` and `nbf` are enforced when present, with no leeway
//! (`typ` and `aud` are not checked). Two claim shapes grant rights, and a
//! token may carry both (their rights add up):
//! - `mercure.publish`, `mercure.subscribe` (topic selectors as in a
//!   `topic` parameter) and `mercure.payload`; the namespaced
//!   `https://mercure.rocks/` claim is accepted as well.
//! - draft-08 `authorization_details`: entries of type `mercure` with
//!   `actions` (`publish`, `subscribe`), `topics` (`{"match", "matchType"}`,
//!   `Exact` by default or `URLPattern`) and an optional `payload`. Entries
//!   of other types are ignored; a `mercure` entry that does not parse makes
//!   the whole token invalid (no partial acceptance).
//!
//! The publish, subscribe and subscriptions handlers in
//! [`subscribe`](super::subscribe), [`publish`](super::publish) and
//! [`subscriptions`](super::subscriptions) are the only users.

use std::{
    str::FromStr,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use actix_web::{HttpRequest, http::header};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode};
use serde::Deserialize;
use serde_json::Value;
use url::Url;

use super::topic::{MatchType, TopicSelector};
use crate::config::MercureSettings;

/// Names of the cookies a browser may carry its token in, by precedence:
/// the reference hub's, then draft-08's.
pub const COOKIE_NAMES: [&str; 2] = ["mercureAuthorization", "mercureAccessToken"];
/// Names of the query parameters that may carry a token (one slot of the
/// precedence: at most one of them, once): the reference hub's and
/// draft-08's (RFC 6750).
pub const QUERY_PARAMETERS: [&str; 2] = ["authorization", "access_token"];
/// Most selectors one claim may list (as in the reference hub); also the
/// most topics of all `authorization_details` entries together.
pub const MAX_CLAIM_SELECTORS: usize = 1000;
/// Most `mercure` entries in `authorization_details`.
pub const MAX_AUTHORIZATION_DETAILS: usize = 100;

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
    /// `mercure.publish` and the `publish` authorization details: topics the
    /// bearer may publish to (`None`: none).
    pub publish: Option<Vec<TopicSelector>>,
    /// `mercure.subscribe` and the `subscribe` authorization details: topics
    /// whose private updates the bearer may read.
    pub subscribe: Option<Vec<TopicSelector>>,
    /// Payloads shown in subscription events and the API, each for the
    /// subscriptions its selectors match; the first match wins
    /// ([`payload_for`](Self::payload_for)). `mercure.payload` comes first
    /// and covers every subscription.
    pub payloads: Vec<ClaimPayload>,
    /// `exp`: a subscriber's stream ends then.
    pub expires_at: Option<SystemTime>,
    /// `sub`: who the bearer is; publishers with one have their own rate
    /// limit instead of their IP's.
    pub subject: Option<String>,
}

/// A payload and the subscriptions it is for.
#[derive(Debug, Clone)]
pub struct ClaimPayload {
    pub selectors: Vec<TopicSelector>,
    pub payload: Value,
}

impl Claims {
    /// The payload of a subscription whose own matcher is `matcher`: the
    /// first payload whose selectors match it as if it were a topic
    /// (draft-08, "Payloads").
    pub fn payload_for(&self, matcher: &str) -> Option<Value> {
        self.payloads
            .iter()
            .find(|p| p.selectors.iter().any(|s| s.matches(matcher)))
            .map(|p| p.payload.clone())
    }
}

#[derive(Debug, Deserialize)]
struct RawClaims {
    mercure: Option<MercureClaim>,
    #[serde(rename = "https://mercure.rocks/")]
    namespaced: Option<MercureClaim>,
    authorization_details: Option<Vec<Value>>,
    exp: Option<f64>,
    sub: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct MercureClaim {
    publish: Option<Vec<String>>,
    subscribe: Option<Vec<String>>,
    payload: Option<Value>,
}

/// A draft-08 authorization detail of type `mercure`.
#[derive(Debug, Deserialize)]
struct MercureDetail {
    actions: Vec<String>,
    topics: Vec<TopicMatcher>,
    #[serde(default)]
    payload: Option<Value>,
}

/// One entry of a detail's `topics`.
#[derive(Debug, Deserialize)]
struct TopicMatcher {
    #[serde(rename = "match")]
    matcher: String,
    #[serde(rename = "matchType")]
    match_type: Option<String>,
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

    /// The claims of the token `req` presents; `Ok(None)` when it presents
    /// none. `query_tokens` are the values of the [`QUERY_PARAMETERS`];
    /// `hub` is the hub's URL as this request addressed it (the base of
    /// relative URL patterns, and the hub's own origin).
    pub fn authorize(
        &self,
        req: &HttpRequest,
        query_tokens: &[String],
        role: Role,
        hub: &Url,
    ) -> Result<Option<Claims>, AuthError> {
        match self.presented_token(req, query_tokens, role, hub)? {
            Some(token) => self.check(&token, role, hub).map(Some),
            None => Ok(None),
        }
    }

    fn presented_token(
        &self,
        req: &HttpRequest,
        query_tokens: &[String],
        role: Role,
        hub: &Url,
    ) -> Result<Option<String>, AuthError> {
        let mut headers = req.headers().get_all(header::AUTHORIZATION);
        if let Some(first) = headers.next() {
            let value = first.to_str().map_err(|_| AuthError::InvalidHeader)?;
            if headers.next().is_some() || value.len() < 48 {
                return Err(AuthError::InvalidHeader);
            }
            // RFC 7235: the auth scheme is case-insensitive.
            let token = value
                .get(..7)
                .filter(|scheme| scheme.eq_ignore_ascii_case("Bearer "))
                .map(|_| &value[7..])
                .ok_or(AuthError::InvalidHeader)?;
            return Ok(Some(token.to_owned()));
        }
        if !query_tokens.is_empty() {
            if query_tokens.len() != 1 || query_tokens[0].len() < 41 {
                return Err(AuthError::InvalidQuery);
            }
            return Ok(Some(query_tokens[0].clone()));
        }
        let Some(cookie) = COOKIE_NAMES.iter().find_map(|name| req.cookie(name)) else {
            return Ok(None);
        };
        if role == Role::Publisher {
            self.check_origin(req, hub)?;
        }
        Ok(Some(cookie.value().to_owned()))
    }

    /// A cookie-authenticated publish must come from the hub's own origin
    /// or from one in `mercure.publish_origins`.
    fn check_origin(&self, req: &HttpRequest, hub: &Url) -> Result<(), AuthError> {
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
        let same_origin = Url::parse(&origin).is_ok_and(|url| {
            url.origin().ascii_serialization() == hub.origin().ascii_serialization()
        });
        if same_origin
            || self
                .publish_origins
                .iter()
                .any(|allowed| allowed == "*" || *allowed == origin)
        {
            Ok(())
        } else {
            Err(AuthError::OriginNotAllowed(origin))
        }
    }

    /// Verifies signature, algorithm, `exp` and `nbf`, and reads the claims
    /// (relative URL patterns resolve against `hub`).
    pub fn check(&self, token: &str, role: Role, hub: &Url) -> Result<Claims, AuthError> {
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
        let mut claims = Claims {
            publish: selectors(claim.publish)?,
            subscribe: selectors(claim.subscribe)?,
            payloads: claim
                .payload
                .filter(|p| !p.is_null())
                .map(|payload| ClaimPayload {
                    selectors: vec![TopicSelector::Any],
                    payload,
                })
                .into_iter()
                .collect(),
            expires_at: raw
                .exp
                .filter(|exp| exp.is_finite() && *exp >= 0.0)
                .map(|exp| UNIX_EPOCH + Duration::from_secs_f64(exp.min(1e11))),
            subject: raw.sub.filter(|sub| !sub.is_empty()),
        };
        if let Some(details) = raw.authorization_details {
            add_authorization_details(&mut claims, details, hub)?;
        }
        Ok(claims)
    }
}

/// Adds the rights of draft-08 `authorization_details` to `claims`.
fn add_authorization_details(
    claims: &mut Claims,
    details: Vec<Value>,
    hub: &Url,
) -> Result<(), AuthError> {
    let invalid = |why: String| AuthError::InvalidToken(format!("authorization_details: {why}"));
    let mut details_seen = 0;
    let mut topics_seen = 0;
    for entry in details {
        let kind = entry
            .get("type")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid("every entry needs a string \"type\"".into()))?;
        if kind != "mercure" {
            // RFC 9396: other types are for other resource servers.
            continue;
        }
        details_seen += 1;
        if details_seen > MAX_AUTHORIZATION_DETAILS {
            return Err(invalid(format!(
                "more than {MAX_AUTHORIZATION_DETAILS} mercure entries"
            )));
        }
        let detail: MercureDetail =
            serde_json::from_value(entry).map_err(|err| invalid(err.to_string()))?;
        if detail.actions.is_empty() || detail.topics.is_empty() {
            return Err(invalid(
                "\"actions\" and \"topics\" must not be empty".into(),
            ));
        }
        topics_seen += detail.topics.len();
        if topics_seen > MAX_CLAIM_SELECTORS {
            return Err(invalid(format!(
                "more than {MAX_CLAIM_SELECTORS} topic matchers"
            )));
        }
        let selectors = detail
            .topics
            .iter()
            .map(|topic| {
                let match_type = match topic.match_type.as_deref() {
                    None => MatchType::Exact,
                    Some(name) => MatchType::from_name(name)
                        .ok_or_else(|| invalid(format!("unknown matchType {name:?}")))?,
                };
                TopicSelector::typed(match_type, &topic.matcher, hub)
                    .map_err(|err| invalid(err.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut subscribe = false;
        for action in &detail.actions {
            let granted = match action.as_str() {
                "publish" => &mut claims.publish,
                "subscribe" => {
                    subscribe = true;
                    &mut claims.subscribe
                }
                other => return Err(invalid(format!("unknown action {other:?}"))),
            };
            granted
                .get_or_insert_with(Vec::new)
                .extend(selectors.iter().cloned());
        }
        match detail.payload {
            None | Some(Value::Null) => {}
            Some(payload) if payload.is_object() => {
                if subscribe {
                    claims.payloads.push(ClaimPayload { selectors, payload });
                }
            }
            Some(_) => return Err(invalid("\"payload\" must be an object".into())),
        }
    }
    Ok(())
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
    use crate::{config::Settings, mercure::topic};
    use jsonwebtoken::{EncodingKey, Header, encode};

    fn checker() -> TokenChecker {
        TokenChecker::from_settings(&Settings::defaults().mercure).expect("defaults are valid")
    }

    fn hub() -> Url {
        Url::parse("http://hub.test/.well-known/mercure").expect("a URL")
    }

    fn dev_token(claims: serde_json::Value) -> String {
        token(claims, crate::config::MERCURE_DEVELOPMENT_KEY)
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
                &hub(),
            )
            .expect("valid");
        assert!(claims.publish.as_ref().unwrap()[0].matches("anything"));
        assert!(claims.subscribe.as_ref().unwrap()[0].matches("https://example.com/1"));
        assert_eq!(
            claims.payload_for("any-subscription"),
            Some(serde_json::json!({"u": 1}))
        );
    }

    /// draft-08 `authorization_details`: actions grant the listed matchers
    /// (Exact by default, URLPattern resolved against the hub), payloads
    /// go to the subscriptions their matchers cover, first match wins.
    #[test]
    fn authorization_details_grant_rights() {
        let claims = checker()
            .check(
                &dev_token(serde_json::json!({"authorization_details": [
                    {"type": "openid_credential", "whatever": 1},
                    {"type": "mercure", "actions": ["publish", "subscribe"],
                     "topics": [{"match": "https://example.com/books/{id}"}],
                     "payload": {"n": 1}},
                    {"type": "mercure", "actions": ["subscribe"],
                     "topics": [{"match": "/users/:id", "matchType": "URLPattern"}],
                     "payload": {"n": 2}},
                    {"type": "mercure", "actions": ["subscribe"],
                     "topics": [{"match": "*"}], "payload": {"n": 3}}
                ]})),
                Role::Subscriber,
                &hub(),
            )
            .expect("valid");
        let publish = claims.publish.as_ref().expect("publish rights");
        assert!(publish[0].matches("https://example.com/books/{id}"));
        assert!(!publish[0].matches("https://example.com/books/1"));
        let subscribe = claims.subscribe.as_ref().expect("subscribe rights");
        assert!(topic::any_matches(
            subscribe,
            &["http://hub.test/users/7".into()]
        ));
        assert!(topic::any_matches(subscribe, &["/users/7".into()]));
        let payload = |m: &str| claims.payload_for(m).map(|p| p["n"].clone());
        assert_eq!(payload("https://example.com/books/{id}"), Some(1.into()));
        assert_eq!(payload("http://hub.test/users/:id"), Some(2.into()));
        assert_eq!(payload("urn:other"), Some(3.into()));
    }

    /// A `mercure` detail that does not parse invalidates the whole token.
    #[test]
    fn malformed_authorization_details_are_refused() {
        let checker = checker();
        for details in [
            serde_json::json!([{"actions": ["publish"], "topics": [{"match": "*"}]}]),
            serde_json::json!([{"type": "mercure", "actions": [], "topics": [{"match": "*"}]}]),
            serde_json::json!([{"type": "mercure", "actions": ["publish"], "topics": []}]),
            serde_json::json!([{"type": "mercure", "actions": ["delete"], "topics": [{"match": "*"}]}]),
            serde_json::json!([{"type": "mercure", "actions": ["publish"], "topics": ["*"]}]),
            serde_json::json!([{"type": "mercure", "actions": ["publish"],
                "topics": [{"match": "x", "matchType": "exact"}]}]),
            serde_json::json!([{"type": "mercure", "actions": ["publish"],
                "topics": [{"match": "https://x/(", "matchType": "URLPattern"}]}]),
            serde_json::json!([{"type": "mercure", "actions": ["subscribe"],
                "topics": [{"match": "*"}], "payload": "text"}]),
        ] {
            let token = dev_token(serde_json::json!({"authorization_details": details}));
            assert!(
                matches!(
                    checker.check(&token, Role::Publisher, &hub()),
                    Err(AuthError::InvalidToken(_))
                ),
                "{details}"
            );
        }
    }

    /// Header scheme in any case; `access_token` like `authorization`; the
    /// `mercureAccessToken` cookie after `mercureAuthorization`.
    #[test]
    fn token_sources() {
        use actix_web::{cookie::Cookie, test::TestRequest};
        let checker = checker();
        let good = dev_token(serde_json::json!({"mercure": {"publish": ["good"]}}));
        let other = dev_token(serde_json::json!({"mercure": {"publish": ["other"]}}));
        let publishes = |req: &HttpRequest, query: &[String]| {
            checker
                .authorize(req, query, Role::Subscriber, &hub())
                .map(|c| c.and_then(|c| c.publish).map(|p| p[0].as_str().to_owned()))
        };
        let req = TestRequest::default()
            .insert_header(("authorization", format!("bEARER {good}")))
            .to_http_request();
        assert_eq!(publishes(&req, &[]), Ok(Some("good".into())));
        let req = TestRequest::default()
            .insert_header(("authorization", format!("Basic {good}")))
            .to_http_request();
        assert_eq!(publishes(&req, &[]), Err(AuthError::InvalidHeader));
        let req = TestRequest::default()
            .cookie(Cookie::new("mercureAccessToken", other.clone()))
            .to_http_request();
        assert_eq!(publishes(&req, &[]), Ok(Some("other".into())));
        assert_eq!(
            publishes(&req, std::slice::from_ref(&good)),
            Ok(Some("good".into()))
        );
        assert_eq!(
            publishes(&req, &[good.clone(), good.clone()]),
            Err(AuthError::InvalidQuery)
        );
        let req = TestRequest::default()
            .cookie(Cookie::new("mercureAccessToken", other))
            .cookie(Cookie::new("mercureAuthorization", good))
            .to_http_request();
        assert_eq!(publishes(&req, &[]), Ok(Some("good".into())));
    }

    /// A cookie publish is accepted from the hub's own origin (Origin, or
    /// the Referer's origin), refused from another.
    #[test]
    fn cookie_publish_from_the_same_origin() {
        use actix_web::{cookie::Cookie, test::TestRequest};
        let checker = checker();
        let cookie = Cookie::new(
            "mercureAuthorization",
            dev_token(serde_json::json!({"mercure": {"publish": ["*"]}})),
        );
        let publish = |header: (&str, &str)| {
            let req = TestRequest::post()
                .cookie(cookie.clone())
                .insert_header(header)
                .to_http_request();
            checker
                .authorize(&req, &[], Role::Publisher, &hub())
                .map(|c| c.is_some())
        };
        assert_eq!(publish(("origin", "http://hub.test")), Ok(true));
        assert_eq!(publish(("origin", "http://HUB.test:80")), Ok(true));
        assert_eq!(publish(("referer", "http://hub.test/page?x")), Ok(true));
        assert_eq!(
            publish(("origin", "https://hub.test")),
            Err(AuthError::OriginNotAllowed("https://hub.test".into()))
        );
        assert!(publish(("origin", "http://evil.test")).is_err());
        assert_eq!(publish(("x-nothing", "1")), Err(AuthError::NoOrigin));
    }

    /// Wrong key, expired tokens and other algorithms are refused.
    #[test]
    fn bad_tokens_are_refused() {
        let checker = checker();
        let wrong_key = token(serde_json::json!({"mercure": {}}), "another-key");
        assert!(checker.check(&wrong_key, Role::Subscriber, &hub()).is_err());
        let expired = token(
            serde_json::json!({"exp": 1000, "mercure": {}}),
            crate::config::MERCURE_DEVELOPMENT_KEY,
        );
        assert!(checker.check(&expired, Role::Subscriber, &hub()).is_err());
        let hs512 = encode(
            &Header::new(Algorithm::HS512),
            &serde_json::json!({"mercure": {}}),
            &EncodingKey::from_secret(crate::config::MERCURE_DEVELOPMENT_KEY.as_bytes())
                .expect("a secret"),
        )
        .unwrap();
        assert!(checker.check(&hs512, Role::Subscriber, &hub()).is_err());
        assert!(
            checker
                .check("not.a.token", Role::Subscriber, &hub())
                .is_err()
        );
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
