//! `POST /.well-known/mercure`: a publisher's form, checked against its
//! token and the spec's field rules, becomes an update on the hub's
//! channel; public updates on channel-named topics reach those channels too.
//!
//! In the order the reference hub checks them: the token (`401`, or `400
//! invalid_request` for a token presented wrongly), the body (`413` over
//! `server.max_body_bytes`), at least one `topic` (`400`), at most
//! [`MAX_TOPICS`] (`413`), the topics' characters and a digits-only
//! `retry` (`400`), `publish` granted on every topic (`403
//! insufficient_scope`), then the topic and field rules that no token can
//! lift (`400`): no topic in the hub's namespace (after resolution) or
//! equal to `*`, an `id` that does not start with `#`, is not `earliest`
//! and has no control character, a `type` that is not `mercure` and has no
//! control character. Answers `200 text/plain; charset=utf-8` with the id.

use std::time::Instant;

use actix_web::{HttpRequest, HttpResponse, ResponseError, web};

use super::{
    MercureState,
    auth::Role,
    bridge,
    error::MercureError,
    hub::{hub_channel, record_of},
    identity::HUB_PATH,
    query::{first, parse_pairs, read_form, values},
    subscriptions::HUB_EVENT_TYPE,
    topic,
    update::{COPY_ID_PREFIX, EARLIEST, UpdateDraft, new_id},
};
use crate::{
    hooks::Asking,
    http::{AppState, access, body::nests_deeper_than},
};

/// Most topics one update may have (as the reference hub).
pub const MAX_TOPICS: usize = 1000;

/// `POST /.well-known/mercure` with a form (see the module docs).
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
    let hub = state.identity(req);
    let claims = state
        .tokens
        .authorize(req, &query, Role::Publisher, &hub)
        .map_err(|err| MercureError::auth(&hub, err))?
        .ok_or_else(|| MercureError::token_required(&hub))?;
    // The publish rate limit, keyed as for channel publishes.
    let app = AppState::of(req).map_err(MercureError::from)?;
    app.limits.check_publish(req, claims.subject.as_deref())?;
    let form = read_form(req, payload, state.settings.server.max_body_bytes)
        .await?
        .unwrap_or_default();
    let mut draft = read_draft(&form)?;
    let max_depth = state.settings.server.max_json_depth;
    let json_like = draft.data.trim_start().starts_with(['{', '[']);
    if json_like && nests_deeper_than(&draft.data, max_depth) {
        return Err(MercureError::BadRequest(format!(
            "\"data\" nests arrays and objects deeper than {max_depth} levels \
             (server.max_json_depth)"
        )));
    }
    if !claims.may_publish(&draft.topics) {
        return Err(MercureError::insufficient_scope(
            &hub,
            "the access token does not grant publish on every topic of the update",
        ));
    }
    check_reserved(&draft)?;
    access::ask_publish_hook(app, req, Asking::MercurePublish, draft.topics.clone()).await?;
    let id = draft.id.get_or_insert_with(new_id).clone();
    app.broker
        .publish(&hub_channel(), record_of(draft.clone()), received_at, false)
        .await?;
    bridge::into_channels(&app.broker, &state.access, &claims, &draft);
    Ok(HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .body(id))
}

/// The update a publish form describes, with the checks that come before
/// the token's grants.
fn read_draft(form: &[(String, String)]) -> Result<UpdateDraft, MercureError> {
    let field = |name: &str| first(form, name).map(str::to_owned);
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
        return Err(MercureError::TooManyTopics(format!(
            "at most {MAX_TOPICS} topics per update"
        )));
    }
    if let Some(bad) = topics.iter().find(|t| !topic::is_protocol_string(t)) {
        return Err(MercureError::BadRequest(format!(
            "topic {bad:?} contains a control or format character"
        )));
    }
    // ASCII digits only: `str::parse` would also take `+5`.
    let retry = match field("retry").filter(|r| !r.is_empty()) {
        Some(text) => Some(
            text.bytes()
                .all(|b| b.is_ascii_digit())
                .then(|| text.parse::<u64>().ok())
                .flatten()
                .ok_or_else(|| MercureError::BadRequest("Invalid \"retry\" parameter".into()))?,
        ),
        None => None,
    };
    Ok(UpdateDraft {
        topics,
        data: field("data").unwrap_or_default(),
        private: !values(form, "private").is_empty(),
        id: field("id").filter(|id| !id.is_empty()),
        event_type: field("type").filter(|t| !t.is_empty()),
        retry,
        channel: None,
    })
}

/// The rules no token lifts: the hub's namespace and `*` are not topics;
/// ids and types cannot forge the hub's own events or break the framing.
fn check_reserved(draft: &UpdateDraft) -> Result<(), MercureError> {
    for topic in &draft.topics {
        if topic::addresses_hub(topic, HUB_PATH) {
            return Err(MercureError::BadRequest(format!(
                "{topic:?}: topics under {HUB_PATH:?} are reserved to the hub"
            )));
        }
        if topic == "*" {
            return Err(MercureError::BadRequest(
                "\"*\" is the wildcard matcher, not a topic".into(),
            ));
        }
    }
    if let Some(id) = &draft.id
        && (!topic::is_protocol_string(id)
            || id.starts_with('#')
            || id.starts_with(COPY_ID_PREFIX)
            || id == EARLIEST)
    {
        return Err(MercureError::BadRequest(format!(
            "\"id\" must not start with \"#\" or {COPY_ID_PREFIX:?} (the ids of channel \
             events' copies), be \"earliest\" or contain a control or format character"
        )));
    }
    if let Some(kind) = &draft.event_type {
        if kind == HUB_EVENT_TYPE {
            return Err(MercureError::BadRequest(
                "\"type\" \"mercure\" is reserved to the hub's own events".into(),
            ));
        }
        if !topic::is_protocol_string(kind) {
            return Err(MercureError::BadRequest(
                "\"type\" contains a control or format character".into(),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draft(text: &str) -> Result<UpdateDraft, MercureError> {
        read_draft(&parse_pairs(text).unwrap()).and_then(|draft| {
            check_reserved(&draft)?;
            Ok(draft)
        })
    }

    /// Missing topics, bad retries, reserved topics, ids and types are
    /// refused; the rest is read as sent.
    #[test]
    fn draft_validation() {
        for bad in [
            "data=x",
            "topic=a&id=x%0Ay",
            "topic=a&type=x%0Dy",
            "topic=a&type=x%E2%80%8By",
            "topic=a&type=mercure",
            "topic=a&retry=-1",
            "topic=a&retry=%2B5",
            "topic=a&retry=5%20",
            "topic=a&id=%23hub-id",
            "topic=a&id=earliest",
            "topic=a&id=urn%3Asse-broker%3Auser.9%2F1-1",
            "topic=a%01",
            "topic=%2A",
            "topic=a&topic=%2F.well-known%2Fmercure%2Fsubscriptions%2Fx",
            "topic=https%3A%2F%2Fhub%2F.well-known%2F%256Dercure",
        ] {
            assert!(draft(bad).is_err(), "{bad}");
        }
        assert!(matches!(
            read_draft(&vec![("topic".to_owned(), "t".to_owned()); MAX_TOPICS + 1]),
            Err(MercureError::TooManyTopics(_))
        ));
        assert_eq!(draft("topic=a&retry=0042").unwrap().retry, Some(42));
        assert!(draft("topic=a&id=a%23b").is_ok());
        let read = draft("topic=a&topic=b&id=&type=&retry=&private=off").unwrap();
        assert_eq!(read.topics, vec!["a", "b"]);
        assert!(read.private && read.id.is_none() && read.event_type.is_none());
    }
}
