//! The host against clients that leave, S3 servers that stall or answer
//! without ETags, and objects changed behind its back.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::{Method, StatusCode};
use silo_host::StorageError;
use silo_host::store::{ObjectStore, PutOptions, S3Store};
use silo_tests::http::{Client, Sidecar};
use silo_tests::{PROBE, TestSilo, probe_stage, s3};

const PUBLIC_RW: &str = r#"{ volume = "public", access = ["read", "write", "delete"] }"#;

#[tokio::test]
async fn head_answers_from_the_metadata_cache_without_the_store() -> anyhow::Result<()> {
    let bucket = s3::bucket("head").await;
    let volumes = s3::volume_toml("public", &bucket, "public", "visibility = \"public\"");
    let t = TestSilo::with_volumes("", &[], &volumes).await?;
    let silo = Arc::new(t.silo);
    let sidecar = Sidecar::start(silo.clone()).await;
    let client = Client::default();
    let url = sidecar.url("/v1/files/public/a.txt");
    assert_eq!(
        client.put(&url, "text/plain", "hello head").await?.status,
        StatusCode::CREATED
    );
    // Removed behind Silo's back: a HEAD still answers from the cache (it
    // never asks S3); a GET finds out.
    s3::client()
        .delete_object()
        .bucket(&bucket)
        .key("public/a.txt")
        .send()
        .await?;
    let head = client.send(Method::HEAD, &url, &[], Bytes::new()).await?;
    assert_eq!(head.status, StatusCode::OK);
    assert_eq!(head.header("content-length"), Some("10"));
    assert!(head.body.is_empty());
    assert_eq!(client.get(&url, &[]).await?.status, StatusCode::NOT_FOUND);
    assert_eq!(
        client.send(Method::HEAD, &url, &[], Bytes::new()).await?.status,
        StatusCode::NOT_FOUND
    );
    Ok(())
}

#[tokio::test]
async fn a_silent_s3_endpoint_fails_within_the_request_timeout() -> anyhow::Result<()> {
    // Accepts connections and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            open.push(socket);
        }
    });
    let mut settings = s3::settings("silent", "");
    settings.endpoint_url = Some(format!("http://{addr}"));
    settings.max_attempts = 1;
    settings.request_timeout = Duration::from_secs(1);
    let store = S3Store::connect(&settings).await?;
    let started = Instant::now();
    let err = store.head("a.txt").await.unwrap_err();
    assert!(matches!(err, StorageError::Unavailable(_)), "{err}");
    let err = store
        .put("a.txt", Bytes::from_static(b"x"), &PutOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(err, StorageError::Unavailable(ref m) if m.contains("timeout")),
        "{err}"
    );
    // One sentence, not the SDK's debug chain.
    assert!(
        !err.to_string().contains("DispatchFailure") && !err.to_string().contains('{'),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(15), "{:?}", started.elapsed());
    held.abort();
    Ok(())
}

/// A proxy in front of SeaweedFS that answers writes without ETags, as
/// Ceph RGW 16.2 answers CompleteMultipartUpload.
async fn etagless_proxy(upstream: String) -> anyhow::Result<std::net::SocketAddr> {
    use http_body_util::{BodyExt, Full};
    use hyper::body::Incoming;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let client: hyper_util::client::legacy::Client<_, Full<Bytes>> =
        hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let (client, upstream) = (client.clone(), upstream.clone());
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
                    let (client, upstream) = (client.clone(), upstream.clone());
                    async move {
                        let (mut parts, body) = request.into_parts();
                        let body = body.collect().await?.to_bytes();
                        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
                        // Parts keep their ETags: S3 needs them to complete.
                        let writes = (parts.method == Method::PUT || parts.method == Method::POST)
                            && !path.contains("partNumber=");
                        parts.uri = format!("{upstream}{path}").parse().unwrap();
                        let response = client
                            .request(hyper::Request::from_parts(parts, Full::new(body)))
                            .await
                            .unwrap();
                        let (mut parts, body) = response.into_parts();
                        let mut body = body.collect().await?.to_bytes();
                        if writes {
                            parts.headers.remove("etag");
                            let text = String::from_utf8_lossy(&body).into_owned();
                            if let (Some(start), Some(end)) = (text.find("<ETag>"), text.find("</ETag>")) {
                                body = Bytes::from(format!("{}<ETag></ETag>{}", &text[..start], &text[end + 7..]));
                                parts.headers.remove("content-length");
                            }
                        }
                        Ok::<_, hyper::Error>(hyper::Response::from_parts(parts, Full::new(body)))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(socket), service)
                    .await;
            });
        }
    });
    Ok(addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_answered_without_an_etag_learn_it_and_never_store_it_empty() -> anyhow::Result<()> {
    let bucket = s3::bucket("etagless").await;
    let proxy = etagless_proxy(s3::endpoint()).await?;
    let mut settings = s3::settings(&bucket, "");
    settings.endpoint_url = Some(format!("http://{proxy}"));
    // The proxy does hide the ETag of a write.
    let plain = s3::client_at(&format!("http://{proxy}"));
    let raw = plain
        .put_object()
        .bucket(&bucket)
        .key("raw.txt")
        .body(Bytes::from_static(b"raw").into())
        .send()
        .await?;
    assert_eq!(raw.e_tag(), None);
    let store = S3Store::connect(&settings).await?;
    let put = store
        .put("small.txt", Bytes::from_static(b"small"), &PutOptions::default())
        .await?;
    let mut upload = store.start_upload("big.bin", PutOptions::default()).await?;
    let part = vec![7u8; 6 << 20];
    upload.write(Bytes::from(part.clone()), Default::default()).await?;
    upload.write(Bytes::from(part), Default::default()).await?;
    let multipart = upload.finish().await?;
    let copied = store.copy("small.txt", "copy.txt", &PutOptions::default()).await?;
    for (name, meta) in [("small.txt", put), ("big.bin", multipart), ("copy.txt", copied)] {
        assert!(!meta.etag.is_empty(), "{name}: an empty etag");
        let actual = s3::client().head_object().bucket(&bucket).key(name).send().await?;
        assert_eq!(
            actual.e_tag().map(|t| t.trim_matches('"')),
            Some(meta.etag.as_str()),
            "{name}"
        );
    }
    Ok(())
}

/// What docs/SEMANTICS.md promises of conditional writes holds only where
/// the server implements them; this checks the server under test (point
/// `SILO_TEST_S3_ENDPOINT` elsewhere to check another).
#[tokio::test]
async fn the_s3_server_honours_conditional_writes() -> anyhow::Result<()> {
    let client = s3::client();
    let bucket = s3::bucket("conformance").await;
    let put = |condition: Option<(&'static str, String)>| {
        let (client, bucket) = (client.clone(), bucket.clone());
        async move {
            let mut request = client
                .put_object()
                .bucket(&bucket)
                .key("c.txt")
                .body(Bytes::from_static(b"v").into());
            request = match condition {
                Some(("if-none-match", v)) => request.if_none_match(v),
                Some((_, v)) => request.if_match(v),
                None => request,
            };
            request.send().await.map(|o| o.e_tag().unwrap_or_default().to_owned())
        }
    };
    let status = |e: &aws_sdk_s3::error::SdkError<_, _>| {
        e.raw_response()
            .map(|r: &aws_sdk_s3::config::http::HttpResponse| r.status().as_u16())
    };
    let etag = put(None).await?;
    assert!(!etag.trim_matches('"').is_empty(), "PutObject answered without an ETag");
    let refused = put(Some(("if-none-match", "*".into()))).await.unwrap_err();
    assert_eq!(
        status(&refused),
        Some(412),
        "If-None-Match: * over an object must answer 412"
    );
    put(Some(("if-match", etag.clone())))
        .await
        .expect("If-Match with the current etag must succeed");
    let refused = put(Some(("if-match", "\"other\"".into()))).await.unwrap_err();
    assert!(
        matches!(status(&refused), Some(412 | 409)),
        "If-Match with another etag must fail"
    );
    let copy = client
        .copy_object()
        .bucket(&bucket)
        .key("d.txt")
        .copy_source(format!("{bucket}/c.txt"))
        .copy_source_if_match("\"other\"")
        .send()
        .await;
    assert!(copy.is_err(), "CopyObject must check x-amz-copy-source-if-match");
    Ok(())
}

#[tokio::test]
async fn a_style_deleted_behind_silos_back_is_derived_again_on_the_first_request() -> anyhow::Result<()> {
    // image-styles, the last stage, derives on request too.
    let pipeline = format!("{}styles = [\"thumbnail\", \"medium\"]\n", silo_tests::EXAMPLE_PIPELINE);
    let t = TestSilo::new(&pipeline, &[]).await?;
    let public = t.volume_dir("public");
    let silo = Arc::new(t.silo);
    let sidecar = Sidecar::start(silo.clone()).await;
    let client = Client::default();
    let upload = client
        .put(
            &sidecar.url("/v1/files/public/p/cat.jpg"),
            "image/jpeg",
            silo_tests::jpeg(400, 300),
        )
        .await?;
    assert_eq!(upload.status, StatusCode::CREATED, "{}", upload.text());
    let style = public.join("styles/thumbnail/p/cat.jpg");
    let derived = std::fs::read(&style)?;
    std::fs::remove_file(&style)?;
    let reply = client
        .get(&sidecar.url("/v1/styles/thumbnail/public/p/cat.jpg"), &[])
        .await?;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.body.len(), derived.len());
    assert!(style.exists(), "derived again into the volume");
    Ok(())
}

#[tokio::test]
async fn a_damaged_cache_row_is_an_error_not_a_file_without_metadata() -> anyhow::Result<()> {
    let t = TestSilo::new("", &[]).await?;
    let storage = t.silo.storage();
    let host = storage.host_session();
    let loc = storage.location("public", "a.txt")?;
    let options = PutOptions {
        metadata: vec![("owner".into(), "42".into())],
        ..Default::default()
    };
    host.write(&loc, Bytes::from_static(b"hello"), options).await?;
    let db = rusqlite::Connection::open(t.dir.path().join("state/meta.sqlite"))?;
    db.execute("UPDATE objects SET metadata = '[[\"owner\"' WHERE path = 'a.txt'", [])?;
    let err = host.stat(&loc).await.unwrap_err();
    assert!(
        matches!(&err, StorageError::Unavailable(m) if m.contains("unreadable user metadata")),
        "{err}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditional_uploads_never_overwrite_another_nodes_file() -> anyhow::Result<()> {
    let settings = r#"mode = "slow", ms = "600""#;
    let t = TestSilo::new(
        &probe_stage("slow", "text/plain", settings, PUBLIC_RW),
        &[("probe.wasm", PROBE)],
    )
    .await?;
    let public = t.volume_dir("public");
    let silo = Arc::new(t.silo);
    let sidecar = Sidecar::start(silo.clone()).await;
    let client = Client::default();
    let url = sidecar.url("/v1/files/public/doc.txt");
    let auth = format!("Bearer {}", silo_tests::http::TOKEN);
    let put = |headers: Vec<(&'static str, String)>, body: &'static str| {
        let (client, url, auth) = (client.clone(), url.clone(), auth.clone());
        async move {
            let mut all = vec![("authorization", auth), ("content-type", "text/plain".to_owned())];
            all.extend(headers);
            let all: Vec<(&str, &str)> = all.iter().map(|(k, v)| (*k, v.as_str())).collect();
            client
                .send(Method::PUT, &url, &all, Bytes::from_static(body.as_bytes()))
                .await
                .unwrap()
        }
    };
    let create = || vec![("if-none-match", "*".to_owned())];
    assert_eq!(put(create(), "first").await.status, StatusCode::CREATED);
    let refused = put(create(), "second").await;
    assert_eq!(refused.status, StatusCode::PRECONDITION_FAILED, "{}", refused.text());
    assert_eq!(std::fs::read(public.join("doc.txt"))?, b"first");

    let etag = client.get(&url, &[]).await?.header("etag").unwrap().to_owned();
    let stale = put(vec![("if-match", "\"not-the-etag\"".to_owned())], "third").await;
    assert_eq!(stale.status, StatusCode::PRECONDITION_FAILED);
    assert_eq!(
        put(vec![("if-match", etag.clone())], "fourth").await.status,
        StatusCode::CREATED
    );
    assert_eq!(std::fs::read(public.join("doc.txt"))?, b"fourth");
    // The old etag no longer matches.
    assert_eq!(
        put(vec![("if-match", etag)], "fifth").await.status,
        StatusCode::PRECONDITION_FAILED
    );
    // Every other form, as RFC 9110 reads it: a weak tag never matches
    // If-Match; If-None-Match naming another version, and If-Match: * on
    // a file that is there, hold.
    let reply = put(vec![("if-match", "W/\"x\"".to_owned())], "x").await;
    assert_eq!(reply.status, StatusCode::PRECONDITION_FAILED);
    for holding in [("if-none-match", "\"x\""), ("if-match", "*")] {
        let reply = put(vec![(holding.0, holding.1.to_owned())], "sixth").await;
        assert_eq!(reply.status, StatusCode::CREATED, "{holding:?}");
    }
    assert_eq!(std::fs::read(public.join("doc.txt"))?, b"sixth");

    // Another writer stores the file while the plugins judge a create-only
    // upload: the upload loses at the store, and what its plugin derived
    // is rolled back.
    let url = sidecar.url("/v1/files/public/race.txt");
    let racing = {
        let (client, url, auth) = (client.clone(), url.clone(), auth.clone());
        tokio::spawn(async move {
            client
                .send(
                    Method::PUT,
                    &url,
                    &[
                        ("authorization", &auth),
                        ("content-type", "text/plain"),
                        ("if-none-match", "*"),
                    ],
                    Bytes::from_static(b"late"),
                )
                .await
                .unwrap()
        })
    };
    tokio::time::sleep(Duration::from_millis(250)).await;
    let host = silo.storage().host_session();
    host.write(
        &silo.storage().location("public", "race.txt")?,
        Bytes::from_static(b"other node"),
        PutOptions::default(),
    )
    .await?;
    let reply = racing.await?;
    assert_eq!(reply.status, StatusCode::PRECONDITION_FAILED, "{}", reply.text());
    assert_eq!(std::fs::read(public.join("race.txt"))?, b"other node");
    assert!(
        !public.join("slow/race.txt").exists(),
        "the losing upload's derived file stayed"
    );
    Ok(())
}

fn memory_lookups(silo: &silo_host::Silo, result: &str) -> u64 {
    let series = format!("silo_memory_cache_lookups_total{{volume=\"public\",result=\"{result}\"}}");
    silo.storage()
        .metrics()
        .render()
        .lines()
        .find_map(|l| l.strip_prefix(series.as_str())?.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

/// Small files read again come from memory, but never a version the
/// metadata cache does not name: a replaced file (of the same size) is
/// served new at once, one changed behind Silo's back once a refresh has
/// seen it, and a deleted one is gone.
#[tokio::test]
async fn small_files_are_served_from_memory_never_stale() -> anyhow::Result<()> {
    let t = TestSilo::new("", &[]).await?;
    let public = t.volume_dir("public");
    let silo = Arc::new(t.silo);
    let sidecar = Sidecar::start(silo.clone()).await;
    let client = Client::default();
    let url = sidecar.url("/v1/files/public/m/a.txt");
    assert_eq!(
        client.put(&url, "text/plain", "version one").await?.status,
        StatusCode::CREATED
    );
    assert_eq!(client.get(&url, &[]).await?.text(), "version one");
    let hits = memory_lookups(&silo, "hit");
    assert_eq!(client.get(&url, &[]).await?.text(), "version one");
    assert_eq!(
        memory_lookups(&silo, "hit"),
        hits + 1,
        "the second read came from memory"
    );
    // A range of a held file.
    let range = client.get(&url, &[("range", "bytes=8-10")]).await?;
    assert_eq!(
        (range.status, range.text()),
        (StatusCode::PARTIAL_CONTENT, "one".to_owned())
    );
    assert_eq!(memory_lookups(&silo, "hit"), hits + 2);
    // Replaced through Silo, same size: the new bytes at once.
    assert_eq!(
        client.put(&url, "text/plain", "version two").await?.status,
        StatusCode::CREATED
    );
    assert_eq!(client.get(&url, &[]).await?.text(), "version two");
    assert_eq!(client.get(&url, &[]).await?.text(), "version two");
    // Changed behind Silo's back: served as the metadata cache has it
    // until a refresh sees the change, then the new bytes.
    tokio::time::sleep(Duration::from_millis(20)).await;
    std::fs::write(public.join("m/a.txt"), "version six")?;
    silo_host::maintenance::refresh(silo.storage(), "public", &|_| {}).await?;
    tokio::time::sleep(silo_host::cache::FRONT_TTL).await;
    assert_eq!(client.get(&url, &[]).await?.text(), "version six");
    // Deleted: gone, not served from memory.
    let auth = format!("Bearer {}", silo_tests::http::TOKEN);
    let deleted = client
        .send(Method::DELETE, &url, &[("authorization", &auth)], Bytes::new())
        .await?;
    assert!(deleted.status.is_success(), "{}", deleted.text());
    assert_eq!(client.get(&url, &[]).await?.status, StatusCode::NOT_FOUND);
    // Large files are streamed, never held.
    let big = sidecar.url("/v1/files/public/m/big.bin");
    let bytes = vec![7u8; 300 * 1024];
    assert_eq!(
        client
            .put(&big, "application/octet-stream", bytes.clone())
            .await?
            .status,
        StatusCode::CREATED
    );
    let misses = memory_lookups(&silo, "miss");
    assert_eq!(client.get(&big, &[]).await?.body.len(), bytes.len());
    assert_eq!(client.get(&big, &[]).await?.body.len(), bytes.len());
    assert_eq!(memory_lookups(&silo, "miss"), misses, "not even looked up");
    Ok(())
}
