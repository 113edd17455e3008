//! Integration tests: the real application on port 0, spoken to over HTTP.
//! One binary, one module per area; each test is a scenario.

mod access;
mod acme;
mod auth;
mod channels;
mod cluster;
mod drain;
mod durable;
mod errors;
mod helpers;
mod history;
mod hooks;
mod hooks_support;
mod idempotency;
mod limits;
mod mercure_compat;
mod mercure_issuers;
mod mercure_modern;
mod mercure_selectors;
mod mercure_support;
mod multi_channel;
mod openapi;
mod operations;
mod proxy;
mod pulses;
mod redis_cluster;
mod redis_cluster_support;
mod redis_support;
mod resume;
mod shutdown;
mod slow_consumer;
mod stream;
mod tls;
mod tls_support;
