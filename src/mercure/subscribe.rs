//! Subscribing: `GET /.well-known/mercure` (what `EventSource` sends),
//! `QUERY` (the same with the parameters, or more of them, in a form body:
//! for matcher lists too long for a URL) and `HEAD` (the checks and
//! headers, no stream). The request ([`super::request`]) becomes a stream
//! of the hub's channel with a [`SelectorFilter`], opened like every other
//! stream (`crate::http::stream::opening`).
//!
//! With a cursor (`Last-Event-ID` or `last_event_id`), the answer carries
//! `Mercure-Last-Event-ID`: the cursor itself when the hub holds that
//! update (every retained update after it that the token may read is
//! replayed first), `earliest` otherwise or when asked for (then
//! everything retained is replayed, or, for an unknown id, nothing). It
//! never names an update the client did not send itself. Compatibility
//! mode repeats it as the 0.x response header `Last-Event-ID`.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Instant,
};

use actix_web::{HttpRequest, HttpResponse, HttpResponseBuilder, http::header, web};
use bytes::BytesMut;

use super::{
    MercureState,
    error::MercureError,
    hub::{SelectorFilter, hub_channel, record_of},
    query::{parse_pairs, read_form},
    request::{SubscribeRequest, read_subscribe, require_credential},
    subscriptions::{Subscription, SubscriptionInfo, infos, subscription_update},
    topic::TopicSelector,
    update::EARLIEST,
};
use crate::{
    broker::{ResumeFrom, identity::Identity},
    hooks::Asking,
    http::{
        AppState,
        access::{self, HookAllow},
        stream::{
            cursor::Cursor,
            end::OnClose,
            opening::{self, Notices, StreamPlan},
        },
    },
    sse,
};

/// The response header carrying the reconnection cursor.
pub const CURSOR_HEADER: &str = "Mercure-Last-Event-ID";

/// The headers of a subscribe answer (`GET`, `QUERY` and `HEAD`).
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

/// `HEAD /.well-known/mercure?match=…`: the checks and headers of a
/// subscribe, without a body and without subscribing.
pub async fn subscribe_head(
    state: web::Data<MercureState>,
    req: HttpRequest,
) -> Result<HttpResponse, MercureError> {
    let query = parse_pairs(req.query_string())?;
    let request = read_subscribe(&state, &req, &query, query.clone()).await?;
    let app = AppState::of(&req).map_err(MercureError::from)?;
    ask_hook(&state, app, &req, &request).await?;
    let mut response = HttpResponse::Ok();
    stream_headers(&mut response);
    Ok(response.finish())
}

/// `GET /.well-known/mercure?match=…` (or `match_urlpattern=…`, or 0.x
/// `topic=…`): a stream of the hub's channel, filtered by the request's
/// matchers and the token's private rights. The broker's limits apply as
/// to channel streams (streams per client IP, subscriptions in total).
pub async fn subscribe(
    state: web::Data<MercureState>,
    req: HttpRequest,
) -> Result<HttpResponse, MercureError> {
    let query = parse_pairs(req.query_string())?;
    let request = read_subscribe(&state, &req, &query, query.clone()).await?;
    open_stream(&state, &req, request).await
}

/// `QUERY /.well-known/mercure` with a form body: its pairs join the query
/// string's (the query string's `last_event_id` wins).
pub async fn subscribe_query(
    state: web::Data<MercureState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, MercureError> {
    let query = parse_pairs(req.query_string())?;
    let body = read_form(&req, payload, state.settings.server.max_body_bytes)
        .await?
        .ok_or_else(|| {
            MercureError::UnsupportedMediaType(
                "a QUERY body must be application/x-www-form-urlencoded".into(),
            )
        })?;
    let params: Vec<(String, String)> = query.iter().cloned().chain(body).collect();
    let request = read_subscribe(&state, &req, &query, params).await?;
    open_stream(&state, &req, request).await
}

/// Asks the application's hook about a checked request (its matchers as
/// `topics`), then makes sure it has a credential where one is needed.
async fn ask_hook(
    state: &MercureState,
    app: &AppState,
    req: &HttpRequest,
    request: &SubscribeRequest,
) -> Result<Option<HookAllow>, MercureError> {
    let asked = request
        .subscriptions
        .iter()
        .map(|s| s.selector.as_str().to_owned())
        .collect();
    // Without a credential a Mercure subscriber reads public updates only,
    // so every request counts as asking for public ones.
    let hook = access::ask_hook(
        app,
        req,
        Asking::Mercure,
        asked,
        request.last_event_id.as_deref(),
        true,
        request.token,
    )
    .await?;
    require_credential(state, request, hook.is_some())?;
    Ok(hook)
}

/// Opens the stream of a checked request.
async fn open_stream(
    state: &web::Data<MercureState>,
    req: &HttpRequest,
    request: SubscribeRequest,
) -> Result<HttpResponse, MercureError> {
    let app = AppState::of(req).map_err(MercureError::from)?;
    let hook = ask_hook(state, app, req, &request).await?;
    let SubscribeRequest {
        claims,
        subscriptions,
        last_event_id,
        ..
    } = request;
    // The hook's allow is a credential too: it grants the private updates
    // (and protected channels' copies) of the topics it names, besides the
    // token's; its user is the subscriber's, else the token's `sub`.
    let mut private = claims.subscribe;
    let mut user = claims.subject.map(Arc::<str>::from);
    let mut info = None;
    if let Some(hook) = &hook {
        private.extend(hook.grant.topics().iter().map(|t| TopicSelector::new(t)));
        if let Some(hook_user) = &hook.grant.user {
            user = Some(Arc::clone(hook_user));
            info = hook.grant.info.clone();
        }
    }
    let identity = user.map(|user| Arc::new(Identity { user, info }));
    let subscriber_iri = super::update::new_id();
    let on_close = announce(state, app, &subscriber_iri, &subscriptions).await?;
    let resume = last_event_id.as_deref().map(|id| match id {
        EARLIEST => ResumeFrom::Start,
        id => ResumeFrom::Name(id.to_owned()),
    });
    let filter = SelectorFilter {
        selectors: subscriptions.iter().map(|s| s.selector.clone()).collect(),
        private,
        access: Arc::clone(&state.access),
    };
    let plan = StreamPlan {
        channels: vec![hub_channel()],
        resume: vec![resume],
        filter: Some(Arc::new(filter)),
        expires_at: claims.expires_at,
        notices: Notices::Silent,
        on_close,
        identity,
        // Mercure has its own presence (subscription events), not ours.
        presence: false,
        recheck: hook.map(|hook| hook.question),
    };
    let mut opening = opening::open(app, req, plan).await?;
    let replay = opening
        .starts
        .first_mut()
        .and_then(|start| start.replay.take());
    let (events, cursor_header) = match (&last_event_id, replay) {
        (Some(asked), Some(replay))
            if !asked.is_empty() && (asked == EARLIEST || replay.gap.is_none()) =>
        {
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
    if let Some(id) = cursor_header {
        if state.settings.mercure.compatibility() {
            response.insert_header(("Last-Event-ID", id.clone()));
        }
        response.insert_header((CURSOR_HEADER, id));
    }
    Ok(opening.respond(
        app,
        req,
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
