//! The two stream writers: how an event stream's bytes leave once its
//! response head is decided. Both serve the same [`Outbox`], so a stream
//! behaves the same either way (ids, replay, heartbeats, eviction, expiry,
//! shutdown); they differ in who writes to the socket.
//!
//! - [`direct`] (plain-TCP HTTP/1): the response carries a `TakeOver`
//!   (our actix-http patch, see `docs/streams.md`), so the HTTP/1 dispatcher
//!   encodes the head and hands the connection to [`DirectWriter`], which
//!   runs in the connection's task. Channel actors then write events
//!   straight to the socket; the writer only sends what a full socket left
//!   queued, and watches for the end.
//! - [`body`] (any connection: TLS with HTTP/1.1 or HTTP/2, h2c, or
//!   `stream.writer = "body"`): a streaming response body ([`BodyWriter`])
//!   that actix-web writes like any other; every event waits in the outbox
//!   until the body takes it.
//!
//! When the broker ends a stream (shutdown drain, eviction as a slow
//! consumer, token expiry) the last bytes are a reconnect hint: a `retry:`
//! field, spread with a per-stream jitter so that thousands of clients do
//! not reconnect in the same millisecond, and a `: reconnect reason=…`
//! comment, and those last bytes get [`FINAL_FLUSH`] to reach the client
//! before its connection is reset (the direct writer times its own drain;
//! the body writer's [`bound_the_end`] watches, as actix-web would wait
//! forever). Each stream logs one line when it opens and one when it closes
//! (with its duration); dropping the [`SubscriptionGuard`] unsubscribes.

use std::{
    any::Any,
    convert::Infallible,
    future::Future,
    os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd},
    pin::Pin,
    rc::{Rc, Weak},
    sync::Arc,
    task::{Context, Poll, ready},
    time::{Duration, Instant},
};

use actix_http::h1::{TakeOver, TakenOver};
use actix_tls::accept::rustls_0_23::TlsStream;
use actix_web::{HttpResponse, HttpResponseBuilder, dev::Extensions, rt::net::TcpStream};
use bytes::{Bytes, BytesMut};
use futures_util::{FutureExt, Stream};
use log::Level;

use super::{
    guard::StreamSlot,
    outbox::{End, Flush, Outbox},
};
use crate::{broker::Broker, metrics::Metrics, names::ChannelName, sse};

/// How long the last bytes of a stream the broker ends (reconnect hint,
/// last chunk, and what the kernel still holds for the client) may take to
/// reach the client before the connection is reset: an evicted client is,
/// by definition, not reading, and one that trickles would otherwise keep
/// its socket, and up to the kernel's send buffer, for as long as it pleases.
const FINAL_FLUSH: Duration = Duration::from_secs(5);

/// How often the end of a stream checks whether the kernel has sent
/// everything to the client.
const SENT_POLL: Duration = Duration::from_millis(20);

/// Run once when a stream is over, or when it could not be opened.
pub type OnClose = Box<dyn FnOnce() + Send>;

/// Everything a writer needs once the head is decided.
pub struct StreamEnd {
    pub outbox: Arc<Outbox>,
    /// The configured `stream.retry`, the base of the final hint.
    pub retry: Duration,
    pub guard: SubscriptionGuard,
    /// Fires when the subscriber's token expires: the stream then ends.
    pub expiry: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Say `broker.expired` before the hint when the token expires.
    pub expiry_notice: bool,
    /// The client IP's place among its open streams.
    pub _slot: StreamSlot,
}

impl StreamEnd {
    /// The last bytes of a stream that ended for `end`.
    fn tail(&self, end: End) -> Option<Bytes> {
        let hint = reconnect_hint(self.retry, self.guard.id, end.as_str());
        match end {
            End::Client => None,
            End::Expired if !self.expiry_notice => None,
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
        }
    }

    /// Ends the stream for `end`: queues its tail, and notes the reason and
    /// the events for the close line.
    fn finish(&mut self, end: End) -> End {
        let tail = self.tail(end);
        let end = self.outbox.finish(end, tail);
        if let Some(opened) = &mut self.guard.opened {
            opened.reason = end.as_str();
            opened.events = self.outbox.events();
        }
        end
    }
}

/// The direct writer's response: the head, then the connection is handed
/// to a [`DirectWriter`].
pub fn direct(end: StreamEnd, mut response: HttpResponseBuilder) -> HttpResponse {
    let writer = DirectWriter { end };
    let mut response = response
        // The writer closes the connection when the stream ends; say so, or
        // a client would pool it for its next request.
        .force_close()
        // Never polled: the connection is handed to the writer (`TakeOver`)
        // right after the head; a streaming body makes the head chunked.
        .streaming(futures_util::stream::pending::<Result<Bytes, Infallible>>());
    response
        .extensions_mut()
        .insert(TakeOver::new(move |taken| Box::pin(writer.run(taken))));
    response
}

/// The body writer's response: the outbox's bytes as a streaming body.
/// With the connection's `socket` known (see [`remember_socket`]), a stream
/// the broker ends is given [`FINAL_FLUSH`] to reach the client, then reset.
pub fn body(
    end: StreamEnd,
    socket: Option<ConnectionSocket>,
    mut response: HttpResponseBuilder,
) -> HttpResponse {
    let alive = Rc::new(());
    if let Some(socket) = socket {
        let (outbox, id) = (Arc::clone(&end.outbox), end.guard.id);
        actix_web::rt::spawn(bound_the_end(outbox, socket, Rc::downgrade(&alive), id));
    }
    response.force_close().streaming(BodyWriter {
        end,
        done: false,
        ending: false,
        socket,
        recheck: None,
        _alive: alive,
    })
}

/// A connection's socket, noted when it was accepted (see
/// [`remember_socket`]) so the body writer can bound a stream's end.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionSocket(RawFd);

/// actix-web's `on_connect` hook for the body writer: notes a connection's
/// TCP socket in the connection's data, for plain TCP and for TLS (the
/// socket under the TLS stream: what the kernel holds unsent is then the
/// encrypted bytes, which serves the same purpose). Only HTTP/1 streams use
/// it (`opening`): an HTTP/2 connection carries other streams.
pub fn remember_socket(connection: &dyn Any, data: &mut Extensions) {
    let fd = if let Some(tcp) = connection.downcast_ref::<TcpStream>() {
        tcp.as_raw_fd()
    } else if let Some(tls) = connection.downcast_ref::<TlsStream<TcpStream>>() {
        tls.get_ref().0.as_raw_fd()
    } else {
        return;
    };
    data.insert(ConnectionSocket(fd));
}

/// The body writer's watchdog: once the broker ends the stream, gives its
/// last bytes [`FINAL_FLUSH`] to reach the client; a body still unfinished
/// then (actix-web, with its own buffer full, no longer polls it) has its
/// connection reset. actix-web has no write timeout of its own: without
/// this, a client that stopped reading would keep its connection forever.
async fn bound_the_end(outbox: Arc<Outbox>, socket: ConnectionSocket, alive: Weak<()>, id: u64) {
    let end = loop {
        if let Some(end) = outbox.end() {
            break end;
        }
        outbox.woken().await;
    };
    if end == End::Client {
        return;
    }
    tokio::time::sleep(FINAL_FLUSH).await;
    if alive.strong_count() == 0 {
        return;
    }
    // SAFETY: the body is alive, so the dispatcher that polls it, and the
    // connection it owns, are too; both live on this thread, so the socket
    // cannot be closed (and its number reused) while this runs.
    let fd = unsafe { BorrowedFd::borrow_raw(socket.0) };
    let socket = socket2::SockRef::from(&fd);
    let _ = socket.set_linger(Some(Duration::ZERO));
    // actix-web's next read sees the end and its next write fails: it
    // drops the connection, which the zero linger turns into a reset.
    let _ = socket.shutdown(std::net::Shutdown::Both);
    log::info!(
        "stream reset subscriber={id} reason={} (its last bytes were not read within {FINAL_FLUSH:?})",
        end.as_str()
    );
}

/// The stream after its response head, on a connection it owns: flushes
/// what the outbox queued when the socket is writable again, notices a
/// client that leaves, ends the stream when the broker or the token says
/// so. Live events normally never pass through here: the channel actors
/// write them (see `crate::http::outbox`).
struct DirectWriter {
    end: StreamEnd,
}

impl DirectWriter {
    async fn run(mut self, taken: TakenOver) {
        let Ok(socket) = taken.io.downcast::<TcpStream>() else {
            // `opening::takes_over` hands only plain-TCP connections over.
            log::error!(
                "stream ended subscriber={} reason=unsupported-connection",
                self.end.guard.id
            );
            return;
        };
        let socket = Arc::new(*socket);
        let chunked = is_chunked(&taken.head);
        let outbox = Arc::clone(&self.end.outbox);
        outbox.attach(Arc::clone(&socket), taken.head.freeze(), chunked);
        let end = self.serve(&socket).await;
        let end = self.end.finish(end);
        if end != End::Client {
            let deadline = tokio::time::Instant::now() + FINAL_FLUSH;
            let flushed = tokio::time::timeout_at(deadline, drain(&outbox, &socket))
                .await
                .is_ok();
            if !flushed || !sent_by(&socket, deadline).await {
                // Not read in time: reset, so the socket and its kernel
                // buffers go now (a plain close would go on sending them).
                let _ = socket2::SockRef::from(&*socket).set_linger(Some(Duration::ZERO));
                log::info!(
                    "stream reset subscriber={} reason={} (its last bytes were not read within {FINAL_FLUSH:?})",
                    self.end.guard.id,
                    end.as_str()
                );
            }
        }
        outbox.detach();
        // Dropping the socket closes the connection; the guard unsubscribes.
    }

    /// Runs until something ends the stream.
    async fn serve(&mut self, socket: &TcpStream) -> End {
        let outbox = Arc::clone(&self.end.outbox);
        loop {
            let blocked = match outbox.flush() {
                Flush::Done => false,
                Flush::Blocked => true,
                Flush::Failed => return End::Client,
            };
            if let Some(end) = outbox.end() {
                return end;
            }
            tokio::select! {
                () = outbox.woken() => {}
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
                () = expired(&mut self.end.expiry) => return End::Expired,
            }
        }
    }
}

/// Writes what is left, waiting for the socket as needed.
async fn drain(outbox: &Outbox, socket: &TcpStream) {
    while outbox.flush() == Flush::Blocked {
        if socket.writable().await.is_err() {
            return;
        }
    }
}

/// Waits until the kernel has sent everything written to `socket` (the
/// client read it) or `deadline` passes; true when it was sent.
async fn sent_by(socket: &TcpStream, deadline: tokio::time::Instant) -> bool {
    loop {
        match unsent_bytes(socket.as_fd()) {
            Some(0) | None => return true,
            Some(_) if tokio::time::Instant::now() >= deadline => return false,
            Some(_) => tokio::time::sleep(SENT_POLL).await,
        }
    }
}

/// Bytes the kernel holds for `socket` that the peer has not acknowledged
/// (`SIOCOUTQ`); `None` where it cannot be asked.
fn unsent_bytes(socket: BorrowedFd<'_>) -> Option<usize> {
    let mut unsent: libc::c_int = 0;
    // SAFETY: the descriptor is borrowed, so open for the call, and
    // TIOCOUTQ writes one c_int through the pointer it is given.
    let status = unsafe { libc::ioctl(socket.as_raw_fd(), libc::TIOCOUTQ, &mut unsent) };
    (status == 0).then(|| usize::try_from(unsent).unwrap_or(0))
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

/// The stream as a response body: what the outbox queued, in order; then,
/// once something ends the stream, its tail, and the end of the body. A
/// client that leaves drops the body (actix-web notices), which
/// unsubscribes.
struct BodyWriter {
    end: StreamEnd,
    /// The body is over: nothing more is yielded.
    done: bool,
    /// The stream ended; its tail is queued and being yielded.
    ending: bool,
    /// The connection's socket, when known: the body ends once the kernel
    /// has sent everything (so [`bound_the_end`] can reset a client that
    /// does not read).
    socket: Option<ConnectionSocket>,
    /// When to ask the kernel again whether everything was sent.
    recheck: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Tells [`bound_the_end`] that the body, and so its connection, is
    /// still there.
    _alive: Rc<()>,
}

impl BodyWriter {
    /// Whether the kernel sent everything written to the connection.
    fn all_sent(&self) -> bool {
        self.socket.is_none_or(|socket| {
            // SAFETY: the body is being polled by the dispatcher that owns
            // the connection, so its socket is open.
            let fd = unsafe { BorrowedFd::borrow_raw(socket.0) };
            matches!(unsent_bytes(fd), Some(0) | None)
        })
    }
}

impl Stream for BodyWriter {
    type Item = Result<Bytes, Infallible>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        loop {
            if let Some(bytes) = this.end.outbox.pop_body(cx) {
                return Poll::Ready(Some(Ok(bytes)));
            }
            if this.ending {
                // The tail is handed over; the body ends (and the
                // connection with it) once the client has it all.
                if !this.all_sent() {
                    let recheck = this
                        .recheck
                        .get_or_insert_with(|| Box::pin(tokio::time::sleep(SENT_POLL)));
                    ready!(recheck.as_mut().poll(cx));
                    this.recheck = None;
                    continue;
                }
                this.done = true;
                return Poll::Ready(None);
            }
            let end = match this.end.outbox.end() {
                Some(end) => end,
                None => match this.end.expiry.as_mut().map(|sleep| sleep.poll_unpin(cx)) {
                    Some(Poll::Ready(())) => End::Expired,
                    _ => return Poll::Pending,
                },
            };
            this.end.finish(end);
            this.ending = true;
        }
    }
}

impl Drop for BodyWriter {
    fn drop(&mut self) {
        // Gone before its end (the client left): offers stop queueing now,
        // before the channels have handled the unsubscribe.
        if !self.done {
            self.end.finish(End::Client);
        }
    }
}

/// The last bytes of a stream the broker ends: a `retry:` hint of `retry`
/// plus a jitter below `retry` derived from the subscriber id (spreading a
/// reconnect storm over one more `retry`), and a comment naming the reason.
/// No blank line: the field takes effect as it is read, and an event block
/// without data would be a phantom event to some clients (`sse::HEARTBEAT`).
pub fn reconnect_hint(retry: Duration, subscriber_id: u64, reason: &str) -> Bytes {
    let base = retry.as_millis() as u64;
    // Fibonacci hashing spreads consecutive ids over the whole range.
    let jitter = match base {
        0 => 0,
        _ => subscriber_id.wrapping_mul(0x9E37_79B9_7F4A_7C15) % base,
    };
    Bytes::from(format!(
        "retry: {}\n: reconnect reason={reason}\n",
        base + jitter
    ))
}

/// Unsubscribes the stream from its channels when it is dropped, runs the
/// protocol's close hook, and, once the response was built, logs and
/// counts the stream's end.
pub struct SubscriptionGuard {
    broker: Broker,
    pub channels: Vec<ChannelName>,
    pub id: u64,
    /// Set once the stream is handed to the client (not on an error answer).
    pub opened: Option<OpenStream>,
    on_close: Option<OnClose>,
}

impl SubscriptionGuard {
    pub fn new(broker: Broker, id: u64, on_close: Option<OnClose>) -> Self {
        Self {
            broker,
            channels: Vec::new(),
            id,
            opened: None,
            on_close,
        }
    }

    /// The channels' names, for log lines.
    pub fn names(&self) -> String {
        self.channels
            .iter()
            .map(ChannelName::as_str)
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// What the close log line and the open-streams gauge need.
pub struct OpenStream {
    pub at: Instant,
    pub log_level: Level,
    pub metrics: Arc<Metrics>,
    /// Live events written (replayed ones are in the prelude).
    pub events: u64,
    /// `client` (went away), `shutdown`, `evicted` or `expired`.
    pub reason: &'static str,
}

impl Drop for SubscriptionGuard {
    fn drop(&mut self) {
        if let Some(opened) = self.opened.take() {
            opened.metrics.open_streams.decrement(1);
            log::log!(
                opened.log_level,
                "stream closed subscriber={} channels={} duration_ms={} events={} reason={}",
                self.id,
                self.names(),
                opened.at.elapsed().as_millis(),
                opened.events,
                opened.reason
            );
        }
        for channel in self.channels.drain(..) {
            self.broker.unsubscribe(&channel, self.id);
        }
        if let Some(on_close) = self.on_close.take() {
            on_close();
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
                assert!(text.ends_with("\n: reconnect reason=shutdown\n"), "{text}");
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
