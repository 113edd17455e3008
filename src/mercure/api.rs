//! `GET /.well-known/mercure/subscriptions[/…]`: the subscriptions API
//! (`mercure.subscriptions`), listing this node's active subscriptions.
//!
//! - `…/subscriptions`: every subscription;
//! - `…/subscriptions/{match_type}/{match}`: the subscriptions with that
//!   matcher (an unknown matcher type is a `400`);
//! - `…/subscriptions/{match_type}/{match}/{subscriber}`: one (`404` when
//!   absent).
//!
//! Segments are percent-decoded (`+` stays `+`). Answers are
//! `application/json`, with the hub's cursor as the `last-event-id` of a
//! `Link: </.well-known/mercure>; rel="mercure"` header (with `type` and
//! `content-type`), an `ETag` of it (`If-None-Match` answers `304`), and
//! `Cache-Control: must-revalidate`. The token must grant `subscribe` on
//! the requested path (`401` without a token, `403` otherwise).
//!
//! Compatibility mode adds the 0.x paths and documents:
//! `…/subscriptions/{topic}` and `…/subscriptions/{topic}/{subscriber}`
//! (two segments whose first is not a matcher type), decoded like form
//! values (`+` is a space, as 0.x ids are written), answered as the 0.x
//! hub did (`application/ld+json`, `@context`, `Subscriptions`,
//! `lastEventID` in the body). The collection of everything then also
//! carries `lastEventID`, for 0.x clients reading it from the body.

use actix_web::{HttpRequest, HttpResponse, http::header, web};
use percent_encoding::percent_decode_str;
use serde::Serialize;

use super::{
    MercureState,
    auth::Role,
    error::MercureError,
    hub::hub_channel,
    identity::HUB_PATH,
    query::parse_pairs,
    subscriptions::{Filter, HUB_EVENT_TYPE, JSONLD_CONTEXT, SUBSCRIPTIONS_PATH, SubscriptionInfo},
    topic::MatchType,
    update::EARLIEST,
};
use crate::http::AppState;

/// A collection document.
#[derive(Debug, Serialize)]
struct Collection {
    #[serde(rename = "@context", skip_serializing_if = "Option::is_none")]
    context: Option<&'static str>,
    id: String,
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(rename = "lastEventID", skip_serializing_if = "Option::is_none")]
    last_event_id: Option<String>,
    subscriptions: Vec<SubscriptionInfo>,
}

/// The answer's shape.
enum Shape {
    Collection,
    One,
}

/// `GET /.well-known/mercure/subscriptions[/…]` (see the module docs).
pub async fn subscriptions_api(
    state: web::Data<MercureState>,
    req: HttpRequest,
) -> Result<HttpResponse, MercureError> {
    let path = req.uri().path().to_owned();
    let compatibility = state.settings.mercure.compatibility();
    let (filter, shape) = read_path(&path, compatibility)?;
    let hub = state.identity(&req);
    if state.tokens.verifies(Role::Subscriber) {
        let query = parse_pairs(req.query_string())?;
        let claims = state
            .tokens
            .authorize(&req, &query, Role::Subscriber, &hub)
            .map_err(|err| MercureError::auth(&hub, err))?
            .ok_or_else(|| MercureError::token_required(&hub))?;
        if !claims.may_subscribe(&path) {
            return Err(MercureError::insufficient_scope(
                &hub,
                "the access token does not grant subscribe on this URL",
            ));
        }
    }
    let app = AppState::of(&req).map_err(|err| MercureError::Unavailable(err.to_string()))?;
    let cursor = last_event_id(app).await;
    let etag = format!("\"{}\"", etag_value(&cursor));
    let if_none_match = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok());
    if if_none_match == Some(etag.as_str()) {
        return Ok(HttpResponse::NotModified()
            .insert_header((header::ETAG, etag))
            .finish());
    }
    let mut subscriptions: Vec<SubscriptionInfo> = state
        .subscriptions
        .all()
        .into_iter()
        .filter(|s| s.is_addressed_by(&filter))
        .collect();
    let legacy = matches!(filter, Filter::Topic { .. });
    let body = match shape {
        Shape::One => {
            let mut one = subscriptions
                .pop()
                .ok_or_else(|| MercureError::NotFound("no such subscription".into()))?;
            if legacy {
                one.last_event_id = Some(cursor.clone());
            }
            serde_json::to_string_pretty(&one)
        }
        Shape::Collection => serde_json::to_string_pretty(&Collection {
            context: legacy.then_some(JSONLD_CONTEXT),
            id: path,
            kind: if legacy {
                "Subscriptions"
            } else {
                "subscriptions"
            },
            last_event_id: (legacy || (compatibility && filter == Filter::All))
                .then(|| cursor.clone()),
            subscriptions,
        }),
    };
    let link = format!(
        "<{HUB_PATH}>; rel=\"mercure\"; last-event-id=\"{}\"; type=\"{HUB_EVENT_TYPE}\"; \
         content-type=\"application/json\"",
        cursor.replace('\\', "\\\\").replace('"', "\\\"")
    );
    Ok(HttpResponse::Ok()
        .content_type(if legacy {
            "application/ld+json"
        } else {
            "application/json"
        })
        .insert_header((header::LINK, link))
        .insert_header((header::ETAG, etag))
        .insert_header((header::CACHE_CONTROL, "must-revalidate"))
        .body(body.unwrap_or_default()))
}

/// The filter and shape a path names (see the module docs).
fn read_path(path: &str, compatibility: bool) -> Result<(Filter, Shape), MercureError> {
    let rest = path
        .strip_prefix(SUBSCRIPTIONS_PATH)
        .unwrap_or_default()
        .trim_start_matches('/');
    let raw: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    let decode = |segment: &str, plus_is_space: bool| {
        let segment = if plus_is_space {
            segment.replace('+', " ")
        } else {
            segment.to_owned()
        };
        percent_decode_str(&segment)
            .decode_utf8()
            .map(|s| s.into_owned())
            .map_err(|_| MercureError::BadRequest("invalid path segment".into()))
    };
    let not_found = || MercureError::NotFound(format!("no resource at {path}"));
    let typed = |first: &str| MatchType::from_name(&decode(first, false).ok()?);
    match raw.as_slice() {
        [] => Ok((Filter::All, Shape::Collection)),
        [topic] if compatibility => Ok((
            Filter::Topic {
                topic: decode(topic, true)?,
                subscriber: None,
            },
            Shape::Collection,
        )),
        [first, second] if compatibility && typed(first).is_none() => Ok((
            Filter::Topic {
                topic: decode(first, true)?,
                subscriber: Some(decode(second, true)?),
            },
            Shape::One,
        )),
        [first, matcher, subscriber @ ..] if subscriber.len() <= 1 => {
            let match_type = typed(first).ok_or_else(|| {
                MercureError::BadRequest(format!(
                    "unknown matcher type {first:?}: use \"exact\" or \"urlpattern\""
                ))
            })?;
            let subscriber = subscriber.first().map(|s| decode(s, false)).transpose()?;
            let shape = match subscriber {
                Some(_) => Shape::One,
                None => Shape::Collection,
            };
            Ok((
                Filter::Match {
                    match_type,
                    matcher: decode(matcher, false)?,
                    subscriber,
                },
                shape,
            ))
        }
        _ => Err(not_found()),
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

/// The cursor as an entity-tag's content (RFC 9110 §8.8.3): bytes outside
/// `etagc` (and `%`, the escape itself) percent-encoded.
fn etag_value(cursor: &str) -> String {
    let mut out = String::with_capacity(cursor.len());
    for c in cursor.chars() {
        if c < '!' || c == '"' || c == '%' || c == '\u{7f}' {
            out.push_str(&format!("%{:02X}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(path: &str, compatibility: bool) -> Option<Filter> {
        read_path(path, compatibility)
            .ok()
            .map(|(filter, _)| filter)
    }

    /// 1.0 paths decode once (`+` stays); 0.x paths exist only in
    /// compatibility mode and decode `+` as a space.
    #[test]
    fn api_paths() {
        assert_eq!(filter(SUBSCRIPTIONS_PATH, false), Some(Filter::All));
        assert_eq!(
            filter(
                &format!("{SUBSCRIPTIONS_PATH}/urlpattern/a%2F%3Aid+x/urn%3A1"),
                false
            ),
            Some(Filter::Match {
                match_type: MatchType::UrlPattern,
                matcher: "a/:id+x".into(),
                subscriber: Some("urn:1".into()),
            })
        );
        assert!(read_path(&format!("{SUBSCRIPTIONS_PATH}/URLPattern/a"), false).is_err());
        assert!(read_path(&format!("{SUBSCRIPTIONS_PATH}/a+b"), false).is_err());
        assert_eq!(
            filter(&format!("{SUBSCRIPTIONS_PATH}/a+b/urn%3A1"), true),
            Some(Filter::Topic {
                topic: "a b".into(),
                subscriber: Some("urn:1".into()),
            })
        );
        assert!(matches!(
            filter(&format!("{SUBSCRIPTIONS_PATH}/exact/a"), true),
            Some(Filter::Match { .. })
        ));
        assert!(read_path(&format!("{SUBSCRIPTIONS_PATH}/a/b/c/d"), true).is_err());
    }

    /// Entity-tags stay valid whatever the cursor.
    #[test]
    fn etags() {
        assert_eq!(etag_value("urn:uuid:1"), "urn:uuid:1");
        assert_eq!(etag_value("a \"b\"%"), "a%20%22b%22%25");
        assert_eq!(etag_value("é"), "é");
    }
}
