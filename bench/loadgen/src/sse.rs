//! HTTP/1.1 chunked-body decoding and an incremental SSE parser.

/// Incremental decoder for `Transfer-Encoding: chunked` bodies.
#[derive(Default)]
pub struct ChunkedDecoder {
    state: CState,
    remaining: u64,
    line: Vec<u8>,
}

#[derive(Default, PartialEq, Debug, Clone, Copy)]
enum CState {
    #[default]
    Size,
    Data,
    DataEnd,
    Trailer,
    Done,
}

impl ChunkedDecoder {
    pub fn is_done(&self) -> bool {
        self.state == CState::Done
    }

    /// Decodes `input`, appending body bytes to `out`. Returns how many input bytes were
    /// consumed: all of them unless the terminating chunk was reached.
    pub fn decode(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<usize, &'static str> {
        let mut i = 0;
        while i < input.len() {
            match self.state {
                CState::Size | CState::Trailer => {
                    let Some(p) = input[i..].iter().position(|&b| b == b'\n') else {
                        self.line.extend_from_slice(&input[i..]);
                        if self.line.len() > 4096 {
                            return Err("chunk size line too long");
                        }
                        return Ok(input.len());
                    };
                    self.line.extend_from_slice(&input[i..i + p]);
                    i += p + 1;
                    if self.line.last() == Some(&b'\r') {
                        self.line.pop();
                    }
                    if self.state == CState::Size {
                        let hex_end = self
                            .line
                            .iter()
                            .position(|&b| b == b';' || b == b' ' || b == b'\t')
                            .unwrap_or(self.line.len());
                        let s = std::str::from_utf8(&self.line[..hex_end]).map_err(|_| "bad chunk size")?;
                        let n = u64::from_str_radix(s.trim(), 16).map_err(|_| "bad chunk size")?;
                        self.line.clear();
                        if n == 0 {
                            self.state = CState::Trailer;
                        } else {
                            self.remaining = n;
                            self.state = CState::Data;
                        }
                    } else {
                        let empty = self.line.is_empty();
                        self.line.clear();
                        if empty {
                            self.state = CState::Done;
                            return Ok(i);
                        }
                    }
                }
                CState::Data => {
                    let take = (input.len() - i).min(self.remaining as usize);
                    out.extend_from_slice(&input[i..i + take]);
                    i += take;
                    self.remaining -= take as u64;
                    if self.remaining == 0 {
                        self.state = CState::DataEnd;
                    }
                }
                CState::DataEnd => {
                    let b = input[i];
                    i += 1;
                    match b {
                        b'\r' => {}
                        b'\n' => self.state = CState::Size,
                        _ => return Err("missing CRLF after chunk"),
                    }
                }
                CState::Done => return Ok(i),
            }
        }
        Ok(i)
    }
}

/// Incremental Server-Sent Events parser (WHATWG rules: lines end with CRLF, LF or CR;
/// `data:` lines accumulate, `id:` sets the last event id, `:` starts a comment,
/// a blank line dispatches the event if it has data).
#[derive(Default)]
pub struct SseParser {
    line: Vec<u8>,
    skip_lf: bool,
    data: Vec<u8>,
    has_data: bool,
    pub last_id: Option<String>,
    pub comments: u64,
    pub events: u64,
}

impl SseParser {
    /// Feeds bytes; `on_event(data, last_event_id)` is called for every dispatched event.
    pub fn feed(&mut self, input: &[u8], mut on_event: impl FnMut(&[u8], Option<&str>)) {
        let mut i = 0;
        while i < input.len() {
            if self.skip_lf {
                self.skip_lf = false;
                if input[i] == b'\n' {
                    i += 1;
                    continue;
                }
            }
            match input[i..].iter().position(|&b| b == b'\n' || b == b'\r') {
                None => {
                    self.line.extend_from_slice(&input[i..]);
                    return;
                }
                Some(p) => {
                    self.line.extend_from_slice(&input[i..i + p]);
                    if input[i + p] == b'\r' {
                        self.skip_lf = true;
                    }
                    i += p + 1;
                    let line = std::mem::take(&mut self.line);
                    self.process_line(&line, &mut on_event);
                    self.line = line;
                    self.line.clear();
                }
            }
        }
    }

    fn process_line(&mut self, line: &[u8], on_event: &mut impl FnMut(&[u8], Option<&str>)) {
        if line.is_empty() {
            if self.has_data {
                if self.data.last() == Some(&b'\n') {
                    self.data.pop();
                }
                self.events += 1;
                on_event(&self.data, self.last_id.as_deref());
            }
            self.data.clear();
            self.has_data = false;
            return;
        }
        if line[0] == b':' {
            self.comments += 1;
            return;
        }
        let (field, mut value) = match line.iter().position(|&b| b == b':') {
            Some(p) => (&line[..p], &line[p + 1..]),
            None => (line, &line[line.len()..]),
        };
        if value.first() == Some(&b' ') {
            value = &value[1..];
        }
        match field {
            b"data" => {
                self.data.extend_from_slice(value);
                self.data.push(b'\n');
                self.has_data = true;
            }
            b"id" => {
                if !value.contains(&0) {
                    self.last_id = Some(String::from_utf8_lossy(value).into_owned());
                }
            }
            _ => {} // event, retry and unknown fields are ignored
        }
    }
}

/// Parsed HTTP response head.
#[derive(Debug)]
pub struct Head {
    pub status: u16,
    pub chunked: bool,
    pub content_length: Option<u64>,
    pub close: bool,
    pub len: usize,
}

/// Parses a response head if `buf` holds a complete one.
pub fn parse_head(buf: &[u8]) -> Result<Option<Head>, String> {
    let end = match find(buf, b"\r\n\r\n") {
        Some(p) => p + 4,
        None => match find(buf, b"\n\n") {
            Some(p) => p + 2,
            None => {
                if buf.len() > 64 * 1024 {
                    return Err("response head too long".into());
                }
                return Ok(None);
            }
        },
    };
    let text = String::from_utf8_lossy(&buf[..end]);
    let mut lines = text.lines();
    let status_line = lines.next().unwrap_or("");
    let mut parts = status_line.split_whitespace();
    let proto = parts.next().unwrap_or("");
    if !proto.starts_with("HTTP/1.") {
        return Err(format!("bad status line: {status_line:?}"));
    }
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line: {status_line:?}"))?;
    let mut head = Head { status, chunked: false, content_length: None, close: proto == "HTTP/1.0", len: end };
    for l in lines {
        let Some((k, v)) = l.split_once(':') else { continue };
        let v = v.trim();
        if k.eq_ignore_ascii_case("transfer-encoding") {
            head.chunked = v.to_ascii_lowercase().contains("chunked");
        } else if k.eq_ignore_ascii_case("content-length") {
            head.content_length = v.parse().ok();
        } else if k.eq_ignore_ascii_case("connection") {
            let v = v.to_ascii_lowercase();
            if v.contains("close") {
                head.close = true;
            } else if v.contains("keep-alive") {
                head.close = false;
            }
        }
    }
    Ok(Some(head))
}

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(chunks: &[&[u8]]) -> Vec<(String, Option<String>)> {
        let mut p = SseParser::default();
        let mut out = vec![];
        for c in chunks {
            p.feed(c, |d, id| out.push((String::from_utf8_lossy(d).into_owned(), id.map(str::to_owned))));
        }
        out
    }

    #[test]
    fn line_endings_and_fields() {
        let e = events(&[b": hi\n\nid: a-1\ndata: x\r\n\r\ndata:y\rdata: z\r\r", b"id\ndata: w\n\n"]);
        assert_eq!(
            e,
            vec![
                ("x".into(), Some("a-1".into())),
                ("y\nz".into(), Some("a-1".into())),
                ("w".into(), Some("".into())),
            ]
        );
    }

    #[test]
    fn split_crlf_across_feeds() {
        let e = events(&[b"data: a\r", b"\n\r", b"\ndata: b\r", b"\r"]);
        assert_eq!(e, vec![("a".into(), None), ("b".into(), None)]);
    }

    #[test]
    fn byte_by_byte() {
        let s = b"id: k3x9a-57\r\ndata: 1 2 3\r\n\r\n:ping\n\ndata: 2\n\n";
        let chunks: Vec<&[u8]> = s.chunks(1).collect();
        let e = events(&chunks);
        assert_eq!(e, vec![("1 2 3".into(), Some("k3x9a-57".into())), ("2".into(), Some("k3x9a-57".into()))]);
    }

    #[test]
    fn chunked() {
        let body = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\nNEXT";
        for split in 1..body.len() {
            let mut d = ChunkedDecoder::default();
            let mut out = vec![];
            let mut consumed = 0;
            for part in [&body[..split], &body[split..]] {
                if d.is_done() {
                    break;
                }
                consumed += d.decode(part, &mut out).unwrap();
            }
            assert!(d.is_done());
            assert_eq!(out, b"hello world");
            assert_eq!(&body[consumed..], b"NEXT");
        }
    }

    #[test]
    fn head() {
        let raw: &[u8] = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\nxx";
        let h = parse_head(raw).unwrap().unwrap();
        assert_eq!(h.status, 200);
        assert!(h.chunked && !h.close);
        assert_eq!(h.len, raw.len() - 2);
        assert!(parse_head(b"HTTP/1.1 200 OK\r\n").unwrap().is_none());
    }
}
