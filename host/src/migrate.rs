//! Moving an existing uploads directory into a volume (`silo migrate`),
//! and a volume back out to a directory (leaving S3).
//!
//! Copies run in parallel, are resumable (a file already present with the
//! same size and checksum is skipped) and verified: every copy is hashed on
//! the way, imported objects carry their SHA-256 as `sha256` metadata, and
//! a stored object whose etag is a plain MD5 (S3 single-part uploads) must
//! match the source's. Imports go through the storage core, so the content
//! policy applies and the metadata cache is written as files land. Upload
//! plugins do not run: these files were accepted by the CMS long ago.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use md5::Md5;
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::error::{StorageError, StorageResult};
use crate::store::{ObjectMeta, PutOptions};
use crate::vfs::{Location, Session, Storage};

/// Files up to this size are read whole and stored with one request.
const WHOLE_FILE_BYTES: u64 = 8 << 20;
/// Chunk size of streamed copies.
const CHUNK: usize = 1 << 20;
/// The metadata key imported objects carry their SHA-256 under.
pub const SHA256_KEY: &str = "sha256";

/// Which way files go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Local directory into the volume.
    Import,
    /// Volume into the local directory.
    Export,
}

/// What happens to one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Absent at the destination, or a different size.
    Copy,
    /// Same size at the destination: compared by checksum, copied if it differs.
    Check,
}

#[derive(Debug, Clone, Serialize)]
/// One file of a migration.
pub struct Item {
    /// Path inside the volume (and under the directory).
    pub path: String,
    /// Its size.
    pub size: u64,
    /// What will be done with it.
    pub action: Action,
    /// The object as the volume's listing showed it, if it is there.
    #[serde(skip)]
    pub listed: Option<ObjectMeta>,
}

/// What a migration will do, before it does it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Plan {
    /// The files, in order.
    pub items: Vec<Item>,
    /// Sources that cannot be migrated (invalid names, symbolic links, …), with why.
    pub unusable: Vec<(String, String)>,
}

impl Plan {
    /// The bytes of every file.
    pub fn bytes(&self) -> u64 {
        self.items.iter().map(|i| i.size).sum()
    }
}

/// What a migration did.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    /// Files copied.
    pub copied: u64,
    /// Their bytes.
    pub copied_bytes: u64,
    /// Already there with the same size and checksum.
    pub skipped: u64,
    /// Refused by the content policy (imports), with why.
    pub refused: Vec<(String, String)>,
    /// Failed copies, with why; nothing of them is left at the destination.
    pub failed: Vec<(String, String)>,
}

impl Report {
    /// Whether nothing failed.
    pub fn is_complete(&self) -> bool {
        self.failed.is_empty()
    }
}

/// Progress as files finish: files done, bytes done.
pub type Progress = dyn Fn(u64, u64) + Send + Sync;

/// Compare `dir` with `volume` and list what to copy in `direction`.
pub async fn plan(storage: &Arc<Storage>, volume: &str, dir: &Path, direction: Direction) -> StorageResult<Plan> {
    storage
        .volume(volume)
        .map_err(|_| StorageError::InvalidPath(format!("there is no volume named '{volume}'")))?;
    let remote: HashMap<String, ObjectMeta> = crate::maintenance::scan(storage, volume, &|_| {})
        .await?
        .into_iter()
        .collect();
    let mut plan = Plan::default();
    match direction {
        Direction::Import => {
            let (files, unusable) = {
                let root = dir.to_owned();
                tokio::task::spawn_blocking(move || walk(&root))
                    .await
                    .map_err(|e| StorageError::unavailable(e.to_string()))?
                    .map_err(|e| StorageError::unavailable(format!("{}: {e}", dir.display())))?
            };
            plan.unusable = unusable;
            for (path, size) in files {
                if let Err(e) = storage.location(volume, &path) {
                    plan.unusable.push((path, e.to_string()));
                    continue;
                }
                let listed = remote.get(&path).cloned();
                let action = match &listed {
                    Some(meta) if meta.size == size => Action::Check,
                    _ => Action::Copy,
                };
                plan.items.push(Item {
                    path,
                    size,
                    action,
                    listed,
                });
            }
        }
        Direction::Export => {
            for (path, meta) in remote {
                if let Err(e) = crate::path::VolumePath::parse(&path) {
                    plan.unusable.push((path, e.to_string()));
                    continue;
                }
                let action = match std::fs::symlink_metadata(dir.join(&path)) {
                    Ok(m) if m.is_file() && m.len() == meta.size => Action::Check,
                    Ok(m) if !m.is_file() => {
                        plan.unusable
                            .push((path, "the destination exists and is not a regular file".into()));
                        continue;
                    }
                    _ => Action::Copy,
                };
                plan.items.push(Item {
                    path,
                    size: meta.size,
                    action,
                    listed: Some(meta),
                });
            }
        }
    }
    plan.items.sort_by(|a, b| a.path.cmp(&b.path));
    plan.unusable.sort();
    Ok(plan)
}

/// Files (path, size) and unusable entries (path, why) of a directory.
type Walked = (Vec<(String, u64)>, Vec<(String, String)>);

/// Names `--reverse` gives files it is still writing.
const TEMP_PREFIX: &str = ".silo-migrate-";

/// Every regular file under `dir`, as (volume path, size); symbolic links,
/// other special files and an interrupted export's temporary files are
/// reported, not followed or copied.
fn walk(dir: &Path) -> std::io::Result<Walked> {
    let (mut files, mut unusable) = (Vec::new(), Vec::new());
    let mut pending = vec![PathBuf::new()];
    while let Some(relative) = pending.pop() {
        for entry in std::fs::read_dir(dir.join(&relative))? {
            let entry = entry?;
            let rel = relative.join(entry.file_name());
            let kind = entry.file_type()?;
            let name = rel.to_string_lossy().replace(std::path::MAIN_SEPARATOR, "/");
            if kind.is_dir() {
                pending.push(rel);
            } else if rel.to_str().is_none() {
                unusable.push((name, "the name is not UTF-8".into()));
            } else if kind.is_file() && entry.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
                unusable.push((
                    name,
                    "a temporary file of an interrupted `silo migrate --reverse`".into(),
                ));
            } else if kind.is_file() {
                files.push((name, entry.metadata()?.len()));
            } else {
                unusable.push((name, "not a regular file (symbolic link or special file)".into()));
            }
        }
    }
    Ok((files, unusable))
}

/// Carry out `plan` with `jobs` copies at once.
pub async fn run(
    storage: &Arc<Storage>,
    volume: &str,
    dir: &Path,
    direction: Direction,
    plan: Plan,
    jobs: usize,
    progress: Arc<Progress>,
) -> Report {
    let queue = Arc::new(Mutex::new(VecDeque::from(plan.items)));
    let report = Arc::new(Mutex::new(Report::default()));
    let (files_done, bytes_done) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..jobs.max(1) {
        let job = Job {
            session: storage
                .host_session()
                .with_actor(crate::audit::Actor::request(crate::audit::CLI)),
            volume: volume.to_owned(),
            dir: dir.to_owned(),
        };
        let (queue, report, progress) = (queue.clone(), report.clone(), progress.clone());
        let (files_done, bytes_done) = (files_done.clone(), bytes_done.clone());
        workers.spawn(async move {
            loop {
                let Some(item) = queue.lock().unwrap_or_else(|p| p.into_inner()).pop_front() else {
                    return;
                };
                let outcome = match direction {
                    Direction::Import => job.import(&item).await,
                    Direction::Export => job.export(&item).await,
                };
                {
                    let mut report = report.lock().unwrap_or_else(|p| p.into_inner());
                    match outcome {
                        Ok(true) => {
                            report.copied += 1;
                            report.copied_bytes += item.size;
                        }
                        Ok(false) => report.skipped += 1,
                        Err(StorageError::Forbidden(why)) => report.refused.push((item.path, why)),
                        Err(e) => report.failed.push((item.path, e.to_string())),
                    }
                }
                let files = files_done.fetch_add(1, Ordering::Relaxed) + 1;
                let bytes = bytes_done.fetch_add(item.size, Ordering::Relaxed) + item.size;
                progress(files, bytes);
            }
        });
    }
    while workers.join_next().await.is_some() {}
    let mut report = std::mem::take(&mut *report.lock().unwrap_or_else(|p| p.into_inner()));
    report.refused.sort();
    report.failed.sort();
    report
}

/// SHA-256 and MD5 of some content, computed as it streams by.
#[derive(Default)]
struct Hashes {
    sha256: Sha256,
    md5: Md5,
    size: u64,
}

impl Hashes {
    fn update(&mut self, chunk: &[u8]) {
        self.sha256.update(chunk);
        self.md5.update(chunk);
        self.size += chunk.len() as u64;
    }

    fn finish(self) -> Digests {
        Digests {
            sha256: hex::encode(self.sha256.finalize()),
            md5: hex::encode(self.md5.finalize()),
            size: self.size,
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
struct Digests {
    sha256: String,
    md5: String,
    size: u64,
}

/// The etag of an S3 single-part upload is the content's MD5; multipart
/// etags (`…-N`) and other backends' etags say nothing about content.
fn etag_md5(meta: &ObjectMeta) -> Option<&str> {
    let etag = meta.etag.trim_matches('"');
    (etag.len() == 32 && etag.bytes().all(|b| b.is_ascii_hexdigit())).then_some(etag)
}

/// Whether a stored object contradicts the digests of what was meant to be
/// stored; `None` when it agrees as far as can be told without reading it.
fn contradiction(meta: &ObjectMeta, digests: &Digests) -> Option<String> {
    if meta.size != digests.size {
        return Some(format!("{} bytes stored, {} sent", meta.size, digests.size));
    }
    if let Some(md5) = etag_md5(meta)
        && !md5.eq_ignore_ascii_case(&digests.md5)
    {
        return Some(format!("stored MD5 {md5}, sent {}", digests.md5));
    }
    let stored = meta.metadata.iter().find(|(k, _)| k == SHA256_KEY).map(|(_, v)| v);
    if let Some(sha) = stored
        && !sha.eq_ignore_ascii_case(&digests.sha256)
    {
        return Some(format!("stored SHA-256 {sha}, sent {}", digests.sha256));
    }
    None
}

fn io_error(path: &Path, e: std::io::Error) -> StorageError {
    StorageError::unavailable(format!("{}: {e}", path.display()))
}

/// Hash everything `body` yields (`what` names it in errors), copying it
/// into `copy` if given.
async fn drain(
    body: &mut (impl tokio::io::AsyncRead + Unpin),
    what: &str,
    mut copy: Option<(&mut tokio::fs::File, &Path)>,
) -> StorageResult<Digests> {
    let mut hashes = Hashes::default();
    let mut buf = vec![0; CHUNK];
    loop {
        let n = body
            .read(&mut buf)
            .await
            .map_err(|e| StorageError::unavailable(format!("reading {what}: {e}")))?;
        if n == 0 {
            return Ok(hashes.finish());
        }
        hashes.update(&buf[..n]);
        if let Some((file, path)) = &mut copy {
            file.write_all(&buf[..n]).await.map_err(|e| io_error(path, e))?;
        }
    }
}

async fn hash_file(path: &Path) -> StorageResult<Digests> {
    let mut file = tokio::fs::File::open(path).await.map_err(|e| io_error(path, e))?;
    drain(&mut file, &path.display().to_string(), None).await
}

struct Job {
    session: Session,
    volume: String,
    dir: PathBuf,
}

impl Job {
    fn location(&self, path: &str) -> StorageResult<Location> {
        self.session.storage().location(&self.volume, path)
    }

    /// The stored object, if it holds exactly `local`'s content. A listed
    /// MD5 etag settles it without asking the backend again.
    async fn same(
        &self,
        loc: &Location,
        listed: Option<&ObjectMeta>,
        local: &Digests,
    ) -> StorageResult<Option<ObjectMeta>> {
        if let Some(meta) = listed
            && meta.size == local.size
            && let Some(md5) = etag_md5(meta)
        {
            return Ok(md5.eq_ignore_ascii_case(&local.md5).then(|| meta.clone()));
        }
        let store = &self.session.storage().volume(&loc.volume)?.store;
        let meta = store.head(loc.path.as_str()).await?;
        let same = |yes: bool| Ok(yes.then(|| meta.clone()));
        if meta.size != local.size {
            return same(false);
        }
        if let Some(md5) = etag_md5(&meta) {
            return same(md5.eq_ignore_ascii_case(&local.md5));
        }
        if let Some((_, sha)) = meta.metadata.iter().find(|(k, _)| k == SHA256_KEY) {
            return same(sha.eq_ignore_ascii_case(&local.sha256));
        }
        // Nothing to compare with but the content itself.
        let (_, mut body) = store.get(loc.path.as_str(), None).await?;
        same(drain(&mut body, loc.path.as_str(), None).await? == *local)
    }

    /// Copy one local file into the volume; `Ok(false)` if it was already there.
    async fn import(&self, item: &Item) -> StorageResult<bool> {
        let loc = self.location(&item.path)?;
        let source = self.dir.join(&item.path);
        if item.action == Action::Check
            && let Some(meta) = self
                .same(&loc, item.listed.as_ref(), &hash_file(&source).await?)
                .await?
        {
            // Resumed, or copied by other means: make sure the cache knows it.
            self.session.learned(&loc, meta).await?;
            return Ok(false);
        }
        let mut options = PutOptions::default();
        let (meta, digests) = if item.size <= WHOLE_FILE_BYTES {
            let data = tokio::fs::read(&source).await.map_err(|e| io_error(&source, e))?;
            let mut hashes = Hashes::default();
            hashes.update(&data);
            let digests = hashes.finish();
            options.metadata = vec![(SHA256_KEY.into(), digests.sha256.clone())];
            (self.session.write(&loc, Bytes::from(data), options).await?, digests)
        } else {
            // The checksum travels as metadata, which goes first: hash, then send.
            let digests = hash_file(&source).await?;
            options.metadata = vec![(SHA256_KEY.into(), digests.sha256.clone())];
            let mut upload = self.session.open_write(&loc, options).await?;
            let mut file = tokio::fs::File::open(&source).await.map_err(|e| io_error(&source, e))?;
            let mut resent = Hashes::default();
            loop {
                let mut buf = vec![0; CHUNK];
                let n = file.read(&mut buf).await.map_err(|e| io_error(&source, e))?;
                if n == 0 {
                    break;
                }
                buf.truncate(n);
                resent.update(&buf);
                upload.write(Bytes::from(buf), crate::budget::Held::default()).await?;
            }
            let resent = resent.finish();
            if resent != digests {
                // Dropping the upload discards it.
                return Err(StorageError::unavailable(format!(
                    "{} changed while it was being copied",
                    source.display()
                )));
            }
            (upload.finish().await?, digests)
        };
        let mut disagreement = contradiction(&meta, &digests);
        if disagreement.is_none() && etag_md5(&meta).is_none() {
            // A multipart etag, or a backend's own, says nothing of the
            // bytes, and the SHA-256 in the metadata is what was sent: read
            // the stored object back.
            let store = &self.session.storage().volume(&loc.volume)?.store;
            let stored = match store.get(loc.path.as_str(), None).await {
                Ok((_, mut body)) => drain(&mut body, loc.path.as_str(), None).await,
                Err(e) => Err(e),
            };
            match stored {
                Ok(stored) if stored == digests => {}
                Ok(stored) => {
                    disagreement = Some(format!(
                        "read back {} bytes with SHA-256 {}, sent {} bytes with {}",
                        stored.size, stored.sha256, digests.size, digests.sha256
                    ))
                }
                Err(e) => {
                    self.session.delete(&loc).await?;
                    return Err(e);
                }
            }
        }
        if let Some(why) = disagreement {
            self.session.delete(&loc).await?;
            return Err(StorageError::unavailable(format!("verification failed: {why}")));
        }
        Ok(true)
    }

    /// Copy one object out of the volume; `Ok(false)` if it was already there.
    async fn export(&self, item: &Item) -> StorageResult<bool> {
        let target = self.dir.join(&item.path);
        let store = self.session.storage().volume(&self.volume)?.store.clone();
        if item.action == Action::Check
            && self
                .same(
                    &self.location(&item.path)?,
                    item.listed.as_ref(),
                    &hash_file(&target).await?,
                )
                .await?
                .is_some()
        {
            return Ok(false);
        }
        let parent = target.parent().unwrap_or(&self.dir).to_owned();
        tokio::fs::create_dir_all(&parent)
            .await
            .map_err(|e| io_error(&parent, e))?;
        let temp = crate::store::local::stored_temp(&parent, TEMP_PREFIX)
            .map_err(|e| io_error(&parent, e))?
            .into_temp_path();
        let (meta, mut body) = store.get(&item.path, None).await?;
        let mut file = tokio::fs::File::create(&temp).await.map_err(|e| io_error(&temp, e))?;
        let digests = drain(&mut body, &item.path, Some((&mut file, &temp))).await?;
        // The copy keeps the object's time, as the file it came from had.
        let file = file.into_std().await;
        let modified = UNIX_EPOCH + Duration::from_millis(meta.modified_ms);
        tokio::task::spawn_blocking(move || {
            file.set_modified(modified)?;
            file.sync_all()
        })
        .await
        .map_err(|e| StorageError::unavailable(format!("writing a file failed: {e}")))?
        .map_err(|e| io_error(&temp, e))?;
        if let Some(why) = contradiction(&meta, &digests) {
            return Err(StorageError::unavailable(format!("verification failed: {why}")));
        }
        temp.persist(&target).map_err(|e| io_error(&target, e.error))?;
        Ok(true)
    }
}
