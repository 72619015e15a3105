//! Under load: a burst of large uploads onto an S3 volume is stored whole
//! through both doors and leaves the node able to take the next upload;
//! streamed writers sharing a nearly spent write budget all finish; and a
//! bound that stays full answers `busy` (S3: `SlowDown`), turns `/readyz`
//! to 503, and never hangs.

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;
use silo_host::budget::{Held, WriteBudget};
use silo_host::store::{ObjectStore, PutOptions, S3Store};
use silo_tests::http::{Client, Sidecar, TOKEN};
use silo_tests::s3api::{Endpoint, principal};
use silo_tests::{GUARD_PIPELINE, TestSilo, s3};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SECRET: &str = "cms-secret-0123456789";
const BURST: usize = 128;
const SIZE: usize = 8 << 20;
/// Longer than the burst takes on a loaded CI machine; a wedged node
/// never finishes it.
const BURST_LIMIT: Duration = Duration::from_secs(600);

fn credentials() -> String {
    principal(
        "cms",
        "CMSKEY",
        SECRET,
        r#"[{ volume = "public", access = ["read", "write", "delete"] }]"#,
    )
}

/// `len` bytes that differ for each `seed`.
fn content(seed: usize, len: usize) -> Bytes {
    Bytes::from(silo_tests::cluster::content(seed as u64, len))
}

/// The sizes of the objects under `prefix` of the volume `public`.
async fn stored(bucket: &str, prefix: &str) -> Vec<u64> {
    s3::keys(bucket)
        .await
        .into_iter()
        .filter(|(k, _)| k.starts_with(&format!("public/{prefix}")))
        .map(|(_, size)| size)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_of_large_uploads_onto_s3_is_stored_through_each_door_and_the_next_one_at_once() {
    let (t, bucket) = TestSilo::on_s3(GUARD_PIPELINE, &[], "burst").await.unwrap();
    let silo = Arc::new(t.silo);
    let sidecar = Sidecar::start(silo.clone()).await;
    let endpoint = Endpoint::start(silo.clone(), &credentials(), Duration::from_secs(60)).await;
    let s3_client = endpoint.client("CMSKEY", SECRET);
    // One pseudo-random body, each copy marked with its number.
    let base = content(1, SIZE);
    let bodies: Vec<Bytes> = (0..BURST)
        .map(|i| {
            let mut body = base.to_vec();
            body[..8].copy_from_slice(&(i as u64).to_le_bytes());
            Bytes::from(body)
        })
        .collect();

    // The sidecar.
    let http = Client::default();
    let mut uploads = tokio::task::JoinSet::new();
    for (i, body) in bodies.iter().enumerate() {
        let (http, url, body) = (
            http.clone(),
            sidecar.url(&format!("/v1/files/public/sidecar/{i}.bin")),
            body.clone(),
        );
        uploads.spawn(async move { http.put(&url, "application/octet-stream", body).await });
    }
    let answers = tokio::time::timeout(BURST_LIMIT, uploads.join_all())
        .await
        .expect("the sidecar's burst did not finish: the node is wedged");
    for reply in answers {
        let reply = reply.unwrap();
        assert_eq!(reply.status, 201, "{}", reply.text());
    }
    let sizes = stored(&bucket, "sidecar/").await;
    assert_eq!(sizes.len(), BURST);
    assert!(sizes.iter().all(|&s| s == SIZE as u64), "{sizes:?}");

    // The S3 endpoint.
    let mut uploads = tokio::task::JoinSet::new();
    for (i, body) in bodies.iter().enumerate() {
        let (client, body) = (s3_client.clone(), body.clone());
        uploads.spawn(async move {
            client
                .put_object()
                .bucket("public")
                .key(format!("s3/{i}.bin"))
                .content_type("application/octet-stream")
                .body(ByteStream::from(body))
                .send()
                .await
                .map(drop)
                .map_err(|e| format!("{}", aws_sdk_s3::error::DisplayErrorContext(&e)))
        });
    }
    let answers = tokio::time::timeout(BURST_LIMIT, uploads.join_all())
        .await
        .expect("the S3 endpoint's burst did not finish: the node is wedged");
    for answer in answers {
        answer.unwrap();
    }
    let sizes = stored(&bucket, "s3/").await;
    assert_eq!(sizes.len(), BURST);
    assert!(sizes.iter().all(|&s| s == SIZE as u64), "{sizes:?}");

    // Nothing of the burst is left holding the node: a larger upload goes
    // straight through, and its bytes are the ones sent.
    let next = content(999, 9 << 20);
    let reply = tokio::time::timeout(
        Duration::from_secs(60),
        http.put(
            &sidecar.url("/v1/files/public/after/next.bin"),
            "application/octet-stream",
            next.clone(),
        ),
    )
    .await
    .expect("a 9 MiB upload after the burst was not stored within 60 s")
    .unwrap();
    assert_eq!(reply.status, 201, "{}", reply.text());
    let read = s3_client
        .get_object()
        .bucket("public")
        .key("after/next.bin")
        .send()
        .await
        .unwrap();
    assert_eq!(read.body.collect().await.unwrap().into_bytes(), next);
    assert_eq!(silo.storage().budget().available(), silo.storage().budget().size());
    let staging = t.dir.path().join("state/staging");
    let left = std::fs::read_dir(&staging).map_or(0, |d| d.count());
    assert_eq!(left, 0, "staged files left in {}", staging.display());
}

/// Streamed writes (a plugin's `open-write`) onto S3 buffer their parts
/// in memory: with the budget all but one part spent by someone else,
/// every writer still finishes, one part at a time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_writers_all_finish_when_the_budget_is_nearly_spent() {
    const PART: usize = 5 << 20;
    const BUDGET: usize = 16 << 20;
    const WRITERS: usize = 8;
    const EACH: usize = 12 << 20;
    let budget = WriteBudget::new(BUDGET).with_wait(Duration::from_secs(300));
    let bucket = s3::bucket("nearly-spent").await;
    let mut settings = s3::settings(&bucket, "");
    settings.part_size = PART as u64;
    let store = Arc::new(S3Store::connect(&settings).await.unwrap().with_budget(budget.clone()));
    // Held by someone else throughout: room for one part is left.
    let other = budget.reserve(BUDGET - PART).await.unwrap();
    let mut writers = tokio::task::JoinSet::new();
    for i in 0..WRITERS {
        let store = store.clone();
        writers.spawn(async move {
            let options = PutOptions {
                content_type: "application/octet-stream".into(),
                ..Default::default()
            };
            let mut upload = store.start_upload(&format!("w/{i}"), options).await?;
            let data = content(i, EACH);
            for chunk in data.chunks(64 * 1024) {
                upload.write(data.slice_ref(chunk), Held::default()).await?;
            }
            upload.finish().await
        });
    }
    let written = tokio::time::timeout(Duration::from_secs(240), writers.join_all())
        .await
        .expect("the writers did not all finish: the budget is deadlocked");
    for meta in written {
        assert_eq!(meta.unwrap().size, EACH as u64);
    }
    assert_eq!(budget.available(), PART);
    drop(other);
    assert_eq!(s3::keys(&bucket).await.len(), WRITERS);
    assert_eq!(s3::open_uploads(&bucket).await, 0);
}

/// A Silo whose uploads take turns one at a time and wait one second.
async fn one_upload_at_a_time() -> (tempfile::TempDir, Arc<silo_host::Silo>) {
    let pipeline = format!("[limits]\nmax_uploads = 1\nwrite_wait_secs = 1\nstall_secs = 1\n{GUARD_PIPELINE}");
    let TestSilo { dir, silo } = TestSilo::new(&pipeline, &[]).await.unwrap();
    (dir, Arc::new(silo))
}

/// Start an upload through the sidecar at `addr` that sends part of its
/// body and then nothing, holding its place.
async fn stalled_upload(addr: std::net::SocketAddr, path: &str) -> tokio::net::TcpStream {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "PUT {path} HTTP/1.1\r\nhost: silo\r\nauthorization: Bearer {TOKEN}\r\n\
         content-type: application/octet-stream\r\ncontent-length: 1048576\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&[7u8; 4096]).await.unwrap();
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_that_finds_no_place_is_told_busy_not_left_waiting() {
    let (_t, silo) = one_upload_at_a_time().await;
    let sidecar = Sidecar::start(silo.clone()).await;
    let endpoint = Endpoint::start(silo.clone(), &credentials(), Duration::from_secs(60)).await;
    let http = Client::default();
    let held = stalled_upload(sidecar.addr, "/v1/files/public/held.bin").await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let url = sidecar.url("/v1/files/public/second.txt");
    let reply = tokio::time::timeout(Duration::from_secs(20), http.put(&url, "text/plain", "second"))
        .await
        .expect("a waiting upload hung")
        .unwrap();
    assert_eq!(reply.status, 503, "{}", reply.text());
    assert_eq!(reply.json()["error"]["code"], "busy");
    assert!(reply.text().contains("max_uploads") || reply.text().contains("uploads under way"));
    assert_eq!(reply.header("retry-after"), Some("1"));

    let client = endpoint.client("CMSKEY", SECRET);
    let failed = tokio::time::timeout(
        Duration::from_secs(30),
        client
            .put_object()
            .bucket("public")
            .key("third.txt")
            .body(ByteStream::from_static(b"third"))
            .send(),
    )
    .await
    .expect("a waiting S3 upload hung")
    .expect_err("no place was free");
    assert_eq!(failed.code(), Some("SlowDown"), "{failed:?}");
    assert_eq!(failed.raw_response().map(|r| r.status().as_u16()), Some(503));

    // The node says it makes no progress while the place stays held.
    let ready = http.get(&sidecar.url("/readyz"), &[]).await.unwrap();
    assert_eq!(ready.status, 503, "{}", ready.text());
    assert!(ready.text().contains("max_uploads"), "{}", ready.text());

    // The held upload's client goes away: its place comes back, the node is
    // ready again by itself, and uploads go through.
    drop(held);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let reply = http.put(&url, "text/plain", "second").await.unwrap();
        if reply.status == 201 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still {}: {}",
            reply.status,
            reply.text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ready = http.get(&sidecar.url("/readyz"), &[]).await.unwrap();
    assert_eq!(ready.status, 200, "{}", ready.text());
}

/// Read what a server answers on `stream` until it closes the connection.
async fn answer(mut stream: tokio::net::TcpStream) -> String {
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut out))
        .await
        .expect("the server neither answered nor closed")
        .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_cap_are_answered_busy_and_closed() {
    let pipeline = format!("[limits]\nmax_connections = 4\n{GUARD_PIPELINE}");
    let t = TestSilo::new(&pipeline, &[]).await.unwrap();
    let silo = Arc::new(t.silo);
    let sidecar = Sidecar::start(silo.clone()).await;
    let endpoint = Endpoint::start(silo.clone(), &credentials(), Duration::from_secs(60)).await;
    for (addr, expect) in [(sidecar.addr, "\"busy\""), (endpoint.addr, "<Code>SlowDown</Code>")] {
        let mut idle = Vec::new();
        for _ in 0..4 {
            idle.push(tokio::net::TcpStream::connect(addr).await.unwrap());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut past = tokio::net::TcpStream::connect(addr).await.unwrap();
        past.write_all(b"GET /healthz HTTP/1.1\r\nhost: silo\r\n\r\n")
            .await
            .unwrap();
        let text = answer(past).await;
        assert!(text.starts_with("HTTP/1.1 503"), "{text}");
        assert!(text.contains(expect), "{text}");
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(length, body.len(), "{text}");

        // One idle connection closes: its place is free again.
        drop(idle.pop());
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut next = tokio::net::TcpStream::connect(addr).await.unwrap();
        next.write_all(b"GET /healthz HTTP/1.1\r\nhost: silo\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let text = answer(next).await;
        assert!(!text.starts_with("HTTP/1.1 503"), "{text}");
    }
}
