//! The real S3 server the tests share: SeaweedFS on 127.0.0.1, started for
//! the run by `tests/run` (the README's test command), which exports
//! `SILO_TEST_S3_ENDPOINT` and the credentials. Each test gets buckets of
//! its own. Without the server these tests fail; they never skip.

use std::sync::atomic::{AtomicU32, Ordering};

use aws_sdk_s3::Client;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use silo_host::store::{S3Settings, S3Store};

const HOW: &str = "the S3 tests need the SeaweedFS server that `tests/run` (the README's test command) starts; \
                   run `tests/run`, or export SILO_TEST_S3_ENDPOINT, AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY \
                   for a server of your own";

/// The server's URL.
pub fn endpoint() -> String {
    match std::env::var("SILO_TEST_S3_ENDPOINT") {
        Ok(url) if !url.is_empty() => url,
        _ => panic!("SILO_TEST_S3_ENDPOINT is not set: {HOW}"),
    }
}

pub(crate) fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set: {HOW}"))
}

/// A plain aws-sdk-s3 client, as another server or tool would use: for
/// setting up buckets and changing them behind Silo's back.
pub fn client() -> Client {
    client_at(&endpoint())
}

/// A plain client for the server at `endpoint`, with the run's credentials.
pub fn client_at(endpoint: &str) -> Client {
    let config = aws_sdk_s3::config::Builder::new()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new("us-east-1"))
        .force_path_style(true)
        .credentials_provider(Credentials::new(
            env("AWS_ACCESS_KEY_ID"),
            env("AWS_SECRET_ACCESS_KEY"),
            None,
            None,
            "silo-tests",
        ))
        .build();
    Client::from_conf(config)
}

/// A new, empty bucket named after `hint`.
pub async fn bucket(hint: &str) -> String {
    bucket_on(&client(), hint).await
}

/// A new, empty bucket named after `hint`, on the server `client` talks to.
pub async fn bucket_on(client: &Client, hint: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let hint: String = hint
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(30)
        .collect();
    let name = format!(
        "t-{hint}-{}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
            % 100_000
    );
    if let Err(e) = client.create_bucket().bucket(&name).send().await {
        panic!(
            "cannot create bucket {name}: {}\n{HOW}",
            aws_sdk_s3::error::DisplayErrorContext(&e)
        );
    }
    name
}

/// Settings for a volume in `bucket` under `prefix`.
pub fn settings(bucket: &str, prefix: &str) -> S3Settings {
    let mut s = S3Settings::new(bucket);
    s.prefix = prefix.to_owned();
    s.endpoint_url = Some(endpoint());
    s.region = Some("us-east-1".into());
    s.path_style = true;
    s
}

/// A store on a new bucket.
pub async fn store(hint: &str) -> S3Store {
    let bucket = bucket(hint).await;
    S3Store::connect(&settings(&bucket, "")).await.expect("connect to S3")
}

/// TOML for an `s3` volume in `bucket` under `prefix`.
pub fn volume_toml(name: &str, bucket: &str, prefix: &str, extra: &str) -> String {
    volume_toml_at(&endpoint(), name, bucket, prefix, extra)
}

/// TOML for an `s3` volume on the server at `endpoint`.
pub fn volume_toml_at(endpoint: &str, name: &str, bucket: &str, prefix: &str, extra: &str) -> String {
    format!(
        "[volumes.{name}]\nbackend = \"s3\"\nbucket = \"{bucket}\"\nprefix = \"{prefix}\"\n\
         endpoint_url = \"{endpoint}\"\nregion = \"us-east-1\"\n{extra}\n"
    )
}

/// Every key in `bucket`, sorted, with sizes.
pub async fn keys(bucket: &str) -> Vec<(String, u64)> {
    keys_on(&client(), bucket).await
}

/// Every key in `bucket` on the server `client` talks to.
pub async fn keys_on(client: &Client, bucket: &str) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    let mut token = None;
    loop {
        let page = client
            .list_objects_v2()
            .bucket(bucket)
            .set_continuation_token(token)
            .send()
            .await
            .expect("list the bucket");
        out.extend(
            page.contents()
                .iter()
                .map(|o| (o.key().unwrap_or_default().to_owned(), o.size().unwrap_or(0) as u64)),
        );
        token = page.next_continuation_token().map(str::to_owned);
        if token.is_none() {
            break;
        }
    }
    out.sort();
    out
}

/// Multipart uploads still open in `bucket`.
pub async fn open_uploads(bucket: &str) -> usize {
    open_uploads_on(&client(), bucket).await
}

/// Multipart uploads still open in `bucket` on the server `client` talks to.
pub async fn open_uploads_on(client: &Client, bucket: &str) -> usize {
    let out = client
        .list_multipart_uploads()
        .bucket(bucket)
        .send()
        .await
        .expect("list multipart uploads");
    out.uploads().len()
}

/// How many objects ListObjectsV2 lists directly in directory `prefix`
/// (ending in '/'), paging as a client without a cache must.
pub async fn count_listed(client: &Client, bucket: &str, prefix: &str) -> usize {
    let (mut count, mut token) = (0, None::<String>);
    loop {
        let page = client
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .delimiter("/")
            .set_continuation_token(token)
            .send()
            .await
            .expect("ListObjectsV2");
        count += page.contents().len();
        token = page.next_continuation_token().map(str::to_owned);
        if token.is_none() {
            return count;
        }
    }
}
