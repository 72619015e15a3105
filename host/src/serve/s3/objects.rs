//! Objects: PutObject, GetObject, HeadObject, DeleteObject(s), CopyObject,
//! and an object's ACL and tags.

use super::*;

/// GetObject's or HeadObject's answer from the headers the core decided
/// (both have the same fields for them), with `extra` fields.
macro_rules! served_output {
    ($output:ident, $h:expr, { $($field:ident: $value:expr),* $(,)? }) => {
        dto::$output {
            $($field: $value,)*
            accept_ranges: Some("bytes".into()),
            content_length: $h.content_length.map(|n| n as i64),
            content_range: $h.content_range.clone(),
            content_type: $h.content_type.clone(),
            content_disposition: $h.content_disposition.clone(),
            content_encoding: $h.content_encoding.clone(),
            expires: $h
                .expires
                .as_deref()
                .and_then(|e| Timestamp::parse(TimestampFormat::HttpDate, e).ok()),
            cache_control: $h.cache_control.clone(),
            e_tag: Some(ETag::Strong($h.etag.clone())),
            last_modified: Some(Timestamp::from($h.last_modified)),
            metadata: (!$h.metadata.is_empty()).then(|| $h.metadata.iter().cloned().collect()),
            parts_count: $h.parts_count.map(|n| n as i32),
            ..Default::default()
        }
    };
}

/// An output's `checksum_*` and `checksum_type` from a kept checksum.
macro_rules! checksum_fields {
    ($output:expr, $checksum:expr) => {
        if let Some(c) = $checksum {
            let value = Some(c.value.clone());
            match c.algorithm.as_str() {
                "CRC32" => $output.checksum_crc32 = value,
                "CRC32C" => $output.checksum_crc32c = value,
                "CRC64NVME" => $output.checksum_crc64nvme = value,
                "SHA1" => $output.checksum_sha1 = value,
                _ => $output.checksum_sha256 = value,
            }
            $output.checksum_type = Some(dto::ChecksumType::from(c.kind.clone()));
        }
    };
}
pub(super) use checksum_fields;

/// What a PutObject, a CopyObject with REPLACE or a CreateMultipartUpload
/// declares with the object (the three inputs name these fields alike):
/// its type, cache control, headers and metadata.
macro_rules! described {
    ($input:ident) => {{
        let mut metadata: Vec<(String, String)> = $input.metadata.unwrap_or_default().into_iter().collect();
        metadata.sort();
        declared_headers($input.content_disposition, $input.content_encoding, $input.expires).map(|headers| {
            Description {
                content_type: $input.content_type.filter(|t| !t.is_empty()),
                cache_control: $input.cache_control.filter(|c| !c.is_empty()),
                headers,
                metadata,
            }
        })
    }};
}
pub(super) use described;

/// Canned ACLs: `private` and `public-read` change nothing (a volume's
/// visibility decides who reads it); others are refused.
pub(super) fn check_acl(acl: Option<&dto::ObjectCannedACL>) -> S3Result<()> {
    match acl.map(|a| a.as_str()) {
        None | Some("private" | "public-read") => Ok(()),
        Some(other) => Err(s3_error!(
            NotImplemented,
            "canned ACL '{other}' is not supported: a volume's visibility decides who may read it"
        )),
    }
}

/// The URL of the object a request names, as the client addressed it
/// (path or virtual-host style), or of `key` in the bucket it names: the
/// `Location` of a completion or a browser upload, which clients (the
/// JavaScript SDK's `Upload`, CMS storage providers) keep as the file's URL.
pub(super) fn object_url(headers: &http::HeaderMap, uri: &http::Uri, key: Option<&str>) -> Option<String> {
    let host = match headers.get(http::header::HOST) {
        Some(host) => host.to_str().ok()?,
        None => uri.authority()?.as_str(),
    };
    // Behind a proxy that ends TLS, the client's scheme is the proxy's.
    let scheme = match headers.get("x-forwarded-proto").and_then(|p| p.to_str().ok()) {
        Some("https") => "https",
        _ => uri.scheme_str().unwrap_or("http"),
    };
    let path = uri.path();
    Some(match key {
        None => format!("{scheme}://{host}{path}"),
        Some(key) => format!(
            "{scheme}://{host}{}/{}",
            path.trim_end_matches('/'),
            crate::path::percent_encode(key)
        ),
    })
}

pub(super) fn etag(meta: &ObjectMeta) -> ETag {
    ETag::Strong(meta.etag.trim_matches('"').to_owned())
}

pub(super) fn timestamp(ms: u64) -> Timestamp {
    Timestamp::from(UNIX_EPOCH + Duration::from_millis(ms))
}

/// The headers a request declares for its object, kept as sent (Expires
/// as an HTTP date).
pub(super) fn declared_headers(
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
        content_encoding: content_encoding.and_then(|v| stored_encoding(&v)),
        expires,
        ..Default::default()
    })
}

/// A declared `Content-Encoding` as the object keeps it: without
/// `aws-chunked`, which names how this request's body was framed, not the
/// object (`gzip, aws-chunked` is stored as `gzip`; `aws-chunked` alone as
/// nothing), as S3 stores it.
pub(super) fn stored_encoding(declared: &str) -> Option<String> {
    let kept: Vec<&str> = declared
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty() && !e.eq_ignore_ascii_case("aws-chunked"))
        .collect();
    (!kept.is_empty()).then(|| kept.join(", "))
}

pub(super) fn safe_headers<T>(mut response: S3Response<T>) -> S3Response<T> {
    response.headers.insert(
        http::header::X_CONTENT_TYPE_OPTIONS,
        http::HeaderValue::from_static("nosniff"),
    );
    response
}

/// A copy's source conditions: `[if-match, if-none-match]`,
/// `[if-modified-since, if-unmodified-since]`.
pub(super) fn source_conditions(
    [if_match, if_none_match]: [Option<&dto::ETagCondition>; 2],
    [modified_since, unmodified_since]: [Option<&Timestamp>; 2],
) -> Conditions {
    let time = |t: &Timestamp| SystemTime::from(time::OffsetDateTime::from(t.clone()));
    Conditions {
        if_match: if_match.map(tag_list),
        if_none_match: if_none_match.map(tag_list),
        if_modified_since: modified_since.map(time),
        if_unmodified_since: unmodified_since.map(time),
        if_range: None,
    }
}

/// The bucket and key a copy reads: `<bucket>/<key>` (no versions, no
/// access points).
pub(super) fn copy_source(source: &dto::CopySource) -> S3Result<(String, String)> {
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

/// A write's `If-Match` and `If-None-Match`, in every form.
pub(super) fn write_conditions(
    if_none_match: Option<&dto::ETagCondition>,
    if_match: Option<&dto::ETagCondition>,
) -> WriteConditions {
    WriteConditions {
        if_match: if_match.map(tag_list),
        if_none_match: if_none_match.map(tag_list),
    }
}

fn tag_list(c: &dto::ETagCondition) -> TagList {
    match c {
        dto::ETagCondition::Any => TagList::Any,
        dto::ETagCondition::ETag(tag) => TagList::parse(&format!("\"{}\"", tag.value())),
    }
}

pub(super) async fn put_object(
    s3: &SiloS3,
    req: S3Request<dto::PutObjectInput>,
) -> S3Result<S3Response<dto::PutObjectOutput>> {
    let caller = s3.caller(req.credentials.as_ref());
    let declared = Declared::of(&req.headers, &req.uri)?;
    let trailing = req.trailing_headers;
    let input = req.input;
    SiloS3::check_key(&input.key)?;
    check_acl(input.acl.as_ref())?;
    let conditions = write_conditions(input.if_none_match.as_ref(), input.if_match.as_ref());
    let body = input
        .body
        .ok_or_else(|| s3_error!(IncompleteBody, "the request has no body"))?;
    let (body, hashing) = hashed(body, s3.settings.idle_timeout, &declared);
    let (verify, mismatch) = verifier(declared, hashing, trailing);
    let length = input.content_length;
    let Description {
        content_type,
        cache_control,
        headers,
        metadata,
    } = described!(input)?;
    let request = PutRequest {
        content_type,
        conditions,
        cache_control,
        headers,
        metadata,
        length: length.map(|n| n.max(0) as u64),
        verify: Some(verify),
    };
    let report = match s3.silo.put(&caller, &input.bucket, &input.key, body, request).await {
        Ok(report) => stored(report)?,
        Err(PutError::BadDigest(message)) => return Err(mismatch.take(message)),
        Err(e) => return Err(put_error(e)),
    };
    let mut output = dto::PutObjectOutput {
        e_tag: report.file.etag.map(|e| ETag::Strong(e.trim_matches('"').to_owned())),
        ..Default::default()
    };
    checksum_fields!(output, report.file.checksum.as_ref());
    Ok(S3Response::new(output))
}

pub(super) async fn get_object(
    s3: &SiloS3,
    req: S3Request<dto::GetObjectInput>,
) -> S3Result<S3Response<dto::GetObjectOutput>> {
    let caller = s3.caller(req.credentials.as_ref());
    let signed = !matches!(caller, Caller::Anonymous);
    let mut request = ReadRequest::from_headers(&req.headers, false);
    let input = req.input;
    if input.version_id.as_deref().is_some_and(|v| v != "null") {
        return Err(s3_error!(NotImplemented, "versionId reads are not supported"));
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
    with_part(&mut request, input.part_number)?;
    let served = s3.served(&caller, &input.bucket, &input.key, &request).await?;
    let h = served.headers.clone();
    let checksum = checksum_asked(input.checksum_mode.as_ref(), &h);
    let body = match served.into_chunks() {
        Some(Chunks::Whole(bytes)) => StreamingBlob::from(s3s::Body::from(bytes)),
        Some(Chunks::Streamed(stream)) => StreamingBlob::wrap(sync_wrapper::SyncStream::new(stream)),
        None => StreamingBlob::from(s3s::Body::from(Bytes::new())),
    };
    let mut output = served_output!(GetObjectOutput, h, { body: Some(body) });
    checksum_fields!(output, checksum);
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

/// `partNumber` on a read: the core serves the part.
fn with_part(request: &mut ReadRequest, part: Option<i32>) -> S3Result<()> {
    if part.is_some() && request.range.is_some() {
        return Err(s3_error!(
            InvalidRequest,
            "a read names a Range or a partNumber, not both"
        ));
    }
    request.part = part;
    Ok(())
}

pub(super) async fn head_object(
    s3: &SiloS3,
    req: S3Request<dto::HeadObjectInput>,
) -> S3Result<S3Response<dto::HeadObjectOutput>> {
    let caller = s3.caller(req.credentials.as_ref());
    let mut request = ReadRequest::from_headers(&req.headers, true);
    let input = req.input;
    with_part(&mut request, input.part_number)?;
    let served = s3.served(&caller, &input.bucket, &input.key, &request).await?;
    let h = served.headers;
    let mut output = served_output!(HeadObjectOutput, h, {});
    checksum_fields!(output, checksum_asked(input.checksum_mode.as_ref(), &h));
    let mut response = S3Response::new(output);
    if let Some(id) = h
        .request_id
        .as_deref()
        .and_then(|id| http::HeaderValue::from_str(id).ok())
    {
        response.headers.insert(crate::serving::REQUEST_ID, id);
    }
    Ok(safe_headers(response))
}

/// The checksum to answer with: the one kept, where the reader asked for
/// it (`x-amz-checksum-mode: ENABLED`) and reads the whole object (S3
/// gives none for a range, which it does not cover).
fn checksum_asked<'a>(mode: Option<&dto::ChecksumMode>, h: &'a crate::serving::ServedHeaders) -> Option<&'a Checksum> {
    let asked = mode.is_some_and(|m| m.as_str() == dto::ChecksumMode::ENABLED);
    h.checksum.as_ref().filter(|_| asked && h.content_range.is_none())
}

pub(super) async fn get_object_attributes(
    s3: &SiloS3,
    req: S3Request<dto::GetObjectAttributesInput>,
) -> S3Result<S3Response<dto::GetObjectAttributesOutput>> {
    let caller = s3.caller(req.credentials.as_ref());
    let request = ReadRequest::from_headers(&req.headers, true);
    let input = req.input;
    if input.version_id.as_deref().is_some_and(|v| v != "null") {
        return Err(s3_error!(NotImplemented, "versionId reads are not supported"));
    }
    let served = s3.served(&caller, &input.bucket, &input.key, &request).await?;
    let h = served.headers;
    let asked = |a: &str| input.object_attributes.iter().any(|o| o.as_str() == a);
    let mut output = dto::GetObjectAttributesOutput {
        last_modified: Some(Timestamp::from(h.last_modified)),
        ..Default::default()
    };
    if asked(dto::ObjectAttributes::ETAG) {
        output.e_tag = Some(ETag::Strong(h.etag.clone()));
    }
    if asked(dto::ObjectAttributes::OBJECT_SIZE) {
        output.object_size = h.content_length.map(|n| n as i64);
    }
    if asked(dto::ObjectAttributes::STORAGE_CLASS) {
        output.storage_class = Some(dto::StorageClass::from_static(dto::StorageClass::STANDARD));
    }
    if asked(dto::ObjectAttributes::CHECKSUM)
        && let Some(c) = &h.checksum
    {
        let mut checksum = dto::Checksum::default();
        checksum_fields!(checksum, Some(c));
        output.checksum = Some(checksum);
    }
    if asked(dto::ObjectAttributes::OBJECT_PARTS)
        && let Some(count) = h.completed_parts()
    {
        output.object_parts = Some(dto::GetObjectAttributesParts {
            total_parts_count: Some(count as i32),
            ..Default::default()
        });
    }
    Ok(S3Response::new(output))
}

pub(super) async fn delete_object(
    s3: &SiloS3,
    req: S3Request<dto::DeleteObjectInput>,
) -> S3Result<S3Response<dto::DeleteObjectOutput>> {
    let caller = s3.caller(req.credentials.as_ref());
    SiloS3::check_key(&req.input.key)?;
    match s3.silo.delete(&caller, &req.input.bucket, &req.input.key).await {
        // Deleting what is not there succeeds, as on S3.
        Ok(_) | Err(RequestError::Storage(StorageError::NotFound)) => {}
        Err(e) => return Err(request_error(e)),
    }
    let mut response = S3Response::new(dto::DeleteObjectOutput::default());
    response.status = Some(http::StatusCode::NO_CONTENT);
    Ok(response)
}

pub(super) async fn delete_objects(
    s3: &SiloS3,
    req: S3Request<dto::DeleteObjectsInput>,
) -> S3Result<S3Response<dto::DeleteObjectsOutput>> {
    let caller = s3.caller(req.credentials.as_ref());
    let input = req.input;
    // The whole request is refused if the caller may delete nothing
    // there (as S3 refuses it), before any key is looked at.
    s3.silo
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
        let outcome = match SiloS3::check_key(&object.key) {
            Ok(()) => match s3.silo.delete(&caller, &input.bucket, &object.key).await {
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

pub(super) async fn copy_object(
    s3: &SiloS3,
    req: S3Request<dto::CopyObjectInput>,
) -> S3Result<S3Response<dto::CopyObjectOutput>> {
    let caller = s3.caller(req.credentials.as_ref());
    let input = req.input;
    let (bucket, key) = copy_source(&input.copy_source)?;
    SiloS3::check_key(&key)?;
    SiloS3::check_key(&input.key)?;
    let replace = match input.metadata_directive.as_ref().map(|d| d.as_str()) {
        None | Some(dto::MetadataDirective::COPY) => None,
        Some(dto::MetadataDirective::REPLACE) => Some(described!(input)?),
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
    let (report, copied) = s3
        .silo
        .copy(&caller, (&bucket, &key), (&input.bucket, &input.key), request)
        .await
        .map_err(put_error)?;
    stored(report)?;
    let copied = copied.ok_or_else(|| s3_error!(InternalError, "the copy was stored and is gone"))?;
    let mut result = dto::CopyObjectResult {
        e_tag: Some(etag(&copied)),
        last_modified: Some(timestamp(copied.modified_ms)),
        ..Default::default()
    };
    checksum_fields!(result, copied.headers.checksum.as_deref());
    Ok(S3Response::new(dto::CopyObjectOutput {
        copy_object_result: Some(result),
        ..Default::default()
    }))
}

pub(super) async fn get_object_acl(
    s3: &SiloS3,
    req: S3Request<dto::GetObjectAclInput>,
) -> S3Result<S3Response<dto::GetObjectAclOutput>> {
    let visibility = s3.visibility(&req.input.bucket)?;
    let caller = s3.caller(req.credentials.as_ref());
    SiloS3::check_key(&req.input.key)?;
    s3.silo
        .stat(&caller, &req.input.bucket, &req.input.key)
        .await
        .map_err(request_error)?;
    let (owner, grants) = s3.acl(req.credentials.as_ref(), visibility);
    Ok(S3Response::new(dto::GetObjectAclOutput {
        owner: Some(owner),
        grants: Some(grants),
        ..Default::default()
    }))
}

pub(super) async fn get_object_tagging(
    s3: &SiloS3,
    req: S3Request<dto::GetObjectTaggingInput>,
) -> S3Result<S3Response<dto::GetObjectTaggingOutput>> {
    let caller = s3.caller(req.credentials.as_ref());
    SiloS3::check_key(&req.input.key)?;
    s3.silo
        .stat(&caller, &req.input.bucket, &req.input.key)
        .await
        .map_err(request_error)?;
    Ok(S3Response::new(dto::GetObjectTaggingOutput {
        tag_set: Vec::new(),
        version_id: None,
    }))
}
