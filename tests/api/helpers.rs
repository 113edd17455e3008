//! Shared test scaffolding: start the real application on port 0, and an SSE
//! client that parses the stream the way a browser's EventSource does.

use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use serde_json::Value;
use sse_broker::{
    config::{Settings, StreamWriter},
    startup::{Application, Stopper},
};

/// How long any wait in a test may take before it counts as a failure. Only a
/// guard against hanging: no test asserts on speed.
pub const PATIENCE: Duration = Duration::from_secs(10);

pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    pub stopper: Stopper,
    /// A token [`TestApp::get_json`] sends (e.g. one with the `monitor`
    /// grant, for listings when auth is on).
    pub api_token: Option<String>,
}

impl Drop for TestApp {
    /// Stops the server so its worker threads do not outlive the test.
    fn drop(&mut self) {
        let stopper = self.stopper.clone();
        actix_web::rt::spawn(async move { stopper.stop().await });
    }
}

/// Starts the application on a free port with the development defaults,
/// the demo publisher off, and `adjust` applied.
pub async fn spawn_app_with(adjust: impl FnOnce(&mut Settings)) -> TestApp {
    let mut settings = Settings::defaults();
    settings.server.bind = "127.0.0.1:0".parse().unwrap();
    settings.demo.enabled = false;
    settings.server.public_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/public").into();
    // CI runs the stream tests once more on the body writer (scripts/test.sh).
    if let Ok(writer) = std::env::var("SSE_BROKER__STREAM__WRITER") {
        settings.stream.writer = match writer.as_str() {
            "body" => StreamWriter::Body,
            "direct" => StreamWriter::Direct,
            other => panic!("SSE_BROKER__STREAM__WRITER={other:?}: use direct or body"),
        };
    }
    adjust(&mut settings);
    let app = Application::build(settings).expect("the application builds");
    let address = format!("http://127.0.0.1:{}", app.port());
    let stopper = app.stopper();
    actix_web::rt::spawn(app.run_until_stopped(false));
    TestApp {
        address,
        client: http_client(),
        stopper,
        api_token: None,
    }
}

/// A plain reqwest client. reqwest is built with `rustls-no-provider` (the
/// TLS tests use the broker's `ring` provider), so a client of any kind
/// needs the process's default crypto provider installed first.
pub fn http_client() -> reqwest::Client {
    install_crypto();
    reqwest::Client::new()
}

/// Installs the broker's crypto provider (`ring`) as the process default,
/// once.
pub fn install_crypto() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = sse_broker::tls::provider()
            .as_ref()
            .clone()
            .install_default();
    });
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    /// POSTs `body` to `path` as `content_type`.
    pub async fn post(
        &self,
        path: &str,
        content_type: &str,
        body: impl Into<reqwest::Body>,
    ) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .expect("POST request")
    }

    /// Publishes a JSON body; returns the answer's status and body.
    pub async fn publish_json(&self, channel: &str, body: &str) -> (u16, Value) {
        let res = self
            .post(
                &format!("/publish/{channel}"),
                "application/json",
                body.to_owned(),
            )
            .await;
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    /// Publishes and insists it was accepted; returns the event id.
    pub async fn publish(&self, channel: &str, body: &str) -> String {
        let (status, answer) = self.publish_json(channel, body).await;
        assert_eq!(status, 202, "publish to {channel} answered {answer}");
        answer["id"].as_str().expect("an id").to_owned()
    }

    /// Opens an SSE stream at `path` with extra headers.
    pub async fn stream(&self, path: &str, headers: &[(&str, &str)]) -> SseClient {
        stream_at(&self.client, &self.url(path), headers).await
    }

    pub async fn get_json(&self, path: &str) -> (u16, Value) {
        let mut req = self.client.get(self.url(path));
        if let Some(token) = &self.api_token {
            req = req.bearer_auth(token);
        }
        let res = req.send().await.expect("GET");
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    /// Waits until `GET /channels/{channel}` says `subscribers` is `n`.
    pub async fn wait_for_subscribers(&self, channel: &str, n: u64) {
        wait_until(|| async {
            let (_, body) = self.get_json(&format!("/channels/{channel}")).await;
            body["subscribers"].as_u64() == Some(n)
        })
        .await
    }
}

/// Opens an SSE stream at a full URL, with headers; insists on a 200.
pub async fn stream_at(client: &reqwest::Client, url: &str, headers: &[(&str, &str)]) -> SseClient {
    let res = stream_request(client, url, headers).await;
    assert_eq!(res.status(), 200, "stream {url}");
    SseClient::new(res)
}

/// Sends a stream request at a full URL, with headers; whatever the answer.
pub async fn stream_request(
    client: &reqwest::Client,
    url: &str,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut req = client.get(url);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    tokio::time::timeout(PATIENCE, req.send())
        .await
        .expect("stream answered in time")
        .expect("stream request")
}

/// Polls `check` until it holds, failing after [`PATIENCE`].
pub async fn wait_until<F, Fut>(mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not met in time"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One dispatched event, as an EventSource sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    pub id: String,
    pub event: String,
    pub data: String,
}

/// A spec-following incremental parser over a streaming response.
pub struct SseClient {
    pub headers: reqwest::header::HeaderMap,
    body: std::pin::Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>,
    /// Bytes not yet parsed (a chunk may end inside a line or a character).
    buffer: Vec<u8>,
    last_id: String,
    data: String,
    event: String,
    pub comments: Vec<String>,
    pub retry: Option<u64>,
    pending: std::collections::VecDeque<SseEvent>,
    pub ended: bool,
}

impl SseClient {
    pub fn new(res: reqwest::Response) -> Self {
        Self {
            headers: res.headers().clone(),
            body: Box::pin(res.bytes_stream()),
            buffer: Vec::new(),
            last_id: String::new(),
            data: String::new(),
            event: String::new(),
            comments: Vec::new(),
            retry: None,
            pending: Default::default(),
            ended: false,
        }
    }

    /// The last event id the client saw (what EventSource would send back).
    pub fn last_id(&self) -> &str {
        &self.last_id
    }

    /// The next event, failing the test if none comes within [`PATIENCE`].
    pub async fn next_event(&mut self) -> SseEvent {
        match tokio::time::timeout(PATIENCE, self.try_next_event()).await {
            Ok(Some(event)) => event,
            Ok(None) => panic!("the stream ended"),
            Err(_) => panic!("no event within {PATIENCE:?}"),
        }
    }

    /// The next event, or `None` once the stream ended.
    pub async fn try_next_event(&mut self) -> Option<SseEvent> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(event);
            }
            if self.ended {
                return None;
            }
            match self.body.next().await {
                Some(Ok(chunk)) => {
                    self.buffer.extend_from_slice(&chunk);
                    self.parse_lines();
                }
                _ => self.ended = true,
            }
        }
    }

    /// Reads until the stream ends, returning every event on the way.
    pub async fn until_end(&mut self) -> Vec<SseEvent> {
        let mut events = Vec::new();
        let read = async {
            while let Some(event) = self.try_next_event().await {
                events.push(event);
            }
        };
        tokio::time::timeout(PATIENCE, read)
            .await
            .expect("the stream ended in time");
        events
    }

    /// Reads the next `n` events of the type `message`, skipping broker notices.
    pub async fn next_messages(&mut self, n: usize) -> Vec<SseEvent> {
        let mut out = Vec::new();
        while out.len() < n {
            let event = self.next_event().await;
            if event.event == "message" {
                out.push(event);
            }
        }
        out
    }

    /// Waits for the first comment line (the prelude): the stream is open.
    pub async fn wait_open(&mut self) {
        self.wait_comment("connected").await;
    }

    /// Reads until a comment with exactly `text` arrives.
    pub async fn wait_comment(&mut self, text: &str) {
        self.wait_comments(text, 1).await;
    }

    /// Reads until `n` comments with exactly `text` have arrived in all.
    pub async fn wait_comments(&mut self, text: &str, n: usize) {
        let wait = async {
            while self.comments.iter().filter(|c| *c == text).count() < n {
                assert!(!self.ended, "the stream ended before the comment {text:?}");
                match self.body.next().await {
                    Some(Ok(chunk)) => {
                        self.buffer.extend_from_slice(&chunk);
                        self.parse_lines();
                    }
                    _ => self.ended = true,
                }
            }
        };
        tokio::time::timeout(PATIENCE, wait)
            .await
            .expect("the comment arrived in time");
    }

    fn parse_lines(&mut self) {
        while let Some(at) = self.buffer.iter().position(|b| *b == b'\r' || *b == b'\n') {
            // A lone CR at the very end might be the first half of CRLF.
            if self.buffer[at] == b'\r' && at + 1 == self.buffer.len() {
                break;
            }
            let skip = if self.buffer[at..].starts_with(b"\r\n") {
                2
            } else {
                1
            };
            let line: Vec<u8> = self.buffer.drain(..at + skip).take(at).collect();
            self.line(std::str::from_utf8(&line).expect("streams are UTF-8"));
        }
    }

    fn line(&mut self, line: &str) {
        if line.is_empty() {
            if !self.data.is_empty() {
                self.data.pop();
                let event = if self.event.is_empty() {
                    "message".to_owned()
                } else {
                    self.event.clone()
                };
                self.pending.push_back(SseEvent {
                    id: self.last_id.clone(),
                    event,
                    data: std::mem::take(&mut self.data),
                });
            }
            self.event.clear();
            return;
        }
        if let Some(comment) = line.strip_prefix(':') {
            self.comments.push(comment.trim().to_owned());
            return;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "data" => {
                self.data.push_str(value);
                self.data.push('\n');
            }
            "event" => self.event = value.to_owned(),
            "id" if !value.contains('\0') => self.last_id = value.to_owned(),
            "retry" => self.retry = value.parse().ok(),
            _ => {}
        }
    }
}

/// The real `sse-broker` binary, started with flags and environment, and
/// its address read from its start log line. Killed if a test forgets it.
pub struct BrokerProcess {
    pub child: std::process::Child,
    /// `127.0.0.1:port`
    pub addr: String,
    /// Every line it has logged so far.
    pub log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl BrokerProcess {
    /// Starts the binary listening on `bind`, demo off, with `env` set.
    pub fn start(bind: &str, env: &[(&str, &str)]) -> Self {
        Self::start_with(&["--bind", bind, "--demo", "false"], env)
    }

    /// Starts the binary with these arguments and `env` set.
    pub fn start_with(args: &[&str], env: &[(&str, &str)]) -> Self {
        use std::io::{BufRead, BufReader};
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_sse-broker"));
        command
            .args(args)
            .env("RUST_LOG", "info")
            .stderr(std::process::Stdio::piped());
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command.spawn().expect("the broker starts");
        let stderr = child.stderr.take().expect("stderr is piped");
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let lines = std::sync::Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                lines.lock().expect("not poisoned").push(line.clone());
                if let Some(rest) = line.split("listening addr=").nth(1) {
                    let _ = addr_tx.send(
                        rest.split_whitespace()
                            .next()
                            .unwrap_or_default()
                            .to_owned(),
                    );
                }
            }
        });
        match addr_rx.recv_timeout(PATIENCE) {
            Ok(addr) => Self { child, addr, log },
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "no start line naming the address within {PATIENCE:?} (is RUST_LOG below info for sse_broker::startup?)"
                );
            }
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Sends SIGTERM, as systemd or Kubernetes do on a deploy.
    pub fn terminate(&self) {
        let status = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
    }

    /// Waits (at most [`PATIENCE`]) for the process to exit.
    pub async fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            if let Some(exit) = self.child.try_wait().expect("try_wait") {
                return exit;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the broker did not exit within {PATIENCE:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Checks that `res` is an application/problem+json answer; returns its
/// status and body.
pub async fn problem(res: reqwest::Response) -> (u16, serde_json::Value) {
    let status = res.status().as_u16();
    assert_eq!(
        res.headers()["content-type"],
        "application/problem+json",
        "status {status}"
    );
    let body: serde_json::Value = res.json().await.expect("a JSON problem");
    assert_eq!(body["status"], status);
    assert!(
        body["type"]
            .as_str()
            .unwrap()
            .starts_with("urn:sse-broker:problem:")
    );
    assert!(!body["title"].as_str().unwrap().is_empty());
    (status, body)
}

/// The value of the unlabelled sample `name` in the `GET /metrics` text at
/// `metrics_url` (NaN when there is none).
pub async fn metric_value(metrics_url: &str, name: &str) -> f64 {
    let text = http_client()
        .get(metrics_url)
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(f64::NAN)
}

/// Starts one of the test applications of `tests/apps` (`python3 script
/// args…`) and reads the port from its first line, `listening <port>`.
pub fn start_script(script: &str, args: &[&str]) -> (std::process::Child, u16) {
    use std::io::{BufRead, BufReader};
    let mut child = std::process::Command::new("python3")
        .arg(script)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|err| panic!("python3 runs {script}: {err}"));
    let stdout = child.stdout.take().expect("its stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("it says where it listens");
    let port: u16 = line
        .trim()
        .strip_prefix("listening ")
        .and_then(|port| port.parse().ok())
        .unwrap_or_else(|| panic!("{script}: unexpected first line {line:?}"));
    (child, port)
}
