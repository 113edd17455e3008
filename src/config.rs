//! Configuration: the [`Settings`] tree and how it is loaded.
//!
//! Layers, later ones winning: the development defaults compiled in from
//! `config/default.toml`, an optional overlay file (`--config`), environment
//! variables `SSE_BROKER__<SECTION>__<KEY>`, then command-line flags (applied by
//! `main`). Every key is documented in `config/default.toml`; this module only
//! gives them types and checks that they make sense together.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use figment::{
    Figment,
    providers::{Env, Format, Toml},
};
use serde::Deserialize;

mod cluster;
mod hooks;
mod limits;
mod mercure;
mod publish;
pub mod secrets;
mod tls;
mod webhooks;

pub use crate::auth::{AuthSettings, JwtAlgorithm};
use crate::{auth::Pattern, names::ChannelName};
pub use cluster::{ClusterSettings, RedisMode};
pub use hooks::{FailurePolicy, HooksSettings, MAX_FORWARDED_HEADERS};
pub use limits::{ForwardedHeader, LimitsSettings, parse_proxy};
pub use mercure::{
    COMPATIBLE_PROTOCOL_VERSION, DEFAULT_JWKS_ALGORITHMS, IssuerSettings, MERCURE_DEVELOPMENT_KEY,
    MercureSettings, VerifierSettings, check_pem_algorithm,
};
pub use publish::PublishSettings;
pub use tls::{AcmeSettings, TlsSettings};
pub use webhooks::{WEBHOOK_EVENTS, WebhookSettings, signing_key};

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
    pub hooks: HooksSettings,
    pub webhooks: WebhookSettings,
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
        self.publish.validate().map_err(ConfigError::Inconsistent)?;
        self.mercure.validate()?;
        self.server.tls.validate()?;
        self.hooks.validate()?;
        self.webhooks.validate()?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

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
