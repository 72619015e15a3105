//! Multipart uploads for clients (S3's CreateMultipartUpload, UploadPart,
//! UploadPartCopy, CompleteMultipartUpload, AbortMultipartUpload,
//! ListParts, ListMultipartUploads), over the core's
//! multipart store (upload records shared by the nodes): access, the
//! content policy and the judgement of the whole object are decided here.

use std::sync::Arc;

use crate::access::{Caller, Denied, Op};
use crate::listing::{Accumulator, Marker, Offered};
pub use crate::multipart::{MultipartError, PartInfo, UploadSettings};
use crate::pipeline::UploadReport;
use crate::put::{Description, PutError, Verify, WriteConditions};
use crate::serving::{Conditions, RangeSpec};
use crate::vfs::Assembly;
use crate::{Silo, StorageError};

/// Why a multipart call failed.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error(transparent)]
    /// The caller may not do this.
    Denied(#[from] Denied),
    #[error(transparent)]
    /// The upload or its parts refused the call.
    Multipart(#[from] MultipartError),
    /// The whole object could not be staged or judged (completion, or a
    /// copied part's source).
    #[error(transparent)]
    Put(#[from] PutError),
}

impl From<StorageError> for UploadError {
    fn from(e: StorageError) -> Self {
        UploadError::Multipart(MultipartError::Storage(e))
    }
}

/// A page of an upload's parts.
#[derive(Debug, Clone)]
pub struct PartsPage {
    /// What was declared when the upload was created.
    pub upload: UploadSettings,
    /// The parts, by number.
    pub parts: Vec<PartInfo>,
    /// More parts follow the last one.
    pub truncated: bool,
}

/// A page of a volume's open uploads: `(upload id, settings)` by key,
/// then id.
#[derive(Debug, Clone)]
pub struct UploadsPage {
    /// Uploads under way, by id.
    pub uploads: Vec<(String, UploadSettings)>,
    /// The prefixes keys were rolled up into at the delimiter, in order.
    pub common_prefixes: Vec<String>,
    /// Whether more follow.
    pub truncated: bool,
    /// Where the page ended: the next page's key marker is this key or
    /// common prefix (with the last upload's id after a key).
    pub last: Marker,
}

impl Silo {
    /// Open a multipart upload of `key` in `volume` for `caller`; its id.
    /// A name the content policy refuses is refused now, not after the
    /// parts.
    pub async fn create_upload(
        &self,
        caller: &Caller,
        volume: &str,
        key: &str,
        description: Description,
    ) -> Result<String, UploadError> {
        self.authorize(caller, volume, key, Op::Write)?;
        let location = self.storage().location(volume, key)?;
        self.storage().policy().check_name(location.path.as_str())?;
        let id = self
            .multipart()
            .create(UploadSettings {
                volume: volume.to_owned(),
                key: key.to_owned(),
                principal: caller.name().to_owned(),
                content_type: description.content_type,
                cache_control: description.cache_control,
                headers: description.headers,
                metadata: description.metadata,
                created_ms: crate::store::now_ms(),
                backend: None,
            })
            .await?;
        Ok(id)
    }

    /// Store part `number` of upload `id` (of `key` in `volume`) for
    /// `caller`. `verify` runs once the part is stored: a part that fails
    /// it is not kept ([`PutError::BadDigest`]).
    #[allow(clippy::too_many_arguments)] // each is one part of the request
    pub async fn put_part(
        &self,
        caller: &Caller,
        volume: &str,
        key: &str,
        id: &str,
        number: i32,
        body: impl futures_util::Stream<Item = std::io::Result<bytes::Bytes>> + Unpin,
        length: Option<u64>,
        verify: Option<Verify>,
    ) -> Result<PartInfo, UploadError> {
        self.authorize(caller, volume, key, Op::Write)?;
        let upload = self.multipart().settings(id, volume, key).await?;
        let limit = self.upload_limit(volume);
        let part = self
            .multipart()
            .put_part(id, &upload, number, body, length, limit)
            .await?;
        match verify.map(|verify| verify()) {
            Some(Err(message)) => {
                let _ = self.multipart().remove_part(id, volume, number, &part.etag).await;
                return Err(PutError::BadDigest(message).into());
            }
            // Kept for the object's composite checksum.
            Some(Ok(Some(checksum))) => {
                self.multipart()
                    .keep_part_checksum(id, number, &part.etag, &checksum)
                    .await?;
            }
            _ => {}
        }
        Ok(part)
    }

    /// Store part `number` of upload `id` from `source` (a range of it),
    /// which `caller` must be able to read and which must meet
    /// `conditions`.
    #[allow(clippy::too_many_arguments)] // each is one part of the request
    pub async fn copy_part(
        &self,
        caller: &Caller,
        volume: &str,
        key: &str,
        id: &str,
        number: i32,
        source: (&str, &str),
        range: Option<RangeSpec>,
        conditions: &Conditions,
    ) -> Result<PartInfo, UploadError> {
        self.authorize(caller, volume, key, Op::Write)?;
        let upload = self.multipart().settings(id, volume, key).await?;
        self.authorize(caller, source.0, source.1, Op::Read)?;
        let from = self.storage().location(source.0, source.1)?;
        let session = self.session_for(caller);
        let meta = session.stat(&from).await?;
        if conditions.check(&meta).is_some() {
            return Err(PutError::SourceCondition.into());
        }
        let range = match range {
            None => None,
            // A copied part's range lies wholly within its source (a read's
            // is cut at the end; a copy's is refused).
            Some(RangeSpec::From { last: Some(last), .. }) if last >= meta.size => {
                return Err(PutError::SourceRange.into());
            }
            Some(spec) => Some(spec.within(meta.size).ok_or(PutError::SourceRange)?),
        };
        let length = range.map_or(meta.size, |r| r.length);
        let (_, body) = session.open_read(&from, range).await?;
        let chunks = tokio_util::io::ReaderStream::with_capacity(body, 256 * 1024);
        let limit = self.upload_limit(volume);
        Ok(self
            .multipart()
            .put_part(id, &upload, number, chunks, Some(length), limit)
            .await?)
    }

    /// Complete upload `id` of `key` in `volume` from the parts named
    /// (number, ETag): the parts, in order, are staged and judged once,
    /// whole, as any upload, then joined in the backend where they went
    /// into its own upload. Judged or refused, the upload and its parts
    /// are gone after this.
    pub async fn complete_upload(
        self: &Arc<Self>,
        caller: &Caller,
        volume: &str,
        key: &str,
        id: &str,
        named: &[(i32, String)],
        conditions: &WriteConditions,
    ) -> Result<UploadReport, UploadError> {
        self.authorize(caller, volume, key, Op::Write)?;
        let location = self.storage().location(volume, key)?;
        let multipart = self.multipart();
        let settings = match multipart.settings(id, volume, key).await {
            Ok(settings) => settings,
            // A completion repeated because its answer was lost (any node
            // may get it) answers what the first one stored, as S3 does.
            Err(MultipartError::NoSuchUpload) => match multipart.completion(id, volume, key).await? {
                Some(done) => return Ok(completed_again(done)),
                None => return Err(MultipartError::NoSuchUpload.into()),
            },
            Err(e) => return Err(e.into()),
        };
        let (parts, _) = multipart.assemble(id, named).await?;
        let etag = crate::store::multipart_etag(parts.iter().map(|p| p.etag.as_str()));
        let part_sizes: Box<[u64]> = parts.iter().map(|p| p.size).collect();
        let mut settings = settings;
        let checksum = object_checksum(&parts, settings.headers.checksum.take().as_deref());
        conditions.check(self, volume, key).await.map_err(PutError::Storage)?;
        let target = format!("{}/{}", location.volume, location.path);
        // Judged from this node's copies where it has them all (one node,
        // or a balancer that keeps an upload on one node).
        let (copies, assembly) = match &settings.backend {
            Some(upload) => (
                multipart.gather(id, volume, &parts).await?,
                Assembly::Parts {
                    upload: upload.clone(),
                    parts: parts.iter().map(|p| (p.number, format!("\"{}\"", p.etag))).collect(),
                },
            ),
            None => (multipart.copies_of(&parts).ok(), Assembly::Write),
        };
        let content_type = settings.content_type.as_deref();
        let staged = match copies {
            Some(files) => self.stage_files(&target, files, content_type).await,
            None => {
                let body = multipart.read_parts(volume, parts)?;
                self.stage_chunks(&target, body, content_type).await
            }
        };
        let mut pending = match staged {
            Ok(pending) => pending,
            Err(e) => {
                let _ = multipart.remove(id).await;
                return Err(PutError::from_staging(e).into());
            }
        };
        pending.condition = conditions.atomic();
        // Where Silo makes the ETag, it is S3's for an object in parts.
        pending.etag = etag;
        // Accepted, the object is joined from its parts in the backend.
        pending.assembly = assembly;
        pending.meta.cache_control = settings.cache_control;
        pending.meta.metadata = settings.metadata;
        pending.meta.headers = settings.headers;
        pending.meta.headers.parts = Some(part_sizes);
        pending.meta.headers.checksum = checksum.map(Box::new);
        let report = self.judged(caller, pending).await;
        let _ = match (&report.status, &report.file.etag) {
            (crate::Status::Accepted, Some(etag)) => {
                multipart
                    .completed(id, etag, report.file.size, &report.file.content_type)
                    .await
            }
            _ => multipart.remove(id).await,
        };
        Ok(report)
    }

    /// Abort upload `id` of `key` in `volume`: its parts are removed.
    pub async fn abort_upload(&self, caller: &Caller, volume: &str, key: &str, id: &str) -> Result<(), UploadError> {
        self.authorize(caller, volume, key, Op::Write)?;
        self.multipart().settings(id, volume, key).await?;
        Ok(self.multipart().remove(id).await?)
    }

    /// The parts of upload `id` of `key` after part number `after`, at
    /// most `max`, by number.
    pub async fn list_parts(
        &self,
        caller: &Caller,
        volume: &str,
        key: &str,
        id: &str,
        after: i32,
        max: usize,
    ) -> Result<PartsPage, UploadError> {
        self.authorize(caller, volume, key, Op::List)?;
        let upload = self.multipart().settings(id, volume, key).await?;
        let mut page = Accumulator::new("", None, "", max);
        for part in self
            .multipart()
            .parts(id)
            .await?
            .into_iter()
            .filter(|p| p.number > after)
        {
            if let Offered::Full = page.offer(&part.number.to_string(), part) {
                break;
            }
        }
        Ok(PartsPage {
            upload,
            parts: page.entries,
            truncated: page.truncated,
        })
    }

    /// The open uploads of `volume` under `prefix`, in key and then id
    /// order, at most `max` of them and of the common prefixes keys roll up
    /// into at `delimiter`. `after` is S3's markers: uploads of later keys,
    /// and of the marker's key itself only after the upload id, if one is
    /// given.
    pub async fn list_uploads(
        &self,
        caller: &Caller,
        volume: &str,
        prefix: &str,
        delimiter: Option<&str>,
        after: (&str, Option<&str>),
        max: usize,
    ) -> Result<UploadsPage, UploadError> {
        self.authorize(caller, volume, prefix, Op::List)?;
        let (key_marker, id_marker) = after;
        let mut uploads: Vec<(String, UploadSettings)> = self
            .multipart()
            .uploads(Some(volume))
            .await?
            .into_iter()
            .filter(|(id, s)| {
                s.key.starts_with(prefix)
                    && match id_marker {
                        Some(id_marker) => (s.key.as_str(), id.as_str()) > (key_marker, id_marker),
                        None => s.key.as_str() > key_marker,
                    }
            })
            .collect();
        uploads.sort_by(|a, b| (&a.1.key, &a.0).cmp(&(&b.1.key, &b.0)));
        let mut page = Accumulator::new(prefix, delimiter, key_marker, max);
        let mut skip: Option<String> = None;
        for (id, settings) in uploads {
            if skip.as_deref().is_some_and(|common| settings.key.starts_with(common)) {
                continue;
            }
            let key = settings.key.clone();
            match page.offer(&key, (id, settings)) {
                Offered::Taken => {}
                Offered::Rolled(common) => skip = Some(common),
                Offered::Full => break,
            }
        }
        Ok(UploadsPage {
            uploads: page.entries,
            common_prefixes: page.common_prefixes,
            truncated: page.truncated,
            last: page.last,
        })
    }
}

/// An object's checksum from its parts', as S3 makes it, `None` unless
/// every part came with a checksum of one algorithm (the one `asked` at
/// the upload's creation, if any). `FULL_OBJECT` where it was asked, for a
/// CRC: the parts' CRCs combined into the whole object's. Else
/// `COMPOSITE`: the algorithm's checksum of the parts' checksums (their
/// bytes, in order), then `-` and the number of parts.
fn object_checksum(parts: &[crate::cache::PartRecord], asked: Option<&crate::Checksum>) -> Option<crate::Checksum> {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut algorithm = asked.map(|a| a.algorithm.as_str());
    let mut sums = Vec::with_capacity(parts.len());
    for part in parts {
        let (algo, value) = part.checksum.as_deref()?.split_once(' ')?;
        if *algorithm.get_or_insert(algo) != algo {
            return None;
        }
        sums.push((b64.decode(value).ok()?, part.size));
    }
    let algorithm = algorithm?;
    if asked.is_some_and(|a| a.kind == "FULL_OBJECT") {
        let crc = match algorithm {
            "CRC32" => crc_fast::CrcAlgorithm::Crc32IsoHdlc,
            "CRC32C" => crc_fast::CrcAlgorithm::Crc32Iscsi,
            "CRC64NVME" => crc_fast::CrcAlgorithm::Crc64Nvme,
            _ => return None,
        };
        let value = |bytes: &[u8]| -> Option<u64> {
            Some(match bytes.len() {
                4 => u32::from_be_bytes(bytes.try_into().ok()?) as u64,
                8 => u64::from_be_bytes(bytes.try_into().ok()?),
                _ => return None,
            })
        };
        let mut whole: Option<u64> = None;
        for (sum, size) in &sums {
            let sum = value(sum)?;
            whole = Some(match whole {
                None => sum,
                Some(before) => crc_fast::checksum_combine(crc, before, sum, *size),
            });
        }
        let whole = whole?;
        let bytes = match crc {
            crc_fast::CrcAlgorithm::Crc64Nvme => whole.to_be_bytes().to_vec(),
            _ => (whole as u32).to_be_bytes().to_vec(),
        };
        return Some(crate::Checksum {
            algorithm: algorithm.to_owned(),
            value: b64.encode(bytes),
            kind: "FULL_OBJECT".into(),
        });
    }
    let joined: Vec<u8> = sums.into_iter().flat_map(|(sum, _)| sum).collect();
    let value = crate::store::checksum_of(algorithm, &joined)?;
    Some(crate::Checksum {
        algorithm: algorithm.to_owned(),
        value: format!("{value}-{}", parts.len()),
        kind: "COMPOSITE".into(),
    })
}

/// The report of a completion already made: the object it stored.
fn completed_again(done: crate::cache::Completion) -> UploadReport {
    let file = crate::pipeline::FileReport {
        volume: done.volume,
        path: done.key,
        size: done.size,
        content_type: done.content_type,
        etag: Some(done.etag),
        checksum: None,
    };
    UploadReport::of(crate::Status::Accepted, file)
}
