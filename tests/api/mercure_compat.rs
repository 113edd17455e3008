//! The Mercure hub in compatibility mode (`protocol_version_compatibility =
//! 8`): everything 0.x clients use (`topic` selectors and URI templates,
//! the `mercure` claim, the `authorization` query parameter and
//! `mercureAuthorization` cookie, `lastEventID`, 0.x subscription events
//! and API), next to 1.0 clients on the same hub; and, on that mode, the
//! hub as a channel of the broker (cluster, durable history, limits, the
//! bridge to channels).

use jsonwebtoken::Header;
use serde_json::{Value, json};
use sse_broker::config::MERCURE_DEVELOPMENT_KEY;

use crate::{
    helpers::{
        BrokerProcess, TestApp, http_client, problem, spawn_app_with, stream_at, wait_until,
    },
    mercure_support::{
        HUB, access_token, compat, detail, encode_form, hub_path, next_updates, open, sign,
    },
    redis_support::{RedisServer, TcpProxy, spawn_node_with},
};

/// A 0.x token (no `typ`, `iss`, `aud`), signed with the development key.
fn token(claims: Value) -> String {
    sign(Header::default(), &claims, MERCURE_DEVELOPMENT_KEY)
}

fn publisher() -> String {
    token(json!({"mercure": {"publish": ["*"]}}))
}

/// `?topic=a&topic=b…` with extra parameters.
fn subscribe_path(topics: &[&str], extra: &[(&str, &str)]) -> String {
    let mut fields: Vec<(&str, &str)> = topics.iter().map(|t| ("topic", *t)).collect();
    fields.extend_from_slice(extra);
    format!("{HUB}?{}", encode_form(&fields))
}

/// POSTs a publish form with `token` (if any); returns status and body.
async fn post(app: &TestApp, fields: &[(&str, &str)], token: Option<&str>) -> (u16, String) {
    post_to(&app.client, &app.url(HUB), fields, token).await
}

/// [`post`] to the hub at `url`.
async fn post_to(
    client: &reqwest::Client,
    url: &str,
    fields: &[(&str, &str)],
    token: Option<&str>,
) -> (u16, String) {
    let mut req = client
        .post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(encode_form(fields));
    if let Some(token) = token {
        req = req.header("authorization", format!("Bearer {token}"));
    }
    let res = req.send().await.expect("publish request");
    (res.status().as_u16(), res.text().await.unwrap_or_default())
}

/// Publishes with a `*` publisher token and insists it was accepted.
async fn publish(app: &TestApp, fields: &[(&str, &str)]) -> String {
    let (status, body) = post(app, fields, Some(&publisher())).await;
    assert_eq!(status, 200, "publish answered {body}");
    body
}

/// An exact topic selector receives that topic's updates only.
#[actix_web::test]
async fn subscribe_by_exact_topic() {
    let app = spawn_app_with(compat).await;
    let mut sub = open(
        &app,
        &subscribe_path(&["https://example.com/books/1"], &[]),
        &[],
    )
    .await;
    publish(
        &app,
        &[("topic", "https://example.com/books/2"), ("data", "two")],
    )
    .await;
    let id = publish(
        &app,
        &[("topic", "https://example.com/books/1"), ("data", "one")],
    )
    .await;
    let event = sub.next_event().await;
    assert_eq!(
        (event.data.as_str(), event.id.as_str()),
        ("one", id.as_str())
    );
    assert!(id.starts_with("urn:uuid:"), "{id}");
    assert_eq!(
        sub.headers["content-type"], "text/event-stream",
        "{:?}",
        sub.headers
    );
}

/// `*` receives everything; a URI template receives the topics it matches.
#[actix_web::test]
async fn subscribe_with_wildcard_and_uri_template() {
    let app = spawn_app_with(compat).await;
    let mut all = open(&app, &subscribe_path(&["*"], &[]), &[]).await;
    let mut books = open(
        &app,
        &subscribe_path(&["https://example.com/books/{id}"], &[]),
        &[],
    )
    .await;
    publish(
        &app,
        &[
            ("topic", "https://example.com/authors/1"),
            ("data", "author"),
        ],
    )
    .await;
    publish(
        &app,
        &[("topic", "https://example.com/books/7"), ("data", "book")],
    )
    .await;
    assert_eq!(all.next_event().await.data, "author");
    assert_eq!(all.next_event().await.data, "book");
    assert_eq!(books.next_event().await.data, "book");
}

/// Private updates reach only subscribers whose JWT (header, cookie or
/// query parameter) has a matching `mercure.subscribe` claim.
#[actix_web::test]
async fn private_updates_need_a_subscriber_jwt() {
    let app = spawn_app_with(compat).await;
    let topic = "https://example.com/users/42";
    let reader = token(json!({"mercure": {"subscribe": ["https://example.com/users/{id}"]}}));
    let stranger = token(json!({"mercure": {"subscribe": ["https://example.com/other"]}}));
    let path = subscribe_path(&[topic], &[]);
    let mut anonymous = open(&app, &path, &[]).await;
    let mut wrong_claim = open(
        &app,
        &path,
        &[("authorization", &format!("Bearer {stranger}"))],
    )
    .await;
    let mut by_header = open(
        &app,
        &path,
        &[("authorization", &format!("Bearer {reader}"))],
    )
    .await;
    let mut by_cookie = open(
        &app,
        &path,
        &[("cookie", &format!("mercureAuthorization={reader}"))],
    )
    .await;
    let mut by_query = open(
        &app,
        &subscribe_path(&[topic], &[("authorization", &reader)]),
        &[],
    )
    .await;

    publish(
        &app,
        &[("topic", topic), ("data", "secret"), ("private", "on")],
    )
    .await;
    publish(&app, &[("topic", topic), ("data", "public")]).await;

    for sub in [&mut by_header, &mut by_cookie, &mut by_query] {
        assert_eq!(sub.next_event().await.data, "secret");
        assert_eq!(sub.next_event().await.data, "public");
    }
    assert_eq!(anonymous.next_event().await.data, "public");
    assert_eq!(wrong_claim.next_event().await.data, "public");
}

/// An invalid subscriber token is 401 even though anonymous is allowed;
/// without anonymous, a missing token is 401 too; no topic is 400.
#[actix_web::test]
async fn subscriber_authorization_errors() {
    let app = spawn_app_with(compat).await;
    let res = app
        .client
        .get(app.url(&subscribe_path(&["a"], &[])))
        .header("authorization", format!("Bearer {}x", publisher()))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let res = app.client.get(app.url(HUB)).send().await.unwrap();
    assert_eq!(res.status(), 400);

    let closed = spawn_app_with(|s| {
        compat(s);
        s.mercure.anonymous = false;
    })
    .await;
    let res = closed
        .client
        .get(closed.url(&subscribe_path(&["a"], &[])))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    assert!(res.headers().contains_key("www-authenticate"));
}

/// Several topics are delivered once; multi-line data, type, retry and the
/// publisher's id arrive as sent, and the id is the answer's body.
#[actix_web::test]
async fn publish_form_fields() {
    let app = spawn_app_with(compat).await;
    let mut sub = open(&app, &subscribe_path(&["urn:a", "urn:b"], &[]), &[]).await;
    let (status, body) = post(
        &app,
        &[
            ("topic", "urn:a"),
            ("topic", "urn:b"),
            ("data", "line 1\nline 2\r\nline 3"),
            ("id", "my-id-1"),
            ("type", "book.updated"),
            ("retry", "4321"),
        ],
        Some(&publisher()),
    )
    .await;
    assert_eq!((status, body.as_str()), (200, "my-id-1"));
    publish(&app, &[("topic", "urn:b"), ("data", "next")]).await;
    let event = sub.next_event().await;
    assert_eq!(event.id, "my-id-1");
    assert_eq!(event.event, "book.updated");
    assert_eq!(event.data, "line 1\nline 2\nline 3");
    assert_eq!(sub.retry, Some(4321));
    // Delivered once although both topics match: the next event is the next update.
    assert_eq!(sub.next_event().await.data, "next");
}

/// Publishing needs a valid publisher JWT (401) whose `mercure.publish`
/// claim covers every topic (403); reserved topics and malformed fields
/// are refused (400, as the spec now asks; 0.x hubs answered 403 for the
/// reserved namespace).
#[actix_web::test]
async fn publisher_authorization() {
    let app = spawn_app_with(compat).await;
    let fields = [("topic", "https://example.com/books/1"), ("data", "x")];
    assert_eq!(post(&app, &fields, None).await.0, 401);
    assert_eq!(
        post(
            &app,
            &fields,
            Some("not-a-jwt-but-long-enough-to-look-like-one-.x.y")
        )
        .await
        .0,
        401
    );
    let subscriber_only = token(json!({"mercure": {"subscribe": ["*"]}}));
    assert_eq!(post(&app, &fields, Some(&subscriber_only)).await.0, 403);
    let books = token(json!({"mercure": {"publish": ["https://example.com/books/{id}"]}}));
    assert_eq!(post(&app, &fields, Some(&books)).await.0, 200);
    let both = [
        ("topic", "https://example.com/books/1"),
        ("topic", "urn:other"),
    ];
    assert_eq!(post(&app, &both, Some(&books)).await.0, 403);
    let publisher = publisher();
    let reserved = [("topic", "/.well-known/mercure/subscriptions/x/y")];
    assert_eq!(post(&app, &reserved, Some(&publisher)).await.0, 400);
    assert_eq!(
        post(&app, &[("data", "no topic")], Some(&publisher))
            .await
            .0,
        400
    );
    assert_eq!(
        post(&app, &[("topic", "a"), ("retry", "soon")], Some(&publisher))
            .await
            .0,
        400
    );
    assert_eq!(
        post(&app, &[("topic", "a"), ("id", "a\nb")], Some(&publisher))
            .await
            .0,
        400
    );
}

/// Reconnecting with Last-Event-ID (header or `lastEventID`) replays what
/// came after it; `earliest` replays everything; the answer's
/// Last-Event-ID header says where the replay starts from (`earliest` for
/// an id the hub does not know, as draft-08 asks).
#[actix_web::test]
async fn resume_with_last_event_id() {
    let app = spawn_app_with(compat).await;
    let topic = "https://example.com/feed";
    let first = publish(&app, &[("topic", topic), ("data", "1")]).await;
    publish(&app, &[("topic", "urn:elsewhere"), ("data", "other")]).await;
    publish(&app, &[("topic", topic), ("data", "2")]).await;
    let path = subscribe_path(&[topic], &[]);

    let mut by_header = open(&app, &path, &[("last-event-id", &first)]).await;
    assert_eq!(by_header.headers["last-event-id"], first.as_str());
    assert_eq!(by_header.next_event().await.data, "2");

    let mut by_query = open(
        &app,
        &subscribe_path(&[topic], &[("lastEventID", &first)]),
        &[],
    )
    .await;
    assert_eq!(by_query.next_event().await.data, "2");

    let mut earliest = open(
        &app,
        &subscribe_path(&[topic], &[("lastEventID", "earliest")]),
        &[],
    )
    .await;
    assert_eq!(earliest.headers["last-event-id"], "earliest");
    assert_eq!(earliest.next_event().await.data, "1");
    assert_eq!(earliest.next_event().await.data, "2");

    // An unknown id replays nothing and the header says `earliest`: it never
    // names a retained update (which could be a private one).
    publish(&app, &[("topic", topic), ("data", "3"), ("private", "on")]).await;
    let mut unknown = open(&app, &path, &[("last-event-id", "urn:uuid:unknown")]).await;
    assert_eq!(unknown.headers["last-event-id"], "earliest");
    publish(&app, &[("topic", topic), ("data", "live")]).await;
    assert_eq!(unknown.next_event().await.data, "live");

    // No Last-Event-ID asked, no header answered.
    let live = open(&app, &path, &[]).await;
    assert!(!live.headers.contains_key("last-event-id"));
}

/// With subscriptions on, subscribing and leaving publish private
/// subscription events, and the subscriptions API lists who is connected.
#[actix_web::test]
async fn subscription_events_and_api() {
    let app = spawn_app_with(|s| {
        compat(s);
        s.mercure.subscriptions = true;
    })
    .await;
    let selector = "/.well-known/mercure/subscriptions{/topic}{/subscriber}";
    let watcher_token =
        token(json!({"mercure": {"subscribe": [selector], "payload": {"role": "admin"}}}));
    let auth = format!("Bearer {watcher_token}");
    let mut watcher = open(
        &app,
        &subscribe_path(&[selector], &[]),
        &[("authorization", &auth)],
    )
    .await;

    let topic = "https://example.com/books/{id}";
    let member = open(&app, &subscribe_path(&[topic], &[]), &[]).await;
    let joined: Value = serde_json::from_str(&watcher.next_event().await.data).unwrap();
    assert_eq!(joined["type"], "Subscription");
    assert_eq!(joined["topic"], topic);
    assert_eq!(joined["active"], true);
    assert_eq!(joined["@context"], "https://mercure.rocks/");
    let subscriber = joined["subscriber"].as_str().unwrap().to_owned();
    assert!(subscriber.starts_with("urn:uuid:"));
    assert_eq!(
        joined["id"],
        format!(
            "/.well-known/mercure/subscriptions/{}/{}",
            "https%3A%2F%2Fexample.com%2Fbooks%2F%7Bid%7D",
            subscriber.replace(':', "%3A")
        )
    );

    let res = app
        .client
        .get(app.url("/.well-known/mercure/subscriptions"))
        .header("authorization", &auth)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    // The collection of everything has the 1.0 shape, plus the 0.x cursor.
    assert_eq!(res.headers()["content-type"], "application/json");
    let list: Value = res.json().await.unwrap();
    assert_eq!(list["type"], "subscriptions");
    let subs = list["subscriptions"].as_array().unwrap();
    assert!(
        subs.iter()
            .any(|s| s["subscriber"] == subscriber.as_str() && s["topic"] == topic)
    );
    assert!(subs.iter().any(|s| s["payload"]["role"] == "admin"));
    assert!(
        list["lastEventID"]
            .as_str()
            .unwrap()
            .starts_with("urn:uuid:")
    );

    let one = app
        .client
        .get(app.url(joined["id"].as_str().unwrap()))
        .header("authorization", &auth)
        .send()
        .await
        .unwrap();
    assert_eq!(one.status(), 200);
    let one: Value = one.json().await.unwrap();
    assert_eq!(one["subscriber"], subscriber.as_str());
    assert!(one["lastEventID"].is_string());

    let anonymous = app
        .client
        .get(app.url("/.well-known/mercure/subscriptions"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);

    drop(member);
    let left: Value = serde_json::from_str(&watcher.next_event().await.data).unwrap();
    assert_eq!(
        (left["subscriber"].as_str(), left["active"].as_bool()),
        (Some(subscriber.as_str()), Some(false))
    );
}

/// A Mercure publish on a channel-named topic reaches `/stream/{channel}`,
/// and `POST /publish/{channel}` reaches Mercure subscribers of that topic.
#[actix_web::test]
async fn interop_with_channels() {
    let app = spawn_app_with(compat).await;
    let mut channel = app.stream("/stream/orders", &[]).await;
    channel.wait_open().await;
    let mut mercure = open(&app, &subscribe_path(&["orders"], &[]), &[]).await;

    publish(
        &app,
        &[
            ("topic", "orders"),
            ("data", "from mercure"),
            ("type", "created"),
        ],
    )
    .await;
    let event = channel.next_event().await;
    assert_eq!(
        (event.event.as_str(), event.data.as_str()),
        ("created", "from mercure")
    );
    assert_eq!(mercure.next_event().await.data, "from mercure");

    app.publish("orders", r#"{"from":"channel"}"#).await;
    let original = channel.next_event().await;
    assert_eq!(original.data, r#"{"from":"channel"}"#);
    let event = mercure.next_event().await;
    assert_eq!(event.data, r#"{"from":"channel"}"#);
    // The update's id names the channel event it is.
    assert_eq!(event.id, format!("urn:sse-broker:orders/{}", original.id));

    // Private updates stay out of channels.
    publish(
        &app,
        &[("topic", "orders"), ("data", "secret"), ("private", "")],
    )
    .await;
    app.publish("orders", r#""after""#).await;
    assert_eq!(channel.next_event().await.data, r#""after""#);
}

/// In cluster mode the hub's log is in Redis: updates published on any
/// node reach Mercure subscribers on every node in one order with the same
/// ids, a client resumes on another node, a node started later has the
/// history, and the bridge to channels works across nodes.
#[actix_web::test]
async fn cluster_nodes_are_one_hub() {
    let redis = RedisServer::start();
    let a = spawn_node_with(&redis.url(), compat).await;
    let b = spawn_node_with(&redis.url(), compat).await;
    let books = subscribe_path(&["https://example.com/books/{id}"], &[]);
    let mut on_a = open(&a, &books, &[]).await;
    let mut on_b = open(&b, &books, &[]).await;

    let first = publish(
        &a,
        &[("topic", "https://example.com/books/1"), ("data", "a1")],
    )
    .await;
    let second = publish(
        &b,
        &[
            ("topic", "https://example.com/books/2"),
            ("data", "b1"),
            ("id", "urn:chosen:b1"),
        ],
    )
    .await;
    assert_eq!(second, "urn:chosen:b1");
    let want = vec![(first.clone(), "a1".to_owned()), (second, "b1".to_owned())];
    assert_eq!(next_updates(&mut on_a, 2).await, want);
    assert_eq!(next_updates(&mut on_b, 2).await, want);

    // Resuming on the other node replays what came after the id.
    let mut resumed = open(&b, &books, &[("last-event-id", &first)]).await;
    assert_eq!(resumed.headers["last-event-id"], first.as_str());
    assert_eq!(resumed.next_event().await.data, "b1");

    // A node that joins later reads the history from Redis.
    let c = spawn_node_with(&redis.url(), compat).await;
    let earliest = subscribe_path(
        &["https://example.com/books/{id}"],
        &[("lastEventID", "earliest")],
    );
    let mut late = open(&c, &earliest, &[]).await;
    assert_eq!(next_updates(&mut late, 2).await, want);

    // Channels and Mercure topics meet across nodes.
    let mut channel_on_a = a.stream("/stream/orders", &[]).await;
    channel_on_a.wait_open().await;
    let mut topic_on_b = open(&b, &subscribe_path(&["orders"], &[]), &[]).await;
    publish(&b, &[("topic", "orders"), ("data", "from mercure")]).await;
    assert_eq!(channel_on_a.next_event().await.data, "from mercure");
    assert_eq!(topic_on_b.next_event().await.data, "from mercure");
    a.publish("orders", r#""from a channel""#).await;
    assert_eq!(topic_on_b.next_event().await.data, r#""from a channel""#);
    // The log's internal channel is not listed.
    let (_, channels) = a.get_json("/channels").await;
    assert!(
        !channels.to_string().contains("~mercure"),
        "internal channel listed: {channels}"
    );
}

/// A node cut off from Redis refuses Mercure publishes with 503 (never
/// 200 for an update no other node will see), then serves again.
#[actix_web::test]
async fn cluster_publish_without_redis_is_refused() {
    let redis = RedisServer::start();
    let proxy = TcpProxy::start(redis.port);
    let a = spawn_node_with(&proxy.url(), compat).await;
    let topic = "https://example.com/outage";
    let mut sub = open(&a, &subscribe_path(&[topic], &[]), &[]).await;
    publish(&a, &[("topic", topic), ("data", "before")]).await;
    assert_eq!(sub.next_event().await.data, "before");

    proxy.cut();
    let (status, _) = post(
        &a,
        &[("topic", topic), ("data", "lost")],
        Some(&publisher()),
    )
    .await;
    assert_eq!(status, 503);

    proxy.restore();
    wait_until(|| async { a.get_json("/readyz").await.0 == 200 }).await;
    wait_until(|| async {
        post(
            &a,
            &[("topic", topic), ("data", "after")],
            Some(&publisher()),
        )
        .await
        .0 == 200
    })
    .await;
    let next = sub.next_event().await.data;
    assert_eq!(next, "after", "the refused update was never delivered");
}

/// With durable history the hub's updates outlive a restart, ids unchanged.
#[actix_web::test]
async fn durable_history_keeps_updates_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_str().unwrap();
    let env = [
        ("SSE_BROKER__HISTORY__DATA_DIR", data_dir),
        ("SSE_BROKER__MERCURE__PROTOCOL_VERSION_COMPATIBILITY", "8"),
    ];
    let client = http_client();
    let topic = "https://example.com/kept";
    let mut ids = Vec::new();
    let first = BrokerProcess::start("127.0.0.1:0", &env);
    for data in ["one", "two"] {
        let (status, id) = post_to(
            &client,
            &first.url(HUB),
            &[("topic", topic), ("data", data)],
            Some(&publisher()),
        )
        .await;
        assert_eq!(status, 200);
        ids.push(id);
    }
    first.terminate();
    let mut first = first;
    assert!(first.wait_exit().await.success());

    let second = BrokerProcess::start("127.0.0.1:0", &env);
    let earliest = subscribe_path(&[topic], &[("lastEventID", "earliest")]);
    let mut replay = stream_at(&client, &second.url(&earliest), &[]).await;
    assert_eq!(
        next_updates(&mut replay, 2).await,
        vec![
            (ids[0].clone(), "one".into()),
            (ids[1].clone(), "two".into())
        ]
    );
    let mut resumed = stream_at(
        &client,
        &second.url(&subscribe_path(&[topic], &[])),
        &[("last-event-id", &ids[0])],
    )
    .await;
    assert_eq!(resumed.headers["last-event-id"], ids[0].as_str());
    assert_eq!(resumed.next_event().await.data, "two");
}

/// The subscribe answer has no `Content-Encoding`; `HEAD` answers the same
/// headers with no body, and the same errors.
#[actix_web::test]
async fn subscribe_headers_and_head() {
    let app = spawn_app_with(compat).await;
    let sub = open(&app, &subscribe_path(&["urn:a"], &[]), &[]).await;
    assert!(
        !sub.headers.contains_key("content-encoding"),
        "{:?}",
        sub.headers
    );
    let res = app
        .client
        .head(app.url(&hub_path(&[("match", "urn:a")])))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    assert!(
        res.headers()["cache-control"]
            .to_str()
            .unwrap()
            .contains("no-store")
    );
    assert!(!res.headers().contains_key("content-encoding"));
    assert!(res.bytes().await.unwrap().is_empty());
    let res = app
        .client
        .head(app.url(&hub_path(&[("match_nothing", "urn:a")])))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
}

/// The broker's limits apply to the hub as to channels: streams per client
/// IP and subscriptions in total count both APIs, and Mercure publishes
/// share the publish rate, per token `sub` or else per IP.
#[actix_web::test]
async fn broker_limits_apply_to_the_hub() {
    let app = spawn_app_with(|s| {
        compat(s);
        s.limits.max_streams_per_ip = 2;
        s.limits.publish_rate = 1;
        s.limits.publish_burst = 1;
    })
    .await;
    let path = subscribe_path(&["urn:limited"], &[]);
    let first = open(&app, &path, &[]).await;
    let mut channel = app.stream("/stream/limited", &[]).await;
    channel.wait_open().await;
    let refused = app.client.get(app.url(&path)).send().await.unwrap();
    let (status, body) = problem(refused).await;
    assert_eq!(
        (status, body["type"].as_str()),
        (429, Some("urn:sse-broker:problem:too-many-streams"))
    );
    drop(first);
    wait_until_it_opens(&app, &path).await;

    let (status, _) = post(
        &app,
        &[("topic", "urn:limited"), ("data", "1")],
        Some(&publisher()),
    )
    .await;
    assert_eq!(status, 200);
    let res = app
        .client
        .post(app.url(HUB))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("authorization", format!("Bearer {}", publisher()))
        .body("topic=urn:limited&data=2")
        .send()
        .await
        .unwrap();
    assert!(res.headers().contains_key("retry-after"));
    let (status, _) = problem(res).await;
    assert_eq!(status, 429);
    // A publisher whose token names it has a bucket of its own (once).
    let named = token(json!({"sub": "billing-job", "mercure": {"publish": ["*"]}}));
    let named_post = || {
        post(
            &app,
            &[("topic", "urn:limited"), ("data", "3")],
            Some(&named),
        )
    };
    assert_eq!(named_post().await.0, 200);
    assert_eq!(named_post().await.0, 429);

    let total = spawn_app_with(|s| {
        compat(s);
        s.limits.max_subscribers = 1;
    })
    .await;
    let held = open(&total, &path, &[]).await;
    let res = total
        .client
        .get(total.url("/stream/other"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        problem(res).await.0,
        503,
        "a Mercure stream counts in the total"
    );
    drop(held);
    wait_until_it_opens(&total, "/stream/other").await;
}

/// Waits until `path` opens (200): the stream that held the place is gone.
async fn wait_until_it_opens(app: &TestApp, path: &str) {
    wait_until(|| async {
        let res = app.client.get(app.url(path)).send().await;
        res.is_ok_and(|res| res.status() == 200)
    })
    .await;
}

/// One hub, both generations: a Symfony-style publisher (a form POST with
/// an RFC 9068 access token) and a 0.x publisher (the `mercure` claim)
/// reach a 1.0 subscriber (`match_urlpattern`, the
/// `__Secure-mercure_access_token` cookie) and a 0.x subscriber (a `topic`
/// URI template, the token in the `authorization` query parameter), private
/// updates included; each gets its own generation's cursor header.
#[actix_web::test]
async fn both_generations_share_one_hub() {
    let app = spawn_app_with(compat).await;
    let symfony_token = access_token(
        &app,
        json!([detail(
            &["publish"],
            &[("https://example.com/books/:id", "urlpattern")]
        )]),
    );
    let legacy_publisher =
        token(json!({"mercure": {"publish": ["https://example.com/books/{id}"]}}));
    let earlier = publish(
        &app,
        &[
            ("topic", "https://example.com/books/0"),
            ("data", "earlier"),
        ],
    )
    .await;

    let modern_reader = access_token(
        &app,
        json!([detail(
            &["subscribe"],
            &[("https://example.com/books/:id", "urlpattern")]
        )]),
    );
    let mut modern = open(
        &app,
        &hub_path(&[
            ("match_urlpattern", "https://example.com/books/:id"),
            ("last_event_id", &earlier),
        ]),
        &[(
            "cookie",
            &format!("__Secure-mercure_access_token={modern_reader}"),
        )],
    )
    .await;
    assert_eq!(modern.headers["mercure-last-event-id"], earlier.as_str());
    let legacy_reader =
        token(json!({"mercure": {"subscribe": ["https://example.com/books/{id}"]}}));
    let mut legacy = open(
        &app,
        &subscribe_path(
            &["https://example.com/books/{id}"],
            &[("authorization", &legacy_reader), ("lastEventID", &earlier)],
        ),
        &[],
    )
    .await;
    assert_eq!(legacy.headers["last-event-id"], earlier.as_str());

    // Symfony's Mercure component: a form body, the token as a bearer.
    let res = app
        .client
        .post(app.url(HUB))
        .bearer_auth(&symfony_token)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("topic=https%3A%2F%2Fexample.com%2Fbooks%2F1&data=%7B%22title%22%3A%22Dune%22%7D&private=on&type=book")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "text/plain; charset=utf-8");
    let symfony_id = res.text().await.unwrap();
    let (status, legacy_id) = post(
        &app,
        &[
            ("topic", "https://example.com/books/2"),
            ("data", "from 0.x"),
        ],
        Some(&legacy_publisher),
    )
    .await;
    assert_eq!(status, 200);

    for sub in [&mut modern, &mut legacy] {
        let event = sub.next_event().await;
        assert_eq!(
            (event.id.as_str(), event.event.as_str(), event.data.as_str()),
            (symfony_id.as_str(), "book", r#"{"title":"Dune"}"#)
        );
        let event = sub.next_event().await;
        assert_eq!(
            (event.id.as_str(), event.data.as_str()),
            (legacy_id.as_str(), "from 0.x")
        );
    }
}
