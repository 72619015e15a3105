//! Bursts of concurrent uploads against one `silo serve` process, and the
//! same bursts sent straight to the SeaweedFS server `tests/run` starts,
//! in the same run: `tests/run bench --bench load`. Prints a table.
//!
//! Each row is N uploads of one size sent at once, through the sidecar or
//! the S3 endpoint, onto an S3 volume (that SeaweedFS) or a local one. A
//! row gets a fresh node (its own process, data_dir and bucket) so that
//! its memory figures are its own: RSS at the start (after a warm-up
//! upload), peak during the burst (VmHWM, reset before it), and after the
//! burst (the lowest seen within 60 s, and how soon it came within
//! 64 MiB of the start). Throughput is compared with the direct row of the
//! same N and size. A last row times a new client's request while 2,000
//! idle keep-alive connections are open.
//!
//! `SILO_LOAD_N=16,64,256` and `SILO_LOAD_MIB=8,64` choose the rows
//! (defaults shown); `SILO_LOAD_AFTER_SECS` the after-burst wait (60).
//! Rows are printed as they are measured. On a 24 GiB machine, SeaweedFS
//! itself is killed for want of memory after the direct row of 256 uploads
//! of 64 MiB (it held 22 GB), so run the 64 MiB rows with
//! `SILO_LOAD_N=16,64` there.

use std::time::{Duration, Instant};

use aws_sdk_s3::Client as S3Client;
use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;
use silo_tests::cluster::{KEY, Node, SECRET, s3_client};
use silo_tests::http::Client;
use silo_tests::rss::{reset_peak_at, rss_kb_at};
use silo_tests::s3;
use silo_tests::s3api::principal;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BUDGET_MIB: u64 = 256;

fn list(var: &str, default: &[u64]) -> Vec<u64> {
    match std::env::var(var) {
        Ok(v) => v
            .split(',')
            .map(|n| {
                n.trim()
                    .parse()
                    .unwrap_or_else(|_| panic!("{var}: '{n}' is not a number"))
            })
            .collect(),
        Err(_) => default.to_vec(),
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Door {
    Direct,
    Sidecar,
    S3,
}

#[derive(Clone, Copy, PartialEq)]
enum Backend {
    S3,
    Local,
}

/// One `silo serve` process with a volume `v` on `backend`.
struct Bench {
    _dir: tempfile::TempDir,
    node: Node,
}

impl Bench {
    async fn start(backend: Backend, bucket: &str) -> Bench {
        let dir = tempfile::tempdir().unwrap();
        let volume = match backend {
            Backend::S3 => s3::volume_toml("v", bucket, "v", "max_upload_mib = 1024"),
            Backend::Local => format!(
                "[volumes.v]\nbackend = \"local\"\npath = \"{}\"\nmax_upload_mib = 1024\n",
                dir.path().join("volume").display()
            ),
        };
        std::fs::write(
            dir.path().join("credentials.toml"),
            principal(
                "load",
                KEY,
                SECRET,
                r#"[{ volume = "v", access = ["read", "write", "delete"] }]"#,
            ),
        )
        .unwrap();
        let shared = format!(
            "[limits]\nwrite_buffer_mib = {BUDGET_MIB}\n\n{volume}\n\
             [[plugins]]\nname = \"upload-guard\"\ncomponent = \"builtin:upload-guard\"\n\
             settings = {{ max_bytes = 1073741824 }}\ngrants = [{{ volume = \"v\", access = [\"read\"] }}]\n"
        );
        let mut node = Node::new("load", dir.path(), &shared);
        node.start();
        node.ready(&Client::default()).await;
        Bench { _dir: dir, node }
    }

    fn rss_kb(&self) -> (u64, u64) {
        rss_kb_at(&self.node.pid().to_string())
    }

    fn reset_peak(&self) {
        reset_peak_at(&self.node.pid().to_string());
    }

    fn s3_client(&self) -> S3Client {
        s3_client(self.node.s3_port())
    }
}

/// What one burst did.
struct Burst {
    stored: usize,
    wall: Duration,
    latencies: Vec<Duration>,
    errors: Vec<String>,
}

/// Send `n` uploads of `body` at once through `send`; every answer timed.
async fn burst<F, Fut>(n: usize, send: F) -> Burst
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Result<(), String>> + Send + 'static,
{
    let started = Instant::now();
    let mut running = tokio::task::JoinSet::new();
    for i in 0..n {
        let job = send(i);
        running.spawn(async move {
            let t = Instant::now();
            (job.await, t.elapsed())
        });
    }
    let mut out = Burst {
        stored: 0,
        wall: Duration::ZERO,
        latencies: Vec::new(),
        errors: Vec::new(),
    };
    while let Some(done) = running.join_next().await {
        let (result, took) = done.unwrap();
        out.latencies.push(took);
        match result {
            Ok(()) => out.stored += 1,
            Err(e) => out.errors.push(e),
        }
    }
    out.wall = started.elapsed();
    out.latencies.sort();
    out
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

async fn put_s3(client: &S3Client, bucket: &str, key: String, body: Bytes) -> Result<(), String> {
    client
        .put_object()
        .bucket(bucket)
        .key(key)
        .content_type("application/octet-stream")
        .body(ByteStream::from(body))
        .send()
        .await
        .map(drop)
        .map_err(|e| format!("{}", aws_sdk_s3::error::DisplayErrorContext(&e)))
}

/// Remove every object of `bucket`, and the bucket: SeaweedFS frees the
/// space of a removed bucket at once.
async fn drop_bucket(client: &S3Client, bucket: &str) {
    for (key, _) in s3::keys_on(client, bucket).await {
        let _ = client.delete_object().bucket(bucket).key(key).send().await;
    }
    let _ = client.delete_bucket().bucket(bucket).send().await;
}

struct Row {
    label: String,
    n: usize,
    mib: u64,
    door: Door,
    burst: Burst,
    /// MiB: start, peak growth, lowest growth after, seconds to within 64 MiB.
    memory: Option<(f64, f64, f64, Option<f64>)>,
}

async fn run_row(n: usize, mib: u64, door: Door, backend: Backend, body: Bytes) -> Row {
    let direct = s3::client();
    let bucket = s3::bucket("load").await;
    let label = match (door, backend) {
        (Door::Direct, _) => "SeaweedFS direct".to_owned(),
        (Door::Sidecar, Backend::S3) => "sidecar, S3 volume".to_owned(),
        (Door::Sidecar, Backend::Local) => "sidecar, local volume".to_owned(),
        (Door::S3, Backend::S3) => "S3 endpoint, S3 volume".to_owned(),
        (Door::S3, Backend::Local) => "S3 endpoint, local volume".to_owned(),
    };
    if door == Door::Direct {
        let burst = burst(n, |i| {
            let (client, bucket, body) = (direct.clone(), bucket.clone(), body.clone());
            async move { put_s3(&client, &bucket, format!("d/{i}"), body).await }
        })
        .await;
        drop_bucket(&direct, &bucket).await;
        return Row {
            label,
            n,
            mib,
            door,
            burst,
            memory: None,
        };
    }
    let node = Bench::start(backend, &bucket).await;
    let http = Client::default();
    let client = node.s3_client();
    // Warm-up: one small upload through each door.
    let url = |path: &str| format!("http://127.0.0.1:{}/v1/files/v/{path}", node.node.api);
    http.put(&url("warm/a"), "application/octet-stream", Bytes::from_static(b"warm"))
        .await
        .unwrap();
    put_s3(&client, "v", "warm/b".into(), Bytes::from_static(b"warm"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (start_kb, _) = node.rss_kb();
    node.reset_peak();
    let result = burst(n, |i| {
        let body = body.clone();
        let (http, client, url) = (http.clone(), client.clone(), url(&format!("b/{i}")));
        async move {
            match door {
                Door::Sidecar => match http.put(&url, "application/octet-stream", body).await {
                    Ok(r) if r.status == 201 => Ok(()),
                    Ok(r) => Err(format!("{}: {}", r.status, r.text())),
                    Err(e) => Err(e.to_string()),
                },
                _ => put_s3(&client, "v", format!("b/{i}"), body).await,
            }
        }
    })
    .await;
    let (_, peak_kb) = node.rss_kb();
    let after_secs: u64 = std::env::var("SILO_LOAD_AFTER_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let settled = Instant::now();
    let mut lowest = u64::MAX;
    let mut within = None;
    while settled.elapsed() < Duration::from_secs(after_secs) {
        let (now, _) = node.rss_kb();
        lowest = lowest.min(now);
        if within.is_none() && now <= start_kb + 64 * 1024 {
            within = Some(settled.elapsed().as_secs_f64());
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    drop(node);
    drop_bucket(&direct, &bucket).await;
    let size_mib = mib;
    let mib = |kb: u64| kb as f64 / 1024.0;
    Row {
        label,
        n,
        mib: size_mib,
        door,
        memory: Some((
            mib(start_kb),
            mib(peak_kb.saturating_sub(start_kb)),
            mib(lowest.saturating_sub(start_kb)),
            within,
        )),
        burst: result,
    }
}

/// How long a new client waits for an answer while `idle` keep-alive
/// connections sit open on the sidecar.
async fn idle_connections(idle: usize) -> (usize, Duration) {
    let bucket = s3::bucket("load-idle").await;
    let node = Bench::start(Backend::Local, &bucket).await;
    let api = node.node.api;
    let mut held = Vec::with_capacity(idle);
    for _ in 0..idle {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", api)).await.unwrap();
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nhost: silo\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 512];
        let n = stream.read(&mut buf).await.unwrap();
        assert!(
            buf[..n].starts_with(b"HTTP/1.1 200"),
            "{}",
            String::from_utf8_lossy(&buf[..n])
        );
        held.push(stream);
    }
    let started = Instant::now();
    let reply = Client::default()
        .get(&format!("http://127.0.0.1:{api}/healthz"), &[])
        .await
        .unwrap();
    let took = started.elapsed();
    assert_eq!(reply.status, 200);
    drop(held);
    drop(node);
    (idle, took)
}

/// MiB/s of a burst.
fn rate(row: &Row) -> f64 {
    (row.burst.stored as u64 * row.mib) as f64 / row.burst.wall.as_secs_f64()
}

/// One row of the table, printed as soon as it is measured (a server that
/// gives out later leaves the rows before it).
fn print_row(row: &Row, direct: Option<f64>) {
    let ratio = match (row.door, direct) {
        (Door::Direct, _) | (_, None) => String::new(),
        (_, Some(d)) => format!("{:.2}x", rate(row) / d),
    };
    let memory = match row.memory {
        None => "| | | |".to_owned(),
        Some((start, peak, lowest, within)) => format!(
            "{start:.0} MiB | +{peak:.0} MiB | +{lowest:.0} MiB | {} |",
            within.map_or("not within the wait".to_owned(), |s| format!("{s:.1} s"))
        ),
    };
    println!(
        "| {} MiB | {} | {} | {}/{} | {:.1} s | {:.0} | {ratio} | {:.2} s | {:.2} s | {memory}",
        row.mib,
        row.n,
        row.label,
        row.burst.stored,
        row.n,
        row.burst.wall.as_secs_f64(),
        rate(row),
        percentile(&row.burst.latencies, 0.5).as_secs_f64(),
        percentile(&row.burst.latencies, 0.99).as_secs_f64(),
    );
    for e in row.burst.errors.iter().take(3) {
        println!("  - error: {e}");
    }
}

#[tokio::main]
async fn main() {
    let ns = list("SILO_LOAD_N", &[16, 64, 256]);
    let sizes = list("SILO_LOAD_MIB", &[8, 64]);
    println!(
        "\nLoad: N uploads at once; `silo serve` (write budget {BUDGET_MIB} MiB) against SeaweedFS direct, same run\n"
    );
    println!(
        "| size | N | path | stored | time | MiB/s | vs direct | p50 | p99 | RSS start | peak growth | after (lowest) | within 64 MiB after |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for &mib in &sizes {
        let body = Bytes::from(vec![0x5au8; (mib << 20) as usize]);
        for &n in &ns {
            let mut direct = None;
            for (door, backend) in [
                (Door::Direct, Backend::S3),
                (Door::Sidecar, Backend::S3),
                (Door::S3, Backend::S3),
                (Door::Sidecar, Backend::Local),
                (Door::S3, Backend::Local),
            ] {
                let row = run_row(n as usize, mib, door, backend, body.clone()).await;
                if door == Door::Direct {
                    direct = Some(rate(&row));
                }
                print_row(&row, direct);
            }
        }
    }
    let (idle, took) = idle_connections(2000).await;
    println!(
        "\nA new client's GET /healthz with {idle} idle keep-alive connections open: {:.1} ms (target 100 ms)",
        took.as_secs_f64() * 1000.0
    );
}
