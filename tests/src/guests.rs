//! Plugins written in Python and JavaScript, built from plugins/ with the
//! toolchains `tests/run` installs (componentize-py, jco) and kept by the
//! hash of their sources, the WIT and the toolchain in
//! `target/test-tools/components`, so a run rebuilds only what changed.
//! Without the toolchains these tests fail; they never skip.

use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::Digest;

const HOW: &str = "run the tests with `tests/run` (the README's test command), which installs componentize-py and jco";

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set: {HOW}"))
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_owned()
}

/// Every file under `dir`, by path, sorted.
fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            if path
                .file_name()
                .is_some_and(|n| n == "__pycache__" || n == "node_modules")
            {
                continue;
            }
            files_under(&path, out);
        } else {
            out.push(path);
        }
    }
}

/// The component built from `plugins/<name>` by `build` (given the output
/// path), or the one kept from an earlier run with the same inputs.
fn built(name: &str, toolchain: &str, build: impl FnOnce(&Path) -> Command) -> Vec<u8> {
    let root = root();
    let mut inputs = Vec::new();
    files_under(&root.join("plugins").join(name), &mut inputs);
    files_under(&root.join("wit"), &mut inputs);
    let mut hash = sha2::Sha256::new();
    hash.update(toolchain.as_bytes());
    for file in &inputs {
        hash.update(file.strip_prefix(&root).unwrap().to_string_lossy().as_bytes());
        hash.update([0]);
        hash.update(std::fs::read(file).unwrap());
        hash.update([0]);
    }
    let cache = PathBuf::from(env("SILO_TEST_COMPONENTS"));
    let kept = cache.join(format!("{name}-{}.wasm", hex::encode(&hash.finalize()[..12])));
    if let Ok(bytes) = std::fs::read(&kept) {
        return bytes;
    }
    std::fs::create_dir_all(&cache).unwrap();
    // Tests build side by side: each into a file of its own, renamed in.
    let partial = tempfile::Builder::new().suffix(".wasm").tempfile_in(&cache).unwrap();
    let mut command = build(partial.path());
    command.current_dir(&root);
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run the {toolchain} build of plugins/{name}: {e} ({HOW})"));
    assert!(
        output.status.success(),
        "building plugins/{name} with {toolchain} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    partial.persist(&kept).unwrap();
    std::fs::read(&kept).unwrap()
}

/// A Python plugin: `plugins/<name>/app.py`, built with componentize-py.
pub fn python(name: &str) -> Vec<u8> {
    let tool = env("SILO_TEST_COMPONENTIZE_PY");
    let version = Command::new(&tool)
        .arg("--version")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {tool}: {e} ({HOW})"));
    let version = String::from_utf8_lossy(&version.stdout).trim().to_owned();
    built(name, &version, |out| {
        let mut c = Command::new(&tool);
        c.args(["-d", "wit", "-w", "upload-plugin", "componentize", "-p"])
            .arg(format!("plugins/{name}"))
            .arg("app")
            .arg("-o")
            .arg(out);
        c
    })
}

/// A JavaScript plugin: `plugins/<name>/app.js`, built with jco's
/// defaults (which import wasi:http).
pub fn javascript(name: &str) -> Vec<u8> {
    let tool = env("SILO_TEST_JCO");
    let lock = std::fs::read_to_string(root().join("tests/toolchains/js/package-lock.json")).unwrap();
    built(name, &format!("jco {}", crate::sha256_hex(lock.as_bytes())), |out| {
        let mut c = Command::new(&tool);
        c.args(["componentize"])
            .arg(format!("plugins/{name}/app.js"))
            .args(["--wit", "wit", "-n", "upload-plugin", "-o"])
            .arg(out);
        c
    })
}
