//! Browser uploads: POST Object, an HTML form (or a script's `FormData`)
//! sent straight to a bucket with a POST policy the CMS signed (SigV4), as
//! Drupal's s3fs_cors and boto3's `generate_presigned_post` make them.
//! s3s would read the whole file into memory before checking the policy;
//! here the form's fields are read first (bounded), the signature, expiry
//! and every condition checked, and the file streamed into the core's
//! `put` as a PutObject body is: judged by the pipeline the same way, for
//! the principal who signed the policy.

use hmac::Mac;
use s3s::post_policy::{PostPolicy, PostPolicyCondition};

use super::*;

/// Fields a form may have before its file.
const MAX_FIELDS: usize = 64;

/// Their bytes, names and values together (S3 bounds the policy at 20 KB).
const MAX_FIELD_BYTES: usize = 64 << 10;

/// Whether `request` is a browser upload: a POST of a form to a bucket.
pub(super) fn is_post_object(method: &http::Method, headers: &http::HeaderMap) -> bool {
    method == http::Method::POST
        && headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.split(';')
                    .next()
                    .is_some_and(|t| t.trim().eq_ignore_ascii_case("multipart/form-data"))
            })
}

/// The form's fields before its file, by lower-case name.
struct Form(Vec<(String, String)>);

impl Form {
    fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    fn required(&self, name: &str) -> S3Result<&str> {
        self.get(name)
            .ok_or_else(|| s3_error!(InvalidArgument, "Bucket POST must contain a field named '{name}'"))
    }
}

/// Why the file's bytes were cut off, as S3 names it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Bound {
    TooLarge,
    TooSmall,
}

/// Take one POST Object: `bucket` is the one the URL names.
pub(super) async fn post_object(
    silo: Arc<Silo>,
    principals: Arc<PrincipalsHandle>,
    settings: &S3ApiSettings,
    bucket: String,
    request: http::Request<s3s::Body>,
) -> S3Result<http::Response<s3s::Body>> {
    let (parts, body) = request.into_parts();
    let boundary = parts
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| multer::parse_boundary(v).ok())
        .ok_or_else(|| s3_error!(MalformedPOSTRequest, "the form has no multipart boundary"))?;
    let body = body_chunks(body, settings.idle_timeout);
    let mut multipart = multer::Multipart::new(body, boundary);

    // The fields, up to the file (S3 ignores what follows it).
    let mut form = Form(Vec::new());
    let mut used = 0;
    let file = loop {
        let field = multipart
            .next_field()
            .await
            .map_err(|e| s3_error!(MalformedPOSTRequest, "the form cannot be read: {e}"))?
            .ok_or_else(|| s3_error!(InvalidArgument, "POST requires exactly one file upload per request"))?;
        let name = field.name().unwrap_or_default().to_ascii_lowercase();
        if name == "file" {
            break field;
        }
        if form.0.len() == MAX_FIELDS {
            return Err(s3_error!(
                MalformedPOSTRequest,
                "the form has more than {MAX_FIELDS} fields"
            ));
        }
        let mut field = field;
        let mut value = Vec::new();
        while let Some(chunk) = field
            .chunk()
            .await
            .map_err(|e| s3_error!(MalformedPOSTRequest, "the form cannot be read: {e}"))?
        {
            used += chunk.len();
            if used + name.len() > MAX_FIELD_BYTES {
                return Err(s3_error!(
                    MaxPostPreDataLengthExceededError,
                    "the form's fields before its file are over {MAX_FIELD_BYTES} bytes"
                ));
            }
            value.extend_from_slice(&chunk);
        }
        used += name.len();
        let value = String::from_utf8(value)
            .map_err(|_| s3_error!(MalformedPOSTRequest, "form field '{name}' is not UTF-8"))?;
        form.0.push((name, value));
    };

    let caller = signer(&form, &principals, &settings.region)?;
    let policy = PostPolicy::from_base64(form.required("policy")?)
        .map_err(|e| s3_error!(InvalidPolicyDocument, "the POST policy cannot be read: {e}"))?;
    let expires: time::OffsetDateTime = policy.expiration.clone().into();
    if time::OffsetDateTime::now_utc() >= expires {
        return Err(s3_error!(AccessDenied, "Invalid according to Policy: Policy expired."));
    }
    // `${filename}` in the key is the name the browser gave the file.
    let filename = file.file_name().unwrap_or_default();
    let filename = filename.rsplit(['/', '\\']).next().unwrap_or_default();
    let key = form.required("key")?.replace("${filename}", filename);
    if key.is_empty() {
        return Err(s3_error!(InvalidArgument, "the key is empty"));
    }
    SiloS3::check_key(&key)?;
    let range = check_conditions(&policy, &form, &bucket)?;

    let acl = form.get("acl").map(|a| dto::ObjectCannedACL::from(a.to_owned()));
    check_acl(acl.as_ref())?;
    let expires = form
        .get("expires")
        .map(|e| {
            Timestamp::parse(TimestampFormat::HttpDate, e)
                .map_err(|_| s3_error!(InvalidArgument, "Expires is not an HTTP date"))
        })
        .transpose()?;
    let headers = declared_headers(
        form.get("content-disposition").map(str::to_owned),
        form.get("content-encoding").map(str::to_owned),
        expires,
    )?;
    let mut metadata: Vec<(String, String)> = form
        .0
        .iter()
        .filter_map(|(n, v)| n.strip_prefix("x-amz-meta-").map(|m| (m.to_owned(), v.clone())))
        .collect();
    metadata.sort();
    // The form's declared type, else the one the browser gave the file.
    let content_type = form
        .get("content-type")
        .map(str::to_owned)
        .or_else(|| file.content_type().map(ToString::to_string))
        .filter(|t| !t.is_empty());
    let request = PutRequest {
        content_type,
        conditions: WriteConditions::default(),
        cache_control: form.get("cache-control").filter(|c| !c.is_empty()).map(str::to_owned),
        headers,
        metadata,
        length: None,
        verify: None,
    };

    // The file, its length held to the policy's range as it streams.
    let cut = Arc::new(std::sync::Mutex::new(None));
    let (min, max) = range.unwrap_or((0, u64::MAX));
    let seen = cut.clone();
    let body = Box::pin(futures_util::stream::unfold(
        (Some(file), 0u64),
        move |(file, total)| {
            let seen = seen.clone();
            async move {
                let mut file = file?;
                let bound = |b: Bound, what: &str| {
                    *seen.lock().unwrap_or_else(|p| p.into_inner()) = Some(b);
                    Err(std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned()))
                };
                match file.chunk().await {
                    Ok(Some(chunk)) => {
                        let total = total + chunk.len() as u64;
                        if total > max {
                            return Some((
                                bound(Bound::TooLarge, "over the policy's content-length-range"),
                                (None, total),
                            ));
                        }
                        Some((Ok(chunk), (Some(file), total)))
                    }
                    Ok(None) if total < min => Some((
                        bound(Bound::TooSmall, "under the policy's content-length-range"),
                        (None, total),
                    )),
                    Ok(None) => None,
                    Err(e) => Some((Err(std::io::Error::other(e.to_string())), (None, total))),
                }
            }
        },
    ));
    let report = match silo.put(&caller, &bucket, &key, body, request).await {
        Ok(report) => stored(report)?,
        Err(e) => {
            return Err(match *cut.lock().unwrap_or_else(|p| p.into_inner()) {
                Some(Bound::TooLarge) => {
                    s3_error!(EntityTooLarge, "Your proposed upload exceeds the maximum allowed size")
                }
                Some(Bound::TooSmall) => {
                    s3_error!(
                        EntityTooSmall,
                        "Your proposed upload is smaller than the minimum allowed size"
                    )
                }
                None => put_error(e),
            });
        }
    };
    let etag = report.file.etag.clone().unwrap_or_default();
    let etag = format!("\"{}\"", etag.trim_matches('"'));
    answer(&parts, &form, &bucket, &key, &etag)
}

/// The principal whose key signed the policy (SigV4), if the signature
/// holds.
fn signer(form: &Form, principals: &PrincipalsHandle, region: &str) -> S3Result<Caller> {
    if form.get("x-amz-algorithm").is_none() && form.get("awsaccesskeyid").is_some() {
        return Err(s3_error!(
            NotImplemented,
            "POST policies signed with SigV2 are not taken; sign with SigV4"
        ));
    }
    let algorithm = form.required("x-amz-algorithm")?;
    if algorithm != "AWS4-HMAC-SHA256" {
        return Err(s3_error!(InvalidArgument, "x-amz-algorithm must be AWS4-HMAC-SHA256"));
    }
    let credential = form.required("x-amz-credential")?;
    let date = form.required("x-amz-date")?;
    let signature = form.required("x-amz-signature")?;
    let [key, day, scope_region, service, terminal] = credential.split('/').collect::<Vec<_>>()[..] else {
        return Err(s3_error!(
            AuthorizationQueryParametersError,
            "x-amz-credential is malformed"
        ));
    };
    if terminal != "aws4_request" || service != "s3" || !date.starts_with(day) || day.len() != 8 {
        return Err(s3_error!(
            AuthorizationQueryParametersError,
            "x-amz-credential is malformed"
        ));
    }
    if scope_region != region {
        return Err(s3_error!(
            AuthorizationQueryParametersError,
            "the credential is scoped to region '{scope_region}'; this endpoint is '{region}'"
        ));
    }
    let principal = principals
        .current()
        .by_access_key(key)
        .ok_or_else(|| s3_error!(InvalidAccessKeyId))?;
    let secret = principal.secret_key().ok_or_else(|| s3_error!(InvalidAccessKeyId))?;
    type Hmac = hmac::Hmac<sha2::Sha256>;
    let step = |key: &[u8], data: &str| {
        let mut mac = Hmac::new_from_slice(key).expect("HMAC takes keys of any length");
        mac.update(data.as_bytes());
        mac.finalize().into_bytes()
    };
    let mut signing = step(format!("AWS4{secret}").as_bytes(), day);
    for part in [region, "s3", "aws4_request"] {
        signing = step(&signing, part);
    }
    let mut mac = Hmac::new_from_slice(&signing).expect("HMAC takes keys of any length");
    mac.update(form.required("policy")?.as_bytes());
    let given = hex::decode(signature).map_err(|_| s3_error!(SignatureDoesNotMatch))?;
    mac.verify_slice(&given).map_err(|_| s3_error!(SignatureDoesNotMatch))?;
    Ok(Caller::Principal(principal))
}

/// Every condition of the policy holds for the form's fields as sent (a
/// `key` of `uploads/${filename}` for `uploads/${filename}` itself, as S3
/// checks it), and every field is named by one. The content-length range,
/// if any.
fn check_conditions(policy: &PostPolicy, form: &Form, bucket: &str) -> S3Result<Option<(u64, u64)>> {
    let value = |field: &str| match field {
        "bucket" => Some(bucket),
        _ => form.get(field),
    };
    let failed = |what: String| {
        s3_error!(
            AccessDenied,
            "Invalid according to Policy: Policy Condition failed: {what}"
        )
    };
    let mut range = None;
    for condition in &policy.conditions {
        match condition {
            PostPolicyCondition::Eq { field, value: wanted } => {
                if value(field) != Some(wanted.as_str()) {
                    return Err(failed(format!("[\"eq\", \"${field}\", \"{wanted}\"]")));
                }
            }
            PostPolicyCondition::StartsWith { field, prefix } => {
                // Content-Type may list several types, each held to it.
                let holds = match value(field) {
                    Some(v) if field == "content-type" => v.split(',').all(|t| t.trim().starts_with(prefix.as_str())),
                    Some(v) => v.starts_with(prefix.as_str()),
                    None => false,
                };
                if !holds {
                    return Err(failed(format!("[\"starts-with\", \"${field}\", \"{prefix}\"]")));
                }
            }
            PostPolicyCondition::ContentLengthRange { min, max } => range = Some((*min, *max)),
        }
    }
    if form.get("bucket").is_some_and(|b| b != bucket) {
        return Err(failed("the form's bucket is not the one the URL names".into()));
    }
    let named = |name: &str| {
        policy.conditions.iter().any(|c| match c {
            PostPolicyCondition::Eq { field, .. } | PostPolicyCondition::StartsWith { field, .. } => field == name,
            PostPolicyCondition::ContentLengthRange { .. } => false,
        })
    };
    for (name, _) in &form.0 {
        let exempt = matches!(name.as_str(), "x-amz-signature" | "policy") || name.starts_with("x-ignore-");
        if !exempt && !named(name) {
            return Err(s3_error!(
                AccessDenied,
                "Invalid according to Policy: Extra input fields: {name}"
            ));
        }
    }
    Ok(range)
}

/// The answer to a stored upload: a redirect to `success_action_redirect`,
/// or the status `success_action_status` asks for (201 with S3's XML
/// document), else 204.
fn answer(
    parts: &http::request::Parts,
    form: &Form,
    bucket: &str,
    key: &str,
    etag: &str,
) -> S3Result<http::Response<s3s::Body>> {
    use http::StatusCode;
    let object = object_url(&parts.headers, &parts.uri, Some(key));
    let redirect = form
        .get("success_action_redirect")
        .or_else(|| form.get("redirect"))
        .filter(|r| r.starts_with("http://") || r.starts_with("https://"));
    // A redirect's Location is the redirect, else the object's URL.
    let (status, location, body) = match (redirect, form.get("success_action_status")) {
        (Some(redirect), _) => {
            let joiner = if redirect.contains('?') { '&' } else { '?' };
            let query = format!(
                "bucket={}&key={}&etag={}",
                query_encode(bucket),
                query_encode(key),
                query_encode(etag)
            );
            (StatusCode::SEE_OTHER, Some(format!("{redirect}{joiner}{query}")), None)
        }
        (None, Some("201")) => {
            let xml = format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<PostResponse><Location>{}</Location><Bucket>{}</Bucket><Key>{}</Key><ETag>{}</ETag></PostResponse>",
                xml_escape(object.as_deref().unwrap_or_default()),
                xml_escape(bucket),
                xml_escape(key),
                xml_escape(etag)
            );
            (StatusCode::CREATED, object, Some(xml))
        }
        (None, Some("200")) => (StatusCode::OK, object, None),
        (None, _) => (StatusCode::NO_CONTENT, object, None),
    };
    let mut response = http::Response::builder()
        .status(status)
        .header(http::header::ETAG, etag)
        .header(http::header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    if let Some(location) = location {
        response = response.header(http::header::LOCATION, location);
    }
    let body = match body {
        Some(xml) => {
            response = response.header(http::header::CONTENT_TYPE, "application/xml");
            s3s::Body::from(xml)
        }
        None => s3s::Body::empty(),
    };
    response
        .body(body)
        .map_err(|e| s3_error!(InternalError, "the answer cannot be written: {e}"))
}

fn query_encode(value: &str) -> String {
    crate::path::percent_encode(value).replace('/', "%2F")
}

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
