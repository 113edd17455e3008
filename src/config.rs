//! Configuration: the [`Settings`] tree and how it is loaded.
//!
//! Layers, later ones winning: the development defaults compiled in from
//! `config/default.toml`, an optional overlay file (`--config`), environment
//! variables `SSE_BROKER__<SECTION>__<KEY>`, then command-line flags (applied by
//! `main`). Every key is documented in `config/default.toml`; this module only
//! gives them types and checks that they make sense together.

use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    time::Duration,
};

use figment::{
    Figment,
    providers::{Env, Format, Toml},
};
use ipnet::IpNet;
use serde::Deserialize;

mod mercure;
pub mod secrets;

pub use crate::auth::{AuthSettings, JwtAlgorithm};
use crate::{auth::Pattern, names::ChannelName};
pub use mercure::{
    COMPATIBLE_PROTOCOL_VERSION, DEFAULT_JWKS_ALGORITHMS, IssuerSettings, MERCURE_DEVELOPMENT_KEY,
    MercureSettings, VerifierSettings, check_pem_algorithm,
};

/// The development defaults, compiled in so the binary runs with no file.
pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");

/// Prefix of environment variables that override configuration keys;
/// sections and keys are separated by a double underscore.
pub const ENV_PREFIX: &str = "SSE_BROKER__";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub server: ServerSettings,
    pub stream: StreamSettings,
    pub history: HistorySettings,
    pub publish: PublishSettings,
    pub broker: BrokerSettings,
    pub pulses: PulseSettings,
    pub cors: CorsSettings,
    pub demo: DemoSettings,
    pub log: LogSettings,
    pub metrics: MetricsSettings,
    pub health: HealthSettings,
    pub auth: AuthSettings,
    pub limits: LimitsSettings,
    pub mercure: MercureSettings,
    pub cluster: ClusterSettings,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    /// Listen address; port 0 picks a free port (tests use it).
    pub bind: SocketAddr,
    /// HTTP worker threads; 0 means one per core.
    pub workers: usize,
    /// Folder with the debug console, served at `/`.
    pub public_dir: PathBuf,
    /// Largest request body accepted, in bytes (413 beyond).
    pub max_body_bytes: usize,
    /// Deepest nesting of arrays and objects in a JSON payload (and in a
    /// Mercure update's data) accepted (400 beyond).
    pub max_json_depth: usize,
    /// Grace period for in-flight requests on shutdown.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// How long an idle keep-alive connection (not a stream) stays open.
    #[serde(with = "humantime_serde")]
    pub keep_alive: Duration,
    /// How long a new connection may take to send its request head (408 after).
    #[serde(with = "humantime_serde")]
    pub client_request_timeout: Duration,
    /// HTTPS on `bind` (off unless a certificate or ACME is configured).
    pub tls: TlsSettings,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamSettings {
    /// Interval of the comment heartbeat on the streams of idle channels.
    #[serde(with = "humantime_serde")]
    pub heartbeat: Duration,
    /// The `retry:` reconnection hint sent to EventSource clients.
    #[serde(with = "humantime_serde")]
    pub retry: Duration,
    /// Frames queued per subscriber before it is evicted as a slow consumer.
    pub subscriber_buffer: usize,
    /// Bytes queued per subscriber before it is evicted as a slow consumer
    /// (whichever bound is reached first).
    pub subscriber_buffer_bytes: usize,
    /// Most channels one multi-channel stream may name.
    pub max_channels_per_stream: usize,
    /// Which stream writer serves event streams (see [`StreamWriter`]).
    pub writer: StreamWriter,
}

/// How an event stream's bytes reach the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StreamWriter {
    /// Channel actors write each event straight to the subscriber's socket
    /// (plain-TCP HTTP/1 connections; others get `body` regardless).
    Direct,
    /// A streaming response body, written by actix-web like any other: any
    /// connection (HTTP/2, TLS), at some CPU per delivery (BENCHMARKS.md).
    Body,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistorySettings {
    /// Events retained per channel for replay.
    pub max_events: usize,
    /// Age after which an event leaves the history.
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
    /// Memory every channel's history may use together, in bytes; the
    /// oldest events of the whole broker leave first beyond it. 0: no bound
    /// but `max_events` × channels.
    pub max_total_bytes: u64,
    /// Folder of the durable history store; empty keeps history in memory.
    pub data_dir: PathBuf,
    /// When an event is on disk before its `202` (durable history only).
    pub sync: SyncPolicy,
    /// Group-commit window of `sync = "interval"`.
    #[serde(with = "humantime_serde")]
    pub sync_interval: Duration,
}

impl HistorySettings {
    /// Whether history is kept in the durable store (`data_dir` is set).
    pub fn durable(&self) -> bool {
        !self.data_dir.as_os_str().is_empty()
    }
}

/// How the durable store groups its fsync'd commits. Either way an event is
/// acknowledged only once its commit is on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncPolicy {
    /// Commit at once: the events that arrived while the previous commit
    /// ran share the next one.
    Always,
    /// Collect events for `sync_interval` after the first one, then commit
    /// them together: fewer fsyncs, up to one interval more latency.
    Interval,
}

/// `[publish]`: idempotent publishing (`Idempotency-Key`, see
/// `crate::broker::idempotency`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishSettings {
    /// How long a publish's idempotency key is remembered: a retry within
    /// it is answered the first publish's id and stores nothing.
    #[serde(with = "humantime_serde")]
    pub idempotency_window: Duration,
    /// Most idempotency keys remembered at once in memory, for the whole
    /// broker (memory and durable history; in cluster mode Redis keeps
    /// them, each for the window): beyond it the oldest is forgotten.
    pub idempotency_max_keys: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerSettings {
    /// Arbiter threads running channel actors; 0 (the default) runs them and
    /// the Mercure hub on the HTTP workers, with no thread hop per publish.
    pub arbiters: usize,
    /// Most channels alive at once.
    pub max_channels: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PulseSettings {
    /// Silence after which a client is reported as not alive.
    #[serde(with = "humantime_serde")]
    pub stale_after: Duration,
    /// Timestamps kept per client.
    pub keep_timestamps: usize,
    /// Silence after which a client is forgotten.
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    /// Most clients remembered at once.
    pub max_clients: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorsSettings {
    /// Allowed origins; `http://host:*` matches any port, `*` any origin.
    pub allowed_origins: Vec<String>,
    /// Whether cross-origin requests may carry cookies.
    pub allow_credentials: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DemoSettings {
    /// Run the demo publisher.
    pub enabled: bool,
    /// Channel the demo events go to.
    pub channel: String,
    /// Interval between demo events.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    /// One `access …` line per HTTP request.
    pub access_log: bool,
    /// Stream requests in the access log too, and their open/close lines at
    /// info level (debug otherwise).
    pub access_log_streams: bool,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSettings {
    /// Serve `GET /metrics`.
    pub enabled: bool,
    /// Channels that get their own labelled series; empty keeps label
    /// cardinality independent of the number of channels.
    pub channels: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthSettings {
    /// How long `GET /readyz` waits for each readiness check.
    #[serde(with = "humantime_serde")]
    pub ready_timeout: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSettings {
    /// Subscriptions one channel holds at most (0: no limit).
    pub max_subscribers_per_channel: usize,
    /// Subscriptions the broker holds at most (0: no limit).
    pub max_subscribers: usize,
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
    fn validate(&self) -> Result<(), String> {
        if self.publish_rate > 0 && self.publish_burst == 0 {
            return Err(
                "limits.publish_burst must be at least 1 when limits.publish_rate is set".into(),
            );
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

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSettings {
    /// Where Redis is: one URL (`redis://[:password@]host:port[/db]`), or a
    /// comma-separated list of seeds (Redis Cluster nodes, or the sentinels
    /// with `redis_mode = "sentinel"`). Empty runs the broker alone, in memory.
    pub redis_url: String,
    /// What `redis_url` names: one `redis-server`, a Redis Cluster, or the
    /// sentinels watching a primary.
    pub redis_mode: RedisMode,
    /// The name the sentinels know the primary by (`redis_mode = "sentinel"`).
    pub sentinel_master: String,
    /// Prefix of every Redis key and pub/sub channel, so several
    /// independent brokers can share one Redis.
    pub key_prefix: String,
    /// Longest a Redis command may take before it counts as failed (a
    /// publish then answers 503).
    #[serde(with = "humantime_serde")]
    pub command_timeout: Duration,
    /// Longest wait between two reconnection attempts (the wait doubles
    /// from 100 ms up to this).
    #[serde(with = "humantime_serde")]
    pub max_reconnect_delay: Duration,
    /// How often a node writes its subscriber counts to Redis and pings the
    /// bus; counts of a node silent for three intervals are ignored.
    #[serde(with = "humantime_serde")]
    pub presence_interval: Duration,
    /// Replicas that must have a publish before it is acknowledged (Redis
    /// `WAIT`); 0 acknowledges once the primary has it. Trades publish
    /// latency for not losing acknowledged events in a failover.
    pub publish_wait_replicas: u32,
    /// Longest a publish waits for those replicas; it answers 503 after.
    #[serde(with = "humantime_serde")]
    pub publish_wait_timeout: Duration,
}

/// What kind of Redis `cluster.redis_url` names.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RedisMode {
    /// One `redis-server`.
    #[default]
    Standalone,
    /// A Redis Cluster (≥ 7): the URLs are seed nodes; each channel lives in
    /// one slot and its events travel by sharded pub/sub.
    Cluster,
    /// A primary with replicas, failed over by Redis Sentinel: the URLs are
    /// the sentinels'.
    Sentinel,
}

impl ClusterSettings {
    /// Whether a Redis URL was given.
    pub fn enabled(&self) -> bool {
        !self.redis_urls().is_empty()
    }

    /// The URLs of `redis_url`, split at commas.
    pub fn redis_urls(&self) -> Vec<&str> {
        self.redis_url
            .split(',')
            .map(str::trim)
            .filter(|url| !url.is_empty())
            .collect()
    }

    /// The rules of the `[cluster]` section (when it is enabled).
    fn validate(&self) -> Result<(), String> {
        if self.command_timeout.is_zero() {
            return Err("cluster.command_timeout must be greater than 0".into());
        }
        if self.presence_interval.is_zero() {
            return Err("cluster.presence_interval must be greater than 0".into());
        }
        if self.redis_mode == RedisMode::Standalone && self.redis_urls().len() > 1 {
            return Err(
                "cluster.redis_url lists several URLs: set cluster.redis_mode to \
                 \"cluster\" (Redis Cluster seeds) or \"sentinel\" (sentinels)"
                    .into(),
            );
        }
        if self.redis_mode == RedisMode::Sentinel && self.sentinel_master.trim().is_empty() {
            return Err("cluster.redis_mode = \"sentinel\" needs cluster.sentinel_master".into());
        }
        if self.key_prefix.contains(['{', '}']) {
            return Err(
                "cluster.key_prefix must not contain { or } (they make Redis hash tags)".into(),
            );
        }
        if self.publish_wait_replicas > 0
            && (self.publish_wait_timeout.is_zero()
                || self.publish_wait_timeout >= self.command_timeout)
        {
            return Err(
                "cluster.publish_wait_timeout must be greater than 0 and shorter than \
                 cluster.command_timeout"
                    .into(),
            );
        }
        Ok(())
    }
}

/// A configuration that cannot be loaded or does not make sense.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration file {0} does not exist")]
    MissingFile(PathBuf),
    #[error("invalid configuration: {0}")]
    Invalid(#[from] Box<figment::Error>),
    #[error("invalid configuration: {0}")]
    Inconsistent(String),
}

impl Settings {
    /// Loads defaults, the optional overlay file and the environment.
    pub fn load(overlay: Option<&std::path::Path>) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Toml::string(DEFAULT_TOML));
        if let Some(path) = overlay {
            if !path.is_file() {
                return Err(ConfigError::MissingFile(path.to_owned()));
            }
            figment = figment.merge(Toml::file(path));
        }
        figment = figment.merge(Env::prefixed(ENV_PREFIX).split("__"));
        let settings: Settings = figment.extract().map_err(Box::new)?;
        settings.validate()?;
        Ok(settings)
    }

    /// The compiled-in development defaults alone (tests start from these).
    pub fn defaults() -> Self {
        let settings: Settings = Figment::from(Toml::string(DEFAULT_TOML))
            .extract()
            .expect("config/default.toml is compiled in and covered by tests");
        settings
    }

    /// Checks the rules no single field can express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |why: &str| Err(ConfigError::Inconsistent(why.to_owned()));
        if self.server.max_json_depth == 0 {
            return bad("server.max_json_depth must be at least 1");
        }
        if self.stream.heartbeat.is_zero() {
            return bad("stream.heartbeat must be greater than 0");
        }
        if self.stream.subscriber_buffer == 0 {
            return bad("stream.subscriber_buffer must be at least 1");
        }
        if self.stream.subscriber_buffer_bytes < self.server.max_body_bytes {
            return bad(
                "stream.subscriber_buffer_bytes must be at least server.max_body_bytes \
                 (else one event of the largest size would evict every subscriber)",
            );
        }
        if self.stream.max_channels_per_stream == 0 {
            return bad("stream.max_channels_per_stream must be at least 1");
        }
        if self.demo.enabled && self.demo.interval.is_zero() {
            return bad("demo.interval must be greater than 0");
        }
        if self.demo.enabled && ChannelName::parse(&self.demo.channel).is_err() {
            return bad("demo.channel is not a valid channel name");
        }
        if self.publish.idempotency_window.is_zero() {
            return bad("publish.idempotency_window must be greater than 0");
        }
        if self.publish.idempotency_max_keys == 0 {
            return bad("publish.idempotency_max_keys must be at least 1");
        }
        if self.health.ready_timeout.is_zero() {
            return bad("health.ready_timeout must be greater than 0");
        }
        if let Some(bad_name) = self
            .metrics
            .channels
            .iter()
            .find(|name| ChannelName::parse(name).is_err())
        {
            return Err(ConfigError::Inconsistent(format!(
                "metrics.channels: {bad_name:?} is not a valid channel name"
            )));
        }
        if self.auth.enabled {
            if self.auth.algorithm.is_hmac() {
                if self.auth.secret.is_empty() && self.auth.secret_file.is_none() {
                    return bad(
                        "auth.enabled with an HS algorithm needs auth.secret or auth.secret_file",
                    );
                }
            } else if self.auth.public_key_file.is_none() {
                return bad("auth.enabled with RS256/ES256 needs auth.public_key_file");
            }
        } else if !self.auth.private_channels.is_empty() || !self.auth.anonymous_subscribe {
            // Fail closed: a private channel must never be silently public.
            return bad(
                "auth.private_channels and auth.anonymous_subscribe = false need auth.enabled = true",
            );
        }
        if self.auth.leeway > crate::auth::token::MAX_LEEWAY {
            return bad("auth.leeway must be at most 1 day (it is clock skew, not a lifetime)");
        }
        if !self.auth.secret.is_empty() && self.auth.secret.len() < 32 {
            return bad("auth.secret must be at least 32 bytes");
        }
        for pattern in &self.auth.private_channels {
            Pattern::parse(pattern)
                .map_err(|e| ConfigError::Inconsistent(format!("auth.private_channels: {e}")))?;
        }
        let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.');
        if self.auth.cookie_name.is_empty() || !self.auth.cookie_name.chars().all(plain) {
            return bad("auth.cookie_name must be a plain token (letters, digits, _ - .)");
        }
        self.limits.validate().map_err(ConfigError::Inconsistent)?;
        self.mercure.validate()?;
        self.server.tls.validate()?;
        if self.history.durable() && self.cluster.enabled() {
            return bad(
                "history.data_dir (durable history) and cluster.redis_url (cluster mode) \
                 cannot be combined: in a cluster Redis keeps the history; set only one",
            );
        }
        if self.history.max_total_bytes > 0
            && self.history.max_total_bytes < self.server.max_body_bytes as u64
        {
            return bad(
                "history.max_total_bytes must be 0 (no budget) or at least server.max_body_bytes",
            );
        }
        if self.history.durable()
            && self.history.sync == SyncPolicy::Interval
            && self.history.sync_interval.is_zero()
        {
            return bad("history.sync_interval must be greater than 0 with sync = \"interval\"");
        }
        if self.cluster.enabled() {
            self.cluster.validate().map_err(ConfigError::Inconsistent)?;
        }
        let any_origin = self.cors.allowed_origins.iter().any(|o| o == "*");
        if any_origin && self.cors.allow_credentials {
            return bad(
                "cors.allowed_origins \"*\" cannot be combined with cors.allow_credentials",
            );
        }
        Ok(())
    }
}

/// `[server.tls]`: HTTPS on `server.bind` (docs/https.md). Off while
/// neither a certificate nor ACME domains are set.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    /// PEM certificate chain, leaf first; with `key_file`, turns HTTPS on.
    #[serde(default)]
    pub cert_file: PathBuf,
    /// PEM private key of `cert_file`.
    #[serde(default)]
    pub key_file: PathBuf,
    /// How often the two files are checked for a change (then reloaded);
    /// 0 reloads on SIGHUP only.
    #[serde(with = "humantime_serde")]
    pub watch_interval: Duration,
    /// A plain-HTTP listener that redirects every request to HTTPS.
    #[serde(default)]
    pub redirect_bind: Option<SocketAddr>,
    /// Without TLS: also accept cleartext HTTP/2 with prior knowledge.
    pub h2c: bool,
    /// Automatic certificates from an ACME authority.
    pub acme: AcmeSettings,
}

/// `[server.tls.acme]`: certificates from an ACME authority (Let's Encrypt
/// by default), validated with tls-alpn-01 on the HTTPS port.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcmeSettings {
    /// Names the certificate is for; empty leaves ACME off.
    pub domains: Vec<String>,
    /// Account contacts (`mailto:…`), told of expiry problems.
    pub contact: Vec<String>,
    /// The authority's directory.
    pub directory_url: String,
    /// PEM root that the directory's own HTTPS certificate chains to, for a
    /// private or test authority; empty trusts the system's roots.
    #[serde(default)]
    pub directory_ca_file: PathBuf,
    /// Where the account and certificates are kept across restarts.
    #[serde(default)]
    pub cache_dir: PathBuf,
    /// How long before expiry a certificate is renewed.
    #[serde(with = "humantime_serde")]
    pub renew_before: Duration,
}

impl TlsSettings {
    /// Whether the listener speaks HTTPS.
    pub fn enabled(&self) -> bool {
        self.files() || self.acme.enabled()
    }

    /// Whether a certificate is read from files.
    pub fn files(&self) -> bool {
        !self.cert_file.as_os_str().is_empty() || !self.key_file.as_os_str().is_empty()
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |why: &str| Err(ConfigError::Inconsistent(format!("server.tls: {why}")));
        if self.files()
            && (self.cert_file.as_os_str().is_empty() || self.key_file.as_os_str().is_empty())
        {
            return bad("cert_file and key_file go together: set both");
        }
        if self.files() && self.acme.enabled() {
            return bad("set either cert_file/key_file or acme.domains, not both");
        }
        if self.redirect_bind.is_some() && !self.enabled() {
            return bad("redirect_bind redirects to HTTPS: it needs a certificate or acme.domains");
        }
        if self.h2c && self.enabled() {
            return bad(
                "h2c is cleartext HTTP/2; with TLS, HTTP/2 is negotiated by ALPN: drop h2c",
            );
        }
        if self.acme.enabled() {
            self.acme.validate()?;
        }
        Ok(())
    }
}

impl AcmeSettings {
    /// Whether certificates come from ACME.
    pub fn enabled(&self) -> bool {
        !self.domains.is_empty()
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |why: String| Err(ConfigError::Inconsistent(format!("server.tls.acme: {why}")));
        for domain in &self.domains {
            let label_ok = |l: &str| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            };
            if domain.starts_with("*.") {
                return bad(format!(
                    "{domain:?}: wildcard names need the dns-01 challenge, which the broker does not answer"
                ));
            }
            if domain.len() > 253 || !domain.split('.').all(label_ok) {
                return bad(format!("{domain:?} is not a DNS name"));
            }
        }
        if let Some(contact) = self.contact.iter().find(|c| !c.starts_with("mailto:")) {
            return bad(format!("contact {contact:?} must be a mailto: URL"));
        }
        if !self.directory_url.starts_with("https://") {
            return bad(format!(
                "directory_url {:?} must be an https:// URL",
                self.directory_url
            ));
        }
        if self.cache_dir.as_os_str().is_empty() {
            return bad(
                "cache_dir must be set (the account and certificates must outlive a restart, \
                 or every start orders a new certificate)"
                    .into(),
            );
        }
        if self.renew_before.is_zero() {
            return bad("renew_before must be greater than 0".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The compiled-in defaults parse and pass validation.
    #[test]
    fn defaults_are_valid() {
        let settings = Settings::defaults();
        settings.validate().expect("defaults are valid");
        assert_eq!(settings.server.bind.port(), 8080);
        assert_eq!(settings.stream.heartbeat, Duration::from_secs(15));
    }

    /// A trusted issuer with a real key, as an operator adds to production.
    const PRODUCTION_ISSUER: &str = "[[mercure.issuers]]\nid = \"https://app.example.com\"\n\
        publisher = { jwt = \"a-real-secret-of-enough-length\" }\n\
        subscriber = { jwt = \"another-real-secret-of-enough-length\" }\n";

    /// The production example is a valid overlay once its secrets are set,
    /// and refuses to load without them.
    #[test]
    fn production_example_is_valid() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/production.toml");
        let err = Settings::load(Some(&path)).expect_err("no Mercure key in production.toml");
        assert!(err.to_string().contains("mercure"), "{err}");
        let settings: Settings = Figment::from(Toml::string(DEFAULT_TOML))
            .merge(Toml::file(&path))
            .merge(Toml::string(PRODUCTION_ISSUER))
            .extract()
            .expect("production.toml loads");
        settings.validate().expect("valid with a real key");
        assert!(!settings.demo.enabled);
        assert!(settings.auth.enabled, "production turns auth on");
        assert!(
            settings.history.durable(),
            "production keeps history on disk"
        );
    }

    /// A private channel list without auth is refused (fail closed).
    #[test]
    fn private_channels_need_auth() {
        let mut settings = Settings::defaults();
        settings.auth.private_channels = vec!["private.*".into()];
        assert!(settings.validate().is_err());
        settings.auth.enabled = true;
        settings.auth.secret = "s".repeat(32);
        settings.validate().expect("valid with auth on");
        settings.auth.secret = "short".into();
        assert!(settings.validate().is_err());
    }

    /// Durable history and cluster mode at once are refused with a clear error.
    #[test]
    fn durable_history_and_cluster_are_exclusive() {
        let mut settings = Settings::defaults();
        settings.history.data_dir = "/var/lib/sse-broker".into();
        settings.validate().expect("durable history alone is valid");
        settings.cluster.redis_url = "redis://127.0.0.1:6379".into();
        let err = settings.validate().expect_err("both at once are refused");
        assert!(err.to_string().contains("cannot be combined"), "{err}");
    }

    /// Several Redis URLs need a mode that takes seeds; the mode reads from the environment's lowercase words.
    #[test]
    fn several_redis_urls_need_cluster_or_sentinel_mode() {
        let mut settings = Settings::defaults();
        settings.cluster.redis_url = "redis://10.0.0.1:7000, redis://10.0.0.2:7000".into();
        let err = settings.validate().expect_err("standalone takes one URL");
        assert!(err.to_string().contains("redis_mode"), "{err}");
        settings.cluster.redis_mode = RedisMode::Cluster;
        settings.validate().expect("a cluster takes seeds");
        assert_eq!(settings.cluster.redis_urls().len(), 2);
        let mode: ClusterSettings = Figment::from(Toml::string(DEFAULT_TOML))
            .merge(Toml::string("[cluster]\nredis_mode = \"sentinel\""))
            .extract_inner("cluster")
            .expect("sentinel is a mode");
        assert_eq!(mode.redis_mode, RedisMode::Sentinel);
    }

    /// Waiting for replicas needs a timeout shorter than a command's.
    #[test]
    fn publish_wait_timeout_is_bounded() {
        let mut settings = Settings::defaults();
        settings.cluster.redis_url = "redis://127.0.0.1:6379".into();
        settings.cluster.publish_wait_replicas = 1;
        settings.cluster.publish_wait_timeout = settings.cluster.command_timeout;
        assert!(settings.validate().is_err());
        settings.cluster.publish_wait_timeout = Duration::from_millis(500);
        settings.validate().expect("valid with a shorter timeout");
    }

    /// The defaults with `toml` merged over them, or the load's error.
    fn limits_with(toml: &str) -> Result<Settings, String> {
        Figment::from(Toml::string(DEFAULT_TOML))
            .merge(Toml::string(toml))
            .extract()
            .map_err(|err| err.to_string())
    }

    /// Trusted proxies: CIDRs and bare addresses (IPv4-mapped ones as IPv4);
    /// a bad entry fails the load and is named; none by default.
    #[test]
    fn trusted_proxies_are_cidrs_or_addresses() {
        assert!(Settings::defaults().limits.trusted_proxies.is_empty());
        let ip = |text: &str| text.parse::<IpAddr>().unwrap();
        let settings = limits_with(
            "[limits]\ntrusted_proxies = [\"10.0.0.0/8\", \"192.168.1.7\", \"fd00::/8\", \
             \"::ffff:172.16.0.0/112\"]\nforwarded_header = \"forwarded\"",
        )
        .expect("valid entries");
        let limits = &settings.limits;
        assert_eq!(limits.forwarded_header, ForwardedHeader::Forwarded);
        for (peer, trusted) in [
            ("10.200.3.4", true),
            ("11.0.0.1", false),
            ("192.168.1.7", true),
            ("192.168.1.8", false),
            ("fd12::1", true),
            ("fe80::1", false),
            ("::ffff:10.1.1.1", true),
            ("172.16.9.9", true),
            ("172.17.0.1", false),
        ] {
            assert_eq!(limits.is_trusted_proxy(ip(peer)), trusted, "{peer}");
        }
        for bad in ["10.0.0.300/8", "10.0.0.0/33", "nginx.local", ""] {
            let err = limits_with(&format!("[limits]\ntrusted_proxies = [{bad:?}]"))
                .expect_err("a bad entry is refused");
            assert!(err.contains(&format!("{bad:?}")), "{err}");
        }
        assert!(limits_with("[limits]\nforwarded_header = \"x-real-ip\"").is_err());
    }

    /// The old boolean: `true` is refused with the way to migrate, `false`
    /// (what the default says) loads.
    #[test]
    fn trust_forwarded_for_true_is_refused() {
        let old = limits_with("[limits]\ntrust_forwarded_for = true").expect("it parses");
        let err = old.validate().expect_err("true no longer loads");
        assert!(err.to_string().contains("trusted_proxies"), "{err}");
        let off = limits_with("[limits]\ntrust_forwarded_for = false").expect("it parses");
        off.validate().expect("false is a no-op");
        assert!(off.limits.trusted_proxies.is_empty());
    }

    /// A wildcard origin together with credentials is refused.
    #[test]
    fn wildcard_origin_with_credentials_is_refused() {
        let mut settings = Settings::defaults();
        settings.cors.allowed_origins = vec!["*".into()];
        settings.cors.allow_credentials = true;
        assert!(settings.validate().is_err());
    }
}
