//! `GET /stream/{channel}` and `GET /stream?channel=a&channel=b`: turns a
//! subscription into a `text/event-stream` response.
//!
//! The handler subscribes a queue to each channel (through the registry),
//! writes the prelude (retry hint, then per channel any gap notice and the
//! replayed events), and hands the queue to [`EventStream`], which writes the
//! channel actors' pre-encoded frames as they arrive. Dropping the stream
//! (client gone) unsubscribes it at once.
//!
//! When the broker ends a stream (shutdown drain, or eviction as a slow
//! consumer) the last bytes are a reconnect hint: a `retry:` field, spread
//! with a per-stream jitter so that thousands of clients do not reconnect in
//! the same millisecond, and a `: reconnect reason=…` comment. Each stream
//! logs one line when it opens and one when it closes (with its duration).

use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    sync::{Arc, atomic::Ordering},
    task::{Context, Poll},
    time::{Duration, Instant},
};

use actix::Addr;
use actix_web::{HttpRequest, HttpResponse, http::header, web};
use actix_web_lab::extract::Query;
use bytes::{BufMut, Bytes, BytesMut};
use futures_util::Stream;
use log::Level;
use serde::Deserialize;
use tokio::sync::{mpsc, oneshot};

use super::{AppState, guard};
use crate::{
    broker::{
        ChannelName, Delivery, Event, EventId, HEARTBEAT, RegistryActor, Subscriber, await_reply,
        channel::{Subscribe, Unsubscribe},
        event::parse_cursor,
        history::Replay,
    },
    error::ApiError,
    metrics::Metrics,
    sse,
};

/// Longest Last-Event-ID accepted (a cursor over the most channels a stream
/// may name fits easily).
const MAX_LAST_EVENT_ID_LEN: usize = 8192;

#[derive(Debug, Deserialize)]
pub struct StreamQuery {
    #[serde(default)]
    channel: Vec<String>,
    #[serde(rename = "lastEventId")]
    last_event_id: Option<String>,
    /// A subscriber token, for clients that can set neither a header nor a cookie.
    token: Option<String>,
}

/// `GET /stream/{channel}`
pub async fn stream_one(
    state: web::Data<AppState>,
    path: web::Path<String>,
    query: Query<StreamQuery>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let channel = ChannelName::parse(&path).map_err(ApiError::InvalidChannel)?;
    let Query(query) = query;
    let last_id = last_event_id(&req, query.last_event_id)?;
    open(&state, &req, query.token, vec![channel], false, last_id).await
}

/// `GET /stream?channel=a&channel=b`
pub async fn stream_many(
    state: web::Data<AppState>,
    query: Query<StreamQuery>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let Query(query) = query;
    if query.channel.is_empty() {
        return Err(ApiError::InvalidChannel(
            "name at least one channel: /stream?channel=a&channel=b".into(),
        ));
    }
    let mut channels: Vec<ChannelName> = Vec::with_capacity(query.channel.len());
    for name in &query.channel {
        let channel = ChannelName::parse(name).map_err(ApiError::InvalidChannel)?;
        if !channels.contains(&channel) {
            channels.push(channel);
        }
    }
    let max = state.settings.stream.max_channels_per_stream;
    if channels.len() > max {
        return Err(ApiError::InvalidChannel(format!(
            "a stream may name at most {max} channels"
        )));
    }
    let last_id = last_event_id(&req, query.last_event_id)?;
    open(&state, &req, query.token, channels, true, last_id).await
}

/// The client's resume point: the `Last-Event-ID` header (sent by browsers
/// on reconnect) wins over the `lastEventId` query parameter (first connect).
fn last_event_id(
    req: &HttpRequest,
    from_query: Option<String>,
) -> Result<Option<String>, ApiError> {
    let from_header = match req.headers().get("last-event-id") {
        Some(value) => Some(
            value
                .to_str()
                .map_err(|_| {
                    ApiError::InvalidLastEventId("Last-Event-ID must be visible ASCII".into())
                })?
                .to_owned(),
        ),
        None => None,
    };
    let id = from_header.or(from_query).filter(|id| !id.is_empty());
    if let Some(id) = &id {
        if id.len() > MAX_LAST_EVENT_ID_LEN {
            return Err(ApiError::InvalidLastEventId(format!(
                "Last-Event-ID is longer than {MAX_LAST_EVENT_ID_LEN} bytes"
            )));
        }
        if id.chars().any(char::is_control) {
            return Err(ApiError::InvalidLastEventId(
                "Last-Event-ID contains a control character".into(),
            ));
        }
    }
    Ok(id)
}

async fn open(
    state: &AppState,
    req: &HttpRequest,
    token: Option<String>,
    channels: Vec<ChannelName>,
    multi: bool,
    last_id: Option<String>,
) -> Result<HttpResponse, ApiError> {
    // Every private channel of the stream is checked; the stream ends when
    // the token that opened it expires.
    let expires_at = guard::check_subscriber(&state.auth, req, token.as_deref(), &channels)?;
    let slot = state.limits.open_stream(req)?;
    let (subscriber, rx) = Subscriber::new(state.settings.stream.subscriber_buffer);
    let mut guard = SubscriptionGuard {
        registry: state.registry.clone(),
        channels: Vec::new(),
        id: subscriber.id,
        opened: None,
    };
    let resume_points = match &last_id {
        Some(text) => parse_cursor(text, &channels),
        None => vec![None; channels.len()],
    };
    // Ask every channel at once, then collect the answers in order.
    let mut pending = Vec::with_capacity(channels.len());
    for (channel, from) in channels.iter().zip(resume_points) {
        let (reply, answer) = oneshot::channel();
        state.registry.do_send(Subscribe {
            channel: channel.clone(),
            subscriber: subscriber.clone(),
            from,
            reply,
        });
        guard.channels.push(channel.clone());
        pending.push(answer);
    }
    let mut starts = Vec::with_capacity(channels.len());
    for answer in pending {
        starts.push(await_reply(answer).await?);
    }
    let mut cursor = Cursor {
        positions: channels
            .iter()
            .zip(&starts)
            .map(|(channel, start)| {
                (
                    channel.clone(),
                    start.replay.as_ref().map_or(start.head, |r| r.from),
                )
            })
            .collect(),
        multi,
    };
    let retry_ms = state.settings.stream.retry.as_millis();
    let mut prelude = BytesMut::from(sse::prelude(retry_ms).as_bytes());
    for (index, start) in starts.into_iter().enumerate() {
        if let Some(replay) = start.replay {
            write_replay(
                &mut prelude,
                &mut cursor,
                index,
                &replay,
                last_id.as_deref().unwrap_or_default(),
            );
        }
    }
    let log_level = if state.settings.log.access_log_streams {
        Level::Info
    } else {
        Level::Debug
    };
    log::log!(
        log_level,
        "stream opened subscriber={} channels={} resume={}",
        subscriber.id,
        join_names(&guard.channels),
        last_id.is_some()
    );
    state.metrics.open_streams.increment(1);
    guard.opened = Some(OpenStream {
        at: Instant::now(),
        log_level,
        metrics: Arc::clone(&state.metrics),
        events: 0,
        reason: "client",
    });
    let stream = EventStream {
        prelude: Some(prelude.freeze()),
        rx,
        evicted: Arc::clone(&subscriber.evicted),
        cursor,
        retry: state.settings.stream.retry,
        done: false,
        guard,
        expiry: expires_at.map(|at| Box::pin(tokio::time::sleep(guard::until(at)))),
        expired: false,
        _slot: slot,
    };
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header(("X-Accel-Buffering", "no"))
        .insert_header((header::CONTENT_ENCODING, "identity"))
        .streaming(stream))
}

/// Writes a channel's gap notice (if any), the replay marker and the events.
fn write_replay(
    out: &mut BytesMut,
    cursor: &mut Cursor,
    index: usize,
    replay: &Replay,
    asked: &str,
) {
    let channel = cursor.positions[index].0.clone();
    if let Some(gap) = replay.gap {
        let data = serde_json::json!({
            "channel": channel.as_str(),
            "lastEventId": asked,
            "reason": gap.as_str(),
            "resumeFrom": replay.from.to_string(),
        });
        let id = cursor.id_for(index);
        out.put(sse::encode_event(&id, Some("broker.gap"), &data.to_string()).full);
    }
    if replay.events.is_empty() {
        return;
    }
    let marker = serde_json::json!({ "channel": channel.as_str(), "count": replay.events.len() });
    out.put(sse::encode_notice("broker.replay", &marker.to_string()));
    for event in &replay.events {
        cursor.write_event(out, index, event);
    }
}

/// How far the client has got on each channel of its stream, in the order
/// it named them. Single-channel streams use the event's own id.
struct Cursor {
    positions: Vec<(ChannelName, EventId)>,
    multi: bool,
}

impl Cursor {
    /// The id line value for an event of channel `index`: that channel first.
    fn id_for(&self, index: usize) -> String {
        let (channel, id) = &self.positions[index];
        if !self.multi {
            return id.to_string();
        }
        let mut text = format!("{channel}={id}");
        for (other, (name, id)) in self.positions.iter().enumerate() {
            if other != index {
                text.push_str(&format!(",{name}={id}"));
            }
        }
        text
    }

    fn index_of(&self, channel: &ChannelName) -> Option<usize> {
        self.positions.iter().position(|(name, _)| name == channel)
    }

    fn write_event(&mut self, out: &mut BytesMut, index: usize, event: &Event) {
        self.positions[index].1 = event.id;
        if self.multi {
            out.put_slice(b"id: ");
            out.put_slice(self.id_for(index).as_bytes());
            out.put_u8(b'\n');
            out.put_slice(&event.frame.rest);
        } else {
            out.put_slice(&event.frame.full);
        }
    }

    /// The bytes of a live event: shared as-is on a single-channel stream.
    fn frame(&mut self, event: &Event) -> Bytes {
        let Some(index) = self.index_of(&event.channel) else {
            return Bytes::new();
        };
        if !self.multi {
            self.positions[index].1 = event.id;
            return event.frame.full.clone();
        }
        let mut out = BytesMut::with_capacity(event.frame.full.len() + 64 * self.positions.len());
        self.write_event(&mut out, index, event);
        out.freeze()
    }
}

fn join_names(channels: &[ChannelName]) -> String {
    channels
        .iter()
        .map(ChannelName::as_str)
        .collect::<Vec<_>>()
        .join(",")
}

/// The last bytes of a stream the broker ends: a `retry:` hint of `retry`
/// plus a jitter below `retry` derived from the subscriber id (spreading a
/// reconnect storm over one more `retry`), and a comment naming the reason.
pub fn reconnect_hint(retry: Duration, subscriber_id: u64, reason: &str) -> Bytes {
    let base = retry.as_millis() as u64;
    // Fibonacci hashing spreads consecutive ids over the whole range.
    let jitter = match base {
        0 => 0,
        _ => subscriber_id.wrapping_mul(0x9E37_79B9_7F4A_7C15) % base,
    };
    Bytes::from(format!(
        "retry: {}\n: reconnect reason={reason}\n\n",
        base + jitter
    ))
}

/// The body of an event-stream response: prelude first, then whatever the
/// channel actors queue. Ends, after a reconnect hint, when the subscriber
/// was evicted or every channel let go of the queue (shutdown).
struct EventStream {
    prelude: Option<Bytes>,
    rx: mpsc::Receiver<Delivery>,
    evicted: Arc<std::sync::atomic::AtomicBool>,
    cursor: Cursor,
    /// The configured `stream.retry`, the base of the final hint.
    retry: Duration,
    /// The final hint was written: the next poll ends the body.
    done: bool,
    guard: SubscriptionGuard,
    /// Fires when the subscriber's token expires: the stream then ends.
    expiry: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Set once the expiry notice went out: the next poll ends the stream.
    expired: bool,
    /// The client IP's place among its open streams.
    _slot: guard::StreamSlot,
}

impl EventStream {
    /// The reconnect hint, once; records why the stream ends.
    fn finish(&mut self, reason: &'static str) -> Poll<Option<Result<Bytes, Infallible>>> {
        self.done = true;
        if let Some(opened) = &mut self.guard.opened {
            opened.reason = reason;
        }
        Poll::Ready(Some(Ok(reconnect_hint(self.retry, self.guard.id, reason))))
    }
}

impl Stream for EventStream {
    type Item = Result<Bytes, Infallible>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        if let Some(prelude) = this.prelude.take() {
            return Poll::Ready(Some(Ok(prelude)));
        }
        if this.evicted.load(Ordering::Acquire) {
            // The client reconnects with the last id it got and replays the rest.
            return this.finish("evicted");
        }
        if this.expired {
            return this.finish("expired");
        }
        if let Some(expiry) = &mut this.expiry
            && expiry.as_mut().poll(cx).is_ready()
        {
            // Say why, then end cleanly: EventSource reconnects, and is
            // refused (401) unless it brings a fresh token.
            this.expiry = None;
            this.expired = true;
            return Poll::Ready(Some(Ok(sse::encode_notice(
                "broker.expired",
                r#"{"reason":"the subscriber token expired"}"#,
            ))));
        }
        match this.rx.poll_recv(cx) {
            Poll::Ready(Some(Delivery::Event(event))) => {
                if let Some(opened) = &mut this.guard.opened {
                    opened.events += 1;
                }
                Poll::Ready(Some(Ok(this.cursor.frame(&event))))
            }
            Poll::Ready(Some(Delivery::Heartbeat)) => Poll::Ready(Some(Ok(HEARTBEAT))),
            // Every channel let go of the queue: the broker is draining.
            Poll::Ready(None) => this.finish("shutdown"),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Unsubscribes the stream's queue from its channels when it is dropped,
/// and, once the response was built, logs and counts the stream's end.
struct SubscriptionGuard {
    registry: Addr<RegistryActor>,
    channels: Vec<ChannelName>,
    id: u64,
    /// Set once the stream is handed to the client (not on an error answer).
    opened: Option<OpenStream>,
}

/// What the close log line and the open-streams gauge need.
struct OpenStream {
    at: Instant,
    log_level: Level,
    metrics: Arc<Metrics>,
    /// Live events written (replayed ones are in the prelude).
    events: u64,
    /// `client` (went away), `shutdown` or `evicted`.
    reason: &'static str,
}

impl Drop for SubscriptionGuard {
    fn drop(&mut self) {
        if let Some(opened) = self.opened.take() {
            opened.metrics.open_streams.decrement(1);
            log::log!(
                opened.log_level,
                "stream closed subscriber={} channels={} duration_ms={} events={} reason={}",
                self.id,
                join_names(&self.channels),
                opened.at.elapsed().as_millis(),
                opened.events,
                opened.reason
            );
        }
        for channel in self.channels.drain(..) {
            self.registry.do_send(Unsubscribe {
                channel,
                subscriber_id: self.id,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hint's retry lies in [retry, 2 × retry) and differs between streams.
    #[test]
    fn reconnect_hint_is_jittered_within_one_retry() {
        let retry = Duration::from_secs(2);
        let values: Vec<u64> = (1..=50)
            .map(|id| {
                let text = String::from_utf8(reconnect_hint(retry, id, "shutdown").to_vec())
                    .expect("the hint is text");
                assert!(
                    text.ends_with("\n: reconnect reason=shutdown\n\n"),
                    "{text}"
                );
                text.strip_prefix("retry: ")
                    .and_then(|rest| rest.split('\n').next())
                    .and_then(|n| n.parse().ok())
                    .expect("a retry field first")
            })
            .collect();
        assert!(
            values.iter().all(|v| (2000..4000).contains(v)),
            "{values:?}"
        );
        let distinct: std::collections::HashSet<_> = values.iter().collect();
        assert!(distinct.len() > 40, "{values:?}");
    }
}
