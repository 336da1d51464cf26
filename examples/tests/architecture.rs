//! The layer order written in ARCHITECTURE.md holds in the code: every `crate::` and `super::`
//! path in a module (use lines and inline paths alike) points to a module of a lower layer.
//!
//! ARCHITECTURE.md declares each ordered folder in a fenced block whose info string is
//! `layers <folder>`, one layer per line, bottom first, modules of a layer separated by spaces:
//!
//! ````text
//! ```layers coordinator/src
//! types error
//! config
//! ```
//! ````
//!
//! A module is a file `<name>.rs` or a folder `<name>/` of that folder. For each module, the
//! test collects the modules its files name through `crate::` (when the folder is a crate's
//! `src`) or `super::` (when the folder is a module's own folder), and fails when one sits on
//! the same line or above. Every module of the folder must be listed, so a new module cannot
//! slip past the order. Comments and `#[cfg(test)]` modules are left out (doc links are not
//! imports, and a test module's `use super::*` names its own parent).

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `(folder, layers)` of every `layers` block in ARCHITECTURE.md.
fn declared() -> Vec<(String, Vec<Vec<String>>)> {
    let text = fs::read_to_string(workspace().join("ARCHITECTURE.md")).expect("ARCHITECTURE.md");
    let mut out = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let Some(folder) = line.trim().strip_prefix("```layers ") else {
            continue;
        };
        let mut layers = Vec::new();
        for l in lines.by_ref() {
            if l.trim_start().starts_with("```") {
                break;
            }
            let names: Vec<String> = l.split_whitespace().map(str::to_owned).collect();
            if !names.is_empty() {
                layers.push(names);
            }
        }
        out.push((folder.trim().to_owned(), layers));
    }
    out
}

/// The module's code without comments, string literals and `#[cfg(test)]` modules.
fn code_of(text: &str) -> String {
    let mut kept = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let t = line.trim_start();
        if t.starts_with("#[cfg(test)]")
            && lines
                .peek()
                .is_some_and(|n| n.trim_end().ends_with(';') && n.contains("mod "))
        {
            // `mod tests;`: the module lives in its own file, which is not listed.
            lines.next();
            continue;
        }
        if t.starts_with("#[cfg(test)]")
            && lines
                .peek()
                .is_some_and(|n| n.trim_start().starts_with("mod ") || n.contains(" mod "))
        {
            // Skip the test module: count braces from its opening line.
            let mut depth = 0i64;
            let mut opened = false;
            for l in lines.by_ref() {
                for c in l.chars() {
                    match c {
                        '{' => {
                            depth += 1;
                            opened = true;
                        }
                        '}' => depth -= 1,
                        _ => {}
                    }
                }
                if opened && depth <= 0 {
                    break;
                }
            }
            continue;
        }
        kept.push_str(line);
        kept.push('\n');
    }
    strip_comments_and_strings(&kept)
}

fn strip_comments_and_strings(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'/' && b.get(i + 1) == Some(&b'/') {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
            i += 2;
            while i + 1 < b.len() && !(b[i] == b'*' && b[i + 1] == b'/') {
                i += 1;
            }
            i += 2;
        } else if b[i] == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else if b[i] == b'\'' && b.get(i + 2) == Some(&b'\'') {
            // A char literal such as '"' or '{'.
            i += 3;
        } else if b[i] == b'\'' && b.get(i + 1) == Some(&b'\\') {
            while i < b.len() && !(b[i] == b'\'' && b[i - 1] != b'\\' && i > 1) {
                i += 1;
            }
            i += 1;
        } else {
            out.push(b[i] as char);
            i += 1;
        }
    }
    out
}

fn ident_at(s: &str) -> Option<&str> {
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    (end > 0).then(|| &s[..end])
}

/// Top-level names in a `{ ... }` use group that starts at `s[0] == '{'`.
fn group_heads(s: &str) -> Vec<&str> {
    let mut heads = Vec::new();
    let mut depth = 0;
    let mut start = 1;
    for (i, c) in s.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    heads.push(&s[start..i]);
                    break;
                }
            }
            ',' if depth == 1 => {
                heads.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    heads
        .into_iter()
        .filter_map(|h| ident_at(h.trim()))
        .collect()
}

/// Module names a piece of code reaches through `prefix` (`crate::` or `super::`).
fn reached(code: &str, prefix: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (at, _) in code.match_indices(prefix) {
        // `super::super::` and `crate::` preceded by an identifier character are other paths.
        if at > 0 {
            let before = code.as_bytes()[at - 1];
            if before.is_ascii_alphanumeric() || before == b'_' {
                continue;
            }
        }
        let rest = &code[at + prefix.len()..];
        let rest = rest.trim_start();
        if rest.starts_with("super::") {
            continue;
        }
        if rest.starts_with('{') {
            out.extend(group_heads(rest).into_iter().map(str::to_owned));
        } else if let Some(id) = ident_at(rest) {
            out.insert(id.to_owned());
        }
    }
    out
}

fn rust_files(path: &Path) -> Vec<PathBuf> {
    if path.is_file() {
        return vec![path.to_owned()];
    }
    let mut out = Vec::new();
    for e in fs::read_dir(path).unwrap().flatten() {
        out.extend(
            rust_files(&e.path())
                .into_iter()
                .filter(|p| p.extension().is_some_and(|x| x == "rs") || p.is_dir()),
        );
    }
    out
}

/// The modules of a folder: `name.rs` and `name/` (without the crate roots and `mod.rs`).
fn modules_of(folder: &Path) -> BTreeMap<String, Vec<PathBuf>> {
    let mut out: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    for e in fs::read_dir(folder).unwrap().flatten() {
        let p = e.path();
        let name = p.file_stem().unwrap().to_string_lossy().into_owned();
        if p.is_dir() {
            out.entry(name).or_default().extend(rust_files(&p));
        } else if p.extension().is_some_and(|x| x == "rs")
            && !matches!(name.as_str(), "lib" | "main" | "mod")
        {
            out.entry(name).or_default().push(p);
        }
    }
    out
}

#[test]
fn modules_import_only_from_lower_layers() {
    let blocks = declared();
    assert!(
        blocks.iter().any(|(f, _)| f == "coordinator/src")
            && blocks.iter().any(|(f, _)| f == "ledger-anchor/src"),
        "ARCHITECTURE.md must declare the layers of coordinator/src and ledger-anchor/src"
    );
    let mut problems = Vec::new();
    for (folder, layers) in &blocks {
        let dir = workspace().join(folder);
        let level: BTreeMap<&str, usize> = layers
            .iter()
            .enumerate()
            .flat_map(|(i, names)| names.iter().map(move |n| (n.as_str(), i)))
            .collect();
        let modules = modules_of(&dir);
        for name in modules.keys() {
            if !level.contains_key(name.as_str()) {
                problems.push(format!("{folder}: module {name} is not in any layer"));
            }
        }
        for name in level.keys() {
            if !modules.contains_key(*name) {
                problems.push(format!(
                    "{folder}: layer names {name}, which does not exist"
                ));
            }
        }
        // A crate's src is reached through `crate::`; a module's folder through `super::`.
        let is_crate_root = dir.join("lib.rs").exists() || dir.join("main.rs").exists();
        for (name, files) in &modules {
            let Some(&mine) = level.get(name.as_str()) else {
                continue;
            };
            for file in files {
                let code = code_of(&fs::read_to_string(file).unwrap());
                // A file directly in `folder` reaches its siblings through `super::` only when
                // `folder` is a module's folder; files deeper down use `super::` for their own
                // parent, which is not a sibling here.
                let direct = file.parent() == Some(dir.as_path());
                let mut targets = BTreeSet::new();
                if is_crate_root {
                    targets.extend(reached(&code, "crate::"));
                } else if direct {
                    targets.extend(reached(&code, "super::"));
                }
                for t in targets {
                    let Some(&theirs) = level.get(t.as_str()) else {
                        continue; // an item of the crate root or the parent, not a module
                    };
                    if t != *name && theirs >= mine {
                        problems.push(format!(
                            "{}: {name} (layer {mine}) imports {t} (layer {theirs})",
                            file.strip_prefix(workspace()).unwrap_or(file).display()
                        ));
                    }
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_checker_reads_use_groups_and_inline_paths() {
    let code = code_of(
        "use crate::{a::X, b, c::{d, e}};\nfn f() { crate::g::h(); super::s::t(); }\n\
         // crate::commented\nlet x = \"crate::quoted\";\n#[cfg(test)]\nmod tests {\n    use crate::z;\n}\n",
    );
    let got: Vec<String> = reached(&code, "crate::").into_iter().collect();
    assert_eq!(got, ["a", "b", "c", "g"]);
    let sup: Vec<String> = reached(&code, "super::").into_iter().collect();
    assert_eq!(sup, ["s"]);
}
