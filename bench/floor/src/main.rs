//! `sse-floor`: the least work a Server-Sent Events broker can do per event,
//! to measure what the kernel alone costs on this machine.
//!
//! One thread, one epoll loop (mio), no HTTP framework, no ids beyond a
//! counter, no history, no heartbeats, no limits. `GET /stream/{c}` (or
//! Nchan's `/sub/{c}`) answers a chunked `text/event-stream`;
//! `POST /publish/{c}` (or `/pub/{c}`) frames the body once and writes it to
//! every subscriber of `c` with one `send` each, then answers `202` on the
//! publisher's keep-alive connection. What a subscriber cannot take at once
//! is buffered and flushed when its socket is writable again, so nothing is
//! lost and `sse-loadgen` checks it like any broker.
//!
//! Driven by the same load generator as the real brokers (`bench/floor.sh`),
//! its CPU per delivery and per publish is the floor no broker on this
//! machine can go under: whatever a broker adds (HTTP parsing, routing,
//! actors, ids, history) comes on top. It is a measuring instrument, never a
//! server to deploy: it trusts its input and handles only what the load
//! generator sends.
//!
//!     sse-floor 127.0.0.1:8070

use std::{
    collections::HashMap,
    io::{self, Read, Write},
    net::SocketAddr,
};

use mio::{
    Events, Interest, Poll, Token,
    net::{TcpListener, TcpStream},
};
use slab::Slab;

const LISTENER: Token = Token(usize::MAX);
/// Largest request head accepted; the load generator's are ~150 bytes.
const MAX_HEAD: usize = 16 * 1024;
const STREAM_HEAD: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n";

struct Conn {
    stream: TcpStream,
    /// Bytes read and not yet parsed.
    input: Vec<u8>,
    /// Bytes the socket did not take yet (flushed when writable).
    output: Vec<u8>,
    /// The channel, once this connection is an event stream.
    channel: Option<String>,
    writable_interest: bool,
}

struct Floor {
    poll: Poll,
    conns: Slab<Conn>,
    channels: HashMap<String, Vec<usize>>,
    seq: u64,
}

fn main() -> io::Result<()> {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8070".into())
        .parse()
        .map_err(|err| io::Error::new(io::ErrorKind::InvalidInput, format!("address: {err}")))?;
    let mut listener = TcpListener::bind(addr)?;
    let mut floor = Floor {
        poll: Poll::new()?,
        conns: Slab::with_capacity(32 * 1024),
        channels: HashMap::new(),
        seq: 0,
    };
    floor.poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
    eprintln!("sse-floor listening on {}", listener.local_addr()?);
    let mut events = Events::with_capacity(1024);
    loop {
        floor.poll.poll(&mut events, None)?;
        for event in &events {
            if event.token() == LISTENER {
                floor.accept(&listener)?;
                continue;
            }
            let key = event.token().0;
            if event.is_writable() {
                floor.flush(key);
            }
            if event.is_readable() || event.is_read_closed() {
                floor.read(key);
            }
        }
    }
}

impl Floor {
    fn accept(&mut self, listener: &TcpListener) -> io::Result<()> {
        loop {
            match listener.accept() {
                Ok((mut stream, _)) => {
                    let entry = self.conns.vacant_entry();
                    self.poll
                        .registry()
                        .register(&mut stream, Token(entry.key()), Interest::READABLE)?;
                    entry.insert(Conn {
                        stream,
                        input: Vec::new(),
                        output: Vec::new(),
                        channel: None,
                        writable_interest: false,
                    });
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(err) => {
                    eprintln!("accept: {err}");
                    return Ok(());
                }
            }
        }
    }

    /// Reads all there is, then handles every complete request.
    fn read(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else { return };
        let mut buf = [0u8; 4096];
        let mut closed = false;
        loop {
            match conn.stream.read(&mut buf) {
                Ok(0) => {
                    closed = true;
                    break;
                }
                Ok(n) => conn.input.extend_from_slice(&buf[..n]),
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    closed = true;
                    break;
                }
            }
        }
        while let Some(request) = self.next_request(key) {
            self.handle(key, request);
        }
        if closed || self.conns.get(key).is_some_and(|c| c.input.len() > MAX_HEAD) {
            self.close(key);
        }
    }

    /// Takes one complete request (head and Content-Length body) off the input.
    fn next_request(&mut self, key: usize) -> Option<(String, String, Vec<u8>)> {
        let conn = self.conns.get_mut(key)?;
        let end = conn.input.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
        let head = std::str::from_utf8(&conn.input[..end]).ok()?;
        let mut lines = head.split("\r\n");
        let mut first = lines.next()?.split(' ');
        let (method, path) = (first.next()?.to_owned(), first.next()?.to_owned());
        let length = lines
            .filter_map(|line| line.split_once(':'))
            .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, value)| value.trim().parse::<usize>().ok())
            .unwrap_or(0);
        if conn.input.len() < end + length {
            return None;
        }
        let body = conn.input[end..end + length].to_vec();
        conn.input.drain(..end + length);
        Some((method, path, body))
    }

    fn handle(&mut self, key: usize, (method, path, body): (String, String, Vec<u8>)) {
        let path = path.split('?').next().unwrap_or_default();
        let (kind, channel) = path.trim_start_matches('/').split_once('/').unwrap_or(("", ""));
        match (method.as_str(), kind) {
            ("GET", "stream" | "sub") if !channel.is_empty() => {
                let mut head = STREAM_HEAD.to_vec();
                head.extend_from_slice(&chunk(b": floor\n\n"));
                self.send(key, &head);
                if let Some(conn) = self.conns.get_mut(key) {
                    conn.channel = Some(channel.to_owned());
                }
                self.channels.entry(channel.to_owned()).or_default().push(key);
            }
            ("POST", "publish" | "pub") if !channel.is_empty() => {
                self.seq += 1;
                let mut event = format!("id: {}\ndata: ", self.seq).into_bytes();
                event.extend_from_slice(&body);
                event.extend_from_slice(b"\n\n");
                let frame = chunk(&event);
                let subscribers = self.channels.get(channel).cloned().unwrap_or_default();
                for &subscriber in &subscribers {
                    self.send(subscriber, &frame);
                }
                let answer = format!("{{\"id\":\"{}\",\"subscribers\":{}}}", self.seq, subscribers.len());
                let response = format!(
                    "HTTP/1.1 202 Accepted\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{answer}",
                    answer.len()
                );
                self.send(key, response.as_bytes());
            }
            _ => self.send(key, b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"),
        }
    }

    /// One `send`; what the socket does not take waits for writability.
    fn send(&mut self, key: usize, bytes: &[u8]) {
        let Some(conn) = self.conns.get_mut(key) else { return };
        if !conn.output.is_empty() {
            conn.output.extend_from_slice(bytes);
            return;
        }
        let written = match conn.stream.write(bytes) {
            Ok(n) => n,
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => 0,
            Err(_) => return self.close(key),
        };
        if written < bytes.len() {
            conn.output.extend_from_slice(&bytes[written..]);
            self.want_writable(key, true);
        }
    }

    fn flush(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else { return };
        while !conn.output.is_empty() {
            match conn.stream.write(&conn.output) {
                Ok(n) => {
                    conn.output.drain(..n);
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => return self.close(key),
            }
        }
        self.want_writable(key, false);
    }

    fn want_writable(&mut self, key: usize, on: bool) {
        let Some(conn) = self.conns.get_mut(key) else { return };
        if conn.writable_interest == on {
            return;
        }
        conn.writable_interest = on;
        let interest = if on { Interest::READABLE | Interest::WRITABLE } else { Interest::READABLE };
        let _ = self.poll.registry().reregister(&mut conn.stream, Token(key), interest);
    }

    fn close(&mut self, key: usize) {
        let Some(mut conn) = self.conns.try_remove(key) else { return };
        let _ = self.poll.registry().deregister(&mut conn.stream);
        if let Some(channel) = conn.channel {
            if let Some(list) = self.channels.get_mut(&channel) {
                list.retain(|&k| k != key);
            }
        }
    }
}

/// One chunk of a chunked body.
fn chunk(data: &[u8]) -> Vec<u8> {
    let mut out = format!("{:x}\r\n", data.len()).into_bytes();
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
    out
}
