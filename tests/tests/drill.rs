//! The deployment drill, as sites run Silo: nginx (Debian's) balancing two
//! `silo serve` processes (a data_dir each) on one SeaweedFS bucket and one
//! PostgreSQL database, both the sidecar and the S3 endpoint through it.
//! Clients upload (small files through the sidecar, multipart uploads
//! through S3) and read while one node is killed with SIGKILL and started
//! again, and the other is stopped with SIGTERM and started again. Every
//! acknowledged upload must read back whole through nginx, and
//! `silo cache verify` must be clean on both nodes afterwards.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use bytes::Bytes;
use hyper::StatusCode;
use silo_tests::http::{ADMIN_TOKEN, Client, TOKEN};
use silo_tests::s3api::principal;
use silo_tests::{pg, s3, sha256_hex};

const KEY: &str = "DRILLKEY";
const SECRET: &str = "drill-secret-0123456789";
/// How long a stopping node lets requests in flight finish.
const DRAIN_SECS: u64 = 20;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn silo_bin() -> String {
    std::env::var("SILO_TEST_SILO")
        .expect("SILO_TEST_SILO is not set: run the tests with tests/run, which builds the silo binary")
}

/// One `silo serve` process and its config.
struct Node {
    name: &'static str,
    config: PathBuf,
    log: PathBuf,
    api: u16,
    child: Option<Child>,
}

impl Node {
    fn new(name: &'static str, dir: &Path, shared: &str) -> Node {
        let home = dir.join(name);
        std::fs::create_dir_all(&home).unwrap();
        let api = free_port();
        let text = format!(
            "data_dir = \"state\"\nplugin_dir = \"plugins\"\ncompile_cache = \"{cache}\"\nnode = \"{name}\"\n\n\
             [serve]\nlisten = \"127.0.0.1:{api}\"\ndrain_timeout_secs = {DRAIN_SECS}\ncredentials_file = \"{creds}\"\n\n\
             [s3_api]\nlisten = \"127.0.0.1:{s3}\"\n\n{shared}",
            cache = silo_tests::shared_compile_cache().display(),
            creds = dir.join("credentials.toml").display(),
            s3 = free_port(),
        );
        let config = home.join("silo.toml");
        std::fs::write(&config, text).unwrap();
        Node {
            name,
            log: home.join("silo.log"),
            config,
            api,
            child: None,
        }
    }

    fn s3_port(&self) -> u16 {
        let text = std::fs::read_to_string(&self.config).unwrap();
        let line = text.lines().skip_while(|l| *l != "[s3_api]").nth(1).unwrap();
        line.rsplit(':').next().unwrap().trim_end_matches('"').parse().unwrap()
    }

    fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(silo_bin())
            .arg("--config")
            .arg(&self.config)
            .arg("serve")
            .env("SILO_TOKEN", TOKEN)
            .env("SILO_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("SILO_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    async fn ready(&mut self, client: &Client) {
        let url = format!("http://127.0.0.1:{}/readyz", self.api);
        let started = Instant::now();
        loop {
            if let Ok(reply) = client.get(&url, &[]).await
                && reply.status == StatusCode::OK
            {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("node {} exited ({status}): {}", self.name, self.log_text());
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "node {} not ready: {}",
                self.name,
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn kill(&mut self) {
        let mut child = self.child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// SIGTERM, then wait: its exit code and how long it took.
    fn terminate(&mut self) -> (Option<i32>, Duration) {
        let mut child = self.child.take().unwrap();
        let started = Instant::now();
        let sent = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        let status = child.wait().unwrap();
        (status.code(), started.elapsed())
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `silo cache verify` on this node's config: exit code and output.
    fn verify(&self) -> (Option<i32>, String) {
        let out = Command::new(silo_bin())
            .arg("--config")
            .arg(&self.config)
            .args(["cache", "verify"])
            .output()
            .unwrap();
        (
            out.status.code(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// nginx in front of both nodes' sidecars and S3 endpoints: the
/// configuration README.md gives, with these ports and paths.
struct Nginx {
    child: Child,
    api: u16,
    s3: u16,
    dir: PathBuf,
}

impl Nginx {
    fn start(dir: &Path, nodes: &[&Node]) -> Nginx {
        let nginx = std::env::var("SILO_TEST_NGINX")
            .expect("SILO_TEST_NGINX is not set: run the tests with tests/run, which installs nginx");
        let dir = dir.join("nginx");
        std::fs::create_dir_all(&dir).unwrap();
        let (api, s3) = (free_port(), free_port());
        let servers = |port: &dyn Fn(&Node) -> u16| {
            nodes
                .iter()
                .map(|n| format!("        server 127.0.0.1:{} max_fails=1 fail_timeout=2s;\n", port(n)))
                .collect::<String>()
        };
        let conf = format!(
            r#"user root;
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;

    # Uploads of any size; Silo enforces each volume's max_upload_mib.
    client_max_body_size 0;
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    # S3 signatures cover the Host header: pass it as the client sent it.
    proxy_set_header Host $http_host;
    proxy_read_timeout 300s;
    # A node that refuses connections (stopped, draining) or answers 502/503
    # is skipped; PUTs are idempotent, so nginx may send them on.
    proxy_next_upstream error timeout http_502 http_503;
    proxy_next_upstream_tries 2;

    upstream silo_api {{
{api_servers}        keepalive 16;
    }}
    upstream silo_s3 {{
{s3_servers}        keepalive 16;
    }}
    server {{
        listen 127.0.0.1:{api};
        location / {{ proxy_pass http://silo_api; }}
    }}
    server {{
        listen 127.0.0.1:{s3};
        location / {{ proxy_pass http://silo_s3; }}
    }}
}}
"#,
            dir = dir.display(),
            api_servers = servers(&|n| n.api),
            s3_servers = servers(&|n| n.s3_port()),
        );
        let path = dir.join("nginx.conf");
        std::fs::write(&path, conf).unwrap();
        let child = Command::new(nginx)
            .arg("-c")
            .arg(&path)
            .arg("-p")
            .arg(&dir)
            .arg("-e")
            .arg(dir.join("error.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Nginx { child, api, s3, dir }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.api)
    }

    fn errors(&self) -> String {
        std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn content(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[derive(Default)]
struct Tally {
    /// Acknowledged uploads: path (or key) and the SHA-256 sent.
    acknowledged: Mutex<Vec<(String, String)>>,
    multipart: Mutex<Vec<(String, String)>>,
    failed: AtomicU64,
    reads_ok: AtomicU64,
    reads_failed: AtomicU64,
}

fn s3_client(port: u16) -> aws_sdk_s3::Client {
    use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
    let config = aws_sdk_s3::config::Builder::new()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(format!("http://127.0.0.1:{port}"))
        .region(Region::new("us-east-1"))
        .force_path_style(true)
        .credentials_provider(Credentials::new(KEY, SECRET, None, None, "drill"))
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

/// One multipart upload of 11 MiB (5 + 5 + 1): its SHA-256 if completed.
async fn multipart(s3: &aws_sdk_s3::Client, key: &str, seed: u64) -> Result<String, String> {
    let body = content(seed, 11 << 20);
    let created = s3
        .create_multipart_upload()
        .bucket("public")
        .key(key)
        .content_type("application/octet-stream")
        .send()
        .await
        .map_err(|e| format!("create: {e:?}"))?;
    let id = created.upload_id().unwrap().to_owned();
    let mut parts = Vec::new();
    for (n, chunk) in body.chunks(5 << 20).enumerate() {
        let number = n as i32 + 1;
        let part = s3
            .upload_part()
            .bucket("public")
            .key(key)
            .upload_id(&id)
            .part_number(number)
            .body(ByteStream::from(Bytes::copy_from_slice(chunk)))
            .send()
            .await
            .map_err(|e| format!("part {number}: {e:?}"))?;
        parts.push(
            CompletedPart::builder()
                .part_number(number)
                .e_tag(part.e_tag().unwrap())
                .build(),
        );
    }
    s3.complete_multipart_upload()
        .bucket("public")
        .key(key)
        .upload_id(&id)
        .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
        .send()
        .await
        .map_err(|e| format!("complete: {e:?}"))?;
    Ok(sha256_hex(&body))
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
    let dir = tempfile::tempdir().unwrap();
    let bucket = s3::bucket("drill").await;
    let url_file = dir.path().join("database-url");
    std::fs::write(&url_file, pg::database("drill").await).unwrap();
    std::fs::write(
        dir.path().join("credentials.toml"),
        principal(
            "cms",
            KEY,
            SECRET,
            r#"[{ volume = "public", access = ["read", "write", "delete"] }]"#,
        ),
    )
    .unwrap();
    let shared = format!(
        "[metadata]\nbackend = \"postgres\"\nurl_file = \"{}\"\n\n{}\n\
         [[plugins]]\nname = \"upload-guard\"\ncomponent = \"builtin:upload-guard\"\n\
         settings = {{ max_bytes = 50000000 }}\ngrants = [{{ volume = \"public\", access = [\"read\"] }}]\n",
        url_file.display(),
        s3::volume_toml("public", &bucket, "site", "visibility = \"public\""),
    );
    let mut a = Node::new("a", dir.path(), &shared);
    let mut b = Node::new("b", dir.path(), &shared);
    let client = Client::default();
    a.start();
    b.start();
    a.ready(&client).await;
    b.ready(&client).await;
    let nginx = Nginx::start(dir.path(), &[&a, &b]);
    let started = Instant::now();
    while client.get(&nginx.url("/readyz"), &[]).await.ok().map(|r| r.status) != Some(StatusCode::OK) {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "nginx did not come up: {}",
            nginx.errors()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

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
