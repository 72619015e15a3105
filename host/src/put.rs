//! Writes for clients: an upload (`put`) and a copy, each staged, judged
//! whole by the pipeline and only then stored, for every door alike.

use std::sync::Arc;

use crate::access::{Caller, Denied, Op};
use crate::pipeline::{Status, UploadReport};
use crate::serving::{Conditions, ServedStatus, TagList};
use crate::store::{Condition, Headers, ObjectMeta};
use crate::vfs::PendingUpload;
use crate::{Silo, SiloError, StorageError};

/// A door's check, run once a body is stored and before it is judged,
/// that the bytes are those the client sent: `Err` says why not; `Ok`,
/// the checksum the client sent, to keep with the object.
pub type Verify = Box<dyn FnOnce() -> Result<Option<crate::Checksum>, String> + Send>;

/// What a client declared with an upload, beside its bytes.
#[derive(Default)]
pub struct PutRequest {
    /// The declared type; else the one the name suggests.
    pub content_type: Option<String>,
    /// Store only if these hold (`If-Match`, `If-None-Match`).
    pub conditions: WriteConditions,
    /// `Cache-Control` to store with the file.
    pub cache_control: Option<String>,
    /// `Content-Disposition`, `Content-Encoding`, `Expires`, served back as
    /// given (but active content stays an attachment).
    pub headers: Headers,
    /// The writer's metadata (`x-amz-meta-*`).
    pub metadata: Vec<(String, String)>,
    /// The size the client said it sends: over the volume's limit, the
    /// upload is refused before a byte is read.
    pub length: Option<u64>,
    /// Run once the whole body is staged, before it is judged: a door's
    /// check that the bytes are those the client sent (S3's digests). An
    /// `Err` drops the upload unjudged ([`PutError::BadDigest`]).
    pub verify: Option<Verify>,
}

/// The preconditions of a write, in every form RFC 9110 gives them: a
/// write whose conditions fail is refused with 412 and stores nothing.
/// `If-None-Match: *` (create only) and `If-Match` with one tag are also
/// kept by the store as the file is stored, so that of two writers racing
/// one loses; the other forms are checked against the file there when the
/// upload arrives.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteConditions {
    /// `If-Match`: store only over one of these versions (`*`: over any).
    pub if_match: Option<TagList>,
    /// `If-None-Match`: store only if the file is none of these (`*`: if
    /// there is none).
    pub if_none_match: Option<TagList>,
}

impl WriteConditions {
    /// The conditions of a request's `If-Match` and `If-None-Match`.
    pub fn from_headers(headers: &http::HeaderMap) -> WriteConditions {
        let list = |name| {
            headers
                .get(name)
                .and_then(|v: &http::HeaderValue| v.to_str().ok())
                .map(TagList::parse)
        };
        WriteConditions {
            if_match: list(http::header::IF_MATCH),
            if_none_match: list(http::header::IF_NONE_MATCH),
        }
    }

    /// Create only (`If-None-Match: *`).
    pub fn create_only() -> WriteConditions {
        WriteConditions {
            if_none_match: Some(TagList::Any),
            ..Default::default()
        }
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.if_match.is_none() && self.if_none_match.is_none()
    }

    /// Whether they hold for the file there now (`None`: there is none).
    /// `If-Match` compares strongly, `If-None-Match` weakly.
    pub fn hold_for(&self, current: Option<&ObjectMeta>) -> bool {
        let etag = current.map(|m| m.etag.trim_matches('"'));
        let matched = self.if_match.as_ref().is_none_or(|tags| match (tags, etag) {
            (_, None) => false,
            (TagList::Any, Some(_)) => true,
            (TagList::Tags(tags), Some(etag)) => tags.iter().any(|t| !t.weak && t.tag == etag),
        });
        let unmatched = self.if_none_match.as_ref().is_none_or(|tags| match (tags, etag) {
            (_, None) => true,
            (TagList::Any, Some(_)) => false,
            (TagList::Tags(tags), Some(etag)) => !tags.iter().any(|t| t.tag == etag),
        });
        matched && unmatched
    }

    /// The condition the store keeps as the file is stored, where one
    /// expresses them.
    pub(crate) fn atomic(&self) -> Option<Condition> {
        match (&self.if_match, &self.if_none_match) {
            (None, Some(TagList::Any)) => Some(Condition::CreateOnly),
            (Some(TagList::Tags(tags)), None) if tags.len() == 1 && !tags[0].weak => {
                Some(Condition::IfMatch(tags[0].tag.clone()))
            }
            _ => None,
        }
    }

    /// Refuse the write unless they hold for the file at `volume`/`path`
    /// now.
    pub(crate) async fn check(&self, silo: &Silo, volume: &str, path: &str) -> Result<(), StorageError> {
        if self.is_empty() {
            return Ok(());
        }
        let location = silo.storage().location(volume, path)?;
        let current = match silo.storage().host_session().stat(&location).await {
            Ok(meta) => Some(meta),
            Err(StorageError::NotFound) => None,
            Err(e) => return Err(e),
        };
        match self.hold_for(current.as_ref()) {
            true => Ok(()),
            false => Err(StorageError::PreconditionFailed),
        }
    }
}

/// What a copy takes from its source and what it is asked.
#[derive(Debug, Clone, Default)]
pub struct CopyRequest {
    /// The source's conditions (S3's `x-amz-copy-source-if-*`): a copy
    /// whose source fails one is [`PutError::SourceCondition`].
    pub source_conditions: Conditions,
    /// The copy's type, cache control, headers and metadata, replacing
    /// the source's; `None` keeps the source's.
    pub replace: Option<Description>,
}

/// What a writer declares with an object beside its bytes: stored with
/// it and served back (a copy's instead of its source's, a multipart
/// upload's when it is created).
#[derive(Debug, Clone, Default)]
pub struct Description {
    /// `Content-Type` to store; guessed from the name where absent.
    pub content_type: Option<String>,
    /// `Cache-Control` to store.
    pub cache_control: Option<String>,
    /// The other stored headers (disposition, encoding, language, expiry).
    pub headers: Headers,
    /// User metadata (`x-amz-meta-*`), by name.
    pub metadata: Vec<(String, String)>,
}

/// Why an upload or a copy was not judged.
#[derive(Debug, thiserror::Error)]
pub enum PutError {
    #[error(transparent)]
    /// The caller may not write there.
    Denied(#[from] Denied),
    /// The upload is larger than its volume takes.
    #[error("volume '{volume}' takes uploads of up to {limit} bytes (its max_upload_mib)")]
    TooLarge {
        /// The volume.
        volume: String,
        /// Its limit, in bytes.
        limit: u64,
    },
    /// The body could not be read to its end (the client went away, or
    /// sent nothing for too long: `TimedOut`).
    #[error("reading the upload: {0}")]
    Body(std::io::Error),
    /// The bytes are not those the client's digest names.
    #[error("{0}")]
    BadDigest(String),
    /// A copy's source does not meet the conditions asked.
    #[error("the copy source's condition does not hold")]
    SourceCondition,
    /// A copied part's range lies outside its source.
    #[error("the copy source's range is not within it")]
    SourceRange,
    /// A copy onto its own source that changes nothing.
    #[error("a copy onto its source must replace its metadata")]
    OntoItself,
    #[error(transparent)]
    /// The storage failed.
    Storage(#[from] StorageError),
}

impl From<crate::access::RequestError> for PutError {
    fn from(e: crate::access::RequestError) -> Self {
        match e {
            crate::access::RequestError::Denied(e) => PutError::Denied(e),
            crate::access::RequestError::Storage(e) => PutError::Storage(e),
        }
    }
}

impl PutError {
    /// Why staging failed.
    pub(crate) fn from_staging(e: SiloError) -> PutError {
        match e {
            SiloError::TooLarge { volume, limit } => PutError::TooLarge { volume, limit },
            SiloError::Storage(e) => PutError::Storage(e),
            SiloError::Source(e) => PutError::Body(e),
            other => PutError::Storage(StorageError::unavailable(other)),
        }
    }
}

/// How a judged upload ended, for a door to answer by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Stored.
    Stored,
    /// Refused by a plugin or the content policy (`rejected_by`, `reason`).
    Refused,
    /// Its condition did not hold: a file was there, or another version.
    Conflict,
    /// A plugin or the content policy refused it as forbidden, or a
    /// plugin was denied what it tried.
    Forbidden,
    /// Larger than a limit allows.
    TooLarge,
    /// The path cannot be stored in its volume (a local volume holds no
    /// file and directory of one name).
    Invalid,
    /// A backend or the metadata engine did not answer; retry later.
    Unavailable,
    /// A shared bound stayed full; retry later.
    Busy,
    /// Anything else that went wrong (a plugin crashed, ran out of time).
    Failed,
}

impl UploadReport {
    /// How the upload ended, from its status and the error behind it.
    pub fn outcome(&self) -> Outcome {
        match self.status {
            Status::Accepted => Outcome::Stored,
            Status::Rejected => Outcome::Refused,
            Status::Error => match self.error.as_ref().and_then(|e| e.cause.as_ref()) {
                Some(StorageError::AlreadyExists | StorageError::PreconditionFailed) => Outcome::Conflict,
                Some(StorageError::AccessDenied | StorageError::Forbidden(_)) => Outcome::Forbidden,
                Some(StorageError::TooLarge | StorageError::QuotaExceeded(_)) => Outcome::TooLarge,
                Some(StorageError::InvalidPath(_)) => Outcome::Invalid,
                Some(StorageError::Unavailable(_)) => Outcome::Unavailable,
                Some(StorageError::Busy(_)) => Outcome::Busy,
                _ => Outcome::Failed,
            },
        }
    }
}

impl Silo {
    /// Upload `body` to `path` of `volume` for `caller`: staged (nothing
    /// visible), then judged by the pipeline as its own task, so that it
    /// ends (stored, or rolled back with everything its plugins wrote)
    /// even if the client goes away. The report says how it was judged
    /// ([`UploadReport::outcome`]); an error, that it was not.
    pub async fn put(
        self: &Arc<Self>,
        caller: &Caller,
        volume: &str,
        path: &str,
        body: impl futures_util::Stream<Item = std::io::Result<bytes::Bytes>> + Unpin,
        request: PutRequest,
    ) -> Result<UploadReport, PutError> {
        self.authorize(caller, volume, path, Op::Write)?;
        let location = self.storage().location(volume, path)?;
        if let Some(length) = request.length {
            location.path.check_size(length)?;
        }
        let limit = self.upload_limit(volume);
        if request.length.is_some_and(|n| n > limit) {
            return Err(PutError::TooLarge {
                volume: volume.to_owned(),
                limit,
            });
        }
        // Checked before a byte is read: a conflict costs no staging.
        request.conditions.check(self, volume, path).await?;
        let target = format!("{volume}/{path}");
        let mut pending = self
            .stage_chunks(&target, body, request.content_type.as_deref())
            .await
            .map_err(PutError::from_staging)?;
        // A body that is not what its digests say is dropped unjudged.
        let checksum = match request.verify {
            Some(verify) => verify().map_err(PutError::BadDigest)?,
            None => None,
        };
        pending.condition = request.conditions.atomic();
        pending.meta.cache_control = request.cache_control;
        pending.meta.headers = request.headers;
        pending.meta.headers.checksum = checksum.map(Box::new);
        pending.meta.metadata = request.metadata;
        Ok(self.judged(caller, pending).await)
    }

    /// Copy `source` (`volume`, `path`) to `target` for `caller`, who must
    /// be able to read the one and write the other: the source's bytes are
    /// staged and judged as an upload of the target. The report, and what
    /// is stored at the target when it was.
    pub async fn copy(
        self: &Arc<Self>,
        caller: &Caller,
        source: (&str, &str),
        target: (&str, &str),
        request: CopyRequest,
    ) -> Result<(UploadReport, Option<ObjectMeta>), PutError> {
        self.authorize(caller, source.0, source.1, Op::Read)?;
        self.authorize(caller, target.0, target.1, Op::Write)?;
        let from = self.storage().location(source.0, source.1)?;
        let to = self.storage().location(target.0, target.1)?;
        let session = self.session_for(caller);
        let meta = session.stat(&from).await?;
        if let Some(ServedStatus::NotModified | ServedStatus::PreconditionFailed) =
            request.source_conditions.check(&meta)
        {
            return Err(PutError::SourceCondition);
        }
        if from == to && request.replace.is_none() {
            return Err(PutError::OntoItself);
        }
        let described = request.replace.unwrap_or_else(|| Description {
            content_type: Some(meta.content_type.clone()),
            cache_control: meta.cache_control.clone(),
            headers: meta.headers.clone(),
            metadata: meta.metadata.clone(),
        });
        let (_, body) = session.open_read(&from, None).await?;
        let chunks = tokio_util::io::ReaderStream::with_capacity(body, 256 * 1024);
        let mut pending = self
            .stage_chunks(
                &format!("{}/{}", to.volume, to.path),
                chunks,
                described.content_type.as_deref(),
            )
            .await
            .map_err(PutError::from_staging)?;
        pending.meta.cache_control = described.cache_control;
        pending.meta.headers = described.headers;
        // The same bytes: the source's checksum holds for the copy, which
        // is stored in one request (no parts).
        pending.meta.headers.checksum = meta.headers.checksum.clone();
        pending.meta.headers.parts = None;
        pending.meta.metadata = described.metadata;
        let report = self.judged(caller, pending).await;
        let stored = match report.status {
            Status::Accepted => Some(session.stat(&to).await?),
            _ => None,
        };
        Ok((report, stored))
    }

    /// Judge `pending` for `caller` as its own task: it runs to its end
    /// even if the request that staged it is dropped.
    pub(crate) async fn judged(self: &Arc<Self>, caller: &Caller, mut pending: PendingUpload) -> UploadReport {
        pending.actor = Some(crate::audit::Actor::request(caller.name()));
        let silo = self.clone();
        let location = pending.location.clone();
        match tokio::spawn(async move { silo.judge(pending).await }).await {
            Ok(report) => report,
            Err(e) => UploadReport::failed(&location, StorageError::unavailable(format!("the upload stopped: {e}"))),
        }
    }
}
