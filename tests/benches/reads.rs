//! Small public-file reads: Silo's sidecar on a local volume against nginx
//! serving the same directory, both measured with wrk in one run (`tests/run
//! bench --bench reads`; tests/run installs nginx and wrk from Debian's
//! packages where missing). 5.4 kB files, 16 connections, 10 s each.

use std::process::{Command, Stdio};
use std::sync::Arc;

use bytes::Bytes;
use silo_host::store::PutOptions;
use silo_tests::TestSilo;
use silo_tests::http::Sidecar;

const SECONDS: u32 = 10;

/// wrk against `url`: requests per second, p50 and p99 latency.
fn wrk(url: &str) -> (f64, String, String) {
    let out = Command::new("wrk")
        .args(["-t2", "-c16", &format!("-d{SECONDS}s"), "--latency", url])
        .output()
        .expect("wrk must be installed (tests/run bench installs it)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(!text.contains("Non-2xx"), "{url} answered errors:\n{text}");
    let field = |prefix: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(prefix).map(|v| v.trim().to_owned()))
            .unwrap_or_else(|| panic!("no {prefix} in wrk's output:\n{text}"))
    };
    (field("Requests/sec:").parse().unwrap(), field("50%"), field("99%"))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::main]
async fn main() {
    let t = TestSilo::new("", &[]).await.expect("a Silo on local volumes");
    let storage = t.silo.storage().clone();
    let host = storage.host_session();
    let body = Bytes::from(vec![b's'; 5400]);
    for i in 0..100 {
        let loc = storage.location("public", &format!("small/{i}.txt")).unwrap();
        host.write(&loc, body.clone(), PutOptions::default()).await.unwrap();
    }
    let root = t.volume_dir("public");
    let conf_dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let conf = conf_dir.path().join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "worker_processes 1;\ndaemon off;\npid {pid};\nerror_log stderr;\nevents {{ worker_connections 1024; }}\n\
             http {{ access_log off; sendfile on; tcp_nodelay on;\n  server {{ listen 127.0.0.1:{port}; root {root}; }} }}\n",
            pid = conf_dir.path().join("nginx.pid").display(),
            root = root.display()
        ),
    )
    .unwrap();
    let mut nginx = Command::new("nginx")
        .args([
            "-p",
            &conf_dir.path().display().to_string(),
            "-c",
            &conf.display().to_string(),
        ])
        .stderr(Stdio::null())
        .spawn()
        .expect("nginx must be installed (tests/run bench installs it)");
    let sidecar = Sidecar::start(Arc::new(t.silo)).await;
    std::thread::sleep(std::time::Duration::from_millis(300));

    // wrk blocks; the sidecar's runtime keeps serving on its own threads.
    let silo_url = sidecar.url("/v1/files/public/small/7.txt");
    let nginx_url = format!("http://127.0.0.1:{port}/small/7.txt");
    let (silo, nginx_result) = tokio::task::spawn_blocking(move || (wrk(&silo_url), wrk(&nginx_url)))
        .await
        .unwrap();
    // SIGKILL would reach the master only and leave its worker running
    // (and taking CPU from whatever is measured next): stop it as nginx does.
    let stopped = Command::new("nginx")
        .args([
            "-p",
            &conf_dir.path().display().to_string(),
            "-c",
            &conf.display().to_string(),
            "-s",
            "stop",
        ])
        .stderr(Stdio::null())
        .status();
    if !stopped.is_ok_and(|s| s.success()) {
        let _ = nginx.kill();
    }
    let _ = nginx.wait();
    println!("\nSmall public-file reads (5.4 kB, local volume, 16 connections, wrk, {SECONDS} s each)\n");
    println!("| server | requests/s | p50 | p99 |");
    println!("|---|---|---|---|");
    println!("| Silo sidecar | {:.0} | {} | {} |", silo.0, silo.1, silo.2);
    println!(
        "| nginx, one worker | {:.0} | {} | {} |",
        nginx_result.0, nginx_result.1, nginx_result.2
    );
    println!(
        "\nratio: {:.2}x nginx's requests/s (target >= 0.5x)",
        silo.0 / nginx_result.0
    );
}
