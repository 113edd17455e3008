//! Operations endpoints: `/metrics` counts what happened, `/healthz` and
//! `/readyz` answer cheaply.

use std::collections::HashMap;

use crate::helpers::*;

/// Parses Prometheus text into `name{labels}` → value (comments skipped).
fn parse_metrics(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect()
}

impl TestApp {
    async fn metrics(&self) -> HashMap<String, f64> {
        let res = self
            .client
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("GET /metrics");
        assert_eq!(res.status(), 200);
        let content_type = res.headers()["content-type"].to_str().unwrap().to_owned();
        assert!(
            content_type.starts_with("text/plain; version=0.0.4"),
            "{content_type}"
        );
        parse_metrics(&res.text().await.expect("a text body"))
    }
}

fn value(metrics: &HashMap<String, f64>, series: &str) -> f64 {
    *metrics
        .get(series)
        .unwrap_or_else(|| panic!("no series {series} in {metrics:#?}"))
}

/// Streams, publishes, deliveries, replays, refusals, pulses and the
/// latency histogram all show up in `/metrics` with the right counts.
#[actix_web::test]
async fn metrics_count_what_happened() {
    let app = spawn_app_with(|s| s.metrics.channels = vec!["watched".into()]).await;
    let mut first = app.stream("/stream/watched", &[]).await;
    first.wait_open().await;
    let mut second = app.stream("/stream/watched", &[]).await;
    second.wait_open().await;
    let id1 = app.publish("watched", r#"{"n":1}"#).await;
    app.publish("watched", r#"{"n":2}"#).await;
    app.publish("unwatched", r#"{"n":3}"#).await;
    first.next_messages(2).await;
    second.next_messages(2).await;
    let (status, _) = app.publish_json("watched", "{not json").await;
    assert_eq!(status, 400);
    let (status, _) = app.publish_json("bad!name", "{}").await;
    assert_eq!(status, 400);
    let mut resumed = app
        .stream("/stream/watched", &[("Last-Event-ID", id1.as_str())])
        .await;
    assert_eq!(resumed.next_messages(1).await[0].data, r#"{"n":2}"#);
    let pulse = app
        .client
        .post(app.url("/pulse"))
        .header("content-type", "application/json")
        .body(r#"{"clientId":"tab-1","channel":"watched"}"#)
        .send()
        .await
        .expect("pulse");
    assert!(pulse.status().is_success());

    let m = app.metrics().await;
    assert_eq!(value(&m, "sse_broker_open_streams"), 3.0);
    assert_eq!(value(&m, "sse_broker_subscribers"), 3.0);
    assert_eq!(value(&m, "sse_broker_channels"), 2.0);
    assert_eq!(value(&m, "sse_broker_events_published_total"), 3.0);
    assert_eq!(value(&m, "sse_broker_events_delivered_total"), 4.0);
    assert_eq!(value(&m, "sse_broker_events_replayed_total"), 1.0);
    assert_eq!(value(&m, "sse_broker_subscribers_evicted_total"), 0.0);
    assert_eq!(value(&m, "sse_broker_pulses_total"), 1.0);
    assert_eq!(
        value(&m, "sse_broker_publish_errors_total{status=\"400\"}"),
        2.0
    );
    assert_eq!(value(&m, "sse_broker_publish_enqueue_seconds_count"), 3.0);
    assert_eq!(
        value(&m, "sse_broker_publish_enqueue_seconds_bucket{le=\"+Inf\"}"),
        3.0
    );
    // The pulse is counted by its channel after the answer: its message may
    // still be in the channel's mailbox, and is gone soon after.
    assert!(value(&m, "sse_broker_channel_mailbox_depth") <= 1.0);
    wait_until(|| async {
        app.metrics().await.get("sse_broker_channel_mailbox_depth") == Some(&0.0)
    })
    .await;
    assert!(value(&m, "sse_broker_registry_latency_seconds") >= 0.0);
    // Only the opted-in channel has labelled series.
    assert_eq!(
        value(
            &m,
            "sse_broker_channel_events_published_total{channel=\"watched\"}"
        ),
        2.0
    );
    assert_eq!(
        value(
            &m,
            "sse_broker_channel_events_delivered_total{channel=\"watched\"}"
        ),
        4.0
    );
    assert_eq!(
        value(&m, "sse_broker_channel_subscribers{channel=\"watched\"}"),
        3.0
    );
    assert!(
        !m.keys().any(|series| series.contains("unwatched")),
        "no series names a channel that was not opted in"
    );

    drop((first, second, resumed));
    wait_until(|| async { app.metrics().await.get("sse_broker_open_streams") == Some(&0.0) }).await;
}

/// A slow consumer's eviction is counted, and its stream ends with the
/// reconnect hint.
#[actix_web::test]
async fn metrics_count_evictions() {
    let app = spawn_app_with(|s| s.stream.subscriber_buffer = 2).await;
    // Opened, then not read: its socket buffers fill, then its queue.
    let mut stalled = app.stream("/stream/stalled", &[]).await;
    app.wait_for_subscribers("stalled", 1).await;
    let payload = format!("\"{}\"", "x".repeat(64 * 1024 - 2));
    // Bounded: at most 400 events of 64 KiB, stopping once the eviction is seen.
    for _ in 0..400 {
        app.publish("stalled", &payload).await;
        let (_, channel) = app.get_json("/channels/stalled").await;
        if channel["evicted"] == 1 {
            break;
        }
    }
    let m = app.metrics().await;
    assert_eq!(value(&m, "sse_broker_subscribers_evicted_total"), 1.0);
    stalled.until_end().await;
    assert!(
        stalled
            .comments
            .iter()
            .any(|c| c == "reconnect reason=evicted"),
        "{:?}",
        stalled.comments
    );
    assert!(stalled.retry.is_some());
}

/// With metrics disabled there is no `/metrics` route.
#[actix_web::test]
async fn metrics_can_be_turned_off() {
    let app = spawn_app_with(|s| s.metrics.enabled = false).await;
    let res = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(res.status(), 404);
}

/// `/healthz` says alive, `/readyz` lists its checks and says ready.
#[actix_web::test]
async fn health_and_readiness_answer_json() {
    let app = spawn_app().await;
    let (status, body) = app.get_json("/healthz").await;
    assert_eq!(status, 200);
    assert_eq!(body["status"], "alive");
    let (status, body) = app.get_json("/readyz").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "ready");
    assert_eq!(body["checks"][0]["name"], "registry");
    assert_eq!(body["checks"][0]["ok"], true);
}

/// A port already in use stops the real binary with one clear error line and no panic.
#[test]
fn taken_port_stops_the_start_with_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    let addr = taken.local_addr().expect("its address").to_string();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sse-broker"))
        .args(["--bind", &addr, "--demo", "false"])
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("the broker runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("cannot listen on {addr}")),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}
