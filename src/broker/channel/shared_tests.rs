//! A channel on a shared log (cluster mode), against a log in memory that
//! carries events back only to the channels that follow it.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, OnceLock},
    time::Duration,
};

use futures_util::future::BoxFuture;
use tokio::sync::Semaphore;

use crate::{
    broker::{
        Broker, BrokerError, EventId, RegistryActor, await_reply,
        event::Epoch,
        idempotency::{IdempotencyKey, Logged, RequestDigest},
        log::{FetchFrom, Fetched, LogEntry, LogError, SharedLog, Submission},
        subscriber::Delivery,
        testing::{send_keyed, send_publish, subscribe},
    },
    config::Settings,
    names::ChannelName,
};

const EPOCH: u64 = 7;

/// A shared log in memory. Appends wait for a permit of `gate` (none are
/// given until a test adds them), so a test can hold one in flight.
struct MemoryLog {
    entries: Mutex<Vec<LogEntry>>,
    /// Followers per channel.
    follows: Mutex<HashMap<ChannelName, i64>>,
    /// The size of each append, in order.
    appends: Mutex<Vec<usize>>,
    /// Idempotency keys, as the Redis script keeps them (no window here).
    keys: Mutex<HashMap<IdempotencyKey, (RequestDigest, EventId)>>,
    gate: Semaphore,
    broker: OnceLock<Broker>,
}

impl MemoryLog {
    fn new(open: bool) -> Arc<Self> {
        Arc::new(Self {
            entries: Mutex::default(),
            follows: Mutex::default(),
            appends: Mutex::default(),
            keys: Mutex::default(),
            gate: Semaphore::new(if open { Semaphore::MAX_PERMITS } else { 0 }),
            broker: OnceLock::new(),
        })
    }

    fn followers(&self, channel: &ChannelName) -> i64 {
        self.follows
            .lock()
            .unwrap()
            .get(channel)
            .copied()
            .unwrap_or(0)
    }
}

impl SharedLog for Arc<MemoryLog> {
    fn append(
        &self,
        channel: &ChannelName,
        submissions: Arc<[Submission]>,
        _seen: Option<EventId>,
    ) -> BoxFuture<'static, Result<Vec<Logged>, LogError>> {
        let (log, channel) = (Arc::clone(self), channel.clone());
        Box::pin(async move {
            log.gate
                .acquire()
                .await
                .expect("the gate stays open")
                .forget();
            let (added, logged) = {
                let mut entries = log.entries.lock().unwrap();
                let mut keys = log.keys.lock().unwrap();
                let (mut added, mut logged) = (Vec::new(), Vec::new());
                for Submission {
                    record,
                    idempotency,
                } in submissions.iter().cloned()
                {
                    let known = idempotency.as_ref().and_then(|i| keys.get(&i.key));
                    match (known, &idempotency) {
                        (Some((digest, id)), Some(i)) if *digest == i.digest => {
                            logged.push(Logged::Repeat(*id));
                            continue;
                        }
                        (Some(_), _) => {
                            logged.push(Logged::KeyReused);
                            continue;
                        }
                        _ => {}
                    }
                    let id = EventId {
                        epoch: Epoch::from_raw(EPOCH),
                        seq: entries.len() as u64 + 1,
                    };
                    if let Some(i) = idempotency {
                        keys.insert(i.key, (i.digest, id));
                    }
                    let entry = LogEntry {
                        seq: id.seq,
                        published_ms: 0,
                        record,
                    };
                    entries.push(entry.clone());
                    added.push(entry);
                    logged.push(Logged::New(id));
                }
                (added, logged)
            };
            log.appends.lock().unwrap().push(added.len());
            if log.followers(&channel) > 0 && !added.is_empty() {
                let broker = log.broker.get().expect("the test set the broker");
                broker.deliver(&channel, Epoch::from_raw(EPOCH), added);
            }
            Ok(logged)
        })
    }

    fn fetch(
        &self,
        _: &ChannelName,
        from: FetchFrom,
    ) -> BoxFuture<'static, Result<Fetched, LogError>> {
        let entries = self.entries.lock().unwrap().clone();
        let head = entries.len() as u64;
        let after = match from {
            FetchFrom::Head => head,
            FetchFrom::All => 0,
            FetchFrom::After(id) | FetchFrom::Since(id) => id.seq,
            FetchFrom::Page { after, .. } => after.map_or(0, |id| id.seq),
        };
        let entries = entries.into_iter().filter(|e| e.seq > after).collect();
        Box::pin(std::future::ready(Ok(Fetched {
            epoch: Epoch::from_raw(EPOCH),
            head,
            entries,
        })))
    }

    fn follow(&self, channel: &ChannelName) -> BoxFuture<'static, Result<(), LogError>> {
        *self
            .follows
            .lock()
            .unwrap()
            .entry(channel.clone())
            .or_default() += 1;
        Box::pin(std::future::ready(Ok(())))
    }

    fn unfollow(&self, channel: &ChannelName) {
        *self
            .follows
            .lock()
            .unwrap()
            .entry(channel.clone())
            .or_default() -= 1;
    }

    fn receiving(&self) -> bool {
        true
    }
}

/// A broker whose channels use `log`, ticking every 20 ms.
fn broker_on(log: &Arc<MemoryLog>) -> Broker {
    let mut settings = Settings::defaults();
    settings.stream.heartbeat = Duration::from_millis(20);
    let registry = RegistryActor::new(&settings).with_shared(Arc::new(Arc::clone(log)));
    let broker = Broker::start(registry, None);
    let _ = log.broker.set(broker.clone());
    broker
}

fn seq_of(delivery: Delivery) -> u64 {
    match delivery {
        Delivery::Event(event) => event.id.seq,
        Delivery::Heartbeat => panic!("expected an event"),
    }
}

/// Publishes that come while an append is in flight go together as the next one, in arrival order.
#[actix::test]
async fn publishes_during_an_append_go_together_in_order() {
    let log = MemoryLog::new(false);
    let broker = broker_on(&log);
    let channel = ChannelName::parse("busy").unwrap();
    let (_, _subscriber, mut rx) = subscribe(&broker, &channel, 16, None).await;

    let answers: Vec<_> = (1..=5)
        .map(|n| send_publish(&broker, &channel, &n.to_string()))
        .collect();
    // Every publish reached the channel (messages are handled in order).
    broker.inspect(&channel).await.unwrap();
    log.gate.add_permits(2);

    let mut ids = Vec::new();
    for answer in answers {
        ids.push(await_reply(answer).await.expect("stored").id.seq);
    }
    assert_eq!(ids, [1, 2, 3, 4, 5], "numbered in arrival order");
    assert_eq!(
        *log.appends.lock().unwrap(),
        [1, 4],
        "one in flight, the rest together"
    );
    for seq in 1..=5 {
        assert_eq!(seq_of(rx.recv().await.unwrap()), seq);
    }
}

/// A channel follows the log from its first subscriber until a tick finds it without one; publishing alone does not follow.
#[actix::test]
async fn channel_follows_while_it_has_subscribers() {
    let log = MemoryLog::new(true);
    let broker = broker_on(&log);
    let channel = ChannelName::parse("watched").unwrap();
    await_reply(send_publish(&broker, &channel, "1"))
        .await
        .unwrap();
    assert_eq!(log.followers(&channel), 0, "a publisher does not follow");

    let (subscribed, subscriber, mut rx) = subscribe(&broker, &channel, 16, None).await;
    assert_eq!(subscribed.head.seq, 1);
    assert_eq!(log.followers(&channel), 1);
    await_reply(send_publish(&broker, &channel, "2"))
        .await
        .unwrap();
    assert_eq!(seq_of(rx.recv().await.unwrap()), 2);

    broker.unsubscribe(&channel, subscriber.id);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while log.followers(&channel) != 0 {
        assert!(tokio::time::Instant::now() < deadline, "never unfollowed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // A new subscriber follows again and starts from the log's head.
    await_reply(send_publish(&broker, &channel, "3"))
        .await
        .unwrap();
    let (subscribed, _again, _rx) = subscribe(&broker, &channel, 16, None).await;
    assert_eq!(subscribed.head.seq, 3);
    assert_eq!(log.followers(&channel), 1);
}

/// Repeats in one append and in a later one are answered the first id; the log stores each key's event once and reads it back as history.
#[actix::test]
async fn repeats_through_a_shared_log_store_nothing() {
    let log = MemoryLog::new(false);
    let broker = broker_on(&log);
    let channel = ChannelName::parse("jobs").unwrap();
    let (_, _subscriber, mut rx) = subscribe(&broker, &channel, 16, None).await;
    let answers: Vec<_> = [("a", "k1"), ("a", "k1"), ("b", "k1"), ("c", "k2")]
        .into_iter()
        .map(|(data, key)| send_keyed(&broker, &channel, data, Some(key)))
        .collect();
    broker.inspect(&channel).await.unwrap();
    log.gate.add_permits(3);
    let mut answers = answers.into_iter();
    let first = await_reply(answers.next().unwrap()).await.unwrap().id;
    let mut rest = Vec::new();
    for answer in answers {
        rest.push(await_reply(answer).await.map(|p| p.id));
    }
    assert_eq!(
        rest[0],
        Ok(first),
        "a repeat sent while the first was in flight"
    );
    assert_eq!(rest[1], Err(BrokerError::IdempotencyKeyReused));
    let second = rest[2].clone().unwrap();
    assert_eq!(second.seq, first.seq + 1);
    let later = await_reply(send_keyed(&broker, &channel, "a", Some("k1")))
        .await
        .unwrap();
    assert_eq!(later.id, first, "a repeat in a later append");
    assert_eq!(seq_of(rx.recv().await.unwrap()), first.seq);
    assert_eq!(seq_of(rx.recv().await.unwrap()), second.seq);
    let page = broker.history(&channel, None, 10).await.unwrap();
    let seqs: Vec<u64> = page.events.iter().map(|e| e.id.seq).collect();
    assert_eq!(seqs, [first.seq, second.seq]);
    let after = broker.history(&channel, Some(first), 10).await.unwrap();
    assert_eq!(after.events.len(), 1);
}

/// A node delivers its own publishes from the log's answer only when they come right after what it delivered; every other case is the bus's.
#[test]
fn own_publishes_go_out_from_the_answer_only_when_next() {
    use super::shared::SharedCursor;
    use crate::broker::codec::PlainCodec;

    let channel = ChannelName::parse("local").unwrap();
    let epoch = Epoch::from_raw(EPOCH);
    let mut cursor = SharedCursor::new(Arc::new(MemoryLog::new(true)));
    assert!(cursor.stored(epoch, 1, 1).is_empty(), "not read yet");
    let read = Fetched {
        epoch,
        head: 4,
        entries: Vec::new(),
    };
    cursor.joined(&channel, &PlainCodec, &read, None);

    assert_eq!(cursor.stored(epoch, 5, 2), 5..7);
    assert_eq!(cursor.head().seq, 6);
    assert!(
        cursor.stored(epoch, 6, 1).is_empty(),
        "the bus brought it first"
    );
    assert!(
        cursor.stored(epoch, 9, 1).is_empty(),
        "7 and 8 are not here yet"
    );
    let other = Epoch::from_raw(EPOCH + 1);
    assert!(cursor.stored(other, 1, 1).is_empty(), "a new life");
    assert_eq!(cursor.head().seq, 6);
    assert_eq!(cursor.stored(epoch, 7, 1), 7..8);
}
