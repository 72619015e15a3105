//! `silo migrate`: an uploads directory into an S3 volume and back, with
//! SeaweedFS as the S3 server.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use silo_host::StorageError;
use silo_host::cache::MetadataCache;
use silo_host::maintenance;
use silo_host::migrate::{self, Action, Direction, Plan};
use silo_host::store::{ByteRange, ByteStream, KeyPage, ObjectMeta, ObjectStore, ObjectUpload, PutOptions, S3Store};
use silo_host::vfs::{CacheMode, Storage};
use silo_tests::{TestSilo, s3};

fn content(seed: usize, len: usize) -> Vec<u8> {
    (0..len).map(|i| b'a' + ((i * 7 + seed * 13) % 26) as u8).collect()
}

/// An uploads directory as a CMS leaves it.
fn uploads(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    for i in 0..300 {
        let path = format!("{}/{:02}/file-{i}.txt", 2020 + i % 5, i % 12);
        files.push((path, content(i, i * 37 % 5000)));
    }
    // Past the whole-file limit: streamed.
    files.push(("videos/big.bin".to_owned(), content(999, 9 << 20)));
    files.push(("styles/thumbnail/ünïcödé 😀.txt".to_owned(), b"unicode".to_vec()));
    for (path, bytes) in &files {
        let target = dir.join(path);
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::write(target, bytes).unwrap();
    }
    // What the content policy refuses, and what cannot be migrated.
    std::fs::write(dir.join(".htaccess"), b"Options -Indexes").unwrap();
    std::os::unix::fs::symlink("/etc/passwd", dir.join("passwd")).unwrap();
    std::fs::write(dir.join("back\\slash.txt"), b"x").unwrap();
    std::fs::write(dir.join("2020/00/.silo-migrate-Ab12Cd"), b"half an export").unwrap();
    files
}

async fn plan_and_run(storage: &Arc<Storage>, dir: &Path, direction: Direction) -> (Plan, migrate::Report, u64) {
    let plan = migrate::plan(storage, "media", dir, direction).await.unwrap();
    let planned = plan.clone();
    let done = Arc::new(AtomicU64::new(0));
    let seen = done.clone();
    let report = migrate::run(
        storage,
        "media",
        dir,
        direction,
        plan,
        6,
        Arc::new(move |files, _| {
            seen.fetch_max(files, Ordering::Relaxed);
        }),
    )
    .await;
    (planned, report, done.load(Ordering::Relaxed))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_uploads_directory_moves_into_s3_resumably_and_back_out() {
    let bucket = s3::bucket("migrate").await;
    let t = TestSilo::with_volumes("", &[], &s3::volume_toml("media", &bucket, "media", ""))
        .await
        .unwrap();
    let source = tempfile::tempdir().unwrap();
    let files = uploads(source.path());

    let (plan, report, progressed) = plan_and_run(t.silo.storage(), source.path(), Direction::Import).await;
    assert_eq!(plan.items.len(), files.len() + 1, "the files and .htaccess");
    assert!(plan.items.iter().all(|i| i.action == Action::Copy));
    let unusable: Vec<&str> = plan.unusable.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(unusable, ["2020/00/.silo-migrate-Ab12Cd", "back\\slash.txt", "passwd"]);
    assert_eq!(report.copied, files.len() as u64, "{report:?}");
    assert!(report.failed.is_empty(), "{report:?}");
    assert_eq!(report.refused.len(), 1);
    assert_eq!(report.refused[0].0, ".htaccess");
    assert_eq!(progressed, plan.items.len() as u64);

    // In S3 byte for byte (read with a plain S3 client), in the cache.
    let stored = s3::keys(&bucket).await;
    assert_eq!(stored.len(), files.len());
    let client = s3::client();
    for (path, bytes) in files.iter().step_by(50).chain(files.iter().rev().take(2)) {
        let got = client
            .get_object()
            .bucket(&bucket)
            .key(format!("media/{path}"))
            .send()
            .await
            .unwrap();
        let sha = got.metadata().and_then(|m| m.get(migrate::SHA256_KEY)).cloned();
        assert_eq!(sha.as_deref(), Some(silo_tests::sha256_hex(bytes).as_str()), "{path}");
        assert_eq!(
            &got.body.collect().await.unwrap().into_bytes()[..],
            &bytes[..],
            "{path}"
        );
    }
    let storage = t.silo.storage();
    assert!(maintenance::verify(storage, "media", &|_| {}).await.unwrap().is_clean());

    // Again: everything is already there.
    let (plan, report, _) = plan_and_run(t.silo.storage(), source.path(), Direction::Import).await;
    assert_eq!(
        plan.items.iter().filter(|i| i.action == Action::Check).count(),
        files.len()
    );
    assert_eq!((report.copied, report.skipped), (0, files.len() as u64));

    // A file changed in place (same size) is copied again, nothing else.
    let (changed, old) = &files[7];
    let mut new = old.clone();
    new[0] = if new[0] == b'z' { b'y' } else { b'z' };
    std::fs::write(source.path().join(changed), &new).unwrap();
    let (_, report, _) = plan_and_run(t.silo.storage(), source.path(), Direction::Import).await;
    assert_eq!((report.copied, report.skipped), (1, files.len() as u64 - 1));
    let host = storage.host_session();
    assert_eq!(
        host.read(&storage.location("media", changed).unwrap()).await.unwrap(),
        new
    );

    // Out again, for leaving S3.
    let out = tempfile::tempdir().unwrap();
    let (plan, report, _) = plan_and_run(t.silo.storage(), out.path(), Direction::Export).await;
    assert_eq!(plan.items.len(), files.len());
    assert_eq!(report.copied, files.len() as u64, "{report:?}");
    for (path, bytes) in &files {
        let want = if path == changed { &new } else { bytes };
        assert_eq!(&std::fs::read(out.path().join(path)).unwrap(), want, "{path}");
    }
    // Exported files keep their objects' times and are readable as plain
    // new files are (for the web server that serves them next).
    use std::os::unix::fs::PermissionsExt;
    for (path, _) in files.iter().step_by(25) {
        let meta = std::fs::metadata(out.path().join(path)).unwrap();
        assert_eq!(
            meta.permissions().mode() & 0o777,
            silo_tests::plain_file_mode(),
            "{path}"
        );
        let object = client
            .head_object()
            .bucket(&bucket)
            .key(format!("media/{path}"))
            .send()
            .await
            .unwrap();
        let modified = meta.modified().unwrap().duration_since(std::time::UNIX_EPOCH).unwrap();
        assert_eq!(
            modified.as_secs() as i64,
            object.last_modified().unwrap().secs(),
            "{path}"
        );
    }
    // Damage one exported file: only that one is fetched again.
    std::fs::write(out.path().join(&files[3].0), content(4242, files[3].1.len())).unwrap();
    let (_, report, _) = plan_and_run(t.silo.storage(), out.path(), Direction::Export).await;
    assert_eq!((report.copied, report.skipped), (1, files.len() as u64 - 1));
    assert_eq!(std::fs::read(out.path().join(&files[3].0)).unwrap(), files[3].1);
    let leftovers = walk_names(out.path());
    assert!(!leftovers.iter().any(|n| n.contains(".silo-migrate-")), "{leftovers:?}");
}

fn walk_names(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.file_type().unwrap().is_dir() {
            out.extend(walk_names(&entry.path()));
        }
        out.push(name);
    }
    out
}

/// Flips one byte of every object whose key holds `corrupt` on its way to
/// the store it wraps, as a faulty link or disk would.
struct Corrupting(Arc<dyn ObjectStore>);

fn flipped(data: &Bytes) -> Bytes {
    let mut bytes = data.to_vec();
    if let Some(first) = bytes.first_mut() {
        *first ^= 0x20;
    }
    Bytes::from(bytes)
}

struct CorruptingUpload {
    inner: Box<dyn ObjectUpload>,
    first: bool,
}

#[async_trait]
impl ObjectUpload for CorruptingUpload {
    async fn write(&mut self, chunk: Bytes, held: silo_host::budget::Held) -> Result<(), StorageError> {
        let chunk = if std::mem::take(&mut self.first) {
            flipped(&chunk)
        } else {
            chunk
        };
        self.inner.write(chunk, held).await
    }
    async fn finish(self: Box<Self>) -> Result<ObjectMeta, StorageError> {
        self.inner.finish().await
    }
}

#[async_trait]
impl ObjectStore for Corrupting {
    fn describe(&self) -> String {
        self.0.describe()
    }
    async fn head(&self, key: &str) -> Result<ObjectMeta, StorageError> {
        self.0.head(key).await
    }
    async fn get(&self, key: &str, range: Option<ByteRange>) -> Result<(ObjectMeta, ByteStream), StorageError> {
        self.0.get(key, range).await
    }
    async fn put(&self, key: &str, data: Bytes, options: &PutOptions) -> Result<ObjectMeta, StorageError> {
        let data = if key.contains("corrupt") { flipped(&data) } else { data };
        self.0.put(key, data, options).await
    }
    async fn start_upload(&self, key: &str, options: PutOptions) -> Result<Box<dyn ObjectUpload>, StorageError> {
        let inner = self.0.start_upload(key, options).await?;
        Ok(Box::new(CorruptingUpload {
            inner,
            first: key.contains("corrupt"),
        }))
    }
    async fn delete(&self, key: &str) -> Result<(), StorageError> {
        self.0.delete(key).await
    }
    async fn copy(&self, from: &str, to: &str, options: &PutOptions) -> Result<ObjectMeta, StorageError> {
        self.0.copy(from, to, options).await
    }
    async fn list(&self, prefix: &str, after: Option<&str>, limit: usize) -> Result<KeyPage, StorageError> {
        self.0.list(prefix, after, limit).await
    }
}

/// A copy that arrives different from its source (one byte flipped on the
/// way, whole or streamed) is caught by the S3 store's MD5 etag, removed,
/// and reported; the copies beside it are stored, and a second run copies
/// nothing that disagrees.
#[tokio::test]
async fn a_copy_corrupted_on_the_way_is_removed_and_reported() {
    let bucket = s3::bucket("migrate-corrupt").await;
    let inner: Arc<dyn ObjectStore> = Arc::new(S3Store::connect(&s3::settings(&bucket, "media")).await.unwrap());
    let store: Arc<dyn ObjectStore> = Arc::new(Corrupting(inner.clone()));
    let storage = Arc::new(Storage::new(
        vec![silo_tests::bare_volume("media", CacheMode::Canonical, store)],
        MetadataCache::in_memory().unwrap(),
    ));
    let source = tempfile::tempdir().unwrap();
    let files = [
        ("fine.txt", content(1, 1000)),
        ("corrupt-small.txt", content(2, 1000)),
        ("videos/corrupt-big.bin", content(3, 9 << 20)),
        ("videos/fine-big.bin", content(4, 9 << 20)),
    ];
    for (path, bytes) in &files {
        let target = source.path().join(path);
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::write(target, bytes).unwrap();
    }
    let (_, report, _) = plan_and_run(&storage, source.path(), Direction::Import).await;
    assert_eq!(report.copied, 2, "{report:?}");
    let failed: Vec<&str> = report.failed.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(failed, ["corrupt-small.txt", "videos/corrupt-big.bin"], "{report:?}");
    for (path, why) in &report.failed {
        assert!(why.contains("verification failed"), "{path}: {why}");
    }
    assert!(!report.is_complete());
    // Nothing of the bad copies is left, in the bucket or the cache.
    let mut keys: Vec<String> = s3::keys(&bucket).await.into_iter().map(|(k, _)| k).collect();
    keys.sort();
    assert_eq!(keys, ["media/fine.txt", "media/videos/fine-big.bin"]);
    let mut cached: Vec<String> = storage
        .cache()
        .all_files("media")
        .await
        .unwrap()
        .into_iter()
        .map(|(p, _)| p)
        .collect();
    cached.sort();
    assert_eq!(cached, ["fine.txt", "videos/fine-big.bin"]);
    assert_eq!(s3::open_uploads(&bucket).await, 0);
    for (path, bytes) in files.iter().filter(|(p, _)| p.contains("fine")) {
        let (_, mut body) = inner.get(path, None).await.unwrap();
        let mut stored = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut body, &mut stored)
            .await
            .unwrap();
        assert!(stored == *bytes, "{path} differs");
    }
}
