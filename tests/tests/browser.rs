//! Browser uploads through the S3 endpoint: a volume's CORS rules (kept in
//! the metadata engine and answered by every node, or fixed by the
//! configuration), preflights and the CORS headers of answers, and POST
//! Object with a signed POST policy (boto3's `generate_presigned_post`,
//! and a real browser on a page of another origin).

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CorsConfiguration, CorsRule};
use silo_tests::TestSilo;
use silo_tests::http::{Client, Reply};
use silo_tests::s3api::{Endpoint, post_fields, principal, two_nodes};

const SECRET: &str = "cms-secret-0123456789";
const ADMIN_SECRET: &str = "admin-secret-0123456789";
const CMS: &str = "https://cms.example.test";

fn credentials() -> String {
    [
        principal(
            "cms",
            "CMSKEY",
            SECRET,
            r#"[{ volume = "public", access = ["read", "write", "delete"] }, { volume = "private", access = ["read", "write", "delete"] }]"#,
        ),
        principal(
            "admin",
            "ADMINKEY",
            ADMIN_SECRET,
            r#"[{ volume = "public", access = ["read", "admin"] }, { volume = "private", access = ["read", "admin"] }]"#,
        ),
    ]
    .concat()
}

/// Where browser uploads are tried: one node on local volumes, one on S3
/// volumes, and two nodes on S3 volumes sharing a PostgreSQL behind a
/// round-robin balancer (each request to the next node).
const SETUPS: [&str; 3] = ["local", "s3", "two nodes"];

/// The endpoint of `setup` with `pipeline`, and the directories it needs.
async fn site(setup: &str, pipeline: &str, hint: &str) -> (Endpoint, Vec<tempfile::TempDir>) {
    let t = match setup {
        "local" => TestSilo::new(pipeline, &[]).await.unwrap(),
        "s3" => TestSilo::on_s3(pipeline, &[], hint).await.unwrap().0,
        _ => {
            let (_, endpoint, _, dirs) = two_nodes(pipeline, &credentials(), hint).await;
            return (endpoint, dirs);
        }
    };
    let endpoint = Endpoint::start(Arc::new(t.silo), &credentials(), Duration::from_secs(30)).await;
    (endpoint, vec![t.dir])
}

fn rule(origins: &[&str], methods: &[&str], headers: &[&str], expose: &[&str], max_age: Option<i32>) -> CorsRule {
    let mut rule = CorsRule::builder();
    for o in origins {
        rule = rule.allowed_origins(*o);
    }
    for m in methods {
        rule = rule.allowed_methods(*m);
    }
    for h in headers {
        rule = rule.allowed_headers(*h);
    }
    for e in expose {
        rule = rule.expose_headers(*e);
    }
    rule.set_max_age_seconds(max_age).build().unwrap()
}

async fn preflight(endpoint: &Endpoint, path: &str, origin: &str, method: &str, headers: &str) -> Reply {
    let mut sent = vec![("origin", origin), ("access-control-request-method", method)];
    if !headers.is_empty() {
        sent.push(("access-control-request-headers", headers));
    }
    Client::default()
        .send(
            hyper::Method::OPTIONS,
            &format!("{}{path}", endpoint.url()),
            &sent,
            bytes::Bytes::new(),
        )
        .await
        .unwrap()
}

/// Each node's endpoint answers from the rules another stored: they are
/// the metadata engine's.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cors_rules_are_kept_per_volume_shared_by_nodes_and_answer_preflights() {
    let (_, balanced, _, _dirs) = two_nodes("", &credentials(), "browser-cors").await;
    let [ea, eb] = [&balanced.nodes[0], &balanced.nodes[1]];
    let (cms, admin_a, admin_b) = (
        ea.client("CMSKEY", SECRET),
        ea.client("ADMINKEY", ADMIN_SECRET),
        eb.client("ADMINKEY", ADMIN_SECRET),
    );

    let none = cms.get_bucket_cors().bucket("public").send().await.unwrap_err();
    assert_eq!(none.code(), Some("NoSuchCORSConfiguration"));
    let rules = CorsConfiguration::builder()
        .cors_rules(rule(
            &[CMS],
            &["PUT", "POST", "GET"],
            &["content-type", "x-amz-*"],
            &["ETag"],
            Some(600),
        ))
        .cors_rules(rule(&["*"], &["GET"], &[], &[], None))
        .build()
        .unwrap();
    // Changing them takes the admin grant, which the CMS has not.
    let refused = cms
        .put_bucket_cors()
        .bucket("public")
        .cors_configuration(rules.clone())
        .send()
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Some("AccessDenied"), "{refused:?}");
    admin_a
        .put_bucket_cors()
        .bucket("public")
        .cors_configuration(rules.clone())
        .send()
        .await
        .unwrap();
    // The other node answers them at once.
    let got = admin_b.get_bucket_cors().bucket("public").send().await.unwrap();
    assert_eq!(got.cors_rules(), rules.cors_rules());

    let ok = preflight(eb, "/public/uploads/a.jpg", CMS, "PUT", "Content-Type, X-Amz-Date").await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(ok.header("access-control-allow-origin"), Some(CMS));
    assert_eq!(ok.header("access-control-allow-credentials"), Some("true"));
    assert_eq!(ok.header("access-control-allow-methods"), Some("PUT, POST, GET"));
    assert_eq!(
        ok.header("access-control-allow-headers"),
        Some("content-type, x-amz-date")
    );
    assert_eq!(ok.header("access-control-max-age"), Some("600"));
    // Another origin, a header no rule allows, a method none does.
    for (origin, method, headers) in [
        ("https://evil.test", "PUT", ""),
        (CMS, "PUT", "authorization"),
        (CMS, "DELETE", ""),
    ] {
        let refused = preflight(eb, "/public/uploads/a.jpg", origin, method, headers).await;
        assert_eq!(refused.status, 403, "{origin} {method} {headers}");
        assert!(
            refused.text().contains("This CORS request is not allowed"),
            "{}",
            refused.text()
        );
        assert_eq!(refused.header("access-control-allow-origin"), None);
    }
    // A volume without rules, and one that does not exist, look alike.
    let private = preflight(eb, "/private/a", CMS, "PUT", "").await;
    let nosuch = preflight(eb, "/nosuch/a", CMS, "PUT", "").await;
    assert_eq!((private.status.as_u16(), nosuch.status.as_u16()), (403, 403));
    assert!(private.text().contains("CORS is not enabled for this bucket"));
    assert_eq!(private.text(), nosuch.text());

    // Answers carry the rule's headers: the CMS's origin with its exposed
    // headers, anyone else `*` by the second rule; a private volume none.
    cms.put_object()
        .bucket("public")
        .key("a.txt")
        .body(ByteStream::from_static(b"hello"))
        .send()
        .await
        .unwrap();
    cms.put_object()
        .bucket("private")
        .key("a.txt")
        .body(ByteStream::from_static(b"hello"))
        .send()
        .await
        .unwrap();
    let get = |origin: &'static str, path: &'static str| {
        let url = format!("{}{path}", eb.url());
        async move { Client::default().get(&url, &[("origin", origin)]).await.unwrap() }
    };
    let mine = get(CMS, "/public/a.txt").await;
    assert_eq!(mine.status, 200);
    assert_eq!(mine.header("access-control-allow-origin"), Some(CMS));
    assert_eq!(mine.header("access-control-expose-headers"), Some("ETag"));
    assert!(mine.headers.get_all("vary").iter().any(|v| v == "Origin"));
    let theirs = get("https://evil.test", "/public/a.txt").await;
    assert_eq!(theirs.header("access-control-allow-origin"), Some("*"));
    assert_eq!(theirs.header("access-control-allow-credentials"), None);
    let unruled = get(CMS, "/private/a.txt").await;
    assert_eq!(unruled.status, 403, "anonymous");
    assert_eq!(unruled.header("access-control-allow-origin"), None);

    // Rules S3 would refuse are refused by name.
    let bad = admin_a
        .put_bucket_cors()
        .bucket("private")
        .cors_configuration(
            CorsConfiguration::builder()
                .cors_rules(rule(&[CMS], &["PATCH"], &[], &[], None))
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Some("InvalidRequest"), "{bad:?}");
    assert!(bad.message().unwrap_or_default().contains("PATCH"));

    // Deleted on one node, gone on the other.
    admin_b.delete_bucket_cors().bucket("public").send().await.unwrap();
    let after = preflight(ea, "/public/uploads/a.jpg", CMS, "PUT", "").await;
    assert_eq!(after.status, 403);
    let none = admin_a.get_bucket_cors().bucket("public").send().await.unwrap_err();
    assert_eq!(none.code(), Some("NoSuchCORSConfiguration"));
}

/// Rules in the configuration are the volume's, whatever its clients ask.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_rules_set_in_the_configuration_are_fixed() {
    let volumes = format!(
        "[volumes.public]\nbackend = \"local\"\npath = \"volumes/public\"\nvisibility = \"public\"\n\
         [[volumes.public.cors]]\nallowed_origins = [\"{CMS}\"]\nallowed_methods = [\"PUT\"]\n\
         allowed_headers = [\"*\"]\n\n\
         [volumes.private]\nbackend = \"local\"\npath = \"volumes/private\"\n"
    );
    let t = TestSilo::with_volumes("", &[], &volumes).await.unwrap();
    let endpoint = Endpoint::start(Arc::new(t.silo), &credentials(), Duration::from_secs(30)).await;
    let admin = endpoint.client("ADMINKEY", ADMIN_SECRET);
    let got = admin.get_bucket_cors().bucket("public").send().await.unwrap();
    assert_eq!(got.cors_rules()[0].allowed_origins(), [CMS]);
    let refused = admin
        .put_bucket_cors()
        .bucket("public")
        .cors_configuration(
            CorsConfiguration::builder()
                .cors_rules(rule(&["*"], &["PUT"], &[], &[], None))
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Some("AccessDenied"));
    assert!(
        refused.message().unwrap_or_default().contains("configuration"),
        "{refused:?}"
    );
    let refused = admin.delete_bucket_cors().bucket("public").send().await.unwrap_err();
    assert_eq!(refused.code(), Some("AccessDenied"));
    let ok = preflight(&endpoint, "/public/x", CMS, "PUT", "x-anything").await;
    assert_eq!(ok.status, 200);
    assert_eq!(ok.header("access-control-allow-headers"), Some("x-anything"));
    assert_eq!(
        preflight(&endpoint, "/public/x", "https://evil.test", "PUT", "")
            .await
            .status,
        403
    );
}

/// boto3's POST policies, on local and S3 volumes and two nodes: stored and judged as a
/// PUT, answered as S3 answers, and refused whenever the policy does not
/// hold (tests/clients/s3_post_boto3.py).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn form_posts_are_held_to_their_policy_and_judged_like_puts() {
    let python = std::env::var("SILO_TEST_BOTO3_PYTHON")
        .expect("SILO_TEST_BOTO3_PYTHON is not set: run the tests with tests/run, which installs boto3");
    for on in SETUPS {
        let (endpoint, _dirs) = site(on, silo_tests::EXAMPLE_PIPELINE, "browser-post").await;
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/clients/s3_post_boto3.py").to_owned();
        let args = vec![script, endpoint.url(), "CMSKEY".into(), SECRET.into()];
        let work = tempfile::tempdir().unwrap();
        let (ok, out, err) = silo_tests::run_tool(&python, args, work.path(), Vec::new()).await;
        assert!(ok && out.trim() == "ok", "on {on}: {out}{err}");
    }
}

/// The page a CMS serves its editors, on its own origin: it uploads with a
/// presigned PUT and with a form POST, reads Silo's answers (refusals
/// included), and reports what it saw to `/report`.
const PAGE: &str = r#"<!doctype html><meta charset="utf-8"><title>upload</title><script>
const cfg = CONFIG;
async function answer(r) { return {status: r.status, etag: r.headers.get('ETag'), body: await r.text()}; }
function form(name, text) {
  const f = new FormData();
  for (const [k, v] of cfg.fields) f.append(k, v);
  f.append('file', new Blob([text], {type: 'text/plain'}), name);
  return f;
}
async function run() {
  const out = {};
  try {
    out.put = await answer(await fetch(cfg.put, {method: 'PUT', body: 'put by a browser', headers: {'Content-Type': 'text/plain'}}));
    out.putPhp = await answer(await fetch(cfg.putPhp, {method: 'PUT', body: '<?php echo 1;', headers: {'Content-Type': 'text/plain'}}));
    out.post = await answer(await fetch(cfg.post, {method: 'POST', body: form('form.txt', 'posted by a browser')}));
    out.postPhp = await answer(await fetch(cfg.post, {method: 'POST', body: form('evil.php', '<?php echo 1;')}));
    try {
      await fetch(cfg.unruled, {method: 'PUT', body: 'x', headers: {'Content-Type': 'text/plain'}});
      out.unruled = 'answered';
    } catch (e) { out.unruled = 'blocked: ' + e.name; }
  } catch (e) { out.error = String(e); }
  await fetch('/report', {method: 'POST', body: JSON.stringify(out)});
}
run();
</script>"#;

/// Chromium, headless, on a page of another origin (another port): a
/// presigned PUT after its preflight and a multipart form POST are
/// stored, a refused upload shows the page Silo's refusal, and a volume
/// without rules is closed to the page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_on_another_origin_uploads_by_presigned_put_and_form_post() {
    let chromium = std::env::var("SILO_TEST_CHROMIUM")
        .expect("SILO_TEST_CHROMIUM is not set: run the tests with tests/run, which installs Chromium");
    for on in SETUPS {
        let (endpoint, _dirs) = site(on, silo_tests::EXAMPLE_PIPELINE, "browser-chromium").await;
        let (cms, admin) = (
            endpoint.client("CMSKEY", SECRET),
            endpoint.client("ADMINKEY", ADMIN_SECRET),
        );

        let page = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let origin = format!("http://{}", page.local_addr().unwrap());
        admin
            .put_bucket_cors()
            .bucket("public")
            .cors_configuration(
                CorsConfiguration::builder()
                    .cors_rules(rule(&[&origin], &["PUT", "POST", "GET"], &["*"], &["ETag"], Some(60)))
                    .build()
                    .unwrap(),
            )
            .send()
            .await
            .unwrap();
        let presign = |bucket: &'static str, key: &'static str| {
            let cms = cms.clone();
            async move {
                let config = aws_sdk_s3::presigning::PresigningConfig::expires_in(Duration::from_secs(600)).unwrap();
                let request = cms
                    .put_object()
                    .bucket(bucket)
                    .key(key)
                    .presigned(config)
                    .await
                    .unwrap();
                request.uri().to_owned()
            }
        };
        let config = serde_json::json!({
            "put": presign("public", "browser/put.txt").await,
            "putPhp": presign("public", "browser/shell.php").await,
            "unruled": presign("private", "browser/put.txt").await,
            "post": format!("{}/public", endpoint.url()),
            "fields": post_fields("public", "browser/", "CMSKEY", SECRET),
        });
        let html = PAGE.replace("CONFIG", &config.to_string());
        let (report_tx, mut report_rx) = tokio::sync::mpsc::channel::<String>(1);
        let app = axum::Router::new()
            .route(
                "/",
                axum::routing::get(move || async move { axum::response::Html(html) }),
            )
            .route(
                "/report",
                axum::routing::post(move |body: String| async move {
                    let _ = report_tx.send(body).await;
                }),
            );
        let server = tokio::spawn(async move { axum::serve(page, app).await.unwrap() });
        let profile = tempfile::tempdir().unwrap();
        let mut browser = std::process::Command::new(&chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--disable-extensions",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(format!("{origin}/"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start Chromium");
        let report = match tokio::time::timeout(Duration::from_secs(90), report_rx.recv()).await {
            Ok(Some(report)) => report,
            _ => {
                let _ = browser.kill();
                let out = browser.wait_with_output().unwrap();
                panic!(
                    "on {on}: the page reported nothing: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        };
        let _ = browser.kill();
        let _ = browser.wait();
        server.abort();
        let report: serde_json::Value = serde_json::from_str(&report).unwrap();
        eprintln!("on {on}: the page saw {report:#}");
        assert!(report.get("error").is_none(), "on {on}: {report:#}");

        // The presigned PUT, after its preflight: stored, its ETag readable.
        use md5::Digest;
        let put_etag = format!("\"{:x}\"", md5::Md5::digest(b"put by a browser"));
        assert_eq!(report["put"]["status"], 200, "on {on}: {report:#}");
        assert_eq!(report["put"]["etag"], put_etag.as_str(), "on {on}: {report:#}");
        // The form POST: 204, stored under the name the browser gave.
        assert_eq!(report["post"]["status"], 204, "on {on}: {report:#}");
        let stored = cms
            .get_object()
            .bucket("public")
            .key("browser/form.txt")
            .send()
            .await
            .unwrap();
        assert_eq!(
            stored.body.collect().await.unwrap().into_bytes().as_ref(),
            b"posted by a browser"
        );
        let stored = cms
            .get_object()
            .bucket("public")
            .key("browser/put.txt")
            .send()
            .await
            .unwrap();
        assert_eq!(
            stored.body.collect().await.unwrap().into_bytes().as_ref(),
            b"put by a browser"
        );
        // Refusals reach the page, with Silo's reason; nothing is stored.
        for (what, key) in [("putPhp", "browser/shell.php"), ("postPhp", "browser/evil.php")] {
            assert_eq!(report[what]["status"], 403, "on {on}: {report:#}");
            let body = report[what]["body"].as_str().unwrap();
            assert!(
                body.contains("<Code>AccessDenied</Code>") && body.contains(".php"),
                "on {on}: {body}"
            );
            let gone = cms.head_object().bucket("public").key(key).send().await.unwrap_err();
            assert_eq!(
                gone.raw_response().map(|r| r.status().as_u16()),
                Some(404),
                "on {on}: {key}"
            );
        }
        // A volume with no rules is closed to the page.
        assert_eq!(report["unruled"], "blocked: TypeError", "on {on}: {report:#}");
        let none = cms
            .head_object()
            .bucket("private")
            .key("browser/put.txt")
            .send()
            .await
            .unwrap_err();
        assert_eq!(none.raw_response().map(|r| r.status().as_u16()), Some(404));
    }
}
