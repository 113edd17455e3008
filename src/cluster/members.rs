//! Channels' members across the cluster: which users each node has on a
//! channel (the broker's presence, `crate::broker::presence`), kept in
//! Redis per node and expiring, like the subscriber counts of
//! [`super::presence`] (named apart: that module counts connections and
//! keeps the pulse book; this one lists users).
//!
//! Each channel actor tells this node's [`MemberBook`] every change of its
//! listed users (the cluster's `PresenceShare`, in `super`, called without
//! waiting: a mutex and a map). A task ([`run`]) writes what changed: per channel the hash
//! `<prefix>{<channel>}:members:<node>` (user → `{"connections", "info"}`),
//! replaced whole, valid for three `cluster.presence_interval`s and
//! rewritten every interval, so a node that dies stops being listed after
//! that. It publishes each join and leave on the channel's bus (a JSON
//! object, told from the bus's event messages by its first byte), so the
//! nodes that have subscribers on the channel announce it to their
//! watchers (`Broker::announce`); a node ignores its own.
//!
//! A listing (`GET /channels/{channel}/presence`) reads the other live
//! nodes' hashes and counts ([`remote`]). Joins and
//! leaves are per node: a user connected through two nodes is announced
//! by the first, and a node that has the user itself announces neither
//! the other's join nor its leave. Announcements wait in a bounded queue
//! ([`MAX_PENDING_ANNOUNCEMENTS`]); the entries in Redis never depend on
//! it.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::{Arc, Mutex},
};

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio::sync::Notify;

use super::{Cluster, ClusterError};
use crate::{
    broker::{
        Broker,
        presence::{ChannelPresence, Member, MemberChange, PresenceEvent},
    },
    names::ChannelName,
};

/// Joins and leaves that may wait for the bus while Redis is slow; past it
/// the oldest are dropped (with a log line): a watcher misses an
/// announcement, the listing stays right.
pub const MAX_PENDING_ANNOUNCEMENTS: usize = 4096;

/// One user's entry in a node's hash.
#[derive(Debug, Serialize, Deserialize)]
struct Entry {
    connections: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    info: Option<Box<RawValue>>,
}

/// A join or a leave on a channel's bus.
#[derive(Debug, Serialize, Deserialize)]
struct Announcement {
    /// `"join"` or `"leave"`.
    presence: String,
    node: String,
    user: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    info: Option<Box<RawValue>>,
}

/// This node's listed users per channel, and what is still to be written.
#[derive(Default)]
pub struct MemberBook {
    state: Mutex<BookState>,
    /// Wakes the writer: something changed.
    changed: Notify,
}

/// A channel's users here: connections and info.
type Users = HashMap<Arc<str>, (u32, Option<Arc<RawValue>>)>;

/// A channel's hash as it is to be written: its fields (none: delete it).
struct HashWrite {
    channel: ChannelName,
    fields: Vec<(String, String)>,
}

/// What the writer takes at once.
struct Work {
    writes: Vec<HashWrite>,
    announcements: Vec<(ChannelName, PresenceEvent)>,
}

#[derive(Default)]
struct BookState {
    channels: HashMap<ChannelName, Users>,
    /// Channels whose hash must be written again.
    dirty: HashSet<ChannelName>,
    announcements: VecDeque<(ChannelName, PresenceEvent)>,
}

impl MemberBook {
    fn lock(&self) -> std::sync::MutexGuard<'_, BookState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Notes one change of a channel's user here (what the cluster's
    /// [`PresenceShare`](crate::broker::presence::PresenceShare) does).
    pub fn note(&self, channel: &ChannelName, change: &MemberChange) {
        {
            let mut state = self.lock();
            let users = state.channels.entry(channel.clone()).or_default();
            if change.connections == 0 {
                users.remove(&change.user);
            } else {
                users.insert(
                    Arc::clone(&change.user),
                    (change.connections, change.info.clone()),
                );
            }
            state.dirty.insert(channel.clone());
            if let Some(event) = change.event() {
                if state.announcements.len() >= MAX_PENDING_ANNOUNCEMENTS {
                    state.announcements.pop_front();
                    log::warn!("presence announcement dropped reason=queue-full");
                }
                state.announcements.push_back((channel.clone(), event));
            }
        }
        self.changed.notify_one();
    }

    /// What to write now: the dirty channels' hashes (`all`: every
    /// channel's), and the announcements.
    fn take(&self, all: bool) -> Work {
        let mut state = self.lock();
        let dirty: Vec<ChannelName> = match all {
            true => {
                state.dirty.clear();
                state.channels.keys().cloned().collect()
            }
            false => state.dirty.drain().collect(),
        };
        let mut writes = Vec::with_capacity(dirty.len());
        for channel in dirty {
            let fields: Vec<(String, String)> = state
                .channels
                .get(&channel)
                .map(fields_of)
                .unwrap_or_default();
            if fields.is_empty() {
                state.channels.remove(&channel);
            }
            writes.push(HashWrite { channel, fields });
        }
        Work {
            writes,
            announcements: state.announcements.drain(..).collect(),
        }
    }
}

/// A channel's users as the fields of its hash.
fn fields_of(users: &Users) -> Vec<(String, String)> {
    users
        .iter()
        .filter_map(|(user, (connections, info))| {
            let entry = Entry {
                connections: u64::from(*connections),
                info: info.as_deref().map(ToOwned::to_owned),
            };
            Some((user.to_string(), serde_json::to_string(&entry).ok()?))
        })
        .collect()
}

/// Writes this node's members to Redis as they change, and all of them
/// every `cluster.presence_interval`, until aborted.
pub async fn run(cluster: Cluster) {
    let mut tick = tokio::time::interval(cluster.inner.presence_interval);
    loop {
        let all = tokio::select! {
            _ = tick.tick() => true,
            _ = cluster.inner.members.changed.notified() => false,
        };
        let Work {
            writes,
            announcements,
        } = cluster.inner.members.take(all);
        if let Err(err) = write(&cluster, writes).await {
            log::debug!("presence members not written error={err}");
            // Written again whole at the next interval.
        }
        for (channel, event) in announcements {
            if let Err(err) = announce(&cluster, &channel, &event).await {
                log::debug!("presence announcement not sent channel={channel} error={err}");
            }
        }
    }
}

/// Replaces this node's hash of each channel given.
async fn write(cluster: &Cluster, writes: Vec<HashWrite>) -> Result<(), ClusterError> {
    if writes.is_empty() {
        return Ok(());
    }
    let valid_for = i64::try_from(cluster.entry_lifetime_ms()).unwrap_or(i64::MAX);
    let keys = cluster.keys();
    let writes = writes.into_iter().map(|HashWrite { channel, fields }| {
        let key = keys.members(&channel, cluster.node_id());
        let mut pipe = redis::pipe();
        pipe.atomic().del(&key).ignore();
        if !fields.is_empty() {
            pipe.hset_multiple(&key, &fields).ignore();
            pipe.pexpire(&key, valid_for).ignore();
        }
        let mut conn = cluster.conn();
        async move { pipe.query_async::<()>(&mut conn).await }
    });
    let written = futures_util::future::join_all(writes);
    for outcome in cluster.run(async { Ok(written.await) }).await? {
        outcome?;
    }
    Ok(())
}

/// Publishes a join or a leave on its channel's bus.
async fn announce(
    cluster: &Cluster,
    channel: &ChannelName,
    event: &PresenceEvent,
) -> Result<(), ClusterError> {
    let message = Announcement {
        presence: if event.joined { "join" } else { "leave" }.into(),
        node: cluster.node_id().to_owned(),
        user: event.user.to_string(),
        info: event.info.as_deref().map(|i| i.to_owned()),
    };
    cluster
        .publish_json(cluster.keys().bus(channel), &message)
        .await?;
    Ok(())
}

/// Who is on `channel` on the other live nodes: their connections (as
/// their last count said) and, when `members` is set, their users.
pub async fn remote(
    cluster: &Cluster,
    channel: &ChannelName,
    members: bool,
) -> Result<ChannelPresence, ClusterError> {
    let keys = cluster.keys();
    let others = cluster.other_live_nodes().await?;
    let mut conn = cluster.conn();
    let mut presence = ChannelPresence::default();
    if others.is_empty() {
        return Ok(presence);
    }
    let mut pipe = redis::pipe();
    for node in &others {
        pipe.hget(keys.node_subscribers(node), channel.as_str());
    }
    let counts: Vec<Option<u64>> = cluster.run(pipe.query_async(&mut conn)).await?;
    presence.count = counts.into_iter().flatten().fold(0u64, u64::saturating_add);
    if !members {
        return Ok(presence);
    }
    let mut pipe = redis::pipe();
    for node in &others {
        pipe.hgetall(keys.members(channel, node));
    }
    let hashes: Vec<HashMap<String, String>> = cluster.run(pipe.query_async(&mut conn)).await?;
    for hash in hashes {
        let mut listed: Vec<Member> = hash
            .into_iter()
            .filter_map(|(user, text)| {
                let entry: Entry = serde_json::from_str(&text).ok()?;
                Some(Member {
                    user: user.into(),
                    connections: entry.connections,
                    info: entry.info.map(Arc::from),
                })
            })
            .collect();
        listed.sort_by(|a, b| a.user.cmp(&b.user));
        presence.merge(ChannelPresence {
            count: 0,
            members: listed,
            truncated: false,
        });
    }
    Ok(presence)
}

/// A message on `channel`'s bus that is a join or a leave (a JSON object;
/// the bus's event messages start with the channel's name): announced to
/// the watchers here unless this node sent it. Answers whether it was one.
pub fn on_bus(channel: &ChannelName, payload: &[u8], node_id: &str, broker: &Broker) -> bool {
    if payload.first() != Some(&b'{') {
        return false;
    }
    let Ok(message) = serde_json::from_slice::<Announcement>(payload) else {
        log::debug!("presence announcement ignored reason=unreadable");
        return true;
    };
    if message.node == node_id {
        return true;
    }
    let joined = match message.presence.as_str() {
        "join" => true,
        "leave" => false,
        _ => return true,
    };
    broker.announce(
        channel,
        PresenceEvent {
            joined,
            user: message.user.into(),
            info: message.info.map(Arc::from),
        },
    );
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A user's connections are written as one field; its last leave deletes the hash and
    /// queues a leave for the bus.
    #[test]
    fn book_tracks_changes() {
        let book = MemberBook::default();
        let room = ChannelName::parse("room").unwrap();
        let change = |connections, joined| MemberChange {
            user: "ada".into(),
            info: None,
            connections,
            joined,
        };
        book.note(&room, &change(1, Some(true)));
        book.note(&room, &change(2, None));
        let work = book.take(false);
        assert_eq!(work.writes.len(), 1);
        assert_eq!(
            work.writes[0].fields,
            vec![("ada".into(), r#"{"connections":2}"#.into())]
        );
        assert_eq!(work.announcements.len(), 1);
        book.note(&room, &change(0, Some(false)));
        let work = book.take(false);
        assert!(work.writes[0].fields.is_empty(), "deleted");
        assert!(!work.announcements[0].1.joined);
        assert!(book.take(true).writes.is_empty(), "nothing left to refresh");
    }

    /// Only JSON objects on a channel's bus are announcements.
    #[test]
    fn announcements_are_told_apart() {
        let text = serde_json::to_string(&Announcement {
            presence: "join".into(),
            node: "n".into(),
            user: "ada".into(),
            info: None,
        })
        .unwrap();
        assert!(text.starts_with('{'));
        assert_eq!(text, r#"{"presence":"join","node":"n","user":"ada"}"#);
    }
}
