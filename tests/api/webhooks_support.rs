//! Scaffolding for the webhook tests: the receiver of
//! `tests/apps/webhook_receiver.py` (it verifies every delivery with the
//! Standard Webhooks library, records what it accepted, and can be told
//! to fail), started for one test and killed when dropped; and the
//! environment that points a broker process at it.

use std::process::Child;

use serde_json::{Value, json};

use crate::helpers::*;

/// The signing secret the broker and the receiver share.
pub const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// The receiver, running.
pub struct Receiver {
    child: Child,
    pub url: String,
    client: reqwest::Client,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One delivery the receiver accepted: its `webhook-id` and body.
#[derive(Debug, Clone)]
pub struct Delivered {
    pub id: String,
    pub body: Value,
}

impl Delivered {
    pub fn kind(&self) -> &str {
        self.body["type"].as_str().unwrap_or_default()
    }
}

impl Receiver {
    /// Starts the receiver on a free port, failing its first `fail`
    /// deliveries (with 500).
    pub fn start(fail: u32) -> Self {
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/apps/webhook_receiver.py"
        );
        let fail = fail.to_string();
        let (child, port) = start_script(script, &["--secret", SECRET, "--fail", &fail]);
        Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
            client: http_client(),
        }
    }

    /// The URL webhooks go to.
    pub fn hook_url(&self) -> String {
        format!("{}/hook", self.url)
    }

    /// Fails the next `n` deliveries (with 500).
    pub async fn fail_next(&self, n: u32) {
        self.fail_next_with(n, 500).await;
    }

    /// Answers the next `n` deliveries with `status`.
    pub async fn fail_next_with(&self, n: u32, status: u16) {
        let res = self
            .client
            .post(format!("{}/control", self.url))
            .json(&json!({"fail": n, "status": status}))
            .send()
            .await
            .expect("control");
        assert_eq!(res.status(), 204);
    }

    /// What it accepted, the ids of every verified attempt, and how many
    /// deliveries failed verification.
    pub async fn deliveries(&self) -> (Vec<Delivered>, Vec<String>, u64) {
        let state: Value = self
            .client
            .get(format!("{}/deliveries", self.url))
            .send()
            .await
            .expect("deliveries")
            .json()
            .await
            .expect("JSON");
        let accepted = state["accepted"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|d| Delivered {
                id: d["id"].as_str().unwrap_or_default().to_owned(),
                body: d["body"].clone(),
            })
            .collect();
        let attempts = state["attempts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|id| id.as_str().map(str::to_owned))
            .collect();
        (accepted, attempts, state["rejected"].as_u64().unwrap_or(0))
    }

    /// Waits until it accepted `n` deliveries; returns them.
    pub async fn wait_for(&self, n: usize) -> Vec<Delivered> {
        wait_until(|| async { self.deliveries().await.0.len() >= n }).await;
        self.deliveries().await.0
    }

    /// Waits until it saw `n` verified attempts; returns their ids.
    pub async fn wait_for_attempts(&self, n: usize) -> Vec<String> {
        wait_until(|| async { self.deliveries().await.1.len() >= n }).await;
        self.deliveries().await.1
    }
}

/// The environment of a broker process whose webhooks go to `receiver`,
/// with `vacated_after` and a short backoff.
pub fn webhook_env(receiver: &Receiver, vacated_after: &str) -> Vec<(&'static str, String)> {
    vec![
        ("SSE_BROKER__WEBHOOKS__URL", receiver.hook_url()),
        ("SSE_BROKER__WEBHOOKS__SECRET", SECRET.to_owned()),
        (
            "SSE_BROKER__WEBHOOKS__VACATED_AFTER",
            vacated_after.to_owned(),
        ),
        ("SSE_BROKER__WEBHOOKS__BACKOFF_BASE", "100ms".to_owned()),
        ("SSE_BROKER__WEBHOOKS__BACKOFF_MAX", "400ms".to_owned()),
        ("SSE_BROKER__METRICS__ENABLED", "true".to_owned()),
        ("SSE_BROKER__STREAM__HEARTBEAT", "100ms".to_owned()),
    ]
}

/// `env` as the `&str` pairs [`BrokerProcess`] takes.
pub fn pairs<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}
