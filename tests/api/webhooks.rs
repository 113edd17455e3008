//! Occupancy webhooks (docs/webhooks.md): the real broker binary POSTs
//! `channel.occupied` / `channel.vacated` (and, opted in, `member.joined` /
//! `member.left`) to a real receiver that verifies every delivery with the
//! Standard Webhooks library; retried in order with the same id, kept
//! across a restart with a data dir, refused at startup when misconfigured.

use std::time::Duration;

use jsonwebtoken::Algorithm;
use serde_json::json;

use crate::{
    auth::{SECRET as AUTH_SECRET, hs_token_with, now},
    helpers::*,
    redis_cluster_support::RedisCluster,
    redis_support::{NodeProcess, RedisServer},
    webhooks_support::*,
};

/// A stream of `channel` on the broker at `broker`, open.
async fn subscribe(broker: &BrokerProcess, path: &str) -> SseClient {
    let mut stream = stream_at(&http_client(), &broker.url(path), &[]).await;
    stream.wait_open().await;
    stream
}

/// The types of `deliveries`, in order.
fn kinds(deliveries: &[Delivered]) -> Vec<&str> {
    deliveries.iter().map(Delivered::kind).collect()
}

/// The first subscriber makes one signed `channel.occupied`, a second one nothing, and the
/// last one leaving a `channel.vacated` once the grace is over.
#[actix_web::test]
async fn occupied_on_first_subscribe_and_vacated_after_the_grace() {
    let receiver = Receiver::start(0);
    let env = webhook_env(&receiver, "300ms");
    let broker = BrokerProcess::start("127.0.0.1:0", &pairs(&env));

    let first = subscribe(&broker, "/stream/room").await;
    let occupied = receiver.wait_for(1).await;
    let second = subscribe(&broker, "/stream/room").await;
    drop(first);
    drop(second);
    let all = receiver.wait_for(2).await;

    assert_eq!(kinds(&occupied), ["channel.occupied"]);
    assert_eq!(kinds(&all), ["channel.occupied", "channel.vacated"]);
    for delivered in &all {
        assert_eq!(delivered.body["channel"], "room");
        assert_eq!(delivered.body["data"]["channel"], "room");
        assert!(
            delivered.body["timestamp"]
                .as_str()
                .is_some_and(|t| t.ends_with('Z'))
        );
        assert!(delivered.id.starts_with("msg_"));
    }
    assert_ne!(all[0].id, all[1].id);
    let (_, attempts, rejected) = receiver.deliveries().await;
    assert_eq!((attempts.len(), rejected), (2, 0));
    let metrics = broker.url("/metrics");
    assert_eq!(
        metric_value(&metrics, "sse_broker_webhooks_sent_total").await,
        2.0
    );
    assert_eq!(
        metric_value(&metrics, "sse_broker_webhooks_pending").await,
        0.0
    );
}

/// A subscriber back within `vacated_after` cancels the vacancy: nothing is sent until the
/// channel stays empty for the whole grace.
#[actix_web::test]
async fn a_reconnect_within_the_grace_sends_nothing() {
    let receiver = Receiver::start(0);
    let grace = Duration::from_secs(2);
    let env = webhook_env(&receiver, "2s");
    let broker = BrokerProcess::start("127.0.0.1:0", &pairs(&env));
    let stream = subscribe(&broker, "/stream/room").await;
    receiver.wait_for(1).await;

    drop(stream);
    // The broker saw the channel empty (its grace runs from here).
    let client = http_client();
    wait_until(|| async {
        let res = client.get(broker.url("/channels/room")).send().await;
        match res {
            Ok(res) if res.status() == 404 => true,
            Ok(res) => res
                .json::<serde_json::Value>()
                .await
                .ok()
                .is_some_and(|body| body["subscribers"] == 0),
            Err(_) => false,
        }
    })
    .await;
    let again = subscribe(&broker, "/stream/room").await;
    // Past the first vacancy's grace: it must have been cancelled.
    tokio::time::sleep(grace + Duration::from_millis(500)).await;
    let (during, _, _) = receiver.deliveries().await;
    drop(again);
    let after = receiver.wait_for(2).await;

    assert_eq!(kinds(&during), ["channel.occupied"]);
    assert_eq!(kinds(&after), ["channel.occupied", "channel.vacated"]);
}

/// A receiver that fails twice gets the same webhook a third time (same `webhook-id`), and
/// the channel's `channel.vacated` only after it: in order.
#[actix_web::test]
async fn a_failing_receiver_gets_the_same_webhook_again_in_order() {
    let receiver = Receiver::start(2);
    let env = webhook_env(&receiver, "100ms");
    let broker = BrokerProcess::start("127.0.0.1:0", &pairs(&env));

    let stream = subscribe(&broker, "/stream/room").await;
    drop(stream);
    let all = receiver.wait_for(2).await;
    let (_, attempts, _) = receiver.deliveries().await;

    assert_eq!(kinds(&all), ["channel.occupied", "channel.vacated"]);
    let (occupied, vacated) = (all[0].id.as_str(), all[1].id.as_str());
    assert_eq!(attempts, [occupied, occupied, occupied, vacated]);
    let metrics = broker.url("/metrics");
    assert_eq!(
        metric_value(&metrics, "sse_broker_webhooks_retried_total").await,
        2.0
    );
    assert_eq!(
        metric_value(&metrics, "sse_broker_webhooks_sent_total").await,
        2.0
    );
    assert_eq!(
        metric_value(&metrics, "sse_broker_webhooks_failed_total").await,
        0.0
    );
}

/// [`webhook_env`] with a data dir, which lives as long as the returned folder.
fn webhook_env_with_data_dir(
    receiver: &Receiver,
    grace: &str,
) -> (Vec<(&'static str, String)>, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("a data dir");
    let mut env = webhook_env(receiver, grace);
    env.push((
        "SSE_BROKER__HISTORY__DATA_DIR",
        dir.path().display().to_string(),
    ));
    (env, dir)
}

/// A webhook still pending when the broker is killed (data dir set) is delivered by the
/// restarted broker, with the same `webhook-id`.
#[actix_web::test]
async fn a_pending_webhook_survives_a_restart() {
    let receiver = Receiver::start(1_000);
    let (env, _dir) = webhook_env_with_data_dir(&receiver, "1h");
    let mut broker = BrokerProcess::start("127.0.0.1:0", &pairs(&env));
    let stream = subscribe(&broker, "/stream/room").await;
    let attempts = receiver.wait_for_attempts(1).await;
    let _ = broker.child.kill();
    let _ = broker.child.wait();
    drop(stream);

    receiver.fail_next(0).await;
    let _restarted = BrokerProcess::start("127.0.0.1:0", &pairs(&env));
    let delivered = receiver.wait_for(1).await;

    assert_eq!(kinds(&delivered), ["channel.occupied"]);
    assert_eq!(delivered[0].id, attempts[0]);
}

/// A channel occupied when the broker was killed (data dir set) is vacated by the restarted
/// broker once its grace passes without a subscriber; a channel whose subscriber comes back
/// within the grace is not announced occupied a second time.
#[actix_web::test]
async fn occupancy_is_remembered_across_a_restart() {
    let receiver = Receiver::start(0);
    let grace = Duration::from_secs(2);
    let (env, _dir) = webhook_env_with_data_dir(&receiver, "2s");
    let mut broker = BrokerProcess::start("127.0.0.1:0", &pairs(&env));
    let left = subscribe(&broker, "/stream/left").await;
    let back = subscribe(&broker, "/stream/back").await;
    receiver.wait_for(2).await;
    let _ = broker.child.kill();
    let _ = broker.child.wait();
    drop((left, back));

    let restarted = BrokerProcess::start("127.0.0.1:0", &pairs(&env));
    let _again = subscribe(&restarted, "/stream/back").await;
    // Past the grace: `left` was vacated, `back` was not announced again.
    tokio::time::sleep(grace + Duration::from_millis(500)).await;
    let all = receiver.wait_for(3).await;

    let seen: Vec<(String, String)> = all
        .iter()
        .map(|d| {
            (
                d.body["type"].as_str().unwrap_or_default().to_owned(),
                d.body["channel"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let after_restart = &seen[2..];
    assert_eq!(
        after_restart,
        [("channel.vacated".to_owned(), "left".to_owned())],
        "{seen:?}"
    );
}

/// Settings with member events on, and auth (identities come from tokens).
fn member_env() -> Vec<(&'static str, String)> {
    let events = r#"["channel.occupied", "channel.vacated", "member.joined", "member.left"]"#;
    vec![
        ("SSE_BROKER__WEBHOOKS__EVENTS", events.to_owned()),
        ("SSE_BROKER__AUTH__ENABLED", "true".to_owned()),
        ("SSE_BROKER__AUTH__SECRET", AUTH_SECRET.to_owned()),
    ]
}

/// A subscriber token of the user `ada`, with her info.
fn ada_token() -> String {
    hs_token_with(
        Algorithm::HS256,
        &json!({"sse": {"subscribe": ["*"], "info": {"name": "Ada"}}, "exp": now() + 3600, "sub": "ada"}),
    )
}

/// With member events on, a user's first connection makes `member.joined` (with its token's
/// info) after `channel.occupied`, and its last `member.left` before `channel.vacated`.
#[actix_web::test]
async fn member_events_when_enabled() {
    let receiver = Receiver::start(0);
    let mut env = webhook_env(&receiver, "100ms");
    env.extend(member_env());
    let broker = BrokerProcess::start("127.0.0.1:0", &pairs(&env));
    let token = ada_token();

    let stream = subscribe(&broker, &format!("/stream/room?token={token}")).await;
    receiver.wait_for(2).await;
    drop(stream);
    let all = receiver.wait_for(4).await;

    assert_eq!(
        kinds(&all),
        [
            "channel.occupied",
            "member.joined",
            "member.left",
            "channel.vacated"
        ]
    );
    for member in &all[1..3] {
        assert_eq!(member.body["user"], "ada");
        assert_eq!(member.body["info"]["name"], "Ada");
        assert_eq!(member.body["data"]["user"], "ada");
    }
}

/// The broker refuses to start with a webhook URL and a secret that is not `whsec_` base64,
/// without a secret, or with a URL that is not http(s).
#[actix_web::test]
async fn startup_refuses_a_bad_secret() {
    for (url, secret, says) in [
        (
            "http://127.0.0.1:9/hook",
            "not-a-secret",
            "webhooks: secret",
        ),
        ("http://127.0.0.1:9/hook", "", "webhooks: secret"),
        ("ftp://127.0.0.1/hook", SECRET, "must be an http"),
    ] {
        let mut broker = std::process::Command::new(env!("CARGO_BIN_EXE_sse-broker"))
            .args(["--bind", "127.0.0.1:0", "--demo", "false"])
            .env("SSE_BROKER__WEBHOOKS__URL", url)
            .env("SSE_BROKER__WEBHOOKS__SECRET", secret)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("the broker runs");
        let deadline = tokio::time::Instant::now() + PATIENCE;
        let status = loop {
            if let Some(status) = broker.try_wait().expect("try_wait") {
                break status;
            }
            if tokio::time::Instant::now() > deadline {
                let _ = broker.kill();
                panic!("{url} {secret:?}: the broker started");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut broker.stderr.take().expect("piped"), &mut stderr)
            .expect("its log");
        assert!(!status.success(), "{url} {secret:?} started");
        assert!(stderr.contains(says), "{url} {secret:?}: {stderr}");
    }
}

/// Waits until `n` nodes have recorded subscribers on `channel` in Redis.
async fn wait_for_nodes(redis: &RedisServer, channel: &str, n: u64) {
    wait_for_fields(redis, &format!("sse:{{{channel}}}:occupancy:nodes"), n).await;
}

/// Waits until the hash `key` has `n` fields.
async fn wait_for_fields(redis: &RedisServer, key: &str, n: u64) {
    let key = key.to_owned();
    let port = redis.port.to_string();
    wait_until(|| {
        let (key, port) = (key.clone(), port.clone());
        async move {
            let out = tokio::task::spawn_blocking(move || {
                std::process::Command::new("redis-cli")
                    .args(["-p", &port, "HLEN", &key])
                    .output()
            })
            .await
            .expect("joined")
            .expect("redis-cli runs");
            String::from_utf8_lossy(&out.stdout).trim() == n.to_string()
        }
    })
    .await;
}

/// Two nodes of a cluster with webhooks to `receiver`.
fn cluster_nodes(redis: &RedisServer, receiver: &Receiver) -> (NodeProcess, NodeProcess) {
    cluster_nodes_with(redis, receiver, Vec::new())
}

/// [`cluster_nodes`] with `extra` settings.
fn cluster_nodes_with(
    redis: &RedisServer,
    receiver: &Receiver,
    extra: Vec<(&'static str, String)>,
) -> (NodeProcess, NodeProcess) {
    let mut env = webhook_env(receiver, "300ms");
    env.push(("SSE_BROKER__CLUSTER__PRESENCE_INTERVAL", "200ms".to_owned()));
    env.extend(extra);
    let env = pairs(&env);
    (
        NodeProcess::start_with(&redis.url(), &env),
        NodeProcess::start_with(&redis.url(), &env),
    )
}

/// Subscribed on node A, then B, then unsubscribed from A, then B: the cluster sends exactly
/// one `channel.occupied` and one `channel.vacated`, in order, verified.
#[actix_web::test]
async fn one_occupied_and_one_vacated_across_two_nodes() {
    let redis = RedisServer::start();
    let receiver = Receiver::start(0);
    let (a, b) = cluster_nodes(&redis, &receiver);
    let client = http_client();

    let mut on_a = stream_at(&client, &a.url("/stream/room"), &[]).await;
    on_a.wait_open().await;
    receiver.wait_for(1).await;
    let mut on_b = stream_at(&client, &b.url("/stream/room"), &[]).await;
    on_b.wait_open().await;
    wait_for_nodes(&redis, "room", 2).await;
    drop(on_a);
    wait_for_nodes(&redis, "room", 1).await;
    drop(on_b);
    receiver.wait_for(2).await;
    // Long enough for a second node's duplicate to show (grace, polls, a lease).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (accepted, attempts, rejected) = receiver.deliveries().await;

    assert_eq!(kinds(&accepted), ["channel.occupied", "channel.vacated"]);
    assert_eq!((attempts.len(), rejected), (2, 0));
    assert_ne!(accepted[0].id, accepted[1].id);
}

/// Redis gone while webhooks are on: a stream's leaving is not held up (the change Redis
/// cannot record is counted as dropped) and the node answers; once Redis is back (empty), a
/// channel's first subscriber is announced as before.
#[actix_web::test]
async fn a_dead_redis_holds_nothing_up_and_webhooks_resume() {
    let mut redis = RedisServer::start();
    let receiver = Receiver::start(0);
    let (a, _b) = cluster_nodes(&redis, &receiver);
    let client = http_client();
    let mut leaving = stream_at(&client, &a.url("/stream/leaving"), &[]).await;
    leaving.wait_open().await;
    receiver.wait_for(1).await;

    redis.kill();
    drop(leaving);
    let health = client.get(a.url("/healthz")).send().await.expect("healthz");
    assert_eq!(health.status(), 200);
    // The vacancy could not be recorded: counted as dropped, not waited on.
    let metrics = a.url("/metrics");
    wait_until(|| async {
        metric_value(&metrics, "sse_broker_webhooks_dropped_total").await >= 1.0
    })
    .await;

    redis.restart();
    // The node reconnects by itself; until then a stream is refused (503).
    let url = a.url("/stream/fresh");
    let mut fresh = None;
    for _ in 0..150 {
        let res = stream_request(&client, &url, &[]).await;
        if res.status() == 200 {
            fresh = Some(SseClient::new(res));
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let fresh = fresh.expect("the node takes streams again once Redis is back");
    wait_until(|| async {
        let (accepted, _, _) = receiver.deliveries().await;
        accepted
            .iter()
            .any(|d| d.kind() == "channel.occupied" && d.body["channel"] == "fresh")
    })
    .await;
    drop(fresh);
}

/// In a cluster a receiver that fails twice gets the same webhook again until it takes it,
/// and exactly once successfully: one node sends, in order.
#[actix_web::test]
async fn a_failing_receiver_is_retried_once_across_two_nodes() {
    let redis = RedisServer::start();
    let receiver = Receiver::start(2);
    let (a, _b) = cluster_nodes(&redis, &receiver);

    let mut stream = stream_at(&http_client(), &a.url("/stream/room"), &[]).await;
    stream.wait_open().await;
    wait_for_nodes(&redis, "room", 1).await;
    drop(stream);
    receiver.wait_for(2).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (accepted, attempts, _) = receiver.deliveries().await;

    assert_eq!(kinds(&accepted), ["channel.occupied", "channel.vacated"]);
    let (occupied, vacated) = (accepted[0].id.as_str(), accepted[1].id.as_str());
    assert_eq!(attempts, [occupied, occupied, occupied, vacated]);
}

/// On a Redis Cluster, the node sending a webhook is killed mid-retry: another node takes
/// the channel's lease and delivers it (same `webhook-id`), then the vacancy, once each.
#[actix_web::test]
async fn a_node_killed_mid_send_leaves_its_webhook_to_another_on_redis_cluster() {
    let redis = RedisCluster::start(3, 0);
    let receiver = Receiver::start(1_000);
    let mut env = webhook_env(&receiver, "300ms");
    env.extend([
        ("SSE_BROKER__CLUSTER__REDIS_MODE", "cluster".to_owned()),
        ("SSE_BROKER__CLUSTER__PRESENCE_INTERVAL", "200ms".to_owned()),
    ]);
    let env = pairs(&env);
    let seeds = redis.seeds();
    let mut nodes = [
        NodeProcess::start_with(&seeds, &env),
        NodeProcess::start_with(&seeds, &env),
    ];
    let stream = stream_at(&http_client(), &nodes[0].url("/stream/room"), &[]).await;
    let first = receiver.wait_for_attempts(1).await;

    // The lease holder is the node whose id starts with its pid.
    let owner = redis.owner_of(redis.slot_of("room")).to_string();
    let holder = std::process::Command::new("redis-cli")
        .args(["-p", &owner, "GET", "sse:{room}:webhooks:lease"])
        .output()
        .expect("redis-cli runs");
    let holder = String::from_utf8_lossy(&holder.stdout).trim().to_owned();
    let sender = nodes
        .iter()
        .position(|node| holder.starts_with(&format!("{:x}-", node.pid())))
        .expect("a node holds the lease");
    nodes[sender].kill();
    receiver.fail_next(0).await;
    drop(stream);
    let delivered = receiver.wait_for(2).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (accepted, _, rejected) = receiver.deliveries().await;

    assert_eq!(kinds(&delivered), ["channel.occupied", "channel.vacated"]);
    assert_eq!(accepted.len(), 2, "once each");
    assert_eq!((delivered[0].id.as_str(), rejected), (first[0].as_str(), 0));
}

/// A receiver that answers `410 Gone` gets no retry of that webhook: it is given up and
/// counted, and the channel's next webhook still comes.
#[actix_web::test]
async fn gone_gives_a_webhook_up_at_once() {
    let receiver = Receiver::start(0);
    receiver.fail_next_with(1, 410).await;
    let env = webhook_env(&receiver, "100ms");
    let broker = BrokerProcess::start("127.0.0.1:0", &pairs(&env));

    let stream = subscribe(&broker, "/stream/room").await;
    drop(stream);
    let accepted = receiver.wait_for(1).await;
    let (_, attempts, _) = receiver.deliveries().await;

    assert_eq!(kinds(&accepted), ["channel.vacated"]);
    assert_eq!(attempts.len(), 2, "one attempt each");
    let metrics = broker.url("/metrics");
    assert_eq!(
        metric_value(&metrics, "sse_broker_webhooks_failed_total").await,
        1.0
    );
    assert_eq!(
        metric_value(&metrics, "sse_broker_webhooks_retried_total").await,
        0.0
    );
}

/// In a cluster a user connected through two nodes is one member: one `member.joined` when
/// her first connection anywhere comes, one `member.left` when her last one goes.
#[actix_web::test]
async fn a_user_on_two_nodes_joins_and_leaves_once() {
    let redis = RedisServer::start();
    let receiver = Receiver::start(0);
    let (a, b) = cluster_nodes_with(&redis, &receiver, member_env());
    let client = http_client();
    let path = format!("/stream/room?token={}", ada_token());

    let mut on_a = stream_at(&client, &a.url(&path), &[]).await;
    on_a.wait_open().await;
    receiver.wait_for(2).await;
    let mut on_b = stream_at(&client, &b.url(&path), &[]).await;
    on_b.wait_open().await;
    let users = "sse:{room}:occupancy:users";
    wait_for_fields(&redis, users, 2).await;
    drop(on_a);
    wait_for_fields(&redis, users, 1).await;
    drop(on_b);
    receiver.wait_for(4).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (accepted, _, rejected) = receiver.deliveries().await;

    assert_eq!(
        kinds(&accepted),
        [
            "channel.occupied",
            "member.joined",
            "member.left",
            "channel.vacated"
        ]
    );
    assert_eq!(accepted[1].body["info"]["name"], "Ada");
    assert_eq!(rejected, 0);
}

/// With two URLs each gets every webhook, in order, from a queue of its own: a receiver
/// that fails holds up nothing at the other, and gets the same webhooks once it recovers.
#[actix_web::test]
async fn every_url_gets_every_webhook_and_a_failing_one_holds_up_no_other() {
    let failing = Receiver::start(1_000);
    let healthy = Receiver::start(0);
    let mut env = webhook_env(&healthy, "100ms");
    for (key, value) in &mut env {
        if *key == "SSE_BROKER__WEBHOOKS__URL" {
            *value = format!("{},{}", failing.hook_url(), healthy.hook_url());
        }
    }
    env.push(("SSE_BROKER__WEBHOOKS__MAX_ATTEMPTS", "100".to_owned()));
    let broker = BrokerProcess::start("127.0.0.1:0", &pairs(&env));

    let stream = subscribe(&broker, "/stream/room").await;
    drop(stream);
    let at_healthy = healthy.wait_for(2).await;
    let tried = failing.wait_for_attempts(2).await;
    let (at_failing_meanwhile, _, _) = failing.deliveries().await;
    failing.fail_next(0).await;
    let at_failing = failing.wait_for(2).await;

    assert_eq!(kinds(&at_healthy), ["channel.occupied", "channel.vacated"]);
    assert!(
        at_failing_meanwhile.is_empty(),
        "the failing one took nothing"
    );
    assert_eq!(tried[0], tried[1], "its first webhook, tried again");
    assert_eq!(kinds(&at_failing), ["channel.occupied", "channel.vacated"]);
    let ids = |all: &[Delivered]| all.iter().map(|d| d.id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&at_failing), ids(&at_healthy), "the same webhooks");
    assert_eq!(
        metric_value(&broker.url("/metrics"), "sse_broker_webhooks_sent_total").await,
        4.0,
        "two URLs count two"
    );
}

/// `webhooks.max_pending` bounds what waits per URL: while a receiver fails, a webhook
/// beyond the bound is dropped and counted (not queued), and the one waiting still arrives.
#[actix_web::test]
async fn a_full_queue_drops_the_new_webhook_and_counts_it() {
    let receiver = Receiver::start(3);
    let mut env = webhook_env(&receiver, "10s");
    env.push(("SSE_BROKER__WEBHOOKS__MAX_PENDING", "1".to_owned()));
    let broker = BrokerProcess::start("127.0.0.1:0", &pairs(&env));

    let first = subscribe(&broker, "/stream/first").await;
    receiver.wait_for_attempts(1).await;
    let second = subscribe(&broker, "/stream/second").await;
    let metrics = broker.url("/metrics");
    wait_until(|| async {
        metric_value(&metrics, "sse_broker_webhooks_dropped_total").await >= 1.0
    })
    .await;
    let accepted = receiver.wait_for(1).await;
    // Enough time for a wrongly queued second webhook to arrive after the first.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (all, _, _) = receiver.deliveries().await;

    assert_eq!(kinds(&accepted), ["channel.occupied"]);
    assert_eq!(all.len(), 1, "the second channel's webhook was dropped");
    assert_eq!(all[0].body["channel"], "first");
    assert_eq!(
        metric_value(&metrics, "sse_broker_webhooks_dropped_total").await,
        1.0
    );
    assert_eq!(
        metric_value(&metrics, "sse_broker_webhooks_pending").await,
        0.0
    );
    drop((first, second));
}
