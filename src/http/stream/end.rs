//! How an open stream ends, whichever writer serves it: what its client
//! hears last, how long those last bytes may take, and what the stream
//! gives back.
//!
//! When the broker ends a stream (shutdown drain, eviction as a slow
//! consumer, token expiry) the last bytes are a reconnect hint: a `retry:`
//! field, spread with a per-stream jitter so that thousands of clients do
//! not reconnect in the same millisecond, and a `: reconnect reason=…`
//! comment ([`reconnect_hint`]); an expired token on our channels says
//! `broker.expired` first. Those last bytes get [`FINAL_FLUSH`] to reach
//! the client before its connection is reset (each writer bounds its own
//! drain). Then the stream gives back what it holds: dropping the
//! [`SubscriptionGuard`] unsubscribes it from its channels, runs the
//! protocol's close hook, leaves the open-streams gauge and logs the close
//! line (with the stream's duration, events and reason); dropping its
//! [`StreamSlot`] frees its client IP's place.
//!
//! `super::opening` builds a [`StreamEnd`] when it answers; the writer that
//! serves the stream owns it until the stream is over.

use std::{
    pin::Pin,
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::{Bytes, BytesMut};
use log::Level;

use super::{
    outbox::{End, Outbox},
    slots::StreamSlot,
};
use crate::{broker::Broker, metrics::Metrics, names::ChannelName, sse};

/// How long the last bytes of a stream the broker ends (reconnect hint,
/// last chunk, and what the kernel still holds for the client) may take to
/// reach the client before the connection is reset: an evicted client is,
/// by definition, not reading, and one that trickles would otherwise keep
/// its socket, and up to the kernel's send buffer, for as long as it pleases.
pub const FINAL_FLUSH: Duration = Duration::from_secs(5);

/// How often the end of a stream checks whether the kernel has sent
/// everything to the client.
pub const SENT_POLL: Duration = Duration::from_millis(20);

/// Run once when a stream is over, or when it could not be opened.
pub type OnClose = Box<dyn FnOnce() + Send>;

/// Everything a writer needs once the head is decided: the outbox, how the
/// stream ends, and what the stream holds until then.
pub struct StreamEnd {
    pub outbox: Arc<Outbox>,
    /// The configured `stream.retry`, the base of the final hint.
    pub retry: Duration,
    pub guard: SubscriptionGuard,
    /// Fires when the subscriber's token expires: the stream then ends.
    pub expiry: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Say `broker.expired` before the hint when the token expires.
    pub expiry_notice: bool,
    /// The client IP's place among its open streams.
    pub _slot: StreamSlot,
}

impl StreamEnd {
    /// The last bytes of a stream that ended for `end`.
    fn tail(&self, end: End) -> Option<Bytes> {
        let hint = reconnect_hint(self.retry, self.guard.id, end.as_str());
        match end {
            End::Client => None,
            End::Expired if !self.expiry_notice => None,
            End::Expired => {
                let mut tail = BytesMut::from(
                    &sse::encode_notice(
                        "broker.expired",
                        r#"{"reason":"the subscriber token expired"}"#,
                    )[..],
                );
                tail.extend_from_slice(&hint);
                Some(tail.freeze())
            }
            End::Evicted | End::Released => Some(hint),
        }
    }

    /// Ends the stream for `end`: queues its tail, and notes the reason and
    /// the events for the close line.
    pub fn finish(&mut self, end: End) -> End {
        let tail = self.tail(end);
        let end = self.outbox.finish(end, tail);
        if let Some(opened) = &mut self.guard.opened {
            opened.reason = end.as_str();
            opened.events = self.outbox.events();
        }
        end
    }
}

/// The last bytes of a stream the broker ends: a `retry:` hint of `retry`
/// plus a jitter below `retry` derived from the subscriber id (spreading a
/// reconnect storm over one more `retry`), and a comment naming the reason.
/// No blank line: the field takes effect as it is read, and an event block
/// without data would be a phantom event to some clients (`sse::HEARTBEAT`).
pub fn reconnect_hint(retry: Duration, subscriber_id: u64, reason: &str) -> Bytes {
    let base = retry.as_millis() as u64;
    // Fibonacci hashing spreads consecutive ids over the whole range.
    let jitter = match base {
        0 => 0,
        _ => subscriber_id.wrapping_mul(0x9E37_79B9_7F4A_7C15) % base,
    };
    Bytes::from(format!(
        "retry: {}\n: reconnect reason={reason}\n",
        base + jitter
    ))
}

/// Unsubscribes the stream from its channels when it is dropped, runs the
/// protocol's close hook, and, once the response was built, logs and
/// counts the stream's end.
pub struct SubscriptionGuard {
    broker: Broker,
    pub channels: Vec<ChannelName>,
    pub id: u64,
    /// Set once the stream is handed to the client (not on an error answer).
    pub opened: Option<OpenStream>,
    on_close: Option<OnClose>,
}

impl SubscriptionGuard {
    pub fn new(broker: Broker, id: u64, on_close: Option<OnClose>) -> Self {
        Self {
            broker,
            channels: Vec::new(),
            id,
            opened: None,
            on_close,
        }
    }

    /// The channels' names, for log lines.
    pub fn names(&self) -> String {
        self.channels
            .iter()
            .map(ChannelName::as_str)
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// What the close log line and the open-streams gauge need.
pub struct OpenStream {
    pub at: Instant,
    pub log_level: Level,
    pub metrics: Arc<Metrics>,
    /// Live events written (replayed ones are in the prelude).
    pub events: u64,
    /// `client` (went away), `shutdown`, `evicted` or `expired`.
    pub reason: &'static str,
}

impl Drop for SubscriptionGuard {
    fn drop(&mut self) {
        if let Some(opened) = self.opened.take() {
            opened.metrics.open_streams.decrement(1);
            log::log!(
                opened.log_level,
                "stream closed subscriber={} channels={} duration_ms={} events={} reason={}",
                self.id,
                self.names(),
                opened.at.elapsed().as_millis(),
                opened.events,
                opened.reason
            );
        }
        for channel in self.channels.drain(..) {
            self.broker.unsubscribe(&channel, self.id);
        }
        if let Some(on_close) = self.on_close.take() {
            on_close();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hint's retry lies in [retry, 2 × retry) and differs between streams.
    #[test]
    fn reconnect_hint_is_jittered_within_one_retry() {
        let retry = Duration::from_secs(2);
        let values: Vec<u64> = (1..=50)
            .map(|id| {
                let text = String::from_utf8(reconnect_hint(retry, id, "shutdown").to_vec())
                    .expect("the hint is text");
                assert!(text.ends_with("\n: reconnect reason=shutdown\n"), "{text}");
                text.strip_prefix("retry: ")
                    .and_then(|rest| rest.split('\n').next())
                    .and_then(|n| n.parse().ok())
                    .expect("a retry field first")
            })
            .collect();
        assert!(
            values.iter().all(|v| (2000..4000).contains(v)),
            "{values:?}"
        );
        let distinct: std::collections::HashSet<_> = values.iter().collect();
        assert!(distinct.len() > 40, "{values:?}");
    }
}
