#[path = "build_plugins.rs"]
mod build_plugins;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var_os("CARGO_FEATURE_BUNDLED_PLUGINS").is_none() {
        return;
    }
    for (name, path) in build_plugins::build(&["upload-guard", "image-styles"]) {
        let var = format!("SILO_BUNDLED_{}", name.to_uppercase().replace('-', "_"));
        println!("cargo:rustc-env={var}={}", path.display());
    }
}
