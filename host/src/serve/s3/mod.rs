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
//! presigned URLs, aws-chunked bodies) and writes S3's XML. Each operation
//! is translated into one call of the core (`Silo`'s methods, which take
//! the caller and decide access, preconditions and headers) and its answer
//! back into S3's; the files here split the operations by concern.

mod access;
mod bucket;
mod checksum;
mod error;
mod list;
mod multipart;
mod objects;
mod post;

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
use crate::serving::{Chunks, Conditions, Overrides, RangeSpec, ReadRequest, Served, ServedStatus, TagList};
use crate::vfs::Visibility;
use crate::{Checksum, Headers, ObjectMeta, WriteConditions};
use crate::{CopyRequest, Description, Outcome, PutError, PutRequest, Silo, UploadError};

use self::access::*;
use self::checksum::*;
use self::error::*;
use self::list::*;
use self::objects::*;

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
        principals: principals.clone(),
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
        let principals = principals.clone();
        let settings = settings.clone();
        async move {
            let started = std::time::Instant::now();
            let slot = OperationSlot::default();
            request.extensions_mut().insert(slot.clone());
            let method = request.method().clone();
            let head = method == http::Method::HEAD;
            join_repeated(request.headers_mut(), http::header::CONTENT_ENCODING);
            let origin = header_text(request.headers(), http::header::ORIGIN);
            // Only a browser's requests and form uploads are answered here,
            // before s3s: the others need not know their bucket yet.
            let addressed = (origin.is_some() || post::is_post_object(&method, request.headers()))
                .then(|| addressed(request.headers(), request.uri(), settings.base_domain.as_deref()))
                .flatten();
            let request = request.map(|body| s3s::Body::http_body(Lingering(Some(body))));
            let mut response = match (&addressed, &origin) {
                (_, Some(origin)) if method == http::Method::OPTIONS => {
                    let _ = slot.0.set("PreflightCORS".into());
                    let bucket = addressed.as_ref().map(|(b, _)| b.as_str());
                    Ok(preflight(&silo, bucket, origin, request.headers()).await)
                }
                (Some((bucket, false)), _) if post::is_post_object(&method, request.headers()) => {
                    let _ = slot.0.set("PostObject".into());
                    let bucket = bucket.clone();
                    Ok(post::post_object(silo.clone(), principals, &settings, bucket, request)
                        .await
                        .unwrap_or_else(error_response))
                }
                _ => s3.call(request).await,
            };
            if let Ok(r) = response.as_mut() {
                // s3s answers every HeadObject 200; a ranged one is 206, as
                // its GetObject is.
                if head && r.status() == http::StatusCode::OK && r.headers().contains_key(http::header::CONTENT_RANGE) {
                    *r.status_mut() = http::StatusCode::PARTIAL_CONTENT;
                }
                if let (Some(origin), Some((bucket, _))) = (&origin, &addressed)
                    && method != http::Method::OPTIONS
                {
                    cors_headers(&silo, bucket, origin, &method, r.headers_mut()).await;
                }
            }
            let status = response.as_ref().map_or(500, |r| r.status().as_u16());
            // A request refused before it was read as an operation (a bad
            // signature, an unknown key) counts as `unauthenticated`.
            let operation = slot.0.get().map_or("unauthenticated", String::as_str);
            silo.metrics().s3_request(operation, status, started.elapsed());
            // One line per failed request, naming no value the client sent:
            // a client's errors are its own (debug), the node's are the
            // operator's. s3s logs every error at ERROR with the request's
            // values in full, which is why `silo serve` turns its log off.
            if status >= 500 {
                tracing::error!(operation, status, "an S3 request failed");
            } else if status >= 400 {
                tracing::debug!(operation, status, "an S3 request was refused");
            }
            response
        }
    })
}

/// An error answered outside s3s, as s3s writes it.
fn error_response(e: S3Error) -> http::Response<s3s::Body> {
    let status = e.status_code().unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    e.to_http_response().unwrap_or_else(|_| {
        let mut r = http::Response::new(s3s::Body::empty());
        *r.status_mut() = status;
        r
    })
}

fn header_text(headers: &http::HeaderMap, name: http::header::HeaderName) -> Option<String> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

/// The bucket a request names (by its host under the base domain, else
/// the path's first segment), and whether it names a key in it.
fn addressed(headers: &http::HeaderMap, uri: &http::Uri, base_domain: Option<&str>) -> Option<(String, bool)> {
    let path = uri.path().trim_start_matches('/');
    let host = headers
        .get(http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| uri.authority().map(|a| a.as_str()));
    if let Some(bucket) = host.and_then(|h| virtual_bucket(h, base_domain)) {
        return Some((bucket.to_owned(), !path.is_empty()));
    }
    let (bucket, rest) = path.split_once('/').unwrap_or((path, ""));
    (!bucket.is_empty()).then(|| (bucket.to_owned(), !rest.is_empty()))
}

/// The answer to a preflight: the volume's first rule allowing the
/// origin, method and headers asked for, or 403 as S3 gives it (the same
/// for a volume that does not exist, so a stranger learns no name).
async fn preflight(
    silo: &Silo,
    bucket: Option<&str>,
    origin: &str,
    headers: &http::HeaderMap,
) -> http::Response<s3s::Body> {
    let refuse = |message: &str| {
        let mut e = S3Error::with_message(s3s::S3ErrorCode::Custom("AccessForbidden".into()), message.to_owned());
        e.set_status_code(http::StatusCode::FORBIDDEN);
        error_response(e)
    };
    let Some(method) = header_text(headers, http::header::ACCESS_CONTROL_REQUEST_METHOD) else {
        let mut e = s3_error!(InvalidRequest, "a preflight needs Access-Control-Request-Method");
        e.set_status_code(http::StatusCode::BAD_REQUEST);
        return error_response(e);
    };
    let asked = header_text(headers, http::header::ACCESS_CONTROL_REQUEST_HEADERS).unwrap_or_default();
    let asked: Vec<&str> = asked.split(',').map(str::trim).filter(|h| !h.is_empty()).collect();
    let rules = match bucket {
        Some(bucket) => silo.cors(bucket).await,
        None => Ok(None),
    };
    let rules = match rules {
        Ok(Some(rules)) => rules,
        Ok(None) => return refuse("CORSResponse: CORS is not enabled for this bucket."),
        Err(e) => return error_response(storage_error(e)),
    };
    match crate::cors::preflight(&rules, origin, &method, &asked) {
        Some(allow) => {
            let mut response = http::Response::new(s3s::Body::empty());
            write_cors(&allow, response.headers_mut());
            response
        }
        None => refuse(
            "CORSResponse: This CORS request is not allowed. This is usually because the evalution of Origin, request method / Access-Control-Request-Method or Access-Control-Request-Headers are not whitelisted by the resource's CORS spec.",
        ),
    }
}

/// The CORS headers of an answer to a request from `origin`, if a rule of
/// the volume allows it (the browser hides the answer from the page
/// otherwise).
async fn cors_headers(silo: &Silo, bucket: &str, origin: &str, method: &http::Method, headers: &mut http::HeaderMap) {
    // The answer differs by origin whatever the rules: caches must know.
    headers.append(http::header::VARY, http::HeaderValue::from_static("Origin"));
    let rules = match silo.cors(bucket).await {
        Ok(Some(rules)) => rules,
        Ok(None) => return,
        Err(e) => {
            tracing::warn!("the CORS rules of volume '{bucket}' cannot be read: {e}");
            return;
        }
    };
    if let Some(allow) = crate::cors::actual(&rules, origin, method.as_str()) {
        write_cors(&allow, headers);
    }
}

fn write_cors(allow: &crate::cors::CorsAllow, headers: &mut http::HeaderMap) {
    use http::header::*;
    let mut set = |name: HeaderName, value: String| {
        if let Ok(value) = http::HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    };
    set(ACCESS_CONTROL_ALLOW_ORIGIN, allow.origin.clone());
    if allow.credentials {
        set(ACCESS_CONTROL_ALLOW_CREDENTIALS, "true".into());
    }
    if !allow.methods.is_empty() {
        set(ACCESS_CONTROL_ALLOW_METHODS, allow.methods.join(", "));
    }
    if !allow.headers.is_empty() {
        set(ACCESS_CONTROL_ALLOW_HEADERS, allow.headers.join(", "));
    }
    if !allow.expose.is_empty() {
        set(ACCESS_CONTROL_EXPOSE_HEADERS, allow.expose.join(", "));
    }
    if let Some(age) = allow.max_age_secs {
        set(ACCESS_CONTROL_MAX_AGE, age.to_string());
    }
    headers.append(
        VARY,
        http::HeaderValue::from_static("Origin, Access-Control-Request-Headers, Access-Control-Request-Method"),
    );
}

/// Join the values of a list header sent more than once into one, as
/// RFC 9110 allows: the AWS SDKs send a streamed upload's `Content-Encoding`
/// (`gzip`) and its body's (`aws-chunked`) as two headers, which s3s
/// refuses as a duplicate. Joined with a bare comma, as SigV4's canonical
/// form joins them, so the signature still holds.
fn join_repeated(headers: &mut http::HeaderMap, name: http::header::HeaderName) {
    let values: Vec<&[u8]> = headers.get_all(&name).iter().map(|v| v.as_bytes()).collect();
    if values.len() < 2 {
        return;
    }
    let joined = values.join(&b","[..]);
    if let Ok(value) = http::HeaderValue::from_bytes(&joined) {
        headers.insert(name, value);
    }
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
        credentials
            .and_then(|c| crate::serve::auth::key_caller(&self.principals, &c.access_key))
            .unwrap_or(Caller::Anonymous)
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
    ) -> S3Result<list::Listed> {
        let max = max_keys(max_keys_asked)?;
        // An empty delimiter is none, and is not echoed.
        let delimiter = delimiter.clone().filter(|d| !d.is_empty());
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
        Ok(list::Listed {
            prefix: encoded(&request.prefix, encode),
            delimiter: delimiter.map(|d| encoded(&d, encode)),
            listing,
            max,
            encode,
        })
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
            ServedStatus::NoSuchPart => {
                let mut e = S3Error::with_message(
                    s3s::S3ErrorCode::Custom("InvalidPartNumber".into()),
                    "the object has no part of that number",
                );
                e.set_status_code(http::StatusCode::RANGE_NOT_SATISFIABLE);
                Err(e)
            }
            ServedStatus::PartsUnknown => Err(s3_error!(
                NotImplemented,
                "the object was completed from parts outside Silo, whose boundaries it does not know"
            )),
        }
    }
}

/// The checksum algorithms of `x-amz-checksum-*`, as S3 names them.
const CHECKSUMS: [&str; 5] = ["crc32", "crc32c", "crc64nvme", "sha1", "sha256"];

#[async_trait::async_trait]
impl S3 for SiloS3 {
    async fn list_buckets(
        &self,
        req: S3Request<dto::ListBucketsInput>,
    ) -> S3Result<S3Response<dto::ListBucketsOutput>> {
        list::list_buckets(self, req).await
    }

    async fn head_bucket(&self, req: S3Request<dto::HeadBucketInput>) -> S3Result<S3Response<dto::HeadBucketOutput>> {
        bucket::head_bucket(self, req).await
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<dto::GetBucketLocationInput>,
    ) -> S3Result<S3Response<dto::GetBucketLocationOutput>> {
        bucket::get_bucket_location(self, req).await
    }

    async fn put_object(&self, req: S3Request<dto::PutObjectInput>) -> S3Result<S3Response<dto::PutObjectOutput>> {
        objects::put_object(self, req).await
    }

    async fn get_object(&self, req: S3Request<dto::GetObjectInput>) -> S3Result<S3Response<dto::GetObjectOutput>> {
        objects::get_object(self, req).await
    }

    async fn head_object(&self, req: S3Request<dto::HeadObjectInput>) -> S3Result<S3Response<dto::HeadObjectOutput>> {
        objects::head_object(self, req).await
    }

    async fn delete_object(
        &self,
        req: S3Request<dto::DeleteObjectInput>,
    ) -> S3Result<S3Response<dto::DeleteObjectOutput>> {
        objects::delete_object(self, req).await
    }

    async fn delete_objects(
        &self,
        req: S3Request<dto::DeleteObjectsInput>,
    ) -> S3Result<S3Response<dto::DeleteObjectsOutput>> {
        objects::delete_objects(self, req).await
    }

    async fn list_objects_v2(
        &self,
        req: S3Request<dto::ListObjectsV2Input>,
    ) -> S3Result<S3Response<dto::ListObjectsV2Output>> {
        list::list_objects_v2(self, req).await
    }

    async fn list_objects(
        &self,
        req: S3Request<dto::ListObjectsInput>,
    ) -> S3Result<S3Response<dto::ListObjectsOutput>> {
        list::list_objects(self, req).await
    }

    async fn list_object_versions(
        &self,
        req: S3Request<dto::ListObjectVersionsInput>,
    ) -> S3Result<S3Response<dto::ListObjectVersionsOutput>> {
        list::list_object_versions(self, req).await
    }

    async fn copy_object(&self, req: S3Request<dto::CopyObjectInput>) -> S3Result<S3Response<dto::CopyObjectOutput>> {
        objects::copy_object(self, req).await
    }

    async fn get_bucket_versioning(
        &self,
        req: S3Request<dto::GetBucketVersioningInput>,
    ) -> S3Result<S3Response<dto::GetBucketVersioningOutput>> {
        bucket::get_bucket_versioning(self, req).await
    }

    async fn get_bucket_acl(
        &self,
        req: S3Request<dto::GetBucketAclInput>,
    ) -> S3Result<S3Response<dto::GetBucketAclOutput>> {
        bucket::get_bucket_acl(self, req).await
    }

    async fn get_object_acl(
        &self,
        req: S3Request<dto::GetObjectAclInput>,
    ) -> S3Result<S3Response<dto::GetObjectAclOutput>> {
        objects::get_object_acl(self, req).await
    }

    async fn get_object_attributes(
        &self,
        req: S3Request<dto::GetObjectAttributesInput>,
    ) -> S3Result<S3Response<dto::GetObjectAttributesOutput>> {
        objects::get_object_attributes(self, req).await
    }

    async fn get_object_tagging(
        &self,
        req: S3Request<dto::GetObjectTaggingInput>,
    ) -> S3Result<S3Response<dto::GetObjectTaggingOutput>> {
        objects::get_object_tagging(self, req).await
    }

    async fn get_bucket_cors(
        &self,
        req: S3Request<dto::GetBucketCorsInput>,
    ) -> S3Result<S3Response<dto::GetBucketCorsOutput>> {
        bucket::get_bucket_cors(self, req).await
    }

    async fn put_bucket_cors(
        &self,
        req: S3Request<dto::PutBucketCorsInput>,
    ) -> S3Result<S3Response<dto::PutBucketCorsOutput>> {
        bucket::put_bucket_cors(self, req).await
    }

    async fn delete_bucket_cors(
        &self,
        req: S3Request<dto::DeleteBucketCorsInput>,
    ) -> S3Result<S3Response<dto::DeleteBucketCorsOutput>> {
        bucket::delete_bucket_cors(self, req).await
    }

    async fn get_bucket_policy(
        &self,
        req: S3Request<dto::GetBucketPolicyInput>,
    ) -> S3Result<S3Response<dto::GetBucketPolicyOutput>> {
        bucket::get_bucket_policy(self, req).await
    }

    async fn get_bucket_lifecycle_configuration(
        &self,
        req: S3Request<dto::GetBucketLifecycleConfigurationInput>,
    ) -> S3Result<S3Response<dto::GetBucketLifecycleConfigurationOutput>> {
        bucket::get_bucket_lifecycle_configuration(self, req).await
    }

    async fn get_bucket_tagging(
        &self,
        req: S3Request<dto::GetBucketTaggingInput>,
    ) -> S3Result<S3Response<dto::GetBucketTaggingOutput>> {
        bucket::get_bucket_tagging(self, req).await
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<dto::CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<dto::CreateMultipartUploadOutput>> {
        multipart::create_multipart_upload(self, req).await
    }

    async fn upload_part(&self, req: S3Request<dto::UploadPartInput>) -> S3Result<S3Response<dto::UploadPartOutput>> {
        multipart::upload_part(self, req).await
    }

    async fn upload_part_copy(
        &self,
        req: S3Request<dto::UploadPartCopyInput>,
    ) -> S3Result<S3Response<dto::UploadPartCopyOutput>> {
        multipart::upload_part_copy(self, req).await
    }

    async fn list_parts(&self, req: S3Request<dto::ListPartsInput>) -> S3Result<S3Response<dto::ListPartsOutput>> {
        multipart::list_parts(self, req).await
    }

    async fn list_multipart_uploads(
        &self,
        req: S3Request<dto::ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<dto::ListMultipartUploadsOutput>> {
        multipart::list_multipart_uploads(self, req).await
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<dto::CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<dto::CompleteMultipartUploadOutput>> {
        multipart::complete_multipart_upload(self, req).await
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<dto::AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<dto::AbortMultipartUploadOutput>> {
        multipart::abort_multipart_upload(self, req).await
    }

    async fn create_bucket(
        &self,
        req: S3Request<dto::CreateBucketInput>,
    ) -> S3Result<S3Response<dto::CreateBucketOutput>> {
        bucket::create_bucket(self, req).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_framing_is_not_stored_as_the_objects_encoding() {
        let stored = objects::stored_encoding;
        assert_eq!(stored("aws-chunked"), None);
        assert_eq!(stored("gzip, aws-chunked").as_deref(), Some("gzip"));
        assert_eq!(stored("aws-chunked,gzip").as_deref(), Some("gzip"));
        assert_eq!(stored("AWS-CHUNKED , br").as_deref(), Some("br"));
        assert_eq!(stored("gzip").as_deref(), Some("gzip"));
        assert_eq!(stored(" ").as_deref(), None);
    }

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
