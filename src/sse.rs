//! The `text/event-stream` wire format: how events, comments and the stream
//! prelude are written, once, into shared [`Bytes`].
//!
//! The channel actor encodes each event here exactly once; every subscriber
//! then writes the same bytes. Payloads are split on `\r\n`, `\n` and lone
//! `\r` into one `data:` line each, so no payload can start a new field or a
//! second event (see the property test below).

use std::fmt::Write as _;

use bytes::{BufMut, Bytes, BytesMut};

/// The heartbeat comment, shared by every stream: one comment line and no
/// blank line after it, since a blank line ends an event block, and some
/// clients (Python's httpx-sse) turn a block without data into an event
/// with empty `data`. Spec-following clients ignore the comment either way.
pub const HEARTBEAT: Bytes = Bytes::from_static(b": heartbeat\n");

/// One encoded event, kept in three views of one buffer: framed as an
/// HTTP/1.1 chunk for the write to a subscriber's socket, whole, and
/// without its `id:` line so a multi-channel stream can write its own.
#[derive(Debug, Clone)]
pub struct Frame {
    /// The event as one chunk of a chunked body: `{len:x}\r\n`, the event,
    /// `\r\n`. The other views are offsets into it, so a frame is one
    /// shared buffer and a few bytes (an event in history stays small).
    chunk: Bytes,
    /// Where the event starts in `chunk` (after the chunk header).
    start: u32,
    /// Where the event's first line after `id:` starts in `chunk`.
    rest_start: u32,
}

impl Frame {
    fn new(chunk: Bytes, start: usize, rest_start: usize) -> Self {
        Self {
            // An event is at most a request body long, far below 4 GiB.
            start: u32::try_from(start).unwrap_or(u32::MAX),
            rest_start: u32::try_from(rest_start).unwrap_or(u32::MAX),
            chunk,
        }
    }

    /// The event framed as one HTTP/1.1 chunk, shared.
    pub fn chunk(&self) -> &Bytes {
        &self.chunk
    }

    /// The whole event: `id:` line, optional `event:` line, `data:` lines,
    /// blank line.
    pub fn full(&self) -> &[u8] {
        &self.chunk[self.start as usize..self.chunk.len() - 2]
    }

    /// The event without its `id:` line.
    pub fn rest(&self) -> &[u8] {
        &self.chunk[self.rest_start as usize..self.chunk.len() - 2]
    }
}

/// Encodes one event. `id` and `event` must be free of CR, LF and NUL; the
/// callers validate them (`EventType::parse`, ids are generated).
pub fn encode_event(id: &str, event: Option<&str>, data: &str) -> Frame {
    const ROOM: usize = chunk::HEADER_MAX;
    let mut buf = BytesMut::with_capacity(ROOM + data.len() + id.len() + 34);
    // Room for the chunk header, written once the length is known.
    buf.put_bytes(0, ROOM);
    buf.put_slice(b"id: ");
    buf.put_slice(id.as_bytes());
    buf.put_u8(b'\n');
    let id_end = buf.len();
    write_rest(&mut buf, event, data);
    let end = buf.len();
    buf.put_slice(b"\r\n");
    let mut header = [0; ROOM];
    let header_len = chunk::header(end - ROOM, &mut header);
    let start = ROOM - header_len;
    buf[start..ROOM].copy_from_slice(&header[..header_len]);
    let all = buf.freeze().slice(start..);
    Frame::new(all, ROOM - start, id_end - start)
}

/// An event that `write` encodes in its own protocol's field order (a
/// Mercure update), in the same three views, written once into one buffer;
/// `rest` is the whole event, as such events are never written on
/// multi-channel streams.
pub fn framed(capacity: usize, write: impl FnOnce(&mut BytesMut)) -> Frame {
    const ROOM: usize = chunk::HEADER_MAX;
    let mut buf = BytesMut::with_capacity(ROOM + capacity + 2);
    buf.put_bytes(0, ROOM);
    write(&mut buf);
    let end = buf.len();
    buf.put_slice(b"\r\n");
    let mut header = [0; ROOM];
    let header_len = chunk::header(end - ROOM, &mut header);
    let start = ROOM - header_len;
    buf[start..ROOM].copy_from_slice(&header[..header_len]);
    let _ = end;
    let all = buf.freeze().slice(start..);
    Frame::new(all, ROOM - start, ROOM - start)
}

/// HTTP/1.1 chunked framing: every stream write is one chunk.
pub mod chunk {
    /// The largest `{len:x}\r\n` chunk header (a 64-bit length).
    pub const HEADER_MAX: usize = 18;

    /// Writes `{len:x}\r\n` at the start of `out`; returns its length.
    pub fn header(len: usize, out: &mut [u8; HEADER_MAX]) -> usize {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let digits = (usize::BITS - len.max(1).leading_zeros()).div_ceil(4) as usize;
        for (i, slot) in out[..digits].iter_mut().enumerate() {
            *slot = HEX[(len >> (4 * (digits - 1 - i))) & 0xf];
        }
        out[digits] = b'\r';
        out[digits + 1] = b'\n';
        digits + 2
    }

    /// Where the data of a chunk made by [`super::encode_event`] starts.
    pub fn data_start(chunk: &[u8]) -> usize {
        chunk
            .iter()
            .position(|b| *b == b'\n')
            .map_or(0, |at| at + 1)
    }
}

/// Encodes an event without an `id:` line (broker notices that must not move
/// the client's Last-Event-ID).
pub fn encode_notice(event: &str, data: &str) -> Bytes {
    let mut buf = BytesMut::with_capacity(data.len() + 32);
    write_rest(&mut buf, Some(event), data);
    buf.freeze()
}

fn write_rest(buf: &mut BytesMut, event: Option<&str>, data: &str) {
    if let Some(event) = event {
        buf.put_slice(b"event: ");
        buf.put_slice(event.as_bytes());
        buf.put_u8(b'\n');
    }
    for line in split_lines(data) {
        buf.put_slice(b"data: ");
        buf.put_slice(line.as_bytes());
        buf.put_u8(b'\n');
    }
    buf.put_u8(b'\n');
}

/// Splits on `\r\n`, `\n` and lone `\r`, the three line ends of the SSE grammar.
/// An empty payload is one empty line.
pub fn split_lines(data: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(data);
    std::iter::from_fn(move || {
        let text = rest?;
        match memchr::memchr2(b'\r', b'\n', text.as_bytes()) {
            None => {
                rest = None;
                Some(text)
            }
            Some(at) => {
                let skip = if text[at..].starts_with("\r\n") { 2 } else { 1 };
                rest = Some(&text[at + skip..]);
                Some(&text[..at])
            }
        }
    })
}

/// The payload of an encoded event: its `data:` lines joined by `\n`, the
/// way a client's `EventSource` reassembles it.
pub fn data_of(frame: &[u8]) -> String {
    let text = String::from_utf8_lossy(frame);
    let lines: Vec<&str> = split_lines(&text)
        .filter_map(|line| line.strip_prefix("data:"))
        .map(|value| value.strip_prefix(' ').unwrap_or(value))
        .collect();
    lines.join("\n")
}

/// A comment line (`: text`), used for heartbeats. Comments are ignored by
/// clients but keep proxies from timing the connection out. It ends in one
/// line feed, no blank line (see [`HEARTBEAT`]).
pub fn encode_comment(text: &str) -> Bytes {
    let mut buf = BytesMut::with_capacity(text.len() + 3);
    buf.put_slice(b": ");
    for line in split_lines(text) {
        buf.put_slice(line.as_bytes());
    }
    buf.put_u8(b'\n');
    buf.freeze()
}

/// The first bytes of every stream: the reconnection hint and a comment,
/// written at once so proxies and clients see the stream open. No blank line
/// follows: the `retry:` field takes effect as it is read, and a block
/// without data would be a phantom event to some clients (see [`HEARTBEAT`]).
pub fn prelude(retry_ms: u128) -> String {
    let mut out = String::with_capacity(32);
    let _ = write!(out, "retry: {retry_ms}\n: connected\n");
    out
}

/// A spec-compliant parser (WHATWG HTML, "Interpreting an event stream"),
/// used by tests (unit, and the long proptest in tests/fuzz_inputs.rs) to
/// check what a browser would see. Not used by the broker itself.
#[doc(hidden)]
pub mod parse {
    /// An event as an `EventSource` dispatches it.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Parsed {
        pub id: String,
        pub event: String,
        pub data: String,
    }

    /// Parses a complete stream into dispatched events.
    pub fn parse_stream(input: &str) -> Vec<Parsed> {
        let mut events = Vec::new();
        let (mut data, mut event, mut last_id) = (String::new(), String::new(), String::new());
        let mut lines = Vec::new();
        let mut rest = input;
        while let Some(at) = rest.find(['\r', '\n']) {
            lines.push(&rest[..at]);
            let skip = if rest[at..].starts_with("\r\n") { 2 } else { 1 };
            rest = &rest[at + skip..];
        }
        for line in lines {
            if line.is_empty() {
                if !data.is_empty() {
                    data.pop();
                    events.push(Parsed {
                        id: last_id.clone(),
                        event: if event.is_empty() {
                            "message".into()
                        } else {
                            event.clone()
                        },
                        data: std::mem::take(&mut data),
                    });
                }
                data.clear();
                event.clear();
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = match line.find(':') {
                Some(at) => {
                    let value = &line[at + 1..];
                    (&line[..at], value.strip_prefix(' ').unwrap_or(value))
                }
                None => (line, ""),
            };
            match field {
                "data" => {
                    data.push_str(value);
                    data.push('\n');
                }
                "event" => event = value.to_owned(),
                "id" if !value.contains('\0') => last_id = value.to_owned(),
                _ => {}
            }
        }
        events
    }
}

#[cfg(test)]
mod tests {
    use super::parse::parse_stream;
    use super::*;

    /// An event's chunk is its bytes framed as one HTTP/1.1 chunk.
    #[test]
    fn chunk_frames_the_event() {
        let frame = encode_event("k-1", Some("note"), &"z".repeat(300));
        let header = format!("{:x}\r\n", frame.full().len());
        let expected = [header.as_bytes(), frame.full(), b"\r\n"].concat();
        assert_eq!(&frame.chunk()[..], &expected[..]);
        assert_eq!(chunk::data_start(frame.chunk()), header.len());
        assert!(frame.full().ends_with(frame.rest()) && frame.full().starts_with(b"id: k-1\n"));
    }
    use proptest::prelude::*;

    fn text(bytes: &[u8]) -> &str {
        std::str::from_utf8(bytes).expect("frames are UTF-8")
    }

    /// The seed's JSON event passes through as one data line.
    #[test]
    fn json_payload_is_one_data_line() {
        let frame = encode_event("e-1", None, r#"{"Message":"hi","Value":3}"#);
        assert_eq!(
            text(frame.full()),
            "id: e-1\ndata: {\"Message\":\"hi\",\"Value\":3}\n\n"
        );
        assert_eq!(
            text(frame.rest()),
            "data: {\"Message\":\"hi\",\"Value\":3}\n\n"
        );
    }

    /// Every kind of line end starts a new data line.
    #[test]
    fn all_line_ends_split() {
        let frame = encode_event("e-2", Some("greet"), "a\r\nb\nc\rd");
        assert_eq!(
            text(frame.full()),
            "id: e-2\nevent: greet\ndata: a\ndata: b\ndata: c\ndata: d\n\n"
        );
    }

    /// A payload that looks like fields stays data.
    #[test]
    fn injected_fields_stay_data() {
        let payload = "x\n\nid: evil\nevent: evil\n\ndata: y";
        let frame = encode_event("e-3", None, payload);
        let events = parse_stream(text(frame.full()));
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].id, "e-3");
        assert_eq!(events[0].event, "message");
        assert_eq!(events[0].data, "x\n\nid: evil\nevent: evil\n\ndata: y");
    }

    /// Comments never contain a line break.
    #[test]
    fn comments_are_one_line() {
        assert_eq!(text(&encode_comment("a\nb")), ": ab\n");
    }

    proptest! {
        /// Any payload survives a spec-compliant parse unchanged (line ends
        /// normalised to `\n`, as every EventSource does), as exactly one event.
        #[test]
        fn any_payload_round_trips(payload in any::<String>(), event in "[a-z.]{1,10}") {
            let frame = encode_event("c-7", Some(&event), &payload);
            let mut stream = prelude(2000);
            stream.push_str(text(frame.full()));
            stream.push_str(text(&encode_comment("heartbeat")));
            let events = parse_stream(&stream);
            prop_assert_eq!(events.len(), 1);
            prop_assert_eq!(&events[0].id, "c-7");
            prop_assert_eq!(&events[0].event, &event);
            let expected = payload.replace("\r\n", "\n").replace('\r', "\n");
            prop_assert_eq!(&events[0].data, &expected);
            prop_assert_eq!(data_of(frame.full()), expected);
        }

        /// Payloads made of line ends, NUL and field-like text only.
        #[test]
        fn hostile_payload_round_trips(parts in proptest::collection::vec(
            prop_oneof![Just("\r"), Just("\n"), Just("\r\n"), Just("\0"), Just("id: x"),
                        Just("event: y"), Just(":"), Just("data:"), Just("é✓"), Just(" ")], 0..20)) {
            let payload: String = parts.concat();
            let frame = encode_event("c-8", None, &payload);
            let events = parse_stream(text(frame.full()));
            prop_assert_eq!(events.len(), 1);
            prop_assert_eq!(&events[0].id, "c-8");
            prop_assert_eq!(&events[0].event, "message");
            prop_assert_eq!(&events[0].data, &payload.replace("\r\n", "\n").replace('\r', "\n"));
        }
    }
}
