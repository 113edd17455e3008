//! Reading Mercure requests: the `name=value` pairs of query strings and
//! form bodies (`application/x-www-form-urlencoded`, as `URLSearchParams`
//! writes them), strictly UTF-8.

use actix_web::{HttpRequest, http::header, web};
use percent_encoding::percent_decode_str;

use super::error::MercureError;
use crate::http::body::read_body;

/// The pairs of a form body of at most `limit` bytes (413 beyond). A body
/// that is not a form is `None` (the caller decides: a publish then has no
/// fields, a `QUERY` is refused).
pub async fn read_form(
    req: &HttpRequest,
    payload: web::Payload,
    limit: usize,
) -> Result<Option<Vec<(String, String)>>, MercureError> {
    let body = read_body(req, payload, limit).await?;
    let is_form = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| {
            v.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    if !is_form {
        return Ok(body.is_empty().then(Vec::new));
    }
    let text = std::str::from_utf8(&body)
        .map_err(|_| MercureError::BadRequest("the body must be UTF-8".into()))?;
    parse_pairs(text).map(Some)
}

/// `name=value` pairs of a query string or form body, strictly UTF-8. A
/// name without `=` has an empty value.
pub fn parse_pairs(text: &str) -> Result<Vec<(String, String)>, MercureError> {
    let decode = |part: &str| {
        let part = part.replace('+', " ");
        percent_decode_str(&part)
            .decode_utf8()
            .map(|s| s.into_owned())
            .map_err(|_| MercureError::BadRequest("field names and values must be UTF-8".into()))
    };
    text.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            Ok((decode(name)?, decode(value)?))
        })
        .collect()
}

/// Every value of `name`, in order.
pub fn values<'a>(pairs: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    pairs
        .iter()
        .filter(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
        .collect()
}

/// The first value of `name`, if it is present at all.
pub fn first<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Forms decode `+`, percent escapes and repeated fields.
    #[test]
    fn form_decoding() {
        let pairs =
            parse_pairs("topic=a&topic=https%3A%2F%2Fx%2F1&data=two%0Alines+here&private").unwrap();
        assert_eq!(values(&pairs, "topic"), vec!["a", "https://x/1"]);
        assert_eq!(values(&pairs, "data"), vec!["two\nlines here"]);
        assert_eq!(values(&pairs, "private"), vec![""]);
        assert_eq!(first(&pairs, "topic"), Some("a"));
        assert_eq!(first(&pairs, "id"), None);
        assert!(parse_pairs("data=%FF").is_err());
    }
}
