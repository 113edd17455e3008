//! What the application answered, read and checked: an allow with what it
//! grants ([`HookGrant`]), or a denial. An allow is `2xx` with an empty
//! body or a JSON object:
//!
//! ```json
//! {"user": "42", "info": {"name": "Ada"}, "channels": ["orders", "user.42"], "cacheFor": "60s"}
//! ```
//!
//! Every field is optional. `channels`, when given, is what a `/stream` may
//! have (channel patterns); without it the stream may have what it asked
//! for. The Mercure hub's answer says `topics` instead: selectors (`*`, a
//! URI template, or an exact topic) whose private updates (and protected
//! channels' copies) the subscriber may read; without it, none (a
//! subscriber's matchers are patterns, so what it asked for is no grant). `cacheFor` is a duration
//! (`"60s"`, `"5m"`, or a number of seconds). `401` and `403` deny. Anything
//! else — another status, a body that is not such an object, a field out of
//! its bounds — is a failure, never half an allow.
//!
//! The publish hook's answer (`hooks.publish_url`) is an allow or a denial
//! of the publish as asked: its `channels`, `topics`, `user` and `info` are
//! read and checked but grant nothing; `cacheFor` holds as for a stream.
//!
//! A [`HookGrant`] is a credential like a token: it implements
//! [`Rights`], so the access policy weighs it as it weighs a token.

use std::{sync::Arc, time::Duration};

use serde::Deserialize;
use serde_json::value::RawValue;

use super::question::{Asking, Question};
use crate::{
    auth::{Action, Pattern, Rights, token::MAX_INFO_BYTES},
    names::ChannelName,
};

/// The largest answer body read: an answer names a user, a small info
/// object and its channels; more is not an answer.
pub const MAX_ANSWER_BYTES: usize = 64 * 1024;
/// The longest user id accepted.
pub const MAX_USER_BYTES: usize = 256;
/// Most channels (or topics) an answer may grant.
pub const MAX_GRANTED: usize = 1000;
/// The longest an answer is cached, whatever its `cacheFor` says: a
/// session that ends in the application is forgotten here within it.
pub const MAX_CACHE_FOR: Duration = Duration::from_secs(3600);

/// What the application allowed a stream (see the module docs).
#[derive(Debug)]
pub struct HookGrant {
    /// The user id, when the answer named one.
    pub user: Option<Arc<str>>,
    /// The answer's `info` object.
    pub info: Option<Arc<RawValue>>,
    /// `channels`: the patterns the stream may read (`/stream`).
    channels: Option<Vec<Pattern>>,
    /// `topics`: the selectors the subscriber may read (the Mercure hub).
    topics: Option<Vec<String>>,
    /// What the question asked: all allowed when the answer named none.
    asked: Vec<String>,
    /// What was asked about: a publish's allow grants no reading.
    asking: Asking,
}

impl HookGrant {
    /// The Mercure topic selectors whose private updates the answer grants
    /// (its `topics`; none without).
    pub fn topics(&self) -> &[String] {
        self.topics.as_deref().unwrap_or_default()
    }
}

impl Rights for HookGrant {
    /// A channel the answer's `channels` cover, or else one the question
    /// asked for; nothing but subscribing.
    fn covers(&self, action: Action, channel: &ChannelName) -> bool {
        if action != Action::Subscribe || self.asking.is_publish() {
            return false;
        }
        match &self.channels {
            Some(patterns) => patterns.iter().any(|p| p.matches(channel.as_str())),
            None => self.asked.iter().any(|asked| asked == channel.as_str()),
        }
    }
}

/// The application's answer to one question.
#[derive(Debug, Clone)]
pub enum Answer {
    Allow(Arc<HookGrant>),
    Deny,
}

/// An answer and how long it may be reused.
#[derive(Debug, Clone)]
pub struct Read {
    pub answer: Answer,
    /// `cacheFor`, when the answer said.
    pub cache_for: Option<Duration>,
}

/// The JSON of an allow.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Allow {
    user: Option<String>,
    info: Option<Box<RawValue>>,
    channels: Option<Vec<String>>,
    topics: Option<Vec<String>>,
    cache_for: Option<CacheFor>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum CacheFor {
    Seconds(u64),
    Text(String),
}

/// Reads the application's answer (`status` and `body`) to `question`;
/// `Err` says why it is a failure.
pub fn read(question: &Question, status: u16, body: &[u8]) -> Result<Read, String> {
    match status {
        401 | 403 => {
            return Ok(Read {
                answer: Answer::Deny,
                cache_for: None,
            });
        }
        200..=299 => {}
        status => return Err(format!("the hook answered {status}")),
    }
    let blank = body.iter().all(u8::is_ascii_whitespace);
    let allow: Allow = match blank {
        true => Allow {
            user: None,
            info: None,
            channels: None,
            topics: None,
            cache_for: None,
        },
        false => serde_json::from_slice(body)
            .map_err(|err| format!("the hook's answer is not an allow object: {err}"))?,
    };
    let user = match allow.user {
        Some(user)
            if user.is_empty()
                || user.len() > MAX_USER_BYTES
                || user.chars().any(char::is_control) =>
        {
            return Err(format!(
                "the hook's user must be 1 to {MAX_USER_BYTES} bytes without control characters"
            ));
        }
        user => user.map(Arc::from),
    };
    let info = match allow.info {
        Some(info) if !info.get().trim_start().starts_with('{') => {
            return Err("the hook's info must be a JSON object".into());
        }
        Some(info) if info.get().len() > MAX_INFO_BYTES => {
            return Err(format!(
                "the hook's info is larger than {MAX_INFO_BYTES} bytes"
            ));
        }
        info => info.map(Arc::from),
    };
    let granted = |list: &Option<Vec<String>>, what: &str| match list {
        Some(list) if list.len() > MAX_GRANTED => {
            Err(format!("the hook granted more than {MAX_GRANTED} {what}"))
        }
        _ => Ok(()),
    };
    granted(&allow.channels, "channels")?;
    granted(&allow.topics, "topics")?;
    let (channels, topics) = match question.asking {
        Asking::Stream => {
            let channels = allow
                .channels
                .map(|list| {
                    list.iter()
                        .map(|p| Pattern::parse(p).map_err(|e| format!("the hook's channels: {e}")))
                        .collect::<Result<Vec<_>, _>>()
                })
                .transpose()?;
            (channels, None)
        }
        Asking::Mercure => (None, allow.topics),
        // A publish is allowed as asked, or refused: its answer grants
        // nothing to read.
        Asking::Publish | Asking::MercurePublish => (None, None),
    };
    let cache_for = allow.cache_for.map(|c| match c {
        CacheFor::Seconds(secs) => Ok(Duration::from_secs(secs)),
        CacheFor::Text(text) => humantime::parse_duration(&text)
            .map_err(|err| format!("the hook's cacheFor {text:?}: {err}")),
    });
    let cache_for = cache_for.transpose()?.map(|d| d.min(MAX_CACHE_FOR));
    Ok(Read {
        answer: Answer::Allow(Arc::new(HookGrant {
            user,
            info,
            channels,
            topics,
            asked: question.asked.clone(),
            asking: question.asking,
        })),
        cache_for,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn question(asking: Asking, asked: &[&str]) -> Question {
        Question {
            asking,
            asked: asked.iter().map(|s| s.to_string()).collect(),
            last_event_id: None,
            ip: "127.0.0.1".into(),
            headers: Vec::new(),
        }
    }

    fn channel(name: &str) -> ChannelName {
        ChannelName::parse(name).expect("a channel name")
    }

    fn allowed(read: Result<Read, String>) -> Arc<HookGrant> {
        match read.expect("an answer").answer {
            Answer::Allow(grant) => grant,
            Answer::Deny => panic!("a denial"),
        }
    }

    /// An empty 2xx allows what was asked, nothing else, with no identity.
    #[test]
    fn empty_allow_covers_what_was_asked() {
        let q = question(Asking::Stream, &["orders", "news"]);
        let grant = allowed(read(&q, 204, b""));
        assert!(grant.covers(Action::Subscribe, &channel("orders")));
        assert!(!grant.covers(Action::Subscribe, &channel("other")));
        assert!(!grant.covers(Action::Publish, &channel("orders")));
        assert!(grant.user.is_none());
    }

    /// A full allow: user, info, channel patterns, cacheFor (capped).
    #[test]
    fn full_allow() {
        let q = question(Asking::Stream, &["user.42"]);
        let body = br#"{"user":"42","info":{"name":"Ada"},"channels":["user.42","room.*"],"cacheFor":"2h"}"#;
        let read = read(&q, 200, body).expect("an answer");
        assert_eq!(read.cache_for, Some(MAX_CACHE_FOR));
        let grant = allowed(Ok(read));
        assert_eq!(grant.user.as_deref(), Some("42"));
        assert_eq!(
            grant.info.as_ref().map(|i| i.get()),
            Some(r#"{"name":"Ada"}"#)
        );
        assert!(grant.covers(Action::Subscribe, &channel("room.7")));
        assert!(!grant.covers(Action::Subscribe, &channel("user.43")));
        let seconds = super::read(&q, 200, br#"{"cacheFor": 30}"#).expect("an answer");
        assert_eq!(seconds.cache_for, Some(Duration::from_secs(30)));
    }

    /// 401 and 403 deny; other statuses and garbage are failures.
    #[test]
    fn denials_and_failures() {
        let q = question(Asking::Stream, &["a"]);
        for status in [401, 403] {
            assert!(matches!(
                read(&q, status, b"").unwrap().answer,
                Answer::Deny
            ));
        }
        for (status, body) in [
            (500, &b""[..]),
            (404, b""),
            (302, b""),
            (200, b"<html>"),
            (200, b"[1]"),
            (200, br#"{"user": 42}"#),
            (200, br#"{"user": ""}"#),
            (200, br#"{"info": [1]}"#),
            (200, br#"{"channels": ["bad name!"]}"#),
            (200, br#"{"cacheFor": "soon"}"#),
            (200, br#"{"cacheFor": -1}"#),
        ] {
            assert!(read(&q, status, body).is_err(), "{status} {body:?}");
        }
        let big = format!(r#"{{"info": {{"x": "{}"}}}}"#, "y".repeat(MAX_INFO_BYTES));
        assert!(read(&q, 200, big.as_bytes()).is_err());
    }

    /// The Mercure hub's answer grants the topics it names; none without.
    #[test]
    fn mercure_topics() {
        let q = question(Asking::Mercure, &["*"]);
        let grant = allowed(read(&q, 200, b"{}"));
        assert!(grant.topics().is_empty());
        let grant = allowed(read(&q, 200, br#"{"topics": ["*"], "channels": ["x"]}"#));
        assert_eq!(grant.topics(), ["*"]);
    }
}
