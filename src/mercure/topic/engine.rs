//! The bounded regex engine of every compiled selector: a URL pattern's
//! components (through the `urlpattern` crate's [`RegExp`] trait) and a 0.x
//! URI template. A regex is a `regex_automata::meta::Regex` (linear-time
//! matching, as the `regex` crate's) built under two limits, so that what
//! one request makes the hub compile is bounded, and bounded the same way
//! on every run:
//!
//! - one regex: it may cost at most [`MAX_REGEX_BYTES`];
//! - one request: all of its regexes (the token's matchers and the
//!   request's) at most [`MAX_REQUEST_BYTES`], counted by a
//!   [`CompileBudget`].
//!
//! Compiling takes time in proportion to what it reads and builds, so a
//! regex costs [`TEXT_COST`] per byte of its text plus the size it reports
//! (`memory_usage`: its forward and reverse NFAs); a build stopped by a
//! limit is charged the whole limit it was given. A regex is never built
//! with a limit larger than what is left of the budget, so the budget
//! bounds the work done, not only what is kept.
//!
//! Compiled regexes are cached by their pattern, for every selector of
//! every request: most of a URL pattern's components are the same regex in
//! every pattern (`^https$`, `^(.*)$`, a common host), and a cached regex
//! costs no budget.
//!
//! URL patterns are ECMAScript regexes with the `u` flag, in which `\d`,
//! `\w` and `\b` are ASCII; the `regex` crate's are Unicode (`\w` is 770
//! ranges, and `\w{200}` compiled to megabytes). Regexes here keep the
//! ECMAScript meaning: `\d`, `\w`, `\D`, `\W` become their ASCII classes and
//! `\b`, `\B` ASCII word boundaries before compiling.

use std::{
    borrow::Cow,
    cell::Cell,
    sync::{Arc, LazyLock},
};

use quick_cache::{Weighter, sync::Cache};
use regex_automata::meta::{self, Regex};
use regex_syntax::ast::{self, AssertionKind, Ast, ClassPerl, ClassPerlKind, ClassSetItem};
use urlpattern::{RegexSyntax, regexp::RegExp};

/// Most one regex may cost (its text and what it compiles to, see the
/// module docs). A URL pattern component's regex costs 2 to 5 KiB, a 0.x
/// template's about 7 KiB, `\w{200}` (ASCII) 25 KiB, one `\pL` (a
/// Unicode class) 50 KiB: `\pL{3}` is over. A URL pattern with a costlier
/// regex is refused; a costlier 0.x template is an exact topic (as an
/// invalid template is).
pub const MAX_REGEX_BYTES: usize = 128 * 1024;
/// Most all the regexes of one request may cost: its token's matchers and
/// its own. 100 different ordinary URL patterns (the most one
/// request or token may carry) take under 400 KiB, as their regexes are
/// mostly shared; about 280 different ordinary 0.x templates fit. Spending
/// all of it takes 10 to 20 ms of CPU (docs/security.md, "Selector
/// cost"). Cached regexes and selectors cost nothing.
pub const MAX_REQUEST_BYTES: usize = 2 * 1024 * 1024;
/// What one byte of a regex's text is charged, in compiled bytes: parsing
/// and translating it (twice when it has classes to rewrite) is work that
/// `memory_usage` does not see. Measured on this project's machine: about
/// 0.2 µs per byte of text, about 6.5 µs per KiB compiled. Without it, a
/// 0.x template of 95 `{+a}` expressions (13 KB of regex text, 64 KB
/// compiled) cost three times what it was charged.
pub const TEXT_COST: usize = 32;
/// The longest regex text that fits within the limit of one regex (4 KiB):
/// longer is refused before it is read.
pub const MAX_TEXT_BYTES: usize = MAX_REGEX_BYTES / TEXT_COST;
/// Memory the lazy DFA of one regex may take while matching, per thread
/// that matches with it (its transition cache; when full it is cleared,
/// and a regex whose cache is cleared too often matches with the NFA
/// instead: slower, still linear). The `regex` crate's default is 2 MiB;
/// selectors are small and there may be thousands of them.
const MATCH_CACHE_BYTES: usize = 256 * 1024;
/// Most bytes the cached regexes may take together (`memory_usage`, plus
/// their pattern); beyond it the least recently useful go (a selector that
/// holds one keeps it alive). 32 MiB holds some 10,000 regexes of ordinary
/// patterns.
pub const REGEX_CACHE_BYTES: u64 = 32 * 1024 * 1024;
/// How many regexes the cache is sized for up front (it is bounded by
/// weight, not by count).
const REGEX_CACHE_ENTRIES: usize = 8192;
/// What a cache entry weighs besides its compiled bytes and its text (the
/// key, the `Arc`, the cache's bookkeeping), roughly.
pub const ENTRY_OVERHEAD: usize = 256;

/// Which limit a compile ran into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TooExpensive {
    /// One regex is bigger than [`MAX_REGEX_BYTES`]: a property of the
    /// selector alone.
    #[error(
        "one of its regular expressions costs more than {MAX_REGEX_BYTES} bytes to compile \
         (the limit of one expression)"
    )]
    Regex,
    /// The request's regexes together need more than [`MAX_REQUEST_BYTES`].
    #[error(
        "the topic matchers of this request cost more than {MAX_REQUEST_BYTES} bytes to \
         compile (the limit of one request)"
    )]
    Request,
}

/// What the regexes of one request may still compile to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompileBudget {
    limit: usize,
    spent: usize,
}

impl Default for CompileBudget {
    /// The budget of one request, [`MAX_REQUEST_BYTES`].
    fn default() -> Self {
        Self::with_limit(MAX_REQUEST_BYTES)
    }
}

impl CompileBudget {
    /// A budget of `limit` bytes (tests use small ones).
    pub const fn with_limit(limit: usize) -> Self {
        Self { limit, spent: 0 }
    }

    /// Bytes charged so far.
    pub fn spent(&self) -> usize {
        self.spent
    }

    /// Bytes left.
    pub fn remaining(&self) -> usize {
        self.limit.saturating_sub(self.spent)
    }

    /// Charges `bytes` (compiled, or attempted and refused).
    pub fn charge(&mut self, bytes: usize) {
        self.spent = self.spent.saturating_add(bytes);
    }
}

/// What decides a compiled regex: its pattern (as written) and whether it
/// ignores case.
type RegexKey = (Box<str>, bool);

/// Weighs a cache entry by the bytes it holds.
#[derive(Debug, Clone, Copy)]
pub struct ByWeight;

impl Weighter<RegexKey, Arc<Regex>> for ByWeight {
    fn weight(&self, key: &RegexKey, regex: &Arc<Regex>) -> u64 {
        (regex.memory_usage() + key.0.len() + ENTRY_OVERHEAD) as u64
    }
}

/// Why a regex was not built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuildError {
    /// Not a regex (a syntax error).
    Invalid,
    TooExpensive(TooExpensive),
}

/// A compiled regex: a URL pattern component's, or a 0.x template's.
#[derive(Debug)]
pub struct BoundedRegex {
    /// Shared with the regex cache and every selector that has it (a
    /// `meta::Regex` clone would get a new pool of match caches).
    regex: Arc<Regex>,
    /// The pattern as `urlpattern` wrote it (before the ECMAScript rewrite).
    source: String,
}

impl BoundedRegex {
    /// Builds `pattern` within `budget`, charging it (see the module docs);
    /// a regex found in the cache costs nothing.
    pub fn build(
        pattern: &str,
        ignore_case: bool,
        budget: &mut CompileBudget,
    ) -> Result<Self, BuildError> {
        let key: RegexKey = (pattern.into(), ignore_case);
        let regex = match REGEXES.get(&key) {
            Some(regex) => regex,
            None => {
                let regex = Arc::new(compile(pattern, ignore_case, budget)?);
                REGEXES.insert(key, Arc::clone(&regex));
                regex
            }
        };
        Ok(Self {
            regex,
            source: pattern.to_owned(),
        })
    }

    /// Whether the regex matches somewhere in `text` (anchors included).
    pub fn is_match(&self, text: &str) -> bool {
        self.regex.is_match(text)
    }
}

/// Compiles `pattern` within `budget`, charging it what it costs: its text
/// (read before anything is built) and what it compiled to.
fn compile(
    pattern: &str,
    ignore_case: bool,
    budget: &mut CompileBudget,
) -> Result<Regex, BuildError> {
    let limit = budget.remaining().min(MAX_REGEX_BYTES);
    // A cost over the limit of one regex is the selector's own; under it,
    // the request's budget ran out.
    let refused = |budget: &mut CompileBudget, cost: usize| {
        budget.charge(limit);
        Err(BuildError::TooExpensive(match cost > MAX_REGEX_BYTES {
            true => TooExpensive::Regex,
            false => TooExpensive::Request,
        }))
    };
    // Its text alone leaves no room for an NFA: the cost is over it.
    let text_cost = pattern.len().saturating_mul(TEXT_COST);
    if text_cost >= limit {
        return refused(budget, text_cost.saturating_add(1));
    }
    let rewritten = ecmascript_classes(pattern).ok_or(BuildError::Invalid)?;
    let built = meta::Builder::new()
        .configure(
            meta::Config::new()
                .nfa_size_limit(Some(limit - text_cost))
                // Both cost far more to build than they save on topics
                // (short texts): a full DFA quadruples the build time of a
                // small regex, and the one-pass DFA of `\pL{3}` is 1 MB.
                .dfa(false)
                .onepass(false)
                .hybrid_cache_capacity(MATCH_CACHE_BYTES),
        )
        .syntax(regex_automata::util::syntax::Config::new().case_insensitive(ignore_case))
        .build(&rewritten);
    let regex = match built {
        Ok(regex) => regex,
        // Over what was left: over the limit of one regex only if that was
        // all that was left.
        Err(err) if err.size_limit().is_some() => {
            let over = match limit == MAX_REGEX_BYTES {
                true => MAX_REGEX_BYTES + 1,
                false => limit,
            };
            return refused(budget, over);
        }
        Err(_) => return Err(BuildError::Invalid),
    };
    let cost = text_cost + regex.memory_usage();
    if cost > limit {
        return refused(budget, cost);
    }
    budget.charge(cost);
    Ok(regex)
}

/// The regexes compiled so far, by their pattern (as written, before the
/// ECMAScript rewrite) and case flag, shared by every selector: most of a URL pattern's components are
/// the same regex in every pattern (`^https$`, `^(.*)$`, a common host).
static REGEXES: LazyLock<Cache<RegexKey, Arc<Regex>, ByWeight>> =
    LazyLock::new(|| Cache::with_weighter(REGEX_CACHE_ENTRIES, REGEX_CACHE_BYTES, ByWeight));

thread_local! {
    /// The compile running on this thread, if any: `urlpattern` calls
    /// [`RegExp::parse`], a static function, so the budget cannot be an
    /// argument. Set by [`compiling`] only for the duration of one compile.
    static SCOPE: Cell<Option<Scope>> = const { Cell::new(None) };
}

/// One compile: its budget, and the first limit it ran into.
#[derive(Debug, Clone, Copy)]
struct Scope {
    budget: CompileBudget,
    refused: Option<TooExpensive>,
}

/// Runs `compile` with `budget` as the budget of every [`BoundedRegex`]
/// that `urlpattern` builds meanwhile on this thread; returns its result
/// and the limit it ran into, if any. `urlpattern` drops the error of some
/// of its regexes (a component's matcher): a pattern that ran into a limit
/// is refused whatever `compile` returned. After the first refusal no
/// further regex is built.
pub fn compiling<T>(
    budget: &mut CompileBudget,
    compile: impl FnOnce() -> T,
) -> (T, Option<TooExpensive>) {
    /// Puts the outer scope back, even if `compile` panics.
    struct Restore(Option<Scope>);
    impl Drop for Restore {
        fn drop(&mut self) {
            SCOPE.set(self.0.take());
        }
    }
    let start = Scope {
        budget: *budget,
        refused: None,
    };
    let _restore = Restore(SCOPE.replace(Some(start)));
    let value = compile();
    let scope = SCOPE.get().unwrap_or(start);
    *budget = scope.budget;
    (value, scope.refused)
}

impl RegExp for BoundedRegex {
    fn syntax() -> RegexSyntax {
        RegexSyntax::Rust
    }

    fn parse(pattern: &str, flags: &str, _force_eval: bool) -> Result<Self, ()> {
        let ignore_case = flags.contains('i');
        let Some(mut scope) = SCOPE.get() else {
            // Outside `compiling` (none of our callers): a budget of its own.
            return Self::build(pattern, ignore_case, &mut CompileBudget::default()).map_err(drop);
        };
        if scope.refused.is_some() {
            return Err(());
        }
        let built = Self::build(pattern, ignore_case, &mut scope.budget);
        if let Err(BuildError::TooExpensive(limit)) = built {
            scope.refused = Some(limit);
        }
        SCOPE.set(Some(scope));
        built.map_err(drop)
    }

    fn matches<'a>(&self, text: &'a str) -> Option<Vec<Option<&'a str>>> {
        let mut captures = self.regex.create_captures();
        self.regex.captures(text, &mut captures);
        captures.is_match().then(|| {
            (1..captures.group_len())
                .map(|group| {
                    captures
                        .get_group(group)
                        .and_then(|span| text.get(span.range()))
                })
                .collect()
        })
    }

    fn pattern_string(&self) -> &str {
        &self.source
    }
}

/// `pattern` with ECMAScript's ASCII `\d`, `\w`, `\b` (and negations), or
/// `None` when it does not parse.
fn ecmascript_classes(pattern: &str) -> Option<Cow<'_, str>> {
    // Without a `\d`, `\w` or `\b` (or negation) there is nothing to
    // rewrite, and the compile parses the pattern anyway.
    let perl = pattern
        .as_bytes()
        .windows(2)
        .any(|pair| pair[0] == b'\\' && b"dwbDWB".contains(&pair[1]));
    if !perl {
        return Some(Cow::Borrowed(pattern));
    }
    let parsed = ast::parse::Parser::new().parse(pattern).ok()?;
    let Ok(mut edits) = ast::visit(&parsed, AsciiClasses::default());
    if edits.is_empty() {
        return Some(Cow::Borrowed(pattern));
    }
    edits.sort_unstable_by_key(|(span, _)| span.start.offset);
    let mut out = String::with_capacity(pattern.len() + 16 * edits.len());
    let mut at = 0;
    for (span, replacement) in edits {
        out.push_str(pattern.get(at..span.start.offset)?);
        out.push_str(replacement);
        at = span.end.offset;
    }
    out.push_str(pattern.get(at..)?);
    Some(Cow::Owned(out))
}

/// Finds the Perl classes and word boundaries to make ASCII, with their
/// replacement text (which depends on being inside a bracketed class).
#[derive(Default)]
struct AsciiClasses(Vec<(ast::Span, &'static str)>);

impl ast::Visitor for AsciiClasses {
    type Output = Vec<(ast::Span, &'static str)>;
    type Err = std::convert::Infallible;

    fn finish(self) -> Result<Self::Output, Self::Err> {
        Ok(self.0)
    }

    fn visit_pre(&mut self, ast: &Ast) -> Result<(), Self::Err> {
        let replacement = match ast {
            Ast::ClassPerl(class) => perl_class(class, false).map(|text| (class.span, text)),
            Ast::Assertion(assertion) => match assertion.kind {
                AssertionKind::WordBoundary => Some((assertion.span, r"(?-u:\b)")),
                AssertionKind::NotWordBoundary => Some((assertion.span, r"(?-u:\B)")),
                _ => None,
            },
            _ => None,
        };
        self.0.extend(replacement);
        Ok(())
    }

    fn visit_class_set_item_pre(&mut self, item: &ClassSetItem) -> Result<(), Self::Err> {
        if let ClassSetItem::Perl(class) = item {
            self.0
                .extend(perl_class(class, true).map(|text| (class.span, text)));
        }
        Ok(())
    }
}

/// The ASCII class for `\d`, `\w` and their negations, written for inside
/// or outside brackets; `\s` stays (a small class in both dialects).
fn perl_class(class: &ClassPerl, in_brackets: bool) -> Option<&'static str> {
    Some(match (&class.kind, class.negated, in_brackets) {
        (ClassPerlKind::Digit, false, false) => "[[:digit:]]",
        (ClassPerlKind::Digit, true, false) => "[[:^digit:]]",
        (ClassPerlKind::Word, false, false) => "[[:word:]]",
        (ClassPerlKind::Word, true, false) => "[[:^word:]]",
        (ClassPerlKind::Digit, false, true) => "[:digit:]",
        (ClassPerlKind::Digit, true, true) => "[:^digit:]",
        (ClassPerlKind::Word, false, true) => "[:word:]",
        (ClassPerlKind::Word, true, true) => "[:^word:]",
        (ClassPerlKind::Space, ..) => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // The regex cache is shared by every test of the process: a test that
    // counts what it was charged compiles patterns no other test uses.
    fn build(pattern: &str, budget: &mut CompileBudget) -> Result<BoundedRegex, BuildError> {
        BoundedRegex::build(pattern, false, budget)
    }

    /// `\d`, `\w`, `\b` and their negations mean what ECMAScript says
    /// (ASCII), in and out of brackets; other classes are untouched.
    #[test]
    fn perl_classes_are_ascii() {
        assert_eq!(
            ecmascript_classes(r"^\w+\d[\w-][^\D]\W\b\B\s\pL\\w$").as_deref(),
            Some(
                r"^[[:word:]]+[[:digit:]][[:word:]-][^[:^digit:]][[:^word:]](?-u:\b)(?-u:\B)\s\pL\\w$"
            )
        );
        let mut budget = CompileBudget::default();
        let word = build(r"^\w+$", &mut budget).expect("valid");
        assert!(word.is_match("abc_09") && !word.is_match("é") && !word.is_match("٣"));
        let digits = build(r"^\d+$", &mut budget).expect("valid");
        assert!(digits.is_match("42") && !digits.is_match("٤٢"));
        let other = build(r"^\W$", &mut budget).expect("valid");
        assert!(other.is_match("é") && !other.is_match("a"));
        assert!(
            build(r"\bx\b", &mut budget)
                .expect("valid")
                .is_match("é x é")
        );
        assert_eq!(ecmascript_classes(r"(\w"), None);
        assert_eq!(
            ecmascript_classes("(").as_deref(),
            Some("("),
            "nothing to rewrite"
        );
    }

    /// Every build is charged what it compiled; a bigger regex than one
    /// may be is refused as such, whatever is left of the budget.
    #[test]
    fn builds_are_charged() {
        let mut budget = CompileBudget::default();
        build("^/engine-charged/([^/]+?)$", &mut budget).expect("valid");
        let small = budget.spent();
        assert!(small > 0 && small < 16 * 1024, "{small}");
        assert_eq!(
            build(r"^\pL{500}$", &mut budget).err(),
            Some(BuildError::TooExpensive(TooExpensive::Regex))
        );
        assert_eq!(budget.spent(), small + MAX_REGEX_BYTES);
        assert_eq!(build("(", &mut budget).err(), Some(BuildError::Invalid));
        // The pathological pattern of issue 24 is small once ASCII.
        let before = budget.spent();
        build(r"^/engine-charged/(\w{200})$", &mut budget).expect("ASCII \\w{200} fits");
        assert!(budget.spent() - before < MAX_REGEX_BYTES / 2);
    }

    /// Once the budget runs out, nothing more is built, and what was
    /// charged never passes the budget by more than the refused build.
    #[test]
    fn the_budget_runs_out() {
        let mut budget = CompileBudget::with_limit(300 * 1024);
        let mut refused = None;
        for n in 100..200 {
            match build(&format!(r"^\pL{{{n}}}x$"), &mut budget) {
                Ok(_) => continue,
                Err(err) => {
                    refused = Some(err);
                    break;
                }
            }
        }
        assert_eq!(
            refused,
            Some(BuildError::TooExpensive(TooExpensive::Regex)),
            "\\pL{{100}} is bigger than one regex may be"
        );
        let mut budget = CompileBudget::with_limit(20 * 1024);
        let refusal = (0..100)
            .map(|n| build(&format!("^/a{n}/([^/]+?)/b([0-9]+)$"), &mut budget))
            .find_map(Result::err);
        assert_eq!(
            refusal,
            Some(BuildError::TooExpensive(TooExpensive::Request))
        );
        assert_eq!(budget.remaining(), 0);
        assert_eq!(
            build("^engine-budget-exhausted$", &mut budget).err(),
            Some(BuildError::TooExpensive(TooExpensive::Request))
        );
    }

    /// `urlpattern`'s regexes go through the scope's budget; a refusal
    /// anywhere in a pattern is reported even when `urlpattern` drops it.
    #[test]
    fn urlpattern_compiles_within_the_scope() {
        let base = url::Url::parse("http://hub.test/.well-known/mercure").expect("a URL");
        let parse = |raw: &str| {
            let init = urlpattern::UrlPatternInit::parse_constructor_string::<BoundedRegex>(
                raw,
                Some(base.clone()),
            )
            .map_err(|err| err.to_string())?;
            urlpattern::UrlPattern::<BoundedRegex>::parse(init, Default::default())
                .map_err(|err| err.to_string())
        };
        let mut budget = CompileBudget::default();
        let (pattern, refused) = compiling(&mut budget, || parse("/engine-scope/:id(\\d+)"));
        assert!(refused.is_none() && pattern.is_ok());
        assert!(budget.spent() > 0);
        let (_, refused) = compiling(&mut budget, || parse("/books/:id(\\pL{900})"));
        assert_eq!(refused, Some(TooExpensive::Regex));
        assert!(SCOPE.get().is_none(), "the scope ends with the compile");
    }
}
