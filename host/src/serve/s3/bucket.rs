//! Buckets (volumes): HeadBucket, their location, and the configuration
//! calls answered as for a bucket with none.

use super::*;

pub(super) async fn head_bucket(
    s3: &SiloS3,
    req: S3Request<dto::HeadBucketInput>,
) -> S3Result<S3Response<dto::HeadBucketOutput>> {
    s3.visibility(&req.input.bucket)?;
    Ok(S3Response::new(dto::HeadBucketOutput {
        bucket_region: Some(s3.settings.region.clone()),
        ..Default::default()
    }))
}

pub(super) async fn get_bucket_location(
    s3: &SiloS3,
    req: S3Request<dto::GetBucketLocationInput>,
) -> S3Result<S3Response<dto::GetBucketLocationOutput>> {
    s3.visibility(&req.input.bucket)?;
    // us-east-1 is answered as an empty constraint, as AWS does.
    let location =
        (s3.settings.region != "us-east-1").then(|| dto::BucketLocationConstraint::from(s3.settings.region.clone()));
    Ok(S3Response::new(dto::GetBucketLocationOutput {
        location_constraint: location,
    }))
}

pub(super) async fn get_bucket_versioning(
    s3: &SiloS3,
    req: S3Request<dto::GetBucketVersioningInput>,
) -> S3Result<S3Response<dto::GetBucketVersioningOutput>> {
    // Never versioned: no status at all, as AWS answers for such a bucket.
    s3.visibility(&req.input.bucket)?;
    Ok(S3Response::new(dto::GetBucketVersioningOutput::default()))
}

pub(super) async fn get_bucket_acl(
    s3: &SiloS3,
    req: S3Request<dto::GetBucketAclInput>,
) -> S3Result<S3Response<dto::GetBucketAclOutput>> {
    let visibility = s3.visibility(&req.input.bucket)?;
    let (owner, grants) = s3.acl(req.credentials.as_ref(), visibility);
    Ok(S3Response::new(dto::GetBucketAclOutput {
        owner: Some(owner),
        grants: Some(grants),
    }))
}

pub(super) async fn get_bucket_cors(
    s3: &SiloS3,
    req: S3Request<dto::GetBucketCorsInput>,
) -> S3Result<S3Response<dto::GetBucketCorsOutput>> {
    s3.visibility(&req.input.bucket)?;
    Err(s3_error!(NoSuchCORSConfiguration))
}

pub(super) async fn get_bucket_policy(
    s3: &SiloS3,
    req: S3Request<dto::GetBucketPolicyInput>,
) -> S3Result<S3Response<dto::GetBucketPolicyOutput>> {
    s3.visibility(&req.input.bucket)?;
    Err(s3_error!(NoSuchBucketPolicy))
}

pub(super) async fn get_bucket_lifecycle_configuration(
    s3: &SiloS3,
    req: S3Request<dto::GetBucketLifecycleConfigurationInput>,
) -> S3Result<S3Response<dto::GetBucketLifecycleConfigurationOutput>> {
    s3.visibility(&req.input.bucket)?;
    Err(s3_error!(NoSuchLifecycleConfiguration))
}

pub(super) async fn get_bucket_tagging(
    s3: &SiloS3,
    req: S3Request<dto::GetBucketTaggingInput>,
) -> S3Result<S3Response<dto::GetBucketTaggingOutput>> {
    s3.visibility(&req.input.bucket)?;
    Err(s3_error!(NoSuchTagSet))
}

pub(super) async fn create_bucket(
    s3: &SiloS3,
    req: S3Request<dto::CreateBucketInput>,
) -> S3Result<S3Response<dto::CreateBucketOutput>> {
    // Only existing volumes reach here (the access check refuses others).
    s3.visibility(&req.input.bucket)?;
    Err(s3_error!(
        BucketAlreadyOwnedByYou,
        "volume '{}' exists; volumes are configured, not created over S3",
        req.input.bucket
    ))
}
