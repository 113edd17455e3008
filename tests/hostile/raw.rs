//! A raw HTTP/1.1 event-stream client over a plain socket, for the clients
//! reqwest will not imitate: a tiny receive window, reading a few bytes at a
//! time or not at all, closing half the socket. It keeps every byte it read
//! and parses the events complete so far the way a browser would.

use std::{
    io,
    net::SocketAddr,
    time::{Duration, Instant},
};

use sse_broker::sse::parse::{Parsed, parse_stream};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpSocket, TcpStream},
};

pub struct RawStream {
    pub socket: TcpStream,
    /// Every byte read so far: the response head, then the chunked body.
    wire: Vec<u8>,
}

/// How a connection ended, as the client saw it.
#[derive(Debug, PartialEq, Eq)]
pub enum Closed {
    /// The server closed it (FIN).
    Eof,
    /// The server reset it (RST).
    Reset,
    /// Still open when the time was up.
    Open,
}

impl RawStream {
    /// Connects to `addr` (with a receive buffer of `rcvbuf` bytes if set,
    /// before the connection exists so the window is small from the start)
    /// and sends `GET path` with `headers`.
    pub async fn open(
        addr: &str,
        path: &str,
        headers: &[(&str, &str)],
        rcvbuf: Option<usize>,
    ) -> Self {
        let target: SocketAddr = addr.parse().expect("an ip:port address");
        let socket = TcpSocket::new_v4().expect("a socket");
        if let Some(size) = rcvbuf {
            socket.set_recv_buffer_size(size as u32).expect("SO_RCVBUF");
        }
        let mut socket = tokio::time::timeout(crate::helpers::PATIENCE, socket.connect(target))
            .await
            .expect("connected in time")
            .expect("connect");
        let mut request =
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n");
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        socket
            .write_all(request.as_bytes())
            .await
            .expect("the request is sent");
        Self {
            socket,
            wire: Vec::new(),
        }
    }

    /// Reads at most `max` bytes (waiting at most `wait` for them): how many
    /// came, `Ok(0)` once the server closed.
    pub async fn read_some(&mut self, max: usize, wait: Duration) -> io::Result<usize> {
        let mut buf = vec![0; max];
        match tokio::time::timeout(wait, self.socket.read(&mut buf)).await {
            Ok(Ok(n)) => {
                self.wire.extend_from_slice(&buf[..n]);
                Ok(n)
            }
            Ok(Err(err)) => Err(err),
            Err(_) => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    /// Reads what has arrived, until nothing more comes for `quiet`.
    pub async fn read_available(&mut self, quiet: Duration) {
        while let Ok(n) = self.read_some(64 * 1024, quiet).await {
            if n == 0 {
                return;
            }
        }
    }

    /// Reads until the response head is in.
    pub async fn read_head(&mut self) {
        let deadline = Instant::now() + crate::helpers::PATIENCE;
        while self.body_start().is_none() {
            assert!(Instant::now() < deadline, "no response head in time");
            let _ = self.read_some(4096, Duration::from_millis(200)).await;
        }
    }

    /// Reads `chunk` bytes every `pause` until the server ends the
    /// connection or `budget` is spent.
    pub async fn trickle(&mut self, chunk: usize, pause: Duration, budget: Duration) -> Closed {
        let deadline = Instant::now() + budget;
        while Instant::now() < deadline {
            match self.read_some(chunk, pause).await {
                Ok(0) => return Closed::Eof,
                Ok(_) => tokio::time::sleep(pause).await,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                Err(err) if err.kind() == io::ErrorKind::ConnectionReset => return Closed::Reset,
                Err(_) => return Closed::Reset,
            }
        }
        Closed::Open
    }

    fn body_start(&self) -> Option<usize> {
        self.wire
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map(|at| at + 4)
    }

    /// The event-stream text received so far (the chunked body decoded,
    /// an incomplete last chunk left out).
    pub fn text(&self) -> String {
        let Some(mut at) = self.body_start() else {
            return String::new();
        };
        let wire = &self.wire;
        let mut out = Vec::new();
        while let Some(line_end) = wire[at..].windows(2).position(|w| w == b"\r\n") {
            let size_text = std::str::from_utf8(&wire[at..at + line_end]).unwrap_or("");
            let Ok(size) = usize::from_str_radix(size_text.trim(), 16) else {
                break;
            };
            let data = at + line_end + 2;
            if size == 0 || data + size > wire.len() {
                break;
            }
            out.extend_from_slice(&wire[data..data + size]);
            at = data + size + 2;
            if at > wire.len() {
                break;
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    /// The events dispatched so far, as an `EventSource` would see them.
    pub fn events(&self) -> Vec<Parsed> {
        parse_stream(&self.text())
    }
}
