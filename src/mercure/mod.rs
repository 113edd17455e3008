//! The Mercure protocol (<https://mercure.rocks>): a hub at
//! `/.well-known/mercure` that Mercure publishers and subscribers (Symfony,
//! API Platform, Laravel packages, the JavaScript `EventSource` examples)
//! use unchanged. It speaks Mercure 1.0 (the current specification and the
//! reference hub 1.0: `match`/`match_urlpattern` matchers, RFC 9068 access
//! tokens with `authorization_details`, RFC 6750 errors, RFC 9728
//! metadata), and with `mercure.protocol_version_compatibility = 8` the
//! 0.x protocol too, on the same hub.
//!
//! It is a protocol adapter over the broker core, not a second broker: the
//! hub is one internal channel of the broker, whose log orders every update
//! and whose members are the Mercure subscribers, each with a filter (see
//! [`hub`]). Its streams are opened and written like every other stream
//! (`crate::http::stream`).
//!
//! ## Parts
//! - [`hub`]: the hub's channel, its codec and the subscribers' filter.
//! - [`bridge`]: the bridge between our channels and the hub, both ways.
//! - [`subscribe`] (with [`request`]), [`publish`], [`api`], [`metadata`]:
//!   the HTTP endpoints (subscribe with `GET`, `QUERY` and `HEAD`; publish;
//!   the subscriptions API; the protected resource metadata).
//! - [`subscriptions`]: subscription documents, events and the book of
//!   active subscriptions.
//! - [`auth`]: finding and checking access tokens: issuers and their keys,
//!   JWK Sets, what a token grants.
//! - [`identity`]: the hub's URL and resource identifier for a request.
//! - [`topic`]: topic matchers (`exact`, `urlpattern`, 0.x URI templates),
//!   the character rules and the reserved namespace.
//! - [`query`]: query strings and form bodies.
//! - [`update`]: an update, its id and its event-stream encoding.
//! - [`error`]: `MercureError`, the statuses and challenges of the spec.
//!
//! ## Bridge to our channels
//! A channel and the hub topic of the same name are one resource, and the
//! broker's access policy (`crate::auth::policy`) decides it whichever way
//! it is reached. A public update whose topic is a valid channel name is
//! also published on that channel (`/stream/{channel}` subscribers get it)
//! when the publisher may publish to the channel: always with `[auth]` off,
//! with it on when the Mercure token's `publish` matchers cover the
//! channel's name. An event published on a channel (`POST
//! /publish/{channel}`, batches, the demo) is also a Mercure update whose
//! topic is the channel name (`mercure.channel_updates`), with the id
//! `urn:sse-broker:<channel>/<event id>`, received only by subscribers who
//! may read the channel ([`hub`]). Both are published as copies, which are
//! never bridged back, so nothing loops.

pub mod api;
pub mod auth;
pub mod bridge;
pub mod error;
pub mod hub;
pub mod identity;
pub mod metadata;
pub mod publish;
pub mod query;
pub mod request;
pub mod subscribe;
pub mod subscriptions;
pub mod topic;
pub mod update;

use std::sync::Arc;

use actix_web::{HttpRequest, http::Method, web};

use crate::{auth::AccessPolicy, config::Settings, metrics::Metrics};

/// The safe `QUERY` method (RFC 10008): a subscribe whose parameters fit
/// in a body rather than a URL.
pub const QUERY_METHOD: &str = "QUERY";

/// What the Mercure handlers share (the broker is the HTTP layer's
/// `AppState`, which the hub's requests reach as well).
pub struct MercureState {
    pub tokens: auth::TokenChecker,
    /// The broker's one access policy: decides the bridge between channels
    /// and the hub, both ways.
    pub access: Arc<AccessPolicy>,
    pub settings: Arc<Settings>,
    pub metrics: Arc<Metrics>,
    /// This node's active subscriptions (the subscriptions API).
    pub subscriptions: Arc<subscriptions::SubscriptionBook>,
}

impl MercureState {
    /// The hub as `req` sees it (URL, resource identifier, metadata).
    pub fn identity(&self, req: &HttpRequest) -> identity::HubIdentity {
        identity::HubIdentity::of(
            req,
            &self.settings.mercure.resource_identifier,
            &self.settings.limits,
        )
    }
}

/// Mounts the hub's routes.
pub fn configure(cfg: &mut web::ServiceConfig, state: web::Data<MercureState>) {
    let with_api = state.settings.mercure.subscriptions;
    let query = Method::from_bytes(QUERY_METHOD.as_bytes()).expect("QUERY is a valid method");
    cfg.app_data(state)
        .service(
            web::resource(identity::HUB_PATH)
                .route(web::get().to(subscribe::subscribe))
                .route(web::head().to(subscribe::subscribe_head))
                .route(web::method(query).to(subscribe::subscribe_query))
                .route(web::post().to(publish::publish)),
        )
        .service(
            web::resource(identity::METADATA_PATH)
                .route(web::get().to(metadata::protected_resource_metadata))
                .route(web::head().to(metadata::protected_resource_metadata)),
        );
    if with_api {
        let path = subscriptions::SUBSCRIPTIONS_PATH;
        cfg.route(path, web::get().to(api::subscriptions_api))
            .route(
                &format!("{path}/{{rest:.*}}"),
                web::get().to(api::subscriptions_api),
            );
    }
}
