//! The third-party clients people subscribe with, used as their users use
//! them: Python's `httpx-sse` and `sseclient-py`, Node's `eventsource` and
//! Chromium's own `EventSource`. Each goes through the same scenario: the
//! connect prelude, live events with heartbeats between them (every 100 ms),
//! a dropped connection and a resume with `Last-Event-ID` (a replay), a
//! second drop for longer than the history holds (a gap notice, then the
//! replay of what is left), and a last live event. Each must see exactly
//! the published events and the broker's notices, nothing else: `httpx-sse`
//! turns a block without data (a comment and a blank line) into an event
//! with empty `data` (florimondmanca/httpx-sse#35), so the prelude,
//! heartbeats and the reconnect hint carry no blank line.
//!
//! The connection is dropped by a TCP proxy between client and broker,
//! which refuses new connections until it is restored, so each client
//! reconnects by its own rules (the Python ones by the loop their users
//! write) only after the events it is to miss were published.
//!
//! The clients are installed by `scripts/test.sh` (pip: httpx, httpx-sse,
//! requests, sseclient-py; npm: eventsource, playwright-core; Debian:
//! chromium).

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use serde_json::{Value, json};

use crate::{helpers::*, publish, redis_support::TcpProxy};

/// How long a client may take to start and to see an event (a headless
/// Chromium starts in seconds on a busy machine). Only a guard against
/// hanging.
const CLIENT_PATIENCE: Duration = Duration::from_secs(60);

/// Events the history holds per channel in the scenario: the second drop
/// misses more, so its resume gets a gap notice.
const HISTORY: usize = 5;

/// A client program running, and the events it reported so far.
struct ClientRun {
    child: Child,
    lines: mpsc::Receiver<Value>,
    events: Vec<Value>,
}

impl ClientRun {
    /// Starts `program script stream_url` in the repository root.
    fn start(program: &str, script: &str, args: &[&str]) -> Self {
        let root = env!("CARGO_MANIFEST_DIR");
        let mut child = Command::new(program)
            .arg(format!("{root}/{script}"))
            .args(args)
            .current_dir(root)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|err| {
                panic!("{program} {script} does not start ({err}): scripts/test.sh installs it")
            });
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let event = serde_json::from_str(&line)
                    .unwrap_or_else(|_| panic!("a client reported {line:?}"));
                if tx.send(event).is_err() {
                    return;
                }
            }
        });
        Self {
            child,
            lines,
            events: Vec::new(),
        }
    }

    /// Waits until the client reported an event with `data`.
    async fn wait_for(&mut self, data: &str) {
        let deadline = Instant::now() + CLIENT_PATIENCE;
        while !self.events.iter().any(|e| e["data"] == data) {
            assert!(
                Instant::now() < deadline,
                "the client never got {data}; it got {:#?}",
                self.events
            );
            match self.lines.try_recv() {
                Ok(event) => self.events.push(event),
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }

    /// Waits for the client to exit, successfully; everything it reported.
    async fn finish(mut self) -> Vec<Value> {
        let deadline = Instant::now() + CLIENT_PATIENCE;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break status;
            }
            assert!(Instant::now() < deadline, "the client did not finish");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        // What it wrote before it exited (its output ends with it).
        while let Ok(event) = self.lines.recv_timeout(PATIENCE) {
            self.events.push(event);
        }
        assert!(status.success(), "the client failed: {:#?}", self.events);
        std::mem::take(&mut self.events)
    }
}

impl Drop for ClientRun {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The open connections the broker counts on `channel`.
async fn subscribers(client: &reqwest::Client, broker: &BrokerProcess, channel: &str) -> u64 {
    let res = client
        .get(broker.url(&format!("/channels/{channel}")))
        .send()
        .await;
    let body: Value = match res {
        Ok(res) => res.json().await.unwrap_or_default(),
        Err(_) => Value::Null,
    };
    body["subscribers"].as_u64().unwrap_or(0)
}

/// The scenario of the module docs for the client `program script [arg]`:
/// asserts it saw exactly what was published, and the notices.
async fn sees_exactly_what_was_published(program: &str, script: &str, arg: Option<&str>) {
    let broker = crate::unlimited_broker(&[
        ("SSE_BROKER__STREAM__HEARTBEAT", "100ms"),
        ("SSE_BROKER__STREAM__RETRY", "200ms"),
        ("SSE_BROKER__HISTORY__MAX_EVENTS", &HISTORY.to_string()),
    ]);
    let port = broker.addr.rsplit(':').next().expect("a port");
    let proxy = TcpProxy::start(port.parse().expect("a port number"));
    let channel = "clients";
    let client = crate::http_client();
    // A witness on the broker itself counts the heartbeats sent meanwhile.
    let mut witness = stream_at(&client, &broker.url(&format!("/stream/{channel}")), &[]).await;
    witness.wait_open().await;
    let url = format!("http://127.0.0.1:{}/stream/{channel}", proxy.port);
    let mut args: Vec<&str> = arg.into_iter().collect();
    args.push(&url);
    let mut run = ClientRun::start(program, script, &args);
    let connected = |n| {
        let client = &client;
        let broker = &broker;
        async move {
            let deadline = Instant::now() + CLIENT_PATIENCE;
            while subscribers(client, broker, channel).await != n {
                assert!(Instant::now() < deadline, "never {n} subscribers");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    connected(2).await;

    let mut ids = Vec::new();
    let body = |n: usize| json!({ "n": n }).to_string();
    // Live, with heartbeats before, between and after the events.
    for n in 1..=3 {
        tokio::time::sleep(Duration::from_millis(350)).await;
        ids.push(publish(&client, &broker, channel, body(n)).await);
    }
    run.wait_for(&body(3)).await;
    // Dropped, two events missed, resumed: a replay.
    tokio::time::sleep(Duration::from_millis(350)).await;
    proxy.cut();
    connected(1).await;
    for n in 4..=5 {
        ids.push(publish(&client, &broker, channel, body(n)).await);
    }
    proxy.restore();
    run.wait_for(&body(5)).await;
    // Dropped, more missed than the history holds: a gap, then the rest.
    tokio::time::sleep(Duration::from_millis(350)).await;
    proxy.cut();
    connected(1).await;
    for n in 6..=13 {
        ids.push(publish(&client, &broker, channel, body(n)).await);
    }
    proxy.restore();
    run.wait_for(&body(13)).await;
    tokio::time::sleep(Duration::from_millis(350)).await;
    let end = publish(&client, &broker, channel, "\"end\"".into()).await;
    let got = run.finish().await;

    let id = |n: usize| ids[n - 1].as_str();
    let message = |n: usize| json!({"type": "message", "id": id(n), "data": body(n)});
    let replay = |count: usize| {
        let data = json!({ "channel": channel, "count": count }).to_string();
        json!({"type": "broker.replay", "data": data})
    };
    let trimmed = 13 - HISTORY;
    let gap = json!({
        "type": "broker.gap",
        "id": id(trimmed),
        "data": json!({
            "channel": channel,
            "lastEventId": id(5),
            "reason": "history-trimmed",
            "resumeFrom": id(trimmed),
        })
        .to_string(),
    });
    let mut expected: Vec<Value> = (1..=3).map(message).collect();
    expected.push(replay(2));
    expected.extend((4..=5).map(message));
    expected.push(gap);
    expected.push(replay(HISTORY));
    expected.extend((trimmed + 1..=13).map(message));
    expected.push(json!({"type": "message", "id": end, "data": "\"end\""}));
    // A replay marker has no id: whatever id a client shows for it is its own.
    let got: Vec<Value> = got
        .into_iter()
        .map(|mut event| {
            if event["type"] == "broker.replay" {
                event.as_object_mut().expect("an object").remove("id");
            }
            event
        })
        .collect();
    assert_eq!(got, expected, "{program} {script} {arg:?}");

    // The heartbeats did flow meanwhile (on the witness's stream, the same
    // channel's).
    witness.wait_comments("heartbeat", 3).await;
}

/// httpx-sse (with the reconnect loop its users write) sees exactly the published events and the notices.
#[actix_web::test]
async fn httpx_sse_sees_exactly_what_was_published() {
    sees_exactly_what_was_published(
        "python3",
        "tests/clients/python_clients.py",
        Some("httpx-sse"),
    )
    .await;
}

/// sseclient-py (with the reconnect loop its users write) sees exactly the published events and the notices.
#[actix_web::test]
async fn sseclient_py_sees_exactly_what_was_published() {
    sees_exactly_what_was_published(
        "python3",
        "tests/clients/python_clients.py",
        Some("sseclient-py"),
    )
    .await;
}

/// Node's eventsource sees exactly the published events and the notices across its own reconnects.
#[actix_web::test]
async fn node_eventsource_sees_exactly_what_was_published() {
    sees_exactly_what_was_published("node", "tests/clients/node_eventsource.js", None).await;
}

/// Chromium's EventSource sees exactly the published events and the notices across its own reconnects.
#[actix_web::test]
async fn chromium_eventsource_sees_exactly_what_was_published() {
    if std::env::var_os("SKIP_BROWSER").is_some() {
        eprintln!("skipped: SKIP_BROWSER is set (scripts/test.sh then installs no Chromium)");
        return;
    }
    sees_exactly_what_was_published("node", "tests/clients/chromium_eventsource.js", None).await;
}
