//! Keeping the metadata cache true to the backends: `refresh` rebuilds a
//! volume's rows from a full backend listing, `verify` reports drift
//! without changing anything. The backend is the source of truth.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::error::StorageResult;
use crate::path::VolumePath;
use crate::store::ObjectMeta;
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

/// Every object in a volume's backend, in key order. `progress` is told
/// the running count after each page.
async fn scan(storage: &Storage, volume: &str, progress: &dyn Fn(u64)) -> StorageResult<Vec<(String, ObjectMeta)>> {
    let store = &storage.volume(volume)?.store;
    let mut all = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = store.list("", after.as_deref(), LIST_PAGE).await?;
        all.extend(page.objects);
        progress(all.len() as u64);
        match page.next {
            Some(next) => after = Some(next),
            None => return Ok(all),
        }
    }
}

/// Rebuild `volume`'s rows from its backend and swap them in atomically.
/// Metadata a backend cannot hold (a local directory keeps no content
/// type) is kept from the old row when the etag is unchanged.
pub async fn refresh(storage: &Storage, volume: &str, progress: &dyn Fn(u64)) -> StorageResult<RefreshReport> {
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
    Ok(report)
}

/// Compare `volume`'s rows with its backend; changes nothing.
pub async fn verify(storage: &Storage, volume: &str, progress: &dyn Fn(u64)) -> StorageResult<Drift> {
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
