//! The subscriber streams' reader: one epoll loop (mio) for every open
//! stream of this process, run as one task on the generator's runtime.
//!
//! The async side connects, reads the response head and then hands the
//! socket over with [`Reader::read`], which resolves when the stream ends
//! (the broker closed it, it failed, or the run reached the phase the caller
//! stops at). A tokio task per stream cost ~2 µs of user-space CPU per
//! delivery (task wake-ups, readiness bookkeeping, a control-change waiter
//! per read); this loop reads every ready socket until it would block and
//! checks the events in place, so one core checks more deliveries per second
//! and the generator is less often the ceiling of a fan-out run
//! (BENCHMARKS.md, optimisations).
//!
//! The loop's own epoll descriptor is awaited through tokio (`AsyncFd`), so
//! it shares the one thread with the publishers: a reader thread of its own
//! (tried) made every publish wake two threads on the generator's core, which
//! cost both brokers CPU per publish and held Nchan's closed-loop publish rate
//! back. It never spins: spinning through bursts (tried too) took the core
//! from the publishers.

use std::{
    io::{self, Read},
    os::fd::{AsRawFd, RawFd},
    sync::Arc,
    time::Duration,
};

use mio::{Events, Interest, Poll, Token, net::TcpStream};
use slab::Slab;
use tokio::{
    io::unix::AsyncFd,
    sync::{mpsc, oneshot, watch},
};

use crate::{
    net::{err_kind, SubConn},
    now_us, on_event, record_latencies,
    sse::{ChunkedDecoder, SseParser},
    Ctx, End, SubState,
};

/// Ready sockets taken from the epoll descriptor at a time.
const EVENTS: usize = 1024;
/// One stream handed to the reader.
struct Job {
    /// Taken by the loop, which registers it with its own poll.
    stream: Option<std::net::TcpStream>,
    chunked: Option<ChunkedDecoder>,
    /// Body bytes that came with the response head.
    pending: Vec<u8>,
    parser: SseParser,
    st: SubState,
    local: usize,
    /// The run phase at which the stream is given back (`End::Stopped`).
    stop_at: u8,
    done: oneshot::Sender<(End, SubState)>,
}

/// A stream the loop reads.
struct Active {
    stream: TcpStream,
    job: Job,
}

pub struct Reader {
    jobs: mpsc::UnboundedSender<Job>,
}

impl Reader {
    /// Starts the reader task on the current runtime; it ends when the
    /// `Reader` is dropped and every stream it held has ended.
    pub fn start(cx: Arc<Ctx>, ctrl: watch::Receiver<u8>) -> io::Result<Self> {
        let poll = Poll::new()?;
        let fd = EpollFd(poll.as_raw_fd());
        // SAFETY: the descriptor belongs to `poll`, which `Epoll` drops after
        // `ready` (field order), so it stays open while tokio watches it.
        let ready = unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
            .map_err(io::Error::from)?;
        let (jobs, incoming) = mpsc::unbounded_channel();
        tokio::spawn(run(Epoll { ready, poll }, incoming, cx, ctrl));
        Ok(Self { jobs })
    }

    /// Reads `conn` until it ends; gives back why, and the subscriber's state.
    pub async fn read(&self, conn: SubConn, parser: SseParser, st: SubState, local: usize, stop_at: u8) -> (End, SubState) {
        // Leaves tokio's reactor (this runs on the runtime, as it must); the
        // socket stays non-blocking.
        let stream = match conn.stream.into_std() {
            Ok(stream) => stream,
            Err(err) => return (End::Error(err_kind(&err)), st),
        };
        let (done, result) = oneshot::channel();
        let job = Job { stream: Some(stream), chunked: conn.chunked, pending: conn.pending, parser, st, local, stop_at, done };
        if let Err(mpsc::error::SendError(job)) = self.jobs.send(job) {
            return (End::Error("reader gone".into()), job.st);
        }
        result.await.unwrap_or_else(|_| (End::Error("reader gone".into()), SubState::default()))
    }
}

/// The epoll descriptor of the loop's `Poll`, as tokio watches it (the
/// `Poll` owns and closes it).
struct EpollFd(RawFd);

/// The loop's poll and tokio's watch on it; `ready` is dropped first.
struct Epoll {
    ready: AsyncFd<EpollFd>,
    poll: Poll,
}

impl AsRawFd for EpollFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

async fn run(
    epoll: Epoll,
    mut incoming: mpsc::UnboundedReceiver<Job>,
    cx: Arc<Ctx>,
    mut ctrl: watch::Receiver<u8>,
) {
    let cx = &*cx;
    // Used by field, never moved apart: `ready` must be dropped before `poll`.
    let mut epoll = epoll;
    let mut active: Slab<Active> = Slab::new();
    let mut events = Events::with_capacity(EVENTS);
    let mut scratch = Scratch { buf: vec![0; 64 * 1024], body: Vec::new(), lat: Vec::new() };
    let mut open = true;
    loop {
        let phase = *ctrl.borrow_and_update();
        // Phases change a handful of times per run: only then look at every stream.
        let stopped: Vec<usize> = active.iter().filter(|(_, a)| phase >= a.job.stop_at).map(|(k, _)| k).collect();
        for key in stopped {
            finish(&epoll.poll, &mut active, key, End::Stopped);
        }
        if !open && active.is_empty() {
            return;
        }
        // Kept across wake-ups until the phase changes (a fresh waiter per
        // wake-up would be registered and dropped every time).
        let mut changed = std::pin::pin!(ctrl.changed());
        loop {
            tokio::select! {
                job = incoming.recv(), if open => match job {
                    Some(job) if phase >= job.stop_at => {
                        let _ = job.done.send((End::Stopped, job.st));
                    }
                    Some(job) => admit(&epoll.poll, &mut active, job, cx, &mut scratch),
                    None => open = false,
                },
                guard = epoll.ready.readable() => {
                    let Ok(mut guard) = guard else {
                        cx.sh.error("reader: epoll descriptor failed");
                        return;
                    };
                    // Take every ready socket; tokio then clears the readiness
                    // only if no new event came meanwhile.
                    loop {
                        if let Err(err) = epoll.poll.poll(&mut events, Some(Duration::ZERO)) {
                            if err.kind() != io::ErrorKind::Interrupted {
                                cx.sh.error(format!("reader poll: {err}"));
                                return;
                            }
                        }
                        for event in &events {
                            let key = event.token().0;
                            if !active.contains(key) {
                                continue;
                            }
                            if let Some(end) = read_ready(&mut active[key], cx, &mut scratch) {
                                finish(&epoll.poll, &mut active, key, end);
                            }
                        }
                        if events.iter().count() < EVENTS {
                            break;
                        }
                    }
                    guard.clear_ready();
                }
                changed = &mut changed => {
                    if changed.is_err() {
                        // The run is over (the control sender is gone): give every stream back.
                        let keys: Vec<usize> = active.iter().map(|(k, _)| k).collect();
                        for key in keys {
                            finish(&epoll.poll, &mut active, key, End::Stopped);
                        }
                        return;
                    }
                    break;
                }
            }
            if !open && active.is_empty() {
                return;
            }
        }
    }
}

/// Buffers reused by every read.
struct Scratch {
    buf: Vec<u8>,
    body: Vec<u8>,
    lat: Vec<(usize, u64)>,
}

fn admit(poll: &Poll, active: &mut Slab<Active>, mut job: Job, cx: &Ctx, scratch: &mut Scratch) {
    let Some(stream) = job.stream.take() else { return };
    let mut stream = TcpStream::from_std(stream);
    let entry = active.vacant_entry();
    let key = entry.key();
    if let Err(err) = poll.registry().register(&mut stream, Token(key), Interest::READABLE) {
        let _ = job.done.send((End::Error(err_kind(&err)), job.st));
        return;
    }
    let pending = std::mem::take(&mut job.pending);
    entry.insert(Active { stream, job });
    if let Some(end) = consume(&mut active[key].job, &pending, cx, scratch) {
        finish(poll, active, key, end);
    }
}

/// Reads what the socket has, until it would block (readiness is
/// edge-triggered: no new event comes for bytes left unread); `Some` once
/// the stream is over.
fn read_ready(a: &mut Active, cx: &Ctx, scratch: &mut Scratch) -> Option<End> {
    let mut buf = std::mem::take(&mut scratch.buf);
    let end = loop {
        match a.stream.read(&mut buf) {
            Ok(0) => break Some(End::Eof),
            Ok(n) => {
                if let Some(end) = consume(&mut a.job, &buf[..n], cx, scratch) {
                    break Some(end);
                }
            }
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => break None,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => break Some(End::Error(err_kind(&err))),
        }
    };
    scratch.buf = buf;
    end
}

/// Decodes and checks one read's bytes.
fn consume(job: &mut Job, raw: &[u8], cx: &Ctx, scratch: &mut Scratch) -> Option<End> {
    if raw.is_empty() {
        return None;
    }
    let now = now_us();
    let data: &[u8] = match job.chunked.as_mut() {
        Some(dec) => {
            scratch.body.clear();
            if let Err(e) = dec.decode(raw, &mut scratch.body) {
                return Some(End::Error(e.to_string()));
            }
            &scratch.body
        }
        None => raw,
    };
    let (st, local, lat) = (&mut job.st, job.local, &mut scratch.lat);
    job.parser.feed(data, |d, id| on_event(d, id, st, cx, local, now, lat));
    record_latencies(cx, lat);
    if job.chunked.as_ref().is_some_and(|d| d.is_done()) {
        return Some(End::Eof);
    }
    None
}

fn finish(poll: &Poll, active: &mut Slab<Active>, key: usize, end: End) {
    let Some(mut a) = active.try_remove(key) else { return };
    let _ = poll.registry().deregister(&mut a.stream);
    let _ = a.job.done.send((end, a.job.st));
    // Dropping the stream closes the connection.
}
