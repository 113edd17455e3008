//! The one access policy, tried as an attacker would, against the real
//! binary started with each shipped and documented configuration: the
//! production example (`config/production.toml`), the overlay
//! `docs/security.md` shows under "Turning auth on", and the development
//! defaults with only `auth.enabled = true`. Anonymous and under-privileged
//! callers must not read, list or write a private or protected channel
//! through any route: our streams, the Mercure hub (live and replayed, and
//! after a restart with durable history), listings, a channel's history
//! and presence, pulses, publishes, batches, the kill endpoints, ending a
//! user's streams, and the bridge between channels and the hub in both
//! directions. Each refusal is checked next to a privileged call
//! that succeeds, so a test that cannot fail would show.

use std::path::PathBuf;

use jsonwebtoken::Algorithm;
use serde_json::{Value, json};
use sse_broker::config::MERCURE_DEVELOPMENT_KEY;

use crate::{
    auth::{SECRET, monitor_token, token, users_token},
    helpers::*,
    mercure_support::{DETAIL, FAR, HUB, at_jwt, encode_form, sign},
};

/// The issuer `config/production.toml` is completed with (its `issuers` are
/// empty: a deployment sets its own).
const ISSUER: &str = "https://app.test";
/// That issuer's key (both roles).
const ISSUER_KEY: &str = "the-test-issuer-key-0123456789abcdef";
/// A channel every configuration with private channels keeps private
/// (`user.*`).
const PRIVATE: &str = "user.9";
/// A public channel.
const PUBLIC: &str = "news";

/// A broker process and how to talk to it.
struct Deployment {
    broker: BrokerProcess,
    client: reqwest::Client,
    /// Whether `user.*` is private in it.
    has_private: bool,
    /// Whether the hub has a key of its own (else only the development
    /// key is named, and left out).
    has_issuer: bool,
}

impl Deployment {
    fn start(args: &[&str], env: &[(&str, &str)], has_private: bool, has_issuer: bool) -> Self {
        let mut all_env = vec![
            ("SSE_BROKER__AUTH__SECRET", SECRET),
            (
                "SSE_BROKER__SERVER__PUBLIC_DIR",
                concat!(env!("CARGO_MANIFEST_DIR"), "/public"),
            ),
        ];
        all_env.extend_from_slice(env);
        Self {
            broker: BrokerProcess::start_with(args, &all_env),
            client: http_client(),
            has_private,
            has_issuer,
        }
    }

    fn url(&self, path: &str) -> String {
        self.broker.url(path)
    }

    async fn get(&self, path: &str, token: Option<&str>) -> reqwest::Response {
        let mut req = self.client.get(self.url(path));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        req.send().await.expect("GET")
    }

    async fn status(&self, method: &str, path: &str, token: Option<&str>, body: &str) -> u16 {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("a method");
        let mut req = self
            .client
            .request(method, self.url(path))
            .header("content-type", "application/json")
            .body(body.to_owned());
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        req.send().await.expect("a request").status().as_u16()
    }

    async fn publish(&self, channel: &str, data: &str) {
        let writer = token(&["*"], &[]);
        let path = format!("/publish/{channel}");
        let body = json!(data).to_string();
        assert_eq!(self.status("POST", &path, Some(&writer), &body).await, 202);
    }

    /// A Mercure access token of this deployment's issuer (or, without one,
    /// of the development issuer with the development key).
    fn mercure_token(&self, actions: &[&str], topics: &[&str]) -> String {
        let (iss, key) = if self.has_issuer {
            (ISSUER, ISSUER_KEY)
        } else {
            ("https://localhost", MERCURE_DEVELOPMENT_KEY)
        };
        let topics: Vec<Value> = topics.iter().map(|t| json!({"match": t})).collect();
        let claims = json!({"iss": iss, "aud": self.url(HUB), "exp": FAR, "sub": "someone",
            "authorization_details": [{"type": DETAIL, "actions": actions, "topics": topics}]});
        sign(at_jwt(Algorithm::HS256), &claims, key)
    }

    /// A hub stream matching the private and the public channel.
    async fn hub_stream(&self, token: Option<&str>, earliest: bool) -> SseClient {
        let mut fields = vec![("match", PRIVATE), ("match", PUBLIC)];
        if earliest {
            fields.push(("last_event_id", "earliest"));
        }
        let path = format!("{HUB}?{}", encode_form(&fields));
        let headers: Vec<(&str, String)> = token
            .map(|t| vec![("authorization", format!("Bearer {t}"))])
            .unwrap_or_default();
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let mut client = stream_at(&self.client, &self.url(&path), &headers).await;
        client.wait_open().await;
        client
    }

    async fn mercure_publish(&self, topic: &str, token: &str) -> u16 {
        self.client
            .post(self.url(HUB))
            .header("content-type", "application/x-www-form-urlencoded")
            .bearer_auth(token)
            .body(encode_form(&[("topic", topic), ("data", "forged")]))
            .send()
            .await
            .expect("a publish")
            .status()
            .as_u16()
    }

    /// The names `GET /channels` lists to `token`.
    async fn listed(&self, token: Option<&str>) -> Vec<String> {
        let res = self.get("/channels", token).await;
        assert_eq!(res.status(), 200);
        let body: Value = res.json().await.expect("JSON");
        body.as_array()
            .expect("a list")
            .iter()
            .map(|c| c["name"].as_str().expect("a name").to_owned())
            .collect()
    }
}

/// The first data the stream carries: the public event when the private
/// one (published before it) was withheld.
async fn first_data(client: &mut SseClient) -> String {
    client.next_event().await.data
}

/// Every check of the module docs against one running deployment.
async fn attack(d: &Deployment) {
    let reader_of_public = token(&[], &[PUBLIC]);
    let monitor = monitor_token();
    // Reads through the hub, live: the private event comes first in the
    // hub's order, so an anonymous subscriber's first event shows a leak.
    let mut anonymous_live = d.hub_stream(None, false).await;
    let mut entitled_live = match d.has_issuer {
        true => Some(
            d.hub_stream(Some(&d.mercure_token(&["subscribe"], &[PRIVATE])), false)
                .await,
        ),
        false => None,
    };
    d.publish(PRIVATE, "secret").await;
    d.publish(PUBLIC, "public").await;
    let private_reaches_anonymous = !d.has_private;
    let expected = if private_reaches_anonymous {
        "\"secret\""
    } else {
        "\"public\""
    };
    assert_eq!(first_data(&mut anonymous_live).await, expected);
    if let Some(entitled) = &mut entitled_live {
        assert_eq!(
            first_data(entitled).await,
            "\"secret\"",
            "a granted reader gets it"
        );
    }
    // ...and replayed from the hub's history.
    let mut replay = d.hub_stream(None, true).await;
    assert_eq!(first_data(&mut replay).await, expected);
    if d.has_issuer {
        let under = d.mercure_token(&["subscribe"], &[PUBLIC]);
        let mut replay = d.hub_stream(Some(&under), true).await;
        assert_eq!(first_data(&mut replay).await, expected);
    }

    if d.has_private {
        // Our streams.
        let path = format!("/stream/{PRIVATE}");
        assert_eq!(d.get(&path, None).await.status(), 401);
        assert_eq!(d.get(&path, Some(&reader_of_public)).await.status(), 403);
        let many = format!("/stream?channel={PUBLIC}&channel={PRIVATE}");
        assert_eq!(d.get(&many, None).await.status(), 401);
        let entitled = token(&[], &[PRIVATE]);
        assert_eq!(d.get(&path, Some(&entitled)).await.status(), 200);
        // Listings.
        let anonymous = d.listed(None).await;
        assert!(anonymous.contains(&PUBLIC.to_owned()), "{anonymous:?}");
        assert!(!anonymous.contains(&PRIVATE.to_owned()), "{anonymous:?}");
        assert!(
            !d.listed(Some(&reader_of_public))
                .await
                .contains(&PRIVATE.to_owned())
        );
        assert!(d.listed(Some(&monitor)).await.contains(&PRIVATE.to_owned()));
        let detail = format!("/channels/{PRIVATE}");
        assert_eq!(d.get(&detail, None).await.status(), 401);
        assert_eq!(d.get(&detail, Some(&reader_of_public)).await.status(), 403);
        assert_eq!(d.get(&detail, Some(&entitled)).await.status(), 200);
        // The channel's history and presence, read as a stream is.
        for route in [
            format!("/channels/{PRIVATE}/history"),
            format!("/channels/{PRIVATE}/presence"),
            format!("/channels/{PRIVATE}/presence?count=1"),
        ] {
            assert_eq!(d.get(&route, None).await.status(), 401, "{route}");
            let res = d.get(&route, Some(&reader_of_public)).await;
            assert_eq!(res.status(), 403, "{route}");
            assert_eq!(
                d.get(&route, Some(&entitled)).await.status(),
                200,
                "{route}"
            );
        }
        let history = format!("/channels/{PRIVATE}/history");
        let page: Value = d
            .get(&history, Some(&entitled))
            .await
            .json()
            .await
            .expect("JSON");
        assert_eq!(page["events"][0]["data"], "\"secret\"", "{page}");
        // Pulses naming the channel.
        let pulse = json!({"clientId": "tab-1", "channel": PRIVATE}).to_string();
        assert_eq!(d.status("POST", "/pulse", None, &pulse).await, 401);
        assert_eq!(
            d.status("POST", "/pulse", Some(&entitled), &pulse).await,
            200
        );
    }
    // The pulse book needs the monitor grant.
    assert_eq!(d.get("/pulses", None).await.status(), 401);
    let everything = token(&["*"], &["*"]);
    assert_eq!(d.get("/pulses", Some(&everything)).await.status(), 403);
    assert_eq!(d.get("/pulses", Some(&monitor)).await.status(), 200);

    // A public channel's history is as open as its stream.
    let public_history = format!("/channels/{PUBLIC}/history");
    let res = d.get(&public_history, Some(&reader_of_public)).await;
    assert_eq!(res.status(), 200);

    // Ending a user's streams needs the users grant.
    for (route, body) in [
        ("/users/u1/disconnect", ""),
        ("/users/u1/unsubscribe", r#"{"channels": ["news"]}"#),
    ] {
        assert_eq!(d.status("POST", route, None, body).await, 401, "{route}");
        let everything = token(&["*"], &["*"]);
        let res = d.status("POST", route, Some(&everything), body).await;
        assert_eq!(res, 403, "{route}");
        let users = users_token();
        assert_eq!(
            d.status("POST", route, Some(&users), body).await,
            202,
            "{route}"
        );
    }

    // Writes: every channel needs a publisher grant, through every route.
    let target = if d.has_private { PRIVATE } else { PUBLIC };
    let path = format!("/publish/{target}");
    let publisher_of_other = token(&["other"], &[]);
    assert_eq!(d.status("POST", &path, None, "{}").await, 401);
    assert_eq!(
        d.status("POST", &path, Some(&publisher_of_other), "{}")
            .await,
        403
    );
    let batch = json!([{"channel": target, "data": "x"}]).to_string();
    assert_eq!(d.status("POST", "/publish", None, &batch).await, 401);
    assert_eq!(
        d.status("POST", "/publish", Some(&publisher_of_other), &batch)
            .await,
        403
    );
    for kill in ["/killSession", "/killall"] {
        assert_eq!(d.status("DELETE", kill, None, "\"tab-1\"").await, 401);
        assert_eq!(
            d.status("DELETE", kill, Some(&publisher_of_other), "\"tab-1\"")
                .await,
            403
        );
    }
    // The hub: Mercure's public development key writes nothing anywhere.
    let development = sign(
        at_jwt(Algorithm::HS256),
        &json!({"iss": "https://localhost", "aud": d.url(HUB), "exp": FAR,
            "authorization_details": [{"type": DETAIL, "actions": ["publish"],
                "topics": [{"match": "*"}]}]}),
        MERCURE_DEVELOPMENT_KEY,
    );
    for topic in [target, "killSession"] {
        assert_eq!(d.mercure_publish(topic, &development).await, 401, "{topic}");
    }
    let published = |body: Value| body["published"].as_u64().unwrap_or(0);
    let res = d.get(&format!("/channels/{target}"), Some(&monitor)).await;
    let before = published(res.json().await.expect("JSON"));
    if d.has_issuer {
        // A real publisher of the hub writes into the channel only as far
        // as its own rights go: here they cover the topic, so the channel
        // gets the update (the positive control of the refusals above).
        let writer = d.mercure_token(&["publish"], &[target]);
        assert_eq!(d.mercure_publish(target, &writer).await, 200);
        wait_until(|| async {
            let res = d.get(&format!("/channels/{target}"), Some(&monitor)).await;
            published(res.json().await.expect("JSON")) == before + 1
        })
        .await;
    } else {
        let res = d.get(&format!("/channels/{target}"), Some(&monitor)).await;
        assert_eq!(published(res.json().await.expect("JSON")), before);
    }
    assert_eq!(
        d.get("/channels/killSession", Some(&monitor))
            .await
            .status(),
        404
    );
}

/// A temporary folder for a durable history.
fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sse-broker-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    dir
}

fn issuers() -> String {
    format!(
        "[{{id=\"{ISSUER}\", publisher={{jwt=\"{ISSUER_KEY}\"}}, subscriber={{jwt=\"{ISSUER_KEY}\"}}}}]"
    )
}

const PRODUCTION: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/config/production.toml");

/// `config/production.toml`, completed only with what a deployment must
/// supply (the secret, an issuer, its folders): nothing private leaks, and
/// nothing leaks either after a restart from the durable history.
#[actix_web::test]
async fn production_example_leaks_nothing() {
    let data = temp_dir("access-production");
    let data_dir = data.display().to_string();
    let issuers = issuers();
    let env = [
        ("SSE_BROKER__HISTORY__DATA_DIR", data_dir.as_str()),
        ("SSE_BROKER__MERCURE__ISSUERS", issuers.as_str()),
    ];
    let args = ["--config", PRODUCTION, "--bind", "127.0.0.1:0"];
    let deployment = Deployment::start(&args, &env, true, true);
    attack(&deployment).await;
    drop(deployment);
    let restarted = Deployment::start(&args, &env, true, true);
    let mut replay = restarted.hub_stream(None, true).await;
    assert_eq!(first_data(&mut replay).await, "\"public\"");
    let entitled = restarted.mercure_token(&["subscribe"], &[PRIVATE]);
    let mut replay = restarted.hub_stream(Some(&entitled), true).await;
    assert_eq!(first_data(&mut replay).await, "\"secret\"");
    let _ = std::fs::remove_dir_all(data);
}

/// The overlay of `docs/security.md`, "Turning auth on", exactly as the
/// document shows it.
fn documented_overlay() -> String {
    let doc = include_str!("../../docs/security.md");
    let section = doc
        .split("## Turning auth on")
        .nth(1)
        .expect("docs/security.md has the section");
    let block = section
        .split("```toml\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("the section has a toml block");
    toml_is_valid(block);
    block.to_owned()
}

/// Fails unless `text` is valid TOML (the overlay is copied by readers).
fn toml_is_valid(text: &str) {
    if let Err(err) = text.parse::<toml::Table>() {
        panic!("the documented overlay is not valid TOML: {err}\n{text}");
    }
}

/// The `docs/security.md` overlay applied alone (it touches only `[auth]`,
/// so the hub keeps its development issuer, whose key is left out).
#[actix_web::test]
async fn documented_overlay_leaks_nothing() {
    let dir = temp_dir("access-overlay");
    let file = dir.join("overlay.toml");
    std::fs::write(&file, documented_overlay()).expect("the overlay is written");
    let file = file.display().to_string();
    let args = [
        "--config",
        &file,
        "--bind",
        "127.0.0.1:0",
        "--demo",
        "false",
    ];
    let deployment = Deployment::start(&args, &[], true, false);
    attack(&deployment).await;
    let log = deployment.broker.log.lock().expect("a log").join("\n");
    assert!(
        log.contains("left out because auth.enabled = true"),
        "{log}"
    );
    assert!(log.contains("no publisher key is left"), "{log}");
    drop(deployment);
    let _ = std::fs::remove_dir_all(dir);
}

/// The development defaults with only `auth.enabled = true` (and a secret):
/// no channel is private, but none can be written without a grant, through
/// any route, the hub included.
#[actix_web::test]
async fn defaults_with_auth_on_leak_nothing() {
    let args = ["--bind", "127.0.0.1:0", "--demo", "false"];
    let env = [("SSE_BROKER__AUTH__ENABLED", "true")];
    let deployment = Deployment::start(&args, &env, false, false);
    attack(&deployment).await;
}

/// The development defaults warn about Mercure's public key at start.
#[actix_web::test]
async fn development_defaults_name_the_public_key() {
    let broker = BrokerProcess::start("127.0.0.1:0", &[]);
    let log = broker.log.lock().expect("a log").join("\n");
    assert!(
        log.contains("WARN") && log.contains("anyone can sign tokens this hub accepts"),
        "{log}"
    );
}

/// `anonymous_subscribe = false` protects every channel from anonymous
/// Mercure subscribers too: they get no copy of any channel's event.
#[actix_web::test]
async fn no_anonymous_subscribers_through_the_hub_either() {
    let app = spawn_app_with(|s| {
        crate::auth::with_auth(s);
        s.auth.anonymous_subscribe = false;
        s.mercure.allow_development_key = Some(true);
    })
    .await;
    let path = format!(
        "{HUB}?{}",
        encode_form(&[("match", PUBLIC), ("match", "other")])
    );
    let mut anonymous = app.stream(&path, &[]).await;
    anonymous.wait_open().await;
    let writer = token(&["*"], &[]);
    let publish = |channel: &'static str| {
        let writer = writer.clone();
        let app = &app;
        async move {
            let res = app
                .client
                .post(app.url(&format!("/publish/{channel}")))
                .bearer_auth(writer)
                .header("content-type", "text/plain")
                .body("hello")
                .send()
                .await
                .expect("a publish");
            assert_eq!(res.status(), 202);
        }
    };
    publish(PUBLIC).await;
    // A hub update of the hub's own (not a channel's copy) still reaches
    // anonymous subscribers: it is the sentinel that the copy did not.
    let hub_writer = crate::mercure_support::access_token(
        &app,
        json!([{"type": DETAIL, "actions": ["publish"], "topics": [{"match": "other"}]}]),
    );
    let res = crate::mercure_support::post_form(
        &app,
        &[("topic", "other"), ("data", "sentinel")],
        Some(&hub_writer),
    )
    .await;
    assert_eq!(res.status(), 200);
    assert_eq!(anonymous.next_event().await.data, "sentinel");
}
