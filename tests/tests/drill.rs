//! The deployment drill, as sites run Silo: nginx (Debian's) balancing two
//! `silo serve` processes (a data_dir each) on one SeaweedFS bucket and one
//! PostgreSQL database, both the sidecar and the S3 endpoint through it.
//! Clients upload (small files through the sidecar, multipart uploads
//! through S3) and read while one node is killed with SIGKILL and started
//! again, and the other is stopped with SIGTERM and started again. Every
//! acknowledged upload must read back whole through nginx, and
//! `silo cache verify` must be clean on both nodes afterwards.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use hyper::StatusCode;
use silo_tests::cluster::{Cluster, DRAIN_SECS, content, multipart, s3_client};
use silo_tests::http::{Client, TOKEN};
use silo_tests::sha256_hex;

#[derive(Default)]
struct Tally {
    /// Acknowledged uploads: path (or key) and the SHA-256 sent.
    acknowledged: Mutex<Vec<(String, String)>>,
    multipart: Mutex<Vec<(String, String)>>,
    failed: AtomicU64,
    reads_ok: AtomicU64,
    reads_failed: AtomicU64,
}

/// An upload sent slowly to one node: its headers and half its body, then
/// (after `half_sent` fires and 700 ms) the rest; the response's status line.
async fn slow_upload(port: u16, path: &str, body: Vec<u8>, half_sent: tokio::sync::oneshot::Sender<()>) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let head = format!(
        "PUT /v1/files/public/{path} HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer {TOKEN}\r\n\
         content-type: application/octet-stream\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let (first, rest) = body.split_at(body.len() / 2);
    stream.write_all(first).await.unwrap();
    stream.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    half_sent.send(()).unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    stream.write_all(rest).await.unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    String::from_utf8_lossy(&answer).lines().next().unwrap_or("").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nodes_behind_nginx_survive_a_kill_and_a_drain_without_losing_an_upload() {
    let Cluster {
        nginx,
        mut a,
        mut b,
        dir: _dir,
    } = Cluster::start("drill").await;
    let client = Client::default();

    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = tokio::task::JoinSet::new();
    let auth = format!("Bearer {TOKEN}");
    for w in 0..6u64 {
        let (tally, stop, client, auth) = (tally.clone(), stop.clone(), client.clone(), auth.clone());
        let base = nginx.url("/v1/files/public/drill");
        clients.spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let body = content(w * 1_000_000 + i, 1000 + ((w * 7919 + i * 104_729) % 40_000) as usize);
                let path = format!("w{w}/{i}.bin");
                let url = format!("{base}/{path}");
                let sent = client
                    .send(
                        hyper::Method::PUT,
                        &url,
                        &[("authorization", &auth), ("content-type", "application/octet-stream")],
                        Bytes::from(body.clone()),
                    )
                    .await;
                match sent {
                    Ok(reply) if reply.status == StatusCode::CREATED => {
                        tally.acknowledged.lock().unwrap().push((path, sha256_hex(&body)));
                    }
                    _ => {
                        tally.failed.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
        });
    }
    for r in 0..2u64 {
        let (tally, stop, client) = (tally.clone(), stop.clone(), client.clone());
        let base = nginx.url("/v1/files/public/drill");
        clients.spawn(async move {
            let mut n = r;
            while !stop.load(Ordering::Relaxed) {
                n += 7;
                let pick = {
                    let acked = tally.acknowledged.lock().unwrap();
                    (!acked.is_empty()).then(|| acked[(n as usize) % acked.len()].clone())
                };
                let Some((path, sha)) = pick else {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                };
                match client.get(&format!("{base}/{path}"), &[]).await {
                    Ok(reply) if reply.status == StatusCode::OK => {
                        // A read answered 200 is the whole file, never a mix.
                        assert_eq!(sha256_hex(&reply.body), sha, "{path}");
                        tally.reads_ok.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {
                        tally.reads_failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        });
    }
    {
        let (tally, stop) = (tally.clone(), stop.clone());
        let s3 = s3_client(nginx.s3);
        clients.spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let key = format!("drill/multipart/{n}.bin");
                match multipart(&s3, &key, 77_000 + n).await {
                    Ok(sha) => tally.multipart.lock().unwrap().push((key, sha)),
                    Err(e) => {
                        eprintln!("multipart {key}: {e}");
                        tally.failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        });
    }

    // Node A dies mid-traffic and comes back.
    tokio::time::sleep(Duration::from_secs(3)).await;
    a.kill();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    a.start();
    a.ready(&client).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    // Node B is stopped as a deploy stops it, with an upload under way
    // straight to it (half its body sent): it drains, finishes that
    // upload, and exits 0.
    let slow_body = content(5, 200_000);
    let (half_sent, half) = tokio::sync::oneshot::channel();
    let slow = tokio::spawn(slow_upload(b.api, "drill/slow.bin", slow_body.clone(), half_sent));
    half.await.unwrap();
    let (code, drained) = b.terminate();
    assert_eq!(code, Some(0), "node b: {}", b.log_text());
    assert!(drained < Duration::from_secs(DRAIN_SECS), "{drained:?}");
    let status = slow.await.unwrap();
    assert!(
        status.starts_with("HTTP/1.1 201"),
        "the upload under way got {status:?}"
    );
    tally
        .acknowledged
        .lock()
        .unwrap()
        .push(("slow.bin".into(), sha256_hex(&slow_body)));
    b.start();
    b.ready(&client).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    while let Some(done) = clients.join_next().await {
        done.unwrap();
    }

    // Every acknowledged upload reads back whole through nginx.
    let acknowledged = tally.acknowledged.lock().unwrap().clone();
    let multiparts = tally.multipart.lock().unwrap().clone();
    let mut lost = Vec::new();
    for (path, sha) in &acknowledged {
        let reply = client
            .get(&nginx.url(&format!("/v1/files/public/drill/{path}")), &[])
            .await
            .unwrap();
        if reply.status != StatusCode::OK || sha256_hex(&reply.body) != *sha {
            lost.push(format!("{path}: {}", reply.status));
        }
    }
    let s3 = s3_client(nginx.s3);
    for (key, sha) in &multiparts {
        let got = s3.get_object().bucket("public").key(key).send().await;
        let same = match got {
            Ok(out) => sha256_hex(&out.body.collect().await.unwrap().into_bytes()) == *sha,
            Err(_) => false,
        };
        if !same {
            lost.push(key.clone());
        }
    }
    eprintln!(
        "drill: {} small uploads and {} multipart uploads acknowledged, {} attempts failed (not acknowledged); \
         read back {} of {}; lost {}; reads during the drill {} whole, {} failed; node b drained in {:.2} s",
        acknowledged.len(),
        multiparts.len(),
        tally.failed.load(Ordering::Relaxed),
        acknowledged.len() + multiparts.len() - lost.len(),
        acknowledged.len() + multiparts.len(),
        lost.len(),
        tally.reads_ok.load(Ordering::Relaxed),
        tally.reads_failed.load(Ordering::Relaxed),
        drained.as_secs_f64(),
    );
    assert!(lost.is_empty(), "acknowledged and lost: {lost:?}");
    assert!(
        acknowledged.len() > 100 && !multiparts.is_empty(),
        "the drill did too little"
    );
    // No object without its row, no row without its object, on either node.
    for node in [&a, &b] {
        let (code, out) = node.verify();
        assert_eq!(code, Some(0), "node {}: {out}", node.name);
        assert!(out.contains("public: clean"), "node {}: {out}", node.name);
    }
}
