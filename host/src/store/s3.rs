//! An S3 bucket (AWS, or any S3-compatible server) as a store.
//!
//! The only module that speaks to `aws_sdk_s3`. A volume is a bucket plus an
//! optional key prefix, so one bucket can hold several volumes. Credentials
//! come from the standard AWS chain (environment, profile, instance role);
//! the SDK retries transient failures with backoff, and whatever still fails
//! reaches callers as `Unavailable` with the server's message.
//!
//! Streamed writes become multipart uploads once they outgrow one part, with
//! a few parts in flight; an upload that fails or is dropped unfinished is
//! aborted, so no object (and no part) is left behind. An abort that fails
//! because S3 is away is retried after the next successful write.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{BehaviorVersion, Region, RequestChecksumCalculation, ResponseChecksumValidation};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::{ByteStream as SdkBody, DateTime};
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use bytes::{Bytes, BytesMut};
use tokio::task::JoinSet;

use super::{
    ByteRange, ByteStream, Condition, Headers, KeyPage, ObjectMeta, ObjectStore, ObjectUpload, PutOptions, Split,
};
use crate::budget::{Held, WriteBudget};
use crate::error::{StorageError, StorageResult};
use crate::path::MAX_KEY_BYTES;

/// S3's smallest part (except the last).
pub const MIN_PART_SIZE: u64 = 5 << 20;
/// The largest part Silo buffers. S3 takes parts up to 5 GiB, but a part
/// is held in memory until sent; 64 MiB parts already reach 625 GiB objects
/// within S3's 10,000 parts.
pub const MAX_PART_SIZE: u64 = 64 << 20;
/// The largest object S3 stores or copies in one request.
const MAX_COPY_SIZE: u64 = 5 << 30;
/// Parts uploaded at once by one streamed write; with the part being filled,
/// a write holds at most `(PARTS_IN_FLIGHT + 1) * part_size` bytes, all of
/// it reserved from the write budget.
const PARTS_IN_FLIGHT: usize = 3;
/// Read buffer of a part sent from a staged file.
const FILE_READ_BUFFER: usize = 64 * 1024;
/// Default limit on one attempt of one request (`request_timeout_secs`).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// ListObjectsV2's largest page.
const LIST_PAGE: usize = 1000;
/// Failed aborts kept for a retry; past this a bucket lifecycle rule is
/// what removes the parts.
const MAX_UNABORTED: usize = 10_000;

/// Where a volume's objects live and how to reach them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Settings {
    /// The bucket.
    pub bucket: String,
    /// Key prefix of the volume inside the bucket ("" for the whole bucket).
    pub prefix: String,
    /// An S3-compatible server (`http://127.0.0.1:8333`); `None` for AWS.
    pub endpoint_url: Option<String>,
    /// `None`: from the AWS chain (`AWS_REGION`, profile).
    pub region: Option<String>,
    /// `bucket` in the path instead of the host name; most S3-compatible
    /// servers need it.
    pub path_style: bool,
    /// Size of the parts of a multipart upload, at least [`MIN_PART_SIZE`].
    pub part_size: u64,
    /// Attempts per request, including the first.
    pub max_attempts: u32,
    /// Longest one attempt of a request may take, and longest a response
    /// body may stall between two reads, before it fails as `unavailable`.
    pub request_timeout: Duration,
}

impl S3Settings {
    /// The whole of `bucket` on AWS's defaults (the region and credentials
    /// from the environment).
    pub fn new(bucket: impl Into<String>) -> Self {
        S3Settings {
            bucket: bucket.into(),
            prefix: String::new(),
            endpoint_url: None,
            region: None,
            path_style: false,
            part_size: 8 << 20,
            max_attempts: 3,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
        }
    }
}

/// A volume in an S3 bucket (AWS, Ceph RGW, SeaweedFS, MinIO).
#[derive(Clone)]
pub struct S3Store {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    bucket: String,
    /// "" or ending in '/'.
    prefix: String,
    part_size: usize,
    /// Where streamed writes reserve the bytes they buffer.
    budget: WriteBudget,
    describe: String,
    /// Multipart uploads whose abort failed, to abort once S3 answers again.
    unaborted: Mutex<Vec<Unaborted>>,
}

struct Unaborted {
    key: String,
    full_key: String,
    upload_id: String,
}

impl S3Store {
    /// A store for `settings`. Nothing is contacted yet: a server that is
    /// down shows up as `Unavailable` on the first request.
    pub async fn connect(settings: &S3Settings) -> StorageResult<Self> {
        if !(MIN_PART_SIZE..=MAX_PART_SIZE).contains(&settings.part_size) {
            return Err(StorageError::Unsupported(format!(
                "the part size must be between {MIN_PART_SIZE} and {MAX_PART_SIZE} bytes"
            )));
        }
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .retry_config(RetryConfig::standard().with_max_attempts(settings.max_attempts.max(1)))
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(5).min(settings.request_timeout))
                    .read_timeout(settings.request_timeout)
                    .operation_attempt_timeout(settings.request_timeout)
                    .build(),
            );
        if let Some(region) = &settings.region {
            loader = loader.region(Region::new(region.clone()));
        }
        let shared = loader.load().await;
        let mut config = aws_sdk_s3::config::Builder::from(&shared).force_path_style(settings.path_style);
        if shared.region().is_none() {
            // Any region signs requests for a server that ignores regions;
            // AWS itself redirects a wrong one with a clear error.
            config = config.region(Region::from_static("us-east-1"));
        }
        if let Some(url) = &settings.endpoint_url {
            // S3-compatible servers vary in their support of the newer
            // integrity headers; send them only where S3 requires them.
            config = config
                .endpoint_url(url)
                .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
                .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
        }
        let prefix = settings.prefix.trim_matches('/');
        let prefix = if prefix.is_empty() {
            String::new()
        } else {
            format!("{prefix}/")
        };
        let describe = match &settings.endpoint_url {
            Some(url) => format!("s3://{}/{prefix} at {url}", settings.bucket),
            None => format!("s3://{}/{prefix}", settings.bucket),
        };
        Ok(S3Store {
            inner: Arc::new(Inner {
                client: Client::from_conf(config.build()),
                bucket: settings.bucket.clone(),
                prefix,
                part_size: settings.part_size as usize,
                budget: WriteBudget::new((crate::budget::DEFAULT_WRITE_BUFFER_MIB << 20) as usize),
                describe,
                unaborted: Mutex::default(),
            }),
        })
    }

    /// Reserve streamed writes' buffers from `budget` (shared by every
    /// volume of a host) instead of this store's own default one.
    #[cfg_attr(feature = "internals", visibility::make(pub))]
    pub(crate) fn with_budget(mut self, budget: WriteBudget) -> Self {
        match Arc::get_mut(&mut self.inner) {
            Some(inner) => inner.budget = budget,
            None => unreachable!("with_budget is called before the store is shared"),
        }
        self
    }

    /// The SDK client, for callers that need S3 features the store does not
    /// model (presigned URLs).
    pub fn client(&self) -> &Client {
        &self.inner.client
    }

    /// The bucket.
    pub fn bucket(&self) -> &str {
        &self.inner.bucket
    }

    /// The full key of `key`.
    pub fn object_key(&self, key: &str) -> StorageResult<String> {
        self.inner.key(key)
    }
}

impl Inner {
    fn key(&self, key: &str) -> StorageResult<String> {
        if super::is_scratch(key) {
            return Err(StorageError::InvalidPath(format!(
                "'{}' is reserved in every volume",
                super::SCRATCH
            )));
        }
        let full = format!("{}{key}", self.prefix);
        if full.len() > MAX_KEY_BYTES {
            return Err(StorageError::InvalidPath(format!(
                "with the volume's prefix the key is {} bytes; S3 allows {MAX_KEY_BYTES}",
                full.len()
            )));
        }
        Ok(full)
    }

    fn abort_later(&self, upload: Unaborted) {
        let mut list = self.unaborted.lock().unwrap_or_else(PoisonError::into_inner);
        if list.len() < MAX_UNABORTED {
            list.push(upload);
        } else {
            tracing::warn!(
                key = upload.key,
                upload_id = upload.upload_id,
                "too many multipart uploads await an abort; a bucket lifecycle rule will remove this one"
            );
        }
    }

    /// Called after a successful write: S3 answers, so abort what could not
    /// be aborted while it was away.
    fn retry_aborts(self: &Arc<Self>) {
        let pending = std::mem::take(&mut *self.unaborted.lock().unwrap_or_else(PoisonError::into_inner));
        if pending.is_empty() {
            return;
        }
        let inner = self.clone();
        tokio::spawn(async move {
            for upload in pending {
                inner.clone().abort_upload(upload).await;
            }
        });
    }

    /// Abort one multipart upload: `Ok(true)` when aborted, `Ok(false)`
    /// when it was gone already (aborted, completed or expired).
    async fn send_abort(&self, upload: &Unaborted) -> StorageResult<bool> {
        let sent = self
            .client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(&upload.full_key)
            .upload_id(&upload.upload_id)
            .send()
            .await;
        match sent {
            Ok(_) => Ok(true),
            Err(e) if status(&e) == Some(404) => Ok(false),
            Err(e) => Err(s3_error("AbortMultipartUpload", &upload.key, e)),
        }
    }

    async fn abort_upload(self: Arc<Self>, upload: Unaborted) {
        match self.send_abort(&upload).await {
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(
                    key = upload.key,
                    error = %e,
                    "could not abort a multipart upload; retried after the next successful write"
                );
                self.abort_later(upload);
            }
        }
    }

    /// The key of a full key under the prefix; `None` outside it and in
    /// the scratch space, which is not the volume's.
    fn strip<'a>(&self, full: &'a str) -> Option<&'a str> {
        full.strip_prefix(self.prefix.as_str())
            .filter(|key| !super::is_scratch(key.trim_end_matches('/')))
    }

    async fn head(&self, key: &str) -> StorageResult<ObjectMeta> {
        let out = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(self.key(key)?)
            .send()
            .await
            .map_err(|e| s3_error("HeadObject", key, e))?;
        Ok(ObjectMeta {
            size: required_size("HeadObject", key, out.content_length())?,
            etag: required_etag("HeadObject", key, out.e_tag())?,
            content_type: content_type(out.content_type(), key),
            modified_ms: millis(out.last_modified()),
            cache_control: out.cache_control().map(str::to_owned),
            metadata: sorted(out.metadata()),
            headers: Headers {
                content_encoding: out.content_encoding().map(str::to_owned),
                ..Default::default()
            },
        })
    }

    async fn put(&self, key: &str, data: Bytes, options: &PutOptions) -> StorageResult<ObjectMeta> {
        let size = data.len() as u64;
        self.put_body(key, SdkBody::from(data), size, options).await
    }

    /// PutObject of `body`, `size` bytes.
    async fn put_body(&self, key: &str, body: SdkBody, size: u64, options: &PutOptions) -> StorageResult<ObjectMeta> {
        check_metadata(options)?;
        let mut request = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(self.key(key)?)
            .content_type(&options.content_type)
            .set_content_disposition(disposition(options))
            .set_content_encoding(options.headers.content_encoding.clone())
            .set_cache_control(options.cache_control.clone())
            .set_metadata(metadata_map(options))
            .content_length(size as i64)
            .body(body);
        let (if_none_match, if_match) = condition_headers(options.condition.as_ref());
        request = request.set_if_none_match(if_none_match).set_if_match(if_match);
        let out = request
            .send()
            .await
            .map_err(|e| conditional_error("PutObject", key, options, e))?;
        self.written_meta("PutObject", key, size, out.e_tag(), options).await
    }

    /// Metadata of an object this store just wrote. S3 answers a write with
    /// the etag only; the time is this machine's. Some servers answer with
    /// an empty ETag (Ceph RGW 16.2 for CompleteMultipartUpload): the etag
    /// is then learned from a HeadObject, never stored empty.
    async fn written_meta(
        &self,
        op: &str,
        key: &str,
        size: u64,
        tag: Option<&str>,
        options: &PutOptions,
    ) -> StorageResult<ObjectMeta> {
        let etag = match etag(tag) {
            Some(tag) => tag,
            None => {
                let head = self.head(key).await.map_err(|e| {
                    StorageError::unavailable(format!(
                        "S3 answered {op} '{key}' without an ETag, and asking for it failed: {e}"
                    ))
                })?;
                if head.size != size {
                    return Err(StorageError::unavailable(format!(
                        "S3 answered {op} '{key}' without an ETag, and the object there now has {} bytes, not the {size} written",
                        head.size
                    )));
                }
                head.etag
            }
        };
        Ok(ObjectMeta {
            size,
            etag,
            content_type: options.content_type.clone(),
            modified_ms: super::now_ms(),
            cache_control: options.cache_control.clone(),
            metadata: options.metadata.clone(),
            headers: options.headers.clone(),
        })
    }
}

impl Inner {
    /// Start a multipart upload of `key` (at `full_key`) that will make an
    /// object with `options`; its id.
    async fn create_multipart(&self, key: &str, full_key: &str, options: &PutOptions) -> StorageResult<String> {
        let out = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(full_key)
            .content_type(&options.content_type)
            .set_content_disposition(disposition(options))
            .set_content_encoding(options.headers.content_encoding.clone())
            .set_cache_control(options.cache_control.clone())
            .set_metadata(metadata_map(options))
            .send()
            .await
            .map_err(|e| s3_error("CreateMultipartUpload", key, e))?;
        match out.upload_id() {
            Some(id) if !id.is_empty() => Ok(id.to_owned()),
            _ => Err(StorageError::unavailable(format!(
                "S3 CreateMultipartUpload '{key}' returned no upload id"
            ))),
        }
    }

    /// Complete a multipart upload from `parts` (in order), `size` bytes,
    /// holding `options.condition`.
    async fn complete_multipart(
        &self,
        key: &str,
        full_key: &str,
        upload_id: &str,
        parts: Vec<CompletedPart>,
        size: u64,
        options: &PutOptions,
    ) -> StorageResult<ObjectMeta> {
        let (if_none_match, if_match) = condition_headers(options.condition.as_ref());
        let out = self
            .client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(full_key)
            .upload_id(upload_id)
            .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
            .set_if_none_match(if_none_match)
            .set_if_match(if_match)
            .send()
            .await
            .map_err(|e| conditional_error("CompleteMultipartUpload", key, options, e))?;
        self.written_meta("CompleteMultipartUpload", key, size, out.e_tag(), options)
            .await
    }
}

/// The Content-Disposition to store: the storage core's for active
/// content, else the client's.
fn disposition(options: &PutOptions) -> Option<String> {
    options
        .content_disposition
        .clone()
        .or_else(|| options.headers.content_disposition.clone())
}

/// An ETag without its quotes; `None` when absent or empty.
fn etag(tag: Option<&str>) -> Option<String> {
    let tag = tag?.trim_matches('"');
    (!tag.is_empty()).then(|| tag.to_owned())
}

/// An object's ETag from a response that must carry one.
fn required_etag(op: &str, key: &str, tag: Option<&str>) -> StorageResult<String> {
    etag(tag).ok_or_else(|| StorageError::unavailable(format!("S3 answered {op} '{key}' without an ETag")))
}

/// An object's size from a response that must carry one.
fn required_size(op: &str, key: &str, size: Option<i64>) -> StorageResult<u64> {
    match size {
        Some(n) if n >= 0 => Ok(n as u64),
        _ => Err(StorageError::unavailable(format!(
            "S3 answered {op} '{key}' without a valid object size"
        ))),
    }
}

/// `If-None-Match` and `If-Match` for a write's condition.
fn condition_headers(condition: Option<&Condition>) -> (Option<String>, Option<String>) {
    match condition {
        Some(Condition::CreateOnly) => (Some("*".into()), None),
        Some(Condition::IfMatch(tag)) => (None, Some(quoted(tag))),
        None => (None, None),
    }
}

/// Whether a listed key is a server's directory rather than an object:
/// SeaweedFS lists a directory its files made as `dir/` with no ETag (a
/// folder object, stored by a PutObject of `dir/`, has one).
fn is_directory_entry(key: &str, object: &aws_sdk_s3::types::Object) -> bool {
    key.ends_with('/') && etag(object.e_tag()).is_none()
}

/// Metadata of a listed object (listings carry no content type). Keys no
/// path rule admits are only counted by a refresh, never stored, so they
/// need no size or etag.
fn listed_meta(key: &str, object: &aws_sdk_s3::types::Object) -> StorageResult<ObjectMeta> {
    if crate::path::VolumePath::parse(key).is_err() {
        return Ok(ObjectMeta {
            size: object.size().unwrap_or(0).max(0) as u64,
            etag: etag(object.e_tag()).unwrap_or_default(),
            content_type: super::guess_content_type(key),
            modified_ms: millis(object.last_modified()),
            cache_control: None,
            metadata: Vec::new(),
            headers: Headers::default(),
        });
    }
    Ok(ObjectMeta {
        size: required_size("ListObjectsV2", key, object.size())?,
        etag: required_etag("ListObjectsV2", key, object.e_tag())?,
        content_type: super::guess_content_type(key),
        modified_ms: millis(object.last_modified()),
        cache_control: None,
        metadata: Vec::new(),
        headers: Headers::default(),
    })
}

fn quoted(tag: &str) -> String {
    format!("\"{}\"", tag.trim_matches('"'))
}

fn content_type(declared: Option<&str>, key: &str) -> String {
    match declared {
        Some(t) if !t.is_empty() => t.to_owned(),
        _ => super::guess_content_type(key),
    }
}

fn millis(time: Option<&DateTime>) -> u64 {
    time.and_then(|t| t.to_millis().ok()).map_or(0, |ms| ms.max(0) as u64)
}

fn sorted(metadata: Option<&HashMap<String, String>>) -> Vec<(String, String)> {
    let mut pairs: Vec<_> = metadata
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    pairs.sort();
    pairs
}

fn metadata_map(options: &PutOptions) -> Option<HashMap<String, String>> {
    (!options.metadata.is_empty()).then(|| options.metadata.iter().cloned().collect())
}

/// S3 sends metadata as HTTP headers: printable ASCII only.
fn check_metadata(options: &PutOptions) -> StorageResult<()> {
    let printable = |s: &str| s.bytes().all(|b| (b' '..=b'~').contains(&b));
    for (k, v) in &options.metadata {
        if k.is_empty() || !k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') || !printable(v) {
            return Err(StorageError::Unsupported(format!(
                "S3 metadata must be ASCII (names: letters, digits, '-', '_'); '{k}' is not"
            )));
        }
    }
    for value in [Some(&options.content_type), options.cache_control.as_ref()]
        .into_iter()
        .flatten()
    {
        if !printable(value) {
            return Err(StorageError::Unsupported(format!(
                "'{value}' is not a valid header value"
            )));
        }
    }
    Ok(())
}

/// HTTP status of a failed request, if a response arrived.
fn status<E, R: HttpStatus>(err: &SdkError<E, R>) -> Option<u16> {
    err.raw_response().map(HttpStatus::code)
}

trait HttpStatus {
    fn code(&self) -> u16;
}

impl HttpStatus for aws_sdk_s3::config::http::HttpResponse {
    fn code(&self) -> u16 {
        self.status().as_u16()
    }
}

/// Map a failed request: a missing object is `NotFound`, a failed
/// precondition `PreconditionFailed`; anything else is the server's
/// problem or the network's, reported with the server's words.
fn s3_error<E>(op: &str, key: &str, err: SdkError<E, aws_sdk_s3::config::http::HttpResponse>) -> StorageError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let code = err
        .as_service_error()
        .and_then(|e| e.code())
        .unwrap_or_default()
        .to_owned();
    match (status(&err), code.as_str()) {
        (Some(404), "NoSuchBucket") => StorageError::unavailable(format!("S3 {op} '{key}': the bucket does not exist")),
        (Some(404), _) | (_, "NoSuchKey" | "NotFound") => StorageError::NotFound,
        (Some(412), _) | (_, "PreconditionFailed") => StorageError::PreconditionFailed,
        // A concurrent conditional write won; this one lost.
        (Some(409), "ConditionalRequestConflict") => StorageError::PreconditionFailed,
        (_, "KeyTooLongError") => StorageError::InvalidPath(format!("S3 refused the key '{key}' as too long")),
        (Some(403), _) => StorageError::unavailable(format!(
            "S3 {op} '{key}' was refused ({code}); check the credentials and the bucket's policy"
        )),
        _ => {
            // One sentence for callers and HTTP clients; the whole chain
            // goes to the log.
            tracing::warn!(op, key, "S3 request failed: {}", DisplayErrorContext(&err));
            StorageError::unavailable(format!("S3 {op} '{key}': {}", failure(&err, &code)))
        }
    }
}

/// Why a request failed, in a few words.
fn failure<E: ProvideErrorMetadata, R: HttpStatus>(err: &SdkError<E, R>, code: &str) -> String {
    match err {
        SdkError::TimeoutError(_) => "no answer within the request timeout".into(),
        SdkError::DispatchFailure(f) if f.is_timeout() => "no answer within the request timeout".into(),
        SdkError::DispatchFailure(f) if f.is_io() => "the server could not be reached".into(),
        SdkError::DispatchFailure(_) => "the request could not be sent".into(),
        SdkError::ResponseError(_) => "the server's answer could not be read".into(),
        SdkError::ServiceError(e) => {
            let status = status(err).map_or_else(String::new, |s| format!(" (HTTP {s})"));
            let message = e
                .err()
                .message()
                .map(|m| format!(": {}", m.chars().take(200).collect::<String>()))
                .unwrap_or_default();
            let code = if code.is_empty() { "an error" } else { code };
            format!("the server answered {code}{status}{message}")
        }
        _ => "the request failed".into(),
    }
}

/// As [`s3_error`], telling a create-only conflict from a changed etag.
fn conditional_error<E>(
    op: &str,
    key: &str,
    options: &PutOptions,
    err: SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
) -> StorageError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match (s3_error(op, key, err), &options.condition) {
        (StorageError::PreconditionFailed, Some(Condition::CreateOnly)) => StorageError::AlreadyExists,
        // If-Match on a missing object.
        (StorageError::NotFound, Some(Condition::IfMatch(_))) => StorageError::PreconditionFailed,
        (e, _) => e,
    }
}

#[async_trait]
impl ObjectStore for S3Store {
    fn describe(&self) -> String {
        self.inner.describe.clone()
    }

    async fn head(&self, key: &str) -> StorageResult<ObjectMeta> {
        self.inner.head(key).await
    }

    async fn get(&self, key: &str, range: Option<ByteRange>) -> StorageResult<(ObjectMeta, ByteStream)> {
        let inner = &self.inner;
        if range.is_some_and(|r| r.length == 0) {
            return Ok((inner.head(key).await?, Box::pin(tokio::io::empty())));
        }
        let mut request = inner.client.get_object().bucket(&inner.bucket).key(inner.key(key)?);
        if let Some(r) = range {
            let last = r.offset.saturating_add(r.length - 1);
            request = request.range(format!("bytes={}-{last}", r.offset));
        }
        let out = match request.send().await {
            Ok(out) => out,
            // A range starting past the end.
            Err(e) if status(&e) == Some(416) => {
                return Ok((inner.head(key).await?, Box::pin(tokio::io::empty())));
            }
            Err(e) => return Err(s3_error("GetObject", key, e)),
        };
        // A ranged answer gives the whole size after the '/'.
        let size = match (range, out.content_range()) {
            (None, _) => required_size("GetObject", key, out.content_length())?,
            (Some(_), Some(r)) => r
                .rsplit_once('/')
                .and_then(|(_, total)| total.parse().ok())
                .ok_or_else(|| {
                    StorageError::unavailable(format!("S3 answered GetObject '{key}' with a bad Content-Range '{r}'"))
                })?,
            // A server that ignores ranges sends the whole object.
            (Some(_), None) => required_size("GetObject", key, out.content_length())?,
        };
        let meta = ObjectMeta {
            size,
            etag: required_etag("GetObject", key, out.e_tag())?,
            content_type: content_type(out.content_type(), key),
            modified_ms: millis(out.last_modified()),
            cache_control: out.cache_control().map(str::to_owned),
            metadata: sorted(out.metadata()),
            headers: Headers {
                content_encoding: out.content_encoding().map(str::to_owned),
                ..Default::default()
            },
        };
        Ok((meta, Box::pin(out.body.into_async_read())))
    }

    async fn put(&self, key: &str, data: Bytes, options: &PutOptions) -> StorageResult<ObjectMeta> {
        let meta = self.inner.put(key, data, options).await?;
        self.inner.retry_aborts();
        Ok(meta)
    }

    async fn start_upload(&self, key: &str, options: PutOptions) -> StorageResult<Box<dyn ObjectUpload>> {
        check_metadata(&options)?;
        let full_key = self.inner.key(key)?;
        Ok(Box::new(S3Upload {
            inner: self.inner.clone(),
            key: key.to_owned(),
            full_key,
            options,
            buffer: BytesMut::new(),
            held: Held::default(),
            size: 0,
            multipart: None,
        }))
    }

    async fn put_file(
        &self,
        key: &str,
        path: &std::path::Path,
        size: u64,
        options: &PutOptions,
    ) -> StorageResult<ObjectMeta> {
        let inner = &self.inner;
        // One request where S3 takes one, so the object's ETag is the MD5
        // of its bytes (as S3 gives a single PutObject), not a multipart's.
        let meta = if size <= MAX_COPY_SIZE {
            inner
                .put_body(key, file_body(path, 0, size).await?, size, options)
                .await?
        } else {
            check_metadata(options)?;
            let full_key = inner.key(key)?;
            let upload_id = inner.create_multipart(key, &full_key, options).await?;
            let sent = inner.send_file_parts(key, &full_key, &upload_id, path, size).await;
            let completed = match sent {
                Ok(parts) => {
                    inner
                        .complete_multipart(key, &full_key, &upload_id, parts, size, options)
                        .await
                }
                Err(e) => Err(e),
            };
            if completed.is_err() {
                tokio::spawn(inner.clone().abort_upload(Unaborted {
                    key: key.to_owned(),
                    full_key,
                    upload_id,
                }));
            }
            completed?
        };
        inner.retry_aborts();
        Ok(meta)
    }

    async fn delete(&self, key: &str) -> StorageResult<()> {
        let inner = &self.inner;
        // S3 deletes succeed for missing keys; the trait reports them.
        inner.head(key).await?;
        inner
            .client
            .delete_object()
            .bucket(&inner.bucket)
            .key(inner.key(key)?)
            .send()
            .await
            .map_err(|e| s3_error("DeleteObject", key, e))?;
        Ok(())
    }

    async fn copy(&self, from: &str, to: &str, options: &PutOptions) -> StorageResult<ObjectMeta> {
        check_metadata(options)?;
        let inner = &self.inner;
        let source = inner.head(from).await?;
        if source.size > MAX_COPY_SIZE {
            return Err(StorageError::Unsupported(format!(
                "S3 copies objects of at most {MAX_COPY_SIZE} bytes in one request; '{from}' is {} bytes",
                source.size
            )));
        }
        let headers = if options.headers.is_empty() {
            source.headers.clone()
        } else {
            options.headers.clone()
        };
        let content_type = if options.content_type.is_empty() {
            source.content_type.clone()
        } else {
            options.content_type.clone()
        };
        let mut request = inner
            .client
            .copy_object()
            .bucket(&inner.bucket)
            .key(inner.key(to)?)
            .copy_source(copy_source(&inner.bucket, &inner.key(from)?))
            // The source must still be the object just looked at.
            .copy_source_if_match(quoted(&source.etag))
            .metadata_directive(aws_sdk_s3::types::MetadataDirective::Replace)
            .content_type(&content_type)
            .set_content_disposition(
                options
                    .content_disposition
                    .clone()
                    .or(headers.content_disposition.clone()),
            )
            .set_content_encoding(headers.content_encoding.clone())
            .set_cache_control(options.cache_control.clone().or(source.cache_control.clone()))
            .set_metadata(if options.metadata.is_empty() {
                (!source.metadata.is_empty()).then(|| source.metadata.iter().cloned().collect())
            } else {
                metadata_map(options)
            });
        let (if_none_match, if_match) = condition_headers(options.condition.as_ref());
        request = request.set_if_none_match(if_none_match).set_if_match(if_match);
        let out = request
            .send()
            .await
            .map_err(|e| conditional_error("CopyObject", to, options, e))?;
        let result = out.copy_object_result();
        let etag = match etag(result.and_then(|r| r.e_tag())) {
            Some(tag) => tag,
            None => {
                inner
                    .written_meta("CopyObject", to, source.size, None, options)
                    .await?
                    .etag
            }
        };
        Ok(ObjectMeta {
            size: source.size,
            etag,
            content_type,
            modified_ms: result
                .and_then(|r| r.last_modified())
                .map_or_else(super::now_ms, |t| millis(Some(t))),
            cache_control: options.cache_control.clone().or(source.cache_control),
            metadata: if options.metadata.is_empty() {
                source.metadata
            } else {
                options.metadata.clone()
            },
            headers,
        })
    }

    async fn list(&self, prefix: &str, after: Option<&str>, limit: usize) -> StorageResult<KeyPage> {
        let inner = &self.inner;
        let full_prefix = format!("{}{prefix}", inner.prefix);
        let mut start_after = after.map(|a| format!("{}{a}", inner.prefix));
        let mut token: Option<String> = None;
        let mut page = KeyPage::default();
        let limit = limit.max(1);
        loop {
            let want = limit - page.objects.len();
            let out = inner
                .client
                .list_objects_v2()
                .bucket(&inner.bucket)
                .prefix(&full_prefix)
                .set_start_after(start_after.take())
                .set_continuation_token(token.take())
                .max_keys(want.min(LIST_PAGE) as i32)
                .send()
                .await
                .map_err(|e| s3_error("ListObjectsV2", prefix, e))?;
            for object in out.contents() {
                let Some(key) = object.key().and_then(|k| inner.strip(k)) else {
                    continue;
                };
                if is_directory_entry(key, object) {
                    continue;
                }
                page.objects.push((key.to_owned(), listed_meta(key, object)?));
            }
            let more = out.is_truncated().unwrap_or(false);
            token = out.next_continuation_token().map(str::to_owned);
            if !more || token.is_none() {
                return Ok(page);
            }
            if page.objects.len() >= limit {
                page.next = page.objects.last().map(|(k, _)| k.clone());
                return Ok(page);
            }
        }
    }

    async fn split(&self, prefix: &str) -> StorageResult<Option<Split>> {
        let inner = &self.inner;
        let full_prefix = format!("{}{prefix}", inner.prefix);
        let mut token: Option<String> = None;
        let mut files = Vec::new();
        let mut dirs = Vec::new();
        loop {
            let out = inner
                .client
                .list_objects_v2()
                .bucket(&inner.bucket)
                .prefix(&full_prefix)
                .delimiter("/")
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(|e| s3_error("ListObjectsV2", prefix, e))?;
            for object in out.contents() {
                let Some(key) = object.key().and_then(|k| inner.strip(k)) else {
                    continue;
                };
                if is_directory_entry(key, object) {
                    continue;
                }
                files.push((key.to_owned(), listed_meta(key, object)?));
            }
            dirs.extend(
                out.common_prefixes()
                    .iter()
                    .filter_map(|p| p.prefix().and_then(|p| inner.strip(p)))
                    .map(str::to_owned),
            );
            token = out.next_continuation_token().map(str::to_owned);
            if !out.is_truncated().unwrap_or(false) || token.is_none() {
                return Ok(Some((files, dirs)));
            }
        }
    }

    async fn create_parts(&self, key: &str, options: &PutOptions) -> StorageResult<Option<String>> {
        check_metadata(options)?;
        let inner = &self.inner;
        inner.create_multipart(key, &inner.key(key)?, options).await.map(Some)
    }

    async fn put_part(
        &self,
        key: &str,
        upload: &str,
        number: i32,
        body: super::PartBody,
        size: u64,
    ) -> StorageResult<String> {
        let inner = &self.inner;
        // Streamed, so unsigned: the client's own digests were checked.
        let body = SdkBody::from_body_1_x(PartStream {
            body: Mutex::new(body),
            left: size,
        });
        // The request lasts as long as the client takes to send the part,
        // which the endpoint's idle timeout bounds, not the whole-request
        // timeout of this store's own requests.
        let timeouts = TimeoutConfig::builder()
            .disable_operation_timeout()
            .disable_operation_attempt_timeout()
            .build();
        let out = inner
            .client
            .upload_part()
            .bucket(&inner.bucket)
            .key(inner.key(key)?)
            .upload_id(upload)
            .part_number(number)
            .content_length(size as i64)
            .body(body)
            .customize()
            .config_override(aws_sdk_s3::config::Builder::default().timeout_config(timeouts))
            .send()
            .await
            .map_err(|e| s3_error("UploadPart", key, e))?;
        required_etag("UploadPart", key, out.e_tag())
    }

    async fn complete_parts(
        &self,
        key: &str,
        upload: &str,
        parts: &[(i32, String)],
        size: u64,
        options: &PutOptions,
    ) -> StorageResult<ObjectMeta> {
        let inner = &self.inner;
        let parts = parts
            .iter()
            .map(|(number, etag)| CompletedPart::builder().part_number(*number).e_tag(etag).build())
            .collect();
        let meta = inner
            .complete_multipart(key, &inner.key(key)?, upload, parts, size, options)
            .await?;
        inner.retry_aborts();
        Ok(meta)
    }

    async fn abort_parts(&self, key: &str, upload: &str) -> StorageResult<()> {
        let inner = &self.inner;
        let upload = Unaborted {
            key: key.to_owned(),
            full_key: inner.key(key)?,
            upload_id: upload.to_owned(),
        };
        inner.send_abort(&upload).await.map(drop)
    }

    fn scratch(&self) -> Option<Arc<dyn ObjectStore>> {
        let inner = &self.inner;
        let prefix = format!("{}{}/", inner.prefix, super::SCRATCH);
        Some(Arc::new(S3Store {
            inner: Arc::new(Inner {
                client: inner.client.clone(),
                bucket: inner.bucket.clone(),
                describe: format!("{} (scratch)", inner.describe),
                prefix,
                part_size: inner.part_size,
                budget: inner.budget.clone(),
                unaborted: Mutex::default(),
            }),
        }))
    }

    async fn sweep_abandoned(
        &self,
        older_than: Duration,
        open: &std::collections::HashSet<String>,
    ) -> StorageResult<u64> {
        let inner = &self.inner;
        let cutoff = std::time::SystemTime::now() - older_than;
        let mut stale = Vec::new();
        let (mut key_marker, mut upload_marker) = (None, None);
        loop {
            let page = inner
                .client
                .list_multipart_uploads()
                .bucket(&inner.bucket)
                .prefix(&inner.prefix)
                .set_key_marker(key_marker.take())
                .set_upload_id_marker(upload_marker.take())
                .send()
                .await
                .map_err(|e| s3_error("ListMultipartUploads", &inner.prefix, e))?;
            for upload in page.uploads() {
                let started = upload
                    .initiated()
                    .and_then(|t| std::time::SystemTime::try_from(*t).ok());
                if let (Some(key), Some(id), Some(started)) = (upload.key(), upload.upload_id(), started)
                    && started <= cutoff
                    && !open.contains(id)
                {
                    stale.push(Unaborted {
                        key: inner.strip(key).unwrap_or(key).to_owned(),
                        full_key: key.to_owned(),
                        upload_id: id.to_owned(),
                    });
                }
            }
            if page.is_truncated() != Some(true) {
                break;
            }
            key_marker = page.next_key_marker().map(str::to_owned);
            upload_marker = page.next_upload_id_marker().map(str::to_owned);
            if key_marker.is_none() && upload_marker.is_none() {
                break;
            }
        }
        let mut aborted = 0;
        for upload in stale {
            aborted += u64::from(inner.send_abort(&upload).await?);
        }
        Ok(aborted)
    }

    async fn presign_get(
        &self,
        key: &str,
        expires_in: std::time::Duration,
        presented: &super::Presented,
    ) -> StorageResult<Option<String>> {
        let config = aws_sdk_s3::presigning::PresigningConfig::expires_in(expires_in)
            .map_err(|e| StorageError::InvalidPath(format!("cannot presign for {expires_in:?}: {e}")))?;
        let inner = &self.inner;
        let request = inner
            .client
            .get_object()
            .bucket(&inner.bucket)
            .key(inner.key(key)?)
            .set_response_content_type(presented.content_type.clone())
            .set_response_content_disposition(presented.content_disposition.clone())
            .set_response_cache_control(presented.cache_control.clone())
            .presigned(config)
            .await
            .map_err(|e| s3_error("GetObject (presigning)", key, e))?;
        Ok(Some(request.uri().to_owned()))
    }
}

impl Inner {
    /// Upload the file at `path`, `size` bytes, as the parts of `upload_id`,
    /// a few at once, each read from the file as it is sent: nothing of it
    /// is buffered in memory, so it needs nothing of the write budget.
    async fn send_file_parts(
        &self,
        key: &str,
        full_key: &str,
        upload_id: &str,
        path: &std::path::Path,
        size: u64,
    ) -> StorageResult<Vec<CompletedPart>> {
        let part_size = self.part_size as u64;
        let mut in_flight = JoinSet::new();
        let mut done = Vec::new();
        let (mut offset, mut number) = (0u64, 1i32);
        while offset < size {
            while in_flight.len() >= PARTS_IN_FLIGHT {
                done.push(joined(in_flight.join_next().await)?);
            }
            let length = part_size.min(size - offset);
            let request = self
                .client
                .upload_part()
                .bucket(&self.bucket)
                .key(full_key)
                .upload_id(upload_id)
                .part_number(number)
                .content_length(length as i64)
                .body(file_body(path, offset, length).await?);
            let key = key.to_owned();
            in_flight.spawn(async move {
                let out = request.send().await.map_err(|e| s3_error("UploadPart", &key, e))?;
                Ok(CompletedPart::builder()
                    .part_number(number)
                    .set_e_tag(out.e_tag().map(str::to_owned))
                    .build())
            });
            offset += length;
            number += 1;
        }
        while let Some(part) = in_flight.join_next().await {
            done.push(joined(Some(part))?);
        }
        done.sort_by_key(|p| p.part_number());
        Ok(done)
    }
}

/// `length` bytes of the file at `path` from `offset`, as a request body
/// read from the file as it is sent (and read again for a retry).
async fn file_body(path: &std::path::Path, offset: u64, length: u64) -> StorageResult<SdkBody> {
    SdkBody::read_from()
        .path(path)
        .offset(offset)
        .length(aws_sdk_s3::primitives::Length::Exact(length))
        .buffer_size(FILE_READ_BUFFER)
        .build()
        .await
        .map_err(|e| StorageError::unavailable(format!("reading {}: {e}", path.display())))
}

/// `bucket/key` for CopyObject, with the key percent-encoded.
fn copy_source(bucket: &str, key: &str) -> String {
    format!("{bucket}/{}", crate::path::percent_encode(key))
}

/// A streamed write: one PutObject if it fits in a part, a multipart upload
/// otherwise.
/// A part's bytes as a request body of a known length. The mutex only
/// makes the body `Sync`, as the SDK asks; it is never contended.
struct PartStream {
    body: Mutex<super::PartBody>,
    left: u64,
}

impl http_body::Body for PartStream {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, std::io::Error>>> {
        let this = self.get_mut();
        let body = this.body.get_mut().unwrap_or_else(PoisonError::into_inner);
        match std::task::ready!(body.as_mut().poll_next(cx)) {
            Some(Ok(chunk)) => {
                this.left = this.left.saturating_sub(chunk.len() as u64);
                std::task::Poll::Ready(Some(Ok(http_body::Frame::data(chunk))))
            }
            Some(Err(e)) => std::task::Poll::Ready(Some(Err(e))),
            None => std::task::Poll::Ready(None),
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.left)
    }
}

struct S3Upload {
    inner: Arc<Inner>,
    key: String,
    full_key: String,
    options: PutOptions,
    /// Bytes not yet sent.
    buffer: BytesMut,
    /// The write budget reserved for `buffer`.
    held: Held,
    size: u64,
    multipart: Option<Multipart>,
}

struct Multipart {
    upload_id: String,
    next_part: i32,
    /// Each part's task holds the budget reserved for its bytes.
    in_flight: JoinSet<StorageResult<CompletedPart>>,
    done: Vec<CompletedPart>,
    /// Set once completed or aborted, so that drop leaves it alone.
    settled: bool,
}

impl S3Upload {
    /// Send one part, waiting for a free slot first.
    async fn send_part(&mut self, data: Bytes, held: Held) -> StorageResult<()> {
        if self.multipart.is_none() {
            let upload_id = self
                .inner
                .create_multipart(&self.key, &self.full_key, &self.options)
                .await?;
            self.multipart = Some(Multipart {
                upload_id,
                next_part: 1,
                in_flight: JoinSet::new(),
                done: Vec::new(),
                settled: false,
            });
        }
        let multipart = self.multipart.as_mut().expect("started above");
        while multipart.in_flight.len() >= PARTS_IN_FLIGHT {
            let part = joined(multipart.in_flight.join_next().await)?;
            multipart.done.push(part);
        }
        let number = multipart.next_part;
        multipart.next_part += 1;
        let request = self
            .inner
            .client
            .upload_part()
            .bucket(&self.inner.bucket)
            .key(&self.full_key)
            .upload_id(&multipart.upload_id)
            .part_number(number)
            .body(SdkBody::from(data));
        let key = self.key.clone();
        multipart.in_flight.spawn(async move {
            let out = request.send().await.map_err(|e| s3_error("UploadPart", &key, e))?;
            drop(held);
            Ok(CompletedPart::builder()
                .part_number(number)
                .set_e_tag(out.e_tag().map(str::to_owned))
                .build())
        });
        Ok(())
    }

    async fn complete(&mut self) -> StorageResult<ObjectMeta> {
        let rest = self.buffer.split().freeze();
        let held = std::mem::take(&mut self.held);
        if self.multipart.is_none() {
            let meta = self.inner.put(&self.key, rest, &self.options).await?;
            drop(held);
            self.inner.retry_aborts();
            return Ok(meta);
        }
        if !rest.is_empty() {
            self.send_part(rest, held).await?;
        }
        let multipart = self.multipart.as_mut().expect("a multipart upload");
        while let Some(part) = multipart.in_flight.join_next().await {
            multipart.done.push(joined(Some(part))?);
        }
        let mut parts = std::mem::take(&mut multipart.done);
        parts.sort_by_key(|p| p.part_number());
        let meta = self
            .inner
            .complete_multipart(
                &self.key,
                &self.full_key,
                &multipart.upload_id,
                parts,
                self.size,
                &self.options,
            )
            .await?;
        multipart.settled = true;
        self.inner.retry_aborts();
        Ok(meta)
    }
}

fn joined(
    result: Option<Result<StorageResult<CompletedPart>, tokio::task::JoinError>>,
) -> StorageResult<CompletedPart> {
    match result {
        Some(Ok(part)) => part,
        Some(Err(e)) => Err(StorageError::unavailable(format!("uploading a part failed: {e}"))),
        None => Err(StorageError::unavailable("no part upload was running")),
    }
}

#[async_trait]
impl ObjectUpload for S3Upload {
    async fn write(&mut self, mut chunk: Bytes, held: Held) -> StorageResult<()> {
        // The part being filled is reserved whole before any of it is
        // kept, and nothing else is held meanwhile: a writer never waits
        // for room while holding room that only its own progress would
        // give back, so some writer can always finish its part.
        drop(held);
        let part_size = self.inner.part_size;
        while !chunk.is_empty() {
            if self.held.bytes() == 0 {
                match self.inner.budget.reserve(part_size).await {
                    Ok(held) => self.held = held,
                    Err(e) => {
                        self.abort();
                        return Err(e);
                    }
                }
            }
            if self.buffer.capacity() == 0 {
                // Small objects stay small; large ones grow towards a part.
                self.buffer.reserve(part_size.min(chunk.len().max(64 * 1024)));
            }
            let take = (part_size - self.buffer.len()).min(chunk.len());
            self.buffer.extend_from_slice(&chunk.split_to(take));
            self.size += take as u64;
            if self.buffer.len() >= part_size {
                let part = self.buffer.split().freeze();
                let held = std::mem::take(&mut self.held);
                if let Err(e) = self.send_part(part, held).await {
                    self.abort();
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    async fn finish(mut self: Box<Self>) -> StorageResult<ObjectMeta> {
        let result = self.complete().await;
        if result.is_err() {
            self.abort();
        }
        result
    }
}

impl S3Upload {
    /// Abort the multipart upload, if any, in the background.
    fn abort(&mut self) {
        let Some(multipart) = self.multipart.as_mut() else {
            return;
        };
        if multipart.settled {
            return;
        }
        multipart.settled = true;
        multipart.in_flight.abort_all();
        let upload = Unaborted {
            key: self.key.clone(),
            full_key: self.full_key.clone(),
            upload_id: multipart.upload_id.clone(),
        };
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(self.inner.clone().abort_upload(upload));
            }
            // Dropped outside a runtime: abort with the next write instead.
            Err(_) => self.inner.abort_later(upload),
        }
    }
}

impl Drop for S3Upload {
    fn drop(&mut self) {
        self.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_sources_are_percent_encoded() {
        assert_eq!(copy_source("b", "a b/ü?.jpg"), "b/a%20b/%C3%BC%3F.jpg");
    }

    #[test]
    fn metadata_must_be_header_safe() {
        let mut options = PutOptions {
            content_type: "image/jpeg".into(),
            ..Default::default()
        };
        assert!(check_metadata(&options).is_ok());
        options.metadata = vec![("alt".into(), "ünïcode".into())];
        assert!(matches!(check_metadata(&options), Err(StorageError::Unsupported(_))));
        options.metadata = vec![("bad key".into(), "x".into())];
        assert!(matches!(check_metadata(&options), Err(StorageError::Unsupported(_))));
    }
}
