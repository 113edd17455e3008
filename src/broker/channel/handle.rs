//! `ChannelHandle`: the one way to send a [`ChannelMessage`] to a channel
//! actor, counted, so that retiring an idle channel is race-free (see
//! `registry`).

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use actix::prelude::*;

use super::actor::ChannelActor;
use crate::broker::message::{ChannelMessage, Retire};

/// The one way to send a [`ChannelMessage`]: counted, so that retiring a
/// channel is race-free (see `registry`). Cheap to clone; the registry and
/// the directory hold clones of the same handle.
#[derive(Clone)]
pub struct ChannelHandle {
    addr: Addr<ChannelActor>,
    sent: Arc<AtomicU64>,
}

impl ChannelHandle {
    /// Starts `actor` on `home` (an arbiter), or on the current one.
    pub fn start(actor: ChannelActor, home: Option<&ArbiterHandle>) -> Self {
        let addr = match home {
            None => actor.start(),
            Some(arbiter) => ChannelActor::start_in_arbiter(arbiter, move |_| actor),
        };
        Self {
            addr,
            sent: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Counts `msg` and queues it for the actor. Never waits: callers that
    /// need an answer carry a reply in the message.
    pub fn send(&self, msg: ChannelMessage) {
        self.sent.fetch_add(1, Ordering::SeqCst);
        self.addr.do_send(msg);
    }

    /// Messages sent so far.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::SeqCst)
    }

    /// Whether the actor still runs.
    pub fn is_running(&self) -> bool {
        self.addr.connected()
    }

    /// Tells the actor to stop (after the registry forgot it).
    pub fn retire(&self) {
        self.addr.do_send(Retire);
    }
}
