//! Readers that do not keep up: one that trickles through a tiny receive
//! window, one that stops in the middle of an event, a thousand that never
//! read, and one that closes its half of the socket.

use std::time::{Duration, Instant};

use futures_util::future::join_all;

use crate::{
    helpers::*,
    publish,
    raw::{Closed, RawStream},
    seq_of, unlimited_broker,
};

/// 16 KiB of JSON text, and where it came in the sequence.
fn payload(n: usize) -> String {
    format!("\"{n:06} {}\"", "x".repeat(16 * 1024 - 10))
}

async fn channel(
    client: &reqwest::Client,
    broker: &BrokerProcess,
    name: &str,
) -> serde_json::Value {
    let res = client
        .get(broker.url(&format!("/channels/{name}")))
        .send()
        .await
        .expect("GET /channels");
    res.json().await.unwrap_or(serde_json::Value::Null)
}

/// Reads `healthy` in the background; the events arrive on the receiver.
fn read_in_background(mut healthy: SseClient) -> tokio::sync::mpsc::UnboundedReceiver<SseEvent> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    actix_web::rt::spawn(async move {
        while let Some(event) = healthy.try_next_event().await {
            if tx.send(event).is_err() {
                return;
            }
        }
    });
    rx
}

/// Receives `n` events from the background reader, in time.
async fn take(rx: &mut tokio::sync::mpsc::UnboundedReceiver<SseEvent>, n: usize) -> Vec<SseEvent> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let event = tokio::time::timeout(PATIENCE, rx.recv())
            .await
            .expect("the healthy subscriber got the event in time")
            .expect("the healthy stream is open");
        if event.event == "message" {
            out.push(event);
        }
    }
    out
}

/// A reader with a 4 KiB receive window that trickles a few KiB a second:
/// evicted, then cut off within FINAL_FLUSH (it used to keep its socket and
/// be fed its whole queue for as long as it trickled), while a healthy
/// subscriber gets every event in order; the victim resumes with its
/// `Last-Event-ID` and gets exactly what it missed.
#[actix_web::test]
async fn trickling_reader_is_cut_off_and_resumes_exactly() {
    let broker = unlimited_broker(&[("SSE_BROKER__STREAM__SUBSCRIBER_BUFFER", "32")]);
    let client = crate::http_client();
    let mut healthy = stream_at(&client, &broker.url("/stream/trickle"), &[]).await;
    healthy.wait_open().await;
    let mut healthy = read_in_background(healthy);
    let mut victim = RawStream::open(&broker.addr, "/stream/trickle", &[], Some(4096)).await;
    victim.read_head().await;
    wait_until(|| async { channel(&client, &broker, "trickle").await["subscribers"] == 2 }).await;

    // Bounded: at most 600 events, stopping 20 after the eviction was seen.
    let mut published = Vec::new();
    let mut after_eviction = None;
    let mut evicted_at = Instant::now();
    for n in 0..600 {
        published.push(publish(&client, &broker, "trickle", payload(n)).await);
        if after_eviction.is_none()
            && n % 8 == 7
            && channel(&client, &broker, "trickle").await["evicted"] == 1
        {
            after_eviction = Some(n + 20);
            evicted_at = Instant::now();
        }
        if after_eviction == Some(n) {
            break;
        }
    }
    assert!(
        after_eviction.is_some(),
        "the trickling reader was never evicted"
    );

    // The healthy subscriber got everything, in order, while that happened.
    let seen = take(&mut healthy, published.len()).await;
    let seen_ids: Vec<&str> = seen.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(
        seen_ids,
        published.iter().map(String::as_str).collect::<Vec<_>>()
    );

    // The victim, reading ~10 KiB/s, is cut off soon instead of being fed
    // its queue for minutes.
    let started = Instant::now();
    let closed = victim
        .trickle(512, Duration::from_millis(50), Duration::from_secs(60))
        .await;
    assert_ne!(
        closed,
        Closed::Open,
        "still connected after {:?}",
        started.elapsed()
    );
    // A figure for docs/hostile-clients.md (scripts/soak.sh collects it), not an assertion.
    eprintln!(
        "measured: an evicted reader trickling ~10 KiB/s was cut off ({closed:?}) {:.1} s after its eviction was seen",
        evicted_at.elapsed().as_secs_f64()
    );

    // It resumes from the last complete event it got, and gets exactly the rest.
    let got = victim.events();
    let last = got
        .iter()
        .rev()
        .find(|e| e.event == "message")
        .map(|e| e.id.clone())
        .expect("the victim got some events before it fell behind");
    assert!(
        got.iter()
            .all(|e| e.event != "message" || e.data.len() == payload(0).len())
    );
    let mut back = stream_at(
        &client,
        &broker.url("/stream/trickle"),
        &[("Last-Event-ID", &last)],
    )
    .await;
    let missed = published.len()
        - published
            .iter()
            .position(|id| *id == last)
            .expect("a published id")
        - 1;
    let rest = back.next_messages(missed).await;
    let expected: Vec<u64> =
        (seq_of(&last) + 1..=seq_of(published.last().expect("published"))).collect();
    assert_eq!(
        rest.iter().map(|e| seq_of(&e.id)).collect::<Vec<_>>(),
        expected
    );
}

/// A reader that stops in the middle of an event is evicted and cut off;
/// whatever it read holds only whole events (the half-written one is
/// completed before anything else, never followed by a fragment).
#[actix_web::test]
async fn reader_stalled_mid_event_sees_only_whole_events() {
    let broker = unlimited_broker(&[("SSE_BROKER__STREAM__SUBSCRIBER_BUFFER", "16")]);
    let client = crate::http_client();
    let mut stalled = RawStream::open(&broker.addr, "/stream/halves", &[], Some(4096)).await;
    stalled.read_head().await;
    wait_until(|| async { channel(&client, &broker, "halves").await["subscribers"] == 1 }).await;
    publish(&client, &broker, "halves", payload(0)).await;
    // Half of the first event, then nothing.
    let mut read = 0;
    while read < 8 * 1024 {
        read += stalled
            .read_some(1024, PATIENCE)
            .await
            .expect("the event arrives");
    }
    for n in 1..400 {
        publish(&client, &broker, "halves", payload(n)).await;
        if n % 8 == 0 && channel(&client, &broker, "halves").await["evicted"] == 1 {
            break;
        }
    }
    assert_eq!(channel(&client, &broker, "halves").await["evicted"], 1);
    let closed = stalled
        .trickle(
            64 * 1024,
            Duration::from_millis(20),
            Duration::from_secs(60),
        )
        .await;
    assert_ne!(closed, Closed::Open);
    let events = stalled.events();
    assert!(!events.is_empty(), "the first event was completed");
    for event in events.iter().filter(|e| e.event == "message") {
        assert_eq!(
            event.data.len(),
            payload(0).len(),
            "a whole event: {}",
            &event.data[..20]
        );
    }
}

/// The broker's resident memory, from /proc.
fn rss_kib(broker: &BrokerProcess) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", broker.child.id()))
        .expect("/proc/PID/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .expect("VmRSS")
}

/// The memory of every TCP socket on the machine, in KiB (`/proc/net/sockstat`,
/// in pages): what the kernel holds in socket buffers, which the broker's
/// RSS does not show.
fn tcp_memory_kib() -> u64 {
    let sockstat = std::fs::read_to_string("/proc/net/sockstat").unwrap_or_default();
    let pages: u64 = sockstat
        .lines()
        .find(|line| line.starts_with("TCP:"))
        .and_then(|line| line.split_whitespace().skip_while(|w| *w != "mem").nth(1))
        .and_then(|pages| pages.parse().ok())
        .unwrap_or(0);
    pages * 4
}

/// A thousand readers that never read: all evicted and their connections
/// ended, while the broker's memory stays bounded (queued events are shared
/// with history, not copied per reader) and a healthy subscriber gets every
/// event in order.
#[actix_web::test]
async fn a_thousand_silent_readers_cost_little_and_go() {
    let broker = unlimited_broker(&[("SSE_BROKER__STREAM__SUBSCRIBER_BUFFER", "64")]);
    let client = crate::http_client();
    let mut healthy = stream_at(&client, &broker.url("/stream/crowd"), &[]).await;
    healthy.wait_open().await;
    let mut healthy = read_in_background(healthy);
    let silent = join_all(
        (0..1000).map(|_| RawStream::open(&broker.addr, "/stream/crowd", &[], Some(4096))),
    )
    .await;
    wait_until(|| async { channel(&client, &broker, "crowd").await["subscribers"] == 1001 }).await;
    let before = rss_kib(&broker);
    let tcp_before = tcp_memory_kib();

    let mut published = Vec::new();
    for n in 0..200 {
        published.push(publish(&client, &broker, "crowd", payload(n)).await);
        if n == 47 {
            // Each silent reader now pins what its socket and queue (64
            // units) hold: a figure for docs/hostile-clients.md.
            let (rss, tcp) = (rss_kib(&broker), tcp_memory_kib());
            eprintln!(
                "measured: a silent reader pinning 48 events of 16 KiB costs the broker {:.1} KiB of RSS \
                 and the kernel {:.1} KiB of socket buffers (1000 readers: RSS {before} -> {rss} KiB, \
                 TCP {tcp_before} -> {tcp} KiB)",
                rss.saturating_sub(before) as f64 / 1000.0,
                tcp.saturating_sub(tcp_before) as f64 / 1000.0,
            );
        }
    }
    let seen = take(&mut healthy, published.len()).await;
    assert_eq!(
        seen.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
        published.iter().map(String::as_str).collect::<Vec<_>>()
    );
    wait_until(|| async { channel(&client, &broker, "crowd").await["evicted"] == 1000 }).await;
    let peak = rss_kib(&broker);
    // 200 events of 16 KiB are 3.2 MiB of history; a copy per reader would be 3 GiB.
    assert!(
        peak.saturating_sub(before) < 96 * 1024,
        "RSS grew {before} -> {peak} KiB with a thousand silent readers"
    );
    // Their connections end (reset when they never read their last bytes).
    let open_streams = || async {
        let text = client
            .get(broker.url("/metrics"))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix("sse_broker_open_streams "))
            .and_then(|v| v.trim().parse::<f64>().ok())
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while open_streams().await != Some(1.0) {
        assert!(Instant::now() < deadline, "silent streams were not ended");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(silent);
}

/// A client that closes its half of the socket is unsubscribed at once
/// (an event stream reads nothing from the client, so a FIN means it left).
#[actix_web::test]
async fn half_closed_client_is_unsubscribed() {
    use tokio::io::AsyncWriteExt;
    let broker = BrokerProcess::start("127.0.0.1:0", &[]);
    let client = crate::http_client();
    let mut half = RawStream::open(&broker.addr, "/stream/halfway", &[], None).await;
    half.read_head().await;
    wait_until(|| async { channel(&client, &broker, "halfway").await["subscribers"] == 1 }).await;
    half.socket.shutdown().await.expect("shutdown(SHUT_WR)");
    wait_until(|| async {
        let listed = channel(&client, &broker, "halfway").await;
        listed["subscribers"] == 0 || listed["status"] == 404
    })
    .await;
    let closed = half
        .trickle(4096, Duration::from_millis(20), PATIENCE)
        .await;
    assert_ne!(closed, Closed::Open, "the broker closed its side too");
}
