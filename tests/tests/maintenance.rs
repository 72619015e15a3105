//! Cache refresh and verify: the backend is the source of truth, and the
//! cache (canonical mode) sees changes made behind Silo's back only after a
//! refresh.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use silo_host::StorageError;
use silo_host::cache::MetadataCache;
use silo_host::maintenance::{LIVE_FOR, RESUME_WITHIN, refresh, verify};
use silo_host::store::{MemoryStore, ObjectStore, PutOptions, now_ms};
use silo_host::vfs::{CacheMode, Storage, Volume};
use silo_tests::watched::Watched;
use silo_tests::{EXAMPLE_PIPELINE, TestSilo, bare_volume, png, s3};

fn quiet(_: u64) {}

/// A canonical volume `v` over `store`.
fn volume(store: Arc<dyn ObjectStore>) -> Volume {
    bare_volume("v", CacheMode::Canonical, store)
}

/// A memory store holding `n` files under `f/`: `n / 1000` listing pages.
async fn flat_store(n: usize) -> anyhow::Result<Arc<MemoryStore>> {
    let memory = Arc::new(MemoryStore::new());
    for i in 0..n {
        memory
            .put(
                &format!("f/{i:04}.txt"),
                Bytes::from_static(b"x"),
                &PutOptions::default(),
            )
            .await?;
    }
    Ok(memory)
}

/// From now on, the second listing request `watched` sees fails.
fn fail_second_page(watched: &Watched) {
    let lists = AtomicUsize::new(0);
    watched.fail_when(move |op, _| op == "list" && lists.fetch_add(1, Ordering::SeqCst) == 1);
}

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
    let storage = Storage::new(vec![volume(store)], MetadataCache::in_memory()?);
    let report = refresh(&storage, "v", &quiet).await?;
    assert_eq!(report.files, 1);
    assert_eq!(report.skipped, ["../escape", "bad//key"]);
    let stats = storage.cache().stats().await?;
    assert_eq!((stats[0].files, stats[0].bytes, stats[0].directories), (1, 1, 1));
    Ok(())
}

#[tokio::test]
async fn an_interrupted_refresh_resumes_at_the_page_where_it_stopped() -> anyhow::Result<()> {
    let watched = Watched::new(flat_store(2500).await?);
    let storage = Storage::new(vec![volume(watched.clone())], MetadataCache::in_memory()?);

    // The second of three pages fails: the first is recorded, nothing swapped in.
    fail_second_page(&watched);
    let err = refresh(&storage, "v", &quiet).await.unwrap_err();
    assert!(matches!(err, StorageError::Unavailable(_)), "{err}");
    assert!(
        storage.cache().stats().await?.is_empty(),
        "a failed refresh swaps nothing in"
    );

    // The next run asks only for the pages not yet listed.
    watched.heal();
    watched.reset();
    let report = refresh(&storage, "v", &quiet).await?;
    assert_eq!((report.resumed, report.files, report.added), (1000, 2500, 2500));
    assert_eq!(watched.count("list"), 2, "{:?}", watched.calls());
    assert_eq!(storage.cache().stats().await?[0].files, 2500);
    assert!(verify(&storage, "v", &quiet).await?.is_clean());

    // A finished refresh leaves nothing to resume: the next one starts over.
    watched.reset();
    let report = refresh(&storage, "v", &quiet).await?;
    assert_eq!((report.resumed, report.files, report.added), (0, 2500, 0));
    assert_eq!(watched.count("list"), 3);
    Ok(())
}

#[tokio::test]
async fn a_record_that_cannot_be_read_back_is_not_built_on() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("cache.sqlite");
    let watched = Watched::new(flat_store(1500).await?);
    let storage = Storage::new(vec![volume(watched.clone())], MetadataCache::open(&file)?);
    fail_second_page(&watched);
    refresh(&storage, "v", &quiet).await.unwrap_err();

    // Damaged behind Silo's back.
    let changed = rusqlite::Connection::open(&file)?.execute("UPDATE refresh_parts SET kind = 'garbage'", [])?;
    assert_eq!(changed, 1, "the first page was recorded");
    watched.heal();
    let report = refresh(&storage, "v", &quiet).await?;
    assert_eq!((report.resumed, report.files), (0, 1500));
    Ok(())
}

#[tokio::test]
async fn a_refresh_of_s3_resumes_without_listing_what_it_split_before() -> anyhow::Result<()> {
    let s3 = Arc::new(s3::store("resume").await);
    let mut keys = vec!["top-1.txt".to_owned(), "top-2.txt".to_owned()];
    for dir in ["a", "b", "c"] {
        keys.extend((0..4).map(|i| format!("{dir}/{i}.txt")));
    }
    for key in &keys {
        s3.put(key, Bytes::from_static(b"x"), &PutOptions::default()).await?;
    }
    let watched = Watched::new(s3);
    let storage = Storage::new(vec![volume(watched.clone())], MetadataCache::in_memory()?);

    watched.fail_when(|op, prefix| op == "split" && prefix == "c/");
    refresh(&storage, "v", &quiet).await.unwrap_err();
    watched.heal();
    watched.reset();
    let report = refresh(&storage, "v", &quiet).await?;
    assert_eq!(report.files, keys.len() as u64);
    assert!(report.resumed >= 2, "the top level was recorded: {report:?}");
    let calls = watched.calls();
    assert!(calls.contains(&("split", "c/".into())), "{calls:?}");
    assert!(
        !calls.contains(&("split", String::new())),
        "the top level was listed again: {calls:?}"
    );
    assert!(verify(&storage, "v", &quiet).await?.is_clean());
    Ok(())
}

#[tokio::test]
async fn a_refresh_under_way_refuses_a_second_until_it_falls_silent() -> anyhow::Result<()> {
    let memory = Arc::new(MemoryStore::new());
    memory
        .put("a.txt", Bytes::from_static(b"x"), &PutOptions::default())
        .await?;
    let backend = memory.describe();
    let storage = Storage::new(vec![volume(memory)], MetadataCache::in_memory()?);
    let cache = storage.cache();
    let windows = (RESUME_WITHIN.as_millis() as u64, LIVE_FOR.as_millis() as u64);
    cache
        .refresh_begin("v", &backend, "elsewhere", now_ms(), windows)
        .await?;

    let err = refresh(&storage, "v", &quiet).await.unwrap_err();
    assert!(err.to_string().contains("under way"), "{err}");
    assert!(cache.stats().await?.is_empty());

    // Silent for longer than LIVE_FOR: it died; this one takes it over.
    cache
        .refresh_beat("v", "elsewhere", now_ms() - LIVE_FOR.as_millis() as u64 - 1)
        .await?;
    assert_eq!(refresh(&storage, "v", &quiet).await?.files, 1);
    // ...and the run it took over can no longer swap its listing in.
    let err = cache.finish_refresh("v", "elsewhere").await.unwrap_err();
    assert!(err.to_string().contains("took this one over"), "{err}");
    assert_eq!(cache.stats().await?[0].files, 1);
    Ok(())
}
