//! `GET /channels` and `GET /channels/{channel}`: what each live channel
//! holds (in cluster mode with the other nodes' subscribers added). A
//! caller sees only the channels the access policy lets it inspect: with
//! auth on, a protected channel needs a token that may subscribe to it (or
//! the `monitor` grant), in the listing as in its details.

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Serialize;

use super::{AppState, access::Caller};
use crate::{auth::Action, broker::ChannelSummary, error::ApiError, names::ChannelName};

/// `GET /channels`
pub async fn list(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let caller = Caller::of(&state.auth, &req, None)?;
    let mut channels = state.broker.channels(None).await?;
    channels.retain(|summary| {
        ChannelName::parse(&summary.name).is_ok_and(|channel| {
            state
                .access
                .decide(caller.rights(), Action::Inspect, &channel)
                .is_ok()
        })
    });
    Ok(HttpResponse::Ok().json(channels))
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ChannelDetailBody {
    #[serde(flatten)]
    summary: ChannelSummary,
    /// The oldest event still retained for replay.
    oldest_event_id: Option<String>,
    pulses_by_client: serde_json::Map<String, serde_json::Value>,
}

/// `GET /channels/{channel}`: 404 for a channel that is not live.
pub async fn detail(
    state: web::Data<AppState>,
    path: web::Path<String>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let channel = ChannelName::parse(&path).map_err(ApiError::InvalidChannel)?;
    Caller::of(&state.auth, &req, None)?.check(&state.access, Action::Inspect, &channel)?;
    let detail = state.broker.inspect(&channel).await?;
    let summary = state
        .broker
        .channels(Some(channel.clone()))
        .await?
        .pop()
        .ok_or_else(|| ApiError::NotFound(format!("no channel named {:?}", channel.as_str())))?;
    Ok(HttpResponse::Ok().json(ChannelDetailBody {
        summary,
        oldest_event_id: detail.oldest.map(|id| id.to_string()),
        pulses_by_client: detail
            .pulses_by_client
            .into_iter()
            .map(|(client, count)| (client.to_string(), count.into()))
            .collect(),
    }))
}
