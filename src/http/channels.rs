//! `GET /channels` and `GET /channels/{channel}`: what each live channel holds.

use actix_web::{HttpResponse, web};
use serde::Serialize;
use tokio::sync::oneshot;

use super::{AppState, pulse::unavailable};
use crate::{
    broker::{
        ChannelName, await_reply,
        channel::Inspect,
        registry::{ChannelSummary, ListChannels},
    },
    error::ApiError,
};

/// `GET /channels`
pub async fn list(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let mut channels = state
        .registry
        .send(ListChannels { name: None })
        .await
        .map_err(|_| unavailable())?;
    add_other_nodes(&state, &mut channels, true).await?;
    Ok(HttpResponse::Ok().json(channels))
}

/// Cluster mode: adds the other nodes' subscribers (and, for the full
/// listing, channels that only other nodes hold) to this node's channels.
async fn add_other_nodes(
    state: &AppState,
    channels: &mut Vec<ChannelSummary>,
    add_missing: bool,
) -> Result<(), ApiError> {
    let Some(cluster) = &state.cluster else {
        return Ok(());
    };
    let mut remote = cluster.remote_subscriber_counts().await?;
    for channel in channels.iter_mut() {
        channel.subscribers += remote.remove(&channel.name).unwrap_or(0);
    }
    if add_missing {
        channels.extend(
            remote
                .into_iter()
                .map(|(name, subscribers)| ChannelSummary {
                    name,
                    subscribers,
                    ..ChannelSummary::default()
                }),
        );
        channels.sort_by(|a, b| a.name.cmp(&b.name));
    }
    Ok(())
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
    let (reply, answer) = oneshot::channel();
    state.registry.do_send(Inspect {
        channel: channel.clone(),
        reply,
    });
    let detail = await_reply(answer).await?;
    let mut summaries = state
        .registry
        .send(ListChannels {
            name: Some(channel.clone()),
        })
        .await
        .map_err(|_| unavailable())?;
    add_other_nodes(&state, &mut summaries, false).await?;
    let summary = summaries
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
