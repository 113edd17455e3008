//! A reconnect storm: ten thousand subscribers drop at once and come back
//! within a second with their `Last-Event-ID`, while events keep being
//! published and `/healthz` is asked throughout.

use std::{
    cell::RefCell,
    collections::HashMap,
    rc::Rc,
    time::{Duration, Instant},
};

use futures_util::future::join_all;

use crate::{helpers::*, raw::RawStream, seq_of, unlimited_broker};

const SUBSCRIBERS: usize = 10_000;
const CHANNELS: usize = 100;

/// The seqs of the message events `stream` got so far.
fn seqs_in(stream: &RawStream) -> Vec<u64> {
    stream
        .events()
        .iter()
        .filter(|e| e.event == "message")
        .map(|e| seq_of(&e.id))
        .collect()
}

/// Reads `stream` until its events reach `seq` on its channel; returns them.
async fn read_until(stream: &mut RawStream, seq: u64) -> Vec<u64> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let seqs = seqs_in(stream);
        if seqs.last().is_some_and(|last| *last >= seq) {
            return seqs;
        }
        assert!(
            Instant::now() < deadline,
            "a subscriber never got seq {seq}: {seqs:?}"
        );
        let _ = stream
            .read_some(16 * 1024, Duration::from_millis(500))
            .await;
    }
}

/// Every one of 10,000 subscribers gets exactly the events it missed, none
/// twice and none lost, though all of them reconnect at once while
/// publishing goes on; `/healthz` answers every time it is asked.
#[actix_web::test]
async fn ten_thousand_reconnect_at_once_and_miss_nothing() {
    let broker = unlimited_broker(&[("RUST_LOG", "warn,sse_broker::startup=info")]);
    let client = crate::http_client();
    let channel = |i: usize| format!("storm{}", i % CHANNELS);

    // Connect, 500 at a time (the listen backlog takes more, the test's
    // own socket setup is what is paced).
    let mut streams = Vec::with_capacity(SUBSCRIBERS);
    for batch in (0..SUBSCRIBERS).collect::<Vec<_>>().chunks(500) {
        let opened = join_all(batch.iter().map(|&i| {
            let (addr, path) = (broker.addr.clone(), format!("/stream/{}", channel(i)));
            async move {
                let mut stream = RawStream::open(&addr, &path, &[], None).await;
                stream.read_head().await;
                stream
            }
        }))
        .await;
        streams.extend(opened);
    }

    // Publish round the channels, recording every acknowledged id.
    let acked: Rc<RefCell<HashMap<String, Vec<u64>>>> = Rc::default();
    let stop = Rc::new(std::cell::Cell::new(false));
    let publisher = {
        let (client, acked, stop, url) = (
            client.clone(),
            Rc::clone(&acked),
            Rc::clone(&stop),
            broker.url(""),
        );
        actix_web::rt::spawn(async move {
            let mut n = 0;
            while !stop.get() {
                let name = format!("storm{}", n % CHANNELS);
                let res = client
                    .post(format!("{url}/publish/{name}"))
                    .body(format!("{n}"))
                    .send()
                    .await
                    .expect("publish");
                assert_eq!(res.status(), 202, "a publish was refused during the storm");
                let answer: serde_json::Value = res.json().await.expect("JSON");
                let seq = seq_of(answer["id"].as_str().expect("id"));
                acked.borrow_mut().entry(name).or_default().push(seq);
                n += 1;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    let health = {
        let (client, stop, url) = (client.clone(), Rc::clone(&stop), broker.url("/healthz"));
        actix_web::rt::spawn(async move {
            let mut asked = 0;
            while !stop.get() {
                let res = tokio::time::timeout(PATIENCE, client.get(&url).send())
                    .await
                    .expect("/healthz answered in time")
                    .expect("/healthz");
                assert_eq!(res.status(), 200);
                asked += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            asked
        })
    };

    // Once every channel had two events (a busy machine publishes slowly:
    // a subscriber that saw nothing would come back without an id and,
    // like any EventSource, miss what came meanwhile), read what each
    // stream got, then drop them all at once.
    let deadline = Instant::now() + Duration::from_secs(120);
    while acked.borrow().len() < CHANNELS || acked.borrow().values().any(|seqs| seqs.len() < 2) {
        assert!(
            Instant::now() < deadline,
            "the publisher did not reach every channel"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let streams = join_all(streams.into_iter().map(|mut stream| async move {
        read_until(&mut stream, 1).await;
        stream.read_available(Duration::from_millis(200)).await;
        stream
    }))
    .await;
    let resume: Vec<(usize, Vec<(u64, String)>)> = streams
        .iter()
        .enumerate()
        .map(|(i, stream)| {
            let seen = stream
                .events()
                .into_iter()
                .filter(|e| e.event == "message")
                .map(|e| (seq_of(&e.id), e.id))
                .collect();
            (i, seen)
        })
        .collect();
    let dropped_at = Instant::now();
    drop(streams);
    let reconnected = join_all(resume.iter().map(|(i, seen)| {
        let (addr, path) = (broker.addr.clone(), format!("/stream/{}", channel(*i)));
        let last = seen.last().map(|(_, id)| id.clone());
        async move {
            let headers: Vec<(&str, &str)> = match &last {
                Some(id) => vec![("Last-Event-ID", id.as_str())],
                None => Vec::new(),
            };
            let mut stream = RawStream::open(&addr, &path, &headers, None).await;
            stream.read_head().await;
            stream
        }
    }))
    .await;
    // A figure for docs/hostile-clients.md (scripts/soak.sh collects it), not an assertion.
    eprintln!(
        "measured: {SUBSCRIBERS} subscribers dropped at once had all reconnected and been \
         answered (the replay of what they missed is in the answer's prelude) {:.1} s later",
        dropped_at.elapsed().as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.set(true);
    publisher.await.expect("the publisher ran");
    let asked = health.await.expect("the health checker ran");
    assert!(asked > 0);

    // Each subscriber: before the drop and after it, exactly its channel's
    // acknowledged events from its first one on, in order, none twice.
    let acked = acked.take();
    let mut checked = 0;
    for ((i, seen), mut stream) in resume.iter().zip(reconnected) {
        let all = &acked[&channel(*i)];
        let last = *all.last().expect("every channel got events");
        // One that had everything before the drop gets nothing more when no
        // event came on its channel afterwards (a slow machine publishes few).
        let had_all = seen.last().is_some_and(|(seq, _)| *seq >= last);
        let after = if had_all {
            stream.read_available(Duration::from_millis(200)).await;
            seqs_in(&stream)
        } else {
            read_until(&mut stream, last).await
        };
        let mut got: Vec<u64> = seen.iter().map(|(seq, _)| *seq).collect();
        got.extend(after);
        let first = got.first().copied().unwrap_or(1);
        let expected: Vec<u64> = all.iter().copied().filter(|seq| *seq >= first).collect();
        assert_eq!(got, expected, "subscriber {i} on {}", channel(*i));
        checked += 1;
    }
    assert_eq!(checked, SUBSCRIBERS);
}
