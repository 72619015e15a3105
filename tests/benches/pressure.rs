//! Host resources under hostile pressure, against SeaweedFS (`tests/run
//! bench --bench pressure`): 64 invocations at once, each trying to pin as
//! much host memory as it can (16 writers filled to just under a part and
//! held until the time limit, or as many streams of the upload as it may open
//! (16), each started with a one-byte read and held), beside good
//! invocations that stream-copy a file. The baseline, measured in the same
//! run, is the same 64 invocations holding nothing (their instances' own
//! memory). Each phase runs in a process of its own, so that memory one
//! phase's allocator keeps does not hide the other's. Prints the host's
//! peak RSS growth against the write budget, the peak of open file
//! descriptors, and whether every good copy came out byte-identical.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use silo_host::Status;
use silo_tests::rss::{open_fds, reset_peak, rss_kb};
use silo_tests::{PROBE, TestSilo, s3};

const HOSTILE: usize = 64;
const GOOD: usize = 8;
const BUDGET_MIB: u64 = 128;
const PART_MIB: u64 = 5;
const PHASE: &str = "SILO_PRESSURE_PHASE";

/// What one phase measured.
struct Measured {
    growth_mib: f64,
    peak_fds: usize,
    fds_before: usize,
    identical: usize,
    outcomes: String,
    seconds: f64,
}

fn main() {
    if let Ok(phase) = std::env::var(PHASE) {
        let m = tokio::runtime::Runtime::new().unwrap().block_on(phase_run(&phase));
        println!(
            "RESULT {} {} {} {} {:.2} {}",
            m.growth_mib, m.peak_fds, m.fds_before, m.identical, m.seconds, m.outcomes
        );
        return;
    }
    let run = |phase: &str| -> Measured {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .env(PHASE, phase)
            .output()
            .expect("run a phase");
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text.lines().find_map(|l| l.strip_prefix("RESULT ")).unwrap_or_else(|| {
            panic!(
                "phase {phase} failed:\n{text}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        let f: Vec<&str> = line.splitn(6, ' ').collect();
        Measured {
            growth_mib: f[0].parse().unwrap(),
            peak_fds: f[1].parse().unwrap(),
            fds_before: f[2].parse().unwrap(),
            identical: f[3].parse().unwrap(),
            seconds: f[4].parse().unwrap(),
            outcomes: f[5].to_owned(),
        }
    };
    let idle = run("idle");
    let attack = run("attack");
    let pinned = attack.growth_mib - idle.growth_mib;
    let target = BUDGET_MIB as f64 + 64.0;
    println!(
        "\nHostile pressure (SeaweedFS on loopback): {HOSTILE} hostile invocations beside {GOOD} good ones; write budget {BUDGET_MIB} MiB\n"
    );
    println!("| measure | attack | baseline (the same invocations holding nothing) | attack - baseline | target |");
    println!("|---|---|---|---|---|");
    println!(
        "| host peak RSS growth | +{:.1} MiB | +{:.1} MiB | +{pinned:.1} MiB | <= {target:.0} MiB (budget + 64), {} |",
        attack.growth_mib,
        idle.growth_mib,
        if pinned <= target { "met" } else { "missed" }
    );
    println!(
        "| peak open fds | {} (from {}) | {} (from {}) | {} | at most 16 readers + 16 writers an invocation |",
        attack.peak_fds,
        attack.fds_before,
        idle.peak_fds,
        idle.fds_before,
        attack.peak_fds as i64 - idle.peak_fds as i64
    );
    println!(
        "| good copies byte-identical | {} of {GOOD} | {} of {GOOD} | | all |",
        attack.identical, idle.identical
    );
    println!("| time | {:.1} s | {:.1} s | | |", attack.seconds, idle.seconds);
    println!(
        "| hostile outcomes | {} | {} | | none accepted |",
        attack.outcomes, idle.outcomes
    );
}

async fn phase_run(phase: &str) -> Measured {
    let bucket = s3::bucket("pressure").await;
    let volumes = format!(
        "[limits]\nwrite_buffer_mib = {BUDGET_MIB}\n\n{}",
        s3::volume_toml(
            "public",
            &bucket,
            "public",
            &format!("visibility = \"public\"\npart_size_mib = {PART_MIB}")
        )
    );
    let just_under_a_part = (PART_MIB << 20) - 4096;
    let (writers, readers) = match phase {
        "attack" => (
            format!(r#"mode = "writers", n = "64", size = "{just_under_a_part}", hold = "1""#),
            r#"mode = "readers", n = "3000", hold = "1""#.to_owned(),
        ),
        _ => (
            r#"mode = "idle", ms = "3000""#.to_owned(),
            r#"mode = "idle", ms = "3000""#.to_owned(),
        ),
    };
    let pipeline = format!(
        r#"
[[plugins]]
name = "writers"
component = "probe.wasm"
sha256 = "{{sha256:probe.wasm}}"
events = ["application/x-writers"]
settings = {{ {writers} }}
limits = {{ time_ms = 4000, memory_mib = 16, objects_written = 1000, bytes_written = 4294967296, max_object_bytes = 67108864 }}
grants = [{{ volume = "public", prefix = "writers", access = ["read", "write"] }}]

[[plugins]]
name = "readers"
component = "probe.wasm"
sha256 = "{{sha256:probe.wasm}}"
events = ["application/x-readers"]
settings = {{ {readers} }}
limits = {{ time_ms = 4000, memory_mib = 16 }}
grants = [{{ volume = "public", access = ["read"] }}]

[[plugins]]
name = "good"
component = "probe.wasm"
sha256 = "{{sha256:probe.wasm}}"
events = ["text/plain"]
settings = {{ mode = "stream-copy" }}
limits = {{ time_ms = 120000 }}
grants = [{{ volume = "public", access = ["read", "write"] }}]
"#
    );
    let t = TestSilo::with_volumes(&pipeline, &[("probe.wasm", PROBE)], &volumes)
        .await
        .expect("a Silo on SeaweedFS");
    // Warm: compiled plugins, connections, allocator arenas.
    let warm = t.upload("public/warm.txt", b"warm", None).await.unwrap();
    assert_eq!(warm.status, Status::Accepted, "{warm:?}");

    let fds_before = open_fds();
    let peak_fds = Arc::new(AtomicUsize::new(fds_before));
    let sampler = tokio::spawn({
        let peak_fds = peak_fds.clone();
        async move {
            loop {
                peak_fds.fetch_max(open_fds(), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    });
    let (rss_before, _) = rss_kb();
    reset_peak();
    let started = Instant::now();
    let t = &t;
    let hostile = (0..HOSTILE).map(|i| async move {
        let kind = if i % 4 == 3 { "readers" } else { "writers" };
        let body = vec![b'h'; 300_000];
        t.upload(
            &format!("public/hostile-{i}.bin"),
            &body,
            Some(&format!("application/x-{kind}")),
        )
        .await
        .unwrap()
    });
    let good = (0..GOOD).map(|i| async move {
        let body: Vec<u8> = (0..3_000_000u32)
            .map(|n| b'a' + ((n * 7 + i as u32) % 26) as u8)
            .collect();
        let report = t.upload(&format!("public/good-{i}.txt"), &body, None).await.unwrap();
        (body, report)
    });
    let (hostile, good) =
        futures::future::join(futures::future::join_all(hostile), futures::future::join_all(good)).await;
    let seconds = started.elapsed().as_secs_f64();
    let (_, peak) = rss_kb();
    sampler.abort();

    let host = t.silo.storage().host_session();
    let mut identical = 0;
    for (i, (body, report)) in good.iter().enumerate() {
        assert_eq!(report.status, Status::Accepted, "good {i}: {report:?}");
        let copy = host
            .read(
                &t.silo
                    .storage()
                    .location("public", &format!("copies/good-{i}.txt"))
                    .unwrap(),
            )
            .await
            .unwrap();
        identical += usize::from(copy == *body);
    }
    let mut outcomes = std::collections::BTreeMap::<String, usize>::new();
    for report in &hostile {
        assert_ne!(report.status, Status::Accepted);
        let outcome = report
            .error
            .as_ref()
            .map(|e| e.code.clone())
            .or(report.reason.clone())
            .unwrap_or_default();
        *outcomes.entry(outcome).or_default() += 1;
    }
    Measured {
        growth_mib: peak.saturating_sub(rss_before) as f64 / 1024.0,
        peak_fds: peak_fds.load(Ordering::Relaxed),
        fds_before,
        identical,
        outcomes: format!("{outcomes:?}"),
        seconds,
    }
}
