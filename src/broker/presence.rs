//! Presence: who is on a channel. Each channel keeps a [`Roster`] of the
//! users its subscribers are (their [`Identity`]): per user its
//! connections on this node and the info of the newest one. A subscriber
//! without an identity is counted (a channel's count is its connections)
//! but not listed. The roster is bounded (`limits.max_presence_members`):
//! a user who comes while it is full is counted, neither listed nor
//! announced, and the listing says it was cut short.
//!
//! Subscribers that asked for presence events (`?presence=1`, the
//! channel's *watchers*) get a `broker.join` when a user's first
//! connection comes and a `broker.leave` when its last one goes: made here
//! once per change ([`PresenceEvent::event`]), without an `id:` line, so a
//! client's `Last-Event-ID` does not move. A channel nobody watches makes
//! none.
//!
//! In a cluster the other nodes learn of this node's users through
//! [`PresenceShare`] (implemented by `crate::cluster`: expiring entries in
//! Redis, and the joins and leaves on the channel's bus), and a listing
//! adds theirs ([`Peers::presence`](super::peers::Peers::presence)).

use std::{collections::HashMap, sync::Arc, time::Instant};

use serde::Serialize;
use serde_json::value::RawValue;

use super::{
    event::{Epoch, Event, EventId},
    identity::Identity,
};
use crate::{
    names::{ChannelName, EventType},
    sse,
};

/// The event type of a user's first connection coming.
pub const JOIN: &str = "broker.join";
/// The event type of a user's last connection going.
pub const LEAVE: &str = "broker.leave";

/// A channel's users on this node, at most `max` of them.
#[derive(Debug)]
pub struct Roster {
    users: HashMap<Arc<str>, Entry>,
    /// Most users listed (`limits.max_presence_members`).
    max: usize,
    /// Connections with an identity that found the roster full (counted,
    /// not listed): while any is here, a listing is cut short.
    unlisted: usize,
}

#[derive(Debug)]
struct Entry {
    connections: u32,
    info: Option<Arc<RawValue>>,
}

/// A change of one listed user's connections here.
#[derive(Debug, Clone)]
pub struct MemberChange {
    pub user: Arc<str>,
    pub info: Option<Arc<RawValue>>,
    /// The user's connections here after the change (0: it left).
    pub connections: u32,
    /// Its first connection came (a join) or its last went (a leave);
    /// `None` for a change in between.
    pub joined: Option<bool>,
}

/// One listed user, as `GET /channels/{channel}/presence` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Member {
    #[serde(serialize_with = "shared_str")]
    pub user: Arc<str>,
    pub connections: u64,
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "shared_json"
    )]
    pub info: Option<Arc<RawValue>>,
}

fn shared_str<S: serde::Serializer>(value: &Arc<str>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(value)
}

fn shared_json<S: serde::Serializer>(
    value: &Option<Arc<RawValue>>,
    s: S,
) -> Result<S::Ok, S::Error> {
    value.as_deref().serialize(s)
}

/// Whether [`Roster::join`] listed a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listed {
    Yes,
    /// The roster was full.
    No,
}

impl Roster {
    pub fn new(max: usize) -> Self {
        Self {
            users: HashMap::new(),
            max,
            unlisted: 0,
        }
    }

    /// Whether `user` has a listed connection here.
    pub fn has(&self, user: &str) -> bool {
        self.users.contains_key(user)
    }

    /// One more connection of `identity`: its change, unless the roster
    /// is full and the user is not in it (`Listed::No`).
    pub fn join(&mut self, identity: &Identity) -> (Listed, Option<MemberChange>) {
        let full = self.users.len() >= self.max;
        let entry = match self.users.get_mut(&identity.user) {
            Some(entry) => entry,
            None if full => {
                self.unlisted += 1;
                return (Listed::No, None);
            }
            None => self
                .users
                .entry(Arc::clone(&identity.user))
                .or_insert(Entry {
                    connections: 0,
                    info: None,
                }),
        };
        entry.connections = entry.connections.saturating_add(1);
        entry.info.clone_from(&identity.info);
        let change = MemberChange {
            user: Arc::clone(&identity.user),
            info: entry.info.clone(),
            connections: entry.connections,
            joined: (entry.connections == 1).then_some(true),
        };
        (Listed::Yes, Some(change))
    }

    /// One connection less of `identity`, listed as [`Self::join`] said:
    /// its change, when it was listed.
    pub fn leave(&mut self, identity: &Identity, listed: Listed) -> Option<MemberChange> {
        if listed == Listed::No {
            self.unlisted = self.unlisted.saturating_sub(1);
            return None;
        }
        let entry = self.users.get_mut(&identity.user)?;
        entry.connections = entry.connections.saturating_sub(1);
        let mut change = MemberChange {
            user: Arc::clone(&identity.user),
            info: entry.info.clone(),
            connections: entry.connections,
            joined: None,
        };
        if entry.connections == 0 {
            self.users.remove(&identity.user);
            change.joined = Some(false);
        }
        Some(change)
    }

    /// Every listed user, by user id; and whether users were left out.
    pub fn members(&self) -> (Vec<Member>, bool) {
        let mut members: Vec<Member> = self
            .users
            .iter()
            .map(|(user, entry)| Member {
                user: Arc::clone(user),
                connections: u64::from(entry.connections),
                info: entry.info.clone(),
            })
            .collect();
        members.sort_by(|a, b| a.user.cmp(&b.user));
        (members, self.unlisted > 0)
    }
}

/// A join or a leave, as a channel's watchers get it.
#[derive(Debug, Clone)]
pub struct PresenceEvent {
    pub joined: bool,
    pub user: Arc<str>,
    pub info: Option<Arc<RawValue>>,
}

impl MemberChange {
    /// The join or the leave it is, if it is one.
    pub fn event(&self) -> Option<PresenceEvent> {
        Some(PresenceEvent {
            joined: self.joined?,
            user: Arc::clone(&self.user),
            info: self.info.clone(),
        })
    }
}

impl PresenceEvent {
    /// The event a watcher of `channel` gets: `event: broker.join` (or
    /// `broker.leave`) with `{"user", "info", "channel"}` as data and no
    /// `id:` line (its [`Event::id`], seq 0, names nothing a client
    /// resumes from; see [`is_presence`]).
    pub fn event(&self, channel: &ChannelName) -> Arc<Event> {
        let kind = if self.joined { JOIN } else { LEAVE };
        #[derive(Serialize)]
        struct Data<'a> {
            user: &'a str,
            info: Option<&'a RawValue>,
            channel: &'a str,
        }
        let data = serde_json::to_string(&Data {
            user: &self.user,
            info: self.info.as_deref(),
            channel: channel.as_str(),
        })
        // A struct of strings and a JSON value already parsed: it serializes.
        .unwrap_or_default();
        let frame = sse::framed(data.len() + 48, |buf| {
            buf.extend_from_slice(&sse::encode_notice(kind, &data));
        });
        Arc::new(Event {
            channel: channel.clone(),
            id: EventId {
                epoch: Epoch::from_raw(0),
                seq: 0,
            },
            event_type: Some(EventType::notice(kind)),
            frame,
            published_at: Instant::now(),
            tags: None,
        })
    }
}

/// Whether `event` is a join or a leave (no `id:` line of its own: a
/// stream writes it as it is and moves no cursor). A channel's own events
/// start at seq 1.
pub fn is_presence(event: &Event) -> bool {
    event.id.seq == 0
        && event
            .event_type
            .as_ref()
            .is_some_and(|t| t.as_str() == JOIN || t.as_str() == LEAVE)
}

/// Who is on a channel (`GET /channels/{channel}/presence`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct ChannelPresence {
    /// Its connections, listed or not.
    pub count: u64,
    /// Its listed users, by user id.
    pub members: Vec<Member>,
    /// Users were left out: a node's roster was full, or the sum of the
    /// nodes' lists was longer than `limits.max_presence_members`.
    pub truncated: bool,
}

impl ChannelPresence {
    /// Adds another node's presence: a user on both sums its connections;
    /// the order stays by user id.
    pub fn merge(&mut self, other: ChannelPresence) {
        self.count = self.count.saturating_add(other.count);
        self.truncated |= other.truncated;
        for member in other.members {
            match self
                .members
                .binary_search_by(|mine| mine.user.cmp(&member.user))
            {
                Ok(at) => {
                    let mine = &mut self.members[at];
                    mine.connections = mine.connections.saturating_add(member.connections);
                    if mine.info.is_none() {
                        mine.info = member.info;
                    }
                }
                Err(at) => self.members.insert(at, member),
            }
        }
    }

    /// Keeps at most `max` members (flagging the cut), and a count no
    /// smaller than the listed connections (another node's count may be
    /// up to one refresh old).
    pub fn bound(&mut self, max: usize) {
        if self.members.len() > max {
            self.members.truncate(max);
            self.truncated = true;
        }
        let listed = self
            .members
            .iter()
            .fold(0u64, |sum, m| sum.saturating_add(m.connections));
        self.count = self.count.max(listed);
    }
}

/// Where a channel tells the rest of the cluster of every change of its
/// listed users' connections (implemented by `crate::cluster`). Called from the channel's
/// actor, in order per channel: it must not wait (it queues the work).
pub trait PresenceShare: Send + Sync {
    fn changed(&self, channel: &ChannelName, change: &MemberChange);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who(user: &str) -> Identity {
        Identity {
            user: user.into(),
            info: None,
        }
    }

    /// A user's first connection joins and its last leaves; a full roster counts newcomers
    /// without listing them, and says the listing is cut short.
    #[test]
    fn roster_counts_connections_and_stays_bounded() {
        let mut roster = Roster::new(2);
        let (listed, change) = roster.join(&who("a"));
        assert_eq!(listed, Listed::Yes);
        assert_eq!(change.and_then(|c| c.joined), Some(true));
        let second = roster.join(&who("a")).1.expect("a change");
        assert_eq!((second.joined, second.connections), (None, 2));
        assert!(roster.join(&who("b")).1.is_some());
        let (listed, change) = roster.join(&who("c"));
        assert_eq!((listed, change.is_none()), (Listed::No, true));
        let (members, truncated) = roster.members();
        assert_eq!(members.len(), 2);
        assert!(truncated);
        assert!(roster.leave(&who("c"), Listed::No).is_none());
        assert!(!roster.members().1, "nobody left out now");
        assert_eq!(roster.leave(&who("a"), Listed::Yes).unwrap().joined, None);
        let left = roster.leave(&who("a"), Listed::Yes).expect("last one");
        assert_eq!((left.joined, left.connections), (Some(false), 0));
        assert!(!roster.has("a"));
        assert_eq!(roster.join(&who("c")).0, Listed::Yes, "room again");
    }

    /// A presence event has no id line and is told from a channel's own events.
    #[test]
    fn presence_event_has_no_id() {
        let channel = ChannelName::parse("room").unwrap();
        let event = PresenceEvent {
            joined: true,
            user: "ada".into(),
            info: None,
        }
        .event(&channel);
        let text = std::str::from_utf8(event.frame.full()).unwrap();
        assert_eq!(
            text,
            "event: broker.join\ndata: {\"user\":\"ada\",\"info\":null,\"channel\":\"room\"}\n\n"
        );
        assert!(is_presence(&event));
        let own = Event::new(
            channel,
            EventId {
                epoch: Epoch::from_raw(1),
                seq: 1,
            },
            None,
            "x",
        );
        assert!(!is_presence(&own));
    }

    /// Two nodes' listings merge by user and are cut to the cap.
    #[test]
    fn merge_and_bound() {
        let member = |user: &str, n| Member {
            user: user.into(),
            connections: n,
            info: None,
        };
        let mut mine = ChannelPresence {
            count: 3,
            members: vec![member("a", 1), member("c", 1)],
            truncated: false,
        };
        mine.merge(ChannelPresence {
            count: 2,
            members: vec![member("a", 1), member("b", 1)],
            truncated: false,
        });
        let users: Vec<_> = mine.members.iter().map(|m| &*m.user).collect();
        assert_eq!(users, ["a", "b", "c"]);
        assert_eq!(mine.members[0].connections, 2);
        assert_eq!(mine.count, 5);
        mine.bound(2);
        assert_eq!(mine.members.len(), 2);
        assert!(mine.truncated);
    }
}
