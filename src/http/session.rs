//! Seed compatibility: `DELETE /killSession` and `DELETE /killall` tell
//! browser tabs to close their streams by publishing their ids on the
//! `killSession` channel. With auth on, both need a token that may publish
//! to `killSession`; the publish hook, when configured, is asked as for a
//! publish to it.

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Serialize;

use super::{
    AppState,
    access::{Publisher, ask_publish_hook},
    body::{BodyKind, read_body, utf8},
    publish::PublishedEvent,
};
use crate::{
    broker::{log::Record, pulse::validate_client_id},
    error::ApiError,
    hooks::Asking,
    names::ChannelName,
};

/// The channel browser tabs listen on for their own id.
pub const KILL_CHANNEL: &str = "killSession";

fn kill_channel() -> ChannelName {
    ChannelName::parse(KILL_CHANNEL).expect("the kill channel name follows the channel grammar")
}

/// Publishes one tab id (as a JSON string) on the kill channel.
async fn kill(state: &AppState, tab_id: &str) -> Result<PublishedEvent, ApiError> {
    let data = serde_json::to_string(tab_id).map_err(|e| ApiError::InvalidBody(e.to_string()))?;
    let record = Record::plain(None, data);
    let published = state
        .broker
        .publish(&kill_channel(), record, std::time::Instant::now(), false)
        .await?;
    Ok(PublishedEvent {
        id: published.id.to_string(),
        channel: KILL_CHANNEL.into(),
        subscribers: published.subscribers,
    })
}

/// `DELETE /killSession` with the tab id as a JSON string (or plain text).
pub async fn kill_session(
    state: web::Data<AppState>,
    publisher: Publisher,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    publisher.check(&kill_channel())?;
    ask_publish_hook(&state, &req, Asking::Publish, vec![KILL_CHANNEL.into()]).await?;
    let kind = BodyKind::of(&req)?;
    let body = read_body(&req, payload, state.settings.server.max_body_bytes).await?;
    let text = utf8(&body)?;
    let tab_id = match kind {
        BodyKind::Text => text.trim().to_owned(),
        BodyKind::Json => serde_json::from_str::<String>(text).map_err(|_| {
            ApiError::InvalidBody("expected the tab id as a JSON string, e.g. \"tab-123\"".into())
        })?,
    };
    validate_client_id(&tab_id).map_err(ApiError::InvalidBody)?;
    Ok(HttpResponse::Accepted().json(kill(&state, &tab_id).await?))
}

#[derive(Debug, Serialize)]
struct KillAllAnswer {
    killed: Vec<String>,
    events: Vec<PublishedEvent>,
}

/// `DELETE /killall`: every tab that ever pulsed (and is still remembered).
pub async fn kill_all(
    state: web::Data<AppState>,
    publisher: Publisher,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    publisher.check(&kill_channel())?;
    ask_publish_hook(&state, &req, Asking::Publish, vec![KILL_CHANNEL.into()]).await?;
    let clients = state.broker.known_clients().await?;
    let mut events = Vec::with_capacity(clients.len());
    for client in &clients {
        events.push(kill(&state, client).await?);
    }
    let killed = clients.iter().map(|c| c.to_string()).collect();
    Ok(HttpResponse::Accepted().json(KillAllAnswer { killed, events }))
}
