//! Subscriptions as Mercure shows them: the subscription resources (ids,
//! JSON-LD documents), the private updates announcing a subscription's start
//! and end (`mercure.subscriptions`), the book of this node's active
//! subscriptions, and the subscriptions API at
//! `/.well-known/mercure/subscriptions[/…]`.

use std::{
    collections::HashMap,
    sync::{Mutex, PoisonError},
};

use actix_web::{HttpRequest, HttpResponse, web};
use percent_encoding::percent_decode_str;
use serde::Serialize;
use serde_json::Value;

use super::{
    MercureState,
    auth::Role,
    error::MercureError,
    hub::hub_channel,
    query::{hub_url, parse_pairs, query_tokens},
    topic::{self, MatchType, TopicSelector},
    update::{EARLIEST, UpdateDraft},
};
use crate::http::AppState;

/// Path prefix of subscription topics and of the subscriptions API.
pub const SUBSCRIPTIONS_PATH: &str = "/.well-known/mercure/subscriptions";
/// The JSON-LD context of subscription documents.
pub const JSONLD_CONTEXT: &str = "https://mercure.rocks/";

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
    pub fn new(subscriber: &str, subscription: &Subscription, active: bool) -> Self {
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

/// The subscription resources of one subscriber (its IRI `subscriber`).
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

/// The private update announcing a subscription's start or end.
pub fn subscription_update(mut info: SubscriptionInfo) -> UpdateDraft {
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

/// The id of the hub's newest update (`earliest` before the first).
async fn last_event_id(app: &AppState) -> String {
    match app.broker.inspect(&hub_channel()).await {
        Ok(detail) => detail
            .newest_name
            .map_or_else(|| EARLIEST.to_owned(), |name| name.to_string()),
        Err(_) => EARLIEST.to_owned(),
    }
}

/// A collection document of the subscriptions API.
#[derive(Debug, Serialize)]
struct SubscriptionCollection {
    #[serde(rename = "@context")]
    context: &'static str,
    id: String,
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(rename = "lastEventID")]
    last_event_id: String,
    subscriptions: Vec<SubscriptionInfo>,
}

/// `GET /.well-known/mercure/subscriptions[/…]`: the active subscriptions.
/// The path segments after it (each decoded like a form value: `%XX`, and
/// `+` is a space, since ids escape like Go's `url.QueryEscape`) address:
/// - none: every subscription;
/// - `{topic}`: the `topic` subscriptions with that selector;
/// - `{topic}/{subscriber}`: one `topic` subscription, else, when `{topic}`
///   is a matcher type name, `{matchType}/{match}`: the `match*`
///   subscriptions with that matcher;
/// - `{matchType}/{match}/{subscriber}`: one `match*` subscription.
pub async fn subscriptions_api(
    state: web::Data<MercureState>,
    req: HttpRequest,
) -> Result<HttpResponse, MercureError> {
    let path = req.uri().path().to_owned();
    let rest = path
        .strip_prefix(SUBSCRIPTIONS_PATH)
        .unwrap_or_default()
        .trim_start_matches('/');
    let segments = rest
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| {
            percent_decode_str(&s.replace('+', " "))
                .decode_utf8()
                .map(|s| s.into_owned())
                .map_err(|_| MercureError::BadRequest("invalid path segment".into()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if segments.len() > 3 {
        return Err(MercureError::NotFound(format!("no resource at {path}")));
    }
    if state.tokens.has_key(Role::Subscriber) {
        let pairs = parse_pairs(req.query_string())?;
        let hub = hub_url(&req, state.settings.limits.trust_forwarded_for);
        let claims = state
            .tokens
            .authorize(&req, &query_tokens(&pairs), Role::Subscriber, &hub)
            .map_err(|err| MercureError::Unauthorized(err.to_string()))?
            .ok_or_else(|| MercureError::Unauthorized("a subscriber JWT is required".into()))?;
        let covered = claims
            .subscribe
            .as_ref()
            .is_some_and(|s| topic::any_matches(s, std::slice::from_ref(&path)));
        if !covered {
            return Err(MercureError::Forbidden(
                "the JWT's subscribe rights do not cover this URL".into(),
            ));
        }
    }
    let app = AppState::of(&req).map_err(|err| MercureError::Unavailable(err.to_string()))?;
    let last_event_id = last_event_id(app).await;
    let subscriptions: Vec<SubscriptionInfo> = state
        .subscriptions
        .all()
        .into_iter()
        .filter(|s| s.is_addressed_by(&segments))
        .collect();
    let ld_json = |body: String| {
        HttpResponse::Ok()
            .content_type("application/ld+json")
            .body(body)
    };
    // Three segments name one `match*` subscription; two name one `topic`
    // subscription, or else, after a matcher type, a collection.
    let single = match segments.len() {
        3 => true,
        2 => {
            MatchType::from_name(&segments[0]).is_none()
                || subscriptions.iter().any(|s| s.match_type.is_none())
        }
        _ => false,
    };
    if single {
        let mut one = subscriptions
            .into_iter()
            .find(|s| s.match_type.is_some() == (segments.len() == 3))
            .ok_or_else(|| MercureError::NotFound("no such subscription".into()))?;
        one.context = Some(JSONLD_CONTEXT);
        one.last_event_id = Some(last_event_id);
        return Ok(ld_json(
            serde_json::to_string_pretty(&one).unwrap_or_default(),
        ));
    }
    let collection = SubscriptionCollection {
        context: JSONLD_CONTEXT,
        id: path,
        kind: "Subscriptions",
        last_event_id,
        subscriptions,
    };
    Ok(ld_json(
        serde_json::to_string_pretty(&collection).unwrap_or_default(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
