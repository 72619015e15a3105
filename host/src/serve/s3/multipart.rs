//! Multipart uploads, translated to the core's calls.

use super::*;

pub(super) async fn create_multipart_upload(
    s3: &SiloS3,
    req: S3Request<dto::CreateMultipartUploadInput>,
) -> S3Result<S3Response<dto::CreateMultipartUploadOutput>> {
    let caller = s3.caller(req.credentials.as_ref());
    let input = req.input;
    SiloS3::check_key(&input.key)?;
    check_acl(input.acl.as_ref())?;
    let mut description = described!(input)?;
    // The checksum the object is to keep, asked for now and made at the
    // completion (no value yet).
    if let Some(algorithm) = &input.checksum_algorithm {
        description.headers.checksum = Some(Box::new(Checksum {
            algorithm: algorithm.as_str().to_ascii_uppercase(),
            value: String::new(),
            kind: input
                .checksum_type
                .as_ref()
                .map_or("COMPOSITE", |t| t.as_str())
                .to_owned(),
        }));
    }
    let id = s3
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

pub(super) async fn upload_part(
    s3: &SiloS3,
    req: S3Request<dto::UploadPartInput>,
) -> S3Result<S3Response<dto::UploadPartOutput>> {
    let caller = s3.caller(req.credentials.as_ref());
    let declared = Declared::of(&req.headers, &req.uri)?;
    let trailing = req.trailing_headers;
    let input = req.input;
    let body = input
        .body
        .ok_or_else(|| s3_error!(IncompleteBody, "the request has no body"))?;
    let length = s3s::stream::ByteStream::remaining_length(&body)
        .exact()
        .map(|n| n as u64);
    let (body, hashing) = hashed(body, s3.settings.idle_timeout, &declared);
    let (verify, mismatch) = verifier(declared, hashing, trailing);
    let part = s3
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

pub(super) async fn upload_part_copy(
    s3: &SiloS3,
    req: S3Request<dto::UploadPartCopyInput>,
) -> S3Result<S3Response<dto::UploadPartCopyOutput>> {
    let caller = s3.caller(req.credentials.as_ref());
    let input = req.input;
    let (bucket, key) = copy_source(&input.copy_source)?;
    SiloS3::check_key(&key)?;
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
    let part = s3
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

pub(super) async fn list_parts(
    s3: &SiloS3,
    req: S3Request<dto::ListPartsInput>,
) -> S3Result<S3Response<dto::ListPartsOutput>> {
    let caller = s3.caller(req.credentials.as_ref());
    let input = req.input;
    let max = input.max_parts.unwrap_or(1000).clamp(0, 1000) as usize;
    let page = s3
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

pub(super) async fn list_multipart_uploads(
    s3: &SiloS3,
    req: S3Request<dto::ListMultipartUploadsInput>,
) -> S3Result<S3Response<dto::ListMultipartUploadsOutput>> {
    let caller = s3.caller(req.credentials.as_ref());
    let input = req.input;
    let prefix = input.prefix.clone().unwrap_or_default();
    let max = input.max_uploads.unwrap_or(1000).clamp(0, 1000) as usize;
    // An upload id marker counts only beside a key marker.
    let key_marker = input.key_marker.as_deref().unwrap_or_default();
    let id_marker = input.upload_id_marker.as_deref().filter(|_| !key_marker.is_empty());
    let delimiter = input.delimiter.as_deref().filter(|d| !d.is_empty());
    let page = s3
        .silo
        .list_uploads(&caller, &input.bucket, &prefix, delimiter, (key_marker, id_marker), max)
        .await
        .map_err(upload_error)?;
    // Where the next page starts: after the last upload, or past the last
    // common prefix.
    let (next_key, next_id) = match (&page.last, page.uploads.last()) {
        _ if !page.truncated => (None, None),
        (Marker::Key(_), Some((id, s))) => (Some(s.key.clone()), Some(id.clone())),
        (Marker::Prefix(p), _) => (Some(p.clone()), None),
        _ => (None, None),
    };
    Ok(S3Response::new(dto::ListMultipartUploadsOutput {
        bucket: Some(input.bucket),
        prefix: Some(prefix),
        key_marker: input.key_marker,
        upload_id_marker: input.upload_id_marker,
        max_uploads: Some(max as i32),
        is_truncated: Some(page.truncated),
        delimiter: delimiter.map(str::to_owned),
        next_key_marker: next_key,
        next_upload_id_marker: next_id,
        common_prefixes: Some(
            page.common_prefixes
                .into_iter()
                .map(|p| dto::CommonPrefix { prefix: Some(p) })
                .collect(),
        ),
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

pub(super) async fn complete_multipart_upload(
    s3: &SiloS3,
    req: S3Request<dto::CompleteMultipartUploadInput>,
) -> S3Result<S3Response<dto::CompleteMultipartUploadOutput>> {
    let caller = s3.caller(req.credentials.as_ref());
    let location = object_url(&req.headers, &req.uri, None);
    let input = req.input;
    SiloS3::check_key(&input.key)?;
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
    let conditions = write_conditions(input.if_none_match.as_ref(), input.if_match.as_ref());
    let report = s3
        .silo
        .complete_upload(
            &caller,
            &input.bucket,
            &input.key,
            &input.upload_id,
            &named,
            &conditions,
        )
        .await
        .map_err(upload_error)?;
    let report = stored(report)?;
    let mut output = dto::CompleteMultipartUploadOutput {
        bucket: Some(input.bucket),
        key: Some(input.key),
        e_tag: report.file.etag.map(|e| ETag::Strong(e.trim_matches('"').to_owned())),
        location,
        ..Default::default()
    };
    checksum_fields!(output, report.file.checksum.as_ref());
    Ok(S3Response::new(output))
}

pub(super) async fn abort_multipart_upload(
    s3: &SiloS3,
    req: S3Request<dto::AbortMultipartUploadInput>,
) -> S3Result<S3Response<dto::AbortMultipartUploadOutput>> {
    let caller = s3.caller(req.credentials.as_ref());
    let input = req.input;
    s3.silo
        .abort_upload(&caller, &input.bucket, &input.key, &input.upload_id)
        .await
        .map_err(upload_error)?;
    let mut response = S3Response::new(dto::AbortMultipartUploadOutput::default());
    response.status = Some(http::StatusCode::NO_CONTENT);
    Ok(response)
}
