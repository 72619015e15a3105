//! Hostile plugins and hostile uploads: write-xor-execute, path escapes,
//! stack exhaustion, oversized writes, writers opened at once to get round
//! the quotas, floods of streams, log output and oversized strings, and
//! clients that leave mid-upload. Each attempt ends with the expected
//! error, nothing outside the grant is touched, and the host goes on
//! serving.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use silo_host::pipeline::POLICY;
use silo_host::store::PutOptions;
use silo_host::{Status, StorageError};
use silo_tests::http::{Client, Sidecar};
use silo_tests::{EXAMPLE_PIPELINE, PROBE, TestSilo, jpeg, probe_stage, s3};

fn probe(settings: &str, grants: &str, limits: &str) -> String {
    format!(
        r#"
[[plugins]]
name = "probe"
component = "probe.wasm"
sha256 = "{{sha256:probe.wasm}}"
settings = {{ {settings} }}
limits = {{ {limits} }}
grants = [{grants}]
"#
    )
}

const PUBLIC_RW: &str = r#"{ volume = "public", access = ["read", "write", "delete"] }"#;

#[tokio::test]
async fn plugins_cannot_store_what_a_server_would_run_or_a_browser_render() -> anyhow::Result<()> {
    for (path, bytes, content_type, expected) in [
        (
            "shell.php",
            "text",
            "text/plain",
            "has the server-executable extension '.php'",
        ),
        ("x.php.jpg", "text", "image/jpeg", "extension '.php'"),
        ("up/SHELL.PHTML", "text", "text/plain", "extension '.phtml'"),
        (".htaccess", "text", "text/plain", "configures a web server"),
        ("tool.bin", "elf", "application/octet-stream", "an ELF executable"),
        ("tool.dylib", "macho", "application/octet-stream", "a Mach-O executable"),
        ("photo.jpg", "php", "image/jpeg", "contains PHP code"),
        ("notes.txt", "php", "text/plain", "contains PHP code"),
        (
            "photo.jpg",
            "html",
            "image/jpeg",
            "declared image/jpeg but its content is text/html",
        ),
    ] {
        let settings = format!(
            r#"mode = "write-as", volume = "public", path = "{path}", bytes = "{bytes}", content_type = "{content_type}""#
        );
        let t = TestSilo::new(&probe(&settings, PUBLIC_RW, ""), &[("probe.wasm", PROBE)]).await?;
        let report = t.upload("public/trigger.txt", b"go", None).await?;
        let reason = report.reason.unwrap_or_default();
        assert!(reason.starts_with("error Error::Forbidden"), "{path}: {reason}");
        assert!(reason.contains(expected), "{path}: {reason}");
        assert!(t.files_on_disk("public").is_empty(), "{path}: something was stored");
    }
    // The same content under an honest name and type is stored.
    let settings =
        r#"mode = "write-as", volume = "public", path = "page.html", bytes = "html", content_type = "text/html""#;
    let t = TestSilo::new(&probe(settings, PUBLIC_RW, ""), &[("probe.wasm", PROBE)]).await?;
    let report = t.upload("public/trigger.txt", b"go", None).await?;
    assert_eq!(report.reason.as_deref(), Some("ok"));
    Ok(())
}

#[tokio::test]
async fn uploads_a_server_would_run_are_refused_before_any_plugin_runs() -> anyhow::Result<()> {
    let t = TestSilo::new(EXAMPLE_PIPELINE, &[]).await?;
    let mut elf = b"\x7fELF\x02\x01\x01\0".to_vec();
    elf.resize(4096, 0);
    let mut macho = vec![0xcf, 0xfa, 0xed, 0xfe, 0x07, 0, 0, 0x01, 0x03, 0, 0, 0, 0x02, 0, 0, 0];
    macho.resize(4096, 0);
    let mut php_jpeg = jpeg(32, 32);
    php_jpeg.splice(20..20, b"<?php eval($_POST['x']); ?>".iter().copied());
    for (target, bytes, content_type, expected) in [
        ("public/shell.php", b"<p>hi</p>".to_vec(), None, "extension '.php'"),
        (
            "public/avatar.php.png",
            b"hi".to_vec(),
            Some("image/png"),
            "extension '.php'",
        ),
        (
            "public/uploads/.htaccess",
            b"AddHandler php-script .jpg".to_vec(),
            None,
            "configures a web server",
        ),
        ("public/tool", elf, Some("application/octet-stream"), "ELF executable"),
        (
            "public/tool-mac",
            macho,
            Some("application/octet-stream"),
            "Mach-O executable",
        ),
        ("public/cat.jpg", php_jpeg, Some("image/jpeg"), "PHP code"),
        (
            "public/cat.jpg",
            b"<svg onload=alert(1)>".to_vec(),
            Some("image/jpeg"),
            "image/svg+xml",
        ),
    ] {
        let report = t.upload(target, &bytes, content_type).await?;
        assert_eq!(report.status, Status::Rejected, "{target}");
        assert_eq!(report.rejected_by.as_deref(), Some(POLICY), "{target}");
        assert!(
            report.reason.as_deref().unwrap_or("").contains(expected),
            "{target}: {report:?}"
        );
        assert!(report.plugins.is_empty(), "{target}: a plugin ran");
        assert!(t.files_on_disk("public").is_empty(), "{target}: something was stored");
    }
    // The host's own writes obey the same policy.
    let host = t.silo.storage().host_session();
    let err = host
        .write(
            &t.silo.storage().location("public", "a/b.cgi")?,
            Bytes::from_static(b"x"),
            PutOptions::default(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StorageError::Forbidden(_)), "{err}");
    Ok(())
}

#[tokio::test]
async fn active_content_on_s3_is_stored_to_be_served_as_an_attachment() -> anyhow::Result<()> {
    let (t, bucket) = TestSilo::on_s3("", &[], "active").await?;
    let storage = t.silo.storage();
    let host = storage.host_session();
    for (path, content_type) in [
        ("page.html", "text/html"),
        ("logo.svg", "image/svg+xml"),
        ("photo.jpg", "image/jpeg"),
    ] {
        let bytes: &[u8] = if content_type == "image/jpeg" {
            &[0xff, 0xd8, 0xff, 0xe0]
        } else {
            b"<svg></svg>"
        };
        let options = PutOptions {
            content_type: content_type.into(),
            ..Default::default()
        };
        host.write(
            &storage.location("public", path)?,
            Bytes::copy_from_slice(bytes),
            options,
        )
        .await?;
        let head = s3::client()
            .head_object()
            .bucket(&bucket)
            .key(format!("public/{path}"))
            .send()
            .await?;
        let expected = (content_type != "image/jpeg").then_some("attachment");
        assert_eq!(head.content_disposition(), expected, "{path}");
    }
    Ok(())
}

#[tokio::test]
async fn path_escapes_end_inside_the_grant_or_with_an_error() -> anyhow::Result<()> {
    let long = format!("up/{}", "a".repeat(1022));
    let attempts = [
        // Outside the grant's prefix the answer is access-denied before the
        // path is even parsed; inside it, the path rules refuse.
        ("../private/secret.txt", "access-denied/access-denied"),
        ("/etc/passwd", "access-denied/access-denied"),
        ("up\\\\..\\\\..\\\\private\\\\secret.txt", "access-denied/access-denied"),
        ("up/../private/secret.txt", "invalid-path/invalid-path"),
        ("up/x\\\\..\\\\..\\\\private", "invalid-path/invalid-path"),
        ("up/a\\u0000b", "invalid-path/invalid-path"),
        (long.as_str(), "invalid-path/invalid-path"),
        ("%2e%2e/private/secret.txt", "access-denied/access-denied"),
        ("private/secret.txt", "access-denied/access-denied"),
        ("upx/y.txt", "access-denied/access-denied"),
        // Literal names inside the grant: stored there, escaping nothing.
        ("up/%2e%2e/secret.txt", "not-found/ok"),
        ("up/\u{2024}\u{2024}/secret.txt", "not-found/ok"),
        ("up/e\u{301}.txt", "not-found/ok"),
        ("up/\u{e9}.txt", "not-found/ok"),
    ];
    let paths: Vec<&str> = attempts.iter().map(|(p, _)| *p).collect();
    let settings = format!(r#"mode = "escape", volume = "public", paths = "{}""#, paths.join("|"));
    let grants = r#"{ volume = "public", prefix = "up", access = ["read", "write"] }"#;
    let t = TestSilo::new(&probe(&settings, grants, ""), &[("probe.wasm", PROBE)]).await?;
    let host = t.silo.storage().host_session();
    let secret = t.silo.storage().location("private", "secret.txt")?;
    host.write(&secret, Bytes::from_static(b"s3cret"), PutOptions::default())
        .await?;
    let report = t.upload("public/trigger.txt", b"go", None).await?;
    let outcomes: Vec<String> = report
        .reason
        .unwrap_or_default()
        .split(' ')
        .map(str::to_owned)
        .collect();
    assert_eq!(outcomes.len(), attempts.len(), "{outcomes:?}");
    let mismatches: Vec<String> = attempts
        .iter()
        .zip(&outcomes)
        .filter(|((_, expected), got)| got != expected)
        .map(|((path, expected), got)| {
            format!(
                "{}: expected {expected}, got {got}",
                path.chars().take(40).collect::<String>()
            )
        })
        .collect();
    assert!(mismatches.is_empty(), "{mismatches:#?}");
    assert_eq!(host.read(&secret).await?, b"s3cret");
    assert_eq!(t.files_on_disk("private"), [("secret.txt".to_owned(), 6)]);
    assert!(
        t.files_on_disk("public").is_empty(),
        "the rejected upload's writes were removed"
    );
    Ok(())
}

#[tokio::test]
async fn stack_exhaustion_and_oversized_writes_and_outputs_end_cleanly_and_the_host_goes_on() -> anyhow::Result<()> {
    let t = TestSilo::new(&probe(r#"mode = "recurse""#, PUBLIC_RW, ""), &[("probe.wasm", PROBE)]).await?;
    for _ in 0..2 {
        let report = t.upload("public/trigger.txt", b"go", None).await?;
        assert_eq!(report.status, Status::Error, "{report:?}");
        let error = report.error.expect("an error report");
        assert_eq!(error.code, "plugin-crashed", "{error:?}");
        assert!(error.message.contains("stack"), "{error:?}");
    }

    let t = TestSilo::new(
        &probe(
            r#"mode = "huge-write", size = "8388608""#,
            PUBLIC_RW,
            "max_object_bytes = 1048576",
        ),
        &[("probe.wasm", PROBE)],
    )
    .await?;
    let report = t.upload("public/trigger.txt", b"go", None).await?;
    assert_eq!(report.reason.as_deref(), Some("error Error::QuotaExceeded"));
    assert!(t.files_on_disk("public").is_empty());

    // An oversized rejection reason is cut to a bound, on a character edge.
    let t = TestSilo::new(
        &probe(r#"mode = "big-reason", size = "8000000""#, PUBLIC_RW, ""),
        &[("probe.wasm", PROBE)],
    )
    .await?;
    let reason = t
        .upload("public/trigger.txt", b"go", None)
        .await?
        .reason
        .unwrap_or_default();
    assert!(
        reason.len() <= silo_host::pipeline::MAX_REASON_BYTES + 20,
        "{}",
        reason.len()
    );
    assert!(reason.ends_with(" [truncated]") && reason.starts_with("éé"));
    Ok(())
}

#[tokio::test]
async fn fifty_hostile_invocations_beside_a_good_plugin_leave_its_results_unchanged() -> anyhow::Result<()> {
    let hostile: [(&str, &str); 5] = [
        ("spin", r#"mode = "spin""#),
        ("hog", r#"mode = "hog""#),
        ("recurse", r#"mode = "recurse""#),
        ("flood", r#"mode = "flood""#),
        (
            "escape",
            r#"mode = "escape", volume = "public", paths = "../private/secret.txt|/etc/passwd|up/../../x""#,
        ),
    ];
    let mut pipeline = String::new();
    for (mode, settings) in hostile {
        pipeline += &format!(
            r#"
[[plugins]]
name = "{mode}"
component = "probe.wasm"
sha256 = "{{sha256:probe.wasm}}"
events = ["application/x-{mode}"]
settings = {{ {settings} }}
limits = {{ time_ms = {time_ms}, memory_mib = 32, objects_written = 20 }}
grants = [{{ volume = "public", prefix = "{prefix}", access = ["read", "write"] }}]
"#,
            // The flood needs room to hit its quota.
            prefix = if mode == "flood" { "" } else { "up" },
            // Only the loop should meet its time limit, even on a loaded machine.
            time_ms = if mode == "spin" { 500 } else { 20_000 }
        );
    }
    pipeline += r#"
[[plugins]]
name = "good"
component = "probe.wasm"
sha256 = "{sha256:probe.wasm}"
events = ["text/plain"]
settings = { mode = "stream-copy" }
grants = [{ volume = "public", access = ["read", "write"] }]
"#;
    let t = TestSilo::new(&pipeline, &[("probe.wasm", PROBE)]).await?;
    let host = t.silo.storage().host_session();
    let secret = t.silo.storage().location("private", "secret.txt")?;
    host.write(&secret, Bytes::from_static(b"s3cret"), PutOptions::default())
        .await?;
    let t = &t;

    let hostile_jobs = (0..50).map(|i| async move {
        let (mode, _) = hostile[i % hostile.len()];
        let report = t
            .upload(
                &format!("public/up/{mode}-{i}.bin"),
                b"payload",
                Some(&format!("application/x-{mode}")),
            )
            .await?;
        anyhow::Ok((mode, report))
    });
    let good_jobs = (0..10).map(|i| async move {
        let body = format!("good file {i} ").repeat(1000 + i);
        let report = t.upload(&format!("public/good-{i}.txt"), body.as_bytes(), None).await?;
        anyhow::Ok((body, report))
    });
    let (hostile_results, good_results) = futures::future::join(
        futures::future::join_all(hostile_jobs),
        futures::future::join_all(good_jobs),
    )
    .await;
    for result in hostile_results {
        let (mode, report) = result?;
        let outcome = report.error.map(|e| e.code).or(report.reason).unwrap_or_default();
        let expected = match mode {
            "spin" => "time-limit",
            "hog" => "memory-limit",
            "flood" => "quota-exceeded",
            "escape" => "access-denied/access-denied access-denied/access-denied invalid-path/invalid-path",
            "recurse" => "plugin-crashed",
            other => unreachable!("no expectation for {other}"),
        };
        assert_eq!(outcome, expected, "{mode}");
        assert_ne!(report.status, Status::Accepted, "{mode}");
    }
    for (i, result) in good_results.into_iter().enumerate() {
        let (body, report) = result?;
        assert_eq!(report.status, Status::Accepted, "good {i}: {report:#?}");
        let copy = std::fs::read(t.volume_dir("public").join(format!("copies/good-{i}.txt")))?;
        assert!(copy == body.as_bytes(), "good {i}: the copy differs");
    }
    // Only the good plugin's files remain; the secret is untouched.
    let stored: Vec<String> = t.files_on_disk("public").into_iter().map(|(p, _)| p).collect();
    assert_eq!(stored.len(), 20, "{stored:?}");
    assert!(
        stored
            .iter()
            .all(|p| p.starts_with("good-") || p.starts_with("copies/good-")),
        "{stored:?}"
    );
    assert_eq!(host.read(&secret).await?, b"s3cret");
    Ok(())
}

/// As many writers as the host lets a plugin open at once (16, or fewer
/// when the object quota binds first), driven in several orders: all filled
/// then all finished, and pseudo-random schedules that interleave writes,
/// finish some early and drop some unfinished. Whatever the order, what is
/// stored never passes the quota, is exactly what the plugin was told
/// finished, and what was refused left nothing behind (no open multipart
/// upload on S3).
#[tokio::test]
async fn concurrent_writers_share_the_write_quota_in_any_order_on_local_and_s3() -> anyhow::Result<()> {
    let cap = silo_host::runtime::MAX_OPEN_WRITERS;
    // (settings, limits, writers opened, object quota, byte quota, largest
    // object, objects stored when all are filled in order then finished)
    let cases = [
        // The object count binds: the ninth writer is refused at open.
        (
            r#"n = "32", size = "262144""#,
            "objects_written = 8, bytes_written = 67108864",
            8,
            8,
            64 << 20,
            64 << 20,
            8,
        ),
        // The byte quota binds while streaming: 1.5 MiB each, 4 MiB in all.
        (
            r#"n = "32", size = "1572864""#,
            "objects_written = 100, bytes_written = 4194304",
            cap,
            100,
            4 << 20,
            64 << 20,
            2,
        ),
        // Every writer filled whole goes past the object size cap (one
        // finished early may stay under it).
        (
            r#"n = "32", size = "3145728""#,
            "max_object_bytes = 2097152",
            cap,
            64,
            256 << 20,
            2 << 20,
            0,
        ),
    ];
    let (logs, _logging) = silo_tests::capture_logs(tracing::Level::INFO);
    for on_s3 in [false, true] {
        for (settings, limits, opened, max_objects, max_bytes, max_object, in_order) in cases {
            for order in ["", r#", seed = "1""#, r#", seed = "7""#, r#", seed = "2026""#] {
                let pipeline = probe(&format!(r#"mode = "writers", {settings}{order}"#), PUBLIC_RW, limits);
                let (t, bucket) = if on_s3 {
                    let (t, bucket) = TestSilo::on_s3(&pipeline, &[("probe.wasm", PROBE)], "writers").await?;
                    (t, Some(bucket))
                } else {
                    (TestSilo::new(&pipeline, &[("probe.wasm", PROBE)]).await?, None)
                };
                logs.clear();
                let report = t.upload("public/trigger.txt", b"go", None).await?;
                let what = format!("{settings}{order} / {limits} on {}", if on_s3 { "s3" } else { "local" });
                assert_eq!(report.status, Status::Accepted, "{what}: {report:?}");
                let logged = logs.text();
                let counts: Vec<usize> = logged
                    .split("opened=")
                    .skip(1)
                    .map(|rest| {
                        rest.chars()
                            .take_while(char::is_ascii_digit)
                            .collect::<String>()
                            .parse()
                            .unwrap()
                    })
                    .collect();
                assert_eq!(counts, [opened], "{what}: writers open at once; log: {logged}");
                let stored: Vec<(String, u64)> = match &bucket {
                    Some(bucket) => s3::keys(bucket)
                        .await
                        .into_iter()
                        .filter_map(|(k, n)| Some((k.strip_prefix("public/")?.to_owned(), n)))
                        .collect(),
                    None => t.files_on_disk("public"),
                };
                let written: Vec<&(String, u64)> = stored.iter().filter(|(p, _)| p.starts_with("writers/")).collect();
                let bytes: u64 = written.iter().map(|(_, n)| n).sum();
                assert!(written.len() <= max_objects, "{what}: {written:?}");
                assert!(bytes <= max_bytes, "{what}: {bytes} bytes stored");
                assert!(written.iter().all(|(_, n)| *n <= max_object), "{what}: {written:?}");
                if order.is_empty() {
                    // Filled in order, finished in order: the quota is used up.
                    assert_eq!(written.len(), in_order, "{what}: {written:?}");
                }
                // Stored is exactly what the plugin was told finished, and
                // the cache agrees.
                let mut reported: Vec<String> = report.derivatives.iter().map(|d| d.path.clone()).collect();
                reported.sort();
                let mut on_store: Vec<String> = written.iter().map(|(p, _)| p.clone()).collect();
                on_store.sort();
                assert_eq!(reported, on_store, "{what}");
                let mut cached: Vec<String> = t
                    .silo
                    .storage()
                    .cache()
                    .all_files("public")
                    .await?
                    .into_iter()
                    .map(|(p, _)| p)
                    .filter(|p| p.starts_with("writers/"))
                    .collect();
                cached.sort();
                assert_eq!(cached, on_store, "{what}: the cache disagrees");
                if let Some(bucket) = &bucket {
                    // Refused multipart uploads are aborted in the background.
                    let mut open = usize::MAX;
                    for _ in 0..50 {
                        open = s3::open_uploads(bucket).await;
                        if open == 0 {
                            break;
                        }
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    }
                    assert_eq!(open, 0, "{what}: multipart uploads left open");
                } else {
                    let tmp = t.volume_dir("public").join(".silo-tmp");
                    let left = std::fs::read_dir(&tmp).map_or(0, |d| d.count());
                    assert_eq!(left, 0, "{what}: temporary files left in {}", tmp.display());
                }
            }
        }
    }
    Ok(())
}

/// Floods of handles, log output and oversized strings end at documented
/// bounds, and the host goes on.
#[tokio::test]
async fn stream_log_and_string_floods_stop_at_their_bounds() -> anyhow::Result<()> {
    // Readers: at most MAX_OPEN_READERS at once, then quota-exceeded.
    let t = TestSilo::new(
        &probe(r#"mode = "readers", n = "3000""#, PUBLIC_RW, ""),
        &[("probe.wasm", PROBE)],
    )
    .await?;
    let big = vec![b'r'; 512 * 1024];
    let report = t.upload("public/trigger.txt", &big, None).await?;
    assert_eq!(
        report.reason.as_deref(),
        Some(
            format!(
                "opened={} first-error=quota-exceeded",
                silo_host::runtime::MAX_OPEN_READERS
            )
            .as_str()
        )
    );
    // Writers: likewise, with nothing stored past the limit.
    let t = TestSilo::new(
        &probe(
            r#"mode = "writers", n = "1000", size = "1024""#,
            PUBLIC_RW,
            "objects_written = 2000",
        ),
        &[("probe.wasm", PROBE)],
    )
    .await?;
    let report = t.upload("public/trigger.txt", b"go", None).await?;
    assert_eq!(report.status, Status::Accepted, "{report:?}");
    assert_eq!(report.derivatives.len(), silo_host::runtime::MAX_OPEN_WRITERS);

    // Log: one budget for `log`, stdout and stderr together. 20,000
    // messages of 4 KiB each to `log` and stdout (160 MB) leave at most
    // MAX_LOG_BYTES in the host's log, with its formatting.
    let logged = Arc::new(AtomicUsize::new(0));
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_writer({
            let logged = logged.clone();
            move || Counting(logged.clone())
        })
        .finish();
    let t = TestSilo::new(
        &probe(r#"mode = "log-flood", n = "20000""#, PUBLIC_RW, ""),
        &[("probe.wasm", PROBE)],
    )
    .await?;
    let report = {
        let _log = silo_tests::scoped_subscriber(subscriber);
        t.upload("public/trigger.txt", b"go", None).await?
    };
    assert_eq!(report.reason.as_deref(), Some("logged"));
    let logged = logged.load(Ordering::Relaxed);
    let bound = silo_host::runtime::MAX_LOG_BYTES;
    assert!(logged > bound / 2 && logged < bound * 2, "{logged} bytes logged");

    // Content type and cache control are served as headers: bounded.
    for (size, expected) in [("1048576", "error too-large"), ("100", "ok")] {
        let t = TestSilo::new(
            &probe(&format!(r#"mode = "big-options", size = "{size}""#), PUBLIC_RW, ""),
            &[("probe.wasm", PROBE)],
        )
        .await?;
        let report = t.upload("public/trigger.txt", b"go", None).await?;
        assert_eq!(report.reason.as_deref(), Some(expected), "{size}");
    }

    // An error message a plugin returns is cut.
    let t = TestSilo::new(
        &probe(r#"mode = "big-error", size = "8000000""#, PUBLIC_RW, ""),
        &[("probe.wasm", PROBE)],
    )
    .await?;
    let report = t.upload("public/trigger.txt", b"go", None).await?;
    let error = report.error.expect("an error");
    assert_eq!(error.code, "unavailable");
    assert!(
        error.message.len() < silo_host::runtime::MAX_PLUGIN_MESSAGE + 200,
        "{}",
        error.message.len()
    );
    assert!(
        error.message.ends_with(" [truncated]"),
        "{}",
        &error.message[error.message.len() - 40..]
    );
    Ok(())
}

/// A log sink that only counts bytes.
struct Counting(Arc<AtomicUsize>);

impl std::io::Write for Counting {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.fetch_add(buf.len(), Ordering::Relaxed);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Files under `dir`, recursively; `dir` must exist.
fn count_files(dir: &std::path::Path) -> usize {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    entries
        .flatten()
        .map(|e| if e.path().is_dir() { count_files(&e.path()) } else { 1 })
        .sum()
}

/// A client that goes away while a slow plugin works: the upload still
/// ends stored or rolled back, never half-way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_runs_to_its_end_when_the_client_goes_away() -> anyhow::Result<()> {
    for reject in [true, false] {
        let settings = format!(
            r#"mode = "slow", ms = "1500"{}"#,
            if reject { r#", reject = "1""# } else { "" }
        );
        let t = TestSilo::new(
            &probe_stage("slow", "text/plain", &settings, PUBLIC_RW),
            &[("probe.wasm", PROBE)],
        )
        .await?;
        let dir = t.dir.path().to_owned();
        let public = t.volume_dir("public");
        let silo = Arc::new(t.silo);
        let sidecar = Sidecar::start(silo.clone()).await;
        let client = Client::default();
        let url = sidecar.url("/v1/files/public/doc.txt");
        // Over the in-memory staging limit: staged in a file on disk.
        let text = "some text ".repeat(silo_host::pipeline::MEMORY_STAGE_BYTES / 10 + 100);
        // The client gives up while the plugin is still working.
        let gone = tokio::time::timeout(Duration::from_millis(400), client.put(&url, "text/plain", text.clone())).await;
        assert!(gone.is_err(), "the upload answered before the client left");
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            public.join("slow/doc.txt").exists(),
            "the plugin has written its file by now"
        );
        assert_eq!(
            count_files(&dir.join("state/staging")),
            1,
            "the upload is staged on disk while it is judged"
        );
        // Wait for the pipeline's end (the file, its cache row and the
        // staged upload go one after the other), then look.
        let host = silo.storage().host_session();
        let at = |p: &str| silo.storage().location("public", p).unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let stored = public.join("doc.txt").exists();
            let derived = public.join("slow/doc.txt").exists() || host.exists(&at("slow/doc.txt")).await?;
            let staged = count_files(&dir.join("state/staging"));
            let settled = staged == 0 && if reject { !derived } else { stored };
            if settled || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if reject {
            assert!(!public.join("doc.txt").exists(), "a refused upload was stored");
            assert!(
                !public.join("slow/doc.txt").exists(),
                "the refused upload's derived file stayed"
            );
            assert!(
                !host.exists(&at("slow/doc.txt")).await?,
                "the cache still lists the derived file"
            );
        } else {
            assert!(
                std::fs::read(public.join("doc.txt"))? == text.as_bytes(),
                "the stored upload differs"
            );
            assert!(host.exists(&at("slow/doc.txt")).await?);
        }
        assert_eq!(count_files(&dir.join("state/staging")), 0, "staging leaked");
    }
    Ok(())
}

/// wasi:http links (toolchains import it by default) but reaches nothing:
/// a request to a server listening on loopback is refused without a
/// connection, and headers parked in the host stop at their bounds.
#[tokio::test]
async fn wasi_http_links_but_every_request_is_refused() -> anyhow::Result<()> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let url = format!("{}/steal?what=uploads", listener.local_addr()?);
    let pipeline = [
        probe_stage(
            "send",
            "text/x-send",
            &format!(r#"mode = "http", url = "{url}""#),
            PUBLIC_RW,
        ),
        probe_stage(
            "big",
            "text/x-big",
            r#"mode = "http-fields", size = "200000""#,
            PUBLIC_RW,
        ),
        probe_stage(
            "many",
            "text/x-many",
            r#"mode = "http-fields", size = "3000""#,
            PUBLIC_RW,
        ),
    ]
    .concat();
    let t = TestSilo::new(&pipeline, &[("probe.wasm", PROBE)]).await?;
    let sent = t.upload("public/a.txt", b"hi", Some("text/x-send")).await?;
    assert_eq!(
        sent.reason.as_deref(),
        Some("sent=ErrorCode::HttpRequestDenied"),
        "{sent:#?}"
    );
    assert!(
        matches!(listener.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "nothing may connect"
    );
    // One header over a `fields` resource's 4 KiB ends the plugin.
    let big = t.upload("public/a.txt", b"hi", Some("text/x-big")).await?;
    let error = big.error.as_ref().expect("an error");
    assert_eq!(error.code, "plugin-crashed", "{big:#?}");
    assert!(error.message.contains("fields exceeds limit"), "{big:#?}");
    // Headers under it fill the handle table (1000), no more.
    let many = t.upload("public/a.txt", b"hi", Some("text/x-many")).await?;
    let error = many.error.as_ref().expect("an error");
    assert_eq!(error.code, "plugin-crashed", "{many:#?}");
    assert!(error.message.contains("resource table has no free keys"), "{many:#?}");
    // The host goes on.
    let sent = t.upload("public/b.txt", b"hi", Some("text/x-send")).await?;
    assert_eq!(sent.reason.as_deref(), Some("sent=ErrorCode::HttpRequestDenied"));
    Ok(())
}

/// A plugin finds none of the host's environment or arguments, and no
/// network: TCP and UDP to loopback listeners and a name lookup are refused,
/// through raw wasi:sockets and through `std::net`, and the listeners get
/// nothing.
#[tokio::test]
async fn a_plugin_finds_no_environment_arguments_or_network() -> anyhow::Result<()> {
    let tcp = std::net::TcpListener::bind("127.0.0.1:0")?;
    tcp.set_nonblocking(true)?;
    let udp = std::net::UdpSocket::bind("127.0.0.1:0")?;
    udp.set_nonblocking(true)?;
    // The host has an environment and arguments; none of it may reach a plugin.
    assert!(std::env::vars_os().count() > 0 && std::env::args_os().count() > 0);
    let settings = format!(
        r#"mode = "ambient", tcp = "{}", udp = "{}""#,
        tcp.local_addr()?.port(),
        udp.local_addr()?.port()
    );
    let t = TestSilo::new(&probe(&settings, PUBLIC_RW, ""), &[("probe.wasm", PROBE)]).await?;
    let report = t.upload("public/a.txt", b"hi", None).await?;
    assert_eq!(report.status, Status::Rejected, "{report:#?}");
    assert_eq!(report.reason.as_deref(), Some(AMBIENT), "{report:#?}");
    assert!(
        matches!(tcp.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "nothing may connect"
    );
    let mut buf = [0u8; 64];
    assert!(
        matches!(udp.recv_from(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "no datagram may arrive"
    );
    Ok(())
}

/// What the `ambient` probe sees: nothing, and a refusal for each attempt.
/// Every socket is refused at creation (`access-denied`), the name lookup
/// fails, and std reports the same (its lookup error has no kind on WASI).
const AMBIENT: &str = "env=0 args=0 std-env=0 tcp=create access-denied udp=create access-denied \
     lookup=permanent-resolver-failure std-tcp=PermissionDenied std-udp=PermissionDenied std-lookup=Uncategorized";
