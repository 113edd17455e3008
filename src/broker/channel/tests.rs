//! The channel actor through the broker handle, as the HTTP handlers use it.

use std::sync::{Arc, atomic::Ordering};

use crate::{
    broker::{
        Broker, BrokerError, ResumeFrom, await_reply,
        event::Event,
        history::{GapReason, HistoryPage},
        identity::Identity,
        message::Published,
        presence::is_presence,
        subscriber::{Delivery, Filter},
        testing::{broker, queue, send_keyed, send_publish, subscribe},
    },
    config::Settings,
    names::ChannelName,
};

async fn publish(broker: &Broker, channel: &ChannelName, data: &str) -> Published {
    await_reply(send_publish(broker, channel, data))
        .await
        .expect("publish succeeds")
}

fn event_seq(delivery: Delivery) -> u64 {
    match delivery {
        Delivery::Event(e) => e.id.seq,
        Delivery::Heartbeat => panic!("expected an event"),
    }
}

/// Events reach a subscriber in order with increasing ids.
#[actix::test]
async fn publish_reaches_subscriber_in_order() {
    let broker = broker(&Settings::defaults());
    let channel = ChannelName::parse("orders").unwrap();
    let (_, _sub, mut rx) = subscribe(&broker, &channel, 16, None).await;
    for n in 1..=3 {
        let published = publish(&broker, &channel, &format!("e{n}")).await;
        assert_eq!(published.id.seq, n);
        assert_eq!(published.subscribers, 1);
    }
    for n in 1..=3 {
        assert_eq!(event_seq(rx.recv().await.unwrap()), n);
    }
}

/// A subscriber resuming from an id gets the rest from history, then live.
#[actix::test]
async fn resume_replays_then_continues_live() {
    let broker = broker(&Settings::defaults());
    let channel = ChannelName::parse("news").unwrap();
    let first = publish(&broker, &channel, "1").await;
    publish(&broker, &channel, "2").await;
    let (subscribed, _sub, mut rx) =
        subscribe(&broker, &channel, 16, Some(ResumeFrom::Id(first.id))).await;
    let replay = subscribed.replay.expect("a replay was asked for");
    assert_eq!(
        replay.events.iter().map(|e| e.id.seq).collect::<Vec<_>>(),
        vec![2]
    );
    assert!(replay.gap.is_none());
    publish(&broker, &channel, "3").await;
    assert_eq!(event_seq(rx.recv().await.unwrap()), 3);
}

/// A full queue evicts that subscriber only; the others keep receiving.
#[actix::test]
async fn slow_subscriber_is_evicted_alone() {
    let broker = broker(&Settings::defaults());
    let channel = ChannelName::parse("busy").unwrap();
    let (_, slow, mut slow_rx) = subscribe(&broker, &channel, 2, None).await;
    let slow_evicted = Arc::clone(&slow.evicted);
    drop(slow);
    let (_, _fast, mut fast_rx) = subscribe(&broker, &channel, 64, None).await;
    for n in 0..5 {
        publish(&broker, &channel, &n.to_string()).await;
    }
    assert!(slow_evicted.load(Ordering::Acquire));
    for n in 1..=5 {
        assert_eq!(event_seq(fast_rx.recv().await.unwrap()), n);
    }
    // The evicted queue holds what fitted, then ends.
    assert_eq!(event_seq(slow_rx.recv().await.unwrap()), 1);
    assert_eq!(event_seq(slow_rx.recv().await.unwrap()), 2);
    assert!(slow_rx.recv().await.is_none());
}

/// Admits events whose data is even.
struct EvenOnly;

impl Filter for EvenOnly {
    fn admits(&self, event: &Event) -> bool {
        crate::sse::data_of(event.frame.full())
            .parse::<u64>()
            .is_ok_and(|n| n % 2 == 0)
    }
}

/// A subscriber's filter applies to its replay and to live events; other
/// subscribers of the channel get everything.
#[actix::test]
async fn filters_apply_to_replay_and_live_events() {
    let broker = broker(&Settings::defaults());
    let channel = ChannelName::parse("mixed").unwrap();
    for n in 1..=4 {
        publish(&broker, &channel, &n.to_string()).await;
    }
    let (subscriber, mut filtered) = queue(16);
    let answer = broker.subscribe(
        &channel,
        subscriber.with_filter(Arc::new(EvenOnly)),
        Some(ResumeFrom::Start),
        false,
    );
    let replay = await_reply(answer).await.unwrap().replay.unwrap();
    assert_eq!(
        replay.events.iter().map(|e| e.id.seq).collect::<Vec<_>>(),
        vec![2, 4]
    );
    let (_, _all, mut everything) = subscribe(&broker, &channel, 16, None).await;
    for n in 5..=8 {
        publish(&broker, &channel, &n.to_string()).await;
    }
    assert_eq!(event_seq(filtered.recv().await.unwrap()), 6);
    assert_eq!(event_seq(filtered.recv().await.unwrap()), 8);
    for n in 5..=8 {
        assert_eq!(event_seq(everything.recv().await.unwrap()), n);
    }
}

/// Messages sent through the directory to a running channel and through the
/// registry are counted alike: an idle channel is retired only when none
/// is in flight, and a later publish starts it afresh.
#[actix::test]
async fn idle_channels_retire_and_come_back() {
    let mut settings = Settings::defaults();
    settings.stream.heartbeat = std::time::Duration::from_millis(20);
    settings.history.max_events = 0;
    let broker = broker(&settings);
    let channel = ChannelName::parse("brief").unwrap();
    let first = publish(&broker, &channel, "a").await;
    // Retired once a tick finds it idle (no subscribers, nothing retained).
    let mut retired = false;
    for _ in 0..500 {
        if broker.inspect(&channel).await.is_err() {
            retired = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(retired, "the idle channel was never retired");
    let again = publish(&broker, &channel, "b").await;
    assert_ne!(first.id.epoch, again.id.epoch, "a new life, a new epoch");
    assert_eq!(again.id.seq, 1);
}

/// A publish that repeats an idempotency key with the same body is answered the first id and stores and delivers nothing; another body is refused.
#[actix::test]
async fn a_repeated_key_stores_nothing() {
    let broker = broker(&Settings::defaults());
    let channel = ChannelName::parse("jobs").unwrap();
    let (_, _sub, mut rx) = subscribe(&broker, &channel, 16, None).await;
    let keyed = |data: &str, key: &str| await_reply(send_keyed(&broker, &channel, data, Some(key)));
    let first = keyed("a", "job-1").await.expect("stored");
    let again = keyed("a", "job-1").await.expect("a repeat");
    assert_eq!(again.id, first.id);
    assert_eq!(
        keyed("b", "job-1").await.unwrap_err(),
        BrokerError::IdempotencyKeyReused
    );
    let other = keyed("a", "job-2").await.expect("another key");
    assert_eq!(other.id.seq, first.id.seq + 1);
    assert_eq!(event_seq(rx.recv().await.unwrap()), first.id.seq);
    assert_eq!(event_seq(rx.recv().await.unwrap()), other.id.seq);
    let page = broker.history(&channel, None, 10).await.unwrap();
    assert_eq!(page.events.len(), 2, "one event per key");
}

/// History reads page through the retained events oldest first, and an id the history no longer covers is a gap.
#[actix::test]
async fn history_reads_in_pages_with_the_replay_rules() {
    let mut settings = Settings::defaults();
    settings.history.max_events = 4;
    let broker = broker(&settings);
    let channel = ChannelName::parse("pages").unwrap();
    let empty = broker.history(&channel, None, 10).await.unwrap();
    assert!(empty.events.is_empty() && empty.next.is_none() && empty.gap.is_none());
    let mut ids = Vec::new();
    for n in 1..=6 {
        ids.push(publish(&broker, &channel, &format!("e{n}")).await.id);
    }
    let seqs = |page: &HistoryPage| page.events.iter().map(|e| e.id.seq).collect::<Vec<_>>();
    let first = broker.history(&channel, None, 3).await.unwrap();
    assert_eq!((seqs(&first), first.next), (vec![3, 4, 5], Some(ids[4])));
    let rest = broker.history(&channel, first.next, 3).await.unwrap();
    assert_eq!((seqs(&rest), rest.next, rest.gap), (vec![6], None, None));
    let trimmed = broker.history(&channel, Some(ids[0]), 10).await.unwrap();
    assert_eq!(seqs(&trimmed), vec![3, 4, 5, 6]);
    assert_eq!(trimmed.gap, Some((GapReason::HistoryTrimmed, ids[1])));
}

/// A watcher gets a join when a user's first subscriber comes and a leave
/// when its last goes (a second one announces nothing); the channel lists
/// the user while it is there.
#[actix::test]
async fn watchers_get_joins_and_leaves() {
    let broker = broker(&Settings::defaults());
    let channel = ChannelName::parse("room").unwrap();
    let (watcher, mut seen) = queue(16);
    await_reply(broker.subscribe(&channel, watcher, None, true))
        .await
        .expect("the watcher subscribes");
    let ada = Arc::new(Identity {
        user: "ada".into(),
        info: None,
    });
    let mut tabs = Vec::new();
    for _ in 0..2 {
        let (tab, rx) = queue(16);
        let tab = tab.with_identity(Arc::clone(&ada));
        await_reply(broker.subscribe(&channel, tab.clone(), None, false))
            .await
            .expect("a tab subscribes");
        tabs.push((tab, rx));
    }
    let listed = broker.presence(&channel, true, 10).await.unwrap();
    assert_eq!((listed.count, listed.members.len()), (3, 1));
    assert_eq!(listed.members[0].connections, 2);
    for (tab, _) in &tabs {
        broker.unsubscribe(&channel, tab.id);
    }
    let listed = broker.presence(&channel, true, 10).await.unwrap();
    assert_eq!((listed.count, listed.members.len()), (1, 0));
    let mut kinds = Vec::new();
    while let Ok(Delivery::Event(event)) = seen.try_recv() {
        assert!(is_presence(&event));
        kinds.push(event.event_type.as_ref().unwrap().as_str().to_owned());
    }
    assert_eq!(kinds, ["broker.join", "broker.leave"]);
}
