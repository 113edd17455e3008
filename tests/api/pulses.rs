//! Pulses and kill-session: liveness reports and the seed's kill buttons.

use crate::helpers::*;

/// The seed's bare-string pulse and the object form are both recorded, newest first.
#[actix_web::test]
async fn pulses_are_recorded_and_listed() {
    let app = spawn_app().await;
    let _sub = app.stream("/stream/pulsed", &[]).await;
    app.wait_for_subscribers("pulsed", 1).await;
    for body in [
        r#""tab-1""#,
        r#"{"clientId":"tab-2","channel":"pulsed"}"#,
        r#""tab-1""#,
    ] {
        let res = app.post("/pulse", "application/json", body).await;
        assert_eq!(res.status(), 200);
        let answer: serde_json::Value = res.json().await.unwrap();
        assert!(answer["id"].as_str().unwrap().starts_with("tab-"));
    }
    let (_, list) = app.get_json("/pulses").await;
    let list = list.as_array().unwrap();
    assert_eq!(list[0]["tabId"], "tab-1");
    assert_eq!(list[0]["count"], 2);
    assert_eq!(list[0]["timestamps"].as_array().unwrap().len(), 2);
    assert_eq!(list[0]["lastSeen"], list[0]["timestamps"][0]);
    assert_eq!(list[0]["alive"], true);
    assert_eq!(list[1]["tabId"], "tab-2");
    let (_, channel) = app.get_json("/channels/pulsed").await;
    assert_eq!(channel["pulses"], 1);
    assert_eq!(channel["pulsesByClient"]["tab-2"], 1);
}

/// A client is shown stale once stale_after passes without a pulse.
#[actix_web::test]
async fn silent_client_turns_stale() {
    let app = spawn_app_with(|s| s.pulses.stale_after = std::time::Duration::from_millis(50)).await;
    app.post("/pulse", "text/plain", "tab-9").await;
    wait_until(|| async {
        let (_, list) = app.get_json("/pulses").await;
        list[0]["alive"] == false
    })
    .await;
}

/// Bad pulses are refused.
#[actix_web::test]
async fn bad_pulses_are_400() {
    let app = spawn_app().await;
    for body in ["42", r#"{"nope":1}"#, r#""""#, "{"] {
        let res = app.post("/pulse", "application/json", body).await;
        assert_eq!(res.status(), 400, "{body}");
    }
}

/// killSession publishes the tab id on the killSession channel.
#[actix_web::test]
async fn kill_session_reaches_the_tab() {
    let app = spawn_app().await;
    let mut sse = app.stream("/stream/killSession", &[]).await;
    sse.wait_open().await;
    let res = app
        .client
        .delete(app.url("/killSession"))
        .header("content-type", "application/json")
        .body(r#""tab-7""#)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    assert_eq!(sse.next_event().await.data, r#""tab-7""#);
}

/// killall publishes every known tab id.
#[actix_web::test]
async fn kill_all_reaches_every_known_tab() {
    let app = spawn_app().await;
    for tab in ["tab-a", "tab-b"] {
        app.post("/pulse", "text/plain", tab).await;
    }
    let mut sse = app.stream("/stream/killSession", &[]).await;
    sse.wait_open().await;
    let res = app.client.delete(app.url("/killall")).send().await.unwrap();
    assert_eq!(res.status(), 202);
    let mut got: Vec<String> = sse
        .next_messages(2)
        .await
        .into_iter()
        .map(|e| e.data)
        .collect();
    got.sort();
    assert_eq!(got, [r#""tab-a""#, r#""tab-b""#]);
}
