//! Well-known secrets: keys that anyone can read (Mercure's documented
//! development key, the examples of JWT tutorials) and that therefore
//! protect nothing. The broker names each one in use in a warning at
//! start-up ([`warnings`]), so an operator who copied an example, or left
//! the development defaults on, hears about it before an attacker does.

use super::{MERCURE_DEVELOPMENT_KEY, Settings, VerifierSettings};
use crate::auth::load_secret;

/// Secrets published in documentation that people copy: Mercure's
/// development key (the reference hub's Caddyfile and docs), jwt.io's
/// default HS256 example secret, and the placeholders of tutorials. Only
/// an exact match counts.
pub const WELL_KNOWN_SECRETS: [&str; 6] = [
    MERCURE_DEVELOPMENT_KEY,
    "your-256-bit-secret",
    "a-string-secret-at-least-256-bits-long",
    "0123456789abcdef0123456789abcdef",
    "changeme-changeme-changeme-changeme",
    "secretsecretsecretsecretsecretsecret",
];

/// Whether `secret` is one everybody knows.
pub fn is_well_known(secret: &[u8]) -> bool {
    WELL_KNOWN_SECRETS.iter().any(|k| k.as_bytes() == secret)
}

/// One line per well-known secret these settings use, saying where and
/// what follows; empty when there is none.
pub fn warnings(settings: &Settings) -> Vec<String> {
    let mut out = Vec::new();
    let auth = &settings.auth;
    if auth.enabled
        && auth.algorithm.is_hmac()
        && let Ok(Some(secret)) = load_secret(auth)
        && is_well_known(&secret)
    {
        out.push(
            "auth: the secret is a well-known example value: anyone can sign tokens that \
             publish to and read every channel; make one with `openssl rand -hex 32`"
                .to_owned(),
        );
    }
    let mercure = &settings.mercure;
    if !mercure.enabled {
        return out;
    }
    let accepted = mercure.accepts_development_key(auth.enabled);
    let roles = mercure.issuers.iter().flat_map(|issuer| {
        [
            ("publisher", &issuer.publisher),
            ("subscriber", &issuer.subscriber),
        ]
        .into_iter()
        .filter_map(move |(role, v)| v.as_ref().map(|v| (issuer.id.as_str(), role, v)))
    });
    let legacy = [
        ("publisher", &mercure.publisher_jwt_key),
        ("subscriber", &mercure.subscriber_jwt_key),
    ];
    let mut named: Vec<(String, &str, bool)> = roles
        .filter(|(_, _, v)| v.is_development_key() || is_well_known(v.jwt.as_bytes()))
        .map(|(id, role, v)| (format!("issuer {id:?}"), role, v.is_development_key()))
        .collect();
    named.extend(
        legacy
            .iter()
            .filter(|(_, key)| is_well_known(key.as_bytes()))
            .map(|(role, key)| {
                let development = key.as_str() == MERCURE_DEVELOPMENT_KEY;
                ("the 0.x key".to_owned(), *role, development)
            }),
    );
    for (who, role, development) in named {
        out.push(if accepted || !development {
            format!(
                "mercure: {who} {role} uses a public key (Mercure's development key or a \
                 documented example): anyone can sign tokens this hub accepts; configure your \
                 own [[mercure.issuers]] keys before exposing the broker"
            )
        } else {
            format!(
                "mercure: {who} {role} uses Mercure's public development key, left out because \
                 auth.enabled = true (its tokens are refused); configure your own \
                 [[mercure.issuers]] keys, or set mercure.allow_development_key = true to \
                 accept it anyway"
            )
        });
    }
    let publishers_left = mercure
        .issuers
        .iter()
        .filter_map(|i| i.publisher.as_ref())
        .any(|v: &VerifierSettings| accepted || !v.is_development_key())
        || (!mercure.publisher_jwt_key.is_empty()
            && (accepted || mercure.publisher_jwt_key != MERCURE_DEVELOPMENT_KEY));
    if !publishers_left {
        out.push(
            "mercure: no publisher key is left: the hub accepts no publishes (its subscribers \
             still get channel events' copies)"
                .to_owned(),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The development defaults warn about the development key; with auth
    /// on it is left out and the hub has no publisher left.
    #[test]
    fn development_defaults_warn() {
        let mut settings = Settings::defaults();
        let lines = warnings(&settings);
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(lines.iter().all(|l| l.contains("anyone can sign")));
        settings.auth.enabled = true;
        settings.auth.secret = "a-real-secret-of-more-than-32-bytes-x".into();
        let lines = warnings(&settings);
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert!(lines[0].contains("left out"));
        assert!(lines[2].contains("no publisher key"));
        settings.auth.secret = "your-256-bit-secret".into();
        assert!(warnings(&settings)[0].starts_with("auth:"));
        settings.mercure.enabled = false;
        settings.auth.secret = "a-real-secret-of-more-than-32-bytes-x".into();
        assert!(warnings(&settings).is_empty());
    }
}
