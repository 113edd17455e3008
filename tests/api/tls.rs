//! HTTPS and HTTP/2: the broker serves its API and streams over TLS (HTTP/2
//! by ALPN, HTTP/1.1 for clients that ask), and nothing changes for
//! clients: ids, resume, eviction, token expiry, and a certificate
//! replaced on disk is served to new connections while open streams go on.

use std::time::Duration;

use futures_util::future::join_all;
use jsonwebtoken::Algorithm;
use serde_json::json;

use crate::{auth, helpers::*, tls_support::*};

/// Over HTTP/1.1 with TLS: a stream opens, a publish reaches it, the id is
/// the publish answer's.
#[actix_web::test]
async fn https_http1_stream_receives_what_is_published() {
    let tls = spawn_tls_app_with(|_| {}).await;
    let app = &tls.app;
    let res = tls
        .http1
        .get(app.url("/stream/orders"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.version(), reqwest::Version::HTTP_11);
    let mut sse = SseClient::new(res);
    sse.wait_open().await;
    let id = app.publish("orders", r#"{"n":1}"#).await;
    let event = sse.next_event().await;
    assert_eq!(
        (event.id.as_str(), event.data.as_str()),
        (id.as_str(), r#"{"n":1}"#)
    );
}

/// Over HTTP/2: the stream, publishes multiplexed on the same connection,
/// and a resume with Last-Event-ID that replays exactly what was missed.
#[actix_web::test]
async fn http2_stream_publish_and_resume() {
    let tls = spawn_tls_app_with(|_| {}).await;
    let app = &tls.app;
    let res = app
        .client
        .get(app.url("/stream/news"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.version(), reqwest::Version::HTTP_2);
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    let mut sse = SseClient::new(res);
    sse.wait_open().await;
    let first = app.publish("news", "1").await;
    assert_eq!(sse.next_event().await.id, first);
    drop(sse);
    let missed = [
        app.publish("news", "2").await,
        app.publish("news", "3").await,
    ];
    let mut back = app
        .stream("/stream/news", &[("Last-Event-ID", &first)])
        .await;
    let replayed = back.next_messages(2).await;
    assert_eq!(
        replayed.iter().map(|e| e.id.clone()).collect::<Vec<_>>(),
        missed.to_vec()
    );
    let live = app.publish("news", "4").await;
    assert_eq!(back.next_event().await.id, live);
}

/// Twenty streams and their publishes share one HTTP/2 connection (over
/// HTTP/1.1 a browser would allow six): every stream gets every event.
#[actix_web::test]
async fn twenty_streams_on_one_http2_connection() {
    let tls = spawn_tls_app_with(|_| {}).await;
    let app = &tls.app;
    let mut streams = join_all((0..20).map(|_| app.stream("/stream/wide", &[]))).await;
    for sse in &mut streams {
        sse.wait_open().await;
    }
    app.wait_for_subscribers("wide", 20).await;
    let bodies: Vec<String> = (0..5).map(|n| n.to_string()).collect();
    let mut ids = join_all(bodies.iter().map(|body| app.publish("wide", body))).await;
    ids.sort();
    for sse in &mut streams {
        let mut got: Vec<String> = sse
            .next_messages(5)
            .await
            .into_iter()
            .map(|e| e.id)
            .collect();
        got.sort();
        assert_eq!(got, ids);
    }
}

/// An HTTP/2 stream whose client goes away is forgotten by the broker (the
/// stream is reset; nothing waits for the next heartbeat).
#[actix_web::test]
async fn http2_client_that_leaves_is_unsubscribed() {
    let tls = spawn_tls_app_with(|_| {}).await;
    let app = &tls.app;
    let mut sse = app.stream("/stream/brief", &[]).await;
    sse.wait_open().await;
    let _other = app.stream("/stream/brief", &[]).await;
    app.wait_for_subscribers("brief", 2).await;
    drop(sse);
    app.wait_for_subscribers("brief", 1).await;
}

/// A client that stops reading its TLS stream is evicted; the others get
/// everything and the evicted one resumes without loss.
#[actix_web::test]
async fn stalled_tls_client_is_evicted_and_resumes() {
    let tls = spawn_tls_app_with(|s| s.stream.subscriber_buffer = 4).await;
    let app = &tls.app;
    let mut healthy = app.stream("/stream/firehose", &[]).await;
    // HTTP/1.1: its own connection, which fills up when it is not read.
    let stalled = tls
        .http1
        .get(app.url("/stream/firehose"))
        .send()
        .await
        .unwrap();
    let mut stalled = SseClient::new(stalled);
    app.wait_for_subscribers("firehose", 2).await;
    let payload = format!("\"{}\"", "x".repeat(64 * 1024 - 2));
    let mut published = 0;
    // Bounded: at most 400 events of 64 KiB, stopping once the eviction is seen.
    for _ in 0..400 {
        app.publish("firehose", &payload).await;
        published += 1;
        assert_eq!(healthy.next_event().await.data.len(), 64 * 1024);
        let (_, channel) = app.get_json("/channels/firehose").await;
        if channel["evicted"] == 1 {
            break;
        }
    }
    let (_, channel) = app.get_json("/channels/firehose").await;
    assert_eq!(channel["evicted"], 1, "evicted after {published} events");
    assert_eq!(channel["subscribers"], 1);
    let received = stalled.until_end().await;
    assert!(received.len() < published);
    let last_id = stalled.last_id().to_owned();
    assert!(!last_id.is_empty());
    let mut back = app
        .stream("/stream/firehose", &[("Last-Event-ID", &last_id)])
        .await;
    let rest = back.next_messages(published - received.len()).await;
    assert_eq!(received.len() + rest.len(), published);
}

/// A stream opened with a token over HTTP/2 ends when the token expires,
/// with the `broker.expired` notice and the reconnect hint.
#[actix_web::test]
async fn http2_stream_ends_when_its_token_expires() {
    let mut tls = spawn_tls_app_with(auth::with_auth).await;
    tls.app.api_token = Some(auth::monitor_token());
    let app = &tls.app;
    let short = auth::hs_token_with(
        Algorithm::HS256,
        &json!({"sse": {"subscribe": ["private.*"]}, "exp": auth::now() + 2}),
    );
    let mut sse = app
        .stream(&format!("/stream/private.a?token={short}"), &[])
        .await;
    sse.wait_open().await;
    let events = sse.until_end().await;
    assert_eq!(
        events.last().map(|e| e.event.as_str()),
        Some("broker.expired")
    );
    assert!(sse.retry.is_some(), "the reconnect hint came last");
    app.wait_for_subscribers("private.a", 0).await;
}

/// A new certificate written over the old files is served to the next
/// connection, while streams opened before it (HTTP/2 and HTTP/1.1) stay
/// open and keep receiving events.
#[actix_web::test]
async fn certificate_reload_keeps_open_streams() {
    let tls = spawn_tls_app_with(|_| {}).await;
    let app = &tls.app;
    let res = app.client.get(app.url("/healthz")).send().await.unwrap();
    let old = peer_certificate(&res);
    let mut h2 = app.stream("/stream/steady", &[]).await;
    let h1 = tls
        .http1
        .get(app.url("/stream/steady"))
        .send()
        .await
        .unwrap();
    let mut h1 = SseClient::new(h1);
    h2.wait_open().await;
    h1.wait_open().await;

    let renewed = tls.ca.issue(&["localhost", "127.0.0.1"]);
    tls.ca.install(&renewed);
    // New connections (a fresh client) get the new certificate.
    wait_until(|| async {
        let fresh = tls.ca.client(true);
        let res = fresh.get(app.url("/healthz")).send().await.unwrap();
        peer_certificate(&res) == renewed.der
    })
    .await;
    assert_ne!(old, renewed.der);

    let id = app.publish("steady", "\"after the reload\"").await;
    assert_eq!(h2.next_event().await.id, id);
    assert_eq!(h1.next_event().await.id, id);
}

/// Files that do not make a certificate (a key of another one) are refused
/// and the certificate in force stays.
#[actix_web::test]
async fn broken_certificate_files_keep_the_old_certificate() {
    let tls = spawn_tls_app_with(|_| {}).await;
    let app = &tls.app;
    let res = app.client.get(app.url("/healthz")).send().await.unwrap();
    let served = peer_certificate(&res);
    let one = tls.ca.issue(&["localhost"]);
    let other = tls.ca.issue(&["localhost"]);
    std::fs::write(tls.ca.path("server.key"), &other.key_pem).unwrap();
    std::fs::write(tls.ca.path("server.pem"), &one.cert_pem).unwrap();
    // Several watch intervals (50 ms) pass; the old certificate is served.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let fresh = tls.ca.client(true);
    let res = fresh.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(peer_certificate(&res), served);
}

/// The publish API, its errors (problem+json) and the console's files
/// answer over HTTP/2.
#[actix_web::test]
async fn api_and_console_over_http2() {
    let tls = spawn_tls_app_with(|_| {}).await;
    let app = &tls.app;
    let res = app.client.get(app.url("/")).send().await.unwrap();
    assert_eq!(res.version(), reqwest::Version::HTTP_2);
    assert_eq!(res.status(), 200);
    assert!(res.text().await.unwrap().contains("<html"));
    let (status, _) = app.publish_json("bad name!", "1").await;
    assert_eq!(status, 400);
    let res = app
        .client
        .post(app.url("/publish/x"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(res.version(), reqwest::Version::HTTP_2);
    let (status, _) = problem(res).await;
    assert_eq!(status, 400);
}

/// Without TLS settings the broker speaks plain HTTP, as before; a
/// certificate file that does not exist stops the start with its name.
#[actix_web::test]
async fn plain_http_stays_the_default_and_bad_files_stop_the_start() {
    let app = spawn_app().await;
    assert!(app.address.starts_with("http://"));
    assert_eq!(app.get_json("/healthz").await.0, 200);

    let mut settings = sse_broker::config::Settings::defaults();
    settings.server.bind = "127.0.0.1:0".parse().unwrap();
    settings.server.tls.cert_file = "/nonexistent/server.pem".into();
    settings.server.tls.key_file = "/nonexistent/server.key".into();
    let err = sse_broker::startup::Application::build(settings)
        .err()
        .expect("a missing certificate stops the start");
    assert!(err.to_string().contains("/nonexistent/server.pem"), "{err}");
}

/// The real binary reads its certificate files again on SIGHUP (with the
/// watcher off), and keeps serving the streams it had.
#[actix_web::test]
async fn sighup_reloads_the_certificate_files() {
    let ca = TestCa::new();
    ca.install(&ca.issue(&["localhost"]));
    let (cert, key) = (ca.path("server.pem"), ca.path("server.key"));
    let broker = BrokerProcess::start(
        "127.0.0.1:0",
        &[
            ("SSE_BROKER__SERVER__TLS__CERT_FILE", cert.to_str().unwrap()),
            ("SSE_BROKER__SERVER__TLS__KEY_FILE", key.to_str().unwrap()),
            ("SSE_BROKER__SERVER__TLS__WATCH_INTERVAL", "0s"),
        ],
    );
    let url = |path: &str| {
        let port = broker.addr.rsplit(':').next().unwrap();
        format!("https://localhost:{port}{path}")
    };
    let client = ca.client(false);
    let mut sse = stream_at(&client, &url("/stream/kept"), &[]).await;
    sse.wait_open().await;

    let renewed = ca.issue(&["localhost"]);
    ca.install(&renewed);
    let status = std::process::Command::new("kill")
        .args(["-HUP", &broker.child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    wait_until(|| async {
        let res = ca.client(true).get(url("/healthz")).send().await.unwrap();
        peer_certificate(&res) == renewed.der
    })
    .await;

    let res = client
        .post(url("/publish/kept"))
        .body("still here")
        .header("content-type", "text/plain")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    assert_eq!(sse.next_event().await.data, "still here");
}

/// With `server.tls.h2c`, the plain listener also speaks HTTP/2 with prior
/// knowledge (as a proxy would), and HTTP/1.1 still works beside it.
#[actix_web::test]
async fn h2c_serves_streams_and_publishes() {
    let app = spawn_app_with(|s| s.server.tls.h2c = true).await;
    let h2c = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let res = h2c.get(app.url("/stream/clear")).send().await.unwrap();
    assert_eq!(res.version(), reqwest::Version::HTTP_2);
    let mut sse = SseClient::new(res);
    sse.wait_open().await;
    let mut h1 = app.stream("/stream/clear", &[]).await;
    h1.wait_open().await;
    let res = h2c
        .post(app.url("/publish/clear"))
        .header("content-type", "text/plain")
        .body("plain h2")
        .send()
        .await
        .unwrap();
    assert_eq!(
        (res.version(), res.status().as_u16()),
        (reqwest::Version::HTTP_2, 202)
    );
    assert_eq!(sse.next_event().await.data, "plain h2");
    assert_eq!(h1.next_event().await.data, "plain h2");
}

/// `server.tls.redirect_bind` answers plain HTTP with a 308 to the same
/// host and path on the HTTPS port.
#[actix_web::test]
async fn plain_http_is_redirected_to_https() {
    let redirect_port = crate::redis_support::free_port();
    let tls = spawn_tls_app_with(|s| {
        s.server.tls.redirect_bind = Some(format!("127.0.0.1:{redirect_port}").parse().unwrap());
    })
    .await;
    let https_port = tls.app.address.rsplit(':').next().unwrap().to_owned();
    let no_follow = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let res = no_follow
        .post(format!(
            "http://localhost:{redirect_port}/publish/x?event=a"
        ))
        .body("1")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 308);
    assert_eq!(
        res.headers()["location"],
        format!("https://localhost:{https_port}/publish/x?event=a").as_str()
    );
}
