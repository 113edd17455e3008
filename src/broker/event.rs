//! The broker's vocabulary: epochs, event ids, resume points and the published
//! [`Event`] itself (channel names and event types are in `crate::names`).
//!
//! ## Event ids
//! Every event gets the id `<epoch>-<seq>`: `seq` counts the events of one
//! channel from 1, and `epoch` (base 36) names the lifetime of that channel's
//! history. A channel's epoch changes when its history starts afresh (the
//! broker restarted, or the channel was stopped after its history expired), so
//! an id from an older life is recognised instead of being confused with a new
//! event of the same number. (A multi-channel stream's ids are cursors over
//! these ids, written and read by the HTTP layer, which serves the stream.)

use std::{
    any::Any,
    fmt,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use crate::{
    names::{ChannelName, EventType},
    sse::{self, Frame},
};

/// Names one lifetime of a channel's history. New epochs are strictly
/// increasing within a process and start from the wall clock in microseconds,
/// so they also differ from the epochs of an earlier run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Epoch(u64);

impl Epoch {
    pub fn new() -> Self {
        static LAST: AtomicU64 = AtomicU64::new(0);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0);
        let mut last = LAST.load(Ordering::Relaxed);
        loop {
            let next = now.max(last + 1);
            match LAST.compare_exchange_weak(last, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return Self(next),
                Err(seen) => last = seen,
            }
        }
    }
}

impl Epoch {
    /// An epoch chosen elsewhere: in a cluster, Redis picks a channel's
    /// epoch (its clock in microseconds) so that every node agrees.
    pub fn from_raw(raw: u64) -> Self {
        Self(raw)
    }

    pub fn raw(self) -> u64 {
        self.0
    }
}

impl Default for Epoch {
    fn default() -> Self {
        Self::new()
    }
}

/// A position in a channel: the id of an event, or the point before the
/// first event (`seq` 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EventId {
    pub epoch: Epoch,
    pub seq: u64,
}

impl EventId {
    /// Parses `<epoch base 36>-<seq>`; `None` for anything else.
    pub fn parse(text: &str) -> Option<Self> {
        let (epoch, seq) = text.split_once('-')?;
        if epoch.is_empty() || epoch.len() > 13 || seq.is_empty() || seq.len() > 20 {
            return None;
        }
        let epoch = u64::from_str_radix(epoch, 36).ok()?;
        let seq = seq.parse().ok()?;
        Some(Self {
            epoch: Epoch(epoch),
            seq,
        })
    }
}

/// Room for the text of any id: 13 base-36 digits, `-`, 20 decimal digits.
pub const EVENT_ID_MAX_LEN: usize = 34;

impl EventId {
    /// Writes the id's text (`<epoch base 36>-<seq>`) into `buf`, without
    /// the formatting machinery: it is done for every event published.
    pub fn encode(self, buf: &mut [u8; EVENT_ID_MAX_LEN]) -> &str {
        let mut at = 13;
        let mut n = self.epoch.0;
        loop {
            at -= 1;
            buf[at] = b"0123456789abcdefghijklmnopqrstuvwxyz"[(n % 36) as usize];
            n /= 36;
            if n == 0 {
                break;
            }
        }
        buf[13] = b'-';
        let mut seq = itoa::Buffer::new();
        let seq = seq.format(self.seq).as_bytes();
        buf[14..14 + seq.len()].copy_from_slice(seq);
        // ASCII digits and `-` only.
        std::str::from_utf8(&buf[at..14 + seq.len()]).unwrap_or_default()
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.encode(&mut [0; EVENT_ID_MAX_LEN]))
    }
}

/// What a client says it has seen of one channel when it (re)connects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResumeFrom {
    /// A position the broker issued (it may still be too old or from another epoch).
    Id(EventId),
    /// Something that is not an id of ours: the client missed an unknown amount.
    Unknown(String),
    /// The [`Event::name`] of the last event the client got (a Mercure
    /// update's own id): everything after that event, if it is retained.
    Name(String),
    /// Everything retained (Mercure's `earliest`).
    Start,
}

/// A published event as the channel actor keeps it in history and hands it
/// to subscribers: encoded once, shared by reference count.
pub struct Event {
    pub channel: ChannelName,
    pub id: EventId,
    pub event_type: Option<EventType>,
    pub frame: Frame,
    /// When the event was accepted; history expiry is measured from here.
    pub published_at: Instant,
    /// What a protocol attaches to the event (see [`Tags`]); `None` for
    /// our own channels' events. One pointer, so plain events pay 8 bytes.
    pub tags: Option<Arc<Tags>>,
}

/// What a protocol's codec attaches to an event (Mercure: its update's id,
/// topics and privacy).
pub struct Tags {
    /// The id the event's frame carries when that is not [`Event::id`]: a
    /// client resumes by naming it ([`ResumeFrom::Name`]).
    pub name: Option<Arc<str>>,
    /// What subscribers' filters read; opaque to the broker.
    pub value: Arc<dyn Any + Send + Sync>,
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Event")
            .field("channel", &self.channel)
            .field("id", &self.id)
            .field("event_type", &self.event_type)
            .field("name", &self.name())
            .finish_non_exhaustive()
    }
}

impl Event {
    /// The event's own public id, when its protocol gave it one (see [`Tags::name`]).
    pub fn name(&self) -> Option<&str> {
        self.tags.as_ref().and_then(|tags| tags.name.as_deref())
    }

    /// An event of one of our channels: `id: <epoch>-<seq>`, `event:`, `data:`.
    pub fn new(
        channel: ChannelName,
        id: EventId,
        event_type: Option<EventType>,
        data: &str,
    ) -> Arc<Self> {
        let frame = sse::encode_event(
            id.encode(&mut [0; EVENT_ID_MAX_LEN]),
            event_type.as_ref().map(EventType::as_str),
            data,
        );
        Arc::new(Self {
            channel,
            id,
            event_type,
            frame,
            published_at: Instant::now(),
            tags: None,
        })
    }
}

/// The `Instant` of a wall-clock time `ms` (ms since 1970), for events read
/// back from a log; a time in the future counts as now.
pub fn instant_of(ms: u64) -> Instant {
    let now = Instant::now();
    let at = UNIX_EPOCH + Duration::from_millis(ms);
    let age = SystemTime::now().duration_since(at).unwrap_or_default();
    now.checked_sub(age).unwrap_or(now)
}

/// Milliseconds since 1970, as logs stamp events.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An event and its reference count fit in 128 bytes, the largest
    /// allocation glibc serves from its fast per-thread bins; history holds
    /// thousands of them, and every publish allocates one.
    #[test]
    #[cfg(target_pointer_width = "64")]
    fn an_event_stays_small() {
        assert!(std::mem::size_of::<Event>() + 2 * std::mem::size_of::<usize>() <= 128);
    }

    /// Ids print as base-36 epoch, `-`, decimal seq, at both extremes.
    #[test]
    fn event_id_text() {
        let id = |epoch, seq| {
            EventId {
                epoch: Epoch(epoch),
                seq,
            }
            .to_string()
        };
        assert_eq!(id(0, 0), "0-0");
        assert_eq!(id(36, 7), "10-7");
        assert_eq!(id(u64::MAX, u64::MAX), "3w5e11264sgsf-18446744073709551615");
        assert_eq!(id(u64::MAX, u64::MAX).len(), EVENT_ID_MAX_LEN);
    }

    /// Ids print and parse back.
    #[test]
    fn event_id_round_trips() {
        let id = EventId {
            epoch: Epoch::new(),
            seq: 42,
        };
        assert_eq!(EventId::parse(&id.to_string()), Some(id));
        assert_eq!(
            EventId::parse("0-0"),
            Some(EventId {
                epoch: Epoch(0),
                seq: 0
            })
        );
        for bad in [
            "",
            "-",
            "abc",
            "x-",
            "-1",
            "a-b",
            "zzzzzzzzzzzzzz-1",
            "a-1-2",
        ] {
            assert_eq!(EventId::parse(bad), None, "{bad}");
        }
    }

    /// Epochs never repeat within a process.
    #[test]
    fn epochs_increase() {
        let a = Epoch::new();
        let b = Epoch::new();
        assert!(b.0 > a.0);
    }
}
