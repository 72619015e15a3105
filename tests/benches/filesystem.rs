//! Files through wasi:filesystem against Silo's own `files` interface, in
//! the same plugin (plugins/fs-thumbnails), on the same volumes (`tests/run
//! bench --bench filesystem`):
//! - reading a 64 MiB file to its end, 64 KiB at a time: `std::fs::File`
//!   against `files::open-read`, on a local volume, on S3, and from a
//!   staged upload; target at least 0.9x;
//! - stat of 10,000 files: `std::fs::metadata` against `files::stat`;
//!   target at least 0.8x.
//!
//! Each figure is the median of several invocations, the two ways
//! alternating (each first in every other round) so that drift on a busy
//! machine hits both.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use silo_host::runtime::{InvokeLimits, Outcome, PluginComponent, Runtime, Upload};
use silo_host::store::PutOptions;
use silo_host::vfs::{PendingUpload, Quota, Session, Staged, Storage};
use silo_tests::{FS_THUMBNAILS, TestSilo};

const BIG: usize = 64 << 20;
const STATS: usize = 10_000;
const ROUNDS: usize = 9;

struct Place {
    name: &'static str,
    storage: Arc<Storage>,
    pending: PendingUpload,
}

async fn invoke(runtime: &Runtime, plugin: &PluginComponent, place: &Place, settings: &[(&str, &str)]) -> Duration {
    let grants = silo_tests::read_grant("public");
    let session =
        Session::new(place.storage.clone(), Some(grants), Quota::UNLIMITED).with_pending(place.pending.clone());
    let upload = Upload {
        file: (&place.pending.location).into(),
        info: (&place.pending.meta).into(),
        settings: settings.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
    };
    let limits = InvokeLimits {
        memory_bytes: 64 << 20,
        time: Duration::from_secs(120),
    };
    let started = Instant::now();
    let outcome = runtime.on_upload(plugin, session, limits, upload).await;
    let elapsed = started.elapsed();
    match outcome {
        Ok(Outcome::Reject(r)) if r.starts_with("read=") || r.starts_with("stats=") => {
            if let Some(n) = r.strip_prefix("read=") {
                assert_eq!(n.parse::<usize>().unwrap(), BIG, "{}: read {n} bytes", place.name);
            }
        }
        other => panic!("{}: {settings:?} answered {other:?}", place.name),
    }
    elapsed
}

/// Medians of `fs` and `files` settings, invoked alternately.
async fn pair(
    runtime: &Runtime,
    plugin: &PluginComponent,
    place: &Place,
    fs: &[(&str, &str)],
    files: &[(&str, &str)],
) -> (Duration, Duration) {
    let (mut a, mut b) = (Vec::new(), Vec::new());
    // One round each first, unmeasured: caches and connections.
    invoke(runtime, plugin, place, fs).await;
    invoke(runtime, plugin, place, files).await;
    for round in 0..ROUNDS {
        // Each goes first in every other round.
        if round % 2 == 0 {
            a.push(invoke(runtime, plugin, place, fs).await);
            b.push(invoke(runtime, plugin, place, files).await);
        } else {
            b.push(invoke(runtime, plugin, place, files).await);
            a.push(invoke(runtime, plugin, place, fs).await);
        }
    }
    a.sort();
    b.sort();
    (a[ROUNDS / 2], b[ROUNDS / 2])
}

async fn place(name: &'static str, t: &TestSilo, staged: Staged) -> Place {
    let storage = t.silo.storage().clone();
    let host = storage.host_session();
    let big = Bytes::from((0..BIG).map(|i| (i % 251) as u8).collect::<Vec<u8>>());
    let loc = storage.location("public", "big/64.bin").unwrap();
    let meta = host.write(&loc, big, PutOptions::default()).await.unwrap();
    let small = Bytes::from_static(b"a small file");
    for i in 0..STATS {
        let loc = storage.location("public", &format!("many/{i}.txt")).unwrap();
        host.write(&loc, small.clone(), PutOptions::default()).await.unwrap();
    }
    let pending = PendingUpload {
        location: storage.location("public", "incoming/64.bin").unwrap(),
        meta,
        staged: Arc::new(staged),
        condition: None,
        actor: None,
        sha256: None,
        etag: None,
        assembly: Default::default(),
        place: None,
    };
    Place { name, storage, pending }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

#[tokio::main]
async fn main() {
    let local = TestSilo::new("", &[]).await.expect("a Silo on local volumes");
    let (s3, _bucket) = TestSilo::on_s3("", &[], "bench-fs").await.expect("a Silo on S3");
    let staged_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        staged_file.path(),
        (0..BIG).map(|i| (i % 251) as u8).collect::<Vec<u8>>(),
    )
    .unwrap();
    let on_local = place("local volume", &local, Staged::Memory(Bytes::new())).await;
    let staged = Place {
        name: "staged upload",
        storage: on_local.storage.clone(),
        pending: PendingUpload {
            staged: Arc::new(Staged::File(staged_file.into_temp_path())),
            ..on_local.pending.clone()
        },
    };
    let places = [
        on_local,
        place("S3 volume", &s3, Staged::Memory(Bytes::new())).await,
        staged,
    ];
    let runtime = Runtime::new(Some(&silo_tests::shared_compile_cache()), 128).unwrap();
    let plugin = runtime.load("fs-thumbnails", FS_THUMBNAILS, None).unwrap();

    println!("\nRead 64 MiB to its end, 64 KiB at a time (median of {ROUNDS})\n");
    println!("| where | std::fs | files::open-read | ratio (files / std::fs) | target |");
    println!("|---|---|---|---|---|");
    for place in &places {
        let path = if place.name == "staged upload" {
            place.pending.location.path.as_str()
        } else {
            "big/64.bin"
        };
        let (fs, files) = pair(
            &runtime,
            &plugin,
            place,
            &[("mode", "read-fs"), ("path", path)],
            &[("mode", "read-files"), ("path", path)],
        )
        .await;
        let ratio = files.as_secs_f64() / fs.as_secs_f64();
        println!(
            "| {} | {:.1} ms ({:.0} MiB/s) | {:.1} ms ({:.0} MiB/s) | {ratio:.2}x | >= 0.9x: {} |",
            place.name,
            ms(fs),
            64.0 / fs.as_secs_f64(),
            ms(files),
            64.0 / files.as_secs_f64(),
            if ratio >= 0.9 { "met" } else { "missed" }
        );
    }

    println!("\nStat {STATS} files (median of {ROUNDS})\n");
    println!("| where | std::fs::metadata | files::stat | ratio (files / std::fs) | target |");
    println!("|---|---|---|---|---|");
    let n = STATS.to_string();
    for place in &places[..2] {
        let (fs, files) = pair(
            &runtime,
            &plugin,
            place,
            &[("mode", "stat-fs"), ("dir", "many"), ("n", &n)],
            &[("mode", "stat-files"), ("dir", "many"), ("n", &n)],
        )
        .await;
        let ratio = files.as_secs_f64() / fs.as_secs_f64();
        println!(
            "| {} | {:.1} ms ({:.2} µs each) | {:.1} ms ({:.2} µs each) | {ratio:.2}x | >= 0.8x: {} |",
            place.name,
            ms(fs),
            fs.as_secs_f64() * 1e6 / STATS as f64,
            ms(files),
            files.as_secs_f64() * 1e6 / STATS as f64,
            if ratio >= 0.8 { "met" } else { "missed" }
        );
    }
    // The floor: the same libc stat of the volume's root, which needs no
    // lookup at all, so what remains is the two WASI calls and the guest.
    let mut floor = Vec::new();
    for _ in 0..ROUNDS {
        floor.push(
            invoke(
                &runtime,
                &plugin,
                &places[0],
                &[("mode", "stat-fs"), ("path", "."), ("n", &n)],
            )
            .await,
        );
    }
    floor.sort();
    let floor = floor[ROUNDS / 2];
    println!(
        "| local volume, its root (no lookup) | {:.1} ms ({:.2} µs each) | | | |",
        ms(floor),
        floor.as_secs_f64() * 1e6 / STATS as f64
    );
}
