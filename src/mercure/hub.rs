//! `HubActor`: the Mercure hub. It owns the Mercure history and the Mercure
//! subscribers, gives updates their ids and fans them out, each subscriber
//! filtering by its topic selectors and its right to private updates.
//!
//! Who talks to it: the Mercure handlers ([`routes`](super::routes)) publish,
//! subscribe and list subscriptions; channel actors (the registry in
//! cluster mode) offer it every event published on one of our channels
//! ([`ChannelPublished`]), which becomes a public update whose topic is the
//! channel name; and it forwards public updates whose topic is a valid
//! channel name to the registry as a [`Publish`] with `mirror` unset, which
//! is never offered back.
//!
//! Like a channel actor, it never waits for a subscriber: each queue gets a
//! `try_send`, and a subscriber whose queue is full (`stream.subscriber_buffer`)
//! is evicted; its client reconnects with `Last-Event-ID` and replays from
//! the history (`history.max_events`, `history.max_age`). An update is
//! queued at most once per subscriber, however many of its topics match.
//!
//! ## Where updates are ordered: the hub's log
//! Standalone with history in memory, the hub orders updates itself: an
//! accepted update is dispatched at once. In cluster mode and with durable
//! history, every accepted update is published on the internal channel
//! `~mercure` (which no HTTP client can name), and every node's hub reads
//! that channel as an ordinary subscriber and dispatches what it reads, in
//! the log's order. So updates published on any node reach Mercure
//! subscribers on every node, ids and history are the same everywhere (a
//! client resumes on any node), the history outlives restarts, and the
//! publisher is answered only once the log holds the update (503 when
//! Redis or the disk cannot take it). The channel actor's own machinery
//! (Redis Streams, holes read back, durable commits, eviction and replay)
//! does the work; the hub keeps its window of the log for `Last-Event-ID`.
//!
//! Resuming follows draft-08: `earliest` replays everything retained; a
//! known id replays what came after it and is echoed in the `Last-Event-ID`
//! response header; an unknown id (never seen, or already trimmed) replays
//! nothing and the header says `earliest`, so the client can tell that it
//! may have missed updates. The header never names an update the client did
//! not send itself, so it cannot disclose the id of a private update.

use std::{
    collections::VecDeque,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use actix::prelude::*;
use log::{debug, info, warn};
use serde::Serialize;
use serde_json::Value;
use tokio::sync::{
    mpsc::{self, error::TrySendError},
    oneshot,
};

use super::{
    topic::{MatchType, TopicSelector},
    update::{EARLIEST, Update, UpdateDraft, new_id},
};
use crate::{
    broker::{
        BrokerError, ChannelName, Delivery, Event, EventId, EventType, RegistryActor, Reply,
        ResumeFrom, Subscriber, await_reply,
        channel::{Publish, Subscribe},
        registry::ChannelPublished,
    },
    config::Settings,
    metrics::Metrics,
    sse,
};

/// Path prefix of subscription topics and of the subscriptions API.
pub const SUBSCRIPTIONS_PATH: &str = "/.well-known/mercure/subscriptions";
/// The JSON-LD context of subscription documents.
pub const JSONLD_CONTEXT: &str = "https://mercure.rocks/";

/// The internal channel that carries the hub's log (see the module docs).
pub fn log_channel() -> ChannelName {
    ChannelName::internal("mercure")
}

/// Queue of the hub's own subscription to its log. The hub is one
/// subscriber for every update, so it takes bursts that a stream's
/// `stream.subscriber_buffer` would not; slots are allocated as they fill.
const LOG_QUEUE: usize = 65_536;

/// Pause before the hub joins its log again (after an error, or after the
/// channel closed its queue).
const LOG_RETRY: Duration = Duration::from_secs(1);

/// Where the hub's updates are ordered and kept.
enum HubLog {
    /// In this process: an accepted update is dispatched at once.
    Local,
    /// The internal channel [`log_channel`]: accepted updates are published
    /// there and dispatched when read back. `last` is the newest event
    /// read, where the hub resumes after losing its subscription.
    Channel { last: Option<EventId> },
}

/// What travels down a Mercure subscriber's queue.
#[derive(Debug, Clone)]
pub enum HubDelivery {
    Update(Arc<Update>),
    /// Time for a heartbeat comment.
    Heartbeat,
}

/// One subscription: a selector of a subscribe request, how the request
/// named it, and the payload the subscriber's token attaches to it.
#[derive(Debug)]
pub struct Subscription {
    pub selector: TopicSelector,
    /// `None` for a `topic` parameter; the matcher type of a `match*`
    /// parameter. It decides the shape of the subscription's id and JSON.
    pub match_type: Option<MatchType>,
    /// Shown in subscription events and the API.
    pub payload: Option<Value>,
}

/// One Mercure subscriber, as the hub holds it.
#[derive(Debug)]
pub struct HubSubscriber {
    /// Internal key (unsubscribe).
    pub key: u64,
    /// The subscriber's IRI (`urn:uuid:…`), shown in subscription events.
    pub id: String,
    /// One per `topic` or `match*` parameter of its request.
    pub subscriptions: Vec<Subscription>,
    /// Its token's subscribe selectors: which private updates it may read.
    pub private: Option<Vec<TopicSelector>>,
    pub tx: mpsc::Sender<HubDelivery>,
    /// Set when the hub evicted it as a slow consumer.
    pub evicted: Arc<AtomicBool>,
}

impl HubSubscriber {
    /// A subscriber with a fresh key and IRI, and the receiving end of its queue.
    pub fn new(
        subscriptions: Vec<Subscription>,
        private: Option<Vec<TopicSelector>>,
        capacity: usize,
    ) -> (Self, mpsc::Receiver<HubDelivery>) {
        static NEXT_KEY: AtomicU64 = AtomicU64::new(1);
        let (tx, rx) = mpsc::channel(capacity);
        let subscriber = Self {
            key: NEXT_KEY.fetch_add(1, Ordering::Relaxed),
            id: super::update::new_id(),
            subscriptions,
            private,
            tx,
            evicted: Arc::new(AtomicBool::new(false)),
        };
        (subscriber, rx)
    }

    /// Whether it subscribed to one of the update's topics and, for a
    /// private update, its token covers one of them.
    pub fn can_receive(&self, update: &Update) -> bool {
        let subscribed = self
            .subscriptions
            .iter()
            .any(|s| update.topics.iter().any(|topic| s.selector.matches(topic)));
        subscribed
            && (!update.private
                || self
                    .private
                    .as_ref()
                    .is_some_and(|p| super::topic::any_matches(p, &update.topics)))
    }

    fn subscriptions(&self, active: bool) -> Vec<SubscriptionInfo> {
        self.subscriptions
            .iter()
            .map(|subscription| SubscriptionInfo::new(&self.id, subscription, active))
            .collect()
    }
}

/// One subscription (a subscriber and one of its selectors), as
/// subscription events and the subscriptions API show it. A `topic`
/// subscription has the reference hub's shape (`topic`, id
/// `…/subscriptions/{topic}/{subscriber}`); a `match*` subscription has
/// draft-08's (`matchType` and `match`, id
/// `…/subscriptions/{matchType}/{match}/{subscriber}`).
#[derive(Debug, Clone, Serialize)]
pub struct SubscriptionInfo {
    #[serde(rename = "@context", skip_serializing_if = "Option::is_none")]
    pub context: Option<&'static str>,
    pub id: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub subscriber: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    #[serde(rename = "matchType", skip_serializing_if = "Option::is_none")]
    pub match_type: Option<MatchType>,
    #[serde(rename = "match", skip_serializing_if = "Option::is_none")]
    pub matcher: Option<String>,
    pub active: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<Value>,
    #[serde(rename = "lastEventID", skip_serializing_if = "Option::is_none")]
    pub last_event_id: Option<String>,
}

impl SubscriptionInfo {
    fn new(subscriber: &str, subscription: &Subscription, active: bool) -> Self {
        let selector = subscription.selector.as_str();
        let (id, topic, matcher) = match subscription.match_type {
            None => (
                format!(
                    "{SUBSCRIPTIONS_PATH}/{}/{}",
                    query_escape(selector),
                    query_escape(subscriber)
                ),
                Some(selector.to_owned()),
                None,
            ),
            Some(match_type) => (
                format!(
                    "{SUBSCRIPTIONS_PATH}/{}/{}/{}",
                    match_type.as_str(),
                    path_escape(selector),
                    path_escape(subscriber)
                ),
                None,
                Some(selector.to_owned()),
            ),
        };
        Self {
            context: None,
            id,
            kind: "Subscription",
            subscriber: subscriber.to_owned(),
            topic,
            match_type: subscription.match_type,
            matcher,
            active,
            payload: subscription.payload.clone(),
            last_event_id: None,
        }
    }

    /// Whether it is the subscription addressed by subscriptions API path
    /// segments (decoded): `[topic]`, `[topic, subscriber]`,
    /// `[matchType, match]` or `[matchType, match, subscriber]`.
    pub fn is_addressed_by(&self, segments: &[String]) -> bool {
        match (segments, self.match_type) {
            ([], _) => true,
            ([topic], None) => self.topic.as_ref() == Some(topic),
            ([topic, subscriber], None) => {
                self.topic.as_ref() == Some(topic) && self.subscriber == *subscriber
            }
            ([kind, matcher, rest @ ..], Some(match_type)) if rest.len() <= 1 => {
                kind == match_type.as_str()
                    && self.matcher.as_ref() == Some(matcher)
                    && rest.iter().all(|subscriber| self.subscriber == *subscriber)
            }
            _ => false,
        }
    }
}

/// Go's `url.QueryEscape`, which the reference hub uses for subscription
/// ids: everything but `A-Z a-z 0-9 - _ . ~` is `%XX`, a space is `+`.
pub fn query_escape(text: &str) -> String {
    escape(text, "+")
}

/// RFC 6570 simple expansion, as draft-08 asks for subscription ids: like
/// [`query_escape`], but a space is `%20`.
pub fn path_escape(text: &str) -> String {
    escape(text, "%20")
}

fn escape(text: &str, space: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(byte as char)
            }
            b' ' => out.push_str(space),
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

pub struct HubActor {
    log: HubLog,
    history: VecDeque<Arc<Update>>,
    max_events: usize,
    max_age: Duration,
    /// Id of the newest update ever dispatched (`earliest` before the first).
    last_event_id: String,
    subscribers: Vec<HubSubscriber>,
    /// Subscribers that left, whose subscription events are still to publish.
    leaving: Vec<HubSubscriber>,
    /// Set while [`Self::announce_gone`] empties `leaving`.
    announcing: bool,
    /// Whether the history is filled: always with a local log, once the
    /// hub has read the shared log's retained events otherwise.
    joined: bool,
    /// Subscribers resuming with `Last-Event-ID` before the hub `joined`.
    waiting: Vec<SubscribeHub>,
    /// Where public updates on channel-named topics go.
    registry: Addr<RegistryActor>,
    /// Publish subscription events.
    subscription_events: bool,
    /// Set at shutdown: no new subscribers or updates.
    closing: bool,
    tick: Duration,
    metrics: Arc<Metrics>,
}

impl HubActor {
    pub fn new(settings: &Settings, registry: Addr<RegistryActor>, metrics: Arc<Metrics>) -> Self {
        let shared = settings.cluster.enabled() || settings.history.durable();
        Self {
            log: match shared {
                true => HubLog::Channel { last: None },
                false => HubLog::Local,
            },
            history: VecDeque::new(),
            max_events: settings.history.max_events,
            max_age: settings.history.max_age,
            last_event_id: EARLIEST.to_owned(),
            subscribers: Vec::new(),
            leaving: Vec::new(),
            announcing: false,
            joined: !shared,
            waiting: Vec::new(),
            registry,
            subscription_events: settings.mercure.subscriptions,
            closing: false,
            tick: settings.stream.heartbeat,
            metrics,
        }
    }

    /// Keeps `update` in history (trimmed to `max_events`) and sends it to
    /// every subscriber that may receive it; returns how many took it.
    fn dispatch(&mut self, update: Arc<Update>) -> u64 {
        self.remember(&update);
        let (delivered, gone) = self.fan_out(&HubDelivery::Update(update));
        self.announce_gone(gone);
        delivered
    }

    /// Makes `update` the newest in history, trimming to `max_events`.
    fn remember(&mut self, update: &Arc<Update>) {
        self.last_event_id.clone_from(&update.id);
        if self.max_events > 0 {
            if self.history.len() >= self.max_events {
                self.history.pop_front();
            }
            self.history.push_back(Arc::clone(update));
        }
    }

    /// Offers `delivery` to the subscribers it is for, without waiting;
    /// removes (and returns) the ones that are gone or too slow.
    fn fan_out(&mut self, delivery: &HubDelivery) -> (u64, Vec<HubSubscriber>) {
        let mut delivered = 0;
        let mut gone = Vec::new();
        let mut index = 0;
        while index < self.subscribers.len() {
            let sub = &self.subscribers[index];
            if let HubDelivery::Update(update) = delivery
                && !sub.can_receive(update)
            {
                index += 1;
                continue;
            }
            match sub.tx.try_send(delivery.clone()) {
                Ok(()) => {
                    delivered += u64::from(matches!(delivery, HubDelivery::Update(_)));
                    index += 1;
                }
                Err(TrySendError::Closed(_)) => gone.push(self.subscribers.swap_remove(index)),
                Err(TrySendError::Full(_)) => {
                    sub.evicted.store(true, Ordering::Release);
                    self.metrics.evicted.increment(1);
                    info!(
                        "mercure subscriber evicted subscriber={} reason=slow queue={}",
                        sub.id,
                        sub.tx.max_capacity()
                    );
                    gone.push(self.subscribers.swap_remove(index));
                }
            }
        }
        (delivered, gone)
    }

    /// Publishes the subscription events of subscribers that left (and of
    /// any that leave while those go out).
    fn announce_gone(&mut self, gone: Vec<HubSubscriber>) {
        if !self.subscription_events || gone.is_empty() {
            return;
        }
        self.leaving.extend(gone);
        if self.announcing {
            // An outer call is emptying the list (an announcement's fan-out
            // found more subscribers gone): no recursion, however many.
            return;
        }
        self.announcing = true;
        while let Some(sub) = self.leaving.pop() {
            for info in sub.subscriptions(false) {
                self.submit(subscription_update(info), None, Instant::now());
            }
        }
        self.announcing = false;
    }

    /// Accepts an update: dispatched now with a local log, or published on
    /// the shared log and dispatched when read back. `reply` gets the
    /// update's id once it is in the log.
    fn submit(
        &mut self,
        mut draft: UpdateDraft,
        reply: Option<Reply<String>>,
        received_at: Instant,
    ) {
        if let HubLog::Local = self.log {
            let update = Update::accept(draft);
            if let Some(reply) = reply {
                let _ = reply.send(Ok(update.id.clone()));
            }
            let delivered = self.dispatch(update);
            self.metrics.delivered.increment(delivered);
            return;
        }
        let id = draft.id.get_or_insert_with(new_id).clone();
        let data = match serde_json::to_string(&draft) {
            Ok(data) => data,
            Err(err) => {
                if let Some(reply) = reply {
                    let _ = reply.send(Err(BrokerError::StoreUnavailable(err.to_string())));
                }
                return;
            }
        };
        let (stored, answer) = match reply {
            Some(reply) => {
                let (tx, rx) = oneshot::channel();
                (Some(tx), Some((reply, rx)))
            }
            None => (None, None),
        };
        self.registry.do_send(Publish {
            channel: log_channel(),
            event_type: None,
            data,
            reply: stored,
            received_at,
            mirror: false,
        });
        if let Some((reply, rx)) = answer {
            actix::spawn(async move {
                let _ = reply.send(await_reply(rx).await.map(|_| id));
            });
        }
    }

    /// Subscribes to the shared log, resuming after the last event read
    /// (from the oldest retained at first, which fills the history).
    fn join_log(&mut self, ctx: &mut Context<Self>) {
        let HubLog::Channel { last } = &self.log else {
            return;
        };
        if self.closing {
            return;
        }
        let from = match last {
            Some(id) => ResumeFrom::Id(*id),
            None => ResumeFrom::Unknown(EARLIEST.to_owned()),
        };
        let (subscriber, mut rx) = Subscriber::new(LOG_QUEUE);
        let (reply, answer) = oneshot::channel();
        self.registry.do_send(Subscribe {
            channel: log_channel(),
            subscriber,
            from: Some(from),
            reply,
        });
        let joined = async move { await_reply(answer).await }.into_actor(self);
        ctx.spawn(joined.map(move |answer, hub, ctx| match answer {
            Ok(subscribed) => {
                let replay = subscribed.replay.map(|r| r.events).unwrap_or_default();
                debug!("mercure log joined replayed={}", replay.len());
                for event in replay {
                    hub.read_logged(&event);
                }
                // Live events only after the replay: the log's order holds.
                ctx.add_stream(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)));
                hub.joined = true;
                for waiting in std::mem::take(&mut hub.waiting) {
                    hub.subscribe(waiting);
                }
            }
            Err(err) => {
                // Resuming clients get the error (503) and retry, rather
                // than a replay from a history that is not there.
                for waiting in std::mem::take(&mut hub.waiting) {
                    let _ = waiting.reply.send(Err(err.clone()));
                }
                if err != BrokerError::ShuttingDown {
                    warn!("mercure log unavailable, retrying reason={err}");
                    ctx.run_later(LOG_RETRY, |hub, ctx| hub.join_log(ctx));
                }
            }
        }));
    }

    /// One event of the shared log: an update to dispatch.
    fn read_logged(&mut self, event: &Event) {
        if let HubLog::Channel { last } = &mut self.log {
            *last = Some(event.id);
        }
        match serde_json::from_str::<UpdateDraft>(&sse::data_of(&event.frame.full)) {
            Ok(draft) => {
                let delivered = self.dispatch(Update::accept_at(draft, event.published_at));
                self.metrics.delivered.increment(delivered);
            }
            Err(err) => warn!("mercure log event skipped id={} reason={err}", event.id),
        }
    }

    /// What a subscriber resuming from `last_event_id` gets, and the
    /// `Last-Event-ID` response header (see the module docs).
    fn replay(&self, sub: &HubSubscriber, last_event_id: &str) -> (Vec<Arc<Update>>, String) {
        let visible = |updates: &mut dyn Iterator<Item = &Arc<Update>>| {
            updates
                .filter(|u| sub.can_receive(u))
                .cloned()
                .collect::<Vec<_>>()
        };
        if last_event_id == EARLIEST {
            return (visible(&mut self.history.iter()), EARLIEST.to_owned());
        }
        match self.history.iter().position(|u| u.id == last_event_id) {
            Some(at) => (
                visible(&mut self.history.iter().skip(at + 1)),
                last_event_id.to_owned(),
            ),
            None => (Vec::new(), EARLIEST.to_owned()),
        }
    }

    /// Public updates on topics that are channel names go to those channels.
    fn forward_to_channels(&self, draft: &UpdateDraft, received_at: Instant) {
        if draft.private {
            return;
        }
        let mut sent: Vec<&str> = Vec::new();
        for topic in &draft.topics {
            if sent.contains(&topic.as_str()) {
                continue;
            }
            let Ok(channel) = ChannelName::parse(topic) else {
                continue;
            };
            sent.push(topic);
            self.registry.do_send(Publish {
                channel,
                event_type: draft
                    .event_type
                    .as_deref()
                    .and_then(|t| EventType::parse(t).ok()),
                data: draft.data.clone(),
                reply: None,
                received_at,
                mirror: false,
            });
        }
    }

    fn on_tick(&mut self) {
        let (_, gone) = self.fan_out(&HubDelivery::Heartbeat);
        self.announce_gone(gone);
        let now = Instant::now();
        while self
            .history
            .front()
            .is_some_and(|u| now.saturating_duration_since(u.published_at) >= self.max_age)
        {
            self.history.pop_front();
        }
    }
}

/// The private update announcing a subscription's start or end.
fn subscription_update(mut info: SubscriptionInfo) -> UpdateDraft {
    info.context = Some(JSONLD_CONTEXT);
    let data = serde_json::to_string_pretty(&info).unwrap_or_default();
    UpdateDraft {
        topics: vec![info.id],
        data,
        private: true,
        id: None,
        event_type: None,
        retry: None,
    }
}

impl Actor for HubActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(self.tick, |hub, _| hub.on_tick());
        self.join_log(ctx);
        info!(
            "mercure hub started history={} subscriptions={} log={}",
            self.max_events,
            self.subscription_events,
            match self.log {
                HubLog::Local => "local",
                HubLog::Channel { .. } => "shared",
            }
        );
    }
}

impl StreamHandler<Delivery> for HubActor {
    fn handle(&mut self, delivery: Delivery, _: &mut Self::Context) {
        if let Delivery::Event(event) = delivery {
            self.read_logged(&event);
        }
    }

    /// The log's channel closed the hub's queue (it fell behind, or the
    /// broker is stopping): join again, resuming after the last event read.
    fn finished(&mut self, ctx: &mut Self::Context) {
        if !self.closing {
            info!("mercure log subscription ended, rejoining");
            ctx.run_later(LOG_RETRY, |hub, ctx| hub.join_log(ctx));
        }
    }
}

/// Publish an update; the reply carries its id.
#[derive(Message)]
#[rtype(result = "()")]
pub struct PublishUpdate {
    pub draft: UpdateDraft,
    /// When the publish handler started on it (latency metric).
    pub received_at: Instant,
    pub reply: Reply<String>,
}

impl Handler<PublishUpdate> for HubActor {
    type Result = ();

    fn handle(&mut self, msg: PublishUpdate, _: &mut Self::Context) {
        if self.closing {
            let _ = msg.reply.send(Err(BrokerError::ShuttingDown));
            return;
        }
        self.forward_to_channels(&msg.draft, msg.received_at);
        if let HubLog::Local = self.log {
            // With a shared log, the log's channel counts the publish.
            self.metrics
                .record_publish_latency(msg.received_at.elapsed());
            self.metrics.published.increment(1);
        }
        self.submit(msg.draft, Some(msg.reply), msg.received_at);
    }
}

impl Handler<ChannelPublished> for HubActor {
    type Result = ();

    /// An event of one of our channels: a public update on the channel's name.
    fn handle(&mut self, msg: ChannelPublished, _: &mut Self::Context) {
        if self.closing {
            return;
        }
        let draft = UpdateDraft {
            topics: vec![msg.channel.to_string()],
            data: msg.data,
            private: false,
            id: None,
            event_type: msg.event_type.map(|t| t.as_str().to_owned()),
            retry: None,
        };
        self.submit(draft, None, Instant::now());
    }
}

/// Add a subscriber, after handing it what it missed.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SubscribeHub {
    pub subscriber: HubSubscriber,
    /// `Last-Event-ID` or `lastEventID`, when the client sent one.
    pub last_event_id: Option<String>,
    pub reply: Reply<HubSubscribed>,
}

/// The start of a Mercure stream.
#[derive(Debug)]
pub struct HubSubscribed {
    pub replay: Vec<Arc<Update>>,
    /// The `Last-Event-ID` response header, when the client sent one.
    pub last_event_id: Option<String>,
}

impl Handler<SubscribeHub> for HubActor {
    type Result = ();

    fn handle(&mut self, msg: SubscribeHub, _: &mut Self::Context) {
        if self.closing {
            let _ = msg.reply.send(Err(BrokerError::ShuttingDown));
            return;
        }
        if !self.joined && msg.last_event_id.is_some() {
            // Its replay needs the history, which the log has not filled yet.
            self.waiting.push(msg);
            return;
        }
        self.subscribe(msg);
    }
}

impl HubActor {
    fn subscribe(&mut self, msg: SubscribeHub) {
        let sub = msg.subscriber;
        if self.subscription_events {
            for info in sub.subscriptions(true) {
                self.submit(subscription_update(info), None, Instant::now());
            }
        }
        // Replay and registration in one handler: no gap, no duplicate.
        let (replay, header) = match &msg.last_event_id {
            Some(asked) => {
                let (replay, header) = self.replay(&sub, asked);
                (replay, Some(header))
            }
            None => (Vec::new(), None),
        };
        self.metrics.replayed.increment(replay.len() as u64);
        let answer = HubSubscribed {
            replay,
            last_event_id: header,
        };
        if msg.reply.send(Ok(answer)).is_ok() {
            debug!(
                "mercure subscribed subscriber={} selectors={}",
                sub.id,
                sub.subscriptions.len()
            );
            self.subscribers.push(sub);
        } else {
            self.announce_gone(vec![sub]);
        }
    }
}

/// A Mercure stream ended: forget its subscriber now.
#[derive(Message)]
#[rtype(result = "()")]
pub struct UnsubscribeHub {
    pub key: u64,
}

impl Handler<UnsubscribeHub> for HubActor {
    type Result = ();

    fn handle(&mut self, msg: UnsubscribeHub, _: &mut Self::Context) {
        if let Some(at) = self.subscribers.iter().position(|s| s.key == msg.key) {
            let sub = self.subscribers.swap_remove(at);
            self.announce_gone(vec![sub]);
        }
    }
}

/// The active subscriptions and the hub's last event id (subscriptions API).
#[derive(Message)]
#[rtype(result = "Subscriptions")]
pub struct ListSubscriptions;

#[derive(Debug, Clone)]
pub struct Subscriptions {
    pub last_event_id: String,
    pub subscriptions: Vec<SubscriptionInfo>,
}

impl Handler<ListSubscriptions> for HubActor {
    type Result = MessageResult<ListSubscriptions>;

    fn handle(&mut self, _: ListSubscriptions, _: &mut Self::Context) -> Self::Result {
        MessageResult(Subscriptions {
            last_event_id: self.last_event_id.clone(),
            subscriptions: self
                .subscribers
                .iter()
                .flat_map(|s| s.subscriptions(true))
                .collect(),
        })
    }
}

/// Shutdown: refuse new work and end every Mercure stream; answers how many.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct CloseStreams;

impl Handler<CloseStreams> for HubActor {
    type Result = usize;

    fn handle(&mut self, _: CloseStreams, _: &mut Self::Context) -> usize {
        self.closing = true;
        for waiting in std::mem::take(&mut self.waiting) {
            let _ = waiting.reply.send(Err(BrokerError::ShuttingDown));
        }
        let streams = self.subscribers.len();
        self.subscribers.clear();
        streams
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update(topics: &[&str], private: bool) -> Arc<Update> {
        Update::accept(UpdateDraft {
            topics: topics.iter().map(|t| t.to_string()).collect(),
            data: "x".into(),
            private,
            id: None,
            event_type: None,
            retry: None,
        })
    }

    fn subscriber(topics: &[&str], private: Option<&[&str]>) -> HubSubscriber {
        let subscriptions = topics
            .iter()
            .map(|t| Subscription {
                selector: TopicSelector::new(t),
                match_type: None,
                payload: None,
            })
            .collect();
        let private = private.map(|list| list.iter().map(|t| TopicSelector::new(t)).collect());
        HubSubscriber::new(subscriptions, private, 4).0
    }

    /// Private updates need a subscribe claim covering one of their topics.
    #[test]
    fn private_updates_need_a_matching_claim() {
        let public = update(&["https://example.com/books/1"], false);
        let private = update(&["https://example.com/books/1", "urn:secret"], true);
        let anonymous = subscriber(&["https://example.com/books/{id}"], None);
        assert!(anonymous.can_receive(&public));
        assert!(!anonymous.can_receive(&private));
        let allowed = subscriber(&["https://example.com/books/{id}"], Some(&["urn:secret"]));
        assert!(allowed.can_receive(&private));
        let other = subscriber(&["*"], Some(&["urn:other"]));
        assert!(!other.can_receive(&private));
    }

    /// Subscription ids escape like Go's url.QueryEscape.
    #[test]
    fn query_escape_is_go_compatible() {
        assert_eq!(
            query_escape("https://example.com/a b?c=d&é"),
            "https%3A%2F%2Fexample.com%2Fa+b%3Fc%3Dd%26%C3%A9"
        );
        assert_eq!(query_escape("urn:uuid:1-2"), "urn%3Auuid%3A1-2");
    }

    /// A `topic` subscription keeps the reference hub's shape; a `match*`
    /// one has draft-08's `matchType`, `match` and id.
    #[test]
    fn subscription_shapes() {
        let base = url::Url::parse("http://hub.test/.well-known/mercure").unwrap();
        let subscription = |raw: &str, match_type| Subscription {
            selector: match match_type {
                None => TopicSelector::new(raw),
                Some(kind) => TopicSelector::typed(kind, raw, &base).unwrap(),
            },
            match_type,
            payload: None,
        };
        let legacy = SubscriptionInfo::new("urn:s", &subscription("a b", None), true);
        assert_eq!(legacy.id, "/.well-known/mercure/subscriptions/a+b/urn%3As");
        let json = serde_json::to_value(&legacy).unwrap();
        assert_eq!(json["topic"], "a b");
        assert!(json.get("match").is_none() && json.get("matchType").is_none());
        let typed = SubscriptionInfo::new(
            "urn:s",
            &subscription("https://x/:id a", Some(MatchType::UrlPattern)),
            false,
        );
        assert_eq!(
            typed.id,
            "/.well-known/mercure/subscriptions/URLPattern/https%3A%2F%2Fx%2F%3Aid%20a/urn%3As"
        );
        let json = serde_json::to_value(&typed).unwrap();
        assert_eq!(json["matchType"], "URLPattern");
        assert_eq!(json["match"], "https://x/:id a");
        assert!(json.get("topic").is_none());

        let seg = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(legacy.is_addressed_by(&seg(&["a b"])));
        assert!(legacy.is_addressed_by(&seg(&["a b", "urn:s"])));
        assert!(!legacy.is_addressed_by(&seg(&["a b", "urn:t"])));
        assert!(typed.is_addressed_by(&seg(&[])));
        assert!(typed.is_addressed_by(&seg(&["URLPattern", "https://x/:id a"])));
        assert!(typed.is_addressed_by(&seg(&["URLPattern", "https://x/:id a", "urn:s"])));
        assert!(!typed.is_addressed_by(&seg(&["Exact", "https://x/:id a"])));
        assert!(!typed.is_addressed_by(&seg(&["https://x/:id a"])));
    }

    /// An unknown id replays nothing and answers `earliest`, never the id
    /// of a (possibly private) retained update.
    /// Subscribers found gone while a departure is announced are announced
    /// too, each once, by the same loop (no recursion however many).
    #[actix::test]
    async fn departures_are_all_announced() {
        let mut settings = Settings::defaults();
        settings.mercure.subscriptions = true;
        let registry = RegistryActor::new(&settings).start();
        let mut hub = HubActor::new(&settings, registry, Metrics::detached());
        let everything = || {
            vec![Subscription {
                selector: TopicSelector::new("*"),
                match_type: None,
                payload: None,
            }]
        };
        let all = || Some(vec![TopicSelector::new("*")]);
        let (watcher, mut seen) = HubSubscriber::new(everything(), all(), 1000);
        hub.subscribers.push(watcher);
        for _ in 0..200 {
            // Their queues are closed at once: found gone at the next fan-out.
            let (gone, _) = HubSubscriber::new(everything(), all(), 4);
            hub.subscribers.push(gone);
        }
        let first = hub.subscribers.swap_remove(1);
        hub.announce_gone(vec![first]);
        let mut ended = 0;
        while let Ok(HubDelivery::Update(update)) = seen.try_recv() {
            ended += usize::from(update.private);
        }
        assert_eq!(ended, 200);
        assert_eq!(hub.subscribers.len(), 1, "only the watcher is left");
    }

    #[actix::test]
    async fn unknown_last_event_id_answers_earliest() {
        let settings = Settings::defaults();
        let registry = RegistryActor::new(&settings).start();
        let mut hub = HubActor::new(&settings, registry, Metrics::detached());
        let secret = update(&["urn:secret"], true);
        hub.remember(&secret);
        let reader = subscriber(&["*"], None);
        let (replay, header) = hub.replay(&reader, "urn:uuid:unknown");
        assert!(replay.is_empty());
        assert_eq!(header, EARLIEST);
        let (replay, header) = hub.replay(&reader, &secret.id);
        assert!(replay.is_empty());
        assert_eq!(header, secret.id);
    }
}
