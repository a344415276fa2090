//! The shape of `src/`, checked: data flows one way.
//!
//! Reads every `.rs` file under `src/` as text (tests left out: files named
//! `tests.rs` and items under `#[cfg(test)]`), takes each path that starts
//! with `crate::`, `super::` or `self::`, and maps it to the module it names.
//! Then, for every folder, the folder's children (its files and subfolders,
//! not its own `mod.rs`) must depend on each other without a cycle, and:
//! - nothing outside `src/commands/` uses the command layer;
//! - no subcommand file uses a sibling subcommand (what several share lives
//!   in `commands/mod.rs`, `commands/shared.rs` or `commands/cluster_access.rs`).
//!
//! A failure names the cycle or the offending file and line.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// A module path below the crate root, e.g. `["cluster", "launch"]`.
type Module = Vec<String>;

struct Source {
    module: Module,
    file: PathBuf,
    /// Lines outside test code, with their 1-based numbers.
    lines: Vec<(usize, String)>,
}

fn sources() -> Vec<Source> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    walk(&root, &mut files);
    files.sort();
    files
        .into_iter()
        .filter(|f| f.file_name().is_some_and(|n| n != "tests.rs"))
        .filter_map(|f| {
            let rel = f.strip_prefix(&root).unwrap();
            let mut module: Module = rel
                .with_extension("")
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            match module.last().map(String::as_str) {
                Some("main") | Some("lib") if module.len() == 1 => return None,
                Some("mod") => {
                    module.pop();
                }
                _ => {}
            }
            let text = fs::read_to_string(&f).unwrap();
            Some(Source {
                module,
                lines: without_tests(&text),
                file: f,
            })
        })
        .collect()
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            walk(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The file's lines without the items marked `#[cfg(test)]`: from the
/// attribute to the end of the item (a `;` or its closing brace).
fn without_tests(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut skipping = false;
    let mut depth = 0i64;
    let mut opened = false;
    for (i, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        if !skipping && line.trim_start().starts_with("#[cfg(test)]") {
            skipping = true;
            depth = 0;
            opened = false;
            continue;
        }
        if skipping {
            for c in code.chars() {
                match c {
                    '{' => {
                        depth += 1;
                        opened = true;
                    }
                    '}' => depth -= 1,
                    _ => {}
                }
            }
            let t = code.trim_end();
            if (opened && depth <= 0) || (!opened && t.ends_with(';')) {
                skipping = false;
            }
            continue;
        }
        if line.trim_start().starts_with("//") {
            continue;
        }
        out.push((i + 1, code.to_string()));
    }
    out
}

/// Every module path the line names, resolved against `at` (the module the
/// line is in); `use a::{b, c::d}` groups give one path per member.
fn references(line: &str, at: &Module) -> Vec<Module> {
    let mut out = Vec::new();
    let b = line.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if !line.is_char_boundary(i) {
            i += 1;
            continue;
        }
        let starts_word = i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_');
        let rest = &line[i..];
        let base: Option<(Module, usize)> = if !starts_word {
            None
        } else if rest.starts_with("crate::") {
            Some((Vec::new(), "crate::".len()))
        } else if rest.starts_with("self::") {
            Some((at.clone(), "self::".len()))
        } else if rest.starts_with("super::") {
            let mut m = at.clone();
            let mut n = 0;
            while line[i + n..].starts_with("super::") {
                m.pop();
                n += "super::".len();
            }
            Some((m, n))
        } else {
            None
        };
        let Some((mut path, n)) = base else {
            i += 1;
            continue;
        };
        i += n;
        loop {
            let word: String = line[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if word.is_empty() {
                if line[i..].starts_with('{') {
                    // a group: each member from this prefix
                    let end = matching_brace(&line[i..]).map_or(line.len(), |e| i + e);
                    for member in split_top(&line[i + 1..end.saturating_sub(0).min(line.len())]) {
                        let member = member.trim();
                        if member.is_empty() || member == "self" {
                            continue;
                        }
                        let mut m = path.clone();
                        m.extend(
                            member
                                .split("::")
                                .map(|s| s.trim().trim_start_matches('{').to_string())
                                .take_while(|s| {
                                    !s.is_empty()
                                        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                                }),
                        );
                        out.push(m);
                    }
                    i = end;
                } else {
                    out.push(path);
                }
                break;
            }
            i += word.len();
            path.push(word);
            if line[i..].starts_with("::") {
                i += 2;
            } else {
                out.push(path);
                break;
            }
        }
    }
    out
}

fn matching_brace(s: &str) -> Option<usize> {
    let mut depth = 0;
    for (i, c) in s.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}

/// Splits at commas outside braces.
fn split_top(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut depth = 0;
    let mut from = 0;
    for (i, c) in s.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[from..i]);
                from = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[from..]);
    out
}

/// The longest module of the crate that `path` starts with.
fn module_of(path: &Module, modules: &BTreeSet<Module>) -> Option<Module> {
    (1..=path.len())
        .rev()
        .map(|n| path[..n].to_vec())
        .find(|m| modules.contains(m))
}

/// Each use of one module by another: (from, to, file, line).
fn edges() -> Vec<(Module, Module, PathBuf, usize)> {
    let sources = sources();
    let modules: BTreeSet<Module> = sources.iter().map(|s| s.module.clone()).collect();
    let mut out = Vec::new();
    for s in &sources {
        // `use` statements may span lines: join each one before reading it
        let mut pending: Option<(usize, String)> = None;
        for (n, line) in &s.lines {
            let (at, text) = match pending.take() {
                Some((at, mut acc)) => {
                    acc.push_str(line.trim());
                    (at, acc)
                }
                None => (*n, line.clone()),
            };
            let t = text.trim_start();
            let is_use = ["use ", "pub use ", "pub(crate) use ", "pub(super) use "]
                .iter()
                .any(|p| t.starts_with(p));
            if is_use && !text.trim_end().ends_with(';') {
                pending = Some((at, text));
                continue;
            }
            for r in references(&text, &s.module) {
                if let Some(m) = module_of(&r, &modules)
                    && m != s.module
                {
                    out.push((s.module.clone(), m, s.file.clone(), at));
                }
            }
        }
    }
    out
}

/// The children of `folder` that `from` and `to` lie under, when both lie
/// under different children of it.
fn siblings(folder: &Module, from: &Module, to: &Module) -> Option<(String, String)> {
    let k = folder.len();
    if from.len() <= k || to.len() <= k || from[..k] != folder[..] || to[..k] != folder[..] {
        return None;
    }
    (from[k] != to[k]).then(|| (from[k].clone(), to[k].clone()))
}

/// The groups of nodes that reach each other (Tarjan's strongly connected
/// components), those of more than one node only.
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<BTreeSet<String>> {
    struct Walk<'g> {
        graph: &'g BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'g str, usize>,
        low: BTreeMap<&'g str, usize>,
        stack: Vec<&'g str>,
        on_stack: BTreeSet<&'g str>,
        out: Vec<BTreeSet<String>>,
    }
    impl<'g> Walk<'g> {
        fn visit(&mut self, n: &'g str) {
            let i = self.index.len();
            self.index.insert(n, i);
            self.low.insert(n, i);
            self.stack.push(n);
            self.on_stack.insert(n);
            for m in self.graph.get(n).into_iter().flatten() {
                let m = m.as_str();
                if !self.index.contains_key(m) {
                    self.visit(m);
                    let l = self.low[m].min(self.low[n]);
                    self.low.insert(n, l);
                } else if self.on_stack.contains(m) {
                    let l = self.index[m].min(self.low[n]);
                    self.low.insert(n, l);
                }
            }
            if self.low[n] == self.index[n] {
                let mut group = BTreeSet::new();
                while let Some(m) = self.stack.pop() {
                    self.on_stack.remove(m);
                    group.insert(m.to_string());
                    if m == n {
                        break;
                    }
                }
                if group.len() > 1 {
                    self.out.push(group);
                }
            }
        }
    }
    let mut w = Walk {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        out: Vec::new(),
    };
    for n in graph.keys() {
        if !w.index.contains_key(n.as_str()) {
            w.visit(n);
        }
    }
    w.out
}

#[test]
fn no_cycles_between_the_children_of_any_folder() {
    let edges = edges();
    let mut folders: BTreeSet<Module> = BTreeSet::new();
    for (from, to, ..) in &edges {
        for m in [from, to] {
            for k in 0..m.len() {
                folders.insert(m[..k].to_vec());
            }
        }
    }
    let mut problems = Vec::new();
    for folder in &folders {
        let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut witness: BTreeMap<(String, String), (PathBuf, usize)> = BTreeMap::new();
        for (from, to, file, line) in &edges {
            if let Some((a, b)) = siblings(folder, from, to) {
                graph.entry(a.clone()).or_default().insert(b.clone());
                witness.entry((a, b)).or_insert((file.clone(), *line));
            }
        }
        let prefix = if folder.is_empty() {
            "crate".to_string()
        } else {
            format!("crate::{}", folder.join("::"))
        };
        for group in cycles(&graph) {
            let steps: Vec<String> = witness
                .iter()
                .filter(|((a, b), _)| group.contains(a) && group.contains(b))
                .map(|((a, b), (f, l))| format!("{a} -> {b} ({}:{l})", short(f)))
                .collect();
            problems.push(format!("cycle in {prefix}: {}", steps.join(", ")));
        }
    }
    problems.dedup();
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

/// Fails with every use of one module by another that `bad` refuses,
/// named by file and line.
fn refuse(bad: impl Fn(&Module, &Module) -> bool) {
    let mut problems = Vec::new();
    for (from, to, file, line) in edges() {
        if bad(&from, &to) {
            problems.push(format!(
                "{}:{line}: {} uses {}",
                short(&file),
                from.join("::"),
                to.join("::")
            ));
        }
    }
    problems.dedup();
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

#[test]
fn the_command_layer_is_used_by_nothing_below_it() {
    refuse(|from, to| {
        to.first().is_some_and(|m| m == "commands") && from.first().is_none_or(|m| m != "commands")
    });
}

#[test]
fn no_subcommand_uses_a_sibling_subcommand() {
    // the files of src/commands/ that are not subcommands: what several share
    let shared = ["shared", "cluster_access"];
    refuse(|from, to| {
        from.len() >= 2
            && to.len() >= 2
            && from[0] == "commands"
            && to[0] == "commands"
            && from[1] != to[1]
            && !shared.contains(&to[1].as_str())
    });
}

#[test]
fn the_reader_sees_groups_and_relative_paths() {
    let at: Module = vec!["cluster".into(), "launch".into()];
    let r = references(
        "use crate::{oci, push::ssh::{Session, Target}, script::Script};",
        &at,
    );
    let r: Vec<String> = r.iter().map(|m| m.join("::")).collect();
    assert!(r.contains(&"oci".to_string()), "{r:?}");
    assert!(r.iter().any(|p| p.starts_with("push::ssh")), "{r:?}");
    assert!(r.iter().any(|p| p.starts_with("script")), "{r:?}");
    let r = references("let x = super::plan::Plan::new();", &at);
    assert_eq!(r[0][..2], ["cluster".to_string(), "plan".to_string()]);
    let lines =
        without_tests("fn a() {}\n#[cfg(test)]\nmod tests {\n use crate::x;\n}\nfn b() {}\n");
    assert_eq!(lines.len(), 2, "{lines:?}");
}

fn short(p: &Path) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    p.strip_prefix(root).unwrap_or(p).display().to_string()
}
