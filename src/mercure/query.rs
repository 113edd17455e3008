//! Reading Mercure requests: `name=value` pairs of query strings and form
//! bodies, the tokens a query may carry, and the hub's URL as the request
//! addressed it.

use actix_web::{HttpRequest, http::header};
use percent_encoding::percent_decode_str;
use url::Url;

use super::{auth, error::MercureError};

/// The hub's path. Topics under it are the hub's own (subscription events).
pub const HUB_PATH: &str = "/.well-known/mercure";

/// `name=value` pairs of a query string or form body, strictly UTF-8.
pub fn parse_pairs(text: &str) -> Result<Vec<(String, String)>, MercureError> {
    let decode = |part: &str| {
        let part = part.replace('+', " ");
        percent_decode_str(&part)
            .decode_utf8()
            .map(|s| s.into_owned())
            .map_err(|_| MercureError::BadRequest("field names and values must be UTF-8".into()))
    };
    text.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            Ok((decode(name)?, decode(value)?))
        })
        .collect()
}

pub fn values<'a>(pairs: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    pairs
        .iter()
        .filter(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
        .collect()
}

/// C0, DEL and C1 control characters are not allowed in topics.
pub fn has_control(text: &str) -> bool {
    text.chars().any(char::is_control)
}

/// The values of the query parameters that may carry a token.
pub fn query_tokens(pairs: &[(String, String)]) -> Vec<String> {
    auth::QUERY_PARAMETERS
        .iter()
        .flat_map(|name| values(pairs, name))
        .map(str::to_owned)
        .collect()
}

/// The hub's URL as this request addressed it,
/// `scheme://host/.well-known/mercure`: the base of relative URL patterns
/// and topics, and the hub's own origin for cookie publishes. The
/// `Forwarded` / `X-Forwarded-Proto` / `X-Forwarded-Host` headers count
/// only with `limits.trust_forwarded_for` (behind a proxy that sets them,
/// e.g. one terminating TLS); otherwise the `Host` the client sent. A host
/// that does not make a URL falls back to the server's configured host.
pub fn hub_url(req: &HttpRequest, trust_forwarded: bool) -> Url {
    let (scheme, host) = if trust_forwarded {
        let info = req.connection_info();
        (info.scheme().to_owned(), info.host().to_owned())
    } else {
        let scheme = if req.app_config().secure() {
            "https"
        } else {
            "http"
        };
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_owned)
            .or_else(|| req.uri().authority().map(|a| a.to_string()))
            .unwrap_or_default();
        (scheme.to_owned(), host)
    };
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

    /// Forms decode `+`, percent escapes and repeated fields.
    #[test]
    fn form_decoding() {
        let pairs =
            parse_pairs("topic=a&topic=https%3A%2F%2Fx%2F1&data=two%0Alines+here&private").unwrap();
        assert_eq!(values(&pairs, "topic"), vec!["a", "https://x/1"]);
        assert_eq!(values(&pairs, "data"), vec!["two\nlines here"]);
        assert_eq!(values(&pairs, "private"), vec![""]);
        assert!(parse_pairs("data=%FF").is_err());
    }

    /// The hub URL comes from Host (forwarded headers only when trusted).
    #[test]
    fn hub_url_from_the_request() {
        use actix_web::test::TestRequest;
        let req = TestRequest::default()
            .insert_header(("host", "hub.example:8443"))
            .insert_header(("x-forwarded-host", "proxy.example"))
            .insert_header(("x-forwarded-proto", "https"))
            .to_http_request();
        assert_eq!(
            hub_url(&req, false).as_str(),
            "http://hub.example:8443/.well-known/mercure"
        );
        assert_eq!(
            hub_url(&req, true).as_str(),
            "https://proxy.example/.well-known/mercure"
        );
        let odd = TestRequest::default()
            .insert_header(("host", "a@b/c"))
            .to_http_request();
        assert_eq!(hub_url(&odd, false).path(), "/.well-known/mercure");
        assert_ne!(hub_url(&odd, false).host_str(), Some("b"));
    }
}
