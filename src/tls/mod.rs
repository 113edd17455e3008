//! HTTPS for the HTTP edge: the rustls server configuration the listener
//! is given, and where its certificate comes from.
//!
//! The listener's rustls configuration is built once ([`Tls::build`]): TLS
//! 1.3 and 1.2 only, rustls' AEAD-only ECDHE cipher suites (on the `ring`
//! provider), ALPN `h2` and `http/1.1` (added by actix-web, so browsers get
//! HTTP/2), and session tickets for cheap resumption after a network blip.
//! Its certificate is not part of it: every handshake asks [`Certificates`]
//! (a rustls `ResolvesServerCert`) for the one in force, so a new certificate
//! is served to the next handshake without a restart, and connections that
//! are open (event streams) keep theirs.
//!
//! The certificate comes either from two PEM files ([`files`]: read at
//! start, read again when they change or on SIGHUP), or from an ACME
//! certificate authority ([`acme`]: obtained at start, cached, renewed before
//! it expires; the tls-alpn-01 challenge is answered by [`Certificates`] on
//! the HTTPS port itself). A plain-HTTP listener that only redirects to
//! HTTPS is [`redirect`].

pub mod acme;
pub mod files;
pub mod redirect;

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{Arc, RwLock},
    time::{Duration, SystemTime},
};

use rustls::{
    ServerConfig,
    crypto::CryptoProvider,
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};

use crate::config::TlsSettings;

/// The ALPN protocol of the ACME tls-alpn-01 challenge (RFC 8737): a
/// handshake that offers it gets the challenge certificate of its name.
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// Why TLS could not be set up, or a certificate could not be read.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} holds no PEM certificate")]
    NoCertificate { path: PathBuf },
    #[error("{path} holds no PEM private key (PKCS#8, PKCS#1 or SEC1)")]
    NoKey { path: PathBuf },
    #[error("{path}: {reason}")]
    BadPem { path: PathBuf, reason: String },
    #[error("the private key does not belong to the certificate, or is not usable: {0}")]
    Key(rustls::Error),
    #[error("the certificate cannot be parsed: {0}")]
    Certificate(String),
    #[error("TLS setup: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("ACME: {0}")]
    Acme(String),
}

/// The crypto provider of every TLS connection: rustls on `ring`, with its
/// default suites, all AEAD with ECDHE key exchange (TLS 1.3:
/// AES-256-GCM, AES-128-GCM, ChaCha20-Poly1305; TLS 1.2: ECDHE-ECDSA and
/// ECDHE-RSA with the same three), so forward secrecy always.
///
/// rustls marks `ring` deprecated because it has no post-quantum key
/// exchange (X25519MLKEM768): that needs `aws-lc-rs`, a C library built
/// with cmake, which the two-command setup does not have. Browsers then
/// agree on X25519. Moving is one line here and one feature in Cargo.toml.
#[allow(deprecated)]
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// HTTPS, configured: the listener's rustls configuration and the
/// certificate source that feeds it.
pub struct Tls {
    config: ServerConfig,
    certificates: Arc<Certificates>,
    source: Source,
}

/// Where the certificate comes from.
enum Source {
    Files(files::CertificateFiles),
    /// The ACME task, and when it orders first (now, or the cached
    /// certificate's renewal time).
    Acme(acme::Acme, SystemTime),
}

impl Tls {
    /// HTTPS as `settings` ask, or `None` when they leave it off. With
    /// certificate files, a file that cannot be read, or a key that does
    /// not match, stops the start here; with ACME the certificate comes
    /// later ([`Tls::start`]), from the cache or the authority.
    pub fn build(settings: &TlsSettings) -> Result<Option<Self>, TlsError> {
        if !settings.enabled() {
            return Ok(None);
        }
        let provider = provider();
        // Clients built with `ClientConfig::builder()` (the ACME client's)
        // find the same provider; an error means one is installed already.
        let _ = CryptoProvider::install_default(CryptoProvider::clone(&provider));
        let certificates = Arc::new(Certificates::default());
        let source = if settings.acme.enabled() {
            let acme = acme::Acme::new(
                settings.acme.clone(),
                Arc::clone(&certificates),
                Arc::clone(&provider),
            );
            let first = acme.load_cached();
            Source::Acme(acme, first)
        } else {
            let files = files::CertificateFiles::new(
                settings.cert_file.clone(),
                settings.key_file.clone(),
                settings.watch_interval,
                Arc::clone(&certificates),
                Arc::clone(&provider),
            );
            files.load()?;
            Source::Files(files)
        };
        let mut config = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(&certificates) as Arc<dyn ResolvesServerCert>);
        // actix-web puts `h2` and `http/1.1` in front of these.
        if matches!(source, Source::Acme(..)) {
            config.alpn_protocols = vec![ACME_TLS_ALPN.to_vec()];
        }
        // Stateless resumption (TLS 1.3 tickets, TLS 1.2 too): a client that
        // comes back after a blip skips the certificate signature.
        config.ticketer = rustls::crypto::ring::Ticketer::new()?;
        Ok(Some(Self {
            config,
            certificates,
            source,
        }))
    }

    /// The listener's rustls configuration (actix-web clones it per worker;
    /// every clone asks the same [`Certificates`]).
    pub fn server_config(&self) -> ServerConfig {
        self.config.clone()
    }

    /// Starts what keeps the certificate current: the file watcher, or the
    /// ACME task (which obtains the first certificate). Needs the runtime.
    pub fn start(&self) -> Reloader {
        match &self.source {
            Source::Files(files) => {
                files.watch();
                Reloader(Some(files.clone()))
            }
            Source::Acme(acme, first) => {
                acme.start(*first);
                Reloader(None)
            }
        }
    }

    /// The certificate store the handshakes ask.
    pub fn certificates(&self) -> &Arc<Certificates> {
        &self.certificates
    }
}

/// Reads the certificate files again on demand (SIGHUP); does nothing with
/// ACME, whose task renews on its own schedule.
#[derive(Clone)]
pub struct Reloader(Option<files::CertificateFiles>);

impl Reloader {
    pub fn reload(&self) {
        match &self.0 {
            Some(files) => files.reload("signal"),
            None => log::info!("tls reload ignored reason=acme (certificates renew on their own)"),
        }
    }
}

/// The certificate every handshake is given, swapped in place when a new
/// one is read or issued, and the ACME challenge certificates of names
/// being validated.
#[derive(Debug, Default)]
pub struct Certificates {
    /// The certificate in force; `None` only while ACME obtains the first.
    current: RwLock<Option<Arc<CertifiedKey>>>,
    /// tls-alpn-01 challenge certificates by domain, while an order runs.
    challenges: RwLock<HashMap<String, Arc<CertifiedKey>>>,
}

impl Certificates {
    /// Serves `key` to every handshake from now on.
    pub fn set(&self, key: Arc<CertifiedKey>) {
        if let Ok(mut current) = self.current.write() {
            *current = Some(key);
        }
    }

    /// The certificate in force, if any.
    pub fn current(&self) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok()?.clone()
    }

    /// Answers tls-alpn-01 handshakes for `domain` with `key` (`None`
    /// withdraws it).
    pub fn set_challenge(&self, domain: &str, key: Option<Arc<CertifiedKey>>) {
        if let Ok(mut challenges) = self.challenges.write() {
            match key {
                Some(key) => challenges.insert(domain.to_ascii_lowercase(), key),
                None => challenges.remove(&domain.to_ascii_lowercase()),
            };
        }
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let acme = hello
            .alpn()
            .is_some_and(|mut protocols| protocols.any(|p| p == ACME_TLS_ALPN));
        if acme {
            // Only a validation handshake names this protocol; it gets the
            // challenge certificate of its name, or nothing.
            let name = hello.server_name()?.to_ascii_lowercase();
            return self.challenges.read().ok()?.get(&name).cloned();
        }
        self.current()
    }
}

/// What a certificate says about itself, for log lines and renewal.
#[derive(Debug, Clone)]
pub struct CertificateInfo {
    /// The DNS names it is valid for (its subject alternative names).
    pub names: Vec<String>,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

impl CertificateInfo {
    /// Reads the leaf certificate (DER).
    pub fn of(der: &[u8]) -> Result<Self, TlsError> {
        let (_, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|err| TlsError::Certificate(err.to_string()))?;
        let names = cert
            .subject_alternative_name()
            .ok()
            .flatten()
            .map(|san| {
                san.value
                    .general_names
                    .iter()
                    .filter_map(|name| match name {
                        x509_parser::extensions::GeneralName::DNSName(dns) => {
                            Some((*dns).to_owned())
                        }
                        x509_parser::extensions::GeneralName::IPAddress(ip) => {
                            ip_text(ip).map(|ip| ip.to_string())
                        }
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        let time = |t: &x509_parser::time::ASN1Time| {
            let seconds = t.timestamp();
            match u64::try_from(seconds) {
                Ok(s) => SystemTime::UNIX_EPOCH + Duration::from_secs(s),
                Err(_) => SystemTime::UNIX_EPOCH,
            }
        };
        let validity = cert.validity();
        Ok(Self {
            names,
            not_before: time(&validity.not_before),
            not_after: time(&validity.not_after),
        })
    }

    /// The names, comma-separated, for log lines.
    pub fn names_text(&self) -> String {
        self.names.join(",")
    }

    /// `not_after` as RFC 3339, for log lines.
    pub fn not_after_text(&self) -> String {
        humantime::format_rfc3339_seconds(self.not_after).to_string()
    }
}

/// An IP address from its SAN bytes.
fn ip_text(bytes: &[u8]) -> Option<std::net::IpAddr> {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes).ok().map(std::net::IpAddr::from),
        16 => <[u8; 16]>::try_from(bytes).ok().map(std::net::IpAddr::from),
        _ => None,
    }
}
