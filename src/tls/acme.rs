//! Automatic certificates: an ACME certificate authority (Let's Encrypt by
//! default, RFC 8555) issues the HTTPS certificate for `server.tls.acme`'s
//! domains, and this task keeps it current.
//!
//! The protocol (account keys, signed requests, nonces, polling) is the
//! `instant-acme` crate's; this module holds the policy:
//! - **challenge**: tls-alpn-01 (RFC 8737), answered on the HTTPS listener
//!   itself: the authority connects to port 443 of each domain offering the
//!   `acme-tls/1` protocol, and [`Certificates`] hands it a self-signed
//!   certificate that carries the key authorization. No port 80, no DNS API,
//!   nothing to route;
//! - **cache** (`cache_dir`, which must be kept across restarts): the
//!   account's credentials and the certificate with its key, one file each
//!   per directory URL (mode 0600). A restart serves the cached certificate
//!   at once, so restarts never ask the authority again (Let's Encrypt
//!   limits how many certificates a set of names may get per week);
//! - **renewal**: at `not_after − renew_before`, but never before half the
//!   certificate's lifetime (short-lived certificates), checked against the
//!   wall clock at least hourly. A failed order is retried after 1 minute,
//!   doubling up to 1 hour; the certificate in force stays meanwhile and
//!   each failure is logged.
//!
//! Until the first certificate is issued (a first start with an empty
//! cache) HTTPS handshakes fail; the log says when it is in force.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, SystemTime},
};

use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount,
    NewOrder, OrderStatus, RetryPolicy,
};
use rustls::{
    crypto::CryptoProvider,
    pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, pem::PemObject},
    sign::CertifiedKey,
};

use super::{CertificateInfo, Certificates, TlsError, files::certified_key};
use crate::config::AcmeSettings;

/// First wait after a failed order; it doubles up to [`MAX_RETRY`].
const FIRST_RETRY: Duration = Duration::from_secs(60);
/// Longest wait between two failed orders.
const MAX_RETRY: Duration = Duration::from_secs(3600);
/// Longest sleep between two looks at the wall clock (a suspended machine
/// or a clock step must not delay a renewal by weeks).
const CLOCK_CHECK: Duration = Duration::from_secs(3600);
/// How long one order may wait for the authority (validation, issuance).
const ORDER_PATIENCE: Duration = Duration::from_secs(120);

/// The ACME task's settings and the store it feeds.
#[derive(Clone)]
pub struct Acme {
    settings: AcmeSettings,
    certificates: Arc<Certificates>,
    provider: Arc<CryptoProvider>,
}

impl Acme {
    pub fn new(
        settings: AcmeSettings,
        certificates: Arc<Certificates>,
        provider: Arc<CryptoProvider>,
    ) -> Self {
        Self {
            settings,
            certificates,
            provider,
        }
    }

    /// Serves the cached certificate of these domains, if there is one,
    /// and answers when to order the next: its renewal time, or now.
    pub fn load_cached(&self) -> SystemTime {
        match self.cached() {
            Ok(Some(info)) => {
                log::info!(
                    "tls certificate loaded names={} not_after={} source=acme-cache",
                    info.names_text(),
                    info.not_after_text()
                );
                self.renewal_time(&info)
            }
            Ok(None) => {
                log::info!(
                    "acme ordering a certificate domains={} directory={} (HTTPS handshakes fail until it is issued)",
                    self.settings.domains.join(","),
                    self.settings.directory_url
                );
                SystemTime::now()
            }
            Err(err) => {
                log::warn!("acme cache not used error=\"{err}\" (a new certificate is ordered)");
                SystemTime::now()
            }
        }
    }

    /// Starts the task that orders the certificate at `first` and renews it.
    pub fn start(&self, first: SystemTime) {
        let acme = self.clone();
        actix_web::rt::spawn(async move { acme.run(first).await });
    }

    async fn run(self, first: SystemTime) {
        let mut renew_at = first;
        let mut retry = FIRST_RETRY;
        loop {
            sleep_until(renew_at).await;
            match self.order().await {
                Ok(info) => {
                    renew_at = self.renewal_time(&info);
                    retry = FIRST_RETRY;
                    log::info!(
                        "tls certificate issued names={} not_after={} renew_at={} source=acme",
                        info.names_text(),
                        info.not_after_text(),
                        humantime::format_rfc3339_seconds(renew_at)
                    );
                }
                Err(err) => {
                    log::error!(
                        "acme order failed domains={} error=\"{err}\" retry_in={}s",
                        self.settings.domains.join(","),
                        retry.as_secs()
                    );
                    renew_at = SystemTime::now() + retry;
                    retry = (retry * 2).min(MAX_RETRY);
                }
            }
        }
    }

    /// When a certificate is renewed: `renew_before` its end, but not
    /// before half its lifetime.
    fn renewal_time(&self, info: &CertificateInfo) -> SystemTime {
        let lifetime = info
            .not_after
            .duration_since(info.not_before)
            .unwrap_or_default();
        let early = info.not_before + lifetime / 2;
        let planned = info
            .not_after
            .checked_sub(self.settings.renew_before)
            .unwrap_or(early);
        planned.max(early)
    }

    /// Serves the cached certificate, if there is one for these domains.
    fn cached(&self) -> Result<Option<CertificateInfo>, TlsError> {
        let path = self.certificate_path();
        let pem = match std::fs::read(&path) {
            Ok(pem) => pem,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(TlsError::Io { path, source }),
        };
        let (key, info) = self.parse(&pem)?;
        let mut wanted: Vec<String> = self.settings.domains.clone();
        let mut have: Vec<String> = info.names.clone();
        wanted.sort();
        have.sort();
        if wanted != have {
            return Ok(None);
        }
        self.certificates.set(Arc::new(key));
        Ok(Some(info))
    }

    /// Orders a certificate for the domains, serves it and caches it.
    async fn order(&self) -> Result<CertificateInfo, TlsError> {
        let account = self.account().await?;
        let identifiers: Vec<Identifier> = self
            .settings
            .domains
            .iter()
            .map(|domain| Identifier::Dns(domain.clone()))
            .collect();
        let mut order = account
            .new_order(&NewOrder::new(&identifiers))
            .await
            .map_err(acme_error)?;
        let mut challenged = Vec::new();
        let outcome = async {
            let mut authorizations = order.authorizations();
            while let Some(authorization) = authorizations.next().await {
                let mut authorization = authorization.map_err(acme_error)?;
                match authorization.status {
                    AuthorizationStatus::Pending => {}
                    AuthorizationStatus::Valid => continue,
                    other => {
                        return Err(TlsError::Acme(format!(
                            "authorization is {other:?}, not pending"
                        )));
                    }
                }
                let mut challenge = authorization
                    .challenge(ChallengeType::TlsAlpn01)
                    .ok_or_else(|| {
                        TlsError::Acme("the authority offers no tls-alpn-01 challenge".into())
                    })?;
                let domain = challenge.identifier().to_string();
                let key = challenge_certificate(
                    &domain,
                    challenge.key_authorization().digest().as_ref(),
                    &self.provider,
                )?;
                self.certificates
                    .set_challenge(&domain, Some(Arc::new(key)));
                challenged.push(domain);
                challenge.set_ready().await.map_err(acme_error)?;
            }
            let patience = RetryPolicy::new().timeout(ORDER_PATIENCE);
            let status = order.poll_ready(&patience).await.map_err(acme_error)?;
            if status != OrderStatus::Ready {
                return Err(TlsError::Acme(format!(
                    "the order is {status:?}, not ready (validation failed)"
                )));
            }
            let key_pem = order.finalize().await.map_err(acme_error)?;
            let chain_pem = order
                .poll_certificate(&patience)
                .await
                .map_err(acme_error)?;
            Ok(format!("{key_pem}{chain_pem}"))
        }
        .await;
        for domain in &challenged {
            self.certificates.set_challenge(domain, None);
        }
        let pem = outcome?;
        let (key, info) = self.parse(pem.as_bytes())?;
        self.certificates.set(Arc::new(key));
        if let Err(err) = write_private(&self.certificate_path(), pem.as_bytes()) {
            log::error!("acme certificate not cached error=\"{err}\" (it is served all the same)");
        }
        Ok(info)
    }

    /// The cached account for this directory, or a new one (then cached).
    async fn account(&self) -> Result<Account, TlsError> {
        let path = self.directory_dir().join("account.json");
        if let Ok(text) = std::fs::read(&path) {
            let credentials: AccountCredentials = serde_json::from_slice(&text)
                .map_err(|err| TlsError::Acme(format!("{}: {err}", path.display())))?;
            return self
                .builder()?
                .from_credentials(credentials)
                .await
                .map_err(acme_error);
        }
        let contact: Vec<&str> = self.settings.contact.iter().map(String::as_str).collect();
        let (account, credentials) = self
            .builder()?
            .create(
                &NewAccount {
                    contact: &contact,
                    terms_of_service_agreed: true,
                    only_return_existing: false,
                },
                self.settings.directory_url.clone(),
                None,
            )
            .await
            .map_err(acme_error)?;
        let text = serde_json::to_vec(&credentials)
            .map_err(|err| TlsError::Acme(format!("account credentials: {err}")))?;
        write_private(&path, &text)?;
        log::info!(
            "acme account created directory={} id={}",
            self.settings.directory_url,
            account.id()
        );
        Ok(account)
    }

    /// The ACME client: the system's roots, or `directory_ca_file` for a
    /// private or test authority.
    fn builder(&self) -> Result<instant_acme::AccountBuilder, TlsError> {
        let ca = &self.settings.directory_ca_file;
        if ca.as_os_str().is_empty() {
            Account::builder().map_err(acme_error)
        } else {
            Account::builder_with_root(ca).map_err(acme_error)
        }
    }

    /// The cache folder of this directory URL (`<cache_dir>/<host_port>`).
    fn directory_dir(&self) -> PathBuf {
        let host: String = url::Url::parse(&self.settings.directory_url)
            .ok()
            .and_then(|url| {
                let host = url.host_str()?.to_owned();
                Some(match url.port() {
                    Some(port) => format!("{host}_{port}"),
                    None => host,
                })
            })
            .unwrap_or_else(|| "directory".into())
            .chars()
            .map(|c| match c {
                'a'..='z' | 'A'..='Z' | '0'..='9' | '.' | '-' | '_' => c,
                _ => '_',
            })
            .collect();
        self.settings.cache_dir.join(host)
    }

    /// The cached certificate of these domains: its key, then its chain.
    fn certificate_path(&self) -> PathBuf {
        self.directory_dir()
            .join(format!("{}.pem", self.settings.domains.join("+")))
    }

    /// A cached or issued PEM (key, then chain) as rustls serves it.
    fn parse(&self, pem: &[u8]) -> Result<(CertifiedKey, CertificateInfo), TlsError> {
        let chain = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|err| TlsError::Acme(format!("certificate chain: {err}")))?;
        if chain.is_empty() {
            return Err(TlsError::Acme("no certificate in the answer".into()));
        }
        let key = PrivateKeyDer::from_pem_slice(pem)
            .map_err(|err| TlsError::Acme(format!("private key: {err}")))?;
        certified_key(chain, key, &self.provider)
    }
}

/// The tls-alpn-01 certificate of `domain` (RFC 8737): self-signed, for
/// that one name, carrying the SHA-256 digest of the key authorization in
/// its critical `acmeIdentifier` extension.
fn challenge_certificate(
    domain: &str,
    digest: &[u8],
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let rcgen_error = |err: rcgen::Error| TlsError::Acme(format!("challenge certificate: {err}"));
    let mut params = rcgen::CertificateParams::new(vec![domain.to_owned()]).map_err(rcgen_error)?;
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest)];
    let key = rcgen::KeyPair::generate().map_err(rcgen_error)?;
    let cert = params.self_signed(&key).map_err(rcgen_error)?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    // Not `CertifiedKey::from_der`: its key check parses the certificate
    // with webpki, which refuses the critical `acmeIdentifier` extension
    // (rightly, for a certificate that is not a challenge's). The key was
    // made with this certificate, so they belong together.
    let key = provider
        .key_provider
        .load_private_key(key)
        .map_err(TlsError::Key)?;
    Ok(CertifiedKey::new(vec![cert.der().clone()], key))
}

fn acme_error(err: instant_acme::Error) -> TlsError {
    TlsError::Acme(err.to_string())
}

/// Writes a file only its owner may read (account keys, private keys),
/// creating its folder.
fn write_private(path: &Path, contents: &[u8]) -> Result<(), TlsError> {
    use std::{io::Write, os::unix::fs::OpenOptionsExt};
    let io = |source| TlsError::Io {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    // Written aside, then renamed: a crash never leaves half a key.
    let partial = path.with_extension("partial");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&partial)
        .map_err(io)?;
    file.write_all(contents).map_err(io)?;
    file.sync_all().map_err(io)?;
    std::fs::rename(&partial, path).map_err(io)
}

/// Sleeps until the wall clock reaches `at`, looking at it at least every
/// [`CLOCK_CHECK`].
async fn sleep_until(at: SystemTime) {
    while let Ok(left) = at.duration_since(SystemTime::now()) {
        if left.is_zero() {
            return;
        }
        tokio::time::sleep(left.min(CLOCK_CHECK)).await;
    }
}
