//! A Mercure update: what a publisher asks for ([`UpdateDraft`], also the
//! JSON the hub's channel keeps in a log outside memory), the same update
//! prepared for the hub's codec ([`PreparedUpdate`], its parts shared rather
//! than copied), what subscribers' filters read of it ([`UpdateTags`]), and
//! its `text/event-stream` encoding, made once per update.
//!
//! The encoding follows the reference hub: `event:` (the `type`), `retry:`,
//! `id:`, then one `data:` line per line of the payload (split on `\r\n`,
//! `\n` and `\r`, see [`crate::sse::split_lines`]).

use std::sync::Arc;

use bytes::BufMut;
use serde::{Deserialize, Serialize};

use crate::{
    auth::AccessPolicy,
    broker::{
        event::EVENT_ID_MAX_LEN,
        log::{Origin, Record},
    },
    names::ChannelName,
    sse::{self, Frame},
};

/// The `Last-Event-ID` asking for the whole history.
pub const EARLIEST: &str = "earliest";

/// What a publisher asks the hub to send (validated by the publish handler),
/// with its id filled in: the record the hub's channel logs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UpdateDraft {
    /// One or more topics; the first is the canonical one.
    pub topics: Vec<String>,
    pub data: String,
    pub private: bool,
    /// The publisher's id, or the one the hub made.
    pub id: Option<String>,
    #[serde(rename = "type")]
    pub event_type: Option<String>,
    pub retry: Option<u64>,
    /// For a channel event's copy (`mercure.channel_updates`): the channel,
    /// whose own access rules decide who receives the copy. Never set by a
    /// publisher.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
}

/// What subscribers' filters read of an update (its event's tags).
#[derive(Debug)]
pub struct UpdateTags {
    pub topics: Vec<String>,
    pub private: bool,
    /// The channel a copy comes from (see [`UpdateDraft::channel`]).
    pub channel: Option<ChannelName>,
}

/// An update as the hub's codec takes it from a publisher in this process:
/// the id and tags are shared with the event made from it, and the payload
/// is dropped once the event's frame is encoded.
#[derive(Debug)]
pub struct PreparedUpdate {
    pub id: Arc<str>,
    pub tags: Arc<UpdateTags>,
    pub event_type: Option<String>,
    pub retry: Option<u64>,
    pub data: String,
}

impl From<UpdateDraft> for PreparedUpdate {
    /// A draft without an id gets a fresh one.
    fn from(draft: UpdateDraft) -> Self {
        let channel = copied_channel(draft.channel.as_deref(), draft.id.as_deref());
        Self {
            id: match draft.id {
                Some(id) => id.into(),
                None => new_id().into(),
            },
            tags: Arc::new(UpdateTags {
                channel,
                topics: draft.topics,
                private: draft.private,
            }),
            event_type: draft.event_type,
            retry: draft.retry,
            data: draft.data,
        }
    }
}

impl PreparedUpdate {
    /// The JSON a log keeps: an [`UpdateDraft`].
    pub fn to_json(&self) -> String {
        #[derive(Serialize)]
        struct Logged<'a> {
            topics: &'a [String],
            data: &'a str,
            private: bool,
            id: Option<&'a str>,
            #[serde(rename = "type")]
            event_type: Option<&'a str>,
            retry: Option<u64>,
            #[serde(skip_serializing_if = "Option::is_none")]
            channel: Option<&'a str>,
        }
        let logged = Logged {
            topics: &self.tags.topics,
            data: &self.data,
            private: self.tags.private,
            id: Some(&self.id),
            event_type: self.event_type.as_deref(),
            retry: self.retry,
            channel: self.tags.channel.as_ref().map(ChannelName::as_str),
        };
        // Strings, numbers and booleans always serialise.
        serde_json::to_string(&logged).unwrap_or_default()
    }
}

/// A fresh, unguessable update id.
pub fn new_id() -> String {
    urn(uuid::Uuid::new_v4())
}

/// How the ids of channel events' copies start; reserved: a publisher's
/// update may not take such an id.
pub const COPY_ID_PREFIX: &str = "urn:sse-broker:";

/// The id of the update a channel event becomes (`mercure.channel_updates`):
/// `urn:sse-broker:<channel>/<event id>`, the event's own name (a channel
/// name has no `/`), so it is unique as event ids are, says which event it
/// is, and is the same when the copy is made again from its durable
/// original after a restart.
pub fn copy_id(channel: &str, event_id: &str) -> String {
    let mut id = String::with_capacity(COPY_ID_PREFIX.len() + channel.len() + 1 + event_id.len());
    id.push_str(COPY_ID_PREFIX);
    id.push_str(channel);
    id.push('/');
    id.push_str(event_id);
    id
}

/// The update a channel event becomes: on the channel's name, with its type
/// and data, private when the channel is protected, and an id made from the
/// channel and the event's id ([`copy_id`]), so it is the same when made
/// again from the original.
pub fn copy_of(origin: &Origin, record: Record, access: &AccessPolicy) -> PreparedUpdate {
    let mut buf = [0; EVENT_ID_MAX_LEN];
    let event_id = origin.id.encode(&mut buf);
    PreparedUpdate {
        id: copy_id(origin.channel.as_str(), event_id).into(),
        tags: Arc::new(UpdateTags {
            topics: vec![origin.channel.to_string()],
            private: access.protects(&origin.channel),
            channel: Some(origin.channel.clone()),
        }),
        event_type: record.event_type.map(|t| t.as_str().to_owned()),
        retry: None,
        data: record.data,
    }
}

/// The channel a logged copy comes from: its `channel` field, or for a copy
/// logged before that field existed, the channel its [`copy_id`] names. An
/// update whose id merely looks like a copy's is then held to that
/// channel's rules: stricter, never looser.
fn copied_channel(channel: Option<&str>, id: Option<&str>) -> Option<ChannelName> {
    let from_id = || {
        id?.strip_prefix(COPY_ID_PREFIX)?
            .split_once('/')
            .map(|(channel, _)| channel)
    };
    ChannelName::parse(channel.or_else(from_id)?).ok()
}

/// `urn:uuid:` and the UUID, lowercase and hyphenated.
fn urn(uuid: uuid::Uuid) -> String {
    const PREFIX: &str = "urn:uuid:";
    let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
    let text = uuid.hyphenated().encode_lower(&mut buf);
    let mut id = String::with_capacity(PREFIX.len() + text.len());
    id.push_str(PREFIX);
    id.push_str(text);
    id
}

/// The SSE bytes of one update. `id` and `event_type` are free of CR, LF
/// and NUL (checked by the publish handler, or made by the hub).
pub fn encode(id: &str, event_type: Option<&str>, retry: Option<u64>, data: &str) -> Frame {
    sse::framed(data.len() + id.len() + 48, |buf| {
        if let Some(event_type) = event_type.filter(|t| !t.is_empty()) {
            buf.put_slice(b"event: ");
            buf.put_slice(event_type.as_bytes());
            buf.put_u8(b'\n');
        }
        if let Some(retry) = retry.filter(|r| *r > 0) {
            buf.put_slice(b"retry: ");
            buf.put_slice(itoa::Buffer::new().format(retry).as_bytes());
            buf.put_u8(b'\n');
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
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fields come in the reference hub's order; lines split on every line end.
    #[test]
    fn encoding_matches_the_reference() {
        let frame = encode("urn:x", Some("note"), Some(3000), "a\r\nb\nc\rd");
        assert_eq!(
            std::str::from_utf8(frame.full()).unwrap(),
            "event: note\nretry: 3000\nid: urn:x\ndata: a\ndata: b\ndata: c\ndata: d\n\n"
        );
        let empty = encode("urn:y", None, None, "");
        let chunk = format!(
            "{:x}\r\n{}\r\n",
            empty.full().len(),
            "id: urn:y\ndata: \n\n"
        );
        assert_eq!(&empty.chunk()[..], chunk.as_bytes());
        assert_eq!(
            std::str::from_utf8(empty.full()).unwrap(),
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
