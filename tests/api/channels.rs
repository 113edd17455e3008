//! Channel listings, idle channels and CORS.

use std::time::Duration;

use crate::helpers::*;

/// GET /channels lists live channels with their counters; an unknown one is 404.
#[actix_web::test]
async fn channels_are_listed() {
    let app = spawn_app().await;
    let _sub = app.stream("/stream/listed", &[]).await;
    app.wait_for_subscribers("listed", 1).await;
    let id = app.publish("listed", "1").await;
    let (_, list) = app.get_json("/channels").await;
    let entry = list
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "listed")
        .expect("listed")
        .clone();
    assert_eq!(entry["subscribers"], 1);
    assert_eq!(entry["published"], 1);
    assert_eq!(entry["lastEventId"], id.as_str());
    assert_eq!(entry["history"], 1);
    let (status, body) = app.get_json("/channels/never-seen").await;
    assert_eq!(status, 404);
    assert_eq!(body["status"], 404);
}

/// A channel with no subscribers and an expired history is stopped, and comes back fresh.
#[actix_web::test]
async fn idle_channel_is_stopped() {
    let app = spawn_app_with(|s| {
        s.stream.heartbeat = Duration::from_millis(50);
        s.history.max_age = Duration::from_millis(100);
    })
    .await;
    let old = app.publish("fleeting", "1").await;
    wait_until(|| async { app.get_json("/channels/fleeting").await.0 == 404 }).await;
    let new = app.publish("fleeting", "2").await;
    assert_ne!(
        old.split('-').next(),
        new.split('-').next(),
        "a new life gets a new epoch"
    );
    assert!(new.ends_with("-1"));
}

/// A preflight from an allowed origin is answered; another origin is not allowed.
#[actix_web::test]
async fn cors_preflight() {
    let app = spawn_app().await;
    let preflight = |origin: &'static str| {
        app.client
            .request(reqwest::Method::OPTIONS, app.url("/publish/test"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type")
            .send()
    };
    let ok = preflight("http://localhost:3000").await.unwrap();
    assert!(ok.status().is_success());
    assert_eq!(
        ok.headers()["access-control-allow-origin"],
        "http://localhost:3000"
    );
    assert!(
        !ok.headers()
            .contains_key("access-control-allow-credentials")
    );
    let refused = preflight("https://evil.example").await.unwrap();
    assert!(
        !refused
            .headers()
            .contains_key("access-control-allow-origin")
    );
    let simple = app
        .client
        .get(app.url("/channels"))
        .header("origin", "http://127.0.0.1:5173")
        .send()
        .await
        .unwrap();
    assert_eq!(
        simple.headers()["access-control-allow-origin"],
        "http://127.0.0.1:5173"
    );
}

/// Publishes that go straight to a channel's actor race its retirement
/// without loss: every one is answered 202 (none lands in a stopped actor),
/// while the channels keep stopping and starting under them.
#[actix_web::test]
async fn publishes_racing_retirement_are_all_accepted() {
    let app = spawn_app_with(|s| {
        s.stream.heartbeat = Duration::from_millis(5);
        s.history.max_age = Duration::from_millis(1);
    })
    .await;
    let publish_many = |channel: &'static str| {
        let app = &app;
        async move {
            let mut epochs = std::collections::HashSet::new();
            for n in 0..150 {
                let id = app.publish(channel, &n.to_string()).await;
                epochs.insert(id.split('-').next().unwrap_or_default().to_owned());
                // Now and then long enough for the history to expire and
                // the channel to retire.
                if n % 3 == 0 {
                    tokio::time::sleep(Duration::from_millis(n % 7)).await;
                }
            }
            epochs.len()
        }
    };
    let lives =
        futures_util::future::join_all(["race-a", "race-b", "race-c", "race-d"].map(publish_many))
            .await;
    assert!(
        lives.iter().any(|lives| *lives > 1),
        "channels retired and came back meanwhile: {lives:?}"
    );
}

/// With `broker.arbiters = 1` the channel actors run on a thread of their
/// own and the Mercure hub on the main thread: streams, publishes, Mercure
/// and retiring work as on the HTTP workers (the default).
#[actix_web::test]
async fn channels_on_their_own_arbiter() {
    let app = spawn_app_with(|s| {
        s.broker.arbiters = 1;
        s.server.workers = 2;
        s.stream.heartbeat = Duration::from_millis(50);
        s.history.max_age = Duration::from_millis(100);
    })
    .await;
    let mut stream = app.stream("/stream/on-arbiter", &[]).await;
    stream.wait_open().await;
    let mut mercure = app
        .stream("/.well-known/mercure?match=on-arbiter", &[])
        .await;
    mercure.wait_open().await;
    for n in 0..20 {
        app.publish("on-arbiter", &n.to_string()).await;
    }
    let data: Vec<String> = stream
        .next_messages(20)
        .await
        .into_iter()
        .map(|e| e.data)
        .collect();
    assert_eq!(data, (0..20).map(|n| n.to_string()).collect::<Vec<_>>());
    assert_eq!(mercure.next_event().await.data, "0");
    // An idle channel still retires and comes back with a new epoch.
    let old = app.publish("short-lived", "1").await;
    wait_until(|| async { app.get_json("/channels/short-lived").await.0 == 404 }).await;
    let new = app.publish("short-lived", "2").await;
    assert_ne!(old.split('-').next(), new.split('-').next());
}
