//! What a verified access token grants ([`Claims`]), read from its claims.
//!
//! Mercure 1.0: the `authorization_details` claim (RFC 9396). Entries whose
//! `type` is `https://mercure.rocks/authorization-detail` grant `actions`
//! (`publish`, `subscribe`; others are ignored, as the spec asks) on
//! `topics` (`{"match": …, "match_type": "exact" | "urlpattern"}`, `exact`
//! by default, `*` every topic), and a `subscribe` entry may carry a
//! `payload`. Entries of other types are for other resource servers and are
//! skipped. A Mercure entry that does not parse, or too many of them,
//! makes the whole token invalid: no partial acceptance.
//!
//! Compatibility mode (0.x), and only for tokens without
//! `authorization_details`: the `mercure` claim (or the namespaced
//! `https://mercure.rocks/` one), whose `publish` and `subscribe` list
//! selectors read like 0.x `topic` parameters (or matcher objects), and
//! whose `payload` is every subscription's payload when no entry names
//! one.
//!
//! URL patterns and templates compile within one request's budget and
//! through the shared cache ([`Compiler`]): a token whose matchers are too
//! expensive to compile is invalid, like one whose matchers do not parse.
//! What they cost is kept ([`Claims::compiled_bytes`]) so that the
//! request's own matchers get only the rest of the budget.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};
use url::Url;

use super::super::topic::{self, Compiler, MatchType, TopicSelector};
use crate::{
    auth::{Action, Rights},
    names::ChannelName,
};

/// The `type` of Mercure authorization details.
pub const DETAIL_TYPE: &str = "https://mercure.rocks/authorization-detail";
/// Most Mercure entries in `authorization_details`, and most topic matchers
/// across them (as in the reference hub): each may compile a URL pattern.
pub const MAX_DETAILS: usize = 100;
/// Most selectors of one 0.x `mercure.publish` / `mercure.subscribe` list.
pub const MAX_LEGACY_SELECTORS: usize = 1000;

/// What a valid token grants.
#[derive(Debug, Clone, Default)]
pub struct Claims {
    /// Topics the bearer may publish to.
    pub publish: Vec<TopicSelector>,
    /// Topics whose private updates the bearer may read (and subscription
    /// API paths it may see).
    pub subscribe: Vec<TopicSelector>,
    /// The `subscribe` entries in order, for payloads: the first whose
    /// selectors match a subscription's own matcher gives its payload.
    subscribe_details: Vec<SubscribeDetail>,
    /// 0.x `mercure.payload`: the payload when no entry gives one.
    fallback_payload: Option<Value>,
    /// `exp`: a subscriber's stream ends then.
    pub expires_at: Option<SystemTime>,
    /// `sub`: who the bearer is; publishers with one have their own rate
    /// limit instead of their IP's.
    pub subject: Option<String>,
    /// What compiling the token's matchers charged to the request's budget
    /// (nothing for those found in the cache).
    pub compiled_bytes: usize,
}

impl Rights for Claims {
    /// A Mercure token's rights on our channels: a channel is the topic of
    /// the same name, so its `publish` and `subscribe` matchers cover the
    /// channels whose names they match (`*` every channel).
    fn covers(&self, action: Action, channel: &ChannelName) -> bool {
        let selectors = match action {
            Action::Publish => &self.publish,
            Action::Subscribe => &self.subscribe,
            Action::Inspect => return false,
        };
        selectors.iter().any(|s| s.matches(channel.as_str()))
    }
}

#[derive(Debug, Clone)]
struct SubscribeDetail {
    selectors: Vec<TopicSelector>,
    payload: Option<Value>,
}

impl Claims {
    /// Whether every one of `topics` is granted `publish`.
    pub fn may_publish(&self, topics: &[String]) -> bool {
        !self.publish.is_empty() && topic::all_match(&self.publish, topics)
    }

    /// Whether `topic` is granted `subscribe`.
    pub fn may_subscribe(&self, topic: &str) -> bool {
        self.subscribe.iter().any(|s| s.matches(topic))
    }

    /// The payload of a subscription whose own matcher is `matcher`: that
    /// of the first `subscribe` entry whose topics match it as if it were a
    /// topic, else the 0.x `mercure.payload`.
    pub fn payload_for(&self, matcher: &str) -> Option<Value> {
        // Matching every entry against every subscription of a request is
        // up to 100 x 1,000 URL pattern tests: skipped when no entry has a
        // payload to give.
        if self.subscribe_details.iter().all(|d| d.payload.is_none()) {
            return self.fallback_payload.clone();
        }
        self.subscribe_details
            .iter()
            .find(|d| d.selectors.iter().any(|s| s.matches(matcher)))
            .and_then(|d| d.payload.clone())
            .or_else(|| self.fallback_payload.clone())
    }

    /// The grants of verified `claims`; relative URL patterns resolve
    /// against `base`. `legacy` reads the 0.x `mercure` claim too.
    pub fn read(claims: &Map<String, Value>, base: &Url, legacy: bool) -> Result<Self, String> {
        let mut read = Self {
            expires_at: claims
                .get("exp")
                .and_then(Value::as_f64)
                .filter(|exp| exp.is_finite() && *exp >= 0.0)
                .map(|exp| UNIX_EPOCH + Duration::from_secs_f64(exp.min(1e11))),
            subject: claims
                .get("sub")
                .and_then(Value::as_str)
                .filter(|sub| !sub.is_empty())
                .map(str::to_owned),
            ..Self::default()
        };
        let mut compiler = Compiler::default();
        match claims.get("authorization_details") {
            Some(details) => read.add_details(details, base, &mut compiler)?,
            None if legacy => {
                let claim = claims
                    .get("https://mercure.rocks/")
                    .or_else(|| claims.get("mercure"));
                if let Some(claim) = claim.filter(|c| !c.is_null()) {
                    read.add_legacy(claim, base, &mut compiler)?;
                }
            }
            None => {}
        }
        read.compiled_bytes = compiler.spent();
        Ok(read)
    }

    /// Adds the rights of `authorization_details`.
    fn add_details(
        &mut self,
        details: &Value,
        base: &Url,
        compiler: &mut Compiler,
    ) -> Result<(), String> {
        let invalid = |why: String| format!("authorization_details: {why}");
        let entries = details
            .as_array()
            .ok_or_else(|| invalid("must be an array".into()))?;
        let (mut seen, mut matchers) = (0, 0);
        for entry in entries {
            let entry = entry
                .as_object()
                .ok_or_else(|| invalid("every entry must be an object".into()))?;
            let kind = match entry.get("type") {
                None => "",
                Some(Value::String(kind)) => kind.as_str(),
                Some(_) => return Err(invalid("\"type\" must be a string".into())),
            };
            if kind != DETAIL_TYPE {
                // RFC 9396: other types are for other resource servers.
                continue;
            }
            seen += 1;
            let topics = entry.get("topics").and_then(Value::as_array);
            matchers += topics.map_or(0, Vec::len);
            if seen > MAX_DETAILS || matchers > MAX_DETAILS {
                return Err(invalid(format!(
                    "more than {MAX_DETAILS} Mercure entries or topic matchers"
                )));
            }
            self.add_detail(entry, base, compiler).map_err(invalid)?;
        }
        Ok(())
    }

    /// Adds one Mercure authorization detail.
    fn add_detail(
        &mut self,
        entry: &Map<String, Value>,
        base: &Url,
        compiler: &mut Compiler,
    ) -> Result<(), String> {
        let actions = entry
            .get("actions")
            .and_then(Value::as_array)
            .filter(|a| !a.is_empty())
            .ok_or("\"actions\" must be a non-empty array")?;
        let (mut publish, mut subscribe) = (false, false);
        for action in actions {
            match action.as_str().ok_or("every action must be a string")? {
                "publish" => publish = true,
                "subscribe" => subscribe = true,
                // Actions of later specifications grant nothing here.
                _ => {}
            }
        }
        let topics = entry
            .get("topics")
            .and_then(Value::as_array)
            .filter(|t| !t.is_empty())
            .ok_or("\"topics\" must be a non-empty array")?;
        let selectors = topics
            .iter()
            .map(|topic| matcher_object(topic, base, compiler))
            .collect::<Result<Vec<_>, _>>()?;
        let payload = entry.get("payload").filter(|p| !p.is_null()).cloned();
        if publish {
            self.publish.extend(selectors.iter().cloned());
        }
        if subscribe {
            self.subscribe.extend(selectors.iter().cloned());
            self.subscribe_details
                .push(SubscribeDetail { selectors, payload });
        }
        Ok(())
    }

    /// Adds the rights of a 0.x `mercure` claim.
    fn add_legacy(
        &mut self,
        claim: &Value,
        base: &Url,
        compiler: &mut Compiler,
    ) -> Result<(), String> {
        let claim = claim
            .as_object()
            .ok_or("the mercure claim must be an object")?;
        let mut list = |name: &str| -> Result<Vec<(TopicSelector, Option<Value>)>, String> {
            let Some(list) = claim.get(name).filter(|l| !l.is_null()) else {
                return Ok(Vec::new());
            };
            let list = list
                .as_array()
                .ok_or_else(|| format!("mercure.{name} must be an array"))?;
            if list.len() > MAX_LEGACY_SELECTORS {
                return Err(format!(
                    "mercure.{name}: more than {MAX_LEGACY_SELECTORS} selectors"
                ));
            }
            list.iter()
                .map(|entry| match entry {
                    Value::String(raw) => {
                        check_matcher(raw)?;
                        let selector = compiler.legacy(raw).map_err(|err| err.to_string())?;
                        Ok((selector, None))
                    }
                    other => Ok((
                        matcher_object(other, base, compiler)?,
                        other.get("payload").filter(|p| !p.is_null()).cloned(),
                    )),
                })
                .collect()
        };
        self.publish
            .extend(list("publish")?.into_iter().map(|(selector, _)| selector));
        for (selector, payload) in list("subscribe")? {
            self.subscribe.push(selector.clone());
            self.subscribe_details.push(SubscribeDetail {
                selectors: vec![selector],
                payload,
            });
        }
        self.fallback_payload = claim.get("payload").filter(|p| !p.is_null()).cloned();
        Ok(())
    }
}

/// A topic matcher object, `{"match": …, "match_type": …}`.
fn matcher_object(
    topic: &Value,
    base: &Url,
    compiler: &mut Compiler,
) -> Result<TopicSelector, String> {
    let object = topic
        .as_object()
        .ok_or("every topic must be an object with a \"match\"")?;
    let raw = object
        .get("match")
        .and_then(Value::as_str)
        .ok_or("every topic needs a string \"match\"")?;
    if raw.is_empty() {
        return Err("a topic matcher must not be empty".into());
    }
    check_matcher(raw)?;
    let match_type = match object.get("match_type") {
        None => MatchType::Exact,
        Some(name) => name
            .as_str()
            .and_then(MatchType::from_name)
            .ok_or_else(|| format!("unknown match_type {name}"))?,
    };
    compiler
        .typed(match_type, raw, base)
        .map_err(|err| err.to_string())
}

/// The rules every matcher a token carries follows.
fn check_matcher(raw: &str) -> Result<(), String> {
    if raw.len() > topic::MAX_PATTERN_BYTES {
        return Err(format!(
            "a topic matcher is longer than {} bytes",
            topic::MAX_PATTERN_BYTES
        ));
    }
    if !topic::is_protocol_string(raw) {
        return Err("a topic matcher holds a control or format character".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn hub() -> Url {
        Url::parse("http://hub.test/.well-known/mercure").expect("a URL")
    }

    fn read(claims: Value, legacy: bool) -> Result<Claims, String> {
        Claims::read(claims.as_object().expect("an object"), &hub(), legacy)
    }

    fn detail(actions: Value, topics: Value) -> Value {
        json!({"type": DETAIL_TYPE, "actions": actions, "topics": topics})
    }

    /// Actions grant the listed matchers (exact by default, URL patterns
    /// resolved against the hub); payloads go to the subscriptions their
    /// matchers cover, the first matching entry deciding.
    #[test]
    fn authorization_details_grant_rights() {
        let claims = read(
            json!({"authorization_details": [
                {"type": "openid_credential", "topics": "not ours"},
                {"type": DETAIL_TYPE, "actions": ["publish", "subscribe", "archive"],
                 "topics": [{"match": "https://example.com/books/{id}"}], "payload": {"n": 1}},
                {"type": DETAIL_TYPE, "actions": ["subscribe"],
                 "topics": [{"match": "/users/:id", "match_type": "urlpattern"}], "payload": {"n": 2}},
                {"type": DETAIL_TYPE, "actions": ["subscribe"], "topics": [{"match": "*"}],
                 "payload": "anything"}
            ], "sub": "alice"}),
            false,
        )
        .expect("valid");
        assert!(claims.may_publish(&["https://example.com/books/{id}".into()]));
        assert!(!claims.may_publish(&["https://example.com/books/1".into()]));
        assert!(claims.may_subscribe("http://hub.test/users/7"));
        assert!(claims.may_subscribe("/users/7"));
        let payload = |m: &str| claims.payload_for(m);
        assert_eq!(
            payload("https://example.com/books/{id}"),
            Some(json!({"n": 1}))
        );
        assert_eq!(payload("http://hub.test/users/:id"), Some(json!({"n": 2})));
        assert_eq!(payload("urn:other"), Some(json!("anything")));
        assert_eq!(claims.subject.as_deref(), Some("alice"));
    }

    /// A Mercure entry that does not parse invalidates the whole token.
    #[test]
    fn malformed_authorization_details_are_refused() {
        let any = json!([{"match": "*"}]);
        for details in [
            json!({"not": "an array"}),
            json!(["not an object"]),
            json!([{"type": 7}]),
            json!([{"type": DETAIL_TYPE, "topics": any.clone()}]),
            json!([detail(json!([]), any.clone())]),
            json!([detail(json!([1]), any.clone())]),
            json!([detail(json!(["publish"]), json!([]))]),
            json!([detail(json!(["publish"]), json!(["*"]))]),
            json!([detail(json!(["publish"]), json!([{"match_type": "exact"}]))]),
            json!([detail(json!(["publish"]), json!([{"match": ""}]))]),
            json!([detail(
                json!(["publish"]),
                json!([{"match": "x", "match_type": "Exact"}])
            )]),
            json!([detail(
                json!(["publish"]),
                json!([{"match": "x", "match_type": "regexp"}])
            )]),
            json!([detail(
                json!(["publish"]),
                json!([{"match": "https://x/(", "match_type": "urlpattern"}])
            )]),
            json!([detail(json!(["publish"]), json!([{"match": "a\u{202e}b"}]))]),
            Value::Array(vec![
                detail(json!(["publish"]), any.clone());
                MAX_DETAILS + 1
            ]),
        ] {
            assert!(
                read(json!({"authorization_details": details}), false).is_err(),
                "{details}"
            );
        }
    }

    /// The 0.x claim counts only in compatibility mode, only without
    /// `authorization_details`; its payload is the fallback.
    #[test]
    fn legacy_mercure_claim() {
        let legacy = json!({"mercure": {"publish": ["*"],
            "subscribe": ["https://example.com/{id}", {"match": "urn:a", "payload": {"p": 1}}],
            "payload": {"u": 1}}});
        assert!(
            read(legacy.clone(), false)
                .expect("valid")
                .publish
                .is_empty()
        );
        let claims = read(legacy, true).expect("valid");
        assert!(claims.may_publish(&["anything".into()]));
        assert!(claims.may_subscribe("https://example.com/1"));
        assert_eq!(claims.payload_for("urn:a"), Some(json!({"p": 1})));
        assert_eq!(claims.payload_for("urn:b"), Some(json!({"u": 1})));
        let both = json!({"mercure": {"publish": ["*"]}, "authorization_details": []});
        assert!(read(both, true).expect("valid").publish.is_empty());
        let namespaced = json!({"https://mercure.rocks/": {"subscribe": ["urn:x"]}});
        assert!(
            read(namespaced, true)
                .expect("valid")
                .may_subscribe("urn:x")
        );
        let too_many = json!({"mercure": {"publish": vec!["a"; MAX_LEGACY_SELECTORS + 1]}});
        assert!(read(too_many, true).is_err());
    }
}
