//! History reads, `GET /channels/{channel}/history`: pages of the retained
//! events, oldest first, with the ids and data the stream gives them, on
//! every backend (memory, durable across a restart of the real binary, a
//! real redis-server read from a node without subscribers), through the
//! access policy.

use serde_json::{Value, json};

use crate::{
    auth::{token, with_auth},
    helpers::*,
    redis_support::{RedisServer, spawn_node},
};

/// GETs `path` with an optional bearer token; status and JSON body.
async fn get(client: &reqwest::Client, url: String, token: Option<&str>) -> (u16, Value) {
    let mut req = client.get(url);
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    let res = req.send().await.expect("GET");
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

/// The ids of a page's events.
fn ids(page: &Value) -> Vec<String> {
    page["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["id"].as_str().expect("an id").to_owned())
        .collect()
}

/// A channel's events read back as the stream delivered them: same ids, types and data, oldest first, in pages that `next` links.
#[actix_web::test]
async fn history_gives_what_the_stream_gave_in_pages() {
    let app = spawn_app().await;
    let mut sse = app.stream("/stream/shop", &[]).await;
    sse.wait_open().await;
    app.publish("shop", r#"{ "sku": 1 }"#).await;
    let typed = app
        .post("/publish/shop?event=sold", "text/plain", "two\nlines")
        .await;
    assert_eq!(typed.status(), 202);
    app.publish("shop", r#""three""#).await;
    let mut streamed = Vec::new();
    for _ in 0..3 {
        streamed.push(sse.next_event().await);
    }

    let (status, page) = app.get_json("/channels/shop/history").await;
    assert_eq!(status, 200, "{page}");
    let read: Vec<SseEvent> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| SseEvent {
            id: e["id"].as_str().unwrap().to_owned(),
            event: e["event"].as_str().unwrap_or("message").to_owned(),
            data: e["data"].as_str().unwrap().to_owned(),
        })
        .collect();
    assert_eq!(read, streamed);
    assert!(page.get("next").is_none() && page.get("gap").is_none());
    assert!(
        page["events"][0].get("event").is_none(),
        "no type, no field"
    );

    let (_, first) = app.get_json("/channels/shop/history?limit=2").await;
    assert_eq!(
        ids(&first),
        [streamed[0].id.clone(), streamed[1].id.clone()]
    );
    assert_eq!(first["next"], streamed[1].id.as_str());
    let (_, rest) = app
        .get_json(&format!(
            "/channels/shop/history?after={}&limit=2",
            streamed[1].id
        ))
        .await;
    assert_eq!(ids(&rest), [streamed[2].id.clone()]);
    assert!(rest.get("next").is_none());
}

/// A channel with no events answers an empty list; bad parameters are 400 problems.
#[actix_web::test]
async fn empty_channels_and_bad_parameters() {
    let app = spawn_app().await;
    let (status, page) = app.get_json("/channels/never-used/history").await;
    assert_eq!((status, page), (200, json!({"events": []})));
    for query in ["limit=0", "limit=1001", "limit=x", "after=not-an-id"] {
        let res = app
            .client
            .get(app.url(&format!("/channels/c/history?{query}")))
            .send()
            .await
            .unwrap();
        let (status, _) = problem(res).await;
        assert_eq!(status, 400, "{query}");
    }
    let res = app
        .client
        .get(app.url("/channels/bad%20name/history"))
        .send()
        .await
        .unwrap();
    assert_eq!(problem(res).await.0, 400);
}

/// A page ends early at 4 MiB of events whatever `limit` says, and `next`
/// reads on from where it ended: no answer is built of a GB of history.
#[actix_web::test]
async fn a_page_is_bounded_in_bytes() {
    let app = spawn_app().await;
    page_of_large_events(&app, &app).await;
}

/// The same bound in cluster mode, where it also bounds what is read from
/// Redis; and a page longer than the script's read batches (128) reads on
/// across them.
#[actix_web::test]
async fn a_cluster_page_is_bounded_and_reads_across_batches() {
    let redis = RedisServer::start();
    let writer = spawn_node(&redis.url()).await;
    let reader = spawn_node(&redis.url()).await;
    page_of_large_events(&writer, &reader).await;
    let mut published = Vec::new();
    for n in 0..300 {
        published.push(writer.publish("many", &format!("{n}")).await);
    }
    let (_, page) = reader.get_json("/channels/many/history?limit=1000").await;
    assert_eq!(ids(&page), published);
    assert!(page.get("next").is_none());
    let (_, page) = reader
        .get_json(&format!(
            "/channels/many/history?after={}&limit=200",
            published[49]
        ))
        .await;
    assert_eq!(ids(&page), published[50..250]);
    assert_eq!(page["next"], published[249].as_str());
}

/// Publishes five 1 MB events through `writer` and reads them through
/// `reader` in pages of at most 4 MiB.
async fn page_of_large_events(writer: &TestApp, reader: &TestApp) {
    let big = "x".repeat(1_000_000);
    let mut ids = Vec::new();
    for _ in 0..5 {
        let res = writer.post("/publish/big", "text/plain", big.clone()).await;
        assert_eq!(res.status(), 202);
        let answer: serde_json::Value = res.json().await.unwrap();
        ids.push(answer["id"].as_str().unwrap().to_owned());
    }
    let (status, page) = reader.get_json("/channels/big/history?limit=100").await;
    assert_eq!(status, 200);
    let events = page["events"].as_array().unwrap();
    assert_eq!(events.len(), 4, "4 MB of 1 MB events, not 5");
    assert_eq!(page["next"], ids[3].as_str());
    let (_, rest) = reader
        .get_json(&format!("/channels/big/history?after={}", ids[3]))
        .await;
    assert_eq!(rest["events"][0]["id"], ids[4].as_str());
    assert_eq!(
        rest["events"][0]["data"].as_str().map(str::len),
        Some(1_000_000)
    );
    assert!(rest.get("next").is_none());
}

/// An id the history no longer covers gets the retained events and a gap, as a resuming stream gets a broker.gap notice.
#[actix_web::test]
async fn an_id_no_longer_covered_is_a_gap() {
    let app = spawn_app_with(|s| s.history.max_events = 2).await;
    let mut published = Vec::new();
    for n in 0..4 {
        published.push(app.publish("short", &format!("\"e{n}\"")).await);
    }
    let (_, page) = app
        .get_json(&format!("/channels/short/history?after={}", published[0]))
        .await;
    assert_eq!(ids(&page), [published[2].clone(), published[3].clone()]);
    assert_eq!(
        page["gap"],
        json!({"reason": "history-trimmed", "lastEventId": published[0], "resumeFrom": published[1]})
    );
    let epoch = published[0].split('-').next().unwrap();
    let other_epoch = format!("{}-1", if epoch == "1" { "2" } else { "1" });
    let (_, page) = app
        .get_json(&format!("/channels/short/history?after={other_epoch}"))
        .await;
    assert_eq!(page["gap"]["reason"], "unknown-epoch");
    assert_eq!(ids(&page), [published[2].clone(), published[3].clone()]);
}

/// With auth on, a protected channel's history needs a token that may subscribe to it; a public one's is open.
#[actix_web::test]
async fn a_private_channels_history_needs_a_grant() {
    let app = spawn_app_with(with_auth).await;
    let publisher = token(&["*"], &[]);
    app.publish_with_token("private.orders", "\"secret\"", &publisher)
        .await;
    app.publish_with_token("news", "\"open\"", &publisher).await;
    let url = || app.url("/channels/private.orders/history");
    let res = app.client.get(url()).send().await.unwrap();
    assert_eq!(problem(res).await.0, 401);
    let res = app
        .client
        .get(url())
        .bearer_auth(token(&[], &["news"]))
        .send()
        .await
        .unwrap();
    assert_eq!(problem(res).await.0, 403);
    let (status, page) = get(&app.client, url(), Some(&token(&[], &["private.*"]))).await;
    assert_eq!(status, 200);
    assert_eq!(
        page["events"][0]["data"], r#""secret""#,
        "JSON data as delivered"
    );
    let (status, page) = get(&app.client, app.url("/channels/news/history"), None).await;
    assert_eq!(
        (status, &page["events"][0]["data"]),
        (200, &json!(r#""open""#))
    );
}

/// Durable history: after a crash of the real binary the history reads back with the same ids, from the store.
#[actix_web::test]
async fn durable_history_reads_back_after_a_crash() {
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
    let mut published = Vec::new();
    for n in 0..3 {
        let res = client
            .post(first.url("/publish/kept"))
            .body(format!("e{n}"))
            .header("content-type", "text/plain")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 202);
        let answer: Value = res.json().await.unwrap();
        published.push(answer["id"].as_str().unwrap().to_owned());
    }
    let _ = first.child.kill();
    let _ = first.child.wait();
    let second = BrokerProcess::start_with(&args, &[]);
    let (status, page) = get(&client, second.url("/channels/kept/history"), None).await;
    assert_eq!(status, 200);
    assert_eq!(ids(&page), published);
    assert_eq!(page["events"][2]["data"], "e2");
}

/// Cluster mode on a real redis-server: a node without subscribers reads the history from the shared log, with the ids another node gave.
#[actix_web::test]
async fn cluster_history_is_read_from_the_shared_log() {
    let redis = RedisServer::start();
    let writer = spawn_node(&redis.url()).await;
    let reader = spawn_node(&redis.url()).await;
    let mut published = Vec::new();
    for n in 0..5 {
        published.push(writer.publish("shared", &format!("\"e{n}\"")).await);
    }
    let (status, page) = reader.get_json("/channels/shared/history?limit=3").await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(ids(&page), published[..3]);
    assert_eq!(page["next"], published[2].as_str());
    let (_, rest) = reader
        .get_json(&format!("/channels/shared/history?after={}", published[2]))
        .await;
    assert_eq!(ids(&rest), published[3..]);
    assert_eq!(rest["events"][1]["data"], r#""e4""#);
    let (_, empty) = reader.get_json("/channels/nothing/history").await;
    assert_eq!(empty, json!({"events": []}));
}
