//! Prometheus metrics: what the broker counts, and `GET /metrics`'s text.
//!
//! Each [`Application`](crate::startup::Application) owns one [`Metrics`]: a
//! private `metrics-exporter-prometheus` recorder (never installed globally,
//! and without its own HTTP listener) plus a handle for every metric,
//! registered once at start. Counting is then an atomic add on a handle: no
//! name lookup, no lock, no allocation. The channel actors count each publish
//! once (`delivered` adds the number of subscribers reached in one step),
//! never once per subscriber.
//!
//! Who writes what: channel actors count published, delivered, replayed,
//! deduplicated and evicted events and the publish-to-enqueue latency; the
//! registry counts pulses and, when `/metrics` is scraped, samples the gauges it owns
//! (channels, subscribers, mailbox depths, opted-in per-channel series); the
//! stream handler counts open streams; the publish handlers count refusals by
//! HTTP status; the broker handle counts the events the cluster bus brings;
//! the durable store sets its gauges (events and bytes on disk) when it
//! opens and after every commit; the stream handlers count the application
//! hook's decisions, and the scrape samples its requests and breaker; the
//! webhook sender counts what it sent, retried, gave up and dropped, and
//! its pending gauge.
//!
//! Label cardinality is bounded: the only labels are the HTTP status of a
//! refused publish, the hook decision's outcome (three values) and, for channels an operator lists in
//! `metrics.channels`, the channel name.

use std::{collections::HashSet, sync::Arc, time::Duration};

use metrics::{Counter, Gauge, Histogram, Key, Label, Metadata, Recorder};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};

use crate::config::MetricsSettings;

/// Prefix of every metric name.
const PREFIX: &str = "sse_broker_";

/// Buckets of the publish-to-enqueue histogram, in seconds: from 50 µs (an
/// idle broker) to 1 s (a broker far behind).
const LATENCY_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0,
];

/// The name of the latency histogram (without prefix).
const PUBLISH_LATENCY: &str = "publish_enqueue_seconds";

/// Every metric the broker exports, as ready-to-use handles.
pub struct Metrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    /// Channels that get their own labelled series (`metrics.channels`).
    named_channels: HashSet<String>,
    /// Event-stream responses currently open (one per client connection).
    pub open_streams: Gauge,
    /// Channel subscriptions (a multi-channel stream counts once per channel);
    /// sampled at scrape time.
    pub subscribers: Gauge,
    /// Live channel actors; sampled at scrape time.
    pub channels: Gauge,
    /// Events accepted and fanned out.
    pub published: Counter,
    /// Events queued for a subscriber (live fan-out), added once per publish.
    pub delivered: Counter,
    /// Events sent from history to resuming subscribers.
    pub replayed: Counter,
    /// Subscribers disconnected because their queue was full.
    pub evicted: Counter,
    /// Publishes answered as repeats of an earlier one with the same
    /// idempotency key: nothing was stored or delivered for them.
    pub deduplicated: Counter,
    /// Pulses received (`POST /pulse`).
    pub pulses: Counter,
    /// From the publish handler's start to the end of the channel's fan-out.
    pub publish_latency: Histogram,
    /// Messages forwarded to channel actors and not yet handled, summed over
    /// all channels; sampled at scrape time.
    pub channel_mailbox_depth: Gauge,
    /// The deepest single channel mailbox; sampled at scrape time.
    pub channel_mailbox_depth_max: Gauge,
    /// How long the registry took to answer the scrape's sample request: its
    /// own mailbox backlog, in seconds.
    pub registry_latency: Gauge,
    /// What the retained events of every channel's history cost together,
    /// in bytes (`history.max_total_bytes` bounds it); sampled at scrape time.
    pub history_bytes: Gauge,
    /// Events that left a history because the memory budget was full;
    /// sampled at scrape time.
    pub history_trimmed: Counter,
    /// Durable history: event rows in the store file (0 in memory mode).
    pub store_events: Gauge,
    /// Durable history: size of the store file in bytes, sampled every second.
    pub store_bytes: Gauge,
    /// Cluster mode: events that reached this node from the bus. Only
    /// channels with subscribers here are routed to a node, so this follows
    /// the share of the traffic the node serves, not the cluster's total.
    pub bus_received: Counter,
    /// The application hook's decisions about streams, by outcome (cached
    /// answers included): allowed, denied, failed (no answer in time, an
    /// error, garbage, or the breaker open).
    pub hook_allowed: Counter,
    pub hook_denied: Counter,
    pub hook_failed: Counter,
    /// Requests sent to the application hook; set at scrape time.
    pub hook_requests: Counter,
    /// 1 while the hook's circuit breaker refuses calls; sampled at scrape
    /// time.
    pub hook_breaker_open: Gauge,
    /// Occupancy webhooks a receiver accepted (2xx), per URL.
    pub webhooks_sent: Counter,
    /// Failed webhook attempts that were retried.
    pub webhooks_retried: Counter,
    /// Webhooks given up (out of attempts or retry age, or a 410).
    pub webhooks_failed: Counter,
    /// Webhooks dropped before any attempt because a bound was reached
    /// (`webhooks.max_pending` per URL, or the intake queue).
    pub webhooks_dropped: Counter,
    /// Webhooks waiting for delivery: queued, being tried or waiting for a
    /// retry (on this node).
    pub webhooks_pending: Gauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("named_channels", &self.named_channels)
            .finish_non_exhaustive()
    }
}

/// Per-channel series for a channel an operator opted in for.
#[derive(Debug, Clone)]
pub struct ChannelSeries {
    pub published: Counter,
    pub delivered: Counter,
    pub evicted: Counter,
    pub subscribers: Gauge,
}

static METADATA: Metadata<'static> =
    Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()));

impl Metrics {
    pub fn new(settings: &MetricsSettings) -> Arc<Self> {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Full(format!("{PREFIX}{PUBLISH_LATENCY}")),
                LATENCY_BUCKETS,
            )
            .expect("the bucket list is a non-empty constant")
            .build_recorder();
        let handle = recorder.handle();
        let describe = |name: &str, help: &'static str| {
            recorder.describe_counter(format!("{PREFIX}{name}").into(), None, help.into());
        };
        describe("open_streams", "Event-stream responses currently open.");
        describe(
            "subscribers",
            "Channel subscriptions (a multi-channel stream counts once per channel).",
        );
        describe("channels", "Live channels.");
        describe("events_published_total", "Events accepted and fanned out.");
        describe(
            "events_delivered_total",
            "Events queued for a live subscriber.",
        );
        describe(
            "events_replayed_total",
            "Events sent from history to resuming subscribers.",
        );
        describe(
            "subscribers_evicted_total",
            "Subscribers disconnected as slow consumers (queue full).",
        );
        describe(
            "publish_errors_total",
            "Publish requests refused, by HTTP status.",
        );
        describe(
            "publish_deduplicated_total",
            "Publishes that repeated an earlier one's idempotency key: answered its id, nothing stored.",
        );
        describe("pulses_total", "Pulses received.");
        describe(
            PUBLISH_LATENCY,
            "Time from the publish handler's start to the end of the channel's fan-out.",
        );
        describe(
            "channel_mailbox_depth",
            "Messages queued for channel actors, summed over channels.",
        );
        describe(
            "channel_mailbox_depth_max",
            "Messages queued for the busiest channel actor.",
        );
        describe(
            "registry_latency_seconds",
            "Time the registry actor took to answer the last scrape.",
        );
        describe(
            "history_retained_bytes",
            "Memory the retained events of every channel's history cost, in bytes.",
        );
        describe(
            "history_budget_trimmed_total",
            "Events that left a history because history.max_total_bytes was reached.",
        );
        describe(
            "history_store_events",
            "Durable history: event rows in the store file.",
        );
        describe(
            "history_store_bytes",
            "Durable history: size of the store file in bytes.",
        );
        describe(
            "bus_events_received_total",
            "Cluster mode: events this node received from the bus (only channels it has subscribers on).",
        );
        describe(
            "hook_decisions_total",
            "The application hook's decisions about streams, by outcome (allow, deny, failed); cached answers included.",
        );
        describe(
            "hook_requests_total",
            "Requests sent to the application hook (decisions minus these: answered from the cache).",
        );
        describe(
            "hook_breaker_open",
            "1 while the application hook's circuit breaker refuses calls.",
        );
        describe(
            "webhooks_sent_total",
            "Occupancy webhooks a receiver accepted (2xx), counted per URL.",
        );
        describe(
            "webhooks_retried_total",
            "Failed webhook attempts that were retried.",
        );
        describe(
            "webhooks_failed_total",
            "Webhooks given up: out of attempts or retry age, or answered 410.",
        );
        describe(
            "webhooks_dropped_total",
            "Webhooks dropped before any attempt: webhooks.max_pending or the intake queue was full.",
        );
        describe(
            "webhooks_pending",
            "Webhooks waiting for delivery on this node (queued, being tried, waiting for a retry).",
        );
        let counter = |name: &str| recorder.register_counter(&key(name, vec![]), &METADATA);
        let decisions = |outcome: &'static str| {
            recorder.register_counter(
                &key("hook_decisions_total", vec![Label::new("outcome", outcome)]),
                &METADATA,
            )
        };
        let gauge = |name: &str| recorder.register_gauge(&key(name, vec![]), &METADATA);
        let metrics = Self {
            named_channels: settings.channels.iter().cloned().collect(),
            open_streams: gauge("open_streams"),
            subscribers: gauge("subscribers"),
            channels: gauge("channels"),
            published: counter("events_published_total"),
            delivered: counter("events_delivered_total"),
            replayed: counter("events_replayed_total"),
            evicted: counter("subscribers_evicted_total"),
            deduplicated: counter("publish_deduplicated_total"),
            pulses: counter("pulses_total"),
            publish_latency: recorder.register_histogram(&key(PUBLISH_LATENCY, vec![]), &METADATA),
            channel_mailbox_depth: gauge("channel_mailbox_depth"),
            channel_mailbox_depth_max: gauge("channel_mailbox_depth_max"),
            registry_latency: gauge("registry_latency_seconds"),
            history_bytes: gauge("history_retained_bytes"),
            history_trimmed: counter("history_budget_trimmed_total"),
            store_events: gauge("history_store_events"),
            store_bytes: gauge("history_store_bytes"),
            bus_received: counter("bus_events_received_total"),
            hook_allowed: decisions("allow"),
            hook_denied: decisions("deny"),
            hook_failed: decisions("failed"),
            hook_requests: counter("hook_requests_total"),
            hook_breaker_open: gauge("hook_breaker_open"),
            webhooks_sent: counter("webhooks_sent_total"),
            webhooks_retried: counter("webhooks_retried_total"),
            webhooks_failed: counter("webhooks_failed_total"),
            webhooks_dropped: counter("webhooks_dropped_total"),
            webhooks_pending: gauge("webhooks_pending"),
            recorder,
            handle,
        };
        Arc::new(metrics)
    }

    /// A set of handles for code that runs without an application (unit
    /// tests of the actors): counts go to a recorder nobody renders.
    pub fn detached() -> Arc<Self> {
        Self::new(&MetricsSettings::default())
    }

    /// Counts one publish request refused with `status`.
    pub fn publish_refused(&self, status: u16) {
        // A lookup in the recorder's map, on the error path only; statuses
        // are a small fixed set, so the label stays bounded.
        let labels = vec![Label::new("status", status.to_string())];
        self.recorder
            .register_counter(&key("publish_errors_total", labels), &METADATA)
            .increment(1);
    }

    /// The labelled series of `channel` when an operator opted in for it.
    pub fn channel_series(&self, channel: &str) -> Option<ChannelSeries> {
        if !self.named_channels.contains(channel) {
            return None;
        }
        let labels = || vec![Label::new("channel", channel.to_owned())];
        let counter = |name: &str| {
            self.recorder
                .register_counter(&key(name, labels()), &METADATA)
        };
        Some(ChannelSeries {
            published: counter("channel_events_published_total"),
            delivered: counter("channel_events_delivered_total"),
            evicted: counter("channel_subscribers_evicted_total"),
            subscribers: self
                .recorder
                .register_gauge(&key("channel_subscribers", labels()), &METADATA),
        })
    }

    /// Records how long a publish took from the handler to the fan-out.
    pub fn record_publish_latency(&self, elapsed: Duration) {
        self.publish_latency.record(elapsed.as_secs_f64());
    }

    /// Drains buffered histogram samples; run periodically so memory stays
    /// bounded when nobody scrapes.
    pub fn upkeep(&self) {
        self.handle.run_upkeep();
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        self.handle.render()
    }
}

fn key(name: &str, labels: Vec<Label>) -> Key {
    Key::from_parts(format!("{PREFIX}{name}"), labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A counter shows up in the text with its value and help line.
    #[test]
    fn counters_render_as_prometheus_text() {
        let metrics = Metrics::detached();
        metrics.published.increment(3);
        metrics.publish_refused(400);
        metrics.publish_refused(400);
        let text = metrics.render();
        assert!(
            text.contains("sse_broker_events_published_total 3"),
            "{text}"
        );
        assert!(
            text.contains("sse_broker_publish_errors_total{status=\"400\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("# HELP sse_broker_events_published_total"),
            "{text}"
        );
    }

    /// The latency is a histogram with buckets, not a summary.
    #[test]
    fn latency_is_a_histogram() {
        let metrics = Metrics::detached();
        metrics.record_publish_latency(Duration::from_micros(300));
        let text = metrics.render();
        assert!(
            text.contains("sse_broker_publish_enqueue_seconds_bucket{le=\"0.0005\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("sse_broker_publish_enqueue_seconds_count 1"),
            "{text}"
        );
    }

    /// Only channels listed by the operator get labelled series.
    #[test]
    fn per_channel_series_are_opt_in() {
        let metrics = Metrics::new(&MetricsSettings {
            enabled: true,
            channels: vec!["orders".into()],
        });
        assert!(metrics.channel_series("orders").is_some());
        assert!(metrics.channel_series("other").is_none());
    }
}
