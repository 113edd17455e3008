//! Presence (docs/api.md, "Presence"): who is on a channel, listed from
//! the subscribers' tokens (`sub` and `sse.info`), as a count alone, as
//! `broker.join` / `broker.leave` events on `?presence=1` streams, refused
//! to callers who may not subscribe, bounded by
//! `limits.max_presence_members`, and across two nodes over a real Redis.

use std::time::Duration;

use jsonwebtoken::Algorithm;
use serde_json::{Value, json};
use sse_broker::config::Settings;

use crate::{
    auth::{hs_token_with, now, token, with_auth},
    helpers::*,
    hooks_support::{HookApp, with_hook},
    redis_support::*,
};

/// A subscriber token for `user` (with `info`), valid for an hour.
fn user_token(user: &str, info: Option<Value>) -> String {
    let mut sse = json!({"subscribe": ["*"]});
    if let Some(info) = info {
        sse["info"] = info;
    }
    hs_token_with(
        Algorithm::HS256,
        &json!({"sse": sse, "exp": now() + 3600, "sub": user}),
    )
}

/// Auth on (identities come from tokens), and a short heartbeat so a
/// closed stream is noticed at once.
fn presence_settings(s: &mut Settings) {
    with_auth(s);
    s.stream.heartbeat = Duration::from_millis(100);
}

/// A stream of `path` with `token` in the query.
async fn stream_as(app: &TestApp, path: &str, token: &str) -> SseClient {
    let sep = if path.contains('?') { '&' } else { '?' };
    let mut stream = app.stream(&format!("{path}{sep}token={token}"), &[]).await;
    stream.wait_open().await;
    stream
}

/// The channel's presence as an anonymous caller reads it.
async fn presence(app: &TestApp, channel: &str) -> Value {
    let (status, body) = app.get_json(&format!("/channels/{channel}/presence")).await;
    assert_eq!(status, 200, "{body}");
    body
}

/// The next event that is not a message (a join or a leave).
async fn next_presence_event(stream: &mut SseClient) -> SseEvent {
    loop {
        let event = stream.next_event().await;
        if event.event.starts_with("broker.join") || event.event.starts_with("broker.leave") {
            return event;
        }
    }
}

/// Two connections of Ada, one of Bob and an anonymous one: the count is four, the members are
/// Ada (two connections, her token's info) and Bob; `?count=1` answers the count alone.
#[actix_web::test]
async fn members_are_listed_with_connections_and_info() {
    let app = spawn_app_with(presence_settings).await;
    let ada = user_token("ada", Some(json!({"name": "Ada"})));
    let bob = user_token("bob", None);
    let _a1 = stream_as(&app, "/stream/room", &ada).await;
    let a2 = stream_as(&app, "/stream/room", &ada).await;
    let _b = stream_as(&app, "/stream/room", &bob).await;
    let mut anonymous = app.stream("/stream/room", &[]).await;
    anonymous.wait_open().await;

    let body = presence(&app, "room").await;
    assert_eq!(
        body,
        json!({
            "count": 4,
            "members": [
                {"user": "ada", "connections": 2, "info": {"name": "Ada"}},
                {"user": "bob", "connections": 1},
            ],
            "truncated": false,
        })
    );
    let (status, count) = app.get_json("/channels/room/presence?count=1").await;
    assert_eq!((status, count), (200, json!({"count": 4})));

    drop(a2);
    wait_until(|| async { presence(&app, "room").await["members"][0]["connections"] == 1 }).await;
    assert_eq!(
        presence(&app, "nobody-here").await,
        json!({"count": 0, "members": [], "truncated": false})
    );
}

/// A `?presence=1` stream gets a join (user, info, no id) when a user's first connection comes
/// and a leave when its last goes; a second connection announces nothing, and a plain stream
/// gets no presence events.
#[actix_web::test]
async fn presence_streams_get_joins_and_leaves() {
    let app = spawn_app_with(presence_settings).await;
    let mut watcher = app.stream("/stream/room?presence=1", &[]).await;
    watcher.wait_open().await;
    let mut plain = app.stream("/stream/room", &[]).await;
    plain.wait_open().await;

    let ada = user_token("ada", Some(json!({"name": "Ada"})));
    let first = stream_as(&app, "/stream/room", &ada).await;
    let join = next_presence_event(&mut watcher).await;
    assert_eq!(join.event, "broker.join");
    assert_eq!(join.id, "", "a join moves no Last-Event-ID");
    let data: Value = serde_json::from_str(&join.data).unwrap();
    assert_eq!(
        data,
        json!({"user": "ada", "info": {"name": "Ada"}, "channel": "room"})
    );

    let second = stream_as(&app, "/stream/room", &ada).await;
    drop(second);
    drop(first);
    let leave = next_presence_event(&mut watcher).await;
    assert_eq!(leave.event, "broker.leave", "no second join before it");
    assert_eq!(
        serde_json::from_str::<Value>(&leave.data).unwrap()["user"],
        "ada"
    );

    let res = app
        .client
        .post(app.url("/publish/room"))
        .bearer_auth(token(&["room"], &[]))
        .header("content-type", "application/json")
        .body("\"after\"")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    let next = plain.next_event().await;
    assert_eq!(
        (next.event.as_str(), next.data.as_str()),
        ("message", "\"after\"")
    );
    let next = watcher.next_event().await;
    assert_eq!(next.data, "\"after\"", "the watcher's events go on");
}

/// A multi-channel `?presence=1` stream gets the joins of each of its channels, naming it.
#[actix_web::test]
async fn multi_channel_streams_get_each_channels_joins() {
    let app = spawn_app_with(presence_settings).await;
    let mut watcher = app
        .stream("/stream?channel=a&channel=b&presence=1", &[])
        .await;
    watcher.wait_open().await;
    let _ada = stream_as(&app, "/stream/b", &user_token("ada", None)).await;
    let join = next_presence_event(&mut watcher).await;
    assert_eq!(join.id, "", "no cursor id on a join");
    let data: Value = serde_json::from_str(&join.data).unwrap();
    assert_eq!(
        (data["user"].as_str(), data["channel"].as_str()),
        (Some("ada"), Some("b"))
    );
}

/// A private channel's presence is refused without a token (401) and with a token for other
/// channels (403), as problem+json; a token that may subscribe reads it.
#[actix_web::test]
async fn private_presence_needs_the_right_to_subscribe() {
    let app = spawn_app_with(presence_settings).await;
    let url = app.url("/channels/private.a/presence");
    let res = app.client.get(&url).send().await.unwrap();
    assert_eq!(problem(res).await.0, 401);
    let other = token(&[], &["private.b"]);
    let res = app
        .client
        .get(&url)
        .bearer_auth(&other)
        .send()
        .await
        .unwrap();
    assert_eq!(problem(res).await.0, 403);
    let res = app
        .client
        .get(format!("{url}?count=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(problem(res).await.0, 401, "the count alone too");
    let (status, body) = {
        let res = app
            .client
            .get(&url)
            .bearer_auth(token(&[], &["private.a"]))
            .send()
            .await
            .unwrap();
        (res.status().as_u16(), res.json::<Value>().await.unwrap())
    };
    assert_eq!((status, body["count"].as_u64()), (200, Some(0)));
    let res = app
        .client
        .get(app.url("/channels/room/presence?count=maybe"))
        .send()
        .await
        .unwrap();
    assert_eq!(problem(res).await.0, 400);
}

/// With the application's hook, a logged-in session's stream is listed as the user the hook
/// named (with its info); the presence read asks the hook too, so a logged-out caller is
/// refused (403 problem+json) and a logged-in one reads it.
#[actix_web::test]
async fn the_hooks_user_is_listed_and_the_hook_guards_the_listing() {
    let hook = HookApp::start();
    let app = spawn_app_with(|s| with_hook(s, &hook)).await;
    let alice = hook.login("alice").await;
    let mut stream = app.stream("/stream/room.1", &[("cookie", &alice)]).await;
    stream.wait_open().await;

    let url = app.url("/channels/room.1/presence");
    let res = app.client.get(&url).send().await.unwrap();
    assert_eq!(
        problem(res).await.0,
        403,
        "the hook denies a caller without a session"
    );
    let res = app
        .client
        .get(&url)
        .header("cookie", &alice)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(
        body["members"],
        json!([{"user": "alice", "connections": 1, "info": {"name": "Alice"}}])
    );
}

/// With `max_presence_members = 2` a third user is counted but not listed, and the listing
/// says it was cut short.
#[actix_web::test]
async fn members_beyond_the_cap_are_counted_not_listed() {
    let app = spawn_app_with(|s| {
        presence_settings(s);
        s.limits.max_presence_members = 2;
    })
    .await;
    let mut streams = Vec::new();
    for user in ["ada", "bob", "cyd"] {
        streams.push(stream_as(&app, "/stream/room", &user_token(user, None)).await);
    }
    let body = presence(&app, "room").await;
    assert_eq!(body["count"], 3);
    assert_eq!(body["members"].as_array().unwrap().len(), 2);
    assert_eq!(body["truncated"], true);
}

/// Two nodes over one Redis: Ada's stream on node A is listed in node B's presence and
/// announced to B's `?presence=1` stream; her leave on A reaches B too.
#[actix_web::test]
async fn joins_on_one_node_are_seen_on_another() {
    let redis = RedisServer::start();
    let a = spawn_node_with(&redis.url(), presence_settings).await;
    let b = spawn_node_with(&redis.url(), presence_settings).await;
    let mut watcher = b.stream("/stream/room?presence=1", &[]).await;
    watcher.wait_open().await;

    let ada = stream_as(
        &a,
        "/stream/room",
        &user_token("ada", Some(json!({"n": 1}))),
    )
    .await;
    let join = next_presence_event(&mut watcher).await;
    assert_eq!(join.event, "broker.join");
    let data: Value = serde_json::from_str(&join.data).unwrap();
    assert_eq!(
        data,
        json!({"user": "ada", "info": {"n": 1}, "channel": "room"})
    );
    wait_until(|| async {
        presence(&b, "room").await["members"]
            == json!([{"user": "ada", "connections": 1, "info": {"n": 1}}])
    })
    .await;
    wait_until(|| async { presence(&b, "room").await["count"] == 2 }).await;

    drop(ada);
    let leave = next_presence_event(&mut watcher).await;
    assert_eq!(leave.event, "broker.leave");
    wait_until(|| async { presence(&b, "room").await["members"] == json!([]) }).await;
}
