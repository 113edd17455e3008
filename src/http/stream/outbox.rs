//! A stream's outbox: the queue of bytes on their way to one
//! `text/event-stream` connection, and its slow-consumer policy. The outbox
//! is the subscriber's [`Sink`] as the broker sees it: the fan-out calls
//! its [`Sink::offer`] and nothing stands in between.
//!
//! With the direct writer, when nothing is queued and the socket is ours,
//! an offer writes the event with one non-blocking `send` right inside the
//! fan-out loop (`super::socket::send`): no queue, no task wake-up, no
//! second pass over the subscriber's state, which is most of what a
//! delivery cost in user space (see BENCHMARKS.md, "direct writes"). What
//! the socket does not take is queued, in order, and the stream's writer
//! (`super::writer`) sends it when the socket is writable again; while
//! anything is queued, later events queue behind it, so order always holds.
//! With the body writer there is no socket: every offer queues, and the
//! response body takes the queue ([`Outbox::pop_body`]). One mutex per
//! outbox orders the channel actors' offers with the writer; it is held for
//! one `send` at most.
//!
//! Slow-consumer policy: a queue of `capacity` units (`stream.subscriber_buffer`)
//! or `max_bytes` bytes (`stream.subscriber_buffer_bytes`) that is full when
//! another event comes evicts the subscriber: the stream ends with a
//! reconnect hint and the client replays from history with
//! `Last-Event-ID`. Bytes the socket already took part of are always
//! completed first, so a client never sees half an event.
//!
//! Before the response head is out (the handler is still collecting its
//! channels' answers, or the connection was not handed over yet) offers are
//! only queued; the prelude (retry hint and replay) goes in front of them
//! ([`Outbox::start`]), and, for the direct writer, the head in front of
//! everything ([`Outbox::attach`]). Live events are encoded for the stream
//! by its [`Cursor`] (a multi-channel stream's ids), and framed as HTTP/1.1
//! chunks at write time when the head announced `Transfer-Encoding: chunked`.

use std::{
    collections::VecDeque,
    io::{self, IoSlice},
    sync::{
        Arc, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicUsize, Ordering},
    },
};

use actix_web::rt::net::TcpStream;
use bytes::Bytes;
use futures_util::task::AtomicWaker;
use tokio::sync::Notify;

use super::{
    cursor::{Cursor, Live},
    socket,
};
use crate::{
    broker::subscriber::{Delivery, Offer, Sink},
    sse::chunk,
};

/// Why a stream ends; the close log line and the reconnect hint say it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The client went away (or its socket failed).
    Client,
    /// The queue was full: a slow consumer.
    Evicted,
    /// Every channel let go of the stream: the broker is shutting down.
    Released,
    /// The subscriber's token expired.
    Expired,
}

impl End {
    pub fn as_str(self) -> &'static str {
        match self {
            End::Client => "client",
            End::Evicted => "evicted",
            End::Released => "shutdown",
            End::Expired => "expired",
        }
    }
}

/// How the writer's flush went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flush {
    /// Nothing is left to write.
    Done,
    /// The socket is full: wait until it is writable.
    Blocked,
    /// The socket failed: the client is gone.
    Failed,
}

/// One queued piece of the response.
#[derive(Debug)]
enum Unit {
    /// Event-stream bytes: framed as a chunk on a chunked response.
    Body(Bytes),
    /// Event-stream bytes already framed as a chunk (an event's shared
    /// [`Frame::chunk`](crate::sse::Frame)): one `send` on a chunked
    /// response, its data alone on an HTTP/1.0 one.
    Chunk(Bytes),
    /// Bytes written as they are: the response head, the last chunk.
    Raw(Bytes),
}

/// The heartbeat comment as a chunk, shared by every stream.
const HEARTBEAT_CHUNK: Bytes = Bytes::from_static(b"c\r\n: heartbeat\n\r\n");

const CHUNK_HEADER_MAX: usize = chunk::HEADER_MAX;
/// Queued units one `writev` takes at most when the writer catches up.
const WRITE_BATCH: usize = 16;
/// The chunk that ends a chunked body.
const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// One stream's outbox (see the module documentation), shared by the
/// channels that hold the stream and the writer that serves it.
pub struct Outbox {
    state: Mutex<State>,
    /// Wakes the direct writer: something is queued, or the stream ends.
    wake: Notify,
    /// Wakes the body writer (a polled stream), likewise.
    waker: AtomicWaker,
    /// Units that may wait before the subscriber counts as slow
    /// (`stream.subscriber_buffer`).
    capacity: usize,
    /// Bytes that may wait before the subscriber counts as slow
    /// (`stream.subscriber_buffer_bytes`): with large events the unit
    /// bound alone would let one stuck client pin hundreds of MiB.
    max_bytes: usize,
    /// Channels that hold the stream and have not let go of it on their
    /// own; the last to let go ends it (see [`Sink::released`]).
    holders: AtomicUsize,
}

struct State {
    /// The connection, once the response head was handed over with it.
    socket: Option<Arc<TcpStream>>,
    /// The head announced `Transfer-Encoding: chunked`.
    chunked: bool,
    /// Set by `start`: the prelude is queued, offers are encoded at once.
    cursor: Option<Cursor>,
    /// Deliveries offered before `start`, encoded by it.
    early: Vec<Delivery>,
    pending: VecDeque<Unit>,
    /// Units at the front of `pending` that are the response head and the
    /// prelude: they do not count against the capacity.
    reserved: usize,
    /// Bytes of the queued units that count against the capacity (and of
    /// `early`): what a slow client holds.
    queued_bytes: usize,
    /// Wire bytes of the front unit already written.
    front_written: usize,
    end: Option<End>,
    /// Live events taken (for the close log line).
    events: u64,
}

/// The outbox as the broker sees it: the subscriber's [`Sink`]. The
/// fan-out's one call per delivery ([`Sink::offer`]) lands here.
impl Sink for Outbox {
    /// Offers one delivery: written now when nothing is queued and the
    /// socket takes it, else queued (or refused, see [`Offer`]).
    fn offer(&self, delivery: &Delivery) -> Offer {
        let mut guard = self.lock();
        let state = &mut *guard;
        if state.end.is_some() {
            return Offer::Closed;
        }
        let Some(cursor) = &mut state.cursor else {
            let len = match delivery {
                Delivery::Event(event) => event.frame.chunk().len(),
                Delivery::Heartbeat => HEARTBEAT_CHUNK.len(),
            };
            if state.early.len() >= self.capacity || state.queued_bytes + len > self.max_bytes {
                return self.evict(state);
            }
            state.queued_bytes += len;
            state.early.push(delivery.clone());
            return Offer::Taken;
        };
        let unit = encode(delivery, cursor, &mut state.events);
        self.queue(state, unit)
    }

    fn capacity(&self) -> usize {
        self.capacity
    }

    /// Every channel let go (the broker is shutting down): the stream ends
    /// with a reconnect hint.
    fn released(&self) {
        if self.holders.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.lock().end.get_or_insert(End::Released);
            self.notify();
        }
    }
}

impl Outbox {
    /// A new outbox holding up to `capacity` queued units of at most
    /// `max_bytes` together, for a stream of `channels` channels.
    pub fn new(capacity: usize, max_bytes: usize, channels: usize) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State {
                socket: None,
                chunked: false,
                cursor: None,
                early: Vec::new(),
                pending: VecDeque::new(),
                reserved: 0,
                queued_bytes: 0,
                front_written: 0,
                end: None,
                events: 0,
            }),
            wake: Notify::new(),
            waker: AtomicWaker::new(),
            capacity: capacity.max(1),
            max_bytes: max_bytes.max(1),
            holders: AtomicUsize::new(channels),
        })
    }

    /// Wakes whichever writer serves the stream.
    fn notify(&self) {
        self.wake.notify_one();
        self.waker.wake();
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves consistent state (every
        // update is a single push, pop or assignment), so go on with it.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues the prelude (retry hint, replay) in front of every offer so
    /// far, encodes those with `cursor`, and encodes later offers at once.
    pub fn start(&self, prelude: Bytes, mut cursor: Cursor) {
        let mut guard = self.lock();
        let state = &mut *guard;
        if !prelude.is_empty() {
            state.pending.push_front(Unit::Body(prelude));
            state.reserved += 1;
        }
        state.queued_bytes = 0;
        for delivery in std::mem::take(&mut state.early) {
            let unit = encode(&delivery, &mut cursor, &mut state.events);
            if !unit.is_empty() {
                state.queued_bytes += unit.len();
                state.pending.push_back(unit);
            }
        }
        state.cursor = Some(cursor);
    }

    /// The response head is encoded and the connection is ours: the head
    /// goes first, then whatever is queued; from now on offers may write.
    pub fn attach(&self, socket: Arc<TcpStream>, head: Bytes, chunked: bool) {
        let mut state = self.lock();
        if !head.is_empty() {
            state.pending.push_front(Unit::Raw(head));
            state.reserved += 1;
        }
        state.front_written = 0;
        state.chunked = chunked;
        state.socket = Some(socket);
        drop(state);
        self.notify();
    }

    /// Writes or queues `unit` (the lock is held).
    fn queue(&self, state: &mut State, unit: Unit) -> Offer {
        if unit.is_empty() {
            return Offer::Taken;
        }
        if state.pending.is_empty()
            && let Some(socket) = &state.socket
        {
            return match send_now(socket, state.chunked, &unit) {
                Ok(written) if written == wire_len(&unit, state.chunked) => Offer::Taken,
                Ok(written) => {
                    state.front_written = written;
                    state.queued_bytes += unit.len();
                    state.pending.push_back(unit);
                    self.notify();
                    Offer::Taken
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                    state.queued_bytes += unit.len();
                    state.pending.push_back(unit);
                    self.notify();
                    Offer::Taken
                }
                Err(_) => {
                    state.end = Some(End::Client);
                    self.notify();
                    Offer::Closed
                }
            };
        }
        if state.pending.len() - state.reserved >= self.capacity
            || state.queued_bytes + unit.len() > self.max_bytes
        {
            return self.evict(state);
        }
        state.queued_bytes += unit.len();
        state.pending.push_back(unit);
        if state.socket.is_none() {
            // The body writer takes it (the direct writer, not attached
            // yet, is woken when it is).
            self.waker.wake();
        }
        Offer::Taken
    }

    fn evict(&self, state: &mut State) -> Offer {
        state.end = Some(End::Evicted);
        self.notify();
        Offer::Full
    }

    /// The writer's part: sends what is queued until done or blocked.
    pub fn flush(&self) -> Flush {
        let mut guard = self.lock();
        let state = &mut *guard;
        let Some(socket) = state.socket.clone() else {
            return Flush::Done;
        };
        loop {
            if state.pending.is_empty() {
                return Flush::Done;
            }
            let batch = state.pending.iter().take(WRITE_BATCH);
            match write_units(&socket, state.chunked, batch, state.front_written) {
                Ok(written) => advance(state, written),
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Flush::Blocked,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    state.end.get_or_insert(End::Client);
                    return Flush::Failed;
                }
            }
        }
    }

    /// Why the stream ends, once something ended it.
    pub fn end(&self) -> Option<End> {
        self.lock().end
    }

    /// Ends the stream (the first reason wins): nothing more is taken. An
    /// evicted stream drops what it queued but a partly written unit; then
    /// `tail` and, on a chunked response, the last chunk are queued.
    pub fn finish(&self, end: End, tail: Option<Bytes>) -> End {
        let mut guard = self.lock();
        let state = &mut *guard;
        let end = *state.end.get_or_insert(end);
        if matches!(end, End::Evicted | End::Client) {
            let keep = usize::from(state.front_written > 0).max(state.reserved);
            state.pending.truncate(keep);
        }
        if end != End::Client {
            if let Some(tail) = tail.filter(|t| !t.is_empty()) {
                state.pending.push_back(Unit::Body(tail));
            }
            if state.chunked {
                state
                    .pending
                    .push_back(Unit::Raw(Bytes::from_static(LAST_CHUNK)));
            }
        }
        let reserved = state.reserved;
        state.queued_bytes = state.pending.iter().skip(reserved).map(Unit::len).sum();
        drop(guard);
        // Whoever waits for the end (the body writer's watchdog) sees it.
        self.wake.notify_one();
        end
    }

    /// Lets go of the socket (the writer closes it by dropping its own).
    pub fn detach(&self) {
        self.lock().socket = None;
    }

    /// Live events taken so far.
    pub fn events(&self) -> u64 {
        self.lock().events
    }

    /// Resolves when an offer queued something or the stream ended.
    pub async fn woken(&self) {
        self.wake.notified().await;
    }

    /// The body writer's part: the next queued bytes (chunk framing is the
    /// body's own), or `None` when nothing is queued; `cx` is woken when
    /// something is.
    pub fn pop_body(&self, cx: &std::task::Context<'_>) -> Option<Bytes> {
        self.waker.register(cx.waker());
        let mut state = self.lock();
        let unit = pop_front(&mut state)?;
        Some(match unit {
            Unit::Chunk(framed) => framed.slice(chunk::data_start(&framed)..framed.len() - 2),
            Unit::Body(bytes) | Unit::Raw(bytes) => bytes,
        })
    }
}

/// Drops `written` wire bytes off the front of the queue.
fn advance(state: &mut State, mut written: usize) {
    while written > 0 {
        let Some(front) = state.pending.front() else {
            return;
        };
        let left = wire_len(front, state.chunked) - state.front_written;
        if written < left {
            state.front_written += written;
            return;
        }
        written -= left;
        pop_front(state);
        state.front_written = 0;
    }
}

/// Takes the front unit off the queue, keeping the counts.
fn pop_front(state: &mut State) -> Option<Unit> {
    let unit = state.pending.pop_front()?;
    if state.reserved > 0 {
        state.reserved -= 1;
    } else {
        state.queued_bytes = state.queued_bytes.saturating_sub(unit.len());
    }
    Some(unit)
}

/// The unit of a delivery; counts the live events among them.
fn encode(delivery: &Delivery, cursor: &mut Cursor, events: &mut u64) -> Unit {
    match delivery {
        Delivery::Event(event) => {
            *events += 1;
            match cursor.live(event) {
                Live::Shared => Unit::Chunk(event.frame.chunk().clone()),
                Live::Own(bytes) => Unit::Body(bytes),
            }
        }
        Delivery::Heartbeat => Unit::Chunk(HEARTBEAT_CHUNK),
    }
}

impl Unit {
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes it holds (chunk framing included where it has it).
    fn len(&self) -> usize {
        match self {
            Unit::Body(bytes) | Unit::Chunk(bytes) | Unit::Raw(bytes) => bytes.len(),
        }
    }

    /// What goes on the wire for this unit, in order; a chunk header for a
    /// body is written into `header`.
    fn pieces<'a>(
        &'a self,
        chunked: bool,
        header: &'a mut [u8; CHUNK_HEADER_MAX],
    ) -> [&'a [u8]; 3] {
        match self {
            Unit::Raw(bytes) => [bytes, &[], &[]],
            Unit::Chunk(framed) if chunked => [framed, &[], &[]],
            Unit::Chunk(framed) => [
                &framed[chunk::data_start(framed)..framed.len() - 2],
                &[],
                &[],
            ],
            Unit::Body(body) if chunked => {
                let len = chunk::header(body.len(), header);
                [&header[..len], body, b"\r\n"]
            }
            Unit::Body(body) => [body, &[], &[]],
        }
    }
}

/// The bytes `unit` takes on the wire.
fn wire_len(unit: &Unit, chunked: bool) -> usize {
    unit.pieces(chunked, &mut [0; CHUNK_HEADER_MAX])
        .iter()
        .map(|piece| piece.len())
        .sum()
}

/// The fan-out's write of one unit: a single `send` ([`socket::send`]); a
/// body framed here goes as its header, data and trailer in one `writev`.
fn send_now(socket: &TcpStream, chunked: bool, unit: &Unit) -> io::Result<usize> {
    match unit.pieces(chunked, &mut [0; CHUNK_HEADER_MAX]) {
        [bytes, [], []] => socket::send(socket, bytes),
        _ => write_units(socket, chunked, std::iter::once(unit), 0),
    }
}

/// One write of `units` (a `writev` when they are several pieces), skipping
/// the `skip` wire bytes of the first that are already out. Returns the
/// wire bytes written.
fn write_units<'a>(
    socket: &TcpStream,
    chunked: bool,
    units: impl Iterator<Item = &'a Unit>,
    mut skip: usize,
) -> io::Result<usize> {
    let mut headers = [[0u8; CHUNK_HEADER_MAX]; WRITE_BATCH];
    let mut parts = [IoSlice::new(&[]); 3 * WRITE_BATCH];
    let mut count = 0;
    for (unit, header) in units.take(WRITE_BATCH).zip(headers.iter_mut()) {
        for piece in unit.pieces(chunked, header) {
            let piece = if skip >= piece.len() {
                skip -= piece.len();
                continue;
            } else {
                let rest = &piece[skip..];
                skip = 0;
                rest
            };
            parts[count] = IoSlice::new(piece);
            count += 1;
        }
    }
    socket::write(socket, &parts[..count])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        broker::{EventId, event::Event},
        names::ChannelName,
        sse::HEARTBEAT,
    };
    use std::time::Duration;

    /// Chunk headers are lowercase hex without leading zeros.
    #[test]
    fn chunk_headers() {
        let mut out = [0; CHUNK_HEADER_MAX];
        for (len, text) in [
            (1, "1\r\n"),
            (15, "f\r\n"),
            (16, "10\r\n"),
            (150, "96\r\n"),
            (0x1_0000, "10000\r\n"),
        ] {
            let n = chunk::header(len, &mut out);
            assert_eq!(std::str::from_utf8(&out[..n]).unwrap(), text);
        }
        let n = chunk::header(usize::MAX, &mut out);
        assert_eq!(n, CHUNK_HEADER_MAX);
    }

    /// The shared heartbeat chunk frames the heartbeat comment.
    #[test]
    fn heartbeat_chunk_frames_the_heartbeat() {
        let mut header = [0; CHUNK_HEADER_MAX];
        let n = chunk::header(HEARTBEAT.len(), &mut header);
        let framed = [&header[..n], &HEARTBEAT[..], b"\r\n"].concat();
        assert_eq!(&HEARTBEAT_CHUNK[..], &framed[..]);
    }

    /// A partly written front unit is skipped by exactly its written bytes,
    /// across the chunk header, body and trailer.
    #[test]
    fn advance_counts_wire_bytes() {
        let outbox = Outbox::new(8, usize::MAX, 1);
        let mut state = outbox.lock();
        state.chunked = true;
        state
            .pending
            .push_back(Unit::Body(Bytes::from_static(b"abc")));
        state
            .pending
            .push_back(Unit::Raw(Bytes::from_static(b"xy")));
        // "3\r\nabc\r\n" is 8 wire bytes.
        advance(&mut state, 2);
        assert_eq!((state.pending.len(), state.front_written), (2, 2));
        advance(&mut state, 7);
        assert_eq!((state.pending.len(), state.front_written), (1, 1));
        advance(&mut state, 1);
        assert!(state.pending.is_empty());
    }

    /// Offers before `start` wait; the prelude goes in front of them.
    #[test]
    fn prelude_goes_first() {
        let outbox = Outbox::new(8, usize::MAX, 1);
        assert_eq!(outbox.offer(&Delivery::Heartbeat), Offer::Taken);
        outbox.start(
            Bytes::from_static(b"retry: 1\n\n"),
            Cursor::new(Vec::new(), false),
        );
        let state = outbox.lock();
        let bodies: Vec<&[u8]> = state
            .pending
            .iter()
            .map(|unit| match unit {
                Unit::Body(b) | Unit::Chunk(b) | Unit::Raw(b) => &b[..],
            })
            .collect();
        assert_eq!(bodies, vec![&b"retry: 1\n\n"[..], &HEARTBEAT_CHUNK[..]]);
    }

    /// A full queue evicts; after that every offer is refused.
    #[test]
    fn a_full_queue_evicts() {
        let outbox = Outbox::new(2, usize::MAX, 1);
        outbox.start(Bytes::new(), Cursor::new(Vec::new(), false));
        assert_eq!(outbox.offer(&Delivery::Heartbeat), Offer::Taken);
        assert_eq!(outbox.offer(&Delivery::Heartbeat), Offer::Taken);
        assert_eq!(outbox.offer(&Delivery::Heartbeat), Offer::Full);
        assert_eq!(outbox.end(), Some(End::Evicted));
        assert_eq!(outbox.offer(&Delivery::Heartbeat), Offer::Closed);
    }

    /// A client that does not read fills its socket: later events queue in
    /// order behind the partly written one, the writer's flushes send them
    /// once the client reads, and the wire is a valid chunked body.
    #[actix_web::test]
    async fn a_full_socket_queues_in_order() {
        use crate::broker::event::Epoch;
        use std::io::Read;

        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().expect("accept");
        server.set_nonblocking(true).unwrap();
        let socket = Arc::new(TcpStream::from_std(server).expect("register"));
        let channel = ChannelName::parse("c").unwrap();
        let epoch = Epoch::from_raw(1);
        let outbox = Outbox::new(1_000, usize::MAX, 1);
        let start = EventId { epoch, seq: 0 };
        outbox.start(
            Bytes::from_static(b"retry: 1\n\n"),
            Cursor::new(vec![(channel.clone(), start)], false),
        );
        outbox.attach(
            Arc::clone(&socket),
            Bytes::from_static(b"HEAD\r\n\r\n"),
            true,
        );
        // A fresh socket is writable once the reactor has seen it.
        socket.writable().await.expect("writable");
        assert_eq!(outbox.flush(), Flush::Done);
        let payload = "x".repeat(60_000);
        let events = 200;
        for seq in 1..=events {
            let event = Event::new(channel.clone(), EventId { epoch, seq }, None, &payload);
            assert_eq!(outbox.offer(&Delivery::Event(event)), Offer::Taken);
        }
        assert!(
            outbox.lock().pending.len() > 1,
            "12 MB did not fill the socket: the test proves nothing"
        );
        // Read everything on a thread while the writer side flushes.
        let wire = std::thread::spawn(move || {
            client
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let mut wire = Vec::new();
            let mut buf = vec![0; 1 << 16];
            while !wire.ends_with(b"0\r\n\r\n") {
                let n = client.read(&mut buf).expect("read");
                assert!(n > 0, "closed early");
                wire.extend_from_slice(&buf[..n]);
            }
            wire
        });
        loop {
            match outbox.flush() {
                Flush::Done => break,
                Flush::Blocked => socket.writable().await.expect("writable"),
                Flush::Failed => panic!("the socket failed"),
            }
        }
        outbox.finish(End::Released, None);
        while outbox.flush() == Flush::Blocked {
            socket.writable().await.expect("writable");
        }
        let wire = wire.join().expect("reader");
        let body = wire.strip_prefix(&b"HEAD\r\n\r\n"[..]).expect("head first");
        let text = dechunk(body);
        let parsed = crate::sse::parse::parse_stream(&text);
        let ids: Vec<u64> = parsed
            .iter()
            .map(|e| EventId::parse(&e.id).expect("an id").seq)
            .collect();
        assert_eq!(ids, (1..=events).collect::<Vec<_>>());
        assert!(text.starts_with("retry: 1\n\n"));
    }

    /// Decodes a complete chunked body.
    fn dechunk(mut body: &[u8]) -> String {
        let mut out = Vec::new();
        loop {
            let line_end = body
                .windows(2)
                .position(|w| w == b"\r\n")
                .expect("size line");
            let size = usize::from_str_radix(std::str::from_utf8(&body[..line_end]).unwrap(), 16)
                .expect("hex size");
            body = &body[line_end + 2..];
            if size == 0 {
                assert_eq!(body, b"\r\n");
                return String::from_utf8(out).expect("utf-8");
            }
            out.extend_from_slice(&body[..size]);
            assert_eq!(&body[size..size + 2], b"\r\n");
            body = &body[size + 2..];
        }
    }

    /// The stream ends as a shutdown once every channel let go of it.
    #[test]
    fn last_channel_releases() {
        let outbox = Outbox::new(2, usize::MAX, 2);
        Sink::released(&*outbox);
        assert_eq!(outbox.end(), None);
        Sink::released(&*outbox);
        assert_eq!(outbox.end(), Some(End::Released));
    }

    /// Queued bytes count too: past `max_bytes` the subscriber is evicted,
    /// however few units are queued.
    #[test]
    fn the_byte_bound_evicts() {
        let outbox = Outbox::new(100, 1000, 1);
        outbox.start(
            Bytes::from_static(b"retry: 1\n"),
            Cursor::new(Vec::new(), false),
        );
        let channel = ChannelName::parse("c").unwrap();
        let epoch = crate::broker::event::Epoch::from_raw(1);
        let event = |seq| {
            Delivery::Event(Event::new(
                channel.clone(),
                EventId { epoch, seq },
                None,
                &"x".repeat(300),
            ))
        };
        assert_eq!(outbox.offer(&event(1)), Offer::Taken);
        assert_eq!(outbox.offer(&event(2)), Offer::Taken);
        assert_eq!(outbox.offer(&event(3)), Offer::Taken);
        // Three events of ~330 bytes are ~1,000: the fourth does not fit.
        assert_eq!(outbox.offer(&event(4)), Offer::Full);
        assert_eq!(outbox.end(), Some(End::Evicted));
    }
}
