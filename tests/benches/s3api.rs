//! Silo's S3 endpoint against the SeaweedFS server `tests/run` starts, the
//! same client (aws-sdk-s3) for both, measured in the same run, on an S3
//! volume over that SeaweedFS: `tests/run bench --bench s3api`. Prints a
//! table. `SILO_BENCH_SCALE=0.1` runs a tenth of each count and size;
//! `SILO_BENCH_PARTS=125` runs only parts (1), (2) and (5) (any subset).
//!
//! Parts (1) and (2) also time the client against an HTTP server that
//! answers at once with a canned answer of the same shape: the client's
//! own cost, the floor under both columns, so the best ratio this client
//! allows on this machine is printed beside the target. Part (1) also
//! sends the HEAD presigned once by a bare HTTP client: the servers' own
//! times.
//!
//! (1) HeadObject (Silo answers from its metadata cache);
//! (2) ListObjectsV2 over a 10,000-key prefix, every page;
//! (3) GetObject of 5 KB objects, 16 at once (Silo's disk read cache);
//! (4) PutObject of 5 KB objects, 16 at once, through the pipeline with
//!     upload-guard; (4b) the same files as browser form POSTs, against
//!     Silo's PutObject by presigned URLs, both sent by a bare HTTP client;
//! (5) a 1 GiB multipart upload (64 MiB parts, 4 at once), with the host's
//!     peak RSS growth; (5b) the same over two nodes sharing a PostgreSQL
//!     engine, the parts alternating between them; (5c) all on one of them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_s3::Client;
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use silo_host::maintenance::refresh;
use silo_tests::rss::{reset_peak, rss_kb};
use silo_tests::s3api::{Endpoint, form_body, post_fields, principal};
use silo_tests::{TestSilo, s3};
use tokio::task::JoinSet;

fn scale() -> f64 {
    std::env::var("SILO_BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0)
}

fn body(i: usize) -> Vec<u8> {
    let mut b = format!("object {i} ").into_bytes();
    b.resize(5000, b'x');
    b
}

/// `count` calls of `job(i)`, `parallel` at once; the wall time.
async fn parallel<F, Fut>(count: usize, parallel: usize, job: F) -> Duration
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let started = Instant::now();
    let mut running = JoinSet::new();
    for i in 0..count {
        if running.len() >= parallel {
            running.join_next().await.unwrap().unwrap();
        }
        running.spawn(job(i));
    }
    while let Some(r) = running.join_next().await {
        r.unwrap();
    }
    started.elapsed()
}

async fn list_all(client: &Client, bucket: &str, prefix: &str) -> usize {
    let mut token = None;
    let mut n = 0;
    loop {
        let page = client
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .set_continuation_token(token)
            .send()
            .await
            .expect("list");
        n += page.contents().len();
        match page.next_continuation_token() {
            Some(t) if page.is_truncated() == Some(true) => token = Some(t.to_owned()),
            _ => return n,
        }
    }
}

/// A file of `total` bytes, part `n` (from 1) of `part` bytes filled with
/// one letter, for the parts to be read from instead of held in memory
/// (the client shares the host's process, and its RSS).
fn source_file(total: u64, part: u64) -> tempfile::NamedTempFile {
    use std::io::Write;
    let mut file = tempfile::NamedTempFile::new().expect("a temp file");
    let mut offset = 0;
    let mut n = 1u64;
    while offset < total {
        let size = part.min(total - offset) as usize;
        file.write_all(&vec![b'a' + (n % 26) as u8; size])
            .expect("write the source");
        offset += size as u64;
        n += 1;
    }
    file.flush().expect("flush the source");
    file
}

/// A multipart upload of `source` (see [`source_file`]), 4 parts at once:
/// created and completed through the first of `clients`, part `n` sent
/// through `clients[n % clients.len()]`. The time the parts took, and the
/// whole.
async fn multipart(
    clients: &[&Client],
    bucket: &str,
    key: &str,
    source: &std::path::Path,
    total: u64,
    part: u64,
) -> (Duration, Duration) {
    let client = clients[0];
    let started = Instant::now();
    let id = client
        .create_multipart_upload()
        .bucket(bucket)
        .key(key)
        .content_type("application/octet-stream")
        .send()
        .await
        .expect("create")
        .upload_id()
        .unwrap()
        .to_owned();
    let count = total.div_ceil(part) as i32;
    let mut running = JoinSet::new();
    let mut done = Vec::new();
    for n in 1..=count {
        if running.len() >= 4 {
            done.push(running.join_next().await.unwrap().unwrap());
        }
        let client = clients[n as usize % clients.len()].clone();
        let (bucket, key, id) = (bucket.to_owned(), key.to_owned(), id.clone());
        let offset = (n as u64 - 1) * part;
        let size = part.min(total - offset);
        let source = source.to_owned();
        running.spawn(async move {
            let body = ByteStream::read_from()
                .path(&source)
                .offset(offset)
                .length(aws_sdk_s3::primitives::Length::Exact(size))
                .build()
                .await
                .expect("the source's part");
            let out = client
                .upload_part()
                .bucket(&bucket)
                .key(&key)
                .upload_id(&id)
                .part_number(n)
                .body(body)
                .send()
                .await
                .expect("part");
            CompletedPart::builder()
                .part_number(n)
                .e_tag(out.e_tag().unwrap())
                .build()
        });
    }
    while let Some(r) = running.join_next().await {
        done.push(r.unwrap());
    }
    done.sort_by_key(|p| p.part_number());
    let parts = started.elapsed();
    client
        .complete_multipart_upload()
        .bucket(bucket)
        .key(key)
        .upload_id(&id)
        .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(done)).build())
        .send()
        .await
        .expect("complete");
    (parts, started.elapsed())
}

#[tokio::main]
async fn main() {
    let scale = scale();
    let direct = s3::client();
    let bucket = s3::bucket("bench-s3api").await;
    let volumes = s3::volume_toml(
        "public",
        &bucket,
        "public",
        "visibility = \"public\"\nread_cache_mib = 512\npart_size_mib = 16",
    );
    let pipeline = r#"
[[plugins]]
name = "upload-guard"
component = "builtin:upload-guard"
settings = { max_bytes = 4294967296 }
grants = [{ volume = "public", access = ["read"] }]
"#;
    let t = TestSilo::with_volumes(pipeline, &[], &volumes)
        .await
        .expect("a Silo on SeaweedFS");
    let silo = Arc::new(t.silo);
    let secret = "bench-secret-0123456789";
    let credentials = principal(
        "bench",
        "BENCHKEY",
        secret,
        r#"[{ volume = "public", access = ["read", "write", "delete"] }]"#,
    );
    let endpoint = Endpoint::start(silo.clone(), &credentials, Duration::from_secs(60)).await;
    let through = endpoint.client("BENCHKEY", secret);
    let mut rows: Vec<[String; 5]> = Vec::new();
    let ratio = |direct: Duration, silo: Duration| direct.as_secs_f64() / silo.as_secs_f64();

    let parts = std::env::var("SILO_BENCH_PARTS").unwrap_or_else(|_| "12345".into());
    let files = (10_000.0 * scale) as usize;
    if parts.contains(['1', '2', '3']) {
        // (2) first: populate a 10,000-key prefix directly, then refresh.
        let keys: Vec<String> = (0..files).map(|i| format!("public/list/{i:05}.jpg")).collect();
        parallel(keys.len(), 32, |i| {
            let (client, bucket, key) = (direct.clone(), bucket.clone(), keys[i].clone());
            async move {
                client
                    .put_object()
                    .bucket(&bucket)
                    .key(&key)
                    .body(ByteStream::from(body(i)))
                    .send()
                    .await
                    .expect("populate");
            }
        })
        .await;
        refresh(silo.storage(), "public", &|_| {}).await.expect("refresh");
    }
    if parts.contains('1') {
        // (1) HeadObject of one key.
        let heads = (2000.0 * scale).max(50.0) as usize;
        // Twenty calls to warm up, then the timed ones.
        let head = |client: Client, bucket: String, key: String| async move {
            let mut started = Instant::now();
            for i in 0..heads + 20 {
                if i == 20 {
                    started = Instant::now();
                }
                client
                    .head_object()
                    .bucket(&bucket)
                    .key(&key)
                    .send()
                    .await
                    .expect("head");
            }
            started.elapsed() / heads as u32
        };
        let silo_head = head(through.clone(), "public".into(), "list/00000.jpg".into()).await;
        let direct_head = head(direct.clone(), bucket.clone(), "public/list/00000.jpg".into()).await;
        let canned = Canned::start(|_| CannedAnswer::Head).await;
        let floor_head = head(s3::client_at(&canned.url), "public".into(), "list/00000.jpg".into()).await;
        rows.push([
            format!("(1) HeadObject, {heads} in a row"),
            format!("{:.0} µs", silo_head.as_secs_f64() * 1e6),
            format!("{:.0} µs", direct_head.as_secs_f64() * 1e6),
            format!(
                "{:.2}x faster (client alone: {:.0} µs; best possible {:.2}x)",
                ratio(direct_head, silo_head),
                floor_head.as_secs_f64() * 1e6,
                ratio(direct_head, floor_head)
            ),
            "at least 5x".into(),
        ]);
        // The same HEAD presigned once and sent by a bare HTTP client: the
        // servers' own times, without the SDK's cost per call.
        let presigned_head = |client: Client, bucket: String, key: String| async move {
            let presigned = client
                .head_object()
                .bucket(&bucket)
                .key(&key)
                .presigned(PresigningConfig::expires_in(Duration::from_secs(3600)).unwrap())
                .await
                .expect("presign");
            let headers: Vec<(String, String)> =
                presigned.headers().map(|(k, v)| (k.to_owned(), v.to_owned())).collect();
            let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let bare = silo_tests::http::Client::default();
            let mut started = Instant::now();
            for i in 0..heads + 20 {
                if i == 20 {
                    started = Instant::now();
                }
                let reply = bare
                    .send(hyper::Method::HEAD, presigned.uri(), &headers, bytes::Bytes::new())
                    .await
                    .expect("presigned head");
                assert_eq!(reply.status, hyper::StatusCode::OK);
            }
            started.elapsed() / heads as u32
        };
        let silo_bare = presigned_head(through.clone(), "public".into(), "list/00000.jpg".into()).await;
        let direct_bare = presigned_head(direct.clone(), bucket.clone(), "public/list/00000.jpg".into()).await;
        rows.push([
            format!("(1b) the same HeadObject presigned, sent by a bare HTTP client, {heads} in a row"),
            format!("{:.0} µs", silo_bare.as_secs_f64() * 1e6),
            format!("{:.0} µs", direct_bare.as_secs_f64() * 1e6),
            format!("{:.2}x faster", ratio(direct_bare, silo_bare)),
            "(the servers alone)".into(),
        ]);
    }
    if parts.contains('2') {
        // (2) every page of the prefix, best of 5.
        let mut silo_list = Duration::MAX;
        let mut direct_list = Duration::MAX;
        for _ in 0..5 {
            let started = Instant::now();
            assert_eq!(list_all(&through, "public", "list/").await, files);
            silo_list = silo_list.min(started.elapsed());
            let started = Instant::now();
            assert_eq!(list_all(&direct, &bucket, "public/list/").await, files);
            direct_list = direct_list.min(started.elapsed());
        }
        let pages = files.div_ceil(1000);
        let canned = Canned::start(move |query| CannedAnswer::List(list_page(query, files, pages))).await;
        let floor_client = s3::client_at(&canned.url);
        let mut floor_list = Duration::MAX;
        for _ in 0..5 {
            let started = Instant::now();
            assert_eq!(list_all(&floor_client, "public", "list/").await, files);
            floor_list = floor_list.min(started.elapsed());
        }
        rows.push([
            format!("(2) ListObjectsV2, {files} keys, all pages"),
            format!("{:.1} ms", silo_list.as_secs_f64() * 1e3),
            format!("{:.1} ms", direct_list.as_secs_f64() * 1e3),
            format!(
                "{:.2}x faster (client alone: {:.1} ms; best possible {:.2}x; the servers' own times, less the client's: {:.1} ms and {:.1} ms, {:.2}x)",
                ratio(direct_list, silo_list),
                floor_list.as_secs_f64() * 1e3,
                ratio(direct_list, floor_list),
                silo_list.saturating_sub(floor_list).as_secs_f64() * 1e3,
                direct_list.saturating_sub(floor_list).as_secs_f64() * 1e3,
                ratio(
                    direct_list.saturating_sub(floor_list),
                    silo_list.saturating_sub(floor_list)
                )
            ),
            "at least 5x".into(),
        ]);
    }
    if parts.contains('3') {
        // (3) GetObject of 5 KB objects, 16 at once; Silo's cache warmed once.
        let gets = (4000.0 * scale).max(100.0) as usize;
        let reads = files.min(1000);
        let get = |client: Client, bucket: String, prefix: &'static str| {
            move |i: usize| {
                let (client, bucket) = (client.clone(), bucket.clone());
                async move {
                    let out = client
                        .get_object()
                        .bucket(&bucket)
                        .key(format!("{prefix}list/{:05}.jpg", i % reads))
                        .send()
                        .await
                        .expect("get");
                    let bytes = out.body.collect().await.expect("body").into_bytes();
                    assert_eq!(bytes.len(), 5000);
                }
            }
        };
        parallel(reads, 16, get(through.clone(), "public".into(), "")).await;
        let mut silo_get = Duration::ZERO;
        let mut direct_get = Duration::ZERO;
        for _ in 0..3 {
            silo_get += parallel(gets, 16, get(through.clone(), "public".into(), "")).await;
            direct_get += parallel(gets, 16, get(direct.clone(), bucket.clone(), "public/")).await;
        }
        rows.push([
            format!("(3) GetObject 5 KB, 16 at once, 3 x {gets}"),
            format!("{:.0} /s", 3.0 * gets as f64 / silo_get.as_secs_f64()),
            format!("{:.0} /s", 3.0 * gets as f64 / direct_get.as_secs_f64()),
            format!("{:.2}x", ratio(direct_get, silo_get)),
            "at least 1.0x".into(),
        ]);
    }
    if parts.contains('4') {
        // (4) PutObject of 5 KB objects, 16 at once, alternating rounds.
        let puts = (2000.0 * scale).max(100.0) as usize;
        let put = |client: Client, bucket: String, prefix: &'static str, round: usize| {
            move |i: usize| {
                let (client, bucket) = (client.clone(), bucket.clone());
                async move {
                    client
                        .put_object()
                        .bucket(&bucket)
                        .key(format!("{prefix}put/{round}/{i:05}.txt"))
                        .content_type("text/plain")
                        .body(ByteStream::from(body(i)))
                        .send()
                        .await
                        .expect("put");
                }
            }
        };
        // (4b) the same files sent as browser forms (POST Object with a
        // signed policy), by a bare HTTP client, 16 at once.
        let fields = Arc::new(post_fields("public", "post/", "BENCHKEY", secret));
        let forms = silo_tests::http::Client::default();
        let post_url = format!("{}/public", endpoint.url());
        let post = |round: usize| {
            let (fields, forms, url) = (fields.clone(), forms.clone(), post_url.clone());
            move |i: usize| {
                let (fields, forms, url) = (fields.clone(), forms.clone(), url.clone());
                async move {
                    let (content_type, form) =
                        form_body(&fields, &format!("{round}-{i:05}.txt"), "text/plain", &body(i));
                    let reply = forms
                        .send(
                            hyper::Method::POST,
                            &url,
                            &[("content-type", content_type.as_str())],
                            form,
                        )
                        .await
                        .expect("post");
                    assert_eq!(reply.status, 204, "post: {}", reply.text());
                }
            }
        };
        // Its baseline: the same files PUT through presigned URLs by the
        // same bare client (the SDK's own cost left out of both).
        let bare_put = |round: usize| {
            let (forms, through) = (forms.clone(), through.clone());
            move |i: usize| {
                let (forms, through) = (forms.clone(), through.clone());
                async move {
                    let presigned = through
                        .put_object()
                        .bucket("public")
                        .key(format!("bare/{round}/{i:05}.txt"))
                        .presigned(PresigningConfig::expires_in(Duration::from_secs(600)).unwrap())
                        .await
                        .expect("presign");
                    let headers: Vec<(&str, &str)> = presigned.headers().collect();
                    let mut sent = vec![("content-type", "text/plain")];
                    sent.extend(headers);
                    let reply = forms
                        .send(hyper::Method::PUT, presigned.uri(), &sent, body(i).into())
                        .await
                        .expect("put");
                    assert_eq!(reply.status, 200, "put: {}", reply.text());
                }
            }
        };
        let mut silo_put = Duration::ZERO;
        let mut silo_post = Duration::ZERO;
        let mut silo_bare_put = Duration::ZERO;
        let mut direct_put = Duration::ZERO;
        for round in 0..3 {
            silo_put += parallel(puts, 16, put(through.clone(), "public".into(), "", round)).await;
            silo_post += parallel(puts, 16, post(round)).await;
            silo_bare_put += parallel(puts, 16, bare_put(round)).await;
            direct_put += parallel(puts, 16, put(direct.clone(), bucket.clone(), "public/direct", round)).await;
        }
        rows.push([
            format!("(4) PutObject 5 KB via upload-guard, 16 at once, 3 x {puts}"),
            format!("{:.0} /s", 3.0 * puts as f64 / silo_put.as_secs_f64()),
            format!("{:.0} /s", 3.0 * puts as f64 / direct_put.as_secs_f64()),
            format!("{:.2}x", ratio(direct_put, silo_put)),
            "at least 0.8x".into(),
        ]);
        rows.push([
            format!(
                "(4b) POST Object 5 KB (a browser form, signed policy), 16 at once, 3 x {puts}; baseline (second column): Silo's PutObject of the same files by presigned URLs, the same bare HTTP client"
            ),
            format!("{:.0} /s", 3.0 * puts as f64 / silo_post.as_secs_f64()),
            format!("{:.0} /s", 3.0 * puts as f64 / silo_bare_put.as_secs_f64()),
            format!("{:.2}x", ratio(silo_bare_put, silo_post)),
            "at least 0.9x".into(),
        ]);
    }
    if parts.contains('5') {
        // (5) one large multipart upload each way.
        let total = ((1024.0 * scale).max(64.0) as u64) << 20;
        let part = 64u64 << 20;
        let source = source_file(total, part);
        let (rss_before, _) = rss_kb();
        reset_peak();
        let (silo_parts, silo_mp) =
            multipart(&[&through], "public", "big/through.bin", source.path(), total, part).await;
        let (_, peak) = rss_kb();
        let (direct_parts, direct_mp) =
            multipart(&[&direct], &bucket, "public/big/direct.bin", source.path(), total, part).await;
        let mib = (total >> 20) as f64;
        rows.push([
            format!("(5) multipart upload of {} MiB, 64 MiB parts, 4 at once", total >> 20),
            format!(
                "{:.0} MiB/s (parts {:.1} s, complete {:.1} s)",
                mib / silo_mp.as_secs_f64(),
                silo_parts.as_secs_f64(),
                (silo_mp - silo_parts).as_secs_f64()
            ),
            format!(
                "{:.0} MiB/s (parts {:.1} s, complete {:.1} s)",
                mib / direct_mp.as_secs_f64(),
                direct_parts.as_secs_f64(),
                (direct_mp - direct_parts).as_secs_f64()
            ),
            format!(
                "{:.2}x; host RSS +{:.0} MiB",
                ratio(direct_mp, silo_mp),
                peak.saturating_sub(rss_before) as f64 / 1024.0
            ),
            "at least 0.7x; RSS within the write budget (256 MiB)".into(),
        ]);
        // (5b) the same upload over two nodes sharing a PostgreSQL engine,
        // its parts spread over both: the completing node has the other's
        // parts handed over.
        let url_file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(url_file.path(), silo_tests::pg::database("bench_s3api").await).unwrap();
        let shared = format!(
            "[metadata]\nbackend = \"postgres\"\nurl_file = \"{}\"\n\n{volumes}",
            url_file.path().display()
        );
        let mut endpoints = Vec::new();
        for _ in 0..2 {
            let node = TestSilo::with_volumes(pipeline, &[], &shared).await.expect("a node");
            endpoints.push((
                Endpoint::start(Arc::new(node.silo), &credentials, Duration::from_secs(60)).await,
                node.dir,
            ));
        }
        let (first, second) = (
            endpoints[0].0.client("BENCHKEY", secret),
            endpoints[1].0.client("BENCHKEY", secret),
        );
        let (spread_parts, spread) = multipart(
            &[&first, &second],
            "public",
            "big/spread.bin",
            source.path(),
            total,
            part,
        )
        .await;
        let (direct_parts, direct_mp) = multipart(
            &[&direct],
            &bucket,
            "public/big/direct2.bin",
            source.path(),
            total,
            part,
        )
        .await;
        rows.push([
            "(5b) the same over two nodes on PostgreSQL, parts alternating, completed on one".into(),
            format!(
                "{:.0} MiB/s (parts {:.1} s, complete {:.1} s)",
                mib / spread.as_secs_f64(),
                spread_parts.as_secs_f64(),
                (spread - spread_parts).as_secs_f64()
            ),
            format!(
                "{:.0} MiB/s (parts {:.1} s, complete {:.1} s)",
                mib / direct_mp.as_secs_f64(),
                direct_parts.as_secs_f64(),
                (direct_mp - direct_parts).as_secs_f64()
            ),
            format!("{:.2}x", ratio(direct_mp, spread)),
            "(half the parts are handed over)".into(),
        ]);
        // (5c) every request of the upload on one of those nodes, as a
        // balancer hashing the upload id sends them.
        let (one_parts, one) = multipart(&[&second], "public", "big/one.bin", source.path(), total, part).await;
        rows.push([
            "(5c) the same on one of the two nodes (a balancer keeping the upload there)".into(),
            format!(
                "{:.0} MiB/s (parts {:.1} s, complete {:.1} s)",
                mib / one.as_secs_f64(),
                one_parts.as_secs_f64(),
                (one - one_parts).as_secs_f64()
            ),
            format!("{:.0} MiB/s", mib / direct_mp.as_secs_f64()),
            format!("{:.2}x", ratio(direct_mp, one)),
            String::new(),
        ]);
    }

    print_table(rows);
}

fn print_table(rows: Vec<[String; 5]>) {
    println!("| measure | through Silo | straight to SeaweedFS | ratio | target |");
    println!("|---|---|---|---|---|");
    for row in rows {
        println!("| {} |", row.join(" | "));
    }
}

/// What the canned server answers.
enum CannedAnswer {
    Head,
    List(String),
}

/// An HTTP server on 127.0.0.1 that answers every request at once, with no
/// work behind it.
struct Canned {
    url: String,
}

impl Canned {
    async fn start(answer: impl Fn(&str) -> CannedAnswer + Send + Sync + 'static) -> Canned {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let answer = Arc::new(answer);
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let _ = stream.set_nodelay(true);
                let answer = answer.clone();
                let service = hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                    let answer = answer(request.uri().query().unwrap_or(""));
                    async move {
                        let response = hyper::Response::builder()
                            .header("etag", "\"9a0364b9e99bb480dd25e1f0284c8555\"")
                            .header("last-modified", "Wed, 21 Oct 2015 07:28:00 GMT")
                            .header("x-amz-request-id", "0");
                        Ok::<_, std::convert::Infallible>(match answer {
                            CannedAnswer::Head => response
                                .header("content-type", "image/jpeg")
                                .header("content-length", "5000")
                                .header("accept-ranges", "bytes")
                                .body(http_body_util::Full::new(bytes::Bytes::new()))
                                .unwrap(),
                            CannedAnswer::List(xml) => response
                                .header("content-type", "application/xml")
                                .body(http_body_util::Full::new(bytes::Bytes::from(xml)))
                                .unwrap(),
                        })
                    }
                });
                tokio::spawn(async move {
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, service)
                        .await;
                });
            }
        });
        Canned { url }
    }
}

/// A ListObjectsV2 page of `files` keys like the bench's, 1000 a page,
/// continuing after the page the query's continuation token names.
fn list_page(query: &str, files: usize, pages: usize) -> String {
    let page: usize = query
        .split('&')
        .find_map(|p| p.strip_prefix("continuation-token="))
        .and_then(|t| t.parse().ok())
        .unwrap_or(0);
    let first = page * 1000;
    let last = (first + 1000).min(files);
    let mut xml = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><ListBucketResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Name>public</Name><Prefix>list/</Prefix>",
    );
    xml.push_str(&format!("<KeyCount>{}</KeyCount><MaxKeys>1000</MaxKeys>", last - first));
    if page + 1 < pages {
        xml.push_str(&format!(
            "<IsTruncated>true</IsTruncated><NextContinuationToken>{}</NextContinuationToken>",
            page + 1
        ));
    } else {
        xml.push_str("<IsTruncated>false</IsTruncated>");
    }
    for i in first..last {
        xml.push_str(&format!(
            "<Contents><Key>list/{i:05}.jpg</Key><LastModified>2015-10-21T07:28:00.000Z</LastModified><ETag>&quot;9a0364b9e99bb480dd25e1f0284c8555&quot;</ETag><Size>5000</Size><StorageClass>STANDARD</StorageClass></Contents>"
        ));
    }
    xml.push_str("</ListBucketResult>");
    xml
}
