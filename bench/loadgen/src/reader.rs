//! The subscriber streams' reader: one thread and one epoll loop (mio) for
//! every open stream of this process.
//!
//! The async side (tokio) connects, reads the response head and then hands
//! the socket over with [`Reader::read`], which resolves when the stream
//! ends (the broker closed it, it failed, or the run reached the phase the
//! caller stops at). A tokio task per stream cost ~2 µs of user-space CPU
//! per delivery (task wake-ups, readiness bookkeeping, a control-change
//! waiter per read); one loop that reads every ready socket until it would
//! block and parses in place costs a fraction of that, so one core checks
//! more deliveries per second and the generator is less often the ceiling of
//! a fan-out run (BENCHMARKS.md, optimisations). It blocks in `epoll_wait`
//! when nothing is ready: spinning through bursts instead (tried) took the
//! core from the publishers, which share it, and halved a closed-loop
//! publish run.

use std::{
    io::{self, Read},
    sync::{Arc, mpsc},
    thread,
    time::Duration,
};

use mio::{Events, Interest, Poll, Token, Waker, net::TcpStream};
use slab::Slab;
use tokio::sync::{oneshot, watch};

use crate::{
    net::{err_kind, SubConn},
    now_us, on_event, record_latencies,
    sse::{ChunkedDecoder, SseParser},
    Ctx, End, SubState,
};

const WAKER: Token = Token(usize::MAX);
/// How often the loop looks at the run's phase when no socket is ready.
const PHASE_CHECK: Duration = Duration::from_millis(20);
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
    jobs: mpsc::Sender<Job>,
    waker: Arc<Waker>,
}

impl Reader {
    /// Starts the reader thread; it ends when the `Reader` is dropped and
    /// every stream it held has ended.
    pub fn start(cx: Arc<Ctx>, ctrl: watch::Receiver<u8>) -> io::Result<Self> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let (jobs, incoming) = mpsc::channel();
        thread::Builder::new()
            .name("sse-reader".into())
            .spawn(move || run(poll, incoming, &cx, &ctrl))?;
        Ok(Self { jobs, waker })
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
        if let Err(mpsc::SendError(job)) = self.jobs.send(job) {
            return (End::Error("reader thread gone".into()), job.st);
        }
        let _ = self.waker.wake();
        result.await.unwrap_or_else(|_| (End::Error("reader thread gone".into()), SubState::default()))
    }
}

fn run(mut poll: Poll, incoming: mpsc::Receiver<Job>, cx: &Ctx, ctrl: &watch::Receiver<u8>) {
    let mut active: Slab<Active> = Slab::new();
    let mut events = Events::with_capacity(1024);
    let mut scratch = Scratch { buf: vec![0; 64 * 1024], body: Vec::new(), lat: Vec::new() };
    let mut open = true;
    let mut phase = *ctrl.borrow();
    loop {
        if let Err(err) = poll.poll(&mut events, Some(PHASE_CHECK)) {
            if err.kind() != io::ErrorKind::Interrupted {
                cx.sh.error(format!("reader poll: {err}"));
                return;
            }
        }
        loop {
            match incoming.try_recv() {
                Ok(job) if phase >= job.stop_at => {
                    let _ = job.done.send((End::Stopped, job.st));
                }
                Ok(job) => admit(&poll, &mut active, job, cx, &mut scratch),
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) => {
                    open = false;
                    break;
                }
            }
        }
        for event in &events {
            let key = event.token().0;
            if event.token() == WAKER || !active.contains(key) {
                continue;
            }
            if let Some(end) = read_ready(&mut active[key], cx, &mut scratch) {
                finish(&poll, &mut active, key, end);
            }
        }
        // Phases change a handful of times per run: only then look at every stream.
        let now = *ctrl.borrow();
        if now != phase {
            phase = now;
            let stopped: Vec<usize> = active.iter().filter(|(_, a)| phase >= a.job.stop_at).map(|(k, _)| k).collect();
            for key in stopped {
                finish(&poll, &mut active, key, End::Stopped);
            }
        }
        if !open && active.is_empty() {
            return;
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
