//! Revocation across the cluster: `POST /users/{user}/disconnect` on one
//! node ends the user's streams on every node.
//!
//! The node that takes the request ends its own streams first (without
//! Redis), then publishes a *request* on the control channel (the bus of
//! `keys::control_channel`, which every node follows; `SPUBLISH` on a Redis
//! Cluster, so the one shard that holds it carries it). Every node that
//! receives it ends the user's streams and publishes a *report* (its node
//! id, how many streams it ended) on the same channel; the asking node
//! counts the reports addressed to it. Redis answers the publish with the
//! number of nodes it reached (the asking node among them, which notes its
//! own request as heard), so the asking node knows how many reports to
//! wait for: it waits until all came or `cluster.command_timeout` passed,
//! and says how many did not come in time ([`Revoked::unanswered`]: those
//! nodes end their streams all the same, uncounted).
//!
//! Messages are small JSON objects; a node ignores what it cannot read and
//! reports addressed to others.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use log::{debug, info, warn};
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, mpsc};

use super::{Cluster, ClusterError};
use crate::{
    broker::{
        Broker,
        revocation::{Revocation, Revoked},
    },
    names::ChannelName,
};

/// A control message (see the module docs).
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
enum Message {
    /// End `user`'s streams (those holding one of `channels`, when given).
    Request {
        id: String,
        /// The asking node's id.
        from: String,
        user: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        channels: Option<Vec<String>>,
    },
    /// What a node did for request `id` of node `to`.
    Report {
        id: String,
        to: String,
        streams: usize,
    },
}

/// The asking node's tally of one request.
#[derive(Default)]
struct Tally {
    /// Nodes the publish reached (known once Redis answered it).
    reached: Option<usize>,
    /// Nodes heard from: the reports, and this node's own request coming
    /// back.
    heard: usize,
    reports: usize,
    streams: usize,
    /// Woken at each change.
    changed: Arc<Notify>,
}

impl Tally {
    fn complete(&self) -> bool {
        self.reached.is_some_and(|reached| self.heard >= reached)
    }
}

/// This node's requests waiting for their reports.
#[derive(Default)]
pub struct Pending(Mutex<HashMap<String, Tally>>);

impl Pending {
    fn with<T>(&self, id: &str, f: impl FnOnce(&mut Tally) -> T) -> Option<T> {
        let mut tallies = self.0.lock().unwrap_or_else(|e| e.into_inner());
        tallies.get_mut(id).map(f)
    }

    fn open(&self, id: &str) -> Arc<Notify> {
        let mut tallies = self.0.lock().unwrap_or_else(|e| e.into_inner());
        Arc::clone(&tallies.entry(id.to_owned()).or_default().changed)
    }

    fn close(&self, id: &str) -> Option<Tally> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).remove(id)
    }

    /// Notes a change to `id`'s tally and wakes its waiter.
    fn note(&self, id: &str, f: impl FnOnce(&mut Tally)) {
        self.with(id, |tally| {
            f(tally);
            tally.changed.notify_one();
        });
    }
}

/// Has every other node end `revocation`'s streams; answers what those
/// that reported in time ended.
pub async fn ask(cluster: &Cluster, revocation: &Revocation) -> Result<Revoked, ClusterError> {
    let id = uuid::Uuid::new_v4().to_string();
    let message = Message::Request {
        id: id.clone(),
        from: cluster.node_id().to_owned(),
        user: revocation.user.to_string(),
        channels: revocation
            .channels
            .as_ref()
            .map(|channels| channels.iter().map(|c| c.as_str().to_owned()).collect()),
    };
    let pending = &cluster.inner.revocations;
    let changed = pending.open(&id);
    let outcome = async {
        let reached = publish(cluster, &message).await?;
        pending.note(&id, |tally| tally.reached = Some(reached));
        let deadline = tokio::time::Instant::now() + cluster.inner.command_timeout;
        while pending.with(&id, |tally| !tally.complete()) == Some(true) {
            if tokio::time::timeout_at(deadline, changed.notified())
                .await
                .is_err()
            {
                break;
            }
        }
        Ok::<(), ClusterError>(())
    }
    .await;
    let tally = pending.close(&id).unwrap_or_default();
    outcome?;
    let reached = tally.reached.unwrap_or(0);
    let unanswered = reached.saturating_sub(tally.heard);
    if unanswered > 0 {
        warn!(
            "revocation reports missing user={} nodes={unanswered} (they end its streams uncounted)",
            revocation.user
        );
    }
    Ok(Revoked {
        streams: tally.streams,
        nodes: tally.reports,
        unanswered,
    })
}

/// Publishes a control message; answers how many nodes it reached.
async fn publish(cluster: &Cluster, message: &Message) -> Result<usize, ClusterError> {
    cluster
        .publish_json(cluster.keys().control(), message)
        .await
}

/// Handles the control messages the bus receives, until the task is
/// aborted: requests of other nodes are carried out here (each in a task of
/// its own) and reported; reports to this node go to their tally.
pub async fn run(cluster: Cluster, broker: Broker, mut messages: mpsc::Receiver<Vec<u8>>) {
    while let Some(payload) = messages.recv().await {
        let Ok(message) = serde_json::from_slice::<Message>(&payload) else {
            debug!("cluster control message ignored reason=unreadable");
            continue;
        };
        match message {
            Message::Request { id, from, .. } if from == cluster.node_id() => {
                cluster
                    .inner
                    .revocations
                    .note(&id, |tally| tally.heard += 1);
            }
            Message::Request {
                id,
                from,
                user,
                channels,
            } => {
                let (cluster, broker) = (cluster.clone(), broker.clone());
                actix::spawn(async move {
                    carry_out(&cluster, &broker, id, from, user, channels).await;
                });
            }
            Message::Report { id, to, streams } if to == cluster.node_id() => {
                cluster.inner.revocations.note(&id, |tally| {
                    tally.heard += 1;
                    tally.reports += 1;
                    tally.streams += streams;
                });
            }
            Message::Report { .. } => {}
        }
    }
}

/// Ends the streams another node's request names here, and reports.
async fn carry_out(
    cluster: &Cluster,
    broker: &Broker,
    id: String,
    from: String,
    user: String,
    channels: Option<Vec<String>>,
) {
    let revocation = Revocation {
        user: user.into(),
        // A name that does not parse names no channel of ours.
        channels: channels.map(|names| {
            names
                .iter()
                .filter_map(|name| ChannelName::parse(name).ok())
                .collect()
        }),
    };
    let streams = match broker.revoke_here(&revocation).await {
        Ok(streams) => streams,
        Err(err) => {
            warn!(
                "revocation failed user={} from={from} error={err}",
                revocation.user
            );
            return;
        }
    };
    info!(
        "streams revoked user={} from={from} streams={streams}",
        revocation.user
    );
    let report = Message::Report {
        id,
        to: from,
        streams,
    };
    if let Err(err) = publish(cluster, &report).await {
        warn!("revocation report not sent error={err}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Requests and reports read back as written; a request without
    /// channels names none.
    #[test]
    fn messages_round_trip() {
        let request = Message::Request {
            id: "1".into(),
            from: "a".into(),
            user: "u".into(),
            channels: None,
        };
        let text = serde_json::to_string(&request).expect("JSON");
        assert_eq!(text, r#"{"kind":"request","id":"1","from":"a","user":"u"}"#);
        let report: Message =
            serde_json::from_str(r#"{"kind":"report","id":"1","to":"a","streams":3}"#)
                .expect("a report");
        assert!(matches!(report, Message::Report { streams: 3, .. }));
    }

    /// A tally is complete once every node the publish reached was heard.
    #[test]
    fn tally_completes() {
        let pending = Pending::default();
        pending.open("r");
        pending.note("r", |t| t.heard += 1);
        assert_eq!(pending.with("r", |t| t.complete()), Some(false));
        pending.note("r", |t| t.reached = Some(2));
        assert_eq!(pending.with("r", |t| t.complete()), Some(false));
        pending.note("r", |t| t.heard += 1);
        assert_eq!(pending.with("r", |t| t.complete()), Some(true));
        assert!(pending.close("r").is_some());
        assert!(pending.close("r").is_none());
    }
}
