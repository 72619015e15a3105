//! The soak: two `silo serve` nodes sharing one PostgreSQL database and
//! one SeaweedFS bucket behind Debian's nginx, under mixed traffic from
//! both doors, with node b stopped (SIGTERM) and started again half-way:
//! `tests/run bench --bench soak` (20 minutes), or
//! `tests/run bench --bench soak -- --minutes 5`.
//!
//! Traffic: sidecar uploads of 5 KB to 200 KB (continuous) and of 1 to
//! 20 MiB (every 2 s), S3 PutObject of 5 to 500 KB, reads through both doors (each checked by
//! SHA-256), S3 listings, sidecar deletes, and an 11 MiB multipart upload
//! every few seconds. Clients retry a 503 (or a refused connection) up to
//! five times, 200 ms apart, as S3 clients do; what still fails is an
//! error. Prints, per operation, the count, the retries, the errors and
//! p50/p99 latency; each node's RSS over time, with the highest RSS of the
//! first and of the last window (5 minutes, or a quarter of a shorter
//! run); and `silo cache verify` of both nodes.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;
use hyper::StatusCode;
use silo_tests::cluster::{Cluster, Node, content, multipart, s3_client};
use silo_tests::http::{Client, TOKEN};
use silo_tests::rss::rss_kb_at;
use silo_tests::sha256_hex;

fn minutes() -> f64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == "--minutes")
        .and_then(|i| args.get(i + 1))
        .map(|m| m.parse().unwrap_or_else(|_| panic!("--minutes: '{m}' is not a number")))
        .unwrap_or(20.0)
}

/// Latencies and outcomes of one kind of operation.
#[derive(Default)]
struct Op {
    latencies: Vec<Duration>,
    retried: u64,
    errors: Vec<String>,
}

#[derive(Default)]
struct Tally {
    ops: Mutex<BTreeMap<&'static str, Op>>,
    /// Files never deleted: path and SHA-256.
    stable: Mutex<Vec<(String, String)>>,
    /// Files the deleter may take.
    deletable: Mutex<Vec<(String, String)>>,
    /// Objects written through S3: key and SHA-256.
    objects: Mutex<Vec<(String, String)>>,
}

impl Tally {
    fn record(&self, op: &'static str, took: Duration, retried: u64, error: Option<String>) {
        let mut ops = self.ops.lock().unwrap();
        let entry = ops.entry(op).or_default();
        entry.latencies.push(took);
        entry.retried += retried;
        if let Some(e) = error {
            entry.errors.push(e);
        }
    }

    fn pick(list: &Mutex<Vec<(String, String)>>, n: usize) -> Option<(String, String)> {
        let list = list.lock().unwrap();
        (!list.is_empty()).then(|| list[n % list.len()].clone())
    }
}

/// What one attempt of an operation gave: done, worth retrying (503, no
/// connection), or failed.
enum Attempt {
    Done,
    Retry(String),
    Failed(String),
}

/// Run `attempt` until it is done, retrying up to five times; recorded as
/// `op`.
async fn run<F, Fut>(tally: &Tally, op: &'static str, attempt: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Attempt>,
{
    let started = Instant::now();
    let mut retried = 0;
    let error = loop {
        match attempt().await {
            Attempt::Done => break None,
            Attempt::Failed(e) => break Some(e),
            Attempt::Retry(e) if retried == 5 => break Some(e),
            Attempt::Retry(_) => {
                retried += 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    tally.record(op, started.elapsed(), retried, error);
}

fn http_attempt(reply: anyhow::Result<silo_tests::http::Reply>, ok: StatusCode) -> Attempt {
    match reply {
        Ok(r) if r.status == ok => Attempt::Done,
        Ok(r) if r.status == StatusCode::SERVICE_UNAVAILABLE || r.status == StatusCode::BAD_GATEWAY => {
            Attempt::Retry(format!("{}: {}", r.status, r.text()))
        }
        Ok(r) => Attempt::Failed(format!("{}: {}", r.status, r.text())),
        Err(e) => Attempt::Retry(e.to_string()),
    }
}

fn s3_attempt<T, E: std::error::Error + 'static, R: std::fmt::Debug>(
    result: Result<T, aws_sdk_s3::error::SdkError<E, R>>,
) -> Attempt {
    match result {
        Ok(_) => Attempt::Done,
        Err(e) => {
            let text = format!("{}", aws_sdk_s3::error::DisplayErrorContext(&e));
            let status = match &e {
                aws_sdk_s3::error::SdkError::ServiceError(s) => format!("{:?}", s.raw()),
                _ => String::new(),
            };
            if status.contains("503") || matches!(e, aws_sdk_s3::error::SdkError::DispatchFailure(_)) {
                Attempt::Retry(text)
            } else {
                Attempt::Failed(text)
            }
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let total = Duration::from_secs_f64(minutes() * 60.0);
    let window = Duration::from_secs(300).min(total / 4);
    let Cluster {
        nginx,
        a,
        mut b,
        dir: _dir,
    } = Cluster::start("soak").await;
    let client = Client::default();

    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = tokio::task::JoinSet::new();
    let auth = format!("Bearer {TOKEN}");
    let files = nginx.url("/v1/files/public/soak");
    // Sidecar uploads: three of small files, one of large ones.
    for w in 0..4u64 {
        let (tally, stop, client, auth, files) =
            (tally.clone(), stop.clone(), client.clone(), auth.clone(), files.clone());
        clients.spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let seed = w * 10_000_000 + i;
                let (op, len) = if w == 3 {
                    ("sidecar put 1-20 MiB", (1 << 20) + (seed * 7_919 % (19 << 20)) as usize)
                } else {
                    ("sidecar put 5-200 KB", 5_000 + (seed * 104_729 % 195_000) as usize)
                };
                if w == 3 {
                    // Large uploads every 2 s: 20 minutes of them fit the disk.
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
                let body = Bytes::from(content(seed, len));
                let path = format!("w{w}/{i}.bin");
                let url = format!("{files}/{path}");
                let headers = [
                    ("authorization", auth.as_str()),
                    ("content-type", "application/octet-stream"),
                ];
                run(&tally, op, || async {
                    http_attempt(
                        client.send(hyper::Method::PUT, &url, &headers, body.clone()).await,
                        StatusCode::CREATED,
                    )
                })
                .await;
                let entry = (path, sha256_hex(&body));
                if i.is_multiple_of(2) {
                    tally.deletable.lock().unwrap().push(entry);
                } else {
                    tally.stable.lock().unwrap().push(entry);
                }
            }
        });
    }
    // S3 uploads, reads and listings.
    {
        let (tally, stop, s3) = (tally.clone(), stop.clone(), s3_client(nginx.s3));
        clients.spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let body = Bytes::from(content(900_000_000 + i, 5_000 + (i * 65_537 % 500_000) as usize));
                let key = format!("soak/s3/{i}.bin");
                run(&tally, "s3 PutObject 5-500 KB", || async {
                    s3_attempt(
                        s3.put_object()
                            .bucket("public")
                            .key(&key)
                            .content_type("application/octet-stream")
                            .body(ByteStream::from(body.clone()))
                            .send()
                            .await,
                    )
                })
                .await;
                tally.objects.lock().unwrap().push((key, sha256_hex(&body)));
            }
        });
    }
    for r in 0..2usize {
        let (tally, stop, client, files) = (tally.clone(), stop.clone(), client.clone(), files.clone());
        clients.spawn(async move {
            let mut n = r;
            while !stop.load(Ordering::Relaxed) {
                n += 7;
                let Some((path, sha)) = Tally::pick(&tally.stable, n) else {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                };
                let url = format!("{files}/{path}");
                run(&tally, "sidecar get", || async {
                    match client.get(&url, &[]).await {
                        Ok(reply) if reply.status == StatusCode::OK && sha256_hex(&reply.body) != sha => {
                            Attempt::Failed(format!("{path}: other bytes than were stored"))
                        }
                        other => http_attempt(other, StatusCode::OK),
                    }
                })
                .await;
            }
        });
    }
    {
        let (tally, stop, s3) = (tally.clone(), stop.clone(), s3_client(nginx.s3));
        clients.spawn(async move {
            let mut n = 0usize;
            while !stop.load(Ordering::Relaxed) {
                n += 3;
                let Some((key, sha)) = Tally::pick(&tally.objects, n) else {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                };
                run(&tally, "s3 GetObject", || async {
                    match s3.get_object().bucket("public").key(&key).send().await {
                        Ok(out) => match out.body.collect().await.map(|b| sha256_hex(&b.into_bytes())) {
                            Ok(got) if got == sha => Attempt::Done,
                            Ok(_) => Attempt::Failed(format!("{key}: other bytes than were stored")),
                            Err(e) => Attempt::Retry(format!("{key}: {e}")),
                        },
                        Err(e) => s3_attempt::<(), _, _>(Err(e)),
                    }
                })
                .await;
                if n.is_multiple_of(10) {
                    run(&tally, "s3 ListObjectsV2 (1,000 keys)", || async {
                        s3_attempt(
                            s3.list_objects_v2()
                                .bucket("public")
                                .prefix("soak/")
                                .max_keys(1000)
                                .send()
                                .await,
                        )
                    })
                    .await;
                }
            }
        });
    }
    {
        let (tally, stop, client, auth, files) =
            (tally.clone(), stop.clone(), client.clone(), auth.clone(), files.clone());
        clients.spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let taken = {
                    let mut list = tally.deletable.lock().unwrap();
                    (list.len() > 50).then(|| list.swap_remove(0))
                };
                let Some((path, _)) = taken else { continue };
                let url = format!("{files}/{path}");
                let headers = [("authorization", auth.as_str())];
                run(&tally, "sidecar delete", || async {
                    http_attempt(
                        client.send(hyper::Method::DELETE, &url, &headers, Bytes::new()).await,
                        StatusCode::NO_CONTENT,
                    )
                })
                .await;
            }
        });
    }
    {
        let (tally, stop, s3) = (tally.clone(), stop.clone(), s3_client(nginx.s3));
        clients.spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let key = format!("soak/multipart/{n}.bin");
                let t = Instant::now();
                match multipart(&s3, &key, 77_000 + n).await {
                    Ok(sha) => {
                        tally.record("s3 multipart 11 MiB", t.elapsed(), 0, None);
                        tally.objects.lock().unwrap().push((key, sha));
                    }
                    // A multipart upload is not retried part by part: one
                    // cut by the restart is an error, reported as such.
                    Err(e) => tally.record("s3 multipart 11 MiB", t.elapsed(), 0, Some(e)),
                }
                tokio::time::sleep(Duration::from_secs(3)).await;
            }
        });
    }

    // RSS of both nodes every 5 s; node b restarted half-way.
    let began = Instant::now();
    let mut samples: Vec<(f64, u64, u64)> = Vec::new();
    let mut restarted = None;
    while began.elapsed() < total {
        tokio::time::sleep(Duration::from_secs(5)).await;
        if restarted.is_none() && began.elapsed() >= total / 2 {
            let (code, drained) = b.terminate();
            b.start();
            b.ready(&client).await;
            restarted = Some((began.elapsed().as_secs_f64(), code, drained));
            continue;
        }
        let rss = |node: &Node| rss_kb_at(&node.pid().to_string()).0;
        samples.push((began.elapsed().as_secs_f64(), rss(&a), rss(&b)));
    }
    stop.store(true, Ordering::Relaxed);
    while let Some(done) = clients.join_next().await {
        done.unwrap();
    }

    // Everything acknowledged and not deleted reads back whole.
    let mut lost = Vec::new();
    let kept: Vec<_> = [&tally.stable, &tally.deletable]
        .iter()
        .flat_map(|l| l.lock().unwrap().clone())
        .collect();
    for (path, sha) in &kept {
        let reply = client.get(&format!("{files}/{path}"), &[]).await.unwrap();
        if reply.status != StatusCode::OK || sha256_hex(&reply.body) != *sha {
            lost.push(format!("{path}: {}", reply.status));
        }
    }
    let s3 = s3_client(nginx.s3);
    let objects = tally.objects.lock().unwrap().clone();
    for (key, sha) in &objects {
        let same = match s3.get_object().bucket("public").key(key).send().await {
            Ok(out) => sha256_hex(&out.body.collect().await.unwrap().into_bytes()) == *sha,
            Err(_) => false,
        };
        if !same {
            lost.push(key.clone());
        }
    }

    println!(
        "\nSoak: {:.0} min, two nodes (PostgreSQL, one SeaweedFS bucket) behind nginx\n",
        total.as_secs_f64() / 60.0
    );
    println!("| operation | done | retried (503) | errors | p50 | p99 |");
    println!("|---|---|---|---|---|---|");
    let mut errors = 0;
    for (op, stats) in tally.ops.lock().unwrap().iter_mut() {
        stats.latencies.sort();
        errors += stats.errors.len();
        println!(
            "| {op} | {} | {} | {} | {:.1} ms | {:.1} ms |",
            stats.latencies.len(),
            stats.retried,
            stats.errors.len(),
            percentile(&stats.latencies, 0.5).as_secs_f64() * 1000.0,
            percentile(&stats.latencies, 0.99).as_secs_f64() * 1000.0,
        );
        for e in stats.errors.iter().take(3) {
            println!("  - {op}: {e}");
        }
    }
    if let Some((at, code, drained)) = restarted {
        println!(
            "\nNode b: SIGTERM at {at:.0} s, exit code {code:?}, drained in {:.2} s, started again",
            drained.as_secs_f64()
        );
    }
    println!(
        "Read back at the end: {} files and {} objects, lost {}{}",
        kept.len(),
        objects.len(),
        lost.len(),
        if lost.is_empty() {
            String::new()
        } else {
            format!(": {:?}", &lost[..lost.len().min(5)])
        }
    );
    let max_in = |from: f64, to: f64, pick: fn(&(f64, u64, u64)) -> u64| {
        samples
            .iter()
            .filter(|s| s.0 >= from && s.0 < to)
            .map(pick)
            .max()
            .unwrap_or(0) as f64
            / 1024.0
    };
    // Windows end at the last sample, taken before the traffic stopped.
    let (w, end) = (window.as_secs_f64(), samples.last().map_or(0.0, |s| s.0));
    println!("\n| node | RSS max, first {w:.0} s | RSS max, last {w:.0} s | last / first |");
    println!("|---|---|---|---|");
    for (name, pick) in [
        ("a", (|s: &(f64, u64, u64)| s.1) as fn(&_) -> u64),
        ("b (restarted)", |s| s.2),
    ] {
        let (first, last) = (max_in(0.0, w, pick), max_in(end - w, end + 1.0, pick));
        println!("| {name} | {first:.0} MiB | {last:.0} MiB | {:.2} |", last / first);
    }
    println!("\nRSS over time (MiB), a minute apart:");
    let mut next = 0.0;
    for s in &samples {
        if s.0 >= next {
            println!(
                "  {:>5.0} s: a {:>5.0}, b {:>5.0}",
                s.0,
                s.1 as f64 / 1024.0,
                s.2 as f64 / 1024.0
            );
            next = s.0 + 60.0;
        }
    }
    for node in [&a, &b] {
        let (code, out) = node.verify();
        println!(
            "\nsilo cache verify, node {} (exit {code:?}):\n{}",
            node.name,
            out.trim()
        );
    }
    println!("\nErrors after retries: {errors}");
}
