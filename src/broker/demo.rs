//! The demo publisher: on in development, it publishes the seed's event shape
//! `{"Message":"Periodic Event at <UTC time>","Value":<1..99>}` every interval
//! so a newcomer sees events on the debug page at once.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix::prelude::*;

use super::{handle::Broker, log::Record};
use crate::names::ChannelName;

pub struct DemoPublisher {
    pub broker: Broker,
    pub channel: ChannelName,
    pub interval: Duration,
}

impl DemoPublisher {
    fn publish(&self) {
        let now = SystemTime::now();
        // Spread over 1..=99 like the seed's Random.Next(1, 100); no need for a real RNG.
        let value = now
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos() % 99 + 1)
            .unwrap_or(1);
        let message = format!(
            "Periodic Event at {}",
            humantime::format_rfc3339_seconds(now)
        );
        let data = serde_json::json!({ "Message": message, "Value": value }).to_string();
        let record = Record::plain(None, data);
        self.broker.publish_nowait(&self.channel, record, false);
    }
}

impl Actor for DemoPublisher {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(self.interval, |actor, _| actor.publish());
    }
}
