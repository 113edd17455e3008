//! Automatic certificates, end to end against a real ACME server: Debian's
//! `pebble` (Let's Encrypt's test authority) on loopback. Pebble validates
//! the tls-alpn-01 challenge by connecting to the broker's own HTTPS port
//! (its `tlsPort` is set to it): no validation is faked.

use std::{
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use sse_broker::config::Settings;

use crate::{helpers::*, redis_support::free_port, tls_support::*};

/// A `pebble` started for one test, validating tls-alpn-01 on `tls_port`.
struct Pebble {
    child: Child,
    /// `https://localhost:<port>/dir`
    directory: String,
    management: u16,
    /// The CA of pebble's own HTTPS (its directory), which the broker trusts.
    ca: TestCa,
}

impl Pebble {
    fn start(tls_port: u16) -> Self {
        let ca = TestCa::new();
        let own = ca.issue(&["localhost", "127.0.0.1"]);
        std::fs::write(ca.path("pebble.pem"), &own.cert_pem).unwrap();
        std::fs::write(ca.path("pebble.key"), &own.key_pem).unwrap();
        std::fs::write(ca.path("ca.pem"), ca.pem()).unwrap();
        let (listen, management) = (free_port(), free_port());
        let config = serde_json::json!({"pebble": {
            "listenAddress": format!("127.0.0.1:{listen}"),
            "managementListenAddress": format!("127.0.0.1:{management}"),
            "certificate": ca.path("pebble.pem"),
            "privateKey": ca.path("pebble.key"),
            "httpPort": free_port(),
            "tlsPort": tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
        }});
        std::fs::write(ca.path("pebble.json"), config.to_string()).unwrap();
        let child = Command::new("pebble")
            .arg("-config")
            .arg(ca.path("pebble.json"))
            // No artificial validation delay, and no nonces refused at
            // random (pebble's defaults, there to exercise retries, would
            // only make the test slow or flaky).
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|err| {
                panic!(
                    "cannot start pebble ({err}): the ACME test needs Debian's pebble package \
                     (apt-get install pebble; scripts/test.sh installs it)"
                )
            });
        Self {
            child,
            directory: format!("https://localhost:{listen}/dir"),
            management,
            ca,
        }
    }

    /// Waits until the directory answers.
    async fn wait_ready(&self) {
        let client = self.ca.client(true);
        wait_until(|| async {
            client
                .get(&self.directory)
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
        })
        .await;
    }

    /// The root that pebble (freshly, at every start) issues under.
    async fn root(&self) -> String {
        let url = format!("https://localhost:{}/roots/0", self.management);
        let res = self.ca.client(true).get(url).send().await.unwrap();
        assert_eq!(res.status(), 200);
        res.text().await.unwrap()
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The broker's ACME settings for `localhost` against `pebble`.
fn acme_settings(s: &mut Settings, pebble: &Pebble, cache: &std::path::Path, port: u16) {
    s.server.bind = format!("127.0.0.1:{port}").parse().unwrap();
    s.server.tls.acme.domains = vec!["localhost".into()];
    s.server.tls.acme.contact = vec!["mailto:ops@example.com".into()];
    s.server.tls.acme.directory_url = pebble.directory.clone();
    s.server.tls.acme.directory_ca_file = pebble.ca.path("ca.pem");
    s.server.tls.acme.cache_dir = cache.to_owned();
}

/// A client that trusts only pebble's root: it can talk to the broker
/// only once the broker serves a certificate pebble issued.
fn trusting(root_pem: &str) -> reqwest::Client {
    install_crypto();
    reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(root_pem.as_bytes()).unwrap()])
        .build()
        .unwrap()
}

/// The broker obtains a certificate from the authority at start (pebble
/// validates tls-alpn-01 on the broker's port), serves it over HTTPS and
/// HTTP/2, and caches it: a restart serves the cached certificate with the
/// authority gone.
#[actix_web::test]
async fn acme_certificate_is_obtained_served_and_cached() {
    let port = free_port();
    let pebble = Pebble::start(port);
    pebble.wait_ready().await;
    let cache = tempfile::tempdir().unwrap();
    let app = spawn_app_with(|s| acme_settings(s, &pebble, cache.path(), port)).await;
    let client = trusting(&pebble.root().await);
    let url = format!("https://localhost:{port}/healthz");
    let deadline = Instant::now() + Duration::from_secs(60);
    let res = loop {
        match client.get(&url).send().await {
            Ok(res) => break res,
            Err(err) => {
                assert!(Instant::now() < deadline, "no certificate in time: {err:?}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    assert_eq!(res.status(), 200);
    assert_eq!(res.version(), reqwest::Version::HTTP_2);

    // Cached, readable by its owner only.
    let cached = std::fs::read_dir(cache.path())
        .unwrap()
        .flat_map(|dir| std::fs::read_dir(dir.unwrap().path()).unwrap())
        .map(|entry| entry.unwrap().path())
        .find(|path| path.file_name().is_some_and(|n| n == "localhost.pem"))
        .expect("the certificate is cached");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&cached).unwrap().permissions().mode();
    assert_eq!(mode & 0o077, 0, "the cached key is private: {mode:o}");

    // The authority goes away; a restarted broker serves the cached one.
    let root = pebble.root().await;
    let directory = pebble.directory.clone();
    drop(app);
    drop(pebble);
    let again = free_port();
    let restarted = spawn_app_with(|s| {
        s.server.bind = format!("127.0.0.1:{again}").parse().unwrap();
        s.server.tls.acme.domains = vec!["localhost".into()];
        s.server.tls.acme.directory_url = directory;
        s.server.tls.acme.cache_dir = cache.path().to_owned();
    })
    .await;
    let res = trusting(&root)
        .get(format!("https://localhost:{again}/healthz"))
        .send()
        .await
        .expect("the cached certificate is served at once");
    assert_eq!(res.status(), 200);
    drop(restarted);
}
