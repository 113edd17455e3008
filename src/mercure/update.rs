//! A Mercure update: its topics, privacy, id, and its `text/event-stream`
//! encoding, made once when the hub accepts it and shared by every
//! subscriber that receives it.
//!
//! The encoding follows the reference hub: `event:` (the `type`), `retry:`,
//! `id:`, then one `data:` line per line of the payload (split on `\r\n`,
//! `\n` and `\r`, see [`crate::sse::split_lines`]).

use std::{sync::Arc, time::Instant};

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use crate::sse;

/// The `Last-Event-ID` asking for the whole history.
pub const EARLIEST: &str = "earliest";

/// What a publisher asks the hub to send (validated by the publish handler).
/// Serialized as JSON, it is also what the hub's shared log carries.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UpdateDraft {
    /// One or more topics; the first is the canonical one.
    pub topics: Vec<String>,
    pub data: String,
    pub private: bool,
    /// The publisher's id; the hub makes one when `None`.
    pub id: Option<String>,
    #[serde(rename = "type")]
    pub event_type: Option<String>,
    pub retry: Option<u64>,
}

/// An accepted update as the hub keeps it in history and sends it.
#[derive(Debug)]
pub struct Update {
    pub id: String,
    pub topics: Vec<String>,
    pub private: bool,
    /// The whole SSE event, encoded once.
    pub frame: Bytes,
    /// When the hub accepted it; history expiry is measured from here.
    pub published_at: Instant,
}

impl Update {
    /// Gives `draft` its id (a fresh `urn:uuid:` unless the publisher chose
    /// one) and encodes it.
    pub fn accept(draft: UpdateDraft) -> Arc<Self> {
        Self::accept_at(draft, Instant::now())
    }

    /// As [`accept`](Self::accept), for an update accepted at `published_at`
    /// (one read back from the hub's shared log).
    pub fn accept_at(draft: UpdateDraft, published_at: Instant) -> Arc<Self> {
        let id = draft.id.unwrap_or_else(new_id);
        let frame = encode(&id, draft.event_type.as_deref(), draft.retry, &draft.data);
        Arc::new(Self {
            id,
            topics: draft.topics,
            private: draft.private,
            frame,
            published_at,
        })
    }
}

/// A fresh, unguessable update id.
pub fn new_id() -> String {
    format!("urn:uuid:{}", uuid::Uuid::new_v4())
}

/// The SSE bytes of one update. `id` and `event_type` are free of CR, LF
/// and NUL (checked by the publish handler, or made by the hub).
pub fn encode(id: &str, event_type: Option<&str>, retry: Option<u64>, data: &str) -> Bytes {
    let mut buf = BytesMut::with_capacity(data.len() + id.len() + 48);
    if let Some(event_type) = event_type.filter(|t| !t.is_empty()) {
        buf.put_slice(b"event: ");
        buf.put_slice(event_type.as_bytes());
        buf.put_u8(b'\n');
    }
    if let Some(retry) = retry.filter(|r| *r > 0) {
        buf.put_slice(format!("retry: {retry}\n").as_bytes());
    }
    buf.put_slice(b"id: ");
    buf.put_slice(id.as_bytes());
    buf.put_u8(b'\n');
    for line in sse::split_lines(data) {
        buf.put_slice(b"data: ");
        buf.put_slice(line.as_bytes());
        buf.put_u8(b'\n');
    }
    buf.put_u8(b'\n');
    buf.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fields come in the reference hub's order; lines split on every line end.
    #[test]
    fn encoding_matches_the_reference() {
        let frame = encode("urn:x", Some("note"), Some(3000), "a\r\nb\nc\rd");
        assert_eq!(
            std::str::from_utf8(&frame).unwrap(),
            "event: note\nretry: 3000\nid: urn:x\ndata: a\ndata: b\ndata: c\ndata: d\n\n"
        );
        let empty = encode("urn:y", None, None, "");
        assert_eq!(
            std::str::from_utf8(&empty).unwrap(),
            "id: urn:y\ndata: \n\n"
        );
    }

    /// Generated ids are distinct `urn:uuid:` IRIs.
    #[test]
    fn generated_ids() {
        let (a, b) = (new_id(), new_id());
        assert!(a.starts_with("urn:uuid:") && a.len() == 45, "{a}");
        assert_ne!(a, b);
    }
}
