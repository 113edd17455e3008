//! Cluster mode: several broker nodes on one real `redis-server` behave as
//! one broker, and survive Redis outages, a Redis restarted empty and a node
//! killed with SIGKILL.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
    time::Duration,
};

use sse_broker::{
    broker::{Broker, RegistryActor},
    cluster::Cluster,
    config::Settings,
};

use crate::{helpers::*, redis_support::*};

/// The (id, data) pairs of events as a subscriber saw them.
fn pairs(events: &[SseEvent]) -> Vec<(String, String)> {
    events
        .iter()
        .map(|e| (e.id.clone(), e.data.clone()))
        .collect()
}

fn seq_of(id: &str) -> u64 {
    id.rsplit('-').next().unwrap().parse().unwrap()
}

fn epoch_of(id: &str) -> &str {
    id.split('-').next().unwrap()
}

/// Publishes until the node has reconnected: every attempt before is
/// refused with 503 (so stores nothing); returns the accepted event's id.
async fn publish_once_reconnected(app: &TestApp, channel: &str, body: &str) -> String {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let (status, answer) = app.publish_json(channel, body).await;
        if status == 202 {
            return answer["id"].as_str().expect("an id").to_owned();
        }
        assert_eq!(status, 503, "{answer}");
        assert!(
            tokio::time::Instant::now() < deadline,
            "the node did not reconnect"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Publishes 15 events on `app`; the acknowledged (id, data) pairs.
async fn publish_15(app: &TestApp, prefix: &str) -> Vec<(String, String)> {
    let mut acked = Vec::new();
    for n in 0..15 {
        let data = format!("\"{prefix}{n}\"");
        acked.push((app.publish("orders", &data).await, data));
    }
    acked
}

/// Concurrent publishes on two nodes reach the subscribers of both nodes in one order with the same ids.
#[actix_web::test]
async fn publishes_reach_every_node_in_one_order() {
    let redis = RedisServer::start();
    let a = spawn_node(&redis.url()).await;
    let b = spawn_node(&redis.url()).await;
    let mut on_a = a.stream("/stream/orders", &[]).await;
    let mut on_b = b.stream("/stream/orders", &[]).await;
    on_a.wait_open().await;
    on_b.wait_open().await;

    let (from_a, from_b) = futures_util::join!(publish_15(&a, "a"), publish_15(&b, "b"));

    let seen_a = pairs(&on_a.next_messages(30).await);
    let seen_b = pairs(&on_b.next_messages(30).await);
    assert_eq!(
        seen_a, seen_b,
        "both nodes deliver the same ids in the same order"
    );
    let seqs: Vec<u64> = seen_a.iter().map(|(id, _)| seq_of(id)).collect();
    assert_eq!(seqs, (1..=30).collect::<Vec<_>>());
    assert!(
        seen_a
            .iter()
            .all(|(id, _)| epoch_of(id) == epoch_of(&seen_a[0].0))
    );
    // Every acknowledged id names exactly the event that was published with it.
    let delivered: HashSet<(String, String)> = seen_a.into_iter().collect();
    for acked in from_a.into_iter().chain(from_b) {
        assert!(delivered.contains(&acked), "{acked:?} was delivered");
    }
}

/// A client resumes with Last-Event-ID on another node: exactly what it missed, then live.
#[actix_web::test]
async fn client_resumes_on_another_node() {
    let redis = RedisServer::start();
    let a = spawn_node(&redis.url()).await;
    let b = spawn_node(&redis.url()).await;
    let mut on_a = a.stream("/stream/moving", &[]).await;
    on_a.wait_open().await;
    a.publish("moving", "1").await;
    let seen = on_a.next_event().await;
    drop(on_a);
    for n in 2..=4 {
        a.publish("moving", &n.to_string()).await;
    }

    let mut on_b = b
        .stream("/stream/moving", &[("Last-Event-ID", &seen.id)])
        .await;
    let marker = on_b.next_event().await;
    assert_eq!(marker.event, "broker.replay");
    let replayed: Vec<String> = on_b
        .next_messages(3)
        .await
        .into_iter()
        .map(|e| e.data)
        .collect();
    assert_eq!(replayed, ["2", "3", "4"]);
    let live_id = a.publish("moving", "5").await;
    let live = on_b.next_event().await;
    assert_eq!(
        (live.id.as_str(), live.data.as_str()),
        (live_id.as_str(), "5")
    );
}

/// A node cut off from Redis answers 503 and is not ready, keeps its streams open, reconnects and delivers what it missed.
#[actix_web::test]
async fn node_cut_off_from_redis_recovers_without_loss() {
    let redis = RedisServer::start();
    let proxy = TcpProxy::start(redis.port);
    let a = spawn_node(&proxy.url()).await;
    let b = spawn_node(&redis.url()).await;
    let mut on_a = a.stream("/stream/outage", &[]).await;
    on_a.wait_open().await;
    let first = a.publish("outage", "1").await;
    assert_eq!(on_a.next_event().await.data, "1");

    proxy.cut();
    let res = a.post("/publish/outage", "text/plain", "lost").await;
    assert_eq!(res.status(), 503);
    assert_eq!(
        res.headers()["content-type"].to_str().unwrap(),
        "application/problem+json"
    );
    wait_until(|| async { a.get_json("/readyz").await.0 == 503 }).await;
    // Meanwhile the rest of the cluster goes on.
    let missed = [
        b.publish("outage", "2").await,
        b.publish("outage", "3").await,
    ];

    proxy.restore();
    wait_until(|| async { a.get_json("/readyz").await.0 == 200 }).await;
    // The same stream, still open, gets what it missed without a new publish.
    let caught_up = on_a.next_messages(2).await;
    assert_eq!(
        pairs(&caught_up),
        [
            (missed[0].clone(), "2".into()),
            (missed[1].clone(), "3".into())
        ]
    );
    // Publishing on the node works again once it has reconnected.
    let fourth = publish_once_reconnected(&a, "outage", "4").await;
    let live = on_a.next_event().await;
    assert_eq!((live.id, live.data), (fourth, "4".into()));
    // A client resuming on this node replays everything after its id.
    let mut resumed = a
        .stream("/stream/outage", &[("Last-Event-ID", &first)])
        .await;
    let replayed: Vec<String> = resumed
        .next_messages(3)
        .await
        .into_iter()
        .map(|e| e.data)
        .collect();
    assert_eq!(replayed, ["2", "3", "4"]);
}

/// The readiness flag follows the connection to Redis.
#[actix_web::test]
async fn readiness_follows_redis() {
    let redis = RedisServer::start();
    let proxy = TcpProxy::start(redis.port);
    let mut settings = Settings::defaults();
    settings.cluster.redis_url = proxy.url();
    settings.cluster.max_reconnect_delay = Duration::from_millis(200);
    let cluster = Cluster::new(&settings.cluster, &settings.history, &settings.pulses).unwrap();
    cluster.start(Broker::start(RegistryActor::new(&settings), None));
    wait_until(|| async { cluster.is_connected() }).await;
    proxy.cut();
    wait_until(|| async { !cluster.is_connected() }).await;
    proxy.restore();
    wait_until(|| async { cluster.is_connected() }).await;
    cluster.shutdown();
}

/// A node killed with SIGKILL mid-publish: its client resumes on another node and misses nothing acknowledged.
#[actix_web::test]
async fn sigkilled_node_loses_nothing_acknowledged() {
    let redis = RedisServer::start();
    let mut a = NodeProcess::start(&redis.url());
    let b = NodeProcess::start(&redis.url());
    let client = http_client();
    let res = client.get(a.url("/stream/crash")).send().await.unwrap();
    let mut on_a = SseClient::new(res);
    on_a.wait_open().await;

    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let publisher = {
        let (client, url, acked) = (client.clone(), a.url("/publish/crash"), Arc::clone(&acked));
        actix_web::rt::spawn(async move {
            for n in 0.. {
                let sent = client
                    .post(&url)
                    .header("content-type", "text/plain")
                    .body(n.to_string())
                    .send()
                    .await;
                let Ok(res) = sent else { break };
                if res.status() != 202 {
                    break;
                }
                let Ok(body) = res.json::<serde_json::Value>().await else {
                    break;
                };
                acked
                    .lock()
                    .unwrap()
                    .push(body["id"].as_str().unwrap().to_owned());
            }
        })
    };
    wait_until(|| async { acked.lock().unwrap().len() >= 30 }).await;
    a.kill();
    let _ = tokio::time::timeout(PATIENCE, publisher).await;
    let seen = on_a.until_end().await;
    let acked = acked.lock().unwrap().clone();
    let last_acked = acked.last().unwrap().clone();

    // EventSource reconnects through the load balancer, here to node B.
    let res = client
        .get(b.url("/stream/crash"))
        .header("Last-Event-ID", on_a.last_id())
        .send()
        .await
        .unwrap();
    let mut on_b = SseClient::new(res);
    let mut ids: Vec<String> = seen
        .iter()
        .filter(|e| e.event == "message")
        .map(|e| e.id.clone())
        .collect();
    while !ids.contains(&last_acked) {
        let event = on_b.next_event().await;
        assert_ne!(event.event, "broker.gap", "{}", event.data);
        if event.event == "message" {
            ids.push(event.id);
        }
    }
    let unique: HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "no event was delivered twice");
    let seqs: Vec<u64> = ids.iter().map(|id| seq_of(id)).collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
    for id in &acked {
        assert!(unique.contains(id), "acknowledged {id} was delivered");
    }
}

/// Redis restarted empty: live clients get a gap notice, old ids get one on resume, the node goes on.
#[actix_web::test]
async fn redis_restarted_empty_gives_gap_notice() {
    let mut redis = RedisServer::start();
    let a = spawn_node(&redis.url()).await;
    let mut live = a.stream("/stream/phoenix", &[]).await;
    live.wait_open().await;
    let old = a.publish("phoenix", "1").await;
    assert_eq!(live.next_event().await.data, "1");

    let port = redis.port;
    redis.kill();
    let _redis = RedisServer::start_on(port);

    let gap = live.next_event().await;
    assert_eq!(gap.event, "broker.gap");
    let notice: serde_json::Value = serde_json::from_str(&gap.data).unwrap();
    assert_eq!(notice["reason"], "unknown-epoch");
    assert_eq!(notice["lastEventId"], old.as_str());
    assert_eq!(gap.id, notice["resumeFrom"].as_str().unwrap());
    let new = publish_once_reconnected(&a, "phoenix", "2").await;
    assert_ne!(epoch_of(&new), epoch_of(&old));
    assert_eq!(seq_of(&new), 1);
    let next = live.next_event().await;
    assert_eq!((next.id.as_str(), next.data.as_str()), (new.as_str(), "2"));

    let mut resumed = a
        .stream("/stream/phoenix", &[("Last-Event-ID", &old)])
        .await;
    let gap = resumed.next_event().await;
    assert_eq!(gap.event, "broker.gap");
    assert!(
        gap.data.contains(r#""reason":"unknown-epoch""#),
        "{}",
        gap.data
    );
    assert_eq!(resumed.next_messages(1).await[0].data, "2");
}

/// Subscriber counts, pulses and kill-session span every node.
#[actix_web::test]
async fn counts_pulses_and_kills_are_cluster_wide() {
    let redis = RedisServer::start();
    let a = spawn_node(&redis.url()).await;
    let b = spawn_node(&redis.url()).await;
    let mut on_a = a.stream("/stream/shared", &[]).await;
    let mut on_b = b.stream("/stream/shared", &[]).await;
    on_a.wait_open().await;
    on_b.wait_open().await;
    let mut kills = a.stream("/stream/killSession", &[]).await;
    kills.wait_open().await;
    for node in [&a, &b] {
        wait_until(|| async {
            let (_, list) = node.get_json("/channels").await;
            let shared = list
                .as_array()
                .and_then(|l| l.iter().find(|c| c["name"] == "shared").cloned());
            shared.is_some_and(|c| c["subscribers"] == 2)
        })
        .await;
    }
    let (_, detail) = a.get_json("/channels/shared").await;
    assert_eq!(detail["subscribers"], 2);

    for (node, tab) in [(&a, "tab-1"), (&b, "tab-2"), (&b, "tab-1")] {
        let res = node.post("/pulse", "text/plain", tab).await;
        assert_eq!(res.status(), 200);
    }
    let (_, pulses) = a.get_json("/pulses").await;
    let pulses = pulses.as_array().unwrap();
    assert_eq!(pulses.len(), 2, "{pulses:?}");
    let tab = |id: &str| pulses.iter().find(|p| p["tabId"] == id).unwrap().clone();
    assert_eq!(tab("tab-1")["count"], 2);
    assert_eq!(tab("tab-1")["timestamps"].as_array().unwrap().len(), 2);
    assert_eq!(tab("tab-1")["alive"], true);
    assert_eq!(tab("tab-2")["count"], 1);

    // killall on B reaches a tab listening on A.
    let res = b.client.delete(b.url("/killall")).send().await.unwrap();
    assert_eq!(res.status(), 202);
    let mut killed: Vec<String> = kills
        .next_messages(2)
        .await
        .into_iter()
        .map(|e| e.data)
        .collect();
    killed.sort();
    assert_eq!(killed, [r#""tab-1""#, r#""tab-2""#]);
}

/// An event whose bus message never arrived is read from the log before the next one is delivered.
#[actix_web::test]
async fn event_missing_from_the_bus_is_read_from_the_log() {
    let redis = RedisServer::start();
    let a = spawn_node(&redis.url()).await;
    let mut sse = a.stream("/stream/holes", &[]).await;
    sse.wait_open().await;
    let first = a.publish("holes", "1").await;
    assert_eq!(sse.next_event().await.data, "1");

    // Stored like the publish script does, but never announced on the bus.
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let seq: u64 = redis::cmd("INCR")
        .arg("sse:{holes}:seq")
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: String = redis::cmd("XADD")
        .arg("sse:{holes}:events")
        .arg(format!("{seq}-0"))
        .arg(&["t", &now_ms_text(), "e", "", "d", "2"])
        .query_async(&mut conn)
        .await
        .unwrap();

    let third = a.publish("holes", "3").await;
    let got = sse.next_messages(2).await;
    assert_eq!(got[0].data, "2");
    assert_eq!(seq_of(&got[0].id), seq_of(&first) + 1);
    assert_eq!(
        (got[1].id.as_str(), got[1].data.as_str()),
        (third.as_str(), "3")
    );
}

fn now_ms_text() -> String {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
        .to_string()
}

/// Regression: the bus's keep-alive PING must not be mistaken for a lost connection.
#[actix_web::test]
async fn bus_connection_survives_its_pings() {
    let redis = RedisServer::start();
    let _a = spawn_node(&redis.url()).await;
    let client = redis::Client::open(redis.url()).unwrap();
    let conn = client.get_multiplexed_async_connection().await.unwrap();
    // Ids of the connections subscribed to a pub/sub channel (the bus).
    let subscribers = || {
        let mut conn = conn.clone();
        async move {
            let list: String = redis::cmd("CLIENT")
                .arg("LIST")
                .query_async(&mut conn)
                .await
                .unwrap();
            list.lines()
                .filter(|l| l.contains(" sub=1 "))
                .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
                .collect::<Vec<_>>()
        }
    };
    let pings = || {
        let mut conn = conn.clone();
        async move {
            let info: String = redis::cmd("INFO")
                .arg("commandstats")
                .query_async(&mut conn)
                .await
                .unwrap();
            info.lines()
                .find_map(|l| l.strip_prefix("cmdstat_ping:calls="))
                .and_then(|rest| rest.split(',').next()?.parse::<u64>().ok())
                .unwrap_or(0)
        }
    };
    wait_until(|| async { subscribers().await.len() == 1 }).await;
    let bus = subscribers().await;
    // Three keep-alive pings (one per presence interval) later…
    wait_until(|| async { pings().await >= 3 }).await;
    assert_eq!(subscribers().await, bus, "the bus connection was replaced");
}
