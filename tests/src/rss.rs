//! This process's memory and file descriptors, for the benchmarks (Linux).
//! A figure that cannot be read stops the benchmark: a zero in its place
//! would pass any memory target without measuring.

/// kB of this process: resident now, and peak since the last reset.
pub fn rss_kb() -> (u64, u64) {
    rss_kb_at("self")
}

/// kB of process `pid` ("self" for this one): resident now, and peak
/// since the last reset.
pub fn rss_kb_at(pid: &str) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("cannot read /proc/{pid}/status for the RSS figures (Linux only): {e}"));
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("/proc/self/status has no readable {name} line"))
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Make the peak-RSS counter start again from the current RSS.
pub fn reset_peak() {
    reset_peak_at("self");
}

/// As [`reset_peak`], for process `pid`.
pub fn reset_peak_at(pid: &str) {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").expect("reset the peak RSS (Linux 4.0+)");
}

/// File descriptors open in this process now.
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .unwrap_or_else(|e| panic!("cannot read /proc/self/fd to count descriptors (Linux only): {e}"))
        .count()
}
