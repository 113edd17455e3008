//! Request bodies: reading them within the size limit and turning a publish
//! body into the text that goes into `data:` lines.
//!
//! JSON is validated with serde_json, then compacted by removing whitespace
//! outside strings. Re-serialising instead would reorder keys or rewrite
//! numbers (`1.10` → `1.1`); publishers get back exactly what they sent,
//! on one line.

use actix_web::{HttpRequest, http::header, web};
use futures_util::StreamExt;
use serde::de::IgnoredAny;

use crate::error::ApiError;

/// How a body is to be read, from its `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    Json,
    Text,
}

impl BodyKind {
    /// `application/json` (or any `+json`) is JSON; `text/plain` or no
    /// content type is text; anything else is refused with 415.
    pub fn of(req: &HttpRequest) -> Result<Self, ApiError> {
        let Some(value) = req.headers().get(header::CONTENT_TYPE) else {
            return Ok(Self::Text);
        };
        let value = value
            .to_str()
            .map_err(|_| ApiError::UnsupportedMediaType("Content-Type is not readable".into()))?;
        let mut parts = value.split(';').map(str::trim);
        let essence = parts.next().unwrap_or_default().to_ascii_lowercase();
        let charset_ok = parts.all(|param| match param.split_once('=') {
            Some((name, val)) if name.trim().eq_ignore_ascii_case("charset") => {
                val.trim().trim_matches('"').eq_ignore_ascii_case("utf-8")
            }
            _ => true,
        });
        if !charset_ok {
            return Err(ApiError::UnsupportedMediaType(
                "only the utf-8 charset is supported".into(),
            ));
        }
        if essence == "application/json" || essence.ends_with("+json") {
            Ok(Self::Json)
        } else if essence == "text/plain" {
            Ok(Self::Text)
        } else {
            Err(ApiError::UnsupportedMediaType(format!(
                "Content-Type {essence:?} is not supported; send application/json or text/plain \
                 (curl -d sends application/x-www-form-urlencoded: add -H 'Content-Type: application/json')"
            )))
        }
    }
}

/// Reads the whole body, refusing more than `limit` bytes (413) before
/// reading it when Content-Length already says so.
pub async fn read_body(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
) -> Result<web::Bytes, ApiError> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|len| len > limit) {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    let mut body = web::BytesMut::with_capacity(declared.unwrap_or(0).min(limit));
    while let Some(chunk) = payload.next().await {
        let chunk = chunk
            .map_err(|err| ApiError::InvalidBody(format!("the body could not be read: {err}")))?;
        if body.len() + chunk.len() > limit {
            return Err(ApiError::PayloadTooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// The text of a body, which must be UTF-8.
pub fn utf8(body: &[u8]) -> Result<&str, ApiError> {
    std::str::from_utf8(body).map_err(|err| {
        ApiError::InvalidBody(format!(
            "the body is not valid UTF-8 (at byte {})",
            err.valid_up_to()
        ))
    })
}

/// Validates JSON text and returns it compacted onto one line. Arrays and
/// objects nested deeper than `max_depth` (`server.max_json_depth`) are
/// refused: subscribers' parsers give up long before a body's size limit
/// does (Python's `json` past ~1,000 levels, browsers earlier or later).
pub fn compact_json(text: &str, max_depth: usize) -> Result<String, ApiError> {
    if nests_deeper_than(text, max_depth) {
        return Err(ApiError::InvalidJson(format!(
            "arrays and objects are nested deeper than {max_depth} levels \
             (server.max_json_depth)"
        )));
    }
    serde_json::from_str::<IgnoredAny>(text).map_err(|err| {
        ApiError::InvalidJson(format!(
            "{} at line {} column {}",
            describe(&err),
            err.line(),
            err.column()
        ))
    })?;
    Ok(strip_whitespace(text))
}

/// serde_json's message without its own position suffix (we add ours).
fn describe(err: &serde_json::Error) -> String {
    let text = err.to_string();
    match text.rfind(" at line ") {
        Some(at) => text[..at].to_owned(),
        None => text,
    }
}

/// Removes JSON whitespace outside strings. The input must be valid JSON.
/// Works on bytes: whitespace, quotes and backslashes are ASCII, which no
/// byte of a multi-byte UTF-8 character is; a body without any whitespace
/// byte (what most publishers send) is copied as it is.
fn strip_whitespace(json: &str) -> String {
    let space = |b: &u8| matches!(b, b' ' | b'\t' | b'\n' | b'\r');
    let bytes = json.as_bytes();
    if !bytes.iter().any(space) {
        return json.to_owned();
    }
    let mut out = Vec::with_capacity(bytes.len());
    let (mut in_string, mut escaped) = (false, false);
    for &b in bytes {
        if in_string {
            out.push(b);
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
        } else if !space(&b) {
            in_string = b == b'"';
            out.push(b);
        }
    }
    String::from_utf8(out).unwrap_or_else(|_| json.to_owned())
}

/// Whether `text` nests `[` and `{` (outside strings) deeper than `max`,
/// read as JSON would be; any text may be asked (a Mercure update's data).
pub fn nests_deeper_than(text: &str, max: usize) -> bool {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for byte in text.bytes() {
        if in_string {
            match (escaped, byte) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// The `data:` text of a publish body (JSON nested at most `max_depth`).
pub fn event_data(kind: BodyKind, body: &[u8], max_depth: usize) -> Result<String, ApiError> {
    let text = utf8(body)?;
    match kind {
        BodyKind::Json => compact_json(text, max_depth),
        BodyKind::Text => Ok(text.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The seed's event passes through byte for byte.
    #[test]
    fn seed_shape_is_unchanged() {
        let json = r#"{"Message":"hi","Value":3}"#;
        assert_eq!(compact_json(json, 128).unwrap(), json);
    }

    /// Whitespace goes, key order, numbers and string contents stay.
    #[test]
    fn compaction_keeps_everything_else() {
        let json = "{ \"z\" : 1.10 ,\n \"a\" : [ 1e2 , \"x \\\" y\\n\" ] }";
        assert_eq!(
            compact_json(json, 128).unwrap(),
            r#"{"z":1.10,"a":[1e2,"x \" y\n"]}"#
        );
    }

    /// Invalid JSON says where it failed.
    #[test]
    fn invalid_json_has_position() {
        let err = compact_json("{\"a\":\n  tru}", 128)
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 2"), "{err}");
    }

    /// Nesting is counted outside strings, and refused past the limit.
    #[test]
    fn deep_nesting_is_refused() {
        let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        assert!(compact_json(&deep(128), 128).is_ok());
        let err = compact_json(&deep(129), 128).unwrap_err().to_string();
        assert!(err.contains("nested deeper than 128"), "{err}");
        let bomb = format!("{{\"a\":{}{}}}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(compact_json(&bomb, 128).is_err());
        let in_string = format!("[\"{}\"]", "[".repeat(500));
        assert!(compact_json(&in_string, 2).is_ok());
        assert!(!nests_deeper_than("{\"a\\\"[[[\": 1}", 1));
    }

    proptest! {
        /// Compaction never changes the value and never leaves a line break.
        #[test]
        fn compaction_preserves_value(value in arb_json()) {
            let pretty = serde_json::to_string_pretty(&value).unwrap();
            let compact = compact_json(&pretty, 128).unwrap();
            prop_assert!(!compact.contains('\n') && !compact.contains('\r'));
            let back: serde_json::Value = serde_json::from_str(&compact).unwrap();
            prop_assert_eq!(back, value);
        }
    }

    fn arb_json() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            any::<String>().prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
                proptest::collection::btree_map(any::<String>(), inner, 0..4)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }
}
