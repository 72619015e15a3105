//! Keeping the metadata cache true to the backends: `refresh` rebuilds a
//! volume's rows from a full backend listing, `verify` reports drift
//! without changing anything. The backend is the source of truth.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;
use tokio::task::JoinSet;

use crate::audit::{INTENT_ORPHANED_AFTER, PRUNE_BATCH, PRUNE_EVERY, Pruned};
use crate::cache::{MetadataCache, RefreshPart, RefreshProgress};
use crate::error::{StorageError, StorageResult};
use crate::path::VolumePath;
use crate::store::{ABANDONED_AFTER, KeyPage, ObjectMeta, Split, now_ms};
use crate::vfs::Storage;

/// Keys per backend listing request.
const LIST_PAGE: usize = 1000;

/// The outcome of a refresh.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RefreshReport {
    /// The volume refreshed.
    pub volume: String,
    /// Files found in the backend.
    pub files: u64,
    /// Their bytes.
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
    /// Objects an interrupted refresh had listed, taken up by this one.
    pub resumed: u64,
}

/// Differences between the cache and the backend.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Drift {
    /// The volume compared.
    pub volume: String,
    /// In the backend, not in the cache.
    pub missing: Vec<String>,
    /// In the cache, not in the backend.
    pub extra: Vec<String>,
    /// In both, with a different size or etag.
    pub stale: Vec<String>,
}

impl Drift {
    /// Whether the cache and the backend agree.
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
    /// A prefix listed page by page, from after a key.
    List(String, Option<String>),
}

enum Found {
    Split(String, usize, Option<Split>),
    Page(String, KeyPage),
}

/// Where a scan puts what it finds.
enum Sink<'a> {
    Memory(Vec<(String, ObjectMeta)>),
    /// Recorded in the metadata cache as a refresh in progress, so that an
    /// interrupted refresh resumes; `done` is how far an earlier run got.
    Record {
        cache: &'a MetadataCache,
        volume: &'a str,
        owner: &'a str,
        done: RefreshProgress,
    },
}

impl Sink<'_> {
    async fn keep(&mut self, part: RefreshPart<'_>, found: Vec<(String, ObjectMeta)>) -> StorageResult<()> {
        match self {
            Sink::Memory(all) => all.extend(found),
            Sink::Record { cache, volume, .. } => cache.refresh_record(volume, part, &found).await?,
        }
        Ok(())
    }

    /// Say the run is alive.
    async fn beat(&self) -> StorageResult<()> {
        match self {
            Sink::Memory(_) => Ok(()),
            Sink::Record {
                cache, volume, owner, ..
            } => cache.refresh_beat(volume, owner, now_ms()).await,
        }
    }

    /// What an earlier run recorded of `task`: the split's sub-prefixes, or
    /// the listing done or taken up where it stopped.
    fn resume(&self, task: Task) -> Result<Task, Found> {
        let Sink::Record { done, .. } = self else {
            return Ok(task);
        };
        match task {
            Task::Split(prefix, depth) => match done.splits.get(&prefix) {
                Some(dirs) => Err(Found::Split(prefix, depth, Some((Vec::new(), dirs.clone())))),
                None => Ok(Task::Split(prefix, depth)),
            },
            Task::List(prefix, None) => match done.lists.get(&prefix) {
                Some(None) => Err(Found::Page(prefix, KeyPage::default())),
                Some(Some(after)) => Ok(Task::List(prefix, Some(after.clone()))),
                None => Ok(Task::List(prefix, None)),
            },
            task => Ok(task),
        }
    }
}

/// Every object in a volume's backend, in key order. Backends that can
/// split their keys by directory are listed in parallel. `progress` is
/// told the running count as pages arrive.
pub(crate) async fn scan(
    storage: &Storage,
    volume: &str,
    progress: &(dyn Fn(u64) + Sync),
) -> StorageResult<Vec<(String, ObjectMeta)>> {
    let mut sink = Sink::Memory(Vec::new());
    scan_into(storage, volume, &mut sink, 0, progress).await?;
    let Sink::Memory(mut all) = sink else {
        unreachable!("a memory sink stays one")
    };
    all.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    Ok(all)
}

async fn scan_into(
    storage: &Storage,
    volume: &str,
    sink: &mut Sink<'_>,
    already: u64,
    progress: &(dyn Fn(u64) + Sync),
) -> StorageResult<()> {
    let store = storage.volume(volume)?.store.clone();
    let count = Arc::new(AtomicU64::new(already));
    let mut queue = VecDeque::from([Task::Split(String::new(), 0)]);
    let mut running: JoinSet<StorageResult<Found>> = JoinSet::new();
    let mut resumed = Vec::new();
    let mut ticker = tokio::time::interval(Duration::from_millis(100));
    let mut last_beat = std::time::Instant::now();
    loop {
        while running.len() < SCAN_WORKERS
            && let Some(task) = queue.pop_front()
        {
            let task = match sink.resume(task) {
                Ok(task) => task,
                Err(found) => {
                    resumed.push(found);
                    continue;
                }
            };
            let (store, count) = (store.clone(), count.clone());
            running.spawn(async move {
                match task {
                    Task::Split(prefix, depth) => {
                        let split = store.split(&prefix).await?;
                        Ok(Found::Split(prefix, depth, split))
                    }
                    Task::List(prefix, after) => {
                        let page = store.list(&prefix, after.as_deref(), LIST_PAGE).await?;
                        count.fetch_add(page.objects.len() as u64, Ordering::Relaxed);
                        Ok(Found::Page(prefix, page))
                    }
                }
            });
        }
        let done = match resumed.pop() {
            Some(found) => found,
            None => {
                let done = tokio::select! {
                    done = running.join_next() => done,
                    _ = ticker.tick() => {
                        progress(count.load(Ordering::Relaxed));
                        if last_beat.elapsed() >= BEAT_EVERY {
                            sink.beat().await?;
                            last_beat = std::time::Instant::now();
                        }
                        continue;
                    }
                };
                let Some(done) = done else { break };
                done.map_err(|e| StorageError::unavailable(format!("a listing task failed: {e}")))??
            }
        };
        match done {
            Found::Page(prefix, page) => {
                let next = page.next.clone();
                sink.keep(
                    RefreshPart::List {
                        prefix: &prefix,
                        next: next.as_deref(),
                    },
                    page.objects,
                )
                .await?;
                // A prefix under way goes on before new ones start.
                if let Some(next) = next {
                    queue.push_front(Task::List(prefix, Some(next)));
                }
            }
            // This backend lists flat.
            Found::Split(prefix, _, None) => queue.push_back(Task::List(prefix, None)),
            Found::Split(prefix, depth, Some((files, dirs))) => {
                count.fetch_add(files.len() as u64, Ordering::Relaxed);
                sink.keep(
                    RefreshPart::Split {
                        prefix: &prefix,
                        dirs: &dirs,
                    },
                    files,
                )
                .await?;
                for dir in dirs {
                    let fan_out = queue.len() + running.len();
                    queue.push_back(if fan_out < SCAN_SHARDS && depth + 1 < SPLIT_DEPTH {
                        Task::Split(dir, depth + 1)
                    } else {
                        Task::List(dir, None)
                    });
                }
            }
        }
    }
    progress(count.load(Ordering::Relaxed));
    Ok(())
}

/// An interrupted refresh younger than this is resumed; an older one's
/// listing is too stale to build on, and the refresh starts over.
pub const RESUME_WITHIN: Duration = Duration::from_secs(24 * 3600);
/// A running refresh says it is alive this often...
const BEAT_EVERY: Duration = Duration::from_secs(5);
/// ...and counts as running, refusing a second one of its volume, until
/// it has been silent this long (a killed process never says it ended).
pub const LIVE_FOR: Duration = Duration::from_secs(60);

/// Rebuild `volume`'s rows from its backend and swap them in atomically.
/// Metadata a backend cannot hold (a local directory keeps no content
/// type) is kept from the old row when the etag is unchanged. The listing
/// is recorded as it goes: a refresh that fails (S3 down, the process
/// killed) is resumed by the next one, within [`RESUME_WITHIN`].
pub async fn refresh(storage: &Storage, volume: &str, progress: &(dyn Fn(u64) + Sync)) -> StorageResult<RefreshReport> {
    static RUNS: AtomicU64 = AtomicU64::new(0);
    let cache = storage.cache();
    let backend = storage.volume(volume)?.store.describe();
    let owner = format!(
        "{}.{}.{}",
        std::process::id(),
        now_ms(),
        RUNS.fetch_add(1, Ordering::Relaxed)
    );
    let windows = (RESUME_WITHIN.as_millis() as u64, LIVE_FOR.as_millis() as u64);
    let done = cache
        .refresh_begin(volume, &backend, &owner, now_ms(), windows)
        .await?
        .unwrap_or_default();
    let result = refresh_run(storage, volume, &owner, done, progress).await;
    if result.is_err() {
        // Free for the next run to take up at once.
        let _ = cache.refresh_beat(volume, &owner, 0).await;
    }
    result
}

async fn refresh_run(
    storage: &Storage,
    volume: &str,
    owner: &str,
    done: RefreshProgress,
    progress: &(dyn Fn(u64) + Sync),
) -> StorageResult<RefreshReport> {
    let cache = storage.cache();
    let resumed = done.found;
    let mut sink = Sink::Record {
        cache,
        volume,
        owner,
        done,
    };
    scan_into(storage, volume, &mut sink, resumed, progress).await?;
    // The merge with the old rows happens inside the engine, in one
    // transaction, without the listing in memory.
    let counts = cache.finish_refresh(volume, owner).await?;
    let mut report = RefreshReport {
        volume: volume.to_owned(),
        resumed,
        files: counts.files,
        bytes: counts.bytes,
        added: counts.added,
        removed: counts.removed,
        changed: counts.changed,
        skipped: counts.skipped,
        ..Default::default()
    };
    // Credentials may lack ListBucketMultipartUploads: say so, keep the rest.
    let open = open_backend_uploads(storage, volume).await?;
    match storage
        .volume(volume)?
        .store
        .sweep_abandoned(ABANDONED_AFTER, &open)
        .await
    {
        Ok(n) => report.abandoned_removed = n,
        Err(e) => report.abandoned_error = Some(e.to_string()),
    }
    Ok(report)
}

/// The backend's multipart uploads that open uploads of the S3 endpoint
/// put their parts into (`backend` in their settings): live, however old.
async fn open_backend_uploads(storage: &Storage, volume: &str) -> StorageResult<std::collections::HashSet<String>> {
    let uploads = storage.cache().engine().uploads(Some(volume)).await?;
    Ok(uploads
        .iter()
        .filter_map(|u| {
            let settings: serde_json::Value = serde_json::from_str(&u.settings).ok()?;
            settings.get("backend")?.as_str().map(str::to_owned)
        })
        .collect())
}

/// Give every object of `volume` whose ETag is not one S3 would give it
/// (a file put in a local volume's directory by hand) the MD5 of its
/// bytes, reading each such object once; how many changed. The cache
/// learns them at the next refresh.
pub async fn rehash(storage: &Storage, volume: &str, progress: &(dyn Fn(u64) + Sync)) -> StorageResult<u64> {
    let store = storage.volume(volume)?.store.clone();
    let (mut after, mut seen, mut changed) = (None, 0, 0);
    loop {
        let page = store.list("", after.as_deref(), LIST_PAGE).await?;
        for (key, meta) in &page.objects {
            seen += 1;
            if crate::store::is_s3_etag(&meta.etag) {
                continue;
            }
            match store.rehash(key).await {
                Ok(Some(now)) if now.etag != meta.etag => changed += 1,
                Ok(_) | Err(StorageError::NotFound) => {}
                Err(e) => return Err(e),
            }
        }
        progress(seen);
        match page.next {
            Some(next) => after = Some(next),
            None => return Ok(changed),
        }
    }
}

/// Compare `volume`'s rows with its backend; changes nothing.
pub async fn verify(storage: &Storage, volume: &str, progress: &(dyn Fn(u64) + Sync)) -> StorageResult<Drift> {
    let listed = scan(storage, volume, progress).await?;
    let mut cached: BTreeMap<String, ObjectMeta> = storage.cache().all_files(volume).await?.into_iter().collect();
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

/// Delete the records older than `keep_days`, [`PRUNE_BATCH`] at a time
/// (each batch its own transaction, so an interrupted prune keeps what it
/// did and the next one goes on).
#[cfg_attr(feature = "internals", visibility::make(pub))]
pub(crate) async fn prune(cache: &MetadataCache, keep_days: u32, batch: usize) -> StorageResult<Pruned> {
    let before = crate::store::now_ms().saturating_sub(u64::from(keep_days) * 24 * 3600 * 1000);
    let mut pruned = Pruned {
        deleted: 0,
        left_to_another_node: false,
    };
    loop {
        match cache.engine().audit_prune(before, batch).await? {
            None => {
                pruned.left_to_another_node = true;
                return Ok(pruned);
            }
            Some(n) => {
                pruned.deleted += n;
                if (n as usize) < batch {
                    return Ok(pruned);
                }
            }
        }
    }
}

/// `silo serve`'s upkeep, now and every [`PRUNE_EVERY`] for as long as the
/// returned task runs (abort it to stop): prune the trail (when it is
/// kept), and set right the files of intents other nodes left an hour ago.
pub fn upkeep(storage: Arc<Storage>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(PRUNE_EVERY);
        loop {
            every.tick().await;
            let settings = storage.audit().clone();
            if settings.enabled {
                match prune(storage.cache(), settings.keep_days, PRUNE_BATCH).await {
                    Ok(p) if p.deleted > 0 => tracing::info!(
                        deleted = p.deleted,
                        "pruned audit records older than {} days",
                        settings.keep_days
                    ),
                    Ok(_) => {}
                    Err(e) => tracing::warn!("pruning the audit trail: {e}"),
                }
            }
            let before = crate::store::now_ms().saturating_sub(INTENT_ORPHANED_AFTER.as_millis() as u64);
            match storage.recover(None, before).await {
                Ok(0) => {}
                Ok(n) => tracing::warn!("set right {n} files other nodes left half-recorded"),
                Err(e) => tracing::warn!("looking at intents other nodes left: {e}"),
            }
        }
    })
}
