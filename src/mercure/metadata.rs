//! `GET /.well-known/oauth-protected-resource/.well-known/mercure`: the
//! hub's OAuth 2.0 protected resource metadata (RFC 9728), so a generic
//! OAuth client learns the audience its tokens need (`resource`), who
//! issues them (`authorization_servers`: the issuers marked
//! `authorization_server`), how to present them (`bearer_methods_supported`:
//! the header; the cookie, not an RFC 6750 method, as `mercure_cookie`),
//! what they must carry (`authorization_details_types_supported`) and
//! whether the subscriptions API is there (`mercure_subscriptions`).
//! `WWW-Authenticate` challenges point here (`resource_metadata`).

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Serialize;

use super::{MercureState, auth::claims::DETAIL_TYPE};

#[derive(Debug, Serialize)]
struct Metadata {
    resource: String,
    bearer_methods_supported: [&'static str; 1],
    #[serde(skip_serializing_if = "Vec::is_empty")]
    authorization_servers: Vec<String>,
    authorization_details_types_supported: [&'static str; 1],
    mercure_cookie: String,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    mercure_subscriptions: bool,
}

/// The metadata document of the hub, as this request's identity makes it.
pub async fn protected_resource_metadata(
    state: web::Data<MercureState>,
    req: HttpRequest,
) -> HttpResponse {
    let hub = state.identity(&req);
    let metadata = Metadata {
        resource: hub.resource,
        bearer_methods_supported: ["header"],
        authorization_servers: state.tokens.authorization_servers(),
        authorization_details_types_supported: [DETAIL_TYPE],
        mercure_cookie: state.settings.mercure.cookie_name.clone(),
        mercure_subscriptions: state.settings.mercure.subscriptions,
    };
    HttpResponse::Ok().json(metadata)
}
