//! The import graph of `src/` runs one way: every top-level module imports only from its own
//! layer or the layers below it, and no two top-level modules import each other, directly or
//! in a circle.
//!
//! The check reads every `src/**/*.rs`, takes each path through the crate root (`crate::`,
//! `$crate::`, and `super::` chains that climb to the root) in `use` trees (grouped and
//! spanning lines) and in code, and skips comments, doc comments and string literals. A path
//! to a root re-export (`crate::Signal`) counts as a path to the module that defines it (read
//! from the `pub use` lines of `src/lib.rs`).

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
};

/// The layers, bottom to top. A module may import from its own layer and the layers below.
///
/// 0. `pattern`, `signal`, `binding`, `trace`: the data: the type grammar and globs, the
///    CloudEvent (its types obey the pattern grammar) and its wire helpers, and the spans a
///    received signal is handled in, parented by its trace context.
/// 1. `router`: the routing table over patterns.
/// 2. `error`: every error type (wrapping route and pattern errors).
/// 3. `context`: what a bus lends its adapters (registry, topics), subscription ids, and a
///    weak link to the bus that never names it.
/// 4. `adapter`: the `Adapter` trait, health, the bus's sealed hooks, the in-process adapters.
/// 5. `policy`: retry, circuit breaker, delivery mode.
/// 6. `queue`: the durable queue and its forwarder adapter, with the queue's own events.
/// 7. `telemetry`: delivery and publish events, and the metrics snapshot types (which name
///    health, breaker and job states from the layers below).
/// 8. `dispatch`: targets, the delivery pipeline, reports.
/// 9. `journal`: the signal journal, its stores (on the queue's store types), replay and
///    persistent subscriptions (which deliver through `dispatch`).
/// 10. `bus`: subscriptions and publish, built with a queue and a journal.
/// 11. `http`, `cluster`: the feature areas that plug adapters (and the bus) into the network;
///     `testing`: the spy, a subscriber for tests.
/// 12. `__fuzz`: entry points for the fuzz targets; reaches into anything.
///
/// A new top-level module must be placed here.
const LAYERS: &[(&str, u32)] = &[
    ("pattern", 0),
    ("signal", 0),
    ("binding", 0),
    ("trace", 0),
    ("router", 1),
    ("error", 2),
    ("context", 3),
    ("adapter", 4),
    ("policy", 5),
    ("queue", 6),
    ("telemetry", 7),
    ("dispatch", 8),
    ("journal", 9),
    ("bus", 10),
    ("http", 11),
    ("cluster", 11),
    ("testing", 11),
    ("__fuzz", 12),
];

/// One `crate::` reference: where it is and the top-level module it reaches.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Reference {
    line: usize,
    /// The first segment after the crate root (a module, or a name the root re-exports).
    root_item: String,
    /// The path as written, for the report.
    text: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Ident(String),
    /// `::`
    PathSep,
    Punct(char),
}

/// Splits Rust source into identifiers, `::` and punctuation, with the line of each token.
/// Comments, string, byte-string, raw-string and char literals, lifetimes and numbers are
/// dropped.
fn tokenize(src: &str) -> Vec<(usize, Tok)> {
    let c: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let mut line = 1;
    let count_lines = |from: usize, to: usize, line: &mut usize| {
        *line += c[from..to].iter().filter(|&&ch| ch == '\n').count();
    };
    while i < c.len() {
        let ch = c[i];
        let next = c.get(i + 1).copied();
        if ch == '\n' {
            line += 1;
            i += 1;
        } else if ch.is_whitespace() {
            i += 1;
        } else if ch == '/' && next == Some('/') {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if ch == '/' && next == Some('*') {
            let start = i;
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            count_lines(start, i, &mut line);
        } else if ch == '"' {
            let start = i;
            i += 1;
            while i < c.len() && c[i] != '"' {
                i += if c[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
            count_lines(start, i.min(c.len()), &mut line);
        } else if ch == '\'' {
            // A char literal ('a', '\n', '\u{1F600}', '\'') or a lifetime / label ('a).
            if next == Some('\\') {
                i += 2;
                while i < c.len() && c[i] != '\'' {
                    i += 1;
                }
                i += 1;
            } else if c.get(i + 2) == Some(&'\'') {
                i += 3;
            } else {
                i += 1;
                while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                    i += 1;
                }
            }
        } else if ch.is_alphabetic() || ch == '_' {
            let start = i;
            while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                i += 1;
            }
            let word: String = c[start..i].iter().collect();
            // Raw strings and byte / C strings: r"..", r#".."#, b"..", br#".."#, c"..".
            let raw = matches!(word.as_str(), "r" | "br" | "cr");
            if raw && matches!(c.get(i), Some('"') | Some('#')) {
                let mut hashes = 0;
                while c.get(i) == Some(&'#') {
                    hashes += 1;
                    i += 1;
                }
                if c.get(i) == Some(&'"') {
                    let start = i;
                    i += 1;
                    loop {
                        if i >= c.len() {
                            break;
                        }
                        if c[i] == '"' && (0..hashes).all(|k| c.get(i + 1 + k) == Some(&'#')) {
                            i += 1 + hashes;
                            break;
                        }
                        i += 1;
                    }
                    count_lines(start, i.min(c.len()), &mut line);
                } else {
                    // `r#ident`: a raw identifier.
                    let s = i;
                    while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                        i += 1;
                    }
                    out.push((line, Tok::Ident(c[s..i].iter().collect())));
                }
            } else if matches!(word.as_str(), "b" | "c") && c.get(i) == Some(&'"') {
                // The string itself is skipped on the next round.
            } else if word == "b" && c.get(i) == Some(&'\'') {
                // A byte literal: skipped as a char literal on the next round.
            } else {
                out.push((line, Tok::Ident(word)));
            }
        } else if ch.is_ascii_digit() {
            while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_' || c[i] == '.') {
                if c[i] == '.' && !c.get(i + 1).is_some_and(char::is_ascii_digit) {
                    break;
                }
                i += 1;
            }
        } else if ch == ':' && next == Some(':') {
            out.push((line, Tok::PathSep));
            i += 2;
        } else {
            out.push((line, Tok::Punct(ch)));
            i += 1;
        }
    }
    out
}

/// The module path of a file under `src/`: `lib.rs` is the root, `a/mod.rs` and `a.rs` are
/// `a`, `a/b.rs` is `a::b`.
fn module_path(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().expect("a file name");
    let stem = last.trim_end_matches(".rs");
    let root_file = parts.is_empty() && stem == "lib";
    if stem != "mod" && !root_file {
        parts.push(stem.to_owned());
    }
    parts
}

/// Every reference through the crate root in `src`, for a file at module path `module`:
/// `crate::a::b`, `crate::{a::X, b::{Y, Z}}`, `$crate::a`, and `super::` chains that reach
/// the root. Same-module `self::`/`super::` paths are not references to another module.
fn references(src: &str, module: &[String]) -> Vec<Reference> {
    let toks = tokenize(src);
    let mut refs = Vec::new();
    // Inline modules (`mod tests { .. }`) and the brace depth they close at.
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut depth = 0usize;
    let mut i = 0;
    while i < toks.len() {
        let (line, tok) = &toks[i];
        match tok {
            Tok::Punct('{') => depth += 1,
            Tok::Punct('}') => {
                depth = depth.saturating_sub(1);
                while inline.last().is_some_and(|(_, d)| *d > depth) {
                    inline.pop();
                }
            }
            Tok::Ident(w) if w == "mod" => {
                if let (Some((_, Tok::Ident(name))), Some((_, Tok::Punct('{')))) =
                    (toks.get(i + 1), toks.get(i + 2))
                {
                    inline.push((name.clone(), depth + 1));
                }
            }
            Tok::Ident(w) if (w == "crate" || w == "super") => {
                let after_sep = i > 0 && toks[i - 1].1 == Tok::PathSep;
                if !after_sep && toks.get(i + 1).map(|t| &t.1) == Some(&Tok::PathSep) {
                    // Where the path starts: the root for `crate`, an ancestor for `super`.
                    let mut base: Vec<String> = module
                        .iter()
                        .cloned()
                        .chain(inline.iter().map(|(n, _)| n.clone()))
                        .collect();
                    let mut j = i;
                    let from_root = w == "crate";
                    if from_root {
                        base.clear();
                        j += 2;
                    } else {
                        while toks.get(j).map(|t| &t.1) == Some(&Tok::Ident("super".into()))
                            && toks.get(j + 1).map(|t| &t.1) == Some(&Tok::PathSep)
                        {
                            base.pop();
                            j += 2;
                        }
                    }
                    let (firsts, end) = first_segments(&toks, j);
                    if base.is_empty() {
                        for (first, text) in firsts {
                            refs.push(Reference {
                                line: *line,
                                root_item: first,
                                text: format!("crate::{text}"),
                            });
                        }
                    }
                    i = end;
                    continue;
                }
            }
            _ => {}
        }
        i += 1;
    }
    refs
}

/// Each path of the tree starting at `toks[at]` (`a::b`, `{a::X, b}`, `{a::{X, Y}, b}`) as
/// its first segment and its text, and the index just past the tree.
fn first_segments(toks: &[(usize, Tok)], at: usize) -> (Vec<(String, String)>, usize) {
    match toks.get(at).map(|t| &t.1) {
        Some(Tok::Punct('{')) => {
            let mut firsts = Vec::new();
            let mut j = at + 1;
            loop {
                match toks.get(j).map(|t| &t.1) {
                    None => return (firsts, j),
                    Some(Tok::Punct('}')) => return (firsts, j + 1),
                    Some(Tok::Punct(',')) => j += 1,
                    Some(_) => {
                        let (sub, end) = first_segments(toks, j);
                        firsts.extend(sub);
                        j = end;
                    }
                }
            }
        }
        Some(Tok::Ident(name)) => {
            let end = skip_tree(toks, at + 1);
            (vec![(name.clone(), path_text(&toks[at..end]))], end)
        }
        _ => (Vec::new(), at),
    }
}

/// Skips the rest of one path of a tree (`::b::{..}`, `as Name`) up to a `,` or `}` of the
/// enclosing group, or the end of a path in code.
fn skip_tree(toks: &[(usize, Tok)], mut j: usize) -> usize {
    loop {
        match toks.get(j).map(|t| &t.1) {
            Some(Tok::PathSep) => match toks.get(j + 1).map(|t| &t.1) {
                Some(Tok::Punct('{')) => {
                    let mut d = 0;
                    j += 1;
                    while let Some((_, t)) = toks.get(j) {
                        match t {
                            Tok::Punct('{') => d += 1,
                            Tok::Punct('}') => {
                                d -= 1;
                                if d == 0 {
                                    j += 1;
                                    break;
                                }
                            }
                            _ => {}
                        }
                        j += 1;
                    }
                }
                Some(_) => j += 2,
                None => return j + 1,
            },
            Some(Tok::Ident(w)) if w == "as" => j += 2,
            _ => return j,
        }
    }
}

fn path_text(toks: &[(usize, Tok)]) -> String {
    let mut s = String::new();
    for (_, t) in toks {
        match t {
            Tok::Ident(w) if w == "as" => s.push_str(" as "),
            Tok::Ident(w) => s.push_str(w),
            Tok::PathSep => s.push_str("::"),
            Tok::Punct(',') => s.push_str(", "),
            Tok::Punct(p) => s.push(*p),
        }
    }
    s
}

/// The names `src/lib.rs` re-exports (`pub use a::{B, c::D as E};`), each with the top-level
/// module it comes from.
fn root_reexports(lib: &str) -> BTreeMap<String, String> {
    let toks = tokenize(lib);
    let mut map = BTreeMap::new();
    let mut i = 0;
    while i + 2 < toks.len() {
        if toks[i].1 == Tok::Ident("pub".into()) && toks[i + 1].1 == Tok::Ident("use".into()) {
            let mut j = i + 2;
            if toks[j].1 == Tok::Ident("crate".into()) {
                j += 2;
            }
            if let Tok::Ident(module) = &toks[j].1 {
                // Every name the statement brings into the root: the last segment of each
                // leaf, or its `as` alias.
                let mut k = j;
                let mut last = None;
                while k < toks.len() && toks[k].1 != Tok::Punct(';') {
                    match &toks[k].1 {
                        Tok::Ident(w) if w == "as" => {}
                        Tok::Ident(w) => last = Some(w.clone()),
                        Tok::Punct(',') | Tok::Punct('}') => {
                            if let Some(name) = last.take() {
                                map.insert(name, module.clone());
                            }
                        }
                        _ => {}
                    }
                    k += 1;
                }
                if let Some(name) = last {
                    map.insert(name, module.clone());
                }
                i = k;
            }
        }
        i += 1;
    }
    map
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.expect("a directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// One edge between top-level modules, with where it is written.
#[derive(Debug)]
struct Edge {
    from: String,
    to: String,
    at: String,
}

fn edges() -> Vec<Edge> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let lib = fs::read_to_string(src.join("lib.rs")).expect("src/lib.rs");
    let reexports = root_reexports(&lib);
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut modules = BTreeSet::new();
    for file in &files {
        let module = module_path(file.strip_prefix(&src).unwrap());
        if let Some(top) = module.first() {
            modules.insert(top.clone());
        }
    }
    let mut edges = Vec::new();
    let mut unknown = Vec::new();
    for file in &files {
        let rel = file.strip_prefix(&src).unwrap();
        let module = module_path(rel);
        let Some(from) = module.first() else {
            continue; // the root re-exports everything; it is the crate's face, not a layer
        };
        let text = fs::read_to_string(file).unwrap();
        for r in references(&text, &module) {
            let to = if modules.contains(&r.root_item) {
                r.root_item.clone()
            } else if let Some(m) = reexports.get(&r.root_item) {
                m.clone()
            } else {
                unknown.push(format!("src/{}:{}: `{}`", rel.display(), r.line, r.text));
                continue;
            };
            if &to != from {
                edges.push(Edge {
                    from: from.clone(),
                    to,
                    at: format!("src/{}:{}: `{}`", rel.display(), r.line, r.text),
                });
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "paths through the crate root to something that is neither a top-level module nor a \
         re-export of src/lib.rs (the check cannot place them):\n  {}",
        unknown.join("\n  ")
    );
    let placed: BTreeSet<String> = LAYERS.iter().map(|(m, _)| (*m).to_owned()).collect();
    let missing: Vec<_> = modules.difference(&placed).collect();
    assert!(
        missing.is_empty(),
        "top-level modules without a layer in tests/layering.rs (add them to LAYERS): {missing:?}"
    );
    edges
}

fn layer(module: &str) -> u32 {
    LAYERS
        .iter()
        .find(|(m, _)| *m == module)
        .map(|(_, l)| *l)
        .unwrap_or_else(|| panic!("module {module} has no layer"))
}

/// The strongly connected components with more than one module (Tarjan's algorithm).
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct State<'a> {
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        next: usize,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a str) {
        s.index.insert(v, s.next);
        s.low.insert(v, s.next);
        s.next += 1;
        s.stack.push(v);
        s.on_stack.insert(v);
        if let Some(targets) = s.graph.get(v) {
            for w in targets {
                let w = w.as_str();
                if !s.index.contains_key(w) {
                    visit(s, w);
                    let lw = s.low[w];
                    let lv = s.low.get_mut(v).unwrap();
                    *lv = (*lv).min(lw);
                } else if s.on_stack.contains(w) {
                    let iw = s.index[w];
                    let lv = s.low.get_mut(v).unwrap();
                    *lv = (*lv).min(iw);
                }
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            loop {
                let w = s.stack.pop().unwrap();
                s.on_stack.remove(w);
                component.push(w.to_owned());
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                s.out.push(component);
            }
        }
    }
    let mut s = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in graph.keys() {
        if !s.index.contains_key(v.as_str()) {
            visit(&mut s, v);
        }
    }
    s.out
}

#[test]
fn imports_run_down_the_layers_without_cycles() {
    let edges = edges();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut upward = BTreeSet::new();
    for e in &edges {
        graph
            .entry(e.from.clone())
            .or_default()
            .insert(e.to.clone());
        let (lf, lt) = (layer(&e.from), layer(&e.to));
        if lt > lf {
            upward.insert(format!(
                "{} (layer {lf}) -> {} (layer {lt}) at {}",
                e.from, e.to, e.at
            ));
        }
    }
    let cycles = cycles(&graph);
    let mut problems = Vec::new();
    if !upward.is_empty() {
        problems.push(format!(
            "{} imports from a higher layer:\n  {}",
            upward.len(),
            upward.into_iter().collect::<Vec<_>>().join("\n  ")
        ));
    }
    for c in &cycles {
        // Each module-level edge inside the cycle once, with where it is first written.
        let mut inside: BTreeMap<(&str, &str), (&str, usize)> = BTreeMap::new();
        for e in edges
            .iter()
            .filter(|e| c.contains(&e.from) && c.contains(&e.to))
        {
            inside.entry((&e.from, &e.to)).or_insert((&e.at, 0)).1 += 1;
        }
        let inside: Vec<_> = inside
            .iter()
            .map(|((from, to), (at, n))| format!("{from} -> {to} ({n}x, first at {at})"))
            .collect();
        problems.push(format!(
            "a cycle between {}:\n  {}",
            c.join(", "),
            inside.join("\n  ")
        ));
    }
    assert!(
        problems.is_empty(),
        "the import graph of src/ must run one way (layers in tests/layering.rs):\n{}",
        problems.join("\n")
    );
}

#[test]
fn extraction_reads_grouped_multiline_and_inline_paths_and_skips_comments() {
    let src = r##"
        //! See [`crate::bus::Bus`] and crate::http in a comment.
        use crate::{
            adapter::Health,
            dispatch::{Target, report::{A, B}},
            Signal as S,
        };
        /* crate::queue::Queue in a block /* nested crate::cluster */ comment */
        /// Doc: `crate::policy::X`.
        fn f() -> &'static str {
            let _ = crate::telemetry::deliver();
            let _c = '"';
            let _s = "crate::http in a string";
            let _r = r#"crate::cluster "in" a raw string"#;
            $crate::router::Router::new();
            super::error::Thing
        }
        pub(crate) fn g() {}
        mod tests {
            use super::*;
            use super::super::binding::X;
        }
    "##;
    let module = vec!["signal".to_owned()];
    let got: Vec<(usize, String)> = references(src, &module)
        .into_iter()
        .map(|r| (r.line, r.root_item))
        .collect();
    let want: Vec<(usize, String)> = [
        (3, "adapter"),
        (3, "dispatch"),
        (3, "Signal"),
        (11, "telemetry"),
        (15, "router"),
        (16, "error"),
        (21, "binding"),
    ]
    .into_iter()
    .map(|(l, m)| (l, m.to_owned()))
    .collect();
    assert_eq!(got, want);
}

#[test]
fn root_reexports_map_names_to_their_modules() {
    let map = root_reexports(
        "pub mod a;\npub use a::A;\npub use b::{B, c::C as D,\n  E};\npub use crate::f::F;",
    );
    let got: Vec<(&str, &str)> = map.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert_eq!(
        got,
        [("A", "a"), ("B", "b"), ("D", "b"), ("E", "b"), ("F", "f")]
    );
}

#[test]
fn file_paths_map_to_module_paths() {
    let m = |p: &str| module_path(Path::new(p)).join("::");
    assert_eq!(m("lib.rs"), "");
    assert_eq!(m("bus/mod.rs"), "bus");
    assert_eq!(m("bus/context.rs"), "bus::context");
    assert_eq!(m("pattern.rs"), "pattern");
    assert_eq!(m("http/signing/mod.rs"), "http::signing");
}
