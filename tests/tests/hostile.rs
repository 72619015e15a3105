//! Hostile plugins and hostile uploads: write-xor-execute, path escapes,
//! stack exhaustion and oversized writes. Each attempt ends with the
//! expected error, nothing outside the grant is touched, and the host goes
//! on serving.

use bytes::Bytes;
use silo_host::pipeline::POLICY;
use silo_host::store::PutOptions;
use silo_host::{Status, StorageError};
use silo_tests::{EXAMPLE_PIPELINE, PROBE, TestSilo, jpeg, s3};

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
        assert!(error.message.contains("stack") || error.code == "trap", "{error:?}");
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
            _ => "trap",
        };
        assert!(
            outcome == expected || (mode == "recurse" && report.status == Status::Error),
            "{mode}: {outcome}"
        );
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
