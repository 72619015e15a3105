//! The metadata engines against S3 and each other, on SeaweedFS and the
//! PostgreSQL `tests/run` starts (`tests/run bench --bench nodes`):
//! (1) stat: a front-cache hit and an engine query, SQLite and PostgreSQL,
//!     vs HeadObject;
//! (2) listing a 10,000-file directory from PostgreSQL vs ListObjectsV2;
//! (3) cross-node visibility: from node A's acknowledged overwrite to node
//!     B's stat seeing it (B held the old row in its front cache);
//! (4) uploads per second through the sidecar (no plugins, 16 clients),
//!     SQLite engine vs PostgreSQL engine.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use silo_host::store::PutOptions;
use silo_tests::http::Sidecar;
use silo_tests::{TestSilo, pg, s3};

const FILES: usize = 10_000;

fn pct(mut v: Vec<Duration>, p: f64) -> Duration {
    v.sort();
    v[((v.len() - 1) as f64 * p) as usize]
}

fn us(d: Duration) -> String {
    format!("{:.2} µs", d.as_secs_f64() * 1e6)
}

struct Row(String, String, String, String, &'static str);

async fn node(bucket: &str, metadata: &str) -> TestSilo {
    let volumes = format!(
        "{metadata}\n\n{}",
        s3::volume_toml("v", bucket, "v", "visibility = \"public\"")
    );
    TestSilo::with_volumes("", &[], &volumes).await.expect("a node")
}

/// Median time of one stat of the same file, over many.
async fn stat_time(silo: &TestSilo, path: &str, n: usize) -> Duration {
    let storage = silo.silo.storage();
    let host = storage.host_session();
    let loc = storage.location("v", path).unwrap();
    host.stat(&loc).await.unwrap();
    let mut runs = Vec::new();
    for _ in 0..5 {
        let start = Instant::now();
        for _ in 0..n {
            std::hint::black_box(host.stat(&loc).await.unwrap());
        }
        runs.push(start.elapsed() / n as u32);
    }
    pct(runs, 0.5)
}

async fn uploads_per_second(silo: Arc<silo_host::Silo>, tag: &str) -> f64 {
    let sidecar = Sidecar::start(silo).await;
    silo_tests::http::uploads_per_second(&sidecar.url(&format!("/v1/files/v/up-{tag}")), 2000).await
}

#[tokio::main]
async fn main() {
    let bucket = s3::bucket("nodes").await;
    let url_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(url_file.path(), pg::database("bench").await).unwrap();
    let postgres = |extra: &str| {
        format!(
            "[metadata]\nbackend = \"postgres\"\nurl_file = \"{}\"\n{extra}",
            url_file.path().display()
        )
    };
    let a = node(&bucket, &postgres("")).await;
    let b = node(&bucket, &postgres("")).await;
    let pg_uncached = node(&bucket, &postgres("front_cache_entries = 0")).await;
    let sqlite = node(&bucket, "").await;
    let sqlite_uncached = node(&bucket, "[metadata]\nfront_cache_entries = 0").await;

    eprintln!("writing {FILES} files through node A");
    let storage = a.silo.storage().clone();
    let mut running = tokio::task::JoinSet::new();
    for i in 0..FILES {
        if running.len() >= 64 {
            running.join_next().await.unwrap().unwrap();
        }
        let storage = storage.clone();
        running.spawn(async move {
            let loc = storage.location("v", &format!("photos/{i:05}.jpg")).unwrap();
            let jpeg = Bytes::from(vec![0xff, 0xd8, 0xff, 0xe0, (i % 251) as u8]);
            let options = PutOptions {
                content_type: "image/jpeg".into(),
                ..Default::default()
            };
            storage.host_session().write(&loc, jpeg, options).await.unwrap();
        });
    }
    while running.join_next().await.is_some() {}
    for t in [&sqlite, &sqlite_uncached] {
        silo_host::maintenance::refresh(t.silo.storage(), "v", &|_| {})
            .await
            .unwrap();
    }

    let mut rows = Vec::new();
    // (1) stat.
    let file = "photos/01234.jpg";
    let sqlite_hit = stat_time(&sqlite, file, 20_000).await;
    let sqlite_query = stat_time(&sqlite_uncached, file, 2_000).await;
    let pg_hit = stat_time(&a, file, 20_000).await;
    let pg_query = stat_time(&pg_uncached, file, 1_000).await;
    let client = s3::client();
    let mut heads = Vec::new();
    for _ in 0..300 {
        let start = Instant::now();
        client
            .head_object()
            .bucket(&bucket)
            .key(format!("v/{file}"))
            .send()
            .await
            .unwrap();
        heads.push(start.elapsed());
    }
    let head = pct(heads, 0.5);
    let x = |slow: Duration, fast: Duration| format!("{:.1}x", slow.as_secs_f64() / fast.as_secs_f64());
    rows.push(Row(
        "(1) stat, front-cache hit, PostgreSQL engine".into(),
        us(pg_hit),
        format!("{} (SQLite engine, front-cache hit)", us(sqlite_hit)),
        format!(
            "{:.2}x the SQLite time",
            pg_hit.as_secs_f64() / sqlite_hit.as_secs_f64()
        ),
        "<= 1.5x",
    ));
    rows.push(Row(
        "(1) stat, SQLite query (front cache off)".into(),
        us(sqlite_query),
        format!("{} (HeadObject)", us(head)),
        x(head, sqlite_query),
        "-",
    ));
    rows.push(Row(
        "(1) stat, PostgreSQL query (front cache off)".into(),
        us(pg_query),
        format!("{} (HeadObject)", us(head)),
        x(head, pg_query),
        ">= 5x",
    ));

    // (2) a 10,000-file directory.
    let host = a.silo.storage().host_session();
    let mut listed = Vec::new();
    let mut paged = Vec::new();
    for _ in 0..5 {
        let start = Instant::now();
        assert_eq!(silo_tests::count_dir(&host, "v", "photos").await, FILES);
        listed.push(start.elapsed());
        let start = Instant::now();
        assert_eq!(s3::count_listed(&client, &bucket, "v/photos/").await, FILES);
        paged.push(start.elapsed());
    }
    let (listed, paged) = (pct(listed, 0.5), pct(paged, 0.5));
    rows.push(Row(
        format!("(2) list a {FILES}-file directory, PostgreSQL"),
        format!("{:.1} ms", listed.as_secs_f64() * 1e3),
        format!("{:.1} ms (ListObjectsV2)", paged.as_secs_f64() * 1e3),
        x(paged, listed),
        ">= 10x",
    ));

    // (3) cross-node visibility.
    let (sa, sb) = (a.silo.storage().clone(), b.silo.storage().clone());
    let loc = sa.location("v", "visible.txt").unwrap();
    sa.host_session()
        .write(&loc, Bytes::from_static(b"0"), PutOptions::default())
        .await
        .unwrap();
    let mut seen = Vec::new();
    for i in 1..=200u32 {
        // B holds the current version in its front cache.
        let before = sb.host_session().stat(&loc).await.unwrap().etag;
        let written = sa
            .host_session()
            .write(
                &loc,
                Bytes::from(format!("{i}").repeat(1 + i as usize % 7)),
                PutOptions::default(),
            )
            .await
            .unwrap();
        let start = Instant::now();
        loop {
            let etag = sb.host_session().stat(&loc).await.unwrap().etag;
            if etag == written.etag {
                break;
            }
            assert!(etag == before || start.elapsed() < Duration::from_secs(5), "{etag}");
            tokio::task::yield_now().await;
        }
        seen.push(start.elapsed());
    }
    rows.push(Row(
        "(3) A's acknowledged write seen by B's stat".into(),
        format!(
            "p50 {:.2} ms, p99 {:.2} ms",
            pct(seen.clone(), 0.5).as_secs_f64() * 1e3,
            pct(seen, 0.99).as_secs_f64() * 1e3
        ),
        "-".into(),
        "-".into(),
        "p99 <= 50 ms",
    ));

    // (4) uploads through the sidecar.
    let sqlite_rate = uploads_per_second(Arc::new(sqlite.silo), "sqlite").await;
    let pg_rate = uploads_per_second(Arc::new(b.silo), "pg").await;
    rows.push(Row(
        "(4) 5.4 kB uploads through the sidecar, 16 clients".into(),
        format!("{pg_rate:.0}/s (PostgreSQL)"),
        format!("{sqlite_rate:.0}/s (SQLite)"),
        format!("{:.2}x", pg_rate / sqlite_rate),
        ">= 0.8x",
    ));

    println!("\nMetadata engines (SeaweedFS and PostgreSQL on loopback)\n");
    println!("| measure | Silo | baseline | ratio | target |");
    println!("|---|---|---|---|---|");
    for Row(what, silo, baseline, ratio, target) in rows {
        println!("| {what} | {silo} | {baseline} | {ratio} | {target} |");
    }
}
