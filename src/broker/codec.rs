//! `Codec`: how a channel turns what its log keeps ([`Record`]) into the
//! [`Event`] its subscribers get, frame encoded once. Our channels use
//! [`PlainCodec`]; a protocol adapter gives its internal channel a codec of
//! its own (the Mercure hub: `crate::mercure::hub::HubCodec`), and the
//! registry hands each channel actor the codec of its name.

use std::{sync::Arc, time::Instant};

use super::{
    event::{EVENT_ID_MAX_LEN, Epoch, Event, EventId, instant_of},
    log::{LogEntry, Record},
};
use crate::{names::ChannelName, sse};

/// Makes events out of records. Called once per event (on publish, and when
/// a log's events are read back), never per subscriber. A record with an
/// [`origin`](Record::origin) and nothing [`prepared`](Record::prepared) is
/// a bridged copy read back from a durable store, which keeps only the
/// reference: it holds the original's type and data, and the codec of a
/// channel that takes copies makes the same copy again from them (see
/// `bridge`).
pub trait Codec: Send + Sync {
    fn event(
        &self,
        channel: &ChannelName,
        id: EventId,
        record: &Record,
        published_at: Instant,
    ) -> Arc<Event>;

    /// The event of an entry a log gave back (a durable store's load, a
    /// shared log's read or bus message), made as on publish.
    fn read_back(&self, channel: &ChannelName, epoch: Epoch, entry: &LogEntry) -> Arc<Event> {
        let id = EventId {
            epoch,
            seq: entry.seq,
        };
        self.event(channel, id, &entry.record, instant_of(entry.published_ms))
    }

    /// What a log outside memory (the durable store, the shared log) keeps
    /// of `record`: a codec whose publishers hand it a
    /// [`prepared`](Record::prepared) record without `data` fills `data`
    /// here. Memory never needs it, so an in-memory channel never pays for it.
    fn logged(&self, record: Record) -> Record {
        record
    }
}

/// Our channels' events: `id: <epoch>-<seq>`, an optional `event:` line and
/// one `data:` line per payload line (see `crate::sse`).
#[derive(Debug, Default)]
pub struct PlainCodec;

impl Codec for PlainCodec {
    fn event(
        &self,
        channel: &ChannelName,
        id: EventId,
        record: &Record,
        published_at: Instant,
    ) -> Arc<Event> {
        let frame = sse::encode_event(
            id.encode(&mut [0; EVENT_ID_MAX_LEN]),
            record.event_type.as_ref().map(|t| t.as_str()),
            &record.data,
        );
        Arc::new(Event {
            channel: channel.clone(),
            id,
            event_type: record.event_type.clone(),
            frame,
            published_at,
            tags: None,
        })
    }
}
