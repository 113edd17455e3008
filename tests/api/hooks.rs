//! The application's authorization hook and revocation (docs/hooks.md),
//! against a real web application with cookie sessions
//! (`tests/apps/hook_app.py`): logged-in sessions stream, logged-out ones
//! are refused, an application that is slow, down or answers garbage gets
//! the documented failure policy and nothing hangs, a logout ends the
//! user's streams (on one node and across two over a real Redis) and the
//! reconnect is refused.

use std::time::{Duration, Instant};

use serde_json::json;
use sse_broker::{auth::Permissions, config::FailurePolicy};

use crate::{helpers::*, hooks_support::*, redis_support::*};

/// A logged-in session streams its own channels, the hook hears the cookie,
/// origin and channels (and nothing else of the request); a logged-out
/// session, another user's channel and a channel the answer does not list
/// are refused with 403 problem+json.
#[actix_web::test]
async fn sessions_decide_who_streams() {
    let hook = HookApp::start();
    let app = spawn_app_with(|s| with_hook(s, &hook)).await;
    let alice = hook.login("alice").await;

    let mut stream = app
        .stream(
            "/stream/user.alice",
            &[
                ("cookie", &alice),
                ("origin", "http://app.test"),
                ("x-not-forwarded", "secret"),
                ("last-event-id", ""),
            ],
        )
        .await;
    stream.wait_open().await;
    app.publish("user.alice", "\"hello\"").await;
    assert_eq!(stream.next_messages(1).await[0].data, "\"hello\"");
    let (calls, last) = hook.calls().await;
    assert_eq!(calls, 1);
    assert_eq!(last["cookie"], alice.as_str());
    assert_eq!(last["origin"], "http://app.test");
    assert_eq!(last["other"], json!(null), "only forward_headers are sent");
    assert_eq!(last["body"]["channels"], json!(["user.alice"]));
    assert!(last["body"]["ip"].as_str().is_some());

    for (path, cookie) in [
        ("/stream/user.alice", None),
        ("/stream/user.bob", Some(alice.as_str())),
        ("/stream?channel=news&channel=secret", Some(alice.as_str())),
    ] {
        let headers: Vec<(&str, &str)> = cookie.map(|c| ("cookie", c)).into_iter().collect();
        let (status, _, body) = refusal(try_stream(&app.url(path), &headers).await).await;
        assert_eq!(status, 403, "{path}: {body}");
        assert_eq!(body["type"], "urn:sse-broker:problem:forbidden");
    }

    let logged_out = hook.login("bob").await;
    hook.logout(&logged_out).await;
    let res = try_stream(&app.url("/stream/news"), &[("cookie", &logged_out)]).await;
    assert_eq!(res.status(), 403, "a logged-out session is refused");
}

/// A history read is asked of the hook as a stream of its channel is: the
/// session's own channel reads back, another user's and a logged-out
/// session's are refused.
#[actix_web::test]
async fn history_reads_ask_the_hook() {
    let hook = HookApp::start();
    let app = spawn_app_with(|s| with_hook(s, &hook)).await;
    let alice = hook.login("alice").await;
    let id = app.publish("user.alice", "\"hello\"").await;
    let read = |path: &str, cookie: Option<&str>| {
        let mut req = app.client.get(app.url(path));
        if let Some(cookie) = cookie {
            req = req.header("cookie", cookie);
        }
        req.send()
    };

    let res = read("/channels/user.alice/history", Some(&alice))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let page: serde_json::Value = res.json().await.unwrap();
    assert_eq!(page["events"][0]["id"], id.as_str());
    assert_eq!(
        hook.calls().await.1["body"]["channels"],
        json!(["user.alice"])
    );

    for (path, cookie) in [
        ("/channels/user.bob/history", Some(alice.as_str())),
        ("/channels/user.alice/history", None),
    ] {
        let res = read(path, cookie).await.unwrap();
        assert_eq!(res.status(), 403, "{path}");
        assert_eq!(
            res.headers()["content-type"],
            "application/problem+json",
            "{path}"
        );
    }
}

/// `/metrics` counts the hook's decisions by outcome and the requests it
/// sent (a cached answer sends none), and shows the breaker open.
#[actix_web::test]
async fn metrics_count_the_hooks_decisions() {
    let hook = HookApp::start();
    let app = spawn_app_with(|s| {
        with_hook(s, &hook);
        s.hooks.breaker_failures = 1;
        s.hooks.breaker_open_for = Duration::from_secs(30);
    })
    .await;
    let alice = hook.login("alice").await;
    hook.control(json!({"mode": "ok", "cacheFor": "60s"})).await;
    for _ in 0..2 {
        let mut stream = app.stream("/stream/news", &[("cookie", &alice)]).await;
        stream.wait_open().await;
    }
    let logged_out = hook.login("bob").await;
    hook.logout(&logged_out).await;
    let res = try_stream(&app.url("/stream/news"), &[("cookie", &logged_out)]).await;
    assert_eq!(res.status(), 403);
    hook.control(json!({"mode": "error"})).await;
    let res = try_stream(&app.url("/stream/other"), &[("cookie", &alice)]).await;
    assert_eq!(res.status(), 503);

    let text = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "sse_broker_hook_decisions_total{outcome=\"allow\"} 2",
        "sse_broker_hook_decisions_total{outcome=\"deny\"} 1",
        "sse_broker_hook_decisions_total{outcome=\"failed\"} 1",
        "sse_broker_hook_requests_total 3",
        "sse_broker_hook_breaker_open 1",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} in:\n{text}");
    }
}

/// The publish hook: a session may publish to its own channels (one
/// question per batch, with every channel), is refused others' (403, and
/// nothing of the batch goes out), the kill endpoints and the Mercure hub
/// are asked too, and an application that fails gets 503 (`deny`).
#[actix_web::test]
async fn publishes_ask_the_publish_hook() {
    let hook = HookApp::start();
    let app = spawn_app_with(|s| {
        s.hooks.publish_url = hook.hook_url();
        s.hooks.timeout = Duration::from_millis(1500);
    })
    .await;
    let alice = hook.login("alice").await;
    let post = |path: &str, body: &str, cookie: Option<&str>| {
        let mut req = app
            .client
            .post(app.url(path))
            .header("content-type", "application/json")
            .body(body.to_owned());
        if let Some(cookie) = cookie {
            req = req.header("cookie", cookie);
        }
        req.send()
    };

    let res = post("/publish/user.alice", "\"hi\"", Some(&alice))
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    let (_, last) = hook.calls().await;
    assert_eq!(last["body"]["action"], "publish");
    assert_eq!(last["body"]["channels"], json!(["user.alice"]));
    assert_eq!(last["cookie"], alice.as_str());

    for (path, body, cookie) in [
        ("/publish/user.bob", "\"hi\"", Some(alice.as_str())),
        ("/publish/user.alice", "\"hi\"", None),
        (
            "/publish",
            r#"[{"channel": "user.alice", "data": 1}, {"channel": "user.bob", "data": 2}]"#,
            Some(alice.as_str()),
        ),
    ] {
        let res = post(path, body, cookie).await.unwrap();
        assert_eq!(res.status(), 403, "{path} {body}");
        let problem: serde_json::Value = res.json().await.unwrap();
        assert_eq!(problem["type"], "urn:sse-broker:problem:forbidden");
    }
    let (_, page) = app.get_json("/channels/user.alice/history").await;
    assert_eq!(
        page["events"].as_array().map(Vec::len),
        Some(1),
        "nothing of the refused batch went out: {page}"
    );
    let batch = r#"[{"channel": "user.alice", "data": 1}, {"channel": "room.1", "data": 2}, {"channel": "user.alice", "data": 3}]"#;
    let res = post("/publish", batch, Some(&alice)).await.unwrap();
    assert_eq!(res.status(), 202);
    assert_eq!(
        hook.calls().await.1["body"]["channels"],
        json!(["room.1", "user.alice"]),
        "one question, each channel once"
    );

    let res = app
        .client
        .delete(app.url("/killSession"))
        .header("content-type", "application/json")
        .body("\"tab-1\"")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403, "the kill endpoints are publishes");

    let token = crate::mercure_support::all_access(&app);
    let hub = |cookie: Option<&str>| {
        let mut req = app
            .client
            .post(app.url("/.well-known/mercure"))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("authorization", format!("Bearer {token}"))
            .body("topic=news&data=x");
        if let Some(cookie) = cookie {
            req = req.header("cookie", cookie);
        }
        req.send()
    };
    assert_eq!(hub(Some(&alice)).await.unwrap().status(), 200);
    assert_eq!(hook.calls().await.1["body"]["topics"], json!(["news"]));
    assert_eq!(hub(None).await.unwrap().status(), 403);

    hook.control(json!({"mode": "error"})).await;
    let res = post("/publish/user.alice", "\"hi\"", Some(&alice))
        .await
        .unwrap();
    assert_eq!(res.status(), 503);
    assert!(res.headers().contains_key("retry-after"));
}

/// A slow, failing or garbage-answering application: 503 with Retry-After
/// (the `deny` policy) within the hook's timeout, never a hang; after
/// `breaker_failures` failures in a row the breaker answers at once,
/// without asking the application.
#[actix_web::test]
async fn a_failing_application_is_answered_503_in_time() {
    let hook = HookApp::start();
    let app = spawn_app_with(|s| {
        with_hook(s, &hook);
        s.hooks.timeout = Duration::from_millis(500);
        s.hooks.breaker_failures = 4;
        s.hooks.breaker_open_for = Duration::from_secs(30);
    })
    .await;
    let alice = hook.login("alice").await;
    let url = app.url("/stream/news");
    let headers = [("cookie", alice.as_str())];

    for mode in [
        json!({"mode": "slow", "delay": 3}),
        json!({"mode": "garbage"}),
        json!({"mode": "error"}),
        json!({"mode": "error"}),
    ] {
        hook.control(mode.clone()).await;
        let started = Instant::now();
        let (status, retry_after, body) = refusal(try_stream(&url, &headers).await).await;
        assert_eq!(status, 503, "{mode}: {body}");
        assert_eq!(body["type"], "urn:sse-broker:problem:hook-unavailable");
        assert_eq!(retry_after.as_deref(), Some("30"));
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{mode} took {:?}",
            started.elapsed()
        );
    }
    // Four failures in a row opened the breaker: answered at once, the
    // application (well again) not asked.
    hook.control(json!({"mode": "ok"})).await;
    let (asked, _) = hook.calls().await;
    let started = Instant::now();
    let (status, retry_after, _) = refusal(try_stream(&url, &headers).await).await;
    assert_eq!(status, 503);
    let wait: u64 = retry_after.expect("Retry-After").parse().unwrap();
    assert!((1..=30).contains(&wait), "{wait}");
    assert!(started.elapsed() < Duration::from_millis(400));
    assert_eq!(hook.calls().await.0, asked);
}

/// A hook nobody listens at (the application is down): 503 at once.
#[actix_web::test]
async fn a_stopped_application_is_answered_503() {
    let port = free_port();
    let app = spawn_app_with(|s| {
        s.hooks.subscribe_url = format!("http://127.0.0.1:{port}/hook");
    })
    .await;
    let started = Instant::now();
    let (status, retry_after, _) = refusal(try_stream(&app.url("/stream/news"), &[]).await).await;
    assert_eq!(status, 503);
    assert!(retry_after.is_some());
    assert!(started.elapsed() < Duration::from_secs(2));
}

/// With `failure_policy = "allow_public"` a failing application still lets
/// public channels open (and protected ones need a token as without a hook).
#[actix_web::test]
async fn allow_public_opens_public_channels_while_the_hook_fails() {
    let hook = HookApp::start();
    let app = spawn_app_with(|s| {
        with_hook(s, &hook);
        with_auth(s);
        s.auth.private_channels = vec!["user.*".into()];
        s.hooks.failure_policy = FailurePolicy::AllowPublic;
    })
    .await;
    hook.control(json!({"mode": "garbage"})).await;
    let mut news = app.stream("/stream/news", &[]).await;
    news.wait_open().await;
    let res = try_stream(&app.url("/stream/user.alice"), &[]).await;
    assert_eq!(res.status(), 401, "a protected channel needs a token");
}

/// An answer with `cacheFor` is reused for the same session and channels;
/// another session, or other channels, ask again.
#[actix_web::test]
async fn answers_are_cached_for_their_cache_for() {
    let hook = HookApp::start();
    let app = spawn_app_with(|s| with_hook(s, &hook)).await;
    hook.control(json!({"cacheFor": "60s"})).await;
    let alice = hook.login("alice").await;
    for _ in 0..3 {
        let mut stream = app.stream("/stream/news", &[("cookie", &alice)]).await;
        stream.wait_open().await;
    }
    assert_eq!(
        hook.calls().await.0,
        1,
        "one question, two answers from the cache"
    );
    let mut other = app.stream("/stream/room.1", &[("cookie", &alice)]).await;
    other.wait_open().await;
    let bob = hook.login("bob").await;
    let mut bobs = app.stream("/stream/news", &[("cookie", &bob)]).await;
    bobs.wait_open().await;
    assert_eq!(hook.calls().await.0, 3);
}

/// Identical questions that arrive while one is asked (a reconnect storm)
/// wait for its answer: one request, even when the answer may not be
/// reused (no `cacheFor`); a question after it asks again.
#[actix_web::test]
async fn concurrent_identical_questions_are_one_request() {
    let hook = HookApp::start();
    let app = spawn_app_with(|s| with_hook(s, &hook)).await;
    let alice = hook.login("alice").await;
    hook.control(json!({"mode": "slow", "delay": 0.5})).await;
    let headers = [("cookie", alice.as_str())];
    let (mut a, mut b, mut c) = tokio::join!(
        app.stream("/stream/news", &headers),
        app.stream("/stream/news", &headers),
        app.stream("/stream/news", &headers),
    );
    for stream in [&mut a, &mut b, &mut c] {
        stream.wait_open().await;
    }
    assert_eq!(hook.calls().await.0, 1);
    let mut later = app.stream("/stream/news", &headers).await;
    later.wait_open().await;
    assert_eq!(
        hook.calls().await.0,
        2,
        "an answer without cacheFor is not reused"
    );
}

/// `public_channels_skip`: a public stream without credentials opens
/// without asking; one with a cookie still asks.
#[actix_web::test]
async fn public_streams_without_credentials_may_skip_the_hook() {
    let hook = HookApp::start();
    let app = spawn_app_with(|s| {
        with_hook(s, &hook);
        s.hooks.public_channels_skip = true;
    })
    .await;
    let mut anonymous = app
        .stream("/stream/news", &[("origin", "http://app.test")])
        .await;
    anonymous.wait_open().await;
    assert_eq!(hook.calls().await.0, 0);
    let res = try_stream(&app.url("/stream/news"), &[("cookie", "app_session=stale")]).await;
    assert_eq!(res.status(), 403);
    assert_eq!(hook.calls().await.0, 1);
}

/// A logout ends every stream of the user (multi-channel and Mercure ones
/// too) with `broker.revoked`, leaves other users' streams open, answers
/// how many ended, and the reconnect with the old cookie is refused.
#[actix_web::test]
async fn logout_revokes_the_users_streams() {
    let hook = HookApp::start();
    let app = spawn_app_with(|s| with_hook(s, &hook)).await;
    hook.control(json!({"broker": app.address, "cacheFor": "60s"}))
        .await;
    let (alice, bob) = (hook.login("alice").await, hook.login("bob").await);
    let mut one = app
        .stream("/stream/user.alice", &[("cookie", &alice)])
        .await;
    let mut many = app
        .stream("/stream?channel=news&channel=room.1", &[("cookie", &alice)])
        .await;
    let mut hub = app
        .stream("/.well-known/mercure?match=*", &[("cookie", &alice)])
        .await;
    let mut bobs = app.stream("/stream/news", &[("cookie", &bob)]).await;
    for stream in [&mut one, &mut many, &mut hub, &mut bobs] {
        stream.wait_open().await;
    }

    let answer = hook.logout(&alice).await;
    assert_eq!(answer["streams"], 3, "{answer}");
    for stream in [&mut one, &mut many] {
        let events = stream.until_end().await;
        let revoked = events.last().expect("a notice");
        assert_eq!(revoked.event, "broker.revoked");
        assert!(stream.retry.is_some(), "a reconnect hint");
    }
    hub.until_end().await;
    app.publish("news", "\"still here\"").await;
    assert_eq!(bobs.next_messages(1).await[0].data, "\"still here\"");

    let res = try_stream(&app.url("/stream/user.alice"), &[("cookie", &alice)]).await;
    assert_eq!(
        res.status(),
        403,
        "the reconnect reaches the application, which refuses it"
    );
}

/// `unsubscribe` ends only the streams that hold one of its channels.
#[actix_web::test]
async fn unsubscribe_ends_the_streams_of_its_channels() {
    let hook = HookApp::start();
    let app = spawn_app_with(|s| with_hook(s, &hook)).await;
    let alice = hook.login("alice").await;
    let mut room = app
        .stream("/stream?channel=room.1&channel=news", &[("cookie", &alice)])
        .await;
    let mut news = app.stream("/stream/news", &[("cookie", &alice)]).await;
    room.wait_open().await;
    news.wait_open().await;

    let res = app
        .post(
            "/users/alice/unsubscribe",
            "application/json",
            r#"{"channels": ["room.1"]}"#,
        )
        .await;
    assert_eq!(res.status(), 202);
    let answer: serde_json::Value = res.json().await.expect("JSON");
    assert_eq!(answer, json!({"streams": 1, "nodes": 1, "unanswered": 0}));
    assert_eq!(
        room.until_end().await.last().unwrap().event,
        "broker.revoked"
    );
    app.publish("news", "1").await;
    assert_eq!(news.next_messages(1).await[0].data, "1");

    let res = app
        .post(
            "/users/alice/unsubscribe",
            "application/json",
            r#"{"channels": []}"#,
        )
        .await;
    assert_eq!(res.status(), 400);
}

/// With auth on, revocation needs a token with the `users` grant, in the
/// Authorization header; a token's `sub` is a subscriber's identity too.
#[actix_web::test]
async fn revocation_needs_the_users_grant() {
    let app = spawn_app_with(|s| {
        with_auth(s);
        s.auth.private_channels = vec!["user.*".into()];
    })
    .await;
    let settings = {
        let mut s = sse_broker::config::Settings::defaults();
        with_auth(&mut s);
        s
    };
    let subscriber = sse_broker::auth::mint(
        &settings.auth,
        Permissions {
            subscribe: vec!["user.carol".into()],
            ..Permissions::default()
        },
        Duration::from_secs(600),
        Some("carol".into()),
    )
    .expect("a token");
    let mut carol = app
        .stream(&format!("/stream/user.carol?token={subscriber}"), &[])
        .await;
    carol.wait_open().await;

    let url = app.url("/users/carol/disconnect");
    let post = |token: Option<String>| {
        let mut req = app.client.post(&url);
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        req.send()
    };
    assert_eq!(post(None).await.unwrap().status(), 401);
    let monitor = token(
        &settings,
        Permissions {
            monitor: true,
            ..Permissions::default()
        },
    );
    assert_eq!(post(Some(monitor)).await.unwrap().status(), 403);
    let res = post(Some(backend_token())).await.unwrap();
    assert_eq!(res.status(), 202);
    let answer: serde_json::Value = res.json().await.unwrap();
    assert_eq!(answer["streams"], 1);
    assert_eq!(
        carol.until_end().await.last().unwrap().event,
        "broker.revoked"
    );
}

/// The Mercure hub asks the hook too (the matchers as `topics`): a
/// logged-out session is refused with 403; the answer's topics grant
/// private updates.
#[actix_web::test]
async fn mercure_subscribers_are_asked_about() {
    let hook = HookApp::start();
    let app = spawn_app_with(|s| with_hook(s, &hook)).await;
    let res = try_stream(&app.url("/.well-known/mercure?match=*"), &[]).await;
    assert_eq!(res.status(), 403);
    let (_, last) = hook.calls().await;
    assert_eq!(last["body"]["topics"], json!(["*"]));
    assert_eq!(last["body"]["channels"], json!(null));
    let alice = hook.login("alice").await;
    let mut hub = app
        .stream("/.well-known/mercure?match=*", &[("cookie", &alice)])
        .await;
    hub.wait_open().await;
}

/// `recheck_every`: a stream whose session ended in the application (no
/// revocation sent) ends at the next recheck, as revoked.
#[actix_web::test]
async fn recheck_ends_a_stream_the_application_no_longer_allows() {
    let hook = HookApp::start();
    let app = spawn_app_with(|s| {
        with_hook(s, &hook);
        s.hooks.recheck_every = Duration::from_millis(200);
    })
    .await;
    let alice = hook.login("alice").await;
    let mut stream = app
        .stream("/stream/user.alice", &[("cookie", &alice)])
        .await;
    stream.wait_open().await;
    hook.logout(&alice).await;
    let events = stream.until_end().await;
    assert_eq!(events.last().unwrap().event, "broker.revoked");
}

/// Across two nodes on one Redis: a logout through node A ends the user's
/// stream on node B, the answer counts both nodes, and B refuses the
/// reconnect (its cached allow forgotten).
#[actix_web::test]
async fn revocation_reaches_every_node() {
    let redis = RedisServer::start();
    let hook = HookApp::start();
    let a = spawn_node_with(&redis.url(), |s| with_hook(s, &hook)).await;
    let b = spawn_node_with(&redis.url(), |s| with_hook(s, &hook)).await;
    hook.control(json!({"broker": a.address, "cacheFor": "60s"}))
        .await;
    let alice = hook.login("alice").await;
    let mut on_b = b.stream("/stream/user.alice", &[("cookie", &alice)]).await;
    let mut on_a = a.stream("/stream/news", &[("cookie", &alice)]).await;
    on_b.wait_open().await;
    on_a.wait_open().await;

    // Both nodes follow the control channel once their bus is up.
    wait_until(|| async {
        a.get_json("/readyz").await.0 == 200 && b.get_json("/readyz").await.0 == 200
    })
    .await;
    let answer = hook.logout(&alice).await;
    assert_eq!(answer["streams"], 2, "{answer}");
    assert_eq!(
        on_b.until_end().await.last().unwrap().event,
        "broker.revoked"
    );
    assert_eq!(
        on_a.until_end().await.last().unwrap().event,
        "broker.revoked"
    );
    let res = try_stream(&b.url("/stream/user.alice"), &[("cookie", &alice)]).await;
    assert_eq!(res.status(), 403);
}
