//! The access policy applied to our routes' requests: the [`Publisher`]
//! extractor (token and publish rate, [`Limits`]), the [`Caller`] of every
//! other route (the token it presents, if any, and what the application's
//! hook granted its stream), and a subscriber's check for the channels of
//! its stream ([`authorize_stream`]), which asks the hook first
//! ([`ask_hook`], also for the Mercure hub). The rules themselves are
//! [`AccessPolicy`]'s; handlers only ask, and every refusal is an
//! [`ApiError`]. (Named for what it applies: actix-web's own `guard` module
//! is request matching, which this is not.)

use std::{
    future::{Ready, ready},
    num::NonZeroU32,
    sync::Arc,
    time::SystemTime,
};

use actix_web::{FromRequest, HttpRequest, dev::Payload, http::header};
use governor::{
    DefaultKeyedRateLimiter, Quota, RateLimiter,
    clock::{Clock, DefaultClock},
};

use super::{AppState, client_ip::client_ip};
use crate::{
    auth::{AccessPolicy, Action, Auth, Denied, Grant, Rights},
    broker::identity::Identity,
    config::{FailurePolicy, LimitsSettings},
    error::ApiError,
    hooks::{Asking, HookGrant, Question, Verdict},
    names::ChannelName,
};

/// The token in `Authorization: Bearer <token>`; `Ok(None)` without the header.
fn bearer(req: &HttpRequest) -> Result<Option<String>, ApiError> {
    let Some(value) = req.headers().get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value
        .to_str()
        .map_err(|_| ApiError::InvalidToken("the Authorization header is not readable".into()))?;
    match value.split_once(' ') {
        Some((scheme, token))
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
        {
            Ok(Some(token.trim().to_owned()))
        }
        _ => Err(ApiError::InvalidToken(
            "the Authorization header must be \"Bearer <token>\"".into(),
        )),
    }
}

/// A publisher that passed the token check and the rate limit. Handlers ask
/// [`Publisher::check`] for each channel they publish to.
#[derive(Debug)]
pub struct Publisher {
    /// `None` when auth is off.
    grant: Option<Grant>,
    access: Arc<AccessPolicy>,
}

impl Publisher {
    /// 403 unless the policy lets this publisher publish to `channel`.
    pub fn check(&self, channel: &ChannelName) -> Result<(), ApiError> {
        let rights = self.grant.as_ref().map(|g| g as &dyn Rights);
        self.access
            .decide(rights, Action::Publish, channel)
            .map_err(|denied| refusal(denied, Action::Publish, channel))
    }

    fn from_request(req: &HttpRequest) -> Result<Self, ApiError> {
        let state = AppState::of(req)?;
        let grant = header_grant(
            state,
            req,
            "publishing needs a token: send Authorization: Bearer <token>",
        )?;
        state
            .limits
            .check_publish(req, grant.as_ref().and_then(|g| g.subject.as_deref()))?;
        Ok(Self {
            grant,
            access: Arc::clone(&state.access),
        })
    }
}

impl FromRequest for Publisher {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(Publisher::from_request(req))
    }
}

/// The caller of a route that reads (a stream, a listing, pulses): the
/// token it presents, verified, if it presents one, and for a stream what
/// the application's hook granted it. The token comes from the
/// Authorization header, the configured cookie, or the `token` query
/// parameter, in that order; with auth off none is read. Its [`Rights`]
/// are those of both credentials together.
#[derive(Debug)]
pub struct Caller {
    grant: Option<Grant>,
    /// What the application's hook allowed this caller's stream.
    hook: Option<Arc<HookGrant>>,
    /// The cookie the token would be in, for refusals that say how to send one.
    cookie_name: String,
}

impl Rights for Caller {
    /// What the token covers, or the hook's answer.
    fn covers(&self, action: Action, channel: &ChannelName) -> bool {
        self.grant
            .as_ref()
            .is_some_and(|g| g.covers(action, channel))
            || self
                .hook
                .as_ref()
                .is_some_and(|h| h.covers(action, channel))
    }

    fn monitors(&self) -> bool {
        self.grant.as_ref().is_some_and(Rights::monitors)
    }

    fn manages_users(&self) -> bool {
        self.grant.as_ref().is_some_and(Rights::manages_users)
    }
}

impl Caller {
    /// Reads and verifies the request's token; an invalid one is a 401
    /// (never silently anonymous).
    pub fn of(auth: &Auth, req: &HttpRequest, query_token: Option<&str>) -> Result<Self, ApiError> {
        Ok(Self {
            grant: token(auth, req, query_token)?,
            hook: None,
            cookie_name: auth.cookie_name.clone(),
        })
    }

    /// The caller's rights, for the policy (`None`: anonymous).
    pub fn rights(&self) -> Option<&dyn Rights> {
        (self.grant.is_some() || self.hook.is_some()).then_some(self as &dyn Rights)
    }

    /// Who the caller is: the hook's user, else the token's `sub` (with
    /// the `info` of the same credential).
    pub fn identity(&self) -> Option<Arc<Identity>> {
        let (user, info) = match (&self.hook, &self.grant) {
            (Some(hook), _) if hook.user.is_some() => (hook.user.clone(), hook.info.clone()),
            (_, Some(grant)) => (grant.user.clone(), grant.info.clone()),
            _ => (None, None),
        };
        user.map(|user| Arc::new(Identity { user, info }))
    }
}

/// The request's token, verified (`None` without one, or with auth off);
/// an invalid one is a 401.
fn token(
    auth: &Auth,
    req: &HttpRequest,
    query_token: Option<&str>,
) -> Result<Option<Grant>, ApiError> {
    let Some(verifier) = &auth.verifier else {
        return Ok(None);
    };
    let token = match bearer(req)? {
        Some(token) => Some(token),
        None => req
            .cookie(&auth.cookie_name)
            .map(|c| c.value().to_owned())
            .filter(|t| !t.is_empty())
            .or_else(|| query_token.filter(|t| !t.is_empty()).map(str::to_owned)),
    };
    token
        .map(|token| verifier.verify(&token))
        .transpose()
        .map_err(|e| ApiError::InvalidToken(e.to_string()))
}

impl Caller {
    /// When the caller's token expires (`None`: no token).
    pub fn expires_at(&self) -> Option<SystemTime> {
        self.grant.as_ref().map(|g| g.expires_at)
    }

    /// 401/403 unless the policy lets this caller do `action` on `channel`.
    pub fn check(
        &self,
        access: &AccessPolicy,
        action: Action,
        channel: &ChannelName,
    ) -> Result<(), ApiError> {
        access
            .decide(self.rights(), action, channel)
            .map_err(|denied| match denied {
                Denied::CredentialRequired => ApiError::MissingToken(format!(
                    "channel {channel:?} needs a token: send it as Authorization: Bearer, the \
                     {:?} cookie or the token query parameter",
                    self.cookie_name
                )),
                denied => refusal(denied, action, channel),
            })
    }

    /// 401/403 unless the policy lets this caller read the pulse book.
    pub fn check_pulse_book(&self, access: &AccessPolicy) -> Result<(), ApiError> {
        access
            .decide_pulse_book(self.rights())
            .map_err(|denied| match denied {
                Denied::CredentialRequired => ApiError::MissingToken(
                    "the pulse book needs a token with the monitor grant".into(),
                ),
                Denied::NotGranted => {
                    ApiError::Forbidden("the token does not carry the monitor grant".into())
                }
            })
    }

    /// 401 when a pulse naming no channel needs a token and none was given.
    pub fn check_unscoped_pulse(&self, access: &AccessPolicy) -> Result<(), ApiError> {
        access.decide_unscoped_pulse(self.rights()).map_err(|_| {
            ApiError::MissingToken("pulses need a token (auth.anonymous_subscribe = false)".into())
        })
    }
}

/// The verified token of the Authorization header, for the routes that
/// take it from there only (publishing, revocation: a cookie would let any
/// page the browser visits act, CSRF). `None` with auth off; without a
/// token a 401 that says `missing`.
fn header_grant(
    state: &AppState,
    req: &HttpRequest,
    missing: &str,
) -> Result<Option<Grant>, ApiError> {
    let Some(verifier) = &state.auth.verifier else {
        return Ok(None);
    };
    let token = bearer(req)?.ok_or_else(|| ApiError::MissingToken(missing.to_owned()))?;
    verifier
        .verify(&token)
        .map(Some)
        .map_err(|e| ApiError::InvalidToken(e.to_string()))
}

/// 401/403 unless the caller of a revocation route
/// (`POST /users/{user}/…`) may end users' streams: with auth on, a token
/// with the `users` grant in the Authorization header (never a cookie, so
/// no page a browser visits can revoke: CSRF).
pub fn check_revoker(state: &AppState, req: &HttpRequest) -> Result<(), ApiError> {
    let grant = header_grant(
        state,
        req,
        "ending a user's streams needs a token with the users grant: send \
         Authorization: Bearer <token>",
    )?;
    state
        .access
        .decide_revocation(grant.as_ref().map(|g| g as &dyn Rights))
        .map_err(|denied| match denied {
            Denied::CredentialRequired => ApiError::MissingToken(
                "ending a user's streams needs a token with the users grant".into(),
            ),
            Denied::NotGranted => {
                ApiError::Forbidden("the token does not carry the users grant".into())
            }
        })
}

/// The problem a policy refusal becomes.
fn refusal(denied: Denied, action: Action, channel: &ChannelName) -> ApiError {
    let verb = match action {
        Action::Publish => "publishing to",
        Action::Subscribe => "subscribing to",
        Action::Inspect => "seeing",
    };
    match denied {
        Denied::CredentialRequired => {
            ApiError::MissingToken(format!("{verb} {channel:?} needs a token"))
        }
        Denied::NotGranted => {
            ApiError::Forbidden(format!("the token does not allow {verb} {channel:?}"))
        }
    }
}

/// What a stream's caller may have, as the access policy and the
/// application's hook decided.
pub struct StreamAccess {
    /// When the token that opened it expires: the stream ends then.
    pub expires_at: Option<SystemTime>,
    /// Who the subscriber is (the hook's user, else the token's `sub`).
    pub identity: Option<Arc<Identity>>,
    /// The hook's allow, when it gave one: asked again every
    /// `hooks.recheck_every`.
    pub hook: Option<HookAllow>,
}

/// The application hook's allow of a stream, and the question it answered
/// (asked again by a recheck).
pub struct HookAllow {
    pub grant: Arc<HookGrant>,
    pub question: Question,
}

/// Decides whether a stream of `channels` may open: the application's hook
/// first (when configured; a channel its answer does not allow is a 403),
/// then the access policy for every channel, with the caller's token and
/// the hook's grant as its credentials.
pub async fn authorize_stream(
    state: &AppState,
    req: &HttpRequest,
    query_token: Option<&str>,
    channels: &[ChannelName],
    last_event_id: Option<&str>,
) -> Result<StreamAccess, ApiError> {
    let public = channels
        .iter()
        .all(|c| state.access.allows_anyone(Action::Subscribe, c));
    let asked = channels.iter().map(|c| c.as_str().to_owned()).collect();
    let hook = ask_hook(
        state,
        req,
        Asking::Stream,
        asked,
        last_event_id,
        public,
        query_token.is_some(),
    )
    .await?;
    if let Some(hook) = &hook
        && let Some(channel) = channels
            .iter()
            .find(|c| !hook.grant.covers(Action::Subscribe, c))
    {
        return Err(ApiError::Forbidden(format!(
            "the application does not allow subscribing to {channel:?}"
        )));
    }
    // The token counts when the hook did not decide and a channel needs
    // one; otherwise it is read only for who the caller is, and a stale
    // one does not keep a stream the policy allows from opening.
    let needs_token = hook.is_none() && !public;
    let grant = match needs_token {
        true => token(&state.auth, req, query_token)?,
        false => token(&state.auth, req, query_token).unwrap_or(None),
    };
    let caller = Caller {
        grant,
        hook: hook.as_ref().map(|h| Arc::clone(&h.grant)),
        cookie_name: state.auth.cookie_name.clone(),
    };
    for channel in channels {
        caller.check(&state.access, Action::Subscribe, channel)?;
    }
    Ok(StreamAccess {
        expires_at: caller.expires_at().filter(|_| needs_token),
        identity: caller.identity(),
        hook,
    })
}

/// Asks the application's hook about a stream that asks for `asked` (its
/// channels, or the Mercure hub's topic selectors). `Ok(None)`: no hook,
/// or it was skipped (`hooks.public_channels_skip`: `public` channels and
/// no credential), or it failed with `hooks.failure_policy =
/// "allow_public"` (the policy then decides as without it). A denial is a
/// 403; a failure with the `deny` policy a 503 with Retry-After.
pub async fn ask_hook(
    state: &AppState,
    req: &HttpRequest,
    asking: Asking,
    asked: Vec<String>,
    last_event_id: Option<&str>,
    public: bool,
    query_token: bool,
) -> Result<Option<HookAllow>, ApiError> {
    let Some(hooks) = &state.hooks else {
        return Ok(None);
    };
    let question = Question::new(
        asking,
        asked,
        last_event_id.map(str::to_owned),
        client_ip(req, &state.settings.limits).to_string(),
        req.headers(),
        hooks.forward_headers(),
    );
    if hooks.settings().public_channels_skip
        && public
        && !query_token
        && !question.carries_credentials()
    {
        return Ok(None);
    }
    match count(state, hooks.decide(&question).await) {
        Verdict::Allow(grant) => Ok(Some(HookAllow { grant, question })),
        Verdict::Deny => Err(ApiError::Forbidden(
            "the application does not allow this stream".into(),
        )),
        Verdict::Failed { retry_after, .. } => match hooks.failure_policy() {
            // Why it failed is logged, not told: it may name the hook's
            // internal address.
            FailurePolicy::Deny => Err(ApiError::HookUnavailable {
                detail: "the application could not be asked whether this stream may open: \
                         retry later"
                    .into(),
                retry_after_secs: retry_after.as_secs().max(1),
            }),
            FailurePolicy::AllowPublic => Ok(None),
        },
    }
}

/// Asks the application's publish hook (`hooks.publish_url`) about a
/// publish to `asked` (channel names, or a Mercure update's topics), after
/// the token's check: it may only refuse. Without the hook, `Ok`. A
/// denial is a 403; a failure a 503 with Retry-After under the `deny`
/// policy, or left to the tokens under `allow_public`.
pub async fn ask_publish_hook(
    state: &AppState,
    req: &HttpRequest,
    asking: Asking,
    asked: Vec<String>,
) -> Result<(), ApiError> {
    let Some(hook) = &state.publish_hook else {
        return Ok(());
    };
    let question = Question::new(
        asking,
        asked,
        None,
        client_ip(req, &state.settings.limits).to_string(),
        req.headers(),
        hook.forward_headers(),
    );
    match count(state, hook.decide(&question).await) {
        Verdict::Allow(_) => Ok(()),
        Verdict::Deny => Err(ApiError::Forbidden(
            "the application does not allow this publish".into(),
        )),
        Verdict::Failed { retry_after, .. } => match hook.failure_policy() {
            FailurePolicy::Deny => Err(ApiError::HookUnavailable {
                detail: "the application could not be asked whether this publish may go \
                         out: retry later"
                    .into(),
                retry_after_secs: retry_after.as_secs().max(1),
            }),
            FailurePolicy::AllowPublic => Ok(()),
        },
    }
}

/// Counts a hook's decision by its outcome (`/metrics`).
fn count(state: &AppState, verdict: Verdict) -> Verdict {
    let counter = match &verdict {
        Verdict::Allow(_) => &state.metrics.hook_allowed,
        Verdict::Deny => &state.metrics.hook_denied,
        Verdict::Failed { .. } => &state.metrics.hook_failed,
    };
    counter.increment(1);
    verdict
}

/// The publish rate limit (`limits.publish_rate`, `limits.publish_burst`):
/// per token subject, or per client IP without one. (The other limit on
/// our routes' requests, open streams per client IP, is applied where a
/// stream opens: `super::stream::slots`.)
pub struct Limits {
    publish: Option<DefaultKeyedRateLimiter<String>>,
    /// The trusted proxies, which say whose IP a request is: see
    /// [`client_ip`].
    settings: LimitsSettings,
}

/// Distinct keys the publish limiter remembers before it forgets the idle ones.
const RATE_KEYS_BEFORE_SWEEP: usize = 10_000;

impl Limits {
    pub fn new(settings: &LimitsSettings) -> Self {
        let publish = NonZeroU32::new(settings.publish_rate).map(|rate| {
            let burst = NonZeroU32::new(settings.publish_burst).unwrap_or(rate);
            RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst))
        });
        Self {
            publish,
            settings: settings.clone(),
        }
    }

    /// 429 with the wait in Retry-After when the publisher of `req` publishes
    /// too fast: the one its token's `subject` names, or else its client IP
    /// (worked out only when a limit is set).
    pub fn check_publish(&self, req: &HttpRequest, subject: Option<&str>) -> Result<(), ApiError> {
        let Some(limiter) = &self.publish else {
            return Ok(());
        };
        if limiter.len() > RATE_KEYS_BEFORE_SWEEP {
            // Keys whose bucket is full again carry no information: drop
            // them, so many distinct clients cannot grow the map without bound.
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
        let key = match subject {
            Some(subject) => format!("sub:{subject}"),
            None => format!("ip:{}", client_ip(req, &self.settings)),
        };
        limiter.check_key(&key).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            ApiError::RateLimited {
                detail: "publishing too fast: slow down and retry after the given seconds".into(),
                retry_after_secs: wait.as_secs_f64().ceil() as u64,
            }
        })
    }
}
