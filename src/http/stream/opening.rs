//! Opening an event stream, for every protocol that serves one (`/stream`
//! and the Mercure hub): the one place where a request becomes a
//! subscription of an outbox to channels, and the subscription becomes a
//! `text/event-stream` response.
//!
//! A protocol handler validates its request (and asks the access policy and
//! the application's hook, `crate::http::access`) into a [`StreamPlan`],
//! calls [`open`] (which takes the client IP's stream slot, makes the
//! outbox and its subscriber with the caller's identity, and subscribes to
//! every channel at once), writes its own
//! prelude from the answers (the replay, in its own format), and calls
//! [`Opening::respond`] with its response head. `respond` hands the stream's
//! [`StreamEnd`] to a writer (`super::writer`): the direct writer for
//! plain-TCP HTTP/1 connections unless `stream.writer = "body"`, the body
//! writer for everything else (TLS, HTTP/2); an HTTP/1 stream on the body
//! writer gets its connection's socket to bound its end, an HTTP/2 one does
//! not (the connection carries other streams). A stream the hook allowed is
//! asked about again every `hooks.recheck_every` ([`recheck`]) when that is
//! set: a denial ends it as a revocation does.

use std::{
    sync::{Arc, Weak},
    time::{Duration, Instant, SystemTime},
};

use actix_web::{HttpRequest, HttpResponse, HttpResponseBuilder, http::Version};
use bytes::Bytes;
use log::Level;

use super::{
    cursor::Cursor,
    end::{OnClose, OpenStream, StreamEnd, SubscriptionGuard},
    outbox::Outbox,
    slots::StreamSlot,
    socket::ConnectionSocket,
    writer,
};
use crate::{
    auth::{Action, Rights},
    broker::{
        EventId, ResumeFrom, await_reply,
        identity::Identity,
        message::Subscribed,
        subscriber::{Filter, Sink, Subscriber},
    },
    config::StreamWriter,
    error::ApiError,
    hooks::{Asking, Hooks, Question, Verdict},
    http::AppState,
    names::ChannelName,
};

/// What a stream subscribes to, as its protocol handler worked it out.
pub struct StreamPlan {
    pub channels: Vec<ChannelName>,
    /// Where the client says it stopped, per channel (`None`: live).
    pub resume: Vec<Option<ResumeFrom>>,
    /// Which events the subscriber may receive, when not all of them.
    pub filter: Option<Arc<dyn Filter>>,
    /// When the subscriber's token expires: the stream ends then.
    pub expires_at: Option<SystemTime>,
    /// What the stream says when its token expires or its user is revoked.
    pub notices: Notices,
    /// Run once when the stream is over (or was never opened).
    pub on_close: Option<OnClose>,
    /// Who the subscriber is, when its credential says: it is then listed
    /// in its channels' presence.
    pub identity: Option<Arc<Identity>>,
    /// It wants its channels' `broker.join` / `broker.leave` events
    /// (`?presence=1`).
    pub presence: bool,
    /// The question the application's hook allowed, to ask again every
    /// `hooks.recheck_every` (`None`: the hook did not decide this stream).
    pub recheck: Option<Question>,
}

/// What a stream says when its subscriber's token expires or its user is
/// revoked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notices {
    /// A `broker.expired` or `broker.revoked` notice, then the reconnect
    /// hint (our channels).
    Broker,
    /// Nothing: an expired stream just ends (Mercure, as the reference hub
    /// does), a revoked one with the reconnect hint alone.
    Silent,
}

/// A stream subscribed to its channels, its response not built yet.
pub struct Opening {
    outbox: Arc<Outbox>,
    /// Each channel's answer, in the plan's order.
    pub starts: Vec<Subscribed>,
    guard: SubscriptionGuard,
    slot: StreamSlot,
    expires_at: Option<SystemTime>,
    notices: Notices,
    recheck: Option<Question>,
}

/// Subscribes one outbox to every channel of `plan` (all asked at once,
/// answers collected in order). Refused with 429 when the client IP holds
/// its maximum of streams, and with the broker's answer when a channel
/// refuses (every channel that accepted lets go again).
pub async fn open(
    state: &AppState,
    req: &HttpRequest,
    plan: StreamPlan,
) -> Result<Opening, ApiError> {
    let slot = state.stream_slots.acquire(req)?;
    let stream = &state.settings.stream;
    let outbox = Outbox::new(
        stream.subscriber_buffer,
        stream.subscriber_buffer_bytes,
        plan.channels.len(),
    );
    let mut subscriber = Subscriber::new(Arc::clone(&outbox) as Arc<dyn Sink>);
    if let Some(filter) = plan.filter {
        subscriber = subscriber.with_filter(filter);
    }
    if let Some(identity) = plan.identity {
        subscriber = subscriber.with_identity(identity);
    }
    let mut guard = SubscriptionGuard::new(state.broker.clone(), subscriber.id, plan.on_close);
    let mut pending = Vec::with_capacity(plan.channels.len());
    for (channel, from) in plan.channels.into_iter().zip(plan.resume) {
        pending.push(
            state
                .broker
                .subscribe(&channel, subscriber.clone(), from, plan.presence),
        );
        guard.channels.push(channel);
    }
    drop(subscriber);
    let mut starts = Vec::with_capacity(pending.len());
    for answer in pending {
        starts.push(await_reply(answer).await?);
    }
    Ok(Opening {
        outbox,
        starts,
        guard,
        slot,
        expires_at: plan.expires_at,
        notices: plan.notices,
        recheck: plan.recheck,
    })
}

impl Opening {
    /// Where each channel's live events go on from: the replay's start
    /// position when resuming, otherwise the channel's head.
    pub fn positions(&self) -> Vec<(ChannelName, EventId)> {
        self.guard
            .channels
            .iter()
            .zip(&self.starts)
            .map(|(channel, start)| {
                let from = start.replay.as_ref().map_or(start.head, |r| r.from);
                (channel.clone(), from)
            })
            .collect()
    }

    /// Queues `prelude` (the protocol's retry hint and replay) in front of
    /// every live event, encodes live events with `cursor`, and answers
    /// with `response` (the protocol's status and headers) as the head of
    /// the event stream.
    pub fn respond(
        mut self,
        state: &AppState,
        req: &HttpRequest,
        prelude: Bytes,
        cursor: Cursor,
        response: HttpResponseBuilder,
        resumed: bool,
    ) -> HttpResponse {
        self.outbox.start(prelude, cursor);
        let log_level = if state.settings.log.access_log_streams {
            Level::Info
        } else {
            Level::Debug
        };
        log::log!(
            log_level,
            "stream opened subscriber={} channels={} resume={resumed}",
            self.guard.id,
            self.guard.names()
        );
        state.metrics.open_streams.increment(1);
        if let (Some(hooks), Some(question)) = (&state.hooks, self.recheck.take())
            && !hooks.settings().recheck_every.is_zero()
        {
            actix_web::rt::spawn(recheck(
                Arc::clone(hooks),
                question,
                Arc::downgrade(&self.outbox),
                self.guard.id,
            ));
        }
        self.guard.opened = Some(OpenStream {
            at: Instant::now(),
            log_level,
            metrics: Arc::clone(&state.metrics),
            events: 0,
            reason: "client",
        });
        let end = StreamEnd {
            outbox: self.outbox,
            retry: state.settings.stream.retry,
            guard: self.guard,
            expiry: self
                .expires_at
                .map(|at| Box::pin(tokio::time::sleep(until(at)))),
            notices: self.notices == Notices::Broker,
            _slot: self.slot,
        };
        if takes_over(state.settings.stream.writer, req) {
            writer::direct(end, response)
        } else {
            let socket = match req.version() {
                Version::HTTP_2 | Version::HTTP_3 => None,
                _ => req.conn_data::<ConnectionSocket>().copied(),
            };
            writer::body(end, socket, response)
        }
    }
}

/// Asks the application's hook about an open stream again every
/// `hooks.recheck_every` (the same question, so a cached answer counts
/// while it holds): a denial, or an allow that no longer covers one of its
/// channels, ends it as revoked; a failure leaves it open (an application
/// that is briefly down does not end every stream). Stops with the stream.
async fn recheck(hooks: Arc<Hooks>, question: Question, outbox: Weak<Outbox>, id: u64) {
    let every = hooks.settings().recheck_every;
    let channels: Vec<ChannelName> = match question.asking {
        Asking::Stream => question
            .asked
            .iter()
            .filter_map(|name| ChannelName::parse(name).ok())
            .collect(),
        Asking::Mercure | Asking::Publish | Asking::MercurePublish => Vec::new(),
    };
    loop {
        tokio::time::sleep(every).await;
        if outbox.upgrade().is_none_or(|outbox| outbox.end().is_some()) {
            return;
        }
        let allowed = match hooks.decide(&question).await {
            Verdict::Allow(grant) => channels
                .iter()
                .all(|channel| grant.covers(Action::Subscribe, channel)),
            Verdict::Deny => false,
            Verdict::Failed { .. } => true,
        };
        if !allowed {
            if let Some(outbox) = outbox.upgrade() {
                log::info!("stream revoked subscriber={id} reason=hook-recheck");
                outbox.revoke();
            }
            return;
        }
    }
}

/// Whether the direct writer can have this connection: plain-TCP HTTP/1
/// (the patched actix-http hands over a `TcpStream`), unless the
/// configuration asks for the body writer everywhere.
fn takes_over(writer: StreamWriter, req: &HttpRequest) -> bool {
    writer == StreamWriter::Direct
        && matches!(req.version(), Version::HTTP_10 | Version::HTTP_11)
        && !req.app_config().secure()
        && req.peer_addr().is_some()
}

/// How long until `at`, for a stream's expiry timer.
pub fn until(at: SystemTime) -> Duration {
    at.duration_since(SystemTime::now()).unwrap_or_default()
}
