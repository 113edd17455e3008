//! The Mercure 1.0 hub (the default mode): one scenario per requirement of
//! the specification, refusals included.

use jsonwebtoken::{Algorithm, Header};
use serde_json::{Value, json};
use sse_broker::config::MERCURE_DEVELOPMENT_KEY;

use crate::{
    helpers::{TestApp, spawn_app, spawn_app_with},
    mercure_support::{
        DETAIL, FAR, HUB, ISSUER, access_claims, access_token, all_access, at_jwt, challenge,
        detail, encode_form, get, hub_path, legacy_token, next_updates, open, post_form,
        publish_with, sign,
    },
};

/// `match` and `match_exact` select exact topics (a template is just text),
/// `match_urlpattern` URL patterns, absolute or relative to the hub.
#[actix_web::test]
async fn match_parameters_select_topics() {
    let app = spawn_app().await;
    let publisher = all_access(&app);
    let mut exact = open(
        &app,
        &hub_path(&[("match", "https://example.com/books/{id}")]),
        &[],
    )
    .await;
    let mut explicit = open(&app, &hub_path(&[("match_exact", "urn:a")]), &[]).await;
    let mut pattern = open(
        &app,
        &hub_path(&[("match_urlpattern", "https://example.com/books/:id")]),
        &[],
    )
    .await;
    let mut relative = open(
        &app,
        &hub_path(&[("match_urlpattern", "/reviews/:id")]),
        &[],
    )
    .await;
    let mut everything = open(&app, &hub_path(&[("match", "*")]), &[]).await;

    publish_with(
        &app,
        &[("topic", "https://example.com/books/1"), ("data", "book")],
        &publisher,
    )
    .await;
    publish_with(
        &app,
        &[
            ("topic", "https://example.com/books/{id}"),
            ("data", "literal"),
        ],
        &publisher,
    )
    .await;
    publish_with(&app, &[("topic", "urn:a"), ("data", "a")], &publisher).await;
    publish_with(
        &app,
        &[("topic", "/reviews/9"), ("data", "review")],
        &publisher,
    )
    .await;

    assert_eq!(exact.next_event().await.data, "literal");
    assert_eq!(explicit.next_event().await.data, "a");
    assert_eq!(pattern.next_event().await.data, "book");
    assert_eq!(relative.next_event().await.data, "review");
    let all: Vec<String> = next_updates(&mut everything, 4)
        .await
        .into_iter()
        .map(|(_, d)| d)
        .collect();
    assert_eq!(all, ["book", "literal", "a", "review"]);
}

/// Unknown names in the reserved `match` namespace (any case), the 0.x
/// `topic`, control or format characters, a pattern that does not parse,
/// too many matchers or none are 400s.
#[actix_web::test]
async fn bad_matchers_are_refused() {
    let app = spawn_app().await;
    let too_many: Vec<(&str, &str)> = vec![("match", "a"); 101];
    for query in [
        hub_path(&[("matchURLPattern", "/a/:id")]),
        hub_path(&[("match_URLPattern", "/a/:id")]),
        hub_path(&[("Match", "a")]),
        hub_path(&[("match_regexp", "a.*")]),
        hub_path(&[("topic", "a")]),
        hub_path(&[("match", "a\u{1}b")]),
        hub_path(&[("match", "a\u{202e}b")]),
        hub_path(&[("match_urlpattern", "https://example.com/(")]),
        hub_path(&too_many),
        hub_path(&[("last_event_id", "x")]),
        HUB.to_owned(),
    ] {
        let res = get(&app, &query, &[]).await;
        assert_eq!(res.status(), 400, "{query}");
    }
}

/// `QUERY` with a form body subscribes like `GET`; the body's pairs join
/// the query string's.
#[actix_web::test]
async fn query_method_takes_matchers_in_the_body() {
    let app = spawn_app().await;
    let publisher = all_access(&app);
    let first = publish_with(&app, &[("topic", "urn:q1"), ("data", "before")], &publisher).await;
    publish_with(&app, &[("topic", "urn:q2"), ("data", "after")], &publisher).await;
    let query = reqwest::Method::from_bytes(b"QUERY").unwrap();
    let res = app
        .client
        .request(query.clone(), app.url(&hub_path(&[("match", "urn:q1")])))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(encode_form(&[
            ("match", "urn:q2"),
            ("last_event_id", &first),
        ]))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["mercure-last-event-id"], first.as_str());
    let mut stream = crate::helpers::SseClient::new(res);
    assert_eq!(stream.next_event().await.data, "after");
    let not_a_form = app
        .client
        .request(query, app.url(HUB))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(not_a_form.status(), 415);
}

/// A token of the trusted issuer, for this hub, with `typ: at+jwt` and an
/// `exp`, is accepted; every deviation is `401 invalid_token`.
#[actix_web::test]
async fn access_tokens_follow_rfc_9068() {
    let app = spawn_app().await;
    let grants = json!([detail(&["publish"], &[("*", "exact")])]);
    let fields = [("topic", "urn:t"), ("data", "x")];
    let good = access_claims(&app, grants.clone());
    let with = |patch: Value| {
        let mut claims = good.clone();
        for (key, value) in patch.as_object().unwrap() {
            match value {
                Value::Null => drop(claims.as_object_mut().unwrap().remove(key)),
                value => claims[key] = value.clone(),
            }
        }
        claims
    };
    let dev = MERCURE_DEVELOPMENT_KEY;
    let hs256 = || at_jwt(Algorithm::HS256);
    let accepted = sign(hs256(), &good, dev);
    assert_eq!(
        post_form(&app, &fields, Some(&accepted)).await.status(),
        200
    );
    let aud_list = sign(
        hs256(),
        &with(json!({"aud": ["https://elsewhere", app.url(HUB)]})),
        dev,
    );
    assert_eq!(
        post_form(&app, &fields, Some(&aud_list)).await.status(),
        200
    );
    let refused = [
        (
            "wrong aud",
            sign(
                hs256(),
                &with(json!({"aud": "https://other.example/.well-known/mercure"})),
                dev,
            ),
        ),
        ("no aud", sign(hs256(), &with(json!({"aud": null})), dev)),
        (
            "unknown iss",
            sign(hs256(), &with(json!({"iss": "https://evil.example"})), dev),
        ),
        ("no iss", sign(hs256(), &with(json!({"iss": null})), dev)),
        ("no exp", sign(hs256(), &with(json!({"exp": null})), dev)),
        ("expired", sign(hs256(), &with(json!({"exp": 1000})), dev)),
        (
            "not yet valid",
            sign(hs256(), &with(json!({"nbf": FAR - 10})), dev),
        ),
        ("no typ", sign(Header::default(), &good, dev)),
        (
            "an ID token",
            sign(
                Header {
                    typ: Some("JWT".into()),
                    ..Header::default()
                },
                &good,
                dev,
            ),
        ),
        (
            "alg not allowed",
            sign(at_jwt(Algorithm::HS512), &good, dev),
        ),
        (
            "wrong key",
            sign(hs256(), &good, "not-the-development-key-at-all"),
        ),
        (
            "bad detail",
            sign(
                hs256(),
                &with(json!({"authorization_details":
            [{"type": DETAIL, "actions": ["publish"], "topics": ["*"]}]})),
                dev,
            ),
        ),
    ];
    for (why, token) in refused {
        let res = post_form(&app, &fields, Some(&token)).await;
        assert_eq!(res.status(), 401, "{why}");
        assert!(
            challenge(&res).starts_with("Bearer error=\"invalid_token\""),
            "{why}"
        );
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["detail"], "the access token is invalid", "{why}");
    }
}

/// A token signed with the key of another trusted issuer, naming this one,
/// is refused: keys are bound to their issuer.
#[actix_web::test]
async fn keys_are_bound_to_their_issuer() {
    let other_key = "the-second-issuer-secret-of-enough-length";
    let app = spawn_app_with(|s| {
        s.mercure.issuers.push(sse_broker::config::IssuerSettings {
            id: "https://second.example".into(),
            authorization_server: true,
            publisher: Some(sse_broker::config::VerifierSettings {
                jwt: other_key.into(),
                ..Default::default()
            }),
            subscriber: None,
        })
    })
    .await;
    let fields = [("topic", "urn:t"), ("data", "x")];
    let grants = json!([detail(&["publish"], &[("*", "exact")])]);
    let mut claims = access_claims(&app, grants);
    let forged = sign(at_jwt(Algorithm::HS256), &claims, other_key);
    assert_eq!(post_form(&app, &fields, Some(&forged)).await.status(), 401);
    claims["iss"] = json!("https://second.example");
    let own = sign(at_jwt(Algorithm::HS256), &claims, other_key);
    assert_eq!(post_form(&app, &fields, Some(&own)).await.status(), 200);
    let with_dev_key = sign(at_jwt(Algorithm::HS256), &claims, MERCURE_DEVELOPMENT_KEY);
    assert_eq!(
        post_form(&app, &fields, Some(&with_dev_key)).await.status(),
        401
    );
}

/// No token: `401` with a bare challenge naming the metadata; a token
/// without `publish` on every topic: `403 insufficient_scope`; the 0.x
/// `mercure` claim grants nothing in 1.0 mode.
#[actix_web::test]
async fn publish_authorization() {
    let app = spawn_app().await;
    let fields = [("topic", "https://example.com/books/1"), ("data", "x")];
    let res = post_form(&app, &fields, None).await;
    assert_eq!(res.status(), 401);
    assert_eq!(
        challenge(&res),
        format!(
            "Bearer resource_metadata=\"{}\"",
            app.url("/.well-known/oauth-protected-resource/.well-known/mercure")
        )
    );
    let books = access_token(
        &app,
        json!([detail(
            &["publish"],
            &[("https://example.com/books/:id", "urlpattern")]
        )]),
    );
    assert_eq!(post_form(&app, &fields, Some(&books)).await.status(), 200);
    let with_other = [
        ("topic", "https://example.com/books/1"),
        ("topic", "urn:other"),
    ];
    let res = post_form(&app, &with_other, Some(&books)).await;
    assert_eq!(res.status(), 403);
    assert!(challenge(&res).starts_with("Bearer error=\"insufficient_scope\""));
    let subscriber_only = access_token(&app, json!([detail(&["subscribe"], &[("*", "exact")])]));
    assert_eq!(
        post_form(&app, &fields, Some(&subscriber_only))
            .await
            .status(),
        403
    );
    let legacy = sign(
        at_jwt(Algorithm::HS256),
        &json!({"iss": ISSUER, "aud": app.url(HUB), "exp": FAR, "mercure": {"publish": ["*"]}}),
        MERCURE_DEVELOPMENT_KEY,
    );
    assert_eq!(post_form(&app, &fields, Some(&legacy)).await.status(), 403);
    let zero_x = legacy_token(json!({"publish": ["*"]}));
    assert_eq!(post_form(&app, &fields, Some(&zero_x)).await.status(), 401);
}

/// Tokens in the URL are refused (`400 invalid_request`), as is a
/// malformed `Authorization` header.
#[actix_web::test]
async fn no_token_in_the_url() {
    let app = spawn_app().await;
    let token = all_access(&app);
    for name in ["authorization", "access_token"] {
        let res = get(&app, &hub_path(&[("match", "a"), (name, &token)]), &[]).await;
        assert_eq!(res.status(), 400, "{name}");
        assert!(challenge(&res).starts_with("Bearer error=\"invalid_request\""));
    }
    let res = get(
        &app,
        &hub_path(&[("match", "a")]),
        &[("authorization", &format!("Token {token}"))],
    )
    .await;
    assert_eq!(res.status(), 400);
}

/// Private updates reach subscribers whose token grants `subscribe` on one
/// of their topics (an alternate topic is enough), by header or by the
/// `__Secure-mercure_access_token` cookie; the header wins over a cookie.
#[actix_web::test]
async fn private_updates_need_a_subscribe_grant() {
    let app = spawn_app().await;
    let publisher = all_access(&app);
    let mine = access_token(
        &app,
        json!([detail(
            &["subscribe"],
            &[("https://example.com/users/42/*", "urlpattern")]
        )]),
    );
    let other = access_token(
        &app,
        json!([detail(&["subscribe"], &[("urn:nothing", "exact")])]),
    );
    let path = hub_path(&[("match_urlpattern", "https://example.com/books/:id")]);
    let mut anonymous = open(&app, &path, &[]).await;
    let mut by_header = open(&app, &path, &[("authorization", &format!("Bearer {mine}"))]).await;
    let cookie = format!("__Secure-mercure_access_token={mine}");
    let mut by_cookie = open(&app, &path, &[("cookie", &cookie)]).await;
    let mut header_wins = open(
        &app,
        &path,
        &[
            ("authorization", &format!("Bearer {other}")),
            ("cookie", &cookie),
        ],
    )
    .await;
    let legacy_cookie = format!("mercureAuthorization={mine}");
    let mut legacy = open(&app, &path, &[("cookie", &legacy_cookie)]).await;

    publish_with(
        &app,
        &[
            ("topic", "https://example.com/books/1"),
            ("topic", "https://example.com/users/42/books/1"),
            ("data", "secret"),
            ("private", "on"),
        ],
        &publisher,
    )
    .await;
    publish_with(
        &app,
        &[("topic", "https://example.com/books/2"), ("data", "public")],
        &publisher,
    )
    .await;
    for sub in [&mut by_header, &mut by_cookie] {
        assert_eq!(sub.next_event().await.data, "secret");
        assert_eq!(sub.next_event().await.data, "public");
    }
    for sub in [&mut anonymous, &mut header_wins, &mut legacy] {
        assert_eq!(sub.next_event().await.data, "public");
    }
}

/// A cookie publish (a browser form) is accepted from the hub's own origin
/// or a `publish_origins` one, refused (`400 invalid_request`) from another
/// or with neither `Origin` nor `Referer`.
#[actix_web::test]
async fn cookie_publishers_are_protected_from_csrf() {
    let app =
        spawn_app_with(|s| s.mercure.publish_origins = vec!["https://app.example".into()]).await;
    let cookie = format!("__Secure-mercure_access_token={}", all_access(&app));
    let publish = |headers: Vec<(&'static str, String)>| {
        let mut req = app
            .client
            .post(app.url(HUB))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("cookie", cookie.clone())
            .body("topic=urn%3Acsrf&data=x");
        for (name, value) in headers {
            req = req.header(name, value);
        }
        async move { req.send().await.unwrap() }
    };
    assert_eq!(
        publish(vec![("origin", app.address.clone())])
            .await
            .status(),
        200
    );
    assert_eq!(
        publish(vec![("referer", app.url("/page"))]).await.status(),
        200
    );
    assert_eq!(
        publish(vec![("origin", "https://app.example".into())])
            .await
            .status(),
        200
    );
    let evil = publish(vec![("origin", "https://evil.example".into())]).await;
    assert_eq!(evil.status(), 400);
    assert!(challenge(&evil).starts_with("Bearer error=\"invalid_request\""));
    assert_eq!(publish(vec![]).await.status(), 400);
}

/// Reconnection: `last_event_id` (the header wins) replays what came after
/// it, re-checking the current token; `Mercure-Last-Event-ID` answers the
/// cursor, or `earliest` for `earliest`, an unknown id or an empty one.
#[actix_web::test]
async fn reconnection_with_last_event_id() {
    let app = spawn_app().await;
    let publisher = all_access(&app);
    let topic = "https://example.com/feed";
    let first = publish_with(&app, &[("topic", topic), ("data", "1")], &publisher).await;
    publish_with(
        &app,
        &[("topic", topic), ("data", "private"), ("private", "on")],
        &publisher,
    )
    .await;
    publish_with(&app, &[("topic", topic), ("data", "2")], &publisher).await;
    let path = hub_path(&[("match", topic)]);

    let mut by_query = open(
        &app,
        &hub_path(&[("match", topic), ("last_event_id", &first)]),
        &[],
    )
    .await;
    assert_eq!(by_query.headers["mercure-last-event-id"], first.as_str());
    assert!(!by_query.headers.contains_key("last-event-id"));
    // Anonymous: the private update is not replayed.
    assert_eq!(by_query.next_event().await.data, "2");

    let reader = access_token(&app, json!([detail(&["subscribe"], &[(topic, "exact")])]));
    let mut header_wins = open(
        &app,
        &hub_path(&[("match", topic), ("last_event_id", "urn:uuid:unknown")]),
        &[
            ("last-event-id", &first),
            ("authorization", &format!("Bearer {reader}")),
        ],
    )
    .await;
    assert_eq!(header_wins.headers["mercure-last-event-id"], first.as_str());
    assert_eq!(header_wins.next_event().await.data, "private");
    assert_eq!(header_wins.next_event().await.data, "2");

    let mut earliest = open(
        &app,
        &hub_path(&[("match", topic), ("last_event_id", "earliest")]),
        &[],
    )
    .await;
    assert_eq!(earliest.headers["mercure-last-event-id"], "earliest");
    assert_eq!(earliest.next_event().await.data, "1");

    for cursor in ["urn:uuid:unknown", ""] {
        let mut unknown = open(
            &app,
            &hub_path(&[("match", topic), ("last_event_id", cursor)]),
            &[],
        )
        .await;
        assert_eq!(
            unknown.headers["mercure-last-event-id"], "earliest",
            "{cursor:?}"
        );
        publish_with(&app, &[("topic", topic), ("data", "live")], &publisher).await;
        assert_eq!(unknown.next_event().await.data, "live");
    }
    let live = open(&app, &path, &[]).await;
    assert!(!live.headers.contains_key("mercure-last-event-id"));
}

/// Publish: `200 text/plain; charset=utf-8` with the id; several topics
/// delivered once; multi-line data, type and retry as sent; unknown fields
/// ignored; every field rule that no token lifts is a 400; too many topics
/// a 413.
#[actix_web::test]
async fn publish_rules() {
    let app = spawn_app().await;
    let token = all_access(&app);
    let mut sub = open(
        &app,
        &hub_path(&[("match", "urn:a"), ("match", "urn:b")]),
        &[],
    )
    .await;
    let id = publish_with(
        &app,
        &[
            ("topic", "urn:a"),
            ("topic", "urn:b"),
            ("data", "line 1\nline 2\r\nline 3"),
            ("id", "my-id-1"),
            ("type", "book.updated"),
            ("retry", "4321"),
            ("future_field", "ignored"),
        ],
        &token,
    )
    .await;
    assert_eq!(id, "my-id-1");
    let generated = publish_with(&app, &[("topic", "urn:b"), ("data", "next")], &token).await;
    assert!(generated.starts_with("urn:uuid:"), "{generated}");
    let event = sub.next_event().await;
    assert_eq!(
        (event.id.as_str(), event.event.as_str()),
        ("my-id-1", "book.updated")
    );
    assert_eq!(event.data, "line 1\nline 2\nline 3");
    assert_eq!(sub.retry, Some(4321));
    assert_eq!(sub.next_event().await.id, generated);

    let hub = app.url(HUB);
    let absolute = format!("{hub}/subscriptions/urlpattern/x/y");
    for fields in [
        vec![("data", "no topic")],
        vec![("topic", "/.well-known/mercure/subscriptions/exact/x/y")],
        vec![("topic", absolute.as_str())],
        vec![("topic", "/.well-known/%6Dercure/x")],
        vec![("topic", "/a/../.well-known/mercure")],
        vec![("topic", "ok"), ("topic", "*")],
        vec![("topic", "a"), ("id", "#fragment")],
        vec![("topic", "a"), ("id", "earliest")],
        vec![("topic", "a"), ("id", "a\nb")],
        vec![("topic", "a"), ("type", "mercure")],
        vec![("topic", "a"), ("type", "a\u{200b}")],
        vec![("topic", "a"), ("retry", "soon")],
        vec![("topic", "a"), ("retry", "+5")],
        vec![("topic", "a\u{7f}")],
    ] {
        assert_eq!(
            post_form(&app, &fields, Some(&token)).await.status(),
            400,
            "{fields:?}"
        );
    }
    let many: Vec<(&str, &str)> = vec![("topic", "t"); 1001];
    assert_eq!(post_form(&app, &many, Some(&token)).await.status(), 413);
}

/// The protected resource metadata (RFC 9728): derived from the request,
/// or the pinned resource identifier; issuers marked as authorization
/// servers are listed.
#[actix_web::test]
async fn protected_resource_metadata() {
    let path = "/.well-known/oauth-protected-resource/.well-known/mercure";
    let app = spawn_app().await;
    let res = get(&app, path, &[]).await;
    assert_eq!(res.status(), 200);
    let metadata: Value = res.json().await.unwrap();
    assert_eq!(metadata["resource"], app.url(HUB));
    assert_eq!(metadata["bearer_methods_supported"], json!(["header"]));
    assert_eq!(
        metadata["authorization_details_types_supported"],
        json!([DETAIL])
    );
    assert_eq!(metadata["mercure_cookie"], "__Secure-mercure_access_token");
    assert!(metadata.get("authorization_servers").is_none());
    assert!(metadata.get("mercure_subscriptions").is_none());

    let pinned = spawn_app_with(|s| {
        s.mercure.resource_identifier = "https://hub.example.com/.well-known/mercure".into();
        s.mercure.subscriptions = true;
        s.mercure.issuers[0].authorization_server = true;
    })
    .await;
    let metadata: Value = get(&pinned, path, &[]).await.json().await.unwrap();
    assert_eq!(
        metadata["resource"],
        "https://hub.example.com/.well-known/mercure"
    );
    assert_eq!(metadata["authorization_servers"], json!([ISSUER]));
    assert_eq!(metadata["mercure_subscriptions"], true);
    // The pinned identifier is the audience; the derived one is not.
    let fields = [("topic", "urn:t")];
    let derived = all_access(&pinned);
    assert_eq!(
        post_form(&pinned, &fields, Some(&derived)).await.status(),
        401
    );
    let mut claims = access_claims(&pinned, json!([detail(&["publish"], &[("*", "exact")])]));
    claims["aud"] = json!("https://hub.example.com/.well-known/mercure");
    let token = sign(at_jwt(Algorithm::HS256), &claims, MERCURE_DEVELOPMENT_KEY);
    assert_eq!(
        post_form(&pinned, &fields, Some(&token)).await.status(),
        200
    );
    let res = post_form(&pinned, &fields, None).await;
    assert!(challenge(&res).contains(
        "resource_metadata=\"https://hub.example.com/.well-known/oauth-protected-resource/.well-known/mercure\""
    ));
}

/// Subscription events: private updates with `event: mercure` on
/// `…/subscriptions/{match_type}/{match}/{subscriber}`, plain JSON; the API
/// lists them (`application/json`, cursor in the `Link` header, `ETag`),
/// for tokens granting `subscribe` on the path.
#[actix_web::test]
async fn subscription_events_and_api() {
    let app = spawn_app_with(|s| s.mercure.subscriptions = true).await;
    let watch = "/.well-known/mercure/subscriptions/:type/:match/:subscriber";
    let watcher_token = access_token(
        &app,
        json!([{"type": DETAIL, "actions": ["subscribe"],
            "topics": [{"match": watch, "match_type": "urlpattern"},
                       {"match": "/.well-known/mercure/subscriptions/*", "match_type": "urlpattern"},
                       {"match": "/.well-known/mercure/subscriptions"}],
            "payload": {"role": "watcher"}}]),
    );
    let auth = format!("Bearer {watcher_token}");
    let mut watcher = open(
        &app,
        &hub_path(&[("match_urlpattern", watch)]),
        &[("authorization", &auth)],
    )
    .await;

    let matcher = "https://example.com/books/:id";
    let member_token = access_token(
        &app,
        json!([{"type": DETAIL, "actions": ["subscribe"], "topics": [{"match": "*"}],
            "payload": {"name": "alice"}}]),
    );
    let member = open(
        &app,
        &hub_path(&[("match_urlpattern", matcher)]),
        &[("authorization", &format!("Bearer {member_token}"))],
    )
    .await;
    let event = watcher.next_event().await;
    assert_eq!(event.event, "mercure");
    let joined: Value = serde_json::from_str(&event.data).unwrap();
    let subscriber = joined["subscriber"].as_str().unwrap().to_owned();
    let id = format!(
        "/.well-known/mercure/subscriptions/urlpattern/https%3A%2F%2Fexample.com%2Fbooks%2F%3Aid/{}",
        subscriber.replace(':', "%3A")
    );
    assert_eq!(
        joined,
        json!({"id": id, "type": "subscription", "subscriber": subscriber,
            "match": matcher, "match_type": "urlpattern", "active": true,
            "payload": {"name": "alice"}})
    );

    let res = get(
        &app,
        "/.well-known/mercure/subscriptions",
        &[("authorization", &auth)],
    )
    .await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "application/json");
    let link = res.headers()["link"].to_str().unwrap().to_owned();
    assert!(
        link.starts_with("</.well-known/mercure>; rel=\"mercure\"; last-event-id=\"urn:uuid:"),
        "{link}"
    );
    assert!(
        link.ends_with("; type=\"mercure\"; content-type=\"application/json\""),
        "{link}"
    );
    let etag = res.headers()["etag"].to_str().unwrap().to_owned();
    let list: Value = res.json().await.unwrap();
    assert_eq!(list["type"], "subscriptions");
    assert_eq!(list["id"], "/.well-known/mercure/subscriptions");
    assert!(list.get("lastEventID").is_none());
    assert!(
        list["subscriptions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["id"] == id.as_str())
    );
    let unchanged = get(
        &app,
        "/.well-known/mercure/subscriptions",
        &[("authorization", &auth), ("if-none-match", &etag)],
    )
    .await;
    assert_eq!(unchanged.status(), 304);

    let one: Value = get(&app, &id, &[("authorization", &auth)])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(one, joined);
    let by_matcher =
        "/.well-known/mercure/subscriptions/urlpattern/https%3A%2F%2Fexample.com%2Fbooks%2F%3Aid";
    let collection: Value = get(&app, by_matcher, &[("authorization", &auth)])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(collection["subscriptions"].as_array().unwrap().len(), 1);
    let missing = format!("{by_matcher}/urn%3Auuid%3Anobody");
    assert_eq!(
        get(&app, &missing, &[("authorization", &auth)])
            .await
            .status(),
        404
    );
    let bad_type = "/.well-known/mercure/subscriptions/URLPattern/x";
    assert_eq!(
        get(&app, bad_type, &[("authorization", &auth)])
            .await
            .status(),
        400
    );
    assert_eq!(
        get(&app, "/.well-known/mercure/subscriptions", &[])
            .await
            .status(),
        401
    );
    let outsider = access_token(&app, json!([detail(&["subscribe"], &[("urn:x", "exact")])]));
    let res = get(
        &app,
        &id,
        &[("authorization", &format!("Bearer {outsider}"))],
    )
    .await;
    assert_eq!(res.status(), 403);

    drop(member);
    let left = watcher.next_event().await;
    let left: Value = serde_json::from_str(&left.data).unwrap();
    assert_eq!(
        (left["id"].as_str(), left["active"].as_bool()),
        (Some(id.as_str()), Some(false))
    );
}

/// A subscriber's stream ends when its token expires.
#[actix_web::test]
async fn stream_ends_at_token_expiry() {
    let app = spawn_app().await;
    let soon = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 2;
    let mut claims = access_claims(&app, json!([detail(&["subscribe"], &[("*", "exact")])]));
    claims["exp"] = json!(soon);
    let token = sign(at_jwt(Algorithm::HS256), &claims, MERCURE_DEVELOPMENT_KEY);
    let mut sub = open(
        &app,
        &hub_path(&[("match", "urn:x")]),
        &[("authorization", &format!("Bearer {token}"))],
    )
    .await;
    assert!(sub.until_end().await.is_empty());
}

/// Without anonymous subscribers, a subscribe without a token is a `401`
/// with a bare challenge.
#[actix_web::test]
async fn anonymous_subscribers_can_be_refused() {
    let app: TestApp = spawn_app_with(|s| s.mercure.anonymous = false).await;
    let res = get(&app, &hub_path(&[("match", "a")]), &[]).await;
    assert_eq!(res.status(), 401);
    assert!(challenge(&res).starts_with("Bearer resource_metadata="));
    let token = all_access(&app);
    let res = get(
        &app,
        &hub_path(&[("match", "a")]),
        &[("authorization", &format!("Bearer {token}"))],
    )
    .await;
    assert_eq!(res.status(), 200);
}
