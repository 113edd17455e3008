//! Limits: over each one the broker answers 429 or 503 with Retry-After and
//! keeps serving everyone else; a freed place can be taken again.

use crate::{auth::token, auth::with_auth, helpers::*};

/// Asserts a refusal with `status` and a Retry-After of at least a second.
async fn assert_refused(res: reqwest::Response, status: u16) -> serde_json::Value {
    let retry: u64 = res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .expect("Retry-After is a number of seconds");
    assert!(retry >= 1);
    let (got, body) = problem(res).await;
    assert_eq!(got, status, "{body}");
    body
}

/// One channel holds at most max_subscribers_per_channel subscribers.
#[actix_web::test]
async fn subscribers_per_channel_limit_is_503() {
    let app = spawn_app_with(|s| s.limits.max_subscribers_per_channel = 2).await;
    let mut first = app.stream("/stream/busy", &[]).await;
    first.wait_open().await;
    let mut second = app.stream("/stream/busy", &[]).await;
    second.wait_open().await;
    let res = app
        .client
        .get(app.url("/stream/busy"))
        .send()
        .await
        .unwrap();
    let body = assert_refused(res, 503).await;
    assert_eq!(body["type"], "urn:sse-broker:problem:too-many-subscribers");
    // Other channels are not affected, and a freed place can be taken.
    app.stream("/stream/quiet", &[]).await.wait_open().await;
    drop(first);
    app.wait_for_subscribers("busy", 1).await;
    app.stream("/stream/busy", &[]).await.wait_open().await;
}

/// The broker holds at most max_subscribers subscriptions in total; a
/// multi-channel stream refused half-way holds none.
#[actix_web::test]
async fn total_subscribers_limit_is_503() {
    let app = spawn_app_with(|s| s.limits.max_subscribers = 2).await;
    let mut a = app.stream("/stream/a", &[]).await;
    a.wait_open().await;
    let res = app
        .client
        .get(app.url("/stream?channel=b&channel=c"))
        .send()
        .await
        .unwrap();
    assert_refused(res, 503).await;
    // The half-made subscription was given back: one more still fits.
    app.wait_for_subscribers("a", 1).await;
    wait_until(|| async {
        let (_, list) = app.get_json("/channels").await;
        let total: u64 = list
            .as_array()
            .map(|l| l.iter().map(|c| c["subscribers"].as_u64().unwrap()).sum())
            .unwrap_or(0);
        total == 1
    })
    .await;
    let mut b = app.stream("/stream/b", &[]).await;
    b.wait_open().await;
    let res = app.client.get(app.url("/stream/c")).send().await.unwrap();
    assert_refused(res, 503).await;
    drop(a);
    app.wait_for_subscribers("a", 0).await;
    app.stream("/stream/c", &[]).await.wait_open().await;
}

/// One client IP holds at most max_streams_per_ip open streams.
#[actix_web::test]
async fn streams_per_ip_limit_is_429() {
    let app = spawn_app_with(|s| s.limits.max_streams_per_ip = 2).await;
    let mut one = app.stream("/stream/x", &[]).await;
    one.wait_open().await;
    let mut two = app.stream("/stream?channel=y&channel=z", &[]).await;
    two.wait_open().await;
    let res = app.client.get(app.url("/stream/x")).send().await.unwrap();
    let body = assert_refused(res, 429).await;
    assert_eq!(body["type"], "urn:sse-broker:problem:too-many-streams");
    // Publishing is not a stream.
    app.publish("x", "1").await;
    drop(one);
    app.wait_for_subscribers("x", 0).await;
    wait_until(|| async {
        app.client
            .get(app.url("/stream/x"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
}

/// Publishing faster than publish_rate (beyond the burst) is 429 with the
/// wait in Retry-After.
#[actix_web::test]
async fn publish_rate_per_ip_is_429() {
    let app = spawn_app_with(|s| {
        s.limits.publish_rate = 1;
        s.limits.publish_burst = 3;
    })
    .await;
    for n in 0..3 {
        app.publish("rated", &n.to_string()).await;
    }
    let res = app
        .client
        .post(app.url("/publish/rated"))
        .body("4")
        .send()
        .await
        .unwrap();
    let body = assert_refused(res, 429).await;
    assert_eq!(body["type"], "urn:sse-broker:problem:rate-limited");
    // Batches and kill requests count against the same budget.
    let res = app.client.delete(app.url("/killall")).send().await.unwrap();
    assert_refused(res, 429).await;
}

/// With auth on the rate is counted per token subject, not per IP.
#[actix_web::test]
async fn publish_rate_is_per_token_subject() {
    let app = spawn_app_with(|s| {
        with_auth(s);
        s.limits.publish_rate = 1;
        s.limits.publish_burst = 1;
    })
    .await;
    let claims = |sub: &str| {
        serde_json::json!({"sse": {"publish": ["*"]}, "sub": sub,
            "exp": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 600})
    };
    let alice = crate::auth::hs_token_with(jsonwebtoken::Algorithm::HS256, &claims("alice"));
    let bob = crate::auth::hs_token_with(jsonwebtoken::Algorithm::HS256, &claims("bob"));
    let post = |t: String| {
        app.client
            .post(app.url("/publish/r"))
            .bearer_auth(t)
            .body("1")
            .send()
    };
    assert_eq!(post(alice.clone()).await.unwrap().status(), 202);
    assert_refused(post(alice).await.unwrap(), 429).await;
    assert_eq!(post(bob).await.unwrap().status(), 202);
    // An unauthenticated request is refused before it costs anyone budget.
    let _ = token(&[], &[]);
}

/// Naming more channels than max_channels_per_stream is a 400.
#[actix_web::test]
async fn channels_per_stream_limit_is_400() {
    let app = spawn_app_with(|s| s.stream.max_channels_per_stream = 3).await;
    let res = app
        .client
        .get(app.url("/stream?channel=a&channel=b&channel=c&channel=d"))
        .send()
        .await
        .unwrap();
    let (status, body) = problem(res).await;
    assert_eq!(status, 400);
    assert!(body["detail"].as_str().unwrap().contains("at most 3"));
}

/// A batch counts its events against the channel limit too: 503, not a crash.
#[actix_web::test]
async fn batch_over_channel_limit_is_503() {
    let app = spawn_app_with(|s| s.broker.max_channels = 1).await;
    let res = app
        .post(
            "/publish",
            "application/json",
            r#"[{"channel":"one","data":1},{"channel":"two","data":2}]"#,
        )
        .await;
    assert_refused(res, 503).await;
}
