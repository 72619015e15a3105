//! Silo's public API names no wasmtime or wit-bindgen type.
//!
//! The crate denies `private_interfaces` and `unnameable_types`, and the
//! runtime module (wasmtime, the generated bindings) is private to it, so a
//! runtime type in a public signature does not compile. Those lints do not
//! see a foreign crate's public types, such as `wasmtime::Engine`; this
//! test covers them: only the runtime module names wasmtime or wit-bindgen,
//! and what it lends the public API (the items `lib.rs` re-exports from it)
//! is defined without them.

use std::path::{Path, PathBuf};

const FOREIGN: [&str; 3] = ["wasmtime", "wit_bindgen", "bindings::"];

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code of `text`, without `//` comments.
fn code(text: &str) -> String {
    text.lines()
        .map(|l| l.split_once("//").map_or(l, |(code, _)| code))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn only_the_runtime_names_wasmtime_or_its_bindings() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let runtime = src.join("runtime");
    let mut files = Vec::new();
    sources(&src, &mut files);
    assert!(files.len() > 20, "{files:?}");
    for file in files.iter().filter(|f| !f.starts_with(&runtime)) {
        let text = code(&std::fs::read_to_string(file).unwrap());
        for name in FOREIGN {
            assert!(!text.contains(name), "{} names {name}", file.display());
        }
    }
}

#[test]
fn what_the_runtime_lends_the_api_is_defined_without_them() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap();
    let lent: Vec<&str> = lib
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub use runtime::"))
        .flat_map(|l| l.trim_matches(|c| "{};".contains(c)).split(','))
        .map(str::trim)
        .collect();
    assert!(lent.contains(&"LoadError"), "{lent:?}");
    let runtime = code(&std::fs::read_to_string(src.join("runtime/mod.rs")).unwrap());
    for item in lent {
        let start = ["pub struct ", "pub enum "]
            .iter()
            .find_map(|kind| runtime.find(&format!("{kind}{item} ")))
            .unwrap_or_else(|| panic!("runtime/mod.rs defines no struct or enum {item}"));
        // The definition: up to its closing brace at the start of a line.
        let body = &runtime[start..];
        let body = &body[..body.find("\n}").expect("a closing brace")];
        for name in FOREIGN {
            assert!(!body.contains(name), "{item} names {name}:\n{body}");
        }
        // Nor any impl of it that is public.
        for (at, _) in runtime.match_indices(&format!("impl {item} {{")) {
            let block = &runtime[at..];
            let block = &block[..block.find("\n}").expect("a closing brace")];
            for line in block.lines().filter(|l| l.trim_start().starts_with("pub fn")) {
                for name in FOREIGN {
                    assert!(!line.contains(name), "{item}: {line}");
                }
            }
        }
    }
}
