//! The served OpenAPI description is the committed one, and the answers of
//! the key endpoints conform to it: documented status, media type and body.

use serde_json::Value;

use crate::{auth, helpers::*};

/// The schema of `method path` for `status`, with its media type.
fn documented<'a>(spec: &'a Value, path: &str, method: &str, status: u16) -> (&'a str, &'a Value) {
    let op = &spec["paths"][path][method];
    assert!(op.is_object(), "{method} {path} is not documented");
    let mut response = &op["responses"][status.to_string()];
    assert!(
        response.is_object(),
        "{method} {path} does not document {status}"
    );
    if let Some(target) = response["$ref"].as_str() {
        response = spec.pointer(&target[1..]).unwrap();
    }
    let (media, content) = response["content"]
        .as_object()
        .unwrap()
        .iter()
        .next()
        .unwrap();
    (media, &content["schema"])
}

/// A small JSON Schema check: $ref, allOf, oneOf, type, required,
/// properties, items, additionalProperties — what the spec uses.
fn conforms(spec: &Value, schema: &Value, value: &Value, at: &str) {
    if let Some(target) = schema["$ref"].as_str() {
        return conforms(spec, spec.pointer(&target[1..]).unwrap(), value, at);
    }
    if let Some(all) = schema["allOf"].as_array() {
        return all.iter().for_each(|s| conforms(spec, s, value, at));
    }
    if value.is_null() && schema["nullable"] == true {
        return;
    }
    let ok = match schema["type"].as_str() {
        None => true,
        Some("object") => value.is_object(),
        Some("array") => value.is_array(),
        Some("string") => value.is_string(),
        Some("integer") => value.is_u64() || value.is_i64(),
        Some("boolean") => value.is_boolean(),
        Some(other) => panic!("unexpected type {other}"),
    };
    assert!(ok, "{at}: {value} is not a {}", schema["type"]);
    if let Some(required) = schema["required"].as_array() {
        for key in required {
            assert!(
                value.get(key.as_str().unwrap()).is_some(),
                "{at}: no {key} in {value}"
            );
        }
    }
    if let (Some(props), Some(object)) = (schema["properties"].as_object(), value.as_object()) {
        for (key, sub) in object {
            match props.get(key) {
                Some(s) => conforms(spec, s, sub, &format!("{at}.{key}")),
                None => assert!(
                    schema["additionalProperties"] != false,
                    "{at}: unexpected {key}"
                ),
            }
        }
    }
    if let (Some(items), Some(list)) = (schema.get("items"), value.as_array()) {
        for (n, item) in list.iter().enumerate() {
            conforms(spec, items, item, &format!("{at}[{n}]"));
        }
    }
}

async fn check(app: &TestApp, spec: &Value, path: &str, method: &str, res: reqwest::Response) {
    let status = res.status().as_u16();
    let media = res.headers()["content-type"].to_str().unwrap().to_owned();
    let (documented_media, schema) = documented(spec, path, method, status);
    assert!(
        media.starts_with(documented_media),
        "{method} {path}: {media}"
    );
    if documented_media.ends_with("json") {
        let body: Value = res.json().await.unwrap();
        conforms(spec, schema, &body, &format!("{method} {path} {status}"));
    }
    let _ = app;
}

/// `GET /openapi.json` serves docs/openapi.json.
#[actix_web::test]
async fn served_spec_is_the_committed_one() {
    let app = spawn_app().await;
    let (status, served) = app.get_json("/openapi.json").await;
    assert_eq!(status, 200);
    let committed: Value = serde_json::from_str(include_str!("../../docs/openapi.json")).unwrap();
    assert_eq!(served, committed);
}

/// Answers of the key endpoints, success and failure, match the spec.
#[actix_web::test]
async fn key_answers_conform_to_the_spec() {
    let app = spawn_app().await;
    let (_, spec) = app.get_json("/openapi.json").await;
    let c = &app.client;
    let res = c
        .post(app.url("/publish/orders"))
        .header("content-type", "application/json")
        .body(r#"{"a":1}"#)
        .send()
        .await
        .unwrap();
    check(&app, &spec, "/publish/{channel}", "post", res).await;
    let res = c
        .post(app.url("/publish/bad%20name"))
        .body("x")
        .send()
        .await
        .unwrap();
    check(&app, &spec, "/publish/{channel}", "post", res).await;
    let res = c
        .post(app.url("/publish"))
        .header("content-type", "application/json")
        .body(r#"[{"channel":"orders","event":"e","data":"x"}]"#)
        .send()
        .await
        .unwrap();
    check(&app, &spec, "/publish", "post", res).await;
    for (body, status) in [("1", 202), ("1", 202), ("2", 422)] {
        let res = c
            .post(app.url("/publish/orders"))
            .header("content-type", "application/json")
            .header("Idempotency-Key", "once")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), status);
        check(&app, &spec, "/publish/{channel}", "post", res).await;
    }
    let res = c
        .post(app.url("/pulse"))
        .header("content-type", "application/json")
        .body(r#"{"clientId":"tab-1","channel":"orders"}"#)
        .send()
        .await
        .unwrap();
    check(&app, &spec, "/pulse", "post", res).await;
    app.wait_for_subscribers("orders", 0).await;
    for (path, url) in [
        ("/pulses", "/pulses"),
        ("/channels", "/channels"),
        ("/channels/{channel}", "/channels/orders"),
        ("/channels/{channel}", "/channels/nothing-here"),
        (
            "/channels/{channel}/history",
            "/channels/orders/history?limit=1",
        ),
        (
            "/channels/{channel}/history",
            "/channels/orders/history?after=1-1",
        ),
        (
            "/channels/{channel}/history",
            "/channels/orders/history?limit=0",
        ),
        ("/stream", "/stream"),
    ] {
        let res = c.get(app.url(url)).send().await.unwrap();
        check(&app, &spec, path, "get", res).await;
    }
    let res = c
        .delete(app.url("/killSession"))
        .body("tab-1")
        .send()
        .await
        .unwrap();
    check(&app, &spec, "/killSession", "delete", res).await;
    let res = c.delete(app.url("/killall")).send().await.unwrap();
    check(&app, &spec, "/killall", "delete", res).await;
    let res = c
        .post(app.url("/users/alice/disconnect"))
        .send()
        .await
        .unwrap();
    check(&app, &spec, "/users/{user}/disconnect", "post", res).await;
    let res = c
        .post(app.url("/users/alice/unsubscribe"))
        .header("content-type", "application/json")
        .body(r#"{"channels": ["orders"]}"#)
        .send()
        .await
        .unwrap();
    check(&app, &spec, "/users/{user}/unsubscribe", "post", res).await;
    for file in ["/", "/app.js", "/style.css", "/index.html"] {
        let res = c.get(app.url(file)).send().await.unwrap();
        check(&app, &spec, file, "get", res).await;
    }
    let stream = app.stream("/stream/orders", &[]).await;
    assert!(
        stream.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
}

/// Auth refusals and limits match the spec too.
#[actix_web::test]
async fn refusals_conform_to_the_spec() {
    let app = spawn_app_with(|s| {
        auth::with_auth(s);
        s.limits.max_streams_per_ip = 1;
    })
    .await;
    let (_, spec) = app.get_json("/openapi.json").await;
    let c = &app.client;
    let res = c
        .post(app.url("/publish/x"))
        .body("1")
        .send()
        .await
        .unwrap();
    check(&app, &spec, "/publish/{channel}", "post", res).await;
    let t = auth::token(&["orders"], &["private.a"]);
    let res = c
        .post(app.url("/publish/x"))
        .bearer_auth(&t)
        .body("1")
        .send()
        .await
        .unwrap();
    check(&app, &spec, "/publish/{channel}", "post", res).await;
    let res = c.get(app.url("/stream/private.b")).send().await.unwrap();
    check(&app, &spec, "/stream/{channel}", "get", res).await;
    let res = c
        .post(app.url("/users/alice/disconnect"))
        .bearer_auth(&t)
        .send()
        .await
        .unwrap();
    check(&app, &spec, "/users/{user}/disconnect", "post", res).await;
    let res = c
        .get(app.url(&format!("/stream/private.b?token={t}")))
        .send()
        .await
        .unwrap();
    check(&app, &spec, "/stream/{channel}", "get", res).await;
    let mut open = app.stream("/stream/news", &[]).await;
    open.wait_open().await;
    let res = c.get(app.url("/stream/news")).send().await.unwrap();
    check(&app, &spec, "/stream/{channel}", "get", res).await;
}
