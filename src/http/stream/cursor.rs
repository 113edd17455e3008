//! How far a client got on each channel of its stream: the [`Cursor`] that
//! writes a stream's event ids, and [`parse_cursor`], which reads one back
//! from `Last-Event-ID`.
//!
//! A single-channel stream uses the event's own id (`<epoch>-<seq>`, see
//! `crate::broker::event`). A multi-channel stream cannot: `EventSource`
//! keeps only the last id, and it must say how far the client got on
//! *every* channel. Its ids are cursors, `a=<epoch>-<seq>,b=<epoch>-<seq>`,
//! whose first entry names the channel of the event itself.

use bytes::{BufMut, Bytes, BytesMut};

use crate::{
    broker::{EventId, ResumeFrom, event::Event, presence::is_presence},
    names::ChannelName,
};

/// How far the client has got on each channel of its stream, in the order
/// it named them. Single-channel streams use the event's own id.
#[derive(Debug)]
pub struct Cursor {
    positions: Vec<(ChannelName, EventId)>,
    multi: bool,
}

/// What a live event becomes on one stream.
#[derive(Debug)]
pub enum Live {
    /// The event's shared frame, as it is (a single-channel stream).
    Shared,
    /// Bytes of this stream's own: the event under a cursor id (a
    /// multi-channel stream); empty when the stream does not follow the
    /// event's channel.
    Own(Bytes),
}

impl Cursor {
    pub fn new(positions: Vec<(ChannelName, EventId)>, multi: bool) -> Self {
        Self { positions, multi }
    }

    pub fn channel(&self, index: usize) -> &ChannelName {
        &self.positions[index].0
    }

    /// The id line value for an event of channel `index`: that channel first.
    pub fn id_for(&self, index: usize) -> String {
        let (channel, id) = &self.positions[index];
        if !self.multi {
            return id.to_string();
        }
        let mut text = format!("{channel}={id}");
        for (other, (name, id)) in self.positions.iter().enumerate() {
            if other != index {
                text.push_str(&format!(",{name}={id}"));
            }
        }
        text
    }

    fn index_of(&self, channel: &ChannelName) -> Option<usize> {
        self.positions.iter().position(|(name, _)| name == channel)
    }

    /// Appends the bytes of an event of channel `index` (a replay).
    pub fn write_event(&mut self, out: &mut BytesMut, index: usize, event: &Event) {
        self.positions[index].1 = event.id;
        if self.multi {
            out.put_slice(b"id: ");
            out.put_slice(self.id_for(index).as_bytes());
            out.put_u8(b'\n');
            out.put_slice(event.frame.rest());
        } else {
            out.put_slice(event.frame.full());
        }
    }

    /// Moves the cursor past a live event and says what the stream sends
    /// for it: on a single-channel stream the shared frame as it is (and a
    /// join or a leave as it is on every stream).
    pub fn live(&mut self, event: &Event) -> Live {
        if is_presence(event) {
            // A join or a leave: no id line, no position moved, on any stream.
            return Live::Shared;
        }
        if !self.multi {
            // Subscribed to this one channel only: no name to compare.
            if let Some((_, id)) = self.positions.first_mut() {
                *id = event.id;
            }
            return Live::Shared;
        }
        let Some(index) = self.index_of(&event.channel) else {
            return Live::Own(Bytes::new());
        };
        let mut out = BytesMut::with_capacity(event.frame.full().len() + 64 * self.positions.len());
        self.write_event(&mut out, index, event);
        Live::Own(out.freeze())
    }
}

/// Splits a Last-Event-ID into per-channel resume points. A bare id applies
/// to a single-channel stream; a cursor `a=<id>,b=<id>` names its channels.
/// Channels the cursor does not mention start live.
pub fn parse_cursor(text: &str, channels: &[ChannelName]) -> Vec<Option<ResumeFrom>> {
    let classify = |id: &str| match EventId::parse(id) {
        Some(id) => ResumeFrom::Id(id),
        None => ResumeFrom::Unknown(id.to_owned()),
    };
    if !text.contains('=') {
        return channels.iter().map(|_| Some(classify(text))).collect();
    }
    let entries: Vec<(&str, &str)> = text
        .split(',')
        .filter_map(|entry| entry.split_once('='))
        .collect();
    channels
        .iter()
        .map(|channel| {
            entries
                .iter()
                .find(|(name, _)| *name == channel.as_str())
                .map(|(_, id)| classify(id))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::event::Epoch;

    /// A cursor assigns each channel its own resume point.
    #[test]
    fn cursor_parsing() {
        let a = ChannelName::parse("a").unwrap();
        let b = ChannelName::parse("b").unwrap();
        let c = ChannelName::parse("c").unwrap();
        let id = EventId {
            epoch: Epoch::from_raw(5),
            seq: 3,
        };
        let cursor = format!("b={id},a=junk");
        let points = parse_cursor(&cursor, &[a.clone(), b.clone(), c]);
        assert_eq!(points[0], Some(ResumeFrom::Unknown("junk".into())));
        assert_eq!(points[1], Some(ResumeFrom::Id(id)));
        assert_eq!(points[2], None);
        assert_eq!(
            parse_cursor(&id.to_string(), &[a]),
            vec![Some(ResumeFrom::Id(id))]
        );
    }
}
