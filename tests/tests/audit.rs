//! The audit trail: what each door, each plugin and the command line
//! records, on SQLite and on PostgreSQL; a change whose record cannot be
//! written is not made; retention prunes in batches, resumes, and runs on
//! one node at a time.

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;
use hyper::{Method, StatusCode};
use silo_host::audit::{Action, Filter, Record};
use silo_host::cache::MetadataCache;
use silo_host::store::now_ms;
use silo_tests::http::{ADMIN_TOKEN, Client, Sidecar, TOKEN};
use silo_tests::s3api::{Endpoint, principal};
use silo_tests::{PROBE, TestSilo, pg, probe_stage, sha256_hex};

const PUBLIC_RW: &str = r#"{ volume = "public", access = ["read", "write", "delete"] }"#;
const CMS_SECRET: &str = "cms-secret-0123456789";

/// Stages that derive a file, derive one then refuse, and delete a file.
fn pipeline() -> String {
    [
        probe_stage("deriver", "text/x-derive", r#"mode = "slow", ms = "0""#, PUBLIC_RW),
        probe_stage(
            "refuser",
            "text/x-refuse",
            r#"mode = "slow", ms = "0", reject = "1""#,
            PUBLIC_RW,
        ),
        probe_stage(
            "remover",
            "text/x-remove",
            r#"mode = "remove", volume = "public", path = "docs/victim.txt""#,
            PUBLIC_RW,
        ),
    ]
    .concat()
}

/// A Silo on `engine` (`sqlite` or `postgres`) with local volumes, named
/// `node-a` in the trail; the database's URL for PostgreSQL.
async fn silo_on(engine: &str, extra: &str) -> (TestSilo, Option<String>, Option<tempfile::NamedTempFile>) {
    let volumes = "[volumes.public]\nbackend = \"local\"\npath = \"volumes/public\"\nvisibility = \"public\"\n\n\
                   [volumes.private]\nbackend = \"local\"\npath = \"volumes/private\"\n";
    let (metadata, url, url_file) = match engine {
        "sqlite" => (String::new(), None, None),
        _ => {
            let url = pg::database("audit").await;
            let file = tempfile::NamedTempFile::new().unwrap();
            std::fs::write(file.path(), &url).unwrap();
            (
                format!(
                    "[metadata]\nbackend = \"postgres\"\nurl_file = \"{}\"\n",
                    file.path().display()
                ),
                Some(url),
                Some(file),
            )
        }
    };
    let text = format!("node = \"node-a\"\n{metadata}\n[audit]\n{extra}\n\n{volumes}");
    let t = TestSilo::with_volumes(&pipeline(), &[("probe.wasm", PROBE)], &text)
        .await
        .unwrap();
    (t, url, url_file)
}

async fn records(cache: &MetadataCache, filter: Filter) -> Vec<Record> {
    cache.engine().audit_query(&filter, None, 1000).await.unwrap()
}

fn by_principal(name: &str) -> Filter {
    Filter {
        principal: Some(name.to_owned()),
        ..Default::default()
    }
}

fn by_request(id: &str) -> Filter {
    Filter {
        request_id: Some(id.to_owned()),
        ..Default::default()
    }
}

/// (action, principal, path, plugin) of each record.
fn summary(records: &[Record]) -> Vec<(Action, String, String, Option<String>)> {
    records
        .iter()
        .map(|r| (r.action, r.principal.clone(), r.path.clone(), r.plugin.clone()))
        .collect()
}

fn row(action: Action, principal: &str, path: &str, plugin: Option<&str>) -> (Action, String, String, Option<String>) {
    (action, principal.into(), path.into(), plugin.map(str::to_owned))
}

fn bearer() -> String {
    format!("Bearer {TOKEN}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_change_and_refusal_is_recorded_with_who_and_which_request() {
    for engine in ["sqlite", "postgres"] {
        let (t, url, _url_file) = silo_on(engine, "").await;
        let public = t.volume_dir("public");
        let silo = Arc::new(t.silo);
        let cache = silo.storage().cache();
        let sidecar = Sidecar::start(silo.clone()).await;
        let credentials = principal(
            "cms",
            "CMSKEY",
            CMS_SECRET,
            r#"[{ volume = "public", access = ["read", "write", "delete"] }]"#,
        );
        let s3 = Endpoint::start(silo.clone(), &credentials, Duration::from_secs(30)).await;
        let s3 = s3.client("CMSKEY", CMS_SECRET);
        let client = Client::default();
        let auth = bearer();
        let auth = [("authorization", auth.as_str())];

        // An accepted upload whose plugin derived a file: both recorded,
        // under one request id, which the report and HEAD both give.
        let put = client
            .put(&sidecar.url("/v1/files/public/docs/a.txt"), "text/x-derive", "hello")
            .await
            .unwrap();
        assert_eq!(put.status, StatusCode::CREATED, "{engine}: {}", put.text());
        let report = put.json();
        let r1 = report["request_id"].as_str().unwrap().to_owned();
        assert_eq!(put.header("x-silo-request-id"), Some(r1.as_str()), "{engine}");
        let etag = report["file"]["etag"].as_str().unwrap().to_owned();
        let trail = records(cache, by_request(&r1)).await;
        assert_eq!(
            summary(&trail),
            [
                row(Action::Derived, "deriver", "slow/docs/a.txt", Some("deriver")),
                row(Action::Put, "token", "docs/a.txt", None),
            ],
            "{engine}"
        );
        let stored = &trail[1];
        assert_eq!(
            (stored.size, stored.etag.as_deref(), stored.sha256.as_deref()),
            (Some(5), Some(etag.as_str()), Some(sha256_hex(b"hello").as_str())),
            "{engine}"
        );
        assert!(
            trail.iter().all(|r| r.node == "node-a" && r.volume == "public"),
            "{engine}"
        );
        assert!(
            trail[0].sha256.is_none(),
            "{engine}: a derived file was not hashed by Silo"
        );
        for path in ["docs/a.txt", "slow/docs/a.txt"] {
            let head = client
                .send(
                    Method::HEAD,
                    &sidecar.url(&format!("/v1/files/public/{path}")),
                    &[],
                    Bytes::new(),
                )
                .await
                .unwrap();
            assert_eq!(head.header("x-silo-request-id"), Some(r1.as_str()), "{engine}: {path}");
        }

        // A refused upload: what its plugin wrote is rolled back, and the
        // refusal names the plugin and its reason; nothing is stored.
        let refused = client
            .put(&sidecar.url("/v1/files/public/docs/b.txt"), "text/x-refuse", "nope")
            .await
            .unwrap();
        assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY, "{engine}");
        let r2 = refused.header("x-silo-request-id").unwrap().to_owned();
        let trail = records(cache, by_request(&r2)).await;
        assert_eq!(
            summary(&trail),
            [
                row(Action::Derived, "refuser", "slow/docs/b.txt", Some("refuser")),
                row(Action::Rollback, "token", "slow/docs/b.txt", None),
                row(Action::Refused, "token", "docs/b.txt", Some("refuser")),
            ],
            "{engine}"
        );
        let refusal = &trail[2];
        assert_eq!(refusal.reason.as_deref(), Some("slow and refused"), "{engine}");
        assert_eq!(
            refusal.sha256.as_deref(),
            Some(sha256_hex(b"nope").as_str()),
            "{engine}"
        );
        assert_eq!((refusal.etag.as_deref(), refusal.size), (None, Some(4)), "{engine}");
        assert!(!public.join("docs/b.txt").exists() && !public.join("slow/docs/b.txt").exists());

        // A plugin's delete is recorded under the plugin.
        client
            .put(&sidecar.url("/v1/files/public/docs/victim.txt"), "text/plain", "v")
            .await
            .unwrap();
        let trigger = client
            .put(&sidecar.url("/v1/files/public/trigger.txt"), "text/x-remove", "go")
            .await
            .unwrap();
        assert_eq!(trigger.status, StatusCode::CREATED, "{engine}: {}", trigger.text());
        let r3 = trigger.header("x-silo-request-id").unwrap().to_owned();
        assert_eq!(
            summary(&records(cache, by_request(&r3)).await),
            [
                row(Action::Delete, "remover", "docs/victim.txt", Some("remover")),
                row(Action::Put, "token", "trigger.txt", None),
            ],
            "{engine}"
        );

        // The S3 door: a principal's put, copy and delete.
        s3.put_object()
            .bucket("public")
            .key("s3/c.txt")
            .content_type("text/plain")
            .body(ByteStream::from_static(b"from s3"))
            .send()
            .await
            .unwrap();
        s3.copy_object()
            .bucket("public")
            .key("s3/d.txt")
            .copy_source("public/s3/c.txt")
            .send()
            .await
            .unwrap();
        s3.delete_object()
            .bucket("public")
            .key("s3/c.txt")
            .send()
            .await
            .unwrap();
        let cms = records(cache, by_principal("cms")).await;
        assert_eq!(
            summary(&cms),
            [
                row(Action::Put, "cms", "s3/c.txt", None),
                row(Action::Put, "cms", "s3/d.txt", None),
                row(Action::Delete, "cms", "s3/c.txt", None),
            ],
            "{engine}"
        );
        assert_eq!(cms[0].sha256.as_deref(), Some(sha256_hex(b"from s3").as_str()));
        assert_eq!(
            cms[2].etag, cms[0].etag,
            "{engine}: the delete names the version it removed"
        );
        assert_eq!(
            cms.iter()
                .map(|r| &r.request_id)
                .collect::<std::collections::BTreeSet<_>>()
                .len(),
            3,
            "{engine}: one request id per request"
        );

        // The sidecar's delete.
        let deleted = client
            .send(
                Method::DELETE,
                &sidecar.url("/v1/files/public/docs/a.txt"),
                &auth,
                Bytes::new(),
            )
            .await
            .unwrap();
        assert_eq!(deleted.status, StatusCode::NO_CONTENT, "{engine}");
        let r4 = deleted.header("x-silo-request-id").unwrap().to_owned();
        let trail = records(cache, by_request(&r4)).await;
        assert_eq!(
            summary(&trail),
            [row(Action::Delete, "token", "docs/a.txt", None)],
            "{engine}"
        );
        assert_eq!(trail[0].etag.as_deref(), Some(etag.as_str()), "{engine}");

        // Filters: prefix, time window.
        let docs = records(
            cache,
            Filter {
                volume: Some("public".into()),
                prefix: Some("docs/".into()),
                ..Default::default()
            },
        )
        .await;
        assert!(
            !docs.is_empty() && docs.iter().all(|r| r.path.starts_with("docs/")),
            "{engine}"
        );
        let all = records(cache, Filter::default()).await;
        assert_eq!(all.len(), 12, "{engine}: {:#?}", summary(&all));
        assert!(all.windows(2).all(|w| w[0].id < w[1].id), "{engine}: oldest first");
        let now = now_ms();
        let window = |since: u64, until: u64| Filter {
            since_ms: Some(since),
            until_ms: Some(until),
            ..Default::default()
        };
        assert_eq!(
            records(cache, window(now - 600_000, now + 1)).await.len(),
            12,
            "{engine}"
        );
        assert!(
            records(cache, window(now + 1, now + 600_000)).await.is_empty(),
            "{engine}"
        );
        assert!(records(cache, window(0, now - 600_000)).await.is_empty(), "{engine}");

        // The admin route pages through the same records.
        let admin = format!("Bearer {ADMIN_TOKEN}");
        let mut paged = Vec::new();
        let mut after = 0;
        loop {
            let page = client
                .get(
                    &sidecar.url(&format!("/v1/admin/audit?limit=5&after={after}")),
                    &[("authorization", &admin)],
                )
                .await
                .unwrap();
            assert_eq!(page.status, StatusCode::OK, "{engine}: {}", page.text());
            let page = page.json();
            paged.extend(
                page["records"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|r| r["id"].as_i64().unwrap()),
            );
            match page["next"].as_i64() {
                Some(next) => after = next,
                None => break,
            }
        }
        assert_eq!(paged, all.iter().map(|r| r.id).collect::<Vec<_>>(), "{engine}");
        let one = client
            .get(
                &sidecar.url(&format!("/v1/admin/audit?request_id={r2}&since=1h")),
                &[("authorization", &admin)],
            )
            .await
            .unwrap()
            .json();
        assert_eq!(one["records"].as_array().unwrap().len(), 3, "{engine}");
        assert_eq!(one["records"][2]["action"], "refused", "{engine}");
        let bad = client
            .get(
                &sidecar.url("/v1/admin/audit?since=yesterday-ish"),
                &[("authorization", &admin)],
            )
            .await
            .unwrap();
        assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{engine}");
        assert!(bad.text().contains("since"), "{engine}: {}", bad.text());
        let denied = client.get(&sidecar.url("/v1/admin/audit"), &auth).await.unwrap();
        assert_eq!(
            denied.status,
            StatusCode::UNAUTHORIZED,
            "{engine}: the write token is not an admin"
        );

        // A write whose record cannot be written is not made: the record
        // and the row share a transaction, and the stored object is taken
        // back out.
        refuse_records_of(engine, &t.dir, url.as_deref(), "blocked.txt").await;
        let blocked = client
            .put(&sidecar.url("/v1/files/public/blocked.txt"), "text/plain", "unrecorded")
            .await
            .unwrap();
        assert_eq!(
            blocked.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{engine}: {}",
            blocked.text()
        );
        assert!(!public.join("blocked.txt").exists(), "{engine}: the object was undone");
        let head = client
            .send(
                Method::HEAD,
                &sidecar.url("/v1/files/public/blocked.txt"),
                &[],
                Bytes::new(),
            )
            .await
            .unwrap();
        assert_eq!(head.status, StatusCode::NOT_FOUND, "{engine}");
        let blocked = records(
            cache,
            Filter {
                prefix: Some("blocked".into()),
                ..Default::default()
            },
        )
        .await;
        assert!(blocked.is_empty(), "{engine}: {blocked:?}");
        // Other paths are unaffected.
        let fine = client
            .put(&sidecar.url("/v1/files/public/fine.txt"), "text/plain", "recorded")
            .await
            .unwrap();
        assert_eq!(fine.status, StatusCode::CREATED, "{engine}");
    }
}

/// Make the engine refuse audit records of `path` (a trigger on SQLite, a
/// check constraint on PostgreSQL).
async fn refuse_records_of(engine: &str, dir: &tempfile::TempDir, url: Option<&str>, path: &str) {
    match url {
        None => {
            let conn = rusqlite::Connection::open(dir.path().join("state/meta.sqlite")).unwrap();
            conn.execute_batch(&format!(
                "CREATE TRIGGER refuse_record BEFORE INSERT ON audit WHEN NEW.path = '{path}'
                 BEGIN SELECT RAISE(ABORT, 'this record is refused'); END;"
            ))
            .unwrap();
        }
        Some(url) => {
            let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
            let task = tokio::spawn(connection);
            client
                .batch_execute(&format!(
                    "ALTER TABLE audit ADD CONSTRAINT refuse_record CHECK (path <> '{path}')"
                ))
                .await
                .unwrap_or_else(|e| panic!("{engine}: {e}"));
            drop(client);
            let _ = task.await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_audit_off_nothing_is_recorded() {
    let (t, _, _) = silo_on("sqlite", "enabled = false").await;
    let silo = Arc::new(t.silo);
    let sidecar = Sidecar::start(silo.clone()).await;
    let client = Client::default();
    let put = client
        .put(&sidecar.url("/v1/files/public/docs/a.txt"), "text/x-derive", "hello")
        .await
        .unwrap();
    assert_eq!(put.status, StatusCode::CREATED);
    let head = client
        .send(
            Method::HEAD,
            &sidecar.url("/v1/files/public/docs/a.txt"),
            &[],
            Bytes::new(),
        )
        .await
        .unwrap();
    assert_eq!(head.header("x-silo-request-id"), None);
    assert!(records(silo.storage().cache(), Filter::default()).await.is_empty());
}

fn old_record(n: usize, time_ms: u64) -> Record {
    Record {
        id: 0,
        time_ms,
        node: "node-a".into(),
        principal: "cms".into(),
        action: Action::Put,
        volume: "public".into(),
        path: format!("old/{n}.txt"),
        size: Some(1),
        etag: Some(format!("e{n}")),
        sha256: None,
        plugin: None,
        reason: None,
        request_id: format!("r{n}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_prunes_in_batches_resumes_and_runs_on_one_node_at_a_time() {
    for engine in ["sqlite", "postgres"] {
        let (t, url, _url_file) = silo_on(engine, "").await;
        let cache = t.silo.storage().cache();
        let day = 24 * 3600 * 1000;
        let now = now_ms();
        for n in 0..25 {
            cache.engine().audit_add(&old_record(n, now - 100 * day)).await.unwrap();
        }
        for n in 25..30 {
            cache.engine().audit_add(&old_record(n, now - 10 * day)).await.unwrap();
        }
        // An interrupted prune: one batch went through.
        let cutoff = now - 90 * day;
        assert_eq!(
            cache.engine().audit_prune(cutoff, 10).await.unwrap(),
            Some(10),
            "{engine}"
        );
        // The next one goes on from there.
        let pruned = silo_host::maintenance::prune(cache, 90, 10).await.unwrap();
        assert_eq!((pruned.deleted, pruned.left_to_another_node), (15, false), "{engine}");
        let left = records(cache, Filter::default()).await;
        assert_eq!(
            left.iter().map(|r| r.path.as_str()).collect::<Vec<_>>(),
            (25..30).map(|n| format!("old/{n}.txt")).collect::<Vec<_>>(),
            "{engine}"
        );
        if let Some(url) = url {
            // Another node pruning holds the lock: this one leaves it.
            for n in 30..35 {
                cache.engine().audit_add(&old_record(n, now - 100 * day)).await.unwrap();
            }
            let (mut other, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
            let task = tokio::spawn(connection);
            let tx = other.transaction().await.unwrap();
            tx.execute("SELECT pg_advisory_xact_lock(hashtext('silo-audit-prune'))", &[])
                .await
                .unwrap();
            let pruned = silo_host::maintenance::prune(cache, 90, 10).await.unwrap();
            assert_eq!((pruned.deleted, pruned.left_to_another_node), (0, true));
            tx.rollback().await.unwrap();
            let pruned = silo_host::maintenance::prune(cache, 90, 10).await.unwrap();
            assert_eq!((pruned.deleted, pruned.left_to_another_node), (5, false));
            drop(other);
            let _ = task.await;
        }
    }
}

/// `silo run` records under `cli`; `silo audit` prints the trail, as lines
/// or as JSON, filtered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_line_records_as_cli_and_prints_the_trail() {
    let silo_bin = std::env::var("SILO_TEST_SILO")
        .expect("SILO_TEST_SILO is not set: run the tests with tests/run, which builds the silo binary");
    let (t, _, _) = silo_on("sqlite", "").await;
    let config = t.dir.path().join("silo.toml");
    drop(t.silo);
    let source = t.dir.path().join("note.txt");
    std::fs::write(&source, "from the shell").unwrap();
    let silo = |args: &[&str]| {
        let out = std::process::Command::new(&silo_bin)
            .arg("--config")
            .arg(&config)
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) = silo(&["run", "public/shell/note.txt", "--file", source.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{out}{err}");
    let (code, out, err) = silo(&["audit", "--principal", "cli", "--json"]);
    assert_eq!(code, Some(0), "{err}");
    let lines: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 1, "{out}");
    assert_eq!(
        (&lines[0]["action"], &lines[0]["path"], &lines[0]["sha256"]),
        (
            &serde_json::json!("put"),
            &serde_json::json!("shell/note.txt"),
            &serde_json::json!(sha256_hex(b"from the shell"))
        )
    );
    let (code, out, _) = silo(&["audit", "--prefix", "shell/", "--since", "1h"]);
    assert_eq!(code, Some(0));
    assert!(
        out.lines().count() == 1 && out.contains(" node-a cli put public/shell/note.txt size=14 "),
        "{out}"
    );
    let (_, out, _) = silo(&["audit", "--until", "2000-01-01T00:00:00Z"]);
    assert!(out.is_empty(), "{out}");
    let (code, _, err) = silo(&["audit", "--since", "last tuesday"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("--since") && err.contains("RFC 3339"), "{err}");
}

/// A process that stops between changing a file in its backend and
/// writing the file's row leaves an intent; the node's next start (or,
/// an hour on, any node) makes the row agree with the backend, recorded
/// in the trail under the request that made the change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_cut_off_before_its_row_is_set_right_from_its_intent() {
    for engine in ["sqlite", "postgres"] {
        let (t, _, _url_file) = silo_on(engine, "").await;
        let storage = t.silo.storage();
        let cache = storage.cache();
        let host = storage.host_session();
        let store = &storage.volume("public").unwrap().store;
        let intent = |path: &str, node: &str, created_ms: u64| silo_host::cache::Intent {
            id: 0,
            node: node.into(),
            volume: "public".into(),
            path: path.into(),
            principal: "cms".into(),
            request_id: format!("req-{path}"),
            created_ms,
        };
        let now = now_ms();
        // Stored, no row: the process stopped before recording it.
        cache
            .engine()
            .intent_begin(&intent("stored.txt", "node-a", now))
            .await
            .unwrap();
        store
            .put("stored.txt", Bytes::from_static(b"orphan"), &Default::default())
            .await
            .unwrap();
        // Deleted, row left.
        let doomed = storage.location("public", "deleted.txt").unwrap();
        host.write(&doomed, Bytes::from_static(b"old"), Default::default())
            .await
            .unwrap();
        cache
            .engine()
            .intent_begin(&intent("deleted.txt", "node-a", now))
            .await
            .unwrap();
        store.delete("deleted.txt").await.unwrap();
        // Nothing happened before it stopped.
        cache
            .engine()
            .intent_begin(&intent("untouched.txt", "node-a", now))
            .await
            .unwrap();
        // Another node's, recent: not this node's to look at yet.
        cache
            .engine()
            .intent_begin(&intent("elsewhere.txt", "node-b", now))
            .await
            .unwrap();
        store
            .put("elsewhere.txt", Bytes::from_static(b"b's"), &Default::default())
            .await
            .unwrap();

        assert_eq!(storage.recover(Some("node-a"), u64::MAX).await.unwrap(), 2, "{engine}");
        let stored = host.stat(&storage.location("public", "stored.txt").unwrap()).await;
        assert_eq!(stored.unwrap().size, 6, "{engine}");
        assert!(matches!(
            host.stat(&doomed).await,
            Err(silo_host::StorageError::NotFound)
        ));
        let trail = records(cache, by_principal("cms")).await;
        assert_eq!(
            summary(&trail),
            [
                row(Action::Put, "cms", "stored.txt", None),
                row(Action::Delete, "cms", "deleted.txt", None),
            ],
            "{engine}"
        );
        assert!(
            trail
                .iter()
                .all(|r| r.reason.as_deref().is_some_and(|why| why.starts_with("recovered"))
                    && r.request_id == format!("req-{}", r.path)),
            "{engine}: {trail:?}"
        );
        let left = cache.engine().intents(None, u64::MAX).await.unwrap();
        assert_eq!(
            left.iter().map(|i| i.path.as_str()).collect::<Vec<_>>(),
            ["elsewhere.txt"],
            "{engine}"
        );
        // Young, another node's intent waits; an hour on, any node takes it.
        assert_eq!(storage.recover(None, now - 1).await.unwrap(), 0, "{engine}");
        assert_eq!(storage.recover(None, now + 3_600_000).await.unwrap(), 1, "{engine}");
        assert!(cache.engine().intents(None, u64::MAX).await.unwrap().is_empty());
        // Every write through Silo ends its intent.
        let loc = storage.location("public", "normal.txt").unwrap();
        host.write(&loc, Bytes::from_static(b"x"), Default::default())
            .await
            .unwrap();
        host.delete(&loc).await.unwrap();
        assert!(
            cache.engine().intents(None, u64::MAX).await.unwrap().is_empty(),
            "{engine}"
        );
    }
}
