//! The object store trait and its backends.
//!
//! A store holds the objects of one volume, addressed by keys relative to the
//! volume's location (a directory, or a bucket plus prefix). Keys reaching a
//! store have already passed the path rules in [`crate::path`]. Stores know
//! nothing of plugins, grants or the metadata cache.

use std::pin::Pin;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::io::AsyncRead;

use crate::error::{StorageError, StorageResult};

pub mod local;
pub mod memory;
pub mod s3;

/// Leftovers of a write untouched this long were left by a process that
/// died mid-write. Younger ones may be another process's writes in progress
/// (`silo serve` and a CLI command share volumes).
pub const ABANDONED_AFTER: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

pub use crate::budget::Held;
pub use local::LocalStore;
pub use memory::MemoryStore;
pub use s3::{S3Settings, S3Store};

/// What a backend knows of one object.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ObjectMeta {
    /// Its length in bytes.
    pub size: u64,
    /// Opaque version tag; a new write always produces a new one.
    pub etag: String,
    /// Its type, as stored.
    pub content_type: String,
    /// Milliseconds since the Unix epoch.
    pub modified_ms: u64,
    /// `Cache-Control`, as stored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_control: Option<String>,
    /// The writer's metadata (`x-amz-meta-*`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub metadata: Vec<(String, String)>,
    /// Other headers declared with it.
    #[serde(skip_serializing_if = "Headers::is_empty")]
    pub headers: Headers,
}

/// HTTP headers a client declared with an object, served back with it as
/// given (the storage core may still serve active content as an
/// attachment).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Headers {
    /// `Content-Disposition`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_disposition: Option<String>,
    /// `Content-Encoding`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_encoding: Option<String>,
    /// An HTTP date, as sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
    /// The checksum the writer sent and Silo verified (S3's
    /// `x-amz-checksum-*`), given back to a reader who asks for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum: Option<Box<Checksum>>,
    /// The sizes of the parts it was completed from, in order, for an
    /// object a multipart upload made (S3 serves a part by its number).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parts: Option<Box<[u64]>>,
}

/// A checksum of an object as S3 keeps one: the algorithm a client chose,
/// the value it sent (verified against the bytes), and whether it covers
/// the whole object or is composed of its parts' checksums.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Checksum {
    /// `CRC32`, `CRC32C`, `CRC64NVME`, `SHA1` or `SHA256`.
    pub algorithm: String,
    /// Base64 of the digest; for a composite one, then `-` and the number
    /// of parts.
    pub value: String,
    /// `FULL_OBJECT` or `COMPOSITE`.
    pub kind: String,
}

/// The base64 checksum of `bytes` by `algorithm` (`CRC32`, `CRC32C`,
/// `CRC64NVME`, `SHA1`, `SHA256`) as S3 writes it: the digest's bytes,
/// big-endian for the CRCs. `None` for another algorithm.
pub fn checksum_of(algorithm: &str, bytes: &[u8]) -> Option<String> {
    use base64::Engine;
    use crc_fast::CrcAlgorithm;
    let digest: Vec<u8> = match algorithm {
        "CRC32" => (crc_fast::checksum(CrcAlgorithm::Crc32IsoHdlc, bytes) as u32)
            .to_be_bytes()
            .to_vec(),
        "CRC32C" => (crc_fast::checksum(CrcAlgorithm::Crc32Iscsi, bytes) as u32)
            .to_be_bytes()
            .to_vec(),
        "CRC64NVME" => crc_fast::checksum(CrcAlgorithm::Crc64Nvme, bytes)
            .to_be_bytes()
            .to_vec(),
        "SHA1" => {
            use sha1::Digest;
            sha1::Sha1::digest(bytes).to_vec()
        }
        "SHA256" => {
            use sha2::Digest;
            sha2::Sha256::digest(bytes).to_vec()
        }
        _ => return None,
    };
    Some(base64::engine::general_purpose::STANDARD.encode(digest))
}

impl Headers {
    /// Whether none is declared.
    pub fn is_empty(&self) -> bool {
        self.content_disposition.is_none()
            && self.content_encoding.is_none()
            && self.expires.is_none()
            && self.checksum.is_none()
            && self.parts.is_none()
    }

    /// Each declared header: its name and value.
    pub fn each(&self) -> impl Iterator<Item = (&'static str, &str)> {
        [
            ("content-disposition", self.content_disposition.as_deref()),
            ("content-encoding", self.content_encoding.as_deref()),
            ("expires", self.expires.as_deref()),
        ]
        .into_iter()
        .filter_map(|(name, value)| value.map(|v| (name, v)))
    }
}

/// A precondition on a write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    /// Fail with `AlreadyExists` if the key exists (S3 `If-None-Match: *`).
    CreateOnly,
    /// Fail with `PreconditionFailed` unless the current etag is this one
    /// (S3 `If-Match`); a missing object also fails.
    IfMatch(String),
}

/// How to store an object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PutOptions {
    /// The type to store.
    pub content_type: String,
    /// `Cache-Control` to store.
    pub cache_control: Option<String>,
    /// The writer's metadata.
    pub metadata: Vec<(String, String)>,
    /// `Content-Disposition` to serve the object with (set by the storage
    /// core for active content; kept by backends that can).
    pub content_disposition: Option<String>,
    /// Headers the client declared, kept with the object.
    pub headers: Headers,
    /// Store only if this holds.
    pub condition: Option<Condition>,
    /// The ETag the object gets where the backend makes its own (local
    /// and memory volumes), as the writer computed it while the bytes
    /// passed: the MD5 of the bytes, or [`multipart_etag`] of the parts.
    /// `None`: the backend hashes the bytes as it writes them. S3 volumes
    /// keep the backend's, which S3 makes the same way.
    pub etag: Option<String>,
}

/// An ETag for [`PutOptions::etag`] where none will be asked for (the
/// parts of a multipart upload, kept in scratch space): the backend need
/// not hash the bytes.
pub const NO_ETAG: &str = "-";

/// Whether `etag` has a form S3 gives: a hex MD5, or one and a part count.
pub fn is_s3_etag(etag: &str) -> bool {
    let (md5, parts) = match etag.split_once('-') {
        Some((md5, parts)) => (md5, Some(parts)),
        None => (etag, None),
    };
    md5.len() == 32
        && md5.bytes().all(|b| b.is_ascii_hexdigit())
        && parts.is_none_or(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

/// The ETag S3 gives an object stored in one request: the hex MD5 of its
/// bytes.
pub fn md5_etag(bytes: &[u8]) -> String {
    use md5::Digest;
    hex::encode(md5::Md5::digest(bytes))
}

/// The ETag S3 gives an object completed from parts whose ETags (hex
/// MD5s) are `parts`, in order: the MD5 of their digests, then `-` and
/// their number. `None` if one is not a hex MD5.
pub fn multipart_etag<'a>(parts: impl IntoIterator<Item = &'a str>) -> Option<String> {
    use md5::Digest;
    let mut md5 = md5::Md5::new();
    let mut count = 0;
    for part in parts {
        let digest = hex::decode(part.trim_matches('"')).ok().filter(|d| d.len() == 16)?;
        md5.update(&digest);
        count += 1;
    }
    Some(format!("{}-{count}", hex::encode(md5.finalize())))
}

/// A byte range: `length` bytes from `offset` (fewer at the end).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    /// The first byte.
    pub offset: u64,
    /// How many bytes.
    pub length: u64,
}

/// An object's content as it arrives from the backend.
pub type ByteStream = Pin<Box<dyn AsyncRead + Send>>;

/// One page of a flat key listing.
#[derive(Debug, Default)]
pub struct KeyPage {
    /// Keys in the backend's listing order, with their metadata.
    pub objects: Vec<(String, ObjectMeta)>,
    /// Pass as `after` to continue; `None` on the last page.
    pub next: Option<String>,
}

/// One volume's backend.
#[async_trait]
pub trait ObjectStore: Send + Sync + 'static {
    /// A short description for messages, e.g. `local:/srv/silo/public`.
    fn describe(&self) -> String;

    /// Metadata of one object; `NotFound` if it does not exist.
    async fn head(&self, key: &str) -> StorageResult<ObjectMeta>;

    /// An object's content (or a range of it) with its metadata. A range
    /// starting past the end yields an empty stream.
    async fn get(&self, key: &str, range: Option<ByteRange>) -> StorageResult<(ObjectMeta, ByteStream)>;

    /// Store a whole object held in memory.
    async fn put(&self, key: &str, data: Bytes, options: &PutOptions) -> StorageResult<ObjectMeta>;

    /// Start a streamed write. Nothing is visible until
    /// [`ObjectUpload::finish`]; dropping the upload discards it.
    async fn start_upload(&self, key: &str, options: PutOptions) -> StorageResult<Box<dyn ObjectUpload>>;

    /// Store the `size` bytes of the file at `path` (a staged upload,
    /// left where it is). A backend that would buffer a streamed write in
    /// memory sends the file instead; the default streams it through
    /// [`ObjectStore::start_upload`].
    async fn put_file(
        &self,
        key: &str,
        path: &std::path::Path,
        _size: u64,
        options: &PutOptions,
    ) -> StorageResult<ObjectMeta> {
        use tokio::io::AsyncReadExt;
        let mut file = tokio::fs::File::open(path)
            .await
            .map_err(|e| StorageError::unavailable(format!("opening {}: {e}", path.display())))?;
        let mut upload = self.start_upload(key, options.clone()).await?;
        loop {
            let mut chunk = bytes::BytesMut::with_capacity(256 * 1024);
            let n = file
                .read_buf(&mut chunk)
                .await
                .map_err(|e| StorageError::unavailable(format!("reading {}: {e}", path.display())))?;
            if n == 0 {
                break;
            }
            upload.write(chunk.freeze(), crate::budget::Held::default()).await?;
        }
        upload.finish().await
    }

    /// Give `key` the ETag S3 would, the MD5 of its bytes, where the
    /// backend does not know it (a file put in a local volume's directory
    /// by hand): its metadata then. `None`: this backend's ETags are
    /// always made from the bytes, or the object changed while it was read.
    async fn rehash(&self, key: &str) -> StorageResult<Option<ObjectMeta>> {
        let _ = key;
        Ok(None)
    }

    /// Delete an object; `NotFound` if it does not exist.
    async fn delete(&self, key: &str) -> StorageResult<()>;

    /// Copy an object within this store. `options.condition` applies to the
    /// destination.
    async fn copy(&self, from: &str, to: &str, options: &PutOptions) -> StorageResult<ObjectMeta>;

    /// Keys starting with `prefix` (a plain string prefix) that follow
    /// `after` in the backend's listing order, at most `limit` of them. The
    /// order is byte order for `local`, `memory` and AWS S3; some
    /// S3-compatible servers (SeaweedFS) list directory by directory. Paging
    /// returns every key once either way; nothing above relies on the order.
    async fn list(&self, prefix: &str, after: Option<&str>, limit: usize) -> StorageResult<KeyPage>;

    /// Split the keys under `prefix` (empty, or ending in '/') into the
    /// objects directly under it and the sub-prefixes holding the rest, so
    /// that a full scan can list the sub-prefixes in parallel. `None`: this
    /// backend is scanned with [`ObjectStore::list`] alone.
    async fn split(&self, prefix: &str) -> StorageResult<Option<Split>> {
        let _ = prefix;
        Ok(None)
    }

    /// A URL that reads one object straight from the backend, without
    /// Silo, until `expires_in` has passed; `None` if the backend has no
    /// such URLs. `presented` is how the response must present the object.
    async fn presign_get(
        &self,
        key: &str,
        expires_in: std::time::Duration,
        presented: &Presented,
    ) -> StorageResult<Option<String>> {
        let _ = (key, expires_in, presented);
        Ok(None)
    }

    /// Remove what interrupted writes left in the backend and nothing can
    /// see (S3: multipart uploads under this store's prefix started more
    /// than `older_than` ago, but those named in `open`); how many.
    async fn sweep_abandoned(
        &self,
        older_than: std::time::Duration,
        open: &std::collections::HashSet<String>,
    ) -> StorageResult<u64> {
        let _ = (older_than, open);
        Ok(0)
    }

    /// Start one of the backend's own multipart uploads on `key`, whose
    /// parts the client's go straight into: nothing is visible under `key`
    /// until [`ObjectStore::complete_parts`], and
    /// [`ObjectStore::abort_parts`] leaves nothing. The object will have
    /// `options`. `None`: this backend has no such uploads.
    async fn create_parts(&self, key: &str, options: &PutOptions) -> StorageResult<Option<String>> {
        let _ = (key, options);
        Ok(None)
    }

    /// Store part `number` of the backend upload `upload` of `key` from
    /// `body`, which holds exactly `size` bytes; the backend's ETag of it.
    async fn put_part(&self, key: &str, upload: &str, number: i32, body: PartBody, size: u64) -> StorageResult<String> {
        let _ = (key, upload, number, body, size);
        Err(StorageError::Unsupported(
            "this backend has no multipart uploads".into(),
        ))
    }

    /// Make `key` the concatenation of the backend upload's `parts` (by
    /// number, with the backend's ETags), `size` bytes in all, holding
    /// `options.condition`.
    async fn complete_parts(
        &self,
        key: &str,
        upload: &str,
        parts: &[(i32, String)],
        size: u64,
        options: &PutOptions,
    ) -> StorageResult<ObjectMeta> {
        let _ = (key, upload, parts, size, options);
        Err(StorageError::Unsupported(
            "this backend has no multipart uploads".into(),
        ))
    }

    /// Drop a backend upload and its parts; one already gone is no error.
    async fn abort_parts(&self, key: &str, upload: &str) -> StorageResult<()> {
        let _ = (key, upload);
        Ok(())
    }

    /// A store beside this volume's objects, reachable by every node that
    /// reaches the volume, for bytes that are not objects yet (the parts
    /// of multipart uploads). It lives under [`SCRATCH`], which this store
    /// neither lists nor accepts as a key. `None`: the backend is the
    /// node's own, and so is its scratch space.
    fn scratch(&self) -> Option<std::sync::Arc<dyn ObjectStore>> {
        None
    }
}

/// The bytes of one part sent to a backend, as they arrive.
pub type PartBody = std::pin::Pin<Box<dyn futures_util::Stream<Item = std::io::Result<Bytes>> + Send>>;

/// The first segment reserved in every volume for Silo's own bytes.
pub const SCRATCH: &str = ".silo-tmp";

/// Whether `key` lies under [`SCRATCH`].
pub fn is_scratch(key: &str) -> bool {
    key == SCRATCH || key.strip_prefix(SCRATCH).is_some_and(|rest| rest.starts_with('/'))
}

/// Response headers a presigned URL makes the backend send.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Presented {
    /// `response-content-type`.
    pub content_type: Option<String>,
    /// `response-content-disposition`.
    pub content_disposition: Option<String>,
    /// `response-cache-control`.
    pub cache_control: Option<String>,
}

/// The objects directly under a prefix, and its sub-prefixes.
pub type Split = (Vec<(String, ObjectMeta)>, Vec<String>);

/// A streamed write in progress.
#[async_trait]
pub trait ObjectUpload: Send {
    /// Append a chunk. `held` is what the caller reserved of the write
    /// budget for these bytes (possibly nothing). A backend that keeps
    /// bytes in memory reserves them itself, never waiting for room while
    /// it holds any (an S3 upload reserves each part whole); `held` is
    /// let go.
    async fn write(&mut self, chunk: Bytes, held: crate::budget::Held) -> StorageResult<()>;
    /// Make the object visible and return its metadata.
    async fn finish(self: Box<Self>) -> StorageResult<ObjectMeta>;
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    millis(std::time::SystemTime::now())
}

/// Milliseconds since the Unix epoch at `time` (0 before it).
pub(crate) fn millis(time: std::time::SystemTime) -> u64 {
    time.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The content type for a path when none is declared.
pub fn guess_content_type(path: &str) -> String {
    mime_guess::from_path(path)
        .first_raw()
        .unwrap_or("application/octet-stream")
        .to_owned()
}

/// Read a whole stream into memory, refusing more than `limit` bytes.
pub(crate) async fn read_to_end(mut body: ByteStream, limit: u64) -> StorageResult<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let mut out = Vec::new();
    let n = (&mut body)
        .take(limit + 1)
        .read_to_end(&mut out)
        .await
        .map_err(|e| StorageError::unavailable(format!("reading the object: {e}")))?;
    if n as u64 > limit {
        return Err(StorageError::TooLarge);
    }
    Ok(out)
}
