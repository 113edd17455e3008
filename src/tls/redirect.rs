//! The plain-HTTP listener that sends clients to HTTPS
//! (`server.tls.redirect_bind`, typically `0.0.0.0:80`): every request is
//! answered `308 Permanent Redirect` to the same host, path and query on the
//! HTTPS port. 308 rather than 301 keeps the method and body, so a publisher
//! configured with `http://` is sent on too, not turned into a GET. It
//! serves nothing else: the API, streams and the console are HTTPS only.

use std::net::SocketAddr;

use actix_web::{
    App, HttpRequest, HttpResponse, HttpServer,
    dev::Server,
    http::{StatusCode, header},
    web,
};

/// The redirect server on `bind`, pointing at HTTPS on `https_port`; it
/// runs once awaited (or spawned) and is stopped through its handle.
pub fn server(bind: SocketAddr, https_port: u16) -> anyhow::Result<(Server, SocketAddr)> {
    let server = HttpServer::new(move || {
        App::new().default_service(web::to(move |req: HttpRequest| async move {
            redirect(&req, https_port)
        }))
    })
    .workers(1)
    .disable_signals()
    .shutdown_timeout(1)
    .bind(bind)
    .map_err(|err| anyhow::anyhow!("cannot listen on {bind} (server.tls.redirect_bind): {err}"))?;
    let local = *server
        .addrs()
        .first()
        .ok_or_else(|| anyhow::anyhow!("no address bound for {bind}"))?;
    Ok((server.run(), local))
}

/// `308` to `https://<host>[:port]<path and query>`; `400` without a usable
/// `Host` header.
fn redirect(req: &HttpRequest, https_port: u16) -> HttpResponse {
    let Some(host) = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .and_then(host_without_port)
    else {
        return HttpResponse::BadRequest()
            .content_type("application/problem+json")
            .body(
                r#"{"type":"about:blank","title":"Bad Request","status":400,"detail":"this listener only redirects to HTTPS and needs a Host header"}"#,
            );
    };
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let location = match https_port {
        443 => format!("https://{host}{path}"),
        port => format!("https://{host}:{port}{path}"),
    };
    HttpResponse::build(StatusCode::PERMANENT_REDIRECT)
        .insert_header((header::LOCATION, location))
        .finish()
}

/// The host of a `Host` header without its port (`[::1]:80` → `[::1]`);
/// `None` when it is empty or holds characters a host cannot.
fn host_without_port(host: &str) -> Option<&str> {
    let host = match host.strip_prefix('[') {
        Some(rest) => &host[..rest.find(']')? + 2],
        None => host.split(':').next()?,
    };
    let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '[' | ']' | ':');
    (!host.is_empty() && host.chars().all(plain)).then_some(host)
}

#[cfg(test)]
mod tests {
    use super::host_without_port;

    /// Ports are dropped, IPv6 literals kept whole, junk refused.
    #[test]
    fn hosts() {
        assert_eq!(host_without_port("example.com:80"), Some("example.com"));
        assert_eq!(host_without_port("example.com"), Some("example.com"));
        assert_eq!(host_without_port("[::1]:80"), Some("[::1]"));
        assert_eq!(host_without_port("[::1]"), Some("[::1]"));
        assert_eq!(host_without_port(""), None);
        assert_eq!(host_without_port("evil.com/x"), None);
        assert_eq!(host_without_port("[::1"), None);
    }
}
