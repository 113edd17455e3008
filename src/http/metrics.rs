//! `GET /metrics`: the Prometheus text exposition (see `crate::metrics`).
//!
//! Before rendering it asks the registry to sample the gauges only it can
//! compute; if the registry does not answer in time the scrape still
//! succeeds, with the previous sample (and a high `registry_latency_seconds`
//! would have shown why on the scrape before). The application hook's
//! request count and breaker state are read here too.

use actix_web::{HttpResponse, web};

use super::AppState;
use crate::broker::registry::SAMPLE_TIMEOUT;

/// `GET /metrics`
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    if !state.broker.sample_metrics(SAMPLE_TIMEOUT).await {
        log::warn!(
            "metrics sample timed out timeout_ms={}",
            SAMPLE_TIMEOUT.as_millis()
        );
    }
    if let Some(hooks) = &state.hooks {
        state.metrics.hook_requests.absolute(hooks.requests_sent());
        let open = if hooks.breaker_open() { 1.0 } else { 0.0 };
        state.metrics.hook_breaker_open.set(open);
    }
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(state.metrics.render())
}
