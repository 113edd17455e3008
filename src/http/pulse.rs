//! `POST /pulse` (a client says it is alive) and `GET /pulses` (who is).
//!
//! With auth on, a pulse that names a channel needs what a stream of that
//! channel needs (and one that names none needs a token when anonymous
//! subscribers are not allowed), and the pulse book needs the `monitor`
//! grant: it lists every client, across channels. A listing holds at most
//! [`MAX_PULSES_LIMIT`] clients.

use std::sync::Arc;

use actix_web::{HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};

use super::{
    AppState,
    access::Caller,
    body::{BodyKind, read_body, utf8},
};
use crate::{auth::Action, broker::pulse::validate_client_id, error::ApiError, names::ChannelName};

/// Clients in a `GET /pulses` answer unless `limit` says otherwise.
pub const DEFAULT_PULSES_LIMIT: usize = 100;
/// Most clients one `GET /pulses` answer lists: a full book
/// (`pulses.max_clients`, 100,000 in production) would make an answer of
/// tens of MB, polled by every open console.
pub const MAX_PULSES_LIMIT: usize = 1000;

/// A pulse body: the seed's bare JSON string, or an object naming a channel.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum PulseBody {
    TabId(String),
    #[serde(rename_all = "camelCase")]
    Client {
        client_id: String,
        channel: Option<String>,
    },
}

#[derive(Debug, Serialize)]
struct PulseAnswer {
    id: String,
}

/// `POST /pulse` with `"tab-123"` or `{"clientId": "tab-123", "channel": "test"}`
/// (`text/plain` bodies are the bare id).
pub async fn pulse(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let caller = Caller::of(&state.auth, &req, None)?;
    let kind = BodyKind::of(&req)?;
    let body = read_body(&req, payload, state.settings.server.max_body_bytes).await?;
    let text = utf8(&body)?;
    let (client_id, channel) = match kind {
        BodyKind::Text => (text.trim().to_owned(), None),
        BodyKind::Json => match serde_json::from_str::<PulseBody>(text) {
            Ok(PulseBody::TabId(id)) => (id, None),
            Ok(PulseBody::Client { client_id, channel }) => (client_id, channel),
            Err(_) => {
                return Err(ApiError::InvalidBody(
                    "expected a JSON string (the client id) or {\"clientId\": …, \"channel\": …}"
                        .into(),
                ));
            }
        },
    };
    validate_client_id(&client_id).map_err(ApiError::InvalidBody)?;
    let channel = channel
        .map(|c| ChannelName::parse(&c))
        .transpose()
        .map_err(ApiError::InvalidChannel)?;
    match &channel {
        Some(channel) => caller.check(&state.access, Action::Subscribe, channel)?,
        None => caller.check_unscoped_pulse(&state.access)?,
    }
    let client: Arc<str> = client_id.as_str().into();
    state.broker.pulse(client, channel).await?;
    Ok(HttpResponse::Ok().json(PulseAnswer { id: client_id }))
}

#[derive(Debug, Deserialize)]
pub struct PulsesQuery {
    limit: Option<usize>,
}

/// `GET /pulses?limit=N`: the `N` (default [`DEFAULT_PULSES_LIMIT`], at
/// most [`MAX_PULSES_LIMIT`]) most recently seen clients, newest first.
pub async fn pulses(
    state: web::Data<AppState>,
    req: HttpRequest,
    query: web::Query<PulsesQuery>,
) -> Result<HttpResponse, ApiError> {
    Caller::of(&state.auth, &req, None)?.check_pulse_book(&state.access)?;
    let limit = match query.limit {
        None => DEFAULT_PULSES_LIMIT,
        Some(limit @ 1..=MAX_PULSES_LIMIT) => limit,
        Some(_) => {
            return Err(ApiError::InvalidQuery(format!(
                "limit must be between 1 and {MAX_PULSES_LIMIT}"
            )));
        }
    };
    Ok(HttpResponse::Ok().json(state.broker.pulses(limit).await?))
}
