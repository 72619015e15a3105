//! The upload pipeline: stage a file, let each matching plugin judge it in a
//! fresh sandbox, then store it, or discard it and everything derived from it.
//!
//! The upload is staged outside every volume and shown at its destination
//! only to the plugins judging it; nobody else can see it until every plugin
//! has accepted it. A plugin that rejects, fails or exceeds a limit rejects
//! the upload (fail closed), and the files the pipeline wrote are deleted.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use crate::audit::Actor;
use crate::error::StorageError;
use crate::runtime::{InvokeError, InvokeLimits, Outcome, PluginComponent, Runtime, Upload};
use crate::store::{ByteRange, Condition, ObjectMeta, PutOptions};
use crate::vfs::{Grant, Location, PendingUpload, Quota, Session, Staged, Storage};

/// One configured plugin, loaded.
pub struct Stage {
    pub component: PluginComponent,
    pub config: crate::config::PluginConfig,
    pub grants: Arc<[Grant]>,
    pub settings: Vec<(String, String)>,
}

impl Stage {
    pub fn limits(&self) -> InvokeLimits {
        InvokeLimits {
            memory_bytes: (self.config.limits.memory_mib << 20) as usize,
            time: std::time::Duration::from_millis(self.config.limits.time_ms),
        }
    }

    pub fn quota(&self) -> Quota {
        let l = self.config.limits;
        Quota {
            bytes_written: l.bytes_written,
            objects_written: l.objects_written,
            max_object_bytes: l.max_object_bytes,
        }
    }
}

/// The result of one upload, as `silo run` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct UploadReport {
    /// How it was judged.
    pub status: Status,
    /// The uploaded file.
    pub file: FileReport,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// Why it was refused.
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// The plugin that refused it.
    pub rejected_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// What failed, for an error.
    pub error: Option<ErrorReport>,
    /// The files plugins wrote for it.
    pub derivatives: Vec<Derivative>,
    /// Each plugin that ran, in order.
    pub plugins: Vec<PluginRun>,
    /// Who sent the upload, where the door it came through knows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub principal: Option<String>,
    /// The request's id in the audit trail.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
/// How an upload was judged.
pub enum Status {
    /// Stored.
    Accepted,
    /// Refused by a plugin or the content policy; nothing stored.
    Rejected,
    /// Not judged (a plugin or the storage failed); nothing stored.
    Error,
}

#[derive(Debug, Clone, Default, Serialize)]
/// The uploaded file.
pub struct FileReport {
    /// The volume.
    pub volume: String,
    /// Its path.
    pub path: String,
    /// Its size.
    pub size: u64,
    /// Its type.
    pub content_type: String,
    /// Set once stored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// The checksum the client sent and Silo verified, kept with it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checksum: Option<crate::store::Checksum>,
}

#[derive(Debug, Clone, Default, Serialize)]
/// What failed.
pub struct ErrorReport {
    /// A short code (`time-limit`, `not-found`, …).
    pub code: String,
    /// The message.
    pub message: String,
    /// The storage error behind it, where there is one (what
    /// [`UploadReport::outcome`] goes by).
    #[serde(skip)]
    pub cause: Option<StorageError>,
}

impl UploadReport {
    /// The report of an upload that could not be judged at all.
    pub fn failed(loc: &Location, error: StorageError) -> UploadReport {
        let file = FileReport {
            volume: loc.volume.clone(),
            path: loc.path.to_string(),
            ..Default::default()
        };
        UploadReport {
            error: Some(ErrorReport {
                code: error.code().into(),
                message: error.to_string(),
                cause: Some(error),
            }),
            ..UploadReport::of(Status::Error, file)
        }
    }

    /// A report of `file` with `status`, and nothing else said yet.
    pub(crate) fn of(status: Status, file: FileReport) -> UploadReport {
        UploadReport {
            status,
            file,
            reason: None,
            rejected_by: None,
            error: None,
            derivatives: Vec::new(),
            plugins: Vec::new(),
            principal: None,
            request_id: None,
        }
    }
}

/// A file a plugin wrote for this upload.
#[derive(Debug, Clone, Serialize)]
pub struct Derivative {
    /// The volume.
    pub volume: String,
    /// Its path.
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// The style it was derived for, if any.
    pub style: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// Its width, for an image.
    pub width: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// Its height, for an image.
    pub height: Option<u32>,
    /// Its size.
    pub size: u64,
    /// Its ETag.
    pub etag: String,
    /// Its type.
    pub content_type: String,
    /// The plugin that wrote it.
    pub plugin: String,
}

#[derive(Debug, Clone, Serialize)]
/// One plugin's run.
pub struct PluginRun {
    /// The plugin.
    pub name: String,
    /// `accept`, `reject`, or the error's code.
    pub verdict: String,
    /// How long it ran, ms.
    pub ms: f64,
}

/// Uploads up to this size are staged in memory (a bound on what a few
/// hundred concurrent uploads hold), larger ones in a file.
pub const MEMORY_STAGE_BYTES: usize = 256 * 1024;

/// Stage an upload as it arrives, hashing it for a provisional etag: in
/// memory while it is small, else in a file in the staging directory
/// (outside every volume). `None`, with nothing kept, once the body is
/// over `limit` bytes.
///
/// The body comes as the chunks it arrived in (an HTTP body's frames): a
/// small upload is copied once, into a buffer of its own size, so it
/// holds no more memory than it has bytes.
pub(crate) async fn stage_chunks(
    staging_dir: &Path,
    mut body: impl futures_util::Stream<Item = std::io::Result<bytes::Bytes>> + Unpin,
    content_type: &str,
    limit: u64,
) -> Result<Option<(Staged, ObjectMeta, Digests)>, crate::SiloError> {
    use futures_util::StreamExt;
    use tokio::io::AsyncWriteExt;
    let local = |source: std::io::Error| crate::SiloError::Io {
        path: staging_dir.to_owned(),
        source,
    };
    let mut hasher = Hasher::default();
    let mut head: Vec<bytes::Bytes> = Vec::new();
    let mut size = 0u64;
    let mut ended = false;
    while size <= MEMORY_STAGE_BYTES as u64 {
        let Some(chunk) = body.next().await else {
            ended = true;
            break;
        };
        let chunk = chunk.map_err(crate::SiloError::Source)?;
        size += chunk.len() as u64;
        head.push(chunk);
    }
    if size > limit {
        return Ok(None);
    }
    if ended {
        let data = bytes::Bytes::from(head.concat());
        hasher.update(&data);
        let (meta, digests) = hasher.staged(size, content_type);
        return Ok(Some((Staged::Memory(data), meta, digests)));
    }
    tokio::fs::create_dir_all(staging_dir).await.map_err(local)?;
    let temp = tempfile::NamedTempFile::new_in(staging_dir)
        .map_err(local)?
        .into_temp_path();
    let mut file = tokio::fs::File::create(&temp).await.map_err(local)?;
    for chunk in head {
        hasher.update(&chunk);
        file.write_all(&chunk).await.map_err(local)?;
    }
    // Dropping `temp` on any early return removes the partial file.
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(crate::SiloError::Source)?;
        size += chunk.len() as u64;
        if size > limit {
            return Ok(None);
        }
        hasher.update(&chunk);
        file.write_all(&chunk).await.map_err(local)?;
    }
    file.flush().await.map_err(local)?;
    let (meta, digests) = hasher.staged(size, content_type);
    Ok(Some((Staged::File(temp), meta, digests)))
}

/// The SHA-256, hex, of `files` one after another, each read to exactly
/// its size.
pub(crate) fn hash_files(files: &[(std::path::PathBuf, u64)]) -> std::io::Result<String> {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    for (path, size) in files {
        let mut file = std::fs::File::open(path)?;
        let mut left = *size;
        while left > 0 {
            let want = buffer.len().min(left as usize);
            let got = file.read(&mut buffer[..want])?;
            if got == 0 {
                return Err(std::io::Error::other(format!(
                    "{} holds {} bytes, not {size}",
                    path.display(),
                    size - left
                )));
            }
            hasher.update(&buffer[..got]);
            left -= got as u64;
        }
        if file.read(&mut buffer[..1])? != 0 {
            return Err(std::io::Error::other(format!(
                "{} holds more than {size} bytes",
                path.display()
            )));
        }
    }
    Ok(hex::encode(hasher.finalize()))
}

/// The digests of a staged upload, hex.
pub(crate) struct Digests {
    /// Its SHA-256, for the audit trail.
    pub sha256: String,
    /// Its MD5: the ETag S3 gives it.
    pub md5: String,
}

/// Both digests of a body, taken in the one pass that stages it.
#[derive(Default)]
struct Hasher {
    sha256: sha2::Sha256,
    md5: md5::Md5,
}

impl Hasher {
    fn update(&mut self, bytes: &[u8]) {
        use sha2::Digest;
        self.sha256.update(bytes);
        self.md5.update(bytes);
    }

    /// The staged upload's provisional metadata, and its digests.
    fn staged(self, size: u64, content_type: &str) -> (ObjectMeta, Digests) {
        use sha2::Digest;
        let digests = Digests {
            sha256: hex::encode(self.sha256.finalize()),
            md5: hex::encode(self.md5.finalize()),
        };
        (staged_meta(size, &digests.sha256, content_type), digests)
    }
}

/// A staged upload's provisional metadata, from its SHA-256 in hex.
pub(crate) fn staged_meta(size: u64, sha256: &str, content_type: &str) -> ObjectMeta {
    ObjectMeta {
        size,
        etag: format!("staged-{}", &sha256[..24]),
        content_type: content_type.to_owned(),
        modified_ms: crate::store::now_ms(),
        cache_control: None,
        metadata: Vec::new(),
        headers: Default::default(),
    }
}

/// Run the pipeline over a staged upload and store it if accepted.
pub(crate) async fn run(
    storage: &Arc<Storage>,
    runtime: &Runtime,
    stages: &[Stage],
    pending: PendingUpload,
) -> UploadReport {
    let loc = pending.location.clone();
    let actor = pending
        .actor
        .clone()
        .unwrap_or_else(|| Actor::request(crate::audit::HOST))
        .storing(pending.sha256.clone());
    let file = FileReport {
        volume: loc.volume.clone(),
        path: loc.path.to_string(),
        size: pending.meta.size,
        content_type: pending.meta.content_type.clone(),
        ..Default::default()
    };
    let mut report = UploadReport {
        principal: pending.actor.as_ref().map(|a| a.principal.clone()),
        request_id: Some(actor.request_id.clone()),
        ..UploadReport::of(Status::Accepted, file)
    };
    // A folder given bytes, and a write whose condition fails, are not
    // judged at all.
    let unstorable = |mut report: UploadReport, e: StorageError| {
        report.status = Status::Error;
        report.error = Some(ErrorReport {
            code: e.code().into(),
            message: format!("storing {loc}: {e}"),
            cause: Some(e),
        });
        report
    };
    if let Err(e) = loc.path.check_size(pending.meta.size) {
        return refused(storage, &actor, &pending, unstorable(report, e)).await;
    }
    // Write-xor-execute comes first: no plugin runs on what may not be
    // stored.
    if let Err(e) = judge_by_policy(storage, &pending).await {
        report.status = Status::Rejected;
        report.reason = Some(e.to_string());
        report.rejected_by = Some(POLICY.into());
        return refused(storage, &actor, &pending, report).await;
    }
    if let Some(condition) = &pending.condition
        && let Err(e) = check_condition(storage, &loc, condition).await
    {
        return refused(storage, &actor, &pending, unstorable(report, e)).await;
    }
    let mut written: Vec<(Location, ObjectMeta, String)> = Vec::new();
    for stage in stages.iter().filter(|s| s.config.handles(&pending.meta.content_type)) {
        let session = Session::new(storage.clone(), Some(stage.grants.clone()), stage.quota())
            .with_pending(pending.clone())
            .with_actor(actor.plugin(&stage.config.name));
        let usage = session.usage();
        let upload = Upload {
            file: (&loc).into(),
            info: (&pending.meta).into(),
            settings: stage.settings.clone(),
        };
        let started = Instant::now();
        let result = runtime
            .on_upload(&stage.component, session, stage.limits(), upload)
            .await;
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        let name = stage.config.name.clone();
        let outcome = match &result {
            Ok(Outcome::Accept(_)) => "accept",
            Ok(Outcome::Reject(_)) => "reject",
            Err(e) => e.code(),
        };
        storage.metrics().plugin(&name, "on-upload", outcome);
        let own: Vec<(Location, ObjectMeta)> =
            std::mem::take(&mut usage.lock().unwrap_or_else(|p| p.into_inner()).written);
        let first_new = written.len();
        written.extend(own.into_iter().map(|(l, m)| (l, m, name.clone())));
        match result {
            Ok(Outcome::Accept(claims)) => {
                report.plugins.push(PluginRun {
                    name: name.clone(),
                    verdict: "accept".into(),
                    ms,
                });
                // Report what the host saw written, annotated with the
                // plugin's description of it.
                for (l, m, _) in &written[first_new..] {
                    let claim = claims
                        .iter()
                        .find(|c| c.file.volume == l.volume && c.file.path == l.path.as_str());
                    // A file written again (by this plugin or a later one)
                    // is reported once, as it stands now.
                    report
                        .derivatives
                        .retain(|d| !(d.volume == l.volume && d.path == l.path.as_str()));
                    report.derivatives.push(Derivative {
                        volume: l.volume.clone(),
                        path: l.path.to_string(),
                        style: claim.and_then(|c| c.style.clone()),
                        width: claim.and_then(|c| c.width),
                        height: claim.and_then(|c| c.height),
                        size: m.size,
                        etag: m.etag.clone(),
                        content_type: m.content_type.clone(),
                        plugin: name.clone(),
                    });
                }
            }
            Ok(Outcome::Reject(reason)) => {
                report.plugins.push(PluginRun {
                    name: name.clone(),
                    verdict: "reject".into(),
                    ms,
                });
                report.status = Status::Rejected;
                report.reason = Some(bounded(reason));
                report.rejected_by = Some(name);
                break;
            }
            Err(e) => {
                report.plugins.push(PluginRun {
                    name: name.clone(),
                    verdict: "error".into(),
                    ms,
                });
                report.status = Status::Error;
                report.error = Some(invoke_error(&e));
                report.rejected_by = Some(name);
                break;
            }
        }
    }
    let host = storage.host_session().with_actor(actor.clone());
    if report.status == Status::Accepted {
        // A derived file a later plugin deleted is not in the report.
        let mut kept = Vec::with_capacity(report.derivatives.len());
        for d in std::mem::take(&mut report.derivatives) {
            let Ok(l) = storage.location(&d.volume, &d.path) else {
                continue;
            };
            let stands = match host.stat(&l).await {
                Ok(m) => m.etag == d.etag,
                Err(StorageError::NotFound) => false,
                // Not known now: the store below answers for it.
                Err(_) => true,
            };
            if stands {
                kept.push(d);
            }
        }
        report.derivatives = kept;
        // The condition is the backend's to hold at the store itself.
        // What the client declared with the upload is stored with it.
        let options = PutOptions {
            content_type: pending.meta.content_type.clone(),
            cache_control: pending.meta.cache_control.clone(),
            metadata: pending.meta.metadata.clone(),
            headers: pending.meta.headers.clone(),
            condition: pending.condition.clone(),
            etag: pending.etag.clone(),
            ..Default::default()
        };
        let stored = match &*pending.staged {
            Staged::Memory(bytes) => host.write(&loc, bytes.clone(), options).await,
            Staged::File(path) if matches!(pending.assembly, crate::vfs::Assembly::Write) => {
                host.write_file(&loc, path, pending.meta.size, options).await
            }
            Staged::File(_) | Staged::Parts(_) => match assembled(&host, &loc, &pending, options.clone()).await {
                Ok(Some(meta)) => Ok(meta),
                Ok(None) => match pending.staged.open(None).await {
                    Ok(body) => crate::vfs::store_stream(&host, &loc, body, options).await,
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            },
        };
        match stored {
            Ok(meta) => {
                report.file.etag = Some(meta.etag);
                report.file.checksum = meta.headers.checksum.map(|c| *c);
                return report;
            }
            Err(e) => {
                report.status = Status::Error;
                report.error = Some(ErrorReport {
                    code: e.code().into(),
                    message: format!("storing {loc}: {e}"),
                    cause: Some(e),
                });
            }
        }
    }
    // Discard everything derived from a refused upload, newest first; a
    // file another writer has replaced since is theirs and stays.
    for (l, meta, plugin) in written.iter().rev() {
        if let Err(e) = host.discard(l, meta).await {
            tracing::error!(plugin, "cannot remove {l} written for a refused upload: {e}");
        }
    }
    report.derivatives.clear();
    refused(storage, &actor, &pending, report).await
}

/// Record a refused upload in the audit trail: it stands refused even if
/// the record cannot be written (nothing was stored), which is logged.
async fn refused(storage: &Storage, actor: &Actor, pending: &PendingUpload, report: UploadReport) -> UploadReport {
    let reason = match (&report.reason, &report.error) {
        (Some(reason), _) => reason.clone(),
        (None, Some(error)) => format!("{}: {}", error.code, error.message),
        (None, None) => String::new(),
    };
    let by = report.rejected_by.as_deref();
    if let Err(e) = storage
        .audit_refusal(Some(actor), &pending.location, &pending.meta, by, &reason)
        .await
    {
        tracing::error!(
            request_id = actor.request_id,
            "the refusal of {} is not in the audit trail: {e}",
            pending.location
        );
    }
    report
}

/// Store an upload from what the backend holds of it already, where it
/// can; `None` otherwise.
async fn assembled(
    host: &crate::vfs::Session,
    loc: &Location,
    pending: &PendingUpload,
    options: PutOptions,
) -> Result<Option<crate::store::ObjectMeta>, StorageError> {
    if matches!(pending.assembly, crate::vfs::Assembly::Write) {
        return Ok(None);
    }
    let range = ByteRange {
        offset: 0,
        length: crate::policy::SNIFF_BYTES as u64,
    };
    let head = crate::store::read_to_end(pending.staged.open(Some(range)).await?, range.length).await?;
    host.assemble(loc, &pending.assembly, pending.meta.size, &head, options)
        .await
}

/// Whether an upload's condition holds now (the store checks it again).
async fn check_condition(storage: &Arc<Storage>, loc: &Location, condition: &Condition) -> Result<(), StorageError> {
    let current = match storage.host_session().stat(loc).await {
        Ok(meta) => Some(meta),
        Err(StorageError::NotFound) => None,
        Err(e) => return Err(e),
    };
    match (condition, current) {
        (Condition::CreateOnly, Some(_)) => Err(StorageError::AlreadyExists),
        (Condition::IfMatch(etag), Some(meta)) if &meta.etag == etag => Ok(()),
        (Condition::IfMatch(_), _) => Err(StorageError::PreconditionFailed),
        (Condition::CreateOnly, None) => Ok(()),
    }
}

/// The longest rejection reason a report carries; a plugin's output is
/// untrusted and ends up in logs and HTTP responses.
pub const MAX_REASON_BYTES: usize = 4096;

fn bounded(mut reason: String) -> String {
    if reason.len() > MAX_REASON_BYTES {
        let mut end = MAX_REASON_BYTES;
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        reason.truncate(end);
        reason.push_str(" [truncated]");
    }
    reason
}

/// The name `rejected_by` gives the content policy.
pub const POLICY: &str = "content-policy";

async fn judge_by_policy(storage: &Storage, pending: &PendingUpload) -> Result<(), StorageError> {
    use tokio::io::AsyncReadExt;
    let policy = storage.policy();
    let path = pending.location.path.as_str();
    policy.check_name(path)?;
    // A small upload is judged where it lies in memory.
    if let Staged::Memory(bytes) = &*pending.staged {
        let head = &bytes[..bytes.len().min(crate::policy::SNIFF_BYTES)];
        return policy.check_content(path, &pending.meta.content_type, head);
    }
    let mut head = Vec::new();
    let sniffed = ByteRange {
        offset: 0,
        length: crate::policy::SNIFF_BYTES as u64,
    };
    pending
        .staged
        .open(Some(sniffed))
        .await?
        .read_to_end(&mut head)
        .await
        .map_err(|e| StorageError::unavailable(format!("staged upload: {e}")))?;
    policy.check_content(path, &pending.meta.content_type, &head)
}

fn invoke_error(e: &InvokeError) -> ErrorReport {
    ErrorReport {
        code: e.code().into(),
        message: e.to_string(),
        cause: match e {
            InvokeError::Failed { error, .. } => Some(error.clone()),
            _ => None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Files hashed where they lie give the hash of their concatenation,
    /// and one not of its recorded size is an error, never a hash.
    #[test]
    fn files_hash_as_one_and_only_at_their_sizes() {
        use sha2::{Digest, Sha256};
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::write(&a, b"hello, ").unwrap();
        std::fs::write(&b, b"world").unwrap();
        let expected = hex::encode(Sha256::digest(b"hello, world"));
        assert_eq!(hash_files(&[(a.clone(), 7), (b.clone(), 5)]).unwrap(), expected);
        assert!(hash_files(&[(a.clone(), 8), (b.clone(), 5)]).is_err());
        assert!(hash_files(&[(a, 6), (b, 5)]).is_err());
    }
}
