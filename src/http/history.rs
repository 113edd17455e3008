//! `GET /channels/{channel}/history?after=<id>&limit=<n>`: a page of a
//! channel's retained events as JSON, oldest first, with the ids the
//! stream gives them, for an app that renders a page and then subscribes
//! from its last id. Reading a channel's history is subscribing to it in
//! the access policy's eyes: a protected channel's needs a token that may
//! subscribe to it, or the application hook's allow (asked as for a
//! stream of that channel).
//!
//! A page holds at most `limit` events and [`MAX_PAGE_BYTES`] of them.
//! The page is the channel's: its history in memory (memory and durable
//! history, where the channel's actor answers), or the shared log in
//! cluster mode. A channel with no events (or none yet) answers an empty
//! list. An `after` the history no longer covers (trimmed, another epoch,
//! not issued yet) is answered like a resuming stream: the retained events
//! and a `gap` saying why and where they go on from (the stream's
//! `broker.gap` notice, as a field).

use actix_web::{HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};

use super::{AppState, access::authorize_stream};
use crate::{
    broker::{
        EventId,
        history::{HistoryPage, MAX_PAGE_BYTES},
    },
    error::ApiError,
    names::ChannelName,
    sse,
};

/// Events in a page when the reader does not say.
pub const DEFAULT_LIMIT: usize = 100;

/// Most events in one page: what one answer costs the broker to build and
/// send, with [`MAX_PAGE_BYTES`] (the broker's). `next` reads on.
pub const MAX_LIMIT: usize = 1000;

#[derive(Debug, Deserialize)]
pub struct HistoryQuery {
    after: Option<String>,
    limit: Option<usize>,
}

#[derive(Debug, Serialize)]
struct HistoryBody {
    events: Vec<HistoryEvent>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    gap: Option<Gap>,
}

/// One event as a subscriber's EventSource would see it.
#[derive(Debug, Serialize)]
struct HistoryEvent {
    id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    event: Option<String>,
    data: String,
}

/// Why the page does not go on right after `after`, as a stream's
/// `broker.gap` notice says it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Gap {
    reason: &'static str,
    last_event_id: String,
    resume_from: String,
}

/// `GET /channels/{channel}/history`
pub async fn read(
    state: web::Data<AppState>,
    path: web::Path<String>,
    query: web::Query<HistoryQuery>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let channel = ChannelName::parse(&path).map_err(ApiError::InvalidChannel)?;
    // Asked as a stream of this channel is: the application's hook (when
    // configured), then the policy.
    authorize_stream(&state, &req, None, std::slice::from_ref(&channel), None).await?;
    let HistoryQuery { after, limit } = query.into_inner();
    let limit = limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::InvalidQuery(format!(
            "limit must be 1 to {MAX_LIMIT}"
        )));
    }
    let after = after
        .map(|text| {
            EventId::parse(&text).ok_or_else(|| {
                ApiError::InvalidQuery(format!(
                    "after must be an event id of this channel (<epoch>-<seq>), not {text:?}"
                ))
            })
        })
        .transpose()?;
    let page = state.broker.history(&channel, after, limit).await?;
    Ok(HttpResponse::Ok().json(body(page, after)))
}

/// The JSON answer of a page read after `after`, cut at
/// [`MAX_PAGE_BYTES`] (then `next` is its last event).
fn body(page: HistoryPage, after: Option<EventId>) -> HistoryBody {
    let mut bytes = 0usize;
    let kept = page
        .events
        .iter()
        .take_while(|event| {
            let first = bytes == 0;
            bytes = bytes.saturating_add(event.frame.full().len());
            first || bytes <= MAX_PAGE_BYTES
        })
        .count();
    let next = match kept < page.events.len() {
        true => kept
            .checked_sub(1)
            .and_then(|last| page.events.get(last))
            .map(|event| event.id),
        false => page.next,
    };
    HistoryBody {
        events: page.events[..kept]
            .iter()
            .map(|event| HistoryEvent {
                id: event.id.to_string(),
                event: event.event_type.as_ref().map(|t| t.as_str().to_owned()),
                data: sse::data_of(event.frame.full()),
            })
            .collect(),
        next: next.map(|id| id.to_string()),
        gap: page.gap.map(|(reason, resume_from)| Gap {
            reason: reason.as_str(),
            last_event_id: after.map(|id| id.to_string()).unwrap_or_default(),
            resume_from: resume_from.to_string(),
        }),
    }
}
