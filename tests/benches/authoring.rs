//! A new plugin author's steps, in Rust, Python and JavaScript, timed on this
//! machine with the toolchains cached (`tests/run bench --bench authoring`): `silo plugin new`, the
//! first `silo plugin test` (which builds the project), a change and the
//! test again, and `silo plugin build`. Prints a table; the goal is from
//! `new` to a passing `test` within two minutes.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn step(silo: &str, dir: &Path, target: &Path, args: &[&str]) -> (Duration, bool) {
    let componentize_py =
        std::env::var("SILO_TEST_COMPONENTIZE_PY").expect("SILO_TEST_COMPONENTIZE_PY: run tests/run bench");
    let jco = std::env::var("SILO_TEST_JCO").expect("SILO_TEST_JCO: run tests/run bench");
    let started = Instant::now();
    let out = Command::new(silo)
        .current_dir(dir)
        .env("CARGO_TARGET_DIR", target)
        .env("SILO_COMPONENTIZE_PY", componentize_py)
        .env("SILO_JCO", jco)
        .args(args)
        .output()
        .expect("run silo");
    (started.elapsed(), out.status.success())
}

fn main() {
    let silo = std::env::var("SILO_BENCH_SILO").expect("SILO_BENCH_SILO is not set: run tests/run bench");
    // The projects share a target directory, as one author's do: the
    // SDK's dependencies are built once, before the timed steps.
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/plugin-projects");
    let warm = tempfile::tempdir().unwrap();
    step(&silo, warm.path(), &target, &["plugin", "new", "warm-up"]);
    step(&silo, warm.path(), &target, &["plugin", "build", "warm-up"]);

    println!("| step | wall time | outcome |");
    println!("|---|---|---|");
    for (lang, source) in [("rust", "src/lib.rs"), ("python", "app.py"), ("js", "app.js")] {
        let work = tempfile::tempdir().unwrap();
        let mut rows = Vec::new();
        let (new, ok) = step(
            &silo,
            work.path(),
            &target,
            &["plugin", "new", "timed-guard", "--lang", lang],
        );
        assert!(ok, "{lang}: silo plugin new");
        rows.push(("silo plugin new", new, "passed"));
        let (first, ok) = step(&silo, work.path(), &target, &["plugin", "test", "timed-guard"]);
        assert!(ok, "{lang}: the first silo plugin test");
        rows.push(("silo plugin test (builds the new project)", first, "3 passed"));
        let source = work.path().join("timed-guard").join(source);
        let code = std::fs::read_to_string(&source).unwrap();
        std::fs::write(&source, code.replace("upload.info.size == 0", "upload.info.size < 10")).unwrap();
        let (changed, ok) = step(&silo, work.path(), &target, &["plugin", "test", "timed-guard"]);
        assert!(!ok, "{lang}: the changed plugin fails a case");
        rows.push(("a change, then silo plugin test", changed, "1 failed, as it should"));
        let (build, ok) = step(&silo, work.path(), &target, &["plugin", "build", "timed-guard"]);
        assert!(ok, "{lang}: silo plugin build");
        rows.push(("silo plugin build", build, "passed"));
        for (name, time, outcome) in &rows {
            println!("| {lang}: {name} | {:.2} s | {outcome} |", time.as_secs_f64());
        }
        println!(
            "| {lang}: from new to a passing test | {:.2} s | goal: within 120 s |",
            (new + first).as_secs_f64()
        );
    }
}
