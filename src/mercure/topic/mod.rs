//! Topic selectors: which topics a subscription (or a JWT claim) covers.
//!
//! A selector comes in three shapes, by where it was written:
//! - a 0.x `topic` subscribe parameter or `mercure.publish`/`mercure.subscribe`
//!   claim entry (compatibility mode): `*` (every topic), an exact topic, or
//!   a URI template (RFC 6570, levels 1 to 4), matched as a regular
//!   expression the way the reference hub does ([`template`]). A selector
//!   that does not parse as a template (e.g. it contains a space or an
//!   unsupported operator), or whose regex is bigger than one may be, is an
//!   exact topic. Matching always tries exact equality first.
//! - a Mercure 1.0 matcher of type [`MatchType::Exact`] (`match`,
//!   `match_exact`, or an `authorization_details` topic without
//!   `match_type`): `*` or an exact topic, never a template.
//! - a Mercure 1.0 matcher of type [`MatchType::UrlPattern`] (`match_urlpattern`):
//!   a WHATWG URL pattern (the `urlpattern` crate). A relative pattern, and a
//!   relative topic matched against it, resolve against the hub's URL as the
//!   request addressed it (`scheme://host/.well-known/mercure`); a topic that
//!   is not a URL then matches no pattern. `*` is still every topic.
//!
//! Templates and URL patterns compile to regexes of the bounded engine
//! ([`engine`]: linear-time matching, a size limit per regex, a budget per
//! request), through a [`Compiler`] that shares what it compiled with every
//! request ([`compiler`]), on threads of their own ([`slots`]). A
//! selector's text is at most [`MAX_PATTERN_BYTES`].

pub mod compiler;
pub mod engine;
pub mod slots;
pub mod template;

use std::sync::Arc;

use serde::Serialize;
use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};
use url::Url;
use urlpattern::{UrlPattern, UrlPatternMatchInput};

pub use compiler::Compiler;
use engine::BoundedRegex;
pub use engine::{MAX_REGEX_BYTES, MAX_REQUEST_BYTES, TooExpensive};

/// Longest selector text accepted (a URL pattern, a template, a topic):
/// the reference hub's limit. Its compiled size is bounded by the engine's
/// limits, not by this.
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
/// already. (No ASCII character is a format character: they skip the
/// table lookup, which was a fifth of a cached subscribe's CPU time.)
pub fn is_protocol_string(text: &str) -> bool {
    text.chars().all(|c| match c.is_ascii() {
        true => !c.is_ascii_control(),
        false => !c.is_control() && c.general_category() != GeneralCategory::Format,
    })
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

impl InvalidPattern {
    pub fn new(pattern: &str, reason: impl Into<String>) -> Self {
        Self {
            pattern: pattern.to_owned(),
            reason: reason.into(),
        }
    }
}

/// Why a selector was not compiled.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum SelectorError {
    #[error(transparent)]
    Invalid(#[from] InvalidPattern),
    /// It ran into one of the engine's limits.
    #[error("the topic matcher {pattern:?} is too expensive: {limit}")]
    TooExpensive {
        pattern: String,
        limit: TooExpensive,
    },
    /// A [`Compiler::cached_only`] met a selector it would have to compile.
    #[error("the topic matcher is not compiled yet")]
    NotCached,
}

impl SelectorError {
    pub fn too_expensive(pattern: &str, limit: TooExpensive) -> Self {
        Self::TooExpensive {
            pattern: pattern.to_owned(),
            limit,
        }
    }
}

/// One topic selector, compiled once when a subscription or token is read
/// (and shared through the compiler's cache: clones share the regexes).
#[derive(Debug, Clone)]
pub enum TopicSelector {
    /// `*`: every topic.
    Any,
    /// A topic compared byte for byte.
    Exact(String),
    /// A URI template; `raw` still matches exactly.
    Template {
        raw: String,
        regex: Arc<BoundedRegex>,
    },
    /// A WHATWG URL pattern; `base` is the hub URL that relative patterns
    /// were, and relative topics are, resolved against.
    UrlPattern {
        raw: String,
        pattern: Arc<UrlPattern<BoundedRegex>>,
        base: Arc<Url>,
    },
}

impl TopicSelector {
    /// A `topic` parameter or a legacy claim entry alone (with a budget of
    /// its own): `*`, a URI template, or else an exact topic.
    pub fn new(raw: &str) -> Self {
        Compiler::default()
            .legacy(raw)
            .unwrap_or_else(|_| Self::Exact(raw.to_owned()))
    }

    /// An `exact` matcher: `*`, or a topic compared byte for byte.
    pub fn exact(raw: &str) -> Self {
        match raw {
            "*" => Self::Any,
            _ => Self::Exact(raw.to_owned()),
        }
    }

    /// A `urlpattern` matcher alone (with a budget of its own), relative
    /// patterns resolved against `base` (the hub's URL).
    pub fn url_pattern(raw: &str, base: &Url) -> Result<Self, SelectorError> {
        Self::typed(MatchType::UrlPattern, raw, base)
    }

    /// A matcher of type `match_type` alone (with a budget of its own);
    /// relative URL patterns resolve against `base` (the hub's URL).
    pub fn typed(match_type: MatchType, raw: &str, base: &Url) -> Result<Self, SelectorError> {
        Compiler::default().typed(match_type, raw, base)
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
