//! The proxy's layout stays a layering: no import cycle between its folders, none between the
//! files of a folder, and no file grows past a size a reader takes in at once.
//!
//! Internal: this reads the sources rather than asking the compiler (the tools that build a real
//! module graph, such as cargo-modules, pull in rust-analyzer, minutes of build for one check).
//! It understands the conventions the crate follows: `use crate::…`, `use super::…` and
//! `crate::…` paths, re-exports (`pub use child::X` in a `mod.rs`, followed to the file that
//! defines `X`), and `mod.rs` files that only declare and re-export.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The longest source file allowed.
const MAX_LINES: usize = 400;

type Module = Vec<String>;

struct File {
    module: Module,
    text: String,
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module a file holds (`src/error/kind.rs` → `error::kind`, `src/error/mod.rs` → `error`).
fn module_of(src: &Path, file: &Path) -> Module {
    let rel = file.strip_prefix(src).expect("under src");
    let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    let last = parts.pop().unwrap_or_default();
    let stem = last.trim_end_matches(".rs");
    if !matches!(stem, "mod" | "lib") {
        parts.push(stem.to_string());
    }
    parts
}

/// The text without `//` comments (doc comments included) and string literals.
fn code(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let mut in_str = false;
        let mut prev = '\0';
        let mut chars = line.chars().peekable();
        while let Some(c) = chars.next() {
            if in_str {
                if c == '"' && prev != '\\' {
                    in_str = false;
                }
                prev = if prev == '\\' && c == '\\' { '\0' } else { c };
                continue;
            }
            if c == '/' && chars.peek() == Some(&'/') {
                break;
            }
            if c == '"' {
                in_str = true;
                prev = '\0';
                continue;
            }
            out.push(c);
        }
        out.push('\n');
    }
    out
}

/// The paths a `use` tree names, each as its segments (`a::{b, c::d}` → `a::b`, `a::c::d`).
fn use_tree(tree: &str, prefix: &[String], out: &mut Vec<Vec<String>>) {
    let tree = tree.trim();
    if let Some(open) = tree.find('{') {
        let head: Vec<String> =
            tree[..open].split("::").map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect();
        let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
        let mut base = prefix.to_vec();
        base.extend(head);
        let mut depth = 0;
        let mut start = 0;
        for (i, c) in inner.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    use_tree(&inner[start..i], &base, out);
                    start = i + 1;
                }
                _ => {}
            }
        }
        use_tree(&inner[start..], &base, out);
    } else if !tree.is_empty() {
        let path = tree.split(" as ").next().unwrap_or(tree);
        let mut p = prefix.to_vec();
        p.extend(path.split("::").map(str::trim).filter(|s| !s.is_empty() && *s != "*").map(String::from));
        if p.last().is_some_and(|s| s == "self") {
            p.pop();
        }
        out.push(p);
    }
}

/// `(is a pub use, path)` for each `use` statement, and every other `crate::`/`super::` path.
fn paths(code: &str) -> Vec<(bool, Vec<String>)> {
    let mut out = Vec::new();
    let mut rest = code;
    let mut outside_use = String::new();
    while let Some(i) = rest.find("use ") {
        let before = &rest[..i];
        let word_start = before.chars().last().is_none_or(|c| !c.is_alphanumeric() && c != '_');
        let Some(end) = rest[i..].find(';') else { break };
        if word_start {
            let public = before.trim_end().ends_with("pub") || before.trim_end().ends_with(')');
            let mut trees = Vec::new();
            use_tree(&rest[i + 4..i + end], &[], &mut trees);
            out.extend(trees.into_iter().map(|t| (public, t)));
            outside_use.push_str(before);
            rest = &rest[i + end + 1..];
        } else {
            outside_use.push_str(&rest[..i + 4]);
            rest = &rest[i + 4..];
        }
    }
    outside_use.push_str(rest);
    for root in ["crate::", "super::"] {
        let mut s = outside_use.as_str();
        while let Some(i) = s.find(root) {
            let ok = s[..i].chars().last().is_none_or(|c| !c.is_alphanumeric() && c != '_' && c != ':');
            let tail = &s[i..];
            let len = tail.find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':')).unwrap_or(tail.len());
            if ok {
                let p: Vec<String> = tail[..len].split("::").filter(|x| !x.is_empty()).map(String::from).collect();
                out.push((false, p));
            }
            s = &s[i + len.max(1)..];
        }
    }
    out
}

/// A path written in `module`, made absolute (its segments from the crate root).
fn absolute(module: &Module, path: &[String], is_mod_rs: bool) -> Option<Vec<String>> {
    let first = path.first()?;
    let mut base: Vec<String> = match first.as_str() {
        "crate" => Vec::new(),
        "super" => {
            // In `a/b.rs` (module a::b) `super` is `a`; in `a/mod.rs` (module a) it is the root.
            let mut m = module.clone();
            m.pop()?;
            m
        }
        "self" => module.clone(),
        // A path from a child module declared in a mod.rs (`pub use child::X`).
        _ if is_mod_rs => {
            let mut m = module.clone();
            m.push(first.clone());
            return Some(m.into_iter().chain(path[1..].iter().cloned()).collect());
        }
        _ => return None,
    };
    let mut segs = path[1..].iter();
    let mut rest = Vec::new();
    for s in segs.by_ref() {
        if s == "super" && rest.is_empty() {
            base.pop()?;
        } else {
            rest.push(s.clone());
        }
    }
    base.extend(rest);
    Some(base)
}

struct Crate {
    files: BTreeMap<Module, File>,
    /// For each module, the names it re-exports and the absolute path each stands for.
    reexports: BTreeMap<Module, BTreeMap<String, Vec<String>>>,
}

impl Crate {
    fn load(src: &Path) -> Crate {
        let mut list = Vec::new();
        sources(src, &mut list);
        let mut files = BTreeMap::new();
        let mut reexports: BTreeMap<Module, BTreeMap<String, Vec<String>>> = BTreeMap::new();
        for path in list {
            if path.file_name().is_some_and(|n| n == "main.rs") {
                continue;
            }
            let module = module_of(src, &path);
            let text = std::fs::read_to_string(&path).expect("read source");
            let is_mod_rs = path.file_name().is_some_and(|n| n == "mod.rs" || n == "lib.rs");
            for (public, p) in paths(&code(&text)) {
                if public
                    && let Some(abs) = absolute(&module, &p, is_mod_rs)
                    && let Some(name) = abs.last()
                {
                    reexports.entry(module.clone()).or_default().insert(name.clone(), abs.clone());
                }
            }
            files.insert(module.clone(), File { module, text });
        }
        Crate { files, reexports }
    }

    /// The file an absolute path leads to: the deepest module it names, following re-exports.
    fn resolve(&self, path: &[String], depth: usize) -> Option<Module> {
        let mut m: Module = Vec::new();
        let mut i = 0;
        while i < path.len() {
            let mut next = m.clone();
            next.push(path[i].clone());
            if self.files.contains_key(&next) {
                m = next;
                i += 1;
                continue;
            }
            if depth < 8
                && let Some(target) = self.reexports.get(&m).and_then(|r| r.get(&path[i]))
                && target.as_slice() != path
            {
                return self.resolve(target, depth + 1);
            }
            break;
        }
        self.files.contains_key(&m).then_some(m)
    }

    /// Every file's dependencies on other files (re-exports are not dependencies).
    fn edges(&self) -> BTreeMap<Module, BTreeSet<Module>> {
        let mut edges: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
        for (module, file) in &self.files {
            let deps = edges.entry(module.clone()).or_default();
            for (public, p) in paths(&code(&file.text)) {
                if public {
                    continue;
                }
                let Some(abs) = absolute(&file.module, &p, false) else { continue };
                if let Some(target) = self.resolve(&abs, 0)
                    && &target != module
                {
                    deps.insert(target);
                }
            }
        }
        edges
    }
}

/// A cycle in `graph`, if there is one.
fn find_cycle(graph: &BTreeMap<Module, BTreeSet<Module>>) -> Option<Vec<Module>> {
    fn visit(
        n: &Module,
        graph: &BTreeMap<Module, BTreeSet<Module>>,
        state: &mut BTreeMap<Module, u8>,
        stack: &mut Vec<Module>,
    ) -> Option<Vec<Module>> {
        state.insert(n.clone(), 1);
        stack.push(n.clone());
        for m in graph.get(n).into_iter().flatten() {
            match state.get(m).copied().unwrap_or(0) {
                1 => {
                    let from = stack.iter().position(|x| x == m).unwrap_or(0);
                    let mut cycle = stack[from..].to_vec();
                    cycle.push(m.clone());
                    return Some(cycle);
                }
                0 => {
                    if let Some(c) = visit(m, graph, state, stack) {
                        return Some(c);
                    }
                }
                _ => {}
            }
        }
        stack.pop();
        state.insert(n.clone(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for n in graph.keys() {
        if state.get(n).copied().unwrap_or(0) == 0 {
            let mut stack = Vec::new();
            if let Some(c) = visit(n, graph, &mut state, &mut stack) {
                return Some(c);
            }
        }
    }
    None
}

fn show(cycle: &[Module]) -> String {
    cycle.iter().map(|m| if m.is_empty() { "lib".to_string() } else { m.join("::") }).collect::<Vec<_>>().join(" -> ")
}

fn proxy() -> Crate {
    Crate::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"))
}

#[test]
fn no_folder_imports_from_a_folder_that_imports_it() {
    let krate = proxy();
    let mut folders: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    for (from, tos) in krate.edges() {
        let top = from.iter().take(1).cloned().collect::<Module>();
        let entry = folders.entry(top.clone()).or_default();
        for to in tos {
            let t = to.iter().take(1).cloned().collect::<Module>();
            if t != top && !t.is_empty() {
                entry.insert(t);
            }
        }
    }
    assert!(folders.len() > 10, "the layout was not read: {folders:?}");
    assert!(
        folders.get(&vec!["stack".to_string()]).is_some_and(|d| d.contains(&vec!["route".to_string()])),
        "the stack composes the route layer, yet no such import was seen: {folders:?}"
    );
    if let Some(c) = find_cycle(&folders) {
        panic!("import cycle between folders: {}", show(&c));
    }
}

#[test]
fn no_file_imports_from_a_file_that_imports_it() {
    let edges = proxy().edges();
    if let Some(c) = find_cycle(&edges) {
        panic!("import cycle between files: {}", show(&c));
    }
}

#[test]
fn files_stay_small() {
    let krate = proxy();
    let long: Vec<String> = krate
        .files
        .iter()
        .filter(|(_, f)| f.text.lines().count() > MAX_LINES)
        .map(|(m, f)| format!("{} ({} lines)", m.join("::"), f.text.lines().count()))
        .collect();
    assert!(long.is_empty(), "over {MAX_LINES} lines: {long:?}");
}

#[test]
fn the_reader_finds_cycles_and_re_exports() {
    // The checks above pass on any input the reader misreads; this pins the reader itself.
    let m = |s: &str| -> Module { s.split("::").filter(|x| !x.is_empty()).map(String::from).collect() };
    let mut g: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    g.entry(m("a")).or_default().insert(m("b"));
    g.entry(m("b")).or_default().insert(m("c"));
    assert_eq!(find_cycle(&g), None);
    g.entry(m("c")).or_default().insert(m("a"));
    assert_eq!(find_cycle(&g).map(|c| show(&c)), Some("a -> b -> c -> a".to_string()));

    let mut trees = Vec::new();
    use_tree("super::kind::{BoxError, Error as E}", &[], &mut trees);
    assert_eq!(trees, [m("super::kind::BoxError"), m("super::kind::Error")]);
    let found =
        paths(&code("use crate::a::{b, c::d};\npub use x::Y; // use crate::z;\nlet _ = crate::e::f(\"crate::g\");"));
    let found: Vec<(bool, String)> = found.into_iter().map(|(p, v)| (p, v.join("::"))).collect();
    assert_eq!(
        found,
        [
            (false, "crate::a::b".into()),
            (false, "crate::a::c::d".into()),
            (true, "x::Y".into()),
            (false, "crate::e::f".into())
        ]
    );
    assert_eq!(
        absolute(&m("error::classify"), &m("super::kind::ProxyError"), false),
        Some(m("error::kind::ProxyError"))
    );
    assert_eq!(absolute(&m("error"), &m("kind::ProxyError"), true), Some(m("error::kind::ProxyError")));

    let krate = proxy();
    // `crate::error::ProxyError` is re-exported by error/mod.rs from error/kind.rs.
    assert_eq!(krate.resolve(&m("error::ProxyError"), 0), Some(m("error::kind")));
    assert_eq!(krate.resolve(&m("balance::Target"), 0), Some(m("balance::backend")));
}
