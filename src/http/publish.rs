//! `POST /publish/{channel}` (one event) and `POST /publish` (a batch, for
//! backend jobs).
//!
//! Either may carry idempotency keys (the `Idempotency-Key` header of a
//! single publish, `idempotencyKey` per item of a batch), so a job can
//! retry a publish whose answer it lost: the channel's log answers a repeat
//! with the first publish's id and stores nothing (`broker::idempotency`).
//! The key of a batch is per item: a batch retried whole is answered the
//! ids of the items that went through and publishes the rest.
//!
//! With `hooks.publish_url`, the application is asked after the token's
//! check (a batch once, with all its channels) and may refuse.

use std::time::Instant;

use actix_web::{HttpRequest, HttpResponse, ResponseError, http::header, web};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::{
    AppState,
    access::{Publisher, ask_publish_hook},
    body::{BodyKind, compact_json, event_data, read_body, utf8},
};
use crate::{
    broker::{
        Broker, BrokerError,
        idempotency::{Idempotency, IdempotencyKey},
        log::Record,
        message::Published,
    },
    error::ApiError,
    hooks::Asking,
    names::{ChannelName, EventType},
};

/// The header that names a single publish for its retries.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// Most events in one batch publish.
pub const MAX_BATCH_EVENTS: usize = 1000;

#[derive(Debug, Deserialize)]
pub struct PublishQuery {
    event: Option<String>,
}

/// The answer for each published event.
#[derive(Debug, Serialize)]
pub struct PublishedEvent {
    pub id: String,
    pub channel: String,
    /// Subscribers the event was queued for.
    pub subscribers: usize,
}

/// `POST /publish/{channel}?event=<type>`
pub async fn publish_one(
    state: web::Data<AppState>,
    publisher: Publisher,
    path: web::Path<String>,
    query: web::Query<PublishQuery>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let received_at = Instant::now();
    let answer =
        publish_one_inner(&state, &publisher, path, query, req, payload, received_at).await;
    count_refusal(&state, answer)
}

/// Counts a refused publish by its status (the `publish_errors_total` metric).
fn count_refusal(
    state: &AppState,
    answer: Result<HttpResponse, ApiError>,
) -> Result<HttpResponse, ApiError> {
    if let Err(err) = &answer {
        state.metrics.publish_refused(err.status_code().as_u16());
    }
    answer
}

async fn publish_one_inner(
    state: &AppState,
    publisher: &Publisher,
    path: web::Path<String>,
    query: web::Query<PublishQuery>,
    req: HttpRequest,
    payload: web::Payload,
    received_at: Instant,
) -> Result<HttpResponse, ApiError> {
    let channel = ChannelName::parse(&path).map_err(ApiError::InvalidChannel)?;
    publisher.check(&channel)?;
    ask_publish_hook(state, &req, Asking::Publish, vec![channel.to_string()]).await?;
    let event_type = parse_event_type(query.into_inner().event)?;
    let key = idempotency_key(&req)?;
    let kind = BodyKind::of(&req)?;
    let body = read_body(&req, payload, state.settings.server.max_body_bytes).await?;
    let data = event_data(kind, &body, state.settings.server.max_json_depth)?;
    let record = Record::plain(event_type, data);
    let published = publish(&state.broker, &channel, record, key, received_at).await?;
    Ok(accepted(&PublishedEvent {
        id: published.id.to_string(),
        channel: channel.to_string(),
        subscribers: published.subscribers,
    }))
}

/// The one call into the broker for an event: under its idempotency key
/// when it has one.
async fn publish(
    broker: &Broker,
    channel: &ChannelName,
    record: Record,
    key: Option<IdempotencyKey>,
    received_at: Instant,
) -> Result<Published, BrokerError> {
    match key {
        Some(key) => {
            let idempotency =
                Idempotency::new(key, channel, record.event_type.as_ref(), &record.data);
            broker
                .publish_with_key(channel, record, idempotency, received_at)
                .await
        }
        None => broker.publish(channel, record, received_at, false).await,
    }
}

/// The `Idempotency-Key` header, if the request has one (400 when it is
/// not 1–128 printable ASCII characters).
fn idempotency_key(req: &HttpRequest) -> Result<Option<IdempotencyKey>, ApiError> {
    let Some(value) = req.headers().get(IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    let text = value.to_str().map_err(|_| {
        ApiError::InvalidIdempotencyKey("the Idempotency-Key header is not ASCII".into())
    })?;
    IdempotencyKey::parse(text)
        .map(Some)
        .map_err(|e| ApiError::InvalidIdempotencyKey(format!("Idempotency-Key: {e}")))
}

fn parse_event_type(event: Option<String>) -> Result<Option<EventType>, ApiError> {
    event
        .filter(|e| !e.is_empty())
        .map(|e| EventType::parse(&e))
        .transpose()
        .map_err(ApiError::InvalidEventType)
}

/// One item of a batch: `data` is any JSON value; a JSON string is
/// delivered as plain text, anything else as compact JSON.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct BatchItem {
    channel: String,
    event: Option<String>,
    data: Box<RawValue>,
    /// Names this item for the batch's retries (see the module docs).
    idempotency_key: Option<String>,
}

#[derive(Debug, Serialize)]
struct BatchAnswer {
    events: Vec<PublishedEvent>,
}

/// `POST /publish` with `[{"channel": …, "event": …, "data": …,
/// "idempotencyKey": …}, …]`: every item is validated (and its channel
/// checked against the token) before any is published; ids come back in
/// order.
pub async fn publish_batch(
    state: web::Data<AppState>,
    publisher: Publisher,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let received_at = Instant::now();
    let answer = publish_batch_inner(&state, &publisher, req, payload, received_at).await;
    count_refusal(&state, answer)
}

async fn publish_batch_inner(
    state: &AppState,
    publisher: &Publisher,
    req: HttpRequest,
    payload: web::Payload,
    received_at: Instant,
) -> Result<HttpResponse, ApiError> {
    if BodyKind::of(&req)? != BodyKind::Json {
        return Err(ApiError::UnsupportedMediaType(
            "a batch publish must be application/json".into(),
        ));
    }
    if req.headers().contains_key(IDEMPOTENCY_KEY) {
        return Err(ApiError::InvalidIdempotencyKey(
            "a batch takes no Idempotency-Key header: give each item its idempotencyKey".into(),
        ));
    }
    let body = read_body(&req, payload, state.settings.server.max_body_bytes).await?;
    let text = utf8(&body)?;
    // The batch and its items are two levels around each item's data.
    let max_depth = state.settings.server.max_json_depth;
    compact_json(text, max_depth + 2)?;
    let items: Vec<BatchItem> = serde_json::from_str(text).map_err(|err| {
        ApiError::InvalidBody(format!(
            "expected an array of {{\"channel\", \"event\"?, \"data\", \"idempotencyKey\"?}}: \
             {err}"
        ))
    })?;
    if items.is_empty() || items.len() > MAX_BATCH_EVENTS {
        return Err(ApiError::InvalidBody(format!(
            "a batch holds 1 to {MAX_BATCH_EVENTS} events"
        )));
    }
    let mut events = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        let at = |e: String| format!("item {index}: {e}");
        let channel =
            ChannelName::parse(&item.channel).map_err(|e| ApiError::InvalidChannel(at(e)))?;
        publisher
            .check(&channel)
            .map_err(|e| ApiError::Forbidden(at(e.to_string())))?;
        let event_type = parse_event_type(item.event.clone())
            .map_err(|e| ApiError::InvalidEventType(at(e.to_string())))?;
        let raw = item.data.get();
        let data = match serde_json::from_str::<String>(raw) {
            Ok(text) => text,
            Err(_) => compact_json(raw, max_depth)
                .map_err(|e| ApiError::InvalidBody(at(e.to_string())))?,
        };
        let key = item
            .idempotency_key
            .as_deref()
            .map(IdempotencyKey::parse)
            .transpose()
            .map_err(|e| ApiError::InvalidIdempotencyKey(at(format!("idempotencyKey: {e}"))))?;
        events.push((channel, event_type, data, key));
    }
    // One question for the batch: every channel it publishes to, once.
    let mut channels: Vec<String> = events.iter().map(|e| e.0.to_string()).collect();
    channels.sort_unstable();
    channels.dedup();
    ask_publish_hook(state, &req, Asking::Publish, channels).await?;
    let mut answers = Vec::with_capacity(events.len());
    for (index, (channel, event_type, data, key)) in events.into_iter().enumerate() {
        let record = Record::plain(event_type, data);
        let published = publish(&state.broker, &channel, record, key, received_at)
            .await
            .map_err(|err| match ApiError::from(err) {
                ApiError::IdempotencyKeyReused(e) => {
                    ApiError::IdempotencyKeyReused(format!("item {index}: {e}"))
                }
                ApiError::IdempotencyKeyInFlight(e) => {
                    ApiError::IdempotencyKeyInFlight(format!("item {index}: {e}"))
                }
                other => other,
            })?;
        answers.push(PublishedEvent {
            id: published.id.to_string(),
            channel: channel.to_string(),
            subscribers: published.subscribers,
        });
    }
    Ok(accepted(&BatchAnswer { events: answers }))
}

/// `202` with `answer` as JSON. The content type is a static header value
/// (`HttpResponseBuilder::json` formats the mime type on every answer) and
/// the body is written into a buffer sized for one event's answer.
fn accepted(answer: &impl Serialize) -> HttpResponse {
    let mut body = Vec::with_capacity(96);
    match serde_json::to_writer(&mut body, answer) {
        Ok(()) => HttpResponse::Accepted()
            .insert_header((
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("application/json"),
            ))
            .body(body),
        // Ids, names and counts always serialize; kept total all the same.
        Err(err) => ApiError::Unavailable(format!("the answer could not be written: {err}"))
            .error_response(),
    }
}
