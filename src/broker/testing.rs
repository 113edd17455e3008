//! Unit-test helpers shared by the broker's and the store's tests: a queue
//! as a subscriber's sink, and publishes and subscriptions sent as the HTTP
//! handlers send them.

use std::{sync::Arc, time::Instant};

use tokio::sync::{mpsc, oneshot};

use super::{
    BrokerError, RegistryActor, ResumeFrom, await_reply,
    handle::Broker,
    idempotency::{Idempotency, IdempotencyKey},
    log::Record,
    message::{ChannelMessage, Publish, Published, Subscribed},
    subscriber::{Delivery, Offer, Sink, Subscriber},
};
use crate::{config::Settings, names::ChannelName};

/// A bounded queue as a subscriber's sink: full means evicted.
pub struct QueueSink(mpsc::Sender<Delivery>);

impl Sink for QueueSink {
    fn offer(&self, delivery: &Delivery) -> Offer {
        match self.0.try_send(delivery.clone()) {
            Ok(()) => Offer::Taken,
            Err(mpsc::error::TrySendError::Full(_)) => Offer::Full,
            Err(mpsc::error::TrySendError::Closed(_)) => Offer::Closed,
        }
    }

    fn capacity(&self) -> usize {
        self.0.max_capacity()
    }
}

/// A subscriber whose deliveries go to a queue of `capacity`.
pub fn queue(capacity: usize) -> (Subscriber, mpsc::Receiver<Delivery>) {
    let (tx, rx) = mpsc::channel(capacity);
    (Subscriber::new(Arc::new(QueueSink(tx))), rx)
}

/// A broker on the development defaults.
pub fn broker(settings: &Settings) -> Broker {
    Broker::start(RegistryActor::new(settings), None)
}

/// A record of plain data.
pub fn record(data: &str) -> Record {
    Record::plain(None, data.into())
}

/// Sends a publish of `data`; the receiver gets its answer.
pub fn send_publish(
    broker: &Broker,
    channel: &ChannelName,
    data: &str,
) -> oneshot::Receiver<Result<Published, BrokerError>> {
    send_keyed(broker, channel, data, None)
}

/// Sends a publish of `data` under the idempotency key `key`, if any; the
/// receiver gets its answer.
pub fn send_keyed(
    broker: &Broker,
    channel: &ChannelName,
    data: &str,
    key: Option<&str>,
) -> oneshot::Receiver<Result<Published, BrokerError>> {
    let (reply, rx) = oneshot::channel();
    let record = record(data);
    let idempotency = key.map(|key| {
        let key = IdempotencyKey::parse(key).expect("a valid test key");
        Box::new(Idempotency::new(
            key,
            channel,
            record.event_type.as_ref(),
            &record.data,
        ))
    });
    broker.send(
        channel,
        ChannelMessage::Publish(Publish {
            record,
            idempotency,
            reply: Some(reply),
            received_at: Instant::now(),
            copy: false,
        }),
    );
    rx
}

/// Sends the subscription of a new queue of `capacity` from `from`: the
/// receiver of its answer, its subscriber handle and its queue.
pub fn send_subscribe(
    broker: &Broker,
    channel: &ChannelName,
    capacity: usize,
    from: Option<ResumeFrom>,
) -> (
    oneshot::Receiver<Result<Subscribed, BrokerError>>,
    Subscriber,
    mpsc::Receiver<Delivery>,
) {
    let (subscriber, rx) = queue(capacity);
    let answer = broker.subscribe(channel, subscriber.clone(), from, false);
    (answer, subscriber, rx)
}

/// [`send_subscribe`], insisting it succeeds.
pub async fn subscribe(
    broker: &Broker,
    channel: &ChannelName,
    capacity: usize,
    from: Option<ResumeFrom>,
) -> (Subscribed, Subscriber, mpsc::Receiver<Delivery>) {
    let (answer, subscriber, rx) = send_subscribe(broker, channel, capacity, from);
    let subscribed = await_reply(answer).await.expect("subscribe succeeds");
    (subscribed, subscriber, rx)
}
