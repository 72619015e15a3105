//! Dynamic images (`tests/run bench --bench images`), in one run:
//! (1) a 4000x3000 JPEG resized to 400 pixels wide through Silo (the first
//!     request: decoded and resized by the sandboxed plugin, stored,
//!     served) against `vipsthumbnail` (Debian's libvips-tools) on the
//!     same file. Target: within 3x of libvips.
//! (2) the stored variant served again, 16 clients, against nginx serving
//!     a file of the same bytes. Target: at least 0.5x. Beside it, for
//!     the reader: the same bytes as a plain file (`/v1/files`), and
//!     `/healthz`, the sidecar's floor.
//! (3) the plugin's peak memory for that image: the smallest memory limit
//!     (of a ladder) under which the derivation succeeds.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use silo_tests::TestSilo;
use silo_tests::http::{Client, Sidecar};

const RUNS: usize = 5;

fn renderer(memory_mib: u64) -> String {
    format!(
        r#"
[[plugins]]
name = "image-styles"
component = "builtin:image-styles"
events = ["image/jpeg"]
styles = ["image"]
limits = {{ memory_mib = {memory_mib}, time_ms = 60000 }}
grants = [
    {{ volume = "public", access = ["read"] }},
    {{ volume = "public", prefix = "variants", access = ["read", "write", "delete"] }},
]
"#
    )
}

const VOLUMES: &str = "[volumes.public]\nbackend = \"local\"\npath = \"volumes/public\"\nvisibility = \"public\"\n";

async fn silo(memory_mib: u64) -> (Arc<silo_host::Silo>, tempfile::TempDir) {
    let t = TestSilo::with_volumes(&renderer(memory_mib), &[], VOLUMES)
        .await
        .unwrap();
    (Arc::new(t.silo), t.dir)
}

async fn put(silo: &silo_host::Silo, path: &str, bytes: &[u8]) {
    silo_tests::store(silo, "public", path, bytes.to_vec(), "image/jpeg").await;
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Requests per second for `url`, 16 clients, `total` requests.
async fn throughput(url: &str, total: usize) -> f64 {
    let client = Client::default();
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (client, url) = (client.clone(), url.to_owned());
        tasks.push(tokio::spawn(async move {
            for _ in 0..total / 16 {
                let reply = client.get(&url, &[]).await.unwrap();
                assert_eq!(reply.status.as_u16(), 200);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    total as f64 / start.elapsed().as_secs_f64()
}

#[tokio::main]
async fn main() {
    let original = silo_tests::jpeg(4000, 3000);
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("photo.jpg");
    std::fs::write(&file, &original).unwrap();
    eprintln!("original: 4000x3000 JPEG, {} bytes", original.len());

    // (1) Cold: the first request for a variant, a fresh original each run.
    let (node, _dir) = silo(512).await;
    let sidecar = Sidecar::start(node.clone()).await;
    let client = Client::default();
    let mut silo_times = Vec::new();
    let mut variant = Bytes::new();
    for run in 0..=RUNS {
        let path = format!("photo-{run}.jpg");
        put(&node, &path, &original).await;
        let start = Instant::now();
        let reply = client
            .get(&sidecar.url(&format!("/v1/images/public/{path}?w=400")), &[])
            .await
            .unwrap();
        let took = start.elapsed();
        assert_eq!(reply.status.as_u16(), 200, "{}", reply.text());
        let img = image::load_from_memory(&reply.body).unwrap();
        assert_eq!((img.width(), img.height()), (400, 300));
        variant = reply.body;
        // The first run warms the plugin's compiled code.
        if run > 0 {
            silo_times.push(took);
        }
    }
    let vips = std::env::var("SILO_BENCH_VIPSTHUMBNAIL").unwrap_or_else(|_| "vipsthumbnail".into());
    let mut vips_times = Vec::new();
    for run in 0..=RUNS {
        let out = work.path().join(format!("vips-{run}.jpg"));
        let start = Instant::now();
        let status = std::process::Command::new(&vips)
            .arg(&file)
            .args(["-s", "400x"])
            .arg("-o")
            .arg(&out)
            .status()
            .unwrap_or_else(|e| panic!("cannot run {vips} (tests/run bench installs libvips-tools): {e}"));
        let took = start.elapsed();
        assert!(status.success());
        if run > 0 {
            vips_times.push(took);
        }
    }
    let (silo_cold, vips_cold) = (median(silo_times), median(vips_times));

    // (2) Warm: the stored variant against nginx serving the same bytes.
    let cached_url = sidecar.url("/v1/images/public/photo-1.jpg?w=400");
    throughput(&cached_url, 400).await;
    let silo_rps = throughput(&cached_url, 4000).await;
    // The same bytes as a plain file, and the sidecar's cheapest route:
    // what the variant's lookup adds, and the floor under both.
    silo_tests::store(&node, "public", "plain.jpg", variant.to_vec(), "image/jpeg").await;
    let plain_url = sidecar.url("/v1/files/public/plain.jpg");
    throughput(&plain_url, 400).await;
    let plain_rps = throughput(&plain_url, 4000).await;
    let health_url = sidecar.url("/healthz");
    throughput(&health_url, 400).await;
    let health_rps = throughput(&health_url, 4000).await;
    let root = work.path().join("www");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("variant.jpg"), &variant).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let conf = work.path().join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "user root;\nworker_processes 1;\ndaemon off;\npid {dir}/nginx.pid;\nerror_log {dir}/error.log;\n\
             events {{ worker_connections 1024; }}\n\
             http {{ access_log off; client_body_temp_path {dir}/b; proxy_temp_path {dir}/p; fastcgi_temp_path {dir}/f;\n\
             uwsgi_temp_path {dir}/u; scgi_temp_path {dir}/s;\n\
             server {{ listen 127.0.0.1:{port}; root {root}; }} }}\n",
            dir = work.path().display(),
            root = root.display()
        ),
    )
    .unwrap();
    let nginx = std::env::var("SILO_TEST_NGINX").unwrap_or_else(|_| "nginx".into());
    let mut server = std::process::Command::new(nginx)
        .arg("-c")
        .arg(&conf)
        .arg("-e")
        .arg(work.path().join("error.log"))
        .spawn()
        .unwrap();
    let nginx_url = format!("http://127.0.0.1:{port}/variant.jpg");
    let started = Instant::now();
    while client.get(&nginx_url, &[]).await.map(|r| r.status.as_u16()).ok() != Some(200) {
        assert!(started.elapsed() < Duration::from_secs(10), "nginx did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    throughput(&nginx_url, 400).await;
    let nginx_rps = throughput(&nginx_url, 4000).await;
    let _ = server.kill();
    let _ = server.wait();

    // (3) The plugin's peak memory: the smallest limit that suffices.
    let ladder = [8u64, 12, 16, 24, 32, 48, 64, 96, 128, 160, 192, 256, 320, 384, 512];
    let mut enough = None;
    let mut below = None;
    for mib in ladder {
        let (node, _dir) = silo(mib).await;
        put(&node, "photo.jpg", &original).await;
        let args = silo_host::images::ImageArgs::parse([("w", "400")]).unwrap();
        match node.image("public", "photo.jpg", &args, false).await {
            Ok(_) => {
                enough = Some(mib);
                break;
            }
            Err(_) => below = Some(mib),
        }
    }

    println!();
    println!(
        "dynamic images: a 4000x3000 JPEG ({} bytes) to 400 pixels wide",
        original.len()
    );
    println!(
        "{:<44} {:>14} {:>14} {:>9} {:>9}",
        "measure", "Silo", "baseline", "ratio", "target"
    );
    println!(
        "{:<44} {:>11.1} ms {:>11.1} ms {:>8.2}x {:>9}",
        "first request vs vipsthumbnail (median)",
        silo_cold.as_secs_f64() * 1e3,
        vips_cold.as_secs_f64() * 1e3,
        silo_cold.as_secs_f64() / vips_cold.as_secs_f64(),
        "<= 3x"
    );
    println!(
        "{:<44} {:>12.0}/s {:>12.0}/s {:>8.2}x {:>9}",
        "stored variant vs nginx, 16 clients",
        silo_rps,
        nginx_rps,
        silo_rps / nginx_rps,
        ">= 0.5x"
    );
    println!(
        "{:<44} {:>12.0}/s {:>12.0}/s {:>8.2}x",
        "  the same bytes from /v1/files",
        plain_rps,
        nginx_rps,
        plain_rps / nginx_rps,
    );
    println!(
        "{:<44} {:>12.0}/s {:>12.0}/s {:>8.2}x",
        "  /healthz (no storage at all)",
        health_rps,
        nginx_rps,
        health_rps / nginx_rps,
    );
    println!(
        "plugin peak memory: {} (memory limit ladder {ladder:?} MiB)",
        match (below, enough) {
            (Some(b), Some(e)) => format!("over {b} MiB, at most {e} MiB"),
            (None, Some(e)) => format!("at most {e} MiB"),
            (_, None) => "over 512 MiB".into(),
        }
    );
}
