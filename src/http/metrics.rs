//! `GET /metrics`: the Prometheus text exposition (see `crate::metrics`).
//!
//! Before rendering it asks the registry to sample the gauges only it can
//! compute; if the registry does not answer in time the scrape still
//! succeeds, with the previous sample (and a high `registry_latency_seconds`
//! would have shown why on the scrape before).

use std::time::Instant;

use actix_web::{HttpResponse, web};

use super::AppState;
use crate::broker::registry::{SAMPLE_TIMEOUT, SampleMetrics};

/// `GET /metrics`
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    let sample = state.registry.send(SampleMetrics {
        sent_at: Instant::now(),
    });
    if tokio::time::timeout(SAMPLE_TIMEOUT, sample).await.is_err() {
        log::warn!(
            "metrics sample timed out timeout_ms={}",
            SAMPLE_TIMEOUT.as_millis()
        );
    }
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(state.metrics.render())
}
