//! `GET /metrics`: the Prometheus text exposition (see `crate::metrics`).
//!
//! Before rendering it asks the registry to sample the gauges only it can
//! compute; if the registry does not answer in time the scrape still
//! succeeds, with the previous sample (and a high `registry_latency_seconds`
//! would have shown why on the scrape before). The application hooks'
//! request counts and breaker states (subscribe and publish hooks together)
//! are read here too.

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
    let hooks = [&state.hooks, &state.publish_hook];
    let hooks = || hooks.into_iter().flatten();
    if hooks().next().is_some() {
        let sent = hooks().map(|hook| hook.requests_sent()).sum();
        state.metrics.hook_requests.absolute(sent);
        let open = hooks().any(|hook| hook.breaker_open());
        state
            .metrics
            .hook_breaker_open
            .set(if open { 1.0 } else { 0.0 });
    }
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(state.metrics.render())
}
