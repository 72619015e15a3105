//! Limits end an invocation with a clear error, and the host and the next
//! invocation carry on.

use std::time::{Duration, Instant};

use silo_host::Status;
use silo_tests::{PROBE, TestSilo};

/// A pipeline where each probe mode handles its own content type, beside a
/// well-behaved `noop` for text/plain.
fn pipeline(limits: &str) -> String {
    let mut out = String::new();
    for mode in ["spin", "hog", "flood", "noop"] {
        let event = if mode == "noop" {
            "text/plain".to_owned()
        } else {
            format!("application/x-{mode}")
        };
        out.push_str(&format!(
            r#"
[[plugins]]
name = "{mode}"
component = "probe.wasm"
sha256 = "{{sha256:probe.wasm}}"
events = ["{event}"]
settings = {{ mode = "{mode}" }}
limits = {{ {limits} }}
grants = [{{ volume = "public", access = ["read", "write", "delete"] }}]
"#
        ));
    }
    out
}

async fn run(t: &TestSilo, mode: &str) -> anyhow::Result<silo_host::UploadReport> {
    t.upload(
        &format!("public/{mode}.bin"),
        b"payload",
        Some(&format!("application/x-{mode}")),
    )
    .await
}

async fn healthy(t: &TestSilo) -> anyhow::Result<()> {
    let report = t.upload("public/ok.txt", b"fine", None).await?;
    assert_eq!(report.status, Status::Accepted, "{report:#?}");
    Ok(())
}

#[tokio::test]
async fn an_infinite_loop_ends_at_the_time_limit() -> anyhow::Result<()> {
    let t = TestSilo::new(&pipeline("time_ms = 300"), &[("probe.wasm", PROBE)]).await?;
    for _ in 0..2 {
        let started = Instant::now();
        let report = run(&t, "spin").await?;
        let elapsed = started.elapsed();
        assert_eq!(report.status, Status::Error);
        let error = report.error.unwrap();
        assert_eq!(error.code, "time-limit", "{}", error.message);
        assert!(error.message.contains("300 ms"), "{}", error.message);
        // Generous: this checks that the loop is stopped, not the machine's speed.
        assert!(elapsed < Duration::from_secs(3), "took {elapsed:?}");
        healthy(&t).await?;
    }
    Ok(())
}

#[tokio::test]
async fn a_memory_hog_fails_cleanly_at_its_limit() -> anyhow::Result<()> {
    let t = TestSilo::new(&pipeline("memory_mib = 32"), &[("probe.wasm", PROBE)]).await?;
    let report = run(&t, "hog").await?;
    assert_eq!(report.status, Status::Error);
    let error = report.error.unwrap();
    assert_eq!(error.code, "memory-limit", "{}", error.message);
    assert!(error.message.contains("32 MiB"));
    healthy(&t).await
}

#[tokio::test]
async fn write_quotas_end_a_flood_and_its_files_are_removed() -> anyhow::Result<()> {
    let t = TestSilo::new(&pipeline("objects_written = 5"), &[("probe.wasm", PROBE)]).await?;
    let report = run(&t, "flood").await?;
    assert_eq!(report.status, Status::Error, "{report:#?}");
    assert_eq!(report.error.unwrap().code, "quota-exceeded");
    assert_eq!(t.files_on_disk("public"), Vec::<(String, u64)>::new());
    assert!(t.silo.storage().cache().all_files("public").await?.is_empty());
    healthy(&t).await
}

#[tokio::test]
async fn concurrent_invocations_are_isolated() -> anyhow::Result<()> {
    // The time limit leaves the hogs room to reach their memory limit even
    // when the other tests of this file load both cores (at 500 ms, one
    // full run out of many saw a hog stopped by time first).
    let t = TestSilo::new(&pipeline("time_ms = 2000, memory_mib = 32"), &[("probe.wasm", PROBE)]).await?;
    let t = &t;
    let mut jobs = Vec::new();
    for i in 0..24 {
        jobs.push(async move {
            match i % 3 {
                0 => run(t, "spin").await.map(|r| r.error.map(|e| e.code)),
                1 => run(t, "hog").await.map(|r| r.error.map(|e| e.code)),
                _ => t
                    .upload(&format!("public/ok-{i}.txt"), format!("fine {i}").as_bytes(), None)
                    .await
                    .map(|r| {
                        assert_eq!(r.status, Status::Accepted, "job {i}: {r:?}");
                        r.error.map(|e| e.code)
                    }),
            }
        });
    }
    let results = futures::future::join_all(jobs).await;
    for (i, r) in results.into_iter().enumerate() {
        let expected = match i % 3 {
            0 => Some("time-limit".to_owned()),
            1 => Some("memory-limit".to_owned()),
            _ => None,
        };
        assert_eq!(r?, expected, "job {i}");
    }
    // Each good upload is stored whole, with its own bytes; nothing of the
    // hogs and spinners is.
    let mut want: Vec<(String, u64)> = (0..24)
        .filter(|i| i % 3 == 2)
        .map(|i| (format!("ok-{i}.txt"), format!("fine {i}").len() as u64))
        .collect();
    want.sort();
    assert_eq!(t.files_on_disk("public"), want);
    for (name, _) in &want {
        let i = name.trim_start_matches("ok-").trim_end_matches(".txt");
        assert_eq!(
            std::fs::read(t.volume_dir("public").join(name))?,
            format!("fine {i}").as_bytes()
        );
    }
    healthy(t).await
}

#[tokio::test]
async fn invocations_beyond_the_pool_wait_for_a_slot() -> anyhow::Result<()> {
    // Spinning invocations stay alive until their time limit, so more of
    // them than the pool has slots are in flight at once.
    // The limit outlasts one round of starting them all.
    let t = TestSilo::new(&pipeline("time_ms = 1000"), &[("probe.wasm", PROBE)]).await?;
    let t = &t;
    let count = silo_host::runtime::MAX_CONCURRENT_INSTANCES as usize + 100;
    let jobs = (0..count).map(|_| async move { run(t, "spin").await.map(|r| r.error.map(|e| e.code)) });
    for (i, result) in futures::future::join_all(jobs).await.into_iter().enumerate() {
        assert_eq!(result?.as_deref(), Some("time-limit"), "job {i}");
    }
    Ok(())
}
