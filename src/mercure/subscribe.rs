//! `GET /.well-known/mercure` (subscribe) and `HEAD` (its checks and
//! headers): the request is read (token, selectors, `Last-Event-ID`) into a
//! stream of the hub's channel with a [`SelectorFilter`], opened like every
//! other stream (`crate::http::opening`).

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Instant,
};

use actix_web::{HttpRequest, HttpResponse, HttpResponseBuilder, http::header, web};
use bytes::BytesMut;
use url::Url;

use super::{
    MercureState,
    auth::{Claims, Role},
    error::MercureError,
    hub::{SelectorFilter, hub_channel, record_of},
    query::{has_control, hub_url, parse_pairs, query_tokens, values},
    subscriptions::{Subscription, SubscriptionInfo, infos, subscription_update},
    topic::{self, MatchType, TopicSelector},
    update::{EARLIEST, new_id},
};
use crate::{
    broker::ResumeFrom,
    http::{
        AppState,
        opening::{self, Expiry, StreamPlan},
        outbox::Cursor,
        writer::OnClose,
    },
    sse,
};

/// Most selectors (`topic` and `match*` parameters together) one
/// subscription may name, and most topics of one update (as in the
/// reference hub).
pub const MAX_TOPICS: usize = 1000;
/// Longest `Last-Event-ID` accepted.
pub const MAX_LAST_EVENT_ID_LEN: usize = 8192;

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

/// `GET /.well-known/mercure?topic=…` (or `match=…`, `matchURLPattern=…`):
/// a stream of the hub's channel, filtered by the request's selectors and
/// the token's private rights. The broker's limits apply as to channel
/// streams (streams per client IP, subscriptions in total).
pub async fn subscribe(
    state: web::Data<MercureState>,
    req: HttpRequest,
) -> Result<HttpResponse, MercureError> {
    let SubscribeRequest {
        claims,
        subscriptions,
        last_event_id,
    } = read_subscribe(&state, &req)?;
    let app = AppState::of(&req).map_err(MercureError::from)?;
    let subscriber_iri = new_id();
    let on_close = announce(&state, app, &subscriber_iri, &subscriptions).await?;
    let resume = last_event_id.as_deref().map(|id| match id {
        EARLIEST => ResumeFrom::Start,
        id => ResumeFrom::Name(id.to_owned()),
    });
    let filter = SelectorFilter {
        selectors: subscriptions.iter().map(|s| s.selector.clone()).collect(),
        private: claims.subscribe,
    };
    let plan = StreamPlan {
        channels: vec![hub_channel()],
        resume: vec![resume],
        filter: Some(Arc::new(filter)),
        expires_at: claims.expires_at,
        on_expiry: Expiry::Silent,
        on_close,
    };
    let mut opening = opening::open(app, &req, plan).await?;
    let replay = opening
        .starts
        .first_mut()
        .and_then(|start| start.replay.take());
    // The header never names an update the client did not send itself, so
    // it cannot disclose the id of a private update: an id the hub does
    // not hold (never seen, or trimmed) replays nothing and says `earliest`.
    let (events, header) = match (&last_event_id, replay) {
        (Some(asked), Some(replay)) if asked == EARLIEST || replay.gap.is_none() => {
            (replay.events, Some(asked.clone()))
        }
        (Some(_), _) => (Vec::new(), Some(EARLIEST.to_owned())),
        (None, _) => (Vec::new(), None),
    };
    let mut prelude =
        BytesMut::from(sse::prelude(app.settings.stream.retry.as_millis()).as_bytes());
    for event in &events {
        prelude.extend_from_slice(event.frame.full());
    }
    let cursor = Cursor::new(opening.positions(), false);
    let mut response = HttpResponse::Ok();
    stream_headers(&mut response);
    if let Some(id) = header {
        response.insert_header(("Last-Event-ID", id));
    }
    Ok(opening.respond(
        app,
        &req,
        prelude.freeze(),
        cursor,
        response,
        last_event_id.is_some(),
    ))
}

/// With `mercure.subscriptions` on: publishes the subscriptions' "active"
/// updates (before the stream joins, so it does not get its own), lists
/// them in the book, and returns the hook that announces their end.
async fn announce(
    state: &web::Data<MercureState>,
    app: &AppState,
    subscriber: &str,
    subscriptions: &[Subscription],
) -> Result<Option<OnClose>, MercureError> {
    if !state.settings.mercure.subscriptions {
        return Ok(None);
    }
    let hub = hub_channel();
    for info in infos(subscriber, subscriptions, true) {
        let record = record_of(subscription_update(info));
        app.broker
            .publish(&hub, record, Instant::now(), true)
            .await?;
    }
    static NEXT_STREAM: AtomicU64 = AtomicU64::new(1);
    let stream = NEXT_STREAM.fetch_add(1, Ordering::Relaxed);
    state
        .subscriptions
        .insert(stream, infos(subscriber, subscriptions, true));
    let (book, broker) = (Arc::clone(&state.subscriptions), app.broker.clone());
    let gone: Vec<SubscriptionInfo> = infos(subscriber, subscriptions, false);
    Ok(Some(Box::new(move || {
        book.remove(stream);
        for info in gone {
            broker.publish_nowait(&hub, record_of(subscription_update(info)), true);
        }
    })))
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
