//! sse-loadgen: a load generator for Server-Sent Events brokers.
//! See bench/README.md for the flags and the meaning of every reported number.

mod net;
mod proc;
mod reader;
mod sse;

use clap::Parser;
use hdrhistogram::serialization::Serializer as _;
use hdrhistogram::Histogram;
use net::{open_sub, PubConn, Target};
use proc::ProcStats;
use serde::{Deserialize, Serialize};
use sse::SseParser;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{watch, Semaphore};

const MAX_STEPS: usize = 64;
const MAX_SEQ: u64 = 1 << 24;
const PH_RUN: u8 = 0;
const PH_DISCONNECT: u8 = 1;
const PH_RECONNECT: u8 = 2;
const PH_SHUTDOWN: u8 = 3;

#[derive(Parser, Debug, Clone, Serialize)]
#[command(name = "sse-loadgen", about = "Load generator for SSE brokers (loopback only)")]
struct Args {
    /// Subscribe URL template ({channel} is replaced by the channel name)
    #[arg(long, default_value = "http://127.0.0.1:8080/stream/{channel}")]
    sub_url: String,
    /// Publish URL template
    #[arg(long, default_value = "http://127.0.0.1:8080/publish/{channel}")]
    pub_url: String,
    /// Subscribers opened by this process (subscriber i listens on channel i % channels)
    #[arg(long, default_value_t = 20)]
    subscribers: usize,
    /// Number of channels (named <prefix><index>)
    #[arg(long, default_value_t = 2)]
    channels: usize,
    /// Channel name prefix (letters and digits only)
    #[arg(long, default_value = "ch")]
    channel_prefix: String,
    /// Global index of this process's first subscriber (multi-process runs)
    #[arg(long, default_value_t = 0)]
    first_subscriber: usize,
    /// Publish rate in events/s over all channels; 0 = closed loop, as fast as possible
    #[arg(long, default_value_t = 200.0)]
    rate: f64,
    /// Publish duration in seconds (0 = idle run: connect, measure, exit)
    #[arg(long, default_value_t = 2.0)]
    duration: f64,
    /// Keep-alive publisher connections (each owns the channels c with c % K == k)
    #[arg(long, default_value_t = 4)]
    publishers: usize,
    /// Event payload size in bytes
    #[arg(long, default_value_t = 100)]
    payload_bytes: usize,
    /// Content-Type of publish requests
    #[arg(long, default_value = "text/plain")]
    content_type: String,
    /// Publish a form instead of the bare payload: this template with {channel} replaced by
    /// the channel name and {payload} by the payload (spaces as '+'), e.g. for a Mercure hub
    /// 'topic={channel}&data={payload}' (set --content-type application/x-www-form-urlencoded)
    #[arg(long)]
    pub_form: Option<String>,
    /// Extra header line on every publish request (repeatable), e.g. 'Authorization: Bearer …'
    #[arg(long)]
    pub_header: Vec<String>,
    /// Send every publish with an Idempotency-Key (run token, channel, seq) and, when it
    /// fails (an error status or a dead connection), send the same body under the same key
    /// again rather than a new event: the retry a backend job makes, so a broker that stored
    /// the failed attempt answers the first id and stores nothing twice
    #[arg(long)]
    idempotency_keys: bool,
    /// Open no subscribers, only publish (same as --subscribers 0)
    #[arg(long)]
    publish_only: bool,
    /// Seconds to wait for deliveries after publishing stops (ends early once all arrived)
    #[arg(long, default_value_t = 3.0)]
    drain_secs: f64,
    /// Local source IPs to bind client sockets to, round-robin (e.g. 127.0.0.1,127.0.0.2)
    #[arg(long, value_delimiter = ',')]
    source_addrs: Vec<IpAddr>,
    /// Subscriptions being opened at the same time
    #[arg(long, default_value_t = 256)]
    connect_concurrency: usize,
    /// Per-subscription connect timeout (seconds, until head + first byte)
    #[arg(long, default_value_t = 15.0)]
    connect_timeout: f64,
    /// Consider a subscriber ready after its 200 head, without waiting for a first body byte
    #[arg(long)]
    no_wait_first_byte: bool,
    /// Broker pid: RSS and CPU of it and its descendants are sampled around every phase
    #[arg(long)]
    broker_pid: Option<u32>,
    /// Seconds to wait after connecting before sampling broker RSS
    #[arg(long, default_value_t = 0.5)]
    settle_secs: f64,
    /// Process id within a multi-process run (0 = leader, publishes and samples the broker)
    #[arg(long, default_value_t = 0)]
    id: u32,
    /// Write the JSON report here instead of stdout
    #[arg(long)]
    output: Option<PathBuf>,
    /// Ramp mode: first step's publish rate
    #[arg(long)]
    ramp_start: Option<f64>,
    /// Ramp mode: rate multiplier between steps
    #[arg(long, default_value_t = 1.2)]
    ramp_factor: f64,
    /// Ramp mode: maximum number of steps
    #[arg(long, default_value_t = 10)]
    ramp_steps: usize,
    /// A step passes only if its p99 latency is at most this (ms)
    #[arg(long, default_value_t = 100.0)]
    max_p99_ms: f64,
    /// Resume mode: events published per channel while subscribers are disconnected
    #[arg(long)]
    resume_behind: Option<u64>,
    /// Concurrent reconnects in resume mode (0 = all at once)
    #[arg(long, default_value_t = 0)]
    resume_concurrency: usize,
    /// Hard timeout: report what is known and exit after this many seconds
    #[arg(long, default_value_t = 120.0)]
    max_secs: f64,
    /// Tokio worker threads (1 = current-thread runtime)
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Coordination directory for multi-process runs (leader --id 0 plus workers --id 1..)
    #[arg(long)]
    coord_dir: Option<PathBuf>,
    /// Leader: number of worker processes to wait for
    #[arg(long, default_value_t = 0)]
    workers: usize,
    /// Token embedded in payloads; events with another token (stale history) are ignored.
    /// Must be equal in all processes of one run. Default: random.
    #[arg(long)]
    run_token: Option<String>,
    /// Tiny CI run: 20 subscribers, 2 channels, 200 ev/s for 2 s; exit 2 on any loss
    #[arg(long)]
    smoke: bool,
    /// Exit with status 2 on loss, duplicates, reordering, publish or connect errors
    #[arg(long)]
    fail_on_loss: bool,
    /// Merge the JSON reports of a multi-process run (leader first) and exit
    #[arg(long, num_args = 1..)]
    merge: Vec<PathBuf>,
}

// ---------------------------------------------------------------- report types

#[derive(Serialize, Deserialize, Debug, Clone, Default)]
struct Lat {
    count: u64,
    mean: f64,
    p50: f64,
    p90: f64,
    p99: f64,
    p999: f64,
    max: f64,
}

impl Lat {
    fn from_us(h: &Histogram<u64>) -> Lat {
        let ms = |v: u64| v as f64 / 1000.0;
        if h.is_empty() {
            return Lat::default();
        }
        Lat {
            count: h.len(),
            mean: h.mean() / 1000.0,
            p50: ms(h.value_at_quantile(0.5)),
            p90: ms(h.value_at_quantile(0.9)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
        }
    }
}

#[derive(Serialize, Deserialize, Debug, Clone, Default)]
struct ConnectReport {
    attempted: usize,
    ok: usize,
    failed: usize,
    secs: f64,
    rate_per_s: f64,
    /// Leader with workers: subscribers ready in all processes, and the wall time until then.
    all_processes_ok: usize,
    all_processes_secs: f64,
}

#[derive(Serialize, Deserialize, Debug, Clone, Default)]
struct BrokerReport {
    pid: u32,
    start: ProcStats,
    after_connect: ProcStats,
    connect_cpu_secs: f64,
    rss_per_conn_kib: f64,
}

#[derive(Serialize, Deserialize, Debug, Clone, Default)]
struct StepReport {
    step: usize,
    kind: String,
    target_rate: f64,
    duration_s: f64,
    publish_elapsed_s: f64,
    published: u64,
    publish_errors: u64,
    achieved_rate: f64,
    fell_behind: bool,
    publish_rtt_ms: Lat,
    expected: u64,
    received: u64,
    lost: u64,
    duplicates: u64,
    out_of_order: u64,
    drain_s: f64,
    deliveries_per_s: f64,
    latency_ms: Lat,
    broker_before: Option<ProcStats>,
    broker_after: Option<ProcStats>,
    broker_cpu_secs: Option<f64>,
    cpu_us_per_delivery: Option<f64>,
    /// CPU seconds this loadgen process (not its peers) used from step start to the end of
    /// the drain, and that as a share of one core over the same wall time (near 1.0: the
    /// load generator, not the broker, may be the limit)
    #[serde(default)]
    loadgen_cpu_secs: Option<f64>,
    #[serde(default)]
    loadgen_core_share: Option<f64>,
    pass: bool,
    /// base64 of the V2-serialized latency histogram (µs), for merging
    hist: String,
}

#[derive(Serialize, Deserialize, Debug, Clone, Default)]
struct ResumeReport {
    behind_per_channel: u64,
    disconnected: usize,
    reconnected: usize,
    reconnect_failed: usize,
    expected: u64,
    received: u64,
    lost: u64,
    duplicates: u64,
    /// Time from the reconnect signal until every subscriber got all missed events (None: never)
    all_caught_up_secs: Option<f64>,
    reconnect_secs: f64,
    broker_cpu_secs: Option<f64>,
}

#[derive(Serialize, Deserialize, Debug, Clone, Default)]
struct Report {
    tool: String,
    id: u32,
    role: String,
    token: String,
    sub_url: String,
    pub_url: String,
    subscribers: usize,
    channels: usize,
    first_subscriber: usize,
    publishers: usize,
    payload_bytes: usize,
    connect: ConnectReport,
    broker: Option<BrokerReport>,
    steps: Vec<StepReport>,
    best_passing_step: Option<usize>,
    best_passing_rate: Option<f64>,
    best_passing_deliveries_per_s: Option<f64>,
    resume: Option<ResumeReport>,
    subscribers_with_loss: u64,
    min_received_per_subscriber: u64,
    max_received_per_subscriber: u64,
    unexpected_disconnects: u64,
    foreign_events: u64,
    unparsed_events: u64,
    errors: BTreeMap<String, u64>,
    timed_out: bool,
    elapsed_secs: f64,
    ok: bool,
}

/// Written by the leader for workers: what was published per step and channel.
#[derive(Serialize, Deserialize, Debug, Clone, Default)]
struct DoneFile {
    steps: Vec<DoneStep>,
}
#[derive(Serialize, Deserialize, Debug, Clone, Default)]
struct DoneStep {
    kind: String,
    target_rate: f64,
    duration_s: f64,
    publish_elapsed_s: f64,
    published: u64,
    publish_errors: u64,
    per_channel: Vec<u64>,
}

// ---------------------------------------------------------------- shared state

struct StepCounters {
    received: AtomicU64,
    dups: AtomicU64,
    ooo: AtomicU64,
    hist: Mutex<Histogram<u64>>,
}

fn new_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000, 3).unwrap()
}

struct Shared {
    token: String,
    steps: Vec<StepCounters>,
    ready: AtomicUsize,
    failed: AtomicUsize,
    closed: AtomicUsize,
    reconnected: AtomicUsize,
    reconnect_failed: AtomicUsize,
    unexpected_eof: AtomicU64,
    foreign: AtomicU64,
    unparsed: AtomicU64,
    per_sub: Vec<AtomicU64>,
    errors: Mutex<BTreeMap<String, u64>>,
}

impl Shared {
    fn error(&self, kind: impl Into<String>) {
        *self.errors.lock().unwrap().entry(kind.into()).or_default() += 1;
    }
}

struct Ctx {
    a: Args,
    sub: Target,
    pubt: Arc<Target>,
    sh: Shared,
    resume: bool,
}

impl Ctx {
    fn channel(&self, c: usize) -> String {
        format!("{}{}", self.a.channel_prefix, c)
    }
    fn src(&self, i: usize) -> Option<IpAddr> {
        if self.a.source_addrs.is_empty() {
            None
        } else {
            Some(self.a.source_addrs[i % self.a.source_addrs.len()])
        }
    }
    fn subs_per_channel(&self) -> Vec<u64> {
        let mut v = vec![0u64; self.a.channels];
        for g in self.a.first_subscriber..self.a.first_subscriber + self.a.subscribers {
            v[g % self.a.channels] += 1;
        }
        v
    }
}

fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_micros() as u64
}

// ---------------------------------------------------------------- subscribers

#[derive(Default)]
struct SubState {
    bits: Vec<u64>,
    max_seq: Option<u64>,
    last_id: Option<String>,
}

/// Handles one event's data. Payload: "<seq> <send_ts_us> <step> <token> xxxx".
fn on_event(data: &[u8], id: Option<&str>, st: &mut SubState, cx: &Ctx, local: usize, now: u64, lat: &mut Vec<(usize, u64)>) {
    let sh = &cx.sh;
    if let Some(id) = id {
        match &mut st.last_id {
            Some(s) if s == id => {}
            _ => st.last_id = Some(id.to_string()),
        }
    }
    let mut it = data.split(|&b| b == b' ');
    let num = |x: Option<&[u8]>| -> Option<u64> { std::str::from_utf8(x?).ok()?.parse().ok() };
    let (seq, ts, step) = match (num(it.next()), num(it.next()), num(it.next())) {
        (Some(a), Some(b), Some(c)) => (a, b, c as usize),
        _ => {
            sh.unparsed.fetch_add(1, Relaxed);
            return;
        }
    };
    if it.next() != Some(sh.token.as_bytes()) {
        sh.foreign.fetch_add(1, Relaxed);
        return;
    }
    if step >= MAX_STEPS || seq >= MAX_SEQ {
        sh.unparsed.fetch_add(1, Relaxed);
        return;
    }
    let sc = &sh.steps[step];
    let (w, b) = ((seq / 64) as usize, seq % 64);
    if st.bits.len() <= w {
        st.bits.resize(w + 1 + w / 4, 0);
    }
    if st.bits[w] & (1 << b) != 0 {
        sc.dups.fetch_add(1, Relaxed);
        return;
    }
    st.bits[w] |= 1 << b;
    if matches!(st.max_seq, Some(m) if seq < m) {
        sc.ooo.fetch_add(1, Relaxed);
    }
    st.max_seq = Some(st.max_seq.map_or(seq, |m| m.max(seq)));
    sc.received.fetch_add(1, Relaxed);
    sh.per_sub[local].fetch_add(1, Relaxed);
    lat.push((step, now.saturating_sub(ts).max(1)));
}

enum End {
    Stopped,
    Eof,
    Error(String),
}

/// Adds a read's latencies to the histograms of their steps.
fn record_latencies(cx: &Ctx, lat: &mut Vec<(usize, u64)>) {
    let mut cur = usize::MAX;
    let mut guard = None;
    for &(s, v) in lat.iter() {
        if s != cur {
            drop(guard.take());
            cur = s;
            guard = Some(cx.sh.steps[s].hist.lock().unwrap());
        }
        guard.as_mut().unwrap().saturating_record(v);
    }
    lat.clear();
}

async fn subscriber(local: usize, cx: Arc<Ctx>, reader: Arc<reader::Reader>, sem: Arc<Semaphore>, resume_sem: Option<Arc<Semaphore>>, mut ctrl: watch::Receiver<u8>) {
    let g = cx.a.first_subscriber + local;
    let path = cx.sub.path(&cx.channel(g % cx.a.channels));
    let src = cx.src(g);
    let wait_first = !cx.a.no_wait_first_byte;
    let tmo = Duration::from_secs_f64(cx.a.connect_timeout);
    let permit = sem.acquire().await.unwrap();
    let r = tokio::time::timeout(tmo, open_sub(&cx.sub, &path, src, None, wait_first)).await;
    drop(permit);
    let conn = match r {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            cx.sh.error(e);
            cx.sh.failed.fetch_add(1, Relaxed);
            return;
        }
        Err(_) => {
            cx.sh.error("subscribe timeout");
            cx.sh.failed.fetch_add(1, Relaxed);
            return;
        }
    };
    cx.sh.ready.fetch_add(1, Relaxed);
    let stop1 = if cx.resume { PH_DISCONNECT } else { PH_SHUTDOWN };
    let (end, st) = reader.read(conn, SseParser::default(), SubState::default(), local, stop1).await;
    match end {
        End::Stopped => {}
        End::Eof => {
            cx.sh.unexpected_eof.fetch_add(1, Relaxed);
            cx.sh.error("stream ended by broker");
        }
        End::Error(e) => {
            cx.sh.unexpected_eof.fetch_add(1, Relaxed);
            cx.sh.error(format!("stream {e}"));
        }
    }
    if !cx.resume {
        return;
    }
    cx.sh.closed.fetch_add(1, Relaxed);
    while *ctrl.borrow() < PH_RECONNECT {
        if ctrl.changed().await.is_err() {
            return;
        }
    }
    let permit = match &resume_sem {
        Some(s) => Some(s.acquire().await.unwrap()),
        None => None,
    };
    let last_id = st.last_id.clone();
    let r = tokio::time::timeout(tmo, open_sub(&cx.sub, &path, src, last_id.as_deref(), false)).await;
    drop(permit);
    let conn = match r {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            cx.sh.error(format!("resume: {e}"));
            cx.sh.reconnect_failed.fetch_add(1, Relaxed);
            return;
        }
        Err(_) => {
            cx.sh.error("resume: subscribe timeout");
            cx.sh.reconnect_failed.fetch_add(1, Relaxed);
            return;
        }
    };
    cx.sh.reconnected.fetch_add(1, Relaxed);
    match reader.read(conn, SseParser::default(), st, local, PH_SHUTDOWN).await.0 {
        End::Stopped => {}
        End::Eof => {
            cx.sh.unexpected_eof.fetch_add(1, Relaxed);
            cx.sh.error("resumed stream ended by broker");
        }
        End::Error(e) => {
            cx.sh.unexpected_eof.fetch_add(1, Relaxed);
            cx.sh.error(format!("resumed stream {e}"));
        }
    }
}

// ---------------------------------------------------------------- publishers

#[derive(Clone, Copy, Debug)]
enum PubMode {
    /// Open loop at this total rate (events/s) for the duration.
    Rate(f64, f64),
    /// Closed loop for the duration.
    Closed(f64),
    /// Exactly n events per owned channel, closed loop.
    Count(u64),
}

struct Publisher {
    conn: PubConn,
    channels: Vec<usize>,
    paths: Vec<String>,
    /// With --pub-form: the form body of each owned channel split around {payload}.
    forms: Vec<(String, String)>,
    seqs: Vec<u64>,
    /// With --idempotency-keys: per owned channel, the body of a publish that failed,
    /// sent again (same key) before the channel's next event.
    unacknowledged: Vec<Option<Vec<u8>>>,
    rr: usize,
    /// Where this publisher's paced events fall between its own ticks, as a
    /// fraction of its interval: publisher p of k starts at p/k, so together
    /// they publish evenly spaced rather than k events at the same instant
    /// (which made every fan-out a burst of k and set the latency floor).
    phase: f64,
}

struct PubResult {
    per_channel: Vec<(usize, u64)>,
    errors: u64,
    error_kinds: Vec<String>,
    last_done: Instant,
    rtt: Histogram<u64>,
}

impl Publisher {
    async fn run(mut self, cx: Arc<Ctx>, step: usize, mode: PubMode, t0: Instant) -> (Self, PubResult) {
        let n_ch = self.channels.len();
        let mut res = PubResult {
            per_channel: self.channels.iter().map(|&c| (c, 0)).collect(),
            errors: 0,
            error_kinds: vec![],
            last_done: t0,
            rtt: new_hist(),
        };
        if n_ch == 0 {
            return (self, res);
        }
        let share = n_ch as f64 / cx.a.channels as f64;
        let pad = cx.a.payload_bytes;
        let mut body = Vec::with_capacity(pad + 64);
        let hard_max = Instant::now() + Duration::from_secs_f64(cx.a.max_secs);
        let mut j: u64 = 0;
        tokio::time::sleep_until(t0.into()).await;
        loop {
            let now = Instant::now();
            if now > hard_max {
                break;
            }
            match mode {
                PubMode::Rate(rate, dur) => {
                    let r = rate * share;
                    let due = t0 + Duration::from_secs_f64((j as f64 + self.phase) / r);
                    let end = t0 + Duration::from_secs_f64(dur);
                    if due >= end || now > end + Duration::from_secs_f64((dur * 0.1).max(1.0)) {
                        break;
                    }
                    if due > now {
                        tokio::time::sleep_until(due.into()).await;
                    }
                }
                PubMode::Closed(dur) => {
                    if now >= t0 + Duration::from_secs_f64(dur) {
                        break;
                    }
                }
                PubMode::Count(n) => {
                    if j >= n * n_ch as u64 {
                        break;
                    }
                }
            }
            j += 1;
            let ci = self.rr;
            self.rr = (self.rr + 1) % n_ch;
            let key = cx.a.idempotency_keys.then(|| format!("lg-{}-{}-{}", cx.sh.token, self.channels[ci], self.seqs[ci]));
            if let Some(unacknowledged) = self.unacknowledged[ci].take() {
                body = unacknowledged;
            } else {
                body.clear();
                {
                    use std::io::Write;
                    let _ = write!(body, "{} {} {} {} ", self.seqs[ci], now_us(), step, cx.sh.token);
                }
                while body.len() < pad {
                    body.push(b'x');
                }
                if let Some((before, after)) = self.forms.get(ci) {
                    let mut form = Vec::with_capacity(before.len() + body.len() + after.len());
                    form.extend_from_slice(before.as_bytes());
                    form.extend(body.iter().map(|b| if *b == b' ' { b'+' } else { *b }));
                    form.extend_from_slice(after.as_bytes());
                    body = form;
                }
            }
            let t = Instant::now();
            let sent = self.conn.post(&self.paths[ci], &body, key.as_deref()).await;
            if key.is_some() && !matches!(sent, Ok(s) if (200..300).contains(&s)) {
                self.unacknowledged[ci] = Some(body.clone());
            }
            match sent {
                Ok(s) if (200..300).contains(&s) => {
                    self.seqs[ci] += 1;
                    res.per_channel[ci].1 += 1;
                    res.rtt.saturating_record(t.elapsed().as_micros().max(1) as u64);
                }
                Ok(s) => {
                    res.errors += 1;
                    res.error_kinds.push(format!("publish status {s}"));
                }
                Err(e) => {
                    res.errors += 1;
                    res.error_kinds.push(e);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
            res.last_done = Instant::now();
        }
        (self, res)
    }
}

// ---------------------------------------------------------------- orchestration

struct Leader {
    cx: Arc<Ctx>,
    pubs: Vec<Publisher>,
    report: Arc<Mutex<Report>>,
    done: DoneFile,
    subs_per_channel: Vec<u64>,
}

fn hist_b64(h: &Histogram<u64>) -> String {
    use base64::Engine;
    let mut v = Vec::new();
    let _ = hdrhistogram::serialization::V2Serializer::new().serialize(h, &mut v);
    base64::engine::general_purpose::STANDARD.encode(v)
}

fn hist_from_b64(s: &str) -> Histogram<u64> {
    use base64::Engine;
    let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(s) else { return new_hist() };
    hdrhistogram::serialization::Deserializer::new()
        .deserialize(&mut std::io::Cursor::new(bytes))
        .unwrap_or_else(|_| new_hist())
}

async fn wait_until(deadline: Instant, mut f: impl FnMut() -> bool) -> bool {
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn expected_of(per_channel: &[u64], subs: &[u64]) -> u64 {
    per_channel.iter().zip(subs).map(|(p, s)| p * s).sum()
}

impl Leader {
    async fn publish_step(&mut self, step: usize, kind: &str, mode: PubMode) -> (DoneStep, u64, Instant) {
        let cx = self.cx.clone();
        let t0 = Instant::now() + Duration::from_millis(5);
        let mut hs = vec![];
        for p in self.pubs.drain(..) {
            hs.push(tokio::spawn(p.run(cx.clone(), step, mode, t0)));
        }
        let mut per_channel = vec![0u64; cx.a.channels];
        let mut errors = 0;
        let mut last = t0;
        let mut rtt = new_hist();
        for h in hs {
            let (p, r) = h.await.unwrap();
            self.pubs.push(p);
            for (c, n) in r.per_channel {
                per_channel[c] += n;
            }
            errors += r.errors;
            for k in r.error_kinds {
                cx.sh.error(k);
            }
            last = last.max(r.last_done);
            let _ = rtt.add(&r.rtt);
        }
        self.pubs.sort_by_key(|p| p.channels.first().copied());
        let (target_rate, dur) = match mode {
            PubMode::Rate(r, d) => (r, d),
            PubMode::Closed(d) => (0.0, d),
            PubMode::Count(n) => (0.0, (n * cx.a.channels as u64) as f64 * 0.0),
        };
        let elapsed = (last - t0).as_secs_f64();
        let published = per_channel.iter().sum();
        let ds = DoneStep {
            kind: kind.to_string(),
            target_rate,
            duration_s: dur,
            publish_elapsed_s: elapsed,
            published,
            publish_errors: errors,
            per_channel,
        };
        let expected = expected_of(&ds.per_channel, &self.subs_per_channel);
        self.report.lock().unwrap().steps.push(StepReport {
            step,
            kind: kind.into(),
            publish_rtt_ms: Lat::from_us(&rtt),
            ..Default::default()
        });
        (ds, expected, t0)
    }

    /// One measured publish step: publish, drain, fill the step report.
    async fn step(&mut self, step: usize, kind: &str, mode: PubMode) -> StepReport {
        let cx = self.cx.clone();
        let before = proc::sample(cx.a.broker_pid);
        let (self_cpu0, wall0) = (proc::self_cpu_secs(), Instant::now());
        let (ds, expected, _t0) = self.publish_step(step, kind, mode).await;
        let drain_start = Instant::now();
        let sc = &cx.sh.steps[step];
        wait_until(drain_start + Duration::from_secs_f64(cx.a.drain_secs), || sc.received.load(Relaxed) >= expected).await;
        let drain_s = drain_start.elapsed().as_secs_f64();
        let after = proc::sample(cx.a.broker_pid);
        let self_cpu = proc::self_cpu_secs() - self_cpu0;
        let wall = wall0.elapsed().as_secs_f64().max(1e-9);
        let mut r = self.report.lock().unwrap().steps.pop().unwrap();
        fill_step(&mut r, &ds, expected, sc, cx.a.max_p99_ms);
        r.drain_s = drain_s;
        r.loadgen_cpu_secs = Some(self_cpu);
        r.loadgen_core_share = Some(self_cpu / wall);
        r.broker_before = before;
        r.broker_after = after;
        if let (Some(b), Some(a)) = (before, after) {
            let cpu = a.cpu_secs - b.cpu_secs;
            r.broker_cpu_secs = Some(cpu);
            if r.received > 0 {
                r.cpu_us_per_delivery = Some(cpu * 1e6 / r.received as f64);
            }
        }
        self.done.steps.push(ds);
        self.report.lock().unwrap().steps.push(r.clone());
        eprintln!("[{}] {}", cx.a.id, step_line(&r));
        r
    }
}

fn fill_step(r: &mut StepReport, ds: &DoneStep, expected: u64, sc: &StepCounters, max_p99: f64) {
    let h = sc.hist.lock().unwrap().clone();
    r.kind = ds.kind.clone();
    r.target_rate = ds.target_rate;
    r.duration_s = ds.duration_s;
    r.publish_elapsed_s = ds.publish_elapsed_s;
    r.published = ds.published;
    r.publish_errors = ds.publish_errors;
    let denom = ds.publish_elapsed_s.max(ds.duration_s).max(1e-9);
    r.achieved_rate = ds.published as f64 / denom;
    r.fell_behind = ds.target_rate > 0.0 && r.achieved_rate < 0.95 * ds.target_rate;
    r.expected = expected;
    r.received = sc.received.load(Relaxed);
    r.lost = expected.saturating_sub(r.received);
    r.duplicates = sc.dups.load(Relaxed);
    r.out_of_order = sc.ooo.load(Relaxed);
    r.deliveries_per_s = r.received as f64 / denom;
    r.latency_ms = Lat::from_us(&h);
    r.hist = hist_b64(&h);
    recompute_pass(r, max_p99);
}

fn recompute_pass(r: &mut StepReport, max_p99: f64) {
    r.pass = r.lost == 0
        && r.publish_errors == 0
        && r.duplicates == 0
        && r.out_of_order == 0
        && !r.fell_behind
        && (r.expected == 0 || r.latency_ms.p99 <= max_p99);
}

fn step_line(r: &StepReport) -> String {
    format!(
        "step {} [{}] target {:.0}/s achieved {:.0}/s published {} (errors {}) expected {} received {} lost {} dup {} ooo {} | {:.0} deliveries/s | latency ms p50 {:.2} p90 {:.2} p99 {:.2} p99.9 {:.2} max {:.2} | publish rtt p99 {:.2} ms | broker cpu {} | loadgen {} | {}",
        r.step,
        r.kind,
        r.target_rate,
        r.achieved_rate,
        r.published,
        r.publish_errors,
        r.expected,
        r.received,
        r.lost,
        r.duplicates,
        r.out_of_order,
        r.deliveries_per_s,
        r.latency_ms.p50,
        r.latency_ms.p90,
        r.latency_ms.p99,
        r.latency_ms.p999,
        r.latency_ms.max,
        r.publish_rtt_ms.p99,
        r.broker_cpu_secs.map_or("-".into(), |c| format!("{c:.2}s ({:.2} µs/delivery)", r.cpu_us_per_delivery.unwrap_or(0.0))),
        r.loadgen_core_share.map_or("-".into(), |c| format!("{:.0}% of a core", c * 100.0)),
        if r.pass { "PASS" } else { "FAIL" }
    )
}

fn write_atomic(path: &Path, data: &[u8]) {
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, data).expect("write coordination file");
    std::fs::rename(&tmp, path).expect("rename coordination file");
}

async fn wait_file(path: &Path, deadline: Instant) -> Option<String> {
    loop {
        if let Ok(s) = std::fs::read_to_string(path) {
            return Some(s);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn connect_all(cx: &Arc<Ctx>, report: &Arc<Mutex<Report>>, ctrl_rx: &watch::Receiver<u8>) -> f64 {
    let n = cx.a.subscribers;
    let sem = Arc::new(Semaphore::new(cx.a.connect_concurrency.max(1)));
    let resume_sem = (cx.resume && cx.a.resume_concurrency > 0).then(|| Arc::new(Semaphore::new(cx.a.resume_concurrency)));
    let reader = match reader::Reader::start(cx.clone(), ctrl_rx.clone()) {
        Ok(reader) => Arc::new(reader),
        Err(err) => {
            cx.sh.error(format!("reader thread: {err}"));
            return 0.0;
        }
    };
    let t = Instant::now();
    for i in 0..n {
        tokio::spawn(subscriber(i, cx.clone(), reader.clone(), sem.clone(), resume_sem.clone(), ctrl_rx.clone()));
        if i % 64 == 63 {
            tokio::task::yield_now().await;
        }
    }
    let deadline = t + Duration::from_secs_f64(cx.a.connect_timeout + n as f64 / 200.0 + 5.0);
    let sh = &cx.sh;
    wait_until(deadline, || sh.ready.load(Relaxed) + sh.failed.load(Relaxed) >= n).await;
    let secs = t.elapsed().as_secs_f64();
    let ok = sh.ready.load(Relaxed);
    let mut r = report.lock().unwrap();
    r.connect = ConnectReport {
        attempted: n,
        ok,
        failed: n - ok,
        secs,
        rate_per_s: if secs > 0.0 { ok as f64 / secs } else { 0.0 },
        all_processes_ok: ok,
        all_processes_secs: secs,
    };
    eprintln!(
        "[{}] connected {ok}/{n} subscribers in {secs:.2}s ({:.0}/s)",
        cx.a.id, r.connect.rate_per_s
    );
    secs
}

async fn run_leader(cx: Arc<Ctx>, report: Arc<Mutex<Report>>, ctrl: watch::Sender<u8>) {
    let a = &cx.a;
    let t_start = Instant::now();
    let hard = t_start + Duration::from_secs_f64(a.max_secs);
    let start = proc::sample(a.broker_pid);
    if a.broker_pid.is_some() && start.is_none() {
        cx.sh.error("broker pid not readable in /proc");
    }
    if let Some(d) = &a.coord_dir {
        std::fs::create_dir_all(d).expect("create coord dir");
        write_atomic(&d.join("start.json"), cx.sh.token.as_bytes());
    }
    connect_all(&cx, &report, &ctrl.subscribe()).await;
    if let (Some(d), true) = (&a.coord_dir, a.workers > 0) {
        let mut total_ok = cx.sh.ready.load(Relaxed);
        for w in 1..=a.workers {
            match wait_file(&d.join(format!("ready.{w}.json")), hard).await {
                Some(s) => {
                    let c: ConnectReport = serde_json::from_str(&s).unwrap_or_default();
                    total_ok += c.ok;
                }
                None => cx.sh.error(format!("worker {w} never became ready")),
            }
        }
        let mut r = report.lock().unwrap();
        r.connect.all_processes_ok = total_ok;
        r.connect.all_processes_secs = t_start.elapsed().as_secs_f64();
        eprintln!(
            "[0] all processes: {total_ok} subscribers ready after {:.2}s ({:.0}/s)",
            r.connect.all_processes_secs,
            total_ok as f64 / r.connect.all_processes_secs
        );
    }
    tokio::time::sleep(Duration::from_secs_f64(a.settle_secs)).await;
    let after_connect = proc::sample(a.broker_pid);
    if let (Some(s), Some(ac)) = (start, after_connect) {
        let mut r = report.lock().unwrap();
        let conns = r.connect.all_processes_ok.max(1);
        let br = BrokerReport {
            pid: a.broker_pid.unwrap(),
            start: s,
            after_connect: ac,
            connect_cpu_secs: ac.cpu_secs - s.cpu_secs,
            rss_per_conn_kib: (ac.rss_kib as f64 - s.rss_kib as f64) / conns as f64,
        };
        eprintln!(
            "[0] broker RSS {} KiB -> {} KiB after connect ({:.2} KiB/connection), connect CPU {:.2}s",
            s.rss_kib, ac.rss_kib, br.rss_per_conn_kib, br.connect_cpu_secs
        );
        r.broker = Some(br);
    }

    let k = a.publishers.max(1);
    let mut pubs = vec![];
    for p in 0..k {
        let channels: Vec<usize> = (0..a.channels).filter(|c| c % k == p).collect();
        pubs.push(Publisher {
            conn: PubConn::new(cx.pubt.clone(), cx.src(p), a.content_type.clone(), &a.pub_header),
            paths: channels.iter().map(|&c| cx.pubt.path(&cx.channel(c))).collect(),
            forms: match &a.pub_form {
                Some(t) => channels
                    .iter()
                    .map(|&c| {
                        let t = t.replace("{channel}", &cx.channel(c));
                        let (before, after) = t.split_once("{payload}").unwrap_or((&t, ""));
                        (before.to_owned(), after.to_owned())
                    })
                    .collect(),
                None => Vec::new(),
            },
            seqs: vec![0; channels.len()],
            unacknowledged: vec![None; channels.len()],
            channels,
            rr: 0,
            phase: p as f64 / k as f64,
        });
    }
    let mut l = Leader { cx: cx.clone(), pubs, report: report.clone(), done: DoneFile::default(), subs_per_channel: cx.subs_per_channel() };

    if let Some(behind) = a.resume_behind {
        resume_flow(&mut l, &ctrl, behind).await;
    } else if let Some(r0) = a.ramp_start {
        let mut best: Option<(usize, f64, f64)> = None;
        for s in 0..a.ramp_steps.min(MAX_STEPS) {
            if Instant::now() + Duration::from_secs_f64(a.duration + 1.0) > hard {
                cx.sh.error("ramp stopped: --max-secs budget");
                break;
            }
            let rate = r0 * a.ramp_factor.powi(s as i32);
            let r = l.step(s, "ramp", PubMode::Rate(rate, a.duration)).await;
            if !r.pass {
                break;
            }
            best = Some((s, rate, r.deliveries_per_s));
        }
        let mut rep = report.lock().unwrap();
        if let Some((s, rate, d)) = best {
            rep.best_passing_step = Some(s);
            rep.best_passing_rate = Some(rate);
            rep.best_passing_deliveries_per_s = Some(d);
            eprintln!("[0] ramp: best passing step {s} at {rate:.0} events/s = {d:.0} deliveries/s");
        } else {
            eprintln!("[0] ramp: no step passed");
        }
    } else if a.duration > 0.0 {
        let mode = if a.rate > 0.0 { PubMode::Rate(a.rate, a.duration) } else { PubMode::Closed(a.duration) };
        let r = l.step(0, if a.rate > 0.0 { "fixed" } else { "closed-loop" }, mode).await;
        if r.pass {
            let mut rep = report.lock().unwrap();
            rep.best_passing_step = Some(0);
            rep.best_passing_rate = Some(r.achieved_rate);
            rep.best_passing_deliveries_per_s = Some(r.deliveries_per_s);
        }
    }
    if let Some(d) = &a.coord_dir {
        write_atomic(&d.join("done.json"), &serde_json::to_vec(&l.done).unwrap());
    }
    let done = l.done.clone();
    finish_subscribers(&cx, &report, &done);
    let _ = ctrl.send(PH_SHUTDOWN);
}

async fn resume_flow(l: &mut Leader, ctrl: &watch::Sender<u8>, behind: u64) {
    let cx = l.cx.clone();
    let sh = &cx.sh;
    let subs = cx.a.subscribers;
    eprintln!("[0] resume: priming every channel with one event");
    let prime = l.step(0, "resume-prime", PubMode::Count(1)).await;
    let _ = prime;
    let ready = sh.ready.load(Relaxed);
    let _ = ctrl.send(PH_DISCONNECT);
    wait_until(Instant::now() + Duration::from_secs(10), || sh.closed.load(Relaxed) >= ready).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    eprintln!("[0] resume: {} subscribers disconnected, publishing {behind} events per channel", sh.closed.load(Relaxed));
    let before = proc::sample(cx.a.broker_pid);
    let (ds, expected, _) = l.publish_step(1, "resume", PubMode::Count(behind)).await;
    let t = Instant::now();
    let _ = ctrl.send(PH_RECONNECT);
    let sc = &sh.steps[1];
    let wait = Duration::from_secs_f64(cx.a.drain_secs.max(0.0) + cx.a.connect_timeout);
    let all = wait_until(t + wait, || sc.received.load(Relaxed) >= expected).await;
    let caught_up = all.then(|| t.elapsed().as_secs_f64());
    wait_until(t + wait, || sh.reconnected.load(Relaxed) + sh.reconnect_failed.load(Relaxed) >= sh.closed.load(Relaxed)).await;
    let reconnect_secs = t.elapsed().as_secs_f64();
    if all {
        // give duplicates a moment to show up
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let after = proc::sample(cx.a.broker_pid);
    let mut r = l.report.lock().unwrap().steps.pop().unwrap();
    fill_step(&mut r, &ds, expected, sc, f64::INFINITY);
    r.drain_s = t.elapsed().as_secs_f64();
    r.broker_before = before;
    r.broker_after = after;
    let cpu = match (before, after) {
        (Some(b), Some(a)) => Some(a.cpu_secs - b.cpu_secs),
        _ => None,
    };
    r.broker_cpu_secs = cpu;
    r.cpu_us_per_delivery = cpu.filter(|_| r.received > 0).map(|c| c * 1e6 / r.received as f64);
    let rr = ResumeReport {
        behind_per_channel: behind,
        disconnected: sh.closed.load(Relaxed),
        reconnected: sh.reconnected.load(Relaxed),
        reconnect_failed: sh.reconnect_failed.load(Relaxed),
        expected,
        received: r.received,
        lost: r.lost,
        duplicates: r.duplicates,
        all_caught_up_secs: caught_up,
        reconnect_secs,
        broker_cpu_secs: cpu,
    };
    eprintln!(
        "[0] resume: {}/{} reconnected, expected {} received {} lost {} dup {}, all caught up after {}",
        rr.reconnected,
        subs,
        rr.expected,
        rr.received,
        rr.lost,
        rr.duplicates,
        caught_up.map_or("never".into(), |s| format!("{s:.3}s"))
    );
    l.done.steps.push(ds);
    let mut rep = l.report.lock().unwrap();
    rep.steps.push(r);
    rep.resume = Some(rr);
}

/// Per-subscriber loss accounting once all steps are known.
fn finish_subscribers(cx: &Ctx, report: &Arc<Mutex<Report>>, done: &DoneFile) {
    let c = cx.a.channels;
    let mut per_channel = vec![0u64; c];
    for s in &done.steps {
        for (i, n) in s.per_channel.iter().enumerate() {
            per_channel[i] += n;
        }
    }
    let mut with_loss = 0;
    let (mut min, mut max) = (u64::MAX, 0);
    for (i, a) in cx.sh.per_sub.iter().enumerate() {
        let got = a.load(Relaxed);
        min = min.min(got);
        max = max.max(got);
        if got < per_channel[(cx.a.first_subscriber + i) % c] {
            with_loss += 1;
        }
    }
    let mut r = report.lock().unwrap();
    r.subscribers_with_loss = with_loss;
    r.min_received_per_subscriber = if min == u64::MAX { 0 } else { min };
    r.max_received_per_subscriber = max;
}

async fn run_worker(cx: Arc<Ctx>, report: Arc<Mutex<Report>>, ctrl: watch::Sender<u8>) {
    let a = &cx.a;
    let d = a.coord_dir.clone().unwrap();
    let hard = Instant::now() + Duration::from_secs_f64(a.max_secs);
    if wait_file(&d.join("start.json"), hard).await.is_none() {
        cx.sh.error("leader never started");
        return;
    }
    connect_all(&cx, &report, &ctrl.subscribe()).await;
    let c = report.lock().unwrap().connect.clone();
    write_atomic(&d.join(format!("ready.{}.json", a.id)), &serde_json::to_vec(&c).unwrap());
    let Some(s) = wait_file(&d.join("done.json"), hard).await else {
        cx.sh.error("leader never finished");
        return;
    };
    let done: DoneFile = serde_json::from_str(&s).unwrap_or_default();
    let spc = cx.subs_per_channel();
    let exp: Vec<u64> = done.steps.iter().map(|s| expected_of(&s.per_channel, &spc)).collect();
    let sh = &cx.sh;
    wait_until(Instant::now() + Duration::from_secs_f64(a.drain_secs), || {
        exp.iter().enumerate().all(|(i, &e)| sh.steps[i].received.load(Relaxed) >= e)
    })
    .await;
    for (i, ds) in done.steps.iter().enumerate() {
        let mut r = StepReport { step: i, ..Default::default() };
        fill_step(&mut r, ds, exp[i], &sh.steps[i], a.max_p99_ms);
        report.lock().unwrap().steps.push(r);
    }
    finish_subscribers(&cx, &report, &done);
    let _ = ctrl.send(PH_SHUTDOWN);
}

fn finalize(cx: &Ctx, r: &mut Report, t0: Instant) {
    let sh = &cx.sh;
    r.unexpected_disconnects = sh.unexpected_eof.load(Relaxed);
    r.foreign_events = sh.foreign.load(Relaxed);
    r.unparsed_events = sh.unparsed.load(Relaxed);
    r.errors = sh.errors.lock().unwrap().clone();
    r.elapsed_secs = t0.elapsed().as_secs_f64();
    compute_ok(r);
}

fn compute_ok(r: &mut Report) {
    let steps_ok = r.steps.iter().all(|s| s.lost == 0 && s.duplicates == 0 && s.out_of_order == 0 && s.publish_errors == 0);
    r.ok = !r.timed_out
        && r.connect.failed == 0
        && r.unexpected_disconnects == 0
        && r.subscribers_with_loss == 0
        && steps_ok
        && r.resume.as_ref().is_none_or(|x| x.lost == 0 && x.reconnect_failed == 0);
}

fn summary(r: &Report) {
    eprintln!(
        "[{}] {} {} subscribers / {} channels: connect {}/{} in {:.2}s ({:.0}/s){}",
        r.id,
        r.role,
        r.subscribers,
        r.channels,
        r.connect.ok,
        r.connect.attempted,
        r.connect.secs,
        r.connect.rate_per_s,
        r.broker.as_ref().map_or(String::new(), |b| format!(
            ", broker RSS {} -> {} KiB ({:.2} KiB/conn)",
            b.start.rss_kib, b.after_connect.rss_kib, b.rss_per_conn_kib
        ))
    );
    if r.role != "leader" {
        // the leader already printed its steps as they finished
        for s in &r.steps {
            eprintln!("[{}] {}", r.id, step_line(s));
        }
    }
    eprintln!(
        "[{}] subscribers with loss {}, received per subscriber min {} max {}, unexpected disconnects {}, foreign events {}, unparsed {}, errors {:?}{} => {}",
        r.id,
        r.subscribers_with_loss,
        r.min_received_per_subscriber,
        r.max_received_per_subscriber,
        r.unexpected_disconnects,
        r.foreign_events,
        r.unparsed_events,
        r.errors,
        if r.timed_out { " TIMED OUT" } else { "" },
        if r.ok { "OK" } else { "NOT OK" }
    );
}

fn emit(r: &Report, out: &Option<PathBuf>) {
    let json = serde_json::to_string_pretty(r).unwrap();
    match out {
        Some(p) => write_atomic(p, json.as_bytes()),
        None => println!("{json}"),
    }
}

fn merge(files: &[PathBuf], out: &Option<PathBuf>, max_p99: f64) -> i32 {
    let mut reports: Vec<Report> = vec![];
    for f in files {
        let s = std::fs::read_to_string(f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        reports.push(serde_json::from_str(&s).unwrap_or_else(|e| panic!("{}: {e}", f.display())));
    }
    reports.sort_by_key(|r| r.id);
    let mut m = reports[0].clone();
    m.role = "merged".into();
    for r in &reports[1..] {
        m.subscribers += r.subscribers;
        m.connect.attempted += r.connect.attempted;
        m.connect.ok += r.connect.ok;
        m.connect.failed += r.connect.failed;
        m.subscribers_with_loss += r.subscribers_with_loss;
        m.min_received_per_subscriber = m.min_received_per_subscriber.min(r.min_received_per_subscriber);
        m.max_received_per_subscriber = m.max_received_per_subscriber.max(r.max_received_per_subscriber);
        m.unexpected_disconnects += r.unexpected_disconnects;
        m.foreign_events += r.foreign_events;
        m.unparsed_events += r.unparsed_events;
        m.timed_out |= r.timed_out;
        for (k, v) in &r.errors {
            *m.errors.entry(format!("[{}] {k}", r.id)).or_default() += v;
        }
    }
    m.connect.all_processes_ok = m.connect.ok;
    if m.connect.all_processes_secs > 0.0 {
        m.connect.rate_per_s = m.connect.ok as f64 / m.connect.all_processes_secs;
        m.connect.secs = m.connect.all_processes_secs;
    }
    if let Some(b) = &mut m.broker {
        b.rss_per_conn_kib = (b.after_connect.rss_kib as f64 - b.start.rss_kib as f64) / m.connect.ok.max(1) as f64;
    }
    for (i, s) in m.steps.iter_mut().enumerate() {
        let mut h = hist_from_b64(&s.hist);
        for r in &reports[1..] {
            if let Some(o) = r.steps.get(i) {
                s.expected += o.expected;
                s.received += o.received;
                s.lost += o.lost;
                s.duplicates += o.duplicates;
                s.out_of_order += o.out_of_order;
                let _ = h.add(&hist_from_b64(&o.hist));
            }
        }
        let denom = s.publish_elapsed_s.max(s.duration_s).max(1e-9);
        s.deliveries_per_s = s.received as f64 / denom;
        s.latency_ms = Lat::from_us(&h);
        s.hist = hist_b64(&h);
        if let Some(cpu) = s.broker_cpu_secs {
            s.cpu_us_per_delivery = (s.received > 0).then(|| cpu * 1e6 / s.received as f64);
        }
        let p99 = if s.kind.starts_with("resume") { f64::INFINITY } else { max_p99 };
        recompute_pass(s, p99);
    }
    if let Some(res) = &mut m.resume {
        if let Some(s) = m.steps.iter().find(|s| s.kind == "resume") {
            res.received = s.received;
            res.lost = s.lost;
            res.expected = s.expected;
        }
    }
    // best passing step: the last consecutive passing ramp step
    let mut best = None;
    for s in &m.steps {
        if s.kind == "resume-prime" || s.kind == "resume" {
            continue;
        }
        if !s.pass {
            break;
        }
        best = Some((s.step, s.target_rate, s.deliveries_per_s));
    }
    m.best_passing_step = best.map(|b| b.0);
    m.best_passing_rate = best.map(|b| b.1);
    m.best_passing_deliveries_per_s = best.map(|b| b.2);
    compute_ok(&mut m);
    summary(&m);
    emit(&m, out);
    if m.ok { 0 } else { 2 }
}

fn random_token() -> String {
    let mut x = now_us() ^ ((std::process::id() as u64) << 32);
    let mut s = String::from("t");
    for _ in 0..8 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.push(char::from_digit((x % 36) as u32, 36).unwrap());
    }
    s
}

fn main() {
    let mut a = Args::parse();
    if !a.merge.is_empty() {
        std::process::exit(merge(&a.merge, &a.output, a.max_p99_ms));
    }
    if a.smoke {
        a.subscribers = 20;
        a.channels = 2;
        a.rate = 200.0;
        a.duration = 2.0;
        a.drain_secs = a.drain_secs.min(3.0);
        a.max_secs = a.max_secs.min(30.0);
        a.fail_on_loss = true;
    }
    if a.publish_only {
        a.subscribers = 0;
    }
    let fail = |m: String| -> ! {
        eprintln!("sse-loadgen: {m}");
        std::process::exit(1)
    };
    if a.channels == 0 {
        fail("--channels must be at least 1".into());
    }
    if a.channel_prefix.is_empty() || !a.channel_prefix.chars().all(|c| c.is_ascii_alphanumeric()) {
        fail("--channel-prefix must be letters and digits".into());
    }
    if let Some(ip) = a.source_addrs.iter().find(|ip| !ip.is_loopback()) {
        fail(format!("--source-addrs: {ip} is not a loopback address"));
    }
    if a.resume_behind.is_some() && a.coord_dir.is_some() {
        fail("resume mode runs in a single process (no --coord-dir)".into());
    }
    if a.id > 0 && a.coord_dir.is_none() {
        fail("--id > 0 (worker) needs --coord-dir".into());
    }
    if a.ramp_start.is_some_and(|r| r <= 0.0) {
        fail("--ramp-start must be > 0".into());
    }
    let sub = Target::parse(&a.sub_url).unwrap_or_else(|e| fail(e));
    let pubt = Target::parse_with(&a.pub_url, a.pub_form.is_none()).unwrap_or_else(|e| fail(e));
    let nofile = proc::raise_nofile();
    if (a.subscribers + a.publishers + 32) as u64 > nofile && nofile > 0 {
        fail(format!(
            "{} subscribers need more file descriptors than the limit {nofile}: split the run over several processes (--coord-dir)",
            a.subscribers
        ));
    }
    let token = a.run_token.clone().unwrap_or_else(random_token);
    if !token.chars().all(|c| c.is_ascii_alphanumeric()) {
        fail("--run-token must be letters and digits".into());
    }
    let sh = Shared {
        token: token.clone(),
        steps: (0..MAX_STEPS)
            .map(|_| StepCounters { received: AtomicU64::new(0), dups: AtomicU64::new(0), ooo: AtomicU64::new(0), hist: Mutex::new(new_hist()) })
            .collect(),
        ready: AtomicUsize::new(0),
        failed: AtomicUsize::new(0),
        closed: AtomicUsize::new(0),
        reconnected: AtomicUsize::new(0),
        reconnect_failed: AtomicUsize::new(0),
        unexpected_eof: AtomicU64::new(0),
        foreign: AtomicU64::new(0),
        unparsed: AtomicU64::new(0),
        per_sub: (0..a.subscribers).map(|_| AtomicU64::new(0)).collect(),
        errors: Mutex::new(BTreeMap::new()),
    };
    let leader = a.id == 0;
    let report = Arc::new(Mutex::new(Report {
        tool: format!("sse-loadgen {}", env!("CARGO_PKG_VERSION")),
        id: a.id,
        role: if leader { "leader".into() } else { "worker".into() },
        token,
        sub_url: a.sub_url.clone(),
        pub_url: a.pub_url.clone(),
        subscribers: a.subscribers,
        channels: a.channels,
        first_subscriber: a.first_subscriber,
        publishers: a.publishers,
        payload_bytes: a.payload_bytes,
        ..Default::default()
    }));
    let cx = Arc::new(Ctx { resume: a.resume_behind.is_some(), a: a.clone(), sub, pubt: Arc::new(pubt), sh });
    let rt = if a.threads <= 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    } else {
        tokio::runtime::Builder::new_multi_thread().worker_threads(a.threads).enable_all().build()
    }
    .unwrap();
    let t0 = Instant::now();
    let (ctrl, _rx) = watch::channel(PH_RUN);
    let timed_out = rt.block_on(async {
        let fut = {
            let (cx, report) = (cx.clone(), report.clone());
            async move {
                if leader {
                    run_leader(cx, report, ctrl).await
                } else {
                    run_worker(cx, report, ctrl).await
                }
            }
        };
        tokio::time::timeout(Duration::from_secs_f64(a.max_secs), fut).await.is_err()
    });
    let mut r = report.lock().unwrap().clone();
    r.timed_out = timed_out;
    if timed_out {
        cx.sh.error(format!("hard timeout after {}s (--max-secs)", a.max_secs));
    }
    finalize(&cx, &mut r, t0);
    summary(&r);
    emit(&r, &a.output);
    let code = if timed_out {
        3
    } else if a.fail_on_loss && !r.ok {
        2
    } else {
        0
    };
    std::process::exit(code);
}
