//! The HTTP sidecar driven by curl, as a PHP or Python CMS would drive it:
//! upload through the pipeline, read with ETag and Range, private files,
//! listing, delete, and refusals.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

const TOKEN: &str = "test-token-0123456789";

struct Server {
    child: Child,
    base: String,
    /// The S3 endpoint's URL, when it runs.
    s3: Option<String>,
    /// What it has written to stderr since it listened.
    log: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(dir: &Path) -> Server {
    start_with(dir, &[])
}

const ADMIN_TOKEN: &str = "test-admin-token-9876543210";

fn start_with(dir: &Path, extra: &[&str]) -> Server {
    let mut command = Command::new(env!("CARGO_BIN_EXE_silo"));
    command
        .current_dir(dir)
        .args(extra)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("SILO_TOKEN", TOKEN)
        .env("SILO_ADMIN_TOKEN", ADMIN_TOKEN);
    listening(command)
}

/// Start `command` (a `silo serve`) and wait until it listens.
fn listening(mut command: Command) -> Server {
    let mut child = command
        .env_remove("SILO_LOG")
        .stderr(Stdio::piped())
        .spawn()
        .expect("start silo serve");
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let mut s3 = None;
    let base = loop {
        let line = lines
            .next()
            .expect("silo serve exited before listening")
            .expect("read stderr");
        if let Some(url) = line.strip_prefix("silo: S3 endpoint on ") {
            s3 = Some(url.to_owned());
        }
        if let Some(url) = line.strip_prefix("silo: listening on ") {
            break url.to_owned();
        }
    };
    // Keep draining stderr so the server never blocks on it.
    let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let kept = log.clone();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            let mut kept = kept.lock().unwrap();
            kept.push_str(&line);
            kept.push('\n');
        }
    });
    Server { child, base, s3, log }
}

/// Run curl; returns (status, headers, body).
fn curl(args: &[&str]) -> (u16, String, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let (headers, body) = (dir.path().join("h"), dir.path().join("b"));
    let out = Command::new("curl")
        .args(["-s", "-S", "-o"])
        .arg(&body)
        .arg("-D")
        .arg(&headers)
        .args(["-w", "%{http_code}"])
        .args(args)
        .output()
        .expect("curl must be installed for this test");
    assert!(
        out.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    (
        status,
        std::fs::read_to_string(&headers)
            .unwrap_or_default()
            .to_ascii_lowercase(),
        std::fs::read(&body).unwrap_or_default(),
    )
}

fn header<'a>(headers: &'a str, name: &str) -> Option<&'a str> {
    headers
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
        .map(str::trim)
}

fn json(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(body)))
}

#[test]
fn a_cms_uploads_reads_lists_and_deletes_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let base = &server.base;
    let auth = format!("Authorization: Bearer {TOKEN}");
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("../samples/sunset.jpg");
    let sample_arg = format!("@{}", sample.display());
    let original = std::fs::read(&sample).unwrap();
    let photo = format!("{base}/v1/files/public/photos/sunset.jpg");

    let (status, _, body) = curl(&[&format!("{base}/healthz")]);
    assert_eq!((status, body.as_slice()), (200, &b"ok\n"[..]));

    // Writes need the token.
    let (status, _, body) = curl(&["-X", "PUT", "--data-binary", &sample_arg, &photo]);
    assert_eq!(status, 401);
    assert_eq!(json(&body)["error"]["code"], "unauthorized");

    let (status, _, body) = curl(&[
        "-X",
        "PUT",
        "-H",
        &auth,
        "-H",
        "Content-Type: image/jpeg",
        "--data-binary",
        &sample_arg,
        &photo,
    ]);
    let report = json(&body);
    assert_eq!(status, 201, "{report}");
    assert_eq!(report["status"], "accepted");
    assert_eq!(report["derivatives"].as_array().unwrap().len(), 2);

    // Public reads need no token; the bytes, type and safety headers.
    let (status, headers, body) = curl(&[&photo]);
    assert_eq!(status, 200);
    assert!(body == original, "the served file differs from the upload");
    assert_eq!(header(&headers, "content-type"), Some("image/jpeg"));
    assert_eq!(header(&headers, "x-content-type-options"), Some("nosniff"));
    assert!(header(&headers, "last-modified").is_some());
    let etag = header(&headers, "etag").unwrap().to_owned();

    let (status, _, body) = curl(&["-H", &format!("If-None-Match: {etag}"), &photo]);
    assert_eq!((status, body.len()), (304, 0));

    let (status, headers, body) = curl(&["-H", "Range: bytes=10-19", &photo]);
    assert_eq!(status, 206);
    assert_eq!(body, &original[10..20]);
    assert_eq!(
        header(&headers, "content-range"),
        Some(format!("bytes 10-19/{}", original.len()).as_str())
    );
    let (status, _, _) = curl(&["-H", &format!("Range: bytes={}-", original.len() + 5), &photo]);
    assert_eq!(status, 416);

    // With -I curl writes the headers where the body would go.
    let (status, headers, body) = curl(&["-I", &photo]);
    assert_eq!(status, 200);
    assert!(body.starts_with(b"HTTP/1.1 200"), "HEAD returned a body");
    assert_eq!(
        header(&headers, "content-length"),
        Some(original.len().to_string().as_str())
    );

    // The styles are there, and listed (for the token: a public volume's
    // files are readable by name, not listable by anyone).
    let styles = format!("{base}/v1/list/public/styles?recursive=true");
    let (status, _, _) = curl(&[&styles]);
    assert_eq!(status, 401);
    let (status, _, body) = curl(&["-H", &auth, &styles]);
    assert_eq!(status, 200);
    let listing = json(&body);
    let paths: Vec<&str> = listing["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        paths,
        ["styles/medium/photos/sunset.jpg", "styles/thumbnail/photos/sunset.jpg"]
    );

    // A style that is missing is derived on request.
    let thumbnail = format!("{base}/v1/files/public/styles/thumbnail/photos/sunset.jpg");
    let (status, _, _) = curl(&["-X", "DELETE", "-H", &auth, &thumbnail]);
    assert_eq!(status, 204);
    let (status, headers, body) = curl(&[&format!("{base}/v1/styles/thumbnail/public/photos/sunset.jpg")]);
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "content-type"), Some("image/jpeg"));
    assert!(body.starts_with(&[0xff, 0xd8, 0xff]), "not a JPEG");
    let (status, _, again) = curl(&[&thumbnail]);
    assert_eq!((status, again), (200, body), "the derived style was stored");
    let (status, _, body) = curl(&[&format!("{base}/v1/styles/poster/public/photos/sunset.jpg")]);
    assert_eq!(status, 404);
    assert_eq!(json(&body)["error"]["code"], "unknown-style");

    // Private files need the token to be read.
    let secret = format!("{base}/v1/files/private/notes/plan.txt");
    let (status, _, _) = curl(&["-X", "PUT", "-H", &auth, "--data-binary", "the plan", &secret]);
    assert_eq!(status, 201);
    let (status, _, _) = curl(&[&secret]);
    assert_eq!(status, 401);
    let (status, headers, body) = curl(&["-H", &auth, &secret]);
    assert_eq!((status, body.as_slice()), (200, &b"the plan"[..]));
    assert_eq!(header(&headers, "cache-control"), Some("private, no-store"));

    // A signed, time-limited URL opens one private file without the token.
    let (status, _, body) = curl(&[
        "-H",
        &auth,
        &format!("{base}/v1/sign/private/notes/plan.txt?expires_in=60"),
    ]);
    assert_eq!(status, 200);
    let url = json(&body)["url"].as_str().unwrap().to_owned();
    let (status, _, body) = curl(&[&format!("{base}{url}")]);
    assert_eq!((status, body.as_slice()), (200, &b"the plan"[..]));
    let other = url.replace("plan.txt", "other.txt");
    let (status, _, _) = curl(&[&format!("{base}{other}")]);
    assert_eq!(status, 401, "a signature is for one file");
    let tampered = url.replace("signature=", "signature=00");
    let (status, _, _) = curl(&[&format!("{base}{tampered}")]);
    assert_eq!(status, 401);
    let (status, _, _) = curl(&[&format!("{base}/v1/sign/private/notes/plan.txt?expires_in=60")]);
    assert_eq!(status, 401, "signing needs the token");
    let (status, _, _) = curl(&[
        "-H",
        &auth,
        &format!("{base}/v1/sign/private/notes/plan.txt?expires_in=0"),
    ]);
    assert_eq!(status, 400);

    // Refusals: a server-executable name, a lie about the type, a bad path.
    let (status, _, body) = curl(&[
        "-X",
        "PUT",
        "-H",
        &auth,
        "--data-binary",
        "<?php phpinfo();",
        &format!("{base}/v1/files/public/x.php"),
    ]);
    assert_eq!(status, 422);
    assert_eq!(json(&body)["rejected_by"], "content-policy");
    let (status, _, body) = curl(&[
        "-X",
        "PUT",
        "-H",
        &auth,
        "-H",
        "Content-Type: image/jpeg",
        "--data-binary",
        "<html>hi</html>",
        &format!("{base}/v1/files/public/fake.jpg"),
    ]);
    assert_eq!(status, 422, "{}", String::from_utf8_lossy(&body));
    let (status, _, body) = curl(&[&format!("{base}/v1/files/nope/x.txt")]);
    assert_eq!(status, 401, "an unknown volume is not public");
    assert_eq!(json(&body)["error"]["code"], "unauthorized");
    let (status, _, body) = curl(&["-H", &auth, &format!("{base}/v1/files/nope/x.txt")]);
    assert_eq!(status, 404);
    assert_eq!(json(&body)["error"]["code"], "not-found");

    // Delete.
    let (status, _, _) = curl(&["-X", "DELETE", &photo]);
    assert_eq!(status, 401);
    let (status, _, _) = curl(&["-X", "DELETE", "-H", &auth, &photo]);
    assert_eq!(status, 204);
    let (status, _, body) = curl(&[&photo]);
    assert_eq!(status, 404);
    assert_eq!(json(&body)["error"]["code"], "not-found");
    drop(server);
}

#[test]
fn an_upload_to_an_unreachable_s3_backend_is_a_503_and_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("silo.toml");
    // Nothing listens on port 9 of loopback.
    std::fs::write(
        &config,
        "[volumes.public]\nbackend = \"s3\"\nbucket = \"uploads\"\nendpoint_url = \"http://127.0.0.1:9\"\n\
         visibility = \"public\"\nmax_attempts = 1\n",
    )
    .unwrap();
    let server = start_with(dir.path(), &["--config", config.to_str().unwrap()]);
    let auth = format!("Authorization: Bearer {TOKEN}");
    let url = format!("{}/v1/files/public/a.txt", server.base);
    let (status, _, body) = curl(&["-X", "PUT", "-H", &auth, "--data-binary", "hello", &url]);
    assert_eq!(status, 503, "{}", String::from_utf8_lossy(&body));
    let report = json(&body);
    assert_eq!(report["error"]["code"], "unavailable");
    // The cache never learnt of it.
    let (status, _, _) = curl(&[&url]);
    assert_eq!(status, 404);
}

/// The same API from Python with `requests`: `tests/run` installs it into
/// its own virtualenv and exports SILO_TEST_PYTHON.
#[test]
fn a_python_cms_drives_the_sidecar_with_requests() {
    let python = std::env::var("SILO_TEST_PYTHON").unwrap_or_else(|_| {
        panic!("SILO_TEST_PYTHON is not set: run `tests/run`, which installs Python `requests` for this test")
    });
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = Command::new(&python)
        .arg(root.join("tests/clients/sidecar_client.py"))
        .arg(&server.base)
        .arg(TOKEN)
        .arg(root.join("samples/sunset.jpg"))
        .output()
        .unwrap_or_else(|e| panic!("cannot run {python}: {e}"));
    assert!(
        out.status.success(),
        "the Python client failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok");
}

#[test]
fn sigterm_lets_an_upload_in_flight_finish_and_admin_routes_take_the_admin_token() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = start(dir.path());
    let base = server.base.clone();

    let (status, _, _) = curl(&[
        "-H",
        &format!("Authorization: Bearer {TOKEN}"),
        &format!("{base}/metrics"),
    ]);
    assert_eq!(status, 401, "the write token does not open /metrics");
    let (status, _, body) = curl(&[
        "-H",
        &format!("Authorization: Bearer {ADMIN_TOKEN}"),
        &format!("{base}/metrics"),
    ]);
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&body).contains("silo_http_requests_total"));

    // A 600 kB upload sent at 200 kB/s; SIGTERM arrives in the middle.
    let body = dir.path().join("upload.txt");
    std::fs::write(&body, "slow upload line\n".repeat(600_000 / 17)).unwrap();
    let upload = Command::new("curl")
        .args([
            "-s",
            "-S",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--limit-rate",
            "200k",
            "-X",
            "PUT",
        ])
        .args([
            "-H",
            &format!("Authorization: Bearer {TOKEN}"),
            "-H",
            "Content-Type: text/plain",
        ])
        .arg("--data-binary")
        .arg(format!("@{}", body.display()))
        .arg(format!("{base}/v1/files/public/slow.txt"))
        .stdout(Stdio::piped())
        .spawn()
        .expect("curl must be installed for this test");
    std::thread::sleep(std::time::Duration::from_millis(1000));
    let killed = Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let out = upload.wait_with_output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "201",
        "the upload in flight finished"
    );
    let exit = server.child.wait().unwrap();
    assert!(exit.success(), "silo serve exits cleanly after SIGTERM: {exit:?}");
    assert_eq!(
        std::fs::read(dir.path().join("silo-data/public/slow.txt")).unwrap(),
        std::fs::read(&body).unwrap()
    );

    // The admin token must differ from the write token.
    let out = Command::new(env!("CARGO_BIN_EXE_silo"))
        .current_dir(dir.path())
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("SILO_TOKEN", TOKEN)
        .env("SILO_ADMIN_TOKEN", TOKEN)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("SILO_ADMIN_TOKEN must differ from SILO_TOKEN"));
}

#[test]
fn secrets_come_from_files_the_config_names_and_the_environment_overrides_them() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("secrets")).unwrap();
    std::fs::write(dir.path().join("secrets/token"), format!("{TOKEN}\n")).unwrap();
    std::fs::write(dir.path().join("secrets/admin"), format!("{ADMIN_TOKEN}\n")).unwrap();
    let config = |token_file: &str| {
        format!(
            "[volumes.public]\nbackend = \"local\"\npath = \"files/public\"\nvisibility = \"public\"\n\n\
             [serve]\nlisten = \"127.0.0.1:0\"\ntoken_file = \"{token_file}\"\nadmin_token_file = \"secrets/admin\"\n"
        )
    };
    std::fs::write(dir.path().join("silo.toml"), config("secrets/token")).unwrap();
    let serve = |env_token: Option<&str>| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_silo"));
        // The config is found beside where silo runs from; so are the
        // secret files it names.
        command
            .current_dir(dir.path())
            .arg("serve")
            .env_remove("SILO_TOKEN")
            .env_remove("SILO_ADMIN_TOKEN")
            .env_remove("SILO_SIGNING_KEY");
        if let Some(token) = env_token {
            command.env("SILO_TOKEN", token);
        }
        command
    };

    // The status of a PUT to `server` with `token`.
    let put = |server: &Server, token: &str| {
        let url = format!("{}/v1/files/public/a.txt", server.base);
        let auth = format!("Authorization: Bearer {token}");
        curl(&["-X", "PUT", "-H", &auth, "--data-binary", "hello", &url]).0
    };
    let server = listening(serve(None));
    assert_eq!(put(&server, TOKEN), 201, "the token from the file opens writes");
    assert_eq!(put(&server, "some-other-token-123"), 401);
    let metrics = curl(&[
        "-H",
        &format!("Authorization: Bearer {ADMIN_TOKEN}"),
        &format!("{}/metrics", server.base),
    ]);
    assert_eq!(metrics.0, 200, "the admin token from its file opens /metrics");
    drop(server);

    // The environment overrides the file.
    let env_token = "token-from-the-environment";
    let server = listening(serve(Some(env_token)));
    assert_eq!(put(&server, TOKEN), 401);
    assert_eq!(put(&server, env_token), 201);
    drop(server);

    // A secret file that cannot be read is named.
    std::fs::write(dir.path().join("silo.toml"), config("secrets/missing")).unwrap();
    let out = serve(None).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("secrets/missing") && stderr.contains("SILO_TOKEN"),
        "{stderr}"
    );
}

/// Two `silo serve` processes, each with its own data_dir, on one S3
/// bucket (the SeaweedFS `tests/run` starts) and one PostgreSQL database
/// (its server's own `postgres` database, used by no other test).
#[test]
fn two_silo_serve_processes_on_one_bucket_and_database_agree() {
    let endpoint = std::env::var("SILO_TEST_S3_ENDPOINT").expect("SILO_TEST_S3_ENDPOINT: run the tests with tests/run");
    let database =
        std::env::var("SILO_TEST_DATABASE_URL").expect("SILO_TEST_DATABASE_URL: run the tests with tests/run");
    let bucket = format!("serve-nodes-{}", std::process::id());
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let shared = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .endpoint_url(&endpoint)
            .load()
            .await;
        let config = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(true)
            .build();
        aws_sdk_s3::Client::from_conf(config)
            .create_bucket()
            .bucket(&bucket)
            .send()
            .await
            .expect("create the test bucket");
    });
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("db-url"), format!("{database}\n")).unwrap();
    let config = format!(
        "data_dir = \"state\"\n\n[metadata]\nbackend = \"postgres\"\nurl_file = \"{}\"\npool_size = 4\n\n\
         [volumes.public]\nbackend = \"s3\"\nbucket = \"{bucket}\"\nprefix = \"public\"\nendpoint_url = \"{endpoint}\"\n\
         visibility = \"public\"\nread_cache_mib = 16\n",
        root.path().join("db-url").display()
    );
    let nodes: Vec<Server> = ["a", "b"]
        .iter()
        .map(|name| {
            let dir = root.path().join(name);
            std::fs::create_dir(&dir).unwrap();
            std::fs::write(dir.join("silo.toml"), &config).unwrap();
            start(&dir)
        })
        .collect();
    let (a, b) = (&nodes[0].base, &nodes[1].base);
    let auth = format!("Authorization: Bearer {TOKEN}");
    let put = |base: &str, body: &str| {
        curl(&[
            "-X",
            "PUT",
            "-H",
            &auth,
            "-H",
            "Content-Type: text/plain",
            "--data-binary",
            body,
            &format!("{base}/v1/files/public/notes/n.txt"),
        ])
    };
    let file = |base: &str| format!("{base}/v1/files/public/notes/n.txt");

    let (status, _, body) = put(a, "from node a");
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
    // On b at once: listing, HEAD, GET.
    let (_, _, listing) = curl(&[
        "-H",
        &format!("Authorization: Bearer {TOKEN}"),
        &format!("{b}/v1/list/public/notes"),
    ]);
    assert!(String::from_utf8_lossy(&listing).contains("notes/n.txt"));
    let (status, headers, _) = curl(&["-I", &file(b)]);
    assert_eq!((status, header(&headers, "content-length")), (200, Some("11")));
    let (_, _, got) = curl(&[&file(b)]);
    assert_eq!(got, b"from node a");

    // Overwritten and deleted on a: b follows (its disk read cache too).
    let (status, _, body) = put(a, "replaced on node a");
    assert_eq!(status, 201);
    let etag = json(&body)["file"]["etag"].as_str().unwrap().to_owned();
    let started = std::time::Instant::now();
    loop {
        let (_, headers, got) = curl(&[&file(b)]);
        if got == b"replaced on node a" {
            assert_eq!(header(&headers, "etag"), Some(format!("\"{etag}\"").as_str()));
            break;
        }
        assert_eq!(got, b"from node a", "never a mix");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(3),
            "b kept the old version"
        );
    }
    let (status, _, _) = curl(&["-X", "DELETE", "-H", &auth, &file(a)]);
    assert_eq!(status, 204);
    let started = std::time::Instant::now();
    while curl(&[&file(b)]).0 != 404 {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(3),
            "b served a deleted file"
        );
    }
}

/// Every secret `silo serve` takes must be at least 16 characters, and the
/// admin token must differ from the write token: each is refused at start,
/// named, before anything listens.
#[test]
fn short_or_shared_secrets_are_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let long = "0123456789abcdef"; // 16: the shortest accepted
    for (env, why) in [
        (vec![("SILO_TOKEN", "0123456789abcde")], "SILO_TOKEN"),
        (vec![("SILO_TOKEN", "")], "SILO_TOKEN"),
        (
            vec![("SILO_TOKEN", long), ("SILO_ADMIN_TOKEN", "short-admin")],
            "SILO_ADMIN_TOKEN must be at least 16 characters",
        ),
        (
            vec![("SILO_TOKEN", long), ("SILO_ADMIN_TOKEN", long)],
            "SILO_ADMIN_TOKEN must differ from SILO_TOKEN",
        ),
        (
            vec![("SILO_TOKEN", long), ("SILO_SIGNING_KEY", "k")],
            "SILO_SIGNING_KEY must be at least 16 characters",
        ),
    ] {
        let mut command = Command::new(env!("CARGO_BIN_EXE_silo"));
        command
            .current_dir(dir.path())
            .args(["serve", "--listen", "127.0.0.1:0"])
            .env_remove("SILO_TOKEN")
            .env_remove("SILO_ADMIN_TOKEN")
            .env_remove("SILO_SIGNING_KEY")
            .envs(env.iter().copied());
        let out = command.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{env:?} was accepted");
        assert!(stderr.contains(why), "{env:?}: {stderr}");
        assert!(!stderr.contains("listening on"), "{env:?}: {stderr}");
    }
    // 16 characters each, all different: it starts.
    let mut command = Command::new(env!("CARGO_BIN_EXE_silo"));
    command
        .current_dir(dir.path())
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("SILO_TOKEN", long)
        .env("SILO_ADMIN_TOKEN", "fedcba9876543210")
        .env("SILO_SIGNING_KEY", "signing-key-0123");
    drop(listening(command));
}

/// A signed URL opens its file until its expiry, and not after.
#[test]
fn a_signed_url_stops_working_when_it_expires() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let base = &server.base;
    let auth = format!("Authorization: Bearer {TOKEN}");
    let secret = format!("{base}/v1/files/private/notes/plan.txt");
    let (status, _, _) = curl(&["-X", "PUT", "-H", &auth, "--data-binary", "the plan", &secret]);
    assert_eq!(status, 201);
    let (status, _, body) = curl(&[
        "-H",
        &auth,
        &format!("{base}/v1/sign/private/notes/plan.txt?expires_in=2"),
    ]);
    assert_eq!(status, 200);
    let signed = json(&body);
    let url = format!("{base}{}", signed["url"].as_str().unwrap());
    let expires = signed["expires"].as_u64().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!((now + 1..=now + 3).contains(&expires), "expires {expires}, now {now}");
    assert!(url.contains(&format!("expires={expires}")), "{url}");
    let (status, _, body) = curl(&[&url]);
    assert_eq!((status, body.as_slice()), (200, &b"the plan"[..]));
    // Wait past the expiry (whole seconds), then the same URL is refused.
    while std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        <= expires
    {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let (status, _, body) = curl(&[&url]);
    assert_eq!(status, 401, "{}", String::from_utf8_lossy(&body));
    // Moving the expiry forward breaks the signature.
    let extended = url.replace(&format!("expires={expires}"), &format!("expires={}", expires + 3600));
    let (status, _, _) = curl(&[&extended]);
    assert_eq!(status, 401);
}

/// HTML, SVG, JavaScript and XML are served as attachments with `nosniff`,
/// from a public and from a private volume (through the token, a HEAD, and a
/// signed URL).
#[test]
fn active_content_is_served_as_an_attachment_from_every_volume() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let base = &server.base;
    let auth = format!("Authorization: Bearer {TOKEN}");
    let files: [(&str, &str, &[u8]); 4] = [
        (
            "page.html",
            "text/html",
            b"<html><script>alert(document.cookie)</script></html>",
        ),
        (
            "logo.svg",
            "image/svg+xml",
            b"<svg xmlns=\"http://www.w3.org/2000/svg\"><rect width=\"1\" height=\"1\"/></svg>",
        ),
        ("app.js", "text/javascript", b"alert(document.cookie)"),
        ("feed.xml", "application/xml", b"<?xml version=\"1.0\"?><feed/>"),
    ];
    for volume in ["public", "private"] {
        for (name, content_type, body) in files {
            let url = format!("{base}/v1/files/{volume}/active/{name}");
            let body_file = dir.path().join("body");
            std::fs::write(&body_file, body).unwrap();
            let (status, _, reply) = curl(&[
                "-X",
                "PUT",
                "-H",
                &auth,
                "-H",
                &format!("Content-Type: {content_type}"),
                "--data-binary",
                &format!("@{}", body_file.display()),
                &url,
            ]);
            assert_eq!(status, 201, "{volume}/{name}: {}", String::from_utf8_lossy(&reply));
            let (status, _, reply) = curl(&[
                "-H",
                &auth,
                &format!("{base}/v1/sign/{volume}/active/{name}?expires_in=60"),
            ]);
            assert_eq!(status, 200, "{}", String::from_utf8_lossy(&reply));
            let signed = format!("{base}{}", json(&reply)["url"].as_str().unwrap());
            let reads: Vec<Vec<&str>> = vec![vec!["-H", &auth, &url], vec!["-I", "-H", &auth, &url], vec![&signed]];
            for args in reads {
                let (status, headers, _) = curl(&args);
                assert_eq!(status, 200, "{volume}/{name} {args:?}");
                assert_eq!(
                    header(&headers, "x-content-type-options"),
                    Some("nosniff"),
                    "{volume}/{name} {args:?}"
                );
                let disposition = header(&headers, "content-disposition");
                assert!(
                    disposition.is_some_and(|d| d.starts_with("attachment")),
                    "{volume}/{name} {args:?}: {disposition:?}"
                );
            }
        }
    }
}

/// A site with a public local volume and the S3 endpoint, in `dir`.
fn s3_site(dir: &Path) {
    std::fs::write(
        dir.join("silo.toml"),
        "[volumes.public]\nbackend = \"local\"\npath = \"files/public\"\nvisibility = \"public\"\n\n\
         [s3_api]\nlisten = \"127.0.0.1:0\"\n",
    )
    .unwrap();
}

/// `silo serve` for the site in `dir`, with no S3 key of its own.
fn serve_in(dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_silo"));
    command
        .current_dir(dir)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("SILO_TOKEN", TOKEN)
        .env_remove("SILO_ADMIN_TOKEN")
        .env_remove("SILO_S3_ACCESS_KEY")
        .env_remove("SILO_S3_SECRET_KEY");
    command
}

/// The site in `dir` served with the quick-start S3 key, `hello` stored
/// at `public/a.txt` through the sidecar: the server and the S3 URL.
fn serving_s3(dir: &Path) -> (Server, String) {
    let mut command = serve_in(dir);
    command
        .env("SILO_S3_ACCESS_KEY", "QUICKSTART")
        .env("SILO_S3_SECRET_KEY", "quick-start-secret-0123");
    let server = listening(command);
    let s3 = server.s3.clone().expect("the S3 endpoint's address on stderr");
    let auth = format!("Authorization: Bearer {TOKEN}");
    let (status, _, _) = curl(&[
        "-X",
        "PUT",
        "-H",
        &auth,
        "--data-binary",
        "hello",
        &format!("{}/v1/files/public/a.txt", server.base),
    ]);
    assert_eq!(status, 201);
    (server, s3)
}

/// `silo serve` with `[s3_api]` runs the S3 endpoint beside the sidecar, on
/// the same storage: what the sidecar stored is read over S3, an unsigned
/// write is refused, and without any principal it does not start.
#[test]
fn silo_serve_runs_the_s3_endpoint_beside_the_sidecar() {
    let dir = tempfile::tempdir().unwrap();
    s3_site(dir.path());
    let out = serve_in(dir.path()).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("the S3 endpoint has no principals with an S3 key"),
        "{stderr}"
    );

    let (_server, s3) = serving_s3(dir.path());
    let (status, headers, body) = curl(&[&format!("{s3}/public/a.txt")]);
    assert_eq!((status, body.as_slice()), (200, &b"hello"[..]));
    assert_eq!(header(&headers, "x-content-type-options"), Some("nosniff"));
    let (status, _, body) = curl(&["-X", "PUT", "--data-binary", "planted", &format!("{s3}/public/b.txt")]);
    assert_eq!(status, 403, "{}", String::from_utf8_lossy(&body));
    assert!(!dir.path().join("files/public/b.txt").exists());
}

/// Anyone who can reach the S3 endpoint must not be able to write the
/// operator's log at will: requests refused for a 40 KiB Range header, a
/// 60 KiB key and a 60 KiB malformed XML body (signed) leave the log at
/// its default level as small as it was.
#[test]
fn clients_cannot_write_the_log_at_will() {
    let dir = tempfile::tempdir().unwrap();
    s3_site(dir.path());
    let (server, s3) = serving_s3(dir.path());
    let before = server.log.lock().unwrap().len();

    let ranges = format!("Range: bytes={}0-1", "0-1,".repeat(10_000));
    let (status, _, _) = curl(&["-H", &ranges, &format!("{s3}/public/a.txt")]);
    assert!(status == 200 || status >= 400, "{status}");
    let long_key = "k".repeat(60_000);
    let (status, _, _) = curl(&[&format!("{s3}/public/{long_key}")]);
    assert!(status >= 400, "{status}");
    let body = format!("<Delete><Object><Key>{}", "x".repeat(60_000));
    let (status, _, body) = curl(&[
        "--aws-sigv4",
        "aws:amz:us-east-1:s3",
        "--user",
        "QUICKSTART:quick-start-secret-0123",
        "-X",
        "POST",
        "-H",
        "content-type: application/xml",
        "--data-binary",
        &body,
        &format!("{s3}/public?delete"),
    ]);
    assert!(status >= 400, "{status}: {}", String::from_utf8_lossy(&body));
    // The answers are sent before the log is looked at.
    std::thread::sleep(std::time::Duration::from_millis(200));
    let log = server.log.lock().unwrap().clone();
    let written = &log[before..];
    assert!(
        written.len() < 1024,
        "{} bytes logged:\n{}",
        written.len(),
        &written[..written.len().min(2000)]
    );
}

/// `host/examples/embed.rs`, the README's "Embedding the host": a CMS of
/// its own routes over Silo's core calls, built by `tests/run`
/// (`SILO_TEST_EMBED`), serving the built-in default configuration.
#[test]
fn the_embedding_example_uploads_serves_and_lists_through_the_core() {
    let binary =
        std::env::var("SILO_TEST_EMBED").expect("SILO_TEST_EMBED must name the built example (tests/run builds it)");
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(binary)
        .args(["127.0.0.1:0", dir.path().to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the example");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let base = lines
        .next()
        .expect("the example exited before listening")
        .unwrap()
        .strip_prefix("embed: listening on ")
        .expect("the example says where it listens")
        .to_owned();
    let server = Server {
        child,
        base,
        s3: None,
        log: Default::default(),
    };
    let base = &server.base;

    let note = format!("{base}/files/notes/hello.txt");
    let (status, _, body) = curl(&[
        "-X",
        "POST",
        "-H",
        "content-type: text/plain",
        "--data-binary",
        "hello from the cms",
        &format!("{base}/upload/notes/hello.txt"),
    ]);
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
    assert_eq!(json(&body)["status"], "accepted");
    // Read as a visitor: Silo's headers, conditions and ranges.
    let (status, headers, body) = curl(&[&note]);
    assert_eq!((status, body.as_slice()), (200, &b"hello from the cms"[..]));
    assert_eq!(header(&headers, "x-content-type-options"), Some("nosniff"));
    assert_eq!(header(&headers, "cache-control"), Some("public, max-age=3600"));
    let etag = header(&headers, "etag").unwrap().to_owned();
    let (status, _, _) = curl(&["-H", &format!("if-none-match: {etag}"), &note]);
    assert_eq!(status, 304);
    let (status, _, body) = curl(&["-H", "range: bytes=0-4", &note]);
    assert_eq!((status, body.as_slice()), (206, &b"hello"[..]));
    // Active content is an attachment; what the plugins or the policy
    // refuse is not stored.
    let (status, _, _) = curl(&[
        "-X",
        "POST",
        "-H",
        "content-type: text/html",
        "--data-binary",
        "<p>hi</p>",
        &format!("{base}/upload/notes/page.html"),
    ]);
    assert_eq!(status, 201);
    let (_, headers, _) = curl(&[&format!("{base}/files/notes/page.html")]);
    assert_eq!(header(&headers, "content-disposition"), Some("attachment"));
    let (status, _, body) = curl(&[
        "-X",
        "POST",
        "--data-binary",
        "<?php echo 1; ?>",
        &format!("{base}/upload/notes/shell.php"),
    ]);
    assert_eq!(status, 422, "{}", String::from_utf8_lossy(&body));
    assert_eq!(curl(&[&format!("{base}/files/notes/shell.php")]).0, 404);
    // The folder, through the core's listing.
    let (status, _, body) = curl(&[&format!("{base}/folder/notes/")]);
    assert_eq!(status, 200);
    let listed = json(&body);
    let paths: Vec<&str> = listed["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["notes/hello.txt", "notes/page.html"]);
}
