//! The `silo` binary as a user runs it: the built-in default in an empty
//! directory, JSON on stdout, exit codes, and bad input refused without
//! writing anything.

use std::path::Path;
use std::process::{Command, Output};

fn silo(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_silo"))
        .current_dir(dir)
        .args(args)
        .env_remove("SILO_LOG")
        .output()
        .expect("run silo")
}

fn sample(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../samples")
        .join(name)
        .display()
        .to_string()
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn run_on_the_builtin_default_accepts_a_jpeg_and_writes_its_styles() {
    let dir = tempfile::tempdir().unwrap();
    let out = silo(
        dir.path(),
        &["run", "public/photos/sunset.jpg", "--file", &sample("sunset.jpg")],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("using the built-in default"));
    let report = json(&out);
    assert_eq!(report["status"], "accepted");
    let derivatives = report["derivatives"].as_array().unwrap();
    assert_eq!(derivatives.len(), 2);
    for d in derivatives {
        let path = dir.path().join("silo-data/public").join(d["path"].as_str().unwrap());
        assert_eq!(std::fs::metadata(&path).unwrap().len(), d["size"].as_u64().unwrap());
        assert!(d["etag"].as_str().is_some_and(|e| !e.is_empty()));
    }
    assert_eq!(report["derivatives"][1]["width"], 640);
}

#[test]
fn run_exits_non_zero_on_a_rejection_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let out = silo(
        dir.path(),
        &[
            "run",
            "public/fake.jpg",
            "--file",
            &sample("sunset.png"),
            "--content-type",
            "image/jpeg",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let report = json(&out);
    assert_eq!(report["status"], "rejected");
    assert_eq!(report["rejected_by"], "content-policy");
    assert_eq!(
        report["reason"],
        "forbidden: 'fake.jpg' is declared image/jpeg but its content is image/png"
    );
    assert!(!dir.path().join("silo-data/public/fake.jpg").exists());
}

#[test]
fn bad_input_is_refused_by_name_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("broken.toml"), "[volumes.public\nbackend = \"local\"\n").unwrap();
    std::fs::write(
        dir.path().join("unknown.toml"),
        "[volumes.public]\nbackend = \"tape\"\n",
    )
    .unwrap();
    let jpg = sample("sunset.jpg");
    for (args, expected) in [
        (vec!["run", "public/../etc/passwd", "--file", &jpg], "'..' segment"),
        (vec!["run", "public/a//x.jpg", "--file", &jpg], "empty segment"),
        (vec!["run", "public//x.jpg", "--file", &jpg], "starts with '/'"),
        (
            vec!["run", "nowhere/x.jpg", "--file", &jpg],
            "no volume named 'nowhere'",
        ),
        (
            vec!["run", "public/x.jpg", "--file", "missing.jpg"],
            "missing.jpg does not exist",
        ),
        (
            vec!["run", "public/x.jpg", "--file", &jpg, "--config", "absent.toml"],
            "cannot read config absent.toml",
        ),
        (
            vec!["run", "public/x.jpg", "--file", &jpg, "--config", "broken.toml"],
            "line 1",
        ),
        (
            vec!["run", "public/x.jpg", "--file", &jpg, "--config", "unknown.toml"],
            "unknown variant `tape`",
        ),
    ] {
        let out = silo(dir.path(), &args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert_eq!(json(&out)["status"], "error");
        assert_eq!(
            entries(dir.path()),
            ["broken.toml", "unknown.toml"],
            "{args:?} wrote something"
        );
    }
}

#[test]
fn plugin_check_describes_a_component_and_refuses_non_components() {
    let dir = tempfile::tempdir().unwrap();
    let component = dir.path().join("guard.wasm");
    std::fs::write(&component, silo_host::bundled::UPLOAD_GUARD).unwrap();
    let out = silo(dir.path(), &["plugin", "check", "guard.wasm"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("silo:plugin/upload-plugin@0.1.0 (Silo can run it)"),
        "{text}"
    );
    assert!(text.contains("  silo:plugin/handler@0.1.0"), "{text}");
    assert!(text.contains("  silo:plugin/files@0.1.0"), "{text}");

    let out = silo(dir.path(), &["plugin", "check", &sample("sunset.png")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a WebAssembly file"));
}

#[test]
fn cache_commands_report_and_repair_drift() {
    let dir = tempfile::tempdir().unwrap();
    let out = silo(dir.path(), &["run", "public/a.jpg", "--file", &sample("sunset.jpg")]);
    assert!(out.status.success());

    let out = silo(dir.path(), &["cache", "stats"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let public = text.lines().find(|l| l.starts_with("public")).unwrap();
    assert_eq!(public.split_whitespace().nth(1), Some("3"), "{text}");

    std::fs::write(dir.path().join("silo-data/public/dropped-in.txt"), "hello").unwrap();
    let out = silo(dir.path(), &["cache", "verify"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("public: missing dropped-in.txt"));

    let out = silo(dir.path(), &["cache", "refresh", "--volume", "public"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("public: 4 files"));
    let out = silo(dir.path(), &["cache", "verify"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));

    let out = silo(dir.path(), &["cache", "refresh", "--volume", "nope"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no volume named 'nope'"));
}

/// A new bucket on the S3 server `tests/run` starts (see tests/src/s3.rs).
fn s3_bucket(hint: &str) -> (String, String) {
    let endpoint = std::env::var("SILO_TEST_S3_ENDPOINT").unwrap_or_else(|_| {
        panic!("SILO_TEST_S3_ENDPOINT is not set: this test needs the SeaweedFS server `tests/run` starts")
    });
    let bucket = format!("cli-{hint}-{}", std::process::id());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .load()
            .await;
        let s3 = aws_sdk_s3::config::Builder::from(&config)
            .endpoint_url(&endpoint)
            .force_path_style(true)
            .build();
        let client = aws_sdk_s3::Client::from_conf(s3);
        client.create_bucket().bucket(&bucket).send().await.unwrap_or_else(|e| {
            panic!(
                "cannot create a bucket at {endpoint}: {}",
                aws_sdk_s3::error::DisplayErrorContext(&e)
            )
        });
        client
            .put_object()
            .bucket(&bucket)
            .key("public/behind/back.txt")
            .body(aws_sdk_s3::primitives::ByteStream::from_static(b"hello"))
            .send()
            .await
            .unwrap();
    });
    (endpoint, bucket)
}

#[test]
fn run_and_cache_commands_work_on_s3_volumes() {
    let (endpoint, bucket) = s3_bucket("run");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("silo.toml");
    let mut text = String::new();
    for (name, visibility) in [("public", "public"), ("private", "private")] {
        text += &format!(
            "[volumes.{name}]\nbackend = \"s3\"\nbucket = \"{bucket}\"\nprefix = \"{name}\"\n\
             endpoint_url = \"{endpoint}\"\nvisibility = \"{visibility}\"\n\n"
        );
    }
    text += "[[plugins]]\nname = \"image-styles\"\ncomponent = \"builtin:image-styles\"\n\
             events = [\"image/*\"]\nlimits = { memory_mib = 256 }\n\
             grants = [{ volume = \"public\", access = [\"read\"] }, \
             { volume = \"public\", prefix = \"styles\", access = [\"read\", \"write\"] }]\n";
    std::fs::write(&config, text).unwrap();
    let config = config.display().to_string();

    let out = silo(
        dir.path(),
        &[
            "--config",
            &config,
            "run",
            "public/p.jpg",
            "--file",
            &sample("sunset.jpg"),
        ],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(json(&out)["derivatives"].as_array().unwrap().len(), 2);

    // The file written behind Silo's back is drift until refreshed.
    let out = silo(dir.path(), &["--config", &config, "cache", "verify"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("public: missing behind/back.txt"));
    let out = silo(
        dir.path(),
        &["--config", &config, "cache", "refresh", "--volume", "public"],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("public: 4 files"));
    let out = silo(dir.path(), &["--config", &config, "cache", "verify"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
}

#[test]
fn migrate_plans_copies_resumes_and_reverses() {
    let (endpoint, bucket) = s3_bucket("migrate");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("silo.toml");
    std::fs::write(
        &config,
        format!(
            "[volumes.media]\nbackend = \"s3\"\nbucket = \"{bucket}\"\nprefix = \"media\"\nendpoint_url = \"{endpoint}\"\n"
        ),
    )
    .unwrap();
    let config = config.display().to_string();
    let uploads = dir.path().join("uploads");
    for i in 0..40 {
        let file = uploads.join(format!("{}/{i}.txt", i % 4));
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(file, format!("file {i}\n").repeat(i + 1)).unwrap();
    }
    std::fs::write(uploads.join("evil.php"), b"<?php system($_GET['c']);").unwrap();
    let uploads_arg = uploads.display().to_string();
    let migrate = |extra: &[&str]| {
        let mut args = vec!["--config", &config, "migrate", &uploads_arg, "--volume", "media"];
        args.extend_from_slice(extra);
        silo(dir.path(), &args)
    };

    let out = migrate(&["--dry-run"]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("copy 0/0.txt (7 bytes)"), "{stdout}");
    assert!(stdout.contains("plan: 41 files"), "{stdout}");
    assert!(stdout.contains("nothing copied (dry run)"), "{stdout}");
    let out = silo(dir.path(), &["--config", &config, "cache", "stats"]);
    let stats = String::from_utf8_lossy(&out.stdout).into_owned();
    let media: Vec<&str> = stats
        .lines()
        .find(|l| l.starts_with("media "))
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(media[1], "0", "a dry run copies nothing: {stats}");

    let out = migrate(&["--jobs", "3"]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("refused evil.php"), "{stdout}");
    assert!(stdout.contains("copied 40 ("), "{stdout}");
    let out = silo(dir.path(), &["--config", &config, "cache", "verify"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));

    let out = migrate(&[]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(stdout.contains("copied 0 (0 bytes), already there 40"), "{stdout}");

    let back = dir.path().join("back");
    let back_arg = back.display().to_string();
    let out = silo(
        dir.path(),
        &[
            "--config",
            &config,
            "migrate",
            &back_arg,
            "--volume",
            "media",
            "--reverse",
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("copied 40 ("), "{stdout}");
    assert_eq!(
        std::fs::read(back.join("3/7.txt")).unwrap(),
        std::fs::read(uploads.join("3/7.txt")).unwrap()
    );

    let out = migrate(&["--jobs", "0"]);
    assert_eq!(out.status.code(), Some(2));
    let out = silo(
        dir.path(),
        &["--config", &config, "migrate", "/nonexistent", "--volume", "media"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a directory"));
}
