//! wasi:filesystem 0.2 served from Silo's storage, so that plugins can use
//! their language's own file API (Rust `std::fs`, Python `open()`).
//!
//! Every volume the plugin has a grant on is a preopened directory named
//! `/<volume>`. Each operation resolves its path against the grants exactly
//! as the `files` interface does and then calls the same [`Session`]
//! methods, so the metadata cache, quotas and the content policy apply
//! unchanged. Directories are derived from the paths of files, as in the
//! metadata cache. A file opened for writing is one streamed upload,
//! committed when the descriptor is synced or dropped. What this does not
//! model (links, times, writes at other offsets) answers `unsupported`.
//! docs/SEMANTICS.md, "Files through wasi:filesystem", has the table.
//!
//! [`Session`]: crate::vfs::Session

use std::collections::{HashSet, VecDeque};

use bytes::Bytes;
use sha2::{Digest, Sha256};
use wasmtime::component::{HasSelf, Linker, Resource};
use wasmtime_wasi::p2::bindings::clocks::wall_clock::Datetime;
use wasmtime_wasi::p2::{DynInputStream, DynOutputStream};

use super::Invocation;
use super::streams::{ReadStream, Slot, WriterState};
use crate::cache::Entry;
use crate::error::StorageError;
use crate::store::{ByteRange, Condition, ObjectMeta, PutOptions, now_ms};
use crate::vfs::{Access, Location};

wasmtime::component::bindgen!({
    inline: "
        package silo:host;
        world filesystem {
            import wasi:filesystem/types@0.2.12;
            import wasi:filesystem/preopens@0.2.12;
        }
    ",
    path: "../wit",
    world: "silo:host/filesystem",
    imports: { default: async | trappable },
    with: {
        "wasi:io": wasmtime_wasi::p2::bindings::io,
        "wasi:clocks": wasmtime_wasi::p2::bindings::clocks,
        "wasi:filesystem/types.descriptor": crate::runtime::fs::Descriptor,
        "wasi:filesystem/types.directory-entry-stream": crate::runtime::fs::DirEntries,
    },
});

use wasi::filesystem::types::{
    self as fst, Advice, DescriptorFlags, DescriptorStat, DescriptorType, DirectoryEntry, ErrorCode, Filesize,
    MetadataHashValue, NewTimestamp, OpenFlags, PathFlags,
};

/// Most bytes one `read` or `write` call moves; the caller gets a short
/// count and calls again (streams have no such limit).
const MAX_CALL_BYTES: u64 = 1 << 20;
/// Entries fetched per page of a directory listing.
const DIR_PAGE: usize = 256;
/// Directories an invocation may create that have no files yet.
const MAX_CREATED_DIRS: usize = 1000;

type FsResult<T> = wasmtime::Result<Result<T, ErrorCode>>;

/// Link wasi:filesystem over wasmtime-wasi's host-directory version,
/// which must already be in the linker.
pub(crate) fn add_to_linker(linker: &mut Linker<Invocation>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    wasi::filesystem::types::add_to_linker::<Invocation, HasSelf<Invocation>>(linker, |s| s)?;
    wasi::filesystem::preopens::add_to_linker::<Invocation, HasSelf<Invocation>>(linker, |s| s)?;
    linker.allow_shadowing(false);
    Ok(())
}

/// What an invocation's filesystem remembers beyond its descriptors.
pub(crate) struct FsState {
    /// Directories created with no file in them yet: directories are
    /// derived from files, so only this invocation sees these.
    created: HashSet<(String, String)>,
    /// Directory listings open at once.
    listings: super::streams::OpenStreams,
    /// The last answer to a read lookup, given once more to the next
    /// lookup of the same path if the session changed nothing since: libc
    /// asks `metadata-hash-at` and then `stat-at` for one `stat`, and
    /// `metadata-hash-at` for each entry a listing just returned.
    recent: Option<Recent>,
}

struct Recent {
    changes: u64,
    volume: String,
    path: String,
    found: Found,
}

impl FsState {
    pub(crate) fn new() -> Self {
        FsState {
            created: HashSet::new(),
            listings: super::streams::OpenStreams::new(super::MAX_OPEN_READERS),
            recent: None,
        }
    }
}

/// An open file or directory.
pub struct Descriptor {
    volume: String,
    /// Relative to the volume; "" for its root.
    path: String,
    kind: Kind,
}

enum Kind {
    Dir,
    File(Box<FileState>),
}

struct FileState {
    loc: Location,
    read: bool,
    /// What was stored when it was opened.
    stored: Option<ObjectMeta>,
    writing: Writing,
}

impl FileState {
    fn stored_size(&self) -> u64 {
        self.stored.as_ref().map_or(0, |m| m.size)
    }
}

enum Writing {
    /// Opened read-only, or its write failed to commit.
    No,
    /// Opened for writing with its content kept: the upload starts, with
    /// the stored content, at the first write at its end.
    Later,
    Open(WriterState),
    /// Committed by `sync`.
    Done(ObjectMeta),
}

/// A directory listing in progress.
pub struct DirEntries {
    volume: String,
    prefix: String,
    /// With the metadata of files, for the lookup that follows.
    buffered: VecDeque<(DirectoryEntry, Option<ObjectMeta>)>,
    cursor: Option<String>,
    more: bool,
    /// What the cache does not list, given after it unless it did: the
    /// upload under judgement (or the directory leading to it) and
    /// directories this invocation created.
    extra: Vec<DirectoryEntry>,
    _slot: Slot,
}

fn code(e: &StorageError) -> ErrorCode {
    match e {
        StorageError::NotFound => ErrorCode::NoEntry,
        StorageError::AlreadyExists | StorageError::PreconditionFailed => ErrorCode::Exist,
        StorageError::AccessDenied => ErrorCode::Access,
        StorageError::InvalidPath(_) => ErrorCode::Invalid,
        StorageError::TooLarge => ErrorCode::FileTooLarge,
        StorageError::QuotaExceeded(_) => ErrorCode::Quota,
        StorageError::Unsupported(_) => ErrorCode::Unsupported,
        StorageError::Unavailable(_) => ErrorCode::Io,
        StorageError::Busy(_) => ErrorCode::WouldBlock,
        StorageError::Forbidden(_) => ErrorCode::NotPermitted,
    }
}

impl From<StorageError> for ErrorCode {
    fn from(e: StorageError) -> Self {
        code(&e)
    }
}

/// Early-return a guest-facing error.
macro_rules! fs_try {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(e) => return Ok(Err(e.into())),
        }
    };
}

/// `rel` taken from the directory `base`, as a volume path. `..` may not
/// climb out of the volume; absolute paths are not relative to anything.
fn join(base: &str, rel: &str) -> Result<String, ErrorCode> {
    if rel.starts_with('/') {
        return Err(ErrorCode::NotPermitted);
    }
    let mut parts: Vec<&str> = base.split('/').filter(|s| !s.is_empty()).collect();
    for segment in rel.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return Err(ErrorCode::NotPermitted);
                }
            }
            s => parts.push(s),
        }
    }
    Ok(parts.join("/"))
}

fn datetime(ms: u64) -> Datetime {
    Datetime {
        seconds: ms / 1000,
        nanoseconds: ((ms % 1000) * 1_000_000) as u32,
    }
}

fn file_stat(size: u64, modified_ms: Option<u64>) -> DescriptorStat {
    let time = modified_ms.map(datetime);
    DescriptorStat {
        type_: DescriptorType::RegularFile,
        link_count: 1,
        size,
        data_access_timestamp: time,
        data_modification_timestamp: time,
        status_change_timestamp: time,
    }
}

fn dir_stat() -> DescriptorStat {
    DescriptorStat {
        type_: DescriptorType::Directory,
        link_count: 1,
        size: 0,
        data_access_timestamp: None,
        data_modification_timestamp: None,
        status_change_timestamp: None,
    }
}

/// A file's identity is its place: volume and path.
fn identity(volume: &str, path: &str) -> MetadataHashValue {
    let digest = Sha256::new()
        .chain_update(volume.as_bytes())
        .chain_update([0])
        .chain_update(path.as_bytes())
        .finalize();
    let word = |i: usize| u64::from_le_bytes(digest[i..i + 8].try_into().expect("8 bytes of a sha256"));
    MetadataHashValue {
        lower: word(0),
        upper: word(8),
    }
}

/// What is at a path.
#[derive(Clone)]
// Short-lived, and a file is what is found most.
#[allow(clippy::large_enum_variant)]
enum Found {
    File(Location, ObjectMeta),
    Dir,
    Missing(Location),
}

impl Invocation {
    /// The directory a descriptor is, or `not-directory`.
    fn dir(&self, fd: &Resource<Descriptor>) -> wasmtime::Result<Result<(String, String), ErrorCode>> {
        let d = self.table.get(fd)?;
        Ok(match d.kind {
            Kind::Dir => Ok((d.volume.clone(), d.path.clone())),
            Kind::File(_) => Err(ErrorCode::NotDirectory),
        })
    }

    fn file_mut(&mut self, fd: &Resource<Descriptor>) -> wasmtime::Result<Result<&mut FileState, ErrorCode>> {
        Ok(match &mut self.table.get_mut(fd)?.kind {
            Kind::File(f) => Ok(f),
            Kind::Dir => Err(ErrorCode::IsDirectory),
        })
    }

    /// Whether `path` is a directory: an ancestor of a file the cache
    /// lists (or of the pending upload), or one this invocation created.
    async fn is_dir(&mut self, volume: &str, path: &str) -> Result<bool, StorageError> {
        if path.is_empty() || self.fs.created.contains(&(volume.to_owned(), path.to_owned())) {
            return Ok(true);
        }
        if let Some(p) = self.session.pending()
            && p.location.volume == volume
            && p.location
                .path
                .as_str()
                .strip_prefix(path)
                .is_some_and(|r| r.starts_with('/'))
        {
            return Ok(true);
        }
        let page = self.session.list(volume, path, false, None, 1).await?;
        Ok(!page.entries.is_empty())
    }

    /// What is at `path`, with the grants checked for `access`.
    async fn lookup(&mut self, volume: &str, path: &str, access: Access) -> Result<Found, StorageError> {
        if path.is_empty() {
            return Ok(Found::Dir);
        }
        if access != Access::Read {
            return self.look(volume, path, access).await;
        }
        if let Some(recent) = self.fs.recent.take()
            && recent.changes == self.session.changes()
            && recent.volume == volume
            && recent.path == path
        {
            return Ok(recent.found);
        }
        let found = self.look(volume, path, access).await?;
        if !matches!(found, Found::Missing(_)) {
            self.remember(volume, path, found.clone());
        }
        Ok(found)
    }

    /// [`Self::lookup`] in the cache itself.
    async fn look(&mut self, volume: &str, path: &str, access: Access) -> Result<Found, StorageError> {
        let loc = self.session.resolve(volume, path, access)?;
        match self.session.stat(&loc).await {
            Ok(meta) => Ok(Found::File(loc, meta)),
            Err(StorageError::NotFound) => {
                // Only a reader may learn what is under a directory.
                let dir = match self.is_dir(volume, path).await {
                    Ok(d) => d,
                    Err(StorageError::AccessDenied) => false,
                    Err(e) => return Err(e),
                };
                Ok(if dir { Found::Dir } else { Found::Missing(loc) })
            }
            Err(e) => Err(e),
        }
    }

    fn remember(&mut self, volume: &str, path: &str, found: Found) {
        self.fs.recent = Some(Recent {
            changes: self.session.changes(),
            volume: volume.to_owned(),
            path: path.to_owned(),
            found,
        });
    }

    fn is_pending(&self, loc: &Location) -> bool {
        self.session.pending().is_some_and(|p| &p.location == loc)
    }

    /// Start the upload of a file opened for writing; `keep` seeds it with
    /// the stored content (an append), which must still be that version
    /// when it is committed.
    async fn start_writer(
        &mut self,
        loc: &Location,
        keep: Option<&ObjectMeta>,
        exclusive: bool,
    ) -> Result<WriterState, StorageError> {
        let slot = self.writers.take().ok_or_else(|| {
            StorageError::QuotaExceeded(format!(
                "at most {} files may be open for writing at once",
                super::MAX_OPEN_WRITERS
            ))
        })?;
        let options = PutOptions {
            content_type: keep.map(|m| m.content_type.clone()).unwrap_or_default(),
            condition: match keep {
                Some(m) => Some(Condition::IfMatch(m.etag.clone())),
                None if exclusive => Some(Condition::CreateOnly),
                None => None,
            },
            ..PutOptions::default()
        };
        let mut upload = self.session.open_write(loc, options).await?;
        if keep.is_some() {
            let (_, body) = self.session.open_read(loc, None).await?;
            upload.copy_from(body).await?;
        }
        let position = upload.size();
        Ok(WriterState::new(
            upload,
            self.session.storage().budget().clone(),
            slot,
            position,
        ))
    }

    /// The writer of a file, started if it was waiting for its first write,
    /// provided the write is at the end of the content (`None`: at the end,
    /// wherever that is).
    async fn writer_at(&mut self, fd: &Resource<Descriptor>, offset: Option<u64>) -> FsResult<()> {
        let file = fs_try!(self.file_mut(fd)?);
        let end = match &file.writing {
            Writing::No => return Ok(Err(ErrorCode::BadDescriptor)),
            Writing::Done(_) => return Ok(Err(ErrorCode::Unsupported)),
            Writing::Later => file.stored_size(),
            Writing::Open(w) => w.position(),
        };
        if offset.is_some_and(|o| o != end) {
            return Ok(Err(ErrorCode::Unsupported));
        }
        if let Writing::Later = file.writing {
            let loc = file.loc.clone();
            let stored = file.stored.clone();
            let writer = fs_try!(self.start_writer(&loc, stored.as_ref(), false).await);
            fs_try!(self.file_mut(fd)?).writing = Writing::Open(writer);
        }
        Ok(Ok(()))
    }

    /// A new output stream onto a file's open writer.
    fn output_stream(&mut self, fd: &Resource<Descriptor>) -> FsResult<Resource<DynOutputStream>> {
        let Writing::Open(writer) = &fs_try!(self.file_mut(fd)?).writing else {
            return Ok(Err(ErrorCode::BadDescriptor));
        };
        let stream: DynOutputStream = Box::new(writer.stream());
        Ok(Ok(self.table.push(stream)?))
    }

    /// Commit a file's write, if one is open.
    async fn commit(&mut self, fd: &Resource<Descriptor>) -> FsResult<()> {
        let file = match &mut self.table.get_mut(fd)?.kind {
            Kind::File(f) => f,
            Kind::Dir => return Ok(Ok(())),
        };
        let Writing::Open(writer) = std::mem::replace(&mut file.writing, Writing::No) else {
            return Ok(Ok(()));
        };
        let meta = fs_try!(writer.finish().await);
        let file = fs_try!(self.file_mut(fd)?);
        file.stored = Some(meta.clone());
        file.writing = Writing::Done(meta);
        Ok(Ok(()))
    }
}

impl fst::Host for Invocation {
    async fn filesystem_error_code(&mut self, err: Resource<wasmtime::Error>) -> wasmtime::Result<Option<ErrorCode>> {
        let err = self.table.get(&err)?;
        Ok(err
            .downcast_ref::<StorageError>()
            .map(code)
            .or_else(|| err.downcast_ref::<std::io::Error>().map(|_| ErrorCode::Io)))
    }
}

impl fst::HostDescriptor for Invocation {
    async fn read_via_stream(
        &mut self,
        fd: Resource<Descriptor>,
        offset: Filesize,
    ) -> FsResult<Resource<DynInputStream>> {
        let file = fs_try!(self.file_mut(&fd)?);
        if !file.read {
            return Ok(Err(ErrorCode::BadDescriptor));
        }
        let loc = file.loc.clone();
        let Some(slot) = self.readers.take() else {
            return Ok(Err(ErrorCode::Quota));
        };
        let body: crate::store::ByteStream = if offset == 0 {
            fs_try!(self.session.open_read(&loc, None).await).1
        } else {
            let size = fs_try!(self.session.stat(&loc).await).size;
            if offset >= size {
                Box::pin(std::io::Cursor::new(Bytes::new()))
            } else {
                let range = ByteRange {
                    offset,
                    length: size - offset,
                };
                fs_try!(self.session.open_read(&loc, Some(range)).await).1
            }
        };
        let stream: DynInputStream = Box::new(ReadStream::new(body, slot));
        Ok(Ok(self.table.push(stream)?))
    }

    async fn write_via_stream(
        &mut self,
        fd: Resource<Descriptor>,
        offset: Filesize,
    ) -> FsResult<Resource<DynOutputStream>> {
        fs_try!(self.writer_at(&fd, Some(offset)).await?);
        self.output_stream(&fd)
    }

    async fn append_via_stream(&mut self, fd: Resource<Descriptor>) -> FsResult<Resource<DynOutputStream>> {
        fs_try!(self.writer_at(&fd, None).await?);
        self.output_stream(&fd)
    }

    async fn advise(&mut self, _: Resource<Descriptor>, _: Filesize, _: Filesize, _: Advice) -> FsResult<()> {
        Ok(Err(ErrorCode::Unsupported))
    }

    async fn sync_data(&mut self, fd: Resource<Descriptor>) -> FsResult<()> {
        self.commit(&fd).await
    }

    async fn sync(&mut self, fd: Resource<Descriptor>) -> FsResult<()> {
        self.commit(&fd).await
    }

    async fn get_flags(&mut self, fd: Resource<Descriptor>) -> FsResult<DescriptorFlags> {
        Ok(Ok(match &self.table.get(&fd)?.kind {
            Kind::Dir => DescriptorFlags::READ | DescriptorFlags::MUTATE_DIRECTORY,
            Kind::File(f) => {
                let mut flags = DescriptorFlags::empty();
                if f.read {
                    flags |= DescriptorFlags::READ;
                }
                if !matches!(f.writing, Writing::No) {
                    flags |= DescriptorFlags::WRITE;
                }
                flags
            }
        }))
    }

    async fn get_type(&mut self, fd: Resource<Descriptor>) -> FsResult<DescriptorType> {
        Ok(Ok(match self.table.get(&fd)?.kind {
            Kind::Dir => DescriptorType::Directory,
            Kind::File(_) => DescriptorType::RegularFile,
        }))
    }

    async fn set_size(&mut self, fd: Resource<Descriptor>, size: Filesize) -> FsResult<()> {
        let file = fs_try!(self.file_mut(&fd)?);
        match &file.writing {
            Writing::No => Ok(Err(ErrorCode::BadDescriptor)),
            Writing::Open(w) if w.position() == size => Ok(Ok(())),
            Writing::Later if file.stored_size() == size => Ok(Ok(())),
            // Truncating to nothing before writing: a fresh upload.
            Writing::Later if size == 0 => {
                let loc = file.loc.clone();
                let writer = fs_try!(self.start_writer(&loc, None, false).await);
                fs_try!(self.file_mut(&fd)?).writing = Writing::Open(writer);
                Ok(Ok(()))
            }
            _ => Ok(Err(ErrorCode::Unsupported)),
        }
    }

    async fn set_times(&mut self, _: Resource<Descriptor>, _: NewTimestamp, _: NewTimestamp) -> FsResult<()> {
        Ok(Err(ErrorCode::Unsupported))
    }

    async fn read(
        &mut self,
        fd: Resource<Descriptor>,
        length: Filesize,
        offset: Filesize,
    ) -> FsResult<(Vec<u8>, bool)> {
        let file = fs_try!(self.file_mut(&fd)?);
        if !file.read {
            return Ok(Err(ErrorCode::BadDescriptor));
        }
        let loc = file.loc.clone();
        let want = length.min(MAX_CALL_BYTES);
        let data = fs_try!(self.session.read_range(&loc, offset, want).await);
        let end = (data.len() as u64) < want;
        Ok(Ok((data, end)))
    }

    async fn write(&mut self, fd: Resource<Descriptor>, buffer: Vec<u8>, offset: Filesize) -> FsResult<Filesize> {
        fs_try!(self.writer_at(&fd, Some(offset)).await?);
        let mut data = Bytes::from(buffer);
        data.truncate(MAX_CALL_BYTES as usize);
        let held = fs_try!(self.session.storage().budget().reserve(data.len()).await);
        let len = data.len() as u64;
        let Writing::Open(writer) = &fs_try!(self.file_mut(&fd)?).writing else {
            return Ok(Err(ErrorCode::BadDescriptor));
        };
        fs_try!(writer.append(data, held).await);
        Ok(Ok(len))
    }

    async fn read_directory(&mut self, fd: Resource<Descriptor>) -> FsResult<Resource<DirEntries>> {
        let (volume, prefix) = fs_try!(self.dir(&fd)?);
        let Some(slot) = self.fs.listings.take() else {
            return Ok(Err(ErrorCode::Quota));
        };
        // The grant check: listing a directory needs read access to it.
        fs_try!(self.session.list(&volume, &prefix, false, None, 1).await);
        let pending = self.session.pending().and_then(|p| {
            let path = p.location.path.as_str();
            let rest = if prefix.is_empty() {
                path
            } else {
                path.strip_prefix(prefix.as_str())?.strip_prefix('/')?
            };
            (p.location.volume == volume).then(|| match rest.split_once('/') {
                Some((dir, _)) => DirectoryEntry {
                    type_: DescriptorType::Directory,
                    name: dir.to_owned(),
                },
                None => DirectoryEntry {
                    type_: DescriptorType::RegularFile,
                    name: rest.to_owned(),
                },
            })
        });
        let mut extra: Vec<DirectoryEntry> = pending.into_iter().collect();
        for (v, path) in &self.fs.created {
            let name = match path.rsplit_once('/') {
                Some((parent, name)) if *parent == prefix => name,
                None if prefix.is_empty() => path.as_str(),
                _ => continue,
            };
            if *v == volume && !extra.iter().any(|e| e.name == name) {
                extra.push(DirectoryEntry {
                    type_: DescriptorType::Directory,
                    name: name.to_owned(),
                });
            }
        }
        let entries = DirEntries {
            volume,
            prefix,
            buffered: VecDeque::new(),
            cursor: None,
            more: true,
            extra,
            _slot: slot,
        };
        Ok(Ok(self.table.push(entries)?))
    }

    async fn create_directory_at(&mut self, fd: Resource<Descriptor>, path: String) -> FsResult<()> {
        let (volume, base) = fs_try!(self.dir(&fd)?);
        let path = fs_try!(join(&base, &path));
        match fs_try!(self.lookup(&volume, &path, Access::Write).await) {
            Found::File(..) | Found::Dir => Ok(Err(ErrorCode::Exist)),
            Found::Missing(_) => {
                if self.fs.created.len() >= MAX_CREATED_DIRS {
                    return Ok(Err(ErrorCode::Quota));
                }
                self.fs.created.insert((volume, path));
                Ok(Ok(()))
            }
        }
    }

    async fn stat(&mut self, fd: Resource<Descriptor>) -> FsResult<DescriptorStat> {
        Ok(Ok(match &self.table.get(&fd)?.kind {
            Kind::Dir => dir_stat(),
            Kind::File(f) => match &f.writing {
                Writing::Open(w) => file_stat(w.position(), Some(now_ms())),
                Writing::Done(m) => file_stat(m.size, Some(m.modified_ms)),
                Writing::No | Writing::Later => match &f.stored {
                    Some(m) => file_stat(m.size, Some(m.modified_ms)),
                    None => file_stat(0, Some(now_ms())),
                },
            },
        }))
    }

    async fn stat_at(&mut self, fd: Resource<Descriptor>, _: PathFlags, path: String) -> FsResult<DescriptorStat> {
        let (volume, base) = fs_try!(self.dir(&fd)?);
        let path = fs_try!(join(&base, &path));
        Ok(match fs_try!(self.lookup(&volume, &path, Access::Read).await) {
            Found::File(_, m) => Ok(file_stat(m.size, Some(m.modified_ms))),
            Found::Dir => Ok(dir_stat()),
            Found::Missing(_) => Err(ErrorCode::NoEntry),
        })
    }

    async fn set_times_at(
        &mut self,
        _: Resource<Descriptor>,
        _: PathFlags,
        _: String,
        _: NewTimestamp,
        _: NewTimestamp,
    ) -> FsResult<()> {
        Ok(Err(ErrorCode::Unsupported))
    }

    async fn link_at(
        &mut self,
        _: Resource<Descriptor>,
        _: PathFlags,
        _: String,
        _: Resource<Descriptor>,
        _: String,
    ) -> FsResult<()> {
        Ok(Err(ErrorCode::Unsupported))
    }

    async fn open_at(
        &mut self,
        fd: Resource<Descriptor>,
        _: PathFlags,
        path: String,
        open: OpenFlags,
        flags: DescriptorFlags,
    ) -> FsResult<Resource<Descriptor>> {
        let (volume, base) = fs_try!(self.dir(&fd)?);
        let path = fs_try!(join(&base, &path));
        let write = flags.contains(DescriptorFlags::WRITE) || open.intersects(OpenFlags::CREATE | OpenFlags::TRUNCATE);
        let dir = |volume: String, path: String| Descriptor {
            volume,
            path,
            kind: Kind::Dir,
        };
        if open.contains(OpenFlags::DIRECTORY) {
            if write {
                return Ok(Err(ErrorCode::Invalid));
            }
            return Ok(match fs_try!(self.lookup(&volume, &path, Access::Read).await) {
                Found::Dir => Ok(self.table.push(dir(volume, path))?),
                Found::File(..) => Err(ErrorCode::NotDirectory),
                Found::Missing(_) => Err(ErrorCode::NoEntry),
            });
        }
        let read = flags.contains(DescriptorFlags::READ) || !write;
        if read && write {
            // Both rights, each checked as the files interface would.
            fs_try!(self.session.resolve(&volume, &path, Access::Read));
        }
        let access = if write { Access::Write } else { Access::Read };
        let (loc, stored) = match fs_try!(self.lookup(&volume, &path, access).await) {
            Found::Dir if write => return Ok(Err(ErrorCode::IsDirectory)),
            Found::Dir => return Ok(Ok(self.table.push(dir(volume, path))?)),
            Found::File(loc, meta) => (loc, Some(meta)),
            Found::Missing(loc) => (loc, None),
        };
        let exclusive = open.contains(OpenFlags::CREATE | OpenFlags::EXCLUSIVE);
        match (&stored, open.contains(OpenFlags::CREATE)) {
            (Some(_), _) if exclusive => return Ok(Err(ErrorCode::Exist)),
            (None, false) => return Ok(Err(ErrorCode::NoEntry)),
            _ => {}
        }
        if write && self.is_pending(&loc) {
            return Ok(Err(ErrorCode::ReadOnly));
        }
        let writing = if !write {
            Writing::No
        } else if open.contains(OpenFlags::TRUNCATE) || stored.is_none() {
            Writing::Open(fs_try!(self.start_writer(&loc, None, exclusive).await))
        } else {
            Writing::Later
        };
        let file = FileState {
            loc,
            read,
            stored,
            writing,
        };
        Ok(Ok(self.table.push(Descriptor {
            volume,
            path,
            kind: Kind::File(Box::new(file)),
        })?))
    }

    async fn readlink_at(&mut self, fd: Resource<Descriptor>, path: String) -> FsResult<String> {
        let (volume, base) = fs_try!(self.dir(&fd)?);
        let path = fs_try!(join(&base, &path));
        // There are no links: an existing path is not one.
        Ok(match fs_try!(self.lookup(&volume, &path, Access::Read).await) {
            Found::File(..) | Found::Dir => Err(ErrorCode::Invalid),
            Found::Missing(_) => Err(ErrorCode::NoEntry),
        })
    }

    async fn remove_directory_at(&mut self, fd: Resource<Descriptor>, path: String) -> FsResult<()> {
        let (volume, base) = fs_try!(self.dir(&fd)?);
        let path = fs_try!(join(&base, &path));
        let key = (volume.clone(), path.clone());
        match fs_try!(self.lookup(&volume, &path, Access::Delete).await) {
            Found::File(..) => Ok(Err(ErrorCode::NotDirectory)),
            Found::Missing(_) => Ok(Err(ErrorCode::NoEntry)),
            Found::Dir if path.is_empty() => Ok(Err(ErrorCode::Busy)),
            Found::Dir => {
                // Only a directory with nothing in it can go: one this
                // invocation created (a derived one has files).
                let listed = self.session.list(&volume, &path, false, None, 1).await;
                match listed {
                    Ok(page) if page.entries.is_empty() && self.fs.created.remove(&key) => Ok(Ok(())),
                    Ok(_) => Ok(Err(ErrorCode::NotEmpty)),
                    Err(e) => Ok(Err(e.into())),
                }
            }
        }
    }

    async fn rename_at(
        &mut self,
        fd: Resource<Descriptor>,
        old: String,
        new_fd: Resource<Descriptor>,
        new: String,
    ) -> FsResult<()> {
        let (volume, base) = fs_try!(self.dir(&fd)?);
        let (to_volume, to_base) = fs_try!(self.dir(&new_fd)?);
        let from = fs_try!(join(&base, &old));
        let to = fs_try!(join(&to_base, &new));
        // The rights files::rename needs: read and delete the source,
        // write the destination.
        fs_try!(self.session.resolve(&volume, &from, Access::Delete));
        let to_loc = fs_try!(self.session.resolve(&to_volume, &to, Access::Write));
        let from_loc = match fs_try!(self.lookup(&volume, &from, Access::Read).await) {
            Found::File(loc, _) => loc,
            Found::Dir => return Ok(Err(ErrorCode::Unsupported)),
            Found::Missing(_) => return Ok(Err(ErrorCode::NoEntry)),
        };
        if self.is_pending(&from_loc) || self.is_pending(&to_loc) {
            return Ok(Err(ErrorCode::ReadOnly));
        }
        if fs_try!(self.is_dir(&to_volume, &to).await) {
            return Ok(Err(ErrorCode::IsDirectory));
        }
        fs_try!(self.session.rename(&from_loc, &to_loc).await);
        Ok(Ok(()))
    }

    async fn symlink_at(&mut self, _: Resource<Descriptor>, _: String, _: String) -> FsResult<()> {
        Ok(Err(ErrorCode::Unsupported))
    }

    async fn unlink_file_at(&mut self, fd: Resource<Descriptor>, path: String) -> FsResult<()> {
        let (volume, base) = fs_try!(self.dir(&fd)?);
        let path = fs_try!(join(&base, &path));
        match fs_try!(self.lookup(&volume, &path, Access::Delete).await) {
            Found::Dir => Ok(Err(ErrorCode::IsDirectory)),
            Found::Missing(_) => Ok(Err(ErrorCode::NoEntry)),
            Found::File(loc, _) if self.is_pending(&loc) => Ok(Err(ErrorCode::ReadOnly)),
            Found::File(loc, _) => {
                fs_try!(self.session.delete(&loc).await);
                Ok(Ok(()))
            }
        }
    }

    async fn is_same_object(&mut self, a: Resource<Descriptor>, b: Resource<Descriptor>) -> wasmtime::Result<bool> {
        let (a, b) = (self.table.get(&a)?, self.table.get(&b)?);
        Ok(a.volume == b.volume && a.path == b.path && matches!(a.kind, Kind::Dir) == matches!(b.kind, Kind::Dir))
    }

    async fn metadata_hash(&mut self, fd: Resource<Descriptor>) -> FsResult<MetadataHashValue> {
        let d = self.table.get(&fd)?;
        Ok(Ok(identity(&d.volume, &d.path)))
    }

    async fn metadata_hash_at(
        &mut self,
        fd: Resource<Descriptor>,
        _: PathFlags,
        path: String,
    ) -> FsResult<MetadataHashValue> {
        let (volume, base) = fs_try!(self.dir(&fd)?);
        let path = fs_try!(join(&base, &path));
        Ok(match fs_try!(self.lookup(&volume, &path, Access::Read).await) {
            Found::File(..) | Found::Dir => Ok(identity(&volume, &path)),
            Found::Missing(_) => Err(ErrorCode::NoEntry),
        })
    }

    async fn drop(&mut self, fd: Resource<Descriptor>) -> wasmtime::Result<()> {
        let d = self.table.delete(fd)?;
        if let Kind::File(file) = d.kind
            && let Writing::Open(writer) = file.writing
            && let Err(e) = writer.finish().await
        {
            // Nothing can report it now: the file is not stored.
            tracing::warn!(plugin = &*self.plugin, "{}: not stored when closed: {e}", file.loc);
        }
        Ok(())
    }
}

impl fst::HostDirectoryEntryStream for Invocation {
    async fn read_directory_entry(&mut self, entries: Resource<DirEntries>) -> FsResult<Option<DirectoryEntry>> {
        let listing = self.table.get_mut(&entries)?;
        // A page can come back empty when grants filter it.
        while listing.buffered.is_empty() && listing.more {
            let page = fs_try!(
                self.session
                    .list(
                        &listing.volume,
                        &listing.prefix,
                        false,
                        listing.cursor.as_deref(),
                        DIR_PAGE
                    )
                    .await
            );
            let skip = if listing.prefix.is_empty() {
                0
            } else {
                listing.prefix.len() + 1
            };
            for entry in page.entries {
                let (path, type_, meta) = match entry {
                    // A folder marker is the directory itself, not an entry.
                    Entry::File { path, .. } if path.ends_with('/') => continue,
                    Entry::File { path, meta } => (path, DescriptorType::RegularFile, Some(meta)),
                    Entry::Dir { path } => (path, DescriptorType::Directory, None),
                };
                let name = path.get(skip..).unwrap_or(&path).trim_end_matches('/').to_owned();
                listing.extra.retain(|e| e.name != name);
                listing.buffered.push_back((DirectoryEntry { type_, name }, meta));
            }
            listing.more = page.next_cursor.is_some();
            listing.cursor = page.next_cursor;
        }
        let Some((entry, meta)) = listing
            .buffered
            .pop_front()
            .or_else(|| listing.extra.pop().map(|e| (e, None)))
        else {
            return Ok(Ok(None));
        };
        // Known to exist now: libc asks metadata-hash-at of it next.
        let volume = listing.volume.clone();
        let path = if listing.prefix.is_empty() {
            entry.name.clone()
        } else {
            format!("{}/{}", listing.prefix, entry.name)
        };
        let found = match meta {
            Some(meta) => self
                .session
                .storage()
                .location(&volume, &path)
                .ok()
                .map(|loc| Found::File(loc, meta)),
            None if entry.type_ == DescriptorType::Directory => Some(Found::Dir),
            None => None,
        };
        if let Some(found) = found {
            self.remember(&volume, &path, found);
        }
        Ok(Ok(Some(entry)))
    }

    async fn drop(&mut self, entries: Resource<DirEntries>) -> wasmtime::Result<()> {
        self.table.delete(entries)?;
        Ok(())
    }
}

impl wasi::filesystem::preopens::Host for Invocation {
    async fn get_directories(&mut self) -> wasmtime::Result<Vec<(Resource<Descriptor>, String)>> {
        let mut dirs = Vec::new();
        for volume in self.session.granted_volumes() {
            let name = format!("/{volume}");
            let fd = self.table.push(Descriptor {
                volume,
                path: String::new(),
                kind: Kind::Dir,
            })?;
            dirs.push((fd, name));
        }
        Ok(dirs)
    }
}
