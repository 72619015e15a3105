//! Sidecar benchmark against the SeaweedFS server `tests/run` starts:
//! `tests/run bench --bench sidecar` (release). Prints a table of Silo
//! against baselines measured in the same run:
//!
//! (1) small-file reads through the sidecar (metadata and disk cache hits)
//!     vs GETs straight from SeaweedFS (presigned URLs), same client, same
//!     concurrency: requests per second and p99;
//! (2) uploads through the pipeline (upload-guard) vs PutObject straight to
//!     SeaweedFS: uploads per second, in alternating rounds; beside them
//!     the same sidecar with no plugin, and a bare HTTP hop that only
//!     forwards each body as a PutObject (the floor of any sidecar); and
//!     the instructions this process spends on each way under callgrind
//!     (which hides SHA-NI: hashing counts several times its native cost);
//! (3) `silo migrate` of 10,000 small files vs `aws s3 sync` (awscli from
//!     PyPI, installed by `tests/run`) to the same server.
//!
//! `SILO_BENCH_SECS` (default 5) sets the duration of (1);
//! `SILO_BENCH_FILES` (default 10000) the file count of (3);
//! `SILO_BENCH_PARTS=2` runs only part (2), `SILO_BENCH_UPLOADS` (default
//! 1000) its uploads each way; `SILO_BENCH_CALLGRIND_DIR` keeps the
//! profiles for `callgrind_annotate`; `SILO_BENCH_SPLIT_CPUS=1` (read by
//! `tests/run`) gives SeaweedFS a CPU of its own.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_s3::presigning::PresigningConfig;
use bytes::Bytes;
use silo_host::migrate::{self, Direction};
use silo_tests::http::{Client, Sidecar};
use silo_tests::{GUARD_PIPELINE, TestSilo, s3};

const CONCURRENCY: usize = 16;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|s| s.parse().ok()).unwrap_or(default)
}

fn small(i: usize) -> Vec<u8> {
    format!("small file {i}\n").repeat(300).into_bytes()
}

struct Load {
    requests: u64,
    elapsed: Duration,
    p50: Duration,
    p99: Duration,
}

impl Load {
    fn rps(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }
}

/// GET `urls` round-robin from `CONCURRENCY` workers for `secs`.
async fn hammer(client: &Client, urls: Arc<Vec<String>>, secs: u64) -> Load {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for w in 0..CONCURRENCY {
        let (client, urls) = (client.clone(), urls.clone());
        workers.spawn(async move {
            let mut latencies = Vec::new();
            let mut i = w;
            while Instant::now() < deadline {
                let t = Instant::now();
                let reply = client.get(&urls[i % urls.len()], &[]).await.expect("GET");
                assert_eq!(reply.status, 200, "{}", reply.text());
                latencies.push(t.elapsed());
                i += CONCURRENCY;
            }
            latencies
        });
    }
    let mut all = Vec::new();
    while let Some(l) = workers.join_next().await {
        all.extend(l.unwrap());
    }
    let elapsed = started.elapsed();
    all.sort();
    Load {
        requests: all.len() as u64,
        elapsed,
        p50: all[all.len() / 2],
        p99: all[all.len() * 99 / 100],
    }
}

/// Run the job of each index of `range`, `CONCURRENCY` at once; returns
/// the elapsed time.
async fn in_parallel<F, Fut>(range: std::ops::Range<usize>, job: F) -> Duration
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let job = Arc::new(job);
    let end = range.end;
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(range.start));
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..CONCURRENCY {
        let (job, next) = (job.clone(), next.clone());
        workers.spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= end {
                    return;
                }
                job(i).await;
            }
        });
    }
    while let Some(r) = workers.join_next().await {
        r.unwrap();
    }
    started.elapsed()
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

#[tokio::main]
async fn main() {
    let secs = env_or("SILO_BENCH_SECS", 5);
    let files = env_or("SILO_BENCH_FILES", 10_000) as usize;
    let parts = std::env::var("SILO_BENCH_PARTS").unwrap_or_else(|_| "123".into());
    let mut rows: Vec<[String; 5]> = Vec::new();

    if let Some(n) = only(PUT_OBJECTS_ONLY) {
        let bucket = s3::bucket("bench-putobject").await;
        put_objects(&s3::client(), &bucket, 0..n).await;
        return;
    }
    let bucket = s3::bucket("bench-sidecar").await;
    if let Some(n) = only(HOP_UPLOADS_ONLY) {
        sidecar_uploads(&Client::default(), bare_hop(&bucket).await, 0..n).await;
        return;
    }
    let volumes = s3::volume_toml(
        "public",
        &bucket,
        "public",
        "visibility = \"public\"\nread_cache_mib = 512",
    );
    let t = TestSilo::with_volumes(GUARD_PIPELINE, &[], &volumes)
        .await
        .expect("open Silo");
    let silo = Arc::new(t.silo);
    let sidecar = Sidecar::start(silo.clone()).await;
    let client = Client::default();
    if let Some(n) = only(SIDECAR_UPLOADS_ONLY) {
        sidecar_uploads(&client, sidecar.addr, 0..n).await;
        return;
    }
    if let Some(n) = only(BARE_UPLOADS_ONLY) {
        let (bare, _state) = bare_sidecar(&volumes).await;
        sidecar_uploads(&client, bare.addr, 0..n).await;
        return;
    }

    if parts.contains('1') {
        reads(&client, &sidecar, &bucket, secs, &mut rows).await;
    }
    if parts.contains('2') {
        // The same sidecar with no plugin: what the hop, staging, the
        // policy and the metadata cache cost without an invocation.
        let (bare, _state) = bare_sidecar(&volumes).await;
        uploads(&client, &sidecar, &bare, &bucket, &mut rows).await;
    }
    if parts.contains('3') {
        migration(files, &mut rows).await;
    }
    println!("\n| measure | Silo | baseline | ratio | |");
    println!("|---|---|---|---|---|");
    for row in rows {
        println!("| {} |", row.join(" | "));
    }
}

/// (1) Reads: 100 files of 5.4 kB, cached by a first read.
async fn reads(client: &Client, sidecar: &Sidecar, bucket: &str, secs: u64, rows: &mut Vec<[String; 5]>) {
    let sdk = s3::client();
    let mut through_silo = Vec::new();
    let mut direct = Vec::new();
    for i in 0..100 {
        let url = sidecar.url(&format!("/v1/files/public/read/{i}.txt"));
        let reply = client.put(&url, "text/plain", small(i)).await.expect("PUT");
        assert_eq!(reply.status, 201, "{}", reply.text());
        assert_eq!(client.get(&url, &[]).await.unwrap().body, small(i));
        through_silo.push(url);
        let presigned = sdk
            .get_object()
            .bucket(bucket)
            .key(format!("public/read/{i}.txt"))
            .presigned(PresigningConfig::expires_in(Duration::from_secs(3600)).unwrap())
            .await
            .expect("presign");
        direct.push(presigned.uri().to_owned());
    }
    let (through_silo, direct) = (Arc::new(through_silo), Arc::new(direct));
    // Warm both paths' connection pools.
    hammer(client, through_silo.clone(), 1).await;
    hammer(client, direct.clone(), 1).await;
    let silo_reads = hammer(client, through_silo, secs).await;
    let s3_reads = hammer(client, direct, secs).await;
    rows.push([
        format!("small-file reads, {CONCURRENCY} clients"),
        format!(
            "{:.0} req/s, p50 {}, p99 {}",
            silo_reads.rps(),
            ms(silo_reads.p50),
            ms(silo_reads.p99)
        ),
        format!(
            "{:.0} req/s, p50 {}, p99 {} (GET from SeaweedFS)",
            s3_reads.rps(),
            ms(s3_reads.p50),
            ms(s3_reads.p99)
        ),
        format!("{:.2}x rps", silo_reads.rps() / s3_reads.rps()),
        format!("p99 {:.2}x", silo_reads.p99.as_secs_f64() / s3_reads.p99.as_secs_f64()),
    ]);
}

/// Set in the copies of this benchmark that run under callgrind
/// ([`silo_tests::callgrind`]): make this many uploads through the sidecar,
/// or PutObjects, and nothing else.
const SIDECAR_UPLOADS_ONLY: &str = "SILO_BENCH_SIDECAR_UPLOADS_ONLY";
const PUT_OBJECTS_ONLY: &str = "SILO_BENCH_PUT_OBJECTS_ONLY";
const BARE_UPLOADS_ONLY: &str = "SILO_BENCH_BARE_UPLOADS_ONLY";
const HOP_UPLOADS_ONLY: &str = "SILO_BENCH_HOP_UPLOADS_ONLY";

/// How many uploads the copy of this benchmark running under callgrind
/// makes, if this run is that copy.
fn only(var: &str) -> Option<usize> {
    std::env::var(var).ok()?.parse().ok()
}

/// The sidecar of a Silo over `volumes` with no plugin, and the directory
/// of its state, which must outlive it.
async fn bare_sidecar(volumes: &str) -> (Sidecar, tempfile::TempDir) {
    let bare = TestSilo::with_volumes("", &[], volumes).await.expect("open Silo");
    (Sidecar::start(Arc::new(bare.silo)).await, bare.dir)
}

/// Rounds of (2), the ways alternating, so that none gets the server's
/// quieter moments.
const UPLOAD_ROUNDS: usize = 5;

/// The floor of any sidecar: an HTTP server that takes each PUT's body
/// whole and sends it on as one PutObject, with nothing else (no staging,
/// policy, cache or plugin). Its address.
async fn bare_hop(bucket: &str) -> std::net::SocketAddr {
    use axum::extract::{Path, State};
    let state = (s3::client(), bucket.to_owned());
    let app =
        axum::Router::new()
            .route(
                "/v1/files/public/{*path}",
                axum::routing::put(
                    |State((sdk, bucket)): State<(aws_sdk_s3::Client, String)>,
                     Path(path): Path<String>,
                     body: Bytes| async move {
                        sdk.put_object()
                            .bucket(&bucket)
                            .key(format!("hop/{path}"))
                            .content_type("text/plain")
                            .body(body.into())
                            .send()
                            .await
                            .expect("PutObject");
                        axum::http::StatusCode::CREATED
                    },
                ),
            )
            .with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// Uploads `<port>/<i>.txt` for each `i` of `range` to the sidecar at
/// `addr` (its port keeps the servers' files apart).
async fn sidecar_uploads(client: &Client, addr: std::net::SocketAddr, range: std::ops::Range<usize>) -> Duration {
    let (client, base) = (client.clone(), format!("http://{addr}/v1/files/public/{}", addr.port()));
    in_parallel(range, move |i| {
        let (client, url) = (client.clone(), format!("{base}/{i}.txt"));
        async move {
            let reply = client.put(&url, "text/plain", small(i)).await.expect("PUT");
            assert_eq!(reply.status, 201, "{}", reply.text());
        }
    })
    .await
}

async fn put_objects(sdk: &aws_sdk_s3::Client, bucket: &str, range: std::ops::Range<usize>) -> Duration {
    let (sdk, bucket) = (sdk.clone(), bucket.to_owned());
    in_parallel(range, move |i| {
        let (sdk, bucket) = (sdk.clone(), bucket.clone());
        async move {
            sdk.put_object()
                .bucket(&bucket)
                .key(format!("direct/{i}.txt"))
                .content_type("text/plain")
                .body(Bytes::from(small(i)).into())
                .send()
                .await
                .expect("PutObject");
        }
    })
    .await
}

/// (2) Uploads: 1,000 small files each way, in alternating rounds after a
/// warm-up, with the instructions this process spends on each; and through
/// a sidecar with no plugin, to part the pipeline from the rest.
async fn uploads(client: &Client, sidecar: &Sidecar, bare: &Sidecar, bucket: &str, rows: &mut Vec<[String; 5]>) {
    let sdk = s3::client();
    let hop = bare_hop(bucket).await;
    let n = env_or("SILO_BENCH_UPLOADS", 1000) as usize;
    let warm = 100;
    let ways = [sidecar.addr, bare.addr, hop];
    for addr in ways {
        sidecar_uploads(client, addr, 0..warm).await;
    }
    put_objects(&sdk, bucket, 0..warm).await;
    let mut through = [Duration::ZERO; 3];
    let mut direct = Duration::ZERO;
    let round = n.div_ceil(UPLOAD_ROUNDS);
    for r in 0..UPLOAD_ROUNDS {
        let range = warm + r * round..warm + (r + 1) * round;
        for (way, addr) in ways.into_iter().enumerate() {
            through[way] += sidecar_uploads(client, addr, range.clone()).await;
        }
        direct += put_objects(&sdk, bucket, range).await;
    }
    let count = (round * UPLOAD_ROUNDS) as f64;
    let per_sec = |d: Duration| count / d.as_secs_f64();
    let ratio = |d: Duration| format!("{:.2}x", per_sec(d) / per_sec(direct));
    let baseline = format!("{:.0} PutObject/s", per_sec(direct));
    rows.push([
        format!("uploads of 5.4 kB, {CONCURRENCY} clients"),
        format!("{:.0} uploads/s (pipeline: upload-guard)", per_sec(through[0])),
        baseline.clone(),
        ratio(through[0]),
        String::new(),
    ]);
    rows.push([
        format!("uploads of 5.4 kB, {CONCURRENCY} clients, no plugin"),
        format!("{:.0} uploads/s", per_sec(through[1])),
        baseline.clone(),
        ratio(through[1]),
        format!(
            "the pipeline costs {:.0} µs an upload",
            (through[0].as_secs_f64() - through[1].as_secs_f64()) * 1e6 / count
        ),
    ]);
    rows.push([
        format!("uploads of 5.4 kB, {CONCURRENCY} clients, through a bare HTTP hop"),
        format!("{:.0} uploads/s (body taken whole, one PutObject)", per_sec(through[2])),
        baseline,
        ratio(through[2]),
        "the floor of any sidecar on this machine".into(),
    ]);
    let count = |var| silo_tests::callgrind::per_iteration(var, 50, 250);
    let counts = [
        SIDECAR_UPLOADS_ONLY,
        BARE_UPLOADS_ONLY,
        HOP_UPLOADS_ONLY,
        PUT_OBJECTS_ONLY,
    ]
    .map(count);
    match counts {
        [Some(silo), Some(bare), Some(hop), Some(plain)] => rows.push([
            "instructions per upload in this process (callgrind; the S3 server not counted)".into(),
            format!(
                "{:.0}k (client, sidecar, pipeline, S3 client); {:.0}k with no plugin; {:.0}k through the bare hop",
                silo / 1000.0,
                bare / 1000.0,
                hop / 1000.0
            ),
            format!("{:.0}k (the SDK's PutObject)", plain / 1000.0),
            format!("{:.2}x", silo / plain),
            format!(
                "the pipeline costs {:.0}k, the rest of Silo {:.0}k",
                (silo - bare) / 1000.0,
                (bare - hop) / 1000.0
            ),
        ]),
        _ => rows.push([
            "instructions per upload".into(),
            "valgrind did not run".into(),
            String::new(),
            String::new(),
            String::new(),
        ]),
    }
}

/// (3) Migration of `files` small files vs `aws s3 sync`.
async fn migration(files: usize, rows: &mut Vec<[String; 5]>) {
    let source = tempfile::tempdir().unwrap();
    for i in 0..files {
        let path = source.path().join(format!("{}/{}/{i}.txt", i % 10, i % 97));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, &small(i)[..1000 + i % 3000]).unwrap();
    }
    let target = s3::bucket("bench-migrate").await;
    let opening = Instant::now();
    let migrating = TestSilo::with_volumes("", &[], &s3::volume_toml("media", &target, "media", ""))
        .await
        .expect("open Silo");
    let silo_open = opening.elapsed();
    let storage = migrating.silo.storage();
    let migrate = || async {
        let started = Instant::now();
        let plan = migrate::plan(storage, "media", source.path(), Direction::Import)
            .await
            .unwrap();
        let report = migrate::run(
            storage,
            "media",
            source.path(),
            Direction::Import,
            plan,
            6,
            Arc::new(|_, _| {}),
        )
        .await;
        (report, started.elapsed())
    };
    let (report, silo_migrate) = migrate().await;
    assert_eq!(report.copied as usize, files, "{report:?}");
    let (resumed, silo_resume) = migrate().await;
    assert_eq!(resumed.skipped as usize, files);

    let aws = std::env::var("SILO_TEST_AWS")
        .expect("SILO_TEST_AWS is not set: run `tests/run bench`, which installs awscli for this baseline");
    let sync = |from: &std::path::Path, dest: String| {
        let started = Instant::now();
        let out = std::process::Command::new(&aws)
            .args(["s3", "sync", "--only-show-errors", "--endpoint-url", &s3::endpoint()])
            .arg(from)
            .arg(dest)
            .output()
            .expect("run aws");
        assert!(
            out.status.success(),
            "aws s3 sync: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        started.elapsed()
    };
    // The interpreter's start-up and one listing: a sync of an empty
    // directory, reported apart (Silo's open is timed apart too).
    let empty = tempfile::tempdir().unwrap();
    let aws_startup = (0..3)
        .map(|_| sync(empty.path(), format!("s3://{target}/empty")))
        .min()
        .unwrap();
    let aws_sync = sync(source.path(), format!("s3://{target}/aws"));
    let aws_resync = sync(source.path(), format!("s3://{target}/aws"));
    let secs_of = |d: Duration| {
        format!(
            "{:.1} s ({:.0} files/s)",
            d.as_secs_f64(),
            files as f64 / d.as_secs_f64()
        )
    };
    let ratios = |aws: Duration, silo: Duration| {
        format!(
            "{:.2}x faster; {:.2}x with both start-ups counted",
            aws.saturating_sub(aws_startup).as_secs_f64() / silo.as_secs_f64(),
            aws.as_secs_f64() / (silo + silo_open).as_secs_f64()
        )
    };
    let startups = format!(
        "start-up apart: Silo's open {:.2} s, aws s3 sync of nothing {:.2} s",
        silo_open.as_secs_f64(),
        aws_startup.as_secs_f64()
    );
    rows.push([
        format!("migrate {files} files (first run)"),
        format!("{} (silo migrate, 6 jobs, after open)", secs_of(silo_migrate)),
        format!(
            "{} (aws s3 sync, less its start-up)",
            secs_of(aws_sync.saturating_sub(aws_startup))
        ),
        ratios(aws_sync, silo_migrate),
        startups.clone(),
    ]);
    rows.push([
        format!("migrate {files} files (nothing to do)"),
        secs_of(silo_resume),
        secs_of(aws_resync.saturating_sub(aws_startup)),
        ratios(aws_resync, silo_resume),
        startups,
    ]);
}
