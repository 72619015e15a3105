//! A directory as a store: the embedded default.
//!
//! Objects are plain files under the root, so an existing uploads directory
//! can be served as it is and a volume stays browsable. Writes go to a
//! temporary file in `<root>/.silo-tmp` and are renamed into place, so a
//! reader never sees half a file. Conditional writes are atomic within one
//! Silo process (create-only uses a hard link, which fails if the target
//! exists, even across processes).
//!
//! What a directory cannot do: hold a file `a` beside a file `a/b` (S3 can),
//! and remember a declared content type (it is guessed from the extension on
//! a rescan; the metadata cache keeps the declared one). Symbolic links are
//! never followed.
//!
//! A file's ETag is the MD5 S3 would give it, kept in an extended attribute
//! ([`ETAG_ATTR`]) with the size and modification time it was made for. A
//! file without one, or changed since (put there or edited by hand), has an
//! ETag made of its inode, size and time until it is rehashed.
//!
//! A folder (a key ending in `/`, which holds no bytes) is its directory,
//! marked with [`FOLDER_ATTR`]: the directory stays when its last file goes.

use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use md5::{Digest, Md5};
use tokio::io::AsyncReadExt;

use super::{
    ABANDONED_AFTER, ByteRange, ByteStream, Condition, KeyPage, ObjectMeta, ObjectStore, ObjectUpload, PutOptions,
};
use crate::error::{StorageError, StorageResult};

/// A temporary file that becomes a stored file. It gets the mode any file
/// this process creates would (0666 less the umask), so that a web server
/// serving the directory can read it, and never an execute bit; tempfile's
/// own default, 0600, is for private files.
pub(crate) fn stored_temp(dir: &Path, prefix: &str) -> std::io::Result<tempfile::NamedTempFile> {
    use std::os::unix::fs::PermissionsExt;
    tempfile::Builder::new()
        .prefix(prefix)
        .permissions(fs::Permissions::from_mode(0o666))
        .tempfile_in(dir)
}

/// Directory (inside the root) holding writes in progress.
const TMP_DIR: &str = super::SCRATCH;

/// The extended attribute keeping a file's ETag, as `<etag> <size>
/// <mtime in ns>`: valid only while the file has that size and time.
pub const ETAG_ATTR: &str = "user.silo.etag";

/// The extended attribute marking a directory as a folder object (a key
/// ending in `/`): when it was stored, in ns since the Unix epoch.
pub const FOLDER_ATTR: &str = "user.silo.folder";

/// The MD5 of no bytes: every folder's ETag.
const EMPTY_MD5: &str = "d41d8cd98f00b204e9800998ecf8427e";

/// A file's modification time, in nanoseconds since the Unix epoch.
fn modified_ns(meta: &fs::Metadata) -> i128 {
    meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128
}

/// The ETag in `record` if it was made for the file as `meta` says it is.
fn recorded_etag(record: &[u8], meta: &fs::Metadata) -> Option<String> {
    let mut fields = std::str::from_utf8(record).ok()?.split(' ');
    let (etag, size, time) = (fields.next()?, fields.next()?, fields.next()?);
    let fits = fields.next().is_none()
        && size.parse::<u64>().ok()? == meta.len()
        && time.parse::<i128>().ok()? == modified_ns(meta)
        && !etag.is_empty();
    fits.then(|| etag.to_owned())
}

/// Whether files in `dir` keep extended attributes.
fn keeps_xattrs(dir: &Path) -> bool {
    use xattr::FileExt;
    stored_temp(dir, ".probe").is_ok_and(|probe| probe.as_file().set_xattr(ETAG_ATTR, b"probe").is_ok())
}

/// A writer that hashes what it passes on to `W`.
struct Hashing<'a, W>(&'a mut Md5, W);

impl<W: Write> Write for Hashing<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.1.write(buf)?;
        self.0.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.1.flush()
    }
}

/// Remove the files in `dir` not modified for `ABANDONED_AFTER`; how many.
pub(crate) fn sweep_abandoned(dir: &Path) -> usize {
    let Ok(entries) = fs::read_dir(dir) else { return 0 };
    let cutoff = std::time::SystemTime::now() - ABANDONED_AFTER;
    let mut removed = 0;
    for entry in entries.flatten() {
        let Ok(meta) = entry.metadata() else { continue };
        if meta.is_file() && meta.modified().is_ok_and(|m| m < cutoff) && fs::remove_file(entry.path()).is_ok() {
            removed += 1;
        }
    }
    if removed > 0 {
        tracing::info!(dir = %dir.display(), removed, "removed files abandoned by an interrupted write");
    }
    removed
}

/// Files (or ranges) up to this size are read whole when opened.
const READ_WHOLE: u64 = 64 * 1024;

/// A volume in a local directory, each object a file.
#[derive(Clone)]
pub struct LocalStore {
    inner: Arc<Inner>,
}

struct Inner {
    root: PathBuf,
    /// Whether the file system keeps extended attributes (else ETags are
    /// never MD5s).
    xattrs: bool,
    /// Serialises commits so a conditional check and its rename are atomic.
    commit: std::sync::Mutex<()>,
}

impl LocalStore {
    /// Open (creating if needed) a store rooted at `root`.
    pub fn open(root: &Path) -> StorageResult<Self> {
        fs::create_dir_all(root.join(TMP_DIR))
            .map_err(|e| StorageError::unavailable(format!("cannot create {}: {e}", root.display())))?;
        let root = root
            .canonicalize()
            .map_err(|e| StorageError::unavailable(format!("cannot open {}: {e}", root.display())))?;
        sweep_abandoned(&root.join(TMP_DIR));
        let xattrs = keeps_xattrs(&root.join(TMP_DIR));
        if !xattrs {
            tracing::warn!(
                root = %root.display(),
                "this file system keeps no extended attributes: objects here get no MD5 ETags"
            );
        }
        Ok(LocalStore {
            inner: Arc::new(Inner {
                root,
                xattrs,
                commit: std::sync::Mutex::new(()),
            }),
        })
    }

    /// The directory.
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Inner) -> StorageResult<T> + Send + 'static,
    ) -> StorageResult<T> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(|e| StorageError::unavailable(format!("local store task failed: {e}")))?
    }
}

impl Inner {
    /// The file for a key, refusing the reserved directory and any symlink
    /// on the way.
    fn file(&self, key: &str) -> StorageResult<PathBuf> {
        if key == TMP_DIR || key.starts_with(&format!("{TMP_DIR}/")) {
            return Err(StorageError::InvalidPath(format!(
                "'{TMP_DIR}' is reserved in local volumes"
            )));
        }
        let mut path = self.root.clone();
        for segment in key.strip_suffix('/').unwrap_or(key).split('/') {
            path.push(segment);
            if let Ok(meta) = fs::symlink_metadata(&path)
                && meta.file_type().is_symlink()
            {
                return Err(StorageError::AccessDenied);
            }
        }
        Ok(path)
    }

    /// What a file is as an object, `record` its [`ETAG_ATTR`].
    fn meta_of(&self, key: &str, meta: &fs::Metadata, record: Option<Vec<u8>>) -> ObjectMeta {
        let modified_ns = modified_ns(meta);
        let etag = record
            .and_then(|r| recorded_etag(&r, meta))
            .unwrap_or_else(|| format!("{:x}-{:x}-{:x}", meta.ino(), meta.len(), modified_ns));
        ObjectMeta {
            size: meta.len(),
            etag,
            content_type: super::guess_content_type(key),
            modified_ms: (modified_ns / 1_000_000).max(0) as u64,
            cache_control: None,
            metadata: Vec::new(),
            headers: Default::default(),
        }
    }

    fn head(&self, key: &str) -> StorageResult<ObjectMeta> {
        let path = self.file(key)?;
        if key.ends_with('/') {
            return self.folder_at(key, &path).ok_or(StorageError::NotFound);
        }
        let meta = fs::metadata(&path).map_err(|e| StorageError::io(key, e))?;
        if !meta.is_file() {
            return Err(StorageError::NotFound);
        }
        Ok(self.meta_of(key, &meta, self.record_at(&path)))
    }

    /// A file's [`ETAG_ATTR`], if it has one.
    fn record_at(&self, path: &Path) -> Option<Vec<u8>> {
        self.xattrs
            .then(|| xattr::get(path, ETAG_ATTR).ok().flatten())
            .flatten()
    }

    /// An open file's [`ETAG_ATTR`], if it has one.
    fn record_of(&self, file: &fs::File) -> Option<Vec<u8>> {
        use xattr::FileExt;
        self.xattrs.then(|| file.get_xattr(ETAG_ATTR).ok().flatten()).flatten()
    }

    /// Keep `etag` as the ETag of `file`, whose metadata is `meta`.
    fn record(&self, file: &fs::File, etag: &str, meta: &fs::Metadata) -> StorageResult<()> {
        use xattr::FileExt;
        if !self.xattrs {
            return Ok(());
        }
        let record = format!("{etag} {} {}", meta.len(), modified_ns(meta));
        file.set_xattr(ETAG_ATTR, record.as_bytes())
            .map_err(|e| StorageError::unavailable(format!("cannot keep a file's ETag: {e}")))
    }

    /// Give `key` the MD5 of its bytes as its ETag if it has no valid one.
    fn rehash(&self, key: &str) -> StorageResult<Option<ObjectMeta>> {
        if !self.xattrs {
            return Ok(None);
        }
        let path = self.file(key)?;
        let mut file = fs::File::open(&path).map_err(|e| StorageError::io(key, e))?;
        let before = file.metadata().map_err(|e| StorageError::io(key, e))?;
        if !before.is_file() {
            return Err(StorageError::NotFound);
        }
        if self
            .record_of(&file)
            .is_some_and(|r| recorded_etag(&r, &before).is_some())
        {
            return Ok(Some(self.meta_of(key, &before, self.record_of(&file))));
        }
        let mut md5 = Md5::new();
        std::io::copy(&mut file, &mut Hashing(&mut md5, std::io::sink())).map_err(|e| StorageError::io(key, e))?;
        let after = file.metadata().map_err(|e| StorageError::io(key, e))?;
        if after.len() != before.len() || modified_ns(&after) != modified_ns(&before) {
            return Ok(None);
        }
        let etag = hex::encode(md5.finalize());
        self.record(&file, &etag, &after)?;
        Ok(Some(self.meta_of(key, &after, self.record_of(&file))))
    }

    fn new_temp(&self) -> StorageResult<tempfile::NamedTempFile> {
        stored_temp(&self.root.join(TMP_DIR), ".tmp")
            .map_err(|e| StorageError::unavailable(format!("cannot create a temporary file: {e}")))
    }

    /// Move a finished temporary file to `key`, honouring the condition;
    /// `etag` is the MD5 of its bytes (or the caller's, in `options`).
    fn commit(
        &self,
        temp: tempfile::NamedTempFile,
        key: &str,
        options: &PutOptions,
        etag: String,
    ) -> StorageResult<ObjectMeta> {
        if key.ends_with('/') {
            let size = temp.as_file().metadata().map_or(1, |m| m.len());
            return self.mark_folder(key, size, options);
        }
        temp.as_file()
            .sync_all()
            .map_err(|e| StorageError::unavailable(format!("cannot sync a temporary file: {e}")))?;
        let dest = self.file(key)?;
        let conflict = |e: std::io::Error| match e.kind() {
            std::io::ErrorKind::AlreadyExists if options.condition == Some(Condition::CreateOnly) => {
                StorageError::AlreadyExists
            }
            std::io::ErrorKind::NotADirectory
            | std::io::ErrorKind::AlreadyExists
            | std::io::ErrorKind::IsADirectory
            | std::io::ErrorKind::DirectoryNotEmpty => self.clash(key),
            _ => StorageError::unavailable(format!("cannot store '{key}': {e}")),
        };
        // Taken from the open file: a rename keeps inode, size and mtime,
        // and a delete racing this write cannot make it fail afterwards.
        let written = temp
            .as_file()
            .metadata()
            .map_err(|e| StorageError::unavailable(format!("cannot stat a temporary file: {e}")))?;
        let etag = options.etag.clone().unwrap_or(etag);
        self.record(temp.as_file(), &etag, &written)?;
        let _guard = self.commit.lock().unwrap_or_else(|p| p.into_inner());
        // A delete pruning the now-empty parent can race the move into it;
        // recreate the parent and try again.
        let mut attempts = 0;
        loop {
            attempts += 1;
            if let Some(parent) = dest.parent() {
                fs::create_dir_all(parent).map_err(conflict)?;
            }
            let moved = match &options.condition {
                Some(Condition::CreateOnly) => fs::hard_link(temp.path(), &dest),
                Some(Condition::IfMatch(_)) => {
                    let current = self.head(key).ok();
                    super::memory::check_condition(current.as_ref(), options.condition.as_ref())?;
                    fs::rename(temp.path(), &dest)
                }
                None => {
                    if dest.is_dir() {
                        return Err(conflict(std::io::ErrorKind::IsADirectory.into()));
                    }
                    fs::rename(temp.path(), &dest)
                }
            };
            match moved {
                Ok(()) => break,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && attempts < 5 => continue,
                Err(e) => return Err(conflict(e)),
            }
        }
        drop(temp);
        // The directory keeps only the bytes; report what was declared.
        let mut meta = self.meta_of(key, &written, None);
        if self.xattrs {
            meta.etag = etag;
        }
        meta.content_type.clone_from(&options.content_type);
        meta.cache_control.clone_from(&options.cache_control);
        meta.metadata.clone_from(&options.metadata);
        meta.headers.clone_from(&options.headers);
        Ok(meta)
    }

    /// The folder `key` if its directory `dir` is marked as one.
    fn folder_at(&self, key: &str, dir: &Path) -> Option<ObjectMeta> {
        let record = xattr::get(dir, FOLDER_ATTR).ok().flatten()?;
        let stored_ns: u64 = std::str::from_utf8(&record).ok()?.parse().ok()?;
        Some(ObjectMeta {
            size: 0,
            etag: EMPTY_MD5.into(),
            content_type: super::guess_content_type(key),
            modified_ms: stored_ns / 1_000_000,
            cache_control: None,
            metadata: Vec::new(),
            headers: Default::default(),
        })
    }

    /// Store the folder `key`: its directory, marked.
    fn mark_folder(&self, key: &str, size: u64, options: &PutOptions) -> StorageResult<ObjectMeta> {
        if size > 0 {
            return Err(StorageError::InvalidPath(format!(
                "'{key}' ends in '/': it names a folder, which holds no bytes"
            )));
        }
        if !self.xattrs {
            return Err(StorageError::Unsupported(
                "this local volume's file system keeps no extended attributes, which folders need".into(),
            ));
        }
        let dir = self.file(key)?;
        let _guard = self.commit.lock().unwrap_or_else(|p| p.into_inner());
        super::memory::check_condition(self.folder_at(key, &dir).as_ref(), options.condition.as_ref())?;
        match fs::create_dir_all(&dir) {
            Ok(()) if dir.is_dir() => {}
            Ok(()) => return Err(self.clash(key)),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotADirectory | std::io::ErrorKind::AlreadyExists
                ) =>
            {
                return Err(self.clash(key));
            }
            Err(e) => return Err(StorageError::unavailable(format!("cannot store '{key}': {e}"))),
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        xattr::set(&dir, FOLDER_ATTR, now.to_string().as_bytes())
            .map_err(|e| StorageError::unavailable(format!("cannot mark '{key}' as a folder: {e}")))?;
        let mut meta = self
            .folder_at(key, &dir)
            .ok_or_else(|| StorageError::unavailable("a folder's mark did not hold"))?;
        meta.content_type.clone_from(&options.content_type);
        meta.cache_control.clone_from(&options.cache_control);
        meta.metadata.clone_from(&options.metadata);
        meta.headers.clone_from(&options.headers);
        Ok(meta)
    }

    /// Remove the folder `key`: its mark, and its directory if empty.
    fn remove_folder(&self, key: &str) -> StorageResult<()> {
        let dir = self.file(key)?;
        let _guard = self.commit.lock().unwrap_or_else(|p| p.into_inner());
        if self.folder_at(key, &dir).is_none() {
            return Err(StorageError::NotFound);
        }
        xattr::remove(&dir, FOLDER_ATTR).map_err(|e| StorageError::io(key, e))?;
        if fs::remove_dir(&dir).is_ok() {
            self.prune(&dir);
        }
        Ok(())
    }

    /// Why `key` cannot be stored beside what the directory holds: a file
    /// where it needs a directory, or a directory where it needs a file.
    fn clash(&self, key: &str) -> StorageError {
        let path = crate::path::VolumePath::parse(key);
        let file_above = path.as_ref().ok().and_then(|p| {
            p.ancestors()
                .find(|a| fs::symlink_metadata(self.root.join(a)).is_ok_and(|m| m.is_file()))
                .map(str::to_owned)
        });
        let why = match file_above {
            Some(file) => format!("'{file}' is a file"),
            None => format!("'{key}' is a directory holding other files"),
        };
        StorageError::InvalidPath(format!(
            "'{key}' cannot be stored here: {why}, and a local volume cannot hold a file and a directory of one name"
        ))
    }

    /// Remove now-empty directories from `path`'s parent up to the root.
    fn prune(&self, path: &Path) {
        let mut dir = path.parent();
        while let Some(d) = dir {
            let marked = xattr::get(d, FOLDER_ATTR).ok().flatten().is_some();
            if d == self.root || marked || fs::remove_dir(d).is_err() {
                break;
            }
            dir = d.parent();
        }
    }

    /// Collect files under `dir` in key byte order: keys starting with
    /// `scan.prefix`, after `scan.after`, until `scan.want` are found.
    /// Subtrees that cannot hold such keys are not read.
    fn walk(&self, dir: &Path, scan: &Scan<'_>, out: &mut Vec<(String, ObjectMeta)>) -> StorageResult<()> {
        let listing_error =
            |e: std::io::Error| StorageError::unavailable(format!("cannot list {}: {e}", dir.display()));
        let entries = match fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
                ) =>
            {
                return Ok(());
            }
            Err(e) => return Err(listing_error(e)),
        };
        // Sorting names with a '/' after directory names gives full-key
        // byte order (`a-b` < `a/c`).
        let mut children = Vec::new();
        for entry in entries {
            let path = entry.map_err(listing_error)?.path();
            let Some(key) = path
                .strip_prefix(&self.root)
                .ok()
                .and_then(|r| r.to_str())
                .map(str::to_owned)
            else {
                continue;
            };
            let Ok(meta) = fs::symlink_metadata(&path) else {
                continue;
            };
            if key == TMP_DIR || !(meta.is_dir() || meta.is_file()) {
                continue;
            }
            let order = if meta.is_dir() { format!("{key}/") } else { key.clone() };
            children.push((order, key, path, meta));
        }
        children.sort_by(|a, b| a.0.cmp(&b.0));
        for (order, key, path, meta) in children {
            if out.len() >= scan.want {
                break;
            }
            if meta.is_dir() {
                // A folder comes before what it holds (`a/` < `a/b`).
                if order.starts_with(scan.prefix)
                    && scan.after.is_none_or(|a| order.as_str() > a)
                    && let Some(folder) = self.folder_at(&order, &path)
                {
                    out.push((order.clone(), folder));
                    if out.len() >= scan.want {
                        break;
                    }
                }
                let could_match = order.starts_with(scan.prefix) || scan.prefix.starts_with(&order);
                let all_before = scan.after.is_some_and(|a| a > order.as_str() && !a.starts_with(&order));
                if could_match && !all_before {
                    self.walk(&path, scan, out)?;
                }
            } else if key.starts_with(scan.prefix)
                && scan.after.is_none_or(|a| key.as_str() > a)
                && crate::path::VolumePath::parse(&key).is_ok()
            {
                let meta = self.meta_of(&key, &meta, self.record_at(&path));
                out.push((key, meta));
            }
        }
        Ok(())
    }
}

/// What a listing walk looks for.
struct Scan<'a> {
    prefix: &'a str,
    after: Option<&'a str>,
    want: usize,
}

#[async_trait]
impl ObjectStore for LocalStore {
    fn describe(&self) -> String {
        format!("local:{}", self.inner.root.display())
    }

    async fn head(&self, key: &str) -> StorageResult<ObjectMeta> {
        let key = key.to_owned();
        self.blocking(move |s| s.head(&key)).await
    }

    async fn get(&self, key: &str, range: Option<ByteRange>) -> StorageResult<(ObjectMeta, ByteStream)> {
        let key = key.to_owned();
        let (meta, file) = self
            .blocking(move |s| {
                let path = s.file(&key)?;
                if key.ends_with('/') {
                    return Ok((s.head(&key)?, Err(Bytes::new())));
                }
                let mut file = fs::File::open(&path).map_err(|e| StorageError::io(&key, e))?;
                let m = file.metadata().map_err(|e| StorageError::io(&key, e))?;
                if !m.is_file() {
                    return Err(StorageError::NotFound);
                }
                if let Some(r) = range {
                    file.seek(SeekFrom::Start(r.offset))
                        .map_err(|e| StorageError::io(&key, e))?;
                }
                // A small file is read in this one hop, not one per read.
                let left = range.map_or(m.len(), |r| r.length.min(m.len().saturating_sub(r.offset)));
                if left <= READ_WHOLE {
                    let mut bytes = Vec::with_capacity(left as usize);
                    std::io::Read::read_to_end(&mut std::io::Read::take(&mut file, left), &mut bytes)
                        .map_err(|e| StorageError::io(&key, e))?;
                    return Ok((s.meta_of(&key, &m, s.record_of(&file)), Err(Bytes::from(bytes))));
                }
                Ok((s.meta_of(&key, &m, s.record_of(&file)), Ok(file)))
            })
            .await?;
        let body: ByteStream = match (file, range) {
            (Err(bytes), _) => Box::pin(std::io::Cursor::new(bytes)),
            (Ok(file), Some(r)) => Box::pin(tokio::fs::File::from_std(file).take(r.length)),
            (Ok(file), None) => Box::pin(tokio::fs::File::from_std(file)),
        };
        Ok((meta, body))
    }

    async fn put(&self, key: &str, data: Bytes, options: &PutOptions) -> StorageResult<ObjectMeta> {
        let key = key.to_owned();
        let options = options.clone();
        self.blocking(move |s| {
            let mut temp = s.new_temp()?;
            temp.write_all(&data)
                .map_err(|e| StorageError::unavailable(format!("cannot write '{key}': {e}")))?;
            let etag = match &options.etag {
                Some(etag) => etag.clone(),
                None => super::md5_etag(&data),
            };
            s.commit(temp, &key, &options, etag)
        })
        .await
    }

    async fn start_upload(&self, key: &str, options: PutOptions) -> StorageResult<Box<dyn ObjectUpload>> {
        self.inner.file(key)?;
        let store = self.clone();
        let temp = self.blocking(|s| s.new_temp()).await?;
        Ok(Box::new(LocalUpload {
            store,
            key: key.to_owned(),
            md5: options.etag.is_none().then(Md5::new),
            options,
            temp: Some(temp),
        }))
    }

    async fn rehash(&self, key: &str) -> StorageResult<Option<ObjectMeta>> {
        let key = key.to_owned();
        self.blocking(move |s| s.rehash(&key)).await
    }

    async fn delete(&self, key: &str) -> StorageResult<()> {
        let key = key.to_owned();
        self.blocking(move |s| {
            if key.ends_with('/') {
                return s.remove_folder(&key);
            }
            let path = s.file(&key)?;
            if fs::metadata(&path).map_err(|e| StorageError::io(&key, e))?.is_dir() {
                return Err(StorageError::NotFound);
            }
            // Under the commit lock, so pruning never races a write into
            // the same directory within this process.
            let _guard = s.commit.lock().unwrap_or_else(|p| p.into_inner());
            fs::remove_file(&path).map_err(|e| StorageError::io(&key, e))?;
            s.prune(&path);
            Ok(())
        })
        .await
    }

    async fn copy(&self, from: &str, to: &str, options: &PutOptions) -> StorageResult<ObjectMeta> {
        let (from, to, options) = (from.to_owned(), to.to_owned(), options.clone());
        self.blocking(move |s| {
            let mut source: Box<dyn std::io::Read> = if from.ends_with('/') {
                s.head(&from)?;
                Box::new(std::io::empty())
            } else {
                Box::new(fs::File::open(s.file(&from)?).map_err(|e| StorageError::io(&from, e))?)
            };
            let mut temp = s.new_temp()?;
            let mut md5 = Md5::new();
            std::io::copy(&mut source, &mut Hashing(&mut md5, temp.as_file_mut()))
                .map_err(|e| StorageError::unavailable(format!("cannot copy '{from}': {e}")))?;
            s.commit(temp, &to, &options, hex::encode(md5.finalize()))
        })
        .await
    }

    async fn list(&self, prefix: &str, after: Option<&str>, limit: usize) -> StorageResult<KeyPage> {
        let (prefix, after) = (prefix.to_owned(), after.map(str::to_owned));
        self.blocking(move |s| {
            let start = s.root.join(crate::path::parent_of(&prefix));
            let scan = Scan {
                prefix: &prefix,
                after: after.as_deref(),
                want: limit + 1,
            };
            let mut objects = Vec::new();
            // Listed from inside a folder's directory: the folder itself first.
            let parent = crate::path::parent_of(&prefix);
            let own = format!("{parent}/");
            if !parent.is_empty()
                && own.starts_with(prefix.as_str())
                && after.as_deref().is_none_or(|a| own.as_str() > a)
                && let Some(folder) = s.folder_at(&own, &start)
            {
                objects.push((own, folder));
            }
            s.walk(&start, &scan, &mut objects)?;
            let next = (objects.len() > limit).then(|| {
                objects.truncate(limit);
                objects.last().map(|(k, _)| k.clone()).unwrap_or_default()
            });
            Ok(KeyPage { objects, next })
        })
        .await
    }
}

struct LocalUpload {
    store: LocalStore,
    key: String,
    options: PutOptions,
    /// The bytes' MD5 so far, unless the writer gave the ETag.
    md5: Option<Md5>,
    /// Deleted on drop unless committed.
    temp: Option<tempfile::NamedTempFile>,
}

#[async_trait]
impl ObjectUpload for LocalUpload {
    async fn write(&mut self, chunk: Bytes, _held: crate::budget::Held) -> StorageResult<()> {
        let mut temp = self
            .temp
            .take()
            .ok_or_else(|| StorageError::unavailable("upload already failed"))?;
        let key = self.key.clone();
        let mut md5 = self.md5.take();
        let (temp, md5) = self
            .store
            .blocking(move |_| {
                temp.write_all(&chunk)
                    .map_err(|e| StorageError::unavailable(format!("cannot write '{key}': {e}")))?;
                if let Some(md5) = &mut md5 {
                    md5.update(&chunk);
                }
                Ok((temp, md5))
            })
            .await?;
        self.temp = Some(temp);
        self.md5 = md5;
        Ok(())
    }

    async fn finish(mut self: Box<Self>) -> StorageResult<ObjectMeta> {
        let temp = self
            .temp
            .take()
            .ok_or_else(|| StorageError::unavailable("upload already failed"))?;
        let (key, options) = (self.key.clone(), self.options.clone());
        let etag = self.md5.take().map(|m| hex::encode(m.finalize())).unwrap_or_default();
        self.store.blocking(move |s| s.commit(temp, &key, &options, etag)).await
    }
}
