//! Slow consumers: a client that stops reading is evicted without slowing
//! anyone else, and loses nothing it cannot replay.

use crate::helpers::*;

/// A stalled client is evicted; the others get everything; the stalled one resumes without loss.
#[actix_web::test]
async fn stalled_client_is_evicted_and_resumes_without_loss() {
    let app = spawn_app_with(|s| s.stream.subscriber_buffer = 4).await;
    let mut healthy = app.stream("/stream/firehose", &[]).await;
    // Opened, then not read: its socket and queue fill up.
    let mut stalled = app.stream("/stream/firehose", &[]).await;
    app.wait_for_subscribers("firehose", 2).await;

    let payload = format!("\"{}\"", "x".repeat(64 * 1024 - 2));
    let mut published = 0;
    // Bounded: at most 400 events of 64 KiB, stopping once the eviction is seen.
    for _ in 0..400 {
        app.publish("firehose", &payload).await;
        published += 1;
        let (_, channel) = app.get_json("/channels/firehose").await;
        if channel["evicted"] == 1 {
            break;
        }
        // The healthy client keeps up.
        assert_eq!(healthy.next_event().await.data.len(), 64 * 1024);
    }
    let (_, channel) = app.get_json("/channels/firehose").await;
    assert_eq!(
        channel["evicted"], 1,
        "the stalled client was evicted after {published} events"
    );
    assert_eq!(channel["subscribers"], 1);
    assert_eq!(healthy.next_event().await.data.len(), 64 * 1024);

    // The stalled client now reads what had reached it, and its stream ends.
    let received = stalled.until_end().await;
    assert!(received.len() < published);
    let last_id = stalled.last_id().to_owned();

    // It comes back with Last-Event-ID and gets the rest from history.
    assert!(
        !last_id.is_empty(),
        "the stalled client had received events before it stalled"
    );
    let mut back = app
        .stream("/stream/firehose", &[("Last-Event-ID", &last_id)])
        .await;
    let rest = back.next_messages(published - received.len()).await;
    assert_eq!(received.len() + rest.len(), published);
    assert!(rest.iter().all(|e| e.data.len() == 64 * 1024));
}

/// A client that pauses while megabytes are published gets all of it, in
/// order, once it reads again: what its socket could not take waited in its
/// queue (the queue is larger than what was published, so no eviction).
#[actix_web::test]
async fn paused_client_catches_up_in_order() {
    let app = spawn_app_with(|s| s.stream.subscriber_buffer = 256).await;
    let mut paused = app.stream("/stream/bulk", &[]).await;
    paused.wait_open().await;
    // 100 events of 64 KiB: more than loopback socket buffers hold.
    let payload = format!("\"{}\"", "y".repeat(64 * 1024 - 2));
    let mut ids = Vec::new();
    for _ in 0..100 {
        ids.push(app.publish("bulk", &payload).await);
    }
    let received = paused.next_messages(ids.len()).await;
    let got: Vec<&str> = received.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(got, ids.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(received.iter().all(|e| e.data.len() == 64 * 1024));
    let (_, channel) = app.get_json("/channels/bulk").await;
    assert_eq!(channel["evicted"], 0);
}
