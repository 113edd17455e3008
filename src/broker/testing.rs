//! Unit-test helpers shared by the broker's and the store's tests: a publish
//! and a subscription sent to the registry as the HTTP handlers send them.

use std::time::Instant;

use actix::Addr;
use tokio::sync::{mpsc, oneshot};

use super::{
    BrokerError, ChannelName, Delivery, RegistryActor, ResumeFrom, Subscriber, await_reply,
    channel::{Publish, Published, Subscribe, Subscribed},
};

/// Sends a publish of `data`; the receiver gets its answer.
pub fn send_publish(
    registry: &Addr<RegistryActor>,
    channel: &ChannelName,
    data: &str,
) -> oneshot::Receiver<Result<Published, BrokerError>> {
    let (reply, rx) = oneshot::channel();
    registry.do_send(Publish {
        channel: channel.clone(),
        event_type: None,
        data: data.into(),
        reply: Some(reply),
        received_at: Instant::now(),
        mirror: true,
    });
    rx
}

/// Sends the subscription of a new queue of `capacity` from `from`: the
/// receiver of its answer, its subscriber handle and its queue.
pub fn send_subscribe(
    registry: &Addr<RegistryActor>,
    channel: &ChannelName,
    capacity: usize,
    from: Option<ResumeFrom>,
) -> (
    oneshot::Receiver<Result<Subscribed, BrokerError>>,
    Subscriber,
    mpsc::Receiver<Delivery>,
) {
    let (subscriber, rx) = Subscriber::new(capacity);
    let (reply, answer) = oneshot::channel();
    registry.do_send(Subscribe {
        channel: channel.clone(),
        subscriber: subscriber.clone(),
        from,
        reply,
    });
    (answer, subscriber, rx)
}

/// [`send_subscribe`], insisting it succeeds.
pub async fn subscribe(
    registry: &Addr<RegistryActor>,
    channel: &ChannelName,
    capacity: usize,
    from: Option<ResumeFrom>,
) -> (Subscribed, Subscriber, mpsc::Receiver<Delivery>) {
    let (answer, subscriber, rx) = send_subscribe(registry, channel, capacity, from);
    let subscribed = await_reply(answer).await.expect("subscribe succeeds");
    (subscribed, subscriber, rx)
}
