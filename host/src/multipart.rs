//! Multipart uploads of the S3 endpoint, held until they complete: each
//! upload is a directory under `<data_dir>/multipart` with its settings
//! (`upload.json`) and its parts (`<n>.part`, with `<n>.json` beside),
//! outside every volume. Nothing of an upload is visible or stored under
//! its key before it completes; then the parts, in order, are staged and
//! judged whole as one upload. Uploads not completed within their lifetime
//! are removed by [`MultipartStore::sweep`].
//!
//! The directory is the node's own: an upload's parts and its completion
//! must reach the node that created it (a load balancer's sticky sessions).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;

/// Part numbers are 1..=10,000, as on S3.
pub const MAX_PARTS: i32 = 10_000;
/// Every part but the last is at least this big, as on S3.
pub const MIN_PART_BYTES: u64 = 5 << 20;
/// The largest part, as on S3.
pub const MAX_PART_BYTES: u64 = 5 << 30;
/// Uploads one principal may have open at once.
pub const MAX_OPEN_PER_PRINCIPAL: usize = 100;

/// What was declared when the upload was created.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UploadSettings {
    pub volume: String,
    pub key: String,
    pub principal: String,
    pub content_type: Option<String>,
    pub cache_control: Option<String>,
    pub metadata: Vec<(String, String)>,
    /// Milliseconds since the Unix epoch.
    pub created_ms: u64,
}

/// One stored part.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartInfo {
    pub number: i32,
    /// The part's MD5, hex, as S3 gives a part's ETag.
    pub etag: String,
    pub size: u64,
    pub modified_ms: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum MultipartError {
    #[error("there is no such multipart upload")]
    NoSuchUpload,
    #[error("part numbers are 1 to {MAX_PARTS}")]
    InvalidPartNumber,
    #[error("principal '{0}' has {MAX_OPEN_PER_PRINCIPAL} multipart uploads open; complete or abort some")]
    TooManyUploads(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("{0}")]
    InvalidPart(String),
    #[error("the parts must be listed in ascending order of their numbers")]
    InvalidPartOrder,
    #[error("part {0} is smaller than 5 MiB and is not the last")]
    EntityTooSmall(i32),
    #[error("reading the part: {0}")]
    Body(std::io::Error),
    #[error("multipart storage {}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> MultipartError + '_ {
    move |source| MultipartError::Io {
        path: path.to_owned(),
        source,
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

pub struct MultipartStore {
    dir: PathBuf,
    /// Serialises creation, so the per-principal count holds.
    creating: tokio::sync::Mutex<()>,
}

impl MultipartStore {
    pub fn open(dir: PathBuf) -> Result<MultipartStore, MultipartError> {
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        Ok(MultipartStore {
            dir,
            creating: tokio::sync::Mutex::new(()),
        })
    }

    /// An upload's directory; `None` for an id this store never gave (so a
    /// crafted id cannot name another path).
    fn upload_dir(&self, id: &str) -> Option<PathBuf> {
        (id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()))
            .then(|| self.dir.join(id))
    }

    pub async fn create(&self, settings: UploadSettings) -> Result<String, MultipartError> {
        let _turn = self.creating.lock().await;
        let open = self
            .uploads()
            .await?
            .into_iter()
            .filter(|(_, s)| s.principal == settings.principal)
            .count();
        if open >= MAX_OPEN_PER_PRINCIPAL {
            return Err(MultipartError::TooManyUploads(settings.principal));
        }
        let id = new_id();
        let dir = self.dir.join(&id);
        tokio::fs::create_dir(&dir).await.map_err(io(&dir))?;
        let file = dir.join("upload.json");
        let text = serde_json::to_vec(&settings).expect("settings serialise");
        tokio::fs::write(&file, text).await.map_err(io(&file))?;
        Ok(id)
    }

    /// The upload's settings, if it is open and for `volume`/`key`.
    pub async fn settings(&self, id: &str, volume: &str, key: &str) -> Result<UploadSettings, MultipartError> {
        let dir = self.upload_dir(id).ok_or(MultipartError::NoSuchUpload)?;
        let file = dir.join("upload.json");
        let text = match tokio::fs::read(&file).await {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(MultipartError::NoSuchUpload),
            Err(e) => return Err(io(&file)(e)),
        };
        let settings: UploadSettings =
            serde_json::from_slice(&text).map_err(|e| io(&file)(std::io::Error::other(e)))?;
        if settings.volume != volume || settings.key != key {
            return Err(MultipartError::NoSuchUpload);
        }
        Ok(settings)
    }

    /// Store part `number` from `body`, replacing an earlier one of that
    /// number; `room` is how many bytes the whole upload may still take.
    pub async fn put_part(
        &self,
        id: &str,
        number: i32,
        mut body: impl Stream<Item = std::io::Result<Bytes>> + Unpin,
        limit: u64,
    ) -> Result<PartInfo, MultipartError> {
        use md5::Digest;
        if !(1..=MAX_PARTS).contains(&number) {
            return Err(MultipartError::InvalidPartNumber);
        }
        let dir = self.upload_dir(id).ok_or(MultipartError::NoSuchUpload)?;
        let others: u64 = self
            .parts(id)
            .await?
            .iter()
            .filter(|p| p.number != number)
            .map(|p| p.size)
            .sum();
        let room = limit.saturating_sub(others).min(MAX_PART_BYTES);
        let temp = tempfile::Builder::new()
            .prefix(".part-")
            .tempfile_in(&dir)
            .map_err(io(&dir))?;
        let mut file = tokio::fs::File::from_std(temp.reopen().map_err(io(temp.path()))?);
        let mut md5 = md5::Md5::new();
        let mut size = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(MultipartError::Body)?;
            size += chunk.len() as u64;
            if size > room {
                return Err(MultipartError::TooLarge(format!(
                    "the upload would pass {limit} bytes (the volume's max_upload_mib) or a part 5 GiB"
                )));
            }
            md5.update(&chunk);
            file.write_all(&chunk).await.map_err(io(temp.path()))?;
        }
        file.flush().await.map_err(io(temp.path()))?;
        let info = PartInfo {
            number,
            etag: hex::encode(md5.finalize()),
            size,
            modified_ms: now_ms(),
        };
        let part = dir.join(format!("{number}.part"));
        let meta = dir.join(format!("{number}.json"));
        // An aborted upload loses its directory: nothing may be recreated.
        if !dir.join("upload.json").exists() {
            return Err(MultipartError::NoSuchUpload);
        }
        temp.persist(&part).map_err(|e| io(&part)(e.error))?;
        let text = serde_json::to_vec(&info).expect("part info serialises");
        tokio::fs::write(&meta, text).await.map_err(io(&meta))?;
        Ok(info)
    }

    /// The parts stored so far, by number.
    pub async fn parts(&self, id: &str) -> Result<Vec<PartInfo>, MultipartError> {
        let dir = self.upload_dir(id).ok_or(MultipartError::NoSuchUpload)?;
        let mut entries = match tokio::fs::read_dir(&dir).await {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(MultipartError::NoSuchUpload),
            Err(e) => return Err(io(&dir)(e)),
        };
        let mut parts = Vec::new();
        while let Some(entry) = entries.next_entry().await.map_err(io(&dir))? {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(number) = name.strip_suffix(".json").and_then(|n| n.parse::<i32>().ok()) else {
                continue;
            };
            let path = entry.path();
            if let Ok(text) = tokio::fs::read(&path).await
                && let Ok(info) = serde_json::from_slice::<PartInfo>(&text)
                && info.number == number
            {
                parts.push(info);
            }
        }
        parts.sort_by_key(|p| p.number);
        Ok(parts)
    }

    /// The parts a completion names, checked: ascending numbers, each
    /// stored with that ETag, all but the last at least 5 MiB. Returns the
    /// files to read, in order, and the total size.
    pub async fn assemble(&self, id: &str, named: &[(i32, String)]) -> Result<(Vec<PathBuf>, u64), MultipartError> {
        let dir = self.upload_dir(id).ok_or(MultipartError::NoSuchUpload)?;
        let stored = self.parts(id).await?;
        if named.is_empty() {
            return Err(MultipartError::InvalidPart(
                "a completion names at least one part".into(),
            ));
        }
        if named.windows(2).any(|w| w[0].0 >= w[1].0) {
            return Err(MultipartError::InvalidPartOrder);
        }
        let mut files = Vec::new();
        let mut total = 0;
        for (i, (number, etag)) in named.iter().enumerate() {
            let part = stored
                .iter()
                .find(|p| p.number == *number)
                .ok_or_else(|| MultipartError::InvalidPart(format!("part {number} was not uploaded")))?;
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
            files.push(dir.join(format!("{number}.part")));
        }
        Ok((files, total))
    }

    /// Remove one part (a part that failed its digest check).
    pub async fn remove_part(&self, id: &str, number: i32) -> Result<(), MultipartError> {
        let dir = self.upload_dir(id).ok_or(MultipartError::NoSuchUpload)?;
        for name in [format!("{number}.json"), format!("{number}.part")] {
            let path = dir.join(name);
            match tokio::fs::remove_file(&path).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io(&path)(e)),
            }
        }
        Ok(())
    }

    /// Remove an upload and its parts.
    pub async fn remove(&self, id: &str) -> Result<(), MultipartError> {
        let dir = self.upload_dir(id).ok_or(MultipartError::NoSuchUpload)?;
        match tokio::fs::remove_dir_all(&dir).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(MultipartError::NoSuchUpload),
            Err(e) => Err(io(&dir)(e)),
        }
    }

    /// Every open upload: id and settings, oldest first.
    pub async fn uploads(&self) -> Result<Vec<(String, UploadSettings)>, MultipartError> {
        let mut entries = tokio::fs::read_dir(&self.dir).await.map_err(io(&self.dir))?;
        let mut out = Vec::new();
        while let Some(entry) = entries.next_entry().await.map_err(io(&self.dir))? {
            let id = entry.file_name().to_string_lossy().into_owned();
            if self.upload_dir(&id).is_none() {
                continue;
            }
            let file = entry.path().join("upload.json");
            if let Ok(text) = tokio::fs::read(&file).await
                && let Ok(settings) = serde_json::from_slice::<UploadSettings>(&text)
            {
                out.push((id, settings));
            }
        }
        out.sort_by(|a, b| (a.1.created_ms, &a.0).cmp(&(b.1.created_ms, &b.0)));
        Ok(out)
    }

    /// Remove the uploads created longer than `lifetime` ago; how many.
    pub async fn sweep(&self, lifetime: Duration) -> Result<usize, MultipartError> {
        let cutoff = now_ms().saturating_sub(lifetime.as_millis() as u64);
        let mut removed = 0;
        for (id, settings) in self.uploads().await? {
            if settings.created_ms < cutoff && self.remove(&id).await.is_ok() {
                removed += 1;
            }
        }
        Ok(removed)
    }
}

/// A new upload id: 32 lower-case hex digits, unique on this node.
fn new_id() -> String {
    use sha2::Digest;
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let mut hash = sha2::Sha256::new();
    hash.update(now_ms().to_le_bytes());
    hash.update(std::process::id().to_le_bytes());
    hash.update(NEXT.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    if let Ok(nanos) = SystemTime::now().duration_since(UNIX_EPOCH) {
        hash.update(nanos.subsec_nanos().to_le_bytes());
    }
    hex::encode(&hash.finalize()[..16])
}

/// The parts' bytes, one file after another, as a body to stage.
pub fn read_parts(files: Vec<PathBuf>) -> impl Stream<Item = std::io::Result<Bytes>> + Unpin + Send + 'static {
    Box::pin(
        futures_util::stream::iter(files)
            .then(|path| async move {
                let file = tokio::fs::File::open(&path).await?;
                Ok::<_, std::io::Error>(tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024))
            })
            .map(|opened| match opened {
                Ok(stream) => stream.left_stream(),
                Err(e) => futures_util::stream::once(async move { Err(e) }).right_stream(),
            })
            .flatten(),
    )
}
