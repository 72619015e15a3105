//! Multipart uploads of the S3 endpoint, held until they complete. An
//! upload and its parts are recorded in the metadata engine. On a shared
//! engine and an S3 volume every node sees the same uploads, so a load
//! balancer may send one upload's parts and its completion to different
//! nodes.
//!
//! Nothing of an upload is visible or stored under its key before it
//! completes; then its parts, in order, are staged and judged whole as one
//! upload. Uploads not completed within their lifetime are removed by
//! [`MultipartStore::sweep`], with any part bytes no record names.
//!
//! Where the backend has multipart uploads of its own (S3), the parts go
//! straight into one on the upload's key, and the receiving node keeps a
//! copy (`<data_dir>/multipart/.copies`): the copies are what the upload
//! is judged from, the bytes are written to the backend once, and the
//! object appears only when the accepted upload completes the backend's (a
//! refused one aborts it). A backend's parts cannot be read before they
//! make an object, so a completion on a node without copies of some parts
//! asks the other nodes (through the metadata engine) to hand theirs over
//! as objects of the volume's scratch store (under `.silo-tmp/`, beside
//! its objects), and waits for them.
//!
//! Elsewhere a part's bytes are an object of the volume's scratch store:
//! local volumes keep their parts on the node
//! (`<data_dir>/multipart/<volume>`), as their objects, and the upload is
//! written from its staged bytes.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use serde::{Deserialize, Serialize};

use crate::budget::Held;
use crate::cache::{Completion, MetadataEngine, PartRecord, UploadRecord};
use crate::error::StorageError;
use crate::store::now_ms;
use crate::store::{Headers, ObjectStore, PutOptions};
use crate::vfs::Storage;

/// Part numbers are 1..=10,000, as on S3.
pub const MAX_PARTS: i32 = 10_000;
/// Every part but the last is at least this big, as on S3.
pub const MIN_PART_BYTES: u64 = 5 << 20;
/// The largest part, as on S3.
pub const MAX_PART_BYTES: u64 = 5 << 30;
/// Uploads one principal may have open at once, on all nodes together.
pub const MAX_OPEN_PER_PRINCIPAL: usize = 100;
/// Part bytes no record names are removed once this old: younger ones may
/// be a part being recorded right now.
const ORPHAN_AFTER: Duration = Duration::from_secs(3600);
/// How long a completion waits for other nodes to hand over the parts it
/// has no copies of (a node restarting comes back within it).
pub const HANDOVER_WAIT: Duration = Duration::from_secs(30);
/// How often a waiting completion asks again (a node that was away missed
/// the last request).
const ASK_AGAIN: Duration = Duration::from_secs(2);
/// The request the other nodes of a completion get: this prefix, the
/// upload id, a space, and the asking node's instance.
const HANDOVER: &str = "multipart-parts ";

/// What was declared when the upload was created.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct UploadSettings {
    /// The volume.
    pub volume: String,
    /// The key the object will have.
    pub key: String,
    /// Who created the upload.
    pub principal: String,
    /// The declared type.
    pub content_type: Option<String>,
    /// The declared `Cache-Control`.
    pub cache_control: Option<String>,
    /// Other declared headers.
    pub headers: Headers,
    /// The writer's metadata (`x-amz-meta-*`).
    pub metadata: Vec<(String, String)>,
    /// Milliseconds since the Unix epoch.
    pub created_ms: u64,
    /// The backend's own multipart upload the parts go into, if any.
    pub backend: Option<String>,
}

/// The part of [`UploadSettings`] kept as the record's settings.
#[derive(Serialize, Deserialize)]
struct Declared {
    content_type: Option<String>,
    cache_control: Option<String>,
    #[serde(default, flatten)]
    headers: Headers,
    metadata: Vec<(String, String)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    backend: Option<String>,
}

/// One stored part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartInfo {
    /// Its number, 1 to 10,000.
    pub number: i32,
    /// The part's MD5, hex, as S3 gives a part's ETag.
    pub etag: String,
    /// Its size.
    pub size: u64,
    /// When it was stored, ms since the Unix epoch.
    pub modified_ms: u64,
}

impl PartInfo {
    fn of(p: &PartRecord) -> Self {
        PartInfo {
            number: p.number,
            etag: p.etag.clone(),
            size: p.size,
            modified_ms: p.modified_ms,
        }
    }
}

#[derive(Debug, thiserror::Error)]
/// Why a multipart call was refused.
pub enum MultipartError {
    #[error("there is no such multipart upload")]
    /// No such upload (or not of this key and volume).
    NoSuchUpload,
    #[error("part numbers are 1 to {MAX_PARTS}")]
    /// A part number outside 1 to 10,000.
    InvalidPartNumber,
    #[error("principal '{0}' has {MAX_OPEN_PER_PRINCIPAL} multipart uploads open; complete or abort some")]
    /// The principal has as many uploads open as it may.
    TooManyUploads(String),
    #[error("{0}")]
    /// A part or the whole is larger than allowed.
    TooLarge(String),
    #[error("{0}")]
    /// A completion names a part that is not there, or not with that ETag.
    InvalidPart(String),
    #[error("the parts must be listed in ascending order of their numbers")]
    /// A completion's parts are not in ascending order.
    InvalidPartOrder,
    #[error("part {0} is smaller than 5 MiB and is not the last")]
    /// A part other than the last is smaller than 5 MiB.
    EntityTooSmall(i32),
    #[error("reading the part: {0}")]
    /// The part's body could not be read.
    Body(std::io::Error),
    #[error("a part's length must be given (Content-Length, or x-amz-decoded-content-length)")]
    /// The part's length was not given.
    LengthRequired,
    #[error("the part's body ended after {0} of the {1} bytes it announced")]
    /// The body ended before the length it announced.
    Incomplete(u64, u64),
    #[error("multipart storage: {0}")]
    /// The storage failed.
    Storage(#[from] StorageError),
}

pub struct MultipartStore {
    storage: Arc<Storage>,
    /// Where volumes without a shared scratch store keep parts.
    local_dir: PathBuf,
    /// Each volume's scratch store, made once, and whether every node
    /// reaches it.
    scratches: Mutex<HashMap<String, Scratch>>,
    /// This process among the nodes, so that it ignores its own requests.
    instance: String,
    /// Uploads whose parts this node is handing over now.
    handing_over: Mutex<HashSet<String>>,
}

/// A volume's scratch store, and whether every node reaches it.
type Scratch = (Arc<dyn ObjectStore>, bool);

impl MultipartStore {
    pub fn open(storage: Arc<Storage>, local_dir: PathBuf) -> MultipartStore {
        MultipartStore {
            storage,
            local_dir,
            scratches: Mutex::default(),
            instance: crate::audit::new_id(),
            handing_over: Mutex::default(),
        }
    }

    /// Answer other nodes' requests for the parts this node holds copies
    /// of, from now on.
    pub fn answer_requests(self: &Arc<Self>) {
        let store = Arc::downgrade(self);
        self.engine().answer_nodes(Arc::new(move |request: &str| {
            let Some((id, from)) = request.strip_prefix(HANDOVER).and_then(|r| r.split_once(' ')) else {
                return;
            };
            let Some(store) = store.upgrade() else { return };
            if from == store.instance || !valid_id(id) {
                return;
            }
            let id = id.to_owned();
            tokio::spawn(async move { store.hand_over(&id).await });
        }));
    }

    /// Store this node's copies of upload `id`'s parts, which went into
    /// the backend's own upload, as scratch objects every node can read.
    async fn hand_over(&self, id: &str) {
        if !self
            .handing_over
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.to_owned())
        {
            return;
        }
        if let Err(e) = self.hand_over_parts(id).await {
            tracing::warn!(upload = id, "handing over multipart parts: {e}");
        }
        self.handing_over.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
    }

    async fn hand_over_parts(&self, id: &str) -> Result<(), MultipartError> {
        let Some(record) = self.engine().upload_get(id).await? else {
            return Ok(());
        };
        let (scratch, shared) = self.scratch(&record.volume)?;
        if !shared {
            return Ok(());
        }
        for part in self.engine().parts(id).await? {
            let copy = self.copy_of(&part.blob);
            let Ok(file) = tokio::fs::File::open(&copy).await else {
                continue;
            };
            if file.metadata().await.map(|m| m.len()).ok() != Some(part.size) || readable(&scratch, &part).await {
                continue;
            }
            let mut upload = scratch
                .start_upload(
                    &part.blob,
                    PutOptions {
                        content_type: "application/octet-stream".into(),
                        etag: Some(crate::store::NO_ETAG.into()),
                        ..Default::default()
                    },
                )
                .await?;
            let mut chunks = tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024);
            while let Some(chunk) = chunks.next().await {
                let chunk = chunk.map_err(|e| StorageError::unavailable(format!("{}: {e}", copy.display())))?;
                upload.write(chunk, Held::default()).await?;
            }
            upload.finish().await?;
        }
        Ok(())
    }

    /// Wait until every one of `parts` of upload `id` on `volume` can be
    /// read here: from this node's copy, or from a scratch object another
    /// node handed over when asked. `Some` with the copies when this node
    /// holds them all.
    pub async fn gather(
        &self,
        id: &str,
        volume: &str,
        parts: &[PartRecord],
    ) -> Result<Option<Vec<(PathBuf, u64)>>, MultipartError> {
        // Each copy is looked for once, each missing part until it is found.
        let (mut files, mut missing, mut lacking) = (Vec::new(), Vec::new(), None);
        for part in parts {
            match self.copy_here(part) {
                Ok(path) => files.push((path, part.size)),
                Err(e) => {
                    lacking.get_or_insert(e);
                    missing.push(part);
                }
            }
        }
        let Some(lacking) = lacking else {
            return Ok(Some(files));
        };
        let (scratch, shared) = self.scratch(volume)?;
        if !shared {
            return Err(lacking);
        }
        let started = tokio::time::Instant::now();
        let mut asked: Option<tokio::time::Instant> = None;
        loop {
            let mut still = Vec::new();
            for part in missing {
                if !readable(&scratch, part).await {
                    still.push(part);
                }
            }
            missing = still;
            if missing.is_empty() {
                return Ok(None);
            }
            if started.elapsed() >= HANDOVER_WAIT {
                let numbers: Vec<i32> = missing.iter().map(|p| p.number).collect();
                return Err(StorageError::unavailable(format!(
                    "parts {numbers:?} are held by other nodes, which did not hand them over within {}s; retry the completion",
                    HANDOVER_WAIT.as_secs()
                ))
                .into());
            }
            if asked.is_none_or(|at| at.elapsed() >= ASK_AGAIN) {
                self.engine()
                    .ask_nodes(&format!("{HANDOVER}{id} {}", self.instance))
                    .await?;
                asked = Some(tokio::time::Instant::now());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn engine(&self) -> &Arc<dyn MetadataEngine> {
        self.storage.cache().engine()
    }

    /// Where this node keeps copies of the parts it received of `id`.
    fn copies(&self, id: &str) -> PathBuf {
        self.local_dir.join(".copies").join(id)
    }

    /// The copy of a part's bytes on this node, if they are on a shared
    /// scratch store (else the part itself is on this node already).
    fn copy_of(&self, blob: &str) -> PathBuf {
        self.local_dir.join(".copies").join(blob)
    }

    /// Where the parts of `volume`'s uploads are kept; `true` when every
    /// node reaches them there.
    fn scratch(&self, volume: &str) -> Result<Scratch, MultipartError> {
        let mut known = self.scratches.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(scratch) = known.get(volume) {
            return Ok(scratch.clone());
        }
        let scratch: Scratch = match self.storage.volume(volume)?.store.scratch() {
            Some(shared) => (shared, true),
            None => (
                Arc::new(crate::store::LocalStore::open(&self.local_dir.join(volume))?),
                false,
            ),
        };
        known.insert(volume.to_owned(), scratch.clone());
        Ok(scratch)
    }

    pub async fn create(&self, settings: UploadSettings) -> Result<String, MultipartError> {
        let backend = self.start_backend(&settings).await?;
        let (volume, key) = (settings.volume.clone(), settings.key.clone());
        let created = self.record(settings, backend.clone()).await;
        if let (Err(_), Some(upload)) = (&created, &backend) {
            self.abort_backend(&volume, &key, upload).await;
        }
        created
    }

    /// Start the backend's own multipart upload for `settings`, where the
    /// backend has them.
    async fn start_backend(&self, settings: &UploadSettings) -> Result<Option<String>, MultipartError> {
        let loc = self.storage.location(&settings.volume, &settings.key)?;
        // The object will have what a write of the upload would store.
        let options = self.storage.host_session().object_options(
            &loc,
            PutOptions {
                content_type: settings.content_type.clone().unwrap_or_default(),
                cache_control: settings.cache_control.clone(),
                metadata: settings.metadata.clone(),
                headers: settings.headers.clone(),
                ..Default::default()
            },
        )?;
        Ok(self
            .storage
            .volume(&settings.volume)?
            .store
            .create_parts(loc.path.as_str(), &options)
            .await?)
    }

    /// Drop a backend upload; a failure leaves it to the backend's own
    /// sweep of abandoned uploads.
    async fn abort_backend(&self, volume: &str, key: &str, upload: &str) {
        let aborted = match self.storage.volume(volume) {
            Ok(v) => v.store.abort_parts(key, upload).await,
            Err(e) => Err(e),
        };
        if let Err(e) = aborted {
            tracing::warn!(
                volume,
                key,
                "aborting the backend's multipart upload (swept later): {e}"
            );
        }
    }

    async fn record(&self, settings: UploadSettings, backend: Option<String>) -> Result<String, MultipartError> {
        let declared = Declared {
            content_type: settings.content_type,
            cache_control: settings.cache_control,
            headers: settings.headers,
            metadata: settings.metadata,
            backend,
        };
        let record = UploadRecord {
            id: crate::audit::new_id(),
            volume: settings.volume,
            key: settings.key,
            principal: settings.principal,
            created_ms: settings.created_ms,
            settings: serde_json::to_string(&declared).expect("settings serialise"),
        };
        if !self.engine().upload_create(&record, MAX_OPEN_PER_PRINCIPAL).await? {
            return Err(MultipartError::TooManyUploads(record.principal));
        }
        Ok(record.id)
    }

    /// The upload's settings, if it is open and for `volume`/`key`.
    pub async fn settings(&self, id: &str, volume: &str, key: &str) -> Result<UploadSettings, MultipartError> {
        if !valid_id(id) {
            return Err(MultipartError::NoSuchUpload);
        }
        let record = self
            .engine()
            .upload_get(id)
            .await?
            .filter(|r| r.volume == volume && r.key == key)
            .ok_or(MultipartError::NoSuchUpload)?;
        settings_of(record)
    }

    /// Store part `number` of upload `id` on `volume` from `body`,
    /// replacing an earlier one of that number; `limit` is how many bytes
    /// the whole upload may take.
    pub async fn put_part(
        &self,
        id: &str,
        upload: &UploadSettings,
        number: i32,
        mut body: impl Stream<Item = std::io::Result<Bytes>> + Unpin,
        length: Option<u64>,
        limit: u64,
    ) -> Result<PartInfo, MultipartError> {
        use md5::Digest;
        let volume = upload.volume.as_str();
        if !(1..=MAX_PARTS).contains(&number) {
            return Err(MultipartError::InvalidPartNumber);
        }
        // The id names the part's bytes: only one this store gave may.
        if !valid_id(id) {
            return Err(MultipartError::NoSuchUpload);
        }
        let others: u64 = self
            .engine()
            .parts(id)
            .await?
            .iter()
            .filter(|p| p.number != number)
            .map(|p| p.size)
            .sum();
        let room = limit.saturating_sub(others).min(MAX_PART_BYTES);
        // Each write of a part has bytes of its own: a concurrent write of
        // the same number never mixes with this one.
        let blob = format!("{id}/{number}-{}", &crate::audit::new_id()[..16]);
        if let Some(backend) = &upload.backend {
            let size = length.ok_or(MultipartError::LengthRequired)?;
            if size > room {
                return Err(too_large(limit));
            }
            let etag = self
                .put_backend_part(id, upload, backend, number, body, size, &blob)
                .await?;
            let record = PartRecord {
                number,
                etag,
                size,
                modified_ms: now_ms(),
                blob,
                checksum: None,
            };
            return self.recorded(id, volume, record).await;
        }
        let (scratch, shared) = self.scratch(volume)?;
        // The part's MD5 is taken here, as it passes.
        let options = PutOptions {
            content_type: "application/octet-stream".into(),
            etag: Some(crate::store::NO_ETAG.into()),
            ..Default::default()
        };
        let mut copy = match shared {
            true => Some(LocalCopy::create(&self.copies(id))?),
            false => None,
        };
        let mut upload = scratch.start_upload(&blob, options).await?;
        let mut md5 = md5::Md5::new();
        let mut size = 0u64;
        // Dropping the upload (and the copy) unfinished, on an error here,
        // stores nothing.
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(MultipartError::Body)?;
            size += chunk.len() as u64;
            if size > room {
                return Err(too_large(limit));
            }
            md5.update(&chunk);
            // The copy only saves a read: on a full disk, it is dropped.
            if let Some(c) = copy.as_mut()
                && let Err(e) = c.write(&chunk).await
            {
                tracing::warn!("keeping a copy of a part: {e}");
                copy = None;
            }
            upload.write(chunk, Held::default()).await?;
        }
        let stored = upload.finish().await?;
        if let Some(copy) = copy
            && let Err(e) = copy.keep(&self.copy_of(&blob)).await
        {
            tracing::warn!(blob, "keeping a copy of a part: {e}");
        }
        if stored.size != size {
            let _ = scratch.delete(&blob).await;
            return Err(StorageError::unavailable(format!(
                "the backend stored {} bytes of the {size} of part {number}",
                stored.size
            ))
            .into());
        }
        let record = PartRecord {
            number,
            etag: hex::encode(md5.finalize()),
            size,
            modified_ms: now_ms(),
            blob,
            checksum: None,
        };
        self.recorded(id, volume, record).await
    }

    /// Send part `number` of `upload` (id `id`) to the backend's upload
    /// `backend`, keeping a copy on this node as `blob`: the backend's
    /// ETag of it. The copy is what the upload is judged from, so a part
    /// whose copy cannot be kept fails.
    #[allow(clippy::too_many_arguments)]
    async fn put_backend_part(
        &self,
        id: &str,
        upload: &UploadSettings,
        backend: &str,
        number: i32,
        mut body: impl Stream<Item = std::io::Result<Bytes>> + Unpin,
        size: u64,
        blob: &str,
    ) -> Result<String, MultipartError> {
        let store = self.storage.volume(&upload.volume)?.store.clone();
        let mut copy = LocalCopy::create(&self.copies(id))?;
        let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(4);
        let sent = store.put_part(&upload.key, backend, number, Box::pin(received(rx)), size);
        let fed = async move {
            let mut got = 0u64;
            // A failure here ends the backend's body with an error, so the
            // backend keeps nothing of it.
            let failed = |e: MultipartError| async {
                let _ = tx
                    .send(Err(std::io::Error::other("the part was not received whole")))
                    .await;
                Err(e)
            };
            while let Some(chunk) = body.next().await {
                let chunk = match chunk {
                    Ok(chunk) => chunk,
                    Err(e) => return failed(MultipartError::Body(e)).await,
                };
                got += chunk.len() as u64;
                if got > size {
                    return failed(MultipartError::InvalidPart(format!(
                        "the part's body holds more than the {size} bytes it announced"
                    )))
                    .await;
                }
                if let Err(e) = copy.write(&chunk).await {
                    let e = StorageError::unavailable(format!("keeping a copy of part {number}: {e}"));
                    return failed(e.into()).await;
                }
                if tx.send(Ok(chunk)).await.is_err() {
                    // The backend gave up; its error says why.
                    return Ok(copy);
                }
            }
            if got < size {
                return failed(MultipartError::Incomplete(got, size)).await;
            }
            Ok(copy)
        };
        let (sent, fed) = tokio::join!(sent, fed);
        let copy = fed?;
        let etag = sent?;
        copy.keep(&self.copy_of(blob))
            .await
            .map_err(|e| StorageError::unavailable(format!("keeping a copy of part {number}: {e}")))?;
        Ok(etag.trim_matches('"').to_owned())
    }

    /// Record a part whose bytes are stored, dropping those of the part it
    /// replaced; the bytes go again if it cannot be recorded.
    async fn recorded(&self, id: &str, volume: &str, record: PartRecord) -> Result<PartInfo, MultipartError> {
        let recorded = self.engine().part_put(id, &record).await;
        let scratch = self.scratch(volume)?.0;
        match recorded {
            Ok(Some(replaced)) => {
                if let Some(old) = replaced {
                    forget_blob(&scratch, &old).await;
                    self.forget_copy(&old).await;
                }
                Ok(PartInfo::of(&record))
            }
            Ok(None) => {
                // Aborted (or completed) while the part arrived.
                forget_blob(&scratch, &record.blob).await;
                self.forget_copy(&record.blob).await;
                Err(MultipartError::NoSuchUpload)
            }
            Err(e) => {
                forget_blob(&scratch, &record.blob).await;
                self.forget_copy(&record.blob).await;
                Err(e.into())
            }
        }
    }

    /// The parts stored so far, by number.
    pub async fn parts(&self, id: &str) -> Result<Vec<PartInfo>, MultipartError> {
        Ok(self.engine().parts(id).await?.iter().map(PartInfo::of).collect())
    }

    /// Keep the checksum its client sent, verified, with part `number` if
    /// it is still the one stored as `etag`.
    pub async fn keep_part_checksum(
        &self,
        id: &str,
        number: i32,
        etag: &str,
        checksum: &crate::Checksum,
    ) -> Result<(), MultipartError> {
        let parts = self.engine().parts(id).await?;
        if let Some(part) = parts.iter().find(|p| p.number == number && p.etag == etag) {
            let kept = format!("{} {}", checksum.algorithm, checksum.value);
            self.engine().part_checksum(id, number, &part.blob, &kept).await?;
        }
        Ok(())
    }

    /// Remove part `number` if it is still the one stored as `etag` (a
    /// part that failed its digest check).
    pub async fn remove_part(&self, id: &str, volume: &str, number: i32, etag: &str) -> Result<(), MultipartError> {
        let parts = self.engine().parts(id).await?;
        if let Some(part) = parts.iter().find(|p| p.number == number && p.etag == etag) {
            self.engine().part_remove(id, number, &part.blob).await?;
            forget_blob(&self.scratch(volume)?.0, &part.blob).await;
            self.forget_copy(&part.blob).await;
        }
        Ok(())
    }

    /// The parts a completion names, checked: ascending numbers, each
    /// stored with that ETag, all but the last at least 5 MiB. Returns the
    /// parts to read, in order, and the total size.
    pub async fn assemble(&self, id: &str, named: &[(i32, String)]) -> Result<(Vec<PartRecord>, u64), MultipartError> {
        let stored = self.engine().parts(id).await?;
        if named.is_empty() {
            return Err(MultipartError::InvalidPart(
                "a completion names at least one part".into(),
            ));
        }
        if named.windows(2).any(|w| w[0].0 >= w[1].0) {
            return Err(MultipartError::InvalidPartOrder);
        }
        let mut chosen = Vec::new();
        let mut total = 0;
        for (i, (number, etag)) in named.iter().enumerate() {
            let part = stored
                .binary_search_by_key(number, |p| p.number)
                .map(|at| &stored[at])
                .map_err(|_| MultipartError::InvalidPart(format!("part {number} was not uploaded")))?;
            if part.etag != etag.trim_matches('"') {
                return Err(MultipartError::InvalidPart(format!(
                    "part {number} has ETag \"{}\", not {etag}",
                    part.etag
                )));
            }
            if i + 1 < named.len() && part.size < MIN_PART_BYTES {
                return Err(MultipartError::EntityTooSmall(*number));
            }
            total += part.size;
            chosen.push(part.clone());
        }
        Ok((chosen, total))
    }

    /// The copies on this node of the parts, with their sizes, in order;
    /// an error names a part this node has no whole copy of.
    pub fn copies_of(&self, parts: &[PartRecord]) -> Result<Vec<(PathBuf, u64)>, MultipartError> {
        parts
            .iter()
            .map(|part| self.copy_here(part).map(|path| (path, part.size)))
            .collect()
    }

    /// This node's whole copy of `part`.
    fn copy_here(&self, part: &PartRecord) -> Result<PathBuf, MultipartError> {
        let path = self.copy_of(&part.blob);
        match std::fs::metadata(&path) {
            Ok(m) if m.len() == part.size => Ok(path),
            Ok(m) => Err(StorageError::unavailable(format!(
                "the copy of part {} holds {} bytes, not its {}",
                part.number,
                m.len(),
                part.size
            ))
            .into()),
            Err(e) => Err(StorageError::unavailable(format!(
                "the copy of part {} is not on this node ({}): {e}",
                part.number,
                path.display()
            ))
            .into()),
        }
    }

    /// The parts' bytes, one after another, as a body to stage. A part
    /// whose stored bytes are not its recorded size ends the body with an
    /// error.
    pub fn read_parts(
        &self,
        volume: &str,
        parts: Vec<PartRecord>,
    ) -> Result<impl Stream<Item = std::io::Result<Bytes>> + Unpin + Send + 'static, MultipartError> {
        let (scratch, _) = self.scratch(volume)?;
        let copies = self.local_dir.join(".copies");
        Ok(Box::pin(
            futures_util::stream::iter(parts)
                .then(move |part| {
                    let scratch = scratch.clone();
                    let copy = copies.join(&part.blob);
                    async move {
                        // This node's copy, if it has one of the right size.
                        if let Ok(file) = tokio::fs::File::open(&copy).await
                            && file.metadata().await.is_ok_and(|m| m.len() == part.size)
                        {
                            let body: crate::store::ByteStream = Box::pin(file);
                            return Ok(tokio_util::io::ReaderStream::with_capacity(body, 256 * 1024));
                        }
                        let (meta, body) = scratch
                            .get(&part.blob, None)
                            .await
                            .map_err(|e| std::io::Error::other(format!("part {}: {e}", part.number)))?;
                        if meta.size != part.size {
                            return Err(std::io::Error::other(format!(
                                "part {} holds {} bytes, not the {} recorded",
                                part.number, meta.size, part.size
                            )));
                        }
                        Ok(tokio_util::io::ReaderStream::with_capacity(body, 256 * 1024))
                    }
                })
                .map(|opened| match opened {
                    Ok(stream) => stream.left_stream(),
                    Err(e) => futures_util::stream::once(async move { Err(e) }).right_stream(),
                })
                .flatten(),
        ))
    }

    /// Close an upload and delete its parts' bytes.
    pub async fn remove(&self, id: &str) -> Result<(), MultipartError> {
        self.close(id, None).await
    }

    /// Close an upload whose object was stored as `etag` (`size` bytes of
    /// `content_type`), remembered for a repeated completion, and delete
    /// what is left of its parts (a completed backend upload has nothing
    /// left).
    pub async fn completed(&self, id: &str, etag: &str, size: u64, content_type: &str) -> Result<(), MultipartError> {
        let Some(record) = self.engine().upload_get(id).await? else {
            return Err(MultipartError::NoSuchUpload);
        };
        let completion = Completion {
            id: id.to_owned(),
            volume: record.volume,
            key: record.key,
            etag: etag.to_owned(),
            size,
            content_type: content_type.to_owned(),
            completed_ms: now_ms(),
        };
        self.close(id, Some(&completion)).await
    }

    /// How upload `id` of `key` in `volume` completed, if it did within
    /// the uploads' lifetime.
    pub async fn completion(&self, id: &str, volume: &str, key: &str) -> Result<Option<Completion>, MultipartError> {
        if !valid_id(id) {
            return Ok(None);
        }
        Ok(self
            .engine()
            .completion(id)
            .await?
            .filter(|c| c.volume == volume && c.key == key))
    }

    async fn close(&self, id: &str, stored: Option<&Completion>) -> Result<(), MultipartError> {
        let Some(record) = self.engine().upload_get(id).await? else {
            return Err(MultipartError::NoSuchUpload);
        };
        let closed = match stored {
            Some(completion) => self.engine().upload_complete(completion).await?,
            None => self.engine().upload_remove(id).await?,
        };
        let parts = closed.ok_or(MultipartError::NoSuchUpload)?;
        let stored = stored.is_some();
        let (volume, key) = (record.volume.clone(), record.key.clone());
        let backend = settings_of(record)?.backend;
        match &backend {
            Some(_) if stored => {}
            Some(upload) => self.abort_backend(&volume, &key, upload).await,
            None => {}
        }
        let (scratch, shared) = self.scratch(&volume)?;
        if backend.is_none() {
            // The parts' own bytes.
            for part in parts {
                forget_blob(&scratch, &part.blob).await;
            }
        } else if shared && self.engine().shared() {
            // Parts handed over between nodes, if any: one listing, not a
            // request per part.
            self.forget_handed_over(&scratch, id).await;
        }
        self.forget_copies(id).await;
        Ok(())
    }

    /// Delete the scratch objects handed over for upload `id`; a failure
    /// leaves them to the sweep.
    async fn forget_handed_over(&self, scratch: &Arc<dyn ObjectStore>, id: &str) {
        let prefix = format!("{id}/");
        let mut after: Option<String> = None;
        loop {
            let page = match scratch.list(&prefix, after.as_deref(), 1000).await {
                Ok(page) => page,
                Err(e) => {
                    tracing::warn!(upload = id, "listing handed-over parts (the sweep retries): {e}");
                    return;
                }
            };
            for (key, _) in &page.objects {
                forget_blob(scratch, key).await;
            }
            match page.next {
                Some(next) => after = Some(next),
                None => return,
            }
        }
    }

    async fn forget_copy(&self, blob: &str) {
        let _ = tokio::fs::remove_file(self.copy_of(blob)).await;
    }

    async fn forget_copies(&self, id: &str) {
        let _ = tokio::fs::remove_dir_all(self.copies(id)).await;
    }

    /// Open uploads of `volume` (every volume with `None`), by key and id.
    pub async fn uploads(&self, volume: Option<&str>) -> Result<Vec<(String, UploadSettings)>, MultipartError> {
        self.engine()
            .uploads(volume)
            .await?
            .into_iter()
            .map(|r| Ok((r.id.clone(), settings_of(r)?)))
            .collect()
    }

    /// Remove the uploads created longer than `lifetime` ago, and part
    /// bytes no open upload names; how many uploads.
    pub async fn sweep(&self, lifetime: Duration) -> Result<usize, MultipartError> {
        let cutoff = now_ms().saturating_sub(lifetime.as_millis() as u64);
        // A completion is answered again for as long as an upload lives.
        self.engine().completions_prune(cutoff).await?;
        let mut removed = 0;
        let mut open = Vec::new();
        for upload in self.engine().uploads(None).await? {
            if upload.created_ms < cutoff && self.remove(&upload.id).await.is_ok() {
                removed += 1;
            } else {
                open.push(upload.id);
            }
        }
        // Bytes of parts whose node died before recording them, or whose
        // deletion failed.
        let mut named = HashSet::new();
        for id in &open {
            for part in self.engine().parts(id).await? {
                named.insert(part.blob);
            }
        }
        let orphan_cutoff = now_ms().saturating_sub(ORPHAN_AFTER.as_millis() as u64);
        // This node's copies of parts of uploads closed on other nodes.
        if let Ok(mut entries) = tokio::fs::read_dir(self.local_dir.join(".copies")).await {
            while let Ok(Some(entry)) = entries.next_entry().await {
                let id = entry.file_name().to_string_lossy().into_owned();
                if !open.contains(&id) {
                    self.forget_copies(&id).await;
                }
            }
        }
        let volumes: Vec<String> = self.storage.volumes().map(|v| v.name.clone()).collect();
        for volume in volumes {
            let (scratch, _) = self.scratch(&volume)?;
            let mut after: Option<String> = None;
            loop {
                let page = scratch.list("", after.as_deref(), 1000).await?;
                for (key, meta) in &page.objects {
                    if !named.contains(key) && meta.modified_ms < orphan_cutoff {
                        forget_blob(&scratch, key).await;
                    }
                }
                match page.next {
                    Some(next) => after = Some(next),
                    None => break,
                }
            }
        }
        Ok(removed)
    }
}

/// A part's copy on this node's disk, written beside its upload to the
/// scratch store; deleted unless kept.
struct LocalCopy {
    temp: tempfile::NamedTempFile,
    file: tokio::fs::File,
}

impl LocalCopy {
    fn create(dir: &std::path::Path) -> Result<LocalCopy, MultipartError> {
        let io = |e: std::io::Error| StorageError::unavailable(format!("{}: {e}", dir.display()));
        std::fs::create_dir_all(dir).map_err(io)?;
        let temp = tempfile::Builder::new().prefix(".part-").tempfile_in(dir).map_err(io)?;
        let file = tokio::fs::File::from_std(temp.reopen().map_err(io)?);
        Ok(LocalCopy { temp, file })
    }

    async fn write(&mut self, chunk: &[u8]) -> std::io::Result<()> {
        use tokio::io::AsyncWriteExt;
        self.file.write_all(chunk).await
    }

    async fn keep(mut self, path: &std::path::Path) -> std::io::Result<()> {
        use tokio::io::AsyncWriteExt;
        self.file.flush().await?;
        self.temp.persist(path).map(drop).map_err(|e| e.error)
    }
}

fn settings_of(record: UploadRecord) -> Result<UploadSettings, MultipartError> {
    let declared: Declared = serde_json::from_str(&record.settings).map_err(|e| {
        StorageError::unavailable(format!(
            "the record of multipart upload {} cannot be read: {e}",
            record.id
        ))
    })?;
    Ok(UploadSettings {
        volume: record.volume,
        key: record.key,
        principal: record.principal,
        content_type: declared.content_type,
        cache_control: declared.cache_control,
        headers: declared.headers,
        metadata: declared.metadata,
        created_ms: record.created_ms,
        backend: declared.backend,
    })
}

fn too_large(limit: u64) -> MultipartError {
    MultipartError::TooLarge(format!(
        "the upload would pass {limit} bytes (the volume's max_upload_mib) or a part 5 GiB"
    ))
}

/// The chunks a channel receives, as a stream.
fn received(
    mut rx: tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>,
) -> impl Stream<Item = std::io::Result<Bytes>> + Send {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// Delete part bytes no record names any more; a failure leaves them to
/// the sweep.
async fn forget_blob(scratch: &Arc<dyn ObjectStore>, blob: &str) {
    match scratch.delete(blob).await {
        Ok(()) | Err(StorageError::NotFound) => {}
        Err(e) => tracing::warn!(blob, "deleting part bytes (the sweep retries): {e}"),
    }
}

/// Whether `part` was handed over whole as a scratch object.
async fn readable(scratch: &Arc<dyn ObjectStore>, part: &PartRecord) -> bool {
    scratch.head(&part.blob).await.is_ok_and(|m| m.size == part.size)
}

/// Whether `id` is of the form [`crate::audit::new_id`] gives.
fn valid_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}
