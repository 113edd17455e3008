//! One webhook on its way to one URL: a [`Job`], made once per event and
//! URL, kept (with a data dir) from before its first attempt until the
//! receiver accepted it or it was given up; and its JSON [`body`].

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::occupancy::kind;
use crate::{
    broker::{occupancy::OccupancyChange, pulse::rfc3339},
    names::ChannelName,
};

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

/// A webhook's JSON body: `type`, `timestamp` (RFC 3339, UTC, in
/// milliseconds: when the transition was decided), `channel`, a member
/// event's `user` and `info`, and the same fields but `type` and
/// `timestamp` under `data` (the Standard Webhooks payload convention).
pub fn body(channel: &ChannelName, transition: &OccupancyChange, at: SystemTime) -> String {
    let mut data = serde_json::Map::new();
    data.insert("channel".into(), channel.as_str().into());
    if let OccupancyChange::Joined { user, info } | OccupancyChange::Left { user, info } =
        transition
    {
        data.insert("user".into(), serde_json::Value::from(&**user));
        let info = info
            .as_ref()
            .and_then(|raw| serde_json::from_str(raw.get()).ok())
            .unwrap_or(serde_json::Value::Null);
        data.insert("info".into(), info);
    }
    let mut body = serde_json::Map::new();
    body.insert("type".into(), kind(transition).into());
    body.insert("timestamp".into(), rfc3339(at).into());
    for (key, value) in &data {
        body.insert(key.clone(), value.clone());
    }
    body.insert("data".into(), serde_json::Value::Object(data));
    serde_json::Value::Object(body).to_string()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    /// A member event's body names the user and its info; a channel event's does not.
    #[test]
    fn bodies_name_what_happened() {
        let room = ChannelName::parse("room").unwrap();
        let at = SystemTime::UNIX_EPOCH;
        let occupied: serde_json::Value =
            serde_json::from_str(&body(&room, &OccupancyChange::Occupied, at)).unwrap();
        assert_eq!(occupied["type"], "channel.occupied");
        assert_eq!(occupied["channel"], "room");
        assert_eq!(occupied["data"]["channel"], "room");
        assert_eq!(occupied["timestamp"], "1970-01-01T00:00:00.000Z");
        assert!(occupied.get("user").is_none());
        let info = serde_json::value::to_raw_value(&serde_json::json!({"name": "Ada"})).unwrap();
        let joined = OccupancyChange::Joined {
            user: "u1".into(),
            info: Some(Arc::from(info)),
        };
        let joined: serde_json::Value = serde_json::from_str(&body(&room, &joined, at)).unwrap();
        assert_eq!(joined["type"], "member.joined");
        assert_eq!(joined["user"], "u1");
        assert_eq!(joined["info"]["name"], "Ada");
        assert_eq!(joined["data"]["user"], "u1");
    }
}
