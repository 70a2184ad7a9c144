//! House rule as a test: no import circle between the files of a crate. A file's module
//! uses another's through `crate::a::b` or `super::x` (outside its `#[cfg(test)] mod tests`
//! and comments); a circle (a uses b, b uses a, directly or around several files) means
//! neither can be read, tested or moved without the other, so each concept gets a home
//! that depends only downwards.

use std::collections::{BTreeMap, BTreeSet};

/// The source roots of the workspace's crates.
const CRATE_ROOTS: [&str; 11] = [
    "src/",
    "verifier/src/",
    "engine/src/",
    "device/src/",
    "init/src/",
    "image/src/",
    "qemu/src/",
    "tpm/src/",
    "fetch/src/",
    "xtask/src/",
    "fuzz/inputs/src/",
];

type Module = Vec<String>;

/// The module path of a file under its crate root (`a/mod.rs` and `a.rs` are `a`).
fn module_of(rel: &str) -> Module {
    let stem = rel.trim_end_matches(".rs");
    let mut m: Module = stem.split('/').map(str::to_string).collect();
    if matches!(m.last().map(String::as_str), Some("mod" | "lib" | "main")) {
        m.pop();
    }
    m
}

/// The module paths a file's code names: `crate::a::b::Item`, `crate::{a, b::c}`, and
/// `super::x` (relative to `module`). Test modules and comments are left out.
fn references(module: &Module, text: &str) -> Vec<Module> {
    let code: String = text
        .split("#[cfg(test)]\nmod ")
        .next()
        .unwrap_or("")
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let path_at = |s: &str| -> Module {
        s.split("::")
            .map(|p| {
                p.chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect::<String>()
            })
            .take_while(|p| !p.is_empty())
            .collect()
    };
    let mut out = Vec::new();
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let inner = group.split('}').next().unwrap_or("");
            out.extend(inner.split(',').map(|p| path_at(p.trim())));
        } else {
            out.push(path_at(rest));
        }
    }
    // `super::` in `a/b.rs` and in `a/b/mod.rs` (both module a::b) names a.
    let parent: Module = module[..module.len().saturating_sub(1)].to_vec();
    for (i, _) in code.match_indices("super::") {
        let before = code[..i].chars().last();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
            continue;
        }
        let mut m = parent.clone();
        m.extend(path_at(&code[i + "super::".len()..]));
        out.push(m);
    }
    out
}

/// The circles in one crate's file graph (each a list of modules), none when it has none.
fn circles(files: &BTreeMap<Module, BTreeSet<Module>>) -> Vec<Vec<Module>> {
    // Tarjan's strongly connected components; a component of two or more is a circle.
    struct State<'a> {
        g: &'a BTreeMap<Module, BTreeSet<Module>>,
        index: BTreeMap<&'a Module, usize>,
        low: BTreeMap<&'a Module, usize>,
        stack: Vec<&'a Module>,
        next: usize,
        out: Vec<Vec<Module>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a Module) {
        s.index.insert(v, s.next);
        s.low.insert(v, s.next);
        s.next += 1;
        s.stack.push(v);
        for w in s.g.get(v).into_iter().flatten() {
            let Some((w, _)) = s.g.get_key_value(w) else {
                continue;
            };
            if !s.index.contains_key(w) {
                visit(s, w);
                let lw = s.low[w];
                let lv = s.low.get_mut(v).expect("visited");
                *lv = (*lv).min(lw);
            } else if s.stack.contains(&w) {
                let iw = s.index[w];
                let lv = s.low.get_mut(v).expect("visited");
                *lv = (*lv).min(iw);
            }
        }
        if s.low[v] == s.index[v] {
            let mut comp = Vec::new();
            while let Some(w) = s.stack.pop() {
                comp.push(w.clone());
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                comp.sort();
                s.out.push(comp);
            }
        }
    }
    let mut s = State {
        g: files,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in files.keys() {
        if !s.index.contains_key(v) {
            visit(&mut s, v);
        }
    }
    s.out
}

/// The file graph of the crate at `root` (`prefix/`), from `(path, text)` pairs.
fn graph<'a>(
    prefix: &str,
    files: impl Iterator<Item = (&'a str, String)>,
) -> BTreeMap<Module, BTreeSet<Module>> {
    let texts: BTreeMap<Module, String> = files
        .filter_map(|(path, text)| Some((module_of(path.strip_prefix(prefix)?), text)))
        .collect();
    texts
        .iter()
        .map(|(m, text)| {
            let targets = references(m, text)
                .into_iter()
                .filter_map(|r| {
                    // The longest prefix that is a file of this crate.
                    (1..=r.len())
                        .rev()
                        .map(|k| r[..k].to_vec())
                        .find(|p| texts.contains_key(p))
                })
                .filter(|t| t != m)
                .collect();
            (m.clone(), targets)
        })
        .collect()
}

#[test]
fn circles_are_found() {
    let files = [
        ("x/src/a.rs", "use crate::b::B;\n".to_string()),
        ("x/src/b.rs", "fn f() { crate::c::go() }\n".to_string()),
        ("x/src/c/mod.rs", "use crate::{a::A, d};\n".to_string()),
        ("x/src/d.rs", "// crate::a in a comment\n".to_string()),
        (
            "x/src/e.rs",
            "use crate::a;\n#[cfg(test)]\nmod tests { use crate::e; }\n".to_string(),
        ),
    ];
    let g = graph("x/src/", files.iter().map(|(p, t)| (*p, t.clone())));
    let c = circles(&g);
    assert_eq!(c.len(), 1, "{c:?}");
    let names: Vec<String> = c[0].iter().map(|m| m.join("::")).collect();
    assert_eq!(names, ["a", "b", "c"]);
    let tree = [
        ("x/src/lib.rs", "pub mod p;\n".to_string()),
        ("x/src/p/mod.rs", "mod q;\nuse q::Q;\n".to_string()),
        ("x/src/p/q.rs", "use super::P;\n".to_string()),
    ];
    let g = graph("x/src/", tree.iter().map(|(p, t)| (*p, t.clone())));
    assert!(circles(&g).is_empty(), "{g:?}");
    let parent_child = [
        ("x/src/p/mod.rs", "use crate::p::q::Q;\n".to_string()),
        ("x/src/p/q.rs", "use super::P;\n".to_string()),
    ];
    let g = graph("x/src/", parent_child.iter().map(|(p, t)| (*p, t.clone())));
    assert_eq!(circles(&g).len(), 1, "{g:?}");
}

#[test]
fn no_import_circle_between_files() {
    let root = crate::util::root();
    let files = crate::tidy::rust_files();
    let mut found = Vec::new();
    for prefix in CRATE_ROOTS {
        let texts = files
            .iter()
            .filter(|f| f.starts_with(prefix))
            .filter_map(|f| Some((f.as_str(), std::fs::read_to_string(root.join(f)).ok()?)));
        for c in circles(&graph(prefix, texts)) {
            let names: Vec<String> = c.iter().map(|m| m.join("::")).collect();
            found.push(format!("{prefix}: {}", names.join(" <-> ")));
        }
    }
    assert!(
        found.is_empty(),
        "import circles between files (give the shared piece a home both use):\n{}",
        found.join("\n")
    );
}
