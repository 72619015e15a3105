//! Instruction counts for the benchmarks: callgrind counts instructions,
//! which repeat on a busy machine where wall time does not.

use std::path::PathBuf;

/// Set to a directory to keep the profiles there, for `callgrind_annotate`.
pub const KEEP: &str = "SILO_BENCH_CALLGRIND_DIR";

/// Instructions one iteration of some work costs in this benchmark's own
/// process. It runs this executable again under callgrind with `var` set
/// to `small` and then to `large` (the copy must then do that many
/// iterations and nothing else) and takes the difference, so that start-up
/// and the first iterations' one-time work cancel out. A first run primes
/// what the copies share on disk (components compiled for the CPU that
/// valgrind presents). `None` if valgrind cannot run (`tests/run bench`
/// installs it).
pub fn per_iteration(var: &str, small: u64, large: u64) -> Option<f64> {
    let exe = std::env::current_exe().ok()?;
    let temp = tempfile::tempdir().ok()?;
    let dir = std::env::var_os(KEEP)
        .map(PathBuf::from)
        .unwrap_or(temp.path().to_owned());
    let mut totals = Vec::new();
    for (run, n) in [small, small, large].into_iter().enumerate() {
        let out = dir.join(format!("callgrind.{var}.{n}"));
        let status = std::process::Command::new("valgrind")
            .args(["--tool=callgrind", "--quiet"])
            .arg(format!("--callgrind-out-file={}", out.display()))
            .arg(&exe)
            .env(var, n.to_string())
            .stdout(std::process::Stdio::null())
            .status()
            .ok()?;
        if !status.success() {
            return None;
        }
        if run == 0 {
            continue;
        }
        let text = std::fs::read_to_string(&out).ok()?;
        let total: u64 = text
            .lines()
            .find_map(|l| l.strip_prefix("totals: ").or_else(|| l.strip_prefix("summary: ")))?
            .split_whitespace()
            .next()?
            .parse()
            .ok()?;
        totals.push(total);
    }
    Some(totals[1].saturating_sub(totals[0]) as f64 / (large - small) as f64)
}
