//! HTTPS scaffolding: a test certificate authority made with `rcgen`, the
//! broker started with a certificate it signed, and clients that trust it
//! (HTTP/2 by ALPN, or HTTP/1.1 only).

use std::{path::PathBuf, time::Duration};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use sse_broker::config::Settings;

use crate::helpers::*;

/// A certificate authority for one test, and the folder its files go to.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
    pub dir: tempfile::TempDir,
}

/// A certificate and its key, as PEM and as the DER the server presents.
pub struct IssuedCertificate {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: Vec<u8>,
}

impl TestCa {
    pub fn new() -> Self {
        install_crypto();
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "sse-broker test CA");
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().expect("a CA key"))
            .expect("the CA certificate");
        Self {
            issuer,
            dir: tempfile::tempdir().expect("a temporary folder"),
        }
    }

    /// The CA's certificate, PEM.
    pub fn pem(&self) -> String {
        let certificate: &rcgen::Certificate = self.issuer.as_ref();
        certificate.pem()
    }

    /// A server certificate for `names` (DNS names or IP addresses).
    pub fn issue(&self, names: &[&str]) -> IssuedCertificate {
        let params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .expect("valid names");
        let key = KeyPair::generate().expect("a server key");
        let cert = params.signed_by(&key, &self.issuer).expect("signed");
        IssuedCertificate {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes `cert` as `server.pem` + `server.key` (replacing the files
    /// the way certbot and Kubernetes do: a new file renamed over the old).
    pub fn install(&self, cert: &IssuedCertificate) {
        for (name, text) in [
            ("server.pem", &cert.cert_pem),
            ("server.key", &cert.key_pem),
        ] {
            let partial = self.path(&format!("{name}.new"));
            std::fs::write(&partial, text).expect("write the certificate");
            std::fs::rename(&partial, self.path(name)).expect("rename into place");
        }
    }

    /// A client that trusts this CA: HTTP/2 when the server offers it
    /// (ALPN), HTTP/1.1 only when `http1` is set.
    pub fn client(&self, http1: bool) -> reqwest::Client {
        let ca = reqwest::Certificate::from_pem(self.pem().as_bytes()).expect("the CA as PEM");
        let mut builder = reqwest::Client::builder()
            .tls_certs_only([ca])
            .tls_info(true);
        if http1 {
            builder = builder.http1_only();
        }
        builder.build().expect("a TLS client")
    }
}

/// An application served over HTTPS, its CA, and a second client that
/// speaks HTTP/1.1 (`app.client` negotiates HTTP/2).
pub struct TlsApp {
    pub app: TestApp,
    pub ca: TestCa,
    pub http1: reqwest::Client,
}

/// Starts the application over HTTPS with a certificate for `localhost`
/// signed by a fresh test CA (files watched every 50 ms), `adjust` applied.
pub async fn spawn_tls_app_with(adjust: impl FnOnce(&mut Settings)) -> TlsApp {
    let ca = TestCa::new();
    ca.install(&ca.issue(&["localhost"]));
    let (cert, key) = (ca.path("server.pem"), ca.path("server.key"));
    let mut app = spawn_app_with(|s| {
        s.server.tls.cert_file = cert;
        s.server.tls.key_file = key;
        s.server.tls.watch_interval = Duration::from_millis(50);
        adjust(s);
    })
    .await;
    app.address = app.address.replace("http://127.0.0.1", "https://localhost");
    app.client = ca.client(false);
    let http1 = ca.client(true);
    TlsApp { app, ca, http1 }
}

/// The leaf certificate (DER) a response came over.
pub fn peer_certificate(res: &reqwest::Response) -> Vec<u8> {
    res.extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|info| info.peer_certificate())
        .expect("TLS info on the response")
        .to_vec()
}
