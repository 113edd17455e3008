//! The third-party clients people subscribe with, used as they are used:
//! Python's `httpx-sse` and `sseclient-py`, Node's `eventsource`. None of
//! them may see an event the broker did not publish: `httpx-sse` turns a
//! block without data (a comment and a blank line) into an event with empty
//! `data`, which crashes a consumer that parses it (florimondmanca/httpx-sse#35),
//! so the prelude, heartbeats and the reconnect hint carry no blank line.
//!
//! The clients are installed by `scripts/test.sh` (pip: httpx, httpx-sse,
//! requests, sseclient-py; npm: eventsource).

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    time::Duration,
};

use crate::{helpers::*, publish};

/// Runs a client script against `broker`: it subscribes to `channel` and
/// reads `count` events; publishes them once `subscribers` have joined,
/// with heartbeats between them; returns the script's output lines.
async fn run_client(
    broker: &BrokerProcess,
    program: &str,
    script: &str,
    channel: &str,
    subscribers: u64,
) -> Vec<String> {
    let root = env!("CARGO_MANIFEST_DIR");
    let mut child = Command::new(program)
        .arg(format!("{root}/{script}"))
        .args([&broker.url(""), channel, "3"])
        .current_dir(root)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|err| {
            panic!("{program} {script} does not start ({err}): scripts/test.sh installs it")
        });
    let stdout = child.stdout.take().expect("stdout is piped");
    let lines = std::thread::spawn(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<_>>()
    });
    let client = crate::http_client();
    wait_until(|| async {
        let res = client
            .get(broker.url(&format!("/channels/{channel}")))
            .send()
            .await;
        let body: serde_json::Value = match res {
            Ok(res) => res.json().await.unwrap_or_default(),
            Err(_) => return false,
        };
        body["subscribers"] == subscribers
    })
    .await;
    // Heartbeats (every 100 ms) before, between and after the events.
    for n in 0..3 {
        tokio::time::sleep(Duration::from_millis(350)).await;
        publish(&client, broker, channel, format!("{{\"n\":{n}}}")).await;
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(40);
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{script} did not finish"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let lines = lines.join().expect("the output reader");
    assert!(
        status.success(),
        "{script} saw phantom or missing events:\n{}",
        lines.join("\n")
    );
    lines
}

fn broker() -> BrokerProcess {
    BrokerProcess::start("127.0.0.1:0", &[("SSE_BROKER__STREAM__HEARTBEAT", "100ms")])
}

/// httpx-sse and sseclient-py get the three events and nothing else.
#[actix_web::test]
async fn python_clients_see_only_published_events() {
    let broker = broker();
    let lines = run_client(
        &broker,
        "python3",
        "tests/clients/python_clients.py",
        "py",
        2,
    )
    .await;
    let summary = lines.last().expect("a summary line");
    assert!(
        summary.contains(r#""httpx-sse": {"events": 3, "phantoms": 0}"#),
        "{summary}"
    );
    assert!(
        summary.contains(r#""sseclient-py": {"events": 3, "phantoms": 0}"#),
        "{summary}"
    );
}

/// Node's eventsource gets the three events and nothing else.
#[actix_web::test]
async fn node_eventsource_sees_only_published_events() {
    let broker = broker();
    let lines = run_client(
        &broker,
        "node",
        "tests/clients/node_eventsource.js",
        "node",
        1,
    )
    .await;
    let summary = lines.last().expect("a summary line");
    assert!(summary.contains(r#""events":3,"phantoms":0"#), "{summary}");
}
