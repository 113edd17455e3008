//! Cluster mode on a Redis Cluster (three primaries, sharded pub/sub) and on
//! Sentinel: nodes deliver across shards in one order with the same ids,
//! receive only the channels they serve, and lose nothing acknowledged
//! through a node's SIGKILL, a slot migration and a primary's failover.

use std::{
    collections::HashSet,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use sse_broker::config::RedisMode;

use crate::{helpers::*, redis_cluster_support::*, redis_support::*};

fn seq(id: &str) -> u64 {
    id.rsplit('-').next().unwrap().parse().unwrap()
}

/// `sse_broker_bus_events_received_total` of a node.
async fn bus_received(node: &TestApp) -> u64 {
    let text = node
        .client
        .get(node.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("sse_broker_bus_events_received_total "))
        .map_or(0, |n| n.trim().parse().unwrap())
}

/// Channel names whose slots are served by `count` different primaries.
fn channels_on_shards(redis: &RedisCluster, count: usize) -> Vec<String> {
    let mut owners = HashSet::new();
    let mut channels = Vec::new();
    for n in 0.. {
        let channel = format!("sharded-{n}");
        if owners.insert(redis.owner_of(redis.slot_of(&channel))) {
            channels.push(channel);
        }
        if channels.len() == count {
            return channels;
        }
    }
    unreachable!("the loop returns")
}

/// Publishes numbered events to one channel through one node, one after
/// the other, until stopped; refused publishes (503, or a node gone) are
/// left out, or, `keyed`, retried under the same idempotency key until
/// acknowledged, as a backend job does. Keeps the acknowledged (id, data)
/// pairs in order.
struct Publisher {
    acked: Arc<Mutex<Vec<(String, String)>>>,
    stop: Arc<AtomicBool>,
    task: actix_web::rt::task::JoinHandle<()>,
}

impl Publisher {
    fn start(url: String) -> Self {
        Self::start_with(url, false)
    }

    fn start_with(url: String, keyed: bool) -> Self {
        let acked: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (task_acked, task_stop) = (Arc::clone(&acked), Arc::clone(&stop));
        let task = actix_web::rt::spawn(async move {
            let client = reqwest::Client::new();
            let mut n = 0u64;
            loop {
                if task_stop.load(Ordering::Acquire) {
                    return;
                }
                let data = format!("\"{n}\"");
                let mut request = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(data.clone())
                    .timeout(PATIENCE);
                if keyed {
                    request = request.header("Idempotency-Key", format!("event-{n}"));
                }
                let sent = request.send().await;
                let answer = match sent {
                    Ok(res) if res.status() == 202 => res.json::<serde_json::Value>().await.ok(),
                    _ => None,
                };
                match answer.as_ref().and_then(|a| a["id"].as_str()) {
                    Some(id) => {
                        task_acked.lock().unwrap().push((id.to_owned(), data));
                        n += 1;
                    }
                    None => {
                        if !keyed {
                            n += 1;
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
        });
        Self { acked, stop, task }
    }

    fn count(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    /// Waits until `n` more publishes were acknowledged than now.
    async fn wait_for_more(&self, n: usize, patience: Duration) {
        let target = self.count() + n;
        let deadline = tokio::time::Instant::now() + patience;
        while self.count() < target {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{target} publishes were not acknowledged within {patience:?} ({} were)",
                self.count()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn stop(self) -> Vec<(String, String)> {
        self.stop.store(true, Ordering::Release);
        let _ = tokio::time::timeout(PATIENCE, self.task).await;
        self.acked.lock().unwrap().clone()
    }
}

/// Reads `sse` until it delivered the last of `acked`, then checks that
/// every acknowledged event came, once, in seq order (a gap notice is
/// allowed only with `gaps`). Returns the (id, data) pairs it delivered.
async fn delivered_all(
    sse: &mut SseClient,
    acked: &[(String, String)],
    gaps: bool,
) -> Vec<(String, String)> {
    let last = &acked.last().expect("something was acknowledged").0;
    let mut seen: Vec<(String, String)> = Vec::new();
    let read = async {
        while seen.last().map(|(id, _)| id) != Some(last) {
            let event = sse.try_next_event().await.expect("the stream stays open");
            match event.event.as_str() {
                "message" => seen.push((event.id, event.data)),
                "broker.gap" => assert!(gaps, "unexpected gap: {}", event.data),
                _ => {}
            }
        }
    };
    let arrived = tokio::time::timeout(FAILOVER_PATIENCE, read).await.is_ok();
    // When it did not, say what did arrive: a stream that stalled and one
    // that skipped the event fail differently.
    assert!(
        arrived,
        "the last acknowledged event {last} did not arrive within {FAILOVER_PATIENCE:?}: \
         {} of {} acknowledged arrived, the last ones {:?}, acknowledged last {:?}",
        seen.len(),
        acked.len(),
        &seen[seen.len().saturating_sub(3)..],
        &acked[acked.len().saturating_sub(3)..],
    );
    let ids: HashSet<&String> = seen.iter().map(|(id, _)| id).collect();
    assert_eq!(ids.len(), seen.len(), "no event was delivered twice");
    let seqs: Vec<u64> = seen.iter().map(|(id, _)| seq(id)).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "in seq order: {seqs:?}"
    );
    let delivered: HashSet<&(String, String)> = seen.iter().collect();
    for event in acked {
        assert!(
            delivered.contains(event),
            "acknowledged {event:?} was delivered"
        );
    }
    seen
}

/// Three nodes on three shards: concurrent publishes reach every node's subscribers in one order with the same ids.
#[actix_web::test]
async fn publishes_cross_shards_in_one_order() {
    let redis = RedisCluster::start(3, 0);
    let mut nodes = Vec::new();
    for _ in 0..3 {
        nodes.push(spawn_cluster_node(&redis.seeds(), |_| {}).await);
    }
    let channels = channels_on_shards(&redis, 3);
    let mut streams = Vec::new();
    for channel in &channels {
        for node in &nodes {
            let mut sse = node.stream(&format!("/stream/{channel}"), &[]).await;
            sse.wait_open().await;
            streams.push((channel.clone(), sse));
        }
    }

    futures_util::future::join_all(nodes.iter().enumerate().map(|(n, node)| {
        let channels = channels.clone();
        async move {
            for channel in &channels {
                for k in 0..5 {
                    node.publish(channel, &format!("\"{n}-{k}\"")).await;
                }
            }
        }
    }))
    .await;

    for channel in &channels {
        let mut orders = Vec::new();
        for (_, sse) in streams.iter_mut().filter(|(c, _)| c == channel) {
            let seen: Vec<(String, String)> = sse
                .next_messages(15)
                .await
                .into_iter()
                .map(|e| (e.id, e.data))
                .collect();
            let seqs: Vec<u64> = seen.iter().map(|(id, _)| seq(id)).collect();
            assert_eq!(seqs, (1..=15).collect::<Vec<_>>(), "{channel}");
            orders.push(seen);
        }
        assert!(
            orders.windows(2).all(|w| w[0] == w[1]),
            "{channel}: one order"
        );
    }
}

/// Each node receives bus traffic only for the channels it has subscribers on, and stops when they leave.
async fn routes_per_channel(nodes: &[TestApp], bus_subscribers: impl Fn(&str) -> u64) {
    let [x, y, z] = nodes else {
        panic!("three nodes")
    };
    let mut x_alpha = x.stream("/stream/alpha", &[]).await;
    let mut y_beta = y.stream("/stream/beta", &[]).await;
    let mut z_alpha = z.stream("/stream/alpha", &[]).await;
    let mut z_beta = z.stream("/stream/beta", &[]).await;
    for sse in [&mut x_alpha, &mut y_beta, &mut z_alpha, &mut z_beta] {
        sse.wait_open().await;
    }

    // Beta is published through x, which has no subscriber on it.
    for n in 0..10 {
        x.publish("beta", &n.to_string()).await;
    }
    y_beta.next_messages(10).await;
    z_beta.next_messages(10).await;
    for n in 0..4 {
        y.publish("alpha", &n.to_string()).await;
    }
    x_alpha.next_messages(4).await;
    z_alpha.next_messages(4).await;
    assert_eq!(bus_received(x).await, 4, "x serves alpha only");
    assert_eq!(bus_received(y).await, 10, "y serves beta only");
    assert_eq!(bus_received(z).await, 14, "z serves both");

    // x's last subscriber leaves: its channel stops following alpha.
    drop(x_alpha);
    wait_until(|| async { bus_subscribers("alpha") == 1 }).await;
    for n in 4..7 {
        y.publish("alpha", &n.to_string()).await;
    }
    z_alpha.next_messages(3).await;
    assert_eq!(bus_received(x).await, 4, "x no longer receives alpha");
}

/// Per-channel routing on a Redis Cluster, observed through the bus metric.
#[actix_web::test]
async fn nodes_receive_only_their_channels_on_redis_cluster() {
    let redis = RedisCluster::start(3, 0);
    let mut nodes = Vec::new();
    for _ in 0..3 {
        nodes.push(spawn_cluster_node(&redis.seeds(), |_| {}).await);
    }
    routes_per_channel(&nodes, |channel| {
        let owner = redis.owner_of(redis.slot_of(channel));
        let counts: Vec<redis::Value> = query(
            owner,
            &["PUBSUB", "SHARDNUMSUB", &format!("sse:{{{channel}}}:bus")],
        );
        redis::from_redis_value(counts[1].clone()).unwrap()
    })
    .await;
}

/// Per-channel routing on one redis-server, observed through the bus metric.
#[actix_web::test]
async fn nodes_receive_only_their_channels_on_one_redis_server() {
    let redis = RedisServer::start();
    let mut nodes = Vec::new();
    for _ in 0..3 {
        nodes.push(
            spawn_app_with(|s| {
                s.cluster.redis_url = redis.url();
                s.cluster.presence_interval = Duration::from_millis(200);
                s.stream.heartbeat = Duration::from_millis(200);
            })
            .await,
        );
    }
    routes_per_channel(&nodes, |channel| {
        let counts: Vec<redis::Value> = query(
            redis.port,
            &["PUBSUB", "NUMSUB", &format!("sse:{{{channel}}}:bus")],
        );
        redis::from_redis_value(counts[1].clone()).unwrap()
    })
    .await;
}

/// A node killed with SIGKILL mid-publish on a Redis Cluster: its client resumes on another node and misses nothing acknowledged.
#[actix_web::test]
async fn client_resumes_on_another_node_after_sigkill() {
    let redis = RedisCluster::start(3, 0);
    let seeds = redis.seeds();
    let mode = [("SSE_BROKER__CLUSTER__REDIS_MODE", "cluster")];
    let mut a = NodeProcess::start_with(&seeds, &mode);
    let b = NodeProcess::start_with(&seeds, &mode);
    let c = NodeProcess::start_with(&seeds, &mode);
    let client = reqwest::Client::new();
    let mut on_a = stream_at(&client, &a.url("/stream/crash"), &[]).await;
    let mut on_c = stream_at(&client, &c.url("/stream/crash"), &[]).await;
    on_a.wait_open().await;
    on_c.wait_open().await;

    let publisher = Publisher::start(a.url("/publish/crash"));
    publisher.wait_for_more(30, PATIENCE).await;
    a.kill();
    let mut acked = publisher.stop().await;
    let seen_on_a = on_a.until_end().await;
    // The publisher goes on through another node.
    let res = client
        .post(b.url("/publish/crash"))
        .header("content-type", "application/json")
        .body("\"after\"")
        .send()
        .await
        .unwrap();
    let answer: serde_json::Value = res.json().await.unwrap();
    acked.push((
        answer["id"].as_str().unwrap().to_owned(),
        "\"after\"".into(),
    ));

    // EventSource reconnects through the load balancer, here to node B.
    let last_id = on_a.last_id().to_owned();
    let mut on_b = stream_at(
        &client,
        &b.url("/stream/crash"),
        &[("Last-Event-ID", &last_id)],
    )
    .await;
    let before: Vec<(String, String)> = seen_on_a
        .into_iter()
        .filter(|e| e.event == "message")
        .map(|e| (e.id, e.data))
        .collect();
    let after = delivered_all(&mut on_b, &acked[acked.len() - 1..], false).await;
    let resumed: Vec<(String, String)> = before.into_iter().chain(after).collect();
    let seqs: Vec<u64> = resumed.iter().map(|(id, _)| seq(id)).collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
    let resumed: HashSet<(String, String)> = resumed.into_iter().collect();
    for event in &acked {
        assert!(
            resumed.contains(event),
            "acknowledged {event:?} was delivered"
        );
    }
    // A subscriber on a third node saw every event live.
    delivered_all(&mut on_c, &acked, false).await;
}

/// The channel's slot moves to another primary while events are published: nothing acknowledged is lost, none is doubled, order holds.
#[actix_web::test]
async fn slot_migration_during_publishing_loses_nothing() {
    let redis = RedisCluster::start(3, 0);
    let a = spawn_cluster_node(&redis.seeds(), |_| {}).await;
    let b = spawn_cluster_node(&redis.seeds(), |_| {}).await;
    let mut on_a = a.stream("/stream/moving", &[]).await;
    let mut on_b = b.stream("/stream/moving", &[]).await;
    on_a.wait_open().await;
    on_b.wait_open().await;
    let slot = redis.slot_of("moving");
    let from = redis.owner_of(slot);
    let to = redis.other_primary(from);

    let publisher = Publisher::start(b.url("/publish/moving"));
    publisher.wait_for_more(20, PATIENCE).await;
    let topology = redis.topology();
    actix_web::rt::task::spawn_blocking(move || topology.migrate_slot(slot, to))
        .await
        .expect("the slot migrated");
    assert_eq!(redis.owner_of(slot), to, "the slot moved");
    publisher.wait_for_more(20, FAILOVER_PATIENCE).await;
    let acked = publisher.stop().await;

    delivered_all(&mut on_a, &acked, false).await;
    delivered_all(&mut on_b, &acked, false).await;
    // The keys moved with the slot: the new primary goes on from the same seq.
    let seqs: Vec<u64> = acked.iter().map(|(id, _)| seq(id)).collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
}

/// The primary of the channel's slot is killed under load and a replica promoted: with WAIT 1 nothing acknowledged is lost, ids only grow.
#[actix_web::test]
async fn primary_killed_replica_promoted_loses_nothing_acknowledged() {
    // Two replicas each: the promoted one still has a replica to WAIT for.
    let mut redis = RedisCluster::start(3, 2);
    let mut nodes = Vec::new();
    for _ in 0..3 {
        nodes.push(
            spawn_cluster_node(&redis.seeds(), |s| {
                s.cluster.publish_wait_replicas = 1;
                s.cluster.publish_wait_timeout = Duration::from_millis(500);
            })
            .await,
        );
    }
    let mut streams = Vec::new();
    for node in &nodes {
        let mut sse = node.stream("/stream/failover", &[]).await;
        sse.wait_open().await;
        streams.push(sse);
    }
    let slot = redis.slot_of("failover");
    let primary = redis.owner_of(slot);

    let publisher = Publisher::start(nodes[1].url("/publish/failover"));
    publisher.wait_for_more(30, PATIENCE).await;
    redis.kill(primary);
    let deadline = tokio::time::Instant::now() + FAILOVER_PATIENCE;
    while redis.owner_of(slot) == primary {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no replica took over"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    publisher.wait_for_more(30, FAILOVER_PATIENCE).await;
    let acked = publisher.stop().await;

    for sse in &mut streams {
        delivered_all(sse, &acked, true).await;
    }
    // The new primary did not reuse seqs the old one may have handed out.
    let jumped = acked
        .windows(2)
        .any(|w| seq(&w[1].0) > seq(&w[0].0) + (1 << 31));
    assert!(jumped, "the seq jumped ahead at the failover");
}

/// The same failover with an idempotency key on every publish, retried until acknowledged (a backend job): 0 lost, 0 duplicates, every event delivered once, where the Redis client's re-send of a publish whose answer died with the primary used to store it twice.
#[actix_web::test]
async fn primary_killed_with_keyed_retries_loses_and_doubles_nothing() {
    let mut redis = RedisCluster::start(3, 2);
    let mut nodes = Vec::new();
    for _ in 0..2 {
        nodes.push(
            spawn_cluster_node(&redis.seeds(), |s| {
                s.cluster.publish_wait_replicas = 1;
                s.cluster.publish_wait_timeout = Duration::from_millis(500);
            })
            .await,
        );
    }
    let mut sse = nodes[0].stream("/stream/keyed", &[]).await;
    sse.wait_open().await;
    let slot = redis.slot_of("keyed");
    let primary = redis.owner_of(slot);

    let publisher = Publisher::start_with(nodes[1].url("/publish/keyed"), true);
    publisher.wait_for_more(30, PATIENCE).await;
    redis.kill(primary);
    let deadline = tokio::time::Instant::now() + FAILOVER_PATIENCE;
    while redis.owner_of(slot) == primary {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no replica took over"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    publisher.wait_for_more(30, FAILOVER_PATIENCE).await;
    let acked = publisher.stop().await;

    // Every number was acknowledged once, in order: none lost by the
    // publisher (it retried each until acknowledged).
    let numbers: Vec<u64> = acked
        .iter()
        .map(|(_, data)| data.trim_matches('"').parse().unwrap())
        .collect();
    assert_eq!(numbers, (0..acked.len() as u64).collect::<Vec<_>>());
    let seen = delivered_all(&mut sse, &acked, true).await;
    // No body delivered twice under two ids.
    let bodies: HashSet<&String> = seen.iter().map(|(_, data)| data).collect();
    assert_eq!(bodies.len(), seen.len(), "no event was stored twice");
}

/// Sentinel fails the primary over under load: with WAIT 1 nothing acknowledged is lost, ids only grow.
#[actix_web::test]
async fn sentinel_failover_loses_nothing_acknowledged() {
    let mut setup = SentinelSetup::start();
    let sentinel = setup.sentinel.url();
    let node = spawn_app_with(|s| {
        s.cluster.redis_url = sentinel;
        s.cluster.redis_mode = RedisMode::Sentinel;
        s.cluster.sentinel_master = SENTINEL_MASTER.into();
        s.cluster.presence_interval = Duration::from_millis(200);
        s.cluster.max_reconnect_delay = Duration::from_millis(400);
        s.cluster.publish_wait_replicas = 1;
        s.cluster.publish_wait_timeout = Duration::from_millis(500);
    })
    .await;
    let mut sse = node.stream("/stream/sentinel", &[]).await;
    sse.wait_open().await;

    let publisher = Publisher::start(node.url("/publish/sentinel"));
    publisher.wait_for_more(30, PATIENCE).await;
    setup.primary.kill();
    setup.wait_for_failover().await;
    publisher.wait_for_more(30, FAILOVER_PATIENCE).await;
    let acked = publisher.stop().await;
    delivered_all(&mut sse, &acked, true).await;
}
