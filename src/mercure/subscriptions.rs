//! Subscriptions as Mercure shows them: the subscription documents, the
//! private updates announcing a subscription's start and end
//! (`mercure.subscriptions`), and the book of this node's active
//! subscriptions that the subscriptions API ([`super::api`]) lists.
//!
//! A subscription's document follows the parameter that made it:
//! - `match`, `match_exact`, `match_urlpattern` (Mercure 1.0): id
//!   `/.well-known/mercure/subscriptions/{match_type}/{match}/{subscriber}`
//!   (each variable percent-encoded once, a space as `%20`), plain JSON
//!   `{"id", "type": "subscription", "subscriber", "match", "match_type",
//!   "active", "payload"}`, and its events carry the SSE `event: mercure`;
//! - a 0.x `topic` (compatibility mode): the 0.x hub's, unchanged for 0.x
//!   consumers: id `/.well-known/mercure/subscriptions/{topic}/{subscriber}`
//!   (escaped like Go's `url.QueryEscape`, a space as `+`), JSON-LD
//!   `{"@context", "id", "type": "Subscription", "subscriber", "topic",
//!   "active", "payload"}`, and plain `message` events.

use std::{
    collections::HashMap,
    sync::{Mutex, PoisonError},
};

use serde::Serialize;
use serde_json::Value;

use super::{
    identity::HUB_PATH,
    topic::{MatchType, TopicSelector},
    update::UpdateDraft,
};

/// Path prefix of subscription topics and of the subscriptions API.
pub const SUBSCRIPTIONS_PATH: &str = "/.well-known/mercure/subscriptions";
/// The JSON-LD context of 0.x subscription documents.
pub const JSONLD_CONTEXT: &str = "https://mercure.rocks/";
/// The SSE event type of the hub's own updates; publishers may not use it.
pub const HUB_EVENT_TYPE: &str = "mercure";

/// One subscription: a matcher of a subscribe request, how the request
/// named it, and the payload the subscriber's token attaches to it.
#[derive(Debug)]
pub struct Subscription {
    pub selector: TopicSelector,
    /// The matcher type of a `match*` parameter; `None` for a 0.x `topic`.
    /// It decides the shape of the subscription's id and document.
    pub match_type: Option<MatchType>,
    /// Shown in subscription events and the API.
    pub payload: Option<Value>,
}

/// One subscription (a subscriber and one of its matchers), as subscription
/// events and the subscriptions API show it (see the module docs).
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
    #[serde(rename = "match", skip_serializing_if = "Option::is_none")]
    pub matcher: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub match_type: Option<MatchType>,
    pub active: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<Value>,
    /// 0.x single documents of the API carry the hub's cursor.
    #[serde(rename = "lastEventID", skip_serializing_if = "Option::is_none")]
    pub last_event_id: Option<String>,
}

impl SubscriptionInfo {
    pub fn new(subscriber: &str, subscription: &Subscription, active: bool) -> Self {
        let selector = subscription.selector.as_str();
        let common = Self {
            context: None,
            id: String::new(),
            kind: "subscription",
            subscriber: subscriber.to_owned(),
            topic: None,
            matcher: None,
            match_type: subscription.match_type,
            active,
            payload: subscription.payload.clone(),
            last_event_id: None,
        };
        match subscription.match_type {
            Some(match_type) => Self {
                id: format!(
                    "{SUBSCRIPTIONS_PATH}/{}/{}/{}",
                    match_type.as_str(),
                    path_escape(selector),
                    path_escape(subscriber)
                ),
                matcher: Some(selector.to_owned()),
                ..common
            },
            None => Self {
                context: Some(JSONLD_CONTEXT),
                id: format!(
                    "{SUBSCRIPTIONS_PATH}/{}/{}",
                    query_escape(selector),
                    query_escape(subscriber)
                ),
                kind: "Subscription",
                topic: Some(selector.to_owned()),
                ..common
            },
        }
    }

    /// Whether it is a 0.x (`topic`) subscription.
    pub fn is_legacy(&self) -> bool {
        self.match_type.is_none()
    }

    /// Whether the API path segments after `…/subscriptions` (decoded)
    /// address it: `[match_type, match]`, `[match_type, match, subscriber]`,
    /// or for 0.x subscriptions `[topic]`, `[topic, subscriber]`.
    pub fn is_addressed_by(&self, filter: &Filter) -> bool {
        match (filter, self.match_type) {
            (Filter::All, _) => true,
            (
                Filter::Match {
                    match_type,
                    matcher,
                    subscriber,
                },
                Some(own),
            ) => {
                own == *match_type
                    && self.matcher.as_ref() == Some(matcher)
                    && subscriber.as_ref().is_none_or(|s| *s == self.subscriber)
            }
            (Filter::Topic { topic, subscriber }, None) => {
                self.topic.as_ref() == Some(topic)
                    && subscriber.as_ref().is_none_or(|s| *s == self.subscriber)
            }
            _ => false,
        }
    }
}

/// Which subscriptions an API path addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Filter {
    All,
    Match {
        match_type: MatchType,
        matcher: String,
        subscriber: Option<String>,
    },
    /// 0.x paths (compatibility mode).
    Topic {
        topic: String,
        subscriber: Option<String>,
    },
}

/// The subscription documents of one subscriber (its IRI `subscriber`).
pub fn infos(
    subscriber: &str,
    subscriptions: &[Subscription],
    active: bool,
) -> Vec<SubscriptionInfo> {
    subscriptions
        .iter()
        .map(|subscription| SubscriptionInfo::new(subscriber, subscription, active))
        .collect()
}

/// Go's `url.QueryEscape`, which 0.x hubs use for subscription ids:
/// everything but `A-Z a-z 0-9 - _ . ~` is `%XX`, a space is `+`.
pub fn query_escape(text: &str) -> String {
    escape(text, "+")
}

/// A variable percent-encoded once (RFC 6570 simple expansion), as the
/// spec asks for subscription ids: like [`query_escape`], a space `%20`.
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

/// The private update announcing a subscription's start or end.
pub fn subscription_update(info: SubscriptionInfo) -> UpdateDraft {
    let event_type = (!info.is_legacy()).then(|| HUB_EVENT_TYPE.to_owned());
    let data = serde_json::to_string_pretty(&info).unwrap_or_default();
    debug_assert!(info.id.starts_with(HUB_PATH));
    UpdateDraft {
        topics: vec![info.id],
        data,
        private: true,
        id: None,
        event_type,
        retry: None,
        channel: None,
    }
}

/// The active subscriptions of this node's Mercure streams, by stream, for
/// the subscriptions API.
#[derive(Default)]
pub struct SubscriptionBook(Mutex<HashMap<u64, Vec<SubscriptionInfo>>>);

impl SubscriptionBook {
    pub fn insert(&self, stream: u64, infos: Vec<SubscriptionInfo>) {
        self.lock().insert(stream, infos);
    }

    pub fn remove(&self, stream: u64) -> Vec<SubscriptionInfo> {
        self.lock().remove(&stream).unwrap_or_default()
    }

    pub fn all(&self) -> Vec<SubscriptionInfo> {
        self.lock().values().flatten().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Vec<SubscriptionInfo>>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Subscription ids escape like Go's url.QueryEscape (0.x) or once per
    /// variable with %20 (1.0).
    #[test]
    fn escaping() {
        assert_eq!(
            query_escape("https://example.com/a b?c=d&é"),
            "https%3A%2F%2Fexample.com%2Fa+b%3Fc%3Dd%26%C3%A9"
        );
        assert_eq!(path_escape("a b%"), "a%20b%25");
    }

    /// A `match*` subscription has the 1.0 shape; a `topic` one keeps the
    /// 0.x hub's.
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
        assert_eq!(json["type"], "Subscription");
        assert_eq!(json["@context"], JSONLD_CONTEXT);
        assert!(json.get("match").is_none() && json.get("match_type").is_none());
        let typed = SubscriptionInfo::new(
            "urn:s",
            &subscription("https://x/:id a", Some(MatchType::UrlPattern)),
            false,
        );
        assert_eq!(
            typed.id,
            "/.well-known/mercure/subscriptions/urlpattern/https%3A%2F%2Fx%2F%3Aid%20a/urn%3As"
        );
        let json = serde_json::to_value(&typed).unwrap();
        assert_eq!(json["match_type"], "urlpattern");
        assert_eq!(json["match"], "https://x/:id a");
        assert_eq!(json["type"], "subscription");
        assert!(json.get("topic").is_none() && json.get("@context").is_none());
        let update = subscription_update(typed.clone());
        assert_eq!(update.event_type.as_deref(), Some("mercure"));
        assert!(update.private);
        assert_eq!(subscription_update(legacy.clone()).event_type, None);

        let topic = |t: &str, s: Option<&str>| Filter::Topic {
            topic: t.into(),
            subscriber: s.map(str::to_owned),
        };
        assert!(legacy.is_addressed_by(&topic("a b", None)));
        assert!(legacy.is_addressed_by(&topic("a b", Some("urn:s"))));
        assert!(!legacy.is_addressed_by(&topic("a b", Some("urn:t"))));
        let matching = |t, m: &str, s: Option<&str>| Filter::Match {
            match_type: t,
            matcher: m.into(),
            subscriber: s.map(str::to_owned),
        };
        assert!(typed.is_addressed_by(&Filter::All));
        assert!(typed.is_addressed_by(&matching(MatchType::UrlPattern, "https://x/:id a", None)));
        assert!(typed.is_addressed_by(&matching(
            MatchType::UrlPattern,
            "https://x/:id a",
            Some("urn:s")
        )));
        assert!(!typed.is_addressed_by(&matching(MatchType::Exact, "https://x/:id a", None)));
        assert!(!typed.is_addressed_by(&topic("https://x/:id a", None)));
    }
}
