//! The `[webhooks]` section: the occupancy webhooks (`docs/webhooks.md`),
//! where they go, how they are signed (Standard Webhooks), which events
//! are sent, and the bounds on retrying them. Every key is documented in
//! `config/default.toml`; this module gives them types and refuses what
//! cannot work (a URL without a secret, a secret that is not `whsec_`
//! base64, a URL that is not http(s)).

use std::time::Duration;

use serde::{Deserialize, Deserializer};

use super::ConfigError;

/// The event types a webhook may have.
pub const WEBHOOK_EVENTS: &[&str] = &[
    "channel.occupied",
    "channel.vacated",
    "member.joined",
    "member.left",
];

/// The longest wait or age any key of the section may name.
const MAX_WAIT: Duration = Duration::from_secs(7 * 24 * 3600);

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSettings {
    /// Where every webhook is POSTed; each URL gets every event (and has
    /// its own queue, so a failing receiver holds up no other). Empty:
    /// webhooks are off and cost nothing.
    #[serde(deserialize_with = "url_list")]
    pub url: Vec<String>,
    /// The Standard Webhooks signing secret, `whsec_<base64>`: the
    /// receiver verifies every delivery with it.
    pub secret: String,
    /// How long a channel must stay without subscribers before
    /// `channel.vacated` is sent: a client that reconnects within it (a
    /// page reload, a deploy) makes no webhook at all.
    #[serde(with = "humantime_serde")]
    pub vacated_after: Duration,
    /// The event types sent. `member.joined` / `member.left` (one per
    /// user's first and last connection) are opt-in: a busy channel makes
    /// many.
    pub events: Vec<String>,
    /// Longest one attempt may take (connecting and the receiver's
    /// answer); past it the attempt failed and is retried.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Attempts per webhook and URL before it is given up (counted in
    /// `sse_broker_webhooks_failed_total`).
    pub max_attempts: u32,
    /// How long after its first attempt a webhook is still retried: a
    /// receiver down for longer gets no stale occupancy news.
    #[serde(with = "humantime_serde")]
    pub max_retry_age: Duration,
    /// The wait before the first retry; it doubles per attempt, with up to
    /// a quarter of random jitter so many brokers do not retry in step.
    #[serde(with = "humantime_serde")]
    pub backoff_base: Duration,
    /// The longest wait between two attempts.
    #[serde(with = "humantime_serde")]
    pub backoff_max: Duration,
    /// Most webhooks waiting at once per URL (queued, being tried, or
    /// waiting for a retry): bounds memory (and the pending file) when a
    /// receiver is down. A new webhook beyond it is dropped, logged and
    /// counted in `sse_broker_webhooks_dropped_total`.
    pub max_pending: usize,
}

impl WebhookSettings {
    /// Whether webhooks are sent at all.
    pub fn enabled(&self) -> bool {
        !self.url.is_empty()
    }

    /// Whether events of `kind` are sent.
    pub fn sends(&self, kind: &str) -> bool {
        self.events.iter().any(|event| event == kind)
    }

    /// Whether any member event is sent (else the channels tell none).
    pub fn sends_members(&self) -> bool {
        self.sends("member.joined") || self.sends("member.left")
    }

    /// The rules of the section.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let bad = |why: String| Err(ConfigError::Inconsistent(format!("webhooks: {why}")));
        for url in &self.url {
            match url::Url::parse(url) {
                Ok(parsed) if matches!(parsed.scheme(), "http" | "https") => {}
                _ => return bad(format!("url {url:?} must be an http:// or https:// URL")),
            }
        }
        if !self.enabled() {
            return Ok(());
        }
        if signing_key(&self.secret).is_none() {
            return bad(
                "secret must be a Standard Webhooks secret: whsec_ and the base64 of 24 to 64 \
                 random bytes (e.g. whsec_$(head -c 32 /dev/urandom | base64))"
                    .into(),
            );
        }
        if let Some(unknown) = self
            .events
            .iter()
            .find(|e| !WEBHOOK_EVENTS.contains(&e.as_str()))
        {
            return bad(format!(
                "events: {unknown:?} is not one of {}",
                WEBHOOK_EVENTS.join(", ")
            ));
        }
        if self.max_attempts == 0 || self.max_pending == 0 {
            return bad("max_attempts and max_pending must be at least 1".into());
        }
        if self.timeout.is_zero() || self.backoff_base.is_zero() {
            return bad("timeout and backoff_base must be greater than 0".into());
        }
        if self.backoff_max < self.backoff_base {
            return bad("backoff_max must be at least backoff_base".into());
        }
        // Waits and deadlines are added to clock readings: bounded, they
        // cannot overflow.
        for (key, value) in [
            ("vacated_after", self.vacated_after),
            ("timeout", self.timeout),
            ("backoff_max", self.backoff_max),
            ("max_retry_age", self.max_retry_age),
        ] {
            if value > MAX_WAIT {
                return bad(format!("{key} must be at most 7 days"));
            }
        }
        Ok(())
    }
}

/// The HMAC key of a `whsec_<base64>` secret: 24 to 64 bytes, as the
/// Standard Webhooks libraries make them.
pub fn signing_key(secret: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    let encoded = secret.strip_prefix("whsec_")?;
    let key = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    (24..=64).contains(&key.len()).then_some(key)
}

/// `url` as a list, or as one string of comma-separated URLs (what
/// `SSE_BROKER__WEBHOOKS__URL` holds).
fn url_list<'de, D: Deserializer<'de>>(input: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Urls {
        One(String),
        Many(Vec<String>),
    }
    let urls = match Urls::deserialize(input)? {
        Urls::One(text) => text.split(',').map(str::to_owned).collect(),
        Urls::Many(list) => list,
    };
    Ok(urls
        .into_iter()
        .map(|url| url.trim().to_owned())
        .filter(|url| !url.is_empty())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;

    /// A secret is whsec_ and the base64 of 24 to 64 bytes.
    #[test]
    fn secrets_are_standard_webhooks_secrets() {
        assert!(signing_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_some());
        assert!(signing_key("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_none());
        assert!(signing_key("whsec_c2hvcnQ=").is_none(), "too short");
        assert!(signing_key("whsec_not base64!").is_none());
    }

    /// Off by default; a URL needs a good secret and http(s).
    #[test]
    fn a_url_needs_a_secret_and_http() {
        let mut settings = Settings::defaults();
        assert!(!settings.webhooks.enabled());
        settings.webhooks.url = vec!["http://127.0.0.1:9/hook".into()];
        assert!(settings.validate().is_err(), "no secret");
        settings.webhooks.secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into();
        settings.validate().expect("valid");
        settings.webhooks.url = vec!["ftp://127.0.0.1/hook".into()];
        assert!(settings.validate().is_err(), "not http");
    }
}
