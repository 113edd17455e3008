//! Idempotent publishing: a retry with the same `Idempotency-Key` (per item
//! of a batch: `idempotencyKey`) gets the first answer and stores nothing,
//! in memory, with durable history across a crash of the real binary, and
//! on a real redis-server through another node; a key reused with another
//! body is refused.

use serde_json::{Value, json};

use crate::{
    helpers::*,
    redis_support::{RedisServer, spawn_node},
};

/// POSTs `body` to `url` as JSON with `key` as its Idempotency-Key, if any.
async fn post_keyed(
    client: &reqwest::Client,
    url: String,
    body: &str,
    key: Option<&str>,
) -> reqwest::Response {
    let mut req = client
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(key) = key {
        req = req.header("Idempotency-Key", key);
    }
    req.send().await.expect("POST")
}

/// A keyed publish that must be accepted; its answer.
async fn accepted(client: &reqwest::Client, url: String, body: &str, key: &str) -> Value {
    let res = post_keyed(client, url, body, Some(key)).await;
    assert_eq!(res.status(), 202);
    res.json().await.expect("a JSON answer")
}

/// The ids of a channel's history, read at `url`.
async fn history_ids(client: &reqwest::Client, url: String) -> Vec<String> {
    let page: Value = client.get(url).send().await.unwrap().json().await.unwrap();
    page["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect()
}

/// A counter of `GET /metrics`.
async fn counter(app: &TestApp, name: &str) -> u64 {
    let text = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(&format!("{name} ")))
        .map_or(0, |n| n.trim().parse().unwrap())
}

/// In memory: a retry with the same key gets the same answer, the subscriber gets the event once and the history holds it once.
#[actix_web::test]
async fn a_retry_is_answered_the_first_id_and_stored_once() {
    let app = spawn_app().await;
    let mut sse = app.stream("/stream/jobs", &[]).await;
    sse.wait_open().await;
    let url = || app.url("/publish/jobs");
    let first = accepted(&app.client, url(), r#"{"n":1}"#, "job-1").await;
    // The same JSON with other whitespace is the same request.
    let again = accepted(&app.client, url(), r#"{ "n": 1 }"#, "job-1").await;
    assert_eq!(
        (&again["id"], &again["channel"]),
        (&first["id"], &first["channel"])
    );
    let other = accepted(&app.client, url(), r#"{"n":1}"#, "job-2").await;
    assert_ne!(other["id"], first["id"]);
    let delivered = sse.next_messages(2).await;
    assert_eq!(delivered[0].id, first["id"].as_str().unwrap());
    assert_eq!(delivered[1].id, other["id"].as_str().unwrap());
    let ids = history_ids(&app.client, app.url("/channels/jobs/history")).await;
    assert_eq!(ids.len(), 2, "one event per key: {ids:?}");
    assert_eq!(
        counter(&app, "sse_broker_publish_deduplicated_total").await,
        1
    );
    assert_eq!(counter(&app, "sse_broker_events_published_total").await, 2);
}

/// A key reused with another body is a 422 problem and stores nothing; a malformed key is a 400.
#[actix_web::test]
async fn a_key_reused_with_another_body_is_refused() {
    let app = spawn_app().await;
    let url = || app.url("/publish/jobs");
    accepted(&app.client, url(), r#""a""#, "job-1").await;
    let res = post_keyed(&app.client, url(), r#""b""#, Some("job-1")).await;
    let (status, body) = problem(res).await;
    assert_eq!(status, 422);
    assert_eq!(
        body["type"],
        "urn:sse-broker:problem:idempotency-key-reused"
    );
    let res = post_keyed(
        &app.client,
        url().replace("jobs", "other"),
        r#""a""#,
        Some("job-1"),
    )
    .await;
    assert_eq!(res.status(), 202, "keys are per channel");
    for bad in ["", &"k".repeat(129)] {
        let res = post_keyed(&app.client, url(), r#""a""#, Some(bad)).await;
        let (status, body) = problem(res).await;
        assert_eq!(status, 400, "{bad:?}");
        assert_eq!(
            body["type"],
            "urn:sse-broker:problem:invalid-idempotency-key"
        );
    }
    let ids = history_ids(&app.client, app.url("/channels/jobs/history")).await;
    assert_eq!(ids.len(), 1);
}

/// A batch retried whole is answered the same ids, item by item; a batch takes no header key.
#[actix_web::test]
async fn batch_items_carry_their_own_keys() {
    let app = spawn_app().await;
    let batch = json!([
        {"channel": "a", "data": "x", "idempotencyKey": "item-1"},
        {"channel": "b", "data": {"y": 1}, "idempotencyKey": "item-2"},
        {"channel": "a", "data": "z"},
    ])
    .to_string();
    let publish = || post_keyed(&app.client, app.url("/publish"), &batch, None);
    let first: Value = publish().await.json().await.unwrap();
    let again: Value = publish().await.json().await.unwrap();
    let id = |answer: &Value, n: usize| answer["events"][n]["id"].as_str().unwrap().to_owned();
    assert_eq!(
        (id(&again, 0), id(&again, 1)),
        (id(&first, 0), id(&first, 1))
    );
    assert_ne!(
        id(&again, 2),
        id(&first, 2),
        "an item without a key is published again"
    );
    assert_eq!(
        history_ids(&app.client, app.url("/channels/a/history"))
            .await
            .len(),
        3
    );
    let reused = json!([{"channel": "b", "data": "other", "idempotencyKey": "item-2"}]).to_string();
    let res = post_keyed(&app.client, app.url("/publish"), &reused, None).await;
    let (status, body) = problem(res).await;
    assert_eq!(status, 422);
    assert!(
        body["detail"].as_str().unwrap().starts_with("item 0"),
        "{body}"
    );
    let res = post_keyed(&app.client, app.url("/publish"), &batch, Some("k")).await;
    assert_eq!(problem(res).await.0, 400);
}

/// Durable history: a retry after a crash of the real binary (SIGKILL) is answered the first id, and the event is on disk once.
#[actix_web::test]
async fn a_retry_after_a_crash_is_absorbed_with_durable_history() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_str().unwrap();
    let args = [
        "--bind",
        "127.0.0.1:0",
        "--demo",
        "false",
        "--data-dir",
        data_dir,
    ];
    let client = http_client();
    let mut first = BrokerProcess::start_with(&args, &[]);
    let answer = accepted(&client, first.url("/publish/jobs"), r#""a""#, "job-1").await;
    let _ = first.child.kill();
    let _ = first.child.wait();
    let second = BrokerProcess::start_with(&args, &[]);
    let again = accepted(&client, second.url("/publish/jobs"), r#""a""#, "job-1").await;
    assert_eq!(again["id"], answer["id"]);
    let res = post_keyed(
        &client,
        second.url("/publish/jobs"),
        r#""b""#,
        Some("job-1"),
    )
    .await;
    assert_eq!(problem(res).await.0, 422);
    let ids = history_ids(&client, second.url("/channels/jobs/history")).await;
    assert_eq!(ids, [answer["id"].as_str().unwrap()]);
}

/// Cluster mode on a real redis-server: a retry through another node is answered the first id, and the shared log holds the event once.
#[actix_web::test]
async fn a_retry_through_another_node_is_absorbed_by_redis() {
    let redis = RedisServer::start();
    let (a, b) = (
        spawn_node(&redis.url()).await,
        spawn_node(&redis.url()).await,
    );
    let mut sse = b.stream("/stream/jobs", &[]).await;
    sse.wait_open().await;
    let first = accepted(&a.client, a.url("/publish/jobs"), r#""a""#, "job-1").await;
    let again = accepted(&b.client, b.url("/publish/jobs"), r#""a""#, "job-1").await;
    assert_eq!(again["id"], first["id"]);
    let res = post_keyed(&b.client, b.url("/publish/jobs"), r#""b""#, Some("job-1")).await;
    assert_eq!(problem(res).await.0, 422);
    let next = accepted(&a.client, a.url("/publish/jobs"), r#""c""#, "job-2").await;
    let delivered = sse.next_messages(2).await;
    assert_eq!(
        [delivered[0].id.as_str(), delivered[1].id.as_str()],
        [first["id"].as_str().unwrap(), next["id"].as_str().unwrap()]
    );
    let ids = history_ids(&a.client, a.url("/channels/jobs/history")).await;
    assert_eq!(ids.len(), 2, "one event per key: {ids:?}");
    assert_eq!(
        counter(&b, "sse_broker_publish_deduplicated_total").await,
        1
    );
}
