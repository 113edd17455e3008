//! `PendingAnswer`: what a publish leaves with its channel until its event
//! is accepted (in the log, fanned out) or refused. Both kinds of log keep
//! one per event they wait for (an owned log until the store has it on disk,
//! a shared log until its append answers); the actor settles it.

use std::time::Instant;

use crate::broker::{
    error::{BrokerError, Reply},
    idempotency::Idempotency,
    log::Record,
    message::{Publish, Published},
};

/// The publisher of an event not yet accepted: whom to answer, and what the
/// acceptance counts and offers the bridge.
pub struct PendingAnswer {
    /// `None` for a publish nobody waits on (the demo, a batch's copies).
    pub reply: Option<Reply<Published>>,
    /// When the publish handler started on it (the latency metric).
    pub received_at: Instant,
    /// A copy of an event accepted elsewhere: neither counted as published
    /// nor offered to the bridge again (see [`Publish::copy`]).
    pub copy: bool,
    /// The record to offer the bridge, kept (cloned) only when it will be.
    pub bridge: Option<Record>,
}

impl PendingAnswer {
    /// Splits a publish into its record and idempotency key (for the log)
    /// and what waits for the answer; `bridged`: the channel offers its
    /// events to a bridge.
    pub fn split(msg: Publish, bridged: bool) -> (Record, Option<Idempotency>, Self) {
        let Publish {
            record,
            idempotency,
            reply,
            received_at,
            copy,
        } = msg;
        let bridge = (bridged && !copy).then(|| record.clone());
        let answer = Self {
            reply,
            received_at,
            copy,
            bridge,
        };
        (record, idempotency.map(|boxed| *boxed), answer)
    }

    /// The event will not be accepted: the publisher learns why.
    pub fn refuse(self, err: BrokerError) {
        if let Some(reply) = self.reply {
            let _ = reply.send(Err(err));
        }
    }
}
