//! Tokens: publishers need one when auth is on, private channels need a
//! subscriber token (header, cookie or query), and a stream ends when its
//! token expires. Every refusal is problem+json and never shows the secret.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};
use sse_broker::config::{JwtAlgorithm, Settings};

use crate::helpers::*;

pub const SECRET: &str = "test-secret-0123456789abcdef-0123456789";

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Signs `claims` with the test secret and `alg`.
pub fn hs_token_with(alg: Algorithm, claims: &Value) -> String {
    encode(
        &Header::new(alg),
        claims,
        &EncodingKey::from_secret(SECRET.as_bytes()).unwrap(),
    )
    .unwrap()
}

/// An HS256 token valid for an hour.
pub fn token(publish: &[&str], subscribe: &[&str]) -> String {
    hs_token_with(
        Algorithm::HS256,
        &json!({"sse": {"publish": publish, "subscribe": subscribe}, "exp": now() + 3600, "sub": "tester"}),
    )
}

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// Auth on with the test secret, `private.*` private.
pub fn with_auth(s: &mut Settings) {
    s.auth.enabled = true;
    s.auth.secret = SECRET.into();
    s.auth.private_channels = vec!["private.*".into()];
}

/// An HS256 token with the `monitor` grant, valid for an hour.
pub fn monitor_token() -> String {
    hs_token_with(
        Algorithm::HS256,
        &json!({"sse": {"monitor": true}, "exp": now() + 3600, "sub": "console"}),
    )
}

/// A token with only the `users` grant (ending a user's streams).
pub fn users_token() -> String {
    hs_token_with(
        Algorithm::HS256,
        &json!({"sse": {"users": true}, "exp": now() + 3600, "sub": "app"}),
    )
}

/// Auth on (see [`with_auth`]); listings are read with a monitor token.
async fn spawn_auth_app() -> TestApp {
    let mut app = spawn_app_with(with_auth).await;
    app.api_token = Some(monitor_token());
    app
}

impl TestApp {
    async fn post_with_token(
        &self,
        path: &str,
        token: Option<&str>,
        body: &str,
    ) -> reqwest::Response {
        let kind = if serde_json::from_str::<Value>(body).is_ok() {
            "application/json"
        } else {
            "text/plain"
        };
        let mut req = self
            .client
            .post(self.url(path))
            .header("content-type", kind)
            .body(body.to_owned());
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        req.send().await.unwrap()
    }
}

/// Asserts a 401 problem that asks for a Bearer token and hides the secret.
async fn assert_401(res: reqwest::Response) -> Value {
    assert!(
        res.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer"),
        "WWW-Authenticate names the scheme"
    );
    let (status, body) = problem(res).await;
    assert_eq!(status, 401, "{body}");
    assert!(!body.to_string().contains(SECRET));
    body
}

/// With auth on, a publish without a token is 401 with WWW-Authenticate.
#[actix_web::test]
async fn publish_without_token_is_401() {
    let app = spawn_auth_app().await;
    let res = app.post_with_token("/publish/orders.1", None, "1").await;
    let body = assert_401(res).await;
    assert_eq!(body["type"], "urn:sse-broker:problem:missing-token");
    // A scheme other than Bearer is refused the same way.
    let res = app
        .client
        .post(app.url("/publish/orders.1"))
        .header("authorization", "Basic dXNlcjpwdw==")
        .body("1")
        .send()
        .await
        .unwrap();
    assert_401(res).await;
}

/// A valid token publishes to its channels, and gets 403 elsewhere.
#[actix_web::test]
async fn token_covers_its_channels_only() {
    let app = spawn_auth_app().await;
    let t = token(&["orders.*", "news"], &[]);
    let res = app
        .post_with_token("/publish/orders.eu", Some(&t), "1")
        .await;
    assert_eq!(res.status(), 202);
    let res = app.post_with_token("/publish/news", Some(&t), "1").await;
    assert_eq!(res.status(), 202);
    let res = app.post_with_token("/publish/billing", Some(&t), "1").await;
    let (status, body) = problem(res).await;
    assert_eq!(status, 403);
    assert_eq!(body["type"], "urn:sse-broker:problem:forbidden");
    // `orders.*` does not cover `orders` itself.
    let res = app.post_with_token("/publish/orders", Some(&t), "1").await;
    assert_eq!(problem(res).await.0, 403);
}

/// A batch is checked item by item; one foreign channel publishes nothing.
#[actix_web::test]
async fn batch_checks_every_item() {
    let app = spawn_auth_app().await;
    let t = token(&["orders.*"], &[]);
    let body = r#"[{"channel":"orders.1","data":1},{"channel":"billing","data":2}]"#;
    let res = app.post_with_token("/publish", Some(&t), body).await;
    let (status, problem_body) = problem(res).await;
    assert_eq!(status, 403);
    assert!(problem_body["detail"].as_str().unwrap().contains("item 1"));
    assert_eq!(app.get_json("/channels/orders.1").await.0, 404);
    let ok = r#"[{"channel":"orders.1","data":1},{"channel":"orders.2","data":2}]"#;
    assert_eq!(
        app.post_with_token("/publish", Some(&t), ok).await.status(),
        202
    );
}

/// Expired, badly signed, `alg: none` and wrong-algorithm tokens are 401.
#[actix_web::test]
async fn bad_tokens_are_401() {
    let app = spawn_auth_app().await;
    let claims = json!({"sse": {"publish": ["*"]}, "exp": now() + 3600});
    let expired = hs_token_with(
        Algorithm::HS256,
        &json!({"sse": {"publish": ["*"]}, "exp": now() - 120}),
    );
    let other_secret = encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(b"another-secret-another-secret-another").unwrap(),
    )
    .unwrap();
    let payload = hs_token_with(Algorithm::HS256, &claims)
        .split('.')
        .nth(1)
        .unwrap()
        .to_owned();
    // {"alg":"none","typ":"JWT"}, no signature.
    let alg_none = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{payload}.");
    let wrong_alg = hs_token_with(Algorithm::HS384, &claims);
    let rs256 = encode(
        &Header::new(Algorithm::RS256),
        &claims,
        &EncodingKey::from_rsa_pem(&std::fs::read(fixture("rs256-private.pem")).unwrap()).unwrap(),
    )
    .unwrap();
    let no_exp = hs_token_with(Algorithm::HS256, &json!({"sse": {"publish": ["*"]}}));
    for (name, bad, detail) in [
        ("expired", expired.as_str(), "expired"),
        ("bad signature", &other_secret, "signature"),
        ("alg none", &alg_none, ""),
        ("HS384", &wrong_alg, "HS256"),
        ("RS256", &rs256, "HS256"),
        ("no exp", &no_exp, "exp"),
        ("garbage", "not.a.token", ""),
    ] {
        let res = app
            .post_with_token("/publish/orders.1", Some(bad), "1")
            .await;
        let body = assert_401(res).await;
        assert_eq!(
            body["type"], "urn:sse-broker:problem:invalid-token",
            "{name}"
        );
        assert!(
            body["detail"].as_str().unwrap().contains(detail),
            "{name}: {body}"
        );
    }
    assert_eq!(app.get_json("/channels/orders.1").await.0, 404);
}

/// killSession and killall are publisher endpoints.
#[actix_web::test]
async fn kill_endpoints_need_a_token() {
    let app = spawn_auth_app().await;
    let res = app
        .client
        .delete(app.url("/killSession"))
        .body("tab-1")
        .send()
        .await
        .unwrap();
    assert_401(res).await;
    let res = app.client.delete(app.url("/killall")).send().await.unwrap();
    assert_401(res).await;
    let wrong = token(&["orders.*"], &[]);
    let res = app
        .client
        .delete(app.url("/killall"))
        .bearer_auth(&wrong)
        .send()
        .await
        .unwrap();
    assert_eq!(problem(res).await.0, 403);
    let right = token(&["killSession"], &[]);
    let res = app
        .client
        .delete(app.url("/killSession"))
        .bearer_auth(&right)
        .body("tab-1")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    let res = app
        .client
        .delete(app.url("/killall"))
        .bearer_auth(&right)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
}

/// RS256 and ES256 tokens verify against a public key file; the same
/// claims signed with another algorithm do not.
#[actix_web::test]
async fn rs256_and_es256_with_public_keys() {
    let claims = json!({"sse": {"publish": ["orders.*"]}, "exp": now() + 3600});
    for (alg, config_alg, private, public) in [
        (
            Algorithm::RS256,
            JwtAlgorithm::RS256,
            "rs256-private.pem",
            "rs256-public.pem",
        ),
        (
            Algorithm::ES256,
            JwtAlgorithm::ES256,
            "es256-private.pem",
            "es256-public.pem",
        ),
    ] {
        let app = spawn_app_with(|s| {
            s.auth.enabled = true;
            s.auth.algorithm = config_alg;
            s.auth.public_key_file = Some(fixture(public).into());
        })
        .await;
        let pem = std::fs::read(fixture(private)).unwrap();
        let key = match alg {
            Algorithm::RS256 => EncodingKey::from_rsa_pem(&pem),
            _ => EncodingKey::from_ec_pem(&pem),
        }
        .unwrap();
        let good = encode(&Header::new(alg), &claims, &key).unwrap();
        let res = app
            .post_with_token("/publish/orders.1", Some(&good), "1")
            .await;
        assert_eq!(res.status(), 202, "{alg:?}");
        // HS256 signed with the public key's text: the classic confusion attack.
        let confused = encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(&std::fs::read(fixture(public)).unwrap()).unwrap(),
        )
        .unwrap();
        let res = app
            .post_with_token("/publish/orders.1", Some(&confused), "1")
            .await;
        assert_401(res).await;
    }
}

/// Private channels refuse anonymous subscribers; public ones do not.
#[actix_web::test]
async fn private_channel_needs_a_subscriber_token() {
    let app = spawn_auth_app().await;
    let res = app
        .client
        .get(app.url("/stream/private.a"))
        .send()
        .await
        .unwrap();
    let body = assert_401(res).await;
    assert!(body["detail"].as_str().unwrap().contains("sse_token"));
    // Public channels stay open to anonymous subscribers.
    let mut public = app.stream("/stream/news", &[]).await;
    public.wait_open().await;
    // A token for other channels is 403.
    let other = token(&[], &["private.b"]);
    let res = app
        .client
        .get(app.url("/stream/private.a"))
        .bearer_auth(&other)
        .send()
        .await
        .unwrap();
    assert_eq!(problem(res).await.0, 403);
    // An expired one is 401.
    let expired = hs_token_with(
        Algorithm::HS256,
        &json!({"sse": {"subscribe": ["*"]}, "exp": now() - 60}),
    );
    let res = app
        .client
        .get(app.url(&format!("/stream/private.a?token={expired}")))
        .send()
        .await
        .unwrap();
    assert_401(res).await;
}

/// The subscriber token is taken from the header, a cookie or the query.
#[actix_web::test]
async fn subscriber_token_from_header_cookie_or_query() {
    let app = spawn_auth_app().await;
    let t = token(&[], &["private.*"]);
    let auth = format!("Bearer {t}");
    let cookie = format!("theme=dark; sse_token={t}");
    let mut by_header = app
        .stream("/stream/private.a", &[("authorization", &auth)])
        .await;
    let mut by_cookie = app
        .stream("/stream/private.a", &[("cookie", &cookie)])
        .await;
    let mut by_query = app
        .stream(&format!("/stream/private.a?token={t}"), &[])
        .await;
    for client in [&mut by_header, &mut by_cookie, &mut by_query] {
        client.wait_open().await;
    }
    app.wait_for_subscribers("private.a", 3).await;
    app.publish_with_token("private.a", "secret-news", &token(&["private.*"], &[]))
        .await;
    for client in [&mut by_header, &mut by_cookie, &mut by_query] {
        assert_eq!(client.next_messages(1).await[0].data, "secret-news");
    }
}

/// The cookie name is configurable.
#[actix_web::test]
async fn cookie_name_is_configurable() {
    let app = spawn_app_with(|s| {
        with_auth(s);
        s.auth.cookie_name = "my_cookie".into();
    })
    .await;
    let t = token(&[], &["private.*"]);
    let res = app
        .client
        .get(app.url("/stream/private.a"))
        .header("cookie", format!("sse_token={t}"))
        .send()
        .await
        .unwrap();
    assert_401(res).await;
    let mut client = app
        .stream(
            "/stream/private.a",
            &[("cookie", &format!("my_cookie={t}"))],
        )
        .await;
    client.wait_open().await;
}

/// Every private channel of a multi-channel stream is checked.
#[actix_web::test]
async fn multi_channel_stream_checks_every_private_channel() {
    let app = spawn_auth_app().await;
    let res = app
        .client
        .get(app.url("/stream?channel=news&channel=private.a"))
        .send()
        .await
        .unwrap();
    assert_401(res).await;
    let only_a = token(&[], &["private.a"]);
    let res = app
        .client
        .get(app.url(&format!(
            "/stream?channel=private.a&channel=news&channel=private.b&token={only_a}"
        )))
        .send()
        .await
        .unwrap();
    let (status, body) = problem(res).await;
    assert_eq!(status, 403);
    assert!(body["detail"].as_str().unwrap().contains("private.b"));
    let both = token(&[], &["private.*"]);
    let mut client = app
        .stream(
            &format!("/stream?channel=private.a&channel=news&channel=private.b&token={both}"),
            &[],
        )
        .await;
    client.wait_open().await;
}

/// With anonymous_subscribe = false, public channels need a token too.
#[actix_web::test]
async fn anonymous_subscribe_can_be_turned_off() {
    let app = spawn_app_with(|s| {
        with_auth(s);
        s.auth.anonymous_subscribe = false;
    })
    .await;
    let res = app
        .client
        .get(app.url("/stream/news"))
        .send()
        .await
        .unwrap();
    assert_401(res).await;
    let t = token(&[], &["news"]);
    let mut client = app.stream(&format!("/stream/news?token={t}"), &[]).await;
    client.wait_open().await;
}

/// A stream opened with a token ends when the token expires, with a
/// `broker.expired` notice first.
#[actix_web::test]
async fn stream_ends_when_its_token_expires() {
    let app = spawn_auth_app().await;
    let short = hs_token_with(
        Algorithm::HS256,
        &json!({"sse": {"subscribe": ["private.*"]}, "exp": now() + 2}),
    );
    let opened = std::time::Instant::now();
    let mut client = app
        .stream(&format!("/stream/private.a?token={short}"), &[])
        .await;
    client.wait_open().await;
    let events = client.until_end().await;
    assert!(client.ended);
    assert_eq!(
        events.last().map(|e| e.event.as_str()),
        Some("broker.expired")
    );
    assert!(opened.elapsed() >= Duration::from_secs(1), "ended early");
    // The broker forgot the subscriber.
    app.wait_for_subscribers("private.a", 0).await;
}

/// With auth off (the development default) everything stays open.
#[actix_web::test]
async fn auth_off_needs_no_token() {
    let app = spawn_app().await;
    app.publish("private.a", "1").await;
    let mut client = app.stream("/stream/private.a", &[]).await;
    client.wait_open().await;
}

/// `sse-broker token` mints a token the broker accepts.
#[actix_web::test]
async fn token_subcommand_mints_a_working_token() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_sse-broker"))
        .args([
            "token",
            "--publish",
            "orders.*",
            "--subscribe",
            "private.*",
            "--ttl",
            "10m",
        ])
        .env("SSE_BROKER__AUTH__SECRET", SECRET)
        .output()
        .expect("the binary runs");
    assert!(output.status.success(), "{output:?}");
    let minted = String::from_utf8(output.stdout).unwrap().trim().to_owned();
    let app = spawn_auth_app().await;
    let res = app
        .post_with_token("/publish/orders.9", Some(&minted), "1")
        .await;
    assert_eq!(res.status(), 202);
    let mut client = app
        .stream(&format!("/stream/private.x?token={minted}"), &[])
        .await;
    client.wait_open().await;

    // Without a secret it refuses, saying how to configure one.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_sse-broker"))
        .args(["token", "--publish", "x"])
        .env_remove("SSE_BROKER__AUTH__SECRET")
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("secret"));
}

impl TestApp {
    pub async fn publish_with_token(&self, channel: &str, body: &str, token: &str) -> String {
        let res = self
            .post_with_token(&format!("/publish/{channel}"), Some(token), body)
            .await;
        assert_eq!(res.status(), 202);
        let answer: Value = res.json().await.unwrap();
        answer["id"].as_str().unwrap().to_owned()
    }
}
