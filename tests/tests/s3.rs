//! The `s3` backend against a real S3 server (SeaweedFS, started by
//! `tests/run`): multipart streaming, conditional writes, volumes sharing a
//! bucket, objects written behind Silo's back, refresh, a server that is
//! down, and plugins running on S3 volumes.

use std::time::Duration;

use aws_sdk_s3::primitives::ByteStream as SdkBody;
use bytes::Bytes;
use sha2::{Digest, Sha256};
use silo_host::cache::Entry;
use silo_host::maintenance::{refresh, verify};
use silo_host::store::{Condition, ObjectStore, PutOptions, S3Store};
use silo_host::{Status, StorageError};
use silo_tests::{EXAMPLE_PIPELINE, PROBE, TestSilo, jpeg, probe_stage, s3};
use tokio::io::AsyncReadExt;

fn quiet(_: u64) {}

fn opts(content_type: &str) -> PutOptions {
    PutOptions {
        content_type: content_type.into(),
        ..Default::default()
    }
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 253) as u8).collect()
}

/// Multipart uploads are aborted in the background; give that a moment.
async fn no_open_uploads(bucket: &str) {
    for _ in 0..50 {
        if s3::open_uploads(bucket).await == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("multipart uploads were left open in {bucket}");
}

#[tokio::test]
async fn streamed_writes_use_multipart_and_abandoned_ones_leave_nothing() {
    let bucket = s3::bucket("multipart").await;
    let mut settings = s3::settings(&bucket, "vol");
    settings.part_size = 5 << 20;
    let store = S3Store::connect(&settings).await.unwrap();

    // Three parts (5 + 5 + 2 MiB), fed in odd-sized chunks.
    let data = pattern(12 * 1024 * 1024 + 777);
    let mut upload = store
        .start_upload("big/file.bin", opts("application/x-test"))
        .await
        .unwrap();
    for chunk in data.chunks(1_000_003) {
        upload
            .write(Bytes::copy_from_slice(chunk), Default::default())
            .await
            .unwrap();
    }
    assert_eq!(
        store.head("big/file.bin").await.err(),
        Some(StorageError::NotFound),
        "nothing is visible before finish"
    );
    let meta = upload.finish().await.unwrap();
    assert_eq!(meta.size, data.len() as u64);
    assert!(meta.etag.ends_with("-3"), "a three-part upload: {}", meta.etag);
    let head = store.head("big/file.bin").await.unwrap();
    assert_eq!((head.size, head.etag.as_str()), (meta.size, meta.etag.as_str()));
    assert_eq!(head.content_type, "application/x-test");
    let (_, mut body) = store.get("big/file.bin", None).await.unwrap();
    let mut back = Vec::new();
    body.read_to_end(&mut back).await.unwrap();
    assert!(
        Sha256::digest(&back) == Sha256::digest(&data),
        "the object differs from what was written"
    );

    // Abandoned after one part was sent: aborted, no object.
    let mut abandoned = store
        .start_upload("big/gone.bin", opts("application/x-test"))
        .await
        .unwrap();
    abandoned
        .write(Bytes::from(pattern(6 << 20)), Default::default())
        .await
        .unwrap();
    drop(abandoned);
    no_open_uploads(&bucket).await;
    assert_eq!(store.head("big/gone.bin").await.err(), Some(StorageError::NotFound));

    // A conditional multipart write that loses: the right error, no leftovers.
    let mut conflict = store
        .start_upload(
            "big/file.bin",
            PutOptions {
                condition: Some(Condition::CreateOnly),
                ..opts("application/x-test")
            },
        )
        .await
        .unwrap();
    conflict
        .write(Bytes::from(pattern(6 << 20)), Default::default())
        .await
        .unwrap();
    assert_eq!(conflict.finish().await.err(), Some(StorageError::AlreadyExists));
    let mut stale = store
        .start_upload(
            "big/file.bin",
            PutOptions {
                condition: Some(Condition::IfMatch("0123456789abcdef".into())),
                ..opts("application/x-test")
            },
        )
        .await
        .unwrap();
    stale
        .write(Bytes::from(pattern(6 << 20)), Default::default())
        .await
        .unwrap();
    assert_eq!(stale.finish().await.err(), Some(StorageError::PreconditionFailed));
    no_open_uploads(&bucket).await;
    assert_eq!(
        store.head("big/file.bin").await.unwrap().etag,
        meta.etag,
        "the object is unchanged"
    );
    assert_eq!(
        s3::keys(&bucket).await,
        [("vol/big/file.bin".to_owned(), data.len() as u64)]
    );
}

#[tokio::test]
async fn volumes_share_one_bucket_under_prefixes_or_use_two_buckets() -> anyhow::Result<()> {
    // One bucket, two prefixes.
    let (t, bucket) = TestSilo::on_s3("", &[], "one-bucket").await?;
    let storage = t.silo.storage();
    let host = storage.host_session();
    for volume in ["public", "private"] {
        host.write(
            &storage.location(volume, "a/b.txt")?,
            Bytes::from(volume),
            opts("text/plain"),
        )
        .await?;
    }
    assert_eq!(
        s3::keys(&bucket).await,
        [("private/a/b.txt".to_owned(), 7), ("public/a/b.txt".to_owned(), 6)]
    );
    assert_eq!(host.read(&storage.location("private", "a/b.txt")?).await?, b"private");

    // Two buckets, as Zulip recommends.
    let (public, private) = (s3::bucket("two-public").await, s3::bucket("two-private").await);
    let volumes = format!(
        "{}{}",
        s3::volume_toml("public", &public, "", "visibility = \"public\""),
        s3::volume_toml("private", &private, "", "")
    );
    let t = TestSilo::with_volumes("", &[], &volumes).await?;
    let storage = t.silo.storage();
    let host = storage.host_session();
    for volume in ["public", "private"] {
        host.write(
            &storage.location(volume, "x.txt")?,
            Bytes::from(volume),
            opts("text/plain"),
        )
        .await?;
    }
    assert_eq!(s3::keys(&public).await, [("x.txt".to_owned(), 6)]);
    assert_eq!(s3::keys(&private).await, [("x.txt".to_owned(), 7)]);
    Ok(())
}

#[tokio::test]
async fn writes_behind_silos_back_appear_at_once_read_through_and_after_refresh_canonical() -> anyhow::Result<()> {
    let bucket = s3::bucket("behind").await;
    let volumes = format!(
        "{}{}",
        s3::volume_toml("canon", &bucket, "canon", ""),
        s3::volume_toml("rt", &bucket, "rt", "cache = \"read-through\"")
    );
    let t = TestSilo::with_volumes("", &[], &volumes).await?;
    let storage = t.silo.storage();
    let host = storage.host_session();
    // Another server, or a tool, writes with a plain S3 client.
    let client = s3::client();
    for key in ["canon/photos/new.jpg", "rt/photos/new.jpg"] {
        client
            .put_object()
            .bucket(&bucket)
            .key(key)
            .content_type("image/jpeg")
            .body(SdkBody::from(jpeg(16, 16)))
            .send()
            .await?;
    }
    let rt = storage.location("rt", "photos/new.jpg")?;
    let stat = host.stat(&rt).await?;
    assert_eq!(
        (stat.size, stat.content_type.as_str()),
        (jpeg(16, 16).len() as u64, "image/jpeg")
    );
    assert_eq!(host.read(&rt).await?, jpeg(16, 16));

    let canon = storage.location("canon", "photos/new.jpg")?;
    assert!(!host.exists(&canon).await?, "canonical: the cache is the listing");
    assert_eq!(host.read(&canon).await.err(), Some(StorageError::NotFound));
    let drift = verify(storage, "canon", &quiet).await?;
    assert_eq!(drift.missing, ["photos/new.jpg"]);
    let report = refresh(storage, "canon", &quiet).await?;
    assert_eq!((report.files, report.added), (1, 1));
    assert!(host.exists(&canon).await?);
    assert_eq!(host.read(&canon).await?, jpeg(16, 16));
    assert!(verify(storage, "canon", &quiet).await?.is_clean());

    // Deleted behind Silo's back: drift until refreshed.
    client
        .delete_object()
        .bucket(&bucket)
        .key("canon/photos/new.jpg")
        .send()
        .await?;
    assert_eq!(verify(storage, "canon", &quiet).await?.extra, ["photos/new.jpg"]);
    refresh(storage, "canon", &quiet).await?;
    assert!(!host.exists(&canon).await?);
    Ok(())
}

#[tokio::test]
async fn keys_s3_allows_and_the_cache_keeps() -> anyhow::Result<()> {
    let bucket = s3::bucket("keys").await;
    let volumes = format!(
        "{}{}",
        s3::volume_toml("whole", &bucket, "", ""),
        // Prefixes of other volumes may not overlap a whole-bucket volume,
        // so the prefixed one gets a bucket of its own.
        s3::volume_toml("prefixed", &s3::bucket("keys-prefixed").await, "site/uploads", "")
    );
    let t = TestSilo::with_volumes("", &[], &volumes).await?;
    let storage = t.silo.storage();
    let host = storage.host_session();
    // A file `a` beside a file `a/b`: S3 holds both, and so does the cache.
    for path in ["a", "a/b", "📷/🌅 sunset.jpg"] {
        host.write(
            &storage.location("whole", path)?,
            Bytes::from(path.to_owned()),
            opts("text/plain"),
        )
        .await?;
    }
    // 1024 bytes (SeaweedFS, like most filesystems, caps a segment at 255).
    let longest = format!("{}/{}", vec!["é".repeat(100); 5].join("/"), "d".repeat(19));
    assert_eq!(longest.len(), 1024);
    host.write(
        &storage.location("whole", &longest)?,
        Bytes::from_static(b"long"),
        opts("text/plain"),
    )
    .await?;
    assert_eq!(host.read(&storage.location("whole", "a")?).await?, b"a");
    assert_eq!(host.read(&storage.location("whole", "a/b")?).await?, b"a/b");
    assert_eq!(host.read(&storage.location("whole", &longest)?).await?, b"long");
    let root = host.list("whole", "", false, None, 0).await?;
    let names: Vec<String> = root
        .entries
        .iter()
        .map(|e| match e {
            Entry::File { path, .. } => format!("file {path}"),
            Entry::Dir { path } => format!("dir {path}"),
        })
        .collect();
    assert_eq!(
        names,
        ["file a", "dir a", &format!("dir {}", "é".repeat(100)), "dir 📷"]
    );
    let refreshed = refresh(storage, "whole", &quiet).await?;
    assert_eq!((refreshed.files, refreshed.added, refreshed.removed), (4, 0, 0));
    assert!(verify(storage, "whole", &quiet).await?.is_clean());

    // The volume's prefix counts toward S3's 1024 bytes.
    let err = host
        .write(
            &storage.location("prefixed", &longest)?,
            Bytes::from_static(b"x"),
            opts("text/plain"),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StorageError::InvalidPath(m) if m.contains("prefix")),
        "{err}"
    );
    Ok(())
}

#[tokio::test]
async fn refresh_lists_a_nested_bucket_in_parallel_and_misses_nothing() -> anyhow::Result<()> {
    let bucket = s3::bucket("refresh").await;
    let client = s3::client();
    let mut expected = Vec::new();
    let mut puts = tokio::task::JoinSet::new();
    for i in 0..240 {
        let key = match i % 4 {
            0 => format!("top-{i}.txt"),
            1 => format!("d{}/f{i}.txt", i % 7),
            2 => format!("d{}/s{}/f{i}.txt", i % 7, i % 3),
            _ => format!("deep/er/and/deeper/{}/f{i}.txt", i % 5),
        };
        expected.push(key.clone());
        let (client, bucket) = (client.clone(), bucket.clone());
        puts.spawn(async move {
            client
                .put_object()
                .bucket(&bucket)
                .key(format!("vol/{key}"))
                .body(SdkBody::from(key.into_bytes()))
                .send()
                .await
                .map(|_| ())
        });
    }
    while let Some(put) = puts.join_next().await {
        put??;
    }
    // Outside the volume's prefix: not the volume's.
    client
        .put_object()
        .bucket(&bucket)
        .key("volume-not/x")
        .body(SdkBody::from_static(b"x"))
        .send()
        .await?;
    expected.sort();

    let t = TestSilo::with_volumes("", &[], &s3::volume_toml("v", &bucket, "vol", "")).await?;
    let storage = t.silo.storage();
    let seen = std::sync::Mutex::new(0);
    let report = refresh(storage, "v", &|n| *seen.lock().unwrap() = n).await?;
    assert_eq!(report.files, 240);
    assert_eq!(*seen.lock().unwrap(), 240, "progress reached the total");
    let cached: Vec<String> = storage
        .cache()
        .all_files("v")
        .await?
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(cached, expected);
    assert!(verify(storage, "v", &quiet).await?.is_clean());
    Ok(())
}

#[tokio::test]
async fn a_server_that_is_down_gives_unavailable_to_hosts_and_plugins() -> anyhow::Result<()> {
    // Nothing listens on port 9 of loopback.
    let mut settings = s3::settings("down", "");
    settings.endpoint_url = Some("http://127.0.0.1:9".into());
    settings.max_attempts = 2;
    let store = S3Store::connect(&settings).await?;
    for err in [
        store.head("x").await.unwrap_err(),
        store
            .put("x", Bytes::from_static(b"x"), &opts("text/plain"))
            .await
            .unwrap_err(),
        store.list("", None, 10).await.unwrap_err(),
    ] {
        assert!(
            matches!(&err, StorageError::Unavailable(m) if m.contains("S3")),
            "{err}"
        );
    }

    // A plugin asking about a read-through volume on that server.
    let volumes = "[volumes.public]\nbackend = \"memory\"\nvisibility = \"public\"\n\
                   [volumes.remote]\nbackend = \"s3\"\nbucket = \"down\"\nendpoint_url = \"http://127.0.0.1:9\"\n\
                   cache = \"read-through\"\n";
    let pipeline = r#"
[[plugins]]
name = "probe"
component = "probe.wasm"
sha256 = "{sha256:probe.wasm}"
settings = { mode = "stat", volume = "remote", path = "x.jpg" }
grants = [{ volume = "remote", access = ["read"] }]
"#;
    let t = TestSilo::with_volumes(pipeline, &[("probe.wasm", PROBE)], volumes).await?;
    let report = t.upload("public/up.txt", b"hi", None).await?;
    let reason = report.reason.unwrap_or_default();
    assert!(reason.starts_with("error Error::Unavailable"), "{reason}");
    assert!(reason.contains("127.0.0.1:9") || reason.contains("S3"), "{reason}");
    Ok(())
}

#[tokio::test]
async fn plugins_stream_through_s3_volumes_and_derive_styles() -> anyhow::Result<()> {
    let pipeline = r#"
[[plugins]]
name = "probe"
component = "probe.wasm"
sha256 = "{sha256:probe.wasm}"
settings = { mode = "stream-copy" }
limits = { max_object_bytes = 67108864 }
grants = [{ volume = "public", access = ["read", "write"] }]
"#;
    let (t, bucket) = TestSilo::on_s3(pipeline, &[("probe.wasm", PROBE)], "stream").await?;
    // More than two 5 MiB parts, through the guest's output-stream.
    let data = pattern(11 * 1024 * 1024 + 4321);
    let report = t.upload("public/blob.bin", &data, None).await?;
    assert_eq!(report.status, Status::Accepted, "{report:#?}");
    let copy = s3::client()
        .get_object()
        .bucket(&bucket)
        .key("public/copies/blob.bin")
        .send()
        .await?
        .body
        .collect()
        .await?
        .into_bytes();
    assert!(copy == data, "the streamed copy differs");
    assert_eq!(report.derivatives[0].size, data.len() as u64);
    assert_eq!(s3::open_uploads(&bucket).await, 0);

    let (t, bucket) = TestSilo::on_s3(EXAMPLE_PIPELINE, &[], "styles").await?;
    let report = t.upload("public/photos/p.jpg", &jpeg(800, 600), None).await?;
    assert_eq!(report.status, Status::Accepted, "{report:#?}");
    let keys: Vec<String> = s3::keys(&bucket).await.into_iter().map(|(k, _)| k).collect();
    assert_eq!(
        keys,
        [
            "public/photos/p.jpg",
            "public/styles/medium/photos/p.jpg",
            "public/styles/thumbnail/photos/p.jpg"
        ]
    );
    assert!(verify(t.silo.storage(), "public", &quiet).await?.is_clean());
    Ok(())
}

#[tokio::test]
async fn a_plugin_losing_a_conditional_write_is_told_so() -> anyhow::Result<()> {
    let pipeline = r#"
[[plugins]]
name = "probe"
component = "probe.wasm"
sha256 = "{sha256:probe.wasm}"
settings = { mode = "conditional" }
grants = [{ volume = "public", access = ["read", "write"] }]
"#;
    let (t, bucket) = TestSilo::on_s3(pipeline, &[("probe.wasm", PROBE)], "conditional").await?;
    let report = t.upload("public/c.txt", b"upload", None).await?;
    assert_eq!(
        report.reason.as_deref(),
        Some(
            "again=Error::AlreadyExists stale=Error::PreconditionFailed streamed=Error::AlreadyExists fresh=ok now=five"
        )
    );
    // The rejected upload's writes were rolled back.
    assert!(s3::keys(&bucket).await.is_empty());
    Ok(())
}

#[tokio::test]
async fn multipart_uploads_nobody_finished_are_swept_under_the_volumes_prefix_only() {
    let (t, bucket) = TestSilo::on_s3("", &[], "sweep").await.unwrap();
    let client = s3::client();
    let mut ids = Vec::new();
    for key in ["public/a.bin", "public/deep/b.bin", "private/c.bin", "elsewhere/d.bin"] {
        let created = client
            .create_multipart_upload()
            .bucket(&bucket)
            .key(key)
            .send()
            .await
            .unwrap();
        ids.push(created.upload_id().unwrap().to_owned());
    }
    // A refresh removes only what is over a day old: nothing yet.
    let report = refresh(t.silo.storage(), "public", &|_| {}).await.unwrap();
    assert_eq!((report.abandoned_removed, report.abandoned_error), (0, None));
    assert_eq!(s3::open_uploads(&bucket).await, 4);

    // Older than the cutoff: the volume's own go, nothing outside its
    // prefix, and not one an open upload of the S3 endpoint puts its parts
    // into, however old.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let store = S3Store::connect(&s3::settings(&bucket, "public")).await.unwrap();
    let open = std::collections::HashSet::from([ids[1].clone()]);
    assert_eq!(store.sweep_abandoned(Duration::ZERO, &open).await.unwrap(), 1);
    let left = client.list_multipart_uploads().bucket(&bucket).send().await.unwrap();
    let mut keys: Vec<&str> = left.uploads().iter().filter_map(|u| u.key()).collect();
    keys.sort();
    assert_eq!(keys, ["elsewhere/d.bin", "private/c.bin", "public/deep/b.bin"]);
    assert_eq!(
        store
            .sweep_abandoned(Duration::ZERO, &Default::default())
            .await
            .unwrap(),
        1
    );
}

#[tokio::test]
async fn plugins_get_presigned_urls_for_private_files_they_may_read() -> anyhow::Result<()> {
    // One probe stage per case, each judging its own content type.
    let cases = [
        ("text", "shared/q3.txt", 60),
        ("html", "shared/page.html", 60),
        ("denied", "secret/salaries.txt", 60),
        ("missing", "shared/none.txt", 60),
        ("zero", "shared/q3.txt", 0),
        ("long", "shared/q3.txt", 7 * 24 * 3600 + 1),
        ("week", "shared/q3.txt", 7 * 24 * 3600),
        ("short", "shared/q3.txt", 2),
    ];
    let pipeline: String = cases
        .iter()
        .map(|(case, path, expires)| {
            probe_stage(
                &format!("url-{case}"),
                &format!("text/x-{case}"),
                &format!(r#"mode = "url", volume = "private", path = "{path}", expires = {expires}"#),
                r#"{ volume = "private", prefix = "shared", access = ["read"] }"#,
            )
        })
        .collect();
    let (t, _) = TestSilo::on_s3(&pipeline, &[("probe.wasm", PROBE)], "plugin-url").await?;
    let storage = t.silo.storage();
    let host = storage.host_session();
    for (path, body, content_type) in [
        ("shared/q3.txt", "quarterly numbers", "text/plain"),
        ("shared/page.html", "<html><script>x</script>", "text/html"),
        ("secret/salaries.txt", "nobody's business", "text/plain"),
    ] {
        host.write(
            &storage.location("private", path)?,
            Bytes::from(body),
            opts(content_type),
        )
        .await?;
    }
    let asked = |case: &'static str| {
        let t = &t;
        async move {
            let report = t
                .upload(
                    &format!("public/ask-{case}.txt"),
                    b"hi",
                    Some(&format!("text/x-{case}")),
                )
                .await
                .unwrap();
            assert_eq!(report.status, Status::Rejected, "{report:#?}");
            report.reason.unwrap()
        }
    };
    let client = silo_tests::http::Client::default();

    let reason = asked("text").await;
    let url = reason.strip_prefix("url=").unwrap_or_else(|| panic!("{reason}"));
    assert!(url.starts_with(&s3::endpoint()), "straight to S3: {url}");
    let direct = client.get(url, &[]).await?;
    assert_eq!(direct.status, 200, "{}", direct.text());
    assert_eq!(direct.text(), "quarterly numbers");
    assert_eq!(direct.header("cache-control"), Some("private, no-store"));
    assert_eq!(direct.header("content-type"), Some("text/plain"));
    assert_eq!(client.get(&url.replace("q3.txt", "q4.txt"), &[]).await?.status, 403);
    assert_eq!(query_value(url, "X-Amz-Expires"), Some("60"), "{url}");
    // A lifetime moved in the URL breaks its signature.
    let longer = url.replace("X-Amz-Expires=60", "X-Amz-Expires=600");
    assert_eq!(client.get(&longer, &[]).await?.status, 403, "{longer}");

    let reason = asked("week").await;
    let week = reason.strip_prefix("url=").unwrap_or_else(|| panic!("{reason}"));
    assert_eq!(query_value(week, "X-Amz-Expires"), Some("604800"), "{week}");
    assert_eq!(client.get(week, &[]).await?.status, 200);

    // A URL works until its lifetime is over, then S3 refuses it.
    let reason = asked("short").await;
    let short = reason
        .strip_prefix("url=")
        .unwrap_or_else(|| panic!("{reason}"))
        .to_owned();
    assert_eq!(query_value(&short, "X-Amz-Expires"), Some("2"), "{short}");
    let fresh = client.get(&short, &[]).await?;
    assert_eq!(fresh.status, 200);
    assert_eq!(fresh.text(), "quarterly numbers");
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let stale = client.get(&short, &[]).await?;
    assert_eq!(stale.status, 403, "an expired URL was served: {}", stale.text());

    let reason = asked("html").await;
    let page = client.get(reason.strip_prefix("url=").unwrap(), &[]).await?;
    assert_eq!(page.status, 200);
    assert!(page.header("content-disposition").unwrap().starts_with("attachment"));

    assert_eq!(asked("denied").await, "error access-denied");
    assert_eq!(asked("missing").await, "error not-found");
    assert_eq!(asked("zero").await, "error unsupported");
    assert_eq!(asked("long").await, "error unsupported");
    Ok(())
}

/// The value of `name` in `url`'s query.
fn query_value<'a>(url: &'a str, name: &str) -> Option<&'a str> {
    url.split_once('?')?
        .1
        .split('&')
        .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
}

/// The scratch space (`.silo-tmp/`, where multipart parts wait) is beside
/// the volume's objects, never among them: the volume's store refuses its
/// keys and leaves it out of listings and splits, so a refresh never takes
/// a part for a file.
#[tokio::test]
async fn the_scratch_space_is_not_part_of_the_volume() {
    let bucket = s3::bucket("scratch").await;
    let store = S3Store::connect(&s3::settings(&bucket, "vol")).await.unwrap();
    let scratch = store.scratch().expect("an S3 volume has a shared scratch store");
    scratch
        .put(
            "upload/1-abc",
            Bytes::from_static(b"part"),
            &opts("application/octet-stream"),
        )
        .await
        .unwrap();
    store
        .put("kept.txt", Bytes::from_static(b"file"), &opts("text/plain"))
        .await
        .unwrap();
    let stored: Vec<String> = s3::keys(&bucket).await.into_iter().map(|(k, _)| k).collect();
    assert_eq!(stored, ["vol/.silo-tmp/upload/1-abc", "vol/kept.txt"]);
    let listed: Vec<String> = store
        .list("", None, 100)
        .await
        .unwrap()
        .objects
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(listed, ["kept.txt"]);
    let (files, dirs) = store.split("").await.unwrap().unwrap();
    assert_eq!(files.len(), 1);
    assert!(dirs.is_empty(), "{dirs:?}");
    for key in [".silo-tmp/upload/1-abc", ".silo-tmp"] {
        assert!(
            matches!(store.get(key, None).await, Err(StorageError::InvalidPath(_))),
            "{key}"
        );
        assert!(matches!(
            store.put(key, Bytes::from_static(b"x"), &opts("text/plain")).await,
            Err(StorageError::InvalidPath(_))
        ));
    }
    let scratch_listed = scratch.list("", None, 100).await.unwrap().objects;
    assert_eq!(scratch_listed.len(), 1);
    assert_eq!(scratch_listed[0].0, "upload/1-abc");
}
