//! Tidy tests: invariants of the source tree, checked by reading the files (rust-analyzer's
//! `xtask/src/tidy.rs` is the model). Each checker is a plain function over `(path, text)`
//! pairs returning one `path:line: what` per problem, so the unit tests at the bottom can show
//! that each of them fails on a bad tree.
//!
//! The checks read code, not comments or string literals: a doc link to a higher layer or a
//! crate named in a message is not a dependency.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The top-level modules of the `msngate` crate, bottom to top. A module may use only modules
/// in lower layers; two modules in one layer may not use each other. Names of modules that do
/// not exist (yet) are skipped; a module missing from the table is reported.
/// `src/main.rs` and `src/bin/` sit above all of these and may use anything.
const LAYERS: &[&[&str]] = &[
    &["protocol", "metrics"],
    &["store"],
    &["connection"],
    &["backend"],
    &["config"],
    &["secrets"],
    &["hub"],
    &["services"],
    &["chat", "local"],
    &["bridge"],
    &["notification", "switchboard"],
    &["dispatch", "msncd", "http"],
    &["server"],
];

/// No source file outside the tests is longer than this: past it a file usually holds two
/// concerns (docs/ARCHITECTURE.md, "Invariants").
const MAX_LINES: usize = 800;

/// Files allowed over [`MAX_LINES`] for now, each being split by someone. An entry that is no
/// longer too long fails the test, so the list only shrinks.
const LONG_FILES: &[&str] = &[];

/// Crates whose types only the backends in bridges/* may name.
const NETWORK_CRATES: &[&str] = &[
    "tokio_xmpp",
    "matrix_sdk",
    "ruma",
    "xmpp_parsers",
    "minidom",
];

// ---------------------------------------------------------------------------------------------
// The tests on this tree.

#[test]
fn layers_only_reach_down() {
    let files = read_tree(&["src"]);
    assert_clean("layer violations", layer_violations(&files, LAYERS));
}

#[test]
fn modules_have_no_cycles() {
    let files = read_tree(&["src"]);
    assert_clean("import cycles", module_cycles(&files));
}

#[test]
fn sibling_modules_have_no_cycles() {
    let files = read_tree(&["src"]);
    assert_clean("import cycles inside modules", nested_module_cycles(&files));
}

#[test]
fn protocol_does_no_io() {
    let files = read_tree(&["src/protocol"]);
    assert!(!files.is_empty(), "src/protocol was not found");
    assert_clean("I/O in src/protocol", protocol_io(&files));
}

#[test]
fn only_bridges_name_network_crates() {
    let files = read_tree(&["src", "tools"]);
    assert_clean("network crates outside bridges/", network_crates(&files));
}

#[test]
fn source_files_stay_short() {
    let mut roots = vec!["src".to_string(), "tools".to_string()];
    let bridges = Path::new(env!("CARGO_MANIFEST_DIR")).join("bridges");
    for entry in std::fs::read_dir(bridges).expect("bridges/") {
        let name = entry.expect("bridges/ entry").file_name();
        roots.push(format!("bridges/{}/src", name.to_string_lossy()));
    }
    let roots: Vec<&str> = roots.iter().map(String::as_str).collect();
    let files = read_tree(&roots);
    assert_clean("long files", long_files(&files, MAX_LINES, LONG_FILES));
}

/// Every `.rs` file under `roots` (relative to the crate), as `(path, text)` with `/` paths,
/// sorted.
fn read_tree(roots: &[&str]) -> Vec<(String, String)> {
    fn walk(dir: &Path, rel: &str, out: &mut Vec<(String, String)>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries {
            let entry = entry.expect("directory entry");
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            let rel = format!("{rel}/{name}");
            if path.is_dir() {
                walk(&path, &rel, out);
            } else if name.ends_with(".rs") {
                let text = std::fs::read_to_string(&path).expect("UTF-8 source");
                out.push((rel, text));
            }
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut out = Vec::new();
    for r in roots {
        walk(&root.join(r), r, &mut out);
    }
    out.sort();
    out
}

fn assert_clean(what: &str, problems: Vec<String>) {
    assert!(
        problems.is_empty(),
        "{} {what}:\n{}\n",
        problems.len(),
        problems.join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// Checkers.

/// One use of another top-level module: `from` (file:line) uses `to`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Edge {
    from: String,
    to: String,
    path: String,
    line: usize,
}

/// Every edge between top-level modules that does not go down the layer table.
fn layer_violations(files: &[(String, String)], layers: &[&[&str]]) -> Vec<String> {
    let modules = declared_modules(files);
    let layer_of = |m: &str| layers.iter().position(|layer| layer.contains(&m));
    let mut problems = Vec::new();
    for m in &modules {
        if layer_of(m).is_none() {
            problems.push(format!(
                "src/lib.rs: module `{m}` is not in the layer table"
            ));
        }
    }
    for e in module_edges(files, &modules) {
        let (Some(from), Some(to)) = (layer_of(&e.from), layer_of(&e.to)) else {
            continue;
        };
        if from == to {
            problems.push(format!(
                "{}:{}: `{}` uses `{}`, in the same layer",
                e.path, e.line, e.from, e.to
            ));
        } else if from < to {
            problems.push(format!(
                "{}:{}: `{}` (layer {from}) uses `{}` (layer {to}), a higher layer",
                e.path, e.line, e.from, e.to
            ));
        }
    }
    problems
}

/// One cycle per strongly connected group of top-level modules, as a path of edges with the
/// first place each edge is made.
fn module_cycles(files: &[(String, String)]) -> Vec<String> {
    let modules = declared_modules(files);
    let nodes: Vec<&str> = modules.iter().map(String::as_str).collect();
    cycles(&nodes, &module_edges(files, &modules))
}

/// The same inside every module: one cycle per strongly connected group of sibling modules
/// (`store::sqlite::lists` and `store::sqlite::groups` using each other). A file using its
/// parent's or its children's items is not a cycle of siblings and is not counted.
fn nested_module_cycles(files: &[(String, String)]) -> Vec<String> {
    let edges = nested_module_edges(files);
    let nodes: BTreeSet<&str> = edges
        .iter()
        .flat_map(|e| [e.from.as_str(), e.to.as_str()])
        .collect();
    let nodes: Vec<&str> = nodes.into_iter().collect();
    cycles(&nodes, &edges)
}

/// One cycle per strongly connected group of `nodes` under `edges`, as a path of edges with
/// the first place each edge is made.
fn cycles(nodes: &[&str], edges: &[Edge]) -> Vec<String> {
    let mut graph: BTreeMap<&str, BTreeMap<&str, &Edge>> = BTreeMap::new();
    for e in edges {
        graph
            .entry(e.from.as_str())
            .or_default()
            .entry(e.to.as_str())
            .or_insert(e);
    }
    let successors = |n: &str| -> Vec<&str> {
        graph
            .get(n)
            .map(|s| s.keys().copied().collect())
            .unwrap_or_default()
    };
    let mut problems = Vec::new();
    for group in strongly_connected(nodes, &successors) {
        if group.len() < 2 {
            continue;
        }
        // The shortest way from the group's first module back to itself.
        let start = group[0];
        let mut previous: BTreeMap<&str, &str> = BTreeMap::new();
        let mut queue = std::collections::VecDeque::from([start]);
        'search: while let Some(n) = queue.pop_front() {
            for s in successors(n) {
                if !group.contains(&s) || previous.contains_key(s) {
                    continue;
                }
                previous.insert(s, n);
                if s == start {
                    break 'search;
                }
                queue.push_back(s);
            }
        }
        let mut cycle = vec![start];
        let mut at = previous[start];
        while at != start {
            cycle.push(at);
            at = previous[at];
        }
        cycle.push(start);
        cycle.reverse();
        let mut text = format!("cycle {}", cycle.join(" -> "));
        if group.len() > cycle.len() - 1 {
            text.push_str(&format!(" (one of the cycles among {})", group.join(", ")));
        }
        for pair in cycle.windows(2) {
            let e = graph[pair[0]][pair[1]];
            text.push_str(&format!(
                "\n    {} -> {}: {}:{}",
                e.from, e.to, e.path, e.line
            ));
        }
        problems.push(text);
    }
    problems
}

/// Tarjan's strongly connected components, each in the order of `nodes`.
fn strongly_connected<'a>(
    nodes: &[&'a str],
    successors: &dyn Fn(&str) -> Vec<&'a str>,
) -> Vec<Vec<&'a str>> {
    struct State<'a, 's> {
        successors: &'s dyn Fn(&str) -> Vec<&'a str>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        groups: Vec<Vec<&'a str>>,
    }
    fn visit<'a>(s: &mut State<'a, '_>, n: &'a str) {
        let i = s.index.len();
        s.index.insert(n, i);
        s.low.insert(n, i);
        s.stack.push(n);
        s.on_stack.insert(n);
        for m in (s.successors)(n) {
            if !s.index.contains_key(m) {
                visit(s, m);
                let low = s.low[n].min(s.low[m]);
                s.low.insert(n, low);
            } else if s.on_stack.contains(m) {
                let low = s.low[n].min(s.index[m]);
                s.low.insert(n, low);
            }
        }
        if s.low[n] == s.index[n] {
            let mut group = Vec::new();
            while let Some(m) = s.stack.pop() {
                s.on_stack.remove(m);
                group.push(m);
                if m == n {
                    break;
                }
            }
            s.groups.push(group);
        }
    }
    let mut state = State {
        successors,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        groups: Vec::new(),
    };
    for &n in nodes {
        if !state.index.contains_key(n) {
            visit(&mut state, n);
        }
    }
    let order = |m: &&str| nodes.iter().position(|n| n == m);
    let mut groups = state.groups;
    for g in &mut groups {
        g.sort_by_key(order);
    }
    groups.sort_by_key(|g| order(&g[0]));
    groups
}

/// Blocking I/O, threads, processes or tokio in src/protocol.
fn protocol_io(files: &[(String, String)]) -> Vec<String> {
    const STD_FORBIDDEN: &[&str] = &["net", "fs", "thread", "process"];
    const IO_FORBIDDEN: &[&str] = &[
        "Read",
        "Write",
        "BufRead",
        "BufReader",
        "BufWriter",
        "stdin",
        "stdout",
        "stderr",
        "copy",
        "prelude",
    ];
    let mut problems = Vec::new();
    for (path, text) in files {
        if !path.starts_with("src/protocol/") {
            continue;
        }
        let tokens = tokenize(&strip(text));
        let ident = |i: usize| match tokens.get(i) {
            Some((Token::Ident(s), _)) => Some(s.as_str()),
            _ => None,
        };
        let is = |i: usize, t: &Token| tokens.get(i).is_some_and(|(x, _)| x == t);
        for (i, (token, line)) in tokens.iter().enumerate() {
            let mut report = |what: &str| problems.push(format!("{path}:{line}: {what}"));
            let Token::Ident(name) = token else { continue };
            if name == "tokio" {
                report("tokio in the protocol layer");
            } else if name == "std" && is(i + 1, &Token::PathSep) {
                // `std::net`, or `std::{fmt, net::TcpStream}`
                let used = match ident(i + 2) {
                    Some(m) => vec![m.to_string()],
                    None if is(i + 2, &Token::Open) => group_items(&tokens, i + 2)
                        .into_iter()
                        .map(|x| x.0)
                        .collect(),
                    None => vec![],
                };
                for m in used.iter().filter(|m| STD_FORBIDDEN.contains(&m.as_str())) {
                    report(&format!("std::{m} in the protocol layer"));
                }
            } else if name == "io" && is(i + 1, &Token::PathSep) {
                // `io::Write`, or `std::io::{self, Read}`
                let used = match ident(i + 2) {
                    Some(m) => vec![m.to_string()],
                    None if is(i + 2, &Token::Open) => group_items(&tokens, i + 2)
                        .into_iter()
                        .map(|x| x.0)
                        .collect(),
                    None => vec![],
                };
                for m in used.iter().filter(|m| IO_FORBIDDEN.contains(&m.as_str())) {
                    report(&format!("io::{m} (blocking I/O) in the protocol layer"));
                }
            }
        }
    }
    problems
}

/// Any identifier of [`NETWORK_CRATES`] (or a crate of theirs, such as `matrix_sdk_base`) in
/// the files given, which are everything but bridges/* and tests/.
fn network_crates(files: &[(String, String)]) -> Vec<String> {
    let mut problems = Vec::new();
    for (path, text) in files {
        if !(path.starts_with("src/") || path.starts_with("tools/")) {
            continue;
        }
        for (token, line) in tokenize(&strip(text)) {
            let Token::Ident(name) = token else { continue };
            let named = NETWORK_CRATES
                .iter()
                .find(|c| name == **c || name.starts_with(&format!("{c}_")));
            if let Some(c) = named {
                problems.push(format!(
                    "{path}:{line}: `{name}`: only bridges/* use {c} (tests may, as clients)"
                ));
            }
        }
    }
    problems
}

/// Files over `max` lines that are not allowed to be, and allowed ones that no longer are.
fn long_files(files: &[(String, String)], max: usize, allowed: &[&str]) -> Vec<String> {
    let mut problems = Vec::new();
    for (path, text) in files {
        let lines = text.lines().count();
        let is_allowed = allowed.contains(&path.as_str());
        if lines > max && !is_allowed {
            problems.push(format!(
                "{path}: {lines} lines, over {max}: split it into cohesive modules"
            ));
        } else if lines <= max && is_allowed {
            problems.push(format!(
                "{path}: {lines} lines now: remove it from the list of long files"
            ));
        }
    }
    for a in allowed {
        if !files.iter().any(|(p, _)| p == a) {
            problems.push(format!(
                "{a}: in the list of long files but gone: remove it"
            ));
        }
    }
    problems
}

// ---------------------------------------------------------------------------------------------
// Reading Rust, just enough.

/// The modules `src/lib.rs` declares (`mod x;`, `pub mod x;`, `pub(crate) mod x;`).
fn declared_modules(files: &[(String, String)]) -> BTreeSet<String> {
    let Some((_, lib)) = files.iter().find(|(p, _)| p == "src/lib.rs") else {
        return BTreeSet::new();
    };
    let tokens = tokenize(&strip(lib));
    let mut modules = BTreeSet::new();
    let mut depth = 0;
    for (i, (t, _)) in tokens.iter().enumerate() {
        match t {
            Token::Open => depth += 1,
            Token::Close => depth -= 1,
            Token::Ident(m) if m == "mod" && depth == 0 => {
                if let (Some((Token::Ident(name), _)), Some((Token::Punct(';'), _))) =
                    (tokens.get(i + 1), tokens.get(i + 2))
                {
                    modules.insert(name.clone());
                }
            }
            _ => {}
        }
    }
    modules
}

/// The module path of a file under src/ (`src/a/b.rs` and `src/a/b/mod.rs` are `a::b`);
/// `None` for the crate root and the binaries, which are not part of the layering.
fn file_module_path(path: &str) -> Option<Vec<String>> {
    let rest = path.strip_prefix("src/")?.strip_suffix(".rs")?;
    let mut parts: Vec<String> = rest.split('/').map(str::to_string).collect();
    if matches!(parts[0].as_str(), "lib" | "main" | "bin") {
        return None;
    }
    if parts.last().map(String::as_str) == Some("mod") {
        parts.pop();
    }
    Some(parts)
}

/// Every path a file names from the crate root or through `super::` out of itself, resolved
/// to segments from the crate root, each with its line: `crate::a::b::X`, `super::x` (from
/// however deep, inline `mod` blocks counted), and a `{ ... }` group giving one path per item
/// (its first segment). `super::` that stays inside the file's own inline modules is left out.
fn crate_paths(module: &[String], text: &str) -> Vec<Vec<(String, usize)>> {
    let tokens = tokenize(&strip(text));
    let mut paths = Vec::new();
    // Brace depths at which inline `mod x {` blocks opened.
    let mut inline_mods: Vec<usize> = Vec::new();
    let mut braces = 0;
    let mut i = 0;
    while i < tokens.len() {
        match &tokens[i].0 {
            Token::Open => {
                braces += 1;
                if i >= 2
                    && matches!(&tokens[i - 2].0, Token::Ident(m) if m == "mod")
                    && matches!(tokens[i - 1].0, Token::Ident(_))
                {
                    inline_mods.push(braces);
                }
            }
            Token::Close => {
                if inline_mods.last() == Some(&braces) {
                    inline_mods.pop();
                }
                braces -= 1;
            }
            Token::Ident(word) if word == "crate" || word == "super" => {
                let mut j = i;
                let base: Option<Vec<(String, usize)>> = if word == "crate" {
                    // `crate::`, not `pub(crate)`.
                    let path = tokens.get(i + 1).is_some_and(|t| t.0 == Token::PathSep);
                    if path {
                        j = i + 2;
                    }
                    path.then(Vec::new)
                } else {
                    let mut supers: usize = 0;
                    while matches!(tokens.get(j), Some((Token::Ident(w), _)) if w == "super")
                        && tokens.get(j + 1).is_some_and(|t| t.0 == Token::PathSep)
                    {
                        supers += 1;
                        j += 2;
                    }
                    // `super` inside the file's own inline modules stays in the file.
                    let climb = supers.saturating_sub(inline_mods.len());
                    (supers > inline_mods.len() && climb <= module.len()).then(|| {
                        let line = tokens[i].1;
                        module[..module.len() - climb]
                            .iter()
                            .map(|m| (m.clone(), line))
                            .collect()
                    })
                };
                if let Some(mut path) = base {
                    while let (Some((Token::Ident(m), line)), Some((Token::PathSep, _))) =
                        (tokens.get(j), tokens.get(j + 1))
                    {
                        path.push((m.clone(), *line));
                        j += 2;
                    }
                    match tokens.get(j) {
                        Some((Token::Ident(m), line)) => {
                            path.push((m.clone(), *line));
                            paths.push(path);
                        }
                        Some((Token::Open, _)) => {
                            for item in group_items(&tokens, j) {
                                let mut p = path.clone();
                                p.push(item);
                                paths.push(p);
                            }
                        }
                        _ => {}
                    }
                }
                i = j.max(i + 1);
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    paths
}

/// Every use of one top-level module by another: `crate::x`, `crate::{x, y::z}`, and
/// `super::` climbing out to the crate root (inline `mod` blocks counted).
fn module_edges(files: &[(String, String)], modules: &BTreeSet<String>) -> Vec<Edge> {
    let mut edges = Vec::new();
    for (path, text) in files {
        let Some(from) = file_module_path(path) else {
            continue;
        };
        for target in crate_paths(&from, text) {
            let (to, line) = &target[0];
            if *to != from[0] && modules.contains(to) {
                edges.push(Edge {
                    from: from[0].clone(),
                    to: to.clone(),
                    path: path.clone(),
                    line: *line,
                });
            }
        }
    }
    edges
}

/// Every use of one module by a sibling below the top level (`crate::a::b::x`, `super::x`,
/// `super::{x, y}`), between the two siblings' full paths (`a::b` -> `a::c`).
fn nested_module_edges(files: &[(String, String)]) -> Vec<Edge> {
    let modules: BTreeSet<Vec<String>> = files
        .iter()
        .filter_map(|(p, _)| file_module_path(p))
        .collect();
    let mut edges = Vec::new();
    for (path, text) in files {
        let Some(from) = file_module_path(path) else {
            continue;
        };
        for target in crate_paths(&from, text) {
            let common = from
                .iter()
                .zip(&target)
                .take_while(|(a, (b, _))| *a == b)
                .count();
            // Top-level edges are module_cycles' job; a parent or child is not a sibling.
            if common == 0 || common >= from.len() || common >= target.len() {
                continue;
            }
            let to: Vec<String> = target[..=common].iter().map(|(m, _)| m.clone()).collect();
            if modules.contains(&to) {
                edges.push(Edge {
                    from: from[..=common].join("::"),
                    to: to.join("::"),
                    path: path.clone(),
                    line: target[common].1,
                });
            }
        }
    }
    edges
}

/// The first path segment of each item of the `{ ... }` group opening at `open`:
/// `{ a::b, c::{d, e}, self }` gives `a` and `c` (with their lines).
fn group_items(tokens: &[(Token, usize)], open: usize) -> Vec<(String, usize)> {
    let mut items = Vec::new();
    let mut depth = 0;
    let mut item_start = true;
    for (t, line) in &tokens[open..] {
        match t {
            Token::Open => {
                depth += 1;
                item_start = depth == 1;
            }
            Token::Close => {
                depth -= 1;
                if depth == 0 {
                    break;
                }
            }
            Token::Punct(',') if depth == 1 => item_start = true,
            Token::Ident(m) if item_start && depth == 1 => {
                if m != "self" {
                    items.push((m.clone(), *line));
                }
                item_start = false;
            }
            _ => item_start = false,
        }
    }
    items
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Ident(String),
    /// `::`
    PathSep,
    Open,
    Close,
    Punct(char),
}

/// Identifiers, `::`, braces and other punctuation, each with its line (from 1).
fn tokenize(code: &str) -> Vec<(Token, usize)> {
    let chars: Vec<char> = code.chars().collect();
    let mut tokens = Vec::new();
    let mut line = 1;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '\n' {
            line += 1;
            i += 1;
        } else if c.is_whitespace() {
            i += 1;
        } else if c.is_alphanumeric() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            tokens.push((Token::Ident(word), line));
        } else if c == ':' && chars.get(i + 1) == Some(&':') {
            tokens.push((Token::PathSep, line));
            i += 2;
        } else {
            tokens.push((
                match c {
                    '{' => Token::Open,
                    '}' => Token::Close,
                    c => Token::Punct(c),
                },
                line,
            ));
            i += 1;
        }
    }
    tokens
}

/// The code without comments (doc comments included) and with the contents of string and
/// character literals blanked; line breaks are kept so that lines still count.
fn strip(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let at = |i: usize| chars.get(i).copied().unwrap_or('\0');
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '/' && at(i + 1) == '/' {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && at(i + 1) == '*' {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && at(i + 1) == '*' {
                    depth += 1;
                    i += 2;
                } else if chars[i] == '*' && at(i + 1) == '/' {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    if chars[i] == '\n' {
                        out.push('\n');
                    }
                    i += 1;
                }
            }
        } else if c == 'r'
            && (!ident(at(i.wrapping_sub(1)))
                || (at(i.wrapping_sub(1)) == 'b' && !ident(at(i.wrapping_sub(2)))))
            && {
                let mut j = i + 1;
                while at(j) == '#' {
                    j += 1;
                }
                at(j) == '"'
            }
        {
            // A raw string: r"...", r#"..."#, br"...".
            let mut hashes = 0;
            i += 1;
            while at(i) == '#' {
                hashes += 1;
                i += 1;
            }
            i += 1;
            out.push_str("\"\"");
            while i < chars.len() {
                if chars[i] == '"' && (1..=hashes).all(|k| at(i + k) == '#') {
                    i += 1 + hashes;
                    break;
                }
                if chars[i] == '\n' {
                    out.push('\n');
                }
                i += 1;
            }
        } else if c == '"' {
            out.push_str("\"\"");
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' {
                    i += 1;
                }
                if at(i) == '\n' {
                    out.push('\n');
                }
                i += 1;
            }
            i += 1;
        } else if c == '\'' && at(i + 1) == '\\' {
            // An escaped character literal: '\n', '\'', '\u{1F600}'.
            out.push_str("' '");
            i += 3;
            while i < chars.len() && chars[i] != '\'' {
                i += 1;
            }
            i += 1;
        } else if c == '\'' && at(i + 2) == '\'' {
            out.push_str("' '");
            i += 3;
        } else {
            // Everything else, lifetimes included.
            out.push(c);
            i += 1;
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The checkers can fail: each is shown a small bad tree and a good one.

#[cfg(test)]
mod checkers {
    use super::*;

    fn tree(files: &[(&str, &str)]) -> Vec<(String, String)> {
        files
            .iter()
            .map(|(p, t)| (p.to_string(), t.to_string()))
            .collect()
    }

    const LIB: &str = "//! Test crate.\npub mod a;\npub mod b;\npub(crate) mod c;\n";

    #[test]
    fn finds_modules_of_lib_rs() {
        let files = tree(&[("src/lib.rs", LIB)]);
        let found: Vec<String> = declared_modules(&files).into_iter().collect();
        assert_eq!(found, ["a", "b", "c"]);
    }

    #[test]
    fn a_cycle_is_reported_with_its_path() {
        let bad = tree(&[
            ("src/lib.rs", LIB),
            ("src/a.rs", "//! A.\nuse crate::b::Thing;\n"),
            // `super::` from src/b/mod.rs is the crate root.
            ("src/b/mod.rs", "//! B.\n\nfn f() { super::a::g() }\n"),
        ]);
        let problems = module_cycles(&bad);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].starts_with("cycle a -> b -> a"), "{problems:?}");
        assert!(problems[0].contains("a -> b: src/a.rs:2"), "{problems:?}");
        assert!(
            problems[0].contains("b -> a: src/b/mod.rs:3"),
            "{problems:?}"
        );

        let good = tree(&[
            ("src/lib.rs", LIB),
            ("src/a.rs", "use crate::b::Thing;\n"),
            // Inside b: its own child, and a doc link and a string naming a.
            (
                "src/b/mod.rs",
                "/// See [`crate::a::f`].\nuse super::b::x;\nconst S: &str = \"crate::a\";\n",
            ),
            // super::super from src/b/c.rs's test module is still inside b.
            ("src/b/c.rs", "mod tests { use super::super::y; }\n"),
        ]);
        assert_eq!(module_cycles(&good), Vec::<String>::new());
    }

    #[test]
    fn longer_cycles_are_found_too() {
        let bad = tree(&[
            ("src/lib.rs", LIB),
            ("src/a.rs", "use crate::b::X;\n"),
            ("src/b.rs", "use crate::c::X;\n"),
            ("src/c.rs", "fn f() -> crate::a::Y { todo!() }\n"),
        ]);
        let problems = module_cycles(&bad);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].starts_with("cycle a -> b -> c -> a"),
            "{problems:?}"
        );
    }

    #[test]
    fn a_cycle_between_sibling_files_is_found() {
        let bad = tree(&[
            ("src/lib.rs", LIB),
            ("src/a/mod.rs", "mod x;\nmod y;\nmod z;\npub struct Top;\n"),
            ("src/a/x.rs", "use super::{y::Y, Top};\n"),
            ("src/a/y.rs", "pub struct Y;\nfn f() { crate::a::z::g() }\n"),
            (
                "src/a/z.rs",
                "mod tests {\n    use super::super::x::X;\n}\n",
            ),
        ]);
        let problems = nested_module_cycles(&bad);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].starts_with("cycle a::x -> a::y -> a::z -> a::x"),
            "{problems:?}"
        );
        assert!(
            problems[0].contains("a::z -> a::x: src/a/z.rs:2"),
            "{problems:?}"
        );

        // Parent and children using each other, and `super` inside a file's own test module.
        let good = tree(&[
            ("src/lib.rs", LIB),
            (
                "src/a/mod.rs",
                "mod x;\nmod y;\nuse x::X;\npub struct Top;\n",
            ),
            (
                "src/a/x.rs",
                "use super::{y::Y, Top};\nmod tests { use super::X; }\n",
            ),
            ("src/a/y.rs", "use crate::a::Top;\n"),
        ]);
        assert_eq!(nested_module_cycles(&good), Vec::<String>::new());
    }

    #[test]
    fn layers_are_checked_in_every_form_of_use() {
        let layers: &[&[&str]] = &[&["a"], &["b", "c"]];
        let bad = tree(&[
            ("src/lib.rs", LIB),
            // A multi-line group reaching up twice, and an inline path.
            (
                "src/a.rs",
                "use crate::{\n    b::X,\n    c::{d, e},\n};\nfn f() { let _ = crate::b::y::Z; }\n",
            ),
            // Same layer, through super:: out of a nested file's inline module.
            (
                "src/b/x.rs",
                "mod t {\n    use super::super::super::c::Y;\n}\n",
            ),
        ]);
        let problems = layer_violations(&bad, layers);
        assert_eq!(
            problems,
            [
                "src/a.rs:2: `a` (layer 0) uses `b` (layer 1), a higher layer",
                "src/a.rs:3: `a` (layer 0) uses `c` (layer 1), a higher layer",
                "src/a.rs:5: `a` (layer 0) uses `b` (layer 1), a higher layer",
                "src/b/x.rs:2: `b` uses `c`, in the same layer",
            ]
        );

        let good = tree(&[
            ("src/lib.rs", LIB),
            (
                "src/b.rs",
                "use crate::a::X;\n// crate::c::Y in a comment\n",
            ),
            ("src/c.rs", "use crate::{a, self};\n/* crate::b */\n"),
            ("src/main.rs", "use msngate::c;\nuse crate::b;\n"),
        ]);
        assert_eq!(layer_violations(&good, layers), Vec::<String>::new());
    }

    #[test]
    fn a_module_without_a_layer_is_reported() {
        let files = tree(&[("src/lib.rs", LIB)]);
        let problems = layer_violations(&files, &[&["a"], &["b"], &["not_yet"]]);
        assert_eq!(
            problems,
            ["src/lib.rs: module `c` is not in the layer table"]
        );
    }

    #[test]
    fn tokio_in_protocol_is_reported() {
        let bad = tree(&[
            ("src/protocol/frame.rs", "use tokio::io::AsyncReadExt;\n"),
            (
                "src/protocol/x.rs",
                "use std::{fmt, net::TcpStream};\nuse std::io::{self, Read};\n",
            ),
            (
                "src/protocol/y.rs",
                "fn f() { std::thread::spawn(|| ()); }\n",
            ),
            (
                "src/protocol/z.rs",
                "use std::io;\nfn f(r: &mut dyn io::Write) {}\n",
            ),
            ("src/protocol/w.rs", "fn f() { std::fs::read(\"x\"); }\n"),
        ]);
        let problems = protocol_io(&bad);
        assert_eq!(
            problems,
            [
                "src/protocol/frame.rs:1: tokio in the protocol layer",
                "src/protocol/x.rs:1: std::net in the protocol layer",
                "src/protocol/x.rs:2: io::Read (blocking I/O) in the protocol layer",
                "src/protocol/y.rs:1: std::thread in the protocol layer",
                "src/protocol/z.rs:2: io::Write (blocking I/O) in the protocol layer",
                "src/protocol/w.rs:1: std::fs in the protocol layer",
            ]
        );

        let good = tree(&[
            (
                "src/protocol/frame.rs",
                "//! No tokio here.\nuse bytes::BytesMut;\nuse std::fmt::Write;\nconst S: &str = \"tokio\";\n",
            ),
            // Elsewhere tokio is fine.
            ("src/connection.rs", "use tokio::net::TcpStream;\n"),
        ]);
        assert_eq!(protocol_io(&good), Vec::<String>::new());
    }

    #[test]
    fn network_crates_outside_bridges_are_reported() {
        let bad = tree(&[
            ("src/bridge/x.rs", "fn f(c: matrix_sdk::Client) {}\n"),
            ("tools/e.rs", "use ruma::UserId;\nuse matrix_sdk_base::X;\n"),
        ]);
        assert_eq!(
            network_crates(&bad),
            [
                "src/bridge/x.rs:1: `matrix_sdk`: only bridges/* use matrix_sdk (tests may, as clients)",
                "tools/e.rs:1: `ruma`: only bridges/* use ruma (tests may, as clients)",
                "tools/e.rs:2: `matrix_sdk_base`: only bridges/* use matrix_sdk (tests may, as clients)",
            ]
        );

        let good = tree(&[
            (
                "src/bridge/x.rs",
                "//! Unlike matrix_sdk, this...\nlet s = \"tokio_xmpp\";\nlet rumap = 1;\n",
            ),
            ("tests/matrix.rs", "use matrix_sdk::Client;\n"),
        ]);
        assert_eq!(network_crates(&good), Vec::<String>::new());
    }

    #[test]
    fn long_files_are_reported() {
        let long = "x\n".repeat(801);
        let at_limit = "x\n".repeat(800);
        let bad = tree(&[("src/a.rs", &long), ("src/b.rs", &at_limit)]);
        assert_eq!(
            long_files(&bad, 800, &[]),
            ["src/a.rs: 801 lines, over 800: split it into cohesive modules"]
        );
        assert_eq!(long_files(&bad, 800, &["src/a.rs"]), Vec::<String>::new());
        assert_eq!(
            long_files(&bad, 800, &["src/a.rs", "src/b.rs", "src/gone.rs"]),
            [
                "src/b.rs: 800 lines now: remove it from the list of long files",
                "src/gone.rs: in the list of long files but gone: remove it",
            ]
        );
    }

    #[test]
    fn stripping_keeps_code_and_lines() {
        let text = "let a = 'x'; // c\nlet b: &'static str = r#\"crate::z \"q\"\n\"#;\n/* x\n /* y */ */ let c = '\\'';\nlet d = b\"//\";\n";
        let stripped = strip(text);
        assert_eq!(stripped.lines().count(), text.lines().count());
        assert!(!stripped.contains("crate::z"));
        assert!(stripped.contains("&'static str"));
        assert!(stripped.contains("let c = ' ';"));
        assert!(stripped.contains("let d = b\"\";"));
    }
}
