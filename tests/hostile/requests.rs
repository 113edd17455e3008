//! Odd requests: slowloris heads that never finish, and a client that
//! reconnects in a tight loop with a `Last-Event-ID` the broker cannot serve.

use std::time::{Duration, Instant};

use futures_util::future::join_all;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::{helpers::*, publish, unlimited_broker};

/// Sends a request head one byte at a time, one byte a second; returns
/// what the server answered before it closed (or what the budget allowed).
async fn slowloris(addr: String, budget: Duration) -> (Vec<u8>, Duration) {
    let started = Instant::now();
    let mut socket = TcpStream::connect(&addr).await.expect("connect");
    let head = format!("GET /stream/slow HTTP/1.1\r\nHost: {addr}\r\nX-Padding: ");
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    for byte in head.bytes().chain(std::iter::repeat(b'a')) {
        if started.elapsed() > budget || socket.write_all(&[byte]).await.is_err() {
            break;
        }
        match tokio::time::timeout(Duration::from_secs(1), socket.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => answer.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
    }
    (answer, started.elapsed())
}

/// Two hundred slowloris request heads are each answered 408 and closed
/// after `server.client_request_timeout`, while a subscriber and a
/// publisher are served as usual.
#[actix_web::test]
async fn slowloris_heads_are_timed_out_while_others_are_served() {
    let broker = unlimited_broker(&[("SSE_BROKER__SERVER__CLIENT_REQUEST_TIMEOUT", "2s")]);
    let client = crate::http_client();
    let attackers =
        join_all((0..200).map(|_| slowloris(broker.addr.clone(), Duration::from_secs(60))));
    let served = async {
        let mut sse = stream_at(&client, &broker.url("/stream/busy"), &[]).await;
        sse.wait_open().await;
        for n in 0..20 {
            publish(&client, &broker, "busy", format!("{{\"n\":{n}}}")).await;
            assert_eq!(sse.next_event().await.data, format!("{{\"n\":{n}}}"));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let (answers, ()) = futures_util::join!(attackers, served);
    for (answer, _) in &answers {
        let text = String::from_utf8_lossy(answer);
        assert!(
            text.starts_with("HTTP/1.1 408"),
            "a slowloris head got {text:?}"
        );
    }
    // Each was cut off at its timeout, not at the end of the test's budget.
    assert!(
        answers
            .iter()
            .all(|(_, took)| *took < Duration::from_secs(60))
    );
}

/// A client that reconnects two hundred times in a tight loop with an id of
/// another epoch gets a gap notice each time and leaves no stream behind;
/// the broker stays responsive and a healthy subscriber misses nothing.
#[actix_web::test]
async fn reconnect_loop_with_a_stale_id_is_harmless() {
    let broker = unlimited_broker(&[]);
    let client = crate::http_client();
    let mut healthy = stream_at(&client, &broker.url("/stream/loop"), &[]).await;
    healthy.wait_open().await;
    let mut published = Vec::new();
    for n in 0..200 {
        let mut stale = stream_at(
            &client,
            &broker.url("/stream/loop"),
            &[("Last-Event-ID", "zz1-7")],
        )
        .await;
        let gap = stale.next_event().await;
        assert_eq!(gap.event, "broker.gap");
        let gap: serde_json::Value = serde_json::from_str(&gap.data).expect("JSON");
        assert_eq!(gap["reason"], "unknown-epoch");
        drop(stale);
        if n % 10 == 0 {
            published.push(publish(&client, &broker, "loop", format!("{n}")).await);
        }
    }
    let health = client
        .get(broker.url("/healthz"))
        .send()
        .await
        .expect("healthz");
    assert_eq!(health.status(), 200);
    let seen = healthy.next_messages(published.len()).await;
    assert_eq!(
        seen.iter().map(|e| e.id.clone()).collect::<Vec<_>>(),
        published
    );
    // Every looping stream was let go (the healthy one is left).
    wait_until(|| async {
        let res = client.get(broker.url("/channels/loop")).send().await;
        let body: serde_json::Value = match res {
            Ok(res) => res.json().await.unwrap_or_default(),
            Err(_) => return false,
        };
        body["subscribers"] == 1
    })
    .await;
}
