//! Hostile, slow and odd clients against the real binary: readers that
//! trickle, stall mid-event or never read, slowloris request heads,
//! half-closed sockets, reconnect loops with a stale `Last-Event-ID`, a
//! reconnect storm, and the third-party clients people use. For each: the
//! broker ends the connection within a documented time, its memory stays
//! bounded, the other subscribers get everything in order, and the victim
//! resumes with exactly what it missed.
//!
//! A binary of its own: some scenarios hold thousands of sockets, which
//! must not share a process with the other integration tests.

#[allow(dead_code)]
#[path = "../api/helpers.rs"]
mod helpers;
mod raw;
#[allow(dead_code)]
#[path = "../api/redis_support.rs"]
mod redis_support;

mod clients;
mod readers;
mod requests;
mod storm;

use helpers::{BrokerProcess, http_client};

/// The real binary with `env`, and neither the per-IP stream cap nor the
/// publish rate limit (every client here is 127.0.0.1, and the scenarios
/// need more of both than those defaults allow).
fn unlimited_broker(env: &[(&str, &str)]) -> BrokerProcess {
    let mut all = vec![
        ("SSE_BROKER__LIMITS__MAX_STREAMS_PER_IP", "0"),
        ("SSE_BROKER__LIMITS__PUBLISH_RATE", "0"),
    ];
    all.extend_from_slice(env);
    BrokerProcess::start("127.0.0.1:0", &all)
}

/// Publishes `body` (JSON) to `channel`; the acknowledged event's id.
async fn publish(
    client: &reqwest::Client,
    broker: &BrokerProcess,
    channel: &str,
    body: String,
) -> String {
    let res = client
        .post(broker.url(&format!("/publish/{channel}")))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("publish");
    assert_eq!(res.status(), 202, "a publish was refused");
    let answer: serde_json::Value = res.json().await.expect("JSON");
    answer["id"].as_str().expect("an id").to_owned()
}

/// The sequence number in an event id (`<epoch>-<seq>`).
fn seq_of(id: &str) -> u64 {
    id.rsplit('-')
        .next()
        .expect("an id")
        .parse()
        .expect("a seq")
}
