//! The shape of `src/`, checked: which module may import which.
//!
//! Every path a source file names (`use crate::…`, `use super::…`, and paths
//! written inline such as `crate::broker::Event`) is read from the source and
//! resolved to the module it names. Two rules follow (docs/architecture.md):
//!
//! 1. Between top-level modules only the edges in [`ALLOWED`] exist:
//!    `startup → http, mercure → broker ← store, cluster`, and every module
//!    may use the leaves. The table itself has no circle.
//! 2. Inside a directory module, its children (files, or sub-directories
//!    taken whole) import each other without a circle. A parent (`mod.rs`,
//!    or `x.rs` beside `x/`) and its children are not a circle: a parent
//!    mounts or re-exports its children, a child uses its parent's types.
//! 3. A child does not call back into its parent: it neither implements
//!    anything for a type declared in its parent's own file (`impl T`,
//!    `impl Trait for T`) nor names one of the parent's free functions.
//!    Otherwise a step would walk down into the child and back up into
//!    the parent's private helpers (the channel actor's `owned.rs` and
//!    `shared.rs` once held `impl ChannelActor` blocks that called
//!    `mod.rs`'s helpers). Using the parent's types and traits stays
//!    fine: `http`'s handlers take `super::AppState`, a store implements
//!    the broker's traits; only extending the parent's types and calling
//!    its helpers is refused.
//!
//! `main.rs` (the binary, which uses the library as any user would) and
//! `lib.rs` (module declarations only) are not checked.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
};

/// Top-level module → the top-level modules it may import.
const ALLOWED: &[(&str, &[&str])] = &[
    // Leaves.
    ("names", &[]),
    ("sse", &[]),
    ("error", &[]),
    ("readiness", &[]),
    ("auth", &["names"]),
    // The application's hook: an HTTP client whose answer is a credential
    // the access policy weighs (`auth::Rights`); it reads its `[hooks]`
    // section. Nothing of the broker or the routes.
    ("hooks", &["names", "config", "auth"]),
    ("config", &["names", "auth"]),
    ("metrics", &["config"]),
    // The HTTPS edge: rustls and certificates, nothing of the broker.
    ("tls", &["config"]),
    // The core, and its backends.
    (
        "broker",
        &["names", "sse", "config", "metrics", "readiness"],
    ),
    (
        "store",
        &["broker", "names", "config", "metrics", "readiness"],
    ),
    ("cluster", &["broker", "names", "config", "readiness"]),
    // The occupancy webhooks: an adapter that implements the core's
    // `OccupancyWatch` (and keeps its pending file), wired by startup.
    ("webhooks", &["broker", "names", "config", "metrics"]),
    // The protocols.
    (
        "http",
        &[
            "broker",
            "names",
            "sse",
            "config",
            "auth",
            "hooks",
            "error",
            "metrics",
            "readiness",
        ],
    ),
    (
        "mercure",
        &[
            "http", "broker", "names", "sse", "config", "auth", "hooks", "error", "metrics",
        ],
    ),
    // The wiring: knows everything.
    (
        "startup",
        &[
            "http",
            "mercure",
            "broker",
            "store",
            "cluster",
            "names",
            "sse",
            "config",
            "auth",
            "hooks",
            "error",
            "metrics",
            "readiness",
            "tls",
            "webhooks",
        ],
    ),
];

/// A module, as its path from the crate root (`["broker", "channel"]`).
type ModulePath = Vec<String>;

/// Every module of `src/` and the file that holds it.
fn modules(src: &Path) -> BTreeMap<ModulePath, PathBuf> {
    let mut out = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).expect("src/ is readable") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let relative = path.strip_prefix(src).expect("below src/");
            let mut parts: Vec<String> = relative
                .iter()
                .map(|p| p.to_string_lossy().into_owned())
                .collect();
            let file = parts.pop().expect("a file name");
            match file.as_str() {
                "lib.rs" | "main.rs" if parts.is_empty() => continue,
                "mod.rs" => {}
                other => parts.push(other.trim_end_matches(".rs").to_owned()),
            }
            out.insert(parts, path);
        }
    }
    out
}

/// Rust source reduced to tokens that matter for paths and items:
/// identifiers, `::`, braces, angle brackets, commas and `;`. Comments,
/// strings and char literals are dropped.
fn tokens(source: &str) -> Vec<String> {
    let chars: Vec<char> = source.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if c == 'r' && (next == Some('#') || next == Some('"')) && raw_string_at(&chars, i) {
            // r"…" or r#"…"#
            let mut hashes = 0;
            i += 1;
            while chars.get(i) == Some(&'#') {
                hashes += 1;
                i += 1;
            }
            i += 1;
            loop {
                if i >= chars.len() {
                    break;
                }
                if chars[i] == '"' && (0..hashes).all(|h| chars.get(i + 1 + h) == Some(&'#')) {
                    i += 1 + hashes;
                    break;
                }
                i += 1;
            }
        } else if c == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
        } else if c == '\'' {
            // A char literal ('a', '\n', '\u{..}') or a lifetime ('a).
            if next == Some('\\') {
                i += 2;
                while i < chars.len() && chars[i] != '\'' {
                    i += 1;
                }
                i += 1;
            } else if chars.get(i + 2) == Some(&'\'') {
                i += 3;
            } else {
                i += 1;
            }
        } else if c.is_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            out.push(chars[start..i].iter().collect());
        } else if c == ':' && next == Some(':') {
            out.push("::".into());
            i += 2;
        } else if matches!(c, '-' | '=') && next == Some('>') {
            // `->` and `=>` are not the closing `>` of a generic list.
            out.push("·".into());
            i += 2;
        } else if matches!(c, '{' | '}' | ',' | ';' | '$' | '<' | '>') {
            out.push(c.to_string());
            i += 1;
        } else {
            if !c.is_whitespace() {
                out.push("·".into());
            }
            i += 1;
        }
    }
    out
}

/// Whether a raw string literal starts at `i` (and not an identifier like `rest`).
fn raw_string_at(chars: &[char], i: usize) -> bool {
    let before = i.checked_sub(1).map(|b| chars[b]);
    if before.is_some_and(|b| b.is_alphanumeric() || b == '_') {
        return false;
    }
    let mut j = i + 1;
    while chars.get(j) == Some(&'#') {
        j += 1;
    }
    chars.get(j) == Some(&'"')
}

/// Every path of `tokens` that starts at `crate`, `super` or `self`, made
/// absolute from `module` (use trees expanded).
fn paths(tokens: &[String], module: &ModulePath) -> Vec<ModulePath> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        let starts = matches!(tokens[i].as_str(), "crate" | "super" | "self")
            && tokens.get(i + 1).is_some_and(|t| t == "::")
            && (i == 0 || (tokens[i - 1] != "::" && tokens[i - 1] != "$"));
        if !starts {
            i += 1;
            continue;
        }
        let mut base: ModulePath = Vec::new();
        let mut j = i;
        // The anchor: crate root, or the module itself, or its ancestors.
        match tokens[j].as_str() {
            "crate" => j += 2,
            "self" => {
                base = module.clone();
                j += 2;
            }
            _ => {
                base = module.clone();
                while tokens.get(j).is_some_and(|t| t == "super")
                    && tokens.get(j + 1).is_some_and(|t| t == "::")
                {
                    base.pop();
                    j += 2;
                }
            }
        }
        j = tree(tokens, j, base, &mut out);
        i = j.max(i + 1);
    }
    out
}

/// Reads one path (or use tree) starting at `at` under `prefix`; returns
/// where it ends.
fn tree(
    tokens: &[String],
    mut at: usize,
    mut prefix: ModulePath,
    out: &mut Vec<ModulePath>,
) -> usize {
    loop {
        match tokens.get(at).map(String::as_str) {
            Some("{") => {
                at += 1;
                loop {
                    match tokens.get(at).map(String::as_str) {
                        Some("}") => return at + 1,
                        Some(",") => at += 1,
                        None => return at,
                        _ => at = tree(tokens, at, prefix.clone(), out),
                    }
                }
            }
            Some(ident) if is_ident(ident) => {
                if ident != "self" {
                    prefix.push(ident.to_owned());
                }
                at += 1;
                if tokens.get(at).is_some_and(|t| t == "::") {
                    at += 1;
                    continue;
                }
                out.push(prefix);
                return at;
            }
            _ => {
                out.push(prefix);
                return at;
            }
        }
    }
}

fn is_ident(token: &str) -> bool {
    token
        .chars()
        .next()
        .is_some_and(|c| c.is_alphabetic() || c == '_')
}

/// The module a path names: its longest prefix that is a module.
fn resolve<'a>(
    path: &ModulePath,
    modules: &'a BTreeMap<ModulePath, PathBuf>,
) -> Option<&'a ModulePath> {
    (1..=path.len())
        .rev()
        .find_map(|n| modules.get_key_value(&path[..n]).map(|(k, _)| k))
}

/// The first cycle of `edges`, if any, as the nodes along it.
fn cycle(edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        match state.get(node) {
            Some(1) => {
                let from = stack.iter().position(|n| n == node).unwrap_or(0);
                let mut found = stack[from..].to_vec();
                found.push(node.to_owned());
                return Some(found);
            }
            Some(_) => return None,
            None => {}
        }
        state.insert(node.to_owned(), 1);
        stack.push(node.to_owned());
        for next in edges.get(node).into_iter().flatten() {
            if let Some(found) = visit(next, edges, state, stack) {
                return Some(found);
            }
        }
        stack.pop();
        state.insert(node.to_owned(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for node in edges.keys() {
        if let Some(found) = visit(node, edges, &mut state, &mut Vec::new()) {
            return Some(found);
        }
    }
    None
}

/// Whether `module` is a unit-test module (`tests.rs`, `testing.rs`).
fn is_test_module(module: &ModulePath) -> bool {
    module
        .last()
        .is_some_and(|name| name == "tests" || name == "testing")
}

/// A source file; without `tests`, cut before a trailing
/// `#[cfg(test)] mod tests { … }`.
fn source(file: &Path, tests: bool) -> String {
    let mut source = fs::read_to_string(file).expect("a readable source file");
    if !tests && let Some(at) = source.find("#[cfg(test)]\nmod tests {") {
        source.truncate(at);
    }
    source
}

/// Every import of the crate: (source module, target module). Without
/// `tests`, the unit tests (`tests.rs`, `testing.rs` and a trailing
/// `#[cfg(test)] mod tests { … }`) are left out: a module's tests may use
/// the whole of its room.
fn imports(tests: bool) -> Vec<(ModulePath, ModulePath)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let modules = modules(&src);
    let mut out = Vec::new();
    for (module, file) in &modules {
        if is_test_module(module) && !tests {
            continue;
        }
        for path in paths(&tokens(&source(file, tests)), module) {
            if let Some(target) = resolve(&path, &modules)
                && target != module
            {
                out.push((module.clone(), target.clone()));
            }
        }
    }
    out
}

/// Top-level modules import only along the allowed edges, and the allowed
/// edges have no circle.
#[test]
fn top_level_modules_import_in_one_direction() {
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    let table: BTreeMap<String, BTreeSet<String>> = ALLOWED
        .iter()
        .map(|(from, to)| (from.to_string(), to.iter().map(|t| t.to_string()).collect()))
        .collect();
    assert_eq!(
        cycle(&table),
        None,
        "the table of allowed edges has a circle"
    );
    let mut wrong = BTreeSet::new();
    for (from, to) in imports(true) {
        let (from_top, to_top) = (&from[0], &to[0]);
        if from_top == to_top {
            continue;
        }
        let ok = allowed
            .get(from_top.as_str())
            .is_some_and(|targets| targets.contains(&to_top.as_str()));
        if !ok {
            wrong.insert(format!("{} -> {}", from.join("::"), to.join("::")));
        }
    }
    assert!(
        wrong.is_empty(),
        "imports against the allowed direction (see ALLOWED and docs/architecture.md):\n{}",
        wrong.into_iter().collect::<Vec<_>>().join("\n")
    );
    let known: BTreeSet<String> = imports(true)
        .into_iter()
        .map(|(from, _)| from[0].clone())
        .collect();
    for top in known {
        assert!(
            allowed.contains_key(top.as_str()),
            "module {top} is not in ALLOWED: decide where it sits"
        );
    }
}

/// Inside every directory module, the children import each other without
/// a circle (unit tests aside).
#[test]
fn sibling_modules_have_no_import_circle() {
    // Per directory: child -> children it imports.
    let mut rooms: BTreeMap<ModulePath, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for (from, to) in imports(false) {
        let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
        if common == from.len() || common == to.len() {
            // A module and its own ancestor or descendant: one room.
            continue;
        }
        let room = rooms.entry(from[..common].to_vec()).or_default();
        room.entry(from[common].clone())
            .or_default()
            .insert(to[common].clone());
    }
    for (room, edges) in &rooms {
        if let Some(found) = cycle(edges) {
            let room = match room.is_empty() {
                true => "crate".to_owned(),
                false => format!("crate::{}", room.join("::")),
            };
            panic!("an import circle in {room}: {}", found.join(" -> "));
        }
    }
}

/// What a file declares at its top level: the names of its types
/// (`struct`, `enum`, `union`, `type`) and of its free functions.
#[derive(Debug, Default, PartialEq)]
struct Items {
    types: BTreeSet<String>,
    functions: BTreeSet<String>,
}

fn items(tokens: &[String]) -> Items {
    let mut items = Items::default();
    let mut depth = 0usize;
    for (i, token) in tokens.iter().enumerate() {
        match token.as_str() {
            "{" => depth += 1,
            "}" => depth = depth.saturating_sub(1),
            kind if depth == 0 => {
                let Some(name) = tokens.get(i + 1).filter(|t| is_ident(t)) else {
                    continue;
                };
                match kind {
                    "struct" | "enum" | "union" | "type" => items.types.insert(name.clone()),
                    "fn" => items.functions.insert(name.clone()),
                    _ => false,
                };
            }
            _ => {}
        }
    }
    items
}

/// The type every `impl` block of `tokens` is for, as the path written
/// (`impl<T> Trait<T> for a::B<T>` → `a::B`), resolved from `module` when
/// it starts at `crate`, `super` or `self`.
fn impl_targets(tokens: &[String], module: &ModulePath) -> Vec<ModulePath> {
    let mut out = Vec::new();
    for (i, token) in tokens.iter().enumerate() {
        if token != "impl" {
            continue;
        }
        // The header, up to its body or `where`, with the generic list
        // right after `impl` left out.
        let mut header = Vec::new();
        let mut depth = 0usize;
        let mut j = i + 1;
        if tokens.get(j).is_some_and(|t| t == "<") {
            while let Some(t) = tokens.get(j) {
                match t.as_str() {
                    "<" => depth += 1,
                    ">" => depth = depth.saturating_sub(1),
                    _ => {}
                }
                j += 1;
                if depth == 0 {
                    break;
                }
            }
        }
        while let Some(t) = tokens.get(j) {
            if depth == 0 && (t == "{" || t == "where" || t == ";") {
                break;
            }
            match t.as_str() {
                "<" => depth += 1,
                ">" => depth = depth.saturating_sub(1),
                _ if depth == 0 => header.push(t.as_str()),
                _ => {}
            }
            j += 1;
        }
        let start = header
            .iter()
            .rposition(|t| *t == "for")
            .map_or(0, |f| f + 1);
        let mut path: ModulePath = Vec::new();
        let mut at = start;
        match header.get(at) {
            Some(&"crate") => at += 2,
            Some(&"self") => {
                path = module.clone();
                at += 2;
            }
            Some(&"super") => {
                path = module.clone();
                while header.get(at) == Some(&"super") {
                    path.pop();
                    at += 2;
                }
            }
            _ => {}
        }
        // The written path: identifiers joined by `::` (a `dyn`, `&` or
        // tuple header names no type of ours).
        while let Some(name) = header.get(at).filter(|t| is_ident(t)) {
            path.push((*name).to_owned());
            if header.get(at + 1) != Some(&"::") {
                break;
            }
            at += 2;
        }
        if !path.is_empty() {
            out.push(path);
        }
    }
    out
}

/// Children that call back into their parent today: debts, each to be paid
/// by moving the step into the parent's file or by making the child plain
/// state. Listed so that no new one appears; a listed one that is gone
/// fails the test too, so the list only shrinks. `cluster::Cluster` is
/// declared in `cluster/mod.rs`, and `log.rs` and `presence.rs` add
/// methods to it and implement `SharedLog` and `Peers` for it, using its
/// fields.
const KNOWN_CALLBACKS: &[&str] = &[
    "cluster::log implements for cluster::Cluster, a type of its parent",
    "cluster::presence implements for cluster::Cluster, a type of its parent",
];

/// No child extends a type declared in its parent's own file or names one
/// of its parent's free functions (rule 3; unit tests aside), beyond the
/// known debts.
#[test]
fn children_do_not_call_back_into_their_parent() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let modules = modules(&src);
    let mut wrong = BTreeSet::new();
    for (module, file) in &modules {
        if module.len() < 2 || is_test_module(module) {
            continue;
        }
        let parent = module[..module.len() - 1].to_vec();
        let Some(parent_file) = modules.get(&parent) else {
            continue;
        };
        let parent_items = items(&tokens(&source(parent_file, false)));
        let tokens = tokens(&source(file, false));
        let own = items(&tokens);
        // What the child names of the parent's own items: `use super::X`,
        // `super::x(…)`, `crate::parent::X`.
        let named: BTreeSet<String> = paths(&tokens, module)
            .into_iter()
            .filter(|path| path.len() == parent.len() + 1 && path.starts_with(&parent))
            .filter_map(|path| path.last().cloned())
            .collect();
        for function in named.intersection(&parent_items.functions) {
            wrong.insert(format!(
                "{} names {}::{function}, a free function of its parent",
                module.join("::"),
                parent.join("::")
            ));
        }
        for target in impl_targets(&tokens, module) {
            let Some(name) = target.last() else {
                continue;
            };
            let parents = if target.len() == 1 {
                // A bare name: the parent's when imported from it and not
                // declared here.
                named.contains(name) && !own.types.contains(name)
            } else {
                target.len() == parent.len() + 1 && target.starts_with(&parent)
            };
            if parents && parent_items.types.contains(name) {
                wrong.insert(format!(
                    "{} implements for {}::{name}, a type of its parent",
                    module.join("::"),
                    parent.join("::")
                ));
            }
        }
    }
    let known: BTreeSet<String> = KNOWN_CALLBACKS.iter().map(|s| s.to_string()).collect();
    let paid: Vec<_> = known.difference(&wrong).cloned().collect();
    assert!(
        paid.is_empty(),
        "paid debts: remove them from KNOWN_CALLBACKS:\n{}",
        paid.join("\n")
    );
    let new: Vec<_> = wrong.difference(&known).cloned().collect();
    assert!(
        new.is_empty(),
        "children calling back into their parent (rule 3 of tests/architecture.rs): \
         move the step into the parent's file, or make the child plain state the \
         parent asks:\n{}",
        new.join("\n")
    );
}

/// The item reader finds a file's own types and free functions, and the
/// impl reader the type each block is for.
#[test]
fn items_and_impls_are_read_like_the_compiler_reads_them() {
    let source = r#"
        pub struct Actor { f: fn() -> u8 }
        pub(crate) enum Kind { A, B }
        type Alias = Vec<u8>;
        fn helper(x: &str) -> Result<(), ()> { let s = "fn hidden"; Ok(()) }
        impl Actor { fn method(&self) {} }
        impl<T: Into<u8>> From<T> for super::Other<T> where T: Copy {}
        impl fmt::Debug for Kind {}
        impl<'a> Trait for &'a dyn Thing {}
        mod inner { fn nested() {} }
    "#;
    let tokens = tokens(source);
    assert_eq!(
        items(&tokens),
        Items {
            types: ["Actor", "Kind", "Alias"].map(String::from).into(),
            functions: ["helper"].map(String::from).into(),
        }
    );
    let module: ModulePath = vec!["broker".into(), "channel".into()];
    let targets: Vec<String> = impl_targets(&tokens, &module)
        .into_iter()
        .map(|p| p.join("::"))
        .collect();
    assert_eq!(targets, ["Actor", "broker::Other", "Kind"]);
}

/// The reader sees a use tree, an inline path, `super` and `self` as the
/// compiler does, and not a path in a comment or a string.
#[test]
fn paths_are_read_like_the_compiler_reads_them() {
    let source = r#"
        use crate::{broker::{Event, log::Record}, names};
        use super::super::sse;
        // use crate::commented::Out;
        let url = "crate::in_a_string";
        let x = crate::metrics::Metrics::new();
        use self::child::Thing;
        let c = 'x'; fn f<'a>(s: &'a str) {}
    "#;
    let module: ModulePath = vec!["http".into(), "stream".into()];
    let found: BTreeSet<String> = paths(&tokens(source), &module)
        .into_iter()
        .map(|p| p.join("::"))
        .collect();
    let expected: BTreeSet<String> = [
        "broker::Event",
        "broker::log::Record",
        "names",
        "sse",
        "metrics::Metrics::new",
        "http::stream::child::Thing",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(found, expected);
}
