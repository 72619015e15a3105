//! S3 error answers for the core's errors.

use super::*;

pub(super) fn storage_error(e: StorageError) -> S3Error {
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
        StorageError::Unavailable(why) => {
            tracing::error!("the storage failed an S3 request: {why}");
            s3_error!(ServiceUnavailable, "{why}")
        }
        StorageError::Busy(why) => s3_error!(SlowDown, "{why}"),
    }
}

pub(super) fn denied(e: Denied) -> S3Error {
    match e {
        Denied::Unauthenticated => s3_error!(AccessDenied, "this request needs a signature"),
        e @ Denied::NotGranted { .. } => s3_error!(AccessDenied, "{e}"),
        e @ Denied::NoSuchVolume(_) => s3_error!(NoSuchBucket, "{e}"),
    }
}

pub(super) fn request_error(e: RequestError) -> S3Error {
    match e {
        RequestError::Denied(e) => denied(e),
        RequestError::Storage(e) => storage_error(e),
    }
}

pub(super) fn cors_error(e: crate::cors::CorsError) -> S3Error {
    use crate::cors::CorsError;
    match e {
        CorsError::Denied(e) => denied(e),
        CorsError::Storage(e) => storage_error(e),
        CorsError::Invalid(why) => s3_error!(InvalidRequest, "{why}"),
        e @ CorsError::Configured(_) => s3_error!(AccessDenied, "{e}"),
    }
}

pub(super) fn upload_error(e: UploadError) -> S3Error {
    match e {
        UploadError::Denied(e) => denied(e),
        UploadError::Multipart(e) => multipart_error(e),
        UploadError::Put(e) => put_error(e),
    }
}

pub(super) fn multipart_error(e: MultipartError) -> S3Error {
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
pub(super) fn stored(report: crate::UploadReport) -> S3Result<crate::UploadReport> {
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
        Outcome::Invalid => s3_error!(InvalidArgument, "{message}"),
        Outcome::Failed => s3_error!(
            InternalError,
            "{}: {message}",
            report.error.as_ref().map_or("error", |e| e.code.as_str())
        ),
    })
}

/// Why an upload or a copy was not judged, as S3 answers it.
pub(super) fn put_error(e: PutError) -> S3Error {
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
        PutError::SourceRange => {
            // 400, as S3 answers a copied part's range (416 is a read's).
            let mut e = s3_error!(InvalidRange, "x-amz-copy-source-range is not within the source");
            e.set_status_code(http::StatusCode::BAD_REQUEST);
            e
        }
        PutError::OntoItself => s3_error!(
            InvalidRequest,
            "this copy request is illegal because it is trying to copy an object to itself without changing its metadata"
        ),
    }
}
