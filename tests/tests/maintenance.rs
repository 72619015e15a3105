//! Cache refresh and verify: the backend is the source of truth, and the
//! cache (canonical mode) sees changes made behind Silo's back only after a
//! refresh.

use std::sync::Arc;

use bytes::Bytes;
use silo_host::cache::MetadataCache;
use silo_host::maintenance::{refresh, verify};
use silo_host::store::{MemoryStore, ObjectStore, PutOptions};
use silo_host::vfs::{CacheMode, Storage, Visibility, Volume};
use silo_tests::{EXAMPLE_PIPELINE, TestSilo, png};

fn quiet(_: u64) {}

#[tokio::test]
async fn changes_behind_silos_back_appear_after_refresh() -> anyhow::Result<()> {
    let t = TestSilo::new(EXAMPLE_PIPELINE, &[]).await?;
    let storage = t.silo.storage();
    let host = storage.host_session();
    // Stored through Silo with a declared type the extension does not imply.
    let kept = storage.location("public", "kept.dat")?;
    host.write(
        &kept,
        Bytes::from_static(b"data"),
        PutOptions {
            content_type: "image/x-custom".into(),
            ..Default::default()
        },
    )
    .await?;
    let gone = storage.location("public", "gone.txt")?;
    host.write(&gone, Bytes::from_static(b"bye"), PutOptions::default())
        .await?;
    assert!(verify(storage, "public", &quiet).await?.is_clean());

    // Behind Silo's back: a new file, a deleted one, a changed one.
    let dir = t.volume_dir("public");
    std::fs::create_dir_all(dir.join("sideways"))?;
    std::fs::write(dir.join("sideways/new.png"), png(20, 20))?;
    std::fs::remove_file(dir.join("gone.txt"))?;
    let new = storage.location("public", "sideways/new.png")?;
    assert!(!host.exists(&new).await?, "canonical mode: the cache is the listing");

    let drift = verify(storage, "public", &quiet).await?;
    assert_eq!(drift.missing, ["sideways/new.png"]);
    assert_eq!(drift.extra, ["gone.txt"]);
    assert!(drift.stale.is_empty());

    let report = refresh(storage, "public", &quiet).await?;
    assert_eq!(
        (report.files, report.added, report.removed, report.changed),
        (2, 1, 1, 0)
    );
    assert!(host.exists(&new).await?);
    assert!(!host.exists(&gone).await?);
    assert_eq!(host.stat(&new).await?.content_type, "image/png");
    assert_eq!(
        host.stat(&kept).await?.content_type,
        "image/x-custom",
        "unchanged files keep their declared type"
    );
    assert!(verify(storage, "public", &quiet).await?.is_clean());

    // A change in place is stale until refreshed.
    std::fs::write(dir.join("kept.dat"), b"different")?;
    assert_eq!(verify(storage, "public", &quiet).await?.stale, ["kept.dat"]);
    let report = refresh(storage, "public", &quiet).await?;
    assert_eq!(report.changed, 1);
    assert_eq!(host.stat(&kept).await?.size, 9);
    Ok(())
}

#[tokio::test]
async fn refresh_skips_keys_that_break_the_path_rules() -> anyhow::Result<()> {
    let store = Arc::new(MemoryStore::new());
    for key in ["ok/a.txt", "bad//key", "../escape"] {
        store.put(key, Bytes::from_static(b"x"), &PutOptions::default()).await?;
    }
    let volume = Volume {
        name: "v".into(),
        visibility: Visibility::Private,
        cache_mode: CacheMode::Canonical,
        store,
        public_url: None,
        read_cache: None,
    };
    let storage = Storage::new(vec![volume], MetadataCache::in_memory()?);
    let report = refresh(&storage, "v", &quiet).await?;
    assert_eq!(report.files, 1);
    assert_eq!(report.skipped, ["../escape", "bad//key"]);
    let stats = storage.cache().stats()?;
    assert_eq!((stats[0].files, stats[0].bytes, stats[0].directories), (1, 1, 1));
    Ok(())
}
