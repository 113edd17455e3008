//! What the Mercure scenarios share: tokens as issuers mint them (RFC 9068
//! access tokens and 0.x tokens), forms, and requests to the hub.

use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::{Value, json};
use sse_broker::config::{MERCURE_DEVELOPMENT_KEY, Settings};

use crate::helpers::{SseClient, TestApp};

pub const HUB: &str = "/.well-known/mercure";
/// The `type` of Mercure authorization details.
pub const DETAIL: &str = "https://mercure.rocks/authorization-detail";
/// The development issuer (config/default.toml).
pub const ISSUER: &str = "https://localhost";
/// 2100-01-01: a token that does not expire during a test.
pub const FAR: u64 = 4102444800;

/// Compatibility mode: 0.x clients next to 1.0 ones.
pub fn compat(settings: &mut Settings) {
    settings.mercure.protocol_version_compatibility = 8;
}

/// A JWT with `header` and `claims`, HS-signed with `key`.
pub fn sign(header: Header, claims: &Value, key: &str) -> String {
    encode(
        &header,
        claims,
        &EncodingKey::from_secret(key.as_bytes()).expect("a secret"),
    )
    .expect("encodes")
}

/// The `typ: at+jwt` header of RFC 9068, for `alg`.
pub fn at_jwt(alg: Algorithm) -> Header {
    Header {
        typ: Some("at+jwt".into()),
        ..Header::new(alg)
    }
}

/// The registered claims of a valid access token for `app`'s hub.
pub fn access_claims(app: &TestApp, details: Value) -> Value {
    json!({
        "iss": ISSUER,
        "aud": app.url(HUB),
        "exp": FAR,
        "sub": "urn:example:user",
        "client_id": "https://localhost",
        "iat": 1767225300,
        "jti": "urn:uuid:e70ff8d7-59d5-4a92-b0b7-505e8f6d09fa",
        "authorization_details": details,
    })
}

/// A valid 1.0 access token for `app`'s hub with these details.
pub fn access_token(app: &TestApp, details: Value) -> String {
    sign(
        at_jwt(Algorithm::HS256),
        &access_claims(app, details),
        MERCURE_DEVELOPMENT_KEY,
    )
}

/// One Mercure authorization detail: `actions` on exact topics (or
/// `(pattern, "urlpattern")`).
pub fn detail(actions: &[&str], topics: &[(&str, &str)]) -> Value {
    let topics: Vec<Value> = topics
        .iter()
        .map(|(matcher, kind)| json!({"match": matcher, "match_type": kind}))
        .collect();
    json!({"type": DETAIL, "actions": actions, "topics": topics})
}

/// A 1.0 token that may publish to, and subscribe to, every topic.
pub fn all_access(app: &TestApp) -> String {
    access_token(
        app,
        json!([detail(&["publish", "subscribe"], &[("*", "exact")])]),
    )
}

/// A 0.x token (no `typ`, `iss`, `aud` or `exp`) with the `mercure` claim.
pub fn legacy_token(mercure: Value) -> String {
    sign(
        Header::default(),
        &json!({ "mercure": mercure }),
        MERCURE_DEVELOPMENT_KEY,
    )
}

pub fn encode_form(fields: &[(&str, &str)]) -> String {
    fields
        .iter()
        .map(|(k, v)| format!("{k}={}", utf8_percent_encode(v, NON_ALPHANUMERIC)))
        .collect::<Vec<_>>()
        .join("&")
}

/// `/.well-known/mercure?name=value&…`.
pub fn hub_path(fields: &[(&str, &str)]) -> String {
    format!("{HUB}?{}", encode_form(fields))
}

/// POSTs a publish form with a bearer `token` (if any).
pub async fn post_form(
    app: &TestApp,
    fields: &[(&str, &str)],
    token: Option<&str>,
) -> reqwest::Response {
    let mut req = app
        .client
        .post(app.url(HUB))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(encode_form(fields));
    if let Some(token) = token {
        req = req.header("authorization", format!("Bearer {token}"));
    }
    req.send().await.expect("publish request")
}

/// Publishes and insists on `200 text/plain; charset=utf-8`; the id.
pub async fn publish_with(app: &TestApp, fields: &[(&str, &str)], token: &str) -> String {
    let res = post_form(app, fields, Some(token)).await;
    let status = res.status().as_u16();
    let content_type = res.headers()["content-type"].to_str().unwrap().to_owned();
    let body = res.text().await.unwrap_or_default();
    assert_eq!(status, 200, "publish answered {body}");
    assert_eq!(content_type, "text/plain; charset=utf-8");
    body
}

/// Opens a stream and waits until it is open.
pub async fn open(app: &TestApp, path: &str, headers: &[(&str, &str)]) -> SseClient {
    let mut client = app.stream(path, headers).await;
    client.wait_open().await;
    client
}

/// A GET with headers; the raw answer.
pub async fn get(app: &TestApp, path: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut req = app.client.get(app.url(path));
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    req.send().await.expect("GET")
}

/// The `WWW-Authenticate` of an answer, or "".
pub fn challenge(res: &reqwest::Response) -> String {
    res.headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

/// The `(id, data)` of the next `n` updates.
pub async fn next_updates(client: &mut SseClient, n: usize) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for _ in 0..n {
        let event = client.next_event().await;
        out.push((event.id, event.data));
    }
    out
}
