//! The Mercure protocol (<https://mercure.rocks>): a hub at
//! `/.well-known/mercure` that Mercure publishers and subscribers (Symfony,
//! API Platform, Laravel packages, the JavaScript `EventSource` examples)
//! use unchanged. It is a protocol adapter over the broker core, not a
//! second broker: the hub is one internal channel of the broker, whose log
//! orders every update and whose members are the Mercure subscribers, each
//! with a filter (see [`hub`]). Its streams are opened and written like
//! every other stream (`crate::http::opening`, `crate::http::writer`).
//!
//! ## Parts
//! - [`hub`]: the hub's channel, its codec, the subscribers' filter and the
//!   bridge from our channels.
//! - [`subscribe`], [`publish`], [`subscriptions`]: the HTTP endpoints
//!   (subscribe and `HEAD`, publish, the subscriptions API and events).
//! - [`query`]: reading query strings and forms, and the hub's URL.
//! - [`auth`]: finding and checking JWTs (`mercure.publish`,
//!   `mercure.subscribe`, `mercure.payload` claims, and draft-08
//!   `authorization_details`).
//! - [`topic`]: topic selectors: `*`, exact topics, URI templates (`topic`)
//!   and the draft-08 matcher types `Exact` and `URLPattern` (`match*`).
//! - [`update`]: an update, its id and its event-stream encoding.
//! - [`error`]: `MercureError`, the statuses the Mercure spec asks for.
//!
//! ## Bridge to our channels
//! A public update whose topic is a valid channel name is also published on
//! that channel (`/stream/{channel}` subscribers get it); an event published
//! on a channel (`POST /publish/{channel}`, batches, the demo) is also a
//! public Mercure update whose topic is the channel name
//! (`mercure.channel_updates`), with the id
//! `urn:sse-broker:<channel>/<event id>`. Both are published as copies, which
//! are never bridged back, so nothing loops.

pub mod auth;
pub mod error;
pub mod hub;
pub mod publish;
pub mod query;
pub mod subscribe;
pub mod subscriptions;
pub mod topic;
pub mod update;

use std::sync::Arc;

use actix_web::web;

use crate::{config::Settings, metrics::Metrics};

/// What the Mercure handlers share (the broker is the HTTP layer's
/// `AppState`, which the hub's requests reach as well).
pub struct MercureState {
    pub tokens: auth::TokenChecker,
    pub settings: Arc<Settings>,
    pub metrics: Arc<Metrics>,
    /// This node's active subscriptions (the subscriptions API).
    pub subscriptions: Arc<subscriptions::SubscriptionBook>,
}

/// Mounts the hub's routes.
pub fn configure(cfg: &mut web::ServiceConfig, state: web::Data<MercureState>) {
    let with_api = state.settings.mercure.subscriptions;
    cfg.app_data(state).service(
        web::resource(query::HUB_PATH)
            .route(web::get().to(subscribe::subscribe))
            .route(web::head().to(subscribe::subscribe_head))
            .route(web::post().to(publish::publish)),
    );
    if with_api {
        let path = subscriptions::SUBSCRIPTIONS_PATH;
        cfg.route(path, web::get().to(subscriptions::subscriptions_api))
            .route(
                &format!("{path}/{{rest:.*}}"),
                web::get().to(subscriptions::subscriptions_api),
            );
    }
}
