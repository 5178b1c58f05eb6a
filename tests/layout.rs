//! The source tree's shape, checked like any other rule (static tier: reads `src/`, runs
//! nothing):
//!
//! - every import points down: among the modules of any one folder (and among the top-level
//!   modules of the crate) the `crate::…`/`super::…` paths form no circle, so each module can be
//!   read knowing only what is below it (a parent and its own children may refer to each other:
//!   that is how a folder exposes its parts);
//! - no source file holds more than 800 lines before its `#[cfg(test)]` module.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const MAX_LINES_OUTSIDE_TESTS: usize = 800;

/// One source file of the library.
struct Source {
    file: PathBuf,
    /// The module it defines: `https::admission::views`; empty for `lib.rs`.
    module: Vec<String>,
    /// Its text without its test module, and without comment lines.
    code: String,
    /// How many lines come before its test module.
    lines_outside_tests: usize,
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn module_of(src: &Path, file: &Path) -> Option<Vec<String>> {
    let relative = file.strip_prefix(src).ok()?.with_extension("");
    let mut parts: Vec<String> = relative
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    match parts.last().map(String::as_str) {
        Some("main") if parts.len() == 1 => return None, // the binary, not the library
        Some("lib") if parts.len() == 1 => parts.clear(),
        Some("mod") => {
            parts.pop();
        }
        _ => {}
    }
    Some(parts)
}

/// The library's files, without test-only modules (`#[cfg(test)] mod x;`).
fn sources() -> Vec<Source> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut all = Vec::new();
    let mut test_only: BTreeSet<Vec<String>> = BTreeSet::new();
    for file in files {
        let Some(module) = module_of(&src, &file) else {
            continue;
        };
        let text = std::fs::read_to_string(&file).expect("read source");
        let lines: Vec<&str> = text.lines().collect();
        let mut end = lines.len();
        for (i, line) in lines.iter().enumerate() {
            if line.trim() != "#[cfg(test)]" {
                continue;
            }
            let next = lines[i + 1..].iter().find(|l| !l.trim().is_empty());
            let declared = next.and_then(|l| {
                let l = l
                    .trim()
                    .trim_start_matches("pub ")
                    .trim_start_matches("pub(crate) ");
                l.strip_prefix("mod ")
            });
            match declared {
                // `mod tests {` (the file's own tests): everything after it is test code.
                Some(rest) if rest.trim_end().ends_with('{') => {
                    end = end.min(i);
                }
                // `mod fixtures;`: a whole file that exists only for tests.
                Some(rest) => {
                    let name = rest.trim_end_matches(';').trim().to_owned();
                    let mut child = module.clone();
                    child.push(name);
                    test_only.insert(child);
                }
                None => {}
            }
        }
        let code = lines[..end]
            .iter()
            .filter(|l| !l.trim_start().starts_with("//"))
            .copied()
            .collect::<Vec<_>>()
            .join("\n");
        all.push(Source {
            file,
            module,
            code,
            lines_outside_tests: end,
        });
    }
    all.retain(|s| !test_only.iter().any(|t| s.module.starts_with(t)));
    all
}

/// Reads `a::b::{c, d::{e, f as g}, self}` after a `crate::`/`super::` start: every path it
/// names, as segment lists.
fn paths_after(text: &str) -> Vec<Vec<String>> {
    fn ident(chars: &[char], i: &mut usize) -> Option<String> {
        let start = *i;
        while *i < chars.len() && (chars[*i].is_alphanumeric() || chars[*i] == '_') {
            *i += 1;
        }
        (*i > start).then(|| chars[start..*i].iter().collect())
    }
    fn skip_ws(chars: &[char], i: &mut usize) {
        while *i < chars.len() && chars[*i].is_whitespace() {
            *i += 1;
        }
    }
    fn tree(chars: &[char], i: &mut usize, prefix: Vec<String>, out: &mut Vec<Vec<String>>) {
        let mut path = prefix;
        loop {
            skip_ws(chars, i);
            if *i < chars.len() && chars[*i] == '{' {
                *i += 1;
                loop {
                    skip_ws(chars, i);
                    if *i >= chars.len() || chars[*i] == '}' {
                        *i += 1;
                        return;
                    }
                    tree(chars, i, path.clone(), out);
                    skip_ws(chars, i);
                    // `name as alias`: the alias is not a path.
                    if chars[*i..].starts_with(&['a', 's']) {
                        *i += 2;
                        skip_ws(chars, i);
                        let _ = ident(chars, i);
                        skip_ws(chars, i);
                    }
                    if *i < chars.len() && chars[*i] == ',' {
                        *i += 1;
                    }
                }
            }
            match ident(chars, i) {
                Some(segment) if segment != "self" => path.push(segment),
                Some(_) => {}
                None => {
                    out.push(path);
                    return;
                }
            }
            if chars[*i..].starts_with(&[':', ':']) {
                *i += 2;
            } else {
                out.push(path);
                return;
            }
        }
    }
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    tree(&chars, &mut 0, Vec::new(), &mut out);
    out
}

/// Every module path a source refers to, resolved to absolute segment lists.
fn references(source: &Source) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    let code = &source.code;
    for (at, _) in code.match_indices("crate::") {
        let before = code[..at].chars().last();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
            continue;
        }
        found.extend(paths_after(&code[at + "crate::".len()..]));
    }
    // `super::` is relative to the module: a file `a/b.rs` (module a::b) or `a/b/mod.rs`
    // (module a::b) both reach `a` with one `super`.
    for (at, _) in code.match_indices("super::") {
        let before = code[..at].chars().last();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
            continue;
        }
        let mut base = source.module.clone();
        let mut rest = &code[at..];
        while let Some(r) = rest.strip_prefix("super::") {
            base.pop();
            rest = r;
        }
        for path in paths_after(rest) {
            let mut full = base.clone();
            full.extend(path);
            found.push(full);
        }
    }
    found
}

/// A circle in `edges`, if any, as the list of nodes along it.
fn circle(edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(node.to_owned(), 1);
        stack.push(node.to_owned());
        for next in edges.get(node).into_iter().flatten() {
            match state.get(next.as_str()).copied().unwrap_or(0) {
                1 => {
                    let start = stack.iter().position(|n| n == next).unwrap_or(0);
                    let mut found = stack[start..].to_vec();
                    found.push(next.clone());
                    return Some(found);
                }
                0 => {
                    if let Some(found) = visit(next, edges, state, stack) {
                        return Some(found);
                    }
                }
                _ => {}
            }
        }
        stack.pop();
        state.insert(node.to_owned(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for node in edges.keys() {
        if state.get(node.as_str()).copied().unwrap_or(0) == 0 {
            let mut stack = Vec::new();
            if let Some(found) = visit(node, edges, &mut state, &mut stack) {
                return Some(found);
            }
        }
    }
    None
}

#[test]
fn no_import_circle_among_the_modules_of_any_folder() {
    let sources = sources();
    let modules: BTreeSet<Vec<String>> = sources.iter().map(|s| s.module.clone()).collect();
    // For each folder (module path), the arrows between its child modules, with one file that
    // draws each arrow.
    let mut graphs: BTreeMap<Vec<String>, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    let mut evidence: BTreeMap<(Vec<String>, String, String), PathBuf> = BTreeMap::new();
    for source in &sources {
        for target in references(source) {
            // The longest known module the path names.
            let Some(target) = (0..=target.len())
                .rev()
                .map(|n| target[..n].to_vec())
                .find(|prefix| modules.contains(prefix))
            else {
                continue;
            };
            let from = &source.module;
            let common = from.iter().zip(&target).take_while(|(a, b)| a == b).count();
            // An ancestor and its descendant: a folder exposing its parts.
            if common == from.len() || common == target.len() {
                continue;
            }
            let folder = from[..common].to_vec();
            let (a, b) = (from[common].clone(), target[common].clone());
            graphs
                .entry(folder.clone())
                .or_default()
                .entry(a.clone())
                .or_default()
                .insert(b.clone());
            evidence
                .entry((folder, a, b))
                .or_insert_with(|| source.file.clone());
        }
    }
    assert!(
        graphs.get(&Vec::new()).is_some_and(|g| g.len() > 5),
        "the check found too few arrows between top-level modules to be reading the tree: {graphs:?}"
    );
    for (folder, edges) in &graphs {
        if let Some(found) = circle(edges) {
            let folder_name = if folder.is_empty() {
                "crate".to_owned()
            } else {
                folder.join("::")
            };
            let arrows: Vec<String> = found
                .windows(2)
                .map(|w| {
                    let file = &evidence[&(folder.clone(), w[0].clone(), w[1].clone())];
                    format!("{} -> {} ({})", w[0], w[1], file.display())
                })
                .collect();
            panic!(
                "import circle among the modules of {folder_name}: {}",
                arrows.join(", ")
            );
        }
    }
}

#[test]
fn no_source_file_has_more_than_800_lines_outside_its_tests() {
    let sources = sources();
    assert!(sources.len() > 30, "found only {} files", sources.len());
    let long: Vec<String> = sources
        .iter()
        .filter(|s| s.lines_outside_tests > MAX_LINES_OUTSIDE_TESTS)
        .map(|s| format!("{} ({} lines)", s.file.display(), s.lines_outside_tests))
        .collect();
    assert!(
        long.is_empty(),
        "split these by what they own: {}",
        long.join(", ")
    );
}

#[test]
fn the_use_tree_reader_names_every_path() {
    let paths = paths_after("a::{b, c::{d, e as f}, self}, g;");
    let joined: Vec<String> = paths.iter().map(|p| p.join("::")).collect();
    assert_eq!(joined, ["a::b", "a::c::d", "a::c::e", "a"]);
    let mut edges = BTreeMap::new();
    edges.insert("x".to_owned(), BTreeSet::from(["y".to_owned()]));
    edges.insert("y".to_owned(), BTreeSet::from(["x".to_owned()]));
    assert_eq!(
        circle(&edges),
        Some(vec!["x".to_owned(), "y".to_owned(), "x".to_owned()])
    );
    edges.remove("y");
    assert_eq!(circle(&edges), None);
}
