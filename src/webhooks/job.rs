//! One webhook on its way to one URL: a [`Job`], made once per event and
//! URL, kept (with a data dir) from before its first attempt until the
//! receiver accepted it or it was given up.

use serde::{Deserialize, Serialize};

/// A webhook for one URL.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Job {
    /// The order jobs were made in (the key of the pending file): a
    /// channel's jobs go out in this order, after a restart too.
    pub seq: u64,
    /// Where it goes (one of `webhooks.url`).
    pub url: String,
    /// The `webhook-id`: the same on every attempt and every URL of one
    /// event, so a receiver tells a retry from a new event.
    pub id: String,
    /// The channel it is about: each channel's jobs go out in order.
    pub channel: String,
    /// The JSON body, made once (its `timestamp` is the event's).
    pub body: String,
}
