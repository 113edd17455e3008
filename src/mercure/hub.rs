//! The Mercure hub on the broker core. The hub is one internal channel,
//! [`hub_channel`] (`~mercure`, a name no HTTP client can use): its log is
//! the hub's one ordered log of updates, its members are the Mercure
//! subscribers, and the channel actor fans updates out as it does any
//! channel's events. This module gives the core what it needs to do that:
//!
//! - [`HubCodec`]: turns a logged update (an [`UpdateDraft`] as JSON) into
//!   the event subscribers get: the reference hub's frame, the update's own
//!   id as the event's name (so `Last-Event-ID` finds it), and its topics and
//!   privacy as the event's tags;
//! - [`SelectorFilter`]: a subscriber's topic selectors and its right to
//!   private updates, applied to live updates and to replays alike.
//!
//! Our channels' events reach the hub as copies (`super::bridge`). A copy is
//! the channel's event, so the channel's access rules ([`AccessPolicy`])
//! decide who receives it, not the update's `private` flag: a subscriber
//! gets a copy of a protected channel's event only when its token's
//! `subscribe` matchers cover the channel's name, exactly as `/stream` would
//! ask of our token. The filter asks the policy for every copy it sees,
//! live or replayed, so a copy logged before a channel became private
//! (durable history, Redis) does not leak either.
//!
//! Because the hub is a channel, cluster mode (the log in Redis, every node
//! delivering the same updates with the same ids) and durable history work
//! for Mercure exactly as for channels. The hub needs one total order of
//! everything a subscriber can match, so that `Last-Event-ID` resumes across
//! all its topics, and the per-channel logs give none: a bridged channel
//! event takes a place in the hub's log too. With durable history that place
//! is a reference to the channel's row (the store writes the event once; the
//! codec makes the update again from the original when the hub's log is read
//! back, with the same id). In cluster mode it is a second entry in Redis:
//! the hub's log carries the update, in the hub's order, to every node with
//! Mercure subscribers, which need not follow every channel's traffic.

use std::{sync::Arc, time::Instant};

use log::warn;

use super::{
    topic::{self, TopicSelector},
    update::{PreparedUpdate, UpdateDraft, UpdateTags, copy_of, encode},
};
use crate::{
    auth::{AccessPolicy, Action, Rights},
    broker::{
        EventId,
        codec::Codec,
        event::{Event, Tags},
        log::Record,
        subscriber::Filter,
    },
    names::ChannelName,
    sse,
};

/// The hub's channel (see the module docs).
pub fn hub_channel() -> ChannelName {
    // Made once: every Mercure publish and every bridged channel event
    // names it, and a clone is one reference count.
    static HUB: std::sync::LazyLock<ChannelName> =
        std::sync::LazyLock::new(|| ChannelName::internal("mercure"));
    HUB.clone()
}

/// The record of an update for the hub's channel: prepared, so the codec
/// takes the update as it is and its JSON is written only when a log
/// outside memory keeps it ([`HubCodec::logged`]).
pub fn record_of(update: impl Into<PreparedUpdate>) -> Record {
    Record {
        event_type: None,
        data: String::new(),
        prepared: Some(Arc::new(update.into())),
        origin: None,
    }
}

/// Makes the hub channel's events (see the module docs).
#[derive(Debug)]
pub struct HubCodec {
    /// Whether a copy made again from a channel's durable event is private.
    pub access: Arc<AccessPolicy>,
}

impl Codec for HubCodec {
    fn event(
        &self,
        channel: &ChannelName,
        id: EventId,
        record: &Record,
        published_at: Instant,
    ) -> Arc<Event> {
        let prepared = record
            .prepared
            .clone()
            .and_then(|p| p.downcast::<PreparedUpdate>().ok());
        let update = match (prepared, &record.origin) {
            (Some(update), _) => Ok(update),
            // A channel event read back from the store's reference.
            (None, Some(origin)) => Ok(Arc::new(copy_of(origin, record.clone(), &self.access))),
            (None, None) => serde_json::from_str::<UpdateDraft>(&record.data)
                .map(|draft| Arc::new(PreparedUpdate::from(draft))),
        };
        let (frame, tags) = match update {
            Ok(update) => {
                let frame = encode(
                    &update.id,
                    update.event_type.as_deref(),
                    update.retry,
                    &update.data,
                );
                let tags = Tags {
                    name: Some(Arc::clone(&update.id)),
                    value: Arc::clone(&update.tags) as Arc<dyn std::any::Any + Send + Sync>,
                };
                (frame, Some(Arc::new(tags)))
            }
            Err(err) => {
                // Not an update the hub wrote: no filter admits it.
                warn!("mercure log entry unreadable id={id} reason={err}");
                (sse::framed(0, |_| {}), None)
            }
        };
        Arc::new(Event {
            channel: channel.clone(),
            id,
            event_type: None,
            frame,
            published_at,
            tags,
        })
    }

    /// The update as JSON, for the durable store or the shared log.
    fn logged(&self, mut record: Record) -> Record {
        if let Some(update) = record
            .prepared
            .take()
            .and_then(|p| p.downcast::<PreparedUpdate>().ok())
        {
            record.data = update.to_json();
        }
        record
    }
}

/// A Mercure subscriber's selectors and private rights.
#[derive(Debug)]
pub struct SelectorFilter {
    /// One per `topic` or `match*` parameter of its request.
    pub selectors: Vec<TopicSelector>,
    /// Its token's subscribe grants: which private updates it may read
    /// (none without a token).
    pub private: Vec<TopicSelector>,
    /// Decides who receives channel events' copies.
    pub access: Arc<AccessPolicy>,
}

impl SelectorFilter {
    /// Whether it subscribed to one of the update's topics and may read the
    /// update: for a copy of a channel's event, the channel's access rules
    /// say so; for a private update, its token covers one of the topics.
    pub fn can_receive(&self, update: &UpdateTags) -> bool {
        if !topic::any_matches(&self.selectors, &update.topics) {
            return false;
        }
        match &update.channel {
            Some(channel) => self
                .access
                .decide(Some(self), Action::Subscribe, channel)
                .is_ok(),
            None => !update.private || topic::any_matches(&self.private, &update.topics),
        }
    }
}

impl Rights for SelectorFilter {
    /// A Mercure subscriber reads a channel whose name its `subscribe`
    /// matchers cover (a channel is the topic of the same name).
    fn covers(&self, action: Action, channel: &ChannelName) -> bool {
        action == Action::Subscribe && self.private.iter().any(|s| s.matches(channel.as_str()))
    }
}

impl Filter for SelectorFilter {
    /// Updates only: the broker's own notices (gaps) carry no tags.
    fn admits(&self, event: &Event) -> bool {
        event
            .tags
            .as_ref()
            .and_then(|tags| tags.value.downcast_ref::<UpdateTags>())
            .is_some_and(|tags| self.can_receive(tags))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::log::Origin;

    fn tags(topics: &[&str], private: bool) -> UpdateTags {
        UpdateTags {
            topics: topics.iter().map(|t| t.to_string()).collect(),
            private,
            channel: None,
        }
    }

    /// `user.*` private, auth on.
    fn protecting() -> Arc<AccessPolicy> {
        let private = vec![crate::auth::Pattern::parse("user.*").expect("a pattern")];
        Arc::new(AccessPolicy::new(true, private, true))
    }

    fn filter(topics: &[&str], private: Option<&[&str]>) -> SelectorFilter {
        filter_with(topics, private, protecting())
    }

    fn filter_with(
        topics: &[&str],
        private: Option<&[&str]>,
        access: Arc<AccessPolicy>,
    ) -> SelectorFilter {
        SelectorFilter {
            access,
            selectors: topics.iter().map(|t| TopicSelector::new(t)).collect(),
            private: private
                .unwrap_or_default()
                .iter()
                .map(|t| TopicSelector::new(t))
                .collect(),
        }
    }

    /// Private updates need a subscribe claim covering one of their topics.
    #[test]
    fn private_updates_need_a_matching_claim() {
        let public = tags(&["https://example.com/books/1"], false);
        let private = tags(&["https://example.com/books/1", "urn:secret"], true);
        let anonymous = filter(&["https://example.com/books/{id}"], None);
        assert!(anonymous.can_receive(&public));
        assert!(!anonymous.can_receive(&private));
        let allowed = filter(&["https://example.com/books/{id}"], Some(&["urn:secret"]));
        assert!(allowed.can_receive(&private));
        let other = filter(&["*"], Some(&["urn:other"]));
        assert!(!other.can_receive(&private));
    }

    /// A logged update comes back as the reference hub's frame, named by
    /// its own id, tagged with its topics; anything else matches nobody.
    #[test]
    fn the_codec_reads_back_what_the_hub_logged() {
        let draft = UpdateDraft {
            topics: vec!["urn:a".into()],
            data: "hello".into(),
            private: false,
            id: Some("urn:uuid:1".into()),
            event_type: Some("note".into()),
            retry: None,
            channel: None,
        };
        let codec = HubCodec {
            access: protecting(),
        };
        let id = EventId {
            epoch: crate::broker::event::Epoch::from_raw(1),
            seq: 7,
        };
        let prepared = record_of(draft);
        let logged = codec.logged(prepared.clone());
        assert!(logged.prepared.is_none() && logged.data.contains("\"urn:uuid:1\""));
        // As published here (prepared) and as read back from a log (JSON).
        for record in [prepared, logged] {
            let event = codec.event(&hub_channel(), id, &record, Instant::now());
            assert_eq!(
                std::str::from_utf8(event.frame.full()).unwrap(),
                "event: note\nid: urn:uuid:1\ndata: hello\n\n"
            );
            assert_eq!(event.name(), Some("urn:uuid:1"));
            assert!(filter(&["urn:a"], None).admits(&event));
            assert!(!filter(&["urn:b"], None).admits(&event));
        }
        let junk = Record::plain(None, "not json".into());
        let odd = codec.event(&hub_channel(), id, &junk, Instant::now());
        assert!(!filter(&["*"], None).admits(&odd));
    }

    fn origin(channel: &str) -> Origin {
        Origin {
            channel: ChannelName::parse(channel).expect("a channel name"),
            id: EventId {
                epoch: crate::broker::event::Epoch::from_raw(1),
                seq: 3,
            },
        }
    }

    /// A copy of a private channel's event reaches only subscribers whose
    /// token covers the channel; a public channel's copy reaches everyone
    /// who matched it; with auth off every copy is public.
    #[test]
    fn copies_follow_their_channels_rules() {
        let record = Record::plain(None, "secret".into());
        let private = copy_of(&origin("user.9"), record.clone(), &protecting());
        assert!(private.tags.private);
        assert!(!filter(&["user.9"], None).can_receive(&private.tags));
        assert!(!filter(&["*"], Some(&["user.8"])).can_receive(&private.tags));
        assert!(filter(&["user.9"], Some(&["user.9"])).can_receive(&private.tags));
        assert!(filter(&["*"], Some(&["*"])).can_receive(&private.tags));
        let public = copy_of(&origin("news"), record.clone(), &protecting());
        assert!(!public.tags.private);
        assert!(filter(&["news"], None).can_receive(&public.tags));
        let open = Arc::new(AccessPolicy::open());
        let unprotected = copy_of(&origin("user.9"), record, &open);
        assert!(filter_with(&["user.9"], None, open).can_receive(&unprotected.tags));
    }

    /// The channel rules hold for copies read back from a log, whatever
    /// the logged `private` flag says, and for copies logged before the
    /// `channel` field existed (their id names the channel).
    #[test]
    fn logged_copies_keep_their_channel() {
        let old_copy = UpdateDraft {
            topics: vec!["user.9".into()],
            data: "secret".into(),
            private: false,
            id: Some("urn:sse-broker:user.9/1-5".into()),
            event_type: None,
            retry: None,
            channel: None,
        };
        let codec = HubCodec {
            access: protecting(),
        };
        let logged = codec.logged(record_of(old_copy));
        let id = EventId {
            epoch: crate::broker::event::Epoch::from_raw(1),
            seq: 9,
        };
        let event = codec.event(&hub_channel(), id, &logged, Instant::now());
        assert!(!filter(&["user.9"], None).admits(&event));
        assert!(filter(&["user.9"], Some(&["user.9"])).admits(&event));
        let fresh = record_of(copy_of(
            &origin("user.9"),
            Record::plain(None, "x".into()),
            &Arc::new(AccessPolicy::open()),
        ));
        let logged = codec.logged(fresh);
        assert!(
            logged.data.contains("\"channel\":\"user.9\""),
            "{}",
            logged.data
        );
        let event = codec.event(&hub_channel(), id, &logged, Instant::now());
        assert!(!filter(&["user.9"], None).admits(&event));
    }
}
