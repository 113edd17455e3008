//! The HTTP API: one file per resource, each handler thin: it validates
//! its input, asks the broker what it needs, and shapes the answer. Most
//! ask once (a history read too); a batch publish asks once per event,
//! `/killall` once for the tabs and once per tab, a channel's detail twice,
//! a stream once per channel (all at once). [`configure`] mounts them.
//!
//! [`stream`] holds our `/stream` routes and the event-stream machinery of
//! every protocol (opening a stream, the subscriber's outbox, the two
//! writers); [`access`] applies the access policy to our routes' requests
//! (tokens, the publish rate; client IPs from [`client_ip`]); [`body`]
//! reads request bodies; [`users`] ends a user's streams (revocation). The broker's refusals become [`ApiError`]s in one
//! place, the `From<BrokerError>` below, for our routes; the Mercure hub
//! answers with its own errors (`crate::mercure::error`).

pub mod access;
pub mod body;
pub mod channels;
pub mod client_ip;
pub mod health;
pub mod history;
pub mod metrics;
pub mod openapi;
pub mod presence;
pub mod publish;
pub mod pulse;
pub mod session;
pub mod stream;
pub mod users;

use std::sync::Arc;

use actix_web::{HttpRequest, web};

use crate::{
    auth::{AccessPolicy, Auth},
    broker::{Broker, BrokerError},
    config::Settings,
    error::ApiError,
    hooks::Hooks,
    metrics::Metrics,
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
    /// The publish rate limit.
    pub limits: access::Limits,
    /// Open streams per client IP.
    pub stream_slots: Arc<stream::slots::StreamSlots>,
    /// The application's authorization hook (`[hooks]`), when configured.
    pub hooks: Option<Arc<Hooks>>,
    /// The application's publish hook (`hooks.publish_url`), when configured.
    pub publish_hook: Option<Arc<Hooks>>,
}

impl AppState {
    /// The application's state, for extractors and the Mercure routes.
    pub fn of(req: &HttpRequest) -> Result<&web::Data<AppState>, ApiError> {
        req.app_data::<web::Data<AppState>>()
            .ok_or_else(|| ApiError::Unavailable("the broker is not set up".into()))
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
            BrokerError::IdempotencyKeyReused => Self::IdempotencyKeyReused(err.to_string()),
            BrokerError::IdempotencyKeyInFlight => Self::IdempotencyKeyInFlight(err.to_string()),
        }
    }
}

/// Mounts every route of the API (static files are mounted by `startup`).
pub fn configure(cfg: &mut web::ServiceConfig) {
    // Routes are tried in this order, each dynamic one with a regex: the
    // busiest (a publish) goes first.
    cfg.route("/publish/{channel}", web::post().to(publish::publish_one))
        .route("/publish", web::post().to(publish::publish_batch))
        .route("/stream", web::get().to(stream::routes::stream_many))
        .route(
            "/stream/{channel}",
            web::get().to(stream::routes::stream_one),
        )
        .route("/pulse", web::post().to(pulse::pulse))
        .route("/pulses", web::get().to(pulse::pulses))
        .route("/channels", web::get().to(channels::list))
        .route("/channels/{channel}", web::get().to(channels::detail))
        .route("/channels/{channel}/history", web::get().to(history::read))
        .route(
            "/channels/{channel}/presence",
            web::get().to(presence::presence),
        )
        .route("/killSession", web::delete().to(session::kill_session))
        .route("/killall", web::delete().to(session::kill_all))
        .route(
            "/users/{user}/disconnect",
            web::post().to(users::disconnect),
        )
        .route(
            "/users/{user}/unsubscribe",
            web::post().to(users::unsubscribe),
        )
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
