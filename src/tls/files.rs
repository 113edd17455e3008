//! Certificate files: the PEM chain (`server.tls.cert_file`, leaf first)
//! and private key (`server.tls.key_file`) read into the certificate every
//! handshake is given, and read again without a restart.
//!
//! A reload happens on SIGHUP, and when the files change: every
//! `server.tls.watch_interval` the watcher compares both files' metadata
//! (size, modification time, inode, following symlinks, so certbot's and
//! Kubernetes' symlink swaps count) with what it last read. A new pair that
//! does not read (a half-written file, a key of another certificate) is
//! logged and the certificate in force stays; the watcher tries again when
//! the files change again. Open connections keep the certificate they
//! started with: a reload never drops a stream.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use rustls::{
    crypto::CryptoProvider,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    sign::CertifiedKey,
};

use super::{CertificateInfo, Certificates, TlsError};

/// A certificate that expires sooner than this is logged as a warning at
/// every load (a renewal that stopped working shows up in the logs weeks
/// before browsers refuse the broker).
const EXPIRY_WARNING: Duration = Duration::from_secs(14 * 24 * 3600);

/// The two files, the store they feed, and what was last read.
#[derive(Clone)]
pub struct CertificateFiles {
    cert: PathBuf,
    key: PathBuf,
    interval: Duration,
    certificates: Arc<Certificates>,
    provider: Arc<CryptoProvider>,
    /// The files' metadata when they were last read (loaded or refused),
    /// so an unchanged pair is not read again.
    seen: Arc<Mutex<Option<Fingerprint>>>,
}

/// What tells that a file changed without reading it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fingerprint([(u64, Option<SystemTime>, u64); 2]);

impl Fingerprint {
    fn of(cert: &Path, key: &Path) -> Option<Self> {
        use std::os::unix::fs::MetadataExt;
        let one = |path: &Path| {
            let meta = std::fs::metadata(path).ok()?;
            Some((meta.len(), meta.modified().ok(), meta.ino()))
        };
        Some(Self([one(cert)?, one(key)?]))
    }
}

impl CertificateFiles {
    pub fn new(
        cert: PathBuf,
        key: PathBuf,
        interval: Duration,
        certificates: Arc<Certificates>,
        provider: Arc<CryptoProvider>,
    ) -> Self {
        Self {
            cert,
            key,
            interval,
            certificates,
            provider,
            seen: Arc::default(),
        }
    }

    /// Reads both files and serves them from now on.
    pub fn load(&self) -> Result<CertificateInfo, TlsError> {
        let fingerprint = Fingerprint::of(&self.cert, &self.key);
        if let Ok(mut seen) = self.seen.lock() {
            *seen = fingerprint;
        }
        let (key, info) = read_pair(&self.cert, &self.key, &self.provider)?;
        self.certificates.set(Arc::new(key));
        let level = if expires_within(&info, EXPIRY_WARNING) {
            log::Level::Warn
        } else {
            log::Level::Info
        };
        log::log!(
            level,
            "tls certificate loaded names={} not_after={} file={}",
            info.names_text(),
            info.not_after_text(),
            self.cert.display()
        );
        Ok(info)
    }

    /// Reads the files again; on failure the certificate in force stays.
    pub fn reload(&self, why: &str) {
        if let Err(err) = self.load() {
            log::error!(
                "tls certificate not reloaded reason={why} error=\"{err}\" (the previous certificate stays in force)"
            );
        }
    }

    /// Starts the watcher (nothing with a zero interval: SIGHUP only).
    pub fn watch(&self) {
        if self.interval.is_zero() {
            return;
        }
        let files = self.clone();
        actix_web::rt::spawn(async move {
            let mut tick = tokio::time::interval(files.interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let now = Fingerprint::of(&files.cert, &files.key);
                let changed = files.seen.lock().is_ok_and(|seen| *seen != now);
                // A file that is missing for a moment (being replaced) is
                // not a change yet.
                if changed && now.is_some() {
                    files.reload("changed");
                }
            }
        });
    }
}

/// Reads a certificate chain and its key; checks that they belong together.
pub fn read_pair(
    cert: &Path,
    key: &Path,
    provider: &CryptoProvider,
) -> Result<(CertifiedKey, CertificateInfo), TlsError> {
    let chain = read_chain(cert)?;
    let key_der = read_key(key)?;
    certified_key(chain, key_der, provider)
}

/// A chain and its key as rustls serves them, checked to belong together.
pub fn certified_key(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    provider: &CryptoProvider,
) -> Result<(CertifiedKey, CertificateInfo), TlsError> {
    let info = CertificateInfo::of(&chain[0])?;
    let key = CertifiedKey::from_der(chain, key, provider).map_err(TlsError::Key)?;
    Ok((key, info))
}

/// Every certificate of a PEM file, in order.
fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| TlsError::BadPem {
            path: path.to_owned(),
            reason: err.to_string(),
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(chain)
}

/// The first private key of a PEM file.
fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|err| match err {
        rustls::pki_types::pem::Error::NoItemsFound => TlsError::NoKey {
            path: path.to_owned(),
        },
        err => TlsError::BadPem {
            path: path.to_owned(),
            reason: err.to_string(),
        },
    })
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Io {
        path: path.to_owned(),
        source,
    })
}

/// Whether the certificate is expired or expires within `margin`.
pub fn expires_within(info: &CertificateInfo, margin: Duration) -> bool {
    info.not_after
        .duration_since(SystemTime::now())
        .map_or(true, |left| left < margin)
}
