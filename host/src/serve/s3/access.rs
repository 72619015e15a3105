//! Who is asking, as s3s hands it over: keys for signatures, the access
//! hook (which asks the core for operations whose call does not decide
//! itself), hosts and bucket names.

use super::*;

/// What an operation asks to do in the bucket it names.
pub(super) fn needed(operation: &str) -> Op {
    match operation {
        "GetObject" | "HeadObject" | "GetObjectAttributes" => Op::Read,
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
pub(super) fn decided_by_core(operation: &str) -> bool {
    matches!(
        operation,
        "GetObject"
            | "HeadObject"
            | "GetObjectAttributes"
            | "PutObject"
            | "CopyObject"
            | "DeleteObject"
            | "DeleteObjects"
            | "ListObjects"
            | "ListObjectsV2"
            | "ListObjectVersions"
            | "GetBucketCors"
            | "PutBucketCors"
            | "DeleteBucketCors"
    )
}

/// Bodies other than objects' and parts' are XML read whole into memory:
/// one declared larger than [`MAX_XML_BYTES`], or sent without a length,
/// is refused before a byte of it is read.
pub(super) fn check_body_length(operation: &str, headers: &http::HeaderMap) -> S3Result<()> {
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
pub(super) struct Policy {
    pub(super) silo: Arc<Silo>,
    pub(super) principals: Arc<PrincipalsHandle>,
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
            Some(credentials) => crate::serve::auth::key_caller(&self.principals, &credentials.access_key)
                .ok_or_else(|| s3_error!(InvalidAccessKeyId))?,
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
pub(super) fn presigned_expiry(uri: &http::Uri) -> Option<u64> {
    uri.query()?
        .split('&')
        .find_map(|pair| pair.strip_prefix("X-Amz-Expires="))
        .map(|v| v.parse().unwrap_or(u64::MAX))
}

/// The secret of a principal's key, for s3s to check signatures with.
pub(super) struct Keys(pub(super) Arc<PrincipalsHandle>);

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
pub(super) struct Hosts {
    pub(super) base_domain: Option<String>,
}

impl S3Host for Hosts {
    fn parse_host_header<'a>(&'a self, host: &'a str) -> S3Result<VirtualHost<'a>> {
        let base = self.base_domain.as_deref();
        Ok(match (base, virtual_bucket(host, base)) {
            (Some(base), Some(bucket)) => VirtualHost::new(base).with_bucket(bucket),
            _ => VirtualHost::new(host_name(host)),
        })
    }
}

/// A Host header's name, without its port.
fn host_name(host: &str) -> &str {
    host.rsplit_once(':').map_or(host, |(name, port)| {
        if port.bytes().all(|b| b.is_ascii_digit()) {
            name
        } else {
            host
        }
    })
}

/// The bucket a Host header names under `base_domain` (`bucket.<base>`).
pub(super) fn virtual_bucket<'a>(host: &'a str, base_domain: Option<&str>) -> Option<&'a str> {
    let base = base_domain?;
    host_name(host)
        .strip_suffix(base)
        .and_then(|b| b.strip_suffix('.'))
        .filter(|b| !b.is_empty())
}

/// Bucket names are volume names, which may hold `_` (not an AWS bucket
/// name): any configured volume is valid; an unknown name is answered
/// NoSuchBucket by the access check.
pub(super) struct VolumeNames;

impl s3s::validation::NameValidation for VolumeNames {
    fn validate_bucket_name(&self, name: &str) -> bool {
        !name.is_empty()
            && name.len() <= 63
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_' || b == b'.')
    }
}
