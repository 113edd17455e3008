//! The middleware the server wraps every route in, from the configuration:
//! the access log ([`access_log`]) and CORS ([`cors`], with its origin
//! patterns).

use actix_cors::Cors;
use actix_web::{
    http::{Method, header},
    middleware::Logger,
};

use crate::{
    config::{CorsSettings, LimitsSettings, LogSettings},
    http::client_ip::client_ip,
    mercure,
};

/// The access log middleware: one `access …` line per request, `remote`
/// the client IP the limits count (behind trusted proxies, the client's, not
/// the proxy's) and `peer` the socket's address; event streams only when
/// `access_log_streams` is set (the line is written once the response head
/// is out: the connection then belongs to the stream's writer).
pub(super) fn access_log(settings: &LogSettings, limits: &LimitsSettings) -> Logger {
    let limits = limits.clone();
    let logger =
        Logger::new("access remote=%{client}xi peer=%a request=\"%r\" status=%s bytes=%b ms=%D")
            .custom_request_replace("client", move |req| {
                client_ip(req.request(), &limits).to_string()
            });
    if settings.access_log_streams {
        logger
    } else {
        logger.exclude_regex("^/stream")
    }
}

/// CORS from the configuration: listed origins (a `:*` port matches any
/// port), preflight answered, credentials only when configured.
pub(super) fn cors(settings: &CorsSettings) -> Cors {
    let patterns = settings.allowed_origins.clone();
    let mut cors = if patterns.iter().any(|p| p == "*") {
        Cors::default().allow_any_origin()
    } else {
        Cors::default().allowed_origin_fn(move |origin, _| {
            origin
                .to_str()
                .is_ok_and(|origin| patterns.iter().any(|p| origin_matches(p, origin)))
        })
    };
    // QUERY: the Mercure hub's subscribe with a form body (RFC 10008).
    let query = Method::from_bytes(mercure::QUERY_METHOD.as_bytes()).expect("a valid method");
    cors = cors
        .allowed_methods([Method::GET, Method::POST, Method::DELETE, query])
        .allowed_headers([
            header::CONTENT_TYPE,
            header::AUTHORIZATION,
            header::CACHE_CONTROL,
        ])
        .allowed_header("last-event-id")
        // The Mercure cursor of a subscribe, and the subscriptions API's.
        .expose_headers([
            header::LINK,
            header::HeaderName::from_static("mercure-last-event-id"),
        ])
        .max_age(3600);
    if settings.allow_credentials {
        cors = cors.supports_credentials();
    }
    cors
}

/// `http://localhost:*` matches `http://localhost:` followed by a port.
pub fn origin_matches(pattern: &str, origin: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) if prefix.ends_with(':') => origin
            .strip_prefix(prefix)
            .is_some_and(|port| !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit())),
        _ => pattern == origin,
    }
}

#[cfg(test)]
mod tests {
    use super::origin_matches;

    /// Port wildcards match ports only.
    #[test]
    fn origin_patterns() {
        assert!(origin_matches(
            "http://localhost:*",
            "http://localhost:3000"
        ));
        assert!(!origin_matches("http://localhost:*", "http://localhost:"));
        assert!(!origin_matches(
            "http://localhost:*",
            "http://localhost:30/x"
        ));
        assert!(!origin_matches(
            "http://localhost:*",
            "http://localhost.evil.com:80"
        ));
        assert!(origin_matches(
            "https://app.example.com",
            "https://app.example.com"
        ));
        assert!(!origin_matches(
            "https://app.example.com",
            "https://app.example.com.evil"
        ));
    }
}
