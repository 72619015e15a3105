//! Silo's S3 endpoint driven by the aws-sdk-s3 client, as a CMS's S3
//! module would drive it: uploads judged by the pipeline, reads, listings
//! and deletes from the metadata cache, on local volumes and on volumes in
//! a real S3 server; and who may do what.

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::primitives::ByteStream;
use silo_tests::run_tool;
use silo_tests::s3api::{BASE_DOMAIN, Endpoint, principal, two_nodes};
use silo_tests::{EXAMPLE_PIPELINE, TestSilo, s3};

const SECRET: &str = "cms-secret-0123456789";
const ALL: &str = r#"[{ volume = "public", access = ["read", "write", "delete"] }, { volume = "private", access = ["read", "write", "delete"] }]"#;

fn credentials() -> String {
    [
        principal("cms", "CMSKEY", SECRET, ALL),
        principal(
            "reader",
            "READERKEY",
            "reader-secret-0123456789",
            r#"[{ volume = "public", access = ["read"] }]"#,
        ),
    ]
    .concat()
}

/// The S3 error code and HTTP status of a failed call.
fn failure<T: std::fmt::Debug, E: ProvideErrorMetadata + std::fmt::Debug, R: std::fmt::Debug + HasStatus>(
    result: Result<T, aws_sdk_s3::error::SdkError<E, R>>,
) -> (String, u16, String)
where
    aws_sdk_s3::error::SdkError<E, R>: ProvideErrorMetadata,
{
    let err = result.expect_err("the call should have failed");
    let status = err.raw_response().map_or(0, HasStatus::status);
    (
        err.code().unwrap_or("none").to_owned(),
        status,
        err.message().unwrap_or("").to_owned(),
    )
}

trait HasStatus {
    fn status(&self) -> u16;
}

impl HasStatus for aws_sdk_s3::config::http::HttpResponse {
    fn status(&self) -> u16 {
        self.status().as_u16()
    }
}

/// Store `text` as a plain-text object.
async fn put_text(client: &aws_sdk_s3::Client, bucket: &str, key: &str, text: &str) {
    client
        .put_object()
        .bucket(bucket)
        .key(key)
        .body(ByteStream::from(text.as_bytes().to_vec()))
        .content_type("text/plain")
        .send()
        .await
        .unwrap_or_else(|e| panic!("{bucket}/{key}: {}", aws_sdk_s3::error::DisplayErrorContext(&e)));
}

/// The whole of an object.
async fn read(client: &aws_sdk_s3::Client, bucket: &str, key: &str) -> Vec<u8> {
    let output = client.get_object().bucket(bucket).key(key).send().await;
    body(output.unwrap_or_else(|e| panic!("{bucket}/{key}: {}", aws_sdk_s3::error::DisplayErrorContext(&e)))).await
}

async fn body(output: aws_sdk_s3::operation::get_object::GetObjectOutput) -> Vec<u8> {
    output.body.collect().await.unwrap().into_bytes().to_vec()
}

async fn keys(client: &aws_sdk_s3::Client, bucket: &str, prefix: &str) -> Vec<String> {
    let out = client
        .list_objects_v2()
        .bucket(bucket)
        .prefix(prefix)
        .send()
        .await
        .unwrap();
    out.contents()
        .iter()
        .filter_map(|o| o.key().map(str::to_owned))
        .collect()
}

/// Silo with the example pipeline on local volumes, or on volumes in a new
/// bucket of the S3 server (with the bucket).
async fn silo(on_s3: bool) -> (TestSilo, Option<String>) {
    silo_with(on_s3, EXAMPLE_PIPELINE).await
}

/// As [`silo`], with another pipeline.
async fn silo_with(on_s3: bool, pipeline: &str) -> (TestSilo, Option<String>) {
    if on_s3 {
        let (t, bucket) = TestSilo::on_s3(pipeline, &[], "s3api").await.unwrap();
        (t, Some(bucket))
    } else {
        (TestSilo::new(pipeline, &[]).await.unwrap(), None)
    }
}

/// Silo without plugins on local volumes, or on volumes in a new bucket of
/// the S3 server, behind its S3 endpoint, with a client signing as the CMS.
struct Site {
    /// The backend, for messages.
    on: &'static str,
    silo: Arc<silo_host::Silo>,
    endpoint: Endpoint,
    cms: aws_sdk_s3::Client,
    /// The bucket, on S3.
    bucket: Option<String>,
    _dir: tempfile::TempDir,
    _more: Vec<tempfile::TempDir>,
}

/// Where the clients CMSs ship are tried: one node on local volumes, one
/// on S3 volumes, and two nodes on S3 volumes sharing a PostgreSQL behind
/// a round-robin balancer (each request to the next node).
const SETUPS: [&str; 3] = ["local", "s3", "two nodes"];

impl Site {
    /// The site of one of [`SETUPS`].
    async fn of(setup: &str) -> Site {
        match setup {
            "local" => Site::new(false).await,
            "s3" => Site::new(true).await,
            _ => {
                let (silo, endpoint, bucket, mut dirs) = two_nodes("", &credentials(), "s3api-nodes").await;
                let cms = endpoint.client("CMSKEY", SECRET);
                Site {
                    on: "two nodes",
                    silo,
                    endpoint,
                    cms,
                    bucket: Some(bucket),
                    _dir: dirs.pop().unwrap(),
                    _more: dirs,
                }
            }
        }
    }

    async fn new(on_s3: bool) -> Site {
        let (t, bucket) = silo_with(on_s3, "").await;
        let TestSilo { dir, silo } = t;
        let silo = Arc::new(silo);
        let endpoint = Endpoint::start(silo.clone(), &credentials(), Duration::from_secs(30)).await;
        let cms = endpoint.client("CMSKEY", SECRET);
        Site {
            on: if on_s3 { "s3" } else { "local" },
            silo,
            endpoint,
            cms,
            bucket,
            _dir: dir,
            _more: Vec::new(),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cms_writes_reads_lists_and_deletes_through_the_s3_endpoint() {
    let photo = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../samples/sunset.jpg")).unwrap();
    let png = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../samples/sunset.png")).unwrap();
    for on_s3 in [false, true] {
        let (t, bucket) = silo(on_s3).await;
        let silo = Arc::new(t.silo);
        let endpoint = Endpoint::start(silo.clone(), &credentials(), Duration::from_secs(30)).await;
        let cms = endpoint.client("CMSKEY", SECRET);
        let on = if on_s3 { "s3" } else { "local" };

        // An image, with what s3fs and S3-Uploads send along.
        let put = cms
            .put_object()
            .bucket("public")
            .key("photos/sunset.jpg")
            .body(ByteStream::from(photo.clone()))
            .content_type("image/jpeg")
            .cache_control("max-age=600")
            .metadata("owner", "7")
            .acl(aws_sdk_s3::types::ObjectCannedAcl::PublicRead)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{on}: {}", aws_sdk_s3::error::DisplayErrorContext(&e)));
        let etag = put.e_tag().unwrap().to_owned();
        // The plugins' derivatives are there, listed.
        assert_eq!(
            keys(&cms, "public", "styles/").await,
            ["styles/medium/photos/sunset.jpg", "styles/thumbnail/photos/sunset.jpg"],
            "{on}"
        );
        let head = cms
            .head_object()
            .bucket("public")
            .key("photos/sunset.jpg")
            .send()
            .await
            .unwrap();
        assert_eq!(head.content_length(), Some(photo.len() as i64), "{on}");
        assert_eq!(head.content_type(), Some("image/jpeg"));
        assert_eq!(head.e_tag(), Some(etag.as_str()));
        assert_eq!(head.cache_control(), Some("max-age=600"), "{on}");
        assert_eq!(
            head.metadata().and_then(|m| m.get("owner")).map(String::as_str),
            Some("7"),
            "{on}"
        );
        let whole = cms
            .get_object()
            .bucket("public")
            .key("photos/sunset.jpg")
            .send()
            .await
            .unwrap();
        assert!(body(whole).await == photo, "{on}: the bytes differ");
        let ranged = cms
            .get_object()
            .bucket("public")
            .key("photos/sunset.jpg")
            .range("bytes=10-19")
            .send()
            .await
            .unwrap();
        assert_eq!(
            ranged.content_range(),
            Some(format!("bytes 10-19/{}", photo.len()).as_str())
        );
        assert_eq!(body(ranged).await, &photo[10..20], "{on}");
        let (code, status, _) = failure(
            cms.get_object()
                .bucket("public")
                .key("photos/sunset.jpg")
                .range(format!("bytes={}-", photo.len() + 10))
                .send()
                .await,
        );
        assert_eq!((code.as_str(), status), ("InvalidRange", 416), "{on}");
        let (_, status, _) = failure(
            cms.get_object()
                .bucket("public")
                .key("photos/sunset.jpg")
                .if_none_match(&etag)
                .send()
                .await,
        );
        assert_eq!(status, 304, "{on}");
        let (code, status, _) = failure(
            cms.get_object()
                .bucket("public")
                .key("photos/sunset.jpg")
                .if_match("\"not-this-one\"")
                .send()
                .await,
        );
        assert_eq!((code.as_str(), status), ("PreconditionFailed", 412), "{on}");

        // Refusals: a server-executable name, and a PNG that says it is a
        // JPEG. 403 with the reason, nothing stored.
        for (key, bytes, content_type, why) in [
            (
                "shell.php",
                b"<?php system($_GET['c']);".to_vec(),
                "text/plain",
                "extension '.php'",
            ),
            ("photos/fake.jpg", png.clone(), "image/jpeg", "image/png"),
        ] {
            let (code, status, message) = failure(
                cms.put_object()
                    .bucket("public")
                    .key(key)
                    .body(ByteStream::from(bytes))
                    .content_type(content_type)
                    .send()
                    .await,
            );
            assert_eq!((code.as_str(), status), ("AccessDenied", 403), "{on} {key}: {message}");
            assert!(message.contains(why), "{on} {key}: {message}");
            let (code, status, _) = failure(cms.head_object().bucket("public").key(key).send().await);
            assert_eq!(status, 404, "{on} {key}: {code}");
        }
        // Create-only: the second is refused.
        let create_only = || {
            cms.put_object()
                .bucket("private")
                .key("notes/a.txt")
                .body(ByteStream::from_static(b"first"))
                .if_none_match("*")
                .send()
        };
        create_only().await.unwrap();
        let (code, status, _) = failure(create_only().await);
        assert_eq!((code.as_str(), status), ("PreconditionFailed", 412), "{on}");
        // partNumber on a read: part 1 of an object stored in one part is
        // the whole object; another part is InvalidPartNumber (416).
        let part = |n: i32| {
            cms.get_object()
                .bucket("private")
                .key("notes/a.txt")
                .part_number(n)
                .send()
        };
        assert_eq!(body(part(1).await.unwrap()).await, b"first", "{on}");
        let head = cms
            .head_object()
            .bucket("private")
            .key("notes/a.txt")
            .part_number(1)
            .send()
            .await
            .unwrap();
        assert_eq!(head.content_length(), Some(5), "{on}");
        let (code, status, _) = failure(part(2).await);
        assert_eq!((code.as_str(), status), ("InvalidPartNumber", 416), "{on}");

        // Listings: a delimiter rolls up directories; pages continue.
        for i in 0..25 {
            put_text(&cms, "private", &format!("many/{i:02}.txt"), &format!("note {i}")).await;
        }
        let root = cms
            .list_objects_v2()
            .bucket("public")
            .delimiter("/")
            .send()
            .await
            .unwrap();
        let prefixes: Vec<&str> = root.common_prefixes().iter().filter_map(|p| p.prefix()).collect();
        assert_eq!(prefixes, ["photos/", "styles/"], "{on}");
        assert_eq!(root.key_count(), Some(2));
        assert!(root.contents().is_empty());
        let mut seen = Vec::new();
        let mut token = None;
        let mut pages = 0;
        loop {
            let page = cms
                .list_objects_v2()
                .bucket("private")
                .prefix("many/")
                .max_keys(10)
                .set_continuation_token(token.clone())
                .send()
                .await
                .unwrap();
            pages += 1;
            seen.extend(page.contents().iter().filter_map(|o| o.key().map(str::to_owned)));
            if page.is_truncated() != Some(true) {
                break;
            }
            token = page.next_continuation_token().map(str::to_owned);
        }
        assert_eq!(pages, 3, "{on}");
        let expected: Vec<String> = (0..25).map(|i| format!("many/{i:02}.txt")).collect();
        assert_eq!(seen, expected, "{on}");
        // ListObjects v1 with a marker, and NextMarker with a delimiter.
        let v1 = cms
            .list_objects()
            .bucket("private")
            .prefix("many/")
            .marker("many/20.txt")
            .send()
            .await
            .unwrap();
        let v1_keys: Vec<&str> = v1.contents().iter().filter_map(|o| o.key()).collect();
        assert_eq!(v1_keys, ["many/21.txt", "many/22.txt", "many/23.txt", "many/24.txt"]);
        let v1 = cms
            .list_objects()
            .bucket("private")
            .delimiter("/")
            .max_keys(1)
            .send()
            .await
            .unwrap();
        assert_eq!(v1.is_truncated(), Some(true));
        assert_eq!(v1.next_marker(), Some("many/"), "{on}");
        let v1 = cms
            .list_objects()
            .bucket("private")
            .delimiter("/")
            .marker("many/")
            .send()
            .await
            .unwrap();
        let prefixes: Vec<&str> = v1.common_prefixes().iter().filter_map(|p| p.prefix()).collect();
        assert_eq!(prefixes, ["notes/"], "{on}: continuing past many/");
        // As S3 answers: `Marker` always (empty when none was given), an
        // empty delimiter is none and is not echoed, `max-keys=0` an empty
        // page that is not truncated.
        let v1 = cms
            .list_objects()
            .bucket("private")
            .prefix("many/")
            .delimiter("")
            .max_keys(0)
            .send()
            .await
            .unwrap();
        assert_eq!(v1.marker(), Some(""), "{on}");
        assert_eq!(v1.delimiter(), None, "{on}");
        assert_eq!(v1.is_truncated(), Some(false), "{on}");
        assert!(v1.contents().is_empty(), "{on}");
        let v2 = cms
            .list_objects_v2()
            .bucket("private")
            .prefix("many/")
            .delimiter("")
            .max_keys(3)
            .send()
            .await
            .unwrap();
        assert_eq!(v2.delimiter(), None, "{on}");
        assert_eq!(v2.contents().len(), 3, "{on}: an empty delimiter rolls nothing up");

        // Deletes, one and many (quiet), idempotent as on S3.
        cms.delete_object()
            .bucket("private")
            .key("notes/a.txt")
            .send()
            .await
            .unwrap();
        cms.delete_object()
            .bucket("private")
            .key("notes/a.txt")
            .send()
            .await
            .unwrap();
        let objects: Vec<_> = expected
            .iter()
            .map(|k| aws_sdk_s3::types::ObjectIdentifier::builder().key(k).build().unwrap())
            .collect();
        let deleted = cms
            .delete_objects()
            .bucket("private")
            .delete(
                aws_sdk_s3::types::Delete::builder()
                    .set_objects(Some(objects))
                    .quiet(true)
                    .build()
                    .unwrap(),
            )
            .send()
            .await
            .unwrap();
        assert!(
            deleted.errors().is_empty() && deleted.deleted().is_empty(),
            "{deleted:?}"
        );
        assert!(keys(&cms, "private", "").await.is_empty(), "{on}");
        if let Some(bucket) = &bucket {
            let left: Vec<String> = s3::keys(bucket).await.into_iter().map(|(k, _)| k).collect();
            assert!(left.iter().all(|k| k.starts_with("public/")), "{left:?}");
        }

        // Counted by operation and status.
        let metrics = silo.storage().metrics().render();
        for line in [
            r#"silo_s3_requests_total{operation="PutObject",status="200"}"#,
            r#"silo_s3_requests_total{operation="PutObject",status="403"}"#,
            r#"silo_s3_requests_total{operation="GetObject",status="206"}"#,
            r#"silo_s3_requests_total{operation="ListObjectsV2",status="200"}"#,
        ] {
            assert!(metrics.contains(line), "{on}: no {line} in\n{metrics}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn principals_and_anonymous_requests_get_only_their_rights() {
    let (t, _) = silo(false).await;
    let silo = Arc::new(t.silo);
    let endpoint = Endpoint::start(silo.clone(), &credentials(), Duration::from_secs(30)).await;
    let cms = endpoint.client("CMSKEY", SECRET);
    let reader = endpoint.client("READERKEY", "reader-secret-0123456789");
    for (bucket, key) in [("public", "docs/a.txt"), ("private", "docs/secret.txt")] {
        put_text(&cms, bucket, key, "hello").await;
    }

    // A read-only principal reads its volume and nothing else.
    assert_eq!(read(&reader, "public", "docs/a.txt").await, b"hello");
    let (code, status, message) = failure(
        reader
            .put_object()
            .bucket("public")
            .key("docs/b.txt")
            .body(ByteStream::from_static(b"x"))
            .send()
            .await,
    );
    assert_eq!((code.as_str(), status), ("AccessDenied", 403), "{message}");
    assert!(message.contains("'reader' may not write"), "{message}");
    let (code, _, _) = failure(reader.delete_object().bucket("public").key("docs/a.txt").send().await);
    assert_eq!(code, "AccessDenied");
    let (code, _, _) = failure(
        reader
            .get_object()
            .bucket("private")
            .key("docs/secret.txt")
            .send()
            .await,
    );
    assert_eq!(code, "AccessDenied");
    let (code, _, _) = failure(reader.list_objects_v2().bucket("private").send().await);
    assert_eq!(code, "AccessDenied");
    let listed = reader.list_buckets().send().await.unwrap();
    let names: Vec<&str> = listed.buckets().iter().filter_map(|b| b.name()).collect();
    assert_eq!(names, ["public"]);
    let (code, _, _) = failure(cms.head_bucket().bucket("nope").send().await);
    assert_eq!(code, "NotFound", "HeadBucket has no body: the SDK says NotFound");
    let (code, _, _) = failure(cms.list_objects_v2().bucket("nope").send().await);
    assert_eq!(code, "NoSuchBucket");
    // Buckets are volumes, not made over S3; an existing one is answered as
    // AWS answers its owner.
    let (code, status, _) = failure(cms.create_bucket().bucket("fresh").send().await);
    assert_eq!((code.as_str(), status), ("NotImplemented", 501));
    let (code, status, _) = failure(cms.create_bucket().bucket("public").send().await);
    assert_eq!((code.as_str(), status), ("BucketAlreadyOwnedByYou", 409));
    let (code, _, _) = failure(cms.delete_bucket().bucket("public").send().await);
    assert_eq!(code, "NotImplemented");

    // Forged and unknown credentials.
    let forger = endpoint.client("CMSKEY", "not-the-secret-0123456789");
    let (code, status, _) = failure(
        forger
            .get_object()
            .bucket("private")
            .key("docs/secret.txt")
            .send()
            .await,
    );
    assert_eq!((code.as_str(), status), ("SignatureDoesNotMatch", 403));
    let stranger = endpoint.client("NOBODYKEY", SECRET);
    let (code, _, _) = failure(stranger.list_buckets().send().await);
    assert_eq!(code, "InvalidAccessKeyId");

    // Anonymous: public objects may be read, nothing else.
    let http = silo_tests::http::Client::default();
    let url = |path: &str| format!("{}/{path}", endpoint.url());
    let public = http.get(&url("public/docs/a.txt"), &[]).await.unwrap();
    assert_eq!(public.status, 200);
    assert_eq!(public.text(), "hello");
    assert_eq!(public.header("x-content-type-options"), Some("nosniff"));
    let private = http.get(&url("private/docs/secret.txt"), &[]).await.unwrap();
    assert_eq!(private.status, 403, "{}", private.text());
    assert!(
        private.text().contains("<Code>AccessDenied</Code>"),
        "{}",
        private.text()
    );
    let write = http
        .send(
            hyper::Method::PUT,
            &url("public/docs/planted.txt"),
            &[],
            bytes::Bytes::from_static(b"x"),
        )
        .await
        .unwrap();
    assert_eq!(write.status, 403);
    let listing = http.get(&url("public?list-type=2"), &[]).await.unwrap();
    assert_eq!(listing.status, 403);
    assert!(
        !silo
            .storage()
            .host_session()
            .exists(&silo.storage().location("public", "docs/planted.txt").unwrap())
            .await
            .unwrap()
    );

    // Virtual-host addressing under the base domain; any other host is
    // path style, never a bucket.
    let virtual_host = format!("public.{BASE_DOMAIN}");
    let vh = http
        .get(&url("docs/a.txt"), &[("host", virtual_host.as_str())])
        .await
        .unwrap();
    assert_eq!((vh.status.as_u16(), vh.text().as_str()), (200, "hello"));
    let elsewhere = http
        .get(&url("public/docs/a.txt"), &[("host", "public.elsewhere.test")])
        .await
        .unwrap();
    assert_eq!(elsewhere.status, 200, "path style on an unknown host");

    // A presigned GET opens one private object, for that method and key.
    let presigned = cms
        .get_object()
        .bucket("private")
        .key("docs/secret.txt")
        .presigned(aws_sdk_s3::presigning::PresigningConfig::expires_in(Duration::from_secs(60)).unwrap())
        .await
        .unwrap();
    let signed = presigned.uri().to_owned();
    let opened = http.get(&signed, &[]).await.unwrap();
    assert_eq!((opened.status.as_u16(), opened.text().as_str()), (200, "hello"));
    let other_key = http.get(&signed.replace("secret.txt", "other.txt"), &[]).await.unwrap();
    assert_eq!(other_key.status, 403);
    let other_method = http
        .send(
            hyper::Method::PUT,
            &signed,
            &[],
            bytes::Bytes::from_static(b"overwrite"),
        )
        .await
        .unwrap();
    assert_eq!(other_method.status, 403);
    assert_eq!(read(&cms, "private", "docs/secret.txt").await, b"hello");
    // One that expired is refused as S3 refuses it: 403 AccessDenied.
    let expired = cms
        .get_object()
        .bucket("private")
        .key("docs/secret.txt")
        .presigned(
            aws_sdk_s3::presigning::PresigningConfig::builder()
                .start_time(std::time::SystemTime::now() - Duration::from_secs(3600))
                .expires_in(Duration::from_secs(60))
                .build()
                .unwrap(),
        )
        .await
        .unwrap();
    let refused = http.get(expired.uri(), &[]).await.unwrap();
    assert_eq!(refused.status, 403, "{}", refused.text());
    assert!(refused.text().contains("AccessDenied"), "{}", refused.text());

    // The credentials file is read again on reload: a new key works, a
    // removed one no longer does.
    std::fs::write(
        &endpoint.credentials_file,
        principal("late", "LATEKEY", "late-secret-0123456789", ALL),
    )
    .unwrap();
    assert_eq!(endpoint.principals.reload().unwrap(), 1);
    let late = endpoint.client("LATEKEY", "late-secret-0123456789");
    late.head_object()
        .bucket("public")
        .key("docs/a.txt")
        .send()
        .await
        .unwrap();
    // A HEAD's error has no body: the status says it.
    let (_, status, _) = failure(cms.head_object().bucket("public").key("docs/a.txt").send().await);
    assert_eq!(status, 403);
    let (code, _, _) = failure(cms.list_buckets().send().await);
    assert_eq!(code, "InvalidAccessKeyId");
    // A broken file keeps the principals in force.
    std::fs::write(&endpoint.credentials_file, "[[principal]]\nname = 1\n").unwrap();
    assert!(endpoint.principals.reload().is_err());
    late.head_object()
        .bucket("public")
        .key("docs/a.txt")
        .send()
        .await
        .unwrap();
}

/// A client that sends its request headers too slowly is cut off.
#[tokio::test]
async fn a_slow_client_is_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (t, _) = silo(false).await;
    let endpoint = Endpoint::start(Arc::new(t.silo), &credentials(), Duration::from_secs(1)).await;
    let mut stream = tokio::net::TcpStream::connect(endpoint.addr).await.unwrap();
    stream.write_all(b"GET /public/x HTTP/1.1\r\nHost: ").await.unwrap();
    let started = std::time::Instant::now();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the connection was still open after 10 s");
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(900), "cut off after {waited:?}");
}

/// The AWS CLI (awscli from PyPI, as `tests/run` installs it) against the
/// endpoint: `s3 cp` both ways, `s3 sync`, `s3 ls --recursive`, `s3 rm`,
/// and a refused upload, on a local volume.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_aws_cli_copies_syncs_lists_and_removes() {
    let aws = std::env::var("SILO_TEST_AWS")
        .expect("SILO_TEST_AWS is not set: run the tests with tests/run, which installs awscli");
    let (t, _) = silo(false).await;
    let silo = Arc::new(t.silo);
    let endpoint = Endpoint::start(silo.clone(), &credentials(), Duration::from_secs(30)).await;
    let work = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| aws_cli(&aws, &endpoint, work.path(), args);
    let site = work.path().join("site");
    std::fs::create_dir_all(site.join("css")).unwrap();
    std::fs::write(site.join("index.txt"), "welcome").unwrap();
    std::fs::write(site.join("css/site.css"), "body { color: black }").unwrap();
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/../samples/sunset.jpg"),
        site.join("sunset.jpg"),
    )
    .unwrap();

    let (ok, _, err) = run(&["s3", "cp", "site/index.txt", "s3://private/docs/index.txt"]);
    assert!(ok, "{err}");
    let (ok, _, err) = run(&["s3", "cp", "s3://private/docs/index.txt", "back.txt"]);
    assert!(ok, "{err}");
    assert_eq!(
        std::fs::read_to_string(work.path().join("back.txt")).unwrap(),
        "welcome"
    );
    let (ok, _, err) = run(&["s3", "sync", "site", "s3://public/site"]);
    assert!(ok, "{err}");
    let (ok, listed, err) = run(&["s3", "ls", "--recursive", "s3://public/"]);
    assert!(ok, "{err}");
    let mut names: Vec<&str> = listed.lines().filter_map(|l| l.split_whitespace().last()).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "site/css/site.css",
            "site/index.txt",
            "site/sunset.jpg",
            "styles/medium/site/sunset.jpg",
            "styles/thumbnail/site/sunset.jpg"
        ],
        "{listed}"
    );
    // A second sync has nothing to send.
    let (ok, out, err) = run(&["s3", "sync", "site", "s3://public/site"]);
    assert!(ok && out.trim().is_empty(), "{out}{err}");
    // And back down.
    let (ok, _, err) = run(&["s3", "sync", "s3://public/site", "copy"]);
    assert!(ok, "{err}");
    assert!(
        std::fs::read(work.path().join("copy/sunset.jpg")).unwrap() == std::fs::read(site.join("sunset.jpg")).unwrap()
    );
    // The policy refuses through the CLI too, and it says why.
    std::fs::write(work.path().join("shell.php"), "<?php system($_GET['c']);").unwrap();
    let (ok, _, err) = run(&["s3", "cp", "shell.php", "s3://public/shell.php"]);
    assert!(!ok && err.contains("AccessDenied") && err.contains(".php"), "{err}");
    let (ok, _, err) = run(&["s3", "rm", "--recursive", "s3://public/site/css"]);
    assert!(ok, "{err}");
    let (ok, _, err) = run(&[
        "s3api",
        "head-object",
        "--bucket",
        "public",
        "--key",
        "site/css/site.css",
    ]);
    assert!(!ok && err.contains("404"), "{err}");
    let (ok, out, err) = run(&[
        "s3api",
        "list-objects-v2",
        "--no-paginate",
        "--bucket",
        "public",
        "--prefix",
        "site/",
        "--delimiter",
        "/",
    ]);
    assert!(ok, "{err}");
    let listing: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(listing["KeyCount"], 2, "{out}");
}

/// `Content-MD5` and `x-amz-checksum-*` are checked against the body: one
/// that disagrees is refused with `BadDigest` and nothing is stored; the
/// right ones are taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn digests_sent_with_a_body_are_verified() {
    let (t, _) = silo(false).await;
    let silo = Arc::new(t.silo);
    let endpoint = Endpoint::start(silo.clone(), &credentials(), Duration::from_secs(30)).await;
    let cms = endpoint.client("CMSKEY", SECRET);
    let put = |key: &'static str| {
        cms.put_object()
            .bucket("private")
            .key(key)
            .content_type("text/plain")
            .body(ByteStream::from_static(b"hello"))
    };
    // MD5("hello") and CRC32("hello"), base64.
    put("md5.txt")
        .content_md5("XUFAKrxLKna5cZ2REBfFkg==")
        .send()
        .await
        .unwrap();
    put("crc.txt").checksum_crc32("NhCmhg==").send().await.unwrap();
    for (key, result) in [
        (
            "bad-md5.txt",
            put("bad-md5.txt").content_md5("AAAAAAAAAAAAAAAAAAAAAA==").send().await,
        ),
        (
            "bad-crc32.txt",
            put("bad-crc32.txt").checksum_crc32("AAAAAA==").send().await,
        ),
        (
            "bad-sha256.txt",
            put("bad-sha256.txt")
                .checksum_sha256("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=")
                .send()
                .await,
        ),
    ] {
        let (code, status, message) = failure(result);
        assert_eq!((code.as_str(), status), ("BadDigest", 400), "{key}: {message}");
        let (_, status, _) = failure(cms.head_object().bucket("private").key(key).send().await);
        assert_eq!(status, 404, "{key} was stored");
    }
    assert_eq!(keys(&cms, "private", "").await, ["crc.txt", "md5.txt"]);
}

/// What Drupal's s3fs and WordPress's S3-Uploads send, replayed: the empty
/// probe PUT before the real one, renames as HeadObject + CopyObject +
/// DeleteObject, Zulip's copy onto itself with `MetadataDirective=REPLACE`,
/// s3fs's settings check (ListObjectVersions with MaxKeys=1) and the bucket
/// reads SDKs make on connect, answered as for an unversioned bucket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cms_request_patterns_copies_and_unversioned_answers() {
    use aws_sdk_s3::types::MetadataDirective;
    let photo = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../samples/sunset.jpg")).unwrap();
    for on_s3 in [false, true] {
        let (t, _) = silo(on_s3).await;
        let silo = Arc::new(t.silo);
        let endpoint = Endpoint::start(silo.clone(), &credentials(), Duration::from_secs(30)).await;
        let cms = endpoint.client("CMSKEY", SECRET);
        let reader = endpoint.client("READERKEY", "reader-secret-0123456789");
        let on = if on_s3 { "s3" } else { "local" };

        // S3-Uploads: an empty object first, then the real one.
        cms.put_object()
            .bucket("public")
            .key("uploads/2026/12/cat.jpg")
            .content_type("image/jpeg")
            .body(ByteStream::from_static(b""))
            .send()
            .await
            .expect_err("an empty file declared as a JPEG is not a JPEG");
        put_text(&cms, "public", "uploads/2026/12/probe.txt", "").await;
        cms.put_object()
            .bucket("public")
            .key("uploads/2026/12/cat.jpg")
            .content_type("image/jpeg")
            .body(ByteStream::from(photo.clone()))
            .send()
            .await
            .unwrap();

        // s3fs's rename: HeadObject, CopyObject, DeleteObject.
        let head = cms
            .head_object()
            .bucket("public")
            .key("uploads/2026/12/cat.jpg")
            .send()
            .await
            .unwrap();
        let copied = cms
            .copy_object()
            .bucket("public")
            .key("uploads/2026/12/kitten.jpg")
            .copy_source("public/uploads/2026/12/cat.jpg")
            .copy_source_if_match(head.e_tag().unwrap())
            .send()
            .await
            .unwrap_or_else(|e| panic!("{on}: {}", aws_sdk_s3::error::DisplayErrorContext(&e)));
        assert!(copied.copy_object_result().and_then(|r| r.e_tag()).is_some());
        cms.delete_object()
            .bucket("public")
            .key("uploads/2026/12/cat.jpg")
            .send()
            .await
            .unwrap();
        assert!(
            read(&cms, "public", "uploads/2026/12/kitten.jpg").await == photo,
            "{on}"
        );
        // The copy was judged as an upload: its styles were derived.
        let styles = keys(&cms, "public", "styles/thumbnail/uploads/2026/12/").await;
        assert!(
            styles.contains(&"styles/thumbnail/uploads/2026/12/kitten.jpg".to_owned()),
            "{on}: {styles:?}"
        );

        // Zulip: a copy onto itself that replaces the metadata.
        put_text(&cms, "private", "zulip/doc.txt", "content").await;
        cms.copy_object()
            .bucket("private")
            .key("zulip/doc.txt")
            .copy_source("private/zulip/doc.txt")
            .metadata_directive(MetadataDirective::Replace)
            .content_type("text/plain")
            .metadata("user_profile_id", "42")
            .send()
            .await
            .unwrap();
        let head = cms
            .head_object()
            .bucket("private")
            .key("zulip/doc.txt")
            .send()
            .await
            .unwrap();
        assert_eq!(
            head.metadata()
                .and_then(|m| m.get("user_profile_id"))
                .map(String::as_str),
            Some("42"),
            "{on}"
        );
        assert_eq!(read(&cms, "private", "zulip/doc.txt").await, b"content");
        // Without REPLACE a copy onto itself is refused, as on S3.
        let (code, status, _) = failure(
            cms.copy_object()
                .bucket("private")
                .key("zulip/doc.txt")
                .copy_source("private/zulip/doc.txt")
                .send()
                .await,
        );
        assert_eq!((code.as_str(), status), ("InvalidRequest", 400), "{on}");
        // Across volumes, and a failed source condition.
        cms.copy_object()
            .bucket("public")
            .key("shared/doc.txt")
            .copy_source("private/zulip/doc.txt")
            .send()
            .await
            .unwrap();
        assert_eq!(read(&cms, "public", "shared/doc.txt").await, b"content");
        let (code, status, _) = failure(
            cms.copy_object()
                .bucket("public")
                .key("shared/doc2.txt")
                .copy_source("private/zulip/doc.txt")
                .copy_source_if_match("\"stale\"")
                .send()
                .await,
        );
        assert_eq!((code.as_str(), status), ("PreconditionFailed", 412), "{on}");
        // The policy judges the copy's name and bytes.
        let (code, _, message) = failure(
            cms.copy_object()
                .bucket("public")
                .key("shared/doc.php")
                .copy_source("private/zulip/doc.txt")
                .send()
                .await,
        );
        assert_eq!(code, "AccessDenied", "{on}: {message}");
        assert!(message.contains(".php"), "{message}");
        let (_, status, _) = failure(cms.head_object().bucket("public").key("shared/doc.php").send().await);
        assert_eq!(status, 404);
        // A principal copies only what it may read.
        let (code, _, message) = failure(
            reader
                .copy_object()
                .bucket("public")
                .key("stolen.txt")
                .copy_source("private/zulip/doc.txt")
                .send()
                .await,
        );
        assert_eq!(code, "AccessDenied", "{message}");

        // s3fs's settings check and refresh: ListObjectVersions.
        let versions = cms
            .list_object_versions()
            .bucket("public")
            .max_keys(1)
            .send()
            .await
            .unwrap();
        assert_eq!(versions.versions().len(), 1, "{on}");
        assert_eq!(versions.versions()[0].version_id(), Some("null"));
        assert_eq!(versions.versions()[0].is_latest(), Some(true));
        assert_eq!(versions.is_truncated(), Some(true));
        let mut all = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            let page = cms
                .list_object_versions()
                .bucket("public")
                .max_keys(2)
                .set_key_marker(marker.clone())
                .send()
                .await
                .unwrap();
            all.extend(page.versions().iter().filter_map(|v| v.key().map(str::to_owned)));
            if page.is_truncated() != Some(true) {
                break;
            }
            marker = page.next_key_marker().map(str::to_owned);
        }
        assert_eq!(all, keys(&cms, "public", "").await, "{on}");

        // What SDKs and s3fs read on connect.
        let versioning = cms.get_bucket_versioning().bucket("public").send().await.unwrap();
        assert!(versioning.status().is_none(), "{on}");
        let acl = cms.get_bucket_acl().bucket("public").send().await.unwrap();
        assert!(
            acl.grants()
                .iter()
                .any(|g| g.grantee().and_then(|g| g.uri()) == Some("http://acs.amazonaws.com/groups/global/AllUsers")),
            "a public volume is readable by all"
        );
        let private_acl = cms.get_bucket_acl().bucket("private").send().await.unwrap();
        assert_eq!(private_acl.grants().len(), 1);
        let (code, _, _) = failure(cms.get_bucket_cors().bucket("public").send().await);
        assert_eq!(code, "NoSuchCORSConfiguration");
        let (code, _, _) = failure(cms.get_bucket_policy().bucket("public").send().await);
        assert_eq!(code, "NoSuchBucketPolicy");
        let location = cms.get_bucket_location().bucket("public").send().await.unwrap();
        assert!(
            location.location_constraint().is_none_or(|c| c.as_str().is_empty()),
            "{on}"
        );
    }
}

/// Run the AWS CLI against `endpoint` as the `cms` principal, in `dir`:
/// whether it succeeded, its stdout and its stderr.
fn aws_cli(aws: &str, endpoint: &Endpoint, dir: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(aws)
        .args(["--endpoint-url", &endpoint.url(), "--region", "us-east-1"])
        .args(args)
        .env("AWS_ACCESS_KEY_ID", "CMSKEY")
        .env("AWS_SECRET_ACCESS_KEY", SECRET)
        .env_remove("AWS_PROFILE")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .current_dir(dir)
        .output()
        .expect("run aws");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn content(seed: u32, len: usize) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_mul(2654435761).wrapping_add(seed) >> 24) as u8 | 0x20)
        .collect()
}

/// A body that sends 64 KB, then nothing.
fn stalled_body() -> ByteStream {
    use futures::StreamExt;
    let first = futures::stream::iter(vec![Ok::<_, std::io::Error>(hyper::body::Frame::data(
        bytes::Bytes::from(vec![b'a'; 64 * 1024]),
    ))]);
    ByteStream::from_body_1_x(http_body_util::StreamBody::new(first.chain(futures::stream::pending())))
}

/// A new multipart upload of `key`, with nothing declared: its id.
async fn open_upload(client: &aws_sdk_s3::Client, bucket: &str, key: &str) -> String {
    let created = client
        .create_multipart_upload()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{}", aws_sdk_s3::error::DisplayErrorContext(&e)));
    created.upload_id().unwrap().to_owned()
}

/// A completion naming part 1 only, with its ETag.
fn first_part(etag: &str) -> aws_sdk_s3::types::CompletedMultipartUpload {
    use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
    CompletedMultipartUpload::builder()
        .parts(CompletedPart::builder().part_number(1).e_tag(etag).build())
        .build()
}

/// How many parts' bytes are kept: files under the node's multipart
/// directory (local volumes' parts, and copies of S3 volumes' parts),
/// objects under `.silo-tmp/` in the bucket.
async fn part_bytes(state: &std::path::Path, bucket: Option<&str>) -> usize {
    fn files(dir: &std::path::Path) -> usize {
        let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
        entries
            .map(|e| e.unwrap())
            .filter(|e| e.file_name() != ".silo-tmp")
            .map(|e| {
                if e.file_type().unwrap().is_dir() {
                    files(&e.path())
                } else {
                    1
                }
            })
            .sum()
    }
    let on_disk = files(&state.join("multipart"));
    match bucket {
        Some(bucket) => {
            on_disk
                + s3::keys(bucket)
                    .await
                    .iter()
                    .filter(|(k, _)| k.contains(".silo-tmp/"))
                    .count()
        }
        None => on_disk,
    }
}

/// A multipart upload is invisible until it completes, then judged whole;
/// its parts are checked by number and ETag; refusals and aborts leave
/// nothing; unfinished uploads expire; a principal's open uploads are
/// bounded. On local volumes and on S3.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multipart_uploads_are_judged_whole_at_completion() {
    use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
    // No plugin (the example's upload-guard takes files of 1 MB at most):
    // the content policy judges.
    for on_s3 in [false, true] {
        let (t, bucket) = silo_with(on_s3, "").await;
        let state = t.dir.path().join("state");
        let silo = Arc::new(t.silo);
        let endpoint = Endpoint::start(silo.clone(), &credentials(), Duration::from_secs(30)).await;
        let cms = endpoint.client("CMSKEY", SECRET);
        let on = if on_s3 { "s3" } else { "local" };
        let parts_data = [content(1, 5 << 20), content(2, 5 << 20), content(3, 1 << 20)];
        let create = |key: &'static str| {
            cms.create_multipart_upload()
                .bucket("private")
                .key(key)
                .content_type("application/octet-stream")
                .metadata("owner", "9")
                .send()
        };
        let upload = create("big/data.bin").await.unwrap();
        let id = upload.upload_id().unwrap().to_owned();
        let mut completed = Vec::new();
        for (i, data) in parts_data.iter().enumerate() {
            let part = cms
                .upload_part()
                .bucket("private")
                .key("big/data.bin")
                .upload_id(&id)
                .part_number(i as i32 + 1)
                .body(ByteStream::from(data.clone()))
                .send()
                .await
                .unwrap_or_else(|e| panic!("{on}: {}", aws_sdk_s3::error::DisplayErrorContext(&e)));
            completed.push(
                CompletedPart::builder()
                    .part_number(i as i32 + 1)
                    .e_tag(part.e_tag().unwrap())
                    .build(),
            );
        }
        // Nothing is visible before the completion.
        let (_, status, _) = failure(cms.head_object().bucket("private").key("big/data.bin").send().await);
        assert_eq!(status, 404, "{on}");
        assert!(keys(&cms, "private", "").await.is_empty(), "{on}");
        let listed = cms
            .list_parts()
            .bucket("private")
            .key("big/data.bin")
            .upload_id(&id)
            .send()
            .await
            .unwrap();
        let sizes: Vec<i64> = listed.parts().iter().filter_map(|p| p.size()).collect();
        assert_eq!(sizes, [5 << 20, 5 << 20, 1 << 20], "{on}");
        let uploads = cms.list_multipart_uploads().bucket("private").send().await.unwrap();
        assert_eq!(uploads.uploads().len(), 1);
        assert_eq!(uploads.uploads()[0].upload_id(), Some(id.as_str()));
        // Completions that name parts wrongly are refused, and change nothing.
        let complete = |parts: Vec<CompletedPart>| {
            cms.complete_multipart_upload()
                .bucket("private")
                .key("big/data.bin")
                .upload_id(&id)
                .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
                .send()
        };
        let wrong_etag = vec![CompletedPart::builder().part_number(1).e_tag("\"0000\"").build()];
        let (code, status, _) = failure(complete(wrong_etag).await);
        assert_eq!((code.as_str(), status), ("InvalidPart", 400), "{on}");
        let reversed: Vec<CompletedPart> = completed.iter().rev().cloned().collect();
        let (code, _, _) = failure(complete(reversed).await);
        assert_eq!(code, "InvalidPartOrder", "{on}");
        let small_first = vec![completed[2].clone()];
        let _ = small_first;
        let skipping = vec![completed[0].clone(), completed[2].clone()];
        let done = complete(skipping.clone())
            .await
            .unwrap_or_else(|e| panic!("{on}: {}", aws_sdk_s3::error::DisplayErrorContext(&e)));
        // The object's URL, as the client addressed it: SDKs and CMS
        // storage providers keep it as the file's URL.
        assert_eq!(
            done.location(),
            Some(format!("{}/private/big/data.bin", endpoint.url()).as_str()),
            "{on}"
        );
        assert_eq!(
            (done.bucket(), done.key()),
            (Some("private"), Some("big/data.bin")),
            "{on}"
        );
        // Parts 1 and 3 make the object; the upload is over.
        let whole = read(&cms, "private", "big/data.bin").await;
        assert_eq!(whole.len(), (5 << 20) + (1 << 20), "{on}");
        assert!(
            whole[..5 << 20] == parts_data[0][..] && whole[5 << 20..] == parts_data[2][..],
            "{on}: the bytes differ"
        );
        let head = cms
            .head_object()
            .bucket("private")
            .key("big/data.bin")
            .send()
            .await
            .unwrap();
        assert_eq!(
            head.metadata().and_then(|m| m.get("owner")).map(String::as_str),
            Some("9")
        );
        assert!(head.e_tag().unwrap().ends_with("-2\""), "{on}: {:?}", head.e_tag());
        // Its parts are read by number, as S3 serves them.
        let part = cms
            .get_object()
            .bucket("private")
            .key("big/data.bin")
            .part_number(2)
            .send()
            .await
            .unwrap();
        assert_eq!(part.parts_count(), Some(2), "{on}");
        let whole = (6 << 20) as u64;
        assert_eq!(
            part.content_range(),
            Some(format!("bytes {}-{}/{whole}", 5 << 20, whole - 1).as_str()),
            "{on}"
        );
        assert_eq!(body(part).await, parts_data[2], "{on}: part 2 is the third sent");
        let head_part = cms
            .head_object()
            .bucket("private")
            .key("big/data.bin")
            .part_number(1)
            .send()
            .await
            .unwrap();
        assert_eq!(head_part.content_length(), Some(5 << 20), "{on}");
        assert_eq!(head_part.parts_count(), Some(2), "{on}");
        let (code, status, _) = failure(
            cms.get_object()
                .bucket("private")
                .key("big/data.bin")
                .part_number(3)
                .send()
                .await,
        );
        assert_eq!((code.as_str(), status), ("InvalidPartNumber", 416), "{on}");
        let (code, status, _) = failure(
            cms.get_object()
                .bucket("private")
                .key("big/data.bin")
                .part_number(1)
                .range("bytes=0-9")
                .send()
                .await,
        );
        assert_eq!((code.as_str(), status), ("InvalidRequest", 400), "{on}");
        // A completion repeated because its answer was lost answers what
        // the first one stored; the upload's id names no other key.
        let again = complete(skipping.clone())
            .await
            .unwrap_or_else(|e| panic!("{on}: {}", aws_sdk_s3::error::DisplayErrorContext(&e)));
        assert_eq!(
            (again.e_tag(), again.location()),
            (done.e_tag(), done.location()),
            "{on}"
        );
        assert!(done.e_tag().is_some(), "{on}");
        let (code, _, _) = failure(
            cms.complete_multipart_upload()
                .bucket("private")
                .key("big/other.bin")
                .upload_id(&id)
                .multipart_upload(
                    CompletedMultipartUpload::builder()
                        .set_parts(Some(skipping.clone()))
                        .build(),
                )
                .send()
                .await,
        );
        assert_eq!(code, "NoSuchUpload", "{on}");
        let (code, _, _) = failure(
            cms.abort_multipart_upload()
                .bucket("private")
                .key("big/data.bin")
                .upload_id(&id)
                .send()
                .await,
        );
        assert_eq!(code, "NoSuchUpload", "{on}: a completed upload cannot be aborted");

        // A part under 5 MiB that is not the last.
        let id2 = create("big/small.bin").await.unwrap().upload_id().unwrap().to_owned();
        let mut small = Vec::new();
        for n in 1..=2 {
            let part = cms
                .upload_part()
                .bucket("private")
                .key("big/small.bin")
                .upload_id(&id2)
                .part_number(n)
                .body(ByteStream::from(content(n as u32, 1000)))
                .send()
                .await
                .unwrap();
            small.push(
                CompletedPart::builder()
                    .part_number(n)
                    .e_tag(part.e_tag().unwrap())
                    .build(),
            );
        }
        let (code, _, _) = failure(
            cms.complete_multipart_upload()
                .bucket("private")
                .key("big/small.bin")
                .upload_id(&id2)
                .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(small)).build())
                .send()
                .await,
        );
        assert_eq!(code, "EntityTooSmall", "{on}");
        // Aborted: gone, parts and all.
        cms.abort_multipart_upload()
            .bucket("private")
            .key("big/small.bin")
            .upload_id(&id2)
            .send()
            .await
            .unwrap();
        let (code, _, _) = failure(
            cms.list_parts()
                .bucket("private")
                .key("big/small.bin")
                .upload_id(&id2)
                .send()
                .await,
        );
        assert_eq!(code, "NoSuchUpload");
        assert_eq!(
            part_bytes(&state, bucket.as_deref()).await,
            0,
            "{on}: the aborted upload's parts stayed"
        );

        // Refused at completion by the content policy: nothing stored, the
        // upload removed.
        let id3 = cms
            .create_multipart_upload()
            .bucket("public")
            .key("notes/readme.txt")
            .content_type("text/plain")
            .send()
            .await
            .unwrap()
            .upload_id()
            .unwrap()
            .to_owned();
        let part = cms
            .upload_part()
            .bucket("public")
            .key("notes/readme.txt")
            .upload_id(&id3)
            .part_number(1)
            .body(ByteStream::from_static(b"<?php system($_GET['c']); ?>"))
            .send()
            .await
            .unwrap();
        let (code, status, message) = failure(
            cms.complete_multipart_upload()
                .bucket("public")
                .key("notes/readme.txt")
                .upload_id(&id3)
                .multipart_upload(first_part(part.e_tag().unwrap()))
                .send()
                .await,
        );
        assert_eq!((code.as_str(), status), ("AccessDenied", 403), "{on}: {message}");
        assert!(message.contains("PHP"), "{message}");
        let (_, status, _) = failure(cms.head_object().bucket("public").key("notes/readme.txt").send().await);
        assert_eq!(status, 404);
        assert_eq!(part_bytes(&state, bucket.as_deref()).await, 0, "{on}");
        if let Some(bucket) = &bucket {
            assert_eq!(
                s3::open_uploads(bucket).await,
                0,
                "{on}: a refused upload's parts stayed"
            );
        }
        // A name the policy refuses is refused at creation.
        let (code, _, _) = failure(
            cms.create_multipart_upload()
                .bucket("public")
                .key("shell.php")
                .send()
                .await,
        );
        assert_eq!(code, "AccessDenied");

        // A part copied from a range of an object.
        let id4 = create("big/copy.bin").await.unwrap().upload_id().unwrap().to_owned();
        let copied = cms
            .upload_part_copy()
            .bucket("private")
            .key("big/copy.bin")
            .upload_id(&id4)
            .part_number(1)
            .copy_source("private/big/data.bin")
            .copy_source_range("bytes=100-400099")
            .send()
            .await
            .unwrap_or_else(|e| panic!("{on}: {}", aws_sdk_s3::error::DisplayErrorContext(&e)));
        let etag = copied.copy_part_result().and_then(|r| r.e_tag()).unwrap().to_owned();
        cms.complete_multipart_upload()
            .bucket("private")
            .key("big/copy.bin")
            .upload_id(&id4)
            .multipart_upload(first_part(&etag))
            .send()
            .await
            .unwrap();
        assert!(
            read(&cms, "private", "big/copy.bin").await == parts_data[0][100..400_100],
            "{on}"
        );
        // One part of 400 KB: a multipart object of one part, as on S3.
        let head = cms
            .head_object()
            .bucket("private")
            .key("big/copy.bin")
            .send()
            .await
            .unwrap();
        assert!(head.e_tag().unwrap().ends_with("-1\""), "{on}: {:?}", head.e_tag());
        // A range the source does not hold: 400 InvalidRange.
        let id6 = create("big/beyond.bin").await.unwrap().upload_id().unwrap().to_owned();
        let (code, status, _) = failure(
            cms.upload_part_copy()
                .bucket("private")
                .key("big/beyond.bin")
                .upload_id(&id6)
                .part_number(1)
                .copy_source("private/big/data.bin")
                .copy_source_range("bytes=0-99999999")
                .send()
                .await,
        );
        assert_eq!((code.as_str(), status), ("InvalidRange", 400), "{on}");
        cms.abort_multipart_upload()
            .bucket("private")
            .key("big/beyond.bin")
            .upload_id(&id6)
            .send()
            .await
            .unwrap();

        // Unfinished uploads expire and leave nothing.
        let id5 = create("big/left.bin").await.unwrap().upload_id().unwrap().to_owned();
        cms.upload_part()
            .bucket("private")
            .key("big/left.bin")
            .upload_id(&id5)
            .part_number(1)
            .body(ByteStream::from(content(5, 1000)))
            .send()
            .await
            .unwrap();
        // One node (an SQLite engine): on S3 the part went straight into
        // the bucket's own multipart upload of the key, nowhere else there,
        // and the node keeps the copy it will judge from.
        assert_eq!(part_bytes(&state, bucket.as_deref()).await, 1, "{on}");
        if let Some(bucket) = &bucket {
            assert_eq!(s3::open_uploads(bucket).await, 1, "{on}");
        }
        let store = silo_host::multipart::MultipartStore::open(silo.storage().clone(), state.join("multipart"));
        assert_eq!(
            store.sweep(Duration::from_secs(3600)).await.unwrap(),
            0,
            "a fresh upload is kept"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(store.sweep(Duration::from_millis(10)).await.unwrap(), 1);
        let (code, _, _) = failure(
            cms.upload_part()
                .bucket("private")
                .key("big/left.bin")
                .upload_id(&id5)
                .part_number(2)
                .body(ByteStream::from_static(b"x"))
                .send()
                .await,
        );
        assert_eq!(code, "NoSuchUpload");
        assert_eq!(part_bytes(&state, bucket.as_deref()).await, 0, "{on}");
        if let Some(bucket) = &bucket {
            assert_eq!(s3::open_uploads(bucket).await, 0, "{on}");
        }

        // An upload id is for its own key, and only ids Silo gave are read.
        let id6 = create("big/mine.bin").await.unwrap().upload_id().unwrap().to_owned();
        let (code, _, _) = failure(
            cms.upload_part()
                .bucket("private")
                .key("big/other.bin")
                .upload_id(&id6)
                .part_number(1)
                .body(ByteStream::from_static(b"x"))
                .send()
                .await,
        );
        assert_eq!(code, "NoSuchUpload");
        let (code, _, _) = failure(
            cms.upload_part()
                .bucket("private")
                .key("big/mine.bin")
                .upload_id("../../state")
                .part_number(1)
                .body(ByteStream::from_static(b"x"))
                .send()
                .await,
        );
        assert_eq!(code, "NoSuchUpload");
        cms.abort_multipart_upload()
            .bucket("private")
            .key("big/mine.bin")
            .upload_id(&id6)
            .send()
            .await
            .unwrap();
    }
}

/// A principal may hold 100 multipart uploads open, no more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_multipart_uploads_are_bounded_per_principal() {
    let (t, _) = silo(false).await;
    let endpoint = Endpoint::start(Arc::new(t.silo), &credentials(), Duration::from_secs(30)).await;
    let cms = endpoint.client("CMSKEY", SECRET);
    for i in 0..silo_host::multipart::MAX_OPEN_PER_PRINCIPAL {
        cms.create_multipart_upload()
            .bucket("private")
            .key(format!("flood/{i}"))
            .send()
            .await
            .unwrap();
    }
    let (code, status, message) = failure(
        cms.create_multipart_upload()
            .bucket("private")
            .key("flood/one-more")
            .send()
            .await,
    );
    assert_eq!((code.as_str(), status), ("AccessDenied", 403), "{message}");
    assert!(message.contains("multipart uploads open"), "{message}");
}

/// Open uploads list as keys do (the one accumulator of every listing):
/// a prefix, common prefixes at a delimiter, pages joined by the key and
/// upload id markers, and a key marker without an upload id marker
/// skipping that key's uploads, as S3 says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_uploads_list_by_prefix_delimiter_and_markers() {
    let (t, _) = silo(false).await;
    let endpoint = Endpoint::start(Arc::new(t.silo), &credentials(), Duration::from_secs(30)).await;
    let cms = endpoint.client("CMSKEY", SECRET);
    let mut ids = std::collections::BTreeMap::<&str, Vec<String>>::new();
    for key in [
        "a.bin",
        "docs/x.bin",
        "docs/y.bin",
        "docs/y.bin",
        "img/1/p.bin",
        "img/2/q.bin",
        "z.bin",
    ] {
        ids.entry(key)
            .or_default()
            .push(open_upload(&cms, "private", key).await);
    }
    ids.values_mut().for_each(|v| v.sort());
    let list = |prefix: &str, delimiter: Option<&str>, key_marker: Option<&str>, id_marker: Option<&str>, max: i32| {
        cms.list_multipart_uploads()
            .bucket("private")
            .prefix(prefix)
            .set_delimiter(delimiter.map(str::to_owned))
            .set_key_marker(key_marker.map(str::to_owned))
            .set_upload_id_marker(id_marker.map(str::to_owned))
            .max_uploads(max)
            .send()
    };
    let keys = |out: &aws_sdk_s3::operation::list_multipart_uploads::ListMultipartUploadsOutput| -> Vec<String> {
        out.uploads().iter().map(|u| u.key().unwrap().to_owned()).collect()
    };
    let prefixes = |out: &aws_sdk_s3::operation::list_multipart_uploads::ListMultipartUploadsOutput| -> Vec<String> {
        out.common_prefixes()
            .iter()
            .map(|p| p.prefix().unwrap().to_owned())
            .collect()
    };

    let all = list("", Some("/"), None, None, 1000).await.unwrap();
    assert_eq!(keys(&all), ["a.bin", "z.bin"]);
    assert_eq!(prefixes(&all), ["docs/", "img/"]);
    assert_eq!(all.delimiter(), Some("/"));
    assert_eq!(all.is_truncated(), Some(false));

    let under = list("img/", Some("/"), None, None, 1000).await.unwrap();
    assert_eq!(prefixes(&under), ["img/1/", "img/2/"]);
    assert!(keys(&under).is_empty());

    // Pages of one: an upload, then a common prefix, joined by the markers.
    let mut seen = Vec::new();
    let (mut key_marker, mut id_marker) = (None::<String>, None::<String>);
    loop {
        let page = list("", Some("/"), key_marker.as_deref(), id_marker.as_deref(), 1)
            .await
            .unwrap();
        seen.extend(keys(&page));
        seen.extend(prefixes(&page));
        if page.is_truncated() != Some(true) {
            break;
        }
        key_marker = page.next_key_marker().map(str::to_owned);
        id_marker = page.next_upload_id_marker().map(str::to_owned);
        assert!(seen.len() < 10, "{seen:?}");
    }
    assert_eq!(seen, ["a.bin", "docs/", "img/", "z.bin"]);

    // Without a delimiter, the two uploads of one key are paged by id.
    let first = list("docs/y", None, None, None, 1).await.unwrap();
    assert_eq!(first.uploads()[0].upload_id(), Some(ids["docs/y.bin"][0].as_str()));
    assert_eq!(first.next_upload_id_marker(), Some(ids["docs/y.bin"][0].as_str()));
    let second = list(
        "docs/y",
        None,
        first.next_key_marker(),
        first.next_upload_id_marker(),
        1,
    )
    .await
    .unwrap();
    assert_eq!(second.uploads()[0].upload_id(), Some(ids["docs/y.bin"][1].as_str()));
    // A key marker alone lists only later keys.
    let later = list("docs/", None, Some("docs/y.bin"), None, 1000).await.unwrap();
    assert!(keys(&later).is_empty(), "{:?}", keys(&later));
    let later = list("docs/", None, Some("docs/x.bin"), None, 1000).await.unwrap();
    assert_eq!(keys(&later), ["docs/y.bin", "docs/y.bin"]);
}

/// The AWS CLI sends a 20 MiB file as a multipart upload (8 MiB parts, in
/// parallel) and reads it back whole, on S3 volumes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_aws_cli_uploads_large_files_in_parts() {
    let aws = std::env::var("SILO_TEST_AWS")
        .expect("SILO_TEST_AWS is not set: run the tests with tests/run, which installs awscli");
    let (t, bucket) = silo_with(true, "").await;
    let endpoint = Endpoint::start(Arc::new(t.silo), &credentials(), Duration::from_secs(30)).await;
    let work = tempfile::tempdir().unwrap();
    let big = content(7, 20 << 20);
    std::fs::write(work.path().join("big.bin"), &big).unwrap();
    let (ok, _, err) = aws_cli(
        &aws,
        &endpoint,
        work.path(),
        &["s3", "cp", "big.bin", "s3://private/videos/big.bin"],
    );
    assert!(ok, "{err}");
    let (ok, _, err) = aws_cli(
        &aws,
        &endpoint,
        work.path(),
        &["s3", "cp", "s3://private/videos/big.bin", "back.bin"],
    );
    assert!(ok, "{err}");
    assert!(
        std::fs::read(work.path().join("back.bin")).unwrap() == big,
        "the bytes differ"
    );
    let stored: Vec<(String, u64)> = s3::keys(&bucket.unwrap()).await;
    // Only the object: none of the CLI's parts (under `.silo-tmp/`) is
    // left behind.
    assert_eq!(stored, [("private/videos/big.bin".to_owned(), 20 << 20)]);
}

/// boto3, with the calls Zulip and Drupal's s3fs make
/// (`tests/clients/s3_boto3.py`), against S3 volumes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boto3_makes_zulips_and_s3fss_calls() {
    let python = std::env::var("SILO_TEST_BOTO3_PYTHON")
        .expect("SILO_TEST_BOTO3_PYTHON is not set: run the tests with tests/run, which installs boto3");
    // upload-guard takes this test's 12 MiB multipart upload.
    let pipeline = EXAMPLE_PIPELINE.replace("max_bytes = 1000000", "max_bytes = 100000000");
    assert_ne!(pipeline, EXAMPLE_PIPELINE);
    let (t, _) = silo_with(true, &pipeline).await;
    let endpoint = Endpoint::start(Arc::new(t.silo), &credentials(), Duration::from_secs(30)).await;
    let work = tempfile::tempdir().unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/clients/s3_boto3.py");
    let image = concat!(env!("CARGO_MANIFEST_DIR"), "/../samples/sunset.jpg");
    let url = endpoint.url();
    let out = tokio::task::spawn_blocking({
        let dir = work.path().to_owned();
        move || {
            std::process::Command::new(python)
                .args([script, &url, "CMSKEY", SECRET, image])
                .current_dir(dir)
                .output()
                .expect("run python")
        }
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.trim() == "ok",
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// rclone's settings for the endpoint (a remote `silo:`, path style), as
/// environment variables.
fn rclone_env(endpoint: &Endpoint) -> Vec<(String, String)> {
    [
        ("RCLONE_CONFIG_SILO_TYPE", "s3"),
        ("RCLONE_CONFIG_SILO_PROVIDER", "Other"),
        ("RCLONE_CONFIG_SILO_ENDPOINT", endpoint.url().as_str()),
        ("RCLONE_CONFIG_SILO_ACCESS_KEY_ID", "CMSKEY"),
        ("RCLONE_CONFIG_SILO_SECRET_ACCESS_KEY", SECRET),
        ("RCLONE_CONFIG_SILO_REGION", "us-east-1"),
        ("RCLONE_CONFIG_SILO_FORCE_PATH_STYLE", "true"),
        ("RCLONE_CONFIG", "/dev/null"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// An s3cmd config for the endpoint (path style), written in `dir`; its
/// path.
fn s3cmd_config(endpoint: &Endpoint, dir: &std::path::Path) -> String {
    let host = endpoint.addr.to_string();
    let config = dir.join("s3cfg");
    std::fs::write(
        &config,
        format!(
            "[default]\naccess_key = CMSKEY\nsecret_key = {SECRET}\nhost_base = {host}\nhost_bucket = {host}\n\
             use_https = False\nsignature_v2 = False\nbucket_location = us-east-1\n"
        ),
    )
    .unwrap();
    config.display().to_string()
}

/// rclone (Debian's, provider `Other`) copies, lists, checks, reads and
/// deletes through the endpoint; a refused file fails its copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rclone_copies_lists_checks_and_deletes() {
    let (t, _) = silo(false).await;
    let endpoint = Endpoint::start(Arc::new(t.silo), &credentials(), Duration::from_secs(30)).await;
    let work = tempfile::tempdir().unwrap();
    let site = work.path().join("site");
    std::fs::create_dir_all(site.join("css")).unwrap();
    std::fs::write(site.join("index.txt"), "welcome").unwrap();
    std::fs::write(site.join("css/site.css"), "body { color: black }").unwrap();
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/../samples/sunset.jpg"),
        site.join("sunset.jpg"),
    )
    .unwrap();
    let env = rclone_env(&endpoint);
    let rclone = |args: &[&str]| {
        run_tool(
            "rclone",
            args.iter().map(|a| a.to_string()).collect(),
            work.path(),
            env.clone(),
        )
    };
    let (ok, _, err) = rclone(&["copy", "site", "silo:public/site"]).await;
    assert!(ok, "{err}");
    let (ok, listed, err) = rclone(&["lsf", "-R", "--files-only", "silo:public"]).await;
    assert!(ok, "{err}");
    let mut names: Vec<&str> = listed.lines().collect();
    names.sort();
    assert_eq!(
        names,
        [
            "site/css/site.css",
            "site/index.txt",
            "site/sunset.jpg",
            "styles/medium/site/sunset.jpg",
            "styles/thumbnail/site/sunset.jpg"
        ],
        "{listed}"
    );
    let (ok, _, err) = rclone(&["check", "site", "silo:public/site"]).await;
    assert!(ok, "{err}");
    let (ok, _, err) = rclone(&["copy", "silo:public/site", "copy"]).await;
    assert!(ok, "{err}");
    assert!(
        std::fs::read(work.path().join("copy/sunset.jpg")).unwrap() == std::fs::read(site.join("sunset.jpg")).unwrap()
    );
    std::fs::write(work.path().join("shell.php"), "<?php system($_GET['c']);").unwrap();
    let (ok, _, err) = rclone(&[
        "copyto",
        "shell.php",
        "silo:public/shell.php",
        "--retries",
        "1",
        "--low-level-retries",
        "1",
    ])
    .await;
    assert!(!ok && err.contains("AccessDenied"), "{err}");
    let (ok, _, err) = rclone(&["delete", "silo:public/site/css"]).await;
    assert!(ok, "{err}");
    let (ok, listed, err) = rclone(&["lsf", "silo:public/site"]).await;
    assert!(ok, "{err}");
    let mut names: Vec<&str> = listed.lines().collect();
    names.sort();
    assert_eq!(names, ["index.txt", "sunset.jpg"], "{listed}");
}

/// s3cmd (Debian's) puts, lists, gets and deletes through the endpoint,
/// path style; a refused file fails its put.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3cmd_puts_lists_gets_and_deletes() {
    let (t, _) = silo(false).await;
    let endpoint = Endpoint::start(Arc::new(t.silo), &credentials(), Duration::from_secs(30)).await;
    let work = tempfile::tempdir().unwrap();
    let config = s3cmd_config(&endpoint, work.path());
    std::fs::write(work.path().join("notes.txt"), "some notes").unwrap();
    std::fs::write(work.path().join("shell.php"), "<?php system($_GET['c']);").unwrap();
    let s3cmd = |args: &[&str]| {
        let mut all = vec!["-c".to_owned(), config.clone()];
        all.extend(args.iter().map(|a| a.to_string()));
        run_tool("s3cmd", all, work.path(), Vec::new())
    };
    let (ok, _, err) = s3cmd(&["put", "notes.txt", "s3://private/docs/notes.txt"]).await;
    assert!(ok, "{err}");
    let (ok, listed, err) = s3cmd(&["ls", "-r", "s3://private/"]).await;
    assert!(ok && listed.contains("s3://private/docs/notes.txt"), "{listed}{err}");
    let (ok, _, err) = s3cmd(&["get", "s3://private/docs/notes.txt", "back.txt"]).await;
    assert!(ok, "{err}");
    assert_eq!(
        std::fs::read_to_string(work.path().join("back.txt")).unwrap(),
        "some notes"
    );
    let (ok, _, err) = s3cmd(&["put", "shell.php", "s3://public/shell.php"]).await;
    assert!(!ok && err.contains("AccessDenied"), "{err}");
    let (ok, _, err) = s3cmd(&["del", "s3://private/docs/notes.txt"]).await;
    assert!(ok, "{err}");
    let (ok, listed, err) = s3cmd(&["ls", "-r", "s3://private/"]).await;
    assert!(ok && listed.trim().is_empty(), "{listed}{err}");
}

/// Two nodes (a data_dir each) on one bucket and one PostgreSQL database,
/// each with its S3 endpoint, as behind a load balancer: what one stores,
/// the other lists at once and reads and deletes; a delete through one is
/// seen by the other within the front cache's bound. A multipart upload
/// may be created, sent its parts and completed on either.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_serve_the_same_objects_over_s3() {
    let bucket = s3::bucket("s3api-nodes").await;
    let url_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(url_file.path(), silo_tests::pg::database("s3api_nodes").await).unwrap();
    let volumes = format!(
        "[metadata]\nbackend = \"postgres\"\nurl_file = \"{}\"\npool_size = 4\n\n{}{}",
        url_file.path().display(),
        s3::volume_toml("public", &bucket, "public", "visibility = \"public\""),
        s3::volume_toml("private", &bucket, "private", "")
    );
    let a = TestSilo::with_volumes(EXAMPLE_PIPELINE, &[], &volumes).await.unwrap();
    let b = TestSilo::with_volumes(EXAMPLE_PIPELINE, &[], &volumes).await.unwrap();
    let ea = Endpoint::start(Arc::new(a.silo), &credentials(), Duration::from_secs(30)).await;
    let eb = Endpoint::start(Arc::new(b.silo), &credentials(), Duration::from_secs(30)).await;
    let (ca, cb) = (ea.client("CMSKEY", SECRET), eb.client("CMSKEY", SECRET));
    let photo = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../samples/sunset.jpg")).unwrap();
    ca.put_object()
        .bucket("public")
        .key("photos/sunset.jpg")
        .content_type("image/jpeg")
        .body(ByteStream::from(photo.clone()))
        .send()
        .await
        .unwrap();
    // Listings are the shared rows: at once, derivatives included.
    assert_eq!(
        keys(&cb, "public", "").await,
        [
            "photos/sunset.jpg",
            "styles/medium/photos/sunset.jpg",
            "styles/thumbnail/photos/sunset.jpg"
        ]
    );
    assert!(read(&cb, "public", "photos/sunset.jpg").await == photo);
    cb.delete_object()
        .bucket("public")
        .key("photos/sunset.jpg")
        .send()
        .await
        .unwrap();
    let started = std::time::Instant::now();
    loop {
        match ca.head_object().bucket("public").key("photos/sunset.jpg").send().await {
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 404) => break,
            Ok(_) => {}
            Err(e) => panic!("{}", aws_sdk_s3::error::DisplayErrorContext(&e)),
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "node a still serves the deleted object"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!("the delete reached the other node in {:?}", started.elapsed());
    // A multipart upload is the nodes' together: created on one, its
    // part sent to the other, listed and completed on the first (which
    // asks the second to hand its copy over to judge it).
    use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
    let id = ca
        .create_multipart_upload()
        .bucket("private")
        .key("docs/report.bin")
        .metadata("owner", "3")
        .send()
        .await
        .unwrap()
        .upload_id()
        .unwrap()
        .to_owned();
    let small = content(11, 300_000);
    let part = cb
        .upload_part()
        .bucket("private")
        .key("docs/report.bin")
        .upload_id(&id)
        .part_number(1)
        .body(ByteStream::from(small.clone()))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{}", aws_sdk_s3::error::DisplayErrorContext(&e)));
    let listed = ca
        .list_parts()
        .bucket("private")
        .key("docs/report.bin")
        .upload_id(&id)
        .send()
        .await
        .unwrap();
    assert_eq!(listed.parts().len(), 1);
    assert_eq!(listed.parts()[0].e_tag(), part.e_tag());
    let open = cb.list_multipart_uploads().bucket("private").send().await.unwrap();
    assert_eq!(open.uploads().len(), 1);
    let complete = |client: &aws_sdk_s3::Client| {
        client
            .complete_multipart_upload()
            .bucket("private")
            .key("docs/report.bin")
            .upload_id(&id)
            .multipart_upload(first_part(part.e_tag().unwrap()))
            .send()
    };
    let done = complete(&ca)
        .await
        .unwrap_or_else(|e| panic!("{}", aws_sdk_s3::error::DisplayErrorContext(&e)));
    assert!(read(&cb, "private", "docs/report.bin").await == small);
    // Repeated on the other node (its answer lost, the retry balanced
    // elsewhere): the same object.
    let again = complete(&cb)
        .await
        .unwrap_or_else(|e| panic!("{}", aws_sdk_s3::error::DisplayErrorContext(&e)));
    assert_eq!(again.e_tag(), done.e_tag());
    assert!(done.e_tag().is_some());
    let head = cb
        .head_object()
        .bucket("private")
        .key("docs/report.bin")
        .send()
        .await
        .unwrap();
    assert_eq!(
        head.metadata().and_then(|m| m.get("owner")).map(String::as_str),
        Some("3")
    );
    // Parts from both nodes, completed on the second: judged whole there
    // (upload-guard refuses the 6 MB), nothing stored, no part left.
    let id = open_upload(&ca, "private", "docs/big.bin").await;
    let mut parts = Vec::new();
    for (n, client, data) in [(1, &cb, content(12, 5 << 20)), (2, &ca, content(13, 1 << 20))] {
        let part = client
            .upload_part()
            .bucket("private")
            .key("docs/big.bin")
            .upload_id(&id)
            .part_number(n)
            .body(ByteStream::from(data))
            .send()
            .await
            .unwrap();
        parts.push(
            CompletedPart::builder()
                .part_number(n)
                .e_tag(part.e_tag().unwrap())
                .build(),
        );
    }
    // Each part went straight into the bucket's own upload of the key: no
    // scratch object holds one.
    let scratch = |keys: Vec<(String, u64)>| keys.into_iter().filter(|(k, _)| k.contains(".silo-tmp/")).count();
    assert_eq!(scratch(s3::keys(&bucket).await), 0);
    assert_eq!(s3::open_uploads(&bucket).await, 1);
    let (code, status, message) = failure(
        cb.complete_multipart_upload()
            .bucket("private")
            .key("docs/big.bin")
            .upload_id(&id)
            .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
            .send()
            .await,
    );
    assert_eq!((code.as_str(), status), ("AccessDenied", 403), "{message}");
    assert!(message.contains("upload-guard"), "{message}");
    let (code, _, _) = failure(
        ca.list_parts()
            .bucket("private")
            .key("docs/big.bin")
            .upload_id(&id)
            .send()
            .await,
    );
    assert_eq!(code, "NoSuchUpload");
    let stored: Vec<String> = s3::keys(&bucket)
        .await
        .into_iter()
        .map(|(k, _)| k)
        .filter(|k| k.starts_with("private/"))
        .collect();
    assert_eq!(stored, ["private/docs/report.bin"]);
    // The part node A handed over for the judgement, and the bucket's own
    // upload, are gone with the refusal.
    assert_eq!(scratch(s3::keys(&bucket).await), 0);
    assert_eq!(s3::open_uploads(&bucket).await, 0);
    // The open uploads of a principal are counted over every node.
    for i in 0..silo_host::multipart::MAX_OPEN_PER_PRINCIPAL {
        let client = if i % 2 == 0 { &ca } else { &cb };
        client
            .create_multipart_upload()
            .bucket("private")
            .key(format!("flood/{i}"))
            .send()
            .await
            .unwrap();
    }
    for client in [&ca, &cb] {
        let (code, _, message) = failure(
            client
                .create_multipart_upload()
                .bucket("private")
                .key("flood/one-more")
                .send()
                .await,
        );
        assert_eq!(code, "AccessDenied", "{message}");
    }
}

/// A client that stops sending in the middle of a signed upload's body is
/// cut off after the idle timeout; nothing is stored or left staged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_stalls_is_cut_off_and_stores_nothing() {
    let (t, _) = silo_with(false, "").await;
    let staging = t.dir.path().join("state/staging");
    let silo = Arc::new(t.silo);
    let endpoint = Endpoint::start(silo.clone(), &credentials(), Duration::from_secs(1)).await;
    let cms = endpoint.client("CMSKEY", SECRET);
    // 300 KB declared (over the in-memory staging limit), 64 KB sent, then
    // nothing.
    let body = stalled_body();
    let started = std::time::Instant::now();
    let sent = tokio::time::timeout(
        Duration::from_secs(20),
        cms.put_object()
            .bucket("private")
            .key("slow.bin")
            .content_length(300 * 1024)
            .body(body)
            .send(),
    )
    .await
    .expect("the endpoint kept a stalled upload for 20 s");
    assert!(sent.is_err(), "a stalled upload was stored");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "cut off after {:?}",
        started.elapsed()
    );
    let (_, status, _) = failure(cms.head_object().bucket("private").key("slow.bin").send().await);
    assert_eq!(status, 404);
    let staged = std::fs::read_dir(&staging).map_or(0, |d| d.count());
    assert_eq!(staged, 0, "a staged file was left behind");
}

/// A part that comes slowly but steadily, for longer than the volume's
/// `request_timeout_secs`, is stored whole: streamed into the bucket as it
/// comes, its request to the bucket lasts as long as the client's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_steady_part_outlasts_the_backend_request_timeout() {
    use futures::StreamExt;
    let bucket = s3::bucket("s3api-slow").await;
    let volumes = format!(
        "{}{}",
        s3::volume_toml("public", &bucket, "public", "visibility = \"public\""),
        s3::volume_toml("private", &bucket, "private", "request_timeout_secs = 1")
    );
    let t = TestSilo::with_volumes("", &[], &volumes).await.unwrap();
    let endpoint = Endpoint::start(Arc::new(t.silo), &credentials(), Duration::from_secs(30)).await;
    let cms = endpoint.client("CMSKEY", SECRET);
    let id = open_upload(&cms, "private", "slow/steady.bin").await;
    // 8 chunks of 32 KB, 300 ms apart: about 2.4 s in all.
    let data = content(9, 8 * 32 * 1024);
    let chunks: Vec<bytes::Bytes> = data.chunks(32 * 1024).map(bytes::Bytes::copy_from_slice).collect();
    let steady = futures::stream::iter(chunks).then(|chunk| async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        Ok::<_, std::io::Error>(hyper::body::Frame::data(chunk))
    });
    let part = cms
        .upload_part()
        .bucket("private")
        .key("slow/steady.bin")
        .upload_id(&id)
        .part_number(1)
        .content_length(data.len() as i64)
        .body(ByteStream::from_body_1_x(http_body_util::StreamBody::new(steady)))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{}", aws_sdk_s3::error::DisplayErrorContext(&e)));
    cms.complete_multipart_upload()
        .bucket("private")
        .key("slow/steady.bin")
        .upload_id(&id)
        .multipart_upload(first_part(part.e_tag().unwrap()))
        .send()
        .await
        .unwrap();
    assert!(read(&cms, "private", "slow/steady.bin").await == data);
}

/// A part that stalls half-way is cut off; streamed into the bucket's own
/// multipart upload as it came, it leaves no part there, no record and no
/// copy on the node; the upload goes on with the part sent again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_part_that_stalls_is_cut_off_and_keeps_nothing() {
    let (t, bucket) = silo_with(true, "").await;
    let bucket = bucket.unwrap();
    let state = t.dir.path().join("state");
    let silo = Arc::new(t.silo);
    let endpoint = Endpoint::start(silo.clone(), &credentials(), Duration::from_secs(1)).await;
    let cms = endpoint.client("CMSKEY", SECRET);
    let id = open_upload(&cms, "private", "slow/part.bin").await;
    let body = stalled_body();
    let sent = tokio::time::timeout(
        Duration::from_secs(20),
        cms.upload_part()
            .bucket("private")
            .key("slow/part.bin")
            .upload_id(&id)
            .part_number(1)
            .content_length(300 * 1024)
            .body(body)
            .send(),
    )
    .await
    .expect("the endpoint kept a stalled part for 20 s");
    assert!(sent.is_err(), "a stalled part was stored");
    let listed = cms
        .list_parts()
        .bucket("private")
        .key("slow/part.bin")
        .upload_id(&id)
        .send()
        .await
        .unwrap();
    assert!(listed.parts().is_empty());
    assert_eq!(part_bytes(&state, Some(&bucket)).await, 0, "a copy was left");
    // The bucket's own upload holds nothing of it.
    let direct = s3::client();
    let open = direct.list_multipart_uploads().bucket(&bucket).send().await.unwrap();
    assert_eq!(open.uploads().len(), 1);
    let upload = &open.uploads()[0];
    let parts = direct
        .list_parts()
        .bucket(&bucket)
        .key(upload.key().unwrap())
        .upload_id(upload.upload_id().unwrap())
        .send()
        .await
        .unwrap();
    assert!(parts.parts().is_empty(), "the backend kept {:?}", parts.parts());
    // Sent again whole, the part completes the upload.
    let data = content(7, 300 * 1024);
    let part = cms
        .upload_part()
        .bucket("private")
        .key("slow/part.bin")
        .upload_id(&id)
        .part_number(1)
        .body(ByteStream::from(data.clone()))
        .send()
        .await
        .unwrap();
    cms.complete_multipart_upload()
        .bucket("private")
        .key("slow/part.bin")
        .upload_id(&id)
        .multipart_upload(first_part(part.e_tag().unwrap()))
        .send()
        .await
        .unwrap();
    assert!(read(&cms, "private", "slow/part.bin").await == data);
    assert_eq!(part_bytes(&state, Some(&bucket)).await, 0);
    assert_eq!(s3::open_uploads(&bucket).await, 0);
}

/// A presigned GET may override the response's type, disposition and
/// cache control (Zulip names downloads this way); a type that would
/// render actively is still served as an attachment, and an unsigned
/// request's overrides are ignored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_overrides_on_presigned_gets_stay_safe() {
    let (t, _) = silo_with(false, "").await;
    let endpoint = Endpoint::start(Arc::new(t.silo), &credentials(), Duration::from_secs(30)).await;
    let cms = endpoint.client("CMSKEY", SECRET);
    put_text(&cms, "private", "files/report.txt", "<b>hello</b>").await;
    put_text(&cms, "public", "files/page.txt", "<b>hello</b>").await;
    let http = silo_tests::http::Client::default();
    let presign = |key: &'static str, content_type: &'static str, disposition: &'static str| {
        cms.get_object()
            .bucket("private")
            .key(key)
            .response_content_type(content_type)
            .response_content_disposition(disposition)
            .response_cache_control("max-age=60")
            .presigned(aws_sdk_s3::presigning::PresigningConfig::expires_in(Duration::from_secs(60)).unwrap())
    };
    let named = presign(
        "files/report.txt",
        "application/pdf",
        "attachment; filename=\"report.pdf\"",
    )
    .await
    .unwrap();
    let reply = http.get(named.uri(), &[]).await.unwrap();
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.header("content-type"), Some("application/pdf"));
    assert_eq!(
        reply.header("content-disposition"),
        Some("attachment; filename=\"report.pdf\"")
    );
    assert_eq!(reply.header("cache-control"), Some("max-age=60"));
    assert_eq!(reply.header("x-content-type-options"), Some("nosniff"));
    // Asked to render HTML inline: served as HTML, but as an attachment.
    let inline = presign("files/report.txt", "text/html", "inline").await.unwrap();
    let reply = http.get(inline.uri(), &[]).await.unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), Some("text/html"));
    assert_eq!(
        reply.header("content-disposition"),
        Some("attachment"),
        "{:?}",
        reply.headers
    );
    // Unsigned: overrides are refused, as on S3; without them, the stored
    // type.
    let url = format!(
        "{}/public/files/page.txt?response-content-type=text%2Fhtml&response-content-disposition=inline",
        endpoint.url()
    );
    let reply = http.get(&url, &[]).await.unwrap();
    assert_eq!(reply.status, 400, "{}", reply.text());
    assert!(reply.text().contains("<Code>InvalidRequest</Code>"), "{}", reply.text());
    let reply = http
        .get(&format!("{}/public/files/page.txt", endpoint.url()), &[])
        .await
        .unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), Some("text/plain"));
    assert_eq!(reply.header("content-disposition"), None);
}

/// Content-Disposition, Content-Encoding and Expires are stored with the
/// object and served back as given, by HEAD and GET, through copies (kept
/// by COPY, replaced by REPLACE) and multipart uploads; active content is
/// still an attachment whatever was declared. On local volumes and on S3
/// (where Content-Encoding is on the stored object too, for presigned
/// reads that bypass Silo).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declared_headers_are_stored_and_served_as_given() {
    use aws_sdk_s3::primitives::DateTime;
    use aws_sdk_s3::types::MetadataDirective;
    let expires = DateTime::from_secs(1_893_456_000);
    for on_s3 in [false, true] {
        let (t, bucket) = silo_with(on_s3, "").await;
        let silo = Arc::new(t.silo);
        let endpoint = Endpoint::start(silo.clone(), &credentials(), Duration::from_secs(30)).await;
        let cms = endpoint.client("CMSKEY", SECRET);
        let on = if on_s3 { "s3" } else { "local" };
        cms.put_object()
            .bucket("private")
            .key("docs/data.csv.gz")
            .content_type("text/csv")
            .content_disposition("attachment; filename=\"data.csv\"")
            .content_encoding("gzip")
            .expires(expires)
            .body(ByteStream::from_static(b"\x1f\x8b\x08\x00compressed"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{on}: {}", aws_sdk_s3::error::DisplayErrorContext(&e)));
        // A body streamed from a file goes aws-chunked (its checksum in a
        // trailer): the object keeps the encoding declared, not the framing.
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), b"\x1f\x8b\x08\x00streamed").unwrap();
        cms.put_object()
            .bucket("private")
            .key("docs/streamed.gz")
            .content_encoding("gzip")
            .body(ByteStream::from_path(file.path()).await.unwrap())
            .send()
            .await
            .unwrap_or_else(|e| panic!("{on}: {}", aws_sdk_s3::error::DisplayErrorContext(&e)));
        let streamed = cms
            .head_object()
            .bucket("private")
            .key("docs/streamed.gz")
            .send()
            .await
            .unwrap();
        assert_eq!(streamed.content_encoding(), Some("gzip"), "{on}");
        let check = |what: &str,
                     disposition: Option<&str>,
                     encoding: Option<&str>,
                     expiry: Option<DateTime>,
                     got: (Option<&str>, Option<&str>, Option<&DateTime>)| {
            assert_eq!(got.0, disposition, "{on} {what}: Content-Disposition");
            assert_eq!(got.1, encoding, "{on} {what}: Content-Encoding");
            assert_eq!(got.2, expiry.as_ref(), "{on} {what}: Expires");
        };
        let head = cms
            .head_object()
            .bucket("private")
            .key("docs/data.csv.gz")
            .send()
            .await
            .unwrap();
        #[allow(deprecated)]
        let got = (head.content_disposition(), head.content_encoding(), head.expires());
        check(
            "head",
            Some("attachment; filename=\"data.csv\""),
            Some("gzip"),
            Some(expires),
            got,
        );
        let get = cms
            .get_object()
            .bucket("private")
            .key("docs/data.csv.gz")
            .send()
            .await
            .unwrap();
        #[allow(deprecated)]
        let got = (get.content_disposition(), get.content_encoding(), get.expires());
        check(
            "get",
            Some("attachment; filename=\"data.csv\""),
            Some("gzip"),
            Some(expires),
            got,
        );
        // The sidecar serves them too.
        let sidecar = silo_tests::http::Sidecar::start(silo.clone()).await;
        let read = silo_tests::http::Client::default()
            .get_as(
                &sidecar.url("/v1/files/private/docs/data.csv.gz"),
                silo_tests::http::TOKEN,
            )
            .await
            .unwrap();
        assert_eq!(read.header("content-encoding"), Some("gzip"), "{on}");
        assert_eq!(
            read.header("content-disposition"),
            Some("attachment; filename=\"data.csv\""),
            "{on}"
        );
        assert_eq!(read.header("expires"), Some("Tue, 01 Jan 2030 00:00:00 GMT"), "{on}");
        if let Some(bucket) = &bucket {
            let stored = s3::client()
                .head_object()
                .bucket(bucket)
                .key("private/docs/data.csv.gz")
                .send()
                .await
                .unwrap();
            assert_eq!(stored.content_encoding(), Some("gzip"));
            assert_eq!(stored.content_disposition(), Some("attachment; filename=\"data.csv\""));
        }
        // A copy keeps them; a copy with REPLACE takes the new ones.
        cms.copy_object()
            .bucket("private")
            .key("docs/kept.csv.gz")
            .copy_source("private/docs/data.csv.gz")
            .send()
            .await
            .unwrap();
        let head = cms
            .head_object()
            .bucket("private")
            .key("docs/kept.csv.gz")
            .send()
            .await
            .unwrap();
        #[allow(deprecated)]
        let got = (head.content_disposition(), head.content_encoding(), head.expires());
        check(
            "copy",
            Some("attachment; filename=\"data.csv\""),
            Some("gzip"),
            Some(expires),
            got,
        );
        cms.copy_object()
            .bucket("private")
            .key("docs/kept.csv.gz")
            .copy_source("private/docs/kept.csv.gz")
            .metadata_directive(MetadataDirective::Replace)
            .content_type("text/csv")
            .content_disposition("inline")
            .send()
            .await
            .unwrap();
        let head = cms
            .head_object()
            .bucket("private")
            .key("docs/kept.csv.gz")
            .send()
            .await
            .unwrap();
        #[allow(deprecated)]
        let got = (head.content_disposition(), head.content_encoding(), head.expires());
        check("replace", Some("inline"), None, None, got);
        // Declared with a multipart upload.
        let id = cms
            .create_multipart_upload()
            .bucket("private")
            .key("docs/part.txt")
            .content_type("text/plain")
            .content_encoding("br")
            .content_disposition("inline; filename=\"part.txt\"")
            .send()
            .await
            .unwrap()
            .upload_id()
            .unwrap()
            .to_owned();
        let part = cms
            .upload_part()
            .bucket("private")
            .key("docs/part.txt")
            .upload_id(&id)
            .part_number(1)
            .body(ByteStream::from_static(b"hello"))
            .send()
            .await
            .unwrap();
        cms.complete_multipart_upload()
            .bucket("private")
            .key("docs/part.txt")
            .upload_id(&id)
            .multipart_upload(first_part(part.e_tag().unwrap()))
            .send()
            .await
            .unwrap();
        let head = cms
            .head_object()
            .bucket("private")
            .key("docs/part.txt")
            .send()
            .await
            .unwrap();
        #[allow(deprecated)]
        let got = (head.content_disposition(), head.content_encoding(), head.expires());
        check(
            "multipart",
            Some("inline; filename=\"part.txt\""),
            Some("br"),
            None,
            got,
        );
        // Active content declared inline is still an attachment.
        cms.put_object()
            .bucket("private")
            .key("docs/page.html")
            .content_type("text/html")
            .content_disposition("inline")
            .body(ByteStream::from_static(b"<html><script>alert(1)</script></html>"))
            .send()
            .await
            .unwrap();
        let get = cms
            .get_object()
            .bucket("private")
            .key("docs/page.html")
            .send()
            .await
            .unwrap();
        assert_eq!(get.content_disposition(), Some("attachment"), "{on}");
        // A declared header a response cannot carry is refused, nothing stored.
        let (code, status, _) = failure(
            cms.put_object()
                .bucket("private")
                .key("docs/long.txt")
                .content_disposition("x".repeat(2000))
                .body(ByteStream::from_static(b"x"))
                .send()
                .await,
        );
        assert_eq!((code.as_str(), status), ("EntityTooLarge", 400), "{on}");
        let (_, status, _) = failure(cms.head_object().bucket("private").key("docs/long.txt").send().await);
        assert_eq!(status, 404, "{on}");
    }
}

/// XML bodies are bounded (2 MiB): a DeleteObjects or a completion whose
/// XML is larger is refused before it is parsed, and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_xml_bodies_are_refused() {
    use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, Delete, ObjectIdentifier};
    let (t, _) = silo(false).await;
    let endpoint = Endpoint::start(Arc::new(t.silo), &credentials(), Duration::from_secs(30)).await;
    let cms = endpoint.client("CMSKEY", SECRET);
    put_text(&cms, "private", "docs/keep.txt", "kept").await;
    // 2,500 keys of 1,000 bytes: 2.5 MB of XML.
    let objects: Vec<ObjectIdentifier> = (0..2500)
        .map(|i| {
            ObjectIdentifier::builder()
                .key(format!("{i:04}{}", "k".repeat(996)))
                .build()
                .unwrap()
        })
        .chain([ObjectIdentifier::builder().key("docs/keep.txt").build().unwrap()])
        .collect();
    let (code, status, message) = failure(
        cms.delete_objects()
            .bucket("private")
            .delete(
                Delete::builder()
                    .set_objects(Some(objects))
                    .quiet(true)
                    .build()
                    .unwrap(),
            )
            .send()
            .await,
    );
    assert_eq!((code.as_str(), status), ("MaxMessageLengthExceeded", 400), "{message}");
    assert_eq!(read(&cms, "private", "docs/keep.txt").await, b"kept");
    let id = open_upload(&cms, "private", "docs/big.bin").await;
    // 10,000 parts with 300-byte ETags: 3 MB of XML.
    let parts: Vec<CompletedPart> = (1..=10_000)
        .map(|n| CompletedPart::builder().part_number(n).e_tag("e".repeat(300)).build())
        .collect();
    let (code, status, message) = failure(
        cms.complete_multipart_upload()
            .bucket("private")
            .key("docs/big.bin")
            .upload_id(&id)
            .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
            .send()
            .await,
    );
    assert_eq!((code.as_str(), status), ("MaxMessageLengthExceeded", 400), "{message}");
    // The upload is still open, and nothing was stored.
    cms.list_parts()
        .bucket("private")
        .key("docs/big.bin")
        .upload_id(&id)
        .send()
        .await
        .unwrap();
    let (_, status, _) = failure(cms.head_object().bucket("private").key("docs/big.bin").send().await);
    assert_eq!(status, 404);
}

/// The ETag S3 gives `bytes` stored in one request, quoted.
fn md5_etag(bytes: &[u8]) -> String {
    use md5::Digest;
    format!("\"{}\"", hex::encode(md5::Md5::digest(bytes)))
}

/// An object's ETag is the one S3 would give it, whatever the backend:
/// the MD5 of its bytes; for one completed from parts, the MD5 of the
/// parts' MD5s and their number. A copy keeps its source's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etags_are_the_ones_s3_gives_on_every_backend() {
    use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
    use md5::Digest;
    for on_s3 in [false, true] {
        let Site {
            on,
            silo,
            endpoint: _endpoint,
            cms,
            bucket,
            _dir,
            ..
        } = Site::new(on_s3).await;
        // A small body, and one over an S3 volume's part size (5 MiB),
        // which Silo still stores in one request.
        for (key, data) in [("small.txt", content(7, 1000)), ("large.bin", content(8, 6 << 20))] {
            let put = cms
                .put_object()
                .bucket("private")
                .key(key)
                .body(ByteStream::from(data.clone()))
                .send()
                .await
                .unwrap_or_else(|e| panic!("{on}: {}", aws_sdk_s3::error::DisplayErrorContext(&e)));
            let want = md5_etag(&data);
            assert_eq!(put.e_tag(), Some(want.as_str()), "{on} {key}: PutObject");
            let head = cms.head_object().bucket("private").key(key).send().await.unwrap();
            assert_eq!(head.e_tag(), Some(want.as_str()), "{on} {key}: HeadObject");
            let got = cms.get_object().bucket("private").key(key).send().await.unwrap();
            assert_eq!(got.e_tag(), Some(want.as_str()), "{on} {key}: GetObject");
            let listed = cms
                .list_objects_v2()
                .bucket("private")
                .prefix(key)
                .send()
                .await
                .unwrap();
            assert_eq!(listed.contents()[0].e_tag(), Some(want.as_str()), "{on} {key}: listed");
        }
        let copied = cms
            .copy_object()
            .bucket("private")
            .key("copy.txt")
            .copy_source("private/small.txt")
            .send()
            .await
            .unwrap();
        let want = md5_etag(&content(7, 1000));
        let copy_etag = copied.copy_object_result().and_then(|r| r.e_tag());
        assert_eq!(copy_etag, Some(want.as_str()), "{on}: CopyObject");
        let head = cms
            .head_object()
            .bucket("private")
            .key("copy.txt")
            .send()
            .await
            .unwrap();
        assert_eq!(head.e_tag(), Some(want.as_str()), "{on}: the copy");

        let parts_data = [content(9, 5 << 20), content(10, 1 << 20)];
        let id = open_upload(&cms, "private", "parts.bin").await;
        let mut completed = Vec::new();
        let mut digests = md5::Md5::new();
        for (i, data) in parts_data.iter().enumerate() {
            let part = cms
                .upload_part()
                .bucket("private")
                .key("parts.bin")
                .upload_id(&id)
                .part_number(i as i32 + 1)
                .body(ByteStream::from(data.clone()))
                .send()
                .await
                .unwrap();
            assert_eq!(part.e_tag(), Some(md5_etag(data).as_str()), "{on}: UploadPart");
            digests.update(md5::Md5::digest(data));
            completed.push(
                CompletedPart::builder()
                    .part_number(i as i32 + 1)
                    .e_tag(part.e_tag().unwrap())
                    .build(),
            );
        }
        let done = cms
            .complete_multipart_upload()
            .bucket("private")
            .key("parts.bin")
            .upload_id(&id)
            .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(completed)).build())
            .send()
            .await
            .unwrap();
        let want = format!("\"{}-2\"", hex::encode(digests.finalize()));
        assert_eq!(done.e_tag(), Some(want.as_str()), "{on}: CompleteMultipartUpload");
        let head = cms
            .head_object()
            .bucket("private")
            .key("parts.bin")
            .send()
            .await
            .unwrap();
        assert_eq!(head.e_tag(), Some(want.as_str()), "{on}: the completed object");
        // Another node's view: the cache rebuilt from the backend.
        silo_host::maintenance::refresh(silo.storage(), "private", &|_| {})
            .await
            .unwrap();
        let listed = cms.list_objects_v2().bucket("private").send().await.unwrap();
        let tags: Vec<(&str, &str)> = listed
            .contents()
            .iter()
            .map(|o| (o.key().unwrap(), o.e_tag().unwrap()))
            .collect();
        assert!(tags.contains(&("parts.bin", want.as_str())), "{on}: {tags:?}");
        assert!(
            tags.contains(&("small.txt", md5_etag(&content(7, 1000)).as_str())),
            "{on}: {tags:?}"
        );
        // An object completed from parts behind Silo's back: its ETag is
        // the backend's, its part boundaries unknown to Silo.
        if let Some(bucket) = bucket {
            let direct = s3::client();
            let key = "private/outside.bin";
            let created = direct
                .create_multipart_upload()
                .bucket(&bucket)
                .key(key)
                .send()
                .await
                .unwrap();
            let id = created.upload_id().unwrap();
            let mut parts = Vec::new();
            for n in 1..=2 {
                let part = direct
                    .upload_part()
                    .bucket(&bucket)
                    .key(key)
                    .upload_id(id)
                    .part_number(n)
                    .body(ByteStream::from(content(20 + n as u32, 5 << 20)))
                    .send()
                    .await
                    .unwrap();
                parts.push(
                    CompletedPart::builder()
                        .part_number(n)
                        .e_tag(part.e_tag().unwrap())
                        .build(),
                );
            }
            direct
                .complete_multipart_upload()
                .bucket(&bucket)
                .key(key)
                .upload_id(id)
                .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
                .send()
                .await
                .unwrap();
            silo_host::maintenance::refresh(silo.storage(), "private", &|_| {})
                .await
                .unwrap();
            let head = cms
                .head_object()
                .bucket("private")
                .key("outside.bin")
                .send()
                .await
                .unwrap();
            assert!(head.e_tag().unwrap().ends_with("-2\""), "{:?}", head.e_tag());
            let (code, status, _) = failure(
                cms.get_object()
                    .bucket("private")
                    .key("outside.bin")
                    .part_number(1)
                    .send()
                    .await,
            );
            assert_eq!((code.as_str(), status), ("NotImplemented", 501));
        }
    }
}

/// Files put in a local volume's directory by hand have no MD5 ETag until
/// `silo cache refresh --rehash` reads them; one edited by hand after it
/// loses it again, so its new bytes never pass for the old ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_put_by_hand_are_rehashed_and_edits_are_noticed() {
    let (t, _) = silo_with(false, "").await;
    let root = t.dir.path().join("volumes/private");
    std::fs::create_dir_all(root.join("old")).unwrap();
    std::fs::write(root.join("old/by-hand.txt"), b"put there by rsync").unwrap();
    let silo = Arc::new(t.silo);
    let storage = silo.storage();
    silo_host::maintenance::refresh(storage, "private", &|_| {})
        .await
        .unwrap();
    let endpoint = Endpoint::start(silo.clone(), &credentials(), Duration::from_secs(30)).await;
    let cms = endpoint.client("CMSKEY", SECRET);
    let head = |key: &'static str| {
        let cms = cms.clone();
        async move {
            let head = cms.head_object().bucket("private").key(key).send().await.unwrap();
            head.e_tag().unwrap().to_owned()
        }
    };
    let before = head("old/by-hand.txt").await;
    assert_ne!(before, md5_etag(b"put there by rsync"));
    let changed = silo_host::maintenance::rehash(storage, "private", &|_| {})
        .await
        .unwrap();
    assert_eq!(changed, 1);
    silo_host::maintenance::refresh(storage, "private", &|_| {})
        .await
        .unwrap();
    assert_eq!(head("old/by-hand.txt").await, md5_etag(b"put there by rsync"));
    // Once is enough: nothing is read again.
    assert_eq!(
        silo_host::maintenance::rehash(storage, "private", &|_| {})
            .await
            .unwrap(),
        0
    );
    // Edited in place to as many bytes (the attribute stays with the
    // file), the file no longer matches its record: its time moved.
    std::thread::sleep(Duration::from_millis(20));
    std::fs::write(root.join("old/by-hand.txt"), b"edited by operator").unwrap();
    let drift = silo_host::maintenance::verify(storage, "private", &|_| {})
        .await
        .unwrap();
    assert_eq!(drift.stale, ["old/by-hand.txt"]);
    silo_host::maintenance::refresh(storage, "private", &|_| {})
        .await
        .unwrap();
    let edited = head("old/by-hand.txt").await;
    assert_ne!(edited, md5_etag(b"put there by rsync"));
    assert_ne!(edited, md5_etag(b"edited by operator"));
}

/// Base64 of a CRC32, as S3 carries it.
fn crc32_b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(crc32fast::hash(bytes).to_be_bytes())
}

/// A checksum sent with an upload (the SDK's default CRC32 in an
/// aws-chunked trailer, or SHA-256) is kept, and given back as S3 gives it:
/// on HEAD and whole GETs that ask for it (the SDK then checks the body
/// against it), in GetObjectAttributes, and with a copy; a presigned PUT
/// that signs a checksum is held to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checksums_are_kept_and_given_back_as_s3_does() {
    use aws_sdk_s3::types::{ChecksumAlgorithm, ChecksumMode, ChecksumType, ObjectAttributes};
    use base64::Engine;
    use sha2::Digest;
    for on_s3 in [false, true] {
        let Site {
            on,
            silo,
            endpoint: _endpoint,
            cms,
            _dir,
            ..
        } = Site::new(on_s3).await;
        let data = content(11, 100_000);
        let crc = crc32_b64(&data);
        let put = cms
            .put_object()
            .bucket("private")
            .key("sum.bin")
            .checksum_algorithm(ChecksumAlgorithm::Crc32)
            .body(ByteStream::from(data.clone()))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{on}: {}", aws_sdk_s3::error::DisplayErrorContext(&e)));
        assert_eq!(put.checksum_crc32(), Some(crc.as_str()), "{on}: PutObject");
        let head = |key: &'static str, mode: bool| {
            let request = cms.head_object().bucket("private").key(key);
            let request = if mode {
                request.checksum_mode(ChecksumMode::Enabled)
            } else {
                request
            };
            async move { request.send().await.unwrap() }
        };
        let asked = head("sum.bin", true).await;
        assert_eq!(asked.checksum_crc32(), Some(crc.as_str()), "{on}: HeadObject");
        assert_eq!(asked.checksum_type(), Some(&ChecksumType::FullObject), "{on}");
        assert_eq!(head("sum.bin", false).await.checksum_crc32(), None, "{on}: not asked");
        let got = cms
            .get_object()
            .bucket("private")
            .key("sum.bin")
            .checksum_mode(ChecksumMode::Enabled)
            .send()
            .await
            .unwrap();
        assert_eq!(got.checksum_crc32(), Some(crc.as_str()), "{on}: GetObject");
        assert_eq!(body(got).await, data, "{on}");
        let ranged = cms
            .get_object()
            .bucket("private")
            .key("sum.bin")
            .range("bytes=0-9")
            .checksum_mode(ChecksumMode::Enabled)
            .send()
            .await
            .unwrap();
        assert_eq!(ranged.checksum_crc32(), None, "{on}: a range is not covered");
        let attributes = cms
            .get_object_attributes()
            .bucket("private")
            .key("sum.bin")
            .object_attributes(ObjectAttributes::Checksum)
            .object_attributes(ObjectAttributes::ObjectSize)
            .object_attributes(ObjectAttributes::Etag)
            .object_attributes(ObjectAttributes::StorageClass)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{on}: {}", aws_sdk_s3::error::DisplayErrorContext(&e)));
        assert_eq!(attributes.object_size(), Some(100_000), "{on}");
        assert_eq!(
            attributes.checksum().and_then(|c| c.checksum_crc32()),
            Some(crc.as_str()),
            "{on}: GetObjectAttributes"
        );
        assert_eq!(
            attributes.e_tag().map(|e| e.trim_matches('"')),
            Some(md5_etag(&data).trim_matches('"')),
            "{on}"
        );
        let copied = cms
            .copy_object()
            .bucket("private")
            .key("sum-copy.bin")
            .copy_source("private/sum.bin")
            .send()
            .await
            .unwrap();
        let answered = copied.copy_object_result().and_then(|r| r.checksum_crc32());
        assert_eq!(answered, Some(crc.as_str()), "{on}: the CopyObject answer");
        assert_eq!(
            head("sum-copy.bin", true).await.checksum_crc32(),
            Some(crc.as_str()),
            "{on}: a copy keeps it"
        );
        cms.copy_object()
            .bucket("private")
            .key("sum-replaced.bin")
            .copy_source("private/sum.bin")
            .metadata_directive(aws_sdk_s3::types::MetadataDirective::Replace)
            .content_type("application/x-other")
            .send()
            .await
            .unwrap();
        assert_eq!(
            head("sum-replaced.bin", true).await.checksum_crc32(),
            Some(crc.as_str()),
            "{on}: a copy that replaces the metadata keeps it too"
        );
        let sha = base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(&data));
        cms.put_object()
            .bucket("private")
            .key("sha.bin")
            .checksum_algorithm(ChecksumAlgorithm::Sha256)
            .body(ByteStream::from(data.clone()))
            .send()
            .await
            .unwrap();
        assert_eq!(
            head("sha.bin", true).await.checksum_sha256(),
            Some(sha.as_str()),
            "{on}: SHA-256"
        );
        // With user metadata, which an S3 backend keeps with the object.
        cms.put_object()
            .bucket("private")
            .key("meta.bin")
            .metadata("owner", "7")
            .checksum_algorithm(ChecksumAlgorithm::Crc32)
            .body(ByteStream::from(data.clone()))
            .send()
            .await
            .unwrap();
        // The cache rebuilt from the backend keeps them.
        silo_host::maintenance::refresh(silo.storage(), "private", &|_| {})
            .await
            .unwrap();
        assert_eq!(head("sum.bin", true).await.checksum_crc32(), Some(crc.as_str()), "{on}");
        let meta = head("meta.bin", true).await;
        assert_eq!(
            meta.checksum_crc32(),
            Some(crc.as_str()),
            "{on}: beside the backend's metadata"
        );
        assert_eq!(
            meta.metadata().and_then(|m| m.get("owner")).map(String::as_str),
            Some("7"),
            "{on}"
        );

        // A presigned PUT signs its checksum: aws-sdk-s3 as a header the
        // uploader must send (the JavaScript SDK's, in the query, is
        // tested with it).
        let presigned = |crc: String| {
            let cms = cms.clone();
            async move {
                cms.put_object()
                    .bucket("private")
                    .key("presigned.bin")
                    .checksum_crc32(crc)
                    .presigned(aws_sdk_s3::presigning::PresigningConfig::expires_in(Duration::from_secs(300)).unwrap())
                    .await
                    .unwrap()
            }
        };
        let url = presigned(crc32_b64(b"other bytes")).await;
        let http = silo_tests::http::Client::default();
        let headers: Vec<(&str, &str)> = url.headers().collect();
        let refused = http
            .send(hyper::Method::PUT, url.uri(), &headers, data.clone().into())
            .await
            .unwrap();
        assert_eq!(refused.status, 400, "{on}: {}", refused.text());
        assert!(refused.text().contains("BadDigest"), "{on}: {}", refused.text());
        let (code, _, _) = failure(cms.head_object().bucket("private").key("presigned.bin").send().await);
        assert_eq!(code, "NotFound", "{on}: nothing stored");
        let url = presigned(crc.clone()).await;
        let headers: Vec<(&str, &str)> = url.headers().collect();
        let stored = http
            .send(hyper::Method::PUT, url.uri(), &headers, data.clone().into())
            .await
            .unwrap();
        assert_eq!(stored.status, 200, "{on}: {}", stored.text());
        assert_eq!(
            head("presigned.bin", true).await.checksum_crc32(),
            Some(crc.as_str()),
            "{on}"
        );
    }
}

/// The AWS SDK for JavaScript v3, as Strapi, Payload and Directus use it
/// (`tests/clients/js/cms.mjs`): lib-storage's `Upload` gets the object's
/// URL as `Location` and S3's multipart ETag; a PutObject's default CRC32
/// is kept and given back to reads that ask; a presigned PUT whose query
/// signs a checksum stores only the bytes it names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_javascript_sdk_uploads_reads_and_presigns_as_node_cmss_do() {
    use md5::Digest;
    let clients = std::env::var("SILO_TEST_JS_CLIENTS")
        .expect("SILO_TEST_JS_CLIENTS is not set: run tests/run, which installs the AWS SDK for JavaScript");
    for setup in SETUPS {
        let Site { on, endpoint, _dir, .. } = Site::of(setup).await;
        let work = tempfile::tempdir().unwrap();
        let large = content(12, 12 << 20);
        let small = content(13, 2000);
        std::fs::write(work.path().join("large.bin"), &large).unwrap();
        std::fs::write(work.path().join("small.txt"), &small).unwrap();
        let env = vec![
            ("SILO_S3_ENDPOINT".to_owned(), endpoint.url()),
            ("SILO_S3_KEY".to_owned(), "CMSKEY".to_owned()),
            ("SILO_S3_SECRET".to_owned(), SECRET.to_owned()),
            ("SILO_S3_BUCKET".to_owned(), "private".to_owned()),
            (
                "SILO_JS_LARGE".to_owned(),
                work.path().join("large.bin").display().to_string(),
            ),
            (
                "SILO_JS_SMALL".to_owned(),
                work.path().join("small.txt").display().to_string(),
            ),
        ];
        let script = format!("{clients}/cms.mjs");
        let (ok, out, err) = run_tool("node", vec![script], work.path(), env).await;
        assert!(ok, "{on}: {out}{err}");
        let out: serde_json::Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{on}: {e}: {out}"));
        let mut digests = md5::Md5::new();
        for part in large.chunks(5 << 20) {
            digests.update(md5::Md5::digest(part));
        }
        let upload = &out["upload"];
        assert_eq!(
            upload["Location"],
            format!("{}/private/media/large.bin", endpoint.url()),
            "{on}: {out}"
        );
        assert_eq!(
            upload["ETag"],
            format!("\"{}-3\"", hex::encode(digests.finalize())),
            "{on}: {out}"
        );
        assert_eq!(
            (&upload["Bucket"], &upload["Key"]),
            (&"private".into(), &"media/large.bin".into()),
            "{on}"
        );
        let crc = crc32_b64(&small);
        assert_eq!(out["put"]["ETag"], md5_etag(&small), "{on}: {out}");
        assert_eq!(out["put"]["ChecksumCRC32"], crc.as_str(), "{on}: {out}");
        assert_eq!(out["head"]["ChecksumCRC32"], crc.as_str(), "{on}: {out}");
        assert_eq!(out["head"]["ChecksumType"], "FULL_OBJECT", "{on}: {out}");
        assert_eq!(out["get"]["ChecksumCRC32"], crc.as_str(), "{on}: {out}");
        assert_eq!(out["get"]["same"], true, "{on}: {out}");
        let mismatch = &out["presigned_mismatch"];
        assert!(
            mismatch["query"].as_str().unwrap().contains("x-amz-checksum-crc32="),
            "{on}: the JavaScript presigner signs the checksum into the query: {out}"
        );
        assert_eq!(mismatch["status"], 400, "{on}: {out}");
        assert!(mismatch["body"].as_str().unwrap().contains("BadDigest"), "{on}: {out}");
        assert_eq!(out["presigned"]["status"], 200, "{on}: {out}");
        let listed = out["list"].as_array().unwrap_or_else(|| panic!("{on}: {out}"));
        let tags: Vec<(&str, &str)> = listed
            .iter()
            .map(|o| (o["Key"].as_str().unwrap(), o["ETag"].as_str().unwrap()))
            .collect();
        assert!(
            tags.contains(&("media/presigned.txt", md5_etag(&small).as_str())),
            "{on}: {out}"
        );
        assert_eq!(out["delete"]["ok"], true, "{on}: {out}");
    }
}

/// Sync tools decide what to send by comparing ETags with the MD5s of
/// local files: `rclone sync --checksum` and `s3cmd sync` run twice send
/// nothing the second time, and a file changed to as many bytes is the
/// one file sent the third.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_tools_send_only_what_changed() {
    for setup in SETUPS {
        let Site { on, endpoint, _dir, .. } = Site::of(setup).await;
        let work = tempfile::tempdir().unwrap();
        let site = work.path().join("site");
        std::fs::create_dir_all(site.join("css")).unwrap();
        std::fs::write(site.join("index.txt"), "welcome").unwrap();
        std::fs::write(site.join("css/site.css"), "body { color: black }").unwrap();
        std::fs::write(site.join("data.bin"), content(14, 300_000)).unwrap();
        let rclone_env = rclone_env(&endpoint);
        let config = s3cmd_config(&endpoint, work.path());
        // How many files each tool sent in one sync.
        let rclone = || async {
            let args = ["sync", "--checksum", "-v", "site", "silo:private/rclone"];
            let (ok, out, err) = run_tool(
                "rclone",
                args.iter().map(|a| a.to_string()).collect(),
                work.path(),
                rclone_env.clone(),
            )
            .await;
            assert!(ok, "{on}: {err}");
            err.lines().filter(|l| l.contains(": Copied (")).count()
                + out.lines().filter(|l| l.contains(": Copied (")).count()
        };
        let s3cmd = || async {
            let args = ["-c", &config, "sync", "site/", "s3://private/s3cmd/"];
            let (ok, out, err) = run_tool(
                "s3cmd",
                args.iter().map(|a| a.to_string()).collect(),
                work.path(),
                Vec::new(),
            )
            .await;
            assert!(ok, "{on}: {out}{err}");
            out.lines().filter(|l| l.starts_with("upload:")).count()
        };
        assert_eq!(rclone().await, 3, "{on}: rclone's first sync");
        assert_eq!(s3cmd().await, 3, "{on}: s3cmd's first sync");
        assert_eq!(rclone().await, 0, "{on}: rclone's second sync sends nothing");
        assert_eq!(s3cmd().await, 0, "{on}: s3cmd's second sync sends nothing");
        // Changed to as many bytes (and, for s3cmd, never older): only the
        // checksum tells.
        std::fs::write(site.join("index.txt"), "welcomE").unwrap();
        assert_eq!(rclone().await, 1, "{on}: rclone sends the changed file");
        assert_eq!(s3cmd().await, 1, "{on}: s3cmd sends the changed file");
    }
}

/// minio-py, as django-minio-storage drives it, on local and S3 volumes and two nodes:
/// `tests/clients/s3_minio.py` checks the ETags it is given against the
/// MD5s of what it sent, single-part and multipart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minio_py_stores_stats_lists_reads_and_presigns() {
    python_client_passes("s3_minio.py", |e| e.addr.to_string(), &["public"]).await;
}

/// `tests/clients/<script>`, run with the venv's Python (boto3, minio-py,
/// Django) on each of [`SETUPS`] with the endpoint's address (as `address`
/// gives it), the CMS's key pair and `extra`: it prints `ok`.
async fn python_client_passes(script: &str, address: impl Fn(&Endpoint) -> String, extra: &[&str]) {
    let python = std::env::var("SILO_TEST_BOTO3_PYTHON").expect(
        "SILO_TEST_BOTO3_PYTHON is not set: run the tests with tests/run, which installs boto3, minio-py and Django",
    );
    for setup in SETUPS {
        let Site { on, endpoint, _dir, .. } = Site::of(setup).await;
        let work = tempfile::tempdir().unwrap();
        let script = format!("{}/clients/{script}", env!("CARGO_MANIFEST_DIR"));
        let mut args = vec![script, address(&endpoint), "CMSKEY".into(), SECRET.into()];
        args.extend(extra.iter().map(|a| a.to_string()));
        let (ok, out, err) = run_tool(&python, args, work.path(), Vec::new()).await;
        assert!(ok && out.trim() == "ok", "{on}: {out}{err}");
    }
}

/// Keys ending in '/' are folders, as the S3 console, Cyberduck and
/// rclone's directory markers make them: objects of no bytes, listed as S3
/// lists them, kept by every backend (a rebuilt cache finds them), never
/// given bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn folders_are_listed_as_s3_lists_them() {
    for on_s3 in [false, true] {
        let Site {
            on,
            silo,
            endpoint: _endpoint,
            cms,
            _dir,
            ..
        } = Site::new(on_s3).await;
        let put = cms
            .put_object()
            .bucket("private")
            .key("albums/")
            .content_type("application/x-directory")
            .body(ByteStream::from_static(b""))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{on}: {}", aws_sdk_s3::error::DisplayErrorContext(&e)));
        assert_eq!(put.e_tag(), Some(md5_etag(b"").as_str()), "{on}");
        put_text(&cms, "private", "albums/cover.txt", "cover").await;
        put_text(&cms, "private", "top.txt", "top").await;
        // The cache rebuilt from the backend finds the folder again.
        silo_host::maintenance::refresh(silo.storage(), "private", &|_| {})
            .await
            .unwrap();
        let head = cms.head_object().bucket("private").key("albums/").send().await.unwrap();
        assert_eq!(head.content_length(), Some(0), "{on}");
        assert_eq!(head.content_type(), Some("application/x-directory"), "{on}");
        let list = |prefix: &'static str, delimiter: Option<&'static str>| {
            let request = cms
                .list_objects_v2()
                .bucket("private")
                .prefix(prefix)
                .set_delimiter(delimiter.map(str::to_owned));
            async move {
                let out = request.send().await.unwrap();
                let keys: Vec<String> = out.contents().iter().map(|o| o.key().unwrap().to_owned()).collect();
                let prefixes: Vec<String> = out
                    .common_prefixes()
                    .iter()
                    .map(|p| p.prefix().unwrap().to_owned())
                    .collect();
                (keys, prefixes)
            }
        };
        assert_eq!(
            list("", None).await,
            (
                vec!["albums/".into(), "albums/cover.txt".into(), "top.txt".into()],
                vec![]
            ),
            "{on}"
        );
        assert_eq!(
            list("", Some("/")).await,
            (vec!["top.txt".into()], vec!["albums/".into()]),
            "{on}"
        );
        assert_eq!(
            list("albums/", Some("/")).await,
            (vec!["albums/".into(), "albums/cover.txt".into()], vec![]),
            "{on}"
        );
        let (code, status, message) = failure(
            cms.put_object()
                .bucket("private")
                .key("photos/")
                .body(ByteStream::from_static(b"bytes in a folder"))
                .send()
                .await,
        );
        assert_eq!((code.as_str(), status), ("InvalidArgument", 400), "{on}: {message}");
        assert!(message.contains("folder"), "{on}: {message}");
        cms.delete_object()
            .bucket("private")
            .key("albums/")
            .send()
            .await
            .unwrap();
        assert_eq!(
            list("", None).await.0,
            ["albums/cover.txt", "top.txt"],
            "{on}: the folder's files outlive it"
        );
        silo_host::maintenance::refresh(silo.storage(), "private", &|_| {})
            .await
            .unwrap();
        assert_eq!(list("", None).await.0, ["albums/cover.txt", "top.txt"], "{on}");
    }
}

/// A Django site on django-storages' S3Storage, as Wagtail and most Django
/// CMSs run on S3 (tests/clients/s3_django.py): media saved, opened,
/// sized, listed, renamed on a clash, served by signed URLs and deleted;
/// static files collected to the public volume, served by public URLs, and
/// not sent again; a `.php` refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_django_site_on_django_storages_saves_serves_and_collects_static() {
    python_client_passes("s3_django.py", Endpoint::url, &[]).await;
}

/// An object completed from parts whose client sent checksums keeps S3's
/// composite one (the checksum of the parts' checksums, `-N`), or the
/// whole object's CRC where the upload asked for FULL_OBJECT, answered
/// with the completion, on HEAD and GET with checksum mode and in
/// GetObjectAttributes; one with a part sent without keeps none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multipart_objects_keep_the_composite_checksum_of_their_parts() {
    use aws_sdk_s3::types::{
        ChecksumAlgorithm, ChecksumMode, ChecksumType, CompletedMultipartUpload, CompletedPart, ObjectAttributes,
    };
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    for setup in SETUPS {
        let Site {
            on,
            silo,
            cms,
            endpoint: _endpoint,
            _dir,
            _more,
            ..
        } = Site::of(setup).await;
        // The SDK sends a CRC32 with every part unless told to only where
        // S3 requires one.
        let plain = aws_sdk_s3::Client::from_conf(
            cms.config()
                .to_builder()
                .request_checksum_calculation(aws_sdk_s3::config::RequestChecksumCalculation::WhenRequired)
                .build(),
        );
        let parts = [content(21, 5 << 20), content(22, 1 << 20)];
        let mut joined = Vec::new();
        for part in &parts {
            joined.extend(crc32fast::hash(part).to_be_bytes());
        }
        let expected = format!("{}-2", b64.encode(crc32fast::hash(&joined).to_be_bytes()));
        let whole = b64.encode(crc32fast::hash(&parts.concat()).to_be_bytes());
        for (key, with_sums) in [
            ("mp/summed.bin", [true, true]),
            ("mp/half.bin", [true, false]),
            ("mp/full.bin", [true, true]),
        ] {
            // The last asks for the whole object's CRC (FULL_OBJECT).
            let kind = match key {
                "mp/full.bin" => ChecksumType::FullObject,
                _ => ChecksumType::Composite,
            };
            let (expected, kind) = match kind {
                ChecksumType::FullObject => (whole.clone(), kind),
                _ => (expected.clone(), kind),
            };
            let id = cms
                .create_multipart_upload()
                .bucket("private")
                .key(key)
                .checksum_algorithm(ChecksumAlgorithm::Crc32)
                .checksum_type(kind.clone())
                .send()
                .await
                .unwrap()
                .upload_id
                .unwrap();
            let mut done = CompletedMultipartUpload::builder();
            for (i, (part, summed)) in parts.iter().zip(with_sums).enumerate() {
                let number = i as i32 + 1;
                let client = if summed { &cms } else { &plain };
                let mut request = client
                    .upload_part()
                    .bucket("private")
                    .key(key)
                    .upload_id(&id)
                    .part_number(number)
                    .body(ByteStream::from(part.clone()));
                if summed {
                    request = request.checksum_algorithm(ChecksumAlgorithm::Crc32);
                }
                let sent = request
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("{on}: {}", aws_sdk_s3::error::DisplayErrorContext(&e)));
                let mut completed = CompletedPart::builder()
                    .part_number(number)
                    .e_tag(sent.e_tag().unwrap());
                if summed {
                    completed = completed.checksum_crc32(b64.encode(crc32fast::hash(part).to_be_bytes()));
                }
                done = done.parts(completed.build());
            }
            let completed = cms
                .complete_multipart_upload()
                .bucket("private")
                .key(key)
                .upload_id(&id)
                .multipart_upload(done.build())
                .send()
                .await
                .unwrap_or_else(|e| panic!("{on}: {}", aws_sdk_s3::error::DisplayErrorContext(&e)));
            let head = cms
                .head_object()
                .bucket("private")
                .key(key)
                .checksum_mode(ChecksumMode::Enabled)
                .send()
                .await
                .unwrap();
            let attributes = cms
                .get_object_attributes()
                .bucket("private")
                .key(key)
                .object_attributes(ObjectAttributes::Checksum)
                .object_attributes(ObjectAttributes::ObjectParts)
                .send()
                .await
                .unwrap();
            let kept = attributes.checksum().and_then(|c| c.checksum_crc32());
            let counted = attributes.object_parts().and_then(|p| p.total_parts_count());
            assert_eq!(counted, Some(2), "{on}: {key} was completed from two parts");
            if key == "mp/half.bin" {
                assert_eq!(head.checksum_crc32(), None, "{on}: a part came without a checksum");
                assert_eq!(kept, None, "{on}");
                continue;
            }
            assert_eq!(completed.checksum_crc32(), Some(expected.as_str()), "{on}");
            assert_eq!(completed.checksum_type(), Some(&kind), "{on}: {key}");
            assert_eq!(head.checksum_crc32(), Some(expected.as_str()), "{on}: {key}");
            assert_eq!(head.checksum_type(), Some(&kind), "{on}: {key}");
            assert_eq!(kept, Some(expected.as_str()), "{on}: {key}");
            // The SDK reads the object whole with checksum mode, checking
            // the body against a FULL_OBJECT checksum (a composite one is
            // not one it can check a body against).
            let got = cms
                .get_object()
                .bucket("private")
                .key(key)
                .checksum_mode(ChecksumMode::Enabled)
                .send()
                .await
                .unwrap();
            assert_eq!(got.checksum_crc32(), Some(expected.as_str()), "{on}");
            assert!(body(got).await == parts.concat(), "{on}");
            // Kept, with the parts' sizes, when the cache is rebuilt from
            // the backend.
            silo_host::maintenance::refresh(silo.storage(), "private", &|_| {})
                .await
                .unwrap();
            let head = cms
                .head_object()
                .bucket("private")
                .key(key)
                .checksum_mode(ChecksumMode::Enabled)
                .part_number(2)
                .send()
                .await
                .unwrap_or_else(|e| panic!("{on}: {key}: {}", aws_sdk_s3::error::DisplayErrorContext(&e)));
            assert_eq!(head.content_length(), Some(1 << 20), "{on}: {key}");
            let head = cms
                .head_object()
                .bucket("private")
                .key(key)
                .checksum_mode(ChecksumMode::Enabled)
                .send()
                .await
                .unwrap();
            assert_eq!(
                head.checksum_crc32(),
                Some(expected.as_str()),
                "{on}: {key} after a refresh"
            );
        }
    }
}
