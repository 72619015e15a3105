//! The storage core: volumes, grants, quotas and the files API every entry
//! point (WIT glue, CLI, pipeline) goes through. Knows nothing of wasmtime.
//!
//! [`Storage`] owns the volumes and the metadata cache. A [`Session`] is one
//! caller's view of it: a plugin invocation with its grants and limits, or
//! the host itself with full access. Outside its grants a caller gets
//! `AccessDenied` before anything is looked up, so it cannot even learn
//! whether a path exists.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use crate::audit::{Action, Actor, AuditSettings, Record};
use crate::budget::{Held, WriteBudget};
use crate::cache::{Change, Entry, Intent, MetadataCache, Page, Version};
use crate::error::{StorageError, StorageResult};
use crate::metrics::{Metrics, VolumeLookups};
use crate::path::{self, VolumePath};
use crate::policy::{ContentPolicy, SNIFF_BYTES};
use crate::readcache::ReadCache;
use crate::store::{self, ByteRange, ByteStream, ObjectMeta, ObjectStore, ObjectUpload, PutOptions};
use prometheus_client::metrics::counter::Counter;

/// Largest object `read` returns whole; bigger ones need a stream.
pub const MAX_READ_BYTES: u64 = 16 * 1024 * 1024;
/// Largest page a listing returns.
pub const MAX_LIST_LIMIT: usize = 1000;
/// User metadata bounds per object.
pub const MAX_METADATA_PAIRS: usize = 32;
/// The most bytes of user metadata a file may have.
pub const MAX_METADATA_BYTES: usize = 2048;
/// Longest `content-type` a write may declare (RFC 6838 allows 127 + 127).
pub const MAX_CONTENT_TYPE_BYTES: usize = 255;
/// Longest `cache-control` a write may set.
pub const MAX_CACHE_CONTROL_BYTES: usize = 1024;
/// The longest a signed URL may stay valid: seven days, S3's own limit for
/// presigned URLs.
pub const MAX_URL_SECONDS: u64 = 7 * 24 * 3600;

/// Who may read a volume's files without the CMS in between.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Visibility {
    /// Anyone may read its files.
    Public,
    /// Only grants and signed URLs read its files.
    Private,
}

impl Visibility {
    /// The `Cache-Control` a file is served with, by any door: never cached
    /// by others from a private volume; the file's own, else an hour, from
    /// a public one.
    pub fn cache_control(self, stored: Option<&str>) -> String {
        match (self, stored) {
            (Visibility::Private, _) => "private, no-store".to_owned(),
            (Visibility::Public, Some(c)) => c.to_owned(),
            (Visibility::Public, None) => "public, max-age=3600".to_owned(),
        }
    }
}

/// How the metadata cache answers for a volume.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CacheMode {
    /// The cache is the listing: fastest; files added behind Silo's back
    /// appear after `silo cache refresh`.
    #[default]
    Canonical,
    /// A cache miss on stat or read asks the backend (and remembers a miss
    /// for [`NEGATIVE_TTL`]), so files written by other servers or tools
    /// appear at once. Listings still come from the cache.
    ReadThrough,
}

/// How long a read-through miss is remembered.
pub const NEGATIVE_TTL: std::time::Duration = std::time::Duration::from_secs(5);
/// Most misses remembered at once (across volumes).
pub const NEGATIVE_CAPACITY: usize = 10_000;

/// Recently missed locations of read-through volumes, bounded in size and age.
#[derive(Default)]
struct NegativeCache {
    misses: Mutex<std::collections::HashMap<Location, std::time::Instant>>,
}

impl NegativeCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<Location, std::time::Instant>> {
        self.misses.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn is_fresh(&self, loc: &Location) -> bool {
        self.lock().get(loc).is_some_and(|at| at.elapsed() < NEGATIVE_TTL)
    }

    fn remember(&self, loc: &Location) {
        let mut misses = self.lock();
        if misses.len() >= NEGATIVE_CAPACITY {
            misses.retain(|_, at| at.elapsed() < NEGATIVE_TTL);
            if misses.len() >= NEGATIVE_CAPACITY {
                misses.clear();
            }
        }
        misses.insert(loc.clone(), std::time::Instant::now());
    }

    fn forget(&self, loc: &Location) {
        self.lock().remove(loc);
    }
}

/// A named storage area.
pub struct Volume {
    /// Its name.
    pub name: String,
    /// Who may read its files.
    pub visibility: Visibility,
    /// Whether the metadata cache is its listing, or asks the backend on a
    /// miss.
    pub cache_mode: CacheMode,
    /// Its backend.
    pub store: Arc<dyn ObjectStore>,
    /// Base URL public files are served from, if any.
    pub public_url: Option<String>,
    /// Local disk copies of whole files read from the backend.
    #[cfg(feature = "internals")]
    pub read_cache: Option<Arc<ReadCache>>,
    #[cfg(not(feature = "internals"))]
    pub(crate) read_cache: Option<Arc<ReadCache>>,
}

pub use crate::path::Location;

/// What a grant allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    /// Read and list.
    Read,
    /// Store or replace.
    Write,
    /// Remove.
    Delete,
    /// Change the volume's settings its clients may change (bucket CORS):
    /// a principal's right, never a plugin's.
    Admin,
}

/// Access to the files of one volume under one path prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The volume.
    pub volume: String,
    /// A directory path ("" for the whole volume).
    pub prefix: String,
    /// What it allows.
    pub access: Vec<Access>,
}

impl Grant {
    fn covers(&self, volume: &str, path: &str, access: Access) -> bool {
        self.volume == volume
            && self.access.contains(&access)
            && (self.prefix.is_empty()
                || path == self.prefix
                || path
                    .strip_prefix(self.prefix.as_str())
                    .is_some_and(|rest| rest.starts_with('/')))
    }
}

/// Write quotas for one session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// Bytes a session may write in all.
    pub bytes_written: u64,
    /// Files a session may write.
    pub objects_written: u64,
    /// The largest file it may write.
    pub max_object_bytes: u64,
}

impl Quota {
    /// No limit.
    pub const UNLIMITED: Quota = Quota {
        bytes_written: u64::MAX,
        objects_written: u64::MAX,
        max_object_bytes: u64::MAX,
    };
}

/// The volumes and the metadata cache.
pub struct Storage {
    volumes: BTreeMap<String, Volume>,
    cache: MetadataCache,
    negative: NegativeCache,
    policy: ContentPolicy,
    metrics: Arc<Metrics>,
    lookups: BTreeMap<String, VolumeLookups>,
    budget: WriteBudget,
    audit: AuditSettings,
    /// Small files read often, in memory.
    hot: Option<Arc<crate::hotcache::HotCache>>,
}

/// A file staged for upload: visible at its location only to the sessions
/// of the pipeline judging it.
#[derive(Debug, Clone)]
pub struct PendingUpload {
    /// Where it will be stored.
    pub location: Location,
    /// Its metadata, as it will be stored.
    pub meta: ObjectMeta,
    /// Its bytes.
    pub staged: Arc<Staged>,
    /// Store it only if this holds when it is stored (a CMS node's
    /// `If-None-Match: *` or `If-Match`); checked before any plugin runs
    /// too, so a conflict costs no plugin work.
    pub condition: Option<store::Condition>,
    /// Who sent it (a principal's name, `cli`, …) in which request, for
    /// the report and the audit trail.
    pub actor: Option<Arc<Actor>>,
    /// The content's SHA-256, hex, where it was hashed as it was staged.
    pub sha256: Option<String>,
    /// The ETag it is stored under where Silo makes ETags (local and
    /// memory volumes): the MD5 of its bytes, taken as they were staged, or
    /// of its parts' for a multipart upload. `None`: the backend hashes it.
    pub etag: Option<String>,
    /// Where the backend holds the staged bytes already, so that an
    /// accepted upload is stored without them passing through this host
    /// again.
    pub assembly: Assembly,
    /// Its place among the uploads a node has under way, given back when
    /// the last clone is dropped.
    #[cfg(feature = "internals")]
    pub place: Option<Arc<Held>>,
    #[cfg(not(feature = "internals"))]
    pub(crate) place: Option<Arc<Held>>,
}

/// How the backend can store an accepted upload from bytes it holds.
#[derive(Debug, Clone, Default)]
pub enum Assembly {
    /// It cannot: the staged bytes are written.
    #[default]
    Write,
    /// Completing the backend's own multipart upload `upload` from its
    /// `parts` (number, the backend's ETag), which hold the staged bytes
    /// (see [`ObjectStore::complete_parts`]).
    Parts {
        /// The backend's upload.
        upload: String,
        /// Its parts: number, the backend's ETag.
        parts: Vec<(i32, String)>,
    },
}

/// What a read gives: bytes held in memory, or a stream.
pub enum ReadBody {
    /// In memory.
    Bytes(Bytes),
    /// Streamed from the backend.
    Stream(ByteStream),
}

/// A read answered to a client in chunks, with buffers no larger than
/// the answer's `length`: a small file costs no 256 KiB allocation (which
/// the allocator would map and unmap every time).
pub fn answer_chunks(stream: ByteStream, length: u64) -> tokio_util::io::ReaderStream<ByteStream> {
    tokio_util::io::ReaderStream::with_capacity(stream, (length as usize).clamp(4096, 256 * 1024))
}

impl ReadBody {
    /// The body as a stream.
    pub fn into_stream(self) -> ByteStream {
        match self {
            ReadBody::Bytes(bytes) => Box::pin(std::io::Cursor::new(bytes)),
            ReadBody::Stream(stream) => stream,
        }
    }
}

/// Where an upload waits while it is judged: small ones in memory, the
/// rest in a file outside every volume (removed when dropped).
#[derive(Debug)]
pub enum Staged {
    /// In memory.
    Memory(Bytes),
    /// In a file, removed when dropped.
    File(tempfile::TempPath),
    /// Files, one after another, with their sizes: a multipart upload's
    /// parts as kept on this node (their owner removes them).
    Parts(Vec<(std::path::PathBuf, u64)>),
}

impl Staged {
    /// The staged content, or a range of it.
    pub async fn open(&self, range: Option<ByteRange>) -> StorageResult<ByteStream> {
        use tokio::io::{AsyncReadExt, AsyncSeekExt};
        let failed = |e: std::io::Error| StorageError::unavailable(format!("staged upload: {e}"));
        match self {
            Staged::Memory(bytes) => {
                let bytes = match range {
                    None => bytes.clone(),
                    Some(r) => {
                        let start = (r.offset.min(bytes.len() as u64)) as usize;
                        let end = (r.offset.saturating_add(r.length).min(bytes.len() as u64)) as usize;
                        bytes.slice(start..end)
                    }
                };
                Ok(Box::pin(std::io::Cursor::new(bytes)))
            }
            Staged::File(path) => {
                let mut file = tokio::fs::File::open(path).await.map_err(failed)?;
                Ok(match range {
                    None => Box::pin(file),
                    Some(r) => {
                        file.seek(std::io::SeekFrom::Start(r.offset)).await.map_err(failed)?;
                        Box::pin(file.take(r.length))
                    }
                })
            }
            Staged::Parts(files) => {
                use futures_util::{StreamExt, TryStreamExt};
                // Each file is opened when the read reaches it: an upload
                // of 10,000 parts never holds 10,000 descriptors.
                let (mut skip, mut left) = range.map_or((0, u64::MAX), |r| (r.offset, r.length));
                let mut pieces = Vec::new();
                for (path, size) in files {
                    if left == 0 {
                        break;
                    }
                    if skip >= *size {
                        skip -= size;
                        continue;
                    }
                    let take = (size - skip).min(left);
                    pieces.push((path.clone(), skip, take));
                    (skip, left) = (0, left - take);
                }
                let chunks = futures_util::stream::iter(pieces)
                    .then(|(path, skip, take)| async move {
                        let mut file = tokio::fs::File::open(&path).await?;
                        file.seek(std::io::SeekFrom::Start(skip)).await?;
                        Ok::<_, std::io::Error>(tokio_util::io::ReaderStream::with_capacity(
                            file.take(take),
                            256 * 1024,
                        ))
                    })
                    .try_flatten();
                Ok(Box::pin(tokio_util::io::StreamReader::new(chunks)))
            }
        }
    }
}

/// What a session has done, kept outside the plugin's store so that it
/// survives a trapped or cancelled invocation.
#[derive(Debug, Default)]
pub struct Usage {
    /// Bytes written.
    pub bytes_written: u64,
    /// Files written.
    pub objects_written: u64,
    /// Held by writes under way: each counts as an object, and every byte
    /// it has been given so far counts, before anything is stored.
    pub bytes_reserved: u64,
    /// Files under way.
    pub objects_reserved: u64,
    /// Files written, in order, with their final metadata.
    pub written: Vec<(Location, ObjectMeta)>,
}

/// The quota one write under way holds: one object and its bytes so far.
/// Dropped, it gives them back (the write was discarded); settled by
/// [`Session::written`], it becomes usage.
struct Reservation {
    usage: Arc<Mutex<Usage>>,
    quota: Quota,
    bytes: u64,
    settled: bool,
}

fn lock_usage(usage: &Mutex<Usage>) -> std::sync::MutexGuard<'_, Usage> {
    usage.lock().unwrap_or_else(|p| p.into_inner())
}

impl Reservation {
    /// Grow the object to `size` bytes, if the quota has room.
    fn grow(&mut self, size: u64) -> StorageResult<()> {
        let mut usage = lock_usage(&self.usage);
        let more = size.saturating_sub(self.bytes);
        check_room(&self.quota, &usage, size, more, 0)?;
        usage.bytes_reserved += more;
        self.bytes += more;
        Ok(())
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if !self.settled {
            let mut usage = lock_usage(&self.usage);
            usage.bytes_reserved -= self.bytes;
            usage.objects_reserved -= 1;
        }
    }
}

/// Whether `quota` has room for `more` bytes and `objects` more objects,
/// the object growing to `size`, beside what is written and reserved.
fn check_room(quota: &Quota, usage: &Usage, size: u64, more: u64, objects: u64) -> StorageResult<()> {
    if size > quota.max_object_bytes {
        return Err(StorageError::QuotaExceeded(format!(
            "objects are limited to {} bytes",
            quota.max_object_bytes
        )));
    }
    if (usage.objects_written + usage.objects_reserved).saturating_add(objects) > quota.objects_written {
        return Err(StorageError::QuotaExceeded(format!(
            "at most {} objects may be written (writes still open count)",
            quota.objects_written
        )));
    }
    if (usage.bytes_written + usage.bytes_reserved).saturating_add(more) > quota.bytes_written {
        return Err(StorageError::QuotaExceeded(format!(
            "at most {} bytes may be written (writes still open count)",
            quota.bytes_written
        )));
    }
    Ok(())
}

/// One caller's view of storage.
#[derive(Clone)]
pub struct Session {
    storage: Arc<Storage>,
    /// `None`: the host itself, which may do anything.
    grants: Option<Arc<[Grant]>>,
    quota: Quota,
    pending: Option<PendingUpload>,
    usage: Arc<Mutex<Usage>>,
    /// Files this session has changed (written, deleted, learned).
    changes: Arc<std::sync::atomic::AtomicU64>,
    /// Whom its changes are recorded under; `None`: the host's own work.
    actor: Option<Arc<Actor>>,
}

impl Storage {
    /// The storage of `volumes`, their metadata in `cache`.
    #[cfg_attr(feature = "internals", visibility::make(pub))]
    pub(crate) fn new(volumes: Vec<Volume>, cache: MetadataCache) -> Self {
        let storage = Storage {
            volumes: volumes.into_iter().map(|v| (v.name.clone(), v)).collect(),
            cache,
            negative: NegativeCache::default(),
            policy: ContentPolicy::default(),
            metrics: Arc::default(),
            lookups: BTreeMap::new(),
            budget: WriteBudget::new((crate::budget::DEFAULT_WRITE_BUFFER_MIB << 20) as usize),
            audit: AuditSettings::default(),
            hot: None,
        };
        let metrics = storage.metrics.clone();
        storage.with_metrics(metrics)
    }

    /// Count into `metrics` (shared with the volumes' read caches).
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.lookups = self
            .volumes
            .keys()
            .map(|v| (v.clone(), metrics.lookups_of(v)))
            .collect();
        self.metrics = metrics;
        self
    }

    fn count(&self, volume: &str, which: impl Fn(&VolumeLookups) -> &[Counter; 2], hit: bool) {
        if let Some(counters) = self.lookups.get(volume) {
            which(counters)[usize::from(hit)].inc();
        }
    }

    /// Silo's counters.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Share `budget` for buffered writes (the one the S3 volumes reserve from).
    #[cfg_attr(feature = "internals", visibility::make(pub))]
    pub(crate) fn with_budget(mut self, budget: WriteBudget) -> Self {
        self.budget = budget;
        self
    }

    /// The process-wide budget for bytes buffered by streamed writes.
    #[cfg_attr(feature = "internals", visibility::make(pub))]
    pub(crate) fn budget(&self) -> &WriteBudget {
        &self.budget
    }

    /// Keep small files read often in memory, up to `max_bytes` (0: none).
    pub fn with_memory_cache(mut self, max_bytes: u64) -> Self {
        self.hot = crate::hotcache::HotCache::new(max_bytes).map(Arc::new);
        self
    }

    /// Drop the memory and disk copies of a file that changed.
    fn forget_copies(&self, loc: &Location) {
        if let Some(hot) = &self.hot {
            hot.forget(&loc.volume, loc.path.as_str());
        }
        if let Ok(Volume {
            read_cache: Some(disk), ..
        }) = self.volume(&loc.volume)
        {
            disk.forget(loc.path.as_str());
        }
    }

    /// Keep the audit trail as `settings` say.
    pub fn with_audit(mut self, settings: AuditSettings) -> Self {
        self.audit = settings;
        self
    }

    /// The audit trail's settings.
    pub fn audit(&self) -> &AuditSettings {
        &self.audit
    }

    /// Record an upload refused (nothing was stored), on its own.
    pub async fn audit_refusal(
        &self,
        actor: Option<&Actor>,
        loc: &Location,
        meta: &ObjectMeta,
        plugin: Option<&str>,
        reason: &str,
    ) -> StorageResult<()> {
        if !self.audit.enabled {
            return Ok(());
        }
        let host;
        let actor = match actor {
            Some(actor) => actor,
            None => {
                host = Actor::request(crate::audit::HOST);
                &host
            }
        };
        let mut record = actor.record(&self.audit.node, Action::Refused, loc, Some(meta));
        // Nothing was stored: no etag names a stored version.
        record.etag = None;
        record.sha256 = actor.sha256.clone();
        record.plugin = plugin.map(str::to_owned);
        record.reason = Some(reason.to_owned());
        self.cache.engine().audit_add(&record).await
    }

    /// Look again at the files of open intents (all of `node`'s, else
    /// every node's begun before `before_ms`): a process stopped between
    /// changing each in its backend and writing its row. Each row is made
    /// to agree with the backend (recorded in the audit trail as the
    /// intent's principal and request, saying so), and the intent ends.
    /// How many rows were set right.
    pub async fn recover(&self, node: Option<&str>, before_ms: u64) -> StorageResult<u64> {
        let engine = self.cache.engine();
        let mut fixed = 0;
        for intent in engine.intents(node, before_ms).await? {
            let Ok(loc) = self.location(&intent.volume, &intent.path) else {
                // Its volume is no longer configured.
                engine.intent_end(intent.id).await?;
                continue;
            };
            let store = &self.volume(&loc.volume)?.store;
            let stored = match store.head(loc.path.as_str()).await {
                Ok(meta) => Some(meta),
                Err(StorageError::NotFound) => None,
                Err(e) => {
                    tracing::warn!("looking again at {loc}: {e}; it stays to be looked at");
                    continue;
                }
            };
            let cached = self.cache.get(&loc.volume, loc.path.as_str()).await?;
            let actor = Actor {
                principal: intent.principal.clone(),
                request_id: intent.request_id.clone(),
                plugin: None,
                sha256: None,
            };
            let record = |action, meta: Option<&ObjectMeta>| {
                self.audit.enabled.then(|| {
                    let mut r = actor.record(&self.audit.node, action, &loc, meta);
                    r.reason = Some(format!(
                        "recovered: node '{}' stopped between changing the file and recording it",
                        intent.node
                    ));
                    r
                })
            };
            match (stored, cached) {
                (Some(meta), cached) if cached.as_ref().is_none_or(|c| c.etag != meta.etag) => {
                    let change = Change {
                        audit: record(Action::Put, Some(&meta)),
                        intent: Some(intent.id),
                    };
                    self.cache.put_with(&loc.volume, &loc.path, &meta, &change).await?;
                    fixed += 1;
                }
                (None, Some(cached)) => {
                    let mut audit = record(Action::Delete, None);
                    if let Some(r) = &mut audit {
                        r.etag = Some(cached.etag.clone());
                    }
                    let change = Change {
                        audit,
                        intent: Some(intent.id),
                    };
                    self.cache
                        .remove_with(&loc.volume, &loc.path, Some(Version::etag(&cached.etag)), &change)
                        .await?;
                    fixed += 1;
                }
                _ => engine.intent_end(intent.id).await?,
            }
            self.forget_copies(&loc);
        }
        Ok(fixed)
    }

    /// Replace the default write-xor-execute policy.
    pub fn with_policy(mut self, policy: ContentPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// What no volume may hold (write-xor-execute).
    pub fn policy(&self) -> &ContentPolicy {
        &self.policy
    }

    /// The volume named `name`.
    pub fn volume(&self, name: &str) -> StorageResult<&Volume> {
        self.volumes.get(name).ok_or(StorageError::NotFound)
    }

    /// Every volume.
    pub fn volumes(&self) -> impl Iterator<Item = &Volume> {
        self.volumes.values()
    }

    /// The metadata cache.
    #[cfg_attr(feature = "internals", visibility::make(pub))]
    pub(crate) fn cache(&self) -> &MetadataCache {
        &self.cache
    }

    /// Parse `volume` + `path` into a location on a known volume.
    pub fn location(&self, volume: &str, path: &str) -> StorageResult<Location> {
        self.volume(volume)
            .map_err(|_| StorageError::InvalidPath(format!("there is no volume named '{volume}'")))?;
        Ok(Location {
            volume: volume.to_owned(),
            path: VolumePath::parse(path)?,
        })
    }

    /// Parse `volume/path/inside` as written on a command line.
    pub fn parse_location(&self, spec: &str) -> StorageResult<Location> {
        let (volume, path) = path::split_target(spec)?;
        self.location(volume, path)
    }

    /// A URL that reads the file `meta` describes straight from its backend
    /// until `expires_in` (1 s to [`MAX_URL_SECONDS`]) has passed; `None` if
    /// the backend has no such URLs (S3 has). The backend is made to present
    /// the file as the sidecar would: its stored type, `private, no-store`,
    /// and as an attachment if the type is active.
    pub async fn presigned_url(
        &self,
        loc: &Location,
        meta: &ObjectMeta,
        expires_in: std::time::Duration,
    ) -> StorageResult<Option<String>> {
        if expires_in.is_zero() || expires_in.as_secs() > MAX_URL_SECONDS {
            return Err(StorageError::Unsupported(format!(
                "a signed URL stays valid for 1 to {MAX_URL_SECONDS} seconds, not {}",
                expires_in.as_secs()
            )));
        }
        let presented = store::Presented {
            content_type: Some(meta.content_type.clone()),
            content_disposition: self.policy.disposition(&meta.content_type).map(str::to_owned),
            cache_control: Some("private, no-store".into()),
        };
        self.volume(&loc.volume)?
            .store
            .presign_get(loc.path.as_str(), expires_in, &presented)
            .await
    }

    /// A session with every right and no quota, for the host's own work.
    pub fn host_session(self: &Arc<Self>) -> Session {
        Session::new(self.clone(), None, Quota::UNLIMITED)
    }
}

impl Session {
    /// A session with `grants` (`None`: every right) and `quota`.
    pub fn new(storage: Arc<Storage>, grants: Option<Arc<[Grant]>>, quota: Quota) -> Self {
        Session {
            storage,
            grants,
            quota,
            pending: None,
            usage: Arc::default(),
            changes: Arc::default(),
            actor: None,
        }
    }

    /// Record this session's changes under `actor`.
    pub fn with_actor(mut self, actor: Arc<Actor>) -> Self {
        self.actor = Some(actor);
        self
    }

    /// Who acts, for the audit trail.
    pub fn actor(&self) -> Option<&Arc<Actor>> {
        self.actor.as_ref()
    }

    /// The audit record of `action` at `loc`, if the trail is kept. A
    /// plugin's writes are derived files.
    fn audit_record(&self, action: Action, loc: &Location, meta: Option<&ObjectMeta>) -> Option<Record> {
        let settings = &self.storage.audit;
        if !settings.enabled {
            return None;
        }
        let host;
        let actor = match &self.actor {
            Some(actor) => actor.as_ref(),
            None => {
                host = Actor::request(crate::audit::HOST);
                host.as_ref()
            }
        };
        let action = match action {
            Action::Put | Action::Copy if actor.plugin.is_some() => Action::Derived,
            other => other,
        };
        Some(actor.record(&settings.node, action, loc, meta))
    }

    /// How many changes this session has made: an answer it looked up is
    /// still its own latest view while this stays the same.
    pub fn changes(&self) -> u64 {
        self.changes.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The storage it acts on.
    pub fn storage(&self) -> &Arc<Storage> {
        &self.storage
    }

    /// Show `pending` at its location to this session only.
    pub fn with_pending(mut self, pending: PendingUpload) -> Self {
        self.pending = Some(pending);
        self
    }

    /// What this session has written so far.
    pub fn usage(&self) -> Arc<Mutex<Usage>> {
        self.usage.clone()
    }

    fn check(&self, volume: &str, path: &str, access: Access) -> StorageResult<()> {
        match &self.grants {
            None => Ok(()),
            Some(grants) if grants.iter().any(|g| g.covers(volume, path, access)) => Ok(()),
            Some(_) => Err(StorageError::AccessDenied),
        }
    }

    /// Resolve a guest-supplied location. The grant check comes first, so a
    /// caller without access learns nothing, not even whether the volume exists.
    pub fn resolve(&self, volume: &str, path: &str, access: Access) -> StorageResult<Location> {
        self.check(volume, path, access)?;
        self.storage.location(volume, path)
    }

    /// The upload under judgement, if this session sees one.
    pub fn pending(&self) -> Option<&PendingUpload> {
        self.pending.as_ref()
    }

    /// The volumes this session has any grant on, in name order (every
    /// volume for the host's own session).
    pub fn granted_volumes(&self) -> Vec<String> {
        let mut names: Vec<String> = match &self.grants {
            None => self.storage.volumes.keys().cloned().collect(),
            Some(grants) => grants
                .iter()
                .filter(|g| self.storage.volumes.contains_key(&g.volume))
                .map(|g| g.volume.clone())
                .collect(),
        };
        names.sort();
        names.dedup();
        names
    }

    fn pending_at(&self, loc: &Location) -> Option<&PendingUpload> {
        self.pending.as_ref().filter(|p| &p.location == loc)
    }

    fn cache(&self) -> &MetadataCache {
        &self.storage.cache
    }

    fn store(&self, loc: &Location) -> StorageResult<&Arc<dyn ObjectStore>> {
        Ok(&self.storage.volume(&loc.volume)?.store)
    }

    /// Metadata from the cache; on a miss in a read-through volume, from
    /// the backend (and then cached).
    pub async fn stat(&self, loc: &Location) -> StorageResult<ObjectMeta> {
        if let Some(p) = self.pending_at(loc) {
            return Ok(p.meta.clone());
        }
        if let Some(meta) = self.cache().get(&loc.volume, loc.path.as_str()).await? {
            self.storage.count(&loc.volume, |c| &c.metadata, true);
            return Ok(meta);
        }
        let volume = self.storage.volume(&loc.volume)?;
        self.storage.count(&loc.volume, |c| &c.metadata, false);
        if volume.cache_mode == CacheMode::Canonical || self.storage.negative.is_fresh(loc) {
            return Err(StorageError::NotFound);
        }
        match volume.store.head(loc.path.as_str()).await {
            Ok(meta) => {
                self.cache().put(&loc.volume, &loc.path, &meta).await?;
                Ok(meta)
            }
            Err(StorageError::NotFound) => {
                self.storage.negative.remember(loc);
                Err(StorageError::NotFound)
            }
            Err(e) => Err(e),
        }
    }

    /// The backend holds `meta` at `loc`, written by other means (found by
    /// a listing or a resumed copy): record it as a write through Silo
    /// would be, so read caches and other nodes are told too. Host only.
    pub async fn learned(&self, loc: &Location, meta: ObjectMeta) -> StorageResult<()> {
        if self.grants.is_some() {
            return Err(StorageError::AccessDenied);
        }
        if self
            .cache()
            .get(&loc.volume, loc.path.as_str())
            .await?
            .is_some_and(|c| c.etag == meta.etag)
        {
            return Ok(());
        }
        self.changed(loc);
        self.cache().put(&loc.volume, &loc.path, &meta).await?;
        self.storage.negative.forget(loc);
        Ok(())
    }

    /// Whether a file is at `loc`.
    pub async fn exists(&self, loc: &Location) -> StorageResult<bool> {
        match self.stat(loc).await {
            Ok(_) => Ok(true),
            Err(StorageError::NotFound) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// A stream over a file or a range of it.
    pub async fn open_read(&self, loc: &Location, range: Option<ByteRange>) -> StorageResult<(ObjectMeta, ByteStream)> {
        let (meta, body) = self.read_body(loc, range).await?;
        Ok((meta, body.into_stream()))
    }

    /// The bytes of `loc` (a `range` of them), as shared bytes where they
    /// are small (from the memory cache, which keeps them), else a stream.
    pub async fn read_body(&self, loc: &Location, range: Option<ByteRange>) -> StorageResult<(ObjectMeta, ReadBody)> {
        if let Some(p) = self.pending_at(loc) {
            return Ok((p.meta.clone(), ReadBody::Stream(p.staged.open(range).await?)));
        }
        // A file the cache does not know is not there (canonical mode).
        let known = self.stat(loc).await?;
        let hot = self.storage.hot.as_ref().filter(|h| h.admits(known.size));
        if let Some(hot) = hot {
            let held = hot.get(&loc.volume, loc.path.as_str(), &known.etag, known.size);
            self.storage.count(&loc.volume, |c| &c.memory_cache, held.is_some());
            if let Some(bytes) = held {
                // As a store reads a range: what of it the file has.
                let bytes = match range {
                    Some(r) => {
                        let start = r.offset.min(known.size);
                        bytes.slice(start as usize..r.offset.saturating_add(r.length).min(known.size) as usize)
                    }
                    None => bytes,
                };
                return Ok((known, ReadBody::Bytes(bytes)));
            }
        }
        let (meta, body) = self.fetch(loc, known.clone(), range).await?;
        match hot {
            // Kept only as the version the metadata cache names.
            Some(hot) if range.is_none() && meta.etag == known.etag => {
                let bytes = Bytes::from(store::read_to_end(body, crate::hotcache::MAX_ENTRY).await?);
                hot.insert(&loc.volume, loc.path.as_str(), &known.etag, bytes.clone());
                Ok((meta, ReadBody::Bytes(bytes)))
            }
            _ => Ok((meta, ReadBody::Stream(body))),
        }
    }

    /// The bytes of `loc`, known to be `known`, from the disk read cache or
    /// the backend.
    async fn fetch(
        &self,
        loc: &Location,
        known: ObjectMeta,
        range: Option<ByteRange>,
    ) -> StorageResult<(ObjectMeta, ByteStream)> {
        let volume = self.storage.volume(&loc.volume)?;
        let key = loc.path.as_str();
        if let Some(disk) = &volume.read_cache {
            let hit = disk.get(key, &known, range).await;
            self.storage.count(&loc.volume, |c| &c.read_cache, hit.is_some());
            if let Some(body) = hit {
                return Ok((known, body));
            }
        }
        match volume.store.get(key, range).await {
            Ok((meta, body)) => match (&volume.read_cache, range) {
                (Some(disk), None) => {
                    let body = disk.fill(key, &meta, body);
                    Ok((meta, body))
                }
                (Some(disk), Some(_)) => {
                    disk.fill_behind(key, &known, volume.store.clone());
                    Ok((meta, body))
                }
                (None, _) => Ok((meta, body)),
            },
            Err(StorageError::NotFound) => {
                // Deleted behind Silo's back: the row is stale.
                self.cache()
                    .remove(&loc.volume, &loc.path, Some(Version::etag(&known.etag)))
                    .await?;
                Err(StorageError::NotFound)
            }
            Err(e) => Err(e),
        }
    }

    /// Count a change, and drop the copies of the file it changed.
    fn changed(&self, loc: &Location) {
        self.changes.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        self.storage.forget_copies(loc);
    }

    /// The whole of the file at `loc`.
    pub async fn read(&self, loc: &Location) -> StorageResult<Vec<u8>> {
        let (meta, body) = self.open_read(loc, None).await?;
        if meta.size > MAX_READ_BYTES {
            return Err(StorageError::TooLarge);
        }
        store::read_to_end(body, MAX_READ_BYTES).await
    }

    /// `length` bytes of the file at `loc` from `offset`.
    pub async fn read_range(&self, loc: &Location, offset: u64, length: u64) -> StorageResult<Vec<u8>> {
        if length > MAX_READ_BYTES {
            return Err(StorageError::TooLarge);
        }
        let (_, body) = self.open_read(loc, Some(ByteRange { offset, length })).await?;
        store::read_to_end(body, length).await
    }

    /// `options` as a write of `loc` stores them (checked, with the type
    /// guessed where none was given and the policy's disposition).
    pub fn object_options(&self, loc: &Location, mut options: PutOptions) -> StorageResult<PutOptions> {
        self.checked_options(loc, &mut options)?;
        Ok(options)
    }

    fn check_options(&self, loc: &Location, options: &mut PutOptions) -> StorageResult<()> {
        self.checked_options(loc, options)?;
        if self.pending_at(loc).is_some() {
            // The upload under judgement is the pipeline's to store.
            return Err(StorageError::AccessDenied);
        }
        Ok(())
    }

    fn checked_options(&self, loc: &Location, options: &mut PutOptions) -> StorageResult<()> {
        if options.metadata.len() > MAX_METADATA_PAIRS
            || options.metadata.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>() > MAX_METADATA_BYTES
        {
            return Err(StorageError::TooLarge);
        }
        // Both are served as HTTP headers: bounded, and header-safe.
        check_header_option("content-type", &options.content_type, MAX_CONTENT_TYPE_BYTES)?;
        if let Some(value) = &options.cache_control {
            check_header_option("cache-control", value, MAX_CACHE_CONTROL_BYTES)?;
        }
        for (name, value) in options.headers.each() {
            check_header_option(name, value, MAX_CACHE_CONTROL_BYTES)?;
        }
        if options.content_type.is_empty() {
            options.content_type = store::guess_content_type(loc.path.as_str());
        }
        let policy = &self.storage.policy;
        policy.check_name(loc.path.as_str())?;
        options.content_disposition = policy.disposition(&options.content_type).map(str::to_owned);
        Ok(())
    }

    /// Reserve quota for one object of `size` bytes so far. Writes under
    /// way count, so concurrent writers share the quota however they
    /// interleave.
    fn reserve(&self, size: u64) -> StorageResult<Reservation> {
        let mut usage = lock_usage(&self.usage);
        check_room(&self.quota, &usage, size, size, 1)?;
        usage.bytes_reserved += size;
        usage.objects_reserved += 1;
        Ok(Reservation {
            usage: self.usage.clone(),
            quota: self.quota,
            bytes: size,
            settled: false,
        })
    }

    /// Record a write the backend acknowledged: cache first, then usage,
    /// which takes over the write's reservation.
    async fn written(
        &self,
        loc: &Location,
        meta: ObjectMeta,
        mut reservation: Reservation,
        action: Action,
        intent: i64,
    ) -> StorageResult<ObjectMeta> {
        {
            let mut usage = lock_usage(&self.usage);
            usage.bytes_reserved -= reservation.bytes;
            usage.objects_reserved -= 1;
            reservation.settled = true;
            // Counted as written even if the cache update fails: it is stored.
            usage.bytes_written += meta.size;
            usage.objects_written += 1;
            usage.written.push((loc.clone(), meta.clone()));
        }
        self.changed(loc);
        let change = Change {
            audit: self.audit_record(action, loc, Some(&meta)),
            intent: Some(intent),
        };
        if let Err(e) = self.cache().put_with(&loc.volume, &loc.path, &meta, &change).await {
            // Unrecorded, the object would be invisible yet stored: take
            // this version back out (a newer one by someone else stays).
            let store = self.store(loc)?;
            let undone = match store.head(loc.path.as_str()).await {
                Ok(now) if now.etag == meta.etag => store.delete(loc.path.as_str()).await.is_ok(),
                _ => false,
            };
            // Left open, the intent has the file looked at again later.
            if undone {
                self.abandon(intent).await;
            }
            return Err(StorageError::unavailable(format!(
                "{e}; the write to {loc} was {}",
                if undone {
                    "undone"
                } else {
                    "not undone (recorded when this node restarts, or within the hour by another)"
                }
            )));
        }
        self.storage.negative.forget(loc);
        Ok(meta)
    }

    /// Store `data` at `loc`, within the grants and quota.
    pub async fn write(&self, loc: &Location, data: Bytes, mut options: PutOptions) -> StorageResult<ObjectMeta> {
        loc.path.check_size(data.len() as u64)?;
        self.check_options(loc, &mut options)?;
        let reservation = self.reserve(data.len() as u64)?;
        self.storage.policy.check_content(
            loc.path.as_str(),
            &options.content_type,
            &data[..data.len().min(SNIFF_BYTES)],
        )?;
        let intent = self.intend(loc).await?;
        let meta = self
            .or_abandon(intent, self.store(loc)?.put(loc.path.as_str(), data, &options).await)
            .await?;
        self.written(loc, meta, reservation, Action::Put, intent).await
    }

    /// Store `loc` from the `size` bytes of the file at `path` (a staged
    /// upload), which the backend reads where it lies: an S3 volume sends
    /// it without buffering any of it in memory.
    pub async fn write_file(
        &self,
        loc: &Location,
        path: &std::path::Path,
        size: u64,
        mut options: PutOptions,
    ) -> StorageResult<ObjectMeta> {
        use tokio::io::AsyncReadExt;
        loc.path.check_size(size)?;
        self.check_options(loc, &mut options)?;
        let reservation = self.reserve(size)?;
        let mut head = Vec::with_capacity(SNIFF_BYTES);
        tokio::fs::File::open(path)
            .await
            .map_err(|e| StorageError::unavailable(format!("staged upload: {e}")))?
            .take(SNIFF_BYTES as u64)
            .read_to_end(&mut head)
            .await
            .map_err(|e| StorageError::unavailable(format!("staged upload: {e}")))?;
        self.storage
            .policy
            .check_content(loc.path.as_str(), &options.content_type, &head)?;
        let intent = self.intend(loc).await?;
        let stored = self.store(loc)?.put_file(loc.path.as_str(), path, size, &options).await;
        let meta = self.or_abandon(intent, stored).await?;
        // A wrong size leaves the intent: the object is looked at again.
        if meta.size != size {
            return Err(StorageError::unavailable(format!(
                "the backend stored {} bytes of the {size} written to {loc}",
                meta.size
            )));
        }
        self.written(loc, meta, reservation, Action::Put, intent).await
    }

    /// Store `loc`, `size` bytes, from what the backend holds of it
    /// already (see [`Assembly`]); `head` is the content's beginning, for
    /// the policy. `None`: the backend cannot, and nothing was written.
    pub async fn assemble(
        &self,
        loc: &Location,
        assembly: &Assembly,
        size: u64,
        head: &[u8],
        mut options: PutOptions,
    ) -> StorageResult<Option<ObjectMeta>> {
        if matches!(assembly, Assembly::Write) {
            return Ok(None);
        }
        self.check_options(loc, &mut options)?;
        let reservation = self.reserve(size)?;
        self.storage.policy.check_content(
            loc.path.as_str(),
            &options.content_type,
            &head[..head.len().min(SNIFF_BYTES)],
        )?;
        let intent = self.intend(loc).await?;
        let store = self.store(loc)?;
        let key = loc.path.as_str();
        let composed = match assembly {
            Assembly::Write => Ok(None),
            Assembly::Parts { upload, parts } => {
                store.complete_parts(key, upload, parts, size, &options).await.map(Some)
            }
        };
        match self.or_abandon(intent, composed).await? {
            Some(meta) if meta.size == size => self
                .written(loc, meta, reservation, Action::Put, intent)
                .await
                .map(Some),
            // The intent stays: the stored object is looked at again.
            Some(meta) => Err(StorageError::unavailable(format!(
                "the backend assembled {} bytes of the {size} of {loc}",
                meta.size
            ))),
            None => {
                self.abandon(intent).await;
                Ok(None)
            }
        }
    }

    /// Start a streamed write; see [`SessionUpload`].
    pub async fn open_write(&self, loc: &Location, options: PutOptions) -> StorageResult<SessionUpload> {
        self.open_write_as(loc, options, Action::Put).await
    }

    async fn open_write_as(
        &self,
        loc: &Location,
        mut options: PutOptions,
        action: Action,
    ) -> StorageResult<SessionUpload> {
        self.check_options(loc, &mut options)?;
        let reservation = self.reserve(0)?;
        let content_type = options.content_type.clone();
        let upload = self.store(loc)?.start_upload(loc.path.as_str(), options).await?;
        Ok(SessionUpload {
            session: self.clone(),
            location: loc.clone(),
            upload,
            reservation,
            size: 0,
            content_type,
            head: Some(Vec::new()),
            action,
        })
    }

    /// Remove the file at `loc`.
    pub async fn delete(&self, loc: &Location) -> StorageResult<()> {
        self.check(&loc.volume, loc.path.as_str(), Access::Delete)?;
        if self.pending_at(loc).is_some() {
            return Err(StorageError::AccessDenied);
        }
        let known = self.stat(loc).await?;
        self.delete_version(loc, Version::etag(&known.etag), Action::Delete)
            .await
    }

    /// Delete `loc` if it still holds the version `written` (a write this
    /// session made): `Ok(false)`, and nothing deleted, if it is gone or
    /// holds another version now, such as a concurrent writer's. Rollback
    /// of a refused upload uses this, so that it never removes a file it
    /// did not write. A version is its ETag and its time: ETags are MD5s,
    /// so another writer's identical bytes have the same one.
    pub async fn discard(&self, loc: &Location, written: &ObjectMeta) -> StorageResult<bool> {
        let etag = written.etag.as_str();
        match self.stat(loc).await {
            Ok(known) if known.etag == etag && known.modified_ms == written.modified_ms => {}
            Ok(_) | Err(StorageError::NotFound) => return Ok(false),
            Err(e) => return Err(e),
        }
        match self
            .delete_version(loc, Version::written(written), Action::Rollback)
            .await
        {
            Ok(()) => Ok(true),
            Err(StorageError::NotFound) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Delete `loc`, known to the cache as `version`. The cache row goes
    /// only if it is still that version, and also when the backend no
    /// longer had the file (the row was stale).
    async fn delete_version(&self, loc: &Location, version: Version<'_>, action: Action) -> StorageResult<()> {
        let intent = self.intend(loc).await?;
        let deleted = self.store(loc)?.delete(loc.path.as_str()).await;
        self.changed(loc);
        if let Ok(()) | Err(StorageError::NotFound) = deleted {
            let mut audit = self.audit_record(action, loc, None);
            if let Some(record) = &mut audit {
                record.etag = Some(version.etag.to_owned());
            }
            let change = Change {
                audit,
                intent: Some(intent),
            };
            self.cache()
                .remove_with(&loc.volume, &loc.path, Some(version), &change)
                .await?;
        } else {
            self.abandon(intent).await;
        }
        deleted
    }

    /// Note, before it is made, a change to `loc` in its backend: if this
    /// process stops before the change's row is written, the intent left
    /// open has the file looked at again ([`Storage::recover`]).
    async fn intend(&self, loc: &Location) -> StorageResult<i64> {
        let (principal, request_id) = match &self.actor {
            Some(actor) => (actor.principal.clone(), actor.request_id.clone()),
            None => (crate::audit::HOST.to_owned(), String::new()),
        };
        let intent = Intent {
            id: 0,
            node: self.storage.audit.node.clone(),
            volume: loc.volume.clone(),
            path: loc.path.to_string(),
            principal,
            request_id,
            created_ms: store::now_ms(),
        };
        self.cache().engine().intent_begin(&intent).await
    }

    /// End an intent whose change was not made.
    async fn abandon(&self, intent: i64) {
        if let Err(e) = self.cache().engine().intent_end(intent).await {
            tracing::warn!("an intent left open (its file is looked at again later): {e}");
        }
    }

    /// `result`, ending `intent` first if it failed.
    async fn or_abandon<T>(&self, intent: i64, result: StorageResult<T>) -> StorageResult<T> {
        if result.is_err() {
            self.abandon(intent).await;
        }
        result
    }

    /// Copy the file at `from` to `to`.
    pub async fn copy(&self, from: &Location, to: &Location, mut options: PutOptions) -> StorageResult<ObjectMeta> {
        let source = self.stat(from).await?;
        to.path.check_size(source.size)?;
        // What was declared with the source goes with the copy unless
        // replaced (as S3's CopyObject does).
        if options.content_type.is_empty() {
            options.content_type = source.content_type.clone();
        }
        if options.cache_control.is_none() {
            options.cache_control = source.cache_control.clone();
        }
        if options.metadata.is_empty() {
            options.metadata = source.metadata.clone();
        }
        if options.headers.is_empty() {
            options.headers = source.headers.clone();
        }
        // A copy is stored in one request: no parts of its own.
        options.headers.parts = None;
        if from.volume != to.volume || self.pending_at(from).is_some() {
            let (_, body) = self.open_read(from, None).await?;
            return store_stream_as(self, to, body, options, Action::Copy).await;
        }
        self.check_options(to, &mut options)?;
        let reservation = self.reserve(source.size)?;
        if self.storage.policy.check_content {
            let head = self.read_range(from, 0, SNIFF_BYTES as u64).await?;
            self.storage
                .policy
                .check_content(to.path.as_str(), &options.content_type, &head)?;
        }
        let intent = self.intend(to).await?;
        let meta = self
            .store(to)?
            .copy(from.path.as_str(), to.path.as_str(), &options)
            .await;
        let meta = self.or_abandon(intent, meta).await?;
        self.written(to, meta, reservation, Action::Copy, intent).await
    }

    /// Move the file at `from` to `to`.
    pub async fn rename(&self, from: &Location, to: &Location) -> StorageResult<ObjectMeta> {
        let meta = self.copy(from, to, PutOptions::default()).await?;
        self.delete(from).await?;
        Ok(meta)
    }

    /// A page of a listing. Directory listings take a directory path ("" for
    /// the root); recursive ones a plain prefix.
    pub async fn list(
        &self,
        volume: &str,
        prefix: &str,
        recursive: bool,
        cursor: Option<&str>,
        limit: usize,
    ) -> StorageResult<Page> {
        self.check(volume, prefix, Access::Read)?;
        if !recursive {
            path::check_prefix(prefix)?;
        }
        self.storage
            .volume(volume)
            .map_err(|_| StorageError::InvalidPath(format!("there is no volume named '{volume}'")))?;
        let limit = match limit {
            0 => MAX_LIST_LIMIT,
            n => n.min(MAX_LIST_LIMIT),
        };
        let mut page = if recursive {
            self.cache().list_prefix(volume, prefix, cursor, limit).await?
        } else {
            self.cache().list_dir(volume, prefix, cursor, limit).await?
        };
        // A recursive listing takes a plain string prefix: `styles` also
        // matches `stylesheet.css`, which a grant on `styles` does not cover.
        if self.grants.is_some() {
            page.entries.retain(|e| {
                let path = match e {
                    Entry::File { path, .. } | Entry::Dir { path } => path,
                };
                self.check(volume, path, Access::Read).is_ok()
            });
        }
        Ok(page)
    }

    /// A URL a browser can fetch the file from: under the volume's
    /// `public_url` for public volumes; for private volumes on S3, a
    /// presigned URL valid for `expires_in` (see [`Storage::presigned_url`]).
    /// `Unsupported` when the volume has neither.
    pub async fn url(&self, loc: &Location, expires_in: std::time::Duration) -> StorageResult<String> {
        let meta = self.stat(loc).await?;
        let volume = self.storage.volume(&loc.volume)?;
        match (&volume.public_url, volume.visibility) {
            (Some(base), Visibility::Public) => Ok(format!(
                "{}/{}",
                base.trim_end_matches('/'),
                path::percent_encode(loc.path.as_str())
            )),
            (None, Visibility::Public) => Err(StorageError::Unsupported(format!(
                "volume '{}' has no public_url configured",
                loc.volume
            ))),
            (_, Visibility::Private) => self
                .storage
                .presigned_url(loc, &meta, expires_in)
                .await?
                .ok_or_else(|| {
                    StorageError::Unsupported(format!(
                        "volume '{}' is not on S3: its signed URLs come from the sidecar (GET /v1/sign/...)",
                        loc.volume
                    ))
                }),
        }
    }
}

/// A streamed write through a session: quota-checked as it grows, recorded
/// in the cache when finished, discarded when dropped.
pub struct SessionUpload {
    session: Session,
    location: Location,
    upload: Box<dyn ObjectUpload>,
    reservation: Reservation,
    size: u64,
    content_type: String,
    /// The beginning of the content until the policy has judged it.
    head: Option<Vec<u8>>,
    /// What its record calls it.
    action: Action,
}

impl SessionUpload {
    /// Append all of `body` (an append to an existing file starts with
    /// its stored content).
    pub async fn copy_from(&mut self, mut body: ByteStream) -> StorageResult<()> {
        pump_session(&mut body, self).await
    }

    /// Bytes given so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Append a chunk; `held` is the write budget reserved for it, if any.
    #[cfg_attr(feature = "internals", visibility::make(pub))]
    pub(crate) async fn write(&mut self, chunk: Bytes, held: Held) -> StorageResult<()> {
        let size = self.size + chunk.len() as u64;
        self.location.path.check_size(size)?;
        self.reservation.grow(size)?;
        if let Some(head) = &mut self.head {
            head.extend_from_slice(&chunk[..chunk.len().min(SNIFF_BYTES - head.len())]);
            if head.len() == SNIFF_BYTES {
                self.judge()?;
            }
        }
        self.upload.write(chunk, held).await?;
        self.size = size;
        Ok(())
    }

    /// Apply the content policy to the head; nothing becomes visible (the
    /// backend upload is dropped unfinished) if it refuses.
    fn judge(&mut self) -> StorageResult<()> {
        match self.head.take() {
            Some(head) => {
                self.session
                    .storage
                    .policy
                    .check_content(self.location.path.as_str(), &self.content_type, &head)
            }
            None => Ok(()),
        }
    }

    /// Store what was written; nothing is visible before.
    pub async fn finish(mut self) -> StorageResult<ObjectMeta> {
        self.judge()?;
        // The reservation covers every byte given; check it once more
        // before anything becomes visible.
        self.reservation.grow(self.size)?;
        let intent = self.session.intend(&self.location).await?;
        let meta = self.session.or_abandon(intent, self.upload.finish().await).await?;
        // A wrong size leaves the intent: the object is looked at again.
        if meta.size != self.size {
            return Err(StorageError::unavailable(format!(
                "the backend stored {} bytes of the {} written to {}",
                meta.size, self.size, self.location
            )));
        }
        self.session
            .written(&self.location, meta, self.reservation, self.action, intent)
            .await
    }
}

/// Copy a whole stream into a new object through `session` (used by the
/// pipeline to commit staged uploads).
pub async fn store_stream(
    session: &Session,
    loc: &Location,
    body: ByteStream,
    options: PutOptions,
) -> StorageResult<ObjectMeta> {
    store_stream_as(session, loc, body, options, Action::Put).await
}

/// [`store_stream`], recorded as `action`.
async fn store_stream_as(
    session: &Session,
    loc: &Location,
    mut body: ByteStream,
    options: PutOptions,
    action: Action,
) -> StorageResult<ObjectMeta> {
    let mut upload = session.open_write_as(loc, options, action).await?;
    pump_session(&mut body, &mut upload).await?;
    upload.finish().await
}

async fn pump_session(body: &mut ByteStream, upload: &mut SessionUpload) -> StorageResult<()> {
    use tokio::io::AsyncReadExt;
    // Chunks start small and grow while the body keeps filling them: a
    // small file costs no large allocation, a large one few reads.
    let mut chunk = 16 * 1024;
    loop {
        let mut buf = bytes::BytesMut::with_capacity(chunk);
        while buf.len() < chunk {
            let n = body
                .read_buf(&mut buf)
                .await
                .map_err(|e| StorageError::unavailable(format!("reading: {e}")))?;
            if n == 0 {
                break;
            }
        }
        let full = buf.len() >= chunk;
        if !buf.is_empty() {
            upload.write(buf.freeze(), Held::default()).await?;
        }
        if !full {
            return Ok(());
        }
        chunk = (chunk * 2).min(256 * 1024);
    }
}

/// Refuse an option served as an HTTP header that is too long or holds
/// characters a header cannot carry.
fn check_header_option(name: &str, value: &str, max: usize) -> StorageResult<()> {
    if value.len() > max {
        return Err(StorageError::TooLarge);
    }
    if !value.bytes().all(|b| b == b'\t' || (b' '..=b'~').contains(&b)) {
        return Err(StorageError::Unsupported(format!(
            "{name} must be visible ASCII (it is served as an HTTP header)"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parts staged where they lie read as one file, whole or in any range
    /// across their ends.
    #[tokio::test]
    async fn staged_parts_read_as_one_file() {
        use tokio::io::AsyncReadExt;
        let dir = tempfile::tempdir().unwrap();
        let mut files = Vec::new();
        let mut whole = Vec::new();
        for (i, len) in [5usize, 0, 7, 3].into_iter().enumerate() {
            let bytes: Vec<u8> = (0..len).map(|j| (i * 16 + j) as u8).collect();
            let path = dir.path().join(format!("part-{i}"));
            std::fs::write(&path, &bytes).unwrap();
            files.push((path, len as u64));
            whole.extend(bytes);
        }
        let staged = Staged::Parts(files);
        for offset in 0..=whole.len() {
            for length in 0..=whole.len() + 1 {
                let range = ByteRange {
                    offset: offset as u64,
                    length: length as u64,
                };
                let mut read = Vec::new();
                staged
                    .open(Some(range))
                    .await
                    .unwrap()
                    .read_to_end(&mut read)
                    .await
                    .unwrap();
                let end = (offset + length).min(whole.len());
                assert_eq!(read, whole[offset..end], "{offset}+{length}");
            }
        }
        let mut read = Vec::new();
        staged.open(None).await.unwrap().read_to_end(&mut read).await.unwrap();
        assert_eq!(read, whole);
    }
}
