//! The HTTP API: one file per resource, each handler thin (validate, send
//! one message to the registry, shape the answer). [`configure`] mounts them.

pub mod body;
pub mod channels;
pub mod publish;
pub mod pulse;
pub mod session;
pub mod stream;

use std::sync::Arc;

use actix::Addr;
use actix_web::web;
use tokio::sync::oneshot;

use crate::{
    broker::{
        ChannelName, EventType, RegistryActor, await_reply, channel::Publish, channel::Published,
    },
    cluster::Cluster,
    config::Settings,
    error::ApiError,
};

/// What every handler shares.
pub struct AppState {
    pub registry: Addr<RegistryActor>,
    pub settings: Arc<Settings>,
    /// Set in cluster mode; `is_connected()` is the node's readiness.
    pub cluster: Option<Cluster>,
}

impl AppState {
    /// Publishes one event and waits for its id.
    pub async fn publish(
        &self,
        channel: ChannelName,
        event_type: Option<EventType>,
        data: String,
    ) -> Result<Published, ApiError> {
        let (reply, answer) = oneshot::channel();
        self.registry.do_send(Publish {
            channel,
            event_type,
            data,
            reply: Some(reply),
        });
        Ok(await_reply(answer).await?)
    }
}

/// Mounts every route of the API (static files are mounted by `startup`).
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/stream", web::get().to(stream::stream_many))
        .route("/stream/{channel}", web::get().to(stream::stream_one))
        .route("/publish", web::post().to(publish::publish_batch))
        .route("/publish/{channel}", web::post().to(publish::publish_one))
        .route("/pulse", web::post().to(pulse::pulse))
        .route("/pulses", web::get().to(pulse::pulses))
        .route("/channels", web::get().to(channels::list))
        .route("/channels/{channel}", web::get().to(channels::detail))
        .route("/killSession", web::delete().to(session::kill_session))
        .route("/killall", web::delete().to(session::kill_all));
}
