//! The bridge between our channels and the hub, both ways. A channel and
//! the hub topic of the same name are one resource, decided by the one
//! access policy ([`AccessPolicy`]) whichever way it is reached:
//!
//! - **channel → hub** (`mercure.channel_updates`): [`ChannelBridge`] is the
//!   core's [`Bridge`]; an event accepted on one of our channels becomes an
//!   update on the channel's name ([`copy_of`](super::update::copy_of)), published on the hub's
//!   channel as a copy. The copy carries its channel, and every Mercure
//!   subscriber's filter (`super::hub::SelectorFilter`) asks the policy
//!   for it, live or replayed: a protected channel's events reach only
//!   subscribers whose token's `subscribe` matchers cover the channel's
//!   name.
//! - **hub → channel**: a public update whose topics are channel names is
//!   also published on those channels ([`into_channels`]), where the policy
//!   lets its publisher publish (with `[auth]` on: its token's `publish`
//!   matchers cover the channel's name). Private updates never are.
//!
//! Both directions publish copies, which are never bridged back, so nothing
//! loops.

use std::sync::{Arc, OnceLock};

use log::debug;

use super::{
    auth::Claims,
    hub::{hub_channel, record_of},
    update::{UpdateDraft, copy_of},
};
use crate::{
    auth::{AccessPolicy, Action},
    broker::{
        Broker,
        bridge::Bridge,
        log::{Origin, Record},
    },
    names::{ChannelName, EventType},
};

/// Channel events as updates on the channel's name (channel → hub).
/// Connected to the broker once it runs: the broker is built with its
/// bridge.
pub struct ChannelBridge {
    broker: OnceLock<Broker>,
    access: Arc<AccessPolicy>,
}

impl ChannelBridge {
    pub fn new(access: Arc<AccessPolicy>) -> Self {
        Self {
            broker: OnceLock::new(),
            access,
        }
    }

    /// From now on accepted channel events reach the hub through `broker`.
    pub fn connect(&self, broker: Broker) {
        let _ = self.broker.set(broker);
    }
}

impl Bridge for ChannelBridge {
    fn carry(&self, origin: Origin, record: Record) {
        let Some(broker) = self.broker.get() else {
            return;
        };
        let mut copy = record_of(copy_of(&origin, record, &self.access));
        copy.origin = Some(Box::new(origin));
        broker.publish_nowait(&hub_channel(), copy, true);
    }
}

/// A public update published on the hub (hub → channel): each of its topics
/// that is a channel name, once, gets the update as an event too, where the
/// policy lets the publisher (`claims`) publish.
pub fn into_channels(broker: &Broker, access: &AccessPolicy, claims: &Claims, draft: &UpdateDraft) {
    if draft.private {
        return;
    }
    let event_type = draft
        .event_type
        .as_deref()
        .and_then(|t| EventType::parse(t).ok());
    let mut sent: Vec<&str> = Vec::new();
    for topic in &draft.topics {
        if sent.contains(&topic.as_str()) {
            continue;
        }
        let Ok(channel) = ChannelName::parse(topic) else {
            continue;
        };
        sent.push(topic);
        if access
            .decide(Some(claims), Action::Publish, &channel)
            .is_err()
        {
            debug!("mercure update not bridged channel={channel} reason=not-granted");
            continue;
        }
        let record = Record::plain(event_type.clone(), draft.data.clone());
        broker.publish_nowait(&channel, record, true);
    }
}
