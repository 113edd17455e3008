//! The store with the channel actors, in process: order under concurrent
//! publishes, both sync policies, and a channel that stopped when idle and
//! comes back from disk.

use std::time::{Duration, Instant};

use std::sync::Arc;

use tokio::sync::mpsc;

use crate::{
    broker::{
        Broker, RegistryActor, ResumeFrom, await_reply,
        subscriber::Delivery,
        testing::{send_publish, send_subscribe, subscribe},
    },
    config::{Settings, SyncPolicy},
    metrics::Metrics,
    names::ChannelName,
    store::Store,
};

fn settings(dir: &std::path::Path, sync: SyncPolicy) -> Settings {
    let mut settings = Settings::defaults();
    settings.history.data_dir = dir.to_owned();
    settings.history.sync = sync;
    settings.history.sync_interval = Duration::from_millis(20);
    settings.stream.heartbeat = Duration::from_millis(50);
    settings
}

fn registry(settings: &Settings) -> (Broker, Store) {
    let store = Store::open(&settings.history, &settings.publish, &Metrics::detached())
        .expect("the store opens");
    let registry = RegistryActor::new(settings).with_durable(Arc::new(store.clone()));
    (Broker::start(registry, None), store)
}

async fn next_seq(rx: &mut mpsc::Receiver<Delivery>) -> u64 {
    loop {
        let delivery = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("an event in time")
            .expect("the queue is open");
        if let Delivery::Event(event) = delivery {
            return event.id.seq;
        }
    }
}

async fn publishes_arrive_in_order(sync: SyncPolicy) {
    let dir = tempfile::tempdir().unwrap();
    let (registry, _store) = registry(&settings(dir.path(), sync));
    let channel = ChannelName::parse("ordered").unwrap();
    let (_, _, mut rx) = subscribe(&registry, &channel, 1024, None).await;
    // Sent without waiting: many are pending on disk at once.
    let answers: Vec<_> = (0..200)
        .map(|n| send_publish(&registry, &channel, &n.to_string()))
        .collect();
    for (n, answer) in answers.into_iter().enumerate() {
        let published = await_reply(answer).await.expect("acknowledged");
        assert_eq!(published.id.seq, n as u64 + 1);
    }
    for seq in 1..=200 {
        assert_eq!(next_seq(&mut rx).await, seq);
    }
}

/// With `sync = "always"`, 200 publishes in flight at once are acknowledged and delivered in seq order.
#[actix::test]
async fn group_commit_keeps_order() {
    publishes_arrive_in_order(SyncPolicy::Always).await;
}

/// With `sync = "interval"` likewise.
#[actix::test]
async fn interval_commit_keeps_order() {
    publishes_arrive_in_order(SyncPolicy::Interval).await;
}

/// A channel stopped when idle comes back from the store with its epoch, head and history.
#[actix::test]
async fn idle_channel_is_restored_from_disk() {
    let dir = tempfile::tempdir().unwrap();
    let (registry, _store) = registry(&settings(dir.path(), SyncPolicy::Always));
    let channel = ChannelName::parse("sleepy").unwrap();
    let mut ids = Vec::new();
    for n in 0..3 {
        let answer = send_publish(&registry, &channel, &n.to_string());
        ids.push(await_reply(answer).await.expect("acknowledged").id);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let listed = registry
            .channels(Some(channel.clone()))
            .await
            .expect("the registry answers");
        if listed.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "the idle channel never stopped");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (subscribed, _, _rx) =
        subscribe(&registry, &channel, 1024, Some(ResumeFrom::Id(ids[0]))).await;
    let replay = subscribed.replay.expect("a replay");
    assert!(replay.gap.is_none());
    let replayed: Vec<_> = replay.events.iter().map(|e| e.id).collect();
    assert_eq!(replayed, ids[1..]);
    let next = await_reply(send_publish(&registry, &channel, "later"))
        .await
        .expect("acknowledged");
    assert_eq!((next.id.epoch, next.id.seq), (ids[0].epoch, 4));
}

/// The subscriber limits (security) hold on a durable channel too, and a
/// subscriber that leaves gives its place back.
#[actix::test]
async fn subscriber_limits_apply_with_durable_history() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = settings(dir.path(), SyncPolicy::Always);
    settings.limits.max_subscribers_per_channel = 1;
    let (registry, _store) = registry(&settings);
    let channel = ChannelName::parse("limited").unwrap();
    let (_, _, first) = subscribe(&registry, &channel, 1024, None).await;
    let (refused, _, _rx) = send_subscribe(&registry, &channel, 16, None);
    assert!(matches!(
        await_reply(refused).await,
        Err(crate::broker::BrokerError::TooManySubscribers(_))
    ));
    drop(first);
    // The channel notices the closed queue at its next heartbeat.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (answer, _, _rx) = send_subscribe(&registry, &channel, 16, None);
        if await_reply(answer).await.is_ok() {
            break;
        }
        assert!(Instant::now() < deadline, "the place was never given back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A copy (a record with an origin) is stored as a reference to its
/// original's row: loading its channel gives the original's type and data
/// with the origin, and a copy whose original is gone is a hole (only what
/// follows it is retained).
#[actix::test]
async fn copies_are_kept_as_references_to_their_originals() {
    use crate::broker::{
        EventId,
        event::Epoch,
        log::{DurableStore, Origin, Record},
    };
    use crate::names::EventType;

    let dir = tempfile::tempdir().unwrap();
    let settings = settings(dir.path(), SyncPolicy::Always);
    let store = Store::open(&settings.history, &settings.publish, &Metrics::detached())
        .expect("the store opens");
    let (orders, hub) = (
        ChannelName::parse("orders").unwrap(),
        ChannelName::internal("hub"),
    );
    let epoch = Epoch::new();
    let id = |seq| EventId { epoch, seq };
    let payload = "x".repeat(4096);
    let original = Record::plain(EventType::parse("created").ok(), payload.clone());
    let copy_of = |seq| {
        let mut copy = Record::plain(None, "the copy's own data is not kept".into());
        copy.origin = Some(Box::new(Origin {
            channel: orders.clone(),
            id: id(seq),
        }));
        copy
    };
    let appends = [
        DurableStore::append(&store, &orders, id(1), 10, original.clone(), None),
        DurableStore::append(&store, &orders, id(2), 11, original, None),
        DurableStore::append(&store, &hub, id(1), 12, copy_of(1), None),
        DurableStore::append(&store, &hub, id(2), 13, copy_of(2), None),
    ];
    for append in appends {
        append.await.expect("answered").expect("committed");
    }

    let loaded = DurableStore::load(&store, &hub)
        .expect("readable")
        .expect("known");
    assert_eq!(loaded.head, 2);
    let seqs: Vec<_> = loaded.entries.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, [1, 2]);
    for (n, entry) in loaded.entries.iter().enumerate() {
        assert_eq!(entry.record.data, payload, "the original's data");
        assert_eq!(
            entry.record.event_type.as_ref().unwrap().as_str(),
            "created"
        );
        let origin = entry.record.origin.as_deref().expect("the origin");
        assert_eq!((&origin.channel, origin.id), (&orders, id(n as u64 + 1)));
    }

    // The event is on disk once: the hub's rows are small references.
    let txn = redb::ReadableDatabase::begin_read(store.inner.db.as_ref()).unwrap();
    let events = txn.open_table(super::EVENTS).unwrap();
    let row = events
        .get((hub.as_str(), 1))
        .unwrap()
        .expect("the hub's row");
    let (_, kind, data) = row.value();
    assert_eq!(kind, super::REFERENCE);
    assert!(data.len() < 64, "a reference, not the event: {data:?}");
    drop((row, events, txn));

    // A copy of an event its channel no longer has: a hole, and only what
    // follows it is retained.
    DurableStore::append(&store, &hub, id(3), 14, copy_of(99), None)
        .await
        .expect("answered")
        .expect("committed");
    DurableStore::append(&store, &hub, id(4), 15, copy_of(2), None)
        .await
        .expect("answered")
        .expect("committed");
    let loaded = DurableStore::load(&store, &hub)
        .expect("readable")
        .expect("known");
    let seqs: Vec<_> = loaded.entries.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, [4]);
}

/// Opens the store of `settings` once the closed one's writer thread has
/// let go of the file.
async fn reopen(settings: &Settings) -> Store {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match Store::open(&settings.history, &settings.publish, &Metrics::detached()) {
            Ok(store) => return store,
            Err(err) if Instant::now() < deadline => {
                assert!(err.to_string().contains("already open"), "{err}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(err) => panic!("the store did not open again: {err}"),
        }
    }
}

/// An idempotency key is written with its event's commit and given back by the next open, unless its window ended.
#[actix::test]
async fn idempotency_keys_outlive_the_store() {
    use crate::broker::{
        EventId,
        event::{Epoch, now_ms},
        idempotency::{Idempotency, IdempotencyKey},
        log::{DurableStore, Record},
    };

    let dir = tempfile::tempdir().unwrap();
    let mut settings = settings(dir.path(), SyncPolicy::Always);
    let orders = ChannelName::parse("orders").unwrap();
    let id = EventId {
        epoch: Epoch::new(),
        seq: 1,
    };
    let record = Record::plain(None, "a".into());
    let key = IdempotencyKey::parse("job-1").unwrap();
    let idempotency = Idempotency::new(key, &orders, record.event_type.as_ref(), &record.data);
    {
        let store = Store::open(&settings.history, &settings.publish, &Metrics::detached())
            .expect("the store opens");
        DurableStore::append(
            &store,
            &orders,
            id,
            now_ms(),
            record,
            Some(idempotency.clone()),
        )
        .await
        .expect("answered")
        .expect("committed");
        store.close().await;
    }
    let store = reopen(&settings).await;
    let remembered = DurableStore::remembered(&store);
    assert_eq!(remembered.len(), 1);
    assert_eq!(
        (
            &remembered[0].channel,
            &remembered[0].idempotency,
            remembered[0].id
        ),
        (&orders, &idempotency, id)
    );
    assert!(DurableStore::remembered(&store).is_empty(), "taken once");
    store.close().await;
    drop(store);
    settings.publish.idempotency_window = Duration::from_millis(1);
    tokio::time::sleep(Duration::from_millis(5)).await;
    let store = reopen(&settings).await;
    assert!(
        DurableStore::remembered(&store).is_empty(),
        "its window ended"
    );
}

/// A repeat that arrives while the first publish is on its way to disk is refused (retry), never answered before the first is stored.
#[actix::test]
async fn a_repeat_of_a_publish_on_its_way_to_disk_is_refused() {
    use crate::broker::{BrokerError, testing::send_keyed};

    let dir = tempfile::tempdir().unwrap();
    // Commits wait 20 ms for company: the repeat comes meanwhile.
    let (registry, _store) = registry(&settings(dir.path(), SyncPolicy::Interval));
    let channel = ChannelName::parse("jobs").unwrap();
    let first = send_keyed(&registry, &channel, "a", Some("job-1"));
    let repeat = send_keyed(&registry, &channel, "a", Some("job-1"));
    assert_eq!(
        await_reply(repeat).await.unwrap_err(),
        BrokerError::IdempotencyKeyInFlight
    );
    let first = await_reply(first).await.expect("stored");
    let again = await_reply(send_keyed(&registry, &channel, "a", Some("job-1")))
        .await
        .expect("a repeat once stored");
    assert_eq!(again.id, first.id);
}
