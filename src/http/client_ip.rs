//! Who sent a request: its client IP (the key of the per-IP limits and of
//! the access log), and the scheme and host it addressed (the hub's URL), as
//! far as the reverse proxies of `limits.trusted_proxies` vouch for them.
//!
//! The socket's peer is the client unless it is a trusted proxy; then the
//! addresses of `limits.forwarded_header` are read right to left (every
//! occurrence of the header, in order, makes one list). Each entry was
//! written by the hop on its right, so it is worth something only while that
//! hop is trusted: the first address that is not a trusted proxy is the
//! client, and when all are, the leftmost is. Entries further left come from
//! the client or from proxies nobody vouches for and are never read, so a
//! client cannot pick its address by sending the header itself.
//!
//! An entry that is no address (`unknown`, an obfuscated RFC 7239 `_name`,
//! garbage, an unreadable header) also ends the walk: a trusted proxy wrote
//! it in the client's place, and skipping it would let the next entry to
//! the left, which that proxy passed on from its own client, decide. The
//! client is then [`ClientKey::Other`]: an obfuscated name as written (it
//! keeps a proxy's clients apart), anything else `unknown` (one key, so
//! garbage cannot mint keys). Empty list elements are skipped, as RFC 9110
//! §5.6.1 asks of a list's recipient.

use std::net::{IpAddr, SocketAddr};

use actix_web::{
    HttpRequest,
    http::header::{self, HeaderMap, HeaderName},
};

use crate::config::{ForwardedHeader, LimitsSettings};

/// Who a client is, for the per-client limits.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ClientKey {
    /// Its IP address (an IPv4-mapped IPv6 address as IPv4).
    Ip(IpAddr),
    /// What a trusted proxy called it when that is no IP: an obfuscated
    /// RFC 7239 identifier, or `unknown`.
    Other(String),
}

impl std::fmt::Display for ClientKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Ip(ip) => ip.fmt(f),
            Self::Other(text) => f.write_str(text),
        }
    }
}

/// Longest obfuscated identifier kept as a client's own key; a longer one is
/// `unknown`. RFC 7239 sets no bound, and proxies write short random tokens;
/// this bounds what one key of the limiters' maps can hold.
const MAX_NAME_BYTES: usize = 64;

/// The client IP of `req`: its peer, or behind trusted proxies the
/// right-most forwarded address that is not one of them.
pub fn client_ip(req: &HttpRequest, limits: &LimitsSettings) -> ClientKey {
    match req.peer_addr() {
        Some(peer) => client_of(peer.ip(), req.headers(), limits),
        None => ClientKey::Other("unknown".into()),
    }
}

/// [`client_ip`] of a request that came from `peer` with `headers`.
fn client_of(peer: IpAddr, headers: &HeaderMap, limits: &LimitsSettings) -> ClientKey {
    match forwarded_hop(peer, headers, limits) {
        None => ClientKey::Ip(peer.to_canonical()),
        Some(hop) => hop.node.key(),
    }
}

/// The scheme and host a client addressed, as a trusted proxy forwarded
/// them; each `None` when the proxy did not say (or said something else
/// than `http`/`https` for the scheme).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ForwardedOrigin {
    /// `http` or `https`.
    pub scheme: Option<&'static str>,
    /// As the proxy wrote it (quotes removed); the caller checks it makes
    /// a URL.
    pub host: Option<String>,
}

/// What the proxy in front says `req` addressed: with `x-forwarded-for`,
/// the last `X-Forwarded-Proto` and `X-Forwarded-Host` values (the nearest
/// proxy's); with `forwarded`, the `proto` and `host` of the element that
/// names the client. `None` when the peer is no trusted proxy: then only
/// the connection and its `Host` count.
pub fn forwarded_origin(req: &HttpRequest, limits: &LimitsSettings) -> Option<ForwardedOrigin> {
    origin_of(req.peer_addr()?.ip(), req.headers(), limits)
}

fn origin_of(
    peer: IpAddr,
    headers: &HeaderMap,
    limits: &LimitsSettings,
) -> Option<ForwardedOrigin> {
    if !limits.is_trusted_proxy(peer) {
        return None;
    }
    let (proto, host) = match limits.forwarded_header {
        ForwardedHeader::XForwardedFor => {
            let last = |name| {
                let value = headers.get_all(name).next_back()?.to_str().ok()?;
                value.rsplit(',').next().map(str::trim)
            };
            (
                last(header::X_FORWARDED_PROTO),
                last(header::X_FORWARDED_HOST),
            )
        }
        ForwardedHeader::Forwarded => forwarded_hop(peer, headers, limits)
            .map(|hop| (hop.proto, hop.host))
            .unwrap_or_default(),
    };
    let scheme = match proto.map(|p| p.trim_matches('"')) {
        Some(p) if p.eq_ignore_ascii_case("https") => Some("https"),
        Some(p) if p.eq_ignore_ascii_case("http") => Some("http"),
        _ => None,
    };
    let host = host
        .map(|h| h.trim_matches('"'))
        .filter(|h| !h.is_empty())
        .map(str::to_owned);
    Some(ForwardedOrigin { scheme, host })
}

/// One hop a forwarding header names, with what it says of the request.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Hop<'h> {
    node: Node<'h>,
    /// RFC 7239 `proto` of this hop's element (`Forwarded` only).
    proto: Option<&'h str>,
    /// RFC 7239 `host` of this hop's element (`Forwarded` only).
    host: Option<&'h str>,
}

impl Hop<'_> {
    /// A hop nothing is known of.
    fn unknown() -> Self {
        Self {
            node: Node::Unknown,
            proto: None,
            host: None,
        }
    }
}

/// Who a hop is, as its entry says.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Node<'h> {
    Ip(IpAddr),
    /// An RFC 7239 obfuscated identifier (`_` and letters, digits, `.`, `_`).
    Named(&'h str),
    /// `unknown`, garbage, or an element that names no hop.
    Unknown,
}

impl Node<'_> {
    fn key(&self) -> ClientKey {
        match self {
            Self::Ip(ip) => ClientKey::Ip(*ip),
            Self::Named(name) if name.len() <= MAX_NAME_BYTES => ClientKey::Other((*name).into()),
            Self::Named(_) | Self::Unknown => ClientKey::Other("unknown".into()),
        }
    }
}

/// The hop that stands for the client when `peer` is a trusted proxy: the
/// right-most hop of the configured header that is not a trusted proxy,
/// else the leftmost, else (no header) the peer itself. `None` when `peer`
/// is not trusted.
fn forwarded_hop<'h>(
    peer: IpAddr,
    headers: &'h HeaderMap,
    limits: &LimitsSettings,
) -> Option<Hop<'h>> {
    if !limits.is_trusted_proxy(peer) {
        return None;
    }
    let hops = hops(headers, limits.forwarded_header);
    let client = hops.iter().rev().find(|hop| match hop.node {
        Node::Ip(ip) => !limits.is_trusted_proxy(ip),
        Node::Named(_) | Node::Unknown => true,
    });
    Some(client.or(hops.first()).cloned().unwrap_or(Hop {
        node: Node::Ip(peer.to_canonical()),
        proto: None,
        host: None,
    }))
}

/// Every hop the configured header names, left to right, across all its
/// occurrences.
fn hops(headers: &HeaderMap, kind: ForwardedHeader) -> Vec<Hop<'_>> {
    let name: HeaderName = match kind {
        ForwardedHeader::XForwardedFor => header::X_FORWARDED_FOR,
        ForwardedHeader::Forwarded => header::FORWARDED,
    };
    let mut hops = Vec::new();
    for value in headers.get_all(name) {
        let Ok(text) = value.to_str() else {
            hops.push(Hop::unknown());
            continue;
        };
        let elements = text.split(',').map(str::trim).filter(|e| !e.is_empty());
        hops.extend(elements.map(|element| match kind {
            ForwardedHeader::XForwardedFor => Hop {
                node: address(element),
                proto: None,
                host: None,
            },
            ForwardedHeader::Forwarded => forwarded_element(element),
        }));
    }
    hops
}

/// One `X-Forwarded-For` entry: an address, with a port or IPv6 brackets
/// as some proxies write them (`203.0.113.7:5122`, `[2001:db8::1]:443`,
/// `[2001:db8::1]`).
fn address(entry: &str) -> Node<'_> {
    let ip = entry
        .parse::<IpAddr>()
        .or_else(|_| entry.parse::<SocketAddr>().map(|a| a.ip()))
        .or_else(|_| {
            let inner = entry.strip_prefix('[').and_then(|e| e.strip_suffix(']'));
            inner
                .unwrap_or_default()
                .parse::<std::net::Ipv6Addr>()
                .map(IpAddr::V6)
        });
    match ip {
        Ok(ip) => Node::Ip(ip.to_canonical()),
        Err(_) => Node::Unknown,
    }
}

/// One RFC 7239 element (`for=…;proto=…;host=…`), parsed by `rfc7239`;
/// empty pairs at its ends (`for=1.2.3.4;`) are dropped first, as the RFC
/// allows them.
fn forwarded_element(element: &str) -> Hop<'_> {
    let element = element.trim_matches(|c| c == ';' || c == ' ');
    let Some(Ok(parsed)) = rfc7239::parse(element).next() else {
        return Hop::unknown();
    };
    let node = match parsed.forwarded_for.map(|id| id.name) {
        Some(rfc7239::NodeName::Ip(ip)) => Node::Ip(ip.to_canonical()),
        Some(rfc7239::NodeName::Obfuscated(name)) => Node::Named(name),
        Some(rfc7239::NodeName::Unknown) | None => Node::Unknown,
    };
    Hop {
        node,
        proto: parsed.protocol,
        host: parsed.host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Settings, parse_proxy};
    use actix_web::{http::header::HeaderValue, test::TestRequest};

    /// `[limits]` trusting `proxies`, reading `header`.
    fn limits(proxies: &[&str], header: ForwardedHeader) -> LimitsSettings {
        let mut limits = Settings::defaults().limits;
        limits.trusted_proxies = proxies.iter().map(|p| parse_proxy(p).unwrap()).collect();
        limits.forwarded_header = header;
        limits
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    /// The client of a request from `peer` carrying `headers`.
    fn client(peer: &str, headers: &[(&str, &str)], limits: &LimitsSettings) -> ClientKey {
        let mut req = TestRequest::default();
        for header in headers {
            req = req.append_header(*header);
        }
        client_of(ip(peer), req.to_http_request().headers(), limits)
    }

    const XFF: ForwardedHeader = ForwardedHeader::XForwardedFor;

    /// With no proxy trusted, the peer is the client whatever it sends.
    #[test]
    fn an_untrusted_peer_is_the_client() {
        let none = limits(&[], XFF);
        let spoofed = [
            ("x-forwarded-for", "198.51.100.1"),
            ("forwarded", "for=198.51.100.2"),
        ];
        assert_eq!(
            client("203.0.113.7", &spoofed, &none),
            ClientKey::Ip(ip("203.0.113.7"))
        );
        let other = limits(&["10.0.0.0/8"], XFF);
        assert_eq!(
            client("203.0.113.7", &spoofed, &other),
            ClientKey::Ip(ip("203.0.113.7"))
        );
    }

    /// Entries a client puts left of what the proxy appends never count:
    /// the right-most untrusted address does.
    #[test]
    fn spoofed_leftmost_entries_do_not_count() {
        let nginx = limits(&["127.0.0.1"], XFF);
        let appended = [("x-forwarded-for", "1.1.1.1, 2.2.2.2, 203.0.113.7")];
        assert_eq!(
            client("127.0.0.1", &appended, &nginx),
            ClientKey::Ip(ip("203.0.113.7"))
        );
        // A trusted address the client wrote itself is still left of its own.
        let posing = [("x-forwarded-for", "127.0.0.1, 203.0.113.7")];
        assert_eq!(
            client("127.0.0.1", &posing, &nginx),
            ClientKey::Ip(ip("203.0.113.7"))
        );
    }

    /// Through several trusted hops, each one's entry is skipped; a second
    /// occurrence of the header continues the list.
    #[test]
    fn several_hops() {
        let chain = limits(&["10.0.0.0/8", "192.168.1.1"], XFF);
        let one_header = [(
            "x-forwarded-for",
            "6.6.6.6, 203.0.113.7, 10.1.2.3, 192.168.1.1",
        )];
        assert_eq!(
            client("10.9.9.9", &one_header, &chain),
            ClientKey::Ip(ip("203.0.113.7"))
        );
        let two_headers = [
            ("x-forwarded-for", "6.6.6.6, 203.0.113.7"),
            ("x-forwarded-for", "10.1.2.3"),
        ];
        assert_eq!(
            client("10.9.9.9", &two_headers, &chain),
            ClientKey::Ip(ip("203.0.113.7"))
        );
        // Only proxies: the leftmost is the client (a health check from
        // inside); no header at all: the trusted peer itself.
        let inside = [("x-forwarded-for", "10.0.0.5, 10.0.0.6")];
        assert_eq!(
            client("10.9.9.9", &inside, &chain),
            ClientKey::Ip(ip("10.0.0.5"))
        );
        assert_eq!(
            client("10.9.9.9", &[], &chain),
            ClientKey::Ip(ip("10.9.9.9"))
        );
    }

    /// IPv6 with and without brackets and ports, IPv4 with a port, and
    /// IPv4-mapped peers and entries.
    #[test]
    fn ipv6_ports_and_mapped_addresses() {
        let local = limits(&["127.0.0.1/32", "::1/128"], XFF);
        for (entry, want) in [
            ("2001:db8::7", "2001:db8::7"),
            ("[2001:db8::7]", "2001:db8::7"),
            ("[2001:db8::7]:4711", "2001:db8::7"),
            ("203.0.113.7:4711", "203.0.113.7"),
            ("::ffff:203.0.113.7", "203.0.113.7"),
        ] {
            let xff = [("x-forwarded-for", entry)];
            assert_eq!(
                client("::1", &xff, &local),
                ClientKey::Ip(ip(want)),
                "{entry}"
            );
        }
        // A dual-stack socket's mapped peer is the trusted IPv4 proxy.
        let xff = [("x-forwarded-for", "203.0.113.7")];
        assert_eq!(
            client("::ffff:127.0.0.1", &xff, &local),
            ClientKey::Ip(ip("203.0.113.7"))
        );
        assert_eq!(
            client("::ffff:198.51.100.9", &xff, &local),
            ClientKey::Ip(ip("198.51.100.9"))
        );
    }

    /// Garbage written where the client should be ends the walk as
    /// `unknown`: never skipped to reach what the client wrote further left.
    #[test]
    fn garbage_is_unknown_and_ends_the_walk() {
        let nginx = limits(&["127.0.0.1"], XFF);
        let unknown = ClientKey::Other("unknown".into());
        for value in [
            "6.6.6.6, not-an-ip",
            "6.6.6.6, unknown",
            "6.6.6.6, 1.2.3.4.5",
        ] {
            let xff = [("x-forwarded-for", value)];
            assert_eq!(client("127.0.0.1", &xff, &nginx), unknown, "{value}");
        }
        // Empty elements are no entries.
        let xff = [("x-forwarded-for", " , 203.0.113.7 ,, ")];
        assert_eq!(
            client("127.0.0.1", &xff, &nginx),
            ClientKey::Ip(ip("203.0.113.7"))
        );
        // An unreadable occurrence is one unknown entry.
        let mut headers = HeaderMap::new();
        let opaque = HeaderValue::from_bytes(b"203.0.113.\xff").unwrap();
        headers.append(header::X_FORWARDED_FOR, HeaderValue::from_static("6.6.6.6"));
        headers.append(header::X_FORWARDED_FOR, opaque);
        assert_eq!(client_of(ip("127.0.0.1"), &headers, &nginx), unknown);
    }

    /// `Forwarded` counts only when configured, and then X-Forwarded-For
    /// does not.
    #[test]
    fn forwarded_only_when_configured() {
        let both = [
            ("forwarded", "for=6.6.6.6, for=203.0.113.7;proto=https"),
            ("x-forwarded-for", "198.51.100.9"),
        ];
        let xff = limits(&["127.0.0.1"], XFF);
        assert_eq!(
            client("127.0.0.1", &both, &xff),
            ClientKey::Ip(ip("198.51.100.9"))
        );
        let rfc = limits(&["127.0.0.1"], ForwardedHeader::Forwarded);
        assert_eq!(
            client("127.0.0.1", &both, &rfc),
            ClientKey::Ip(ip("203.0.113.7"))
        );
    }

    /// RFC 7239 nodes: quoted IPv6 with a port, obfuscated names, `unknown`,
    /// elements without `for`, trailing empty pairs, trusted hops skipped.
    #[test]
    fn forwarded_nodes() {
        let rfc = limits(&["10.0.0.0/8"], ForwardedHeader::Forwarded);
        let of = |value: &str| client("10.0.0.1", &[("forwarded", value)], &rfc);
        assert_eq!(
            of(r#"for="[2001:db8:cafe::17]:4711", for=10.0.0.2"#),
            ClientKey::Ip(ip("2001:db8:cafe::17"))
        );
        assert_eq!(
            of("for=6.6.6.6, for=_hidden.1;proto=https"),
            ClientKey::Other("_hidden.1".into())
        );
        let long = format!("for=_{}", "a".repeat(MAX_NAME_BYTES));
        assert_eq!(of(&long), ClientKey::Other("unknown".into()));
        assert_eq!(
            of("for=6.6.6.6, for=unknown"),
            ClientKey::Other("unknown".into())
        );
        assert_eq!(
            of("for=6.6.6.6, proto=https"),
            ClientKey::Other("unknown".into())
        );
        // IPv6 must be bracketed (and quoted): this is no address.
        assert_eq!(
            of("for=6.6.6.6, for=2001:db8::1"),
            ClientKey::Other("unknown".into())
        );
        assert_eq!(of("For=203.0.113.7;"), ClientKey::Ip(ip("203.0.113.7")));
    }

    /// The scheme and host come from a trusted peer only, from the header
    /// the configuration names.
    #[test]
    fn forwarded_origin_from_trusted_proxies_only() {
        let headers = [
            ("x-forwarded-proto", "http, https"),
            ("x-forwarded-host", "hub.example.com"),
            (
                "forwarded",
                "for=203.0.113.7;proto=https;host=\"rfc.example\", for=10.0.0.2;proto=http",
            ),
        ];
        let mut req = TestRequest::default();
        for header in headers {
            req = req.append_header(header);
        }
        let req = req.to_http_request();
        let xff = limits(&["10.0.0.0/8"], XFF);
        assert_eq!(origin_of(ip("203.0.113.7"), req.headers(), &xff), None);
        assert_eq!(
            origin_of(ip("10.0.0.1"), req.headers(), &xff),
            Some(ForwardedOrigin {
                scheme: Some("https"),
                host: Some("hub.example.com".into())
            })
        );
        let rfc = limits(&["10.0.0.0/8"], ForwardedHeader::Forwarded);
        assert_eq!(
            origin_of(ip("10.0.0.1"), req.headers(), &rfc),
            Some(ForwardedOrigin {
                scheme: Some("https"),
                host: Some("rfc.example".into())
            })
        );
        let odd = TestRequest::default()
            .insert_header(("x-forwarded-proto", "javascript"))
            .to_http_request();
        assert_eq!(
            origin_of(ip("10.0.0.1"), odd.headers(), &xff),
            Some(ForwardedOrigin::default())
        );
    }
}
