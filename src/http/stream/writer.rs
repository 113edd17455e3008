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
//! Both end a stream the same way ([`StreamEnd::finish`], `super::end`) and
//! give its last bytes [`FINAL_FLUSH`] to reach the client before the
//! connection is reset: the direct writer times its own drain; the body
//! writer's [`bound_the_end`] watches, as actix-web would wait forever. The
//! system calls both make are `super::socket`'s.

use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    rc::{Rc, Weak},
    sync::Arc,
    task::{Context, Poll, ready},
};

use actix_http::h1::{TakeOver, TakenOver};
use actix_web::{HttpResponse, HttpResponseBuilder, rt::net::TcpStream};
use bytes::Bytes;
use futures_util::{FutureExt, Stream};

use super::{
    end::{FINAL_FLUSH, SENT_POLL, StreamEnd},
    outbox::{End, Flush, Outbox},
    socket::{self, ConnectionSocket},
};

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

/// The stream after its response head, on a connection it owns: flushes
/// what the outbox queued when the socket is writable again, notices a
/// client that leaves, ends the stream when the broker or the token says
/// so. Live events normally never pass through here: the channel actors
/// write them (see `super::outbox`).
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
                socket::reset_on_close(&socket);
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
                    if ready.is_err() || socket::client_left(socket) {
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
        match socket::unsent(socket) {
            Some(0) | None => return true,
            Some(_) if tokio::time::Instant::now() >= deadline => return false,
            Some(_) => tokio::time::sleep(SENT_POLL).await,
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

/// Whether the encoded response head announced a chunked body (HTTP/1.1;
/// an HTTP/1.0 client gets a body that ends when the connection closes).
fn is_chunked(head: &[u8]) -> bool {
    const NEEDLE: &[u8] = b"transfer-encoding: chunked";
    head.windows(NEEDLE.len())
        .any(|window| window.eq_ignore_ascii_case(NEEDLE))
}

/// The body writer's response: the outbox's bytes as a streaming body.
/// With the connection's `socket` known (see [`socket::remember_socket`]),
/// a stream the broker ends is given [`FINAL_FLUSH`] to reach the client,
/// then reset.
pub fn body(
    end: StreamEnd,
    socket: Option<ConnectionSocket>,
    mut response: HttpResponseBuilder,
) -> HttpResponse {
    let socket = socket.map(Rc::new);
    if let Some(socket) = &socket {
        let (outbox, id) = (Arc::clone(&end.outbox), end.guard.id);
        actix_web::rt::spawn(bound_the_end(outbox, Rc::downgrade(socket), id));
    }
    response.force_close().streaming(BodyWriter {
        end,
        done: false,
        ending: false,
        socket,
        recheck: None,
    })
}

/// The body writer's watchdog: once the broker ends the stream, gives its
/// last bytes [`FINAL_FLUSH`] to reach the client; a body still unfinished
/// then (actix-web, with its own buffer full, no longer polls it) has its
/// connection reset. actix-web has no write timeout of its own: without
/// this, a client that stopped reading would keep its connection forever.
/// `socket` is the body's: gone with the body, and with it the connection.
async fn bound_the_end(outbox: Arc<Outbox>, socket: Weak<ConnectionSocket>, id: u64) {
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
    let Some(socket) = socket.upgrade() else {
        return;
    };
    socket.reset();
    log::info!(
        "stream reset subscriber={id} reason={} (its last bytes were not read within {FINAL_FLUSH:?})",
        end.as_str()
    );
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
    /// has sent everything. Only the body holds it, so [`bound_the_end`]'s
    /// `Weak` of it tells whether the body, and so its connection, is still
    /// there (and can then reset a client that does not read).
    socket: Option<Rc<ConnectionSocket>>,
    /// When to ask the kernel again whether everything was sent.
    recheck: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl BodyWriter {
    /// Whether the kernel sent everything written to the connection.
    fn all_sent(&self) -> bool {
        self.socket
            .as_ref()
            .is_none_or(|socket| matches!(socket.unsent(), Some(0) | None))
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
