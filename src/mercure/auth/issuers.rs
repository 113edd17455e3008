//! Trusted issuers and their keys, and the verification of a token's
//! signature and registered claims (RFC 9068, RFC 8725).
//!
//! Each issuer (`[[mercure.issuers]]`) is bound to its own key material per
//! role: a key (an HMAC secret or a PEM public key, with its one
//! algorithm) or a JWK Set (with its algorithm allowlist). A token's
//! unverified `iss` only picks among the configured issuers; its signature
//! is then checked with that issuer's keys alone, never a pool, and never a
//! key the token names (`jwk`, `jku`, `x5u` are ignored; `kid` only picks
//! among the set's keys). The algorithm must be on the verifier's list,
//! and the key's family must match it (no algorithm confusion).
//!
//! Mercure 1.0 (the default) also requires `typ: at+jwt` (or
//! `application/at+jwt`), `iss` equal to the issuer's id, `aud` naming the
//! hub's resource identifier, and `exp`; `nbf` is honoured. Compatibility
//! mode drops the `typ`, `aud` and `exp` requirements (still enforcing
//! `exp` and `nbf` when present), and a token naming no trusted issuer is
//! checked with the keys of the only issuer when there is exactly one (the
//! 0.x keys `publisher_jwt_key`/`subscriber_jwt_key` form one whose id is
//! empty). No leeway: clocks are compared as they are.

use std::str::FromStr;

use jsonwebtoken::{
    Algorithm, AlgorithmFamily, DecodingKey, Validation, dangerous::insecure_decode_claims, decode,
    decode_header,
};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::{Role, error::AuthError, jwks::JwkSet};
use crate::config::{
    DEFAULT_JWKS_ALGORITHMS, MERCURE_DEVELOPMENT_KEY, MercureSettings, VerifierSettings,
    check_pem_algorithm,
};

/// The `typ` of JWT access tokens (RFC 9068), without `application/`.
const ACCESS_TOKEN_TYPE: &str = "at+jwt";

/// The trusted issuers, built once at start.
#[derive(Debug)]
pub struct Issuers {
    list: Vec<Issuer>,
    /// Compatibility mode (see the module docs).
    compatibility: bool,
}

#[derive(Debug)]
struct Issuer {
    id: String,
    authorization_server: bool,
    publisher: Option<Verifier>,
    subscriber: Option<Verifier>,
}

/// The key material of one role of one issuer.
#[derive(Debug)]
enum Verifier {
    Key {
        key: Box<DecodingKey>,
        algorithm: Algorithm,
    },
    Set {
        set: JwkSet,
        algorithms: Vec<Algorithm>,
    },
}

#[derive(Deserialize)]
struct NamedIssuer {
    #[serde(default)]
    iss: Option<String>,
}

impl Issuers {
    /// Reads every key: a PEM key that does not parse, an unreadable file
    /// or a JWK Set that cannot be fetched is an error naming it. Without
    /// `accept_development_key`, a role whose key is Mercure's public
    /// development key is left out (its tokens are refused).
    pub fn from_settings(
        settings: &MercureSettings,
        accept_development_key: bool,
    ) -> Result<Self, String> {
        let usable = |v: &&VerifierSettings| accept_development_key || !v.is_development_key();
        let mut list = Vec::with_capacity(settings.issuers.len() + 1);
        for issuer in &settings.issuers {
            let verifier = |role: &str, v: &Option<VerifierSettings>| {
                v.as_ref()
                    .filter(usable)
                    .map(Verifier::new)
                    .transpose()
                    .map_err(|err| format!("issuer {:?} {role}: {err}", issuer.id))
            };
            list.push(Issuer {
                id: issuer.id.clone(),
                authorization_server: issuer.authorization_server,
                publisher: verifier("publisher", &issuer.publisher)?,
                subscriber: verifier("subscriber", &issuer.subscriber)?,
            });
        }
        if settings.legacy_keys() {
            let legacy = |key: &str, name: &str| -> Result<Option<Verifier>, String> {
                let development = key == MERCURE_DEVELOPMENT_KEY && !accept_development_key;
                if key.is_empty() || development {
                    return Ok(None);
                }
                let settings = VerifierSettings {
                    jwt: key.to_owned(),
                    algorithm: settings.jwt_algorithm.clone(),
                    ..Default::default()
                };
                Verifier::new(&settings)
                    .map(Some)
                    .map_err(|err| format!("{name}: {err}"))
            };
            list.push(Issuer {
                id: String::new(),
                authorization_server: false,
                publisher: legacy(&settings.publisher_jwt_key, "publisher_jwt_key")?,
                subscriber: legacy(&settings.subscriber_jwt_key, "subscriber_jwt_key")?,
            });
        }
        Ok(Self {
            list,
            compatibility: settings.compatibility(),
        })
    }

    /// Whether some issuer verifies tokens of `role`.
    pub fn verifies(&self, role: Role) -> bool {
        self.list
            .iter()
            .any(|issuer| issuer.verifier(role).is_some())
    }

    /// The issuers to advertise as authorization servers.
    pub fn authorization_servers(&self) -> Vec<String> {
        self.list
            .iter()
            .filter(|issuer| issuer.authorization_server)
            .map(|issuer| issuer.id.clone())
            .collect()
    }

    /// The verified claims of `token` for `role`, addressed to `audience`.
    pub fn verify(
        &self,
        token: &str,
        role: Role,
        audience: &str,
    ) -> Result<Map<String, Value>, AuthError> {
        let header = decode_header(token).map_err(AuthError::token)?;
        if !self.compatibility {
            let typ = header.typ.as_deref().unwrap_or_default();
            let typ = match typ.get(..12) {
                Some(prefix) if prefix.eq_ignore_ascii_case("application/") => &typ[12..],
                _ => typ,
            };
            if !typ.eq_ignore_ascii_case(ACCESS_TOKEN_TYPE) {
                return Err(AuthError::token(format!(
                    "typ {typ:?} is not at+jwt (an RFC 9068 access token)"
                )));
            }
        }
        let named = insecure_decode_claims::<NamedIssuer>(token)
            .map_err(|err| AuthError::token(format!("unreadable claims: {err}")))?
            .iss
            .unwrap_or_default();
        let issuer = match self.list.iter().find(|issuer| issuer.id == named) {
            Some(issuer) => issuer,
            None if self.compatibility && self.list.len() == 1 => &self.list[0],
            None => return Err(AuthError::token(format!("untrusted issuer {named:?}"))),
        };
        let verifier = issuer.verifier(role).ok_or_else(|| {
            AuthError::token(format!("issuer {:?} has no {role:?} key", issuer.id))
        })?;
        let mut validation = Validation::new(header.alg);
        validation.algorithms = verifier.algorithms();
        validation.leeway = 0;
        validation.validate_nbf = true;
        if self.compatibility {
            validation.required_spec_claims.clear();
            validation.validate_aud = false;
        } else {
            validation.set_required_spec_claims(&["exp", "aud", "iss"]);
            validation.set_audience(&[audience]);
            validation.set_issuer(&[&issuer.id]);
        }
        let claims = match verifier {
            Verifier::Key { key, .. } => decode::<Map<String, Value>>(token, key, &validation),
            Verifier::Set { set, .. } => {
                let keys = set.keys();
                let candidates: Vec<_> = keys
                    .iter()
                    .filter(|k| header.kid.is_none() || k.kid == header.kid)
                    .filter(|k| k.alg.is_none_or(|alg| alg == header.alg))
                    .collect();
                if candidates.is_empty() {
                    set.refresh_soon();
                    return Err(AuthError::token(format!(
                        "no key of the JWK Set has kid {:?} and alg {:?}",
                        header.kid, header.alg
                    )));
                }
                let mut last = None;
                let mut verified = None;
                for candidate in candidates {
                    match decode::<Map<String, Value>>(token, &candidate.key, &validation) {
                        Ok(data) => {
                            verified = Some(data);
                            break;
                        }
                        Err(err) => last = Some(err),
                    }
                }
                match (verified, last) {
                    (Some(data), _) => Ok(data),
                    (None, Some(err)) => Err(err),
                    (None, None) => unreachable!("at least one candidate was tried"),
                }
            }
        };
        claims
            .map(|data| data.claims)
            .map_err(|err| AuthError::token(format!("{err:?}")))
    }
}

impl Issuer {
    fn verifier(&self, role: Role) -> Option<&Verifier> {
        match role {
            Role::Publisher => self.publisher.as_ref(),
            Role::Subscriber => self.subscriber.as_ref(),
        }
    }
}

impl Verifier {
    fn new(settings: &VerifierSettings) -> Result<Self, String> {
        if !settings.jwks_uri.is_empty() {
            let names: Vec<&str> = if settings.algorithms.is_empty() {
                DEFAULT_JWKS_ALGORITHMS.to_vec()
            } else {
                settings.algorithms.iter().map(String::as_str).collect()
            };
            let algorithms = names
                .iter()
                .map(|name| {
                    Algorithm::from_str(name).map_err(|_| format!("unknown algorithm {name}"))
                })
                .collect::<Result<Vec<_>, _>>()?;
            return Ok(Self::Set {
                set: JwkSet::load(&settings.jwks_uri)?,
                algorithms,
            });
        }
        let text = match &settings.jwt_file {
            Some(path) => std::fs::read_to_string(path)
                .map_err(|err| format!("cannot read {}: {err}", path.display()))?
                .trim_end_matches(['\r', '\n'])
                .to_owned(),
            None => settings.jwt.clone(),
        };
        let pem = text.trim_start().starts_with("-----BEGIN");
        if pem {
            check_pem_algorithm(&settings.algorithm)?;
        }
        let name = if settings.algorithm.is_empty() {
            "HS256"
        } else {
            &settings.algorithm
        };
        let algorithm =
            Algorithm::from_str(name).map_err(|_| format!("unknown algorithm {name}"))?;
        let bytes = text.as_bytes();
        let key = match algorithm.family() {
            AlgorithmFamily::Hmac => DecodingKey::from_secret(bytes),
            AlgorithmFamily::Rsa => DecodingKey::from_rsa_pem(bytes),
            AlgorithmFamily::Ec => DecodingKey::from_ec_pem(bytes),
            AlgorithmFamily::Ed => DecodingKey::from_ed_pem(bytes),
        }
        .map_err(|err| format!("not a valid {name} key: {err}"))?;
        Ok(Self::Key {
            key: Box::new(key),
            algorithm,
        })
    }

    fn algorithms(&self) -> Vec<Algorithm> {
        match self {
            Self::Key { algorithm, .. } => vec![*algorithm],
            Self::Set { algorithms, .. } => algorithms.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{IssuerSettings, MERCURE_DEVELOPMENT_KEY, Settings};
    use jsonwebtoken::{EncodingKey, Header, encode};
    use serde_json::json;

    const AUDIENCE: &str = "https://hub.test/.well-known/mercure";

    fn issuers(compatibility: bool) -> Issuers {
        let mut settings = Settings::defaults().mercure;
        settings.issuers.push(IssuerSettings {
            id: "https://other.example".into(),
            authorization_server: true,
            publisher: Some(VerifierSettings {
                jwt: "the-other-issuer-secret-of-enough-length".into(),
                ..Default::default()
            }),
            subscriber: None,
        });
        if compatibility {
            settings.protocol_version_compatibility = 8;
        }
        Issuers::from_settings(&settings, true).expect("valid issuers")
    }

    fn sign(header: Header, claims: Value, key: &str) -> String {
        encode(
            &header,
            &claims,
            &EncodingKey::from_secret(key.as_bytes()).expect("a key"),
        )
        .expect("encodes")
    }

    fn at_jwt() -> Header {
        Header {
            typ: Some("at+jwt".into()),
            ..Header::default()
        }
    }

    fn good() -> Value {
        json!({"iss": "https://localhost", "aud": AUDIENCE, "exp": 4102444800u64})
    }

    /// A 1.0 token of the trusted issuer, signed with its key, for this
    /// hub's audience, is accepted (typ in either spelling, aud as a list).
    #[test]
    fn accepts_access_tokens() {
        let issuers = issuers(false);
        let token = sign(at_jwt(), good(), MERCURE_DEVELOPMENT_KEY);
        assert!(issuers.verify(&token, Role::Publisher, AUDIENCE).is_ok());
        let spelled = Header {
            typ: Some("Application/AT+JWT".into()),
            ..Header::default()
        };
        let mut claims = good();
        claims["aud"] = json!(["https://elsewhere", AUDIENCE]);
        let token = sign(spelled, claims, MERCURE_DEVELOPMENT_KEY);
        assert!(issuers.verify(&token, Role::Subscriber, AUDIENCE).is_ok());
        assert_eq!(
            issuers.authorization_servers(),
            vec!["https://other.example"]
        );
    }

    /// Each refusal the spec asks for, one at a time.
    #[test]
    fn refuses_what_rfc_9068_refuses() {
        let issuers = issuers(false);
        let with = |patch: Value| {
            let mut claims = good();
            for (k, v) in patch.as_object().expect("an object") {
                if v.is_null() {
                    claims.as_object_mut().expect("an object").remove(k);
                } else {
                    claims[k] = v.clone();
                }
            }
            claims
        };
        let refused = |token: String, role: Role| issuers.verify(&token, role, AUDIENCE).is_err();
        let dev = MERCURE_DEVELOPMENT_KEY;
        assert!(
            refused(sign(Header::default(), good(), dev), Role::Publisher),
            "typ"
        );
        assert!(
            refused(
                sign(at_jwt(), with(json!({"aud": "https://x"})), dev),
                Role::Publisher
            ),
            "aud"
        );
        assert!(
            refused(
                sign(at_jwt(), with(json!({"aud": null})), dev),
                Role::Publisher
            ),
            "no aud"
        );
        assert!(
            refused(
                sign(at_jwt(), with(json!({"exp": null})), dev),
                Role::Publisher
            ),
            "no exp"
        );
        assert!(
            refused(
                sign(at_jwt(), with(json!({"exp": 1000})), dev),
                Role::Publisher
            ),
            "expired"
        );
        assert!(
            refused(
                sign(at_jwt(), with(json!({"nbf": 4102444000u64})), dev),
                Role::Publisher
            ),
            "nbf"
        );
        assert!(
            refused(
                sign(at_jwt(), with(json!({"iss": null})), dev),
                Role::Publisher
            ),
            "no iss"
        );
        assert!(
            refused(
                sign(at_jwt(), with(json!({"iss": "https://evil"})), dev),
                Role::Publisher
            ),
            "iss"
        );
        assert!(
            refused(sign(at_jwt(), good(), "another-key"), Role::Publisher),
            "key"
        );
        // The other issuer's key does not verify a token naming localhost,
        // and its own token has no subscriber key.
        let other = "the-other-issuer-secret-of-enough-length";
        assert!(
            refused(sign(at_jwt(), good(), other), Role::Publisher),
            "key of another issuer"
        );
        let theirs = with(json!({"iss": "https://other.example"}));
        assert!(!refused(
            sign(at_jwt(), theirs.clone(), other),
            Role::Publisher
        ));
        assert!(
            refused(sign(at_jwt(), theirs, other), Role::Subscriber),
            "role without key"
        );
        let hs512 = Header {
            typ: Some("at+jwt".into()),
            ..Header::new(Algorithm::HS512)
        };
        assert!(
            refused(sign(hs512, good(), dev), Role::Publisher),
            "alg not allowed"
        );
        assert!(refused("not.a.token".into(), Role::Publisher), "garbage");
    }

    /// Compatibility mode: 0.x tokens (no typ, iss, aud or exp) are checked
    /// with the only issuer's keys, expired ones still refused.
    #[test]
    fn compatibility_mode_relaxes_the_profile() {
        let mut settings = Settings::defaults().mercure;
        settings.protocol_version_compatibility = 8;
        let single = Issuers::from_settings(&settings, true).expect("valid");
        let legacy = sign(
            Header::default(),
            json!({"mercure": {}}),
            MERCURE_DEVELOPMENT_KEY,
        );
        assert!(single.verify(&legacy, Role::Publisher, AUDIENCE).is_ok());
        let expired = sign(
            Header::default(),
            json!({"exp": 1000}),
            MERCURE_DEVELOPMENT_KEY,
        );
        assert!(single.verify(&expired, Role::Publisher, AUDIENCE).is_err());
        // With two issuers, a token must name one of them.
        let two = issuers(true);
        assert!(two.verify(&legacy, Role::Publisher, AUDIENCE).is_err());
        let named = sign(
            Header::default(),
            json!({"iss": "https://localhost"}),
            MERCURE_DEVELOPMENT_KEY,
        );
        assert!(two.verify(&named, Role::Publisher, AUDIENCE).is_ok());
    }
}
