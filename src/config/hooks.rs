//! The `[hooks]` section: the application's authorization hook, which the
//! broker asks before it opens a stream (`docs/hooks.md`), and the bounds
//! on asking it. Every key is documented in `config/default.toml`; this
//! module gives them types and checks that they make sense together.

use std::time::Duration;

use serde::Deserialize;

use super::ConfigError;

/// Most headers `hooks.forward_headers` may name: each is copied into every
/// hook request and into the cache key.
pub const MAX_FORWARDED_HEADERS: usize = 16;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HooksSettings {
    /// Where the broker `POST`s each new stream's request for a decision;
    /// empty leaves the hook off.
    pub subscribe_url: String,
    /// Where the broker `POST`s each publish (every way in: our publish
    /// routes, the kill endpoints, the Mercure hub) for an allow or a
    /// denial, after the token's check; empty leaves it off. It may only
    /// refuse what the tokens allow, never allow more.
    pub publish_url: String,
    /// Request headers copied, as they are, into the hook request (so the
    /// application's own session middleware reads them); nothing else is
    /// sent of the client's request.
    pub forward_headers: Vec<String>,
    /// Longest a decision may take, waiting for a free connection and the
    /// application's answer included; past it the call is a failure.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Hook requests in flight at once; more wait (within `timeout`).
    pub max_concurrency: usize,
    /// Answers remembered at once (each for its `cacheFor`); 0: none.
    pub cache_size: usize,
    /// How long an answer without `cacheFor` is remembered (denials too).
    #[serde(with = "humantime_serde")]
    pub cache_for_default: Duration,
    /// Failures in a row that open the circuit breaker; 0: no breaker.
    pub breaker_failures: u32,
    /// How long an open breaker fails calls at once before it lets one
    /// through to try again; also the `Retry-After` of a failure.
    #[serde(with = "humantime_serde")]
    pub breaker_open_for: Duration,
    /// What a stream gets while the hook fails.
    pub failure_policy: FailurePolicy,
    /// Streams of public channels only, with no credentials, skip the hook.
    pub public_channels_skip: bool,
    /// How often an open stream is asked about again (0: never); a denial
    /// ends it as a revocation does.
    #[serde(with = "humantime_serde")]
    pub recheck_every: Duration,
}

/// What a stream gets while the hook fails (a timeout, a refused
/// connection, an answer that is neither an allow nor a denial, an open
/// breaker).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailurePolicy {
    /// `503` with `Retry-After`: nobody gets a stream the application did
    /// not allow.
    Deny,
    /// Decided as without a hook: channels anyone may read open, protected
    /// ones need a token that covers them.
    AllowPublic,
}

impl HooksSettings {
    /// Whether the broker asks the application before opening a stream.
    pub fn enabled(&self) -> bool {
        !self.subscribe_url.trim().is_empty()
    }

    /// Whether the broker asks the application before every publish.
    pub fn publish_enabled(&self) -> bool {
        !self.publish_url.trim().is_empty()
    }

    /// The rules of the `[hooks]` section (when a hook is on).
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let bad = |why: String| Err(ConfigError::Inconsistent(format!("hooks: {why}")));
        if !self.enabled() && !self.publish_enabled() {
            return Ok(());
        }
        for (key, url) in [
            ("subscribe_url", &self.subscribe_url),
            ("publish_url", &self.publish_url),
        ] {
            if url.trim().is_empty() {
                continue;
            }
            match url::Url::parse(url.trim()) {
                Ok(parsed) if matches!(parsed.scheme(), "http" | "https") => {}
                _ => return bad(format!("{key} {url:?} must be an http:// or https:// URL")),
            }
        }
        if self.timeout.is_zero() {
            return bad("timeout must be greater than 0 (a hook call must never hang)".into());
        }
        if self.max_concurrency == 0 {
            return bad("max_concurrency must be at least 1".into());
        }
        if self.forward_headers.len() > MAX_FORWARDED_HEADERS {
            return bad(format!(
                "forward_headers names more than {MAX_FORWARDED_HEADERS} headers"
            ));
        }
        for name in &self.forward_headers {
            if actix_web::http::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
                return bad(format!("forward_headers: {name:?} is not a header name"));
            }
        }
        if self.breaker_failures > 0 && self.breaker_open_for.is_zero() {
            return bad("breaker_open_for must be greater than 0 with breaker_failures".into());
        }
        Ok(())
    }
}
