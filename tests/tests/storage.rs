//! The object stores and the storage core. Each test body runs against
//! every backend; a watching wrapper proves which calls reach the backend.

use std::sync::Arc;

use bytes::Bytes;
use silo_host::StorageError;
use silo_host::cache::{Entry, MetadataCache};
use silo_host::store::{
    ByteRange, ByteStream, Condition, KeyPage, LocalStore, MemoryStore, ObjectStore, PutOptions, S3Store,
};
use silo_host::vfs::{CacheMode, Storage};
use silo_tests::watched::Watched;
use silo_tests::{bare_volume, s3};
use tokio::io::AsyncReadExt;

/// Every backend under test, with a name for messages. The S3 one is a
/// volume under a prefix of a new bucket on the shared server.
async fn backends() -> Vec<(&'static str, Arc<dyn ObjectStore>, Option<tempfile::TempDir>)> {
    let dir = tempfile::tempdir().unwrap();
    let local = LocalStore::open(dir.path()).unwrap();
    let bucket = s3::bucket("conformance").await;
    let s3 = S3Store::connect(&s3::settings(&bucket, "volume")).await.unwrap();
    vec![
        ("memory", Arc::new(MemoryStore::new()), None),
        ("local", Arc::new(local), Some(dir)),
        ("s3", Arc::new(s3), None),
    ]
}

fn opts(content_type: &str) -> PutOptions {
    PutOptions {
        content_type: content_type.into(),
        ..Default::default()
    }
}

async fn body(stream: ByteStream) -> Vec<u8> {
    let mut out = Vec::new();
    let mut stream = stream;
    stream.read_to_end(&mut out).await.unwrap();
    out
}

#[tokio::test]
async fn put_get_head_and_ranges() {
    for (name, store, _dir) in backends().await {
        let meta = store
            .put("a/b.txt", Bytes::from_static(b"hello world"), &opts("text/plain"))
            .await
            .unwrap();
        assert_eq!(meta.size, 11, "{name}");
        assert_eq!(store.head("a/b.txt").await.unwrap().etag, meta.etag, "{name}");
        let (_, all) = store.get("a/b.txt", None).await.unwrap();
        assert_eq!(body(all).await, b"hello world", "{name}");
        let (_, part) = store
            .get("a/b.txt", Some(ByteRange { offset: 6, length: 100 }))
            .await
            .unwrap();
        assert_eq!(body(part).await, b"world", "{name}");
        let (_, past) = store
            .get("a/b.txt", Some(ByteRange { offset: 50, length: 5 }))
            .await
            .unwrap();
        assert!(body(past).await.is_empty(), "{name}");
        assert_eq!(
            store.head("a").await.err(),
            Some(StorageError::NotFound),
            "{name}: a directory is no file"
        );
        assert_eq!(store.head("nope").await.err(), Some(StorageError::NotFound), "{name}");

        let again = store
            .put("a/b.txt", Bytes::from_static(b"HELLO"), &opts("text/plain"))
            .await
            .unwrap();
        assert_ne!(again.etag, meta.etag, "{name}: a new write gives a new etag");
    }
}

/// Every backend makes the ETag S3 makes, the MD5 of the bytes, whichever
/// way they arrive; where the backend makes its own, it takes the one a
/// writer computed (a multipart object's) and reads it back.
#[tokio::test]
async fn etags_are_the_md5_of_the_bytes() {
    use md5::Digest;
    let md5 = |b: &[u8]| hex::encode(md5::Md5::digest(b));
    for (name, store, _dir) in backends().await {
        let put = store
            .put("put.txt", Bytes::from_static(b"one request"), &opts("text/plain"))
            .await
            .unwrap();
        assert_eq!(put.etag, md5(b"one request"), "{name}: put");
        let mut upload = store.start_upload("streamed.txt", opts("text/plain")).await.unwrap();
        for chunk in [&b"in "[..], b"three ", b"chunks"] {
            upload
                .write(Bytes::copy_from_slice(chunk), Default::default())
                .await
                .unwrap();
        }
        let streamed = upload.finish().await.unwrap();
        assert_eq!(streamed.etag, md5(b"in three chunks"), "{name}: streamed");
        let copied = store.copy("put.txt", "copied.txt", &opts("text/plain")).await.unwrap();
        assert_eq!(copied.etag, md5(b"one request"), "{name}: copy");
        for key in ["put.txt", "streamed.txt", "copied.txt"] {
            let head = store.head(key).await.unwrap();
            let listed = store.list(key, None, 1).await.unwrap();
            assert_eq!(listed.objects[0].1.etag, head.etag, "{name}: {key}");
            let (got, _) = store.get(key, None).await.unwrap();
            assert_eq!(got.etag, head.etag, "{name}: {key}");
        }
        if name != "s3" {
            let composite = silo_host::store::multipart_etag([md5(b"a").as_str(), md5(b"b").as_str()]).unwrap();
            let mut given = opts("text/plain");
            given.etag = Some(composite.clone());
            let put = store.put("parts.txt", Bytes::from_static(b"ab"), &given).await.unwrap();
            assert_eq!(put.etag, composite, "{name}: given");
            assert_eq!(store.head("parts.txt").await.unwrap().etag, composite, "{name}");
        }
    }
}

/// A key ending in '/' is a folder: an object of no bytes on every
/// backend, listed before what it holds, outliving its files and leaving
/// them when it goes. A folder is never given bytes, and on a local volume
/// a file and a folder of one name are a clear refusal.
#[tokio::test]
async fn folders_are_objects_of_no_bytes() {
    let empty_md5 = "d41d8cd98f00b204e9800998ecf8427e";
    for (name, store, _dir) in backends().await {
        let folder = store
            .put("docs/", Bytes::new(), &opts("application/x-directory"))
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!((folder.size, folder.etag.as_str()), (0, empty_md5), "{name}");
        for (key, text) in [("docs/a.txt", "a"), ("docs-b.txt", "b")] {
            store.put(key, Bytes::from(text), &opts("text/plain")).await.unwrap();
        }
        assert_eq!(store.head("docs/").await.unwrap().size, 0, "{name}");
        let (_, body_of) = store.get("docs/", None).await.unwrap();
        assert!(body(body_of).await.is_empty(), "{name}");
        // SeaweedFS lists directory by directory: compared in byte order.
        let sorted = |mut keys: Vec<String>| {
            keys.sort();
            keys
        };
        assert_eq!(
            sorted(keys(&*store).await),
            ["docs-b.txt", "docs/", "docs/a.txt"],
            "{name}"
        );
        let under = |after: Option<&'static str>| {
            let store = store.clone();
            async move {
                let page = store.list("docs/", after, 10).await.unwrap();
                page.objects.into_iter().map(|(k, _)| k).collect::<Vec<_>>()
            }
        };
        assert_eq!(under(None).await, ["docs/", "docs/a.txt"], "{name}");
        assert_eq!(under(Some("docs/")).await, ["docs/a.txt"], "{name}");
        // The folder outlives its last file, and its files outlive it.
        store.delete("docs/a.txt").await.unwrap();
        assert_eq!(store.head("docs/").await.unwrap().etag, empty_md5, "{name}");
        store
            .put("docs/c.txt", Bytes::from_static(b"c"), &opts("text/plain"))
            .await
            .unwrap();
        store.delete("docs/").await.unwrap();
        assert_eq!(sorted(keys(&*store).await), ["docs-b.txt", "docs/c.txt"], "{name}");
        // SeaweedFS answers HEAD on any directory that holds files (Silo
        // reads folders from its metadata cache, not by HEAD).
        if name != "s3" {
            assert!(
                matches!(store.head("docs/").await, Err(StorageError::NotFound)),
                "{name}"
            );
        }
        let mut create_only = opts("application/x-directory");
        create_only.condition = Some(Condition::CreateOnly);
        store.put("new/", Bytes::new(), &create_only).await.unwrap();
        assert!(
            matches!(
                store.put("new/", Bytes::new(), &create_only).await,
                Err(StorageError::AlreadyExists)
            ),
            "{name}"
        );
        if name == "local" {
            let refused = store
                .put("full/", Bytes::from_static(b"bytes"), &opts("text/plain"))
                .await;
            assert!(
                matches!(refused, Err(StorageError::InvalidPath(_))),
                "{name}: {refused:?}"
            );
            let clash = store.put("docs-b.txt/", Bytes::new(), &opts("text/plain")).await;
            assert!(
                matches!(&clash, Err(StorageError::InvalidPath(m)) if m.contains("'docs-b.txt' is a file")),
                "{name}: {clash:?}"
            );
        }
    }
}

#[tokio::test]
async fn conditional_writes() {
    for (name, store, _dir) in backends().await {
        let create = PutOptions {
            condition: Some(Condition::CreateOnly),
            ..opts("text/plain")
        };
        let first = store.put("c.txt", Bytes::from_static(b"1"), &create).await.unwrap();
        assert_eq!(
            store.put("c.txt", Bytes::from_static(b"2"), &create).await.err(),
            Some(StorageError::AlreadyExists),
            "{name}"
        );
        let stale = PutOptions {
            condition: Some(Condition::IfMatch("stale".into())),
            ..opts("text/plain")
        };
        assert_eq!(
            store.put("c.txt", Bytes::from_static(b"3"), &stale).await.err(),
            Some(StorageError::PreconditionFailed),
            "{name}"
        );
        let fresh = PutOptions {
            condition: Some(Condition::IfMatch(first.etag.clone())),
            ..opts("text/plain")
        };
        store.put("c.txt", Bytes::from_static(b"4"), &fresh).await.unwrap();
        let (_, b) = store.get("c.txt", None).await.unwrap();
        assert_eq!(body(b).await, b"4", "{name}: refused writes changed nothing");
        assert_eq!(
            store.put("new.txt", Bytes::from_static(b"x"), &fresh).await.err(),
            Some(StorageError::PreconditionFailed),
            "{name}"
        );
    }
}

#[tokio::test]
async fn streamed_uploads_appear_only_when_finished() {
    for (name, store, _dir) in backends().await {
        let mut upload = store
            .start_upload("s/big.bin", opts("application/octet-stream"))
            .await
            .unwrap();
        for _ in 0..4 {
            upload
                .write(Bytes::from(vec![9u8; 100_000]), Default::default())
                .await
                .unwrap();
        }
        assert_eq!(
            store.head("s/big.bin").await.err(),
            Some(StorageError::NotFound),
            "{name}: visible before finish"
        );
        assert_eq!(upload.finish().await.unwrap().size, 400_000, "{name}");

        let mut abandoned = store
            .start_upload("s/gone.bin", opts("application/octet-stream"))
            .await
            .unwrap();
        abandoned
            .write(Bytes::from_static(b"partial"), Default::default())
            .await
            .unwrap();
        drop(abandoned);
        assert_eq!(
            store.head("s/gone.bin").await.err(),
            Some(StorageError::NotFound),
            "{name}"
        );
        assert_eq!(keys(&*store).await, ["s/big.bin"], "{name}: nothing partial is listed");
    }
}

#[tokio::test]
async fn listing_pages_through_keys_in_order() {
    for (name, store, _dir) in backends().await {
        for i in (0..25).rev() {
            store
                .put(&format!("p/{i:02}"), Bytes::from_static(b"x"), &opts("text/plain"))
                .await
                .unwrap();
        }
        store
            .put("pz", Bytes::from_static(b"x"), &opts("text/plain"))
            .await
            .unwrap();
        let mut keys = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let KeyPage { objects, next } = store.list("p/", after.as_deref(), 10).await.unwrap();
            keys.extend(objects.into_iter().map(|(k, _)| k));
            match next {
                Some(n) => after = Some(n),
                None => break,
            }
        }
        let expected: Vec<String> = (0..25).map(|i| format!("p/{i:02}")).collect();
        assert_eq!(keys, expected, "{name}");

        // Byte order across directory boundaries: '-' < '/' < '0'.
        for key in ["o/a0", "o/a/c", "o/a-b", "o/a/b/deep"] {
            store
                .put(key, Bytes::from_static(b"x"), &opts("text/plain"))
                .await
                .unwrap();
        }
        let mut keys = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = store.list("o/a", after.as_deref(), 1).await.unwrap();
            keys.extend(page.objects.into_iter().map(|(k, _)| k));
            match page.next {
                Some(n) => after = Some(n),
                None => break,
            }
        }
        let byte_order = ["o/a-b", "o/a/b/deep", "o/a/c", "o/a0"];
        if name == "s3" {
            // AWS lists in byte order; SeaweedFS directory by directory.
            // Either way paging must return every key exactly once.
            keys.sort();
        }
        assert_eq!(keys, byte_order, "{name}");
    }
}

#[tokio::test]
async fn delete_and_copy() {
    for (name, store, _dir) in backends().await {
        store
            .put("d/x.txt", Bytes::from_static(b"abc"), &opts("text/plain"))
            .await
            .unwrap();
        let copy = store.copy("d/x.txt", "e/y.txt", &opts("text/plain")).await.unwrap();
        assert_eq!(copy.size, 3, "{name}");
        store.delete("d/x.txt").await.unwrap();
        assert_eq!(
            store.delete("d/x.txt").await.err(),
            Some(StorageError::NotFound),
            "{name}"
        );
        assert_eq!(
            store.copy("d/x.txt", "z", &opts("text/plain")).await.err(),
            Some(StorageError::NotFound),
            "{name}"
        );
    }
}

/// The first 100 keys of `store`.
async fn keys(store: &dyn ObjectStore) -> Vec<String> {
    let page = store.list("", None, 100).await.unwrap();
    page.objects.into_iter().map(|(k, _)| k).collect()
}

/// A streamed upload to `key`, one chunk, finished.
async fn stream_to(store: &LocalStore, key: &str) -> Result<(), StorageError> {
    let mut upload = store.start_upload(key, opts("text/plain")).await?;
    upload
        .write(Bytes::from_static(b"streamed"), Default::default())
        .await?;
    upload.finish().await.map(drop)
}

#[tokio::test]
async fn local_store_refuses_symlinks_and_its_reserved_directory() {
    let dir = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret"), "s").unwrap();
    let store = LocalStore::open(dir.path()).unwrap();
    std::os::unix::fs::symlink(outside.path(), dir.path().join("link")).unwrap();
    assert_eq!(store.head("link/secret").await.err(), Some(StorageError::AccessDenied));
    assert!(store.get("link/secret", None).await.is_err());
    assert!(matches!(
        store.head(".silo-tmp/x").await.err(),
        Some(StorageError::InvalidPath(_))
    ));
    store
        .put("inside.txt", Bytes::from_static(b"in"), &opts("text/plain"))
        .await
        .unwrap();
    std::os::unix::fs::symlink(outside.path().join("secret"), dir.path().join("file-link")).unwrap();
    // Every way in through a link to a directory or a file is refused.
    let data = || Bytes::from_static(b"planted");
    for (what, result) in [
        (
            "put through a directory link",
            store.put("link/new", data(), &opts("text/plain")).await.map(drop),
        ),
        (
            "put over a file link",
            store.put("file-link", data(), &opts("text/plain")).await.map(drop),
        ),
        ("delete through a link", store.delete("link/secret").await),
        ("delete a file link", store.delete("file-link").await),
        (
            "copy into a link",
            store
                .copy("inside.txt", "link/copied", &opts("text/plain"))
                .await
                .map(drop),
        ),
        (
            "copy out of a link",
            store.copy("link/secret", "stolen", &opts("text/plain")).await.map(drop),
        ),
        (
            "copy a file link",
            store.copy("file-link", "stolen", &opts("text/plain")).await.map(drop),
        ),
        ("read a file link", store.get("file-link", None).await.map(drop)),
        ("stream through a link", stream_to(&store, "link/streamed").await),
        ("stream over a file link", stream_to(&store, "file-link").await),
    ] {
        assert!(result.is_err(), "{what} succeeded");
    }
    // The reserved directory is no key at all.
    for (what, result) in [
        (
            "put",
            store.put(".silo-tmp/x", data(), &opts("text/plain")).await.map(drop),
        ),
        ("stream", stream_to(&store, ".silo-tmp/y").await),
        ("delete", store.delete(".silo-tmp/x").await),
        (
            "copy into",
            store
                .copy("inside.txt", ".silo-tmp/z", &opts("text/plain"))
                .await
                .map(drop),
        ),
    ] {
        assert!(
            matches!(result, Err(StorageError::InvalidPath(_))),
            "{what} in .silo-tmp: {result:?}"
        );
    }
    // Outside, the secret is whole and nothing was added; inside, no stray key.
    let mut outside_names: Vec<String> = std::fs::read_dir(outside.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    outside_names.sort();
    assert_eq!(outside_names, ["secret"]);
    assert_eq!(std::fs::read(outside.path().join("secret")).unwrap(), b"s");
    assert!(
        std::fs::symlink_metadata(dir.path().join("file-link"))
            .unwrap()
            .is_symlink()
    );
    assert_eq!(keys(&store).await, ["inside.txt"]);
    assert!(
        !dir.path().join(".silo-tmp").exists()
            || std::fs::read_dir(dir.path().join(".silo-tmp"))
                .unwrap()
                .next()
                .is_none(),
        "a temporary file was left behind"
    );
    // A directory cannot also be a file here (S3 allows it; see the docs).
    store
        .put("f", Bytes::from_static(b"1"), &opts("text/plain"))
        .await
        .unwrap();
    // Stored files are readable as any new file would be (a web server may
    // serve the directory), never executable.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.path().join("f")).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, silo_tests::plain_file_mode(), "{mode:o}");
    let err = store
        .put("f/g", Bytes::from_static(b"2"), &opts("text/plain"))
        .await
        .err()
        .unwrap();
    assert!(matches!(err, StorageError::InvalidPath(_)), "{err}");
    assert!(err.to_string().contains("'f' is a file"), "{err}");
}

#[tokio::test]
async fn stat_exists_and_list_are_served_by_the_cache_alone() {
    for (name, inner, _dir) in backends().await {
        let counting = Watched::new(inner);
        let volume = bare_volume("v", CacheMode::Canonical, counting.clone());
        let storage = Arc::new(Storage::new(vec![volume], MetadataCache::in_memory().unwrap()));
        let host = storage.host_session();
        let file = storage.location("v", "dir/sub/photo.jpg").unwrap();
        host.write(&file, Bytes::from_static(b"\xff\xd8\xff\xe0"), opts("image/jpeg"))
            .await
            .unwrap();
        let before = counting.calls().len();

        assert_eq!(host.stat(&file).await.unwrap().size, 4, "{name}");
        assert!(host.exists(&file).await.unwrap());
        assert!(
            !host
                .exists(&storage.location("v", "dir/other.jpg").unwrap())
                .await
                .unwrap()
        );
        let page = host.list("v", "dir", false, None, 0).await.unwrap();
        assert_eq!(page.entries, [Entry::Dir { path: "dir/sub".into() }], "{name}");
        let all = host.list("v", "", true, None, 0).await.unwrap();
        assert_eq!(all.entries.len(), 1, "{name}");
        assert_eq!(counting.calls().len(), before, "{name}: the backend was called");

        // A failed backend write leaves the cache as it was.
        let create = PutOptions {
            condition: Some(Condition::CreateOnly),
            ..opts("image/jpeg")
        };
        assert_eq!(
            host.write(&file, Bytes::from_static(b"\xff\xd8\xff\xe1"), create)
                .await
                .err(),
            Some(StorageError::AlreadyExists)
        );
        assert_eq!(host.stat(&file).await.unwrap().size, 4, "{name}");
        host.delete(&file).await.unwrap();
        assert!(
            host.list("v", "", false, None, 0).await.unwrap().entries.is_empty(),
            "{name}: empty directories vanish"
        );
    }
}

#[tokio::test]
async fn read_through_volumes_see_files_written_behind_silos_back_at_once() {
    for (name, inner, _dir) in backends().await {
        let counting = Watched::new(inner.clone());
        // Two volumes over one backend, one in each mode.
        let volumes = vec![
            bare_volume("rt", CacheMode::ReadThrough, counting.clone()),
            bare_volume("canon", CacheMode::Canonical, inner.clone()),
        ];
        let storage = Arc::new(Storage::new(volumes, MetadataCache::in_memory().unwrap()));
        let host = storage.host_session();
        inner
            .put("behind/back.txt", Bytes::from_static(b"hi"), &opts("text/plain"))
            .await
            .unwrap();
        let calls = || counting.calls().len();

        let canon = storage.location("canon", "behind/back.txt").unwrap();
        assert!(
            !host.exists(&canon).await.unwrap(),
            "{name}: canonical waits for a refresh"
        );
        let rt = storage.location("rt", "behind/back.txt").unwrap();
        assert_eq!(
            host.stat(&rt).await.unwrap().size,
            2,
            "{name}: read-through sees it at once"
        );
        let after_first = calls();
        assert_eq!(host.read(&rt).await.unwrap(), b"hi");
        host.stat(&rt).await.unwrap();
        assert_eq!(
            calls(),
            after_first + 1,
            "{name}: only the read itself reaches the backend"
        );

        // A miss is remembered for a while.
        let missing = storage.location("rt", "nope.txt").unwrap();
        assert!(!host.exists(&missing).await.unwrap());
        let after_miss = calls();
        assert!(!host.exists(&missing).await.unwrap());
        assert_eq!(calls(), after_miss, "{name}: the miss was remembered");
        // ...but a write through Silo is visible at once.
        host.write(&missing, Bytes::from_static(b"now"), opts("text/plain"))
            .await
            .unwrap();
        assert!(host.exists(&missing).await.unwrap(), "{name}");

        // Deleted behind Silo's back: the read fails and the stale row goes.
        inner.delete("behind/back.txt").await.unwrap();
        assert_eq!(host.read(&rt).await.err(), Some(StorageError::NotFound), "{name}");
        assert!(
            storage.cache().get("rt", "behind/back.txt").await.unwrap().is_none(),
            "{name}"
        );
    }
}

#[tokio::test]
async fn writes_a_crash_abandoned_are_swept_when_silo_opens_again() {
    let t = silo_tests::TestSilo::new("", &[]).await.unwrap();
    let day_and_more = std::time::SystemTime::now() - std::time::Duration::from_secs(25 * 3600);
    let leave = |path: std::path::PathBuf, old: bool| {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let file = std::fs::File::create(&path).unwrap();
        if old {
            file.set_modified(day_and_more).unwrap();
        }
        path
    };
    // What a killed Silo leaves: a half-written local file and a staged
    // upload, beside ones another process may still be writing.
    let tmp = t.volume_dir("public").join(".silo-tmp");
    let staging = t.dir.path().join("state/staging");
    let abandoned = [leave(tmp.join(".tmpOLD"), true), leave(staging.join(".tmpOLD"), true)];
    let in_progress = [leave(tmp.join(".tmpNEW"), false), leave(staging.join(".tmpNEW"), false)];

    let silo_tests::TestSilo { dir, silo } = t;
    drop(silo);
    let config = silo_host::Config::load(&dir.path().join("silo.toml")).unwrap();
    let _silo = silo_host::Silo::open(config).await.unwrap();
    for path in abandoned {
        assert!(!path.exists(), "{} is swept", path.display());
    }
    for path in in_progress {
        assert!(path.exists(), "{} may be another process's write", path.display());
    }
}

#[tokio::test]
async fn discarding_a_write_never_removes_another_writers_newer_version() {
    for (name, inner, _dir) in backends().await {
        let volume = bare_volume("v", CacheMode::Canonical, inner.clone());
        let storage = Arc::new(Storage::new(vec![volume], MetadataCache::in_memory().unwrap()));
        let host = storage.host_session();
        let loc = storage.location("v", "d/x.txt").unwrap();
        let text = opts("text/plain");

        // Written, then replaced by another writer: the first write's
        // rollback leaves the newer file alone.
        let first = host
            .write(&loc, Bytes::from_static(b"one"), text.clone())
            .await
            .unwrap();
        host.write(&loc, Bytes::from_static(b"second"), text.clone())
            .await
            .unwrap();
        assert!(!host.discard(&loc, &first).await.unwrap(), "{name}");
        assert_eq!(host.read(&loc).await.unwrap(), b"second", "{name}");

        // Replaced by the same bytes (the same MD5 ETag): still another
        // writer's version, left alone.
        let mine = host
            .write(&loc, Bytes::from_static(b"same"), text.clone())
            .await
            .unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let theirs = host
            .write(&loc, Bytes::from_static(b"same"), text.clone())
            .await
            .unwrap();
        assert_eq!(mine.etag, theirs.etag, "{name}");
        assert!(!host.discard(&loc, &mine).await.unwrap(), "{name}");
        assert_eq!(host.read(&loc).await.unwrap(), b"same", "{name}");

        // Its own version goes, from the backend and the cache.
        let third = host
            .write(&loc, Bytes::from_static(b"three"), text.clone())
            .await
            .unwrap();
        assert!(host.discard(&loc, &third).await.unwrap(), "{name}");
        assert_eq!(
            inner.head("d/x.txt").await.err(),
            Some(StorageError::NotFound),
            "{name}"
        );
        assert!(
            host.list("v", "", true, None, 0).await.unwrap().entries.is_empty(),
            "{name}"
        );

        // A row whose file was deleted behind Silo's back goes with the
        // delete that finds the file gone.
        host.write(&loc, Bytes::from_static(b"four"), text).await.unwrap();
        inner.delete("d/x.txt").await.unwrap();
        assert_eq!(host.delete(&loc).await.err(), Some(StorageError::NotFound), "{name}");
        assert!(!host.exists(&loc).await.unwrap(), "{name}");
        assert!(
            host.list("v", "", false, None, 0).await.unwrap().entries.is_empty(),
            "{name}"
        );
    }
}
