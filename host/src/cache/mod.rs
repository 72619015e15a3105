//! The metadata cache: every object's path, size, etag, content type and
//! mtime, plus the directories they imply, behind one interface
//! ([`MetadataEngine`]) with an engine per database ([`sqlite`]: one node,
//! the embedded default; [`postgres`]: several nodes sharing it) and, in
//! front of it, a small per-node cache of hot rows (`front`).
//!
//! It answers stat, exists and list without touching a backend. It is
//! written through: the storage core updates it only after a backend has
//! acknowledged a write, copy or delete, so a failed backend call leaves it
//! as it was. The backend stays the source of truth; the cache can always be
//! rebuilt from it.

mod front;
pub mod postgres;
pub mod sqlite;

use std::path::Path;
use std::sync::Arc;

use crate::audit::{Filter, Record};
use crate::error::{StorageError, StorageResult};
use crate::path::VolumePath;
use crate::store::ObjectMeta;

pub use front::{FRONT_CAPACITY, FRONT_TTL};

/// How far an interrupted refresh of a volume got.
#[derive(Debug, Default)]
pub struct RefreshProgress {
    /// Prefixes split into files and sub-prefixes, with the sub-prefixes.
    pub splits: std::collections::HashMap<String, Vec<String>>,
    /// Prefixes listed: `None` once done, else the key to go on after.
    pub lists: std::collections::HashMap<String, Option<String>>,
    /// Objects found so far.
    pub found: u64,
}

/// What a finished refresh changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RefreshCounts {
    pub files: u64,
    pub bytes: u64,
    /// Rows that were not there before.
    pub added: u64,
    /// Rows whose object is gone.
    pub removed: u64,
    /// Rows whose object changed (another etag).
    pub changed: u64,
    /// Listed keys that break the path rules, left out.
    pub skipped: Vec<String>,
}

/// A part of a refresh's listing, done or advanced.
pub enum RefreshPart<'a> {
    Split { prefix: &'a str, dirs: &'a [String] },
    List { prefix: &'a str, next: Option<&'a str> },
}

impl RefreshPart<'_> {
    /// As a record row: kind, prefix, state.
    pub(crate) fn encode(&self) -> (&'static str, &str, String) {
        match self {
            RefreshPart::Split { prefix, dirs } => (
                "split",
                prefix,
                serde_json::to_string(dirs).unwrap_or_else(|_| "[]".into()),
            ),
            RefreshPart::List { prefix, next } => ("list", prefix, next.unwrap_or("").to_owned()),
        }
    }
}

/// Whether a refresh run may start, given the run recorded (backend,
/// started, last beat): `Ok(true)` to resume it, `Ok(false)` to start
/// over, `Unavailable` while it is alive. Shared by the engines.
pub(crate) fn may_refresh(
    volume: &str,
    recorded: Option<(String, i64, i64)>,
    backend: &str,
    now_ms: u64,
    (resume_within_ms, live_ms): (u64, u64),
) -> StorageResult<bool> {
    if let Some((_, _, beat)) = &recorded
        && now_ms.saturating_sub(*beat as u64) < live_ms
    {
        return Err(StorageError::unavailable(format!(
            "a refresh of volume '{volume}' is under way; run this one when it has ended"
        )));
    }
    Ok(recorded
        .is_some_and(|(b, started, _)| b == backend && now_ms.saturating_sub(started as u64) <= resume_within_ms))
}

/// A run's swap refused because another run took the refresh over.
pub(crate) fn taken_over(volume: &str) -> StorageError {
    StorageError::unavailable(format!(
        "another refresh of volume '{volume}' took this one over; nothing was changed"
    ))
}

impl RefreshProgress {
    /// Read back from record rows (kind, prefix, state); `None` if one
    /// cannot be read, so that nothing is built on a damaged record.
    pub(crate) fn decode(parts: impl IntoIterator<Item = (String, String, String)>, found: u64) -> Option<Self> {
        let mut progress = RefreshProgress {
            found,
            ..Default::default()
        };
        for (kind, prefix, state) in parts {
            match kind.as_str() {
                "split" => {
                    progress.splits.insert(prefix, serde_json::from_str(&state).ok()?);
                }
                "list" => {
                    progress.lists.insert(prefix, Some(state).filter(|s| !s.is_empty()));
                }
                _ => return None,
            }
        }
        Some(progress)
    }
}

/// A file or directory in a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
// Files make most of a page: boxing each would cost an allocation apiece.
#[allow(clippy::large_enum_variant)]
pub enum Entry {
    /// A file.
    File {
        /// Its path in the volume.
        path: String,
        /// What the cache holds of it.
        meta: ObjectMeta,
    },
    /// A directory.
    Dir {
        /// Its path in the volume.
        path: String,
    },
}

impl Entry {
    /// Its path in the volume.
    pub fn path(&self) -> &str {
        match self {
            Entry::File { path, .. } | Entry::Dir { path } => path,
        }
    }
}

/// One page of a listing.
#[derive(Debug, Default)]
pub struct Page {
    /// The entries, in path order.
    pub entries: Vec<Entry>,
    /// Where the next page starts, if there is one.
    pub next_cursor: Option<String>,
}

/// What the cache holds for one volume.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct VolumeStats {
    pub volume: String,
    pub files: u64,
    pub bytes: u64,
    pub directories: u64,
}

/// Where an engine announces changes made elsewhere (other nodes).
pub trait FrontSink: Send + Sync {
    fn forget(&self, volume: &str, path: &str);
    fn forget_volume(&self, volume: &str);
    fn forget_all(&self);
    /// Announcements started (`true`) or stopped and may have been lost.
    fn listening(&self, on: bool);
}

/// What every engine does. Rows are keyed by volume and path; listings are
/// index range scans in path order (byte order of UTF-8); a file `a` and a
/// directory `a` may both exist. Writes are atomic.
#[async_trait::async_trait]
pub trait MetadataEngine: Send + Sync + 'static {
    /// Where the rows live, for messages.
    fn describe(&self) -> String;
    /// Whether other nodes share these rows (and announce their changes).
    fn shared(&self) -> bool {
        false
    }
    /// Tell `front` of changes other nodes make, from now on.
    fn watch(&self, _front: Arc<dyn FrontSink>) {}
    /// Ask every node sharing these rows for `request` (a multipart
    /// upload's parts held on their disks; see `crate::multipart`).
    async fn ask_nodes(&self, request: &str) -> StorageResult<()> {
        let _ = request;
        Ok(())
    }
    /// Give `sink` what other nodes ask with [`MetadataEngine::ask_nodes`],
    /// from now on.
    fn answer_nodes(&self, _sink: Arc<dyn Fn(&str) + Send + Sync>) {}
    /// The row of one file.
    async fn get(&self, volume: &str, path: &str) -> StorageResult<Option<ObjectMeta>>;
    /// Record a file the backend has stored, and its directories, with
    /// `change` in the same transaction.
    async fn put(&self, volume: &str, path: &VolumePath, meta: &ObjectMeta, change: &Change) -> StorageResult<()>;
    /// Forget a file the backend has deleted, and directories left empty.
    /// With `version`, only if the row is still that version: a concurrent
    /// write may have stored, and recorded, a newer one since. `change` is
    /// recorded in the same transaction either way (the backend changed).
    async fn remove(
        &self,
        volume: &str,
        path: &VolumePath,
        version: Option<Version<'_>>,
        change: &Change,
    ) -> StorageResult<()>;
    /// Note that `intent`'s node is about to change a file in its backend;
    /// its id. The change's row ends it ([`Change::intent`]); one left
    /// behind (the process stopped) says which file may disagree.
    async fn intent_begin(&self, intent: &Intent) -> StorageResult<i64>;
    /// End an intent whose change did not happen.
    async fn intent_end(&self, id: i64) -> StorageResult<()>;
    /// Intents left open: all of `node`'s, else every node's begun before
    /// `before_ms`.
    async fn intents(&self, node: Option<&str>, before_ms: u64) -> StorageResult<Vec<Intent>>;
    /// Record what changed nothing (a refusal).
    async fn audit_add(&self, record: &Record) -> StorageResult<()>;
    /// Records `filter` admits with ids above `after`, oldest first, at
    /// most `limit`.
    async fn audit_query(&self, filter: &Filter, after: Option<i64>, limit: usize) -> StorageResult<Vec<Record>>;
    /// Of the `batch` oldest records (by id), delete those older than
    /// `before_ms`, in one transaction; how many, or `None` if another
    /// node is pruning now. (No index on time: writes stay cheaper, and
    /// ids follow time closely enough that a prune taking records in id
    /// order stops where the trail gets young.)
    async fn audit_prune(&self, before_ms: u64, batch: usize) -> StorageResult<Option<u64>>;
    /// The request that wrote version `etag` of a file, if recorded.
    async fn audit_writer(&self, volume: &str, path: &str, etag: &str) -> StorageResult<Option<String>>;
    /// The direct children of directory `dir` ("" for the root): files and
    /// subdirectories in path order (a file and a directory of the same
    /// name both appear, the file first).
    async fn list_dir(&self, volume: &str, dir: &str, cursor: Option<&str>, limit: usize) -> StorageResult<Page>;
    /// Every file whose path starts with `prefix`, in path order.
    async fn list_prefix(&self, volume: &str, prefix: &str, cursor: Option<&str>, limit: usize) -> StorageResult<Page>;
    /// Start recording a refresh of `volume` listed from `backend` as run
    /// `owner`, or take up the one an interrupted run recorded if it listed
    /// the same backend less than `resume_within_ms` ago (`Some`, with how
    /// far it got). `Unavailable` while another run beat less than
    /// `live_ms` ago.
    async fn refresh_begin(
        &self,
        volume: &str,
        backend: &str,
        owner: &str,
        now_ms: u64,
        windows: (u64, u64),
    ) -> StorageResult<Option<RefreshProgress>>;
    /// Say that run `owner` of `volume`'s refresh is alive (`now_ms`), or,
    /// with 0, that it has failed and the next run may take it up.
    async fn refresh_beat(&self, volume: &str, owner: &str, now_ms: u64) -> StorageResult<()>;
    /// Record objects a refresh found and the part of its listing they
    /// complete or advance, in one transaction.
    async fn refresh_record(
        &self,
        volume: &str,
        part: RefreshPart<'_>,
        found: &[(String, ObjectMeta)],
    ) -> StorageResult<()>;
    /// Every object the refresh of `volume` in progress has found, by key.
    #[cfg_attr(not(feature = "internals"), allow(dead_code))] // tests and benchmarks
    async fn refresh_found(&self, volume: &str) -> StorageResult<Vec<(String, ObjectMeta)>>;
    /// End refresh run `owner` of `volume`: its recorded listing replaces
    /// the volume's rows, and the run's record goes, in one transaction
    /// inside the database (the listing is never held in memory): readers
    /// see the old rows until the new ones are complete. A row whose etag
    /// is unchanged keeps its declared content type, cache control and
    /// metadata (a listing carries none). Keys no path rule admits are left
    /// out and returned. Refused if another run has taken the refresh over.
    async fn finish_refresh(&self, volume: &str, owner: &str) -> StorageResult<RefreshCounts>;
    /// Files, bytes and directories per volume.
    async fn stats(&self) -> StorageResult<Vec<VolumeStats>>;

    /// Open multipart upload `upload`, unless its principal already has
    /// `max_open` open (`false`); the count and the insert are atomic
    /// across nodes.
    async fn upload_create(&self, upload: &UploadRecord, max_open: usize) -> StorageResult<bool>;
    /// One open multipart upload.
    async fn upload_get(&self, id: &str) -> StorageResult<Option<UploadRecord>>;
    /// The open multipart uploads of `volume` (of every volume with
    /// `None`), by key and id.
    async fn uploads(&self, volume: Option<&str>) -> StorageResult<Vec<UploadRecord>>;
    /// Close an upload: its record and its parts' go, and the parts are
    /// returned (their bytes are the caller's to delete); `None` if it was
    /// not open.
    async fn upload_remove(&self, id: &str) -> StorageResult<Option<Vec<PartRecord>>>;
    /// Record a part whose bytes are stored: `None` if the upload is not
    /// open (the bytes are the caller's to delete), else the blob of the
    /// part of that number it replaced, if any.
    async fn part_put(&self, id: &str, part: &PartRecord) -> StorageResult<Option<Option<String>>>;
    /// Forget part `number` if it is still the one stored as `blob`.
    async fn part_remove(&self, id: &str, number: i32, blob: &str) -> StorageResult<()>;
    /// Keep `checksum` with part `number` if it is still the one stored as
    /// `blob`.
    async fn part_checksum(&self, id: &str, number: i32, blob: &str, checksum: &str) -> StorageResult<()>;
    /// An upload's parts, by number.
    async fn parts(&self, id: &str) -> StorageResult<Vec<PartRecord>>;
    /// Close an upload whose object was stored, as [`upload_remove`]
    /// does, and keep `completion` in the same transaction, so that any
    /// node answers a repeated completion with it.
    ///
    /// [`upload_remove`]: MetadataEngine::upload_remove
    async fn upload_complete(&self, completion: &Completion) -> StorageResult<Option<Vec<PartRecord>>>;
    /// How upload `id` completed, if it did and is still remembered.
    async fn completion(&self, id: &str) -> StorageResult<Option<Completion>>;
    /// Forget completions made before `before_ms`; how many.
    async fn completions_prune(&self, before_ms: u64) -> StorageResult<u64>;
    /// A volume's setting `name` its clients changed (bucket CORS), as
    /// they stored it.
    async fn setting(&self, volume: &str, name: &str) -> StorageResult<Option<String>>;
    /// Store (`Some`) or remove (`None`) a volume's setting `name`.
    async fn set_setting(&self, volume: &str, name: &str, value: Option<&str>) -> StorageResult<()>;
}

/// A version of a file a row must still hold for [`MetadataEngine::remove`]
/// to remove it: its ETag, and where known its time. ETags are MD5s, so
/// the same bytes written twice share one; the time tells the writes apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Version<'a> {
    /// The row's ETag.
    pub etag: &'a str,
    /// The row's `modified_ms`, if the caller wrote this version itself.
    pub modified_ms: Option<u64>,
}

impl<'a> Version<'a> {
    /// Any row with this ETag.
    pub fn etag(etag: &'a str) -> Self {
        Version { etag, modified_ms: None }
    }

    /// The row of exactly this write.
    pub fn written(meta: &'a ObjectMeta) -> Self {
        Version {
            etag: &meta.etag,
            modified_ms: Some(meta.modified_ms),
        }
    }
}

/// What is written in the same transaction as a row's change.
#[derive(Debug, Clone, Default)]
pub struct Change {
    /// The change's audit record.
    pub audit: Option<Record>,
    /// The intent the change completes, ended with it.
    pub intent: Option<i64>,
}

/// A change a node is about to make to a file in its backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Intent {
    /// 0 until recorded.
    pub id: i64,
    pub node: String,
    pub volume: String,
    pub path: String,
    pub principal: String,
    pub request_id: String,
    pub created_ms: u64,
}

/// An open multipart upload of the S3 endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadRecord {
    pub id: String,
    pub volume: String,
    pub key: String,
    pub principal: String,
    /// Milliseconds since the Unix epoch.
    pub created_ms: u64,
    /// What the creation declared (headers, metadata), as JSON.
    pub settings: String,
}

/// A multipart upload that completed: the object it made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    pub id: String,
    pub volume: String,
    pub key: String,
    /// The stored object's ETag.
    pub etag: String,
    pub size: u64,
    pub content_type: String,
    /// Milliseconds since the Unix epoch.
    pub completed_ms: u64,
}

/// One stored part of an open multipart upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartRecord {
    pub number: i32,
    /// The part's MD5, hex (S3's ETag of a part).
    pub etag: String,
    pub size: u64,
    pub modified_ms: u64,
    /// The key of its bytes in the volume's scratch store.
    pub blob: String,
    /// The checksum its client sent and Silo verified (`CRC32 <base64>`),
    /// for the object's composite checksum.
    pub checksum: Option<String>,
}

/// The cache the storage core uses: an engine, and in front of it the hot
/// rows of this node, dropped on every change this node makes and after
/// [`FRONT_TTL`] (changes another process makes to the engine are seen
/// within that).
pub struct MetadataCache {
    engine: Arc<dyn MetadataEngine>,
    front: Arc<front::FrontCache>,
}

/// Size and age of the front cache.
#[derive(Debug, Clone, Copy)]
pub struct FrontSettings {
    /// Rows kept at most (0: no front cache).
    pub capacity: usize,
    /// How long a row is served without asking the engine.
    pub ttl: std::time::Duration,
}

impl Default for FrontSettings {
    fn default() -> Self {
        FrontSettings {
            capacity: FRONT_CAPACITY,
            ttl: FRONT_TTL,
        }
    }
}

impl MetadataCache {
    #[cfg_attr(not(feature = "internals"), allow(dead_code))] // tests and benchmarks
    pub fn new(engine: Arc<dyn MetadataEngine>) -> Self {
        Self::with_front(engine, FrontSettings::default())
    }

    /// With a front cache of `settings`. A shared engine's front cache
    /// keeps rows only while the engine's announcements are heard.
    pub fn with_front(engine: Arc<dyn MetadataEngine>, settings: FrontSettings) -> Self {
        let front = Arc::new(front::FrontCache::new(
            settings.capacity,
            settings.ttl,
            !engine.shared(),
        ));
        if engine.shared() {
            engine.watch(front.clone());
        }
        MetadataCache { engine, front }
    }

    /// The PostgreSQL database of `settings`, shared with other nodes.
    pub async fn connect_postgres(settings: &postgres::PostgresSettings, front: FrontSettings) -> StorageResult<Self> {
        Ok(Self::with_front(
            Arc::new(postgres::PostgresEngine::connect(settings).await?),
            front,
        ))
    }

    /// The SQLite file at `path` (created if needed).
    #[cfg_attr(not(feature = "internals"), allow(dead_code))] // tests and benchmarks
    pub fn open(path: &Path) -> StorageResult<Self> {
        Ok(Self::new(Arc::new(sqlite::SqliteEngine::open(path)?)))
    }

    /// A cache held in memory only (tests, memory volumes).
    #[cfg_attr(not(feature = "internals"), allow(dead_code))] // tests and benchmarks
    pub fn in_memory() -> StorageResult<Self> {
        Ok(Self::new(Arc::new(sqlite::SqliteEngine::in_memory()?)))
    }

    pub fn engine(&self) -> &Arc<dyn MetadataEngine> {
        &self.engine
    }

    /// The cached metadata of one file.
    pub async fn get(&self, volume: &str, path: &str) -> StorageResult<Option<ObjectMeta>> {
        if let Some(known) = self.front.get(volume, path) {
            return Ok(known);
        }
        let generation = self.front.generation();
        let found = self.engine.get(volume, path).await?;
        self.front.insert(generation, volume, path, found.as_ref());
        Ok(found)
    }

    /// Record a file the backend has stored.
    pub async fn put(&self, volume: &str, path: &VolumePath, meta: &ObjectMeta) -> StorageResult<()> {
        self.put_with(volume, path, meta, &Change::default()).await
    }

    /// Record a file the backend has stored, with `change`.
    pub async fn put_with(
        &self,
        volume: &str,
        path: &VolumePath,
        meta: &ObjectMeta,
        change: &Change,
    ) -> StorageResult<()> {
        let result = self.engine.put(volume, path, meta, change).await;
        self.front.forget(volume, path.as_str());
        result
    }

    /// Forget a file the backend has deleted (see [`MetadataEngine::remove`]).
    pub async fn remove(&self, volume: &str, path: &VolumePath, version: Option<Version<'_>>) -> StorageResult<()> {
        self.remove_with(volume, path, version, &Change::default()).await
    }

    pub async fn remove_with(
        &self,
        volume: &str,
        path: &VolumePath,
        version: Option<Version<'_>>,
        change: &Change,
    ) -> StorageResult<()> {
        let result = self.engine.remove(volume, path, version, change).await;
        self.front.forget(volume, path.as_str());
        result
    }

    pub async fn list_dir(&self, volume: &str, dir: &str, cursor: Option<&str>, limit: usize) -> StorageResult<Page> {
        self.engine.list_dir(volume, dir, cursor, limit).await
    }

    pub async fn list_prefix(
        &self,
        volume: &str,
        prefix: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> StorageResult<Page> {
        self.engine.list_prefix(volume, prefix, cursor, limit).await
    }

    pub async fn refresh_begin(
        &self,
        volume: &str,
        backend: &str,
        owner: &str,
        now_ms: u64,
        windows: (u64, u64),
    ) -> StorageResult<Option<RefreshProgress>> {
        self.engine.refresh_begin(volume, backend, owner, now_ms, windows).await
    }

    pub async fn refresh_beat(&self, volume: &str, owner: &str, now_ms: u64) -> StorageResult<()> {
        self.engine.refresh_beat(volume, owner, now_ms).await
    }

    pub async fn refresh_record(
        &self,
        volume: &str,
        part: RefreshPart<'_>,
        found: &[(String, ObjectMeta)],
    ) -> StorageResult<()> {
        self.engine.refresh_record(volume, part, found).await
    }

    #[cfg_attr(not(feature = "internals"), allow(dead_code))] // tests and benchmarks
    pub async fn refresh_found(&self, volume: &str) -> StorageResult<Vec<(String, ObjectMeta)>> {
        self.engine.refresh_found(volume).await
    }

    pub async fn finish_refresh(&self, volume: &str, owner: &str) -> StorageResult<RefreshCounts> {
        let result = self.engine.finish_refresh(volume, owner).await;
        self.front.forget_volume(volume);
        result
    }

    pub async fn stats(&self) -> StorageResult<Vec<VolumeStats>> {
        self.engine.stats().await
    }

    /// Whether this node's front cache holds a live row of the file
    /// (diagnostics, tests).
    #[cfg_attr(not(feature = "internals"), allow(dead_code))] // tests and benchmarks
    pub fn front_holds(&self, volume: &str, path: &str) -> bool {
        self.front.get(volume, path).is_some_and(|row| row.is_some())
    }

    /// Every cached file of a volume (verification, tests).
    pub async fn all_files(&self, volume: &str) -> StorageResult<Vec<(String, ObjectMeta)>> {
        let mut out = Vec::new();
        let mut cursor = None;
        loop {
            let page = self.list_prefix(volume, "", cursor.as_deref(), 1000).await?;
            out.extend(page.entries.into_iter().filter_map(|e| match e {
                Entry::File { path, meta } => Some((path, meta)),
                Entry::Dir { .. } => None,
            }));
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => return Ok(out),
            }
        }
    }
}

/// The smallest string greater than every string starting with `prefix`
/// (UTF-8 byte order equals code point order), or `None` if unbounded.
pub(crate) fn prefix_upper_bound(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let mut next = last as u32 + 1;
        if (0xD800..0xE000).contains(&next) {
            next = 0xE000;
        }
        if let Some(c) = char::from_u32(next) {
            chars.push(c);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

/// User metadata as stored: a JSON array of pairs.
pub(crate) fn metadata_json(meta: &ObjectMeta) -> String {
    let text = if meta.headers.is_empty() {
        serde_json::to_string(&meta.metadata)
    } else {
        serde_json::to_string(&Declared {
            meta: meta.metadata.clone(),
            headers: meta.headers.clone(),
        })
    };
    text.unwrap_or_else(|_| "[]".into())
}

/// The metadata column when the object has declared headers: an object,
/// where a plain array is user metadata alone.
#[derive(serde::Serialize, serde::Deserialize)]
struct Declared {
    meta: Vec<(String, String)>,
    headers: crate::store::Headers,
}

/// User metadata and declared headers read back; a damaged row is an
/// error, never a file without metadata.
pub(crate) fn metadata_from_json(text: &str) -> StorageResult<(Vec<(String, String)>, crate::store::Headers)> {
    if text == "[]" {
        return Ok(Default::default());
    }
    let parsed = if text.starts_with('{') {
        serde_json::from_str::<Declared>(text).map(|d| (d.meta, d.headers))
    } else {
        serde_json::from_str(text).map(|m| (m, Default::default()))
    };
    parsed.map_err(|e| {
        StorageError::unavailable(format!(
            "metadata cache: unreadable user metadata ({e}); `silo cache refresh` rebuilds the row"
        ))
    })
}

/// A directory page from its files and subdirectories, each in path order
/// and at most `limit + 1` long: merged, files first on equal paths.
pub(crate) fn merge_dir_page(files: Vec<Entry>, dirs: Vec<Entry>, limit: usize) -> Page {
    let mut entries = Vec::with_capacity((limit + 1).min(files.len() + dirs.len()));
    let (mut files, mut dirs) = (files.into_iter().peekable(), dirs.into_iter().peekable());
    while entries.len() <= limit {
        let take_file = match (files.peek(), dirs.peek()) {
            (Some(f), Some(d)) => f.path() <= d.path(),
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => break,
        };
        entries.extend(if take_file { files.next() } else { dirs.next() });
    }
    paginate(entries, limit)
}

/// Cursors are `<kind><path>`, kind `0` for a file and `1` for a directory.
pub(crate) fn decode_cursor(cursor: Option<&str>) -> StorageResult<(String, i64)> {
    match cursor {
        None => Ok((String::new(), -1)),
        Some(c) => match c.split_at_checked(1) {
            Some(("0", path)) => Ok((path.to_owned(), 0)),
            Some(("1", path)) => Ok((path.to_owned(), 1)),
            _ => Err(StorageError::InvalidPath(format!("'{c}' is not a listing cursor"))),
        },
    }
}

pub(crate) fn paginate(mut entries: Vec<Entry>, limit: usize) -> Page {
    let next_cursor = (entries.len() > limit).then(|| {
        entries.truncate(limit);
        match entries.last() {
            Some(Entry::File { path, .. }) => format!("0{path}"),
            Some(Entry::Dir { path }) => format!("1{path}"),
            None => String::new(),
        }
    });
    Page { entries, next_cursor }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(size: u64) -> ObjectMeta {
        ObjectMeta {
            size,
            etag: format!("e{size}"),
            content_type: "image/png".into(),
            modified_ms: 1,
            cache_control: None,
            metadata: vec![("k".into(), "v".into())],
            headers: Default::default(),
        }
    }

    async fn put(cache: &MetadataCache, path: &str, size: u64) {
        cache
            .put("v", &VolumePath::parse(path).unwrap(), &meta(size))
            .await
            .unwrap();
    }

    fn names(page: &Page) -> Vec<String> {
        page.entries
            .iter()
            .map(|e| match e {
                Entry::File { path, .. } => format!("f:{path}"),
                Entry::Dir { path } => format!("d:{path}"),
            })
            .collect()
    }

    /// Every entry of a directory, page by page.
    async fn all_names(cache: &MetadataCache, dir: &str, limit: usize) -> Vec<String> {
        let mut seen = Vec::new();
        let mut cursor = None;
        loop {
            let page = cache.list_dir("v", dir, cursor.as_deref(), limit).await.unwrap();
            seen.extend(names(&page));
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => return seen,
            }
        }
    }

    /// Each engine the tests run on: SQLite in memory and in a file.
    fn engines() -> Vec<(MetadataCache, Option<tempfile::TempDir>)> {
        let dir = tempfile::tempdir().unwrap();
        let file = MetadataCache::open(&dir.path().join("meta.sqlite")).unwrap();
        vec![(MetadataCache::in_memory().unwrap(), None), (file, Some(dir))]
    }

    #[tokio::test]
    async fn directories_are_derived_and_pruned() {
        for (cache, _dir) in engines() {
            put(&cache, "a/b/c.png", 3).await;
            put(&cache, "a/x.png", 1).await;
            put(&cache, "a", 9).await; // a file beside the directory `a`
            assert_eq!(names(&cache.list_dir("v", "", None, 10).await.unwrap()), ["f:a", "d:a"]);
            assert_eq!(
                names(&cache.list_dir("v", "a", None, 10).await.unwrap()),
                ["d:a/b", "f:a/x.png"]
            );
            cache
                .remove("v", &VolumePath::parse("a/b/c.png").unwrap(), None)
                .await
                .unwrap();
            assert_eq!(names(&cache.list_dir("v", "a", None, 10).await.unwrap()), ["f:a/x.png"]);
            assert_eq!(cache.get("v", "a").await.unwrap().unwrap(), meta(9));
            assert!(cache.get("v", "a/b/c.png").await.unwrap().is_none());

            // One entry per page: the file `a` and the directory `a` share
            // a path and must both come, in that order, once each.
            put(&cache, "a/b/c.png", 3).await;
            put(&cache, "b", 1).await;
            assert_eq!(all_names(&cache, "", 1).await, ["f:a", "d:a", "f:b"]);
        }
    }

    #[tokio::test]
    async fn pages_resume_at_the_cursor() {
        for (cache, _dir) in engines() {
            for i in 0..25 {
                put(&cache, &format!("d/{i:02}.png"), i).await;
            }
            put(&cache, "d/😀/deep.png", 1).await;
            put(&cache, "dz.png", 1).await;
            let seen = all_names(&cache, "d", 10).await;
            assert_eq!(seen.len(), 26);
            assert_eq!(seen.last().unwrap(), "d:d/😀");
            let all = cache.list_prefix("v", "d/", None, 100).await.unwrap();
            assert_eq!(all.entries.len(), 26, "dz.png is outside the prefix");
            assert!(cache.list_dir("v", "d", Some("junk"), 10).await.is_err());
        }
    }

    #[tokio::test]
    async fn the_front_cache_drops_a_row_on_every_change_and_sees_other_processes_within_its_ttl() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("meta.sqlite");
        let here = MetadataCache::open(&file).unwrap();
        // Another process on the same file (a CLI refresh, say).
        let there = MetadataCache::open(&file).unwrap();
        put(&here, "a.png", 1).await;
        assert_eq!(here.get("v", "a.png").await.unwrap(), Some(meta(1)));
        // A change made here is seen here at once.
        put(&here, "a.png", 2).await;
        assert_eq!(here.get("v", "a.png").await.unwrap(), Some(meta(2)));
        here.remove("v", &VolumePath::parse("a.png").unwrap(), None)
            .await
            .unwrap();
        assert_eq!(here.get("v", "a.png").await.unwrap(), None);
        // A change made elsewhere: within the TTL.
        put(&here, "b.png", 1).await;
        assert_eq!(here.get("v", "b.png").await.unwrap(), Some(meta(1)));
        put(&there, "b.png", 3).await;
        let seen = std::time::Instant::now();
        while here.get("v", "b.png").await.unwrap() != Some(meta(3)) {
            assert!(
                seen.elapsed() < FRONT_TTL * 3,
                "a change elsewhere outlived the front cache's TTL"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    #[test]
    fn upper_bound_is_exact() {
        assert_eq!(prefix_upper_bound("a/").as_deref(), Some("a0"));
        assert_eq!(prefix_upper_bound("").as_deref(), None);
        assert_eq!(prefix_upper_bound("a\u{10FFFF}").as_deref(), Some("b"));
        assert_eq!(prefix_upper_bound("\u{D7FF}").as_deref(), Some("\u{E000}"));
    }
}
