//! Revocation: `POST /users/{user}/disconnect` ends every stream of a user
//! (its identity: the hook's `user` or the token's `sub`), on every node;
//! `POST /users/{user}/unsubscribe` with `{"channels": [...]}` ends those
//! of its streams that hold one of the channels. Each ended stream hears
//! `event: broker.revoked` and a reconnect hint; its reconnect then reaches
//! the application's hook, whose denial makes the revocation stick
//! (`docs/hooks.md`). Answers `202 {"streams", "nodes", "unanswered"}`
//! (see [`Revoked`]). With auth on the caller needs the `users` grant
//! (`crate::http::access::check_revoker`).

use actix_web::{HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};

use super::{
    AppState,
    access::check_revoker,
    body::{BodyKind, read_body},
};
use crate::{
    broker::revocation::{Listener, Revocation, Revoked},
    error::ApiError,
    hooks::{Hooks, answer::MAX_USER_BYTES},
    names::ChannelName,
};

/// Most channels one `unsubscribe` may name (each is one message to its
/// channel).
pub const MAX_CHANNELS: usize = 1000;

/// The answer of both routes.
#[derive(Debug, Serialize)]
struct Answer {
    /// Streams ended: this node's and those the other nodes reported.
    streams: usize,
    /// Nodes that reported, this one included.
    nodes: usize,
    /// Nodes that received the revocation but did not report in time
    /// (`cluster.command_timeout`): they end the streams uncounted.
    unanswered: usize,
}

impl From<Revoked> for Answer {
    fn from(revoked: Revoked) -> Self {
        Self {
            streams: revoked.streams,
            nodes: revoked.nodes,
            unanswered: revoked.unanswered,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UnsubscribeBody {
    channels: Vec<String>,
}

/// The user id of the path: 1 to [`MAX_USER_BYTES`] bytes, no control
/// characters (what an identity can carry).
fn user_of(path: &str) -> Result<std::sync::Arc<str>, ApiError> {
    if path.is_empty() || path.len() > MAX_USER_BYTES || path.chars().any(char::is_control) {
        return Err(ApiError::InvalidQuery(format!(
            "a user id is 1 to {MAX_USER_BYTES} bytes without control characters"
        )));
    }
    Ok(path.into())
}

/// `POST /users/{user}/disconnect`
pub async fn disconnect(
    state: web::Data<AppState>,
    path: web::Path<String>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    check_revoker(&state, &req)?;
    let revocation = Revocation {
        user: user_of(&path)?,
        channels: None,
    };
    revoke(&state, revocation).await
}

/// `POST /users/{user}/unsubscribe` with `{"channels": ["a", "b"]}`
pub async fn unsubscribe(
    state: web::Data<AppState>,
    path: web::Path<String>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    check_revoker(&state, &req)?;
    let user = user_of(&path)?;
    if BodyKind::of(&req)? != BodyKind::Json {
        return Err(ApiError::UnsupportedMediaType(
            "send {\"channels\": [...]} as application/json".into(),
        ));
    }
    let body = read_body(&req, payload, state.settings.server.max_body_bytes).await?;
    let body: UnsubscribeBody = serde_json::from_slice(&body)
        .map_err(|err| ApiError::InvalidBody(format!("expected {{\"channels\": [...]}}: {err}")))?;
    if body.channels.is_empty() || body.channels.len() > MAX_CHANNELS {
        return Err(ApiError::InvalidBody(format!(
            "name 1 to {MAX_CHANNELS} channels"
        )));
    }
    let channels = body
        .channels
        .iter()
        .map(|name| ChannelName::parse(name).map_err(ApiError::InvalidChannel))
        .collect::<Result<Vec<_>, _>>()?;
    let revocation = Revocation {
        user,
        channels: Some(channels),
    };
    revoke(&state, revocation).await
}

async fn revoke(state: &AppState, revocation: Revocation) -> Result<HttpResponse, ApiError> {
    let revoked = state.broker.revoke(&revocation).await?;
    log::info!(
        "user revoked user={} streams={} nodes={} unanswered={}",
        revocation.user,
        revoked.streams,
        revoked.nodes,
        revoked.unanswered
    );
    Ok(HttpResponse::Accepted().json(Answer::from(revoked)))
}

/// The application hook's answer cache, told of every revocation carried
/// out on this node (requested here or by another node): the user's cached
/// allows are forgotten, so its next stream asks the application.
pub struct ForgetAnswers(pub std::sync::Arc<Hooks>);

impl Listener for ForgetAnswers {
    fn revoked(&self, revocation: &Revocation) {
        self.0.forget(&revocation.user);
    }
}
