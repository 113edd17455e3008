//! The `[server.tls]` section: HTTPS on the listener, from certificate
//! files or from ACME (docs/https.md). Every key is documented in
//! `config/default.toml`.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use serde::Deserialize;

use super::ConfigError;

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

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
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

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
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
