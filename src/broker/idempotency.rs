//! Idempotent publishing: the key a publisher gives a publish
//! ([`IdempotencyKey`], the `Idempotency-Key` header), the digest of what
//! it published ([`RequestDigest`]), and the book of keys an owned log
//! remembers ([`IdempotencyBook`]).
//!
//! A key is remembered per channel for `publish.idempotency_window` with
//! the id of the event its first publish stored. A publish that brings a
//! remembered key is a *repeat*: it stores and delivers nothing and is
//! answered the first one's id. The same key with another body (another
//! digest) is refused. The check belongs with the log, atomically with the
//! append, so every backend absorbs a retry the same way:
//! - memory and durable history: the channel actor asks the broker-wide
//!   [`IdempotencyBook`] before it numbers the event (a channel's keys are
//!   only ever touched by its own actor, so check and record cannot race);
//!   a durable store also writes the key in the event's own commit and
//!   gives the unexpired ones back at start;
//! - cluster mode: the shared log's publish script checks and records the
//!   key in Redis (`crate::cluster`), and answers [`Logged`] per record.

use std::{
    collections::{HashMap, VecDeque},
    sync::Mutex,
    time::{Duration, Instant},
};

use sha2::{Digest as _, Sha256};

use super::event::EventId;
use crate::names::{ChannelName, EventType};

/// Longest key accepted, in bytes: room for a UUID or a job name and a
/// counter; it is kept (in memory, on disk or in Redis) for the window.
pub const MAX_KEY_LEN: usize = 128;

/// A publisher's name for one publish, the same on every retry of it:
/// 1 to [`MAX_KEY_LEN`] printable ASCII characters (space to `~`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(Box<str>);

impl IdempotencyKey {
    /// Checks a key as a client sent it.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.is_empty() || text.len() > MAX_KEY_LEN {
            return Err(format!(
                "an idempotency key is 1 to {MAX_KEY_LEN} characters long"
            ));
        }
        if !text.bytes().all(|b| (b' '..=b'~').contains(&b)) {
            return Err("an idempotency key is printable ASCII (space to ~)".into());
        }
        Ok(Self(text.into()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What a publish asked for, reduced to 128 bits of SHA-256 over the
/// channel, the event type and the data: a reused key with another body
/// has another digest. (Half of SHA-256 keeps the stored key small; an
/// accidental match of two different bodies stays out of reach.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestDigest([u8; 16]);

impl RequestDigest {
    /// The digest of publishing `data` with `event_type` to `channel` (each
    /// part length-prefixed, so no two different requests hash the same
    /// bytes).
    pub fn of(channel: &ChannelName, event_type: Option<&EventType>, data: &str) -> Self {
        let mut hash = Sha256::new();
        let event_type = event_type.map_or("", EventType::as_str);
        for part in [channel.as_str(), event_type, data] {
            hash.update((part.len() as u64).to_le_bytes());
            hash.update(part.as_bytes());
        }
        let full = hash.finalize();
        let mut digest = [0; 16];
        digest.copy_from_slice(&full[..16]);
        Self(digest)
    }

    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// Lower-case hex, as the cluster's script stores it.
    pub fn to_hex(self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// A publish's key and the digest of its request: what travels with it
/// down to the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Idempotency {
    pub key: IdempotencyKey,
    pub digest: RequestDigest,
}

impl Idempotency {
    /// The key of publishing `data` with `event_type` to `channel`.
    pub fn new(
        key: IdempotencyKey,
        channel: &ChannelName,
        event_type: Option<&EventType>,
        data: &str,
    ) -> Self {
        Self {
            digest: RequestDigest::of(channel, event_type, data),
            key,
        }
    }
}

/// What a log made of one publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logged {
    /// Stored as a new event with this id.
    New(EventId),
    /// Its key was remembered with the same digest: nothing stored, and
    /// this is the id the first publish got.
    Repeat(EventId),
    /// Its key was remembered with another digest: refused.
    KeyReused,
}

/// What the book knows of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Known {
    /// Not remembered (never seen, or its window ended).
    Unknown,
    /// Remembered with the same digest: the first publish's id.
    Same(EventId),
    /// Remembered with another digest.
    Other,
}

/// A remembered key as a durable store keeps it and gives it back at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RememberedKey {
    pub channel: ChannelName,
    pub idempotency: Idempotency,
    pub id: EventId,
    /// When its first publish was stored, in ms since 1970 (its window
    /// runs from here).
    pub published_ms: u64,
}

/// The idempotency keys an owned log remembers (memory and durable
/// history; in cluster mode Redis does), for the whole broker: at most
/// `max_keys` (`publish.idempotency_max_keys`), each for `window`
/// (`publish.idempotency_window`).
///
/// Every entry lives for the same window, so insertion order is expiry
/// order: a queue in that order finds the expired and, when the book is
/// full, the oldest (forgotten before its window ends: the bound wins over
/// the guarantee, which then covers the newest `max_keys` keys). An entry
/// costs its channel and key twice (map and queue), ~150 bytes plus twice
/// the key's length.
pub struct IdempotencyBook {
    window: Duration,
    max_keys: usize,
    book: Mutex<Book>,
}

#[derive(Default)]
struct Book {
    entries: HashMap<(ChannelName, IdempotencyKey), Entry>,
    /// Every entry's key in the order it was remembered, with that time; a
    /// key forgotten or remembered again since leaves a stale item here,
    /// skipped when it comes up.
    order: VecDeque<(ChannelName, IdempotencyKey, Instant)>,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    digest: RequestDigest,
    id: EventId,
    at: Instant,
}

impl IdempotencyBook {
    pub fn new(window: Duration, max_keys: usize) -> Self {
        Self {
            window,
            max_keys: max_keys.max(1),
            book: Mutex::default(),
        }
    }

    /// How long a key is remembered.
    pub fn window(&self) -> Duration {
        self.window
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Book> {
        // A panic while holding the lock leaves a consistent map (every
        // method changes it in single steps): go on with it.
        self.book
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// What the book knows of `idempotency`'s key on `channel` at `now`.
    pub fn check(&self, channel: &ChannelName, idempotency: &Idempotency, now: Instant) -> Known {
        let book = self.lock();
        let Some(entry) = book
            .entries
            .get(&(channel.clone(), idempotency.key.clone()))
        else {
            return Known::Unknown;
        };
        if now.saturating_duration_since(entry.at) >= self.window {
            Known::Unknown
        } else if entry.digest == idempotency.digest {
            Known::Same(entry.id)
        } else {
            Known::Other
        }
    }

    /// Remembers that `idempotency`'s key stored the event `id` at `at`.
    pub fn remember(
        &self,
        channel: &ChannelName,
        idempotency: &Idempotency,
        id: EventId,
        at: Instant,
    ) {
        let mut book = self.lock();
        book.expire(at, self.window);
        while book.entries.len() >= self.max_keys {
            if !book.evict_oldest() {
                break;
            }
        }
        let key = (channel.clone(), idempotency.key.clone());
        book.order.push_back((key.0.clone(), key.1.clone(), at));
        book.entries.insert(
            key,
            Entry {
                digest: idempotency.digest,
                id,
                at,
            },
        );
    }

    /// Forgets a key whose event was not stored after all (a failed commit).
    pub fn forget(&self, channel: &ChannelName, key: &IdempotencyKey) {
        self.lock().entries.remove(&(channel.clone(), key.clone()));
    }

    /// Takes back keys a durable store kept, oldest first; those whose
    /// window ended are left out.
    pub fn restore(&self, keys: Vec<RememberedKey>) {
        let now = Instant::now();
        let now_ms = super::event::now_ms();
        for key in keys {
            let age = Duration::from_millis(now_ms.saturating_sub(key.published_ms));
            if age >= self.window {
                continue;
            }
            let at = now.checked_sub(age).unwrap_or(now);
            self.remember(&key.channel, &key.idempotency, key.id, at);
        }
    }

    /// Keys remembered now (expired ones included until they are swept).
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Book {
    /// Drops the entries whose window ended by `now`.
    fn expire(&mut self, now: Instant, window: Duration) {
        while let Some((_, _, at)) = self.order.front() {
            if now.saturating_duration_since(*at) < window {
                break;
            }
            self.pop_front();
        }
    }

    /// Drops the oldest live entry; false when there is none.
    fn evict_oldest(&mut self) -> bool {
        while !self.order.is_empty() {
            if self.pop_front() {
                return true;
            }
        }
        false
    }

    /// Pops the queue's front, and its entry when the entry is the one the
    /// item was queued for; returns whether an entry went.
    fn pop_front(&mut self) -> bool {
        let Some((channel, key, at)) = self.order.pop_front() else {
            return false;
        };
        let map_key = (channel, key);
        if self.entries.get(&map_key).is_some_and(|e| e.at == at) {
            self.entries.remove(&map_key);
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::event::Epoch;

    fn channel() -> ChannelName {
        ChannelName::parse("orders").unwrap()
    }

    fn idem(key: &str, data: &str) -> Idempotency {
        Idempotency::new(IdempotencyKey::parse(key).unwrap(), &channel(), None, data)
    }

    fn id(seq: u64) -> EventId {
        EventId {
            epoch: Epoch::from_raw(1),
            seq,
        }
    }

    /// Keys are 1–128 printable ASCII characters.
    #[test]
    fn keys_are_short_printable_ascii() {
        assert!(IdempotencyKey::parse("job-42 retry").is_ok());
        assert!(IdempotencyKey::parse(&"k".repeat(MAX_KEY_LEN)).is_ok());
        for bad in ["", "tab\there", "é", "new\nline"] {
            assert!(IdempotencyKey::parse(bad).is_err(), "{bad:?}");
        }
        assert!(IdempotencyKey::parse(&"k".repeat(MAX_KEY_LEN + 1)).is_err());
    }

    /// The digest tells bodies, event types and channels apart.
    #[test]
    fn digests_differ_with_the_request() {
        let typed = EventType::parse("t").unwrap();
        let other = ChannelName::parse("other").unwrap();
        let a = RequestDigest::of(&channel(), None, "x");
        assert_eq!(a, RequestDigest::of(&channel(), None, "x"));
        assert_ne!(a, RequestDigest::of(&channel(), None, "y"));
        assert_ne!(a, RequestDigest::of(&channel(), Some(&typed), "x"));
        assert_ne!(a, RequestDigest::of(&other, None, "x"));
        assert_eq!(a.to_hex().len(), 32);
    }

    /// A remembered key answers its id for the same body, refuses another, and is forgotten after the window.
    #[test]
    fn remembers_for_the_window() {
        let book = IdempotencyBook::new(Duration::from_secs(60), 10);
        let start = Instant::now();
        let first = idem("k", "x");
        assert_eq!(book.check(&channel(), &first, start), Known::Unknown);
        book.remember(&channel(), &first, id(1), start);
        assert_eq!(book.check(&channel(), &first, start), Known::Same(id(1)));
        assert_eq!(book.check(&channel(), &idem("k", "y"), start), Known::Other);
        let later = start + Duration::from_secs(60);
        assert_eq!(book.check(&channel(), &first, later), Known::Unknown);
        book.remember(&channel(), &idem("other", "x"), id(2), later);
        assert_eq!(book.len(), 1, "the expired key went");
    }

    /// A full book forgets its oldest key first.
    #[test]
    fn a_full_book_forgets_the_oldest() {
        let book = IdempotencyBook::new(Duration::from_secs(60), 2);
        let now = Instant::now();
        for (n, key) in ["a", "b", "c"].into_iter().enumerate() {
            book.remember(&channel(), &idem(key, "x"), id(n as u64 + 1), now);
        }
        assert_eq!(book.len(), 2);
        assert_eq!(book.check(&channel(), &idem("a", "x"), now), Known::Unknown);
        assert_eq!(
            book.check(&channel(), &idem("c", "x"), now),
            Known::Same(id(3))
        );
        book.forget(&channel(), &IdempotencyKey::parse("c").unwrap());
        assert_eq!(book.check(&channel(), &idem("c", "x"), now), Known::Unknown);
    }
}
