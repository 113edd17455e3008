//! Bad input: every refusal is a 4xx with an application/problem+json body
//! that says what was wrong.

use crate::helpers::*;

/// Invalid JSON is a 400 that says where it failed.
#[actix_web::test]
async fn invalid_json_is_400_with_position() {
    let app = spawn_app().await;
    let res = app
        .post("/publish/test", "application/json", "{\"a\": 1,\n \"b\": }")
        .await;
    let (status, body) = problem(res).await;
    assert_eq!(status, 400);
    assert!(
        body["detail"].as_str().unwrap().contains("line 2"),
        "{body}"
    );
}

/// A body over the limit is a 413.
#[actix_web::test]
async fn oversized_body_is_413() {
    let app = spawn_app_with(|s| s.server.max_body_bytes = 1024).await;
    let res = app
        .post("/publish/test", "text/plain", "x".repeat(2048))
        .await;
    assert_eq!(problem(res).await.0, 413);
}

/// A content type the broker does not take is a 415 that says what to send.
#[actix_web::test]
async fn unsupported_content_type_is_415() {
    let app = spawn_app().await;
    let res = app
        .post("/publish/test", "application/x-www-form-urlencoded", "a=1")
        .await;
    let (status, body) = problem(res).await;
    assert_eq!(status, 415);
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("application/json")
    );
}

/// Bad channel names are refused on every endpoint that takes one.
#[actix_web::test]
async fn invalid_channel_names_are_400() {
    let app = spawn_app().await;
    let long = "x".repeat(129);
    for path in [
        "/stream/a%20b",
        "/stream/a%0Ab",
        &format!("/stream/{long}"),
        "/stream?channel=",
        "/stream",
    ] {
        let res = app.client.get(app.url(path)).send().await.unwrap();
        let (status, body) = problem(res).await;
        assert_eq!(status, 400, "{path}");
        assert_eq!(
            body["type"], "urn:sse-broker:problem:invalid-channel",
            "{path}"
        );
    }
    let res = app
        .client
        .post(app.url("/publish/bad,name"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(problem(res).await.0, 400);
}

/// Bad event types, including the reserved broker. prefix, are refused.
#[actix_web::test]
async fn invalid_event_types_are_400() {
    let app = spawn_app().await;
    for event in ["broker.gap", "a%0Ab", "a%0Db", "a%00b", "with%20space"] {
        let res = app
            .client
            .post(app.url(&format!("/publish/test?event={event}")))
            .body("x")
            .send()
            .await
            .unwrap();
        assert_eq!(problem(res).await.0, 400, "{event}");
    }
}

/// An event type with CR, LF or NUL inside a batch is refused too.
#[actix_web::test]
async fn batch_event_types_are_validated() {
    let app = spawn_app().await;
    for event in ["a\\nb", "a\\rb", "a\\u0000b"] {
        let body = format!(r#"[{{"channel":"ok","event":"{event}","data":1}}]"#);
        let res = app.post("/publish", "application/json", body).await;
        let (status, problem_body) = problem(res).await;
        assert_eq!(status, 400, "{event}");
        assert_eq!(
            problem_body["type"],
            "urn:sse-broker:problem:invalid-event-type"
        );
    }
}

/// A batch with one bad item publishes nothing and names the item.
#[actix_web::test]
async fn bad_batch_item_is_named() {
    let app = spawn_app().await;
    let body = r#"[{"channel":"ok","data":1},{"channel":"no way","data":2}]"#;
    let res = app.post("/publish", "application/json", body).await;
    let (status, problem_body) = problem(res).await;
    assert_eq!(status, 400);
    assert!(problem_body["detail"].as_str().unwrap().contains("item 1"));
    assert_eq!(app.get_json("/channels/ok").await.0, 404);
}

/// Unknown routes and wrong methods are problems too.
#[actix_web::test]
async fn unknown_route_and_wrong_method() {
    let app = spawn_app().await;
    let res = app
        .client
        .get(app.url("/no/such/thing"))
        .send()
        .await
        .unwrap();
    assert_eq!(problem(res).await.0, 404);
    let res = app
        .client
        .put(app.url("/publish/test"))
        .send()
        .await
        .unwrap();
    assert_eq!(problem(res).await.0, 405);
}

/// A Last-Event-ID with control characters is refused.
#[actix_web::test]
async fn bad_last_event_id_is_400() {
    let app = spawn_app().await;
    let res = app
        .client
        .get(app.url("/stream/test?lastEventId=a%00b"))
        .send()
        .await
        .unwrap();
    assert_eq!(problem(res).await.0, 400);
}

/// Past the channel limit a publish is a 503 with Retry-After, not a crash.
#[actix_web::test]
async fn channel_limit_is_503_with_retry_after() {
    let app = spawn_app_with(|s| s.broker.max_channels = 2).await;
    app.publish("one", "1").await;
    app.publish("two", "2").await;
    let res = app
        .client
        .post(app.url("/publish/three"))
        .body("3")
        .send()
        .await
        .unwrap();
    assert!(res.headers().contains_key("retry-after"));
    assert_eq!(problem(res).await.0, 503);
}

/// Static files never leave public/.
#[actix_web::test]
async fn static_files_stay_inside_public() {
    let app = spawn_app().await;
    for path in [
        "/../Cargo.toml",
        "/%2e%2e/Cargo.toml",
        "/..%2fCargo.toml",
        "//etc/passwd",
        "/%2fetc%2fpasswd",
        "/%2e%2e%2fCargo.toml",
        "/.%2e/Cargo.toml",
        "/%252e%252e/Cargo.toml",
        "/..%5cCargo.toml",
        "/%5c..%5cCargo.toml",
        "/index.html/../../Cargo.toml",
        "/%2e%2e/%2e%2e/etc/passwd",
        "/etc/passwd",
        "/%00index.html",
    ] {
        let res = app.client.get(app.url(path)).send().await.unwrap();
        assert!(
            res.status().is_client_error(),
            "{path} answered {}",
            res.status()
        );
    }
    let res = app.client.get(app.url("/")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
}

/// JSON nested deeper than `server.max_json_depth` is a 400 problem on a
/// publish, in a batch item and in a Mercure update's data (it used to be
/// accepted and fanned out to subscribers whose parsers then failed), and
/// nothing of it reaches a subscriber.
#[actix_web::test]
async fn deeply_nested_json_is_refused() {
    let app = spawn_app().await;
    let mut sse = app.stream("/stream/nested", &[]).await;
    sse.wait_open().await;
    let bomb = format!("{{\"a\":{}{}}}", "[".repeat(100_000), "]".repeat(100_000));
    let res = app
        .post("/publish/nested", "application/json", bomb.clone())
        .await;
    let (status, body) = problem(res).await;
    assert_eq!(status, 400);
    assert!(
        body["detail"].as_str().unwrap().contains("deeper than 128"),
        "{body}"
    );
    let batch = format!("[{{\"channel\":\"nested\",\"data\":{bomb}}}]");
    let (status, _) = problem(app.post("/publish", "application/json", batch).await).await;
    assert_eq!(status, 400);
    let deep_item = format!(
        "[{{\"channel\":\"nested\",\"data\":{}{}}}]",
        "[".repeat(129),
        "]".repeat(129)
    );
    let (status, body) = problem(app.post("/publish", "application/json", deep_item).await).await;
    assert_eq!(status, 400);
    assert!(
        body["detail"].as_str().unwrap().contains("nested deeper"),
        "{body}"
    );
    // At the limit it is fine, as a batch item too.
    let at_limit = format!("{}{}", "[".repeat(128), "]".repeat(128));
    app.publish("nested", &at_limit).await;
    let batch = format!("[{{\"channel\":\"nested\",\"data\":{at_limit}}}]");
    assert_eq!(
        app.post("/publish", "application/json", batch)
            .await
            .status(),
        202
    );
    // Mercure: the same limit on an update's data that is JSON.
    let token = crate::mercure_support::all_access(&app);
    let form = format!(
        "topic=nested&data={}{}",
        "%5B".repeat(200),
        "%5D".repeat(200)
    );
    let res = app
        .client
        .post(app.url("/.well-known/mercure"))
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    // The subscriber got the two events at the limit and nothing else.
    let events = sse.next_messages(2).await;
    assert!(events.iter().all(|e| e.data == at_limit));
}
