//! The S3 endpoint: a second door onto the same `Silo` the sidecar serves,
//! for CMS modules that already speak S3 (Drupal's s3fs, S3-Uploads, Zulip,
//! rclone, the AWS CLI). Buckets are volumes; keys are paths. Every object
//! written goes through the upload pipeline and the storage core, so the
//! content policy, the plugins, quotas and the metadata cache apply as to
//! any other write. Requests are signed with SigV4 by a principal's key
//! (`crate::principals`); an unsigned request may only read objects of a
//! public volume.
//!
//! Built on `s3s`, which parses requests, verifies signatures (headers,
//! presigned URLs, aws-chunked bodies) and writes S3's XML; this module
//! decides who may do what and answers from the storage core.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use s3s::access::{S3Access, S3AccessContext};
use s3s::auth::{S3Auth, SecretKey};
use s3s::dto::{self, ETag, StreamingBlob, Timestamp, TimestampFormat};
use s3s::host::{S3Host, VirtualHost};
use s3s::{S3, S3Error, S3Request, S3Response, S3Result, s3_error};

use crate::access::{Caller, Denied, Op, RequestError};
use crate::error::StorageError;
use crate::listing::{ListRequest, Listing, Marker};
use crate::multipart::MultipartError;
use crate::principals::{Principal, PrincipalsHandle};
use crate::serving::{Conditions, Overrides, RangeSpec, ReadRequest, Served, ServedStatus, TagList};
use crate::vfs::Visibility;
use crate::{Condition, Headers, ObjectMeta};
use crate::{CopyRequest, Description, Outcome, PutError, PutRequest, Silo, UploadError};

/// The longest a presigned URL may live (AWS's own bound).
pub const MAX_PRESIGNED_SECONDS: u64 = 7 * 24 * 3600;
/// Keys one DeleteObjects may name (AWS's bound).
pub const MAX_DELETE_KEYS: usize = 1000;
/// XML bodies (DeleteObjects, and later CompleteMultipartUpload) are
/// bounded: 1000 keys of 1024 bytes, with their markup.
pub const MAX_XML_BYTES: usize = 2 << 20;

/// The endpoint's settings.
#[derive(Debug, Clone)]
pub struct S3ApiSettings {
    /// Virtual-host addressing under this domain (`bucket.<domain>`); path
    /// style always works.
    pub base_domain: Option<String>,
    /// What GetBucketLocation answers and signatures are checked against.
    pub region: String,
    /// A client that sends its request headers, or the next piece of a
    /// body, more slowly than this is cut off.
    pub idle_timeout: Duration,
}

/// The S3 operations of one `Silo`.
pub struct SiloS3 {
    silo: Arc<Silo>,
    principals: Arc<PrincipalsHandle>,
    settings: S3ApiSettings,
}

/// The operation a request turned out to be, for the metrics: filled in by
/// the access check, read when the response goes out.
#[derive(Clone, Default)]
struct OperationSlot(Arc<OnceLock<String>>);

fn storage_error(e: StorageError) -> S3Error {
    match e {
        StorageError::NotFound => s3_error!(NoSuchKey),
        StorageError::AlreadyExists | StorageError::PreconditionFailed => {
            s3_error!(
                PreconditionFailed,
                "the object changed or exists: the condition does not hold"
            )
        }
        StorageError::AccessDenied => s3_error!(AccessDenied),
        StorageError::Forbidden(why) => s3_error!(AccessDenied, "{why}"),
        StorageError::InvalidPath(why) => s3_error!(InvalidArgument, "{why}"),
        StorageError::TooLarge => s3_error!(EntityTooLarge),
        StorageError::QuotaExceeded(why) => s3_error!(AccessDenied, "{why}"),
        StorageError::Unsupported(why) => s3_error!(NotImplemented, "{why}"),
        StorageError::Unavailable(why) => s3_error!(ServiceUnavailable, "{why}"),
        StorageError::Busy(why) => s3_error!(SlowDown, "{why}"),
    }
}

fn denied(e: Denied) -> S3Error {
    match e {
        Denied::Unauthenticated => s3_error!(AccessDenied, "this request needs a signature"),
        e @ Denied::NotGranted { .. } => s3_error!(AccessDenied, "{e}"),
        e @ Denied::NoSuchVolume(_) => s3_error!(NoSuchBucket, "{e}"),
    }
}

fn request_error(e: RequestError) -> S3Error {
    match e {
        RequestError::Denied(e) => denied(e),
        RequestError::Storage(e) => storage_error(e),
    }
}

fn upload_error(e: UploadError) -> S3Error {
    match e {
        UploadError::Denied(e) => denied(e),
        UploadError::Multipart(e) => multipart_error(e),
        UploadError::Put(e) => put_error(e),
    }
}

fn multipart_error(e: MultipartError) -> S3Error {
    match e {
        MultipartError::NoSuchUpload => s3_error!(NoSuchUpload),
        MultipartError::InvalidPartNumber => s3_error!(InvalidArgument, "{e}"),
        MultipartError::TooManyUploads(_) => s3_error!(AccessDenied, "{e}"),
        MultipartError::TooLarge(_) => s3_error!(EntityTooLarge, "{e}"),
        MultipartError::InvalidPart(_) => s3_error!(InvalidPart, "{e}"),
        MultipartError::InvalidPartOrder => s3_error!(InvalidPartOrder, "{e}"),
        MultipartError::EntityTooSmall(_) => s3_error!(EntityTooSmall, "{e}"),
        MultipartError::Body(ref inner) if inner.kind() == std::io::ErrorKind::TimedOut => {
            s3_error!(RequestTimeout, "{e}")
        }
        MultipartError::Body(_) | MultipartError::Incomplete(..) => s3_error!(IncompleteBody, "{e}"),
        MultipartError::LengthRequired => s3_error!(MissingContentLength, "{e}"),
        MultipartError::Storage(StorageError::NotFound) => s3_error!(NoSuchUpload),
        MultipartError::Storage(inner) => storage_error(inner),
    }
}

/// A judged upload's report, or the error S3 gives for why it was not
/// stored.
fn stored(report: crate::UploadReport) -> S3Result<crate::UploadReport> {
    let message = report.error.as_ref().map_or_else(String::new, |e| e.message.clone());
    Err(match report.outcome() {
        Outcome::Stored => return Ok(report),
        Outcome::Refused => s3_error!(
            AccessDenied,
            "refused by {}: {}",
            report.rejected_by.as_deref().unwrap_or("a plugin"),
            report.reason.as_deref().unwrap_or("no reason given")
        ),
        Outcome::Conflict => s3_error!(PreconditionFailed, "{message}"),
        Outcome::Unavailable => s3_error!(ServiceUnavailable, "{message}"),
        Outcome::Busy => s3_error!(SlowDown, "{message}"),
        Outcome::TooLarge => s3_error!(EntityTooLarge, "{message}"),
        Outcome::Forbidden => s3_error!(AccessDenied, "{message}"),
        Outcome::Failed => s3_error!(
            InternalError,
            "{}: {message}",
            report.error.as_ref().map_or("error", |e| e.code.as_str())
        ),
    })
}

/// Why an upload or a copy was not judged, as S3 answers it.
fn put_error(e: PutError) -> S3Error {
    match e {
        PutError::Denied(e) => denied(e),
        PutError::Storage(e) => storage_error(e),
        PutError::TooLarge { volume, limit } => {
            s3_error!(EntityTooLarge, "volume '{volume}' takes objects of up to {limit} bytes")
        }
        PutError::Body(e) if e.kind() == std::io::ErrorKind::TimedOut => s3_error!(RequestTimeout, "{e}"),
        PutError::Body(e) => s3_error!(IncompleteBody, "reading the request body: {e}"),
        PutError::BadDigest(message) => s3_error!(BadDigest, "{message}"),
        PutError::SourceCondition => s3_error!(PreconditionFailed, "the copy source's condition does not hold"),
        PutError::SourceRange => s3_error!(InvalidArgument, "x-amz-copy-source-range is not within the source"),
        PutError::OntoItself => s3_error!(
            InvalidRequest,
            "this copy request is illegal because it is trying to copy an object to itself without changing its metadata"
        ),
    }
}

/// Canned ACLs: `private` and `public-read` change nothing (a volume's
/// visibility decides who reads it); others are refused.
fn check_acl(acl: Option<&dto::ObjectCannedACL>) -> S3Result<()> {
    match acl.map(|a| a.as_str()) {
        None | Some("private" | "public-read") => Ok(()),
        Some(other) => Err(s3_error!(
            NotImplemented,
            "canned ACL '{other}' is not supported: a volume's visibility decides who may read it"
        )),
    }
}

fn etag(meta: &ObjectMeta) -> ETag {
    ETag::Strong(meta.etag.trim_matches('"').to_owned())
}

fn timestamp(ms: u64) -> Timestamp {
    Timestamp::from(UNIX_EPOCH + Duration::from_millis(ms))
}

/// What an operation asks to do in the bucket it names.
fn needed(operation: &str) -> Op {
    match operation {
        "GetObject" | "HeadObject" => Op::Read,
        "HeadBucket"
        | "GetBucketLocation"
        | "ListObjects"
        | "ListObjectsV2"
        | "ListObjectVersions"
        | "ListMultipartUploads"
        | "ListParts"
        | "GetObjectAcl"
        | "GetBucketAcl"
        | "GetBucketVersioning"
        | "GetBucketCors"
        | "GetBucketPolicy"
        | "GetBucketLifecycleConfiguration"
        | "GetObjectTagging"
        | "GetBucketTagging" => Op::List,
        "PutObject"
        | "CopyObject"
        | "CreateMultipartUpload"
        | "UploadPart"
        | "UploadPartCopy"
        | "CompleteMultipartUpload"
        | "AbortMultipartUpload" => Op::Write,
        "DeleteObject" | "DeleteObjects" => Op::Delete,
        // Bucket configuration and the like: refused by the operation
        // itself (NotImplemented), for whoever has a grant there.
        _ => Op::Configure,
    }
}

/// Operations whose call into the core decides access itself (and reads
/// no body before it has).
fn decided_by_core(operation: &str) -> bool {
    matches!(
        operation,
        "GetObject"
            | "HeadObject"
            | "PutObject"
            | "CopyObject"
            | "DeleteObject"
            | "DeleteObjects"
            | "ListObjects"
            | "ListObjectsV2"
            | "ListObjectVersions"
    )
}

/// Bodies other than objects' and parts' are XML read whole into memory:
/// one declared larger than [`MAX_XML_BYTES`], or sent without a length,
/// is refused before a byte of it is read.
fn check_body_length(operation: &str, headers: &http::HeaderMap) -> S3Result<()> {
    if matches!(operation, "PutObject" | "UploadPart") {
        return Ok(());
    }
    let length = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    match length("x-amz-decoded-content-length").or_else(|| length("content-length")) {
        Some(n) if n > MAX_XML_BYTES as u64 => Err(s3_error!(
            MaxMessageLengthExceeded,
            "the request body is {n} bytes; XML bodies are limited to {MAX_XML_BYTES}"
        )),
        None if headers.contains_key(http::header::TRANSFER_ENCODING) => Err(s3_error!(
            MissingContentLength,
            "XML request bodies need a Content-Length"
        )),
        _ => Ok(()),
    }
}

/// Access is decided here for every request, before its body is read.
struct Policy {
    silo: Arc<Silo>,
    principals: Arc<PrincipalsHandle>,
}

#[async_trait::async_trait]
impl S3Access for Policy {
    async fn check(&self, cx: &mut S3AccessContext<'_>) -> S3Result<()> {
        let operation = cx.s3_op().name().to_owned();
        if let Some(slot) = cx.extensions_mut().get::<OperationSlot>() {
            let _ = slot.0.set(operation.clone());
        }
        if let Some(expires) = presigned_expiry(cx.uri())
            && expires > MAX_PRESIGNED_SECONDS
        {
            return Err(s3_error!(
                AuthorizationQueryParametersError,
                "X-Amz-Expires must be at most {MAX_PRESIGNED_SECONDS} seconds (7 days)"
            ));
        }
        // Buckets are volumes: made in the config file, never over S3. An
        // existing one is answered as AWS answers its owner (clients such as
        // rclone create the bucket they are told to use).
        let exists = match cx.s3_path() {
            s3s::path::S3Path::Bucket { bucket } => self.silo.config().volumes.contains_key(&**bucket),
            _ => false,
        };
        if operation == "DeleteBucket" || (operation == "CreateBucket" && !exists) {
            return Err(s3_error!(
                NotImplemented,
                "buckets are Silo's volumes, configured in its config file, not created or deleted over S3"
            ));
        }
        if operation == "PostObject" {
            return Err(s3_error!(
                NotImplemented,
                "browser-form POST uploads are not taken; use PutObject or a presigned PUT"
            ));
        }
        check_body_length(&operation, cx.headers())?;
        let caller = match cx.credentials() {
            Some(credentials) => Caller::Principal(
                self.principals
                    .current()
                    .by_access_key(&credentials.access_key)
                    .ok_or_else(|| s3_error!(InvalidAccessKeyId))?,
            ),
            None => Caller::Anonymous,
        };
        // s3s applies `response-*` overrides to any GetObject; as on S3,
        // an anonymous request may not ask for them.
        if matches!(caller, Caller::Anonymous)
            && cx
                .uri()
                .query()
                .is_some_and(|q| q.split('&').any(|p| p.starts_with("response-")))
        {
            return Err(s3_error!(
                InvalidRequest,
                "Request specific response headers cannot be used for anonymous GET requests."
            ));
        }
        let (bucket, key) = match cx.s3_path() {
            s3s::path::S3Path::Root => {
                // ListBuckets: the buckets a principal has grants on.
                return match caller {
                    Caller::Anonymous => Err(denied(Denied::Unauthenticated)),
                    _ => Ok(()),
                };
            }
            s3s::path::S3Path::Bucket { bucket } => (bucket.to_string(), String::new()),
            s3s::path::S3Path::Object { bucket, key } => (bucket.to_string(), key.to_string()),
        };
        if decided_by_core(&operation) {
            return Ok(());
        }
        self.silo
            .authorize(&caller, &bucket, &key, needed(&operation))
            .map_err(denied)
    }
}

/// `X-Amz-Expires` of a presigned URL, if this is one.
fn presigned_expiry(uri: &http::Uri) -> Option<u64> {
    uri.query()?
        .split('&')
        .find_map(|pair| pair.strip_prefix("X-Amz-Expires="))
        .map(|v| v.parse().unwrap_or(u64::MAX))
}

/// The secret of a principal's key, for s3s to check signatures with.
struct Keys(Arc<PrincipalsHandle>);

#[async_trait::async_trait]
impl S3Auth for Keys {
    async fn get_secret_key(&self, access_key: &str) -> S3Result<SecretKey> {
        match self.0.current().by_access_key(access_key) {
            Some(p) => p
                .secret_key()
                .map(SecretKey::from)
                .ok_or_else(|| s3_error!(InvalidAccessKeyId)),
            None => Err(s3_error!(InvalidAccessKeyId)),
        }
    }
}

/// Path style on any host; virtual-host style (`bucket.<base_domain>`)
/// only under the configured domain, so that an unknown host is never
/// taken for a bucket name.
struct Hosts {
    base_domain: Option<String>,
}

impl S3Host for Hosts {
    fn parse_host_header<'a>(&'a self, host: &'a str) -> S3Result<VirtualHost<'a>> {
        let name = host.rsplit_once(':').map_or(host, |(name, port)| {
            if port.bytes().all(|b| b.is_ascii_digit()) {
                name
            } else {
                host
            }
        });
        if let Some(base) = &self.base_domain
            && let Some(bucket) = name.strip_suffix(base.as_str()).and_then(|b| b.strip_suffix('.'))
            && !bucket.is_empty()
        {
            return Ok(VirtualHost::new(base.as_str()).with_bucket(bucket));
        }
        Ok(VirtualHost::new(name))
    }
}

/// Bucket names are volume names, which may hold `_` (not an AWS bucket
/// name): any configured volume is valid; an unknown name is answered
/// NoSuchBucket by the access check.
struct VolumeNames;

impl s3s::validation::NameValidation for VolumeNames {
    fn validate_bucket_name(&self, name: &str) -> bool {
        !name.is_empty()
            && name.len() <= 63
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_' || b == b'.')
    }
}

/// The endpoint as a hyper service: s3s with Silo's keys, access policy,
/// host parser and operations, counted in `/metrics` by operation and
/// status.
pub fn service(
    silo: Arc<Silo>,
    principals: Arc<PrincipalsHandle>,
    settings: S3ApiSettings,
) -> impl hyper::service::Service<
    http::Request<hyper::body::Incoming>,
    Response = http::Response<s3s::Body>,
    Error = s3s::HttpError,
    Future = impl Send,
> + Clone
+ Send
+ 'static {
    let mut builder = s3s::service::S3ServiceBuilder::new(SiloS3 {
        silo: silo.clone(),
        principals: principals.clone(),
        settings: settings.clone(),
    });
    builder.set_auth(Keys(principals.clone()));
    builder.set_access(Policy {
        silo: silo.clone(),
        principals,
    });
    builder.set_host(Hosts {
        base_domain: settings.base_domain.clone(),
    });
    builder.set_validation(VolumeNames);
    let mut config = s3s::config::S3Config::default();
    config.xml_max_body_size = MAX_XML_BYTES;
    builder.set_config(Arc::new(s3s::config::StaticConfigProvider::new(Arc::new(config))));
    let s3 = builder.build();
    hyper::service::service_fn(move |mut request: http::Request<hyper::body::Incoming>| {
        let s3 = s3.clone();
        let silo = silo.clone();
        async move {
            let started = std::time::Instant::now();
            let slot = OperationSlot::default();
            request.extensions_mut().insert(slot.clone());
            let head = request.method() == http::Method::HEAD;
            let request = request.map(|body| s3s::Body::http_body(Lingering(Some(body))));
            let mut response = s3.call(request).await;
            // s3s answers every HeadObject 200; a ranged one is 206, as
            // its GetObject is.
            if let Ok(r) = response.as_mut()
                && head
                && r.status() == http::StatusCode::OK
                && r.headers().contains_key(http::header::CONTENT_RANGE)
            {
                *r.status_mut() = http::StatusCode::PARTIAL_CONTENT;
            }
            let status = response.as_ref().map_or(500, |r| r.status().as_u16());
            // A request refused before it was read as an operation (a bad
            // signature, an unknown key) counts as `unauthenticated`.
            let operation = slot.0.get().map_or("unauthenticated", String::as_str);
            silo.metrics().s3_request(operation, status, started.elapsed());
            response
        }
    })
}

/// Most of a refused request's body read and thrown away so that its
/// client sees the refusal; past it the connection is simply closed.
const LINGER_BYTES: u64 = 8 << 20;
/// How long that may take.
const LINGER_TIME: Duration = Duration::from_secs(5);

/// A request body that, dropped unread (a request refused before its body
/// was needed: too large, not allowed), is read to its end in the
/// background, within [`LINGER_BYTES`] and [`LINGER_TIME`]. Closing a
/// connection with unread bytes resets it, and a client still sending
/// would lose the answer that says why.
struct Lingering(Option<hyper::body::Incoming>);

impl hyper::body::Body for Lingering {
    type Data = bytes::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        match self.0.as_mut() {
            Some(body) => std::pin::Pin::new(body).poll_frame(cx),
            None => std::task::Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.0.as_ref().is_none_or(hyper::body::Body::is_end_stream)
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.0.as_ref().map(hyper::body::Body::size_hint).unwrap_or_default()
    }
}

impl Drop for Lingering {
    fn drop(&mut self) {
        let Some(mut body) = self.0.take() else { return };
        if hyper::body::Body::is_end_stream(&body) || hyper::body::Body::size_hint(&body).lower() > LINGER_BYTES {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            let drained = async {
                let mut read = 0u64;
                while let Some(Ok(frame)) =
                    std::future::poll_fn(|cx| hyper::body::Body::poll_frame(std::pin::Pin::new(&mut body), cx)).await
                {
                    read += frame.data_ref().map_or(0, |d| d.len() as u64);
                    if read > LINGER_BYTES {
                        return;
                    }
                }
            };
            let _ = tokio::time::timeout(LINGER_TIME, drained).await;
        });
    }
}

/// What a connection past `[limits] max_connections` is answered.
const S3_BUSY: &[u8] = b"HTTP/1.1 503 Slow Down\r\nretry-after: 1\r\ncontent-type: application/xml\r\n\
content-length: 118\r\nconnection: close\r\n\r\n\
<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>SlowDown</Code><Message>too many open connections</Message></Error>";

/// Serve the endpoint on `listener` until `shutdown` completes; then take
/// no new connections and give the requests under way up to `drain`.
/// Multipart uploads spread over nodes and their expiry need the `Silo`'s
/// background work ([`Silo::start_background`]).
pub async fn serve(
    listener: tokio::net::TcpListener,
    silo: Arc<Silo>,
    principals: Arc<PrincipalsHandle>,
    settings: S3ApiSettings,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    drain: Duration,
) -> std::io::Result<crate::serve::Drained> {
    let idle = settings.idle_timeout;
    let listener = crate::serve::Capped::new(listener, silo.config().limits.max_connections as usize, S3_BUSY);
    let service = service(silo, principals, settings);
    crate::serve::serve_connections(listener, service, Some(idle), shutdown, drain).await
}

impl SiloS3 {
    fn principal(&self, credentials: Option<&s3s::auth::Credentials>) -> Option<Arc<Principal>> {
        credentials.and_then(|c| self.principals.current().by_access_key(&c.access_key))
    }

    /// Who signed the request (anonymous if nobody did).
    fn caller(&self, credentials: Option<&s3s::auth::Credentials>) -> Caller {
        self.principal(credentials).map_or(Caller::Anonymous, Caller::Principal)
    }

    /// A key this endpoint can take: at most 1024 bytes.
    fn check_key(key: &str) -> S3Result<()> {
        if key.len() > crate::path::MAX_KEY_BYTES {
            return Err(s3_error!(KeyTooLongError));
        }
        Ok(())
    }

    fn visibility(&self, bucket: &str) -> S3Result<Visibility> {
        self.silo.visibility(bucket).ok_or_else(|| s3_error!(NoSuchBucket))
    }

    /// The principal that signed the request (anonymous requests reach no
    /// operation that asks for one).
    fn signed_by(&self, credentials: Option<&s3s::auth::Credentials>) -> S3Result<Arc<Principal>> {
        self.principal(credentials).ok_or_else(|| s3_error!(AccessDenied))
    }

    /// An ACL as S3 would give it: the caller owns everything, and on a
    /// public volume everyone may read (what its visibility means).
    fn acl(
        &self,
        credentials: Option<&s3s::auth::Credentials>,
        visibility: Visibility,
    ) -> (dto::Owner, Vec<dto::Grant>) {
        let name = self
            .principal(credentials)
            .map_or_else(|| "anonymous".to_owned(), |p| p.name.clone());
        let owner = dto::Owner {
            display_name: Some(name.clone()),
            id: Some(name.clone()),
        };
        let mut grants = vec![dto::Grant {
            grantee: Some(dto::Grantee {
                display_name: Some(name.clone()),
                id: Some(name),
                type_: dto::Type::from_static(dto::Type::CANONICAL_USER),
                email_address: None,
                uri: None,
            }),
            permission: Some(dto::Permission::from_static(dto::Permission::FULL_CONTROL)),
        }];
        if visibility == Visibility::Public {
            grants.push(dto::Grant {
                grantee: Some(dto::Grantee {
                    display_name: None,
                    id: None,
                    type_: dto::Type::from_static(dto::Type::GROUP),
                    email_address: None,
                    uri: Some("http://acs.amazonaws.com/groups/global/AllUsers".into()),
                }),
                permission: Some(dto::Permission::from_static(dto::Permission::READ)),
            });
        }
        (owner, grants)
    }

    /// A listing request's answer: the listing, the prefix, the page size
    /// and whether keys are to be URL-encoded.
    #[allow(clippy::too_many_arguments)]
    async fn list_request(
        &self,
        credentials: Option<&s3s::auth::Credentials>,
        bucket: &str,
        prefix: &Option<String>,
        delimiter: &Option<String>,
        after: &str,
        max_keys_asked: Option<i32>,
        encoding: &Option<dto::EncodingType>,
    ) -> S3Result<(Listing, String, usize, bool)> {
        let max = max_keys(max_keys_asked)?;
        let request = ListRequest {
            prefix: prefix.clone().unwrap_or_default(),
            delimiter: delimiter.clone(),
            after: after.to_owned(),
            max,
        };
        let listing = self
            .silo
            .list(&self.caller(credentials), bucket, &request)
            .await
            .map_err(request_error)?;
        let encode = encoding.as_ref().is_some_and(|e| e.as_str() == dto::EncodingType::URL);
        Ok((listing, request.prefix, max, encode))
    }

    /// A read for `caller`, or the error S3 answers instead of the file.
    async fn served(&self, caller: &Caller, bucket: &str, key: &str, request: &ReadRequest) -> S3Result<Served> {
        Self::check_key(key)?;
        let served = self
            .silo
            .read(caller, bucket, key, request)
            .await
            .map_err(request_error)?;
        match served.status {
            ServedStatus::Whole | ServedStatus::Partial => Ok(served),
            ServedStatus::NotModified => {
                let mut e = s3_error!(NotModified);
                e.set_headers(served.headers.to_header_map());
                Err(e)
            }
            ServedStatus::PreconditionFailed => Err(s3_error!(PreconditionFailed)),
            ServedStatus::RangeNotSatisfiable => Err(s3_error!(InvalidRange)),
        }
    }
}

/// An object's listing entries, for a listing's contents.
fn objects(listing: &Listing, encode: bool) -> Vec<dto::Object> {
    listing
        .contents
        .iter()
        .map(|(key, meta)| dto::Object {
            key: Some(encoded(key, encode)),
            size: Some(meta.size as i64),
            e_tag: Some(etag(meta)),
            last_modified: Some(timestamp(meta.modified_ms)),
            storage_class: Some(dto::ObjectStorageClass::from_static(dto::ObjectStorageClass::STANDARD)),
            ..Default::default()
        })
        .collect()
}

fn prefixes(listing: &Listing, encode: bool) -> Vec<dto::CommonPrefix> {
    listing
        .common_prefixes
        .iter()
        .map(|p| dto::CommonPrefix {
            prefix: Some(encoded(p, encode)),
        })
        .collect()
}

/// A continuation token: where the next page starts, hex-encoded so that
/// any key survives the round trip.
fn token(after: &str) -> String {
    hex::encode(after.as_bytes())
}

fn untoken(token: &str) -> S3Result<String> {
    hex::decode(token)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| s3_error!(InvalidArgument, "the continuation token is not one this endpoint gave"))
}

/// `encoding-type=url`: keys percent-encoded, `/` kept.
fn encoded(key: &str, encode: bool) -> String {
    if !encode {
        return key.to_owned();
    }
    let mut out = String::with_capacity(key.len());
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn max_keys(asked: Option<i32>) -> S3Result<usize> {
    match asked {
        None => Ok(1000),
        Some(n) if n < 0 => Err(s3_error!(InvalidArgument, "max-keys may not be negative")),
        Some(n) => Ok((n as usize).min(1000)),
    }
}

/// The headers a request declares for its object, kept as sent (Expires
/// as an HTTP date).
fn declared_headers(
    content_disposition: Option<String>,
    content_encoding: Option<String>,
    expires: Option<Timestamp>,
) -> S3Result<Headers> {
    let expires = match expires {
        None => None,
        Some(t) => {
            let mut text = Vec::new();
            t.format(TimestampFormat::HttpDate, &mut text)
                .map_err(|_| s3_error!(InvalidArgument, "Expires is not a date HTTP can carry"))?;
            Some(String::from_utf8_lossy(&text).into_owned())
        }
    };
    Ok(Headers {
        content_disposition: content_disposition.filter(|v| !v.is_empty()),
        content_encoding: content_encoding.filter(|v| !v.is_empty()),
        expires,
    })
}

fn safe_headers<T>(mut response: S3Response<T>) -> S3Response<T> {
    response.headers.insert(
        http::header::X_CONTENT_TYPE_OPTIONS,
        http::HeaderValue::from_static("nosniff"),
    );
    response
}

/// A copy's source conditions: `[if-match, if-none-match]`,
/// `[if-modified-since, if-unmodified-since]`.
fn source_conditions(
    [if_match, if_none_match]: [Option<&dto::ETagCondition>; 2],
    [modified_since, unmodified_since]: [Option<&Timestamp>; 2],
) -> Conditions {
    let tags = |c: &dto::ETagCondition| match c {
        dto::ETagCondition::Any => TagList::Any,
        dto::ETagCondition::ETag(tag) => TagList::parse(&format!("\"{}\"", tag.value())),
    };
    let time = |t: &Timestamp| SystemTime::from(time::OffsetDateTime::from(t.clone()));
    Conditions {
        if_match: if_match.map(tags),
        if_none_match: if_none_match.map(tags),
        if_modified_since: modified_since.map(time),
        if_unmodified_since: unmodified_since.map(time),
        if_range: None,
    }
}

/// The bucket and key a copy reads: `<bucket>/<key>` (no versions, no
/// access points).
fn copy_source(source: &dto::CopySource) -> S3Result<(String, String)> {
    match source {
        dto::CopySource::Bucket {
            bucket,
            key,
            version_id,
        } if version_id.as_deref().is_none_or(|v| v == "null") => Ok((bucket.to_string(), key.to_string())),
        _ => Err(s3_error!(
            NotImplemented,
            "a copy source is <bucket>/<key> (no versions, no access points)"
        )),
    }
}

/// `If-None-Match: *` (create only) or `If-Match` with one ETag on a write.
fn write_condition(
    if_none_match: Option<&dto::ETagCondition>,
    if_match: Option<&dto::ETagCondition>,
) -> S3Result<Option<Condition>> {
    match (if_none_match, if_match) {
        (None, None) => Ok(None),
        (Some(dto::ETagCondition::Any), None) => Ok(Some(Condition::CreateOnly)),
        (None, Some(dto::ETagCondition::ETag(tag))) => Ok(Some(Condition::IfMatch(tag.value().to_owned()))),
        _ => Err(s3_error!(
            NotImplemented,
            "a write takes If-None-Match: * or If-Match with one etag"
        )),
    }
}

/// The S3 error of a body whose digests did not match, kept for the
/// answer while the core reports only that they did not.
#[derive(Clone, Default)]
struct Mismatch(Arc<std::sync::Mutex<Option<S3Error>>>);

impl Mismatch {
    fn take(&self, message: String) -> S3Error {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .unwrap_or_else(|| s3_error!(BadDigest, "{message}"))
    }
}

/// The check the core runs once a body is stored: that it is what the
/// client's digests say.
fn verifier(
    declared: Declared,
    hashing: Arc<std::sync::Mutex<Hashing>>,
    trailing: Option<s3s::TrailingHeaders>,
) -> (Box<dyn FnOnce() -> Result<(), String> + Send>, Mismatch) {
    let mismatch = Mismatch::default();
    let kept = mismatch.clone();
    let verify = move || {
        let computed = std::mem::take(&mut *hashing.lock().unwrap_or_else(|p| p.into_inner()));
        declared.verify(computed, trailing.as_ref()).map_err(|e| {
            let message = e.message().unwrap_or("the body is not what its digests say").to_owned();
            *kept.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
            message
        })
    };
    (Box::new(verify), mismatch)
}

/// A body cut off when idle, hashed as it passes for the digests the
/// client declared.
fn hashed(
    body: StreamingBlob,
    idle: Duration,
    declared: &Declared,
) -> (
    impl Stream<Item = std::io::Result<Bytes>> + Unpin + Send + 'static,
    Arc<std::sync::Mutex<Hashing>>,
) {
    let hashing = Arc::new(std::sync::Mutex::new(declared.hasher()));
    let body = body_chunks(body, idle).map({
        let hashing = hashing.clone();
        move |chunk| {
            if let Ok(bytes) = &chunk {
                hashing.lock().unwrap_or_else(|p| p.into_inner()).update(bytes);
            }
            chunk
        }
    });
    (body, hashing)
}

/// The checksum algorithms of `x-amz-checksum-*`, as S3 names them.
const CHECKSUMS: [&str; 5] = ["crc32", "crc32c", "crc64nvme", "sha1", "sha256"];

/// The digests a client sent with a body (`Content-MD5`, `x-amz-checksum-*`
/// in the headers or announced in `x-amz-trailer`), checked once the whole
/// body has arrived.
struct Declared {
    md5: Option<String>,
    /// (algorithm, the value sent in the headers, or `None` for the trailer)
    checksums: Vec<(&'static str, Option<String>)>,
}

/// What the body turned out to be.
#[derive(Default)]
struct Hashing {
    md5: Option<md5::Md5>,
    checksums: s3s::checksum::ChecksumHasher,
}

impl Hashing {
    fn update(&mut self, bytes: &[u8]) {
        use md5::Digest;
        if let Some(md5) = &mut self.md5 {
            md5.update(bytes);
        }
        self.checksums.update(bytes);
    }
}

impl Declared {
    fn of(headers: &http::HeaderMap) -> S3Result<Declared> {
        let text = |name: &str| -> S3Result<Option<String>> {
            headers
                .get(name)
                .map(|v| v.to_str().map(|s| s.trim().to_owned()))
                .transpose()
                .map_err(|_| s3_error!(InvalidArgument, "{name} is not text"))
        };
        let trailer = text("x-amz-trailer")?.unwrap_or_default().to_ascii_lowercase();
        let mut checksums = Vec::new();
        for algorithm in CHECKSUMS {
            let name = format!("x-amz-checksum-{algorithm}");
            if let Some(value) = text(&name)? {
                checksums.push((algorithm, Some(value)));
            } else if trailer.split(',').any(|t| t.trim() == name) {
                checksums.push((algorithm, None));
            }
        }
        Ok(Declared {
            md5: text("content-md5")?,
            checksums,
        })
    }

    fn hasher(&self) -> Hashing {
        let wants = |a: &str| self.checksums.iter().any(|(b, _)| *b == a);
        let mut checksums = s3s::checksum::ChecksumHasher::default();
        if wants("crc32") {
            checksums.crc32 = Some(Default::default());
        }
        if wants("crc32c") {
            checksums.crc32c = Some(Default::default());
        }
        if wants("crc64nvme") {
            checksums.crc64nvme = Some(Default::default());
        }
        if wants("sha1") {
            checksums.sha1 = Some(Default::default());
        }
        if wants("sha256") {
            checksums.sha256 = Some(Default::default());
        }
        Hashing {
            md5: self.md5.is_some().then(<md5::Md5 as md5::Digest>::new),
            checksums,
        }
    }

    /// `BadDigest` unless every digest sent is the body's.
    fn verify(&self, computed: Hashing, trailing: Option<&s3s::TrailingHeaders>) -> S3Result<()> {
        use base64::Engine;
        use md5::Digest;
        if let (Some(sent), Some(md5)) = (&self.md5, computed.md5) {
            let actual = base64::engine::general_purpose::STANDARD.encode(md5.finalize());
            if *sent != actual {
                return Err(s3_error!(
                    BadDigest,
                    "the Content-MD5 sent ({sent}) is not the body's ({actual})"
                ));
            }
        }
        let sums = computed.checksums.finalize();
        let trailer = trailing.and_then(s3s::TrailingHeaders::take);
        for (algorithm, sent) in &self.checksums {
            let actual = match *algorithm {
                "crc32" => &sums.checksum_crc32,
                "crc32c" => &sums.checksum_crc32c,
                "crc64nvme" => &sums.checksum_crc64nvme,
                "sha1" => &sums.checksum_sha1,
                _ => &sums.checksum_sha256,
            }
            .clone()
            .unwrap_or_default();
            let sent = match sent {
                Some(value) => value.clone(),
                None => trailer
                    .as_ref()
                    .and_then(|t| t.get(format!("x-amz-checksum-{algorithm}")))
                    .and_then(|v| v.to_str().ok())
                    .map(|v| v.trim().to_owned())
                    .ok_or_else(|| {
                        s3_error!(
                            InvalidRequest,
                            "x-amz-trailer announced x-amz-checksum-{algorithm}, and no trailer gave it"
                        )
                    })?,
            };
            if sent != actual {
                return Err(s3_error!(
                    BadDigest,
                    "the {} checksum sent ({sent}) is not the body's ({actual})",
                    algorithm.to_ascii_uppercase()
                ));
            }
        }
        Ok(())
    }
}

/// A request body as the chunks it arrives in, cut off when the client
/// goes quiet for longer than `idle`.
fn body_chunks(
    body: StreamingBlob,
    idle: Duration,
) -> impl Stream<Item = std::io::Result<Bytes>> + Unpin + Send + 'static {
    Box::pin(futures_util::stream::unfold(Some(body), move |body| async move {
        let mut body = body?;
        match tokio::time::timeout(idle, body.next()).await {
            Ok(Some(Ok(chunk))) => Some((Ok(chunk), Some(body))),
            Ok(Some(Err(e))) => Some((Err(std::io::Error::other(e.to_string())), None)),
            Ok(None) => None,
            Err(_) => Some((
                Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("the client sent nothing for {} s", idle.as_secs()),
                )),
                None,
            )),
        }
    }))
}

#[async_trait::async_trait]
impl S3 for SiloS3 {
    async fn list_buckets(
        &self,
        req: S3Request<dto::ListBucketsInput>,
    ) -> S3Result<S3Response<dto::ListBucketsOutput>> {
        let principal = self.signed_by(req.credentials.as_ref())?;
        let buckets = principal
            .grants
            .keys()
            .map(|name| dto::Bucket {
                name: Some(name.clone()),
                creation_date: Some(Timestamp::from(UNIX_EPOCH)),
                ..Default::default()
            })
            .collect();
        Ok(S3Response::new(dto::ListBucketsOutput {
            buckets: Some(buckets),
            owner: Some(dto::Owner {
                display_name: Some(principal.name.clone()),
                id: Some(principal.name.clone()),
            }),
            ..Default::default()
        }))
    }

    async fn head_bucket(&self, req: S3Request<dto::HeadBucketInput>) -> S3Result<S3Response<dto::HeadBucketOutput>> {
        self.visibility(&req.input.bucket)?;
        Ok(S3Response::new(dto::HeadBucketOutput {
            bucket_region: Some(self.settings.region.clone()),
            ..Default::default()
        }))
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<dto::GetBucketLocationInput>,
    ) -> S3Result<S3Response<dto::GetBucketLocationOutput>> {
        self.visibility(&req.input.bucket)?;
        // us-east-1 is answered as an empty constraint, as AWS does.
        let location = (self.settings.region != "us-east-1")
            .then(|| dto::BucketLocationConstraint::from(self.settings.region.clone()));
        Ok(S3Response::new(dto::GetBucketLocationOutput {
            location_constraint: location,
        }))
    }

    async fn put_object(&self, req: S3Request<dto::PutObjectInput>) -> S3Result<S3Response<dto::PutObjectOutput>> {
        let caller = self.caller(req.credentials.as_ref());
        let declared = Declared::of(&req.headers)?;
        let trailing = req.trailing_headers;
        let input = req.input;
        Self::check_key(&input.key)?;
        check_acl(input.acl.as_ref())?;
        let condition = write_condition(input.if_none_match.as_ref(), input.if_match.as_ref())?;
        let body = input
            .body
            .ok_or_else(|| s3_error!(IncompleteBody, "the request has no body"))?;
        let (body, hashing) = hashed(body, self.settings.idle_timeout, &declared);
        let (verify, mismatch) = verifier(declared, hashing, trailing);
        let mut metadata: Vec<(String, String)> = input.metadata.unwrap_or_default().into_iter().collect();
        metadata.sort();
        let request = PutRequest {
            content_type: input.content_type.filter(|t| !t.is_empty()),
            condition,
            cache_control: input.cache_control.filter(|c| !c.is_empty()),
            headers: declared_headers(input.content_disposition, input.content_encoding, input.expires)?,
            metadata,
            length: input.content_length.map(|n| n.max(0) as u64),
            verify: Some(verify),
        };
        let report = match self.silo.put(&caller, &input.bucket, &input.key, body, request).await {
            Ok(report) => stored(report)?,
            Err(PutError::BadDigest(message)) => return Err(mismatch.take(message)),
            Err(e) => return Err(put_error(e)),
        };
        Ok(S3Response::new(dto::PutObjectOutput {
            e_tag: report.file.etag.map(|e| ETag::Strong(e.trim_matches('"').to_owned())),
            ..Default::default()
        }))
    }

    async fn get_object(&self, req: S3Request<dto::GetObjectInput>) -> S3Result<S3Response<dto::GetObjectOutput>> {
        let caller = self.caller(req.credentials.as_ref());
        let signed = !matches!(caller, Caller::Anonymous);
        let mut request = ReadRequest::from_headers(&req.headers, false);
        let input = req.input;
        if input.part_number.is_some() || input.version_id.as_deref().is_some_and(|v| v != "null") {
            return Err(s3_error!(
                NotImplemented,
                "partNumber and versionId reads are not supported"
            ));
        }
        // `response-*` overrides, for signed requests (as S3 takes them).
        if signed {
            request.overrides = Overrides {
                content_type: input.response_content_type.filter(|t| !t.is_empty()),
                cache_control: input.response_cache_control.filter(|c| !c.is_empty()),
                content_disposition: input.response_content_disposition.filter(|d| !d.is_empty()),
            };
            let overrides = &request.overrides;
            for value in [
                &overrides.content_type,
                &overrides.cache_control,
                &overrides.content_disposition,
            ]
            .into_iter()
            .flatten()
            {
                if http::HeaderValue::from_str(value).is_err() {
                    return Err(s3_error!(
                        InvalidArgument,
                        "a response-* override is not a valid header value"
                    ));
                }
            }
        }
        let served = self.served(&caller, &input.bucket, &input.key, &request).await?;
        let h = served.headers.clone();
        let length = h.content_length.unwrap_or(0);
        let body = match served.into_chunks() {
            Some(Ok(bytes)) => StreamingBlob::from(s3s::Body::from(bytes)),
            Some(Err(stream)) => StreamingBlob::wrap(sync_wrapper::SyncStream::new(stream)),
            None => StreamingBlob::from(s3s::Body::from(Bytes::new())),
        };
        let output = dto::GetObjectOutput {
            body: Some(body),
            accept_ranges: Some("bytes".into()),
            content_length: Some(length as i64),
            content_range: h.content_range.clone(),
            content_type: h.content_type.clone(),
            content_disposition: h.content_disposition.clone(),
            content_encoding: h.content_encoding.clone(),
            expires: h
                .expires
                .as_deref()
                .and_then(|e| Timestamp::parse(TimestampFormat::HttpDate, e).ok()),
            cache_control: h.cache_control.clone(),
            e_tag: Some(ETag::Strong(h.etag.clone())),
            last_modified: Some(Timestamp::from(h.last_modified)),
            metadata: (!h.metadata.is_empty()).then(|| h.metadata.iter().cloned().collect()),
            ..Default::default()
        };
        // s3s answers 206 where there is a content range.
        let mut response = S3Response::new(output);
        // s3s lays the request's `response-*` overrides over the output;
        // headers set here go last, so what the core decided stands.
        let decided = [
            (http::header::CONTENT_TYPE, h.content_type.as_ref()),
            (http::header::CACHE_CONTROL, h.cache_control.as_ref()),
            (http::header::CONTENT_DISPOSITION, h.content_disposition.as_ref()),
        ];
        for (name, value) in decided {
            if let Some(value) = value.and_then(|v| http::HeaderValue::from_str(v).ok()) {
                response.headers.insert(name, value);
            }
        }
        Ok(safe_headers(response))
    }

    async fn head_object(&self, req: S3Request<dto::HeadObjectInput>) -> S3Result<S3Response<dto::HeadObjectOutput>> {
        let caller = self.caller(req.credentials.as_ref());
        let request = ReadRequest::from_headers(&req.headers, true);
        let input = req.input;
        let served = self.served(&caller, &input.bucket, &input.key, &request).await?;
        let h = served.headers;
        let mut response = S3Response::new(dto::HeadObjectOutput {
            accept_ranges: Some("bytes".into()),
            content_length: h.content_length.map(|n| n as i64),
            content_range: h.content_range.clone(),
            content_type: h.content_type.clone(),
            content_disposition: h.content_disposition.clone(),
            content_encoding: h.content_encoding.clone(),
            expires: h
                .expires
                .as_deref()
                .and_then(|e| Timestamp::parse(TimestampFormat::HttpDate, e).ok()),
            cache_control: h.cache_control.clone(),
            e_tag: Some(ETag::Strong(h.etag.clone())),
            last_modified: Some(Timestamp::from(h.last_modified)),
            metadata: (!h.metadata.is_empty()).then(|| h.metadata.iter().cloned().collect()),
            ..Default::default()
        });
        if let Some(id) = h
            .request_id
            .as_deref()
            .and_then(|id| http::HeaderValue::from_str(id).ok())
        {
            response.headers.insert(crate::serving::REQUEST_ID, id);
        }
        Ok(safe_headers(response))
    }

    async fn delete_object(
        &self,
        req: S3Request<dto::DeleteObjectInput>,
    ) -> S3Result<S3Response<dto::DeleteObjectOutput>> {
        let caller = self.caller(req.credentials.as_ref());
        Self::check_key(&req.input.key)?;
        match self.silo.delete(&caller, &req.input.bucket, &req.input.key).await {
            // Deleting what is not there succeeds, as on S3.
            Ok(_) | Err(RequestError::Storage(StorageError::NotFound)) => {}
            Err(e) => return Err(request_error(e)),
        }
        let mut response = S3Response::new(dto::DeleteObjectOutput::default());
        response.status = Some(http::StatusCode::NO_CONTENT);
        Ok(response)
    }

    async fn delete_objects(
        &self,
        req: S3Request<dto::DeleteObjectsInput>,
    ) -> S3Result<S3Response<dto::DeleteObjectsOutput>> {
        let caller = self.caller(req.credentials.as_ref());
        let input = req.input;
        // The whole request is refused if the caller may delete nothing
        // there (as S3 refuses it), before any key is looked at.
        self.silo
            .authorize(&caller, &input.bucket, "", Op::Delete)
            .map_err(denied)?;
        let objects = input.delete.objects;
        if objects.len() > MAX_DELETE_KEYS {
            return Err(s3_error!(
                MalformedXML,
                "a DeleteObjects names at most {MAX_DELETE_KEYS} keys, not {}",
                objects.len()
            ));
        }
        let quiet = input.delete.quiet.unwrap_or(false);
        let (mut deleted, mut errors) = (Vec::new(), Vec::new());
        for object in objects {
            let outcome = match Self::check_key(&object.key) {
                Ok(()) => match self.silo.delete(&caller, &input.bucket, &object.key).await {
                    Ok(_) | Err(RequestError::Storage(StorageError::NotFound)) => Ok(()),
                    Err(e) => Err(request_error(e)),
                },
                Err(e) => Err(e),
            };
            match outcome {
                Ok(()) if quiet => {}
                Ok(()) => deleted.push(dto::DeletedObject {
                    key: Some(object.key),
                    ..Default::default()
                }),
                Err(e) => errors.push(dto::Error {
                    code: Some(e.code().as_str().to_owned()),
                    message: e.message().map(str::to_owned),
                    key: Some(object.key),
                    version_id: None,
                }),
            }
        }
        Ok(S3Response::new(dto::DeleteObjectsOutput {
            deleted: Some(deleted),
            errors: Some(errors),
            ..Default::default()
        }))
    }

    async fn list_objects_v2(
        &self,
        req: S3Request<dto::ListObjectsV2Input>,
    ) -> S3Result<S3Response<dto::ListObjectsV2Output>> {
        let input = req.input;
        let after = match (&input.continuation_token, &input.start_after) {
            (Some(token), _) => untoken(token)?,
            (None, Some(start)) => start.clone(),
            (None, None) => String::new(),
        };
        let (listing, prefix, max, encode) = self
            .list_request(
                req.credentials.as_ref(),
                &input.bucket,
                &input.prefix,
                &input.delimiter,
                &after,
                input.max_keys,
                &input.encoding_type,
            )
            .await?;
        let next = listing
            .truncated
            .then(|| listing.resume_after().map(|a| token(&a)))
            .flatten();
        Ok(S3Response::new(dto::ListObjectsV2Output {
            name: Some(input.bucket),
            prefix: Some(encoded(&prefix, encode)),
            delimiter: input.delimiter.map(|d| encoded(&d, encode)),
            max_keys: Some(max as i32),
            key_count: Some((listing.contents.len() + listing.common_prefixes.len()) as i32),
            continuation_token: input.continuation_token,
            next_continuation_token: next,
            start_after: input.start_after.map(|s| encoded(&s, encode)),
            is_truncated: Some(listing.truncated),
            contents: Some(objects(&listing, encode)),
            common_prefixes: Some(prefixes(&listing, encode)),
            encoding_type: input.encoding_type,
            ..Default::default()
        }))
    }

    async fn list_objects(
        &self,
        req: S3Request<dto::ListObjectsInput>,
    ) -> S3Result<S3Response<dto::ListObjectsOutput>> {
        let input = req.input;
        let after = input.marker.clone().unwrap_or_default();
        let (listing, prefix, max, encode) = self
            .list_request(
                req.credentials.as_ref(),
                &input.bucket,
                &input.prefix,
                &input.delimiter,
                &after,
                input.max_keys,
                &input.encoding_type,
            )
            .await?;
        // NextMarker only with a delimiter, as AWS gives it; without one the
        // client continues from the last key.
        let next_marker = (listing.truncated && input.delimiter.is_some())
            .then(|| match &listing.last {
                Marker::Key(k) | Marker::Prefix(k) => Some(encoded(k, encode)),
                Marker::None => None,
            })
            .flatten();
        Ok(S3Response::new(dto::ListObjectsOutput {
            name: Some(input.bucket),
            prefix: Some(encoded(&prefix, encode)),
            marker: input.marker.map(|m| encoded(&m, encode)),
            delimiter: input.delimiter.map(|d| encoded(&d, encode)),
            max_keys: Some(max as i32),
            is_truncated: Some(listing.truncated),
            next_marker,
            contents: Some(objects(&listing, encode)),
            common_prefixes: Some(prefixes(&listing, encode)),
            encoding_type: input.encoding_type,
            ..Default::default()
        }))
    }

    async fn list_object_versions(
        &self,
        req: S3Request<dto::ListObjectVersionsInput>,
    ) -> S3Result<S3Response<dto::ListObjectVersionsOutput>> {
        // An unversioned bucket: every object once, version `null`.
        let input = req.input;
        let after = input.key_marker.clone().unwrap_or_default();
        let (listing, prefix, max, encode) = self
            .list_request(
                req.credentials.as_ref(),
                &input.bucket,
                &input.prefix,
                &input.delimiter,
                &after,
                input.max_keys,
                &input.encoding_type,
            )
            .await?;
        let next_key_marker = listing
            .truncated
            .then(|| match &listing.last {
                Marker::Key(k) | Marker::Prefix(k) => Some(encoded(k, encode)),
                Marker::None => None,
            })
            .flatten();
        let versions = listing
            .contents
            .iter()
            .map(|(key, meta)| dto::ObjectVersion {
                key: Some(encoded(key, encode)),
                version_id: Some("null".into()),
                is_latest: Some(true),
                size: Some(meta.size as i64),
                e_tag: Some(etag(meta)),
                last_modified: Some(timestamp(meta.modified_ms)),
                storage_class: Some(dto::ObjectVersionStorageClass::from_static(
                    dto::ObjectVersionStorageClass::STANDARD,
                )),
                ..Default::default()
            })
            .collect();
        Ok(S3Response::new(dto::ListObjectVersionsOutput {
            name: Some(input.bucket),
            prefix: Some(encoded(&prefix, encode)),
            key_marker: input.key_marker.map(|k| encoded(&k, encode)),
            version_id_marker: input.version_id_marker,
            next_version_id_marker: next_key_marker.as_ref().map(|_| "null".to_owned()),
            next_key_marker,
            delimiter: input.delimiter.map(|d| encoded(&d, encode)),
            max_keys: Some(max as i32),
            is_truncated: Some(listing.truncated),
            versions: Some(versions),
            common_prefixes: Some(prefixes(&listing, encode)),
            encoding_type: input.encoding_type,
            ..Default::default()
        }))
    }

    async fn copy_object(&self, req: S3Request<dto::CopyObjectInput>) -> S3Result<S3Response<dto::CopyObjectOutput>> {
        let caller = self.caller(req.credentials.as_ref());
        let input = req.input;
        let (bucket, key) = copy_source(&input.copy_source)?;
        Self::check_key(&key)?;
        Self::check_key(&input.key)?;
        let replace = match input.metadata_directive.as_ref().map(|d| d.as_str()) {
            None | Some(dto::MetadataDirective::COPY) => None,
            Some(dto::MetadataDirective::REPLACE) => {
                let mut metadata: Vec<(String, String)> = input.metadata.unwrap_or_default().into_iter().collect();
                metadata.sort();
                Some(Description {
                    content_type: input.content_type.filter(|t| !t.is_empty()),
                    cache_control: input.cache_control.filter(|c| !c.is_empty()),
                    headers: declared_headers(input.content_disposition, input.content_encoding, input.expires)?,
                    metadata,
                })
            }
            Some(other) => return Err(s3_error!(InvalidArgument, "unknown metadata directive '{other}'")),
        };
        let request = CopyRequest {
            source_conditions: source_conditions(
                [
                    input.copy_source_if_match.as_ref(),
                    input.copy_source_if_none_match.as_ref(),
                ],
                [
                    input.copy_source_if_modified_since.as_ref(),
                    input.copy_source_if_unmodified_since.as_ref(),
                ],
            ),
            replace,
        };
        let (report, copied) = self
            .silo
            .copy(&caller, (&bucket, &key), (&input.bucket, &input.key), request)
            .await
            .map_err(put_error)?;
        stored(report)?;
        let copied = copied.ok_or_else(|| s3_error!(InternalError, "the copy was stored and is gone"))?;
        Ok(S3Response::new(dto::CopyObjectOutput {
            copy_object_result: Some(dto::CopyObjectResult {
                e_tag: Some(etag(&copied)),
                last_modified: Some(timestamp(copied.modified_ms)),
                ..Default::default()
            }),
            ..Default::default()
        }))
    }

    async fn get_bucket_versioning(
        &self,
        req: S3Request<dto::GetBucketVersioningInput>,
    ) -> S3Result<S3Response<dto::GetBucketVersioningOutput>> {
        // Never versioned: no status at all, as AWS answers for such a bucket.
        self.visibility(&req.input.bucket)?;
        Ok(S3Response::new(dto::GetBucketVersioningOutput::default()))
    }

    async fn get_bucket_acl(
        &self,
        req: S3Request<dto::GetBucketAclInput>,
    ) -> S3Result<S3Response<dto::GetBucketAclOutput>> {
        let visibility = self.visibility(&req.input.bucket)?;
        let (owner, grants) = self.acl(req.credentials.as_ref(), visibility);
        Ok(S3Response::new(dto::GetBucketAclOutput {
            owner: Some(owner),
            grants: Some(grants),
        }))
    }

    async fn get_object_acl(
        &self,
        req: S3Request<dto::GetObjectAclInput>,
    ) -> S3Result<S3Response<dto::GetObjectAclOutput>> {
        let visibility = self.visibility(&req.input.bucket)?;
        let caller = self.caller(req.credentials.as_ref());
        Self::check_key(&req.input.key)?;
        self.silo
            .stat(&caller, &req.input.bucket, &req.input.key)
            .await
            .map_err(request_error)?;
        let (owner, grants) = self.acl(req.credentials.as_ref(), visibility);
        Ok(S3Response::new(dto::GetObjectAclOutput {
            owner: Some(owner),
            grants: Some(grants),
            ..Default::default()
        }))
    }

    async fn get_object_tagging(
        &self,
        req: S3Request<dto::GetObjectTaggingInput>,
    ) -> S3Result<S3Response<dto::GetObjectTaggingOutput>> {
        let caller = self.caller(req.credentials.as_ref());
        Self::check_key(&req.input.key)?;
        self.silo
            .stat(&caller, &req.input.bucket, &req.input.key)
            .await
            .map_err(request_error)?;
        Ok(S3Response::new(dto::GetObjectTaggingOutput {
            tag_set: Vec::new(),
            version_id: None,
        }))
    }

    async fn get_bucket_cors(
        &self,
        req: S3Request<dto::GetBucketCorsInput>,
    ) -> S3Result<S3Response<dto::GetBucketCorsOutput>> {
        self.visibility(&req.input.bucket)?;
        Err(s3_error!(NoSuchCORSConfiguration))
    }

    async fn get_bucket_policy(
        &self,
        req: S3Request<dto::GetBucketPolicyInput>,
    ) -> S3Result<S3Response<dto::GetBucketPolicyOutput>> {
        self.visibility(&req.input.bucket)?;
        Err(s3_error!(NoSuchBucketPolicy))
    }

    async fn get_bucket_lifecycle_configuration(
        &self,
        req: S3Request<dto::GetBucketLifecycleConfigurationInput>,
    ) -> S3Result<S3Response<dto::GetBucketLifecycleConfigurationOutput>> {
        self.visibility(&req.input.bucket)?;
        Err(s3_error!(NoSuchLifecycleConfiguration))
    }

    async fn get_bucket_tagging(
        &self,
        req: S3Request<dto::GetBucketTaggingInput>,
    ) -> S3Result<S3Response<dto::GetBucketTaggingOutput>> {
        self.visibility(&req.input.bucket)?;
        Err(s3_error!(NoSuchTagSet))
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<dto::CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<dto::CreateMultipartUploadOutput>> {
        let caller = self.caller(req.credentials.as_ref());
        let input = req.input;
        Self::check_key(&input.key)?;
        check_acl(input.acl.as_ref())?;
        let mut metadata: Vec<(String, String)> = input.metadata.unwrap_or_default().into_iter().collect();
        metadata.sort();
        let description = Description {
            content_type: input.content_type.filter(|t| !t.is_empty()),
            cache_control: input.cache_control.filter(|c| !c.is_empty()),
            headers: declared_headers(input.content_disposition, input.content_encoding, input.expires)?,
            metadata,
        };
        let id = self
            .silo
            .create_upload(&caller, &input.bucket, &input.key, description)
            .await
            .map_err(upload_error)?;
        Ok(S3Response::new(dto::CreateMultipartUploadOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            upload_id: Some(id),
            ..Default::default()
        }))
    }

    async fn upload_part(&self, req: S3Request<dto::UploadPartInput>) -> S3Result<S3Response<dto::UploadPartOutput>> {
        let caller = self.caller(req.credentials.as_ref());
        let declared = Declared::of(&req.headers)?;
        let trailing = req.trailing_headers;
        let input = req.input;
        let body = input
            .body
            .ok_or_else(|| s3_error!(IncompleteBody, "the request has no body"))?;
        let length = s3s::stream::ByteStream::remaining_length(&body)
            .exact()
            .map(|n| n as u64);
        let (body, hashing) = hashed(body, self.settings.idle_timeout, &declared);
        let (verify, mismatch) = verifier(declared, hashing, trailing);
        let part = self
            .silo
            .put_part(
                &caller,
                &input.bucket,
                &input.key,
                &input.upload_id,
                input.part_number,
                body,
                length,
                Some(verify),
            )
            .await
            .map_err(|e| match e {
                UploadError::Put(PutError::BadDigest(message)) => mismatch.take(message),
                e => upload_error(e),
            })?;
        Ok(S3Response::new(dto::UploadPartOutput {
            e_tag: Some(ETag::Strong(part.etag)),
            ..Default::default()
        }))
    }

    async fn upload_part_copy(
        &self,
        req: S3Request<dto::UploadPartCopyInput>,
    ) -> S3Result<S3Response<dto::UploadPartCopyOutput>> {
        let caller = self.caller(req.credentials.as_ref());
        let input = req.input;
        let (bucket, key) = copy_source(&input.copy_source)?;
        Self::check_key(&key)?;
        let range = match &input.copy_source_range {
            None => None,
            Some(spec) => Some(match dto::Range::parse(spec) {
                Ok(dto::Range::Int { first, last }) => RangeSpec::From { first, last },
                Ok(dto::Range::Suffix { length }) => RangeSpec::Suffix(length),
                Err(_) => {
                    return Err(s3_error!(
                        InvalidArgument,
                        "x-amz-copy-source-range '{spec}' is not a byte range"
                    ));
                }
            }),
        };
        let conditions = source_conditions(
            [
                input.copy_source_if_match.as_ref(),
                input.copy_source_if_none_match.as_ref(),
            ],
            [
                input.copy_source_if_modified_since.as_ref(),
                input.copy_source_if_unmodified_since.as_ref(),
            ],
        );
        let part = self
            .silo
            .copy_part(
                &caller,
                &input.bucket,
                &input.key,
                &input.upload_id,
                input.part_number,
                (&bucket, &key),
                range,
                &conditions,
            )
            .await
            .map_err(upload_error)?;
        Ok(S3Response::new(dto::UploadPartCopyOutput {
            copy_part_result: Some(dto::CopyPartResult {
                e_tag: Some(ETag::Strong(part.etag)),
                last_modified: Some(timestamp(part.modified_ms)),
                ..Default::default()
            }),
            ..Default::default()
        }))
    }

    async fn list_parts(&self, req: S3Request<dto::ListPartsInput>) -> S3Result<S3Response<dto::ListPartsOutput>> {
        let caller = self.caller(req.credentials.as_ref());
        let input = req.input;
        let max = input.max_parts.unwrap_or(1000).clamp(0, 1000) as usize;
        let page = self
            .silo
            .list_parts(
                &caller,
                &input.bucket,
                &input.key,
                &input.upload_id,
                input.part_number_marker.unwrap_or(0),
                max,
            )
            .await
            .map_err(upload_error)?;
        let owner = dto::Owner {
            display_name: Some(page.upload.principal.clone()),
            id: Some(page.upload.principal.clone()),
        };
        Ok(S3Response::new(dto::ListPartsOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            upload_id: Some(input.upload_id),
            max_parts: Some(max as i32),
            is_truncated: Some(page.truncated),
            part_number_marker: input.part_number_marker,
            next_part_number_marker: page.parts.last().filter(|_| page.truncated).map(|p| p.number),
            parts: Some(
                page.parts
                    .iter()
                    .map(|p| dto::Part {
                        part_number: Some(p.number),
                        e_tag: Some(ETag::Strong(p.etag.clone())),
                        size: Some(p.size as i64),
                        last_modified: Some(timestamp(p.modified_ms)),
                        ..Default::default()
                    })
                    .collect(),
            ),
            initiator: Some(dto::Initiator {
                display_name: owner.display_name.clone(),
                id: owner.id.clone(),
            }),
            owner: Some(owner),
            ..Default::default()
        }))
    }

    async fn list_multipart_uploads(
        &self,
        req: S3Request<dto::ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<dto::ListMultipartUploadsOutput>> {
        let caller = self.caller(req.credentials.as_ref());
        let input = req.input;
        let prefix = input.prefix.clone().unwrap_or_default();
        let max = input.max_uploads.unwrap_or(1000).clamp(0, 1000) as usize;
        let after = (
            input.key_marker.as_deref().unwrap_or_default(),
            input.upload_id_marker.as_deref().unwrap_or_default(),
        );
        let page = self
            .silo
            .list_uploads(&caller, &input.bucket, &prefix, after, max)
            .await
            .map_err(upload_error)?;
        let last = page.uploads.last().filter(|_| page.truncated).cloned();
        Ok(S3Response::new(dto::ListMultipartUploadsOutput {
            bucket: Some(input.bucket),
            prefix: Some(prefix),
            key_marker: input.key_marker,
            upload_id_marker: input.upload_id_marker,
            max_uploads: Some(max as i32),
            is_truncated: Some(page.truncated),
            next_key_marker: last.as_ref().map(|(_, s)| s.key.clone()),
            next_upload_id_marker: last.map(|(id, _)| id),
            uploads: Some(
                page.uploads
                    .into_iter()
                    .map(|(id, s)| dto::MultipartUpload {
                        key: Some(s.key),
                        upload_id: Some(id),
                        initiated: Some(timestamp(s.created_ms)),
                        owner: Some(dto::Owner {
                            display_name: Some(s.principal.clone()),
                            id: Some(s.principal),
                        }),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        }))
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<dto::CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<dto::CompleteMultipartUploadOutput>> {
        let caller = self.caller(req.credentials.as_ref());
        let input = req.input;
        Self::check_key(&input.key)?;
        let named: Vec<(i32, String)> = input
            .multipart_upload
            .and_then(|m| m.parts)
            .unwrap_or_default()
            .into_iter()
            .map(|p| {
                Ok((
                    p.part_number
                        .ok_or_else(|| s3_error!(InvalidPart, "a completed part has no PartNumber"))?,
                    p.e_tag
                        .map(|e| e.value().to_owned())
                        .ok_or_else(|| s3_error!(InvalidPart, "a completed part has no ETag"))?,
                ))
            })
            .collect::<S3Result<_>>()?;
        let condition = write_condition(input.if_none_match.as_ref(), input.if_match.as_ref())?;
        let report = self
            .silo
            .complete_upload(&caller, &input.bucket, &input.key, &input.upload_id, &named, condition)
            .await
            .map_err(upload_error)?;
        let report = stored(report)?;
        Ok(S3Response::new(dto::CompleteMultipartUploadOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            e_tag: report.file.etag.map(|e| ETag::Strong(e.trim_matches('"').to_owned())),
            ..Default::default()
        }))
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<dto::AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<dto::AbortMultipartUploadOutput>> {
        let caller = self.caller(req.credentials.as_ref());
        let input = req.input;
        self.silo
            .abort_upload(&caller, &input.bucket, &input.key, &input.upload_id)
            .await
            .map_err(upload_error)?;
        let mut response = S3Response::new(dto::AbortMultipartUploadOutput::default());
        response.status = Some(http::StatusCode::NO_CONTENT);
        Ok(response)
    }

    async fn create_bucket(
        &self,
        req: S3Request<dto::CreateBucketInput>,
    ) -> S3Result<S3Response<dto::CreateBucketOutput>> {
        // Only existing volumes reach here (the access check refuses others).
        self.visibility(&req.input.bucket)?;
        Err(s3_error!(
            BucketAlreadyOwnedByYou,
            "volume '{}' exists; volumes are configured, not created over S3",
            req.input.bucket
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_buckets_only_under_the_base_domain() {
        let hosts = Hosts {
            base_domain: Some("s3.example.test".into()),
        };
        let bucket = |h: &str| hosts.parse_host_header(h).unwrap().bucket().map(str::to_owned);
        assert_eq!(bucket("public.s3.example.test").as_deref(), Some("public"));
        assert_eq!(bucket("public.s3.example.test:9000").as_deref(), Some("public"));
        assert_eq!(bucket("s3.example.test"), None);
        assert_eq!(bucket("127.0.0.1:9000"), None);
        assert_eq!(bucket("public.elsewhere.test"), None);
        assert_eq!(bucket("evils3.example.test"), None);
        let none = Hosts { base_domain: None };
        assert_eq!(none.parse_host_header("public.s3.example.test").unwrap().bucket(), None);
    }

    #[test]
    fn past_a_prefix_lies_between_its_keys_and_the_next() {
        let p = crate::listing::past("a/");
        // Every key under `a/` (at most 1024 bytes) sorts before it...
        assert!(p.as_str() > "a/");
        let longest = format!("a/{}", "\u{10FFFF}".repeat(255));
        assert!(longest.len() <= crate::path::MAX_KEY_BYTES);
        assert!(p > longest);
        // ...and every key after them, after it.
        assert!(p.as_str() < "a0");
        assert!(p.as_str() < "b");
        assert_eq!(untoken(&token("x/ünï")).unwrap(), "x/ünï");
        assert!(untoken("zz").is_err());
        assert_eq!(encoded("a b/ü+", true), "a%20b/%C3%BC%2B");
    }
}
