//! Buckets (volumes): HeadBucket, their location, their CORS rules, and
//! the other configuration calls answered as for a bucket with none.

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
    let caller = s3.caller(req.credentials.as_ref());
    let rules = s3
        .silo
        .cors_rules(&caller, &req.input.bucket)
        .await
        .map_err(cors_error)?
        .ok_or_else(|| s3_error!(NoSuchCORSConfiguration))?;
    let rules = rules
        .iter()
        .map(|r| dto::CORSRule {
            id: r.id.clone(),
            allowed_origins: r.allowed_origins.clone(),
            allowed_methods: r.allowed_methods.clone(),
            allowed_headers: (!r.allowed_headers.is_empty()).then(|| r.allowed_headers.clone()),
            expose_headers: (!r.expose_headers.is_empty()).then(|| r.expose_headers.clone()),
            max_age_seconds: r.max_age_secs.map(|s| s as i32),
        })
        .collect();
    Ok(S3Response::new(dto::GetBucketCorsOutput {
        cors_rules: Some(rules),
    }))
}

pub(super) async fn put_bucket_cors(
    s3: &SiloS3,
    req: S3Request<dto::PutBucketCorsInput>,
) -> S3Result<S3Response<dto::PutBucketCorsOutput>> {
    let caller = s3.caller(req.credentials.as_ref());
    let rules = req
        .input
        .cors_configuration
        .cors_rules
        .into_iter()
        .map(|r| {
            Ok(crate::cors::CorsRule {
                id: r.id,
                allowed_origins: r.allowed_origins,
                allowed_methods: r.allowed_methods,
                allowed_headers: r.allowed_headers.unwrap_or_default(),
                expose_headers: r.expose_headers.unwrap_or_default(),
                max_age_secs: r
                    .max_age_seconds
                    .map(|s| {
                        u32::try_from(s).map_err(|_| s3_error!(MalformedXML, "MaxAgeSeconds must not be negative"))
                    })
                    .transpose()?,
            })
        })
        .collect::<S3Result<Vec<_>>>()?;
    s3.silo
        .set_cors(&caller, &req.input.bucket, Some(rules))
        .await
        .map_err(cors_error)?;
    Ok(S3Response::new(dto::PutBucketCorsOutput::default()))
}

pub(super) async fn delete_bucket_cors(
    s3: &SiloS3,
    req: S3Request<dto::DeleteBucketCorsInput>,
) -> S3Result<S3Response<dto::DeleteBucketCorsOutput>> {
    let caller = s3.caller(req.credentials.as_ref());
    s3.silo
        .set_cors(&caller, &req.input.bucket, None)
        .await
        .map_err(cors_error)?;
    Ok(S3Response::new(dto::DeleteBucketCorsOutput::default()))
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
