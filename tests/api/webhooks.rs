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
    let grace = Duration::from_secs(1);
    let env = webhook_env(&receiver, "1s");
    let broker = BrokerProcess::start("127.0.0.1:0", &pairs(&env));
    let stream = subscribe(&broker, "/stream/room").await;
    receiver.wait_for(1).await;

    drop(stream);
    let again = subscribe(&broker, "/stream/room").await;
    // Past the first disconnect's grace: it must have been cancelled.
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

/// A webhook still pending when the broker is killed (data dir set) is delivered by the
/// restarted broker, with the same `webhook-id`.
#[actix_web::test]
async fn a_pending_webhook_survives_a_restart() {
    let receiver = Receiver::start(1_000);
    let dir = tempfile::tempdir().expect("a data dir");
    let mut env = webhook_env(&receiver, "1h");
    env.push((
        "SSE_BROKER__HISTORY__DATA_DIR",
        dir.path().display().to_string(),
    ));
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

/// With member events on, a user's first connection makes `member.joined` (with its token's
/// info) after `channel.occupied`, and its last `member.left` before `channel.vacated`.
#[actix_web::test]
async fn member_events_when_enabled() {
    let receiver = Receiver::start(0);
    let mut env = webhook_env(&receiver, "100ms");
    env.extend([
        (
            "SSE_BROKER__WEBHOOKS__EVENTS",
            "[\"channel.occupied\", \"channel.vacated\", \"member.joined\", \"member.left\"]"
                .to_owned(),
        ),
        ("SSE_BROKER__AUTH__ENABLED", "true".to_owned()),
        ("SSE_BROKER__AUTH__SECRET", AUTH_SECRET.to_owned()),
    ]);
    let broker = BrokerProcess::start("127.0.0.1:0", &pairs(&env));
    let token = hs_token_with(
        Algorithm::HS256,
        &json!({"sse": {"subscribe": ["*"], "info": {"name": "Ada"}}, "exp": now() + 3600, "sub": "ada"}),
    );

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
        let output = tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_sse-broker"))
                .args(["--bind", "127.0.0.1:0", "--demo", "false"])
                .env("SSE_BROKER__WEBHOOKS__URL", url)
                .env("SSE_BROKER__WEBHOOKS__SECRET", secret)
                .output()
                .expect("the broker runs")
        })
        .await
        .expect("joined");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{url} {secret:?} started");
        assert!(stderr.contains(says), "{url} {secret:?}: {stderr}");
    }
}
