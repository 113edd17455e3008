//! `GET /stream/{channel}` and `GET /stream?channel=a&channel=b`: our own
//! event streams. The handler checks the request (channel names,
//! `Last-Event-ID`, `?presence=1`, then the application's hook and the
//! subscriber token, `crate::http::access`), opens the stream
//! (`super::opening`),
//! and writes our prelude: the retry hint, then per channel any `broker.gap`
//! notice, a `broker.replay` marker and the replayed events. A multi-channel
//! stream's ids are cursors over all its channels (`super::cursor`).

use actix_web::{
    HttpRequest, HttpResponse,
    http::header::{self, HeaderName, HeaderValue},
    web,
};
use actix_web_lab::extract::Query;
use bytes::{BufMut, BytesMut};
use serde::Deserialize;

use super::{
    cursor::{Cursor, parse_cursor},
    opening::{self, Notices, StreamPlan},
};
use crate::{
    broker::history::Replay,
    error::ApiError,
    http::{AppState, access},
    names::ChannelName,
    sse,
};

/// Longest Last-Event-ID accepted (a cursor over the most channels a stream
/// may name fits easily).
const MAX_LAST_EVENT_ID_LEN: usize = 8192;

#[derive(Debug, Deserialize)]
pub struct StreamQuery {
    #[serde(default)]
    channel: Vec<String>,
    #[serde(rename = "lastEventId")]
    last_event_id: Option<String>,
    /// A subscriber token, for clients that can set neither a header nor a cookie.
    token: Option<String>,
    /// `1` (or `true`): the stream also gets its channels' `broker.join`
    /// and `broker.leave` events.
    presence: Option<String>,
}

impl StreamQuery {
    /// Whether the stream asked for its channels' joins and leaves; 400
    /// for a value that is neither yes nor no.
    fn presence(&self) -> Result<bool, ApiError> {
        yes_or_no("presence", self.presence.as_deref())
    }
}

/// A query flag: `1`/`true`, or `0`/`false`/empty/absent; 400 otherwise.
pub fn yes_or_no(name: &str, value: Option<&str>) -> Result<bool, ApiError> {
    match value {
        None | Some("0" | "false" | "") => Ok(false),
        Some("1" | "true") => Ok(true),
        Some(other) => Err(ApiError::InvalidQuery(format!(
            "{name} must be 1 or 0, not {other:?}"
        ))),
    }
}

/// `GET /stream/{channel}`
pub async fn stream_one(
    state: web::Data<AppState>,
    path: web::Path<String>,
    query: Query<StreamQuery>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let channel = ChannelName::parse(&path).map_err(ApiError::InvalidChannel)?;
    let Query(query) = query;
    let presence = query.presence()?;
    let last_id = last_event_id(&req, query.last_event_id)?;
    let asked = Asked {
        token: query.token,
        last_id,
        presence,
    };
    open(&state, &req, vec![channel], false, asked).await
}

/// `GET /stream?channel=a&channel=b`
pub async fn stream_many(
    state: web::Data<AppState>,
    query: Query<StreamQuery>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let Query(query) = query;
    if query.channel.is_empty() {
        return Err(ApiError::InvalidChannel(
            "name at least one channel: /stream?channel=a&channel=b".into(),
        ));
    }
    let mut channels: Vec<ChannelName> = Vec::with_capacity(query.channel.len());
    for name in &query.channel {
        let channel = ChannelName::parse(name).map_err(ApiError::InvalidChannel)?;
        if !channels.contains(&channel) {
            channels.push(channel);
        }
    }
    let max = state.settings.stream.max_channels_per_stream;
    if channels.len() > max {
        return Err(ApiError::InvalidChannel(format!(
            "a stream may name at most {max} channels"
        )));
    }
    let presence = query.presence()?;
    let last_id = last_event_id(&req, query.last_event_id)?;
    let asked = Asked {
        token: query.token,
        last_id,
        presence,
    };
    open(&state, &req, channels, true, asked).await
}

/// The client's resume point: the `Last-Event-ID` header (sent by browsers
/// on reconnect) wins over the `lastEventId` query parameter (first connect).
fn last_event_id(
    req: &HttpRequest,
    from_query: Option<String>,
) -> Result<Option<String>, ApiError> {
    let from_header = match req.headers().get("last-event-id") {
        Some(value) => Some(
            value
                .to_str()
                .map_err(|_| {
                    ApiError::InvalidLastEventId("Last-Event-ID must be visible ASCII".into())
                })?
                .to_owned(),
        ),
        None => None,
    };
    let id = from_header.or(from_query).filter(|id| !id.is_empty());
    if let Some(id) = &id {
        if id.len() > MAX_LAST_EVENT_ID_LEN {
            return Err(ApiError::InvalidLastEventId(format!(
                "Last-Event-ID is longer than {MAX_LAST_EVENT_ID_LEN} bytes"
            )));
        }
        if id.chars().any(char::is_control) {
            return Err(ApiError::InvalidLastEventId(
                "Last-Event-ID contains a control character".into(),
            ));
        }
    }
    Ok(id)
}

/// What a stream's query asked for besides its channels.
struct Asked {
    token: Option<String>,
    last_id: Option<String>,
    /// Its channels' joins and leaves (`?presence=1`).
    presence: bool,
}

async fn open(
    state: &AppState,
    req: &HttpRequest,
    channels: Vec<ChannelName>,
    multi: bool,
    asked: Asked,
) -> Result<HttpResponse, ApiError> {
    let Asked {
        token,
        last_id,
        presence,
    } = asked;
    // The application's hook (when configured) and the access policy decide
    // every channel of the stream; the stream ends when the token that
    // opened it expires. Presence events come with the stream: who may
    // subscribe to a channel may see who is on it.
    let access =
        access::authorize_stream(state, req, token.as_deref(), &channels, last_id.as_deref())
            .await?;
    let resume = match &last_id {
        Some(text) => parse_cursor(text, &channels),
        None => vec![None; channels.len()],
    };
    let plan = StreamPlan {
        channels,
        resume,
        filter: None,
        expires_at: access.expires_at,
        notices: Notices::Broker,
        on_close: None,
        identity: access.identity,
        presence,
        recheck: access.hook.map(|hook| hook.question),
    };
    let mut opening = opening::open(state, req, plan).await?;
    let mut cursor = Cursor::new(opening.positions(), multi);
    let retry_ms = state.settings.stream.retry.as_millis();
    let mut prelude = BytesMut::from(sse::prelude(retry_ms).as_bytes());
    for (index, start) in opening.starts.iter_mut().enumerate() {
        if let Some(replay) = start.replay.take() {
            write_replay(
                &mut prelude,
                &mut cursor,
                index,
                &replay,
                last_id.as_deref().unwrap_or_default(),
            );
        }
    }
    let mut response = HttpResponse::Ok();
    // Static names and values: nothing to parse or check per stream.
    response
        .insert_header((
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        ))
        .insert_header((header::CACHE_CONTROL, HeaderValue::from_static("no-cache")))
        .insert_header((
            HeaderName::from_static("x-accel-buffering"),
            HeaderValue::from_static("no"),
        ))
        .insert_header((
            header::CONTENT_ENCODING,
            HeaderValue::from_static("identity"),
        ));
    Ok(opening.respond(
        state,
        req,
        prelude.freeze(),
        cursor,
        response,
        last_id.is_some(),
    ))
}

/// Writes a channel's gap notice (if any), the replay marker and the events.
fn write_replay(
    out: &mut BytesMut,
    cursor: &mut Cursor,
    index: usize,
    replay: &Replay,
    asked: &str,
) {
    let channel = cursor.channel(index).clone();
    if let Some(gap) = replay.gap {
        let data = serde_json::json!({
            "channel": channel.as_str(),
            "lastEventId": asked,
            "reason": gap.as_str(),
            "resumeFrom": replay.from.to_string(),
        });
        let id = cursor.id_for(index);
        out.put_slice(sse::encode_event(&id, Some("broker.gap"), &data.to_string()).full());
    }
    if replay.events.is_empty() {
        return;
    }
    let marker = serde_json::json!({ "channel": channel.as_str(), "count": replay.events.len() });
    out.put(sse::encode_notice("broker.replay", &marker.to_string()));
    for event in &replay.events {
        cursor.write_event(out, index, event);
    }
}
