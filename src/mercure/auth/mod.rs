//! Mercure authorization: finding the access token a request presents,
//! checking it, and reading what it grants.
//!
//! A token travels, by precedence (RFC 6750 and the spec):
//! 1. the `Authorization: Bearer …` header (scheme in any case): when it is
//!    there, any cookie is ignored;
//! 2. compatibility mode only, the 0.x `authorization` query parameter.
//!    Otherwise a token in the URL (`authorization`, `access_token`) is
//!    refused: RFC 9700 forbids it, URLs end up in logs;
//! 3. the `mercure.cookie_name` cookie (`__Secure-mercure_access_token`),
//!    and in compatibility mode the 0.x `mercureAuthorization` cookie. A
//!    cookie on a `POST` is accepted only from the hub's own origin or one
//!    of `mercure.publish_origins` (`Origin`, else the `Referer`'s origin;
//!    neither is a refusal): a browser sends cookies with cross-site forms,
//!    so this stops request forgery.
//!
//! Parts: [`issuers`] (trusted issuers, their keys, signature and
//! registered-claim checks), [`jwks`] (JWK Sets), [`claims`] (what the
//! token grants), [`error`] (the two kinds of refusal).

pub mod claims;
pub mod error;
pub mod issuers;
pub mod jwks;

use actix_web::{HttpRequest, http::header};
use log::info;
use url::Url;

pub use claims::Claims;
pub use error::AuthError;
use issuers::Issuers;

use super::identity::HubIdentity;
use crate::config::MercureSettings;

/// The 0.x cookie, read in compatibility mode after `mercure.cookie_name`.
pub const LEGACY_COOKIE: &str = "mercureAuthorization";
/// The 0.x query parameter carrying a token (compatibility mode only).
pub const LEGACY_QUERY_PARAMETER: &str = "authorization";
/// RFC 6750's query parameter, which RFC 9700 and the spec forbid.
pub const ACCESS_TOKEN_PARAMETER: &str = "access_token";
/// The shortest plausible compact JWS (as the reference hub: anything
/// shorter is garbage).
const MIN_TOKEN_LEN: usize = 41;

/// Which key checks a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Publisher,
    Subscriber,
}

/// Checks tokens; built once at start.
pub struct TokenChecker {
    issuers: Issuers,
    compatibility: bool,
    cookie_name: String,
    publish_origins: Vec<String>,
}

impl TokenChecker {
    /// Reads every issuer's keys; a key that does not parse, a file that
    /// cannot be read or a JWK Set that cannot be fetched is an error. The
    /// development key is left out unless `accept_development_key`.
    pub fn from_settings(
        settings: &MercureSettings,
        accept_development_key: bool,
    ) -> Result<Self, String> {
        Ok(Self {
            issuers: Issuers::from_settings(settings, accept_development_key)?,
            compatibility: settings.compatibility(),
            cookie_name: settings.cookie_name.clone(),
            publish_origins: settings.publish_origins.clone(),
        })
    }

    /// Whether tokens of this role are checked at all.
    pub fn verifies(&self, role: Role) -> bool {
        self.issuers.verifies(role)
    }

    /// The issuers advertised in the protected resource metadata.
    pub fn authorization_servers(&self) -> Vec<String> {
        self.issuers.authorization_servers()
    }

    /// The claims of the token `req` presents, `Ok(None)` when it presents
    /// none. `query` are the URL's query pairs.
    pub fn authorize(
        &self,
        req: &HttpRequest,
        query: &[(String, String)],
        role: Role,
        hub: &HubIdentity,
    ) -> Result<Option<Claims>, AuthError> {
        let Some(token) = self.presented_token(req, query, role, &hub.url)? else {
            return Ok(None);
        };
        let checked = self
            .issuers
            .verify(&token, role, &hub.resource)
            .and_then(|claims| {
                Claims::read(&claims, &hub.base, self.compatibility).map_err(AuthError::token)
            });
        if let Err(AuthError::InvalidToken(why)) = &checked {
            // Actionable for operators (a migration's wrong aud, typ or
            // iss), never told to the client.
            info!("mercure token refused role={role:?} reason={why}");
        }
        checked.map(Some)
    }

    fn presented_token(
        &self,
        req: &HttpRequest,
        query: &[(String, String)],
        role: Role,
        hub: &Url,
    ) -> Result<Option<String>, AuthError> {
        let in_url: Vec<&(String, String)> = query
            .iter()
            .filter(|(name, _)| name == ACCESS_TOKEN_PARAMETER || name == LEGACY_QUERY_PARAMETER)
            .collect();
        let legacy_query = self.compatibility
            && in_url
                .iter()
                .all(|(name, _)| name == LEGACY_QUERY_PARAMETER);
        if !in_url.is_empty() && !legacy_query {
            return Err(AuthError::InvalidRequest(format!(
                "access tokens must not be sent in the URL (RFC 9700): send an Authorization: \
                 Bearer header, or the {} cookie",
                self.cookie_name
            )));
        }
        let mut headers = req.headers().get_all(header::AUTHORIZATION);
        if let Some(first) = headers.next() {
            let invalid =
                || AuthError::InvalidRequest("invalid \"Authorization\" HTTP header".into());
            let value = first.to_str().map_err(|_| invalid())?;
            if headers.next().is_some() || value.len() < 7 + MIN_TOKEN_LEN {
                return Err(invalid());
            }
            // RFC 9110: the auth scheme is case-insensitive.
            let token = value
                .get(..7)
                .filter(|scheme| scheme.eq_ignore_ascii_case("Bearer "))
                .map(|_| &value[7..])
                .ok_or_else(invalid)?;
            return Ok(Some(token.to_owned()));
        }
        if !in_url.is_empty() {
            if in_url.len() != 1 || in_url[0].1.len() < MIN_TOKEN_LEN {
                return Err(AuthError::InvalidRequest(
                    "invalid \"authorization\" query parameter".into(),
                ));
            }
            return Ok(Some(in_url[0].1.clone()));
        }
        let cookie = req.cookie(&self.cookie_name).or_else(|| {
            self.compatibility
                .then(|| req.cookie(LEGACY_COOKIE))
                .flatten()
        });
        let Some(cookie) = cookie else {
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
        let no_origin = || {
            AuthError::InvalidRequest(
                "an \"Origin\" or a \"Referer\" HTTP header must be present to publish with a \
                 cookie"
                    .into(),
            )
        };
        let origin = match header_text(header::ORIGIN) {
            Some(origin) => origin.to_owned(),
            None => {
                let referer = header_text(header::REFERER).ok_or_else(no_origin)?;
                Url::parse(referer)
                    .ok()
                    .filter(Url::has_host)
                    .map(|url| url.origin().ascii_serialization())
                    .ok_or_else(no_origin)?
            }
        };
        let same_origin = Url::parse(&origin).is_ok_and(|url| {
            url.origin().ascii_serialization() == hub.origin().ascii_serialization()
        });
        let listed = self
            .publish_origins
            .iter()
            .any(|allowed| allowed == "*" || *allowed == origin);
        if same_origin || listed {
            Ok(())
        } else {
            Err(AuthError::InvalidRequest(format!(
                "origin {origin:?} is not allowed to publish with a cookie \
                 (mercure.publish_origins)"
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{MERCURE_DEVELOPMENT_KEY, Settings};
    use actix_web::{cookie::Cookie, test::TestRequest};
    use jsonwebtoken::{EncodingKey, Header, encode};
    use serde_json::{Value, json};

    fn checker(compatibility: bool) -> TokenChecker {
        let mut settings = Settings::defaults().mercure;
        if compatibility {
            settings.protocol_version_compatibility = 8;
        }
        TokenChecker::from_settings(&settings, true).expect("defaults are valid")
    }

    fn hub() -> HubIdentity {
        let req = TestRequest::default()
            .insert_header(("host", "hub.test"))
            .to_http_request();
        HubIdentity::of(&req, "", &crate::config::Settings::defaults().limits)
    }

    /// A 1.0 access token from the development issuer for `hub()`.
    fn token(details: Value) -> String {
        let header = Header {
            typ: Some("at+jwt".into()),
            ..Header::default()
        };
        let claims = json!({"iss": "https://localhost", "aud": hub().resource,
            "exp": 4102444800u64, "authorization_details": details});
        encode(
            &header,
            &claims,
            &EncodingKey::from_secret(MERCURE_DEVELOPMENT_KEY.as_bytes()).expect("a secret"),
        )
        .expect("encodes")
    }

    fn publishes(topic: &str) -> String {
        token(json!([{"type": claims::DETAIL_TYPE, "actions": ["publish"],
            "topics": [{"match": topic}]}]))
    }

    fn granted(
        checker: &TokenChecker,
        req: &HttpRequest,
        query: &[(String, String)],
    ) -> Result<Option<String>, AuthError> {
        checker
            .authorize(req, query, Role::Subscriber, &hub())
            .map(|c| c.and_then(|c| c.publish.first().map(|s| s.as_str().to_owned())))
    }

    /// The header wins over the cookie, its scheme in any case; the
    /// configured cookie is read; the 0.x cookie only in compatibility mode.
    #[test]
    fn token_sources() {
        let modern = checker(false);
        let (good, other) = (publishes("good"), publishes("other"));
        let req = TestRequest::default()
            .insert_header(("authorization", format!("bEARER {good}")))
            .cookie(Cookie::new("__Secure-mercure_access_token", other.clone()))
            .to_http_request();
        assert_eq!(granted(&modern, &req, &[]), Ok(Some("good".into())));
        let req = TestRequest::default()
            .insert_header(("authorization", format!("Basic {good}")))
            .to_http_request();
        assert!(matches!(
            granted(&modern, &req, &[]),
            Err(AuthError::InvalidRequest(_))
        ));
        let req = TestRequest::default()
            .cookie(Cookie::new("__Secure-mercure_access_token", other.clone()))
            .to_http_request();
        assert_eq!(granted(&modern, &req, &[]), Ok(Some("other".into())));
        let legacy = TestRequest::default()
            .cookie(Cookie::new(LEGACY_COOKIE, other))
            .to_http_request();
        assert_eq!(granted(&modern, &legacy, &[]), Ok(None));
        assert_eq!(
            granted(&checker(true), &legacy, &[]),
            Ok(Some("other".into()))
        );
    }

    /// A token in the URL is refused in 1.0 mode; compatibility mode reads
    /// the 0.x `authorization` parameter, never `access_token`.
    #[test]
    fn tokens_in_the_url() {
        let good = publishes("good");
        let req = TestRequest::default().to_http_request();
        let query = |name: &str| vec![(name.to_owned(), good.clone())];
        for name in [LEGACY_QUERY_PARAMETER, ACCESS_TOKEN_PARAMETER] {
            assert!(matches!(
                granted(&checker(false), &req, &query(name)),
                Err(AuthError::InvalidRequest(_))
            ));
        }
        let compat = checker(true);
        assert_eq!(
            granted(&compat, &req, &query(LEGACY_QUERY_PARAMETER)),
            Ok(Some("good".into()))
        );
        assert!(granted(&compat, &req, &query(ACCESS_TOKEN_PARAMETER)).is_err());
    }

    /// A cookie publish is accepted from the hub's own origin (Origin, or
    /// the Referer's origin), refused from another or with neither.
    #[test]
    fn cookie_publish_from_the_same_origin() {
        let checker = checker(false);
        let cookie = Cookie::new("__Secure-mercure_access_token", publishes("*"));
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
        assert!(publish(("origin", "https://hub.test")).is_err());
        assert!(publish(("origin", "http://evil.test")).is_err());
        assert!(matches!(
            publish(("x-nothing", "1")),
            Err(AuthError::InvalidRequest(_))
        ));
    }

    /// An invalid token is an invalid token, whatever the reason.
    #[test]
    fn bad_tokens_are_invalid_tokens() {
        let req = TestRequest::default()
            .insert_header(("authorization", format!("Bearer {}", "x".repeat(60))))
            .to_http_request();
        assert!(matches!(
            granted(&checker(false), &req, &[]),
            Err(AuthError::InvalidToken(_))
        ));
    }
}
