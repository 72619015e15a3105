//! What the audit trail costs (`tests/run bench --bench audit`): uploads
//! per second through the sidecar (no plugins, 16 clients, 5.4 KB each,
//! a local volume so that the metadata engine's share is as large as it
//! gets) with the audit on and off, on SQLite and on the PostgreSQL
//! `tests/run` starts. The two settings alternate over several rounds and
//! each reports its median. Target: at most 10% slower with the audit on.

use silo_tests::http::Sidecar;
use silo_tests::{TestSilo, pg};
use std::sync::Arc;

const UPLOADS: usize = 2000;
const ROUNDS: usize = 5;

async fn node(metadata: &str, audit: bool) -> Arc<silo_host::Silo> {
    let volumes =
        format!("{metadata}\n[audit]\nenabled = {audit}\n\n[volumes.v]\nbackend = \"local\"\npath = \"volumes/v\"\n");
    let t = TestSilo::with_volumes("", &[], &volumes).await.expect("a node");
    // The directory stays for the run.
    std::mem::forget(t.dir);
    Arc::new(t.silo)
}

async fn uploads_per_second(sidecar: &Sidecar, round: usize) -> f64 {
    silo_tests::http::uploads_per_second(&sidecar.url(&format!("/v1/files/v/round-{round}")), UPLOADS).await
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::main]
async fn main() {
    let url_file = tempfile::NamedTempFile::new().unwrap();
    let mut rows = Vec::new();
    for engine in ["SQLite", "PostgreSQL"] {
        let metadata = match engine {
            "SQLite" => String::new(),
            _ => {
                std::fs::write(url_file.path(), pg::database("bench_audit").await).unwrap();
                format!(
                    "[metadata]\nbackend = \"postgres\"\nurl_file = \"{}\"\n",
                    url_file.path().display()
                )
            }
        };
        let off = Sidecar::start(node(&metadata, false).await).await;
        let on = Sidecar::start(node(&metadata, true).await).await;
        // A round of each to warm up, then alternating rounds.
        uploads_per_second(&off, 0).await;
        uploads_per_second(&on, 0).await;
        let (mut without, mut with) = (Vec::new(), Vec::new());
        for round in 1..=ROUNDS {
            without.push(uploads_per_second(&off, round).await);
            with.push(uploads_per_second(&on, round).await);
        }
        let (without, with) = (median(without), median(with));
        eprintln!("{engine}: {without:.0} uploads/s without the audit, {with:.0} with it");
        rows.push((engine, without, with));
    }
    println!();
    println!(
        "uploads per second through the sidecar (16 clients, {UPLOADS} x 5.4 KB per round, median of {ROUNDS} rounds each)"
    );
    println!(
        "{:<12} {:>14} {:>14} {:>10} {:>8}",
        "engine", "audit off", "audit on", "on/off", "target"
    );
    for (engine, without, with) in rows {
        println!(
            "{engine:<12} {without:>14.0} {with:>14.0} {:>9.3}x {:>8}",
            with / without,
            ">= 0.9x"
        );
    }
}
