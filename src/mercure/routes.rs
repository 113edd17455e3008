//! The Mercure HTTP endpoints: `GET /.well-known/mercure` (subscribe; `HEAD`
//! answers its headers), `POST /.well-known/mercure` (publish) and, when
//! `mercure.subscriptions` is set, the subscriptions API:
//! `GET /.well-known/mercure/subscriptions[/{topic}[/{subscriber}]]` for
//! `topic` subscriptions and
//! `GET /.well-known/mercure/subscriptions/{matchType}/{match}[/{subscriber}]`
//! for draft-08 `match*` subscriptions.
//!
//! Handlers stay thin: read the query or form, check the token
//! ([`auth`](super::auth)), send one message to the [`HubActor`], shape the
//! answer. A subscription becomes a [`MercureStream`] body that writes the
//! hub's pre-encoded updates; dropping it unsubscribes at once.

use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant, SystemTime},
};

use actix::Addr;
use actix_web::{HttpRequest, HttpResponse, HttpResponseBuilder, ResponseError, http::header, web};
use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use percent_encoding::percent_decode_str;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use url::Url;

use super::{
    MercureState,
    auth::{self, Claims, Role},
    error::MercureError,
    hub::{
        HubDelivery, HubSubscriber, JSONLD_CONTEXT, ListSubscriptions, PublishUpdate,
        SUBSCRIPTIONS_PATH, SubscribeHub, Subscription, SubscriptionInfo, UnsubscribeHub,
    },
    topic::{self, MatchType, TopicSelector},
    update::UpdateDraft,
};
use crate::{
    broker::{HEARTBEAT, await_reply, reserve_subscription},
    http::{AppState, body::read_body, guard::StreamSlot, stream::reconnect_hint},
    metrics::Metrics,
    sse,
};

/// Most selectors (`topic` and `match*` parameters together) one
/// subscription may name, and most topics of one update (as in the
/// reference hub).
pub const MAX_TOPICS: usize = 1000;
/// Longest `Last-Event-ID` accepted.
pub const MAX_LAST_EVENT_ID_LEN: usize = 8192;
/// The hub's path. Topics under it are the hub's own (subscription events).
const HUB_PATH: &str = "/.well-known/mercure";
const RESERVED_TOPIC: &str = HUB_PATH;

/// Mounts the hub's routes.
pub fn configure(cfg: &mut web::ServiceConfig, state: web::Data<MercureState>) {
    let subscriptions = state.settings.mercure.subscriptions;
    cfg.app_data(state).service(
        web::resource(HUB_PATH)
            .route(web::get().to(subscribe))
            .route(web::head().to(subscribe_head))
            .route(web::post().to(publish)),
    );
    if subscriptions {
        cfg.route(SUBSCRIPTIONS_PATH, web::get().to(subscriptions_api))
            .route(
                &format!("{SUBSCRIPTIONS_PATH}/{{rest:.*}}"),
                web::get().to(subscriptions_api),
            );
    }
}

/// `name=value` pairs of a query string or form body, strictly UTF-8.
fn parse_pairs(text: &str) -> Result<Vec<(String, String)>, MercureError> {
    let decode = |part: &str| {
        let part = part.replace('+', " ");
        percent_decode_str(&part)
            .decode_utf8()
            .map(|s| s.into_owned())
            .map_err(|_| MercureError::BadRequest("field names and values must be UTF-8".into()))
    };
    text.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            Ok((decode(name)?, decode(value)?))
        })
        .collect()
}

fn values<'a>(pairs: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    pairs
        .iter()
        .filter(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
        .collect()
}

/// C0, DEL and C1 control characters are not allowed in topics.
fn has_control(text: &str) -> bool {
    text.chars().any(char::is_control)
}

/// The values of the query parameters that may carry a token.
fn query_tokens(pairs: &[(String, String)]) -> Vec<String> {
    auth::QUERY_PARAMETERS
        .iter()
        .flat_map(|name| values(pairs, name))
        .map(str::to_owned)
        .collect()
}

/// The hub's URL as this request addressed it,
/// `scheme://host/.well-known/mercure`: the base of relative URL patterns
/// and topics, and the hub's own origin for cookie publishes. The
/// `Forwarded` / `X-Forwarded-Proto` / `X-Forwarded-Host` headers count
/// only with `limits.trust_forwarded_for` (behind a proxy that sets them,
/// e.g. one terminating TLS); otherwise the `Host` the client sent. A host
/// that does not make a URL falls back to the server's configured host.
fn hub_url(req: &HttpRequest, trust_forwarded: bool) -> Url {
    let (scheme, host) = if trust_forwarded {
        let info = req.connection_info();
        (info.scheme().to_owned(), info.host().to_owned())
    } else {
        let scheme = if req.app_config().secure() {
            "https"
        } else {
            "http"
        };
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_owned)
            .or_else(|| req.uri().authority().map(|a| a.to_string()))
            .unwrap_or_default();
        (scheme.to_owned(), host)
    };
    let url = |host: &str| {
        let plain = !host.is_empty() && !host.contains(['/', '?', '#', '@', '\\']);
        plain
            .then(|| Url::parse(&format!("{scheme}://{host}{HUB_PATH}")).ok())
            .flatten()
    };
    url(&host)
        .or_else(|| url(req.app_config().host()))
        .unwrap_or_else(|| {
            Url::parse("http://localhost/.well-known/mercure").expect("a constant, valid URL")
        })
}

/// The subscriber's claims, or 401 when its token is invalid, or when it
/// has none and anonymous subscribers are not allowed.
fn subscriber_claims(
    state: &MercureState,
    req: &HttpRequest,
    pairs: &[(String, String)],
    hub: &Url,
) -> Result<Option<Claims>, MercureError> {
    if !state.tokens.has_key(Role::Subscriber) {
        return Ok(None);
    }
    let claims = state
        .tokens
        .authorize(req, &query_tokens(pairs), Role::Subscriber, hub)
        .map_err(|err| MercureError::Unauthorized(err.to_string()))?;
    if claims.is_none() && !state.settings.mercure.anonymous {
        return Err(MercureError::Unauthorized(
            "a subscriber JWT is required".into(),
        ));
    }
    Ok(claims)
}

/// A subscribe request, read and checked.
struct SubscribeRequest {
    claims: Claims,
    subscriptions: Vec<Subscription>,
    last_event_id: Option<String>,
}

/// Reads a subscribe request: its token (401), its selectors and its
/// `Last-Event-ID` (400).
fn read_subscribe(
    state: &MercureState,
    req: &HttpRequest,
) -> Result<SubscribeRequest, MercureError> {
    let hub = hub_url(req, state.settings.limits.trust_forwarded_for);
    let pairs = parse_pairs(req.query_string())?;
    let claims = subscriber_claims(state, req, &pairs, &hub)?.unwrap_or_default();
    let subscriptions = read_subscriptions(&pairs, &claims, &hub)?;
    let last_event_id = last_event_id(req, &pairs)?;
    Ok(SubscribeRequest {
        claims,
        subscriptions,
        last_event_id,
    })
}

/// One subscription per `topic` parameter (`*`, exact or URI template) and
/// per draft-08 `match` / `matchExact` (exact) or `matchURLPattern`
/// parameter, in the order given. Any other parameter in the reserved
/// `match` namespace, a control character, a URL pattern that does not
/// parse, too many selectors or none at all are 400s.
fn read_subscriptions(
    pairs: &[(String, String)],
    claims: &Claims,
    hub: &Url,
) -> Result<Vec<Subscription>, MercureError> {
    let mut subscriptions = Vec::new();
    for (name, value) in pairs {
        let match_type = if name == "topic" {
            None
        } else if topic::is_match_parameter(name) {
            Some(MatchType::from_parameter(name).ok_or_else(|| {
                MercureError::BadRequest(format!(
                    "unknown topic matcher parameter {name:?}: use \"match\", \"matchExact\" \
                     or \"matchURLPattern\""
                ))
            })?)
        } else {
            continue;
        };
        if subscriptions.len() == MAX_TOPICS {
            return Err(MercureError::BadRequest(format!(
                "at most {MAX_TOPICS} \"topic\" and \"match\" parameters are allowed"
            )));
        }
        if has_control(value) {
            return Err(MercureError::BadRequest(
                "topic selectors must not contain control characters".into(),
            ));
        }
        let selector = match match_type {
            None => TopicSelector::new(value),
            Some(match_type) => TopicSelector::typed(match_type, value, hub)
                .map_err(|err| MercureError::BadRequest(err.to_string()))?,
        };
        subscriptions.push(Subscription {
            payload: claims.payload_for(selector.as_str()),
            selector,
            match_type,
        });
    }
    if subscriptions.is_empty() {
        return Err(MercureError::BadRequest(
            "Missing \"topic\" or \"match\" parameter.".into(),
        ));
    }
    Ok(subscriptions)
}

/// The headers of a subscribe answer (`GET` and `HEAD`).
fn stream_headers(response: &mut HttpResponseBuilder) {
    response
        .content_type("text/event-stream")
        .insert_header((
            header::CACHE_CONTROL,
            "private, no-cache, no-store, must-revalidate, max-age=0",
        ))
        .insert_header((header::PRAGMA, "no-cache"))
        .insert_header((header::EXPIRES, "0"))
        .insert_header(("X-Accel-Buffering", "no"));
}

/// `HEAD /.well-known/mercure?topic=…`: the checks and headers of a
/// subscribe, without a body and without subscribing.
pub async fn subscribe_head(
    state: web::Data<MercureState>,
    req: HttpRequest,
) -> Result<HttpResponse, MercureError> {
    read_subscribe(&state, &req)?;
    let mut response = HttpResponse::Ok();
    stream_headers(&mut response);
    Ok(response.finish())
}

/// `GET /.well-known/mercure?topic=…` (or `match=…`, `matchURLPattern=…`)
pub async fn subscribe(
    state: web::Data<MercureState>,
    req: HttpRequest,
) -> Result<HttpResponse, MercureError> {
    let SubscribeRequest {
        claims,
        subscriptions,
        last_event_id,
    } = read_subscribe(&state, &req)?;
    // The broker's limits apply as to channel streams: per client IP, and
    // in the total of subscriptions.
    let app = app_state(&req)?;
    let slot = app.limits.open_stream(&req)?;
    let counted = Counted::take(
        &state.total_subscribers,
        state.settings.limits.max_subscribers,
    )?;
    let (subscriber, rx) = HubSubscriber::new(
        subscriptions,
        claims.subscribe,
        state.settings.stream.subscriber_buffer,
    );
    let key = subscriber.key;
    let evicted = Arc::clone(&subscriber.evicted);
    let (reply, answer) = oneshot::channel();
    state.hub.do_send(SubscribeHub {
        subscriber,
        last_event_id,
        reply,
    });
    let guard = StreamGuard {
        hub: state.hub.clone(),
        key,
        metrics: Arc::clone(&state.metrics),
        counted: false,
    };
    let started = await_reply(answer).await?;
    let mut prelude =
        BytesMut::from(sse::prelude(state.settings.stream.retry.as_millis()).as_bytes());
    for update in &started.replay {
        prelude.extend_from_slice(&update.frame);
    }
    let expires = claims.expires_at.map(|at| {
        let left = at
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO);
        Box::pin(tokio::time::sleep(left))
    });
    let stream = MercureStream {
        prelude: Some(prelude.freeze()),
        rx,
        evicted,
        expires,
        retry: state.settings.stream.retry,
        done: false,
        guard: guard.counting(),
        _limits: (slot, counted),
    };
    let mut response = HttpResponse::Ok();
    stream_headers(&mut response);
    if let Some(id) = started.last_event_id {
        response.insert_header(("Last-Event-ID", id));
    }
    Ok(response.streaming(stream))
}

/// `Last-Event-ID` header, else the `lastEventID` query parameter.
fn last_event_id(
    req: &HttpRequest,
    pairs: &[(String, String)],
) -> Result<Option<String>, MercureError> {
    let header = match req.headers().get("last-event-id") {
        Some(value) => Some(
            value
                .to_str()
                .map_err(|_| MercureError::BadRequest("Last-Event-ID must be ASCII".into()))?
                .to_owned(),
        ),
        None => None,
    };
    let id = header
        .filter(|id| !id.is_empty())
        .or_else(|| {
            values(pairs, "lastEventID")
                .first()
                .map(|id| (*id).to_owned())
        })
        .filter(|id| !id.is_empty());
    if let Some(id) = &id
        && (id.len() > MAX_LAST_EVENT_ID_LEN || has_control(id))
    {
        return Err(MercureError::BadRequest("invalid Last-Event-ID".into()));
    }
    Ok(id)
}

/// `POST /.well-known/mercure` with a form: topic (one or more), data,
/// private, id, type, retry. Answers `200 text/plain` with the update's id.
pub async fn publish(
    state: web::Data<MercureState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, MercureError> {
    let received_at = Instant::now();
    let answer = publish_inner(&state, &req, payload, received_at).await;
    if let Err(err) = &answer {
        state.metrics.publish_refused(err.status_code().as_u16());
    }
    answer
}

async fn publish_inner(
    state: &MercureState,
    req: &HttpRequest,
    payload: web::Payload,
    received_at: Instant,
) -> Result<HttpResponse, MercureError> {
    let query = parse_pairs(req.query_string())?;
    let hub = hub_url(req, state.settings.limits.trust_forwarded_for);
    let claims = state
        .tokens
        .authorize(req, &query_tokens(&query), Role::Publisher, &hub)
        .map_err(|err| MercureError::Unauthorized(err.to_string()))?
        .ok_or_else(|| MercureError::Unauthorized("a publisher JWT is required".into()))?;
    // The publish rate limit, keyed as for channel publishes.
    app_state(req)?
        .limits
        .check_publish(req, claims.subject.as_deref())?;
    let body = read_body(req, payload, state.settings.server.max_body_bytes).await?;
    let is_form = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| {
            v.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    let text = std::str::from_utf8(&body)
        .map_err(|_| MercureError::BadRequest("the body must be UTF-8".into()))?;
    let form = if is_form {
        parse_pairs(text)?
    } else {
        Vec::new()
    };
    let draft = read_draft(&form)?;
    let allowed = claims
        .publish
        .as_ref()
        .is_some_and(|selectors| topic::all_match(selectors, &draft.topics));
    if !allowed {
        return Err(MercureError::Forbidden(
            "the JWT's publish rights (mercure.publish or authorization_details) do not cover \
             these topics"
                .into(),
        ));
    }
    if let Some(reserved) = draft.topics.iter().find(|t| t.contains(RESERVED_TOPIC)) {
        return Err(MercureError::Forbidden(format!(
            "{reserved:?}: topics under {RESERVED_TOPIC:?} are reserved to the hub"
        )));
    }
    let (reply, answer) = oneshot::channel();
    state.hub.do_send(PublishUpdate {
        draft,
        received_at,
        reply,
    });
    let id = await_reply(answer).await?;
    Ok(HttpResponse::Ok().content_type("text/plain").body(id))
}

/// The update a publish form describes, validated.
fn read_draft(form: &[(String, String)]) -> Result<UpdateDraft, MercureError> {
    let first = |name: &str| values(form, name).first().map(|v| (*v).to_owned());
    let topics: Vec<String> = values(form, "topic")
        .into_iter()
        .map(str::to_owned)
        .collect();
    if topics.is_empty() {
        return Err(MercureError::BadRequest(
            "Missing \"topic\" parameter".into(),
        ));
    }
    if topics.len() > MAX_TOPICS {
        return Err(MercureError::BadRequest("too many topics in update".into()));
    }
    if topics.iter().any(|t| has_control(t)) {
        return Err(MercureError::BadRequest(
            "topic contains a forbidden control character".into(),
        ));
    }
    // ASCII digits only (draft-08): `str::parse` would also take `+5`.
    let retry = match first("retry").filter(|r| !r.is_empty()) {
        Some(text) => Some(
            text.bytes()
                .all(|b| b.is_ascii_digit())
                .then(|| text.parse::<u64>().ok())
                .flatten()
                .ok_or_else(|| MercureError::BadRequest("Invalid \"retry\" parameter".into()))?,
        ),
        None => None,
    };
    let forbidden = |v: &String| v.contains(['\r', '\n', '\0']);
    let id = first("id").filter(|id| !id.is_empty());
    if id.as_ref().is_some_and(forbidden) {
        return Err(MercureError::BadRequest(
            "\"id\" field contains a forbidden control character".into(),
        ));
    }
    // draft-08 keeps ids starting with `#` for hubs' own ids.
    if id.as_ref().is_some_and(|id| id.starts_with('#')) {
        return Err(MercureError::BadRequest(
            "\"id\" field must not start with \"#\"".into(),
        ));
    }
    let event_type = first("type").filter(|t| !t.is_empty());
    if event_type.as_ref().is_some_and(forbidden) {
        return Err(MercureError::BadRequest(
            "\"type\" field contains a forbidden control character".into(),
        ));
    }
    Ok(UpdateDraft {
        topics,
        data: first("data").unwrap_or_default(),
        private: !values(form, "private").is_empty(),
        id,
        event_type,
        retry,
    })
}

/// A collection document of the subscriptions API.
#[derive(Debug, Serialize)]
struct SubscriptionCollection {
    #[serde(rename = "@context")]
    context: &'static str,
    id: String,
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(rename = "lastEventID")]
    last_event_id: String,
    subscriptions: Vec<SubscriptionInfo>,
}

/// `GET /.well-known/mercure/subscriptions[/…]`: the active subscriptions.
/// The path segments after it (each decoded like a form value: `%XX`, and
/// `+` is a space, since ids escape like Go's `url.QueryEscape`) address:
/// - none: every subscription;
/// - `{topic}`: the `topic` subscriptions with that selector;
/// - `{topic}/{subscriber}`: one `topic` subscription, else, when `{topic}`
///   is a matcher type name, `{matchType}/{match}`: the `match*`
///   subscriptions with that matcher;
/// - `{matchType}/{match}/{subscriber}`: one `match*` subscription.
pub async fn subscriptions_api(
    state: web::Data<MercureState>,
    req: HttpRequest,
) -> Result<HttpResponse, MercureError> {
    let path = req.uri().path().to_owned();
    let rest = path
        .strip_prefix(SUBSCRIPTIONS_PATH)
        .unwrap_or_default()
        .trim_start_matches('/');
    let segments = rest
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| {
            percent_decode_str(&s.replace('+', " "))
                .decode_utf8()
                .map(|s| s.into_owned())
                .map_err(|_| MercureError::BadRequest("invalid path segment".into()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if segments.len() > 3 {
        return Err(MercureError::NotFound(format!("no resource at {path}")));
    }
    if state.tokens.has_key(Role::Subscriber) {
        let pairs = parse_pairs(req.query_string())?;
        let hub = hub_url(&req, state.settings.limits.trust_forwarded_for);
        let claims = state
            .tokens
            .authorize(&req, &query_tokens(&pairs), Role::Subscriber, &hub)
            .map_err(|err| MercureError::Unauthorized(err.to_string()))?
            .ok_or_else(|| MercureError::Unauthorized("a subscriber JWT is required".into()))?;
        let covered = claims
            .subscribe
            .as_ref()
            .is_some_and(|s| topic::any_matches(s, std::slice::from_ref(&path)));
        if !covered {
            return Err(MercureError::Forbidden(
                "the JWT's subscribe rights do not cover this URL".into(),
            ));
        }
    }
    let list = state
        .hub
        .send(ListSubscriptions)
        .await
        .map_err(|_| MercureError::Unavailable("the hub did not answer".into()))?;
    let subscriptions: Vec<SubscriptionInfo> = list
        .subscriptions
        .into_iter()
        .filter(|s| s.is_addressed_by(&segments))
        .collect();
    let ld_json = |body: String| {
        HttpResponse::Ok()
            .content_type("application/ld+json")
            .body(body)
    };
    // Three segments name one `match*` subscription; two name one `topic`
    // subscription, or else, after a matcher type, a collection.
    let single = match segments.len() {
        3 => true,
        2 => {
            MatchType::from_name(&segments[0]).is_none()
                || subscriptions.iter().any(|s| s.match_type.is_none())
        }
        _ => false,
    };
    if single {
        let mut one = subscriptions
            .into_iter()
            .find(|s| s.match_type.is_some() == (segments.len() == 3))
            .ok_or_else(|| MercureError::NotFound("no such subscription".into()))?;
        one.context = Some(JSONLD_CONTEXT);
        one.last_event_id = Some(list.last_event_id);
        return Ok(ld_json(
            serde_json::to_string_pretty(&one).unwrap_or_default(),
        ));
    }
    let collection = SubscriptionCollection {
        context: JSONLD_CONTEXT,
        id: path,
        kind: "Subscriptions",
        last_event_id: list.last_event_id,
        subscriptions,
    };
    Ok(ld_json(
        serde_json::to_string_pretty(&collection).unwrap_or_default(),
    ))
}

/// Unsubscribes a Mercure stream when its body is dropped and keeps the
/// open-streams gauge right.
struct StreamGuard {
    hub: Addr<super::hub::HubActor>,
    key: u64,
    metrics: Arc<Metrics>,
    /// The stream was opened (and counted in the gauge).
    counted: bool,
}

impl StreamGuard {
    fn counting(mut self) -> Self {
        self.metrics.open_streams.increment(1);
        self.counted = true;
        self
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.hub.do_send(UnsubscribeHub { key: self.key });
        if self.counted {
            self.metrics.open_streams.decrement(1);
        }
    }
}

/// The body of a Mercure subscription: prelude and replay first, then what
/// the hub queues. Ends at the token's `exp` (as the reference hub does),
/// or with a reconnect hint when the hub evicted it or shut down.
struct MercureStream {
    prelude: Option<Bytes>,
    rx: mpsc::Receiver<HubDelivery>,
    evicted: Arc<AtomicBool>,
    /// The subscriber token's expiry.
    expires: Option<Pin<Box<tokio::time::Sleep>>>,
    retry: Duration,
    done: bool,
    guard: StreamGuard,
    /// The places this stream holds in the broker's limits, given back
    /// when it ends.
    _limits: (StreamSlot, Counted),
}

/// A Mercure subscription counted in the broker's total of subscriptions
/// (`limits.max_subscribers`, kept with the channels); given back on drop.
struct Counted(Arc<AtomicU64>);

impl Counted {
    fn take(total: &Arc<AtomicU64>, max: usize) -> Result<Self, MercureError> {
        reserve_subscription(total, max).map_err(|err| MercureError::Limit(err.into()))?;
        Ok(Self(Arc::clone(total)))
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The broker's HTTP state, whose limits apply to Mercure requests too.
fn app_state(req: &HttpRequest) -> Result<&web::Data<AppState>, MercureError> {
    AppState::of(req).map_err(|err| MercureError::Unavailable(err.to_string()))
}

impl Stream for MercureStream {
    type Item = Result<Bytes, Infallible>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        if let Some(prelude) = this.prelude.take() {
            return Poll::Ready(Some(Ok(prelude)));
        }
        if let Some(expires) = &mut this.expires
            && expires.as_mut().poll(cx).is_ready()
        {
            this.done = true;
            return Poll::Ready(None);
        }
        match this.rx.poll_recv(cx) {
            Poll::Ready(Some(HubDelivery::Update(update))) => {
                Poll::Ready(Some(Ok(update.frame.clone())))
            }
            Poll::Ready(Some(HubDelivery::Heartbeat)) => Poll::Ready(Some(Ok(HEARTBEAT))),
            Poll::Ready(None) => {
                this.done = true;
                let reason = if this.evicted.load(Ordering::Acquire) {
                    "slow"
                } else {
                    "shutdown"
                };
                Poll::Ready(Some(Ok(reconnect_hint(this.retry, this.guard.key, reason))))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Forms decode `+`, percent escapes and repeated fields.
    #[test]
    fn form_decoding() {
        let pairs =
            parse_pairs("topic=a&topic=https%3A%2F%2Fx%2F1&data=two%0Alines+here&private").unwrap();
        assert_eq!(values(&pairs, "topic"), vec!["a", "https://x/1"]);
        assert_eq!(values(&pairs, "data"), vec!["two\nlines here"]);
        assert_eq!(values(&pairs, "private"), vec![""]);
        assert!(parse_pairs("data=%FF").is_err());
    }

    /// Ids and types with line breaks, bad retries and missing topics are 400s.
    #[test]
    fn draft_validation() {
        let form = |text: &str| parse_pairs(text).unwrap();
        assert!(read_draft(&form("data=x")).is_err());
        assert!(read_draft(&form("topic=a&id=x%0Ay")).is_err());
        assert!(read_draft(&form("topic=a&type=x%0Dy")).is_err());
        assert!(read_draft(&form("topic=a&retry=-1")).is_err());
        assert!(read_draft(&form("topic=a&retry=%2B5")).is_err());
        assert!(read_draft(&form("topic=a&retry=5%20")).is_err());
        assert!(read_draft(&form("topic=a&id=%23hub-id")).is_err());
        assert!(read_draft(&form("topic=a%01")).is_err());
        assert_eq!(
            read_draft(&form("topic=a&retry=0042")).unwrap().retry,
            Some(42)
        );
        assert!(read_draft(&form("topic=a&id=a%23b")).is_ok());
        let draft = read_draft(&form("topic=a&topic=b&id=&type=&retry=&private=off")).unwrap();
        assert_eq!(draft.topics, vec!["a", "b"]);
        assert!(draft.private && draft.id.is_none() && draft.event_type.is_none());
    }

    fn hub() -> Url {
        Url::parse("http://hub.test/.well-known/mercure").unwrap()
    }

    /// `topic` and `match*` parameters each make a subscription, in order;
    /// other `match…` names, bad patterns and no selector are 400s.
    #[test]
    fn subscribe_selectors() {
        let read = |query: &str| {
            read_subscriptions(&parse_pairs(query).unwrap(), &Claims::default(), &hub())
        };
        let subscriptions = read(
            "topic=a%7Bx%7D&lastEventID=1&match=b%7Bx%7D&matchExact=*&matchURLPattern=%2Fc%2F%3Aid",
        )
        .unwrap();
        let shapes: Vec<_> = subscriptions
            .iter()
            .map(|s| (s.selector.as_str(), s.match_type))
            .collect();
        assert_eq!(
            shapes,
            vec![
                ("a{x}", None),
                ("b{x}", Some(MatchType::Exact)),
                ("*", Some(MatchType::Exact)),
                ("/c/:id", Some(MatchType::UrlPattern)),
            ]
        );
        assert!(subscriptions[0].selector.matches("a1"));
        assert!(!subscriptions[1].selector.matches("b1"));
        assert!(subscriptions[3].selector.matches("http://hub.test/c/1"));
        for bad in [
            "lastEventID=x",
            "matchRegexp=a",
            "Match=a",
            "matchurlpattern=a",
            "matcher=a&topic=b",
            "matchURLPattern=https%3A%2F%2Fx%2F(",
            "match=a%0Ab",
        ] {
            assert!(read(bad).is_err(), "{bad}");
        }
    }

    /// The hub URL comes from Host (forwarded headers only when trusted).
    #[test]
    fn hub_url_from_the_request() {
        use actix_web::test::TestRequest;
        let req = TestRequest::default()
            .insert_header(("host", "hub.example:8443"))
            .insert_header(("x-forwarded-host", "proxy.example"))
            .insert_header(("x-forwarded-proto", "https"))
            .to_http_request();
        assert_eq!(
            hub_url(&req, false).as_str(),
            "http://hub.example:8443/.well-known/mercure"
        );
        assert_eq!(
            hub_url(&req, true).as_str(),
            "https://proxy.example/.well-known/mercure"
        );
        let odd = TestRequest::default()
            .insert_header(("host", "a@b/c"))
            .to_http_request();
        assert_eq!(hub_url(&odd, false).path(), "/.well-known/mercure");
        assert_ne!(hub_url(&odd, false).host_str(), Some("b"));
    }
}
