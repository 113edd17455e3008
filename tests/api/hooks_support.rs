//! Scaffolding for the hook tests: the small Python web application of
//! `tests/apps/hook_app.py` (cookie sessions, a login form, the broker's
//! authorization hook, a logout that revokes), started for one test and
//! killed when dropped.

use std::{process::Child, time::Duration};

use serde_json::{Value, json};
use sse_broker::{auth::Permissions, config::Settings};

use crate::helpers::*;

/// The application, running.
pub struct HookApp {
    child: Child,
    pub url: String,
    /// Does not follow redirects (a login answers 303 with its cookie).
    client: reqwest::Client,
}

impl Drop for HookApp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl HookApp {
    /// Starts the application on a free port.
    pub fn start() -> Self {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/apps/hook_app.py");
        let (child, port) = start_script(script, &[]);
        install_crypto();
        Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("a client"),
        }
    }

    /// The hook's URL, for `hooks.subscribe_url`.
    pub fn hook_url(&self) -> String {
        format!("{}/hook", self.url)
    }

    /// Logs `user` in; its session cookie (`app_session=…`).
    pub async fn login(&self, user: &str) -> String {
        let res = self
            .client
            .post(format!("{}/login", self.url))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("user={user}&password=secret"))
            .send()
            .await
            .expect("login");
        assert_eq!(res.status(), 303, "login of {user}");
        let cookie = res
            .headers()
            .get("set-cookie")
            .and_then(|v| v.to_str().ok())
            .expect("a session cookie");
        cookie.split(';').next().expect("name=value").to_owned()
    }

    /// Logs the session out: the application asks the broker to end the
    /// user's streams; its answer (`{"user", "streams"}`).
    pub async fn logout(&self, cookie: &str) -> Value {
        let res = self
            .client
            .post(format!("{}/logout", self.url))
            .header("cookie", cookie)
            .send()
            .await
            .expect("logout");
        assert_eq!(res.status(), 200);
        res.json().await.expect("JSON")
    }

    /// Sets the application's knobs (`mode`, `delay`, `cacheFor`,
    /// `broker`, `token`).
    pub async fn control(&self, knobs: Value) {
        let res = self
            .client
            .post(format!("{}/control", self.url))
            .json(&knobs)
            .send()
            .await
            .expect("control");
        assert_eq!(res.status(), 204);
    }

    /// How often the hook was asked, and what it was asked last.
    pub async fn calls(&self) -> (u64, Value) {
        let calls: Value = self
            .client
            .get(format!("{}/calls", self.url))
            .send()
            .await
            .expect("calls")
            .json()
            .await
            .expect("JSON");
        (calls["count"].as_u64().unwrap_or(0), calls["last"].clone())
    }
}

/// Settings with the hook at `app`, answering fast in tests.
pub fn with_hook(settings: &mut Settings, app: &HookApp) {
    settings.hooks.subscribe_url = app.hook_url();
    settings.hooks.timeout = Duration::from_millis(1500);
}

/// The test secret of an auth-enabled broker.
pub const SECRET: &str = "0123456789abcdef0123456789abcdef";

/// Turns auth on with [`SECRET`].
pub fn with_auth(settings: &mut Settings) {
    settings.auth.enabled = true;
    settings.auth.secret = SECRET.into();
}

/// A token of an auth-enabled broker with `permissions`.
pub fn token(settings: &Settings, permissions: Permissions) -> String {
    sse_broker::auth::mint(
        &settings.auth,
        permissions,
        Duration::from_secs(600),
        Some("backend".into()),
    )
    .expect("a token")
}

/// The application's backend token: the `users` grant.
pub fn backend_token() -> String {
    let mut settings = Settings::defaults();
    with_auth(&mut settings);
    token(
        &settings,
        Permissions {
            users: true,
            ..Permissions::default()
        },
    )
}

/// Opens a stream at `url` with `headers`, whatever the answer; fails the
/// test if the answer takes longer than [`PATIENCE`].
pub async fn try_stream(url: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    stream_request(&http_client(), url, headers).await
}

/// A refusal's status, `Retry-After` and problem JSON.
pub async fn refusal(res: reqwest::Response) -> (u16, Option<String>, Value) {
    let status = res.status().as_u16();
    let retry_after = res
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = res.json().await.unwrap_or(json!(null));
    (status, retry_after, body)
}
