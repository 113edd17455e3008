//! The HTTP API: one file per resource, each handler thin (validate, ask
//! the broker once, shape the answer). [`configure`] mounts them.
//!
//! Event streams of every protocol are opened by [`opening`] and written by
//! one of the two [`writer`]s from a subscriber's [`outbox`]; [`guard`]
//! holds the token checks and request limits (keyed by [`client_ip`]),
//! [`body`] request bodies. The
//! broker's errors become [`ApiError`]s here, in one place.

pub mod body;
pub mod channels;
pub mod client_ip;
pub mod guard;
pub mod health;
pub mod metrics;
pub mod openapi;
pub mod opening;
pub mod outbox;
pub mod publish;
pub mod pulse;
pub mod session;
pub mod stream;
pub mod writer;

use std::{sync::Arc, time::Instant};

use actix_web::{HttpRequest, web};

use crate::{
    auth::{AccessPolicy, Auth},
    broker::{Broker, BrokerError, log::Record, message::Published},
    config::Settings,
    error::ApiError,
    metrics::Metrics,
    names::{ChannelName, EventType},
    readiness::Readiness,
};

/// What every handler shares.
pub struct AppState {
    pub broker: Broker,
    pub settings: Arc<Settings>,
    pub metrics: Arc<Metrics>,
    pub readiness: Readiness,
    /// How our tokens are read and verified.
    pub auth: Auth,
    /// The one access policy (shared with the Mercure hub).
    pub access: Arc<AccessPolicy>,
    pub limits: guard::Limits,
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
        let record = Record::plain(event_type, data);
        Ok(self
            .broker
            .publish(&channel, record, received_at, false)
            .await?)
    }
}

impl From<BrokerError> for ApiError {
    /// The one mapping of the broker's refusals to HTTP (a full broker and
    /// a failed backend are 503 with Retry-After).
    fn from(err: BrokerError) -> Self {
        match err {
            BrokerError::TooManyChannels(_) => Self::TooManyChannels(err.to_string()),
            BrokerError::UnknownChannel(_) => Self::NotFound(err.to_string()),
            BrokerError::TooManySubscribers(_) => Self::TooManySubscribers(err.to_string()),
            BrokerError::ShuttingDown
            | BrokerError::Unavailable
            | BrokerError::StoreUnavailable(_) => Self::Unavailable(err.to_string()),
        }
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
