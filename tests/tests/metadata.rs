//! The metadata cache's engines, one test body for each: SQLite (a file)
//! and PostgreSQL (the server `tests/run` starts), and several nodes
//! sharing PostgreSQL.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::{Method, StatusCode};
use silo_host::cache::postgres::{self, PostgresEngine, PostgresSettings};
use silo_host::cache::sqlite::SqliteEngine;
use silo_host::cache::{Entry, FrontSettings, MetadataCache, RefreshPart, Version};
use silo_host::path::VolumePath;
use silo_host::store::ObjectMeta;
use silo_tests::http::{Client, Sidecar};
use silo_tests::{TestSilo, pg, s3};

fn meta(size: u64, etag: &str) -> ObjectMeta {
    ObjectMeta {
        size,
        etag: etag.into(),
        content_type: "image/png".into(),
        modified_ms: 1_700_000_000_000,
        cache_control: Some("max-age=60".into()),
        metadata: vec![("owner".into(), "7".into())],
        headers: silo_host::store::Headers {
            content_disposition: Some("inline; filename=\"a.png\"".into()),
            content_encoding: Some("gzip".into()),
            expires: Some("Wed, 21 Oct 2015 07:28:00 GMT".into()),
            checksum: Some(Box::new(silo_host::store::Checksum {
                algorithm: "CRC32".into(),
                value: "DUoRhQ==".into(),
                kind: "FULL_OBJECT".into(),
            })),
            parts: Some([5 << 20, 1 << 20].into()),
        },
    }
}

fn path(p: &str) -> VolumePath {
    VolumePath::parse(p).unwrap()
}

async fn postgres(hint: &str) -> (PostgresEngine, String) {
    let url = pg::database(hint).await;
    let settings = PostgresSettings {
        url: url.clone(),
        pool_size: 4,
    };
    (PostgresEngine::connect(&settings).await.unwrap(), url)
}

/// Every engine, fresh and empty.
async fn engines(hint: &str) -> Vec<(&'static str, MetadataCache, tempfile::TempDir)> {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = SqliteEngine::open(&dir.path().join("meta.sqlite")).unwrap();
    let (postgres, _) = postgres(hint).await;
    vec![
        ("sqlite", MetadataCache::new(Arc::new(sqlite)), dir),
        (
            "postgres",
            MetadataCache::new(Arc::new(postgres)),
            tempfile::tempdir().unwrap(),
        ),
    ]
}

async fn all_pages(cache: &MetadataCache, dir: &str, limit: usize) -> Vec<String> {
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = cache.list_dir("v", dir, cursor.as_deref(), limit).await.unwrap();
        seen.extend(page.entries.iter().map(|e| match e {
            Entry::File { path, .. } => format!("f:{path}"),
            Entry::Dir { path } => format!("d:{path}"),
        }));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => return seen,
        }
    }
}

#[tokio::test]
async fn rows_directories_and_pages_agree_on_every_engine() {
    let long = format!("deep/{}", "k".repeat(1019));
    for (name, cache, _dir) in engines("rows").await {
        for p in ["a/b/c.png", "a/x.png", "a", "Z.png", "é.png", "😀/x.png", long.as_str()] {
            cache.put("v", &path(p), &meta(p.len() as u64, p)).await.unwrap();
        }
        // Another volume never shows.
        cache.put("w", &path("a/other.png"), &meta(1, "w")).await.unwrap();
        assert_eq!(
            all_pages(&cache, "", 1).await,
            ["f:Z.png", "f:a", "d:a", "d:deep", "f:é.png", "d:😀"],
            "{name}: byte order, the file `a` beside the directory `a`"
        );
        assert_eq!(all_pages(&cache, "a", 100).await, ["d:a/b", "f:a/x.png"], "{name}");
        let got = cache.get("v", &long).await.unwrap().unwrap();
        assert_eq!(got, meta(long.len() as u64, &long), "{name}: a 1024-byte key, whole");
        let prefix = cache.list_prefix("v", "a", None, 100).await.unwrap();
        assert_eq!(prefix.entries.len(), 3, "{name}: a, a/b/c.png, a/x.png");
        // Removing the last file of a directory prunes it, not its sibling.
        cache.remove("v", &path("a/b/c.png"), None).await.unwrap();
        assert_eq!(all_pages(&cache, "a", 100).await, ["f:a/x.png"], "{name}");
        // A remove names the version it removes; another version stays.
        cache
            .remove("v", &path("a/x.png"), Some(Version::etag("not-it")))
            .await
            .unwrap();
        assert!(cache.get("v", "a/x.png").await.unwrap().is_some(), "{name}");
        // The same ETag at another time is another write of the same bytes.
        let x = cache.get("v", "a/x.png").await.unwrap().unwrap();
        let twin = Version {
            etag: &x.etag,
            modified_ms: Some(x.modified_ms + 1),
        };
        cache.remove("v", &path("a/x.png"), Some(twin)).await.unwrap();
        assert!(cache.get("v", "a/x.png").await.unwrap().is_some(), "{name}");
        let stats = cache.stats().await.unwrap();
        let v = stats.iter().find(|s| s.volume == "v").unwrap();
        assert_eq!((v.files, v.directories), (6, 3), "{name}: {stats:?}");
        assert!(cache.list_dir("v", "", Some("junk"), 10).await.is_err(), "{name}");
        cache
            .remove("v", &path("a/x.png"), Some(Version::written(&x)))
            .await
            .unwrap();
        assert!(
            cache.get("v", "a/x.png").await.unwrap().is_none(),
            "{name}: that very write"
        );
    }
}

#[tokio::test]
async fn refresh_records_resume_lock_and_swap_on_every_engine() {
    let windows = (86_400_000, 60_000);
    let t = 1_700_000_000_000;
    for (name, cache, _dir) in engines("refresh").await {
        let declared = ObjectMeta {
            content_type: "text/x-declared".into(),
            ..meta(1, "n1")
        };
        cache.put("v", &path("n/1.txt"), &declared).await.unwrap();
        cache.put("v", &path("n/2.txt"), &meta(5, "old2")).await.unwrap();
        cache.put("v", &path("old.txt"), &meta(1, "old")).await.unwrap();
        assert!(
            cache
                .refresh_begin("v", "b", "run1", t, windows)
                .await
                .unwrap()
                .is_none()
        );
        // A second run is refused while the first beats.
        let err = cache
            .refresh_begin("v", "b", "run2", t + 1000, windows)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("under way"), "{name}: {err}");
        let listed = |etag: &str, size: u64| ObjectMeta {
            content_type: "text/plain".into(),
            cache_control: None,
            metadata: Vec::new(),
            headers: Default::default(),
            ..meta(size, etag)
        };
        let found = vec![
            ("n/1.txt".to_owned(), listed("n1", 1)),
            ("n/2.txt".to_owned(), listed("n2", 2)),
        ];
        cache
            .refresh_record(
                "v",
                RefreshPart::List {
                    prefix: "n/",
                    next: Some("n/2.txt"),
                },
                &found,
            )
            .await
            .unwrap();
        let dirs = vec!["n/".to_owned()];
        cache
            .refresh_record(
                "v",
                RefreshPart::Split {
                    prefix: "",
                    dirs: &dirs,
                },
                &[],
            )
            .await
            .unwrap();
        // The run fails; the next one takes it up where it stopped.
        cache.refresh_beat("v", "run1", 0).await.unwrap();
        let progress = cache
            .refresh_begin("v", "b", "run2", t + 2000, windows)
            .await
            .unwrap()
            .expect("resumed");
        assert_eq!(progress.found, 2, "{name}");
        assert_eq!(progress.lists["n/"], Some("n/2.txt".to_owned()), "{name}");
        assert_eq!(progress.splits[""], dirs, "{name}");
        let more = vec![
            ("n/deep/x/y.txt".to_owned(), listed("y", 3)),
            ("bad//key".to_owned(), listed("b", 4)),
        ];
        cache
            .refresh_record(
                "v",
                RefreshPart::List {
                    prefix: "n/",
                    next: None,
                },
                &more,
            )
            .await
            .unwrap();
        assert_eq!(cache.refresh_found("v").await.unwrap().len(), 4, "{name}");
        // Only the run that owns the record swaps.
        assert!(cache.finish_refresh("v", "run1").await.is_err(), "{name}");
        assert!(
            cache.get("v", "old.txt").await.unwrap().is_some(),
            "{name}: nothing swapped"
        );
        let counts = cache.finish_refresh("v", "run2").await.unwrap();
        assert_eq!(
            (counts.files, counts.bytes, counts.added, counts.changed, counts.removed),
            (3, 6, 1, 1, 1),
            "{name}: {counts:?}"
        );
        assert_eq!(counts.skipped, ["bad//key"], "{name}");
        assert!(cache.get("v", "old.txt").await.unwrap().is_none(), "{name}");
        // An unchanged file keeps what the listing cannot carry.
        assert_eq!(
            cache.get("v", "n/1.txt").await.unwrap(),
            Some(declared.clone()),
            "{name}"
        );
        assert_eq!(
            cache.get("v", "n/2.txt").await.unwrap(),
            Some(listed("n2", 2)),
            "{name}"
        );
        assert_eq!(all_pages(&cache, "", 10).await, ["d:n"], "{name}");
        assert_eq!(
            all_pages(&cache, "n", 10).await,
            ["f:n/1.txt", "f:n/2.txt", "d:n/deep"],
            "{name}"
        );
        assert_eq!(all_pages(&cache, "n/deep", 10).await, ["d:n/deep/x"], "{name}");
        assert_eq!(all_pages(&cache, "n/deep/x", 10).await, ["f:n/deep/x/y.txt"], "{name}");
        assert!(
            cache.refresh_found("v").await.unwrap().is_empty(),
            "{name}: the record went"
        );
    }
}

#[tokio::test]
async fn a_database_with_a_newer_schema_is_refused() {
    let (_, url) = postgres("schema").await;
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    client
        .batch_execute("INSERT INTO silo_schema (version) VALUES (99)")
        .await
        .unwrap();
    let settings = PostgresSettings { url, pool_size: 2 };
    let err = PostgresEngine::connect(&settings).await.err().expect("refused");
    let message = err.to_string();
    assert!(
        message.contains("schema version 99") && message.contains("upgrade Silo"),
        "{message}"
    );
}

/// The database's password, marked, never appears: not in the errors of
/// connecting (unreachable, no such database, malformed URL, refused
/// sslmode, a newer schema), of queries while the server is down, of the
/// listener losing its connection and failing to reconnect, nor in any log
/// line at any level, nor in the settings' debug form. (The test server
/// trusts local connections, so the password is sent and ignored.)
#[tokio::test]
async fn the_database_password_never_appears_in_an_error_or_a_log() {
    const MARKER: &str = "pw-M4RKER-7d41c9";
    let (logs, _logging) = silo_tests::capture_logs(tracing::Level::TRACE);
    let server = pg::PgServer::start();
    let with_password = |url: &str| url.replacen("postgres://silo@", &format!("postgres://silo:{MARKER}@"), 1);
    let url = with_password(&server.url());
    assert!(url.contains(MARKER));
    let settings = |url: &str| PostgresSettings {
        url: url.to_owned(),
        pool_size: 2,
    };
    let mut said: Vec<String> = vec![format!("{:?}", settings(&url))];

    let front = FrontSettings {
        capacity: 100,
        ttl: Duration::from_secs(600),
    };
    let node = MetadataCache::connect_postgres(&settings(&url), front).await.unwrap();
    until_ready(&node).await;
    // The listener's connection is ended by the server first, so that its
    // loss is seen at once, then the server stops.
    let (admin, connection) = tokio_postgres::connect(&server.url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    admin
        .batch_execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE 'LISTEN%'")
        .await
        .unwrap();
    drop(admin);
    server.stop();
    for attempt in 0..3 {
        if let Err(e) = node.put("v", &path(&format!("down-{attempt}")), &meta(1, "e")).await {
            said.push(format!("{e} / {e:?}"));
        }
        if let Err(e) = node.get("v", "x").await {
            said.push(format!("{e} / {e:?}"));
        }
    }
    assert!(said.len() > 1, "queries with the server down did not fail");
    // The listener reports its loss, then fails to reconnect.
    let started = Instant::now();
    while !logs.text().contains("cannot listen for metadata changes") {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the listener never logged its failure: {}\nthe server's log:\n{}",
            logs.text(),
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.start_again();
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (server_part, _) = url.rsplit_once('/').unwrap();
    for bad in [
        format!("postgres://silo:{MARKER}@127.0.0.1:{closed}/postgres"),
        format!("{server_part}/no_such_database"),
        format!("postgres://silo:{MARKER}@127.0.0.1:notaport/postgres"),
        format!("{url}?sslmode=require"),
        format!("postgres://silo:{MARKER}@127.0.0.1:{closed}/postgres?connect_timeout=1"),
    ] {
        let err = PostgresEngine::connect(&settings(&bad))
            .await
            .err()
            .unwrap_or_else(|| panic!("{}", bad.replace(MARKER, "***")));
        said.push(format!("{err} / {err:?}"));
    }
    let (engine, schema_url) = postgres("password").await;
    drop(engine);
    let (client, connection) = tokio_postgres::connect(&schema_url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
        .batch_execute("INSERT INTO silo_schema (version) VALUES (99)")
        .await
        .unwrap();
    let err = PostgresEngine::connect(&settings(&with_password(&schema_url)))
        .await
        .err()
        .expect("a newer schema is refused");
    said.push(format!("{err} / {err:?}"));

    let logged = logs.text();
    assert!(logged.contains("lost the metadata database"), "{logged}");
    for text in said.iter().chain([&logged]) {
        assert!(!text.contains(MARKER), "the password leaked: {text}");
    }
}

#[tokio::test]
async fn a_version_1_database_is_migrated_and_keeps_its_rows() {
    let url = pg::database("schema_v1").await;
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    client.batch_execute(postgres::MIGRATIONS[0]).await.unwrap();
    client
        .batch_execute(
            "CREATE TABLE silo_schema (version INTEGER NOT NULL); INSERT INTO silo_schema VALUES (1);
             SELECT silo_put('v', 'a/b/old.png', 'a/b', 5, 'e1', 'image/png', 1, NULL, '[]',
                             ARRAY['a', 'a/b'], ARRAY['', 'a'], 'silo-dir:v:a')",
        )
        .await
        .unwrap();
    let settings = PostgresSettings { url, pool_size: 2 };
    let cache = MetadataCache::new(Arc::new(PostgresEngine::connect(&settings).await.unwrap()));
    let version: i32 = client
        .query_one("SELECT max(version) FROM silo_schema", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(version, postgres::SCHEMA_VERSION);
    assert_eq!(cache.get("v", "a/b/old.png").await.unwrap().unwrap().size, 5);
    cache.put("v", &path("a/b/new.png"), &meta(7, "e2")).await.unwrap();
    assert_eq!(all_pages(&cache, "a/b", 10).await, ["f:a/b/new.png", "f:a/b/old.png"]);
    for p in ["a/b/new.png", "a/b/old.png"] {
        cache.remove("v", &path(p), None).await.unwrap();
    }
    assert!(
        all_pages(&cache, "", 10).await.is_empty(),
        "the emptied directories are pruned"
    );
}

/// Writers in one directory and removers pruning it, all at once and on
/// two connections pools (two nodes on PostgreSQL): no deadlock, no error,
/// and the directory rows are exactly those with files under them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writes_and_prunes_keep_directories_exact_on_every_engine() {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = Arc::new(MetadataCache::new(Arc::new(
        SqliteEngine::open(&dir.path().join("meta.sqlite")).unwrap(),
    )));
    let (first, url) = postgres("prune").await;
    let second = PostgresEngine::connect(&PostgresSettings { url, pool_size: 4 })
        .await
        .unwrap();
    let pairs = [
        ("sqlite", sqlite.clone(), sqlite),
        (
            "postgres",
            Arc::new(MetadataCache::new(Arc::new(first))),
            Arc::new(MetadataCache::new(Arc::new(second))),
        ),
    ];
    const ROUNDS: u32 = 100;
    for (name, cache, other) in pairs {
        let mut tasks = tokio::task::JoinSet::new();
        for t in 0..16u32 {
            let cache = if t % 2 == 0 { cache.clone() } else { other.clone() };
            tasks.spawn(async move {
                for i in 0..ROUNDS {
                    // Tasks of both kinds share each directory: the even
                    // ones remove what they wrote (pruning the directory
                    // whenever it looks empty) while the odd ones write.
                    let p = path(&format!("up/{}/s/x{t}-{i}.png", t % 3));
                    cache.put("v", &p, &meta(1, "e")).await?;
                    if t % 2 == 0 {
                        cache.remove("v", &p, None).await?;
                    }
                }
                Ok::<_, silo_host::error::StorageError>(())
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.unwrap().unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        assert_eq!(all_pages(&cache, "", 100).await, ["d:up"], "{name}");
        assert_eq!(
            all_pages(&cache, "up", 100).await,
            ["d:up/0", "d:up/1", "d:up/2"],
            "{name}"
        );
        for d in 0..3u32 {
            assert_eq!(
                all_pages(&cache, &format!("up/{d}"), 10).await,
                [format!("d:up/{d}/s")],
                "{name}"
            );
            let kept = (0..16u32).filter(|t| t % 3 == d && t % 2 == 1).count();
            let listed = all_pages(&cache, &format!("up/{d}/s"), 1000).await;
            assert_eq!(listed.len(), ROUNDS as usize * kept, "{name}: up/{d}/s");
        }
    }
}

/// Two nodes' caches on one database, each with a front cache whose TTL
/// is far longer than the test: what they see of each other's changes
/// comes from the announcements.
async fn two_nodes(hint: &str) -> (MetadataCache, MetadataCache, String) {
    let url = pg::database(hint).await;
    let settings = PostgresSettings {
        url: url.clone(),
        pool_size: 4,
    };
    let front = FrontSettings {
        capacity: 1000,
        ttl: Duration::from_secs(600),
    };
    let a = MetadataCache::connect_postgres(&settings, front).await.unwrap();
    let b = MetadataCache::connect_postgres(&settings, front).await.unwrap();
    (a, b, url)
}

/// Wait until `node` sees `expected` at `p`; how long it took.
async fn until_seen(node: &MetadataCache, p: &str, expected: Option<&str>) -> Duration {
    let started = Instant::now();
    loop {
        let etag = node.get("v", p).await.unwrap().map(|m| m.etag);
        if etag.as_deref() == expected {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{p}: still {etag:?}, expected {expected:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_on_one_node_reaches_the_others_front_cache() {
    let (a, b, _) = two_nodes("nodes").await;
    // The listeners need a moment to start listening.
    until_ready(&b).await;
    a.put("v", &path("x.png"), &meta(1, "one")).await.unwrap();
    // Listings are the shared rows: at once.
    assert_eq!(all_pages(&b, "", 10).await, ["f:x.png"]);
    until_seen(&b, "x.png", Some("one")).await;
    // b now holds the row in its front cache; a replaces it, then deletes it.
    a.put("v", &path("x.png"), &meta(2, "two")).await.unwrap();
    let replaced = until_seen(&b, "x.png", Some("two")).await;
    a.remove("v", &path("x.png"), None).await.unwrap();
    let deleted = until_seen(&b, "x.png", None).await;
    assert!(all_pages(&b, "", 10).await.is_empty());
    eprintln!("seen on the other node after {replaced:?} (replace) and {deleted:?} (delete)");
}

/// Until `node`'s front cache keeps rows (its listener is up).
async fn until_ready(node: &MetadataCache) {
    let started = Instant::now();
    node.put("v", &path("ready"), &meta(0, "r")).await.unwrap();
    loop {
        node.get("v", "ready").await.unwrap();
        if node.front_holds("v", "ready") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the listener never started"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    node.remove("v", &path("ready"), None).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_listener_drops_the_front_cache_whole() {
    let (a, b, url) = two_nodes("listener").await;
    until_ready(&b).await;
    a.put("v", &path("y.png"), &meta(1, "one")).await.unwrap();
    until_seen(&b, "y.png", Some("one")).await;
    // Read until b keeps the row (an announcement of a's write may land
    // after b's first read, which then is not kept).
    let started = Instant::now();
    while !b.front_holds("v", "y.png") {
        b.get("v", "y.png").await.unwrap();
        assert!(started.elapsed() < Duration::from_secs(10), "b never kept the row");
    }
    // Cut every listening connection; the change made meanwhile is not
    // announced to b, which must not serve its old row.
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    let killed = client
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE 'LISTEN%' AND datname = current_database()",
            &[],
        )
        .await
        .unwrap();
    assert!(!killed.is_empty(), "no listener was found to cut");
    let started = Instant::now();
    while b.front_holds("v", "y.png") {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the front cache outlived its listener"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    a.put("v", &path("y.png"), &meta(2, "two")).await.unwrap();
    until_seen(&b, "y.png", Some("two")).await;
}

/// Two Silo nodes (their own data_dir each) on one bucket and one
/// database, each behind its sidecar: `public` (with a disk read cache)
/// and `private`.
struct Nodes {
    bucket: String,
    a: Sidecar,
    b: Sidecar,
    silos: [Arc<silo_host::Silo>; 2],
    _dirs: Vec<tempfile::TempDir>,
    _url_file: tempfile::NamedTempFile,
}

async fn nodes(hint: &str) -> Nodes {
    let bucket = s3::bucket(hint).await;
    let url_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(url_file.path(), format!("{}\n", pg::database(hint).await)).unwrap();
    let volumes = format!(
        "[metadata]\nbackend = \"postgres\"\nurl_file = \"{}\"\npool_size = 8\n\n{}{}",
        url_file.path().display(),
        s3::volume_toml(
            "public",
            &bucket,
            "public",
            "visibility = \"public\"\nread_cache_mib = 16"
        ),
        s3::volume_toml("private", &bucket, "private", "read_cache_mib = 16"),
    );
    let mut dirs = Vec::new();
    let mut silos = Vec::new();
    for _ in 0..2 {
        let t = TestSilo::with_volumes("", &[], &volumes).await.unwrap();
        dirs.push(t.dir);
        silos.push(Arc::new(t.silo));
    }
    let a = Sidecar::start(silos[0].clone()).await;
    let b = Sidecar::start(silos[1].clone()).await;
    Nodes {
        bucket,
        a,
        b,
        silos: [silos[0].clone(), silos[1].clone()],
        _dirs: dirs,
        _url_file: url_file,
    }
}

fn auth() -> String {
    format!("Bearer {}", silo_tests::http::TOKEN)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_sidecars_on_one_bucket_and_database_agree() -> anyhow::Result<()> {
    let n = nodes("twonodes").await;
    let client = Client::default();
    let bound = silo_host::cache::FRONT_TTL * 2;
    for (volume, token) in [("public", None), ("private", Some(auth()))] {
        let file = format!("/v1/files/{volume}/docs/a.txt");
        let headers: Vec<(&str, &str)> = token.iter().map(|t| ("authorization", t.as_str())).collect();
        let get = |node: &Sidecar| {
            let (client, url, headers) = (client.clone(), node.url(&file), headers.clone());
            async move { client.get(&url, &headers).await.unwrap() }
        };
        // Listing takes a token on public volumes too.
        let listed = |node: &Sidecar| {
            let (client, url, bearer) = (client.clone(), node.url(&format!("/v1/list/{volume}/docs")), auth());
            async move {
                client
                    .get(&url, &[("authorization", bearer.as_str())])
                    .await
                    .unwrap()
                    .text()
            }
        };
        let put = client.put(&n.a.url(&file), "text/plain", "first version").await?;
        assert_eq!(put.status, StatusCode::CREATED, "{volume}");
        // A write acknowledged by one node is in the other's listing at once.
        assert!(listed(&n.b).await.contains("docs/a.txt"), "{volume}");
        let head = client
            .send(Method::HEAD, &n.b.url(&file), &headers, Bytes::new())
            .await?;
        assert_eq!(
            (head.status, head.header("content-length")),
            (StatusCode::OK, Some("13")),
            "{volume}"
        );
        assert_eq!(get(&n.b).await.body, "first version", "{volume}");

        // Replaced and deleted through one node: the other follows within
        // the documented bound (an announcement, else the front cache's
        // TTL), its disk read cache too.
        let put = client
            .put(&n.a.url(&file), "text/plain", "second, longer version")
            .await?;
        let new_etag = put.json()["file"]["etag"].as_str().unwrap().to_owned();
        let started = Instant::now();
        loop {
            let reply = get(&n.b).await;
            if reply.body == "second, longer version" {
                assert_eq!(
                    reply.header("etag"),
                    Some(format!("\"{new_etag}\"").as_str()),
                    "{volume}"
                );
                break;
            }
            assert_eq!(reply.body, "first version", "{volume}: never a mix");
            assert!(
                started.elapsed() < bound,
                "{volume}: the other node kept the old version"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let reply = client
            .send(
                Method::DELETE,
                &n.a.url(&file),
                &[("authorization", &auth())],
                Bytes::new(),
            )
            .await?;
        assert_eq!(reply.status, StatusCode::NO_CONTENT, "{volume}");
        assert!(!listed(&n.b).await.contains("docs/a.txt"), "{volume}");
        let started = Instant::now();
        while get(&n.b).await.status != StatusCode::NOT_FOUND {
            assert!(
                started.elapsed() < bound,
                "{volume}: the other node served a deleted file"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn create_only_uploads_split_across_nodes_store_exactly_one() -> anyhow::Result<()> {
    let n = nodes("createonly").await;
    let client = Client::default();
    let puts = (0..20).map(|i| {
        let node = if i % 2 == 0 { &n.a } else { &n.b };
        let (client, url) = (client.clone(), node.url("/v1/files/public/once.txt"));
        async move {
            let body = format!("writer {i}");
            let reply = client
                .send(
                    Method::PUT,
                    &url,
                    &[
                        ("authorization", &auth()),
                        ("content-type", "text/plain"),
                        ("if-none-match", "*"),
                    ],
                    Bytes::from(body.clone()),
                )
                .await
                .unwrap();
            (reply.status, body)
        }
    });
    let results = futures::future::join_all(puts).await;
    let won: Vec<&String> = results
        .iter()
        .filter(|(s, _)| *s == StatusCode::CREATED)
        .map(|(_, b)| b)
        .collect();
    let lost = results
        .iter()
        .filter(|(s, _)| *s == StatusCode::PRECONDITION_FAILED)
        .count();
    assert_eq!((won.len(), lost), (1, 19), "{results:?}");
    for node in [&n.a, &n.b] {
        let reply = client.get(&node.url("/v1/files/public/once.txt"), &[]).await?;
        assert_eq!(reply.body, won[0].as_bytes());
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_uploads_over_two_nodes_lose_nothing() -> anyhow::Result<()> {
    let n = nodes("spread").await;
    let client = Client::default();
    let n = &n;
    let jobs = (0..200).map(|i| {
        let client = client.clone();
        async move {
            let (writer, reader) = if i % 2 == 0 { (&n.a, &n.b) } else { (&n.b, &n.a) };
            let file = format!("/v1/files/public/spread/{i:03}.txt");
            let body = format!("file {i} ").repeat(50 + i);
            let put = client
                .put(&writer.url(&file), "text/plain", body.clone())
                .await
                .unwrap();
            assert_eq!(put.status, StatusCode::CREATED, "{i}: {}", put.text());
            // Read back from the other node: its listing has it at once.
            let got = client.get(&reader.url(&file), &[]).await.unwrap();
            assert_eq!(got.status, StatusCode::OK, "{i}");
            assert!(got.body == body.as_bytes(), "{i}: the other node served other bytes");
        }
    });
    futures::future::join_all(jobs).await;
    for silo in &n.silos {
        let drift = silo_host::maintenance::verify(silo.storage(), "public", &|_| {}).await?;
        assert!(drift.is_clean(), "{drift:?}");
        let stats = silo.storage().cache().stats().await?;
        let public = stats.iter().find(|s| s.volume == "public").unwrap();
        assert_eq!(public.files, 200);
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_answer_503_while_postgres_is_down_and_the_node_recovers_by_itself() -> anyhow::Result<()> {
    let server = pg::PgServer::start();
    let bucket = s3::bucket("pgdown").await;
    let url_file = tempfile::NamedTempFile::new()?;
    std::fs::write(url_file.path(), server.url())?;
    let volumes = format!(
        "[metadata]\nbackend = \"postgres\"\nurl_file = \"{}\"\npool_size = 4\n\n{}",
        url_file.path().display(),
        s3::volume_toml("public", &bucket, "public", "visibility = \"public\"")
    );
    let t = TestSilo::with_volumes("", &[], &volumes).await?;
    let sidecar = Sidecar::start(Arc::new(t.silo)).await;
    let client = Client::default();
    let url = |p: &str| sidecar.url(&format!("/v1/files/public/{p}"));
    assert_eq!(
        client.put(&url("a.txt"), "text/plain", "kept").await?.status,
        StatusCode::CREATED
    );
    let ready = client.get(&sidecar.url("/readyz"), &[]).await?;
    assert_eq!((ready.status, ready.text().as_str()), (StatusCode::OK, "ready\n"));

    server.stop();
    // Not ready (a load balancer stops sending here), naming the engine;
    // still alive.
    let ready = client.get(&sidecar.url("/readyz"), &[]).await?;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE, "{}", ready.text());
    assert!(ready.text().contains("metadata engine"), "{}", ready.text());
    assert_eq!(client.get(&sidecar.url("/healthz"), &[]).await?.status, StatusCode::OK);
    let refused = client.put(&url("b.txt"), "text/plain", "refused").await?;
    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE, "{}", refused.text());
    // Nothing partial: the object the cache could not record was taken back.
    let keys: Vec<String> = s3::keys(&bucket).await.into_iter().map(|(k, _)| k).collect();
    assert_eq!(keys, ["public/a.txt"], "{}", refused.text());
    // A read needs the database once the node knows it lost it (its front
    // cache is dropped with the listener's connection): 503, within the
    // listener's notice, and never another answer before then.
    let started = Instant::now();
    loop {
        let read = client.get(&url("a.txt"), &[]).await?;
        match read.status.as_u16() {
            503 => {
                assert!(read.text().contains("\"unavailable\""), "{}", read.text());
                break;
            }
            200 => assert_eq!(read.body, "kept", "a stale or wrong body"),
            other => panic!("a read while the database is down answered {other}: {}", read.text()),
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "reads were still served 10 s after the database went down"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Back without restarting Silo.
    server.start_again();
    let started = Instant::now();
    loop {
        let reply = client.put(&url("c.txt"), "text/plain", "after").await?;
        if reply.status == StatusCode::CREATED {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "never recovered: {}",
            reply.text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(client.get(&url("a.txt"), &[]).await?.body, "kept");
    assert_eq!(client.get(&url("b.txt"), &[]).await?.status, StatusCode::NOT_FOUND);
    assert_eq!(client.get(&sidecar.url("/readyz"), &[]).await?.status, StatusCode::OK);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refresh_on_one_node_while_the_other_serves() -> anyhow::Result<()> {
    let n = nodes("refreshing").await;
    let client = Client::default();
    for i in 0..50 {
        let reply = client
            .put(
                &n.a.url(&format!("/v1/files/public/r/{i}.txt")),
                "text/plain",
                format!("file {i}"),
            )
            .await?;
        assert_eq!(reply.status, StatusCode::CREATED);
    }
    // Written behind Silo's back; b has looked for it (a miss it keeps).
    s3::client()
        .put_object()
        .bucket(&n.bucket)
        .key("public/r/behind.txt")
        .body(Bytes::from_static(b"behind").into())
        .send()
        .await?;
    let behind = n.b.url("/v1/files/public/r/behind.txt");
    assert_eq!(client.get(&behind, &[]).await?.status, StatusCode::NOT_FOUND);

    // One refresh at a time across the nodes.
    let windows = (86_400_000, 60_000);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as u64;
    let (ca, cb) = (n.silos[0].storage().cache(), n.silos[1].storage().cache());
    ca.refresh_begin("public", "elsewhere", "probe-a", now, windows).await?;
    let err = cb
        .refresh_begin("public", "elsewhere", "probe-b", now, windows)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("under way"), "{err}");
    ca.refresh_beat("public", "probe-a", 0).await?;

    // b serves every file while a refreshes.
    let reads = {
        let (client, b) = (client.clone(), n.b.url("/v1/files/public/r"));
        tokio::spawn(async move {
            for round in 0..5 {
                for i in 0..50 {
                    let reply = client.get(&format!("{b}/{i}.txt"), &[]).await.unwrap();
                    assert_eq!(reply.status, StatusCode::OK, "round {round}, file {i}");
                    assert_eq!(reply.body, format!("file {i}").into_bytes());
                }
            }
        })
    };
    let report = silo_host::maintenance::refresh(n.silos[0].storage(), "public", &|_| {}).await?;
    assert_eq!((report.added, report.removed, report.files), (1, 0, 51), "{report:?}");
    reads.await?;
    // The swap reaches b: the listing at once, the remembered miss soon.
    assert!(
        client
            .get(&n.b.url("/v1/list/public/r"), &[("authorization", auth().as_str())])
            .await?
            .text()
            .contains("r/behind.txt")
    );
    let started = Instant::now();
    while client.get(&behind, &[]).await?.status != StatusCode::OK {
        assert!(started.elapsed() < silo_host::cache::FRONT_TTL * 2, "b kept its miss");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

/// PostgreSQL over TLS, as libpq's `sslmode` and `sslrootcert` ask, against
/// a server that takes TLS connections only, with a certificate for
/// `localhost` from a CA the test makes: `verify-full` connects and works;
/// `verify-ca` takes the certificate at another host name, `verify-full`
/// does not; another CA is refused; `disable` is refused by the server and
/// `require` by a server without TLS. No error holds the password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_over_tls_checks_what_sslmode_asks() {
    const MARKER: &str = "pw-TLS-9c01e2";
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Silo test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let server_key = rcgen::KeyPair::generate().unwrap();
    let server_cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&server_key, &issuer)
        .unwrap();
    let other_key = rcgen::KeyPair::generate().unwrap();
    let mut other_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    other_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let other_ca = other_params.self_signed(&other_key).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (ca_file, other_file) = (dir.path().join("ca.pem"), dir.path().join("other-ca.pem"));
    std::fs::write(&ca_file, ca.pem()).unwrap();
    std::fs::write(&other_file, other_ca.pem()).unwrap();

    let server = pg::PgServer::start_tls(&server_cert.pem(), &server_key.serialize_pem());
    let url = |host: &str, query: &str| format!("postgres://silo:{MARKER}@{host}:{}/postgres?{query}", server.port());
    let connect = |url: String| async move { PostgresEngine::connect(&PostgresSettings { url, pool_size: 2 }).await };
    let mut said = Vec::new();

    // verify-full: the chain and the name hold; the engine works.
    let full = url(
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={}", ca_file.display()),
    );
    let engine = connect(full.clone())
        .await
        .unwrap_or_else(|e| panic!("verify-full: {e}"));
    let cache = MetadataCache::new(Arc::new(engine));
    let meta = ObjectMeta {
        size: 3,
        etag: "e1".into(),
        content_type: "text/plain".into(),
        modified_ms: 1,
        cache_control: None,
        metadata: Vec::new(),
        headers: Default::default(),
    };
    cache
        .put("v", &VolumePath::parse("tls/a.txt").unwrap(), &meta)
        .await
        .unwrap();
    assert_eq!(cache.get("v", "tls/a.txt").await.unwrap(), Some(meta));
    // verify-ca takes the certificate at a name it does not hold.
    connect(url(
        "127.0.0.1",
        &format!("sslmode=verify-ca&sslrootcert={}", ca_file.display()),
    ))
    .await
    .unwrap_or_else(|e| panic!("verify-ca at 127.0.0.1: {e}"));
    // `require` and `prefer` encrypt without checking (as libpq).
    connect(url("127.0.0.1", "sslmode=require")).await.unwrap();
    connect(url("127.0.0.1", "")).await.unwrap();

    let refused = [
        (
            url(
                "127.0.0.1",
                &format!("sslmode=verify-full&sslrootcert={}", ca_file.display()),
            ),
            "not valid for name",
        ),
        (
            url(
                "localhost",
                &format!("sslmode=verify-full&sslrootcert={}", other_file.display()),
            ),
            "UnknownIssuer",
        ),
        (
            url(
                "localhost",
                &format!("sslmode=verify-ca&sslrootcert={}", other_file.display()),
            ),
            "UnknownIssuer",
        ),
        (url("localhost", "sslmode=verify-full"), "need sslrootcert"),
        (
            url("localhost", "sslmode=verify-full&sslrootcert=/nonexistent/ca.pem"),
            "/nonexistent/ca.pem",
        ),
        (url("localhost", "sslmode=sometimes"), "sslmode=sometimes"),
        // The server takes no plain connection.
        (url("127.0.0.1", "sslmode=disable"), "no encryption"),
    ];
    for (url, why) in refused {
        let err = match connect(url.clone()).await {
            Ok(_) => panic!("{} connected", url.replace(MARKER, "***")),
            Err(e) => e.to_string(),
        };
        assert!(err.contains(why), "{}: {err}", url.replace(MARKER, "***"));
        said.push(err);
    }
    // A server without TLS under `require`.
    let plain = pg::PgServer::start();
    let plain_url = plain
        .url()
        .replacen("postgres://silo@", &format!("postgres://silo:{MARKER}@"), 1);
    let err = match connect(format!("{plain_url}?sslmode=require")).await {
        Ok(_) => panic!("require connected to a server without TLS"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("TLS"), "{err}");
    said.push(err);
    connect(plain_url)
        .await
        .expect("prefer falls back to a plain connection");
    for message in said {
        assert!(!message.contains(MARKER), "the password appears in: {message}");
    }
}
