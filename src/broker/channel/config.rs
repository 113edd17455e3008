//! What a channel actor is given and what it shows without being asked:
//! [`ChannelConfig`], copied from the configuration once by the registry,
//! and [`ChannelStats`], the counters the registry reads for listings and
//! metrics.

use std::{
    sync::{Arc, atomic::AtomicU64},
    time::Duration,
};

use crate::{
    broker::{
        bridge::Bridge,
        history::Retention,
        idempotency::IdempotencyBook,
        log::{DurableStore, SharedLog},
        occupancy::OccupancyWatch,
        presence::PresenceShare,
    },
    metrics::Metrics,
};

/// Settings and backends a channel needs, copied from the configuration once.
#[derive(Clone)]
pub struct ChannelConfig {
    /// How much history each channel keeps (and the budget they share).
    pub retention: Retention,
    /// Interval of heartbeats, dead-subscriber sweeps, expiry and idle checks.
    pub tick: Duration,
    /// Where the channel counts what it does (see `crate::metrics`).
    pub metrics: Arc<Metrics>,
    /// Most subscribers of one channel (0: no limit); internal channels
    /// (the Mercure hub's) have none.
    pub max_subscribers: usize,
    /// Most subscriptions in the whole broker (0: no limit).
    pub max_total_subscribers: usize,
    /// Subscriptions in the whole broker, kept by every channel actor.
    pub total_subscribers: Arc<AtomicU64>,
    /// Durable history: events are also kept here.
    pub durable: Option<Arc<dyn DurableStore>>,
    /// Cluster mode: events are numbered and kept by this shared log.
    pub shared: Option<Arc<dyn SharedLog>>,
    /// Offered every event accepted on a non-internal channel.
    pub bridge: Option<Arc<dyn Bridge>>,
    /// Cluster mode: told every join and leave of a non-internal channel.
    pub presence: Option<Arc<dyn PresenceShare>>,
    /// Told a non-internal channel's first and last subscriber here, and
    /// its users' joins and leaves (the occupancy webhooks).
    pub occupancy: Option<Arc<dyn OccupancyWatch>>,
    /// Most users one channel lists (`limits.max_presence_members`).
    pub max_presence_members: usize,
    /// The idempotency keys owned logs remember, for the whole broker (a
    /// shared log keeps its own).
    pub idempotency: Arc<IdempotencyBook>,
}

/// Counters the registry reads for listings without asking the actor.
#[derive(Debug, Default)]
pub struct ChannelStats {
    pub subscribers: AtomicU64,
    pub published: AtomicU64,
    pub last_seq: AtomicU64,
    pub history: AtomicU64,
    pub pulses: AtomicU64,
    pub evicted: AtomicU64,
    /// The raw epoch of the channel's current life when it changed since
    /// the channel started (cluster mode); 0 otherwise.
    pub epoch: AtomicU64,
    /// Messages the actor has handled; the handle's sent count minus this
    /// is the actor's mailbox depth (metrics).
    pub received: AtomicU64,
}
