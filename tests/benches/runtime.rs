//! Runtime benchmark: prints a table. Run with
//! `tests/run bench --bench runtime` (it builds the Python and JavaScript
//! plugins with the toolchains tests/run installs).
//!
//! (a) one invocation of a trivial handler (new store, instantiate from
//!     InstancePre, call): the pooling allocator with its slots reset in
//!     place, the same with slots reset by madvise, and on-demand
//!     allocation, in alternating rounds; with its instruction count under
//!     callgrind; and
//!     of the Python and JavaScript plugins' first check (an upload over
//!     `max_bytes = 0`, refused at once), whose interpreters start from a
//!     snapshot of 11-13 MiB mapped copy-on-write;
//! (b) a guest-to-host `stat` served from the metadata cache, vs the same
//!     `Session::stat` called from Rust;
//! (c) loading a plugin cold (compiling) vs from the precompiled cache;
//! (d) how long an infinite loop runs past its time limit.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use silo_host::cache::MetadataCache;
use silo_host::runtime::Runtime;
use silo_host::runtime::{Allocation, InvokeLimits, PluginComponent, Upload};
use silo_host::store::{MemoryStore, PutOptions};
use silo_host::vfs::{Access, CacheMode, Grant, PendingUpload, Quota, Session, Storage, Visibility, Volume};
use silo_tests::PROBE;

struct Bench {
    storage: Arc<Storage>,
    pending: PendingUpload,
    grants: Arc<[Grant]>,
    _dir: tempfile::TempDir,
}

impl Bench {
    async fn new() -> Bench {
        let dir = tempfile::tempdir().unwrap();
        let volume = Volume {
            name: "public".into(),
            visibility: Visibility::Public,
            cache_mode: CacheMode::Canonical,
            store: Arc::new(MemoryStore::new()),
            public_url: None,
            read_cache: None,
        };
        let cache = MetadataCache::open(&dir.path().join("meta.sqlite")).unwrap();
        let storage = Arc::new(Storage::new(vec![volume], cache));
        // A cached file for the stat loop, among others.
        let host = storage.host_session();
        for i in 0..1000 {
            let loc = storage.location("public", &format!("photos/{i}.jpg")).unwrap();
            host.write(&loc, Bytes::from_static(b"\xff\xd8\xff\xe0"), PutOptions::default())
                .await
                .unwrap();
        }
        let staged = silo_host::vfs::Staged::Memory(bytes::Bytes::from_static(b"upload"));
        let location = storage.location("public", "incoming/new.txt").unwrap();
        let meta = host
            .stat(&storage.location("public", "photos/1.jpg").unwrap())
            .await
            .unwrap();
        let pending = PendingUpload {
            location,
            meta,
            staged: Arc::new(staged),
            condition: None,
            actor: None,
            sha256: None,
            etag: None,
            assembly: Default::default(),
            place: None,
        };
        let grants = silo_tests::read_grant("public");
        Bench {
            storage,
            pending,
            grants,
            _dir: dir,
        }
    }

    fn upload(&self, settings: &[(&str, &str)]) -> Upload {
        Upload {
            file: (&self.pending.location).into(),
            info: (&self.pending.meta).into(),
            settings: settings.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        }
    }

    /// Time one invocation.
    async fn invoke(&self, runtime: &Runtime, plugin: &PluginComponent, upload: Upload) -> Duration {
        let session = Session::new(self.storage.clone(), Some(self.grants.clone()), Quota::UNLIMITED)
            .with_pending(self.pending.clone());
        let limits = InvokeLimits {
            memory_bytes: 64 << 20,
            time: Duration::from_secs(30),
        };
        let started = Instant::now();
        runtime
            .on_upload(plugin, session, limits, upload)
            .await
            .expect("probe invocation");
        started.elapsed()
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// Set in the copies of this benchmark that run under callgrind
/// ([`silo_tests::callgrind`]): make this many trivial invocations and
/// nothing else.
const INVOCATIONS_ONLY: &str = "SILO_BENCH_INVOCATIONS_ONLY";

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let bench = Bench::new().await;
    if let Ok(n) = std::env::var(INVOCATIONS_ONLY) {
        let runtime = Runtime::new(None, 64).unwrap();
        let plugin = runtime.load("probe", PROBE, None).unwrap();
        for _ in 0..n.parse::<u32>().unwrap() {
            bench.invoke(&runtime, &plugin, bench.upload(&[("mode", "noop")])).await;
        }
        return;
    }
    let mut rows: Vec<(String, String, String)> = Vec::new();

    // (a) trivial invocation: slots reset in place, reset with madvise,
    // and no pool, in alternating rounds.
    let in_place = if silo_host::runtime::resets_slots_in_place() {
        "reset in place"
    } else {
        "reset in place unavailable here (no PAGEMAP_SCAN), so madvise"
    };
    let ways = [
        (Allocation::Pooling, format!("pooling, slots {in_place}")),
        (
            Allocation::PoolingMadvise,
            "pooling, slots reset with madvise".to_owned(),
        ),
        (Allocation::OnDemand, "on-demand".to_owned()),
    ];
    let mut runtimes = Vec::new();
    for (allocation, _) in &ways {
        let runtime = Runtime::with_allocator(None, 64, *allocation).unwrap();
        let plugin = runtime.load("probe", PROBE, None).unwrap();
        for _ in 0..200 {
            bench.invoke(&runtime, &plugin, bench.upload(&[("mode", "noop")])).await;
        }
        runtimes.push((runtime, plugin));
    }
    let mut samples = vec![Vec::new(); ways.len()];
    for _round in 0..5 {
        for ((runtime, plugin), samples) in runtimes.iter().zip(&mut samples) {
            for _ in 0..1000 {
                samples.push(bench.invoke(runtime, plugin, bench.upload(&[("mode", "noop")])).await);
            }
        }
    }
    let mut p50s = Vec::new();
    for ((_, name), mut samples) in ways.iter().zip(samples) {
        samples.sort();
        let (p50, p99) = (percentile(&samples, 0.5), percentile(&samples, 0.99));
        p50s.push(p50);
        rows.push((
            format!("(a) trivial invocation, {name}"),
            format!("p50 {:.1} µs, p99 {:.1} µs", us(p50), us(p99)),
            String::new(),
        ));
    }
    drop(runtimes);
    rows[1].2 = format!("reset in place p50 = {:.2}x this", us(p50s[0]) / us(p50s[1]));
    rows[2].2 = format!("pooling p50 = {:.2}x on-demand", us(p50s[0]) / us(p50s[2]));
    rows[0].2 = match silo_tests::callgrind::per_iteration(INVOCATIONS_ONLY, 20, 220) {
        Some(n) => format!("{:.0}k instructions (callgrind)", n / 1000.0),
        None => "no instruction count: valgrind did not run".into(),
    };
    // Like with like: each language's plugin and the Rust probe on the same
    // runtime, in alternating rounds, each doing as little as it can (the
    // probe's noop; a plugin that accepts an empty upload at once). The
    // ratio is what the interpreter's instance costs over a Rust one.
    let runtime = Runtime::new(None, 64).unwrap();
    let probe = runtime.load("probe", PROBE, None).unwrap();
    for (language, name, bytes) in [
        ("Python", "svg-sanitizer", silo_tests::guests::python("svg-sanitizer")),
        ("JavaScript", "text-note", silo_tests::guests::javascript("text-note")),
    ] {
        let plugin = runtime.load(name, &bytes, None).unwrap();
        let settings = [("max_bytes", "0")];
        let noop = [("mode", "noop")];
        for _ in 0..20 {
            bench.invoke(&runtime, &plugin, bench.upload(&settings)).await;
            bench.invoke(&runtime, &probe, bench.upload(&noop)).await;
        }
        let (mut samples, mut rust) = (Vec::new(), Vec::new());
        for _ in 0..10 {
            for _ in 0..50 {
                samples.push(bench.invoke(&runtime, &plugin, bench.upload(&settings)).await);
            }
            for _ in 0..50 {
                rust.push(bench.invoke(&runtime, &probe, bench.upload(&noop)).await);
            }
        }
        samples.sort();
        rust.sort();
        let (p50, p99) = (percentile(&samples, 0.5), percentile(&samples, 0.99));
        let rust_p50 = percentile(&rust, 0.5);
        rows.push((
            format!(
                "(a) trivial invocation, {language} ({name}, {} MB)",
                bytes.len() / 1_000_000
            ),
            format!("p50 {:.1} µs, p99 {:.1} µs", us(p50), us(p99)),
            format!(
                "{:.1}x the Rust probe's noop on the same runtime ({:.1} µs); target p50 <= 2 ms",
                us(p50) / us(rust_p50),
                us(rust_p50)
            ),
        ));
    }

    // (b) guest-to-host stat from the cache.
    let runtime = Runtime::new(None, 64).unwrap();
    let plugin = runtime.load("probe", PROBE, None).unwrap();
    let n = 200_000u32;
    let n_text = n.to_string();
    let looped = [
        ("mode", "stat-loop"),
        ("volume", "public"),
        ("path", "photos/500.jpg"),
        ("n", n_text.as_str()),
    ];
    let empty = [
        ("mode", "stat-loop"),
        ("volume", "public"),
        ("path", "photos/500.jpg"),
        ("n", "0"),
    ];
    let mut best_loop = Duration::MAX;
    let mut best_empty = Duration::MAX;
    for _ in 0..5 {
        best_loop = best_loop.min(bench.invoke(&runtime, &plugin, bench.upload(&looped)).await);
        best_empty = best_empty.min(bench.invoke(&runtime, &plugin, bench.upload(&empty)).await);
    }
    let per_call = (best_loop.saturating_sub(best_empty)) / n;
    let host = Session::new(bench.storage.clone(), Some(bench.grants.clone()), Quota::UNLIMITED);
    let started = Instant::now();
    for _ in 0..n {
        let loc = host.resolve("public", "photos/500.jpg", Access::Read).unwrap();
        std::hint::black_box(host.stat(&loc).await.unwrap());
    }
    let native = started.elapsed() / n;
    rows.push((
        "(b) stat from the cache, guest -> host".into(),
        format!("{:.2} µs per call", us(per_call)),
        format!(
            "{:.2}x the same stat from Rust ({:.2} µs)",
            us(per_call) / us(native),
            us(native)
        ),
    ));

    // (c) loading cold vs from the precompiled cache.
    for (name, bytes) in [("probe", PROBE), ("image-styles", silo_host::bundled::IMAGE_STYLES)] {
        let cache = tempfile::tempdir().unwrap();
        let runtime = Runtime::new(Some(cache.path()), 64).unwrap();
        let started = Instant::now();
        runtime.load(name, bytes, None).unwrap();
        let cold = started.elapsed();
        let mut warm = Duration::MAX;
        for _ in 0..10 {
            let started = Instant::now();
            runtime.load(name, bytes, None).unwrap();
            warm = warm.min(started.elapsed());
        }
        rows.push((
            format!("(c) load {name} ({} KB)", bytes.len() / 1024),
            format!(
                "cold {:.1} ms, cached {:.2} ms",
                cold.as_secs_f64() * 1e3,
                warm.as_secs_f64() * 1e3
            ),
            format!("cached is {:.0}x faster", cold.as_secs_f64() / warm.as_secs_f64()),
        ));
    }

    // (d) how far past its time limit an infinite loop runs.
    let runtime = Runtime::new(None, 64).unwrap();
    let plugin = runtime.load("probe", PROBE, None).unwrap();
    let limit = Duration::from_millis(200);
    let mut overshoot = Vec::new();
    for _ in 0..20 {
        let session = Session::new(bench.storage.clone(), Some(bench.grants.clone()), Quota::UNLIMITED)
            .with_pending(bench.pending.clone());
        let limits = InvokeLimits {
            memory_bytes: 64 << 20,
            time: limit,
        };
        let started = Instant::now();
        let result = runtime
            .on_upload(&plugin, session, limits, bench.upload(&[("mode", "spin")]))
            .await;
        assert!(result.is_err(), "the loop must be stopped");
        overshoot.push(started.elapsed().saturating_sub(limit));
    }
    overshoot.sort();
    rows.push((
        "(d) infinite loop past a 200 ms limit".into(),
        format!(
            "p50 +{:.1} ms, max +{:.1} ms",
            overshoot[10].as_secs_f64() * 1e3,
            overshoot[19].as_secs_f64() * 1e3
        ),
        "target: within +100 ms".into(),
    ));

    let w0 = rows.iter().map(|r| r.0.chars().count()).max().unwrap_or(0);
    let w1 = rows.iter().map(|r| r.1.chars().count()).max().unwrap_or(0);
    println!("| {:w0$} | {:w1$} | ratio |", "measure", "result");
    println!("|{}|{}|-------|", "-".repeat(w0 + 2), "-".repeat(w1 + 2));
    for (a, b, c) in rows {
        println!("| {a:w0$} | {b:w1$} | {c} |");
    }
}
