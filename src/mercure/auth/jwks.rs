//! JWK Sets (RFC 7517) an issuer's keys come from: a `file://` path, read
//! once at start, or an `https://` URL, fetched at start (a set that cannot
//! be fetched or parsed stops the start, naming the URL) and then kept
//! fresh by a thread of its own: every [`REFRESH_INTERVAL`], and soon after
//! a token names a `kid` the set does not hold (at most every
//! [`MIN_REFRESH_GAP`]), so an identity provider's key rotation needs no
//! restart. A refresh that fails keeps the keys the hub has, and says so
//! in the log.

use std::{
    str::FromStr,
    sync::{
        Arc, Mutex, PoisonError, RwLock,
        mpsc::{self, RecvTimeoutError, SyncSender},
    },
    thread,
    time::{Duration, Instant},
};

use jsonwebtoken::{
    Algorithm, DecodingKey,
    jwk::{self, PublicKeyUse},
};
use log::{info, warn};

/// How often an https JWK Set is fetched again (as the reference hub's
/// key-set client does).
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(3600);
/// The shortest time between two fetches of one set: an unknown `kid` in
/// a flood of tokens triggers one fetch, not one each.
pub const MIN_REFRESH_GAP: Duration = Duration::from_secs(300);
/// How long one fetch may take, connection included.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest JWK Set accepted (a real one is a few KiB).
pub const MAX_SET_BYTES: u64 = 1024 * 1024;

/// One usable key of a set.
pub struct KeyEntry {
    /// `kid`: which key a token asks for.
    pub kid: Option<String>,
    /// `alg`, when the set pins the key to one algorithm.
    pub alg: Option<Algorithm>,
    pub key: DecodingKey,
}

/// A JWK Set, kept fresh when it comes from an https URL.
pub struct JwkSet {
    location: String,
    keys: Arc<RwLock<Arc<Vec<KeyEntry>>>>,
    /// Wakes the refresh thread early; dropping it ends the thread.
    refresh: Option<Mutex<SyncSender<()>>>,
}

impl std::fmt::Debug for JwkSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwkSet")
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

impl JwkSet {
    /// Reads the set at `uri` (`file://…` or `https://…`).
    pub fn load(uri: &str) -> Result<Self, String> {
        if let Some(rest) = uri.strip_prefix("file://") {
            // file:///path, or file://localhost/path.
            let path = rest.strip_prefix("localhost").unwrap_or(rest);
            if !path.starts_with('/') {
                return Err(format!("{uri}: a file:// JWK Set needs an absolute path"));
            }
            let text = std::fs::read_to_string(path)
                .map_err(|err| format!("cannot read the JWK Set {path}: {err}"))?;
            let keys = parse(&text).map_err(|err| format!("the JWK Set {path}: {err}"))?;
            return Ok(Self::fixed(uri, keys));
        }
        if !uri.starts_with("https://") {
            return Err(format!("{uri}: a JWK Set comes from https:// or file://"));
        }
        let agent = agent();
        let keys = fetch(&agent, uri)
            .and_then(|text| parse(&text))
            .map_err(|err| format!("the JWK Set {uri}: {err}"))?;
        info!("jwks loaded uri={uri} keys={}", keys.len());
        let keys = Arc::new(RwLock::new(Arc::new(keys)));
        let (wake, woken) = mpsc::sync_channel(1);
        let shared = Arc::clone(&keys);
        let url = uri.to_owned();
        thread::Builder::new()
            .name("jwks-refresh".into())
            .spawn(move || {
                let mut last = Instant::now();
                loop {
                    match woken.recv_timeout(REFRESH_INTERVAL) {
                        Ok(()) if last.elapsed() < MIN_REFRESH_GAP => continue,
                        Ok(()) | Err(RecvTimeoutError::Timeout) => {}
                        Err(RecvTimeoutError::Disconnected) => return,
                    }
                    last = Instant::now();
                    match fetch(&agent, &url).and_then(|text| parse(&text)) {
                        Ok(fresh) => {
                            info!("jwks refreshed uri={url} keys={}", fresh.len());
                            *shared.write().unwrap_or_else(PoisonError::into_inner) =
                                Arc::new(fresh);
                        }
                        Err(err) => warn!("jwks refresh failed uri={url} reason={err}"),
                    }
                }
            })
            .map_err(|err| format!("cannot start the JWK Set refresh thread: {err}"))?;
        Ok(Self {
            location: uri.to_owned(),
            keys,
            refresh: Some(Mutex::new(wake)),
        })
    }

    /// A set that never changes (a file, or tests).
    pub fn fixed(location: &str, keys: Vec<KeyEntry>) -> Self {
        Self {
            location: location.to_owned(),
            keys: Arc::new(RwLock::new(Arc::new(keys))),
            refresh: None,
        }
    }

    /// The keys as they are now.
    pub fn keys(&self) -> Arc<Vec<KeyEntry>> {
        Arc::clone(&self.keys.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Asks for a fetch soon (a token named a `kid` the set lacks).
    pub fn refresh_soon(&self) {
        if let Some(wake) = &self.refresh {
            // Full: a fetch is already asked for.
            let _ = wake
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .try_send(());
        }
    }
}

/// The https client: bounded in time, https only, the system's roots.
fn agent() -> ureq::Agent {
    let tls = ureq::tls::TlsConfig::builder()
        .root_certs(ureq::tls::RootCerts::PlatformVerifier)
        .build();
    ureq::Agent::config_builder()
        .timeout_global(Some(FETCH_TIMEOUT))
        .https_only(true)
        .tls_config(tls)
        .build()
        .into()
}

fn fetch(agent: &ureq::Agent, url: &str) -> Result<String, String> {
    let mut response = agent.get(url).call().map_err(|err| err.to_string())?;
    response
        .body_mut()
        .with_config()
        .limit(MAX_SET_BYTES)
        .read_to_string()
        .map_err(|err| err.to_string())
}

/// The usable keys of a JWK Set document: signature keys of a type the
/// hub verifies; others (encryption keys, unknown types) are skipped.
pub fn parse(text: &str) -> Result<Vec<KeyEntry>, String> {
    let set: jwk::JwkSet =
        serde_json::from_str(text).map_err(|err| format!("not a JWK Set: {err}"))?;
    let keys: Vec<KeyEntry> = set
        .keys
        .iter()
        .filter(|jwk| jwk.common.public_key_use != Some(PublicKeyUse::Encryption))
        .filter_map(|jwk| {
            let key = DecodingKey::from_jwk(jwk).ok()?;
            // A key pinned to an algorithm the hub does not verify with
            // (an encryption one) is not a signature key.
            let alg = match jwk.common.key_algorithm {
                None => None,
                Some(alg) => Some(Algorithm::from_str(&format!("{alg:?}")).ok()?),
            };
            Some(KeyEntry {
                kid: jwk.common.key_id.clone(),
                alg,
                key,
            })
        })
        .collect();
    if keys.is_empty() {
        return Err("it holds no signature key the hub can use".into());
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Signature keys are kept with their `kid` and `alg`; encryption keys
    /// and a set without usable keys are not.
    #[test]
    fn parses_signature_keys() {
        let text = r#"{"keys": [
            {"kty": "EC", "crv": "P-256", "kid": "sig", "alg": "ES256", "use": "sig",
             "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
             "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
            {"kty": "EC", "crv": "P-256", "kid": "enc", "use": "enc",
             "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
             "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}
        ]}"#;
        let keys = parse(text).expect("a set");
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].kid.as_deref(), Some("sig"));
        assert_eq!(keys[0].alg, Some(Algorithm::ES256));
        assert!(parse(r#"{"keys": []}"#).is_err());
        assert!(parse("[]").is_err());
    }

    /// Only https and absolute file paths are read; a missing file is a
    /// clear error.
    #[test]
    fn load_sources() {
        assert!(JwkSet::load("http://idp.example/jwks").is_err());
        assert!(JwkSet::load("file://relative/jwks").is_err());
        let err = JwkSet::load("file:///nonexistent/jwks.json").expect_err("missing");
        assert!(err.contains("/nonexistent/jwks.json"), "{err}");
    }
}
