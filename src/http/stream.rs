//! `GET /stream/{channel}` and `GET /stream?channel=a&channel=b`: turns a
//! subscription into a `text/event-stream` response.
//!
//! The handler subscribes an outbox (`crate::outbox`) to each channel
//! (through the registry), queues the prelude (retry hint, then per channel
//! any gap notice and the replayed events), and answers with the response
//! head and a `TakeOver`: the HTTP/1 dispatcher hands the connection to
//! [`StreamWriter`], which runs in the connection's task. From then on the
//! channel actors write events straight to the socket; the writer only sends
//! what a full socket left queued and watches for the end: the client gone
//! (it unsubscribes at once), the token expired, eviction, shutdown.
//!
//! When the broker ends a stream (shutdown drain, or eviction as a slow
//! consumer) the last bytes are a reconnect hint: a `retry:` field, spread
//! with a per-stream jitter so that thousands of clients do not reconnect in
//! the same millisecond, and a `: reconnect reason=…` comment. Each stream
//! logs one line when it opens and one when it closes (with its duration).

use std::{
    convert::Infallible,
    pin::Pin,
    sync::Arc,
    time::{Duration, Instant},
};

use actix::Addr;
use actix_http::h1::{TakeOver, TakenOver};
use actix_web::{HttpRequest, HttpResponse, http::header, rt::net::TcpStream, web};
use actix_web_lab::extract::Query;
use bytes::{BufMut, Bytes, BytesMut};
use log::Level;
use serde::Deserialize;
use tokio::sync::oneshot;

use super::{AppState, guard};
use crate::{
    broker::{
        ChannelName, RegistryActor, Subscriber, await_reply,
        channel::{Subscribe, Unsubscribe},
        event::parse_cursor,
        history::Replay,
    },
    error::ApiError,
    metrics::Metrics,
    outbox::{Cursor, End, Flush, Outbox},
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
    let (outbox, handle) = Outbox::new(state.settings.stream.subscriber_buffer);
    let subscriber = Subscriber::streaming(handle);
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
    // From here on only the channels hold the stream (see `OutboxHandle`).
    drop(subscriber);
    let mut starts = Vec::with_capacity(channels.len());
    for answer in pending {
        starts.push(await_reply(answer).await?);
    }
    let mut cursor = Cursor::new(
        channels
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
    );
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
    outbox.start(prelude.freeze(), cursor);
    let log_level = if state.settings.log.access_log_streams {
        Level::Info
    } else {
        Level::Debug
    };
    log::log!(
        log_level,
        "stream opened subscriber={} channels={} resume={}",
        guard.id,
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
    let writer = StreamWriter {
        outbox,
        retry: state.settings.stream.retry,
        guard,
        expiry: expires_at.map(|at| Box::pin(tokio::time::sleep(guard::until(at)))),
        _slot: slot,
    };
    let mut response = HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header(("X-Accel-Buffering", "no"))
        .insert_header((header::CONTENT_ENCODING, "identity"))
        // The writer closes the connection when the stream ends; say so, or
        // a client would pool it for its next request.
        .force_close()
        // Never polled: the connection is handed to the writer (`TakeOver`)
        // right after the head; a streaming body makes the head chunked.
        .streaming(futures_util::stream::pending::<Result<Bytes, Infallible>>());
    response
        .extensions_mut()
        .insert(TakeOver::new(move |taken| Box::pin(writer.run(taken))));
    Ok(response)
}

/// Writes a channel's gap notice (if any), the replay marker and the events.
fn write_replay(
    out: &mut BytesMut,
    cursor: &mut Cursor,
    index: usize,
    replay: &Replay,
    asked: &str,
) {
    let channel = cursor.channel(index).clone();
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

/// How long the last bytes of a stream the broker ends (reconnect hint,
/// last chunk) may take to go out before the connection is closed anyway:
/// an evicted client is, by definition, not reading.
const FINAL_FLUSH: Duration = Duration::from_secs(5);

/// The stream after its response head: flushes what the outbox queued when
/// the socket is writable again, notices a client that leaves, ends the
/// stream when the broker or the token says so. Live events normally never
/// pass through here: the channel actors write them (see `crate::outbox`).
struct StreamWriter {
    outbox: Arc<Outbox>,
    /// The configured `stream.retry`, the base of the final hint.
    retry: Duration,
    guard: SubscriptionGuard,
    /// Fires when the subscriber's token expires: the stream then ends.
    expiry: Option<Pin<Box<tokio::time::Sleep>>>,
    /// The client IP's place among its open streams.
    _slot: guard::StreamSlot,
}

impl StreamWriter {
    async fn run(mut self, taken: TakenOver) {
        let Ok(socket) = taken.io.downcast::<TcpStream>() else {
            // Only plain TCP listeners are configured (no TLS, no Unix sockets).
            log::error!(
                "stream ended subscriber={} reason=unsupported-connection",
                self.guard.id
            );
            return;
        };
        let socket = Arc::new(*socket);
        let chunked = is_chunked(&taken.head);
        self.outbox
            .attach(Arc::clone(&socket), taken.head.freeze(), chunked);
        let end = self.serve(&socket).await;
        let hint = reconnect_hint(self.retry, self.guard.id, end.as_str());
        let tail = match end {
            End::Client => None,
            End::Expired => {
                let mut tail = BytesMut::from(
                    &sse::encode_notice(
                        "broker.expired",
                        r#"{"reason":"the subscriber token expired"}"#,
                    )[..],
                );
                tail.extend_from_slice(&hint);
                Some(tail.freeze())
            }
            End::Evicted | End::Released => Some(hint),
        };
        let end = self.outbox.finish(end, tail);
        if end != End::Client {
            let _ = tokio::time::timeout(FINAL_FLUSH, self.drain(&socket)).await;
        }
        self.outbox.detach();
        if let Some(opened) = &mut self.guard.opened {
            opened.reason = end.as_str();
            opened.events = self.outbox.events();
        }
        // Dropping the socket closes the connection; the guard unsubscribes.
    }

    /// Runs until something ends the stream.
    async fn serve(&mut self, socket: &TcpStream) -> End {
        loop {
            let blocked = match self.outbox.flush() {
                Flush::Done => false,
                Flush::Blocked => true,
                Flush::Failed => return End::Client,
            };
            if let Some(end) = self.outbox.end() {
                return end;
            }
            tokio::select! {
                () = self.outbox.woken() => {}
                ready = socket.writable(), if blocked => {
                    if ready.is_err() {
                        return End::Client;
                    }
                }
                ready = socket.readable() => {
                    if ready.is_err() || client_left(socket) {
                        return End::Client;
                    }
                }
                () = expired(&mut self.expiry) => return End::Expired,
            }
        }
    }

    /// Writes what is left, waiting for the socket as needed.
    async fn drain(&self, socket: &TcpStream) {
        while self.outbox.flush() == Flush::Blocked {
            if socket.writable().await.is_err() {
                return;
            }
        }
    }
}

/// Resolves when the token expires; never without one.
async fn expired(expiry: &mut Option<Pin<Box<tokio::time::Sleep>>>) {
    match expiry {
        Some(sleep) => sleep.as_mut().await,
        None => std::future::pending().await,
    }
}

/// Reads (and ignores) what the client sent; true once it closed its side
/// or the socket failed. A client sends nothing on an event stream.
fn client_left(socket: &TcpStream) -> bool {
    let mut buf = [0u8; 512];
    // Bounded: a client that keeps sending is read again on the next wake-up.
    for _ in 0..16 {
        match socket.try_read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return true,
        }
    }
    false
}

/// Whether the encoded response head announced a chunked body (HTTP/1.1;
/// an HTTP/1.0 client gets a body that ends when the connection closes).
fn is_chunked(head: &[u8]) -> bool {
    const NEEDLE: &[u8] = b"transfer-encoding: chunked";
    head.windows(NEEDLE.len())
        .any(|window| window.eq_ignore_ascii_case(NEEDLE))
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
