//! `POST /pulse` (a client says it is alive) and `GET /pulses` (who is).

use std::sync::Arc;

use actix_web::{HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};

use super::{
    AppState,
    body::{BodyKind, read_body, utf8},
};
use crate::{broker::pulse::validate_client_id, error::ApiError, names::ChannelName};

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
    let client: Arc<str> = client_id.as_str().into();
    state.broker.pulse(client, channel).await?;
    Ok(HttpResponse::Ok().json(PulseAnswer { id: client_id }))
}

/// `GET /pulses`: every remembered client, most recently seen first.
pub async fn pulses(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(state.broker.pulses().await?))
}
