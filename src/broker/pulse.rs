//! The pulse book: which clients (browser tabs) reported liveness, when, and
//! whether they count as alive. Owned by the registry; channel actors count
//! pulses per channel on top of it ([`ChannelPulses`]).
//!
//! Memory stays bounded: at most `keep_timestamps` per client, clients silent
//! for `retention` are forgotten, and at most `max_clients` are remembered.

use std::{
    collections::{HashMap, VecDeque},
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use serde::Serialize;

use crate::config::PulseSettings;

/// Most distinct clients whose pulses one channel counts separately; pulses
/// of further clients still count in the channel's total. Bounds memory per
/// channel.
const MAX_CHANNEL_CLIENTS: usize = 1024;

/// Longest client id accepted.
pub const MAX_CLIENT_ID_LEN: usize = 128;

/// Checks a client id: 1 to 128 printable characters, no control characters.
pub fn validate_client_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > MAX_CLIENT_ID_LEN {
        return Err(format!("client id must be 1 to {MAX_CLIENT_ID_LEN} bytes"));
    }
    if id.chars().any(char::is_control) {
        return Err("client id contains a control character".into());
    }
    Ok(())
}

/// One channel's pulses per client id (at most `MAX_CHANNEL_CLIENTS`
/// clients), kept by its actor for `GET /channels/{channel}`.
#[derive(Debug, Default)]
pub struct ChannelPulses(HashMap<Arc<str>, u64>);

impl ChannelPulses {
    /// Counts one pulse of `client_id`.
    pub fn count(&mut self, client_id: Arc<str>) {
        if let Some(count) = self.0.get_mut(&client_id) {
            *count += 1;
        } else if self.0.len() < MAX_CHANNEL_CLIENTS {
            self.0.insert(client_id, 1);
        }
    }

    /// The counts per client, most pulses first (ties by client id).
    pub fn by_client(&self) -> Vec<(Arc<str>, u64)> {
        let mut pulses: Vec<_> = self.0.iter().map(|(k, v)| (Arc::clone(k), *v)).collect();
        pulses.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        pulses
    }
}

#[derive(Debug)]
struct ClientPulses {
    /// Newest first.
    timestamps: VecDeque<SystemTime>,
    count: u64,
    last_seen: Instant,
}

/// One client in `GET /pulses`, in the seed's shape plus summary fields.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PulseRecord {
    pub tab_id: String,
    /// RFC 3339, newest first.
    pub timestamps: Vec<String>,
    pub count: u64,
    pub last_seen: String,
    pub alive: bool,
}

#[derive(Debug)]
pub struct PulseBook {
    clients: HashMap<Arc<str>, ClientPulses>,
    settings: PulseSettings,
}

impl PulseBook {
    pub fn new(settings: PulseSettings) -> Self {
        Self {
            clients: HashMap::new(),
            settings,
        }
    }

    /// Records a pulse, making room by forgetting the longest-silent client.
    pub fn record(&mut self, client: &Arc<str>, now: Instant, wall: SystemTime) {
        if !self.clients.contains_key(client) && self.clients.len() >= self.settings.max_clients {
            self.forget_silent(now);
            if self.clients.len() >= self.settings.max_clients {
                let oldest = self
                    .clients
                    .iter()
                    .min_by_key(|(_, c)| c.last_seen)
                    .map(|(k, _)| Arc::clone(k));
                if let Some(oldest) = oldest {
                    self.clients.remove(&oldest);
                }
            }
        }
        let keep = self.settings.keep_timestamps.max(1);
        let entry = self
            .clients
            .entry(Arc::clone(client))
            .or_insert_with(|| ClientPulses {
                timestamps: VecDeque::with_capacity(keep.min(8)),
                count: 0,
                last_seen: now,
            });
        entry.count += 1;
        entry.last_seen = now;
        entry.timestamps.push_front(wall);
        entry.timestamps.truncate(keep);
    }

    /// Forgets clients silent for longer than the retention.
    pub fn forget_silent(&mut self, now: Instant) {
        let retention = self.settings.retention;
        self.clients
            .retain(|_, c| now.saturating_duration_since(c.last_seen) < retention);
    }

    /// Every remembered client id, most recently seen first.
    pub fn client_ids(&self) -> Vec<Arc<str>> {
        let mut ids: Vec<_> = self.clients.iter().collect();
        ids.sort_by_key(|(_, client)| std::cmp::Reverse(client.last_seen));
        ids.into_iter().map(|(k, _)| Arc::clone(k)).collect()
    }

    /// The listing of the `limit` most recently seen clients, newest first.
    pub fn records(&self, now: Instant, limit: usize) -> Vec<PulseRecord> {
        let stale_after: Duration = self.settings.stale_after;
        self.client_ids()
            .into_iter()
            .take(limit)
            .filter_map(|id| {
                let c = self.clients.get(&id)?;
                Some(PulseRecord {
                    tab_id: id.to_string(),
                    timestamps: c.timestamps.iter().map(|t| rfc3339(*t)).collect(),
                    count: c.count,
                    last_seen: c
                        .timestamps
                        .front()
                        .map(|t| rfc3339(*t))
                        .unwrap_or_default(),
                    alive: now.saturating_duration_since(c.last_seen) < stale_after,
                })
            })
            .collect()
    }
}

/// A wall-clock time as `GET /pulses` shows it.
pub fn rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_millis(time).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn book(max_clients: usize) -> PulseBook {
        PulseBook::new(PulseSettings {
            stale_after: Duration::from_secs(30),
            keep_timestamps: 3,
            retention: Duration::from_secs(600),
            max_clients,
        })
    }

    /// Timestamps are newest first and capped; alive follows stale_after.
    #[test]
    fn records_newest_first_and_bounded() {
        let mut book = book(10);
        let tab: Arc<str> = "tab-1".into();
        let start = Instant::now();
        let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        for n in 0..5 {
            book.record(&tab, start, wall + Duration::from_secs(n));
        }
        let records = book.records(start, usize::MAX);
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].count, 5);
        assert_eq!(records[0].timestamps.len(), 3);
        assert_eq!(records[0].timestamps[0], "2023-11-14T22:13:24.000Z");
        assert_eq!(records[0].last_seen, records[0].timestamps[0]);
        assert!(records[0].alive);
        assert!(!book.records(start + Duration::from_secs(31), 1)[0].alive);
    }

    /// The least recently seen client makes room for a new one.
    #[test]
    fn forgets_oldest_when_full() {
        let mut book = book(2);
        let now = Instant::now();
        let wall = SystemTime::now();
        for (n, id) in ["a", "b", "c"].iter().enumerate() {
            book.record(&Arc::from(*id), now + Duration::from_secs(n as u64), wall);
        }
        let ids: Vec<_> = book.client_ids().iter().map(|s| s.to_string()).collect();
        assert_eq!(ids, vec!["c", "b"]);
    }

    /// Silent clients are forgotten after the retention.
    #[test]
    fn forgets_silent_clients() {
        let mut book = book(10);
        let now = Instant::now();
        book.record(&Arc::from("a"), now, SystemTime::now());
        book.forget_silent(now + Duration::from_secs(601));
        assert!(book.client_ids().is_empty());
    }

    /// Client ids are bounded and free of control characters.
    #[test]
    fn client_id_rules() {
        assert!(validate_client_id("tab-123").is_ok());
        assert!(validate_client_id("").is_err());
        assert!(validate_client_id("a\nb").is_err());
        assert!(validate_client_id(&"x".repeat(129)).is_err());
    }
}
