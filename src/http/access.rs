//! The access policy applied to our routes' requests: the [`Publisher`]
//! extractor (token and publish rate, [`Limits`]), the [`Caller`] of every
//! other route (the token it presents, if any), and a subscriber's check
//! for the channels of its stream ([`check_subscriber`]). The rules
//! themselves are [`AccessPolicy`]'s; handlers only ask, and every refusal
//! is an [`ApiError`]. (Named for what it applies: actix-web's own `guard`
//! module is request matching, which this is not.)

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
    config::LimitsSettings,
    error::ApiError,
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
        let grant = match &state.auth.verifier {
            None => None,
            // Publishers authenticate with the header only: a cookie would
            // let any page the browser visits publish (CSRF).
            Some(verifier) => {
                let token = bearer(req)?.ok_or_else(|| {
                    ApiError::MissingToken(
                        "publishing needs a token: send Authorization: Bearer <token>".into(),
                    )
                })?;
                Some(
                    verifier
                        .verify(&token)
                        .map_err(|e| ApiError::InvalidToken(e.to_string()))?,
                )
            }
        };
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
/// token it presents, verified, if it presents one. The token comes from
/// the Authorization header, the configured cookie, or the `token` query
/// parameter, in that order; with auth off none is read.
#[derive(Debug)]
pub struct Caller {
    grant: Option<Grant>,
    /// The cookie the token would be in, for refusals that say how to send one.
    cookie_name: String,
}

impl Caller {
    /// Reads and verifies the request's token; an invalid one is a 401
    /// (never silently anonymous).
    pub fn of(auth: &Auth, req: &HttpRequest, query_token: Option<&str>) -> Result<Self, ApiError> {
        let cookie_name = auth.cookie_name.clone();
        let Some(verifier) = &auth.verifier else {
            return Ok(Self {
                grant: None,
                cookie_name,
            });
        };
        let token = match bearer(req)? {
            Some(token) => Some(token),
            None => req
                .cookie(&auth.cookie_name)
                .map(|c| c.value().to_owned())
                .filter(|t| !t.is_empty())
                .or_else(|| query_token.filter(|t| !t.is_empty()).map(str::to_owned)),
        };
        let grant = token
            .map(|token| verifier.verify(&token))
            .transpose()
            .map_err(|e| ApiError::InvalidToken(e.to_string()))?;
        Ok(Self { grant, cookie_name })
    }

    /// The caller's rights, for the policy (`None`: anonymous).
    pub fn rights(&self) -> Option<&dyn Rights> {
        self.grant.as_ref().map(|g| g as &dyn Rights)
    }

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

/// Checks a subscriber's token for the channels of one stream. Returns when
/// the stream must end (the token's expiry), or `None` when no token was
/// presented.
pub fn check_subscriber(
    state: &AppState,
    req: &HttpRequest,
    query_token: Option<&str>,
    channels: &[ChannelName],
) -> Result<Option<SystemTime>, ApiError> {
    // The token is read only when some channel needs one: a public stream
    // with a stale cookie still opens.
    if channels
        .iter()
        .all(|c| state.access.allows_anyone(Action::Subscribe, c))
    {
        return Ok(None);
    }
    let caller = Caller::of(&state.auth, req, query_token)?;
    for channel in channels {
        caller.check(&state.access, Action::Subscribe, channel)?;
    }
    Ok(caller.expires_at())
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
