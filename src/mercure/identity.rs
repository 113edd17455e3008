//! Who the hub is, for one request: its URL as the client addressed it, its
//! OAuth 2.0 resource identifier (the `aud` tokens must carry), where its
//! protected resource metadata lives (RFC 9728), and the base URL of
//! relative URL patterns and topics.
//!
//! `mercure.resource_identifier` pins the identifier; otherwise it is
//! derived from the request, `scheme://Host/.well-known/mercure`, as the
//! reference hub does, so a hub reachable under several names needs no
//! configuration. The scheme is the connection's (`https` on a TLS
//! listener) and the host the `Host` header; from a trusted proxy
//! (`limits.trusted_proxies`) the scheme and host it forwards count instead
//! (`X-Forwarded-Proto` / `X-Forwarded-Host`, or the `Forwarded` element
//! naming the client with `limits.forwarded_header = "forwarded"`).

use actix_web::{HttpRequest, http::header};
use url::Url;

use crate::{config::LimitsSettings, http::client_ip::forwarded_origin};

/// The hub's path. Topics under it are the hub's own (subscription events).
pub const HUB_PATH: &str = "/.well-known/mercure";
/// Where the protected resource metadata is served (RFC 9728 §3: the
/// well-known prefix, then the hub's path).
pub const METADATA_PATH: &str = "/.well-known/oauth-protected-resource/.well-known/mercure";

/// The hub as one request sees it.
#[derive(Debug, Clone)]
pub struct HubIdentity {
    /// The hub's URL as the request addressed it; its origin is the hub's
    /// own origin (cookie publishes from it need no `publish_origins`).
    pub url: Url,
    /// The resource identifier: the audience tokens must name.
    pub resource: String,
    /// The absolute URL of the protected resource metadata, for
    /// `WWW-Authenticate` challenges (`None` when it cannot be made).
    pub metadata_url: Option<String>,
    /// The base of relative URL patterns and topics: a pinned identifier
    /// ending in the hub's path, else the request's hub URL.
    pub base: Url,
}

impl HubIdentity {
    /// The identity for `req`; `pinned` is `mercure.resource_identifier`
    /// (empty: derived), `limits` names the trusted proxies.
    pub fn of(req: &HttpRequest, pinned: &str, limits: &LimitsSettings) -> Self {
        let url = hub_url(req, limits);
        let origin = url.origin().ascii_serialization();
        if pinned.is_empty() {
            return Self {
                resource: url.to_string(),
                metadata_url: Some(format!("{origin}{METADATA_PATH}")),
                base: url.clone(),
                url,
            };
        }
        let parsed = Url::parse(pinned).ok();
        let metadata_url = parsed
            .as_ref()
            .filter(|p| p.has_host())
            .map(|p| format!("{}{METADATA_PATH}", p.origin().ascii_serialization()));
        let base = parsed
            .filter(|p| p.path().ends_with(HUB_PATH))
            .unwrap_or_else(|| url.clone());
        Self {
            url,
            resource: pinned.to_owned(),
            metadata_url,
            base,
        }
    }
}

/// The hub's URL as this request addressed it,
/// `scheme://host/.well-known/mercure`: the scheme of the connection and
/// the `Host` the client sent, or what a trusted proxy forwarded of them
/// (see [`forwarded_origin`]; a proxy terminating TLS says `https`). A host
/// that does not make a URL falls back to the server's configured host.
pub fn hub_url(req: &HttpRequest, limits: &LimitsSettings) -> Url {
    let forwarded = forwarded_origin(req, limits).unwrap_or_default();
    let scheme = forwarded.scheme.unwrap_or(if req.app_config().secure() {
        "https"
    } else {
        "http"
    });
    let host = forwarded
        .host
        .or_else(|| {
            req.headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_owned)
        })
        .or_else(|| req.uri().authority().map(|a| a.to_string()))
        .unwrap_or_default();
    let url = |host: &str| {
        let plain = !host.is_empty() && !host.contains(['/', '?', '#', '@', '\\']);
        plain
            .then(|| Url::parse(&format!("{scheme}://{host}{HUB_PATH}")).ok())
            .flatten()
    };
    url(&host)
        .or_else(|| url(req.app_config().host()))
        .unwrap_or_else(|| {
            Url::parse("http://localhost/.well-known/mercure").expect("a constant, valid URL")
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    /// `[limits]` trusting the proxies in 10.0.0.0/8 (or none).
    fn limits(trusted: bool) -> LimitsSettings {
        let mut limits = crate::config::Settings::defaults().limits;
        if trusted {
            limits.trusted_proxies = vec!["10.0.0.0/8".parse().unwrap()];
        }
        limits
    }

    /// The hub URL comes from Host; the forwarded scheme and host count
    /// only when the peer is a trusted proxy.
    #[test]
    fn hub_url_from_the_request() {
        let from = |peer: &str| {
            TestRequest::default()
                .peer_addr(peer.parse().unwrap())
                .insert_header(("host", "hub.example:8443"))
                .insert_header(("x-forwarded-host", "proxy.example"))
                .insert_header(("x-forwarded-proto", "https"))
                .insert_header(("forwarded", "for=1.2.3.4;host=evil.example"))
                .to_http_request()
        };
        let direct = "http://hub.example:8443/.well-known/mercure";
        assert_eq!(
            hub_url(&from("10.0.0.1:4000"), &limits(false)).as_str(),
            direct
        );
        assert_eq!(
            hub_url(&from("203.0.113.7:4000"), &limits(true)).as_str(),
            direct
        );
        assert_eq!(
            hub_url(&from("10.0.0.1:4000"), &limits(true)).as_str(),
            "https://proxy.example/.well-known/mercure"
        );
        let odd = TestRequest::default()
            .insert_header(("host", "a@b/c"))
            .to_http_request();
        assert_eq!(hub_url(&odd, &limits(false)).path(), "/.well-known/mercure");
        assert_ne!(hub_url(&odd, &limits(false)).host_str(), Some("b"));
    }

    /// Derived: the request's hub URL; pinned: the configured identifier,
    /// whose origin also places the metadata.
    #[test]
    fn derived_and_pinned_identity() {
        let req = TestRequest::default()
            .insert_header(("host", "127.0.0.1:9000"))
            .to_http_request();
        let derived = HubIdentity::of(&req, "", &limits(false));
        assert_eq!(
            derived.resource,
            "http://127.0.0.1:9000/.well-known/mercure"
        );
        assert_eq!(
            derived.metadata_url.as_deref(),
            Some("http://127.0.0.1:9000/.well-known/oauth-protected-resource/.well-known/mercure")
        );
        let pinned = HubIdentity::of(
            &req,
            "https://localhost/.well-known/mercure",
            &limits(false),
        );
        assert_eq!(pinned.resource, "https://localhost/.well-known/mercure");
        assert_eq!(
            pinned.base.as_str(),
            "https://localhost/.well-known/mercure"
        );
        assert_eq!(
            pinned.metadata_url.as_deref(),
            Some("https://localhost/.well-known/oauth-protected-resource/.well-known/mercure")
        );
        assert_eq!(
            pinned.url.as_str(),
            "http://127.0.0.1:9000/.well-known/mercure"
        );
        let other = HubIdentity::of(&req, "https://api.example.com/", &limits(false));
        assert_eq!(
            other.base.as_str(),
            "http://127.0.0.1:9000/.well-known/mercure"
        );
    }
}
