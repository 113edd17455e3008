//! The HTTP API: one file per resource, each handler thin (validate, send
//! one message to the registry, shape the answer). [`configure`] mounts them.

pub mod body;
pub mod channels;
pub mod guard;
pub mod health;
pub mod metrics;
pub mod openapi;
pub mod publish;
pub mod pulse;
pub mod session;
pub mod stream;

use std::{sync::Arc, time::Instant};

use actix::Addr;
use actix_web::{HttpRequest, web};
use tokio::sync::oneshot;

use crate::{
    auth::Auth,
    broker::{
        ChannelName, EventType, RegistryActor, await_reply,
        channel::{Publish, Published},
        registry::Directory,
    },
    cluster::Cluster,
    config::Settings,
    error::ApiError,
    metrics::Metrics,
    readiness::Readiness,
};

/// What every handler shares.
pub struct AppState {
    pub registry: Addr<RegistryActor>,
    /// Running channels: a publish goes straight to its channel's actor.
    pub directory: Directory,
    pub settings: Arc<Settings>,
    pub metrics: Arc<Metrics>,
    pub readiness: Readiness,
    pub auth: Auth,
    pub limits: guard::Limits,
    /// Set in cluster mode; `is_connected()` is the node's readiness.
    pub cluster: Option<Cluster>,
}

impl AppState {
    /// The application's state, for extractors and the Mercure routes.
    pub fn of(req: &HttpRequest) -> Result<&web::Data<AppState>, ApiError> {
        req.app_data::<web::Data<AppState>>()
            .ok_or_else(|| ApiError::Unavailable("the broker is not set up".into()))
    }

    /// Publishes one event and waits for its id; `received_at` is when the
    /// request reached its handler (for the latency metric).
    pub async fn publish(
        &self,
        channel: ChannelName,
        event_type: Option<EventType>,
        data: String,
        received_at: Instant,
    ) -> Result<Published, ApiError> {
        let (reply, answer) = oneshot::channel();
        let msg = Publish {
            channel,
            event_type,
            data,
            reply: Some(reply),
            received_at,
            mirror: true,
        };
        if let Err(msg) = self.directory.publish(msg) {
            self.registry.do_send(msg);
        }
        Ok(await_reply(answer).await?)
    }
}

/// Mounts every route of the API (static files are mounted by `startup`).
pub fn configure(cfg: &mut web::ServiceConfig) {
    // Routes are tried in this order, each dynamic one with a regex: the
    // busiest (a publish) goes first.
    cfg.route("/publish/{channel}", web::post().to(publish::publish_one))
        .route("/publish", web::post().to(publish::publish_batch))
        .route("/stream", web::get().to(stream::stream_many))
        .route("/stream/{channel}", web::get().to(stream::stream_one))
        .route("/pulse", web::post().to(pulse::pulse))
        .route("/pulses", web::get().to(pulse::pulses))
        .route("/channels", web::get().to(channels::list))
        .route("/channels/{channel}", web::get().to(channels::detail))
        .route("/killSession", web::delete().to(session::kill_session))
        .route("/killall", web::delete().to(session::kill_all))
        .route("/openapi.json", web::get().to(openapi::spec));
}

/// Mounts the operations endpoints: `/healthz`, `/readyz` and, when
/// enabled, `/metrics`.
pub fn configure_operations(cfg: &mut web::ServiceConfig, settings: &Settings) {
    cfg.route("/healthz", web::get().to(health::healthz))
        .route("/readyz", web::get().to(health::readyz));
    if settings.metrics.enabled {
        cfg.route("/metrics", web::get().to(metrics::metrics));
    }
}
