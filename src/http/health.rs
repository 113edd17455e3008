//! `GET /healthz` (the process is alive) and `GET /readyz` (it can serve:
//! every [`Readiness`](crate::readiness::Readiness) check passed). Both are
//! cheap, unauthenticated and answer JSON; `/readyz` answers 503 while the
//! broker drains, so a load balancer stops sending it new clients.

use actix_web::{HttpResponse, http::header, web};
use serde_json::json;

use super::AppState;

/// `GET /healthz`: answers as long as the HTTP server runs; touches no actor.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(json!({ "status": "alive" }))
}

/// `GET /readyz`: 200 when every readiness check passed, 503 otherwise.
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let checks = state.readiness.evaluate().await;
    let ready = checks.iter().all(|check| check.ok);
    let mut response = if ready {
        HttpResponse::Ok()
    } else {
        HttpResponse::ServiceUnavailable()
    };
    response
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(json!({
            "status": if ready { "ready" } else { "not-ready" },
            "checks": checks,
        }))
}
