//! Who may do what, applied to requests: the [`Publisher`] extractor (token
//! and publish rate), the subscriber check for streams, and the per-IP
//! stream count. Handlers only ask; every refusal is an [`ApiError`].

use std::{
    collections::HashMap,
    future::{Ready, ready},
    num::NonZeroU32,
    sync::{Arc, Mutex},
    time::SystemTime,
};

use actix_web::{FromRequest, HttpRequest, dev::Payload, http::header};
use governor::{
    DefaultKeyedRateLimiter, Quota, RateLimiter,
    clock::{Clock, DefaultClock},
};

use super::{
    AppState,
    client_ip::{ClientKey, client_ip},
};
use crate::{
    auth::{Auth, Grant},
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
}

impl Publisher {
    /// 403 unless the token covers `channel` (always fine with auth off).
    pub fn check(&self, channel: &ChannelName) -> Result<(), ApiError> {
        match &self.grant {
            Some(grant) if !grant.may_publish(channel) => Err(ApiError::Forbidden(format!(
                "the token does not allow publishing to {channel:?}"
            ))),
            _ => Ok(()),
        }
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
        Ok(Self { grant })
    }
}

impl FromRequest for Publisher {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(Publisher::from_request(req))
    }
}

/// Checks a subscriber's token for the channels of one stream. Returns when
/// the stream must end (the token's expiry), or `None` when no token was
/// needed. The token comes from the Authorization header, the configured
/// cookie, or the `token` query parameter, in that order.
pub fn check_subscriber(
    auth: &Auth,
    req: &HttpRequest,
    query_token: Option<&str>,
    channels: &[ChannelName],
) -> Result<Option<SystemTime>, ApiError> {
    let Some(verifier) = &auth.verifier else {
        return Ok(None);
    };
    let Some(first) = channels.iter().find(|c| auth.needs_subscriber_token(c)) else {
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
    let Some(token) = token else {
        return Err(ApiError::MissingToken(format!(
            "channel {first:?} needs a subscriber token: send it as Authorization: Bearer, \
             the {:?} cookie or the token query parameter",
            auth.cookie_name
        )));
    };
    let grant = verifier
        .verify(&token)
        .map_err(|e| ApiError::InvalidToken(e.to_string()))?;
    for channel in channels.iter().filter(|c| auth.needs_subscriber_token(c)) {
        if !grant.may_subscribe(channel) {
            return Err(ApiError::Forbidden(format!(
                "the token does not allow subscribing to {channel:?}"
            )));
        }
    }
    Ok(Some(grant.expires_at))
}

/// The request limits that live in the HTTP layer.
pub struct Limits {
    publish: Option<DefaultKeyedRateLimiter<String>>,
    streams: Arc<StreamSlots>,
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
            streams: Arc::new(StreamSlots {
                max: settings.max_streams_per_ip,
                open: Mutex::new(HashMap::new()),
            }),
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

    /// Takes one stream place for the client IP of `req`; 429 when it holds
    /// its maximum. Without a maximum nothing is counted (nor the IP
    /// worked out): nothing else reads the counts.
    pub fn open_stream(&self, req: &HttpRequest) -> Result<StreamSlot, ApiError> {
        if self.streams.max == 0 {
            return Ok(StreamSlot(None));
        }
        StreamSlots::acquire(&self.streams, client_ip(req, &self.settings))
    }
}

/// Open streams per client IP.
pub struct StreamSlots {
    max: usize,
    open: Mutex<HashMap<ClientKey, usize>>,
}

impl StreamSlots {
    fn acquire(this: &Arc<Self>, ip: ClientKey) -> Result<StreamSlot, ApiError> {
        let mut open = this.open.lock().unwrap_or_else(|e| e.into_inner());
        let count = open.entry(ip.clone()).or_insert(0);
        if this.max > 0 && *count >= this.max {
            return Err(ApiError::TooManyStreams(format!(
                "this client already holds its maximum of {} open streams",
                this.max
            )));
        }
        *count += 1;
        Ok(StreamSlot(Some((Arc::clone(this), ip))))
    }
}

/// One open stream of one IP; gives its place back when the stream is
/// dropped. Holds nothing when streams per IP are not limited.
pub struct StreamSlot(Option<(Arc<StreamSlots>, ClientKey)>);

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let Some((slots, ip)) = &self.0 else {
            return;
        };
        let mut open = slots.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = open.get_mut(ip) {
            *count -= 1;
            if *count == 0 {
                open.remove(ip);
            }
        }
    }
}
