//! The `[limits]` section: abuse limits, and whose address a request is
//! (the trusted reverse proxies and the header they forward it in). Every
//! key is documented in `config/default.toml`.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSettings {
    /// Subscriptions one channel holds at most (0: no limit).
    pub max_subscribers_per_channel: usize,
    /// Subscriptions the broker holds at most (0: no limit).
    pub max_subscribers: usize,
    /// Users one channel lists in its presence, per node (and in a merged
    /// listing): bounds a channel's roster in memory and in Redis, and the
    /// size of a listing. Users beyond it are counted, not listed.
    pub max_presence_members: usize,
    /// Open streams one client IP may hold (0: no limit).
    pub max_streams_per_ip: usize,
    /// Publish requests per second per token subject, or per IP (0: no limit).
    pub publish_rate: u32,
    /// Publish requests allowed in a burst above the rate.
    pub publish_burst: u32,
    /// The reverse proxies whose forwarding headers count (addresses and
    /// CIDRs): the client IP is the right-most address of
    /// `forwarded_header` that is not one of them, and the hub's URL may
    /// come from their scheme and host headers. Empty: the socket's peer is
    /// the client and no forwarding header is read.
    #[serde(deserialize_with = "proxy_list")]
    pub trusted_proxies: Vec<IpNet>,
    /// Which header the trusted proxies write the addresses they forward
    /// for into.
    pub forwarded_header: ForwardedHeader,
    /// Obsolete: replaced by `trusted_proxies`. Kept only to refuse `true`
    /// with a migration message (it trusted any peer's headers, so a client
    /// could pick its own IP); `false` said what the default now says.
    #[serde(default)]
    pub trust_forwarded_for: Option<bool>,
}

/// The header a trusted proxy lists the client in (`limits.forwarded_header`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ForwardedHeader {
    /// `X-Forwarded-For: client, proxy1, …`; the scheme and host the client
    /// used in `X-Forwarded-Proto` / `X-Forwarded-Host`. What nginx,
    /// HAProxy and most load balancers write.
    #[default]
    XForwardedFor,
    /// RFC 7239 `Forwarded: for=client;proto=https;host=…, for=proxy1`. Read
    /// only when configured: a proxy that does not write it usually passes a
    /// client's own through.
    Forwarded,
}

impl LimitsSettings {
    /// Whether `ip` is one of the trusted proxies.
    pub fn is_trusted_proxy(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.trusted_proxies.iter().any(|net| net.contains(&ip))
    }

    /// The rules of the `[limits]` section.
    pub(super) fn validate(&self) -> Result<(), String> {
        if self.publish_rate > 0 && self.publish_burst == 0 {
            return Err(
                "limits.publish_burst must be at least 1 when limits.publish_rate is set".into(),
            );
        }
        if self.max_presence_members == 0 {
            return Err("limits.max_presence_members must be at least 1".into());
        }
        if self.trust_forwarded_for == Some(true) {
            return Err(
                "limits.trust_forwarded_for is gone: it trusted the forwarding headers of \
                 every peer, so a client could pick its own IP. List your reverse proxies \
                 instead, e.g. limits.trusted_proxies = [\"127.0.0.1/32\", \"::1/128\"] for \
                 nginx on the same host, and remove trust_forwarded_for \
                 (docs/operations.md, \"Behind nginx\")"
                    .into(),
            );
        }
        Ok(())
    }
}

/// Reads `limits.trusted_proxies`: each entry a CIDR (`10.0.0.0/8`,
/// `fd00::/8`) or a bare address (one host); a bad entry fails the load,
/// named.
fn proxy_list<'de, D: serde::Deserializer<'de>>(input: D) -> Result<Vec<IpNet>, D::Error> {
    Vec::<String>::deserialize(input)?
        .iter()
        .map(|entry| parse_proxy(entry).map_err(serde::de::Error::custom))
        .collect()
}

/// One entry of `limits.trusted_proxies`. IPv4-mapped IPv6 networks
/// (`::ffff:10.0.0.0/104`) become their IPv4 network, as peer addresses do.
pub fn parse_proxy(entry: &str) -> Result<IpNet, String> {
    let text = entry.trim();
    let net = text
        .parse::<IpNet>()
        .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| {
            format!(
                "limits.trusted_proxies: {entry:?} is neither an IP address nor a CIDR \
                 (e.g. \"10.0.0.0/8\", \"::1\")"
            )
        })?;
    Ok(match net {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.addr().to_ipv4_mapped() {
            Some(v4) => IpNet::V4(
                ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96)
                    .expect("a prefix of at most 128 - 96 = 32 bits is a valid IPv4 prefix"),
            ),
            None => net,
        },
        _ => net,
    }
    .trunc())
}
