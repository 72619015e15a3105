//! Components Silo must refuse, each with an error that names the problem,
//! before anything is written.

use silo_host::runtime::Runtime;
use silo_host::{Config, LoadError, Silo, SiloError};
use silo_tests::{PROBE, TestSilo, sha256_hex, shared_compile_cache};

fn runtime() -> Runtime {
    Runtime::new(Some(&shared_compile_cache()), 64).expect("start the runtime")
}

#[test]
fn a_core_module_is_not_a_component() {
    let core = wat::parse_str("(module (func (export \"f\")))").unwrap();
    let err = runtime().load("core", &core, None).err().unwrap();
    assert!(matches!(err, LoadError::CoreModule { .. }), "{err}");
    assert!(err.to_string().contains("wasm32-wasip2"), "{err}");
}

#[test]
fn a_corrupt_file_is_refused() {
    let mut bytes = PROBE.to_vec();
    bytes.truncate(bytes.len() / 2);
    let err = runtime().load("half", &bytes, None).err().unwrap();
    assert!(matches!(err, LoadError::Invalid { .. }), "{err}");
    let err = runtime().load("text", b"#!/bin/sh\necho hi\n", None).err().unwrap();
    assert!(matches!(err, LoadError::NotWasm { .. }), "{err}");
}

#[test]
fn a_component_for_another_world_is_refused() {
    let other = wat::parse_str(r#"(component (core module) )"#).unwrap();
    let err = runtime().load("other", &other, None).err().unwrap();
    assert!(matches!(err, LoadError::WrongWorld { .. }), "{err}");
    assert!(err.to_string().contains("silo:plugin/handler"), "{err}");
}

#[test]
fn a_component_importing_what_silo_does_not_provide_is_refused() {
    let sneaky = wat::parse_str(
        r#"(component
             (import "evil:net/raw-socket@1.0.0" (instance (export "connect" (func (param "host" string)))))
           )"#,
    )
    .unwrap();
    let err = runtime().load("sneaky", &sneaky, None).err().unwrap();
    assert!(matches!(err, LoadError::UnknownImport { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("`evil:net/raw-socket@1.0.0`, which Silo does not provide"),
        "{err}"
    );

    let inspection = runtime().inspect("sneaky", &sneaky).unwrap();
    assert_eq!(inspection.imports, ["evil:net/raw-socket@1.0.0"]);
    assert!(inspection.verdict.is_err());
}

#[test]
fn an_interface_silo_has_in_another_shape_is_named_with_what_differs() {
    let odd = wat::parse_str(
        r#"(component
             (import "wasi:http/types@0.2.0" (instance (export "no-such-function" (func))))
           )"#,
    )
    .unwrap();
    let err = runtime().load("odd", &odd, None).err().unwrap();
    let message = err.to_string();
    assert!(
        message.contains("`wasi:http/types@0.2.0` in a form Silo does not provide")
            && message.contains("no-such-function"),
        "{message}"
    );
}

#[tokio::test]
async fn a_memory_limit_below_what_the_component_starts_with_is_refused_with_the_figure() {
    let needs = runtime().inspect("probe", PROBE).unwrap().min_memory_mib;
    assert!(needs >= 2, "the probe starts with {needs} MiB");
    let pipeline = format!(
        "[[plugins]]\nname = \"probe\"\ncomponent = \"probe.wasm\"\nsha256 = \"{}\"\nlimits = {{ memory_mib = {} }}\n",
        sha256_hex(PROBE),
        needs - 1
    );
    let err = TestSilo::new(&pipeline, &[("probe.wasm", PROBE)]).await.err().unwrap();
    let message = format!("{err:#}");
    assert!(
        message.contains(&format!(
            "limits.memory_mib = {}; raise limits.memory_mib to {needs} or more",
            needs - 1
        )),
        "{message}"
    );
}

#[test]
fn the_probe_inspects_as_an_upload_plugin() {
    let inspection = runtime().inspect("probe", PROBE).unwrap();
    assert!(inspection.verdict.is_ok(), "{:?}", inspection.verdict);
    assert_eq!(inspection.exports, ["silo:plugin/handler@0.1.0"]);
    assert!(inspection.imports.iter().any(|i| i == "silo:plugin/files@0.1.0"));
    assert_eq!(inspection.sha256, sha256_hex(PROBE));
}

/// A component whose bytes do not match its pin is refused, naming both
/// hashes, before anything is compiled: no compiled code is cached for it,
/// and nothing but the plugin directory is there afterwards.
#[tokio::test]
async fn a_sha256_mismatch_is_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("plugins")).unwrap();
    std::fs::write(dir.path().join("plugins/probe.wasm"), PROBE).unwrap();
    let text = format!(
        "data_dir = \"state\"\nplugin_dir = \"plugins\"\ncompile_cache = \"compiled\"\n\
         [volumes.public]\nbackend = \"local\"\npath = \"volumes/public\"\n\
         [[plugins]]\nname = \"probe\"\ncomponent = \"probe.wasm\"\nsha256 = \"{}\"\n",
        "ab".repeat(32)
    );
    let config = Config::parse(&text, dir.path(), None).unwrap();
    let err = Silo::open(config).await.err().unwrap();
    let message = err.to_string();
    assert!(message.contains("sha256 mismatch"), "{message}");
    assert!(message.contains(&sha256_hex(PROBE)), "{message}");
    assert!(message.contains(&"ab".repeat(32)), "{message}");
    let compiled = dir.path().join("compiled");
    let cached = std::fs::read_dir(&compiled).map_or(0, |d| d.count());
    assert_eq!(cached, 0, "compiled code was cached for a refused component");
    assert!(!dir.path().join("volumes/public").exists(), "a volume was created");
    let plugins: Vec<_> = std::fs::read_dir(dir.path().join("plugins"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(plugins, ["probe.wasm"]);
}

#[tokio::test]
async fn unpinned_components_and_paths_outside_the_plugin_dir_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("plugins")).unwrap();
    std::fs::write(dir.path().join("plugins/probe.wasm"), PROBE).unwrap();
    std::fs::write(dir.path().join("elsewhere.wasm"), PROBE).unwrap();
    for (component, pin, expected) in [
        ("probe.wasm", None, "components must be pinned"),
        (
            "../elsewhere.wasm",
            Some(sha256_hex(PROBE)),
            "must be a plain path inside plugin_dir",
        ),
        ("missing.wasm", Some(sha256_hex(PROBE)), "missing.wasm"),
        ("builtin:nope", None, "no built-in component 'nope'"),
    ] {
        let pin = pin.map(|p| format!("sha256 = \"{p}\"")).unwrap_or_default();
        let text = format!(
            "[volumes.public]\nbackend = \"memory\"\n[[plugins]]\nname = \"p\"\ncomponent = \"{component}\"\n{pin}\n"
        );
        let config = Config::parse(&text, dir.path(), None).unwrap();
        let err = Silo::open(config).await.err().unwrap();
        assert!(matches!(err, SiloError::Plugin { .. } | SiloError::Io { .. }), "{err}");
        assert!(err.to_string().contains(expected), "{component}: {err}");
    }
    let mut left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    left.sort();
    assert_eq!(left, ["elsewhere.wasm", "plugins"], "nothing else may be created");
}
