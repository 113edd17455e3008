//! The long proptest: fuzzes what a publisher controls end to end — the
//! Content-Type header (`BodyKind::of`), the body (`compact_json`,
//! `event_data`), the event type (`EventType::parse`) — and the SSE encoder
//! that turns the result into bytes every subscriber reads; and what a
//! Mercure subscriber controls: its `match`, `match_urlpattern` and 0.x
//! `topic` values, compiled within one request's budget.
//!
//! A plain `cargo test` runs each property once with proptest's usual case
//! count (`PROPTEST_CASES`, 256 by default). With `FUZZ_SECONDS=N` each
//! property keeps running fresh batches of cases, with new seeds, for N
//! seconds: scripts/test.sh does that as its fuzz stage. (`cargo fuzz` needs
//! a nightly toolchain, which this project's machines do not guarantee.)
//!
//! Failures are recorded in tests/fuzz_inputs.proptest-regressions (committed)
//! and replayed first on every run; tests/fuzz_corpus.txt holds hand-picked
//! hostile inputs that every run checks too.

use std::time::{Duration, Instant};

use actix_web::{http::header, test::TestRequest};
use proptest::{
    prelude::*,
    test_runner::{Config, FileFailurePersistence, TestCaseError, TestRunner},
};
use sse_broker::{
    http::body::{BodyKind, compact_json, event_data},
    mercure::topic::{Compiler, MAX_REQUEST_BYTES, MatchType, SelectorError},
    names::EventType,
    sse::{encode_comment, encode_event, encode_notice, parse::parse_stream, prelude},
};

/// Runs `test` over `strategy`: once, or for FUZZ_SECONDS seconds.
fn fuzz<S: Strategy>(
    name: &str,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) {
    let config = Config {
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "tests/fuzz_inputs.proptest-regressions",
        ))),
        ..Config::default()
    };
    let seconds: u64 = std::env::var("FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut batches = 0u64;
    loop {
        let mut runner = TestRunner::new(config.clone());
        if let Err(err) = runner.run(&strategy, &test) {
            panic!("{name}: {err}");
        }
        batches += 1;
        if Instant::now() >= deadline {
            break;
        }
    }
    if seconds > 0 {
        eprintln!("{name}: {batches} batches of {} cases", config.cases);
    }
}

/// The hand-picked hostile inputs, one JSON string per line.
fn corpus() -> Vec<String> {
    include_str!("fuzz_corpus.txt")
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| serde_json::from_str::<String>(l).expect("corpus lines are JSON strings"))
        .collect()
}

/// What an EventSource shows for `data` (every line end becomes `\n`).
fn normalised(data: &str) -> String {
    data.replace("\r\n", "\n").replace('\r', "\n")
}

/// Text built from JSON-ish and SSE-ish pieces: finds more than random text.
fn hostile_text() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("{".to_owned()),
        Just("}".to_owned()),
        Just("[".to_owned()),
        Just("]".to_owned()),
        Just("\"".to_owned()),
        Just("\\".to_owned()),
        Just("\\\"".to_owned()),
        Just("\\u0000".to_owned()),
        Just("\\ud800".to_owned()),
        Just(":".to_owned()),
        Just(",".to_owned()),
        Just(" ".to_owned()),
        Just("\t".to_owned()),
        Just("\n".to_owned()),
        Just("\r".to_owned()),
        Just("\r\n".to_owned()),
        Just("\0".to_owned()),
        Just("data: x".to_owned()),
        Just("id: evil".to_owned()),
        Just("event: evil".to_owned()),
        Just("1e999".to_owned()),
        Just("-0.0".to_owned()),
        Just("true".to_owned()),
        Just("null".to_owned()),
        Just("é✓\u{feff}".to_owned()),
        "[a-z0-9]{1,4}",
        any::<String>(),
    ];
    proptest::collection::vec(piece, 0..24).prop_map(|parts| parts.concat())
}

/// Valid JSON, pretty-printed, so compaction has work to do.
fn json_text() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(serde_json::Value::from),
        hostile_text().prop_map(serde_json::Value::from),
    ];
    let value = leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::from),
            proptest::collection::btree_map(hostile_text(), inner, 0..6)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    });
    (value, any::<bool>()).prop_map(|(v, pretty)| {
        if pretty {
            serde_json::to_string_pretty(&v).unwrap()
        } else {
            serde_json::to_string(&v).unwrap()
        }
    })
}

/// `compact_json` never panics; what it accepts is valid JSON, and its
/// answer is the same value on one line, and compacting again changes nothing.
///
/// The oracle is serde_json's `Value`, which refuses three things JSON's
/// grammar (RFC 8259) allows and JavaScript's `JSON.parse` accepts: numbers
/// beyond f64 (`1e999`), lone surrogate escapes (`"\ud800"`) and nesting
/// deeper than 128 levels. The broker checks the grammar only (without
/// recursion, so depth cannot overflow its stack; the body size bounds it)
/// and forwards the text unchanged, so it accepts all three. The fuzzer
/// found them; the corpus keeps them.
fn check_compact(text: &str) -> Result<(), TestCaseError> {
    let parsed = serde_json::from_str::<serde_json::Value>(text);
    match compact_json(text, 128) {
        Ok(compact) => {
            prop_assert!(
                !compact.contains(['\n', '\r']),
                "line break in {:?}",
                compact
            );
            prop_assert!(compact.len() <= text.len());
            prop_assert_eq!(compact_json(&compact, 128).unwrap(), compact.clone());
            match parsed {
                Ok(original) => {
                    let back: serde_json::Value = serde_json::from_str(&compact).map_err(|e| {
                        TestCaseError::fail(format!("compacted JSON is invalid: {e}"))
                    })?;
                    prop_assert_eq!(back, original);
                }
                Err(err) => {
                    let msg = err.to_string();
                    prop_assert!(
                        msg.contains("number out of range")
                            || msg.contains("hex escape")
                            || msg.contains("surrogate")
                            || msg.contains("recursion limit"),
                        "accepted invalid JSON {:?}: {}",
                        text,
                        msg
                    );
                }
            }
        }
        Err(_) => {
            // serde_json's Value may accept what IgnoredAny does not only
            // for depth; both refuse everything else alike.
            let deep = text.matches(['[', '{']).count() > 100;
            prop_assert!(parsed.is_err() || deep, "refused valid JSON {:?}", text);
        }
    }
    Ok(())
}

/// The whole publish path: body bytes → data → frame → what a browser sees.
fn check_pipeline(kind: BodyKind, body: &[u8], event: Option<&str>) -> Result<(), TestCaseError> {
    let Ok(data) = event_data(kind, body, 128) else {
        // Refused: not UTF-8, or (for JSON) not JSON.
        let utf8 = std::str::from_utf8(body);
        prop_assert!(
            utf8.is_err() || (kind == BodyKind::Json && compact_json(utf8.unwrap(), 128).is_err())
        );
        return Ok(());
    };
    if kind == BodyKind::Text {
        prop_assert_eq!(data.as_bytes(), body);
    }
    let event = event.and_then(|e| EventType::parse(e).ok());
    let frame = encode_event("k2z-42", event.as_ref().map(|e| e.as_str()), &data);
    let mut stream = prelude(2000);
    stream.push_str(std::str::from_utf8(frame.full()).unwrap());
    stream.push_str(std::str::from_utf8(&encode_comment("heartbeat")).unwrap());
    stream.push_str(std::str::from_utf8(&encode_notice("broker.replay", &data)).unwrap());
    let events = parse_stream(&stream);
    prop_assert_eq!(
        events.len(),
        2,
        "one event and one notice from {:?}",
        stream
    );
    prop_assert_eq!(&events[0].id, "k2z-42");
    prop_assert_eq!(
        &events[0].event,
        event.as_ref().map_or("message", |e| e.as_str())
    );
    prop_assert_eq!(&events[0].data, &normalised(&data));
    prop_assert_eq!(&events[1].event, "broker.replay");
    prop_assert_eq!(&events[1].id, "k2z-42", "a notice must not move the id");
    prop_assert!(frame.full().ends_with(frame.rest()));
    Ok(())
}

/// Content-Type values from the pieces that matter, plus arbitrary bytes.
fn content_type() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        Just("application/json".to_owned()),
        Just("text/plain".to_owned()),
        Just("application/problem+json".to_owned()),
        Just("APPLICATION/JSON".to_owned()),
        Just(";".to_owned()),
        Just(" ".to_owned()),
        Just("charset=".to_owned()),
        Just("utf-8".to_owned()),
        Just("\"utf-8\"".to_owned()),
        Just("latin1".to_owned()),
        Just("=".to_owned()),
        Just("+json".to_owned()),
        "[ -~]{0,6}",
    ];
    prop_oneof![
        proptest::collection::vec(piece, 0..8).prop_map(|p| p.concat().into_bytes()),
        proptest::collection::vec(any::<u8>(), 0..40),
    ]
}

#[test]
fn body_kind_of_any_content_type() {
    fuzz("BodyKind::of", content_type(), |bytes| {
        let Ok(value) = header::HeaderValue::from_bytes(&bytes) else {
            return Ok(()); // not a header value: the HTTP parser refuses it first
        };
        let req = TestRequest::default()
            .insert_header((header::CONTENT_TYPE, value))
            .to_http_request();
        let result = BodyKind::of(&req);
        let text = String::from_utf8_lossy(&bytes).to_ascii_lowercase();
        let essence = text.split(';').next().unwrap_or_default().trim().to_owned();
        if let Ok(kind) = result {
            let json = essence == "application/json" || essence.ends_with("+json");
            prop_assert_eq!(kind == BodyKind::Json, json, "{:?}", text);
            prop_assert!(json || essence == "text/plain");
        }
        Ok(())
    });
}

#[test]
fn compact_json_on_any_text() {
    fuzz("compact_json(any text)", hostile_text(), |text| {
        check_compact(&text)
    });
}

#[test]
fn compact_json_on_valid_json() {
    fuzz("compact_json(valid JSON)", json_text(), |text| {
        prop_assert!(
            compact_json(&text, 128).is_ok(),
            "refused valid JSON {:?}",
            text
        );
        check_compact(&text)
    });
}

#[test]
fn publish_pipeline_on_any_bytes() {
    let body = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..256),
        hostile_text().prop_map(String::into_bytes),
        json_text().prop_map(String::into_bytes),
    ];
    let kind = prop_oneof![Just(BodyKind::Json), Just(BodyKind::Text)];
    let event = proptest::option::of(prop_oneof!["[!-~]{1,64}", any::<String>()]);
    fuzz(
        "publish pipeline",
        (kind, body, event),
        |(kind, body, event)| check_pipeline(kind, &body, event.as_deref()),
    );
}

#[test]
fn event_types_never_break_the_frame() {
    fuzz(
        "EventType::parse",
        prop_oneof!["[!-~]{0,70}", any::<String>(), hostile_text()],
        |text| {
            if let Ok(event) = EventType::parse(&text) {
                prop_assert!(!event.as_str().contains(['\r', '\n', '\0', ' ']));
                prop_assert!(!event.as_str().starts_with("broker."));
                let frame = encode_event("a-1", Some(event.as_str()), "x");
                let events = parse_stream(std::str::from_utf8(frame.full()).unwrap());
                prop_assert_eq!(events.len(), 1);
                prop_assert_eq!(&events[0].event, event.as_str());
            }
            Ok(())
        },
    );
}

/// Every corpus entry goes through every property.
#[test]
fn corpus_inputs() {
    let corpus = corpus();
    assert!(corpus.len() >= 10);
    for input in &corpus {
        check_compact(input).unwrap();
        for kind in [BodyKind::Json, BodyKind::Text] {
            check_pipeline(kind, input.as_bytes(), Some(input)).unwrap();
            check_pipeline(kind, input.as_bytes(), Some("update")).unwrap();
        }
        let _ = EventType::parse(input);
    }
}

/// Text built from URL pattern, regex and URI template pieces.
fn selector_text() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("https://".to_owned()),
        Just("example.com".to_owned()),
        Just("/".to_owned()),
        Just(":id".to_owned()),
        Just("(".to_owned()),
        Just(")".to_owned()),
        Just("\\w".to_owned()),
        Just("\\d".to_owned()),
        Just("\\W".to_owned()),
        Just("\\b".to_owned()),
        Just("\\pL".to_owned()),
        Just("[\\w-]".to_owned()),
        Just("{200}".to_owned()),
        Just("{1000}".to_owned()),
        Just("*".to_owned()),
        Just("+".to_owned()),
        Just("?".to_owned()),
        Just("|".to_owned()),
        Just("(?i)".to_owned()),
        Just("{".to_owned()),
        Just("}".to_owned()),
        Just("{/a,b,c}".to_owned()),
        Just("{+path}".to_owned()),
        Just("{?q*}".to_owned()),
        Just(":8080".to_owned()),
        Just("@".to_owned()),
        Just("#".to_owned()),
        Just("%".to_owned()),
        Just("%C3%A9".to_owned()),
        Just("é".to_owned()),
        Just("[".to_owned()),
        Just("]".to_owned()),
        "[a-z0-9.]{1,4}",
        any::<String>(),
    ];
    proptest::collection::vec(piece, 0..24).prop_map(|parts| parts.concat())
}

/// A subscribe request's matchers, each a `match`, `match_urlpattern` or
/// 0.x `topic`, compiled by one compiler: no panic, every refusal a named
/// one, never more charged than one request may compile; what compiled
/// matches topics without panicking.
#[test]
fn mercure_selectors_within_budget() {
    let hub = url::Url::parse("http://hub.test/.well-known/mercure").expect("a URL");
    let kind = prop_oneof![
        Just(None),
        Just(Some(MatchType::Exact)),
        Just(Some(MatchType::UrlPattern)),
    ];
    let matchers = proptest::collection::vec((kind, selector_text()), 1..12);
    let topics = proptest::collection::vec(selector_text(), 0..4);
    fuzz(
        "Mercure selectors",
        (matchers, topics),
        |(matchers, topics)| {
            let mut compiler = Compiler::default();
            for (kind, raw) in &matchers {
                let compiled = match kind {
                    None => compiler.legacy(raw),
                    Some(kind) => compiler.typed(*kind, raw, &hub),
                };
                prop_assert!(compiler.spent() <= MAX_REQUEST_BYTES);
                match compiled {
                    Ok(selector) => {
                        for topic in &topics {
                            let _ = selector.matches(topic);
                        }
                        prop_assert!(selector.matches(raw) || kind.is_some());
                    }
                    Err(SelectorError::NotCached) => prop_assert!(false, "compiled nothing"),
                    Err(_) => {}
                }
            }
            Ok(())
        },
    );
}
