//! `Broker`: the handle every caller of the broker holds (HTTP handlers, the
//! Mercure adapter, the cluster bus, the demo publisher). Each method sends
//! one message: to a running channel straight through the [`Directory`],
//! otherwise through the registry, which starts the channel when needed.
//! Callers never see an actor address.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use actix::prelude::*;
use futures_util::future::BoxFuture;
use tokio::sync::oneshot;

use super::{
    error::{BrokerError, await_reply},
    event::{Epoch, EventId, ResumeFrom},
    history::HistoryPage,
    idempotency::Idempotency,
    log::{LogEntry, Record},
    message::{
        ChannelDetail, ChannelMessage, Publish, Published, ReadHistory, Subscribe, Subscribed,
    },
    peers::Peers,
    presence::{ChannelPresence, PresenceEvent},
    pulse::PulseRecord,
    registry::{
        ChannelSummary, CheckReady, DisconnectUser, KnownClients, ListChannels, ListPulses, Pulse,
        RegistryActor, SampleMetrics, Shutdown, ToChannel,
    },
    revocation::{Listener, Revocation, Revoked},
    subscriber::Subscriber,
};
use crate::{metrics::Metrics, names::ChannelName, readiness::ReadinessCheck};

/// The broker as its callers see it; cheap to clone.
#[derive(Clone)]
pub struct Broker {
    registry: Addr<RegistryActor>,
    directory: super::directory::Directory,
    /// The other nodes, in cluster mode.
    peers: Option<Arc<dyn Peers>>,
    metrics: Arc<Metrics>,
    /// Told of every revocation carried out here.
    listeners: Arc<std::sync::RwLock<Vec<Arc<dyn Listener>>>>,
}

impl Broker {
    /// Starts `registry` (on the current arbiter) and returns its handle.
    pub fn start(registry: RegistryActor, peers: Option<Arc<dyn Peers>>) -> Self {
        let directory = registry.directory();
        let metrics = registry.metrics();
        Self {
            registry: registry.start(),
            directory,
            peers,
            metrics,
            listeners: Arc::default(),
        }
    }

    /// `listener` hears of every revocation carried out on this node.
    pub fn listen_for_revocations(&self, listener: Arc<dyn Listener>) {
        if let Ok(mut listeners) = self.listeners.write() {
            listeners.push(listener);
        }
    }

    /// Ends `revocation`'s streams on every node: this one's, and (cluster
    /// mode) the other nodes', which report what they ended (see
    /// [`Revoked`]). A cluster that cannot be told is an error, after this
    /// node's streams ended.
    pub async fn revoke(&self, revocation: &Revocation) -> Result<Revoked, BrokerError> {
        let here = self.revoke_here(revocation).await?;
        let others = match &self.peers {
            Some(peers) => peers.revoke(revocation).await?,
            None => Revoked::default(),
        };
        Ok(Revoked {
            streams: here + others.streams,
            nodes: 1 + others.nodes,
            unanswered: others.unanswered,
        })
    }

    /// Ends `revocation`'s streams on this node; answers how many streams
    /// ended (a multi-channel stream counts once).
    pub async fn revoke_here(&self, revocation: &Revocation) -> Result<usize, BrokerError> {
        if let Ok(listeners) = self.listeners.read() {
            for listener in listeners.iter() {
                listener.revoked(revocation);
            }
        }
        let answers = self
            .registry
            .send(DisconnectUser {
                user: Arc::clone(&revocation.user),
                channels: revocation.channels.clone(),
            })
            .await
            .map_err(|_| BrokerError::Unavailable)?;
        let mut ended = std::collections::HashSet::new();
        for answer in futures_util::future::join_all(answers.into_iter().map(await_reply)).await {
            // A channel that stopped meanwhile had none of its streams left.
            ended.extend(answer.unwrap_or_default());
        }
        Ok(ended.len())
    }

    /// Sends one message to `channel` (see the module docs).
    pub fn send(&self, channel: &ChannelName, message: ChannelMessage) {
        if let Err(message) = self.directory.send(channel, message) {
            self.registry.do_send(ToChannel {
                channel: channel.clone(),
                message,
            });
        }
    }

    /// Publishes one event and waits for its id (after the fan-out, or
    /// once the durable store or the shared log has it).
    pub async fn publish(
        &self,
        channel: &ChannelName,
        record: Record,
        received_at: Instant,
        copy: bool,
    ) -> Result<Published, BrokerError> {
        self.publish_as(channel, record, None, received_at, copy)
            .await
    }

    /// [`Self::publish`] under a publisher's idempotency key: a repeat of
    /// a publish with the same key (within `publish.idempotency_window`)
    /// stores and delivers nothing and is answered that publish's id; the
    /// key with another body is [`BrokerError::IdempotencyKeyReused`].
    pub async fn publish_with_key(
        &self,
        channel: &ChannelName,
        record: Record,
        idempotency: Idempotency,
        received_at: Instant,
    ) -> Result<Published, BrokerError> {
        let idempotency = Some(Box::new(idempotency));
        self.publish_as(channel, record, idempotency, received_at, false)
            .await
    }

    async fn publish_as(
        &self,
        channel: &ChannelName,
        record: Record,
        idempotency: Option<Box<Idempotency>>,
        received_at: Instant,
        copy: bool,
    ) -> Result<Published, BrokerError> {
        let (reply, answer) = oneshot::channel();
        self.send(
            channel,
            ChannelMessage::Publish(Publish {
                record,
                idempotency,
                reply: Some(reply),
                received_at,
                copy,
            }),
        );
        await_reply(answer).await
    }

    /// Up to `limit` retained events of `channel` after `after` (from the
    /// oldest retained without it), oldest first, with the same ids and
    /// gap rules as a stream's replay.
    pub async fn history(
        &self,
        channel: &ChannelName,
        after: Option<EventId>,
        limit: usize,
    ) -> Result<HistoryPage, BrokerError> {
        let (reply, answer) = oneshot::channel();
        self.send(
            channel,
            ChannelMessage::ReadHistory(ReadHistory {
                after,
                limit,
                reply,
            }),
        );
        await_reply(answer).await
    }

    /// Publishes one event without waiting for the answer.
    pub fn publish_nowait(&self, channel: &ChannelName, record: Record, copy: bool) {
        self.send(
            channel,
            ChannelMessage::Publish(Publish {
                record,
                idempotency: None,
                reply: None,
                received_at: Instant::now(),
                copy,
            }),
        );
    }

    /// Subscribes `subscriber` to `channel` from `from` (with the
    /// channel's joins and leaves when it `watches`); the answer (the
    /// replay and where live events go on) arrives on the receiver, so a
    /// stream of many channels can ask them all at once.
    pub fn subscribe(
        &self,
        channel: &ChannelName,
        subscriber: Subscriber,
        from: Option<ResumeFrom>,
        watches: bool,
    ) -> oneshot::Receiver<Result<Subscribed, BrokerError>> {
        let (reply, answer) = oneshot::channel();
        self.send(
            channel,
            ChannelMessage::Subscribe(Subscribe {
                subscriber,
                from,
                watches,
                reply,
            }),
        );
        answer
    }

    /// A stream ended: its subscriber is forgotten at once.
    pub fn unsubscribe(&self, channel: &ChannelName, subscriber_id: u64) {
        self.send(channel, ChannelMessage::Unsubscribe { subscriber_id });
    }

    /// One channel's detail; [`BrokerError::UnknownChannel`] when it does
    /// not run.
    pub async fn inspect(&self, channel: &ChannelName) -> Result<ChannelDetail, BrokerError> {
        let (reply, answer) = oneshot::channel();
        self.send(channel, ChannelMessage::Inspect { reply });
        await_reply(answer).await
    }

    /// Who is on `channel`: its connections and, when `members` is set,
    /// its listed users with theirs (at most `max_members`); in cluster
    /// mode those of every node, summed per user.
    pub async fn presence(
        &self,
        channel: &ChannelName,
        members: bool,
        max_members: usize,
    ) -> Result<ChannelPresence, BrokerError> {
        let (reply, answer) = oneshot::channel();
        self.send(channel, ChannelMessage::Presence { members, reply });
        let mut presence = await_reply(answer).await?;
        if let Some(peers) = &self.peers {
            presence.merge(peers.presence(channel, members).await?);
        }
        presence.bound(max_members);
        Ok(presence)
    }

    /// Cluster mode: another node's join or leave, for `channel`'s watchers
    /// here (nothing when the channel does not run here).
    pub fn announce(&self, channel: &ChannelName, event: PresenceEvent) {
        self.send(channel, ChannelMessage::Announce(event));
    }

    /// This node's channels (or the one named), with the other nodes'
    /// subscribers added in cluster mode; a listing of all channels also
    /// shows those only other nodes hold.
    pub async fn channels(
        &self,
        name: Option<ChannelName>,
    ) -> Result<Vec<ChannelSummary>, BrokerError> {
        let all = name.is_none();
        let mut channels = self
            .registry
            .send(ListChannels { name })
            .await
            .map_err(|_| BrokerError::Unavailable)?;
        let Some(peers) = &self.peers else {
            return Ok(channels);
        };
        let mut remote = peers.subscriber_counts().await?;
        for channel in channels.iter_mut() {
            channel.subscribers += remote.remove(&channel.name).unwrap_or(0);
        }
        if all {
            channels.extend(
                remote
                    .into_iter()
                    .map(|(name, subscribers)| ChannelSummary {
                        name,
                        subscribers,
                        ..ChannelSummary::default()
                    }),
            );
            channels.sort_by(|a, b| a.name.cmp(&b.name));
        }
        Ok(channels)
    }

    /// This node's own subscriber counts per channel (for the cluster's
    /// directory).
    pub async fn local_subscriber_counts(&self) -> Result<Vec<(String, u64)>, BrokerError> {
        let channels = self
            .registry
            .send(ListChannels { name: None })
            .await
            .map_err(|_| BrokerError::Unavailable)?;
        Ok(channels
            .into_iter()
            .filter(|c| c.subscribers > 0)
            .map(|c| (c.name, c.subscribers))
            .collect())
    }

    /// Records a client's pulse (in the cluster-wide book too, in cluster
    /// mode), counted on `channel` when it runs.
    pub async fn pulse(
        &self,
        client_id: Arc<str>,
        channel: Option<ChannelName>,
    ) -> Result<(), BrokerError> {
        if let Some(peers) = &self.peers {
            peers.record_pulse(&client_id).await?;
        }
        self.registry.do_send(Pulse { client_id, channel });
        Ok(())
    }

    /// The `limit` most recently seen clients of the pulse book,
    /// cluster-wide in cluster mode.
    pub async fn pulses(&self, limit: usize) -> Result<Vec<PulseRecord>, BrokerError> {
        if let Some(peers) = &self.peers {
            return peers.pulse_records(limit).await;
        }
        self.registry
            .send(ListPulses { limit })
            .await
            .map_err(|_| BrokerError::Unavailable)
    }

    /// Every client id the pulse book remembers.
    pub async fn known_clients(&self) -> Result<Vec<Arc<str>>, BrokerError> {
        if let Some(peers) = &self.peers {
            let clients = peers.pulse_clients().await?;
            return Ok(clients.into_iter().map(Into::into).collect());
        }
        self.registry
            .send(KnownClients)
            .await
            .map_err(|_| BrokerError::Unavailable)
    }

    /// Cluster mode: events from the bus (one append's, in seq order), for
    /// `channel` if it runs here; counted as received either way.
    pub fn deliver(&self, channel: &ChannelName, epoch: Epoch, entries: Vec<LogEntry>) {
        self.metrics.bus_received.increment(entries.len() as u64);
        self.send(channel, ChannelMessage::Delivered { epoch, entries });
    }

    /// Cluster mode: the bus (re)started carrying `channel` here without
    /// anyone waiting for it; the channel reads what it missed.
    pub fn catch_up(&self, channel: &ChannelName) {
        self.send(channel, ChannelMessage::CatchUp);
    }

    /// Refuses new work and ends every open stream; answers how many
    /// subscriptions were open.
    pub async fn shutdown(&self) -> usize {
        self.registry.send(Shutdown).await.unwrap_or(0)
    }

    /// Samples the gauges the registry keeps, waiting at most `timeout`;
    /// false when it did not answer in time.
    pub async fn sample_metrics(&self, timeout: Duration) -> bool {
        let sample = self.registry.send(SampleMetrics {
            sent_at: Instant::now(),
        });
        tokio::time::timeout(timeout, sample).await.is_ok()
    }

    /// The readiness check of the broker itself (the registry answers and
    /// is not draining).
    pub fn readiness_check(&self) -> RegistryCheck {
        RegistryCheck {
            registry: self.registry.clone(),
        }
    }
}

/// `GET /readyz`: the registry answers, and the broker is not draining.
pub struct RegistryCheck {
    registry: Addr<RegistryActor>,
}

impl ReadinessCheck for RegistryCheck {
    fn name(&self) -> &'static str {
        "registry"
    }

    fn check(&self) -> BoxFuture<'static, Result<(), String>> {
        let registry = self.registry.clone();
        Box::pin(async move {
            match registry.send(CheckReady).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(err)) => Err(err.to_string()),
                Err(_) => Err("the registry actor is gone".into()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::{broker::testing::broker, config::Settings, readiness::Readiness};

    /// A running broker is ready; once shutdown began it no longer is.
    #[actix::test]
    async fn broker_is_not_ready_once_draining() {
        let broker = broker(&Settings::defaults());
        let readiness = Readiness::new(Duration::from_secs(5)).with(broker.readiness_check());
        assert!(readiness.evaluate().await.iter().all(|c| c.ok));
        broker.shutdown().await;
        let results = readiness.evaluate().await;
        assert!(!results[0].ok);
        assert!(
            results[0]
                .error
                .as_deref()
                .unwrap()
                .contains("shutting down"),
            "{results:?}"
        );
    }
}
