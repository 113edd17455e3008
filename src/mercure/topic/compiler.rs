//! Compiling selectors: a [`Compiler`] compiles the URL patterns and 0.x
//! URI templates of one request (its token's, then its matchers') within
//! the request's [`CompileBudget`], through a cache every request shares.
//!
//! The cache holds compiled selectors by what decides the result: the kind,
//! the text, and for a URL pattern the base URL its relative parts resolve
//! against (the hub's URL as the request addressed it). A thousand
//! subscribers with the same matchers compile them once; a cache hit costs
//! no budget. Refusals that depend on the selector alone (a URL pattern
//! that does not parse, or with a regex bigger than one may be) are cached
//! too; running out of a request's budget is not (it depends on the rest of
//! the request). The cache is bounded by the bytes its entries compiled to
//! ([`CACHE_BYTES`]), and is one per process: the token check reads claims
//! where no application state reaches, and a compiled selector depends on
//! nothing else.

use std::sync::{Arc, LazyLock};

use quick_cache::{Equivalent, Weighter, sync::Cache};
use url::Url;
use urlpattern::{UrlPattern, UrlPatternInit};

use super::{
    InvalidPattern, MAX_PATTERN_BYTES, MatchType, SelectorError, TopicSelector,
    engine::{
        self, BoundedRegex, BuildError, ByWeight, CompileBudget, ENTRY_OVERHEAD, MAX_TEXT_BYTES,
        TooExpensive,
    },
    template,
};

/// Most bytes the cached selectors may have compiled to, all together
/// (entries are weighed by what compiling them was charged, plus their
/// text; the regexes they share with other selectors are the engine's
/// cache's). Beyond it the least recently useful entries go. 32 MiB holds
/// some 10,000 ordinary URL patterns.
pub const CACHE_BYTES: u64 = 32 * 1024 * 1024;
/// How many entries the cache is sized for up front (it grows by weight,
/// not by count).
const CACHE_ENTRIES: usize = 8192;

/// The selectors compiled so far, shared by every request.
static CACHE: LazyLock<Cache<Key, Entry, ByWeight>> =
    LazyLock::new(|| Cache::with_weighter(CACHE_ENTRIES, CACHE_BYTES, ByWeight));

/// What decides a compiled selector.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    kind: Kind,
    raw: Box<str>,
    /// The base URL of a URL pattern; empty for a template.
    base: Box<str>,
}

/// A [`Key`] borrowed, to look one up without copying the texts: it
/// hashes as the `Key` it names (same fields, same order; `&str` and
/// `Box<str>` hash alike).
#[derive(Hash)]
struct KeyRef<'a> {
    kind: Kind,
    raw: &'a str,
    base: &'a str,
}

impl Equivalent<Key> for KeyRef<'_> {
    fn equivalent(&self, key: &Key) -> bool {
        self.kind == key.kind && self.raw == &*key.raw && self.base == &*key.base
    }
}

impl KeyRef<'_> {
    fn owned(&self) -> Key {
        Key {
            kind: self.kind,
            raw: self.raw.into(),
            base: self.base.into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Template,
    UrlPattern,
}

/// A cached compile, and its weight.
#[derive(Clone)]
struct Entry {
    /// The selector (its regexes shared by every clone), or its refusal.
    compiled: Result<TopicSelector, SelectorError>,
    weight: u64,
}

impl Weighter<Key, Entry> for ByWeight {
    fn weight(&self, _key: &Key, entry: &Entry) -> u64 {
        entry.weight
    }
}

/// Compiles the selectors of one request within its budget.
#[derive(Debug)]
pub struct Compiler {
    budget: CompileBudget,
    /// `false`: only cache hits (a miss is [`SelectorError::NotCached`]),
    /// for the first, inline pass over a request.
    compiles: bool,
}

impl Default for Compiler {
    fn default() -> Self {
        Self::continuing(0)
    }
}

impl Compiler {
    /// A compiler for the rest of a request that already spent `spent`
    /// bytes of its budget (on its token's matchers).
    pub fn continuing(spent: usize) -> Self {
        let mut budget = CompileBudget::default();
        budget.charge(spent);
        Self {
            budget,
            compiles: true,
        }
    }

    /// A compiler that compiles nothing: every selector must be cached.
    pub fn cached_only() -> Self {
        Self {
            compiles: false,
            ..Self::default()
        }
    }

    /// A compiler with a budget of `limit` bytes.
    #[cfg(test)]
    pub fn with_budget(limit: usize) -> Self {
        Self {
            budget: CompileBudget::with_limit(limit),
            compiles: true,
        }
    }

    /// Bytes charged to the budget so far.
    pub fn spent(&self) -> usize {
        self.budget.spent()
    }

    /// A 0.x `topic` parameter or `mercure` claim entry: `*`, a URI
    /// template, or else (not a template, or one too big) an exact topic.
    pub fn legacy(&mut self, raw: &str) -> Result<TopicSelector, SelectorError> {
        if raw == "*" {
            return Ok(TopicSelector::Any);
        }
        let exact = || TopicSelector::Exact(raw.to_owned());
        if !raw.contains('{') || raw.len() > MAX_PATTERN_BYTES {
            return Ok(exact());
        }
        let key = KeyRef {
            kind: Kind::Template,
            raw,
            base: "",
        };
        self.cached(key, |budget| {
            // The regex's text is made only on a miss, and no longer than
            // one regex may be: it may be 35 times the template's. Longer
            // is an exact topic, as an invalid template is.
            let Some(source) = template::template_regex(raw, MAX_TEXT_BYTES) else {
                return Ok(exact());
            };
            match BoundedRegex::build(&source, false, budget) {
                Ok(regex) => Ok(TopicSelector::Template {
                    raw: raw.to_owned(),
                    regex: Arc::new(regex),
                }),
                Err(BuildError::TooExpensive(TooExpensive::Request)) => {
                    Err(SelectorError::too_expensive(raw, TooExpensive::Request))
                }
                Err(BuildError::TooExpensive(TooExpensive::Regex) | BuildError::Invalid) => {
                    Ok(exact())
                }
            }
        })
    }

    /// A matcher of type `match_type`; URL patterns resolve against `base`
    /// (the hub's URL).
    pub fn typed(
        &mut self,
        match_type: MatchType,
        raw: &str,
        base: &Url,
    ) -> Result<TopicSelector, SelectorError> {
        match match_type {
            MatchType::Exact => Ok(TopicSelector::exact(raw)),
            MatchType::UrlPattern => self.url_pattern(raw, base),
        }
    }

    /// A `urlpattern` matcher.
    fn url_pattern(&mut self, raw: &str, base: &Url) -> Result<TopicSelector, SelectorError> {
        if raw == "*" {
            return Ok(TopicSelector::Any);
        }
        if raw.len() > MAX_PATTERN_BYTES {
            let reason = format!("longer than {MAX_PATTERN_BYTES} bytes");
            return Err(InvalidPattern::new(raw, reason).into());
        }
        let key = KeyRef {
            kind: Kind::UrlPattern,
            raw,
            base: base.as_str(),
        };
        self.cached(key, |budget| {
            let (parsed, refused) = engine::compiling(budget, || parse_url_pattern(raw, base));
            match (refused, parsed) {
                (Some(limit), _) => Err(SelectorError::too_expensive(raw, limit)),
                (None, Err(reason)) => Err(InvalidPattern::new(raw, reason).into()),
                (None, Ok(pattern)) => Ok(TopicSelector::UrlPattern {
                    raw: raw.to_owned(),
                    pattern: Arc::new(pattern),
                    base: Arc::new(base.clone()),
                }),
            }
        })
    }

    /// The cached selector of `key`, else `compile`'s (when this compiler
    /// compiles), charged to the budget and cached unless it ran out of
    /// the budget (that depends on the rest of the request).
    fn cached(
        &mut self,
        key: KeyRef<'_>,
        compile: impl FnOnce(&mut CompileBudget) -> Result<TopicSelector, SelectorError>,
    ) -> Result<TopicSelector, SelectorError> {
        if let Some(entry) = CACHE.get(&key) {
            return entry.compiled;
        }
        if !self.compiles {
            return Err(SelectorError::NotCached);
        }
        let before = self.budget.spent();
        let compiled = compile(&mut self.budget);
        let out_of_budget = matches!(
            compiled,
            Err(SelectorError::TooExpensive {
                limit: TooExpensive::Request,
                ..
            })
        );
        if !out_of_budget {
            let charged = self.budget.spent().saturating_sub(before);
            let weight = charged + key.raw.len() + key.base.len() + ENTRY_OVERHEAD;
            let entry = Entry {
                compiled: compiled.clone(),
                weight: weight as u64,
            };
            CACHE.insert(key.owned(), entry);
        }
        compiled
    }
}

/// A URL pattern's constructor string, parsed and compiled (`ignoreCase`
/// off, as the spec requires), or why it is not one.
fn parse_url_pattern(raw: &str, base: &Url) -> Result<UrlPattern<BoundedRegex>, String> {
    let init = UrlPatternInit::parse_constructor_string::<BoundedRegex>(raw, Some(base.clone()))
        .map_err(|err| err.to_string())?;
    UrlPattern::<BoundedRegex>::parse(init, Default::default()).map_err(|err| err.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The limit a refusal names, if it names one.
    fn limit_of(refusal: Option<&SelectorError>) -> Option<TooExpensive> {
        match refusal {
            Some(SelectorError::TooExpensive { limit, .. }) => Some(*limit),
            _ => None,
        }
    }

    fn hub() -> Url {
        Url::parse("http://hub.test/.well-known/mercure").expect("a URL")
    }

    /// A cached selector costs no budget the second time, in another
    /// request, and the inline pass finds it.
    #[test]
    fn the_cache_is_shared() {
        let raw = "https://cache.test/shared/:id(\\d+)/:rest*";
        let mut first = Compiler::default();
        let selector = first
            .typed(MatchType::UrlPattern, raw, &hub())
            .expect("valid");
        assert!(selector.matches("https://cache.test/shared/1/a/b"));
        assert!(first.spent() > 0);
        let mut second = Compiler::default();
        second
            .typed(MatchType::UrlPattern, raw, &hub())
            .expect("cached");
        assert_eq!(second.spent(), 0);
        let mut inline = Compiler::cached_only();
        assert!(inline.typed(MatchType::UrlPattern, raw, &hub()).is_ok());
        assert_eq!(
            inline
                .typed(MatchType::UrlPattern, "/never/compiled/:x", &hub())
                .err(),
            Some(SelectorError::NotCached)
        );
        // Another base is another selector: relative parts resolve against
        // it (its regexes that are the same as before are shared).
        let relative = "/cache-relative/:id";
        let here = Compiler::default()
            .typed(MatchType::UrlPattern, relative, &hub())
            .expect("valid");
        let other = Url::parse("http://other.test/.well-known/mercure").expect("a URL");
        let there = Compiler::default()
            .typed(MatchType::UrlPattern, relative, &other)
            .expect("valid");
        assert!(here.matches("http://hub.test/cache-relative/1"));
        assert!(there.matches("http://other.test/cache-relative/1"));
        assert!(!there.matches("http://hub.test/cache-relative/1"));
    }

    /// A refusal of the selector alone is cached (and costs nothing the
    /// second time); running out of a request's budget is not.
    #[test]
    fn refusals() {
        let huge = "https://cache.test/:a(\\pL{300})";
        let mut compiler = Compiler::default();
        let refused = compiler.typed(MatchType::UrlPattern, huge, &hub());
        assert_eq!(
            limit_of(refused.as_ref().err()),
            Some(TooExpensive::Regex),
            "{refused:?}"
        );
        let mut again = Compiler::default();
        assert_eq!(
            again.typed(MatchType::UrlPattern, huge, &hub()).err(),
            refused.err()
        );
        assert_eq!(again.spent(), 0);

        let mut poor = Compiler::with_budget(4 * 1024);
        let refusal = (0..100)
            .map(|n| {
                poor.typed(
                    MatchType::UrlPattern,
                    &format!("/poor/{n}/:id(\\d+)"),
                    &hub(),
                )
            })
            .find_map(Result::err);
        assert_eq!(
            limit_of(refusal.as_ref()),
            Some(TooExpensive::Request),
            "{refusal:?}"
        );
        let mut rich = Compiler::default();
        rich.typed(MatchType::UrlPattern, "/poor/99/:id(\\d+)", &hub())
            .expect("not cached as refused");
    }

    /// 0.x templates: valid ones compile (and are cached), invalid or too
    /// big ones are exact topics; only the request's budget refuses.
    #[test]
    fn legacy_templates() {
        let mut compiler = Compiler::default();
        let books = compiler
            .legacy("https://cache.test/books/{id}")
            .expect("valid");
        assert!(matches!(books, TopicSelector::Template { .. }));
        assert!(books.matches("https://cache.test/books/1"));
        let big = format!("/cache/{{/{}}}", vec!["a"; 2000].join(","));
        assert!(big.len() <= MAX_PATTERN_BYTES);
        assert!(matches!(
            compiler.legacy(&big).expect("an exact topic"),
            TopicSelector::Exact(_)
        ));
        let mut poor = Compiler::with_budget(4 * 1024);
        let refusal = (0..100)
            .map(|n| poor.legacy(&format!("/legacy/{n}{{/a,b,c}}")))
            .find_map(Result::err);
        assert_eq!(
            limit_of(refusal.as_ref()),
            Some(TooExpensive::Request),
            "{refusal:?}"
        );
    }
}
