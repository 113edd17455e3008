//! Loopback-only HTTP/1.1 plumbing: URL templates, subscriber streams, keep-alive publishers.

use crate::sse::{parse_head, ChunkedDecoder};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

#[derive(Debug, Clone)]
pub struct Target {
    pub addr: SocketAddr,
    pub host: String,
    /// Path with a `{channel}` placeholder.
    pub path_tmpl: String,
}

impl Target {
    pub fn parse(url: &str) -> Result<Target, String> {
        Self::parse_with(url, true)
    }

    /// As [`Self::parse`]; `placeholder`: whether the path must name `{channel}`
    /// (a form publish names the channel in its body instead).
    pub fn parse_with(url: &str, placeholder: bool) -> Result<Target, String> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| format!("{url}: only http:// URLs are supported"))?;
        let (auth, path) = match rest.find('/') {
            Some(p) => (&rest[..p], &rest[p..]),
            None => (rest, "/"),
        };
        let (host, port) = if let Some(h) = auth.strip_prefix('[') {
            let (h, p) = h.split_once(']').ok_or("bad IPv6 authority")?;
            (h, p.strip_prefix(':').unwrap_or("80"))
        } else {
            match auth.rsplit_once(':') {
                Some((h, p)) => (h, p),
                None => (auth, "80"),
            }
        };
        let port: u16 = port.parse().map_err(|_| format!("{url}: bad port"))?;
        let ip: IpAddr = if host.eq_ignore_ascii_case("localhost") {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        } else {
            host.parse().map_err(|_| format!("{url}: host must be an IP literal or localhost"))?
        };
        if !ip.is_loopback() {
            return Err(format!("{url}: refusing non-loopback target {ip}"));
        }
        if placeholder && !path.contains("{channel}") {
            return Err(format!("{url}: URL template needs a {{channel}} placeholder"));
        }
        Ok(Target { addr: SocketAddr::new(ip, port), host: auth.to_string(), path_tmpl: path.to_string() })
    }

    pub fn path(&self, channel: &str) -> String {
        self.path_tmpl.replace("{channel}", channel)
    }
}

pub async fn tcp_connect(addr: SocketAddr, src: Option<IpAddr>) -> std::io::Result<TcpStream> {
    let sock = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    if let Some(ip) = src {
        sock.bind(SocketAddr::new(ip, 0))?;
    }
    let s = sock.connect(addr).await?;
    s.set_nodelay(true)?;
    Ok(s)
}

pub fn err_kind(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(code) => format!("io: {:?} (os {code})", e.kind()),
        None => format!("io: {:?}", e.kind()),
    }
}

/// An open SSE response stream.
pub struct SubConn {
    pub stream: TcpStream,
    pub chunked: Option<ChunkedDecoder>,
    /// Raw (still framed) body bytes read together with the head.
    pub pending: Vec<u8>,
}

pub async fn open_sub(
    t: &Target,
    path: &str,
    src: Option<IpAddr>,
    last_id: Option<&str>,
    wait_first_byte: bool,
) -> Result<SubConn, String> {
    let mut stream = tcp_connect(t.addr, src).await.map_err(|e| format!("connect {}", err_kind(&e)))?;
    let mut req = format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\nUser-Agent: sse-loadgen\r\n",
        t.host
    );
    if let Some(id) = last_id {
        req.push_str(&format!("Last-Event-ID: {id}\r\n"));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes()).await.map_err(|e| format!("write {}", err_kind(&e)))?;
    let mut buf = Vec::with_capacity(1024);
    let mut tmp = [0u8; 2048];
    let head = loop {
        let n = stream.read(&mut tmp).await.map_err(|e| format!("read head {}", err_kind(&e)))?;
        if n == 0 {
            return Err("eof before response head".into());
        }
        buf.extend_from_slice(&tmp[..n]);
        if let Some(h) = parse_head(&buf)? {
            break h;
        }
    };
    if head.status != 200 {
        return Err(format!("subscribe status {}", head.status));
    }
    let mut pending = buf.split_off(head.len);
    if wait_first_byte && pending.is_empty() {
        let n = stream.read(&mut tmp).await.map_err(|e| format!("read first byte {}", err_kind(&e)))?;
        if n == 0 {
            return Err("eof before first body byte".into());
        }
        pending.extend_from_slice(&tmp[..n]);
    }
    Ok(SubConn { stream, chunked: head.chunked.then(ChunkedDecoder::default), pending })
}

/// A keep-alive publishing connection.
pub struct PubConn {
    pub target: std::sync::Arc<Target>,
    pub src: Option<IpAddr>,
    conn: Option<TcpStream>,
    rbuf: Vec<u8>,
    req: Vec<u8>,
    pub content_type: String,
    /// Extra header lines, each ending in CRLF.
    headers: String,
}

impl PubConn {
    pub fn new(target: std::sync::Arc<Target>, src: Option<IpAddr>, content_type: String, headers: &[String]) -> Self {
        let headers = headers.iter().map(|h| format!("{}\r\n", h.trim())).collect();
        PubConn { target, src, conn: None, rbuf: Vec::with_capacity(4096), req: Vec::with_capacity(1024), content_type, headers }
    }

    /// POSTs `body` (with an `Idempotency-Key` header when `key` is given), returns the
    /// response status. A reused connection that dies before answering is retried once on a
    /// fresh one.
    pub async fn post(&mut self, path: &str, body: &[u8], key: Option<&str>) -> Result<u16, String> {
        use std::io::Write;
        self.req.clear();
        let _ = write!(
            self.req,
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n{}",
            self.target.host,
            self.content_type,
            body.len(),
            self.headers
        );
        if let Some(key) = key {
            let _ = write!(self.req, "Idempotency-Key: {key}\r\n");
        }
        self.req.extend_from_slice(b"\r\n");
        self.req.extend_from_slice(body);
        for attempt in 0..2 {
            let reused = self.conn.is_some();
            if self.conn.is_none() {
                let c = tcp_connect(self.target.addr, self.src).await.map_err(|e| format!("publish connect {}", err_kind(&e)))?;
                self.conn = Some(c);
            }
            match self.exchange().await {
                Ok(s) => return Ok(s),
                Err((msg, got_bytes)) => {
                    self.conn = None;
                    if reused && !got_bytes && attempt == 0 {
                        continue;
                    }
                    return Err(msg);
                }
            }
        }
        Err("publish retry failed".into())
    }

    async fn exchange(&mut self) -> Result<u16, (String, bool)> {
        let conn = self.conn.as_mut().unwrap();
        conn.write_all(&self.req).await.map_err(|e| (format!("publish write {}", err_kind(&e)), false))?;
        self.rbuf.clear();
        let mut tmp = [0u8; 4096];
        let head = loop {
            let n = conn.read(&mut tmp).await.map_err(|e| (format!("publish read {}", err_kind(&e)), false))?;
            if n == 0 {
                return Err(("publish: eof before response".into(), !self.rbuf.is_empty()));
            }
            self.rbuf.extend_from_slice(&tmp[..n]);
            if let Some(h) = parse_head(&self.rbuf).map_err(|e| (e, true))? {
                break h;
            }
        };
        let no_body = head.status < 200 || head.status == 204 || head.status == 304;
        let mut close = head.close;
        if no_body {
        } else if head.chunked {
            let mut dec = ChunkedDecoder::default();
            let mut sink = Vec::new();
            dec.decode(&self.rbuf[head.len..], &mut sink).map_err(|e| (e.to_string(), true))?;
            while !dec.is_done() {
                let n = conn.read(&mut tmp).await.map_err(|e| (format!("publish read {}", err_kind(&e)), true))?;
                if n == 0 {
                    return Err(("publish: eof in chunked body".into(), true));
                }
                sink.clear();
                dec.decode(&tmp[..n], &mut sink).map_err(|e| (e.to_string(), true))?;
            }
        } else if let Some(cl) = head.content_length {
            let mut have = (self.rbuf.len() - head.len) as u64;
            while have < cl {
                let n = conn.read(&mut tmp).await.map_err(|e| (format!("publish read {}", err_kind(&e)), true))?;
                if n == 0 {
                    return Err(("publish: eof in body".into(), true));
                }
                have += n as u64;
            }
        } else {
            // body runs until close
            loop {
                let n = conn.read(&mut tmp).await.map_err(|e| (format!("publish read {}", err_kind(&e)), true))?;
                if n == 0 {
                    break;
                }
            }
            close = true;
        }
        if close {
            self.conn = None;
        }
        Ok(head.status)
    }
}
