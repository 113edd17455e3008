//! The application's authorization hooks (`[hooks]`, `docs/hooks.md`):
//! before a stream opens, the broker asks the application whether it may,
//! with the client's own cookies and headers, so an app with ordinary
//! sessions protects its streams without minting tokens; with
//! `hooks.publish_url`, a second [`Hooks`] asks the same way before every
//! publish ([`Hooks::subscribe`], [`Hooks::publish`]).
//!
//! [`Hooks::decide`] turns a [`Question`] into a [`Verdict`]: an allow with
//! what the application granted ([`HookGrant`], a credential the access
//! policy weighs like a token), a denial, or a failure. Every call is
//! bounded:
//! - a timeout (`hooks.timeout`) over all of it, waiting included: a slow
//!   application fails the call, it never hangs a client;
//! - a concurrency limit (`hooks.max_concurrency` requests in flight);
//! - a cache of answers (`hooks.cache_size` entries, each kept for its
//!   `cacheFor`), which also makes concurrent identical questions one
//!   request (the others wait for its answer);
//! - a circuit breaker ([`breaker`]).
//!
//! What a failure means for the client is `hooks.failure_policy`, applied
//! by the protocols (`crate::http::access`). The parts: [`question`] (what
//! is sent, the cache key), [`answer`] (what came back), [`breaker`].
//!
//! A leaf beside `auth`: it knows the configuration and the access policy's
//! vocabulary, nothing of the broker or the routes.

pub mod answer;
pub mod breaker;
pub mod question;

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use actix_web::http::header::HeaderName;
use log::{debug, warn};
use quick_cache::sync::Cache;
use tokio::sync::Semaphore;

pub use answer::{Answer, HookGrant};
use answer::{MAX_ANSWER_BYTES, Read};
use breaker::Breaker;
pub use question::{Asking, Question};

use crate::config::{FailurePolicy, HooksSettings};

/// What the hook decided about one question.
#[derive(Debug, Clone)]
pub enum Verdict {
    /// The application allowed the stream, granting this.
    Allow(Arc<HookGrant>),
    /// The application said `401` or `403`.
    Deny,
    /// No answer (see `hooks.failure_policy`): why, and when to try again.
    Failed { why: String, retry_after: Duration },
}

/// A remembered answer.
struct Cached {
    answer: Answer,
    /// When it came.
    at: Instant,
    /// Until when it answers new questions (`at` for an answer that may
    /// not be reused: it then answers only the questions that were
    /// waiting for it).
    until: Instant,
}

impl Cached {
    fn is_users(&self, user: &str) -> bool {
        matches!(&self.answer, Answer::Allow(grant) if grant.user.as_deref() == Some(user))
    }
}

/// The hook's client (see the module docs); one per broker, shared by every
/// worker.
pub struct Hooks {
    client: reqwest::Client,
    url: reqwest::Url,
    settings: HooksSettings,
    forward: Vec<HeaderName>,
    /// Requests in flight (`hooks.max_concurrency` permits).
    slots: Semaphore,
    /// `None` with `hooks.cache_size = 0`.
    cache: Option<Cache<Vec<u8>, Arc<Cached>>>,
    breaker: Breaker,
    /// Requests sent to the application (a cached answer, a coalesced
    /// question and a call the open breaker refused send none): what the
    /// cache saves is the decisions minus these.
    requests: AtomicU64,
}

impl std::fmt::Debug for Hooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hooks")
            .field("url", &self.url.as_str())
            .finish_non_exhaustive()
    }
}

impl Hooks {
    /// The subscribe hook of `settings` (`hooks.subscribe_url`); `None`
    /// when it is off. Needs the process's default TLS provider for an
    /// `https://` URL (startup installs it).
    pub fn subscribe(settings: &HooksSettings) -> Result<Option<Self>, String> {
        Self::new(settings, "subscribe_url", &settings.subscribe_url)
    }

    /// The publish hook of `settings` (`hooks.publish_url`), with a cache,
    /// breaker and concurrency limit of its own; `None` when it is off.
    pub fn publish(settings: &HooksSettings) -> Result<Option<Self>, String> {
        Self::new(settings, "publish_url", &settings.publish_url)
    }

    fn new(settings: &HooksSettings, key: &str, url: &str) -> Result<Option<Self>, String> {
        if url.trim().is_empty() {
            return Ok(None);
        }
        let url = reqwest::Url::parse(url.trim()).map_err(|err| format!("hooks.{key}: {err}"))?;
        let forward = settings
            .forward_headers
            .iter()
            .map(|name| HeaderName::from_bytes(name.as_bytes()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|err| format!("hooks.forward_headers: {err}"))?;
        let client = reqwest::Client::builder()
            // A redirect is not an answer: it is a failure, not followed.
            .redirect(reqwest::redirect::Policy::none())
            .timeout(settings.timeout)
            .pool_max_idle_per_host(settings.max_concurrency)
            .build()
            .map_err(|err| format!("hooks: cannot build the HTTP client: {err}"))?;
        Ok(Some(Self {
            client,
            url,
            forward,
            slots: Semaphore::new(settings.max_concurrency.max(1)),
            cache: (settings.cache_size > 0).then(|| Cache::new(settings.cache_size)),
            breaker: Breaker::new(
                settings.breaker_failures,
                settings.breaker_open_for,
                settings.timeout,
            ),
            requests: AtomicU64::new(0),
            settings: settings.clone(),
        }))
    }

    /// The headers a question forwards (`hooks.forward_headers`).
    pub fn forward_headers(&self) -> &[HeaderName] {
        &self.forward
    }

    /// `[hooks]`.
    pub fn settings(&self) -> &HooksSettings {
        &self.settings
    }

    /// Requests sent to the application so far (for `/metrics`).
    pub fn requests_sent(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Whether the circuit breaker refuses calls now (for `/metrics`).
    pub fn breaker_open(&self) -> bool {
        self.breaker.is_open(Instant::now())
    }

    /// What a failure means for the client.
    pub fn failure_policy(&self) -> FailurePolicy {
        self.settings.failure_policy
    }

    /// The application's decision about `question`: from the cache while
    /// an answer holds, else asked, all within `hooks.timeout`.
    pub async fn decide(&self, question: &Question) -> Verdict {
        let deadline = tokio::time::Instant::now() + self.settings.timeout;
        match tokio::time::timeout_at(deadline, self.decide_in_time(question)).await {
            Ok(verdict) => verdict,
            Err(_) => {
                self.breaker.failed(Instant::now());
                self.failure(format!(
                    "the hook did not answer within {:?}",
                    self.settings.timeout
                ))
            }
        }
    }

    /// Forgets every cached answer that named `user` (it was revoked: its
    /// next stream is asked about afresh).
    pub fn forget(&self, user: &str) {
        if let Some(cache) = &self.cache {
            cache.retain(|_, cached| !cached.is_users(user));
        }
    }

    async fn decide_in_time(&self, question: &Question) -> Verdict {
        let (Some(cache), Some(key)) = (&self.cache, question.key()) else {
            return self.verdict(self.ask(question).await);
        };
        // Twice at most: an expired answer is dropped and the question
        // asked again (the second look finds the fresh one, or asks).
        // Identical questions that arrive while one is asked wait for its
        // answer and take it, even one that may not be reused (`cacheFor`
        // 0): a reconnect storm is one request to the application.
        let asked_at = Instant::now();
        for _ in 0..2 {
            match cache.get_value_or_guard_async(&key).await {
                Ok(cached) if Instant::now() < cached.until || cached.at >= asked_at => {
                    return match &cached.answer {
                        Answer::Allow(grant) => Verdict::Allow(Arc::clone(grant)),
                        Answer::Deny => Verdict::Deny,
                    };
                }
                Ok(_) => {
                    cache.remove(&key);
                }
                Err(guard) => {
                    let read = self.ask(question).await;
                    if let Ok(read) = &read {
                        let keep = read.cache_for.unwrap_or(self.settings.cache_for_default);
                        let at = Instant::now();
                        let _ = guard.insert(Arc::new(Cached {
                            answer: read.answer.clone(),
                            at,
                            until: at + keep,
                        }));
                    }
                    // A failure is not kept: the next question asks again.
                    return self.verdict(read);
                }
            }
        }
        self.verdict(self.ask(question).await)
    }

    fn verdict(&self, read: Result<Read, Verdict>) -> Verdict {
        match read {
            Ok(Read {
                answer: Answer::Allow(grant),
                ..
            }) => Verdict::Allow(grant),
            Ok(Read {
                answer: Answer::Deny,
                ..
            }) => Verdict::Deny,
            Err(failed) => failed,
        }
    }

    fn failure(&self, why: String) -> Verdict {
        Verdict::Failed {
            why,
            retry_after: self.settings.breaker_open_for,
        }
    }

    /// One request to the application, through the breaker and the
    /// concurrency limit.
    async fn ask(&self, question: &Question) -> Result<Read, Verdict> {
        if let Err(wait) = self.breaker.admit(Instant::now()) {
            return Err(Verdict::Failed {
                why: "the hook's circuit breaker is open (it failed repeatedly)".into(),
                retry_after: wait.max(Duration::from_secs(1)),
            });
        }
        let outcome = self.request(question).await;
        match &outcome {
            Ok(_) => self.breaker.succeeded(),
            Err(why) => {
                let open = self.breaker.failed(Instant::now());
                warn!("hook failed url={} open={open} reason={why}", self.url);
            }
        }
        outcome.map_err(|why| self.failure(why))
    }

    async fn request(&self, question: &Question) -> Result<Read, String> {
        let _slot = self
            .slots
            .acquire()
            .await
            .map_err(|_| "the hook is shut down".to_owned())?;
        self.requests.fetch_add(1, Ordering::Relaxed);
        let mut request = self
            .client
            .post(self.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(question.body());
        for (name, value) in &question.headers {
            // actix-web's header types are another `http` crate's than
            // reqwest's: passed as bytes.
            request = request.header(name.as_str(), value.as_bytes());
        }
        let mut response = request
            .send()
            .await
            .map_err(|err| format!("the hook could not be reached: {err}"))?;
        let status = response.status().as_u16();
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|err| format!("the hook's answer broke off: {err}"))?
        {
            if body.len() + chunk.len() > MAX_ANSWER_BYTES {
                return Err(format!(
                    "the hook's answer is larger than {MAX_ANSWER_BYTES} bytes"
                ));
            }
            body.extend_from_slice(&chunk);
        }
        let read = answer::read(question, status, &body)?;
        debug!(
            "hook answered status={status} allow={}",
            matches!(read.answer, Answer::Allow(_))
        );
        Ok(read)
    }
}
