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
//!    taken whole) import each other without a circle. A directory's own
//!    `mod.rs` and its children are one room: they may name each other
//!    (a parent mounts or re-exports its children, a child uses its parent's
//!    types).
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
    // The protocols.
    (
        "http",
        &[
            "broker",
            "names",
            "sse",
            "config",
            "auth",
            "error",
            "metrics",
            "readiness",
        ],
    ),
    (
        "mercure",
        &[
            "http", "broker", "names", "sse", "config", "auth", "error", "metrics",
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
            "error",
            "metrics",
            "readiness",
            "tls",
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

/// Rust source reduced to tokens that matter for paths: identifiers, `::`,
/// braces, commas and `;`. Comments, strings and char literals are dropped.
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
        } else if matches!(c, '{' | '}' | ',' | ';' | '$') {
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

/// Every import of the crate: (source module, target module). Without
/// `tests`, the unit tests (`tests.rs`, `testing.rs` and a trailing
/// `#[cfg(test)] mod tests { … }`) are left out: a module's tests may use
/// the whole of its room.
fn imports(tests: bool) -> Vec<(ModulePath, ModulePath)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let modules = modules(&src);
    let mut out = Vec::new();
    for (module, file) in &modules {
        let is_test = module
            .last()
            .is_some_and(|name| name == "tests" || name == "testing");
        if is_test && !tests {
            continue;
        }
        let mut source = fs::read_to_string(file).expect("a readable source file");
        if !tests && let Some(at) = source.find("#[cfg(test)]\nmod tests {") {
            source.truncate(at);
        }
        for path in paths(&tokens(&source), module) {
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
