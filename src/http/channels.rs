//! `GET /channels` and `GET /channels/{channel}`: what each live channel
//! holds (in cluster mode with the other nodes' subscribers added).

use actix_web::{HttpResponse, web};
use serde::Serialize;

use super::AppState;
use crate::{broker::ChannelSummary, error::ApiError, names::ChannelName};

/// `GET /channels`
pub async fn list(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let channels = state.broker.channels(None).await?;
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
) -> Result<HttpResponse, ApiError> {
    let channel = ChannelName::parse(&path).map_err(ApiError::InvalidChannel)?;
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
