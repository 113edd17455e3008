//! Topic selectors: which topics a subscription (or a JWT claim) covers.
//!
//! A selector comes in three shapes, by where it was written:
//! - a 0.x `topic` subscribe parameter or `mercure.publish`/`mercure.subscribe`
//!   claim entry (compatibility mode): `*` (every topic), an exact topic, or
//!   a URI template (RFC 6570, levels 1 to 4).
//!   Like the reference hub, a template is turned into a regular expression
//!   the way `github.com/yosida95/uritemplate` does it: each expression
//!   matches an optional run of the characters its operator may produce
//!   (`{id}` matches `[unreserved,]*` or `%XX`, `{+path}` also reserved
//!   characters, `{/a,b}` up to two `/`-separated segments, …). A selector
//!   that does not parse as a template (e.g. it contains a space or an
//!   unsupported operator) is an exact topic. Matching always tries exact
//!   equality first.
//! - a Mercure 1.0 matcher of type [`MatchType::Exact`] (`match`,
//!   `match_exact`, or an `authorization_details` topic without
//!   `match_type`): `*` or an exact topic, never a template.
//! - a Mercure 1.0 matcher of type [`MatchType::UrlPattern`] (`match_urlpattern`):
//!   a WHATWG URL pattern (the `urlpattern` crate). A relative pattern, and a
//!   relative topic matched against it, resolve against the hub's URL as the
//!   request addressed it (`scheme://host/.well-known/mercure`); a topic that
//!   is not a URL then matches no pattern. `*` is still every topic.
//!
//! The `regex` crate matches in linear time (for templates and, inside the
//! `urlpattern` crate, for URL patterns), so a crafted selector cannot make
//! matching slow; a template's compiled size is capped by
//! [`MAX_REGEX_BYTES`], a URL pattern's length by [`MAX_PATTERN_BYTES`].

use std::{fmt::Write as _, sync::Arc};

use regex::{Regex, RegexBuilder};
use serde::Serialize;
use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};
use url::Url;
use urlpattern::{UrlPattern, UrlPatternInit, UrlPatternMatchInput};

/// Compiled size allowed for one template's regex; bigger templates are
/// treated as exact topics.
pub const MAX_REGEX_BYTES: usize = 256 * 1024;
/// Longest URL pattern accepted. Patterns compile to regexes; this bounds
/// the work one subscribe parameter or claim entry can cause.
pub const MAX_PATTERN_BYTES: usize = 4096;

/// A matcher type (Mercure 1.0): how a `match*` subscribe parameter or an
/// `authorization_details` topic is read. Serialized under its canonical,
/// case-sensitive name, as in subscription ids and documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MatchType {
    /// Byte-for-byte comparison (`*` is still every topic).
    Exact,
    /// A WHATWG URL pattern.
    #[serde(rename = "urlpattern")]
    UrlPattern,
}

impl MatchType {
    /// The type a canonical name designates (`exact`, `urlpattern`), as in
    /// `match_type` and the subscriptions API's paths.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "exact" => Some(Self::Exact),
            "urlpattern" => Some(Self::UrlPattern),
            _ => None,
        }
    }

    /// The type a subscribe query parameter designates: `match` and
    /// `match_exact` are exact, `match_urlpattern` a URL pattern; any other
    /// name is `None` (for names in the reserved `match` prefix, a 400).
    pub fn from_parameter(name: &str) -> Option<Self> {
        match name {
            "match" => Some(Self::Exact),
            other => other.strip_prefix("match_").and_then(Self::from_name),
        }
    }

    /// The canonical name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Exact => "exact",
            Self::UrlPattern => "urlpattern",
        }
    }
}

/// Whether a query parameter name is in the reserved `match` namespace
/// (begins with `match`, compared ASCII case-insensitively).
pub fn is_match_parameter(name: &str) -> bool {
    name.get(..5)
        .is_some_and(|prefix| prefix.eq_ignore_ascii_case("match"))
}

/// Whether `text` may be a topic, a matcher, an update's `id` or `type`:
/// no C0 or C1 control character, no DEL, and no Unicode format character
/// (general category `Cf`: bidirectional and zero-width controls, which are
/// invisible and make identifiers spoofable). Rust strings are UTF-8
/// already.
pub fn is_protocol_string(text: &str) -> bool {
    text.chars()
        .all(|c| !c.is_control() && c.general_category() != GeneralCategory::Format)
}

/// Whether a published topic addresses the hub's reserved namespace: its
/// path, once resolved against the hub's URL (dot segments removed, the
/// percent-encoded unreserved characters decoded), is the hub's path or
/// below it, whatever its scheme and host. A topic that is not a URL
/// reference names no hub path.
pub fn addresses_hub(topic: &str, hub_path: &str) -> bool {
    // Only the path matters: any base with the hub's path resolves alike.
    let base = Url::parse("https://hub.invalid").and_then(|b| b.join(hub_path));
    let Ok(resolved) = base.and_then(|base| base.join(topic)) else {
        return false;
    };
    let path = decode_unreserved(resolved.path());
    path == hub_path
        || path
            .strip_prefix(hub_path)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// `%XX` escapes of RFC 3986 unreserved characters decoded (RFC 3986
/// §6.2.2.2), every other escape kept.
fn decode_unreserved(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let decoded = (bytes[i] == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok())
            .filter(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'));
        match decoded {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A URL pattern that does not parse (or is too long).
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("invalid URL pattern {pattern:?}: {reason}")]
pub struct InvalidPattern {
    pub pattern: String,
    pub reason: String,
}

/// One topic selector, compiled once when a subscription or token is read.
#[derive(Debug, Clone)]
pub enum TopicSelector {
    /// `*`: every topic.
    Any,
    /// A topic compared byte for byte.
    Exact(String),
    /// A URI template; `raw` still matches exactly.
    Template { raw: String, regex: Regex },
    /// A WHATWG URL pattern; `base` is the hub URL that relative patterns
    /// were, and relative topics are, resolved against.
    UrlPattern {
        raw: String,
        pattern: Arc<UrlPattern>,
        base: Arc<Url>,
    },
}

impl TopicSelector {
    /// A `topic` parameter or a legacy claim entry: `*`, a URI template, or
    /// else an exact topic.
    pub fn new(raw: &str) -> Self {
        if raw == "*" {
            return Self::Any;
        }
        if raw.contains('{')
            && let Some(pattern) = template_regex(raw)
            && let Ok(regex) = RegexBuilder::new(&pattern)
                .size_limit(MAX_REGEX_BYTES)
                .build()
        {
            return Self::Template {
                raw: raw.to_owned(),
                regex,
            };
        }
        Self::Exact(raw.to_owned())
    }

    /// An `exact` matcher: `*`, or a topic compared byte for byte.
    pub fn exact(raw: &str) -> Self {
        match raw {
            "*" => Self::Any,
            _ => Self::Exact(raw.to_owned()),
        }
    }

    /// A `urlpattern` matcher, relative patterns resolved against
    /// `base` (the hub's URL).
    pub fn url_pattern(raw: &str, base: &Url) -> Result<Self, InvalidPattern> {
        if raw == "*" {
            return Ok(Self::Any);
        }
        let invalid = |reason: String| InvalidPattern {
            pattern: raw.to_owned(),
            reason,
        };
        if raw.len() > MAX_PATTERN_BYTES {
            return Err(invalid(format!("longer than {MAX_PATTERN_BYTES} bytes")));
        }
        let init = UrlPatternInit::parse_constructor_string::<Regex>(raw, Some(base.clone()))
            .map_err(|err| invalid(err.to_string()))?;
        // Default options: `ignoreCase` stays off, as the spec requires.
        let pattern = <UrlPattern>::parse(init, Default::default())
            .map_err(|err| invalid(err.to_string()))?;
        Ok(Self::UrlPattern {
            raw: raw.to_owned(),
            pattern: Arc::new(pattern),
            base: Arc::new(base.clone()),
        })
    }

    /// A matcher of type `match_type`.
    pub fn typed(match_type: MatchType, raw: &str, base: &Url) -> Result<Self, InvalidPattern> {
        match match_type {
            MatchType::Exact => Ok(Self::exact(raw)),
            MatchType::UrlPattern => Self::url_pattern(raw, base),
        }
    }

    /// The selector as it was written.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Any => "*",
            Self::Exact(raw) | Self::Template { raw, .. } | Self::UrlPattern { raw, .. } => raw,
        }
    }

    pub fn matches(&self, topic: &str) -> bool {
        match self {
            Self::Any => true,
            Self::Exact(raw) => raw == topic,
            Self::Template { raw, regex } => raw == topic || regex.is_match(topic),
            Self::UrlPattern { pattern, base, .. } => base
                .join(topic)
                .is_ok_and(|url| matches!(pattern.test(UrlPatternMatchInput::Url(url)), Ok(true))),
        }
    }
}

/// Whether any of `topics` matches any of `selectors`.
pub fn any_matches(selectors: &[TopicSelector], topics: &[String]) -> bool {
    topics
        .iter()
        .any(|topic| selectors.iter().any(|s| s.matches(topic)))
}

/// Whether every one of `topics` matches some selector (publish rights).
pub fn all_match(selectors: &[TopicSelector], topics: &[String]) -> bool {
    if selectors.iter().any(|s| matches!(s, TopicSelector::Any)) {
        return true;
    }
    topics
        .iter()
        .all(|topic| selectors.iter().any(|s| s.matches(topic)))
}

/// `unreserved` of RFC 3986 as a regex class body.
const RE_UNRESERVED: &str = r"\x2d\x2e\x30-\x39\x41-\x5a\x5f\x61-\x7a\x7e";
/// `reserved` of RFC 3986 as a regex class body.
const RE_RESERVED: &str = r"\x21\x23\x24\x26-\x2c\x2f\x3a\x3b\x3d\x3f\x40\x5b\x5d";

/// How an expression's operator expands (RFC 6570, appendix A).
struct Operator {
    first: &'static str,
    sep: &'static str,
    named: bool,
    /// Reserved characters pass unencoded (`+` and `#`).
    reserved: bool,
}

fn operator(op: Option<char>) -> Option<Operator> {
    let (first, sep, named, reserved) = match op {
        None => ("", ",", false, false),
        Some('+') => ("", ",", false, true),
        Some('#') => ("#", ",", false, true),
        Some('.') => (".", ".", false, false),
        Some('/') => ("/", "/", false, false),
        Some(';') => (";", ";", true, false),
        Some('?') => ("?", "&", true, false),
        Some('&') => ("&", "&", true, false),
        _ => return None,
    };
    Some(Operator {
        first,
        sep,
        named,
        reserved,
    })
}

struct VarSpec {
    explode: bool,
}

/// The anchored regex for a URI template, or `None` when `template` is not
/// a valid one.
pub fn template_regex(template: &str) -> Option<String> {
    let mut out = String::from("^");
    let mut rest = template;
    while !rest.is_empty() {
        if let Some(body) = rest.strip_prefix('{') {
            let end = body.find('}')?;
            expression_regex(&body[..end], &mut out)?;
            rest = &body[end + 1..];
        } else {
            let end = rest.find('{').unwrap_or(rest.len());
            let literal = &rest[..end];
            check_literal(literal)?;
            out.push('(');
            out.push_str(&regex::escape(literal));
            out.push(')');
            rest = &rest[end..];
        }
    }
    out.push('$');
    Some(out)
}

/// Literals: RFC 6570 `literals` (any printable character except
/// `"'<>\^`{|}` and space, plus non-ASCII) or `%XX`.
fn check_literal(literal: &str) -> Option<()> {
    let mut chars = literal.chars();
    while let Some(c) = chars.next() {
        match c {
            '%' => {
                for _ in 0..2 {
                    chars.next().filter(char::is_ascii_hexdigit)?;
                }
            }
            '!' | '#' | '$' | '&' | '('..=';' | '=' | '?'..='[' | ']' | '_' | 'a'..='z' | '~' => {}
            c if is_ucschar_or_iprivate(c) => {}
            _ => return None,
        }
    }
    Some(())
}

fn is_ucschar_or_iprivate(c: char) -> bool {
    let c = c as u32;
    matches!(c, 0xA0..=0xD7FF | 0xE000..=0xFDCF | 0xFDF0..=0xFFEF)
        || (c >= 0x10000 && (c & 0xFFFF) <= 0xFFFD && !(0xE0000..0xE1000).contains(&c))
}

/// Appends the regex of one `{…}` expression (its body without braces).
fn expression_regex(body: &str, out: &mut String) -> Option<()> {
    let op_char = body.chars().next().filter(|c| "+#./;?&=,!@|".contains(*c));
    let op = operator(op_char)?;
    let list = &body[op_char.map_or(0, char::len_utf8)..];
    let vars = list
        .split(',')
        .map(parse_varspec)
        .collect::<Option<Vec<_>>>()?;
    let exploded = vars.iter().any(|v| v.explode);
    if !op.first.is_empty() {
        out.push_str("(?:");
        out.push_str(&regex::escape(op.first));
    }
    out.push('(');
    char_class(out, &op, op.named || vars[0].explode);
    if vars.len() > 1 || vars[0].explode {
        out.push_str("(?:");
        out.push_str(&regex::escape(op.sep));
        char_class(out, &op, op.named || exploded);
        out.push(')');
        if exploded {
            out.push('*');
        } else {
            let _ = write!(out, "{{0,{}}}", vars.len() - 1);
        }
    }
    out.push(')');
    if !op.first.is_empty() {
        out.push(')');
    }
    out.push('?');
    Some(())
}

/// The characters one value may expand to, repeated.
fn char_class(out: &mut String, op: &Operator, named: bool) {
    out.push_str("(?:(?:[");
    if !op.reserved {
        out.push_str(r"\x2c");
        if named {
            out.push_str(r"\x3d");
        }
    }
    out.push_str(RE_UNRESERVED);
    if op.reserved {
        out.push_str(RE_RESERVED);
    }
    out.push_str("]|%[[:xdigit:]][[:xdigit:]])*)");
}

/// `varname[:max-length]` or `varname*`.
fn parse_varspec(spec: &str) -> Option<VarSpec> {
    let (name, explode) = match spec.strip_suffix('*') {
        Some(name) => (name, true),
        None => (spec, false),
    };
    let name = match name.split_once(':') {
        Some((name, max)) if !explode => {
            let valid = !max.is_empty()
                && max.len() <= 4
                && max.bytes().all(|b| b.is_ascii_digit())
                && !max.starts_with('0');
            valid.then_some(name)?
        }
        Some(_) => return None,
        None => name,
    };
    valid_varname(name).then_some(VarSpec { explode })
}

/// `varchar *( ["."] varchar )`, varchar = ALPHA / DIGIT / "_" / pct-encoded.
fn valid_varname(name: &str) -> bool {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes[0] == b'.' || bytes[bytes.len() - 1] == b'.' {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = |at: usize| bytes.get(at).is_some_and(u8::is_ascii_hexdigit);
                if !hex(i + 1) || !hex(i + 2) {
                    return false;
                }
                i += 3;
            }
            b'.' if bytes[i - 1] == b'.' => return false,
            b'.' | b'_' => i += 1,
            b if b.is_ascii_alphanumeric() => i += 1,
            _ => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(selector: &str, topic: &str) -> bool {
        TopicSelector::new(selector).matches(topic)
    }

    /// `*` matches every topic, exact selectors only themselves.
    #[test]
    fn wildcard_and_exact() {
        assert!(matches("*", "https://example.com/books/1"));
        assert!(matches("*", ""));
        assert!(matches("https://example.com/a", "https://example.com/a"));
        assert!(!matches("https://example.com/a", "https://example.com/A"));
        assert!(!matches("https://example.com/a", "https://example.com/a/"));
    }

    /// The reference hub's template examples.
    #[test]
    fn simple_templates() {
        let books = "https://example.com/books/{id}";
        assert!(matches(books, "https://example.com/books/1"));
        assert!(matches(books, "https://example.com/books/foo-bar_baz.~"));
        assert!(matches(books, "https://example.com/books/%C3%A9"));
        assert!(matches(books, "https://example.com/books/"));
        assert!(matches(books, "https://example.com/books/1,2"));
        assert!(!matches(books, "https://example.com/books/1/reviews"));
        assert!(!matches(books, "https://example.com/books/a b"));
        assert!(!matches(books, "https://example.com/book/1"));
        assert!(!matches(books, "https://example.com/books/1?x"));
        // A template matches its own text too (exact comparison comes first).
        assert!(matches(books, books));
        let two = "https://example.com/{a}/{b}";
        assert!(matches(two, "https://example.com/x/y"));
        assert!(!matches(two, "https://example.com/x/y/z"));
    }

    /// Operators: reserved, fragment, label, path segments, parameters, queries.
    #[test]
    fn level_2_to_4_operators() {
        assert!(matches(
            "https://example.com{+path}",
            "https://example.com/a/b?c=d"
        ));
        assert!(!matches(
            "https://example.com/{path}",
            "https://example.com/a/b"
        ));
        assert!(matches("/doc{#section}", "/doc#intro/part"));
        assert!(matches("/doc{#section}", "/doc"));
        assert!(matches("/file{.ext}", "/file.json"));
        assert!(matches("/users{/id}", "/users/42"));
        assert!(matches("/users{/id}", "/users"));
        assert!(!matches("/users{/id}", "/users/42/posts"));
        assert!(matches("/users{/id,sub}", "/users/42/posts"));
        assert!(!matches("/users{/id,sub}", "/users/42/posts/1"));
        assert!(matches("/users{/path*}", "/users/42/posts/1"));
        assert!(matches("/map{;x,y}", "/map;x=1;y=2"));
        assert!(matches("/search{?q,lang}", "/search?q=cat&lang=en"));
        assert!(!matches("/search{?q,lang}", "/search?q=cat&lang=en&x=1"));
        assert!(matches("/search{?q*}", "/search?a=1&b=2&c=3"));
        assert!(matches("/search?x=1{&q}", "/search?x=1&q=dog"));
        assert!(matches("/trunc/{var:3}", "/trunc/abc"));
        assert!(matches("/trunc/{var:3}", "/trunc/abcdef"));
    }

    /// Invalid templates are exact topics, never errors.
    #[test]
    fn invalid_templates_are_exact() {
        for raw in [
            "https://example.com/{",
            "https://example.com/{}",
            "https://example.com/{a b}",
            "https://example.com/{=x}",
            "https://example.com/{|x}",
            "https://example.com/{x:0}",
            "https://example.com/{x:10000}",
            "https://example.com/{x*:3}",
            "https://example.com/a b/{x}",
            "https://example.com/}/{x}",
            "https://example.com/{x..y}",
            "https://example.com/%zz/{x}",
        ] {
            let selector = TopicSelector::new(raw);
            assert!(matches!(selector, TopicSelector::Exact(_)), "{raw}");
            assert!(selector.matches(raw), "{raw}");
        }
    }

    /// Generated regexes are the reference library's.
    #[test]
    fn regex_shape() {
        assert_eq!(
            template_regex("/b/{id}").unwrap(),
            r"^(/b/)((?:(?:[\x2c\x2d\x2e\x30-\x39\x41-\x5a\x5f\x61-\x7a\x7e]|%[[:xdigit:]][[:xdigit:]])*))?$"
        );
        assert!(template_regex("/{+p}").unwrap().contains(RE_RESERVED));
    }

    /// Publish rights need every topic covered; receiving needs one.
    #[test]
    fn all_and_any() {
        let selectors = vec![
            TopicSelector::new("https://example.com/books/{id}"),
            TopicSelector::new("urn:a"),
        ];
        let topics = vec!["urn:a".to_owned(), "urn:b".to_owned()];
        assert!(any_matches(&selectors, &topics));
        assert!(!all_match(&selectors, &topics));
        assert!(all_match(&[TopicSelector::Any], &topics));
        assert!(!any_matches(&[], &topics));
    }

    fn hub() -> Url {
        Url::parse("http://hub.test:8080/.well-known/mercure").unwrap()
    }

    /// `match`/`match_exact` are exact, `match_urlpattern` a URL pattern;
    /// other names in the `match` namespace are recognised as reserved.
    #[test]
    fn match_parameters() {
        assert_eq!(MatchType::from_parameter("match"), Some(MatchType::Exact));
        assert_eq!(
            MatchType::from_parameter("match_exact"),
            Some(MatchType::Exact)
        );
        assert_eq!(
            MatchType::from_parameter("match_urlpattern"),
            Some(MatchType::UrlPattern)
        );
        for reserved in [
            "matchURLPattern",
            "match_URLPattern",
            "matchExact",
            "match_regexp",
            "MATCH",
            "Matcher",
            "match_type",
        ] {
            assert_eq!(MatchType::from_parameter(reserved), None, "{reserved}");
            assert!(is_match_parameter(reserved), "{reserved}");
        }
        assert!(!is_match_parameter("topic") && !is_match_parameter("mat"));
    }

    /// Control and format characters are refused; other text is fine.
    #[test]
    fn protocol_strings() {
        assert!(is_protocol_string("https://example.com/é/書"));
        for bad in [
            "a\nb",
            "a\u{0}",
            "a\u{7f}",
            "a\u{85}",
            "a\u{200b}",
            "a\u{202e}",
            "\u{feff}",
        ] {
            assert!(!is_protocol_string(bad), "{bad:?}");
        }
    }

    /// The reserved namespace is found after resolution and normalisation.
    #[test]
    fn reserved_hub_namespace() {
        let hub = "/.well-known/mercure";
        for topic in [
            "/.well-known/mercure",
            "/.well-known/mercure/subscriptions/x",
            "https://hub.example.com/.well-known/mercure/subscriptions/a/b",
            "/.well-known/%6Dercure/x",
            "/.well-known/mercure/../mercure/x",
            "/a/../.well-known/mercure",
            "../../.well-known/mercure",
        ] {
            assert!(addresses_hub(topic, hub), "{topic}");
        }
        for topic in [
            "/.well-known/mercurex",
            "https://example.com/books/1",
            "urn:uuid:1",
            "a topic",
            "/.well-known/mercure%2Fx",
        ] {
            assert!(!addresses_hub(topic, hub), "{topic}");
        }
    }

    /// An exact matcher never reads a template; `*` is still everything.
    #[test]
    fn exact_matchers_are_not_templates() {
        let books = TopicSelector::exact("https://example.com/books/{id}");
        assert!(books.matches("https://example.com/books/{id}"));
        assert!(!books.matches("https://example.com/books/1"));
        assert!(TopicSelector::exact("*").matches("anything"));
    }

    /// URL patterns match absolute topics, and relative ones against the hub.
    #[test]
    fn url_patterns() {
        let books = TopicSelector::url_pattern("https://example.com/books/:id", &hub()).unwrap();
        assert!(books.matches("https://example.com/books/1"));
        assert!(books.matches("https://EXAMPLE.com/books/1"));
        assert!(!books.matches("https://example.com/books/1/reviews"));
        assert!(!books.matches("https://example.com/Books/1"));
        assert!(!books.matches("not a url at all"));
        let relative =
            TopicSelector::url_pattern("/.well-known/mercure/subscriptions/*", &hub()).unwrap();
        assert!(relative.matches("/.well-known/mercure/subscriptions/exact/a/b"));
        assert!(relative.matches("http://hub.test:8080/.well-known/mercure/subscriptions/x"));
        assert!(!relative.matches("http://other.test/.well-known/mercure/subscriptions/x"));
        assert!(matches!(
            TopicSelector::url_pattern("*", &hub()),
            Ok(TopicSelector::Any)
        ));
        assert!(TopicSelector::url_pattern("https://example.com/(", &hub()).is_err());
        let long = format!("https://example.com/{}", "a".repeat(MAX_PATTERN_BYTES));
        assert!(TopicSelector::url_pattern(&long, &hub()).is_err());
    }
}
