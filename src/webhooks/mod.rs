//! Occupancy webhooks (`[webhooks]`, `docs/webhooks.md`): `channel.occupied`,
//! `channel.vacated` and, opted in, `member.joined` / `member.left`, POSTed
//! as JSON to every `webhooks.url`, signed as Standard Webhooks
//! ([`signature`]), retried with backoff and in order per channel
//! ([`sender`]), kept on disk while pending when there is a data dir
//! ([`pending`]).
//!
//! An adapter like `store`: the channel actors tell the broker's
//! [`OccupancyWatch`] what changed on this node, and [`Webhooks`]
//! implements it. It never makes an actor wait: a change goes into a
//! bounded queue ([`INTAKE_CAPACITY`]; beyond it the change is dropped,
//! logged and counted). Its intake task turns changes into transitions
//! ([`occupancy`], with the `vacated_after` grace), makes each
//! transition's webhook once (its id and body), writes it to the pending
//! file (one commit for all that arrived together) and hands a [`Job`] per
//! URL to that URL's dispatcher.

pub mod job;
pub mod occupancy;
pub mod pending;
pub mod sender;
pub mod shared;
pub mod signature;

use std::{
    path::Path,
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use tokio::sync::mpsc;

use self::{
    job::{Job, body},
    occupancy::{Occupancy, kind},
    pending::{Mark, Pending},
    sender::{Delivery, Dispatcher},
    signature::Signer,
};
use crate::{
    broker::occupancy::{OccupancyChange, OccupancyWatch, SharedOccupancy},
    config::{WebhookSettings, signing_key},
    metrics::Metrics,
    names::ChannelName,
};

/// Changes waiting for the intake task. Connects and disconnects feed it,
/// so it is sized for a reconnect storm (a deploy's 10,000 clients coming
/// back at once make ~20,000 changes on as many channels at most); beyond
/// it a change is dropped (`sse_broker_webhooks_dropped_total`, a warning)
/// rather than holding up a channel actor.
pub const INTAKE_CAPACITY: usize = 65_536;

/// Changes the intake task takes at once: their webhooks share one commit
/// of the pending file.
const INTAKE_BATCH: usize = 256;

/// The webhooks' handle (see the module docs); cheap to share.
pub struct Webhooks {
    intake: mpsc::Sender<(ChannelName, OccupancyChange)>,
    /// Whether member changes become webhooks (else they are not queued).
    members: bool,
    metrics: Arc<Metrics>,
}

/// Why the webhooks could not start.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("webhooks.secret is not a Standard Webhooks secret (whsec_<base64>)")]
    Secret,
    #[error("the webhook HTTP client cannot start: {0}")]
    Client(String),
    #[error("the pending webhooks file cannot be opened: {0}")]
    Pending(String),
}

impl Webhooks {
    /// Starts the intake task and a dispatcher per URL (on the current
    /// arbiter), after handing the dispatchers what was pending in
    /// `data_dir`; `None` when webhooks are off. In a cluster (`shared`)
    /// the cluster decides and queues the transitions instead
    /// ([`shared`]; a lease is renewed every `renew_every`). An `https://`
    /// URL needs the process's default TLS provider (startup installs it).
    pub fn start(
        settings: &WebhookSettings,
        data_dir: Option<&Path>,
        metrics: &Arc<Metrics>,
        shared: Option<(Arc<dyn SharedOccupancy>, Duration)>,
    ) -> Result<Option<Arc<Self>>, WebhookError> {
        if !settings.enabled() {
            return Ok(None);
        }
        let key = signing_key(&settings.secret).ok_or(WebhookError::Secret)?;
        let pending = match shared {
            Some(_) => Pending::default(),
            None => Pending::open(data_dir).map_err(WebhookError::Pending)?,
        };
        let client = reqwest::Client::builder()
            // A webhook URL is exact: a redirect is a failed attempt.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("sse-broker/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|err| WebhookError::Client(err.to_string()))?;
        let delivery = Arc::new(Delivery {
            client,
            signer: Signer::new(key),
            settings: settings.clone(),
            metrics: Arc::clone(metrics),
            pending,
        });
        let webhooks = |intake| {
            Some(Arc::new(Self {
                intake,
                members: settings.sends_members(),
                metrics: Arc::clone(metrics),
            }))
        };
        if let Some((shared, renew_every)) = shared {
            log::info!(
                "webhooks urls={} events={} vacated_after={:?} decided_by=cluster",
                settings.url.len(),
                settings.events.join(","),
                settings.vacated_after
            );
            let intake = self::shared::start(shared, delivery, renew_every, INTAKE_CAPACITY);
            return Ok(webhooks(intake));
        }
        let dispatchers: Vec<(String, Dispatcher)> = settings
            .url
            .iter()
            .map(|url| (url.clone(), Dispatcher::start(Arc::clone(&delivery))))
            .collect();
        let left = delivery.pending.load();
        let next_seq = Pending::next_seq(&left);
        if !left.is_empty() {
            log::info!("pending webhooks resumed count={}", left.len());
        }
        for job in left {
            let Some((_, dispatcher)) = dispatchers.iter().find(|(url, _)| *url == job.url) else {
                log::warn!(
                    "pending webhook dropped id={} url={} reason=url_no_longer_configured",
                    job.id,
                    job.url
                );
                let pending = delivery.pending.clone();
                actix::spawn(async move { pending.remove(job.seq).await });
                continue;
            };
            // What was accepted before the restart is all taken again.
            if dispatcher.take(job, usize::MAX, metrics).is_err() {
                log::warn!("pending webhook not resumed reason=dispatcher_gone");
            }
        }
        // Channels announced occupied before a restart are vacating now:
        // their subscribers have a grace to come back.
        let mut occupancy = Occupancy::new(settings.vacated_after);
        let remembered = delivery.pending.occupied();
        if !remembered.is_empty() {
            log::info!(
                "occupied channels resumed as vacating count={}",
                remembered.len()
            );
        }
        occupancy.resume(
            remembered
                .iter()
                .filter_map(|name| ChannelName::parse_recorded(name).ok()),
            Instant::now(),
        );
        let (tx, rx) = mpsc::channel(INTAKE_CAPACITY);
        actix::spawn(intake(
            rx,
            IntakeTask {
                occupancy,
                dispatchers,
                delivery,
                seq: next_seq,
            },
        ));
        log::info!(
            "webhooks urls={} events={} vacated_after={:?}",
            settings.url.len(),
            settings.events.join(","),
            settings.vacated_after
        );
        Ok(webhooks(tx))
    }
}

impl OccupancyWatch for Webhooks {
    fn changed(&self, channel: &ChannelName, change: OccupancyChange) {
        let member = matches!(
            change,
            OccupancyChange::Joined { .. } | OccupancyChange::Left { .. }
        );
        if member && !self.members {
            return;
        }
        if self.intake.try_send((channel.clone(), change)).is_err() {
            self.metrics.webhooks_dropped.increment(1);
            log::warn!(
                "webhook change dropped channel={channel} reason=intake_full capacity={INTAKE_CAPACITY}"
            );
        }
    }
}

/// What the intake task keeps.
struct IntakeTask {
    occupancy: Occupancy,
    dispatchers: Vec<(String, Dispatcher)>,
    delivery: Arc<Delivery>,
    /// The next job's seq.
    seq: u64,
}

/// The intake task: turns changes into transitions, transitions into
/// jobs, jobs into dispatchers' work; wakes for due vacancies.
async fn intake(mut rx: mpsc::Receiver<(ChannelName, OccupancyChange)>, mut state: IntakeTask) {
    let mut changes = Vec::with_capacity(INTAKE_BATCH);
    loop {
        let deadline = state.occupancy.next_deadline();
        let wake = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        let mut transitions = Vec::new();
        tokio::select! {
            taken = rx.recv_many(&mut changes, INTAKE_BATCH) => {
                if taken == 0 {
                    return;
                }
                let now = Instant::now();
                for (channel, change) in changes.drain(..) {
                    if let Some(transition) = state.occupancy.changed(&channel, change, now) {
                        transitions.push((channel, transition));
                    }
                }
            },
            () = wake => {
                for channel in state.occupancy.due(Instant::now()) {
                    transitions.push((channel, OccupancyChange::Vacated));
                }
            }
        }
        state.send(transitions).await;
    }
}

impl IntakeTask {
    /// Makes the transitions' webhooks (those of a configured type), keeps
    /// them (on disk, in one commit, with a data dir) and hands them to
    /// every URL's dispatcher; one beyond `webhooks.max_pending` is
    /// dropped and counted.
    async fn send(&mut self, transitions: Vec<(ChannelName, OccupancyChange)>) {
        let settings = &self.delivery.settings;
        let metrics = &self.delivery.metrics;
        let mut jobs: Vec<(usize, Job)> = Vec::new();
        // Jobs of this batch per dispatcher: they count against its room
        // before it takes them.
        let mut planned = vec![0usize; self.dispatchers.len()];
        let mut marks: Vec<Mark> = Vec::new();
        for (channel, transition) in transitions {
            match transition {
                OccupancyChange::Occupied => marks.push((channel.to_string(), true)),
                OccupancyChange::Vacated => marks.push((channel.to_string(), false)),
                OccupancyChange::Joined { .. } | OccupancyChange::Left { .. } => {}
            }
            if !settings.sends(kind(&transition)) {
                continue;
            }
            let id = format!("msg_{}", uuid::Uuid::new_v4().simple());
            let body = body(&channel, &transition, SystemTime::now());
            log::debug!(
                "webhook made id={id} type={} channel={channel}",
                kind(&transition)
            );
            for (at, (url, dispatcher)) in self.dispatchers.iter().enumerate() {
                if !dispatcher.has_room(settings.max_pending.saturating_sub(planned[at])) {
                    metrics.webhooks_dropped.increment(1);
                    log::warn!(
                        "webhook dropped id={id} channel={channel} url={url} reason=max_pending max={}",
                        settings.max_pending
                    );
                    continue;
                }
                jobs.push((
                    at,
                    Job {
                        seq: self.seq,
                        url: url.clone(),
                        id: id.clone(),
                        channel: channel.to_string(),
                        body: body.clone(),
                    },
                ));
                planned[at] += 1;
                self.seq = self.seq.saturating_add(1);
            }
        }
        if jobs.is_empty() && marks.is_empty() {
            return;
        }
        let kept: Vec<Job> = jobs.iter().map(|(_, job)| job.clone()).collect();
        self.delivery.pending.save(&kept, &marks).await;
        for (at, job) in jobs {
            let (url, dispatcher) = &self.dispatchers[at];
            // Only this task adds jobs: the room counted above is still there.
            if let Err(job) = dispatcher.take(job, usize::MAX, metrics) {
                log::warn!(
                    "webhook dropped id={} url={url} reason=dispatcher_gone",
                    job.id
                );
                self.delivery.pending.remove(job.seq).await;
            }
        }
    }
}
