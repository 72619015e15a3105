//! S3 benchmark against the SeaweedFS server `tests/run` starts: prints a
//! table of Silo against the plain aws-sdk-s3 baseline, measured in the same
//! run. Run with `tests/run bench` (release build; populating the 100,000
//! objects takes a minute or two). `SILO_BENCH_SCALE=0.1` runs a tenth;
//! `SILO_BENCH_PARTS=12` runs only parts (1) and (2).
//!
//! (1) stat from the metadata cache vs HeadObject;
//! (2) listing a 10,000-file directory from the cache vs ListObjectsV2 pages;
//! (3) refreshing a 100,000-object bucket vs a bare ListObjectsV2 scan;
//! (4) streaming 1 GiB through a plugin, written to and read from S3, vs
//!     aws-sdk-s3 PutObject and GetObject streamed from and to a file, and
//!     the host's peak RSS growth while the plugin streams.

use std::time::{Duration, Instant};

use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream as SdkBody;
use silo_host::maintenance::refresh;
use silo_tests::rss::{reset_peak, rss_kb};
use silo_tests::{PROBE, TestSilo, s3};
use tokio::io::AsyncWriteExt;
use tokio::task::JoinSet;

const MIB: f64 = 1024.0 * 1024.0;

fn scale() -> f64 {
    std::env::var("SILO_BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0)
}

/// Store `keys` (tiny bodies) with `parallel` requests in flight.
async fn populate(client: &Client, bucket: &str, keys: Vec<String>, parallel: usize) {
    let mut running = JoinSet::new();
    for key in keys {
        if running.len() >= parallel {
            running.join_next().await.unwrap().unwrap();
        }
        let (client, bucket) = (client.clone(), bucket.to_owned());
        running.spawn(async move {
            client
                .put_object()
                .bucket(&bucket)
                .key(&key)
                .content_type("image/jpeg")
                .body(SdkBody::from(key.into_bytes()))
                .send()
                .await
                .expect("put");
        });
    }
    while let Some(r) = running.join_next().await {
        r.unwrap();
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

struct Row {
    what: String,
    silo: String,
    baseline: String,
    ratio: String,
    target: &'static str,
}

#[tokio::main]
async fn main() {
    let scale = scale();
    let client = s3::client();
    let bucket = s3::bucket("bench").await;
    let big = ((1024.0 * scale).max(1.0) as u64) << 20;
    let pipeline = |mode: &str, extra: &str| {
        format!(
            r#"
[[plugins]]
name = "probe"
component = "probe.wasm"
sha256 = "{{sha256:probe.wasm}}"
settings = {{ mode = "{mode}", volume = "big", {extra} }}
limits = {{ time_ms = 600000, max_object_bytes = {limit}, bytes_written = {limit} }}
grants = [{{ volume = "big", access = ["read", "write"] }}]
"#,
            limit = 2u64 << 30
        )
    };
    let volumes = format!(
        "[volumes.public]\nbackend = \"memory\"\n{}{}{}",
        s3::volume_toml("dir", &bucket, "dir", ""),
        s3::volume_toml("site", &bucket, "site", ""),
        s3::volume_toml("big", &bucket, "big", ""),
    );
    let mut rows = Vec::new();
    let parts = std::env::var("SILO_BENCH_PARTS").unwrap_or_else(|_| "1234".into());

    // (1) + (2): a 10,000-file directory.
    let files = (10_000.0 * scale) as usize;
    let keys: Vec<String> = (0..files).map(|i| format!("dir/photos/{i:05}.jpg")).collect();
    eprintln!("populating {files} objects for the listing");
    populate(&client, &bucket, keys, 64).await;
    let t = TestSilo::with_volumes("", &[], &volumes).await.unwrap();
    let storage = t.silo.storage();
    refresh(storage, "dir", &|_| {}).await.unwrap();
    let host = storage.host_session();

    let n = 2000;
    let locations: Vec<_> = (0..n)
        .map(|i| {
            storage
                .location("dir", &format!("photos/{:05}.jpg", i * 7 % files))
                .unwrap()
        })
        .collect();
    let start = Instant::now();
    for loc in &locations {
        std::hint::black_box(host.stat(loc).await.unwrap());
    }
    let cached = start.elapsed() / n as u32;
    let start = Instant::now();
    for i in 0..n / 4 {
        let key = format!("dir/photos/{:05}.jpg", i * 7 % files);
        std::hint::black_box(client.head_object().bucket(&bucket).key(key).send().await.unwrap());
    }
    let head = start.elapsed() / (n / 4) as u32;
    rows.push(Row {
        what: "(1) stat one file".into(),
        silo: format!("{:.1} µs (cache)", cached.as_secs_f64() * 1e6),
        baseline: format!("{:.0} µs (HeadObject)", head.as_secs_f64() * 1e6),
        ratio: format!("{:.0}x faster", head.as_secs_f64() / cached.as_secs_f64()),
        target: ">= 100x",
    });

    let mut silo_runs = Vec::new();
    let mut s3_runs = Vec::new();
    for _ in 0..5 {
        let start = Instant::now();
        assert_eq!(silo_tests::count_dir(&host, "dir", "photos").await, files);
        silo_runs.push(start.elapsed());

        let start = Instant::now();
        assert_eq!(s3::count_listed(&client, &bucket, "dir/photos/").await, files);
        s3_runs.push(start.elapsed());
    }
    let (listed, paged) = (median(silo_runs), median(s3_runs));
    rows.push(Row {
        what: format!("(2) list a {files}-file directory"),
        silo: format!("{:.1} ms (cache)", listed.as_secs_f64() * 1e3),
        baseline: format!("{:.1} ms (ListObjectsV2)", paged.as_secs_f64() * 1e3),
        ratio: format!("{:.0}x faster", paged.as_secs_f64() / listed.as_secs_f64()),
        target: ">= 20x",
    });

    if parts.contains('3') {
        // (3) a 100,000-object bucket laid out as CMSs do: year/month folders.
        let objects = (100_000.0 * scale) as usize;
        let keys: Vec<String> = (0..objects)
            .map(|i| format!("site/{}/{:02}/upload-{i:06}.jpg", 2015 + i % 10, 1 + (i / 10) % 12))
            .collect();
        eprintln!("populating {objects} objects for the refresh");
        let start = Instant::now();
        populate(&client, &bucket, keys, 64).await;
        eprintln!("  took {:.0} s", start.elapsed().as_secs_f64());
        let start = Instant::now();
        let mut scanned = 0;
        let mut token: Option<String> = None;
        loop {
            let page = client
                .list_objects_v2()
                .bucket(&bucket)
                .prefix("site/")
                .set_continuation_token(token)
                .send()
                .await
                .unwrap();
            scanned += page.contents().len();
            token = page.next_continuation_token().map(str::to_owned);
            if token.is_none() {
                break;
            }
        }
        let bare = scanned as f64 / start.elapsed().as_secs_f64();
        assert_eq!(scanned, objects);
        let start = Instant::now();
        let report = refresh(storage, "site", &|_| {}).await.unwrap();
        let refreshed = report.files as f64 / start.elapsed().as_secs_f64();
        assert_eq!(report.files as usize, objects);
        rows.push(Row {
            what: format!("(3) refresh {objects} objects"),
            silo: format!("{refreshed:.0} objects/s"),
            baseline: format!("{bare:.0} objects/s (ListObjectsV2 scan)"),
            ratio: format!("{:.2}x", refreshed / bare),
            target: ">= 0.8x",
        });
    }
    drop(t);

    if parts.contains('4') {
        // (4) 1 GiB through a plugin.
        let scratch = tempfile::tempdir().unwrap();
        let file = scratch.path().join("big.bin");
        {
            let mut out = tokio::fs::File::create(&file).await.unwrap();
            let block: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
            for _ in 0..big >> 20 {
                out.write_all(&block).await.unwrap();
            }
            out.flush().await.unwrap();
        }
        let start = Instant::now();
        client
            .put_object()
            .bucket(&bucket)
            .key("big/direct.bin")
            .body(SdkBody::from_path(&file).await.unwrap())
            .send()
            .await
            .unwrap();
        let direct_put = big as f64 / MIB / start.elapsed().as_secs_f64();
        let start = Instant::now();
        let mut body = client
            .get_object()
            .bucket(&bucket)
            .key("big/direct.bin")
            .send()
            .await
            .unwrap()
            .body
            .into_async_read();
        let copied = tokio::io::copy(&mut body, &mut tokio::io::sink()).await.unwrap();
        assert_eq!(copied, big);
        let direct_get = big as f64 / MIB / start.elapsed().as_secs_f64();

        let writer = TestSilo::with_volumes(
            &pipeline("generate", &format!("path = \"through-silo.bin\", size = \"{big}\"")),
            &[("probe.wasm", PROBE)],
            &volumes,
        )
        .await
        .unwrap();
        let reader = TestSilo::with_volumes(
            &pipeline("read-all", "path = \"through-silo.bin\""),
            &[("probe.wasm", PROBE)],
            &volumes,
        )
        .await
        .unwrap();
        // Warm: compiled plugins, connections.
        let _ = reader.upload("public/warm.txt", b"x", None).await;

        let (rss_before, _) = rss_kb();
        reset_peak();
        let start = Instant::now();
        let report = writer.upload("public/trigger.txt", b"go", None).await.unwrap();
        let silo_write = big as f64 / MIB / start.elapsed().as_secs_f64();
        let (_, write_peak) = rss_kb();
        assert_eq!(report.derivatives[0].size, big, "{report:#?}");
        refresh(reader.silo.storage(), "big", &|_| {}).await.unwrap();

        let (rss_before_read, _) = rss_kb();
        reset_peak();
        let start = Instant::now();
        let report = reader.upload("public/trigger.txt", b"go", None).await.unwrap();
        let silo_read = big as f64 / MIB / start.elapsed().as_secs_f64();
        let (_, read_peak) = rss_kb();
        assert_eq!(
            report.reason.as_deref(),
            Some(format!("read={big}").as_str()),
            "{report:#?}"
        );

        let gib = big as f64 / MIB / 1024.0;
        rows.push(Row {
            what: format!("(4) write {gib:.2} GiB from a plugin"),
            silo: format!("{silo_write:.0} MiB/s"),
            baseline: format!("{direct_put:.0} MiB/s (PutObject from a file)"),
            ratio: format!("{:.2}x", silo_write / direct_put),
            target: ">= 0.7x",
        });
        rows.push(Row {
            what: format!("(4) read {gib:.2} GiB into a plugin"),
            silo: format!("{silo_read:.0} MiB/s"),
            baseline: format!("{direct_get:.0} MiB/s (GetObject to a sink)"),
            ratio: format!("{:.2}x", silo_read / direct_get),
            target: ">= 0.7x",
        });
        rows.push(Row {
            what: "(4) host peak RSS growth while streaming".into(),
            silo: format!(
                "write +{:.1} MiB, read +{:.1} MiB",
                write_peak.saturating_sub(rss_before) as f64 / 1024.0,
                read_peak.saturating_sub(rss_before_read) as f64 / 1024.0
            ),
            baseline: "-".into(),
            ratio: "-".into(),
            target: "<= 64 MiB",
        });
    }

    println!("\nS3 benchmark (SeaweedFS on loopback, scale {scale})\n");
    println!("| measure | Silo | baseline | ratio | target |");
    println!("|---|---|---|---|---|");
    for r in rows {
        println!(
            "| {} | {} | {} | {} | {} |",
            r.what, r.silo, r.baseline, r.ratio, r.target
        );
    }
}
