//! Durable history with the real binary: a restart (SIGTERM) or a crash
//! (SIGKILL) loses no acknowledged event, ids continue, retention by count
//! and age is enforced on disk, and a damaged store stops the start with a
//! message naming the file.

use std::{
    cell::RefCell,
    collections::{HashMap, HashSet},
    io::{Read, Seek, Write},
    path::Path,
    rc::Rc,
};

use serde_json::Value;
use sse_broker::store;

use crate::helpers::*;

fn seq_of(id: &str) -> u64 {
    id.rsplit('-').next().unwrap().parse().unwrap()
}

fn epoch_of(id: &str) -> &str {
    id.split('-').next().unwrap()
}

/// Starts the binary on a free port with its history in `dir`.
fn start_durable(dir: &Path, env: &[(&str, &str)]) -> BrokerProcess {
    let dir = dir.to_str().expect("temporary paths are UTF-8");
    let mut env = env.to_vec();
    env.push(("SSE_BROKER__HISTORY__DATA_DIR", dir));
    BrokerProcess::start("127.0.0.1:0", &env)
}

/// SIGTERM, then wait for the exit.
async fn stop(broker: &mut BrokerProcess) {
    broker.terminate();
    let exit = broker.wait_exit().await;
    assert!(exit.success(), "clean exit after SIGTERM: {exit}");
}

async fn publish(
    client: &reqwest::Client,
    broker: &BrokerProcess,
    channel: &str,
    data: &str,
) -> String {
    let res = client
        .post(broker.url(&format!("/publish/{channel}")))
        .header("content-type", "text/plain")
        .body(data.to_owned())
        .send()
        .await
        .expect("publish request");
    assert_eq!(res.status(), 202);
    let answer: Value = res.json().await.expect("JSON answer");
    answer["id"].as_str().expect("an id").to_owned()
}

/// Publishes `items` events in one batch request; their ids.
async fn publish_batch(
    client: &reqwest::Client,
    broker: &BrokerProcess,
    channel: &str,
    items: std::ops::Range<usize>,
) -> Vec<String> {
    let batch: Vec<Value> = items
        .map(|n| serde_json::json!({"channel": channel, "data": format!("e{n}")}))
        .collect();
    let res = client
        .post(broker.url("/publish"))
        .json(&batch)
        .send()
        .await
        .expect("batch request");
    assert_eq!(res.status(), 202);
    let answer: Value = res.json().await.expect("JSON answer");
    answer["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["id"].as_str().expect("an id").to_owned())
        .collect()
}

async fn open_stream(
    client: &reqwest::Client,
    broker: &BrokerProcess,
    path: &str,
    last: &str,
) -> SseClient {
    let resume = [("Last-Event-ID", last)];
    let headers: &[(&str, &str)] = if last.is_empty() { &[] } else { &resume };
    stream_at(client, &broker.url(path), headers).await
}

/// Reads a resumed stream's start: the notices and the replayed events
/// the `broker.replay` notice announces.
async fn read_replay(sse: &mut SseClient) -> (Vec<SseEvent>, Vec<SseEvent>) {
    let mut notices = Vec::new();
    let count = loop {
        let event = sse.next_event().await;
        let replay = event.event == "broker.replay";
        let count = serde_json::from_str::<Value>(&event.data)
            .ok()
            .and_then(|v| v["count"].as_u64());
        notices.push(event);
        if replay {
            break count.expect("the replay notice has a count");
        }
    };
    let mut events = Vec::new();
    for _ in 0..count {
        events.push(sse.next_event().await);
    }
    (notices, events)
}

/// The value of a gauge in `GET /metrics`.
async fn gauge(broker: &BrokerProcess, name: &str) -> f64 {
    metric_value(&broker.url("/metrics"), name).await
}

/// After a clean restart a client resuming with Last-Event-ID gets every event after its id, in order, once, with no gap notice; ids continue in the same epoch.
#[actix_web::test]
async fn restart_keeps_history_and_ids_continue() {
    let dir = tempfile::tempdir().unwrap();
    let client = http_client();
    let mut first = start_durable(dir.path(), &[]);
    let mut ids = Vec::new();
    for n in 1..=5 {
        ids.push(publish(&client, &first, "orders", &format!("before-{n}")).await);
    }
    stop(&mut first).await;

    let second = start_durable(dir.path(), &[]);
    for n in 6..=7 {
        ids.push(publish(&client, &second, "orders", &format!("after-{n}")).await);
    }
    let epoch = epoch_of(&ids[0]);
    assert!(
        ids.iter().all(|id| epoch_of(id) == epoch),
        "one epoch: {ids:?}"
    );
    let seqs: Vec<u64> = ids.iter().map(|id| seq_of(id)).collect();
    assert_eq!(seqs, (1..=7).collect::<Vec<_>>(), "ids continue");

    let mut sse = open_stream(&client, &second, "/stream/orders", &ids[1]).await;
    let (notices, replayed) = read_replay(&mut sse).await;
    assert!(
        notices.iter().all(|e| e.event != "broker.gap"),
        "no gap notice: {notices:?}"
    );
    let got: Vec<(&str, &str)> = replayed
        .iter()
        .map(|e| (e.id.as_str(), e.data.as_str()))
        .collect();
    let want: Vec<(&str, String)> = (3..=7)
        .map(|n| {
            let data = if n <= 5 {
                format!("before-{n}")
            } else {
                format!("after-{n}")
            };
            (ids[n - 1].as_str(), data)
        })
        .collect();
    assert_eq!(
        got,
        want.iter()
            .map(|(i, d)| (*i, d.as_str()))
            .collect::<Vec<_>>()
    );
    // And live after the replay, without a duplicate.
    let live = publish(&client, &second, "orders", "after-8").await;
    assert_eq!(sse.next_event().await.id, live);
}

/// Publishes on `channel` until the broker stops answering; records every
/// acknowledged (id, data).
async fn publish_until_gone(
    client: reqwest::Client,
    url: String,
    prefix: String,
    acked: Rc<RefCell<Vec<(String, String)>>>,
) {
    for n in 0..100_000 {
        let data = format!("{prefix}-{n}");
        let res = client
            .post(&url)
            .header("content-type", "text/plain")
            .body(data.clone())
            .send()
            .await;
        let Ok(res) = res else { return };
        if res.status() != 202 {
            return;
        }
        let Ok(answer) = res.json::<Value>().await else {
            return;
        };
        let id = answer["id"]
            .as_str()
            .expect("a 202 carries an id")
            .to_owned();
        acked.borrow_mut().push((id, data));
    }
}

/// Reads `sse` in the background until it ends; the message events it got.
fn read_until_cut(mut sse: SseClient) -> actix_web::rt::task::JoinHandle<Vec<SseEvent>> {
    actix_web::rt::spawn(async move {
        let mut events = Vec::new();
        while let Some(event) = sse.try_next_event().await {
            assert_ne!(event.event, "broker.gap", "{}", event.data);
            if event.event == "message" {
                events.push(event);
            }
        }
        events
    })
}

/// SIGKILL during a burst from several concurrent publishers: after the restart every acknowledged id is replayable, in order, and ids go on from there; a subscriber that was live during the burst resumes with its Last-Event-ID and, over both connections, gets every acknowledged event once, in order.
#[actix_web::test]
async fn sigkill_during_burst_loses_no_acknowledged_event() {
    let dir = tempfile::tempdir().unwrap();
    let client = http_client();
    let env = [("SSE_BROKER__HISTORY__MAX_EVENTS", "100000")];
    let mut broker = start_durable(dir.path(), &env);
    let acked = Rc::new(RefCell::new(Vec::new()));
    let channels = ["burst-a", "burst-b"];
    let mut live = Vec::new();
    for channel in channels {
        let mut sse = open_stream(&client, &broker, &format!("/stream/{channel}"), "").await;
        sse.wait_open().await;
        live.push(read_until_cut(sse));
    }
    let publishers: Vec<_> = (0..6)
        .map(|n| {
            actix_web::rt::spawn(publish_until_gone(
                client.clone(),
                broker.url(&format!("/publish/{}", channels[n % 2])),
                format!("p{n}"),
                Rc::clone(&acked),
            ))
        })
        .collect();
    wait_until(|| {
        let count = acked.borrow().len();
        async move { count >= 300 }
    })
    .await;
    broker.child.kill().expect("SIGKILL");
    broker.child.wait().expect("the broker is gone");
    for publisher in publishers {
        publisher.await.expect("publisher task");
    }
    let acked = acked.borrow().clone();
    let mut seen_live = Vec::new();
    for reader in live {
        seen_live.push(reader.await.expect("the live reader ran"));
    }

    let restarted = start_durable(dir.path(), &env);
    for (channel, seen) in channels.into_iter().zip(seen_live) {
        let mine: HashMap<&str, &str> = acked
            .iter()
            .filter(|(_, data)| {
                let n: usize = data[1..data.find('-').unwrap()].parse().unwrap();
                channels[n % 2] == channel
            })
            .map(|(id, data)| (id.as_str(), data.as_str()))
            .collect();
        assert!(!mine.is_empty(), "{channel} got acknowledged events");
        let epoch = epoch_of(mine.keys().next().unwrap()).to_owned();
        let mut sse = open_stream(
            &client,
            &restarted,
            &format!("/stream/{channel}"),
            &format!("{epoch}-0"),
        )
        .await;
        let (notices, replayed) = read_replay(&mut sse).await;
        assert!(
            notices.iter().all(|e| e.event != "broker.gap"),
            "{notices:?}"
        );
        let seqs: Vec<u64> = replayed.iter().map(|e| seq_of(&e.id)).collect();
        assert_eq!(
            seqs,
            (1..=seqs.len() as u64).collect::<Vec<_>>(),
            "{channel}: replay in order, no hole, no duplicate"
        );
        let replayed_ids: HashMap<&str, &str> = replayed
            .iter()
            .map(|e| (e.id.as_str(), e.data.as_str()))
            .collect();
        for (id, data) in &mine {
            assert_eq!(
                replayed_ids.get(id),
                Some(data),
                "{channel}: acknowledged {id} is replayed with its data"
            );
        }
        // The subscriber that was live during the burst resumes after the
        // last event it got: over both connections every stored event
        // (every acknowledged one among them) once, in order.
        let stored = seqs.len() as u64;
        let last = seen
            .last()
            .expect("the live subscriber got events before the crash");
        let rest = if seq_of(&last.id) < stored {
            let path = format!("/stream/{channel}");
            let mut resumed = open_stream(&client, &restarted, &path, &last.id).await;
            let (notices, rest) = read_replay(&mut resumed).await;
            assert!(
                notices.iter().all(|e| e.event != "broker.gap"),
                "{notices:?}"
            );
            rest
        } else {
            Vec::new()
        };
        let both: Vec<&SseEvent> = seen.iter().chain(&rest).collect();
        assert_eq!(
            both.iter().map(|e| seq_of(&e.id)).collect::<Vec<_>>(),
            (1..=stored).collect::<Vec<_>>(),
            "{channel}: live, then resumed after the restart"
        );
        let delivered: HashSet<&str> = both.iter().map(|e| e.id.as_str()).collect();
        assert!(mine.keys().all(|id| delivered.contains(id)));
        // Ids go on after the last stored event, in the same epoch.
        let next = publish(&client, &restarted, channel, "after").await;
        assert_eq!(epoch_of(&next), epoch);
        assert_eq!(seq_of(&next), seqs.len() as u64 + 1);
    }
}

/// Retention by count is enforced on disk: rows stay at max_events however many are published, the file stops growing, and a client behind the retained events gets the history-trimmed gap after a restart.
#[actix_web::test]
async fn retention_by_count_bounds_the_disk() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(store::FILE_NAME);
    let client = http_client();
    // Rows of this channel only: not also its Mercure copies (the hub's log).
    let env = [
        ("SSE_BROKER__HISTORY__MAX_EVENTS", "20"),
        ("SSE_BROKER__MERCURE__CHANNEL_UPDATES", "false"),
    ];
    let mut broker = start_durable(dir.path(), &env);
    let mut ids = publish_batch(&client, &broker, "counted", 0..500).await;
    let size_after_first_round = std::fs::metadata(&file).unwrap().len();
    for round in 1..10 {
        ids.extend(
            publish_batch(&client, &broker, "counted", round * 500..(round + 1) * 500).await,
        );
    }
    let rows = gauge(&broker, "sse_broker_history_store_events").await;
    assert_eq!(rows, 20.0, "rows on disk stay at max_events");
    stop(&mut broker).await;
    let size = std::fs::metadata(&file).unwrap().len();
    assert!(
        size <= size_after_first_round * 2,
        "the file stops growing: {size_after_first_round} bytes after 500 events, {size} after 5000"
    );
    let (channels, events) = store::row_counts(&file).expect("the file reads");
    assert_eq!((channels, events), (1, 20));

    let broker = start_durable(dir.path(), &env);
    let mut sse = open_stream(&client, &broker, "/stream/counted", &ids[0]).await;
    let (notices, replayed) = read_replay(&mut sse).await;
    let gap = notices
        .iter()
        .find(|e| e.event == "broker.gap")
        .expect("a gap notice");
    let gap: Value = serde_json::from_str(&gap.data).unwrap();
    assert_eq!(gap["reason"], "history-trimmed");
    let seqs: Vec<u64> = replayed.iter().map(|e| seq_of(&e.id)).collect();
    assert_eq!(seqs, (4981..=5000).collect::<Vec<_>>());
}

/// Retention by age is enforced on disk: expired rows are deleted from the file while the broker runs, and a resume from before them gets the history-trimmed gap.
#[actix_web::test]
async fn retention_by_age_deletes_rows() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(store::FILE_NAME);
    let client = http_client();
    let env = [
        ("SSE_BROKER__HISTORY__MAX_AGE", "1s"),
        ("SSE_BROKER__STREAM__HEARTBEAT", "200ms"),
        ("SSE_BROKER__MERCURE__CHANNEL_UPDATES", "false"),
    ];
    let mut broker = start_durable(dir.path(), &env);
    // A subscriber keeps the channel (and its epoch) alive meanwhile.
    let mut live = open_stream(&client, &broker, "/stream/aged", "").await;
    live.wait_open().await;
    let old = publish_batch(&client, &broker, "aged", 0..50).await;
    wait_until(|| async { gauge(&broker, "sse_broker_history_store_events").await == 0.0 }).await;
    let fresh = publish(&client, &broker, "aged", "fresh").await;
    assert_eq!(seq_of(&fresh), 51, "ids go on after the expiry");
    let mut sse = open_stream(&client, &broker, "/stream/aged", &old[0]).await;
    let (notices, replayed) = read_replay(&mut sse).await;
    let gap = notices
        .iter()
        .find(|e| e.event == "broker.gap")
        .expect("a gap notice");
    assert!(gap.data.contains("history-trimmed"), "{}", gap.data);
    assert!(replayed.iter().all(|e| seq_of(&e.id) > 50), "{replayed:?}");
    stop(&mut broker).await;
    let (_, events) = store::row_counts(&file).expect("the file reads");
    assert!(events <= 1, "expired rows left the file: {events} remain");
}

/// Runs the binary with `args`, expecting it to refuse to start; returns
/// its exit status and everything it wrote to stderr.
fn run_failing(args: &[&str]) -> (std::process::ExitStatus, String) {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_sse-broker"))
        .args(["--bind", "127.0.0.1:0", "--demo", "false"])
        .args(args)
        .env("RUST_LOG", "info")
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("the broker starts");
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        let _ = tx.send(text);
    });
    let text = match rx.recv_timeout(PATIENCE) {
        Ok(text) => text,
        Err(_) => {
            let _ = child.kill();
            panic!("the broker did not exit (it should refuse to start)");
        }
    };
    (child.wait().expect("exit status"), text)
}

/// A store file overwritten with garbage stops the start with a non-zero exit and a message naming the file and what to do; it is not replaced by an empty history.
#[actix_web::test]
async fn corrupt_store_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(store::FILE_NAME);
    let client = http_client();
    let mut broker = start_durable(dir.path(), &[]);
    publish(&client, &broker, "kept", "precious").await;
    stop(&mut broker).await;
    let mut handle = std::fs::OpenOptions::new().write(true).open(&file).unwrap();
    handle.seek(std::io::SeekFrom::Start(0)).unwrap();
    handle.write_all(&[0xA5; 4096]).unwrap();
    handle.sync_all().unwrap();
    drop(handle);
    let size_before = std::fs::metadata(&file).unwrap().len();

    let (status, stderr) = run_failing(&["--data-dir", dir.path().to_str().unwrap()]);
    assert!(!status.success(), "non-zero exit: {status}");
    assert!(
        stderr.contains(&file.display().to_string()),
        "names the file: {stderr}"
    );
    assert!(
        stderr.contains("move the file aside"),
        "says what to do: {stderr}"
    );
    assert!(!stderr.contains("listening"), "never serves: {stderr}");
    assert_eq!(
        std::fs::metadata(&file).unwrap().len(),
        size_before,
        "file left as it was"
    );
}

/// A data directory that cannot be used (here a regular file) stops the start with a message naming it.
#[actix_web::test]
async fn unusable_data_dir_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let not_a_dir = dir.path().join("plain-file");
    std::fs::write(&not_a_dir, b"not a folder").unwrap();
    let (status, stderr) = run_failing(&["--data-dir", not_a_dir.to_str().unwrap()]);
    assert!(!status.success());
    assert!(
        stderr.contains(&not_a_dir.display().to_string()),
        "{stderr}"
    );
}

/// Durable history and cluster mode at once are refused as a configuration error.
#[actix_web::test]
async fn durable_history_and_cluster_are_exclusive() {
    let dir = tempfile::tempdir().unwrap();
    let (status, stderr) = run_failing(&[
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--redis",
        "redis://127.0.0.1:1",
    ]);
    assert!(!status.success());
    assert!(stderr.contains("cannot be combined"), "{stderr}");
}

/// Channel events are Mercure updates too (`mercure.channel_updates`); with
/// durable history the hub keeps only references to them, and after a
/// restart a Mercure subscriber resumes after one with the same ids, data
/// and order it saw before.
#[actix_web::test]
async fn channel_updates_on_the_hub_survive_a_restart() {
    const HUB_ORDERS: &str = "/.well-known/mercure?match=orders";
    let dir = tempfile::tempdir().unwrap();
    let client = http_client();
    let mut first = start_durable(dir.path(), &[]);
    let mut live = open_stream(&client, &first, HUB_ORDERS, "").await;
    live.wait_open().await;
    for data in ["one", "two", "three"] {
        publish(&client, &first, "orders", data).await;
    }
    let mut seen = Vec::new();
    for _ in 0..3 {
        let event = live.next_event().await;
        assert!(event.id.starts_with("urn:sse-broker:orders/"), "{event:?}");
        seen.push((event.id, event.data));
    }
    let datas: Vec<&str> = seen.iter().map(|(_, data)| data.as_str()).collect();
    assert_eq!(datas, ["one", "two", "three"]);
    drop(live);
    stop(&mut first).await;

    let second = start_durable(dir.path(), &[]);
    let mut resumed = open_stream(&client, &second, HUB_ORDERS, &seen[0].0).await;
    let replayed = vec![resumed.next_event().await, resumed.next_event().await];
    let replayed: Vec<(String, String)> = replayed.into_iter().map(|e| (e.id, e.data)).collect();
    assert_eq!(replayed, seen[1..], "the same updates, ids and order");
    // And live updates go on after them.
    publish(&client, &second, "orders", "four").await;
    let next = resumed.next_event().await;
    assert_eq!(next.data, "four");
    assert!(!seen.iter().any(|(id, _)| *id == next.id), "a new id");
}
