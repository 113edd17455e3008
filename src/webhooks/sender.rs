//! Delivering webhooks to one URL: a [`Dispatcher`] per URL, whose task
//! keeps a queue per channel and sends the head of each, so a channel's
//! webhooks arrive in order while a slow or failing channel holds up no
//! other (at most [`MAX_IN_FLIGHT`] channels at once). Each webhook is
//! tried until the receiver answers 2xx, answers `410 Gone` (given up at
//! once: the receiver says it wants no more), `webhooks.max_attempts` ran
//! out or its first attempt is older than `webhooks.max_retry_age`. Any
//! other answer, a redirect, a timeout (`webhooks.timeout`) or a refused
//! connection is a failed attempt, retried after `webhooks.backoff_base`,
//! doubled per attempt up to `webhooks.backoff_max`, each wait with up to
//! a quarter of random jitter: at-least-once, so a receiver deduplicates
//! by `webhook-id`. Nothing here waits on a channel actor or a publish:
//! the actors only queued the change.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use futures_util::{StreamExt, stream::FuturesUnordered};
use tokio::sync::mpsc;

use super::{
    job::Job,
    pending::Pending,
    signature::{self, Signer},
};
use crate::{config::WebhookSettings, metrics::Metrics};

/// Channels whose webhooks are being sent to one URL at once: enough for a
/// receiver that answers in 100 ms to take ~300 a second, few enough not
/// to open hundreds of connections to it.
pub const MAX_IN_FLIGHT: usize = 32;

/// What every dispatcher shares.
pub struct Delivery {
    pub client: reqwest::Client,
    pub signer: Signer,
    pub settings: WebhookSettings,
    pub metrics: Arc<Metrics>,
    pub pending: Pending,
}

/// The way to one URL's delivery task.
pub struct Dispatcher {
    tx: mpsc::UnboundedSender<Job>,
    /// Jobs queued or being sent (bounded by `webhooks.max_pending`: the
    /// channel is unbounded, this count is its bound).
    waiting: Arc<AtomicUsize>,
}

impl Dispatcher {
    /// Starts the task that delivers one URL's jobs (each names its URL),
    /// on the current arbiter.
    pub fn start(delivery: Arc<Delivery>) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let waiting = Arc::new(AtomicUsize::new(0));
        actix::spawn(run(rx, delivery, Arc::clone(&waiting)));
        Self { tx, waiting }
    }

    /// Whether another job fits under `max` waiting ones.
    pub fn has_room(&self, max: usize) -> bool {
        self.waiting.load(Ordering::Acquire) < max
    }

    /// Takes `job` unless `max` are waiting already (then it is handed
    /// back); counted as pending once taken.
    pub fn take(&self, job: Job, max: usize, metrics: &Metrics) -> Result<(), Job> {
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= max {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(job);
        }
        match self.tx.send(job) {
            Ok(()) => {
                metrics.webhooks_pending.increment(1.0);
                Ok(())
            }
            Err(returned) => {
                self.waiting.fetch_sub(1, Ordering::AcqRel);
                Err(returned.0)
            }
        }
    }
}

/// How a webhook's delivery ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Sent,
    GivenUp,
}

impl Outcome {
    /// Counts a webhook whose delivery to one URL ended: no longer
    /// pending, and sent or failed. (Why it was given up, [`deliver`]
    /// logged.)
    pub fn settle(self, metrics: &Metrics) {
        metrics.webhooks_pending.decrement(1.0);
        match self {
            Outcome::Sent => metrics.webhooks_sent.increment(1),
            Outcome::GivenUp => metrics.webhooks_failed.increment(1),
        }
    }
}

/// The task of one URL (see the module docs).
async fn run(
    mut jobs: mpsc::UnboundedReceiver<Job>,
    delivery: Arc<Delivery>,
    waiting: Arc<AtomicUsize>,
) {
    let mut queues: HashMap<String, VecDeque<Job>> = HashMap::new();
    // Channels with a queued head and none in flight, waiting for room.
    let mut ready: VecDeque<String> = VecDeque::new();
    let mut busy: HashSet<String> = HashSet::new();
    let mut running = FuturesUnordered::new();
    let mut open = true;
    loop {
        tokio::select! {
            job = jobs.recv(), if open => match job {
                Some(job) => {
                    let channel = job.channel.clone();
                    let queue = queues.entry(channel.clone()).or_default();
                    queue.push_back(job);
                    if queue.len() == 1 && !busy.contains(&channel) {
                        ready.push_back(channel);
                    }
                }
                None => open = false,
            },
            Some((channel, outcome)) = running.next(), if !running.is_empty() => {
                busy.remove(&channel);
                let finished: Option<Job> = queues.get_mut(&channel).and_then(VecDeque::pop_front);
                if queues.get(&channel).is_some_and(|q| !q.is_empty()) {
                    ready.push_back(channel);
                } else {
                    queues.remove(&channel);
                }
                if let Some(job) = finished {
                    delivery.pending.remove(job.seq).await;
                }
                waiting.fetch_sub(1, Ordering::AcqRel);
                Outcome::settle(outcome, &delivery.metrics);
            },
            else => break,
        }
        while running.len() < MAX_IN_FLIGHT
            && let Some(channel) = ready.pop_front()
        {
            let Some(job) = queues.get(&channel).and_then(VecDeque::front).cloned() else {
                continue;
            };
            busy.insert(channel.clone());
            let delivery = Arc::clone(&delivery);
            running.push(async move { (channel, deliver(&delivery, &job).await) });
        }
    }
}

/// What a failed attempt says about the next.
enum Failure {
    /// Try again later.
    Retry(String),
    /// `410 Gone`: the receiver wants no more of it.
    Gone,
}

/// Tries one webhook until it is accepted or given up.
pub async fn deliver(delivery: &Delivery, job: &Job) -> Outcome {
    let settings = &delivery.settings;
    let first = Instant::now();
    let mut attempt: u32 = 1;
    loop {
        let why = match attempt_once(delivery, job).await {
            Ok(()) => {
                log::debug!(
                    "webhook sent id={} channel={} url={} attempt={attempt}",
                    job.id,
                    job.channel,
                    job.url
                );
                return Outcome::Sent;
            }
            Err(Failure::Gone) => {
                log::warn!(
                    "webhook refused id={} channel={} url={} status=410",
                    job.id,
                    job.channel,
                    job.url
                );
                return Outcome::GivenUp;
            }
            Err(Failure::Retry(why)) => why,
        };
        let wait = backoff(settings, attempt, fastrand::f64());
        if attempt >= settings.max_attempts
            || first.elapsed().saturating_add(wait) > settings.max_retry_age
        {
            log::warn!(
                "webhook failed id={} channel={} url={} attempts={attempt} reason={why}",
                job.id,
                job.channel,
                job.url
            );
            return Outcome::GivenUp;
        }
        log::info!(
            "webhook retried id={} channel={} url={} attempt={attempt} reason={why} wait_ms={}",
            job.id,
            job.channel,
            job.url,
            wait.as_millis()
        );
        delivery.metrics.webhooks_retried.increment(1);
        tokio::time::sleep(wait).await;
        attempt = attempt.saturating_add(1);
    }
}

/// One POST of `job`, signed now.
async fn attempt_once(delivery: &Delivery, job: &Job) -> Result<(), Failure> {
    let timestamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let signed = delivery
        .signer
        .sign(&job.id, timestamp, job.body.as_bytes());
    let response = delivery
        .client
        .post(&job.url)
        .header("content-type", "application/json")
        .header(signature::ID, &job.id)
        .header(signature::TIMESTAMP, timestamp.to_string())
        .header(signature::SIGNATURE, signed)
        .body(job.body.clone())
        .timeout(delivery.settings.timeout)
        .send()
        .await
        .map_err(|err| Failure::Retry(err.to_string().replace(' ', "_")))?;
    match response.status().as_u16() {
        200..=299 => Ok(()),
        410 => Err(Failure::Gone),
        status => Err(Failure::Retry(format!("status_{status}"))),
    }
}

/// The wait after failed attempt `attempt` (1 for the first):
/// `backoff_base` doubled per attempt, at most `backoff_max`, plus
/// `jitter` (0 to 1) times a quarter of it.
fn backoff(settings: &WebhookSettings, attempt: u32, jitter: f64) -> Duration {
    let doubled = settings
        .backoff_base
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(30));
    let wait = doubled.min(settings.backoff_max);
    // At most a quarter more: the product cannot overflow.
    wait.saturating_add((wait / 4).mul_f64(jitter.clamp(0.0, 1.0)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;

    /// The wait doubles per attempt up to its maximum, with at most a quarter more of jitter.
    #[test]
    fn backoff_doubles_up_to_the_maximum() {
        let mut settings = Settings::defaults().webhooks;
        settings.backoff_base = Duration::from_secs(1);
        settings.backoff_max = Duration::from_secs(10);
        let wait = |attempt, jitter| backoff(&settings, attempt, jitter);
        assert_eq!(wait(1, 0.0), Duration::from_secs(1));
        assert_eq!(wait(2, 0.0), Duration::from_secs(2));
        assert_eq!(wait(4, 0.0), Duration::from_secs(8));
        assert_eq!(wait(5, 0.0), Duration::from_secs(10));
        assert_eq!(wait(40, 0.0), Duration::from_secs(10));
        assert_eq!(wait(1, 1.0), Duration::from_millis(1250));
    }
}
