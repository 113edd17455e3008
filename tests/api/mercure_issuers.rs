//! Trusted issuers and where their keys come from: a PEM public key, a JWK
//! Set file, a JWK Set served over https (a real TLS server: `openssl
//! s_server`), and the refusals at start when a key cannot be had.

use std::{io::Write, path::Path, process::Command};

use jsonwebtoken::{
    Algorithm, EncodingKey, Header, encode,
    jwk::{Jwk, JwkSet},
};
use serde_json::{Value, json};
use sse_broker::config::{IssuerSettings, VerifierSettings};

use crate::{
    helpers::{BrokerProcess, TestApp, http_client, spawn_app_with},
    mercure_support::{HUB, access_claims, detail, post_form},
};

const IDP: &str = "https://idp.example";

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn es256_key() -> EncodingKey {
    let pem = std::fs::read(fixture("es256-private.pem")).expect("the ES256 fixture");
    EncodingKey::from_ec_pem(&pem).expect("an EC key")
}

/// A JWK Set holding the ES256 fixture's public key as `kid`.
fn jwk_set(kid: &str) -> String {
    let mut jwk = Jwk::from_encoding_key(&es256_key(), Algorithm::ES256).expect("a JWK");
    jwk.common.key_id = Some(kid.into());
    serde_json::to_string(&JwkSet { keys: vec![jwk] }).expect("serialises")
}

/// An ES256 access token of the issuer `IDP` for `audience`.
fn es256_token(audience: &str, kid: Option<&str>) -> String {
    let header = Header {
        typ: Some("at+jwt".into()),
        kid: kid.map(str::to_owned),
        ..Header::new(Algorithm::ES256)
    };
    let claims = json!({"iss": IDP, "aud": audience, "exp": 4102444800u64,
        "authorization_details": [detail(&["publish"], &[("*", "exact")])]});
    encode(&header, &claims, &es256_key()).expect("encodes")
}

fn issuer(publisher: VerifierSettings) -> IssuerSettings {
    IssuerSettings {
        id: IDP.into(),
        authorization_server: true,
        publisher: Some(publisher),
        subscriber: None,
    }
}

async fn publish_status(app: &TestApp, token: &str) -> u16 {
    post_form(app, &[("topic", "urn:issuers"), ("data", "x")], Some(token))
        .await
        .status()
        .as_u16()
}

/// A PEM public key verifies its algorithm's tokens, and no other.
#[actix_web::test]
async fn pem_public_key_issuer() {
    let pem = std::fs::read_to_string(fixture("es256-public.pem")).unwrap();
    let app = spawn_app_with(move |s| {
        s.mercure.issuers.push(issuer(VerifierSettings {
            jwt: pem,
            algorithm: "ES256".into(),
            ..Default::default()
        }))
    })
    .await;
    assert_eq!(
        publish_status(&app, &es256_token(&app.url(HUB), None)).await,
        200
    );
    // The development issuer's key does not sign for this issuer.
    let mut claims = access_claims(&app, json!([detail(&["publish"], &[("*", "exact")])]));
    claims["iss"] = json!(IDP);
    let hs256 = crate::mercure_support::sign(
        crate::mercure_support::at_jwt(Algorithm::HS256),
        &claims,
        sse_broker::config::MERCURE_DEVELOPMENT_KEY,
    );
    assert_eq!(publish_status(&app, &hs256).await, 401);
}

/// A JWK Set file: the token's `kid` picks the key; an unknown `kid` or an
/// algorithm outside the set's list is refused.
#[actix_web::test]
async fn jwk_set_file_issuer() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    std::fs::write(&path, jwk_set("k1")).unwrap();
    let uri = format!("file://{}", path.display());
    let app = spawn_app_with(move |s| {
        s.mercure.issuers.push(issuer(VerifierSettings {
            jwks_uri: uri,
            algorithms: vec!["ES256".into()],
            ..Default::default()
        }))
    })
    .await;
    let audience = app.url(HUB);
    assert_eq!(
        publish_status(&app, &es256_token(&audience, Some("k1"))).await,
        200
    );
    assert_eq!(
        publish_status(&app, &es256_token(&audience, None)).await,
        200
    );
    assert_eq!(
        publish_status(&app, &es256_token(&audience, Some("k2"))).await,
        401
    );
    let metadata: Value = app
        .client
        .get(app.url("/.well-known/oauth-protected-resource/.well-known/mercure"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(metadata["authorization_servers"], json!([IDP]));
}

/// Runs `openssl` with `args` in `dir`, insisting it succeeds.
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A test CA and a certificate for localhost, signed by it, in `dir`.
fn certificates(dir: &Path) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec![
        "req",
        "-x509",
        "-days",
        "1",
        "-subj",
        "/CN=sse-broker test CA",
    ];
    ca.extend(ec);
    ca.extend(["-keyout", "ca.key", "-out", "ca.pem"]);
    openssl(dir, &ca);
    let mut leaf = vec!["req", "-subj", "/CN=localhost"];
    leaf.extend(ec);
    leaf.extend(["-keyout", "leaf.key", "-out", "leaf.csr"]);
    openssl(dir, &leaf);
    std::fs::File::create(dir.join("leaf.ext"))
        .and_then(|mut f| {
            f.write_all(b"subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n")
        })
        .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            "leaf.ext",
            "-out",
            "leaf.pem",
        ],
    );
}

/// `openssl s_server -WWW`: serves the files of a folder over TLS.
struct TlsFileServer {
    child: std::process::Child,
    port: u16,
}

impl TlsFileServer {
    fn start(dir: &Path) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let child = Command::new("openssl")
            .args([
                "s_server",
                "-quiet",
                "-WWW",
                "-cert",
                "leaf.pem",
                "-key",
                "leaf.key",
                "-accept",
                &format!("127.0.0.1:{port}"),
            ])
            .current_dir(dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("openssl s_server starts");
        let deadline = std::time::Instant::now() + crate::helpers::PATIENCE;
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "s_server did not listen"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        Self { child, port }
    }
}

impl Drop for TlsFileServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A JWK Set served over https is fetched at start (verified against the
/// system's trust store, here `SSL_CERT_FILE`); the broker refuses to
/// start, naming the URL, when the set cannot be fetched.
#[actix_web::test]
async fn jwk_set_over_https() {
    let dir = tempfile::tempdir().unwrap();
    certificates(dir.path());
    std::fs::write(dir.path().join("jwks.json"), jwk_set("k1")).unwrap();
    let server = TlsFileServer::start(dir.path());
    let jwks = format!("https://localhost:{}/jwks.json", server.port);
    let issuers =
        format!("[{{id=\"{IDP}\", publisher={{jwks_uri=\"{jwks}\", algorithms=[\"ES256\"]}}}}]");
    let ca = dir.path().join("ca.pem");
    let env = [
        ("SSE_BROKER__MERCURE__ISSUERS", issuers.as_str()),
        ("SSL_CERT_FILE", ca.to_str().unwrap()),
    ];
    let broker = BrokerProcess::start("127.0.0.1:0", &env);
    let client = http_client();
    let token = es256_token(&broker.url(HUB), Some("k1"));
    let res = client
        .post(broker.url(HUB))
        .bearer_auth(&token)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("topic=urn%3Ahttps&data=x")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    drop(broker);

    // Not trusted (no SSL_CERT_FILE), or nothing there: no start.
    let untrusted = [("SSE_BROKER__MERCURE__ISSUERS", issuers.as_str())];
    let missing_set = issuers.replace("jwks.json", "missing.json");
    let missing = [
        ("SSE_BROKER__MERCURE__ISSUERS", missing_set.as_str()),
        ("SSL_CERT_FILE", ca.to_str().unwrap()),
    ];
    for env in [&untrusted[..], &missing[..]] {
        let out = Command::new(env!("CARGO_BIN_EXE_sse-broker"))
            .args(["--bind", "127.0.0.1:0", "--demo", "false"])
            .envs(env.iter().copied())
            .output()
            .expect("the broker runs");
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&format!("https://localhost:{}", server.port)),
            "{stderr}"
        );
    }
}
