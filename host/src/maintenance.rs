//! Keeping the metadata cache true to the backends: `refresh` rebuilds a
//! volume's rows from a full backend listing, `verify` reports drift
//! without changing anything. The backend is the source of truth.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::task::JoinSet;

use crate::error::{StorageError, StorageResult};
use crate::path::VolumePath;
use crate::store::{ABANDONED_AFTER, ObjectMeta, Split};
use crate::vfs::Storage;

/// Keys per backend listing request.
const LIST_PAGE: usize = 1000;

/// The outcome of a refresh.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RefreshReport {
    pub volume: String,
    pub files: u64,
    pub bytes: u64,
    /// Rows that were not cached before.
    pub added: u64,
    /// Cached rows whose object is gone.
    pub removed: u64,
    /// Cached rows whose object changed.
    pub changed: u64,
    /// Backend keys that break the path rules, left out of the cache.
    pub skipped: Vec<String>,
    /// Leftovers of writes interrupted over a day ago, removed (S3:
    /// multipart uploads nobody finished or aborted).
    pub abandoned_removed: u64,
    /// Why looking for those failed, if it did (the refresh stands).
    pub abandoned_error: Option<String>,
}

/// Differences between the cache and the backend.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Drift {
    pub volume: String,
    /// In the backend, not in the cache.
    pub missing: Vec<String>,
    /// In the cache, not in the backend.
    pub extra: Vec<String>,
    /// In both, with a different size or etag.
    pub stale: Vec<String>,
}

impl Drift {
    pub fn is_clean(&self) -> bool {
        self.missing.is_empty() && self.extra.is_empty() && self.stale.is_empty()
    }
}

/// Listing requests running at once during a scan.
const SCAN_WORKERS: usize = 8;
/// A scan keeps splitting prefixes by directory until this many are queued
/// or running; further directories are listed whole.
const SCAN_SHARDS: usize = 64;
/// How deep a scan splits directories.
const SPLIT_DEPTH: usize = 4;

enum Task {
    Split(String, usize),
    List(String),
}

enum Found {
    Split(String, usize, Option<Split>),
    Listed,
}

/// Every object in a volume's backend, in key order. Backends that can
/// split their keys by directory are listed in parallel. `progress` is
/// told the running count as pages arrive.
pub(crate) async fn scan(
    storage: &Storage,
    volume: &str,
    progress: &(dyn Fn(u64) + Sync),
) -> StorageResult<Vec<(String, ObjectMeta)>> {
    let store = storage.volume(volume)?.store.clone();
    let found: Arc<Mutex<Vec<(String, ObjectMeta)>>> = Arc::default();
    let count = Arc::new(AtomicU64::new(0));
    let mut queue = VecDeque::from([Task::Split(String::new(), 0)]);
    let mut running: JoinSet<StorageResult<Found>> = JoinSet::new();
    let mut ticker = tokio::time::interval(Duration::from_millis(100));
    loop {
        while running.len() < SCAN_WORKERS
            && let Some(task) = queue.pop_front()
        {
            let (store, found, count) = (store.clone(), found.clone(), count.clone());
            running.spawn(async move {
                match task {
                    Task::Split(prefix, depth) => {
                        let split = store.split(&prefix).await?;
                        Ok(Found::Split(prefix, depth, split))
                    }
                    Task::List(prefix) => {
                        let mut after: Option<String> = None;
                        loop {
                            let page = store.list(&prefix, after.as_deref(), LIST_PAGE).await?;
                            count.fetch_add(page.objects.len() as u64, Ordering::Relaxed);
                            found.lock().unwrap_or_else(|p| p.into_inner()).extend(page.objects);
                            match page.next {
                                Some(next) => after = Some(next),
                                None => return Ok(Found::Listed),
                            }
                        }
                    }
                }
            });
        }
        let done = tokio::select! {
            done = running.join_next() => done,
            _ = ticker.tick() => {
                progress(count.load(Ordering::Relaxed));
                continue;
            }
        };
        let Some(done) = done else { break };
        let done = done.map_err(|e| StorageError::unavailable(format!("a listing task failed: {e}")))??;
        if let Found::Split(prefix, depth, split) = done {
            match split {
                // This backend lists flat.
                None => queue.push_back(Task::List(prefix)),
                Some((files, dirs)) => {
                    count.fetch_add(files.len() as u64, Ordering::Relaxed);
                    found.lock().unwrap_or_else(|p| p.into_inner()).extend(files);
                    for dir in dirs {
                        let fan_out = queue.len() + running.len();
                        queue.push_back(if fan_out < SCAN_SHARDS && depth + 1 < SPLIT_DEPTH {
                            Task::Split(dir, depth + 1)
                        } else {
                            Task::List(dir)
                        });
                    }
                }
            }
        }
    }
    progress(count.load(Ordering::Relaxed));
    let mut all = std::mem::take(&mut *found.lock().unwrap_or_else(|p| p.into_inner()));
    all.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    Ok(all)
}

/// Rebuild `volume`'s rows from its backend and swap them in atomically.
/// Metadata a backend cannot hold (a local directory keeps no content
/// type) is kept from the old row when the etag is unchanged.
pub async fn refresh(storage: &Storage, volume: &str, progress: &(dyn Fn(u64) + Sync)) -> StorageResult<RefreshReport> {
    let listed = scan(storage, volume, progress).await?;
    let cache = storage.cache();
    let mut old: BTreeMap<String, ObjectMeta> = cache.all_files(volume)?.into_iter().collect();
    let mut report = RefreshReport {
        volume: volume.to_owned(),
        ..Default::default()
    };
    let mut rows = Vec::with_capacity(listed.len());
    for (key, mut meta) in listed {
        let Ok(path) = VolumePath::parse(&key) else {
            report.skipped.push(key);
            continue;
        };
        match old.remove(&key) {
            None => report.added += 1,
            Some(previous) if previous.etag == meta.etag => {
                meta.content_type = previous.content_type;
                meta.cache_control = meta.cache_control.or(previous.cache_control);
                if meta.metadata.is_empty() {
                    meta.metadata = previous.metadata;
                }
            }
            Some(_) => report.changed += 1,
        }
        report.files += 1;
        report.bytes += meta.size;
        rows.push((path, meta));
    }
    report.removed = old.len() as u64;
    cache.replace_volume(volume, &rows)?;
    // Credentials may lack ListBucketMultipartUploads: say so, keep the rest.
    match storage.volume(volume)?.store.sweep_abandoned(ABANDONED_AFTER).await {
        Ok(n) => report.abandoned_removed = n,
        Err(e) => report.abandoned_error = Some(e.to_string()),
    }
    Ok(report)
}

/// Compare `volume`'s rows with its backend; changes nothing.
pub async fn verify(storage: &Storage, volume: &str, progress: &(dyn Fn(u64) + Sync)) -> StorageResult<Drift> {
    let listed = scan(storage, volume, progress).await?;
    let mut cached: BTreeMap<String, ObjectMeta> = storage.cache().all_files(volume)?.into_iter().collect();
    let mut drift = Drift {
        volume: volume.to_owned(),
        ..Default::default()
    };
    for (key, meta) in listed {
        if VolumePath::parse(&key).is_err() {
            continue;
        }
        match cached.remove(&key) {
            None => drift.missing.push(key),
            Some(row) if row.etag != meta.etag || row.size != meta.size => drift.stale.push(key),
            Some(_) => {}
        }
    }
    drift.extra = cached.into_keys().collect();
    Ok(drift)
}
