//! Listings: ListBuckets, ListObjects (v1, v2) and ListObjectVersions.

use super::*;

/// An object's listing entries, for a listing's contents.
pub(super) fn objects(listing: &Listing, encode: bool) -> Vec<dto::Object> {
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

pub(super) fn prefixes(listing: &Listing, encode: bool) -> Vec<dto::CommonPrefix> {
    listing
        .common_prefixes
        .iter()
        .map(|p| dto::CommonPrefix {
            prefix: Some(encoded(p, encode)),
        })
        .collect()
}

/// A page of keys as the listing operations answer it.
pub(super) struct Listed {
    pub(super) listing: Listing,
    /// The prefix and delimiter as answered (encoded where asked; an
    /// empty delimiter is none).
    pub(super) prefix: String,
    pub(super) delimiter: Option<String>,
    pub(super) max: usize,
    /// `encoding-type=url`.
    pub(super) encode: bool,
}

impl Listed {
    /// Where a truncated page ended: its last key or common prefix.
    fn next_marker(&self) -> Option<String> {
        match (&self.listing.last, self.listing.truncated) {
            (Marker::Key(k) | Marker::Prefix(k), true) => Some(encoded(k, self.encode)),
            _ => None,
        }
    }
}

/// A continuation token: where the next page starts, hex-encoded so that
/// any key survives the round trip.
pub(super) fn token(after: &str) -> String {
    hex::encode(after.as_bytes())
}

pub(super) fn untoken(token: &str) -> S3Result<String> {
    hex::decode(token)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| s3_error!(InvalidArgument, "the continuation token is not one this endpoint gave"))
}

/// `encoding-type=url`: keys percent-encoded, `/` kept.
pub(super) fn encoded(key: &str, encode: bool) -> String {
    match encode {
        true => crate::path::percent_encode(key),
        false => key.to_owned(),
    }
}

pub(super) fn max_keys(asked: Option<i32>) -> S3Result<usize> {
    match asked {
        None => Ok(1000),
        Some(n) if n < 0 => Err(s3_error!(InvalidArgument, "max-keys may not be negative")),
        Some(n) => Ok((n as usize).min(1000)),
    }
}

pub(super) async fn list_buckets(
    s3: &SiloS3,
    req: S3Request<dto::ListBucketsInput>,
) -> S3Result<S3Response<dto::ListBucketsOutput>> {
    let principal = s3.signed_by(req.credentials.as_ref())?;
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

pub(super) async fn list_objects_v2(
    s3: &SiloS3,
    req: S3Request<dto::ListObjectsV2Input>,
) -> S3Result<S3Response<dto::ListObjectsV2Output>> {
    let input = req.input;
    let after = match (&input.continuation_token, &input.start_after) {
        (Some(token), _) => untoken(token)?,
        (None, Some(start)) => start.clone(),
        (None, None) => String::new(),
    };
    let page = s3
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
    let (listing, encode) = (&page.listing, page.encode);
    let next = listing
        .truncated
        .then(|| listing.resume_after().map(|a| token(&a)))
        .flatten();
    Ok(S3Response::new(dto::ListObjectsV2Output {
        name: Some(input.bucket),
        prefix: Some(page.prefix.clone()),
        delimiter: page.delimiter.clone(),
        max_keys: Some(page.max as i32),
        key_count: Some((listing.contents.len() + listing.common_prefixes.len()) as i32),
        continuation_token: input.continuation_token,
        next_continuation_token: next,
        start_after: input.start_after.map(|s| encoded(&s, encode)),
        is_truncated: Some(listing.truncated),
        contents: Some(objects(listing, encode)),
        common_prefixes: Some(prefixes(listing, encode)),
        encoding_type: input.encoding_type,
        ..Default::default()
    }))
}

pub(super) async fn list_objects(
    s3: &SiloS3,
    req: S3Request<dto::ListObjectsInput>,
) -> S3Result<S3Response<dto::ListObjectsOutput>> {
    let input = req.input;
    let after = input.marker.clone().unwrap_or_default();
    let page = s3
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
    let (listing, encode) = (&page.listing, page.encode);
    Ok(S3Response::new(dto::ListObjectsOutput {
        name: Some(input.bucket),
        prefix: Some(page.prefix.clone()),
        // Always present, empty when none was given, as S3 answers.
        marker: Some(encoded(&after, encode)),
        delimiter: page.delimiter.clone(),
        max_keys: Some(page.max as i32),
        is_truncated: Some(listing.truncated),
        // NextMarker only with a delimiter, as AWS gives it; without one
        // the client continues from the last key.
        next_marker: page.delimiter.as_ref().and_then(|_| page.next_marker()),
        contents: Some(objects(listing, encode)),
        common_prefixes: Some(prefixes(listing, encode)),
        encoding_type: input.encoding_type,
        ..Default::default()
    }))
}

pub(super) async fn list_object_versions(
    s3: &SiloS3,
    req: S3Request<dto::ListObjectVersionsInput>,
) -> S3Result<S3Response<dto::ListObjectVersionsOutput>> {
    // An unversioned bucket: every object once, version `null`.
    let input = req.input;
    let after = input.key_marker.clone().unwrap_or_default();
    let page = s3
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
    let (listing, encode) = (&page.listing, page.encode);
    let next_key_marker = page.next_marker();
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
        prefix: Some(page.prefix.clone()),
        key_marker: input.key_marker.map(|k| encoded(&k, encode)),
        version_id_marker: input.version_id_marker,
        next_version_id_marker: next_key_marker.as_ref().map(|_| "null".to_owned()),
        next_key_marker,
        delimiter: page.delimiter.clone(),
        max_keys: Some(page.max as i32),
        is_truncated: Some(listing.truncated),
        versions: Some(versions),
        common_prefixes: Some(prefixes(listing, encode)),
        encoding_type: input.encoding_type,
        ..Default::default()
    }))
}
