//! Subscribing and receiving: headers, framing, ordering, isolation.

use crate::helpers::*;

/// A stream answers with the SSE headers and opens with a retry hint and a comment.
#[actix_web::test]
async fn stream_opens_with_headers_and_prelude() {
    let app = spawn_app().await;
    let mut sse = app.stream("/stream/test", &[]).await;
    assert_eq!(sse.headers["content-type"], "text/event-stream");
    assert_eq!(sse.headers["cache-control"], "no-cache");
    assert_eq!(sse.headers["x-accel-buffering"], "no");
    assert_eq!(sse.headers["content-encoding"], "identity");
    sse.wait_open().await;
    assert_eq!(sse.retry, Some(2000));
}

/// The seed's event shape passes through unchanged, with an id.
#[actix_web::test]
async fn seed_event_passes_through() {
    let app = spawn_app().await;
    let mut sse = app.stream("/stream/test", &[]).await;
    sse.wait_open().await;
    let id = app.publish("test", r#"{"Message":"hi","Value":3}"#).await;
    let event = sse.next_event().await;
    assert_eq!(event.data, r#"{"Message":"hi","Value":3}"#);
    assert_eq!(event.id, id);
    assert_eq!(event.event, "message");
}

/// Pretty JSON arrives compact on one line; text keeps its lines; types are set.
#[actix_web::test]
async fn json_is_compacted_and_text_split_into_lines() {
    let app = spawn_app().await;
    let mut sse = app.stream("/stream/mixed", &[]).await;
    sse.wait_open().await;
    app.publish("mixed", "{\n  \"a\" : [1, 2.50],\n  \"b\": \"x y\"\n}")
        .await;
    let res = app
        .post(
            "/publish/mixed?event=note",
            "text/plain; charset=utf-8",
            "line one\r\nline two\rline three\nid: not-a-field\n\ndata: still data",
        )
        .await;
    assert_eq!(res.status(), 202);
    assert_eq!(sse.next_event().await.data, r#"{"a":[1,2.50],"b":"x y"}"#);
    let text = sse.next_event().await;
    assert_eq!(text.event, "note");
    assert_eq!(
        text.data,
        "line one\nline two\nline three\nid: not-a-field\n\ndata: still data"
    );
}

/// Ids grow within a channel and the publish answer names channel and subscriber count.
#[actix_web::test]
async fn publish_answer_has_id_channel_and_subscribers() {
    let app = spawn_app().await;
    let _one = app.stream("/stream/counted", &[]).await;
    let _two = app.stream("/stream/counted", &[]).await;
    app.wait_for_subscribers("counted", 2).await;
    let (status, answer) = app.publish_json("counted", "1").await;
    assert_eq!(status, 202);
    assert_eq!(answer["channel"], "counted");
    assert_eq!(answer["subscribers"], 2);
    let first = answer["id"].as_str().unwrap().to_owned();
    let second = app.publish("counted", "2").await;
    assert!(
        first.ends_with("-1") && second.ends_with("-2"),
        "{first} {second}"
    );
}

/// 50 subscribers each receive 100 events, all in order, none missing.
#[actix_web::test]
async fn fifty_subscribers_get_a_hundred_events_in_order() {
    let app = spawn_app().await;
    let mut subscribers = Vec::new();
    for _ in 0..50 {
        subscribers.push(app.stream("/stream/crowd", &[]).await);
    }
    app.wait_for_subscribers("crowd", 50).await;
    for n in 0..100 {
        app.publish("crowd", &n.to_string()).await;
    }
    for sse in &mut subscribers {
        let got: Vec<String> = sse
            .next_messages(100)
            .await
            .into_iter()
            .map(|e| e.data)
            .collect();
        let want: Vec<String> = (0..100).map(|n| n.to_string()).collect();
        assert_eq!(got, want);
    }
}

/// Events of one channel never reach another channel's subscribers.
#[actix_web::test]
async fn channels_are_isolated() {
    let app = spawn_app().await;
    let mut a = app.stream("/stream/iso-a", &[]).await;
    let mut b = app.stream("/stream/iso-b", &[]).await;
    app.wait_for_subscribers("iso-a", 1).await;
    app.wait_for_subscribers("iso-b", 1).await;
    app.publish("iso-a", r#""for a""#).await;
    app.publish("iso-b", r#""for b""#).await;
    assert_eq!(a.next_event().await.data, r#""for a""#);
    assert_eq!(b.next_event().await.data, r#""for b""#);
    app.publish("iso-a", r#""a again""#).await;
    assert_eq!(a.next_event().await.data, r#""a again""#);
}

/// A batch publish delivers every item in order and answers ids in order.
#[actix_web::test]
async fn batch_publish_answers_ids_in_order() {
    let app = spawn_app().await;
    let mut x = app.stream("/stream/batch-x", &[]).await;
    let mut y = app.stream("/stream/batch-y", &[]).await;
    app.wait_for_subscribers("batch-x", 1).await;
    app.wait_for_subscribers("batch-y", 1).await;
    let body = r#"[{"channel":"batch-x","data":{"n":1}},
                   {"channel":"batch-y","event":"ping","data":"plain text"},
                   {"channel":"batch-x","data":[2, 3]}]"#;
    let res = app.post("/publish", "application/json", body).await;
    assert_eq!(res.status(), 202);
    let answer: serde_json::Value = res.json().await.unwrap();
    let ids: Vec<&str> = answer["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 3);
    let first = x.next_event().await;
    assert_eq!(
        (first.id.as_str(), first.data.as_str()),
        (ids[0], r#"{"n":1}"#)
    );
    let second = x.next_event().await;
    assert_eq!(
        (second.id.as_str(), second.data.as_str()),
        (ids[2], "[2,3]")
    );
    let typed = y.next_event().await;
    assert_eq!(
        (typed.event.as_str(), typed.data.as_str()),
        ("ping", "plain text")
    );
}

/// Heartbeat comments arrive on an idle stream at the configured interval.
#[actix_web::test]
async fn idle_stream_gets_heartbeats() {
    let app = spawn_app_with(|s| s.stream.heartbeat = std::time::Duration::from_millis(200)).await;
    let mut sse = app.stream("/stream/quiet", &[]).await;
    sse.wait_comment("heartbeat").await;
}

/// A busy channel's streams get events and no heartbeats (they are not
/// idle); an idle channel's streams get them; and once the busy channel
/// falls quiet its streams get heartbeats again.
#[actix_web::test]
async fn heartbeats_go_only_to_idle_channels() {
    let app = spawn_app_with(|s| s.stream.heartbeat = std::time::Duration::from_millis(500)).await;
    let mut busy = app.stream("/stream/busy", &[]).await;
    let mut idle = app.stream("/stream/quiet", &[]).await;
    busy.wait_open().await;

    // An event every 10 ms for about 2 s: four ticks, each with events.
    let publish = async {
        for n in 0..200 {
            app.publish("busy", &format!("\"event {n}\"")).await;
            actix_web::rt::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    };
    let ((), events) = futures_util::join!(publish, busy.next_messages(200));
    assert_eq!(
        events.last().map(|e| e.data.as_str()),
        Some("\"event 199\"")
    );
    assert!(
        !busy.comments.iter().any(|c| c == "heartbeat"),
        "a busy stream got a heartbeat: {:?}",
        busy.comments
    );
    idle.wait_comments("heartbeat", 3).await;

    busy.wait_comment("heartbeat").await;
}

/// A client that disconnects is removed from its channel.
#[actix_web::test]
async fn disconnected_client_is_removed() {
    let app = spawn_app().await;
    let sse = app.stream("/stream/leaving", &[]).await;
    app.wait_for_subscribers("leaving", 1).await;
    drop(sse);
    app.wait_for_subscribers("leaving", 0).await;
}
