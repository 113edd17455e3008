//! The `[mercure]` section: the Mercure hub's settings, named like the
//! reference hub's Caddyfile directives so its documentation translates
//! (`resource_identifier`, `issuer` blocks as `[[mercure.issuers]]`,
//! `protocol_version_compatibility`, `cookie_name`, `publish_origins`), and
//! the rules no single field can express. Every key is documented in
//! `config/default.toml`; the keys themselves (PEM parsing, JWK Sets) are
//! read when the hub is built, so a key that does not parse stops the start
//! there.

use std::path::PathBuf;

use serde::Deserialize;

use super::ConfigError;

/// Mercure's documented development key, accepted only while
/// `mercure.allow_development_key` is set (see `config/default.toml`).
pub const MERCURE_DEVELOPMENT_KEY: &str = "!ChangeThisMercureHubJWTSecretKey!";

/// The protocol version `protocol_version_compatibility` may name: the 0.x
/// protocol (`topic=`, URI templates, the `mercure` claim) next to 1.0.
pub const COMPATIBLE_PROTOCOL_VERSION: u8 = 8;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MercureSettings {
    /// Serve the Mercure hub at `/.well-known/mercure`.
    pub enabled: bool,
    /// The hub's OAuth 2.0 resource identifier: the `aud` tokens must carry
    /// and the `resource` of the protected resource metadata. Empty: derived
    /// per request from the URL the client contacted.
    pub resource_identifier: String,
    /// `0`: the Mercure 1.0 protocol only. `8`: 0.x clients too (`topic=`,
    /// URI templates, the `mercure` claim, the `authorization` query
    /// parameter and `mercureAuthorization` cookie, tokens without `typ`,
    /// `aud`, `exp` or a matching `iss`).
    pub protocol_version_compatibility: u8,
    /// Trusted token issuers, each bound to its own keys.
    pub issuers: Vec<IssuerSettings>,
    /// Cookie in which browsers present their access token.
    pub cookie_name: String,
    /// Subscribers without a token are accepted (they get public updates).
    pub anonymous: bool,
    /// Subscription events and the `/.well-known/mercure/subscriptions` API.
    pub subscriptions: bool,
    /// Channel events become public Mercure updates on the channel's name
    /// (a second log write per event with a shared or durable log).
    pub channel_updates: bool,
    /// Accept the documented development key. Unset (the default): only
    /// while `auth.enabled` is false; with auth on, the keys that are the
    /// development key are left out (their tokens refused) and a warning
    /// says so. `true`: always. `false`: never, and the broker refuses to
    /// start while an issuer names it (production.toml).
    #[serde(default)]
    pub allow_development_key: Option<bool>,
    /// Origins allowed to publish with a token cookie, besides the hub's
    /// own (browsers; the check stops cross-site request forgery).
    pub publish_origins: Vec<String>,
    /// Deprecated (0.x): a publisher key of an implicit issuer, usable only
    /// with `protocol_version_compatibility = 8`.
    pub publisher_jwt_key: String,
    /// Deprecated (0.x): the implicit issuer's subscriber key.
    pub subscriber_jwt_key: String,
    /// Deprecated (0.x): the implicit issuer's one algorithm.
    pub jwt_algorithm: String,
}

/// One trusted issuer (`[[mercure.issuers]]`): the `iss` its tokens carry
/// and the keys that verify them, per role. A token is only ever checked
/// with the keys of the issuer it names.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerSettings {
    /// The exact `iss` value (e.g. your application's URL).
    pub id: String,
    /// Advertise it in the protected resource metadata
    /// (`authorization_servers`).
    #[serde(default)]
    pub authorization_server: bool,
    /// Verifies publisher tokens; absent: this issuer cannot publish.
    #[serde(default)]
    pub publisher: Option<VerifierSettings>,
    /// Verifies subscriber tokens; absent: this issuer cannot subscribe.
    #[serde(default)]
    pub subscriber: Option<VerifierSettings>,
}

/// The key material of one role of one issuer: exactly one of `jwt`,
/// `jwt_file` or `jwks_uri`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifierSettings {
    /// An HMAC secret or a PEM public key.
    #[serde(default)]
    pub jwt: String,
    /// A file holding the secret or PEM key (a trailing newline is ignored).
    #[serde(default)]
    pub jwt_file: Option<PathBuf>,
    /// The algorithm of `jwt`/`jwt_file`: HS256 by default for a secret,
    /// required (and not HS*) for a PEM key.
    #[serde(default)]
    pub algorithm: String,
    /// A JWK Set: `https://…` (fetched at start, refreshed) or `file://…`.
    #[serde(default)]
    pub jwks_uri: String,
    /// Algorithms accepted with `jwks_uri` (default: the asymmetric ones).
    #[serde(default)]
    pub algorithms: Vec<String>,
}

impl VerifierSettings {
    /// Whether it names the documented development key (as `jwt`, or as
    /// the content of `jwt_file`).
    pub fn is_development_key(&self) -> bool {
        let in_file = || {
            let path = self.jwt_file.as_ref()?;
            let text = std::fs::read_to_string(path).ok()?;
            Some(text.trim_end_matches(['\n', '\r']) == MERCURE_DEVELOPMENT_KEY)
        };
        self.jwt == MERCURE_DEVELOPMENT_KEY || in_file().unwrap_or(false)
    }
}

impl MercureSettings {
    /// Whether tokens signed with the development key are accepted, given
    /// whether `[auth]` is on (see [`Self::allow_development_key`]).
    pub fn accepts_development_key(&self, auth_enabled: bool) -> bool {
        self.allow_development_key.unwrap_or(!auth_enabled)
    }

    /// Whether some issuer (or a 0.x key) names the development key.
    pub fn names_development_key(&self) -> bool {
        self.issuers
            .iter()
            .flat_map(|i| [&i.publisher, &i.subscriber])
            .flatten()
            .any(VerifierSettings::is_development_key)
            || [&self.publisher_jwt_key, &self.subscriber_jwt_key]
                .iter()
                .any(|key| key.as_str() == MERCURE_DEVELOPMENT_KEY)
    }

    /// Whether 0.x clients are served too (`protocol_version_compatibility = 8`).
    pub fn compatibility(&self) -> bool {
        self.protocol_version_compatibility == COMPATIBLE_PROTOCOL_VERSION
    }

    /// Whether the deprecated top-level keys are set.
    pub fn legacy_keys(&self) -> bool {
        !self.publisher_jwt_key.is_empty() || !self.subscriber_jwt_key.is_empty()
    }

    /// Whether some issuer (or the deprecated keys) verifies this role.
    pub fn verifies_subscribers(&self) -> bool {
        !self.subscriber_jwt_key.is_empty() || self.issuers.iter().any(|i| i.subscriber.is_some())
    }

    fn verifies_publishers(&self) -> bool {
        !self.publisher_jwt_key.is_empty() || self.issuers.iter().any(|i| i.publisher.is_some())
    }

    /// A hub that anyone could publish to with a public key, an issuer
    /// without keys, or keys that cannot work are refused.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |why: String| Err(ConfigError::Inconsistent(format!("mercure: {why}")));
        if !self.enabled {
            return Ok(());
        }
        if ![0, COMPATIBLE_PROTOCOL_VERSION].contains(&self.protocol_version_compatibility) {
            return bad(format!(
                "protocol_version_compatibility = {} is not supported: use 0 (Mercure 1.0 only) \
                 or {COMPATIBLE_PROTOCOL_VERSION} (0.x clients too)",
                self.protocol_version_compatibility
            ));
        }
        if !self.resource_identifier.is_empty() {
            let url = url::Url::parse(&self.resource_identifier);
            if !url.is_ok_and(|u| matches!(u.scheme(), "https" | "http") && u.has_host()) {
                return bad(format!(
                    "resource_identifier {:?} must be an absolute http(s) URL, e.g. \
                     https://hub.example.com/.well-known/mercure",
                    self.resource_identifier
                ));
            }
        }
        let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.');
        if self.cookie_name.is_empty() || !self.cookie_name.chars().all(plain) {
            return bad("cookie_name must be a plain token (letters, digits, _ - .)".into());
        }
        if self.legacy_keys() && !self.compatibility() {
            return bad(
                "publisher_jwt_key and subscriber_jwt_key (0.x) work only with \
                 protocol_version_compatibility = 8, which relaxes token validation; move the \
                 keys into a [[mercure.issuers]] entry (id = the `iss` of your tokens) for \
                 Mercure 1.0, or set protocol_version_compatibility = 8 deliberately"
                    .into(),
            );
        }
        let mut ids: Vec<&str> = Vec::new();
        for issuer in &self.issuers {
            if issuer.id.is_empty() {
                return bad(
                    "every [[mercure.issuers]] entry needs an `id` (the `iss` value)".into(),
                );
            }
            if ids.contains(&issuer.id.as_str()) {
                return bad(format!("issuer {:?} is listed twice", issuer.id));
            }
            ids.push(&issuer.id);
            if issuer.publisher.is_none() && issuer.subscriber.is_none() {
                return bad(format!(
                    "issuer {:?} has neither a publisher nor a subscriber key",
                    issuer.id
                ));
            }
            for (role, verifier) in [
                ("publisher", &issuer.publisher),
                ("subscriber", &issuer.subscriber),
            ] {
                if let Some(verifier) = verifier {
                    verifier
                        .validate()
                        .or_else(|why| bad(format!("issuer {:?} {role}: {why}", issuer.id)))?;
                }
            }
        }
        if !self.verifies_publishers() {
            return bad(
                "no issuer has a publisher key: add a [[mercure.issuers]] entry with a \
                 `publisher` (see docs/mercure.md), or disable the hub with \
                 mercure.enabled = false"
                    .into(),
            );
        }
        if !self.verifies_subscribers() && !self.anonymous {
            return bad("no issuer has a subscriber key, so anonymous must be true".into());
        }
        if self.names_development_key() && self.allow_development_key == Some(false) {
            return bad(format!(
                "the development key {MERCURE_DEVELOPMENT_KEY} is public; configure your own \
                 [[mercure.issuers]] keys (e.g. `jwt_file`, or SSE_BROKER__MERCURE__ISSUERS)"
            ));
        }
        Ok(())
    }
}

/// Algorithms a JWK Set is checked with unless `algorithms` says otherwise:
/// the asymmetric ones, so a public key can never act as an HMAC secret.
pub const DEFAULT_JWKS_ALGORITHMS: [&str; 9] = [
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
];

/// Algorithms the hub verifies.
pub const SUPPORTED_ALGORITHMS: [&str; 12] = [
    "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256",
    "ES384", "EdDSA",
];

impl VerifierSettings {
    fn validate(&self) -> Result<(), String> {
        let sources = [
            !self.jwt.is_empty(),
            self.jwt_file.is_some(),
            !self.jwks_uri.is_empty(),
        ];
        if sources.iter().filter(|set| **set).count() != 1 {
            return Err("set exactly one of `jwt`, `jwt_file` or `jwks_uri`".into());
        }
        let unknown = |alg: &String| !SUPPORTED_ALGORITHMS.contains(&alg.as_str());
        if self.jwks_uri.is_empty() {
            if !self.algorithms.is_empty() {
                return Err(
                    "`algorithms` goes with `jwks_uri`; a key takes one `algorithm`".into(),
                );
            }
            if !self.algorithm.is_empty() && unknown(&self.algorithm) {
                return Err(format!(
                    "unknown algorithm {:?} (one of {})",
                    self.algorithm,
                    SUPPORTED_ALGORITHMS.join(", ")
                ));
            }
            if self.jwt.trim_start().starts_with("-----BEGIN") {
                check_pem_algorithm(&self.algorithm)?;
            }
            return Ok(());
        }
        if !self.algorithm.is_empty() {
            return Err("a JWK Set takes `algorithms` (a list), not `algorithm`".into());
        }
        if let Some(alg) = self.algorithms.iter().find(|alg| unknown(alg)) {
            return Err(format!("unknown algorithm {alg:?}"));
        }
        let scheme_ok = ["https://", "file://"]
            .iter()
            .any(|scheme| self.jwks_uri.starts_with(scheme));
        if !scheme_ok {
            return Err(format!(
                "jwks_uri {:?} must be an https:// URL or a file:// path",
                self.jwks_uri
            ));
        }
        Ok(())
    }
}

/// A PEM key is a public key: its algorithm must be stated and must not be
/// an HMAC one (the public key would then be a secret anyone can read).
pub fn check_pem_algorithm(algorithm: &str) -> Result<(), String> {
    if algorithm.is_empty() {
        return Err("a PEM key needs its `algorithm` (e.g. RS256, ES256, EdDSA)".into());
    }
    if algorithm.starts_with("HS") {
        return Err(format!(
            "{algorithm} with a PEM key would use the public key as a shared secret"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;

    fn issuer(publisher: VerifierSettings) -> IssuerSettings {
        IssuerSettings {
            id: "https://app.example".into(),
            authorization_server: false,
            publisher: Some(publisher),
            subscriber: None,
        }
    }

    fn key(text: &str) -> VerifierSettings {
        VerifierSettings {
            jwt: text.into(),
            ..Default::default()
        }
    }

    /// Production refuses Mercure's public development key.
    #[test]
    fn development_key_is_refused_in_production() {
        let mut settings = Settings::defaults().mercure;
        settings.allow_development_key = Some(false);
        let err = settings.validate().expect_err("development key refused");
        assert!(err.to_string().contains("development key"), "{err}");
        settings.issuers = vec![issuer(key("a-real-secret-of-enough-length"))];
        settings.validate().expect("a real key is fine");
    }

    /// The 0.x keys need compatibility mode; a hub needs a publisher key.
    #[test]
    fn legacy_keys_and_missing_issuers() {
        let mut settings = Settings::defaults().mercure;
        settings.publisher_jwt_key = "a-real-secret-of-enough-length".into();
        let err = settings.validate().expect_err("0.x keys alone refused");
        assert!(
            err.to_string().contains("protocol_version_compatibility"),
            "{err}"
        );
        settings.protocol_version_compatibility = 8;
        settings.validate().expect("valid in compatibility mode");
        settings.publisher_jwt_key.clear();
        settings.issuers.clear();
        let err = settings.validate().expect_err("no publisher key");
        assert!(err.to_string().contains("publisher key"), "{err}");
        settings.protocol_version_compatibility = 7;
        assert!(settings.validate().is_err());
    }

    /// One key source per role; PEM keys state a non-HMAC algorithm; JWK
    /// Sets come from https or a file.
    #[test]
    fn verifier_rules() {
        let pem = "-----BEGIN PUBLIC KEY-----\nMFkw\n-----END PUBLIC KEY-----";
        assert!(key(pem).validate().is_err());
        assert!(
            VerifierSettings {
                algorithm: "HS256".into(),
                ..key(pem)
            }
            .validate()
            .is_err()
        );
        VerifierSettings {
            algorithm: "ES256".into(),
            ..key(pem)
        }
        .validate()
        .expect("a PEM key with its algorithm");
        let jwks = |uri: &str| VerifierSettings {
            jwks_uri: uri.into(),
            ..Default::default()
        };
        jwks("https://idp.example/jwks.json")
            .validate()
            .expect("https");
        jwks("file:///etc/jwks.json").validate().expect("file");
        assert!(jwks("http://idp.example/jwks.json").validate().is_err());
        assert!(
            VerifierSettings {
                jwt: "x".into(),
                ..jwks("file:///k")
            }
            .validate()
            .is_err()
        );
        assert!(VerifierSettings::default().validate().is_err());
        assert!(
            VerifierSettings {
                algorithm: "none".into(),
                ..key("secret")
            }
            .validate()
            .is_err()
        );
    }

    /// A pinned resource identifier is an absolute URL.
    #[test]
    fn resource_identifier_is_a_url() {
        let mut settings = Settings::defaults().mercure;
        settings.resource_identifier = "/.well-known/mercure".into();
        assert!(settings.validate().is_err());
        settings.resource_identifier = "https://hub.example.com/.well-known/mercure".into();
        settings.validate().expect("absolute");
    }
}
