//! What Mercure selectors cost (issue 24): URL patterns and 0.x URI
//! templates that would compile to megabytes are refused with a 400 naming
//! the limit, or are cheap; ordinary ones are served. Compiled selectors
//! are cached for the whole process, so every scenario here uses selectors
//! of its own (a shared one would be free the second time).

use serde_json::json;

use crate::{
    helpers::{TestApp, problem, spawn_app, spawn_app_with},
    mercure_support::{
        HUB, access_token, all_access, compat, detail, encode_form, get, hub_path, publish_with,
    },
};

/// The URL pattern of issue 24: `\w{200}` (Unicode in the `regex` crate,
/// ASCII in ECMAScript) between two path segments, under `host`.
fn word_pattern(host: &str) -> String {
    format!("https://{host}/:a(\\w{{200}})/0")
}

/// `/.well-known/mercure?match_urlpattern=…` for every pattern.
fn url_patterns(patterns: &[String]) -> String {
    let fields: Vec<(&str, &str)> = patterns
        .iter()
        .map(|p| ("match_urlpattern", p.as_str()))
        .collect();
    hub_path(&fields)
}

/// A `HEAD` of `path`; the status.
async fn head(app: &TestApp, path: &str) -> u16 {
    let res = app.client.head(app.url(path)).send().await.expect("HEAD");
    res.status().as_u16()
}

/// A 400 whose detail says the matchers are too expensive, and which limit.
async fn assert_too_expensive(res: reqwest::Response, limit: &str) {
    let (status, body) = problem(res).await;
    assert_eq!(status, 400, "{body}");
    let detail = body["detail"].as_str().expect("a detail");
    assert!(detail.contains("too expensive"), "{detail}");
    assert!(detail.contains(limit), "{detail}");
}

/// 100 copies of the pattern of issue 24 in one 7 KB `HEAD`, then `GET`:
/// `\w` is ASCII, so the pattern is small, compiled once and served; a
/// topic of 200 word characters matches it, one of 199 does not.
#[actix_web::test]
async fn the_issue_pattern_repeated_is_cheap_and_served() {
    let app = spawn_app().await;
    let path = url_patterns(&vec![word_pattern("issue24.test"); 100]);
    assert!(path.len() > 7000, "{}", path.len());
    assert_eq!(head(&app, &path).await, 200);

    let mut stream = crate::mercure_support::open(&app, &path, &[]).await;
    let publisher = all_access(&app);
    let word = "w".repeat(200);
    let short = "w".repeat(199);
    for (topic, data) in [
        (format!("https://issue24.test/{short}/0"), "short"),
        (format!("https://issue24.test/{word}/0"), "ascii"),
    ] {
        publish_with(&app, &[("topic", &topic), ("data", data)], &publisher).await;
    }
    assert_eq!(stream.next_event().await.data, "ascii");
}

/// 100 different patterns with a Unicode class repeated (`\pL{30}`): each
/// is bigger than one regex may be, so `HEAD` and `GET` are 400s naming
/// that limit.
#[actix_web::test]
async fn a_regex_too_big_is_refused() {
    let app = spawn_app().await;
    let patterns: Vec<String> = (0..100)
        .map(|n| format!("https://big.test/{n}/:a(\\pL{{30}})/0"))
        .collect();
    let path = url_patterns(&patterns);
    assert_eq!(head(&app, &path).await, 400);
    assert_too_expensive(get(&app, &path, &[]).await, "the limit of one expression").await;
}

/// 100 different patterns of issue 24 (one path each): each fits, all
/// together pass what one request may compile: `HEAD` and `GET` are 400s
/// naming the request's limit.
#[actix_web::test]
async fn the_request_budget_runs_out() {
    let app = spawn_app().await;
    for method in ["head", "get"] {
        let patterns: Vec<String> = (0..100)
            .map(|n| word_pattern(&format!("budget.test/{method}/{n}")))
            .collect();
        let path = url_patterns(&patterns);
        match method {
            "head" => assert_eq!(head(&app, &path).await, 400),
            _ => {
                assert_too_expensive(get(&app, &path, &[]).await, "the limit of one request").await
            }
        }
    }
}

/// Compatibility mode: a `QUERY` with 1,000 different URI templates of
/// 200 variables each is a 400 naming the request's limit; 250 different
/// ordinary templates are served (about 280 fit in one request).
#[actix_web::test]
async fn legacy_templates_are_bounded() {
    let app = spawn_app_with(compat).await;
    let query = reqwest::Method::from_bytes(b"QUERY").expect("a method");
    let send = |templates: Vec<String>| {
        let fields: Vec<(&str, &str)> = templates.iter().map(|t| ("topic", t.as_str())).collect();
        app.client
            .request(query.clone(), app.url(HUB))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(encode_form(&fields))
            .send()
    };
    let variables = vec!["a"; 200].join(",");
    let nested: Vec<String> = (0..1000)
        .map(|n| format!("https://legacy.test/{n}{{/{variables}}}"))
        .collect();
    let res = send(nested).await.expect("QUERY");
    assert_too_expensive(res, "the limit of one request").await;

    let ordinary: Vec<String> = (0..250)
        .map(|n| format!("https://legacy.test/books/{{id}}/{n}"))
        .collect();
    let res = send(ordinary).await.expect("QUERY");
    assert_eq!(res.status(), 200);
}

/// A token whose URL patterns are too expensive is an invalid token, as
/// one whose patterns do not parse.
#[actix_web::test]
async fn a_token_with_expensive_patterns_is_invalid() {
    let app = spawn_app().await;
    let topics: Vec<(String, String)> = (0..100)
        .map(|n| {
            (
                format!("https://token.test/{n}/:a(\\pL{{30}})"),
                "urlpattern".into(),
            )
        })
        .collect();
    let topics: Vec<(&str, &str)> = topics
        .iter()
        .map(|(m, t)| (m.as_str(), t.as_str()))
        .collect();
    let token = access_token(&app, json!([detail(&["subscribe"], &topics)]));
    let res = get(
        &app,
        &hub_path(&[("match", "urn:token")]),
        &[("authorization", &format!("Bearer {token}"))],
    )
    .await;
    assert_eq!(res.status(), 401);
}
