//! The sidecar under load and faults, with SeaweedFS behind it, and the
//! local disk read cache of S3 volumes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::{Method, StatusCode};
use silo_host::maintenance;
use silo_host::store::PutOptions;
use silo_tests::http::{ADMIN_TOKEN, Client, Sidecar, TOKEN};
use silo_tests::seaweed::Seaweed;
use silo_tests::{GUARD_PIPELINE, TestSilo, s3};
use tokio::io::AsyncReadExt;

/// Deterministic bytes of `len`, different per `seed`.
fn content(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Printable, so that the content policy sees text.
            b'a' + (x % 26) as u8
        })
        .collect()
}

fn counter(metrics: &str, series: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

fn lookups(silo: &silo_host::Silo, volume: &str, result: &str) -> u64 {
    counter(
        &silo.storage().metrics().render(),
        &format!("silo_read_cache_lookups_total{{volume=\"{volume}\",result=\"{result}\"}}"),
    )
}

async fn s3_silo(hint: &str, extra: &str) -> (TestSilo, String) {
    let bucket = s3::bucket(hint).await;
    let volumes = s3::volume_toml(
        "public",
        &bucket,
        "public",
        &format!("visibility = \"public\"\n{extra}"),
    );
    // The disk cache alone: the memory cache would answer small reads first.
    let config = format!("{volumes}\n[limits]\nmemory_cache_mib = 0\n");
    (TestSilo::with_volumes("", &[], &config).await.unwrap(), bucket)
}

#[tokio::test]
async fn s3_reads_come_from_the_disk_cache_which_is_bounded_and_survives_restarts() {
    let (t, bucket) = s3_silo("readcache", "read_cache_mib = 1").await;
    let storage = t.silo.storage().clone();
    let host = storage.host_session();
    let loc = |p: &str| storage.location("public", p).unwrap();
    let first = content(1, 100_000);
    host.write(&loc("a.txt"), Bytes::from(first.clone()), PutOptions::default())
        .await
        .unwrap();

    assert_eq!(host.read(&loc("a.txt")).await.unwrap(), first);
    assert_eq!(lookups(&t.silo, "public", "miss"), 1);
    assert_eq!(host.read(&loc("a.txt")).await.unwrap(), first);
    assert_eq!(lookups(&t.silo, "public", "hit"), 1, "the second read comes from disk");
    let cache = storage.volume("public").unwrap().read_cache.clone().unwrap();
    assert_eq!((cache.files(), cache.bytes()), (1, 100_000));

    // Changed behind Silo's back: served from disk until the metadata
    // cache learns the new version, then the new bytes, never a mix.
    let second = content(2, 100_000);
    s3::client()
        .put_object()
        .bucket(&bucket)
        .key("public/a.txt")
        .body(second.clone().into())
        .send()
        .await
        .unwrap();
    assert_eq!(host.read(&loc("a.txt")).await.unwrap(), first);
    maintenance::refresh(&storage, "public", &|_| {}).await.unwrap();
    assert_eq!(host.read(&loc("a.txt")).await.unwrap(), second);
    assert_eq!(host.read(&loc("a.txt")).await.unwrap(), second);
    assert_eq!(cache.files(), 1, "one version per file");

    // Ranged reads of a cached file come from disk too.
    let range = host.read_range(&loc("a.txt"), 99_990, 100).await.unwrap();
    assert_eq!(range, &second[99_990..]);

    // Bounded: 12 files of 100 kB through a 1 MiB cache keep the newest.
    for i in 0..12 {
        let path = format!("many/{i}.txt");
        host.write(
            &loc(&path),
            Bytes::from(content(10 + i, 100_000)),
            PutOptions::default(),
        )
        .await
        .unwrap();
        host.read(&loc(&path)).await.unwrap();
    }
    assert!(cache.bytes() <= 1 << 20, "{} bytes cached", cache.bytes());
    assert!(cache.files() < 13, "{} files cached", cache.files());
    let (hits, misses) = (lookups(&t.silo, "public", "hit"), lookups(&t.silo, "public", "miss"));
    host.read(&loc("many/11.txt")).await.unwrap();
    assert_eq!(lookups(&t.silo, "public", "hit"), hits + 1, "the newest stays");
    host.read(&loc("many/0.txt")).await.unwrap();
    assert_eq!(
        lookups(&t.silo, "public", "miss"),
        misses + 1,
        "the least recently used went first"
    );

    // Deleting through Silo drops the copy.
    let before = cache.files();
    host.delete(&loc("many/11.txt")).await.unwrap();
    assert_eq!(cache.files(), before - 1);

    // Restart: what was cached is still there; half-written files are not.
    let (files, bytes) = (cache.files(), cache.bytes());
    drop((cache, host, storage));
    let TestSilo { dir, silo } = t;
    drop(silo);
    let tmp = dir.path().join("state/read-cache/public/tmp");
    std::fs::write(tmp.join("interrupted"), b"half a file").unwrap();
    let config = silo_host::Config::load(&dir.path().join("silo.toml")).unwrap();
    let silo = silo_host::Silo::open(config).await.unwrap();
    let cache = silo.storage().volume("public").unwrap().read_cache.clone().unwrap();
    assert_eq!((cache.files(), cache.bytes()), (files, bytes));
    assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0, "leftovers are cleared");
    let host = silo.storage().host_session();
    let got = host
        .read(&silo.storage().location("public", "many/0.txt").unwrap())
        .await
        .unwrap();
    assert_eq!(got, content(10, 100_000));
    assert_eq!(
        lookups(&silo, "public", "hit"),
        1,
        "served from the cache of the last run"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ranged_miss_brings_the_whole_file_into_the_disk_cache() {
    let (t, _) = s3_silo("ranged", "read_cache_mib = 8").await;
    let storage = t.silo.storage().clone();
    let loc = storage.location("public", "video.bin").unwrap();
    let body = content(5, 300_000);
    storage
        .host_session()
        .write(&loc, Bytes::from(body.clone()), PutOptions::default())
        .await
        .unwrap();
    let cache = storage.volume("public").unwrap().read_cache.clone().unwrap();

    // A player's first requests: several ranges at once, all misses,
    // answered from S3 while the whole file is fetched once behind them.
    let mut reads = tokio::task::JoinSet::new();
    for offset in [0u64, 100_000, 200_000, 299_000] {
        let (storage, loc) = (storage.clone(), loc.clone());
        reads.spawn(async move {
            let got = storage.host_session().read_range(&loc, offset, 1_000).await.unwrap();
            (offset, got)
        });
    }
    while let Some(done) = reads.join_next().await {
        let (offset, got) = done.unwrap();
        assert_eq!(
            got,
            &body[offset as usize..offset as usize + 1_000],
            "range at {offset}"
        );
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while cache.files() == 0 {
        assert!(Instant::now() < deadline, "the ranged misses never filled the cache");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!((cache.files(), cache.bytes()), (1, 300_000));

    // The next ranges, and whole reads, come from disk.
    let hits = lookups(&t.silo, "public", "hit");
    let host = storage.host_session();
    assert_eq!(
        host.read_range(&loc, 150_000, 5).await.unwrap(),
        &body[150_000..150_005]
    );
    assert_eq!(host.read(&loc).await.unwrap(), body);
    assert_eq!(lookups(&t.silo, "public", "hit"), hits + 2);
}

#[tokio::test]
async fn files_unused_for_the_inactive_time_leave_the_disk_cache() {
    let (t, _) = s3_silo("inactive", "read_cache_mib = 8\nread_cache_inactive_secs = 1").await;
    let storage = t.silo.storage().clone();
    let host = storage.host_session();
    let loc = storage.location("public", "a.txt").unwrap();
    host.write(&loc, Bytes::from_static(b"hello"), PutOptions::default())
        .await
        .unwrap();
    host.read(&loc).await.unwrap();
    host.read(&loc).await.unwrap();
    assert_eq!(lookups(&t.silo, "public", "hit"), 1);
    tokio::time::sleep(Duration::from_millis(1300)).await;
    host.read(&loc).await.unwrap();
    assert_eq!(lookups(&t.silo, "public", "hit"), 1, "expired, read from S3 again");
    assert_eq!(lookups(&t.silo, "public", "miss"), 2);
}

#[tokio::test]
async fn metrics_and_admin_routes_answer_only_the_admin_token() {
    let t = TestSilo::new(GUARD_PIPELINE, &[]).await.unwrap();
    let silo = Arc::new(t.silo);
    let sidecar = Sidecar::start(silo.clone()).await;
    let client = Client::default();
    let reply = client
        .put(&sidecar.url("/v1/files/public/notes/a.txt"), "text/plain", "hello")
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());
    client
        .get(&sidecar.url("/v1/files/public/notes/a.txt"), &[])
        .await
        .unwrap();
    // Requests no route takes are counted too, under fixed label values.
    let lost = client.get(&sidecar.url("/wp-admin/install.php"), &[]).await.unwrap();
    assert_eq!(lost.status, StatusCode::NOT_FOUND);
    assert_eq!(lost.json()["error"]["code"], "no-route");
    for method in ["PROPFIND", "BREW"] {
        let odd = client
            .send(
                Method::from_bytes(method.as_bytes()).unwrap(),
                &sidecar.url("/healthz"),
                &[],
                Bytes::new(),
            )
            .await
            .unwrap();
        assert_eq!(odd.status, StatusCode::METHOD_NOT_ALLOWED, "{method}");
    }

    let admin = format!("Bearer {ADMIN_TOKEN}");
    for route in ["/metrics", "/v1/admin/stats", "/v1/admin/cache/public/verify"] {
        let none = client.get(&sidecar.url(route), &[]).await.unwrap();
        assert_eq!(none.status, StatusCode::UNAUTHORIZED, "{route}");
        let writer = client.get_as(&sidecar.url(route), TOKEN).await.unwrap();
        assert_eq!(
            writer.status,
            StatusCode::UNAUTHORIZED,
            "{route}: the write token is not the admin token"
        );
    }

    let metrics = client.get_as(&sidecar.url("/metrics"), ADMIN_TOKEN).await.unwrap();
    assert_eq!(metrics.status, StatusCode::OK);
    assert!(metrics.header("content-type").unwrap().starts_with("text/plain"));
    let text = metrics.text();
    assert_eq!(
        counter(
            &text,
            "silo_http_requests_total{method=\"PUT\",route=\"/v1/files/{volume}/{*path}\",status=\"201\"}"
        ),
        1,
        "{text}"
    );
    assert_eq!(
        counter(
            &text,
            "silo_http_requests_total{method=\"GET\",route=\"/v1/files/{volume}/{*path}\",status=\"200\"}"
        ),
        1
    );
    assert_eq!(
        counter(
            &text,
            "silo_plugin_invocations_total{plugin=\"upload-guard\",call=\"on-upload\",outcome=\"accept\"}"
        ),
        1
    );
    assert!(
        counter(
            &text,
            "silo_metadata_cache_lookups_total{volume=\"public\",result=\"hit\"}"
        ) >= 1
    );
    assert!(text.contains("silo_http_request_duration_seconds_bucket{"), "{text}");
    assert_eq!(
        counter(
            &text,
            "silo_http_requests_total{method=\"GET\",route=\"unmatched\",status=\"404\"}"
        ),
        1,
        "{text}"
    );
    assert_eq!(
        counter(
            &text,
            "silo_http_requests_total{method=\"other\",route=\"/healthz\",status=\"405\"}"
        ),
        2,
        "{text}"
    );
    assert!(!text.contains("PROPFIND") && !text.contains("wp-admin"), "{text}");

    let verify = client
        .send(
            Method::GET,
            &sidecar.url("/v1/admin/cache/public/verify"),
            &[("authorization", &admin)],
            Bytes::new(),
        )
        .await
        .unwrap();
    assert_eq!(verify.status, StatusCode::OK);
    assert_eq!(verify.json()["clean"], true);
    let refresh = client
        .send(
            Method::POST,
            &sidecar.url("/v1/admin/cache/public/refresh"),
            &[("authorization", &admin)],
            Bytes::new(),
        )
        .await
        .unwrap();
    assert_eq!(refresh.json()["files"], 1);
    let stats = client
        .get_as(&sidecar.url("/v1/admin/stats"), ADMIN_TOKEN)
        .await
        .unwrap();
    let public = &stats.json()["volumes"][1];
    assert_eq!(
        (public["volume"].as_str(), public["files"].as_u64()),
        (Some("public"), Some(1))
    );
    let unknown = client
        .get_as(&sidecar.url("/v1/admin/cache/nope/verify"), ADMIN_TOKEN)
        .await
        .unwrap();
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);

    // Without an admin token the admin routes are off.
    let off = Sidecar::start_with(
        silo,
        silo_host::serve::Tokens {
            write: TOKEN.into(),
            signing_key: b"k".to_vec(),
            admin: None,
            principals: None,
        },
    )
    .await;
    let reply = client.get_as(&off.url("/metrics"), TOKEN).await.unwrap();
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(reply.json()["error"]["code"], "admin-disabled");
}

#[tokio::test]
async fn conditional_and_resumed_reads_follow_http() {
    let t = TestSilo::new(GUARD_PIPELINE, &[]).await.unwrap();
    let sidecar = Sidecar::start(Arc::new(t.silo)).await;
    let client = Client::default();
    let url = sidecar.url("/v1/files/public/doc.txt");
    let first = content(7, 10_000);
    client.put(&url, "text/plain", first.clone()).await.unwrap();
    let reply = client.get(&url, &[]).await.unwrap();
    let (etag, modified) = (
        reply.header("etag").unwrap().to_owned(),
        reply.header("last-modified").unwrap().to_owned(),
    );
    let get = |headers: Vec<(&'static str, String)>| {
        let (client, url) = (client.clone(), url.clone());
        async move {
            let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            client.get(&url, &headers).await.unwrap()
        }
    };

    // If-Modified-Since, unless If-None-Match is there to decide.
    let since = |h: &str| vec![("if-modified-since", h.to_owned())];
    assert_eq!(get(since(&modified)).await.status, StatusCode::NOT_MODIFIED);
    assert_eq!(get(since("Sat, 01 Jan 2000 00:00:00 GMT")).await.status, StatusCode::OK);
    let both = vec![
        ("if-none-match", "\"other\"".to_owned()),
        ("if-modified-since", modified.clone()),
    ];
    assert_eq!(get(both).await.status, StatusCode::OK);

    // If-Range: the range of the same version, else the whole file.
    let resume = |validator: &str| {
        vec![
            ("range", "bytes=100-199".to_owned()),
            ("if-range", validator.to_owned()),
        ]
    };
    for same in [etag.as_str(), modified.as_str()] {
        let reply = get(resume(same)).await;
        assert_eq!(reply.status, StatusCode::PARTIAL_CONTENT, "{same}");
        assert_eq!(reply.body, &first[100..200]);
    }
    for other in [
        "\"an-older-version\"",
        &format!("W/{etag}"),
        "Sat, 01 Jan 2000 00:00:00 GMT",
        "garbage",
    ] {
        let reply = get(resume(other)).await;
        assert_eq!(reply.status, StatusCode::OK, "{other}");
        assert_eq!(reply.body, first, "{other}: the whole file");
    }

    // Changed since: a resume with the old etag gets the new file whole.
    let second = content(8, 12_000);
    client.put(&url, "text/plain", second.clone()).await.unwrap();
    let reply = get(resume(&etag)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body, second);
}

#[tokio::test]
async fn uploads_over_the_volumes_limit_are_cut_off_and_nothing_is_kept() {
    let volumes = "[volumes.public]\nbackend = \"local\"\npath = \"volumes/public\"\n\
                   visibility = \"public\"\nmax_upload_mib = 1\n";
    let t = TestSilo::with_volumes(GUARD_PIPELINE, &[], volumes).await.unwrap();
    let staging = t.dir.path().join("state/staging");
    let silo = Arc::new(t.silo);
    let limit = 1u64 << 20;
    assert_eq!(silo.upload_limit("public"), limit);

    // At the limit: stored.
    let report = silo
        .upload_stream("public/at.txt", tokio::io::repeat(b'a').take(limit), Some("text/plain"))
        .await
        .unwrap();
    assert_eq!(report.status, silo_host::Status::Accepted, "{report:?}");
    // One byte over, and an endless body: refused, read no further than
    // the limit, nothing stored or staged.
    for (name, body) in [
        (
            "over",
            Box::new(tokio::io::repeat(b'a').take(limit + 1)) as Box<dyn tokio::io::AsyncRead + Unpin>,
        ),
        ("endless", Box::new(tokio::io::repeat(b'a'))),
    ] {
        let err = silo
            .upload_stream(&format!("public/{name}.txt"), body, Some("text/plain"))
            .await
            .unwrap_err();
        assert!(
            matches!(err, silo_host::SiloError::TooLarge { limit: l, .. } if l == limit),
            "{name}: {err}"
        );
    }
    assert_eq!(
        t.dir
            .path()
            .join("volumes/public")
            .read_dir()
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| e.file_name() != ".silo-tmp")
            .count(),
        1
    );
    assert_eq!(
        std::fs::read_dir(&staging).map_or(0, |d| d.count()),
        0,
        "nothing left in staging"
    );

    // Through the sidecar: a declared size over the limit is refused before
    // the body is read.
    let sidecar = Sidecar::start(silo.clone()).await;
    let client = Client::default();
    let reply = client
        .put(
            &sidecar.url("/v1/files/public/big.txt"),
            "text/plain",
            vec![b'a'; limit as usize + 1],
        )
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", reply.text());
    assert_eq!(reply.json()["error"]["code"], "too-large");
    assert_eq!(
        client
            .get(&sidecar.url("/v1/files/public/big.txt"), &[])
            .await
            .unwrap()
            .status,
        StatusCode::NOT_FOUND
    );
}

/// PUT `body` to the sidecar at `path` in chunked encoding, `chunk` bytes a
/// chunk (so the server sees many body frames), with no declared length.
/// The status and the reply as far as it came: a refusal may close the
/// connection before the body is sent.
async fn put_chunked(sidecar: &Sidecar, path: &str, body: Vec<u8>, chunk: usize) -> (u16, String) {
    use tokio::io::AsyncWriteExt;
    let tcp = tokio::net::TcpStream::connect(sidecar.addr).await.unwrap();
    let (mut rx, mut tx) = tcp.into_split();
    let head = format!(
        "PUT {path} HTTP/1.1\r\nhost: silo\r\nauthorization: Bearer {TOKEN}\r\n\
         content-type: text/plain\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
    );
    let send = tokio::spawn(async move {
        tx.write_all(head.as_bytes()).await?;
        for part in body.chunks(chunk) {
            tx.write_all(format!("{:x}\r\n", part.len()).as_bytes()).await?;
            tx.write_all(part).await?;
            tx.write_all(b"\r\n").await?;
        }
        tx.write_all(b"0\r\n\r\n").await?;
        // Held open: the server takes a half-closed connection as gone.
        std::future::pending::<std::io::Result<()>>().await
    });
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = rx.read(&mut buf).await
        && n > 0
    {
        reply.extend_from_slice(&buf[..n]);
    }
    send.abort();
    let reply = String::from_utf8_lossy(&reply).into_owned();
    let status = reply.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, reply)
}

#[tokio::test]
async fn uploads_in_many_small_frames_are_stored_whole_on_both_sides_of_the_memory_staging_limit() {
    use silo_host::pipeline::MEMORY_STAGE_BYTES;
    let volumes = "[volumes.public]\nbackend = \"local\"\npath = \"volumes/public\"\nvisibility = \"public\"\n\
                   max_upload_mib = 1\n";
    let t = TestSilo::with_volumes(GUARD_PIPELINE, &[], volumes).await.unwrap();
    let staging = t.dir.path().join("state/staging");
    let public = t.volume_dir("public");
    let sidecar = Sidecar::start(Arc::new(t.silo)).await;
    let limit = 1usize << 20;
    for (i, size) in [0, 1, 999, MEMORY_STAGE_BYTES, MEMORY_STAGE_BYTES + 1, limit]
        .into_iter()
        .enumerate()
    {
        let body = content(i as u64, size);
        let (status, reply) = put_chunked(
            &sidecar,
            &format!("/v1/files/public/frames/{i}.txt"),
            body.clone(),
            1000,
        )
        .await;
        assert_eq!(status, 201, "{size} bytes: {reply}");
        let stored = std::fs::read(public.join(format!("frames/{i}.txt"))).unwrap();
        assert!(
            stored == body,
            "{size} bytes: stored {} bytes, not the body",
            stored.len()
        );
    }
    // One frame over the limit: refused, nothing stored or staged.
    let (status, reply) = put_chunked(
        &sidecar,
        "/v1/files/public/frames/over.txt",
        content(9, limit + 1),
        1000,
    )
    .await;
    assert_eq!(status, 413, "{reply}");
    assert!(!public.join("frames/over.txt").exists());
    assert_eq!(
        std::fs::read_dir(&staging).map_or(0, |d| d.count()),
        0,
        "nothing left in staging"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_concurrent_uploads_mixed_with_reads_lose_nothing() {
    let (t, bucket) = TestSilo::on_s3(GUARD_PIPELINE, &[], "load").await.unwrap();
    let silo = Arc::new(t.silo);
    let sidecar = Arc::new(Sidecar::start(silo.clone()).await);
    let client = Client::default();
    let existing: Vec<Vec<u8>> = (0..20).map(|i| content(1000 + i, 2_000 + 500 * i as usize)).collect();
    for (i, body) in existing.iter().enumerate() {
        let reply = client
            .put(
                &sidecar.url(&format!("/v1/files/public/old/{i}.txt")),
                "text/plain",
                body.clone(),
            )
            .await
            .unwrap();
        assert_eq!(reply.status, StatusCode::CREATED);
    }
    let existing = Arc::new(existing);

    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..200u64 {
        let (c, s) = (client.clone(), sidecar.clone());
        tasks.spawn(async move {
            let body = content(i, 1_000 + (i as usize * 1_543) % 300_000);
            let url = s.url(&format!("/v1/files/public/new/{}/{i}.txt", i % 7));
            let reply = c.put(&url, "text/plain", body).await.unwrap();
            assert_eq!(reply.status, StatusCode::CREATED, "upload {i}: {}", reply.text());
        });
        let (c, s, existing) = (client.clone(), sidecar.clone(), existing.clone());
        tasks.spawn(async move {
            let n = (i % 20) as usize;
            let reply = c
                .get(&s.url(&format!("/v1/files/public/old/{n}.txt")), &[])
                .await
                .unwrap();
            assert_eq!(reply.status, StatusCode::OK);
            assert_eq!(reply.body, existing[n], "read {i}");
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }

    for i in 0..200u64 {
        let reply = client
            .get(&sidecar.url(&format!("/v1/files/public/new/{}/{i}.txt", i % 7)), &[])
            .await
            .unwrap();
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(
            reply.body,
            content(i, 1_000 + (i as usize * 1_543) % 300_000),
            "file {i}"
        );
    }
    let stored = s3::keys(&bucket).await;
    assert_eq!(stored.iter().filter(|(k, _)| k.starts_with("public/new/")).count(), 200);
    let drift = maintenance::verify(silo.storage(), "public", &|_| {}).await.unwrap();
    assert!(drift.is_clean(), "{drift:?}");
    assert_eq!(s3::open_uploads(&bucket).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn when_s3_is_killed_mid_upload_nothing_partial_appears_and_cached_reads_go_on() {
    let mut server = Seaweed::start().await;
    let direct = server.client();
    let bucket = s3::bucket_on(&direct, "fault").await;
    let volumes = s3::volume_toml_at(
        &server.endpoint(),
        "public",
        &bucket,
        "public",
        "visibility = \"public\"\npart_size_mib = 5\nmax_attempts = 2\nread_cache_mib = 64",
    );
    let t = TestSilo::with_volumes(GUARD_PIPELINE, &[], &volumes).await.unwrap();
    let silo = Arc::new(t.silo);
    let sidecar = Sidecar::start(silo.clone()).await;
    let client = Client::default();
    let url = |p: &str| sidecar.url(&format!("/v1/files/public/{p}"));
    let cached = content(1, 50_000);
    assert_eq!(
        client
            .put(&url("cached.txt"), "text/plain", cached.clone())
            .await
            .unwrap()
            .status,
        StatusCode::CREATED
    );
    assert_eq!(client.get(&url("cached.txt"), &[]).await.unwrap().body, cached);
    let uncached = content(2, 50_000);
    assert_eq!(
        client
            .put(&url("uncached.txt"), "text/plain", uncached.clone())
            .await
            .unwrap()
            .status,
        StatusCode::CREATED
    );

    // SeaweedFS is killed (SIGKILL) once it has taken in 8 MiB of a 48 MiB
    // upload (one PutObject, so that its ETag is its MD5) while a write
    // streamed into the volume (as a plugin's is) has a multipart upload
    // with parts on their way.
    let streamed = {
        let store = silo.storage().volume("public").unwrap().store.clone();
        tokio::spawn(async move {
            let options = PutOptions {
                content_type: "application/octet-stream".into(),
                ..Default::default()
            };
            let mut write = store.start_upload("streamed.bin", options).await?;
            // Slow enough to be under way at the kill.
            for _ in 0..1000 {
                write
                    .write(Bytes::from(content(4, 1 << 20)), Default::default())
                    .await?;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            write.finish().await
        })
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    while s3::open_uploads_on(&direct, &bucket).await == 0 {
        assert!(Instant::now() < deadline, "the streamed write never reached SeaweedFS");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let big = content(3, 1 << 20).repeat(48);
    let before = server.bytes_read();
    let upload = {
        let (client, url, big) = (client.clone(), url("big.txt"), big.clone());
        tokio::spawn(async move { client.put(&url, "text/plain", big).await.unwrap() })
    };
    while server.bytes_read() < before + (8 << 20) {
        assert!(
            !upload.is_finished(),
            "the upload ended before SeaweedFS had read 8 MiB: {}",
            upload.await.unwrap().text()
        );
        assert!(Instant::now() < deadline, "the upload never reached SeaweedFS");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    server.kill();
    assert!(streamed.await.unwrap().is_err(), "the streamed write outlived S3");
    let reply = upload.await.unwrap();
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{}", reply.text());
    assert_eq!(reply.json()["error"]["code"], "unavailable", "{}", reply.text());
    assert_eq!(
        client.get(&url("big.txt"), &[]).await.unwrap().status,
        StatusCode::NOT_FOUND
    );

    // While S3 is down: cached reads are served, others fail cleanly.
    for _ in 0..3 {
        let reply = client.get(&url("cached.txt"), &[]).await.unwrap();
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.body, cached);
    }
    let ranged = client
        .get(&url("cached.txt"), &[("range", "bytes=10-19")])
        .await
        .unwrap();
    assert_eq!(ranged.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(ranged.body, &cached[10..20]);
    assert_eq!(
        client.get(&url("uncached.txt"), &[]).await.unwrap().status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    let bearer = format!("Bearer {TOKEN}");
    let listing = client
        .get(&sidecar.url("/v1/list/public"), &[("authorization", bearer.as_str())])
        .await
        .unwrap();
    assert_eq!(listing.status, StatusCode::OK, "listings come from the metadata cache");
    let down = client.put(&url("during.txt"), "text/plain", "x").await.unwrap();
    assert_eq!(down.status, StatusCode::SERVICE_UNAVAILABLE);
    // Not ready, naming the volume whose backend is away.
    let ready = client.get(&sidecar.url("/readyz"), &[]).await.unwrap();
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE, "{}", ready.text());
    assert!(ready.text().contains("volume 'public'"), "{}", ready.text());

    // S3 returns (same data, same port). Nothing partial is in the bucket,
    // asked directly.
    server.restart().await;
    let keys = s3::keys_on(&direct, &bucket).await;
    assert!(
        !keys.iter().any(|(k, _)| k.contains("big") || k.contains("streamed")),
        "{keys:?}"
    );
    assert!(keys.iter().any(|(k, _)| k == "public/uncached.txt"), "{keys:?}");
    assert_eq!(
        s3::open_uploads_on(&direct, &bucket).await,
        1,
        "the kill came mid-write: the streamed write's multipart upload is still open"
    );
    // A restarted SeaweedFS takes writes a little after it answers lists.
    let deadline = Instant::now() + Duration::from_secs(60);
    while let Err(e) = direct
        .put_object()
        .bucket(&bucket)
        .key("outside-the-volume/ready")
        .body(Bytes::from_static(b"ready").into())
        .send()
        .await
    {
        assert!(
            Instant::now() < deadline,
            "the restarted SeaweedFS takes no writes: {}",
            aws_sdk_s3::error::DisplayErrorContext(&e)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Silo recovers by itself: no restart, no refresh.
    let ready = client.get(&sidecar.url("/readyz"), &[]).await.unwrap();
    assert_eq!(ready.status, StatusCode::OK, "{}", ready.text());
    let reply = client.put(&url("big.txt"), "text/plain", big.clone()).await.unwrap();
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());
    assert_eq!(client.get(&url("big.txt"), &[]).await.unwrap().body, big);
    assert_eq!(client.get(&url("uncached.txt"), &[]).await.unwrap().body, uncached);
    let drift = maintenance::verify(silo.storage(), "public", &|_| {}).await.unwrap();
    assert!(drift.is_clean(), "{drift:?}");

    // The multipart upload the kill interrupted could not be aborted while
    // S3 was away; Silo aborts it once a write succeeds again.
    let deadline = Instant::now() + Duration::from_secs(30);
    while s3::open_uploads_on(&direct, &bucket).await > 0 {
        assert!(
            Instant::now() < deadline,
            "the interrupted multipart upload was never aborted"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn s3_volumes_give_presigned_urls_that_bypass_the_sidecar() {
    let (t, _) = TestSilo::on_s3("", &[], "presign").await.unwrap();
    let silo = Arc::new(t.silo);
    let sidecar = Sidecar::start(silo.clone()).await;
    let client = Client::default();
    let secret = b"private numbers".to_vec();
    let reply = client
        .put(&sidecar.url("/v1/files/private/q3.txt"), "text/plain", secret.clone())
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());

    let signed = client
        .get_as(&sidecar.url("/v1/sign/private/q3.txt?expires_in=60&via=s3"), TOKEN)
        .await
        .unwrap();
    assert_eq!(signed.status, StatusCode::OK, "{}", signed.text());
    let url = signed.json()["url"].as_str().unwrap().to_owned();
    assert!(url.starts_with(&s3::endpoint()), "straight to S3: {url}");
    let direct = client.get(&url, &[]).await.unwrap();
    assert_eq!(direct.status, StatusCode::OK, "{}", direct.text());
    assert_eq!(direct.body, secret);
    assert_eq!(direct.header("cache-control"), Some("private, no-store"));
    // Tampering breaks the signature.
    let other = url.replace("q3.txt", "q4.txt");
    assert_eq!(client.get(&other, &[]).await.unwrap().status, StatusCode::FORBIDDEN);

    // Active content stays an attachment when S3 serves it.
    let reply = client
        .put(
            &sidecar.url("/v1/files/private/page.html"),
            "text/html",
            "<html><script>x</script>",
        )
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());
    let signed = client
        .get_as(&sidecar.url("/v1/sign/private/page.html?via=s3"), TOKEN)
        .await
        .unwrap();
    let page = client.get(signed.json()["url"].as_str().unwrap(), &[]).await.unwrap();
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.header("content-disposition").unwrap().starts_with("attachment"));

    // Missing files and unknown modes are refused; the token is needed.
    let missing = client
        .get_as(&sidecar.url("/v1/sign/private/none.txt?via=s3"), TOKEN)
        .await
        .unwrap();
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    let bad = client
        .get_as(&sidecar.url("/v1/sign/private/q3.txt?via=ftp"), TOKEN)
        .await
        .unwrap();
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    let anonymous = client
        .get(&sidecar.url("/v1/sign/private/q3.txt?via=s3"), &[])
        .await
        .unwrap();
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn local_volumes_have_no_presigned_urls() {
    let t = TestSilo::new(GUARD_PIPELINE, &[]).await.unwrap();
    let silo = Arc::new(t.silo);
    let sidecar = Sidecar::start(silo).await;
    let client = Client::default();
    let reply = client
        .put(&sidecar.url("/v1/files/public/a.txt"), "text/plain", "hi")
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::CREATED);
    let reply = client
        .get_as(&sidecar.url("/v1/sign/public/a.txt?via=s3"), TOKEN)
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.json()["error"]["code"], "unsupported");
}

/// Bearer tokens of the credentials file's principals open the sidecar
/// within their grants; the write token keeps every right; a reload takes
/// a new token in and an old one out.
#[tokio::test]
async fn principals_tokens_open_only_their_grants() {
    let t = TestSilo::new("", &[]).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("credentials.toml");
    let entry = |name: &str, token: &str, grants: &str| {
        format!("[[principal]]\nname = \"{name}\"\ntoken = \"{token}\"\ngrants = {grants}\n\n")
    };
    std::fs::write(
        &file,
        entry(
            "editor",
            "editor-token-0123456789",
            r#"[{ volume = "public", access = ["read", "write"] }]"#,
        ) + &entry(
            "reader",
            "reader-token-0123456789",
            r#"[{ volume = "private", access = ["read"] }]"#,
        ),
    )
    .unwrap();
    let principals = Arc::new(
        silo_host::principals::PrincipalsHandle::open(Some(&file), vec!["public".into(), "private".into()]).unwrap(),
    );
    let silo = Arc::new(t.silo);
    let sidecar = Sidecar::start_with(
        silo.clone(),
        silo_host::serve::Tokens {
            write: TOKEN.into(),
            signing_key: b"test-signing-key".to_vec(),
            admin: None,
            principals: Some(principals.clone()),
        },
    )
    .await;
    let client = Client::default();
    let send = |method: Method, path: &str, token: &str, body: &'static str| {
        let (client, url, auth) = (client.clone(), sidecar.url(path), format!("Bearer {token}"));
        async move {
            client
                .send(
                    method,
                    &url,
                    &[("authorization", auth.as_str()), ("content-type", "text/plain")],
                    Bytes::from_static(body.as_bytes()),
                )
                .await
                .unwrap()
        }
    };
    // The editor writes public files, reported as its own; nothing else.
    let put = send(
        Method::PUT,
        "/v1/files/public/a.txt",
        "editor-token-0123456789",
        "by the editor",
    )
    .await;
    assert_eq!(put.status, StatusCode::CREATED, "{}", put.text());
    assert_eq!(put.json()["principal"], "editor");
    let put = send(Method::PUT, "/v1/files/private/a.txt", "editor-token-0123456789", "x").await;
    assert_eq!(put.status, StatusCode::FORBIDDEN, "{}", put.text());
    assert!(
        put.text()
            .contains("principal 'editor' may not write in volume 'private'"),
        "{}",
        put.text()
    );
    let delete = send(Method::DELETE, "/v1/files/public/a.txt", "editor-token-0123456789", "").await;
    assert_eq!(delete.status, StatusCode::FORBIDDEN);
    // The write token: every right, reported as `token`.
    let put = send(Method::PUT, "/v1/files/private/b.txt", TOKEN, "by the token").await;
    assert_eq!(put.status, StatusCode::CREATED);
    assert_eq!(put.json()["principal"], "token");
    // The reader reads private files and signs URLs for them, writes nothing.
    let read = send(Method::GET, "/v1/files/private/b.txt", "reader-token-0123456789", "").await;
    assert_eq!((read.status, read.text().as_str()), (StatusCode::OK, "by the token"));
    let signed = send(
        Method::GET,
        "/v1/sign/private/b.txt?expires_in=60",
        "reader-token-0123456789",
        "",
    )
    .await;
    assert_eq!(signed.status, StatusCode::OK);
    let listed = send(Method::GET, "/v1/list/private", "reader-token-0123456789", "").await;
    assert_eq!(listed.status, StatusCode::OK);
    let put = send(Method::PUT, "/v1/files/private/c.txt", "reader-token-0123456789", "x").await;
    assert_eq!(put.status, StatusCode::FORBIDDEN);
    let read = send(Method::GET, "/v1/files/private/b.txt", "editor-token-0123456789", "").await;
    assert_eq!(read.status, StatusCode::FORBIDDEN);
    // An unknown token is no one.
    let read = send(Method::GET, "/v1/files/private/b.txt", "nobody-token-0123456789", "").await;
    assert_eq!(read.status, StatusCode::UNAUTHORIZED);
    assert!(
        !t.dir.path().join("volumes/private/a.txt").exists() && !t.dir.path().join("volumes/private/c.txt").exists()
    );
    // Reloaded: the reader is gone, a new principal is in.
    std::fs::write(
        &file,
        entry(
            "late",
            "late-token-0123456789",
            r#"[{ volume = "private", access = ["read"] }]"#,
        ),
    )
    .unwrap();
    assert_eq!(principals.reload().unwrap(), 1);
    let read = send(Method::GET, "/v1/files/private/b.txt", "reader-token-0123456789", "").await;
    assert_eq!(read.status, StatusCode::UNAUTHORIZED);
    let read = send(Method::GET, "/v1/files/private/b.txt", "late-token-0123456789", "").await;
    assert_eq!(read.status, StatusCode::OK);
}

/// Start sending an upload of `total` bytes by hand: its headers and its
/// first `first` bytes.
async fn slow_upload(addr: std::net::SocketAddr, path: &str, total: usize, first: &[u8]) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "PUT {path} HTTP/1.1\r\nHost: silo\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/octet-stream\r\nContent-Length: {total}\r\n\r\n"
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    tcp.write_all(first).await.unwrap();
    tcp
}

/// SIGTERM's path: a draining node answers `/readyz` with 503 (while
/// `/healthz` still answers), takes no new connection, finishes the
/// upload under way and stops; an upload that outlasts the drain timeout
/// is cut off, with nothing stored, and the stop says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_node_is_unready_finishes_its_uploads_and_stops() {
    use silo_host::serve::{Drained, Tokens};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let client = Client::default();
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    for (drain, finishes) in [(Duration::from_secs(20), true), (Duration::from_millis(500), false)] {
        // A node drains once: a fresh one each time.
        let t = TestSilo::new("", &[]).await.unwrap();
        let silo = Arc::new(t.silo);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let tokens = Tokens {
            write: TOKEN.into(),
            signing_key: b"test-signing-key".to_vec(),
            admin: None,
            principals: None,
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(silo_host::serve::serve(
            listener,
            silo_host::serve::router(silo.clone(), tokens),
            4096,
            async move {
                let _ = stopped.await;
            },
            drain,
        ));
        let url = |p: &str| format!("http://{addr}{p}");
        let ready = client.get(&url("/readyz"), &[]).await.unwrap();
        assert_eq!((ready.status, ready.text().as_str()), (StatusCode::OK, "ready\n"));

        let path = if finishes {
            "/v1/files/private/docs/drained.bin"
        } else {
            "/v1/files/private/docs/cut.bin"
        };
        let mut upload = slow_upload(addr, path, data.len(), &data[..100_000]).await;
        silo.drain();
        let ready = client.get(&url("/readyz"), &[]).await.unwrap();
        assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE, "{}", ready.text());
        assert!(ready.text().contains("shutting down"), "{}", ready.text());
        assert_eq!(client.get(&url("/healthz"), &[]).await.unwrap().status, StatusCode::OK);
        let _ = stop.send(());
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            client.get(&url("/healthz"), &[]).await.is_err(),
            "a new connection was taken while draining"
        );
        if finishes {
            for piece in data[100_000..].chunks(100_000) {
                tokio::time::sleep(Duration::from_millis(300)).await;
                upload.write_all(piece).await.unwrap();
            }
            let mut answer = Vec::new();
            let _ = upload.read_to_end(&mut answer).await;
            let answer = String::from_utf8_lossy(&answer);
            assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
            assert_eq!(server.await.unwrap().unwrap(), Drained::Finished);
            let stored = silo
                .storage()
                .host_session()
                .read(&silo.storage().location("private", "docs/drained.bin").unwrap())
                .await
                .unwrap();
            assert!(stored == data, "the drained upload's bytes differ");
        } else {
            // The rest never comes: the drain timeout ends the wait.
            let started = Instant::now();
            // Bounded here too, so a drain that never ends fails the test
            // instead of hanging it.
            let stopped = tokio::time::timeout(Duration::from_secs(10), server)
                .await
                .expect("the drain timeout did not end the server");
            assert_eq!(stopped.unwrap().unwrap(), Drained::TimedOut);
            assert!(started.elapsed() < Duration::from_secs(5));
            drop(upload);
            tokio::time::sleep(Duration::from_millis(200)).await;
            let cut = silo.storage().location("private", "docs/cut.bin").unwrap();
            assert!(
                silo.storage().host_session().stat(&cut).await.is_err(),
                "a cut-off upload was stored"
            );
        }
        assert!(silo.draining());
    }
}

/// The OpenAPI document served at `/v1/openapi.json` is the router's: every
/// route the router declares is documented with its methods, every
/// documented operation reaches a handler (never the `no-route` fallback
/// nor 405), and every operation that can fail documents its error body.
#[tokio::test]
async fn the_openapi_document_is_the_routers() {
    let t = TestSilo::new("", &[]).await.unwrap();
    let sidecar = Sidecar::start(Arc::new(t.silo)).await;
    let client = Client::default();
    let served = client.get(&sidecar.url("/v1/openapi.json"), &[]).await.unwrap();
    assert_eq!(served.status, StatusCode::OK);
    assert_eq!(served.header("content-type"), Some("application/json"));
    let doc = served.json();
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();

    // The router's routes, from its source: `.route("PATTERN", get(..).put(..))`.
    let source = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../host/src/serve/sidecar.rs")).unwrap();
    let mut routed = Vec::new();
    for line in source.lines().map(str::trim).filter(|l| l.starts_with(".route(\"")) {
        let pattern = line[8..].split('"').next().unwrap().replace("{*", "{");
        let mut methods: Vec<String> = ["get", "put", "post", "delete"]
            .into_iter()
            .filter(|m| {
                line.contains(&format!(" {m}(")) || line.contains(&format!(".{m}(")) || line.contains(&format!("({m}("))
            })
            .map(str::to_owned)
            .collect();
        assert!(!methods.is_empty(), "no method in: {line}");
        methods.sort();
        routed.push((pattern, methods));
    }
    assert!(routed.len() >= 12, "{routed:?}");
    for (pattern, methods) in &routed {
        let documented = paths
            .get(pattern)
            .unwrap_or_else(|| panic!("{pattern} is routed but not documented"));
        for method in methods {
            assert!(
                documented.get(method).is_some(),
                "{method} {pattern} is routed but not documented"
            );
        }
    }
    for (pattern, item) in paths {
        let routed_methods = routed
            .iter()
            .find(|(p, _)| p == pattern)
            .map(|(_, m)| m.clone())
            .unwrap_or_else(|| panic!("{pattern} is documented but not routed"));
        for (method, operation) in item.as_object().unwrap() {
            if method == "parameters" {
                continue;
            }
            // axum answers HEAD wherever it answers GET.
            let base = if method == "head" { "get" } else { method.as_str() };
            assert!(
                routed_methods.iter().any(|m| m == base),
                "{method} {pattern} is documented but not routed"
            );
            let url = sidecar.url(
                &pattern
                    .replace("{volume}", "public")
                    .replace("{path}", "docs/a.txt")
                    .replace("{prefix}", "docs")
                    .replace("{style}", "thumbnail"),
            );
            let reply = client
                .send(method.to_uppercase().parse().unwrap(), &url, &[], Bytes::new())
                .await
                .unwrap();
            assert_ne!(reply.status, StatusCode::METHOD_NOT_ALLOWED, "{method} {pattern}");
            if reply.status == StatusCode::NOT_FOUND && method != "head" {
                assert_ne!(reply.json()["error"]["code"], "no-route", "{method} {pattern}");
            }
            // What it answered is documented.
            let responses = operation["responses"].as_object().unwrap();
            assert!(
                responses.contains_key(reply.status.as_str()),
                "{method} {pattern} answered {} ({}), which is not documented",
                reply.status,
                reply.text()
            );
            // HEAD answers carry no body.
            let public = ["/healthz", "/v1/openapi.json"].contains(&pattern.as_str());
            if !public && method != "head" {
                let has_error = responses.iter().any(|(code, r)| {
                    (code.starts_with('4') || code.starts_with('5'))
                        && r.to_string().contains("#/components/schemas/Error")
                });
                assert!(has_error, "{method} {pattern} documents no error body");
            }
        }
    }
}

/// schemathesis (installed by `tests/run`) generates requests for every
/// operation of the OpenAPI document, bounded in time, against a live
/// sidecar: no 5xx, and every status, content type, header and body is the
/// document's. The admin routes are fuzzed with the admin token, the rest
/// with the write token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_the_sidecar_true_to_its_document() {
    let st = std::env::var("SILO_TEST_SCHEMATHESIS")
        .expect("SILO_TEST_SCHEMATHESIS is not set: run the tests with tests/run, which installs schemathesis");
    let t = TestSilo::new(silo_tests::EXAMPLE_PIPELINE, &[]).await.unwrap();
    let sidecar = Sidecar::start(Arc::new(t.silo)).await;
    let work = tempfile::tempdir().unwrap();
    for (token, paths) in [(TOKEN, "--exclude-path-regex"), (ADMIN_TOKEN, "--include-path-regex")] {
        let st = st.clone();
        let schema = sidecar.url("/v1/openapi.json");
        let dir = work.path().to_owned();
        let out = tokio::task::spawn_blocking(move || {
            std::process::Command::new(st)
                .arg("run")
                .arg(schema)
                .args(["-H", &format!("Authorization: Bearer {token}")])
                .args([
                    "--checks",
                    "not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance",
                ])
                .args(["--phases", "coverage,fuzzing", "--max-time", "20", "--workers", "2"])
                .args([paths, "^/(metrics|v1/admin)"])
                .env("NO_COLOR", "1")
                .current_dir(dir)
                .output()
                .expect("run schemathesis")
        })
        .await
        .unwrap();
        let report = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "schemathesis found problems:\n{report}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(report.contains("passed"), "{report}");
    }
}
