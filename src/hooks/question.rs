//! What the broker asks the application about one stream: the channels (or
//! Mercure topic selectors) asked for, the `Last-Event-ID`, the client's IP,
//! and the client's forwarded headers ([`Question`]), and the key its
//! answer is cached under.
//!
//! The body is JSON, `{"action": "subscribe", "channels": [...],
//! "lastEventId": ..., "ip": ...}` (the Mercure hub's: `"topics"` instead
//! of `"channels"`; the publish hook's: `"action": "publish"`, with the
//! channels or topics published to); the forwarded
//! headers (`hooks.forward_headers`) go as the same request headers, as
//! the client sent them, so the application's ordinary session middleware
//! reads them. Nothing else of the client's request is sent.

use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use serde::Serialize;

/// Forwarded header bytes beyond which an answer is not cached: the key
/// holds them all, and the cache holds `hooks.cache_size` keys, so this
/// bounds its memory (10,000 entries: at most ~40 MiB of keys; a session
/// cookie is usually well under 1 KiB).
pub const MAX_KEY_BYTES: usize = 4096;

/// What is asked about, and by which protocol: the body and the answer
/// name channels or topics accordingly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Asking {
    /// A `/stream`: the body and the answer say `channels`.
    Stream,
    /// A Mercure subscriber: the body and the answer say `topics`.
    Mercure,
    /// A publish to our channels (`hooks.publish_url`): `channels`.
    Publish,
    /// A Mercure update (`hooks.publish_url`): `topics`.
    MercurePublish,
}

impl Asking {
    /// Whether it asks about a publish (the publish hook).
    pub fn is_publish(self) -> bool {
        matches!(self, Self::Publish | Self::MercurePublish)
    }

    /// Whether what is asked are channel names (else Mercure topics).
    pub fn names_channels(self) -> bool {
        matches!(self, Self::Stream | Self::Publish)
    }
}

/// One stream's question (see the module docs).
#[derive(Debug, Clone)]
pub struct Question {
    pub asking: Asking,
    /// The channel names, or the Mercure topic selectors, as asked.
    pub asked: Vec<String>,
    pub last_event_id: Option<String>,
    /// The client's IP, as the broker's limits count it.
    pub ip: String,
    /// The forwarded headers the request carried, in `forward_headers`
    /// order (every value of a repeated header).
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

/// The JSON body of a hook request.
#[derive(Serialize)]
struct Body<'a> {
    action: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    channels: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    topics: Option<&'a [String]>,
    #[serde(rename = "lastEventId")]
    last_event_id: Option<&'a str>,
    ip: &'a str,
}

impl Question {
    /// A question with the `forward` headers of `headers`.
    pub fn new(
        asking: Asking,
        asked: Vec<String>,
        last_event_id: Option<String>,
        ip: String,
        headers: &HeaderMap,
        forward: &[HeaderName],
    ) -> Self {
        let headers = forward
            .iter()
            .flat_map(|name| {
                headers
                    .get_all(name)
                    .map(move |value| (name.clone(), value.clone()))
            })
            .collect();
        Self {
            asking,
            asked,
            last_event_id,
            ip,
            headers,
        }
    }

    /// The request body.
    pub fn body(&self) -> Vec<u8> {
        let asked = Some(self.asked.as_slice());
        let body = Body {
            action: if self.asking.is_publish() {
                "publish"
            } else {
                "subscribe"
            },
            channels: asked.filter(|_| self.asking.names_channels()),
            topics: asked.filter(|_| !self.asking.names_channels()),
            last_event_id: self.last_event_id.as_deref(),
            ip: &self.ip,
        };
        serde_json::to_vec(&body).unwrap_or_default()
    }

    /// The cache key: the protocol, the forwarded headers and the channels
    /// asked, each length-prefixed (so no two questions share a key);
    /// `None` when the headers are too large to cache ([`MAX_KEY_BYTES`]).
    /// The `Last-Event-ID` and the IP are not part of it: an answer holds
    /// for the session and the channels.
    pub fn key(&self) -> Option<Vec<u8>> {
        let header_bytes: usize = self
            .headers
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len())
            .sum();
        if header_bytes > MAX_KEY_BYTES {
            return None;
        }
        let mut key = Vec::with_capacity(header_bytes + 64);
        key.push(self.asking as u8);
        let mut part = |bytes: &[u8]| {
            key.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
            key.extend_from_slice(bytes);
        };
        for (name, value) in &self.headers {
            part(name.as_str().as_bytes());
            part(value.as_bytes());
        }
        part(b"");
        for asked in &self.asked {
            part(asked.as_bytes());
        }
        Some(key)
    }

    /// Whether the request carried a credential: a forwarded header other
    /// than `Origin` (which every cross-origin request has).
    pub fn carries_credentials(&self) -> bool {
        self.headers
            .iter()
            .any(|(name, _)| name != actix_web::http::header::ORIGIN)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn question(cookie: &str, asked: &[&str]) -> Question {
        let mut headers = HeaderMap::new();
        headers.insert(
            HeaderName::from_static("cookie"),
            HeaderValue::from_str(cookie).expect("a header value"),
        );
        headers.insert(
            HeaderName::from_static("x-other"),
            HeaderValue::from_static("never sent"),
        );
        let forward = [
            HeaderName::from_static("cookie"),
            HeaderName::from_static("origin"),
        ];
        Question::new(
            Asking::Stream,
            asked.iter().map(|s| s.to_string()).collect(),
            Some("5".into()),
            "10.0.0.1".into(),
            &headers,
            &forward,
        )
    }

    /// Only the listed headers are forwarded; the body says what is asked
    /// (subscribe or publish) and names the channels, or the topics.
    #[test]
    fn forwards_only_the_listed_headers() {
        let q = question("session=abc", &["orders"]);
        assert_eq!(q.headers.len(), 1);
        assert!(q.carries_credentials());
        let body: serde_json::Value = serde_json::from_slice(&q.body()).expect("JSON");
        assert_eq!(
            body,
            serde_json::json!({"action": "subscribe", "channels": ["orders"], "lastEventId": "5", "ip": "10.0.0.1"})
        );
        let publish = Question {
            asking: Asking::MercurePublish,
            ..q
        };
        let body: serde_json::Value = serde_json::from_slice(&publish.body()).expect("JSON");
        assert_eq!(body["action"], "publish");
        assert_eq!(body["topics"], serde_json::json!(["orders"]));
        assert_eq!(body.get("channels"), None);
    }

    /// Keys differ by session and by channels, never by concatenation
    /// tricks; oversized headers are not cached.
    #[test]
    fn keys() {
        let a = question("s=1", &["ab", "c"]).key();
        assert_eq!(a, question("s=1", &["ab", "c"]).key());
        assert_ne!(a, question("s=2", &["ab", "c"]).key());
        assert_ne!(a, question("s=1", &["a", "bc"]).key());
        assert_eq!(question(&"x".repeat(MAX_KEY_BYTES + 1), &["a"]).key(), None);
    }
}
