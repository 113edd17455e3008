//! `POST /.well-known/mercure`: a publisher's form, checked against its
//! token and the spec's field rules, becomes an update on the hub's
//! channel; public updates on channel-named topics reach those channels too.

use std::time::Instant;

use actix_web::{HttpRequest, HttpResponse, ResponseError, http::header, web};

use super::{
    MercureState,
    auth::Role,
    error::MercureError,
    hub::{hub_channel, record_of},
    query::{HUB_PATH, has_control, hub_url, parse_pairs, query_tokens, values},
    subscribe::MAX_TOPICS,
    topic,
    update::{UpdateDraft, new_id},
};
use crate::{
    broker::log::Record,
    http::{
        AppState,
        body::{nests_deeper_than, read_body},
    },
    names::{ChannelName, EventType},
};

/// Topics under the hub's path are the hub's own (subscription events).
const RESERVED_TOPIC: &str = HUB_PATH;

/// `POST /.well-known/mercure` with a form: topic (one or more), data,
/// private, id, type, retry. Answers `200 text/plain` with the update's id.
pub async fn publish(
    state: web::Data<MercureState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, MercureError> {
    let received_at = Instant::now();
    let answer = publish_inner(&state, &req, payload, received_at).await;
    if let Err(err) = &answer {
        state.metrics.publish_refused(err.status_code().as_u16());
    }
    answer
}

async fn publish_inner(
    state: &MercureState,
    req: &HttpRequest,
    payload: web::Payload,
    received_at: Instant,
) -> Result<HttpResponse, MercureError> {
    let query = parse_pairs(req.query_string())?;
    let hub = hub_url(req, state.settings.limits.trust_forwarded_for);
    let claims = state
        .tokens
        .authorize(req, &query_tokens(&query), Role::Publisher, &hub)
        .map_err(|err| MercureError::Unauthorized(err.to_string()))?
        .ok_or_else(|| MercureError::Unauthorized("a publisher JWT is required".into()))?;
    // The publish rate limit, keyed as for channel publishes.
    let app = AppState::of(req).map_err(MercureError::from)?;
    app.limits.check_publish(req, claims.subject.as_deref())?;
    let body = read_body(req, payload, state.settings.server.max_body_bytes).await?;
    let is_form = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| {
            v.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    let text = std::str::from_utf8(&body)
        .map_err(|_| MercureError::BadRequest("the body must be UTF-8".into()))?;
    let form = if is_form {
        parse_pairs(text)?
    } else {
        Vec::new()
    };
    let mut draft = read_draft(&form)?;
    let max_depth = state.settings.server.max_json_depth;
    let json_like = draft.data.trim_start().starts_with(['{', '[']);
    if json_like && nests_deeper_than(&draft.data, max_depth) {
        return Err(MercureError::BadRequest(format!(
            "\"data\" nests arrays and objects deeper than {max_depth} levels \
             (server.max_json_depth)"
        )));
    }
    let allowed = claims
        .publish
        .as_ref()
        .is_some_and(|selectors| topic::all_match(selectors, &draft.topics));
    if !allowed {
        return Err(MercureError::Forbidden(
            "the JWT's publish rights (mercure.publish or authorization_details) do not cover \
             these topics"
                .into(),
        ));
    }
    if let Some(reserved) = draft.topics.iter().find(|t| t.contains(RESERVED_TOPIC)) {
        return Err(MercureError::Forbidden(format!(
            "{reserved:?}: topics under {RESERVED_TOPIC:?} are reserved to the hub"
        )));
    }
    let id = draft.id.get_or_insert_with(new_id).clone();
    app.broker
        .publish(&hub_channel(), record_of(draft.clone()), received_at, false)
        .await?;
    forward_to_channels(app, &draft);
    Ok(HttpResponse::Ok().content_type("text/plain").body(id))
}

/// A public update on topics that are channel names is published on those
/// channels too (as a copy: not offered back to the hub).
fn forward_to_channels(app: &AppState, draft: &UpdateDraft) {
    if draft.private {
        return;
    }
    let event_type = draft
        .event_type
        .as_deref()
        .and_then(|t| EventType::parse(t).ok());
    let mut sent: Vec<&str> = Vec::new();
    for topic in &draft.topics {
        if sent.contains(&topic.as_str()) {
            continue;
        }
        let Ok(channel) = ChannelName::parse(topic) else {
            continue;
        };
        sent.push(topic);
        let record = Record::plain(event_type.clone(), draft.data.clone());
        app.broker.publish_nowait(&channel, record, true);
    }
}

/// The update a publish form describes, validated.
fn read_draft(form: &[(String, String)]) -> Result<UpdateDraft, MercureError> {
    let first = |name: &str| values(form, name).first().map(|v| (*v).to_owned());
    let topics: Vec<String> = values(form, "topic")
        .into_iter()
        .map(str::to_owned)
        .collect();
    if topics.is_empty() {
        return Err(MercureError::BadRequest(
            "Missing \"topic\" parameter".into(),
        ));
    }
    if topics.len() > MAX_TOPICS {
        return Err(MercureError::BadRequest("too many topics in update".into()));
    }
    if topics.iter().any(|t| has_control(t)) {
        return Err(MercureError::BadRequest(
            "topic contains a forbidden control character".into(),
        ));
    }
    // ASCII digits only (draft-08): `str::parse` would also take `+5`.
    let retry = match first("retry").filter(|r| !r.is_empty()) {
        Some(text) => Some(
            text.bytes()
                .all(|b| b.is_ascii_digit())
                .then(|| text.parse::<u64>().ok())
                .flatten()
                .ok_or_else(|| MercureError::BadRequest("Invalid \"retry\" parameter".into()))?,
        ),
        None => None,
    };
    let forbidden = |v: &String| v.contains(['\r', '\n', '\0']);
    let id = first("id").filter(|id| !id.is_empty());
    if id.as_ref().is_some_and(forbidden) {
        return Err(MercureError::BadRequest(
            "\"id\" field contains a forbidden control character".into(),
        ));
    }
    // draft-08 keeps ids starting with `#` for hubs' own ids.
    if id.as_ref().is_some_and(|id| id.starts_with('#')) {
        return Err(MercureError::BadRequest(
            "\"id\" field must not start with \"#\"".into(),
        ));
    }
    let event_type = first("type").filter(|t| !t.is_empty());
    if event_type.as_ref().is_some_and(forbidden) {
        return Err(MercureError::BadRequest(
            "\"type\" field contains a forbidden control character".into(),
        ));
    }
    Ok(UpdateDraft {
        topics,
        data: first("data").unwrap_or_default(),
        private: !values(form, "private").is_empty(),
        id,
        event_type,
        retry,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ids and types with line breaks, bad retries and missing topics are 400s.
    #[test]
    fn draft_validation() {
        let form = |text: &str| parse_pairs(text).unwrap();
        assert!(read_draft(&form("data=x")).is_err());
        assert!(read_draft(&form("topic=a&id=x%0Ay")).is_err());
        assert!(read_draft(&form("topic=a&type=x%0Dy")).is_err());
        assert!(read_draft(&form("topic=a&retry=-1")).is_err());
        assert!(read_draft(&form("topic=a&retry=%2B5")).is_err());
        assert!(read_draft(&form("topic=a&retry=5%20")).is_err());
        assert!(read_draft(&form("topic=a&id=%23hub-id")).is_err());
        assert!(read_draft(&form("topic=a%01")).is_err());
        assert_eq!(
            read_draft(&form("topic=a&retry=0042")).unwrap().retry,
            Some(42)
        );
        assert!(read_draft(&form("topic=a&id=a%23b")).is_ok());
        let draft = read_draft(&form("topic=a&topic=b&id=&type=&retry=&private=off")).unwrap();
        assert_eq!(draft.topics, vec!["a", "b"]);
        assert!(draft.private && draft.id.is_none() && draft.event_type.is_none());
    }
}
