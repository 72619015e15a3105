//! Several `silo serve` processes on one bucket and one PostgreSQL
//! database, behind Debian's nginx: the deployment drill's and the soak
//! benchmark's cluster.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use bytes::Bytes;
use hyper::StatusCode;

use crate::http::{ADMIN_TOKEN, Client, TOKEN};
use crate::sha256_hex;

/// The S3 key pair of the cluster's principal.
pub const KEY: &str = "DRILLKEY";
pub const SECRET: &str = "drill-secret-0123456789";
/// How long a stopping node lets requests in flight finish.
pub const DRAIN_SECS: u64 = 20;

/// A loopback port free now, for a server another process will start.
///
/// Taken below Linux's ephemeral range (32768-60999): a port the kernel
/// hands out for `bind(0)` may become the source port of any outgoing
/// connection before the server binds it ("address already in use").
/// Each call in this process gets a different port.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let start = std::process::id().wrapping_mul(7919);
    for _ in 0..SPAN {
        let port = (FIRST + start.wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed)) % SPAN) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port between {FIRST} and {}", FIRST + SPAN);
}

/// The `silo` binary `tests/run` built: the debug one for the tests, the
/// release one for the benchmarks.
pub fn silo_bin() -> String {
    std::env::var("SILO_TEST_SILO")
        .or_else(|_| std::env::var("SILO_BENCH_SILO"))
        .expect("SILO_TEST_SILO is not set: run the tests with tests/run, which builds the silo binary")
}

/// One `silo serve` process and its config.
pub struct Node {
    pub name: &'static str,
    pub config: PathBuf,
    pub log: PathBuf,
    pub api: u16,
    pub child: Option<Child>,
}

impl Node {
    pub fn new(name: &'static str, dir: &Path, shared: &str) -> Node {
        let home = dir.join(name);
        std::fs::create_dir_all(&home).unwrap();
        let api = free_port();
        let text = format!(
            "data_dir = \"state\"\nplugin_dir = \"plugins\"\ncompile_cache = \"{cache}\"\nnode = \"{name}\"\n\n\
             [serve]\nlisten = \"127.0.0.1:{api}\"\ndrain_timeout_secs = {DRAIN_SECS}\ncredentials_file = \"{creds}\"\n\n\
             [s3_api]\nlisten = \"127.0.0.1:{s3}\"\n\n{shared}",
            cache = crate::shared_compile_cache().display(),
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

    pub fn s3_port(&self) -> u16 {
        let text = std::fs::read_to_string(&self.config).unwrap();
        let line = text.lines().skip_while(|l| *l != "[s3_api]").nth(1).unwrap();
        line.rsplit(':').next().unwrap().trim_end_matches('"').parse().unwrap()
    }

    pub fn start(&mut self) {
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

    pub async fn ready(&mut self, client: &Client) {
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

    pub fn kill(&mut self) {
        let mut child = self.child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// SIGTERM, then wait: its exit code and how long it took.
    pub fn terminate(&mut self) -> (Option<i32>, Duration) {
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

    /// The process id of the running node.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the node runs").id()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `silo cache verify` on this node's config: exit code and output.
    pub fn verify(&self) -> (Option<i32>, String) {
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
pub struct Nginx {
    pub child: Child,
    pub api: u16,
    pub s3: u16,
    pub dir: PathBuf,
}

impl Nginx {
    pub fn start(dir: &Path, nodes: &[&Node]) -> Nginx {
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

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.api)
    }

    pub fn errors(&self) -> String {
        std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM makes the master stop its workers; a SIGKILL would reach
        // the master only and leave the workers running after the test.
        let stopped = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        if !stopped {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

pub fn content(seed: u64, len: usize) -> Vec<u8> {
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

pub fn s3_client(port: u16) -> aws_sdk_s3::Client {
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
pub async fn multipart(s3: &aws_sdk_s3::Client, key: &str, seed: u64) -> Result<String, String> {
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

/// Two nodes, `a` and `b`, on a new bucket (volume `public`, under the
/// prefix `site`) and a new PostgreSQL database, judged by upload-guard,
/// behind nginx; the principal `cms` ([`KEY`], [`SECRET`]) may do
/// everything on `public`.
pub struct Cluster {
    pub nginx: Nginx,
    pub a: Node,
    pub b: Node,
    /// Removed last: the nodes' homes are inside.
    pub dir: tempfile::TempDir,
}

impl Cluster {
    pub async fn start(hint: &str) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let bucket = crate::s3::bucket(hint).await;
        let url_file = dir.path().join("database-url");
        std::fs::write(&url_file, crate::pg::database(hint).await).unwrap();
        std::fs::write(
            dir.path().join("credentials.toml"),
            crate::s3api::principal(
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
            crate::s3::volume_toml("public", &bucket, "site", "visibility = \"public\""),
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
        Cluster { nginx, a, b, dir }
    }
}
