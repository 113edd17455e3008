//! Where channel actors run and how callers reach them without the
//! registry: the [`Directory`] of running channels and the [`Homes`] their
//! actors are started on.

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
};

use actix::ArbiterHandle;

use super::{channel::ChannelHandle, message::ChannelMessage};
use crate::names::ChannelName;

/// The arbiters channel actors run on: dedicated ones (`broker.arbiters`),
/// or the HTTP workers', added as each worker starts (`broker.arbiters = 0`).
#[derive(Clone, Default)]
pub struct Homes(Arc<RwLock<Vec<ArbiterHandle>>>);

impl Homes {
    pub fn add(&self, arbiter: ArbiterHandle) {
        if let Ok(mut homes) = self.0.write() {
            homes.push(arbiter);
        }
    }

    /// The home of a channel whose name hashes to `hash`; `None` while
    /// there is none (the registry then runs the channel itself).
    pub fn pick(&self, hash: u64) -> Option<ArbiterHandle> {
        let homes = self.0.read().ok()?;
        match homes.len() {
            0 => None,
            n => Some(homes[(hash % n as u64) as usize].clone()),
        }
    }
}

/// The running channels, shared with every caller of the broker so that a
/// message to a running channel goes straight to its actor: one thread hop
/// fewer than through the registry. The registry alone adds and removes
/// entries.
///
/// A message sent here is counted by the channel's handle while the read
/// lock is held; the registry compares a channel's counts, and removes it,
/// under the write lock. So a message is either counted before the
/// comparison (the channel stays) or finds the channel gone and goes
/// through the registry: none lands in a retired actor's mailbox.
#[derive(Clone, Default)]
pub struct Directory(Arc<RwLock<HashMap<ChannelName, ChannelHandle>>>);

impl Directory {
    /// Sends `msg` to `channel`'s actor when the channel runs; gives it
    /// back (to go through the registry) when it does not.
    pub fn send(&self, channel: &ChannelName, msg: ChannelMessage) -> Result<(), ChannelMessage> {
        let Ok(routes) = self.0.read() else {
            return Err(msg);
        };
        match routes.get(channel) {
            Some(handle) if handle.is_running() => {
                handle.send(msg);
                Ok(())
            }
            _ => Err(msg),
        }
    }

    pub(super) fn insert(&self, channel: &ChannelName, handle: &ChannelHandle) {
        if let Ok(mut routes) = self.0.write() {
            routes.insert(channel.clone(), handle.clone());
        }
    }

    /// Removes `channel` if `still_idle` holds while no caller can count a
    /// message (the write lock); answers whether it was removed.
    pub(super) fn remove_if(
        &self,
        channel: &ChannelName,
        still_idle: impl FnOnce() -> bool,
    ) -> bool {
        let Ok(mut routes) = self.0.write() else {
            return false;
        };
        if !still_idle() {
            return false;
        }
        routes.remove(channel);
        true
    }
}
