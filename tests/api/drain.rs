//! The graceful drain on SIGTERM, with the real binary: acknowledged
//! publishes are delivered or refused, never lost; open streams end with a
//! reconnect hint; clients reconnect to the next process on the same port.
//!
//! These tests run with the in-memory history, so the next process cannot
//! replay what the old one held: a resuming client gets the `broker.gap`
//! notice instead. History that survives a restart (durable history, cluster
//! mode) is tested in `durable.rs` and `cluster.rs`.

use std::{
    cell::RefCell,
    collections::HashSet,
    io::{Read, Write},
    rc::Rc,
};

use crate::helpers::*;

/// What one subscriber saw before its stream ended.
struct Seen {
    data: HashSet<String>,
    last_id: String,
    comments: Vec<String>,
    retry: Option<u64>,
}

/// Reads a stream to its end in the background.
fn read_to_end(mut sse: SseClient) -> actix_web::rt::task::JoinHandle<Seen> {
    actix_web::rt::spawn(async move {
        let events = tokio::time::timeout(PATIENCE * 3, async {
            let mut events = Vec::new();
            while let Some(event) = sse.try_next_event().await {
                events.push(event);
            }
            events
        })
        .await
        .expect("the stream ended after SIGTERM");
        Seen {
            data: events.into_iter().map(|e| e.data).collect(),
            last_id: sse.last_id().to_owned(),
            comments: sse.comments.clone(),
            retry: sse.retry,
        }
    })
}

/// Publishes `prefix-0`, `prefix-1`, … one after another until the broker
/// refuses one (503) or cannot be reached; returns the payloads answered 202.
/// Every other answer fails the test.
async fn publish_until_refused(
    client: reqwest::Client,
    url: String,
    prefix: &'static str,
    accepted_so_far: Rc<RefCell<usize>>,
) -> Vec<String> {
    let mut accepted = Vec::new();
    // Bounded: the drain stops it long before this.
    for n in 0..20_000 {
        let data = format!("{prefix}-{n}");
        let answer = client
            .post(&url)
            .header("content-type", "text/plain")
            .body(data.clone())
            .send()
            .await;
        match answer.map(|res| res.status().as_u16()) {
            Ok(202) => {
                accepted.push(data);
                *accepted_so_far.borrow_mut() += 1;
            }
            Ok(503) | Err(_) => return accepted,
            Ok(other) => panic!("publish {data} answered {other}"),
        }
    }
    panic!("{prefix}: the drain never refused a publish");
}

/// SIGTERM during a steady publish load: every publish answered 202 reached
/// every open stream; a publish still being uploaded when the drain began is
/// refused with 503; streams end with the reconnect hint; the process exits;
/// a client resuming on a new process on the same port gets the gap notice.
#[actix_web::test]
async fn drain_loses_no_acknowledged_publish_and_clients_reconnect() {
    let mut old = BrokerProcess::start(
        "127.0.0.1:0",
        &[
            ("SSE_BROKER__SERVER__SHUTDOWN_TIMEOUT", "3s"),
            ("SSE_BROKER__STREAM__RETRY", "1s"),
        ],
    );
    let client = http_client();
    let mut readers = Vec::new();
    for path in [
        "/stream/deploy",
        "/stream/deploy",
        "/stream?channel=deploy&channel=other",
    ] {
        let res = client.get(old.url(path)).send().await.expect("stream");
        assert_eq!(res.status(), 200);
        let mut sse = SseClient::new(res);
        sse.wait_open().await;
        readers.push(read_to_end(sse));
    }
    let (status, ready) = get(&client, &old.url("/readyz")).await;
    assert_eq!(status, 200, "{ready}");

    // A publish whose body is still on its way when the drain begins.
    let mut slow = std::net::TcpStream::connect(&old.addr).expect("connect");
    let body = b"in-flight during the drain";
    write!(
        slow,
        "POST /publish/deploy HTTP/1.1\r\nHost: {}\r\nContent-Type: text/plain\r\n\
         Content-Length: {}\r\n\r\n",
        old.addr,
        body.len()
    )
    .unwrap();
    slow.write_all(&body[..5]).unwrap();

    // Steady load from three publishers, then SIGTERM in the middle of it.
    let accepted_so_far = Rc::new(RefCell::new(0));
    let publishers: Vec<_> = ["a", "b", "c"]
        .into_iter()
        .map(|prefix| {
            actix_web::rt::spawn(publish_until_refused(
                client.clone(),
                old.url("/publish/deploy"),
                prefix,
                Rc::clone(&accepted_so_far),
            ))
        })
        .collect();
    wait_until(|| {
        let count = *accepted_so_far.borrow();
        async move { count >= 60 }
    })
    .await;
    old.terminate();

    let mut seen = Vec::new();
    for reader in readers {
        seen.push(reader.await.expect("the reader finished"));
    }
    // The streams have ended, so the registry refuses publishes by now: the
    // rest of the slow body gets an answer, and it must be 503.
    slow.write_all(&body[5..]).unwrap();
    let answer = actix_web::rt::task::spawn_blocking(move || {
        slow.set_read_timeout(Some(PATIENCE)).unwrap();
        let mut text = String::new();
        let mut buf = [0u8; 4096];
        while !text.contains("\r\n\r\n") {
            match slow.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => text.push_str(&String::from_utf8_lossy(&buf[..n])),
            }
        }
        text
    })
    .await
    .unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 503"),
        "the in-flight publish was answered: {answer:?}"
    );
    assert!(
        answer.to_ascii_lowercase().contains("retry-after:"),
        "{answer}"
    );

    let mut accepted = Vec::new();
    for publisher in publishers {
        accepted.extend(publisher.await.expect("the publisher finished"));
    }
    assert!(accepted.len() >= 60);
    for (index, stream) in seen.iter().enumerate() {
        let missing: Vec<_> = accepted
            .iter()
            .filter(|data| !stream.data.contains(*data))
            .collect();
        assert!(
            missing.is_empty(),
            "stream {index} misses {} of {} acknowledged publishes, e.g. {:?}",
            missing.len(),
            accepted.len(),
            missing.iter().take(5).collect::<Vec<_>>()
        );
        assert!(
            stream
                .comments
                .iter()
                .any(|c| c == "reconnect reason=shutdown"),
            "stream {index} ended without the reconnect hint: {:?}",
            stream.comments
        );
        let retry = stream.retry.expect("a retry hint");
        assert!((1000..2000).contains(&retry), "retry {retry}");
    }
    let exit = old.wait_exit().await;
    assert!(exit.success(), "{exit:?}");

    // The next process takes over the same port; a client resumes there.
    let mut new = BrokerProcess::start(&old.addr, &[]);
    assert_eq!(new.addr, old.addr);
    let last_id = seen[0].last_id.clone();
    assert!(!last_id.is_empty());
    let res = client
        .get(new.url("/stream/deploy"))
        .header("Last-Event-ID", &last_id)
        .send()
        .await
        .expect("reconnect");
    assert_eq!(res.status(), 200);
    let mut back = SseClient::new(res);
    let gap = back.next_event().await;
    assert_eq!(gap.event, "broker.gap");
    let notice: serde_json::Value = serde_json::from_str(&gap.data).unwrap();
    assert_eq!(notice["reason"], "unknown-epoch", "{notice}");
    assert_eq!(notice["lastEventId"], last_id.as_str());
    // And it is live on the new process.
    let published = client
        .post(new.url("/publish/deploy"))
        .body("after the restart")
        .send()
        .await
        .unwrap();
    assert_eq!(published.status(), 202);
    assert_eq!(back.next_messages(1).await[0].data, "after the restart");
    new.terminate();
    assert!(new.wait_exit().await.success());
}

async fn get(client: &reqwest::Client, url: &str) -> (u16, serde_json::Value) {
    let res = client.get(url).send().await.expect("GET");
    (
        res.status().as_u16(),
        res.json().await.unwrap_or(serde_json::Value::Null),
    )
}
