//! Resuming with Last-Event-ID: replay without gap or duplicate, and an
//! explicit gap notice when the history cannot cover what was missed.

use crate::helpers::*;

/// A client that reconnects with Last-Event-ID gets exactly what it missed, then live events.
#[actix_web::test]
async fn reconnect_replays_missed_events_then_continues_live() {
    let app = spawn_app().await;
    let mut sse = app.stream("/stream/resume", &[]).await;
    sse.wait_open().await;
    app.publish("resume", "1").await;
    let seen = sse.next_event().await;
    drop(sse);
    for n in 2..=4 {
        app.publish("resume", &n.to_string()).await;
    }
    let mut sse = app
        .stream("/stream/resume", &[("Last-Event-ID", &seen.id)])
        .await;
    let replay_marker = sse.next_event().await;
    assert_eq!(replay_marker.event, "broker.replay");
    assert_eq!(replay_marker.data, r#"{"channel":"resume","count":3}"#);
    let replayed: Vec<String> = sse
        .next_messages(3)
        .await
        .into_iter()
        .map(|e| e.data)
        .collect();
    assert_eq!(replayed, ["2", "3", "4"]);
    let live_id = app.publish("resume", "5").await;
    let live = sse.next_event().await;
    assert_eq!(
        (live.data.as_str(), live.id.as_str()),
        ("5", live_id.as_str())
    );
}

/// The lastEventId query parameter resumes a first connection like the header does.
#[actix_web::test]
async fn last_event_id_query_parameter_resumes() {
    let app = spawn_app().await;
    let first = app.publish("query-resume", "1").await;
    app.publish("query-resume", "2").await;
    let mut sse = app
        .stream(&format!("/stream/query-resume?lastEventId={first}"), &[])
        .await;
    assert_eq!(sse.next_messages(1).await[0].data, "2");
}

/// An id from before a restart (another epoch) yields a gap notice, then everything retained.
#[actix_web::test]
async fn id_from_another_life_gets_gap_notice() {
    let app = spawn_app().await;
    app.publish("reborn", r#""kept""#).await;
    let mut sse = app
        .stream("/stream/reborn", &[("Last-Event-ID", "abc123-41")])
        .await;
    let gap = sse.next_event().await;
    assert_eq!(gap.event, "broker.gap");
    let notice: serde_json::Value = serde_json::from_str(&gap.data).unwrap();
    assert_eq!(notice["channel"], "reborn");
    assert_eq!(notice["reason"], "unknown-epoch");
    assert_eq!(notice["lastEventId"], "abc123-41");
    assert_eq!(gap.id, notice["resumeFrom"].as_str().unwrap());
    assert_eq!(sse.next_messages(1).await[0].data, r#""kept""#);
}

/// A client further behind than the history gets a gap notice, then the retained events.
#[actix_web::test]
async fn trimmed_history_gets_gap_notice() {
    let app = spawn_app_with(|s| s.history.max_events = 3).await;
    let first = app.publish("short", "1").await;
    for n in 2..=6 {
        app.publish("short", &n.to_string()).await;
    }
    let mut sse = app
        .stream("/stream/short", &[("Last-Event-ID", &first)])
        .await;
    let gap = sse.next_event().await;
    assert_eq!(gap.event, "broker.gap");
    assert!(
        gap.data.contains(r#""reason":"history-trimmed""#),
        "{}",
        gap.data
    );
    let replayed: Vec<String> = sse
        .next_messages(3)
        .await
        .into_iter()
        .map(|e| e.data)
        .collect();
    assert_eq!(replayed, ["4", "5", "6"]);
}

/// Something that is not one of our ids is a gap too, never a silent skip.
#[actix_web::test]
async fn foreign_id_gets_gap_notice() {
    let app = spawn_app().await;
    let mut sse = app
        .stream("/stream/foreign", &[("Last-Event-ID", "42")])
        .await;
    let gap = sse.next_event().await;
    assert_eq!(gap.event, "broker.gap");
    assert!(gap.data.contains(r#""reason":"unknown-id""#));
}

/// A client that is up to date resumes with no replay and no notice.
#[actix_web::test]
async fn up_to_date_client_resumes_quietly() {
    let app = spawn_app().await;
    let last = app.publish("current", "1").await;
    let mut sse = app
        .stream("/stream/current", &[("Last-Event-ID", &last)])
        .await;
    sse.wait_open().await;
    app.publish("current", "2").await;
    let next = sse.next_event().await;
    assert_eq!((next.event.as_str(), next.data.as_str()), ("message", "2"));
}

/// The value of a sample in `GET /metrics`.
async fn metric(app: &TestApp, name: &str) -> f64 {
    metric_value(&app.url("/metrics"), name).await
}

/// Past the broker-wide history budget the oldest events of the whole broker leave first, from a channel nobody publishes to any more too: a client resuming from one gets a history-trimmed gap, the newest events stay, and the metrics show what is retained and what was trimmed.
#[actix_web::test]
async fn history_budget_trims_the_oldest_events_across_channels() {
    const BUDGET: u64 = 64 * 1024;
    let app = spawn_app_with(|s| {
        s.server.max_body_bytes = 4096;
        s.history.max_total_bytes = BUDGET;
        // Slices of 100 ms; the tick trims channels that do not publish.
        s.history.max_age = std::time::Duration::from_secs(60);
        s.stream.heartbeat = std::time::Duration::from_millis(100);
        s.mercure.channel_updates = false;
    })
    .await;
    // A subscriber keeps the old channel (and its epoch) alive.
    let mut keeper = app.stream("/stream/budget-old", &[]).await;
    keeper.wait_open().await;
    let data = format!("\"{}\"", "x".repeat(1000));
    let old_first = app.publish("budget-old", &data).await;
    for _ in 1..20 {
        app.publish("budget-old", &data).await;
    }
    // Then more than the whole budget on another channel, in rounds of
    // less than an eighth of it, each in a later slice of time.
    let mut newest = Vec::new();
    for _ in 0..8 {
        tokio::time::sleep(std::time::Duration::from_millis(150)).await;
        for _ in 0..6 {
            newest.push(app.publish("budget-new", &data).await);
        }
    }

    wait_until(|| async {
        metric(&app, "sse_broker_history_retained_bytes").await <= BUDGET as f64
    })
    .await;
    assert!(metric(&app, "sse_broker_history_budget_trimmed_total").await >= 20.0);
    let mut old = app
        .stream("/stream/budget-old", &[("Last-Event-ID", &old_first)])
        .await;
    let gap = old.next_event().await;
    assert_eq!(gap.event, "broker.gap");
    assert!(
        gap.data.contains(r#""reason":"history-trimmed""#),
        "{}",
        gap.data
    );
    // The newest round is still there.
    let mut new = app
        .stream(
            "/stream/budget-new",
            &[("Last-Event-ID", &newest[newest.len() - 7])],
        )
        .await;
    let marker = new.next_event().await;
    assert_eq!(marker.event, "broker.replay", "{}", marker.data);
    let replayed: Vec<String> = new
        .next_messages(6)
        .await
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(replayed, newest[newest.len() - 6..]);
}
