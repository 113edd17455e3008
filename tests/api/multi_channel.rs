//! One connection, several channels: telling events apart and resuming the set.

use crate::helpers::*;

/// Each event's id names its channel first; the cursor carries every channel's position.
#[actix_web::test]
async fn events_name_their_channel() {
    let app = spawn_app().await;
    let mut sse = app.stream("/stream?channel=m-a&channel=m-b", &[]).await;
    sse.wait_open().await;
    let a1 = app.publish("m-a", r#""a1""#).await;
    let b1 = app.publish("m-b", r#""b1""#).await;
    let first = sse.next_event().await;
    assert_eq!(first.data, r#""a1""#);
    assert!(
        first.id.starts_with(&format!("m-a={a1},m-b=")),
        "{}",
        first.id
    );
    let second = sse.next_event().await;
    assert_eq!(second.id, format!("m-b={b1},m-a={a1}"));
}

/// Resuming a multi-channel stream with its last cursor replays each channel's missed events, none twice.
#[actix_web::test]
async fn cursor_resumes_every_channel() {
    let app = spawn_app().await;
    let mut sse = app.stream("/stream?channel=r-a&channel=r-b", &[]).await;
    sse.wait_open().await;
    app.publish("r-a", r#""a1""#).await;
    app.publish("r-b", r#""b1""#).await;
    sse.next_event().await;
    let last = sse.next_event().await;
    drop(sse);
    app.publish("r-a", r#""a2""#).await;
    app.publish("r-b", r#""b2""#).await;
    app.publish("r-a", r#""a3""#).await;
    let mut sse = app
        .stream(
            "/stream?channel=r-a&channel=r-b",
            &[("Last-Event-ID", &last.id)],
        )
        .await;
    let mut got = sse
        .next_messages(3)
        .await
        .into_iter()
        .map(|e| e.data)
        .collect::<Vec<_>>();
    got.sort();
    assert_eq!(got, [r#""a2""#, r#""a3""#, r#""b2""#]);
    app.publish("r-b", r#""b3""#).await;
    assert_eq!(sse.next_messages(1).await[0].data, r#""b3""#);
}

/// Naming the same channel twice subscribes once.
#[actix_web::test]
async fn duplicate_channels_count_once() {
    let app = spawn_app().await;
    let mut sse = app.stream("/stream?channel=dup&channel=dup", &[]).await;
    sse.wait_open().await;
    app.publish("dup", "1").await;
    app.publish("dup", "2").await;
    let got: Vec<String> = sse
        .next_messages(2)
        .await
        .into_iter()
        .map(|e| e.data)
        .collect();
    assert_eq!(got, ["1", "2"]);
}

/// Too many channels on one stream is refused with a problem.
#[actix_web::test]
async fn too_many_channels_is_refused() {
    let app = spawn_app_with(|s| s.stream.max_channels_per_stream = 2).await;
    let res = app
        .client
        .get(app.url("/stream?channel=a&channel=b&channel=c"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    assert_eq!(res.headers()["content-type"], "application/problem+json");
}
