//! `GET /openapi.json`: the OpenAPI 3 description of the whole HTTP API,
//! hand-written in `docs/openapi.json` and compiled in.

use actix_web::HttpResponse;

/// The spec, as committed.
pub const SPEC: &str = include_str!("../../docs/openapi.json");

pub async fn spec() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(SPEC)
}
