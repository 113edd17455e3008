//! Cluster mode: whether a change is a transition of the whole cluster is
//! decided by the broker's [`SharedOccupancy`] (Redis, `crate::cluster`),
//! which queues each transition once, per channel. This node's part:
//! - its intake task records this node's changes there, in order (a
//!   change that cannot be recorded, Redis being down, is logged and
//!   counted as dropped; the periodic refresh and the check of occupied
//!   channels set the state right afterwards);
//! - its poller looks at the channels that are due, takes the lease of up
//!   to [`MAX_IN_FLIGHT`] of them and sends each one's notices in order to
//!   every URL (with the retries of [`sender::deliver`]), taking each out
//!   of the queue once it was delivered or given up, renewing the lease
//!   meanwhile. A node that dies mid-send leaves the channel to the next
//!   node that takes its lease, which sends the notice again (same id).

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use tokio::sync::{Notify, mpsc};

use super::{
    job::{Job, body},
    sender::{self, Delivery, MAX_IN_FLIGHT},
};
use crate::{
    broker::{
        BrokerError,
        occupancy::{Notice, OccupancyChange, SharedOccupancy},
    },
    names::ChannelName,
};

/// How often the poller looks for due channels when nothing woke it (a
/// grace ending, a notice another node queued, a node gone).
const POLL_EVERY: Duration = Duration::from_millis(250);

/// Notices read from a channel's queue at once.
const NOTICES_AT_ONCE: usize = 16;

/// Starts the intake task and the poller (on the current arbiter); the
/// intake's sender.
pub fn start(
    shared: Arc<dyn SharedOccupancy>,
    delivery: Arc<Delivery>,
    renew_every: Duration,
    capacity: usize,
) -> mpsc::Sender<(ChannelName, OccupancyChange)> {
    let (tx, rx) = mpsc::channel(capacity);
    let wake = Arc::new(Notify::new());
    actix::spawn(intake(
        rx,
        Arc::clone(&shared),
        Arc::clone(&delivery),
        Arc::clone(&wake),
    ));
    actix::spawn(poll(shared, delivery, wake, renew_every));
    tx
}

/// Records this node's changes, in order; wakes the poller when one
/// queued a notice.
async fn intake(
    mut rx: mpsc::Receiver<(ChannelName, OccupancyChange)>,
    shared: Arc<dyn SharedOccupancy>,
    delivery: Arc<Delivery>,
    wake: Arc<Notify>,
) {
    while let Some((channel, change)) = rx.recv().await {
        match shared.record(&channel, &change).await {
            Ok(recorded) => {
                delivery
                    .metrics
                    .webhooks_dropped
                    .increment(recorded.dropped);
                if recorded.queued {
                    wake.notify_one();
                }
            }
            Err(err) => {
                delivery.metrics.webhooks_dropped.increment(1);
                log::warn!("occupancy change not recorded channel={channel} reason={err}");
            }
        }
    }
}

/// Looks for due channels and sends those whose lease it takes.
async fn poll(
    shared: Arc<dyn SharedOccupancy>,
    delivery: Arc<Delivery>,
    wake: Arc<Notify>,
    renew_every: Duration,
) {
    let active: Arc<Mutex<HashSet<ChannelName>>> = Arc::default();
    let mut tick = tokio::time::interval(POLL_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = wake.notified() => {}
        }
        let busy = active.lock().map_or(MAX_IN_FLIGHT, |a| a.len());
        if busy >= MAX_IN_FLIGHT {
            continue;
        }
        let due = match shared.due(MAX_IN_FLIGHT).await {
            Ok(due) => due,
            Err(err) => {
                log::debug!("due webhook channels not read reason={err}");
                continue;
            }
        };
        for channel in due {
            let fresh = active
                .lock()
                .is_ok_and(|a| a.len() < MAX_IN_FLIGHT && !a.contains(&channel));
            if !fresh || !matches!(shared.lease(&channel).await, Ok(true)) {
                continue;
            }
            if let Ok(mut a) = active.lock() {
                a.insert(channel.clone());
            }
            let (shared, delivery, active) = (
                Arc::clone(&shared),
                Arc::clone(&delivery),
                Arc::clone(&active),
            );
            actix::spawn(async move {
                send_channel(&channel, shared.as_ref(), &delivery, renew_every).await;
                if let Ok(mut a) = active.lock() {
                    a.remove(&channel);
                }
            });
        }
    }
}

/// Sends the channel's notices, in order, while this node holds its
/// lease; then lets it go.
async fn send_channel(
    channel: &ChannelName,
    shared: &dyn SharedOccupancy,
    delivery: &Delivery,
    renew_every: Duration,
) {
    let work = async {
        loop {
            let notices = shared.notices(channel, NOTICES_AT_ONCE).await?;
            if notices.is_empty() {
                return Ok::<(), BrokerError>(());
            }
            for notice in notices {
                send_notice(channel, &notice, delivery).await;
                shared.done(channel, &notice.key).await?;
            }
        }
    };
    let renew = async {
        loop {
            tokio::time::sleep(renew_every).await;
            if !matches!(shared.lease(channel).await, Ok(true)) {
                return;
            }
        }
    };
    tokio::select! {
        sent = work => if let Err(err) = sent {
            log::warn!("webhook notices interrupted channel={channel} reason={err}");
        },
        () = renew => log::warn!("webhook lease lost channel={channel}"),
    }
    if let Err(err) = shared.release(channel).await {
        log::debug!("webhook lease not released channel={channel} reason={err}");
    }
}

/// Delivers one notice to every URL at once (each with its retries).
async fn send_notice(channel: &ChannelName, notice: &Notice, delivery: &Delivery) {
    let at = UNIX_EPOCH + Duration::from_millis(notice.at_ms);
    let body = body(channel, &notice.change, at.min(SystemTime::now()));
    let metrics = &delivery.metrics;
    let sends = delivery.settings.url.iter().map(|url| {
        let job = Job {
            seq: 0,
            url: url.clone(),
            id: notice.id.clone(),
            channel: channel.to_string(),
            body: body.clone(),
        };
        async move {
            metrics.webhooks_pending.increment(1.0);
            sender::deliver(delivery, &job).await.settle(metrics);
        }
    });
    futures_util::future::join_all(sends).await;
}
