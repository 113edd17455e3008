//! `GET /channels/{channel}/presence`: who is on a channel — its
//! connections (`count`, with or without an identity) and its listed
//! users, each with its connections and info (`members`); `?count=1`
//! answers the count alone, for big channels. In cluster mode every live
//! node's are summed. Reading a channel's presence is subscribing to it in
//! the access policy's eyes (both show what the channel's subscribers
//! see): a protected channel's needs a token that may subscribe to it, or
//! the application hook's allow, asked as for a stream of that channel.

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;

use super::{AppState, access::authorize_stream, stream::routes::yes_or_no};
use crate::{error::ApiError, names::ChannelName};

#[derive(Debug, Deserialize)]
pub struct PresenceQuery {
    /// `1` (or `true`): the count alone.
    count: Option<String>,
}

/// `GET /channels/{channel}/presence`
pub async fn presence(
    state: web::Data<AppState>,
    path: web::Path<String>,
    query: web::Query<PresenceQuery>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let channel = ChannelName::parse(&path).map_err(ApiError::InvalidChannel)?;
    let count_only = yes_or_no("count", query.count.as_deref())?;
    authorize_stream(&state, &req, None, std::slice::from_ref(&channel), None).await?;
    let max = state.settings.limits.max_presence_members;
    let presence = state.broker.presence(&channel, !count_only, max).await?;
    if count_only {
        return Ok(HttpResponse::Ok().json(serde_json::json!({ "count": presence.count })));
    }
    Ok(HttpResponse::Ok().json(presence))
}
