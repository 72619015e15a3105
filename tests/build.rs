#[path = "../host/build_plugins.rs"]
mod build_plugins;

/// Test-only plugins, compiled from plugins/ on every test build.
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    for (name, path) in build_plugins::build(&["probe", "fs-thumbnails"]) {
        let var = format!("SILO_TEST_PLUGIN_{}", name.to_uppercase().replace('-', "_"));
        println!("cargo:rustc-env={var}={}", path.display());
    }
}
