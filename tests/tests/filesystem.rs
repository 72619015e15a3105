//! wasi:filesystem over the volumes: a plugin written against plain
//! `std::fs` (plugins/fs-thumbnails) reads, decodes, writes and lists
//! through the grants, the metadata cache, the quotas and the content
//! policy, on local volumes and on S3.

use silo_host::Status;
use silo_tests::{FS_THUMBNAILS, TestSilo};

fn pipeline(mode: &str, extra: &str, grants: &str) -> String {
    format!(
        r#"
[[plugins]]
name = "fs"
component = "fs.wasm"
sha256 = "{{sha256:fs.wasm}}"
events = ["*/*"]
limits = {{ memory_mib = 128, time_ms = 20000, objects_written = 20, bytes_written = 8388608 }}
grants = {grants}
[plugins.settings]
mode = "{mode}"
{extra}
"#
    )
}

const GRANTS: &str = r#"[
    { volume = "public", access = ["read"] },
    { volume = "public", prefix = "styles/fs", access = ["read", "write", "delete"] },
    { volume = "public", prefix = "scratch", access = ["read", "write", "delete"] },
]"#;

#[tokio::test]
async fn std_fs_and_the_image_crate_read_decode_save_and_list() -> anyhow::Result<()> {
    let t = TestSilo::new(&pipeline("thumbnail", "", GRANTS), &[("fs.wasm", FS_THUMBNAILS)]).await?;
    let photo = silo_tests::jpeg(640, 480);
    let report = t.upload("public/photos/cat.jpg", &photo, Some("image/jpeg")).await?;
    assert_eq!(report.status, Status::Accepted, "{report:#?}");
    assert_eq!(report.derivatives.len(), 1, "{report:#?}");
    let thumb = &report.derivatives[0];
    assert_eq!(thumb.path, "styles/fs/photos/cat.jpg");
    assert_eq!((thumb.width, thumb.height), (Some(100), Some(75)));
    assert_eq!(thumb.content_type, "image/jpeg");
    let stored = std::fs::read(t.volume_dir("public").join("styles/fs/photos/cat.jpg"))?;
    assert_eq!(stored.len() as u64, thumb.size);
    let decoded = image::load_from_memory(&stored)?;
    assert_eq!((decoded.width(), decoded.height()), (100, 75));
    Ok(())
}

/// Runs `ops` (see plugins/fs-thumbnails) on an upload of "hello world"
/// at public/docs/note.txt and returns each op's outcome.
async fn run_ops(t: &TestSilo, target: &str) -> anyhow::Result<Vec<(String, String)>> {
    let report = t.upload(target, b"hello world", Some("text/plain")).await?;
    assert_eq!(report.status, Status::Rejected, "{report:#?}");
    let reason = report.reason.unwrap_or_default();
    Ok(reason
        .split('|')
        .map(|r| {
            let (op, outcome) = r.rsplit_once('=').unwrap_or((r, ""));
            (op.to_owned(), outcome.to_owned())
        })
        .collect())
}

fn ops_setting(ops: &[(&str, &str)]) -> String {
    let joined: Vec<&str> = ops.iter().map(|(op, _)| *op).collect();
    format!("ops = {:?}", joined.join("|"))
}

fn check(got: &[(String, String)], want: &[(&str, &str)]) {
    assert_eq!(got.len(), want.len(), "{got:#?}");
    for ((op, outcome), (want_op, want_outcome)) in got.iter().zip(want) {
        assert_eq!((op.as_str(), outcome.as_str()), (*want_op, *want_outcome), "{got:#?}");
    }
}

/// What each operation answers, in order; the files interface's rules.
const OPS: &[(&str, &str)] = &[
    // The upload under judgement, read-only, and the directory it is in.
    ("read:/public/docs/note.txt", "ok(hello world)"),
    ("read-at:/public/docs/note.txt=6+5", "ok(world)"),
    ("stat:/public/docs/note.txt", "ok(file 11)"),
    ("stat:/public/docs", "ok(dir)"),
    ("list:/public/docs", "ok(note.txt)"),
    ("write:/public/docs/note.txt=x", "err(PermissionDenied EACCES)"),
    // Sequential writes and appends inside a write grant.
    ("write:/public/scratch/a.txt=one", "ok()"),
    ("append:/public/scratch/a.txt=+two", "ok()"),
    ("read:/public/scratch/a.txt", "ok(one+two)"),
    ("create-new:/public/scratch/a.txt=x", "err(AlreadyExists)"),
    // A write elsewhere than the end: what came before it is stored.
    ("seek-write:/public/scratch/b.txt", "err(Unsupported)"),
    ("read:/public/scratch/b.txt", "ok(a)"),
    ("mkdir:/public/scratch/sub/deeper", "ok()"),
    ("stat:/public/scratch/sub/deeper", "ok(dir)"),
    ("mv:/public/scratch/a.txt>/public/scratch/sub/c.txt", "ok()"),
    ("read:/public/scratch/sub/c.txt", "ok(one+two)"),
    ("list:/public/scratch", "ok(b.txt,sub/)"),
    ("list:/public/scratch/sub", "ok(c.txt,deeper/)"),
    ("rm:/public/scratch/b.txt", "ok()"),
    ("read:/public/scratch/b.txt", "err(NotFound)"),
    ("rmdir:/public/scratch/sub/deeper", "ok()"),
    // ENOTEMPTY: std has no kind for it on WASI.
    ("rmdir:/public/scratch/sub", "err(errno 55)"),
    ("list:/public", "ok(docs/,scratch/)"),
    // Outside the grants: refused, whether or not anything is there.
    ("write:/public/other/x.txt=x", "err(PermissionDenied EACCES)"),
    ("rm:/public/docs/note.txt", "err(PermissionDenied EACCES)"),
    ("read:/public/../private/x", "err(PermissionDenied EPERM)"),
    // A volume with no grant is not a directory the plugin has at all.
    ("read:/private/secret.txt", "err(NotFound)"),
    // Write-xor-execute: by name at open, by content when committed.
    ("write:/public/scratch/shell.php=x", "err(PermissionDenied EPERM)"),
    (
        "sync:/public/scratch/page.txt=<?php system($_GET[1]);",
        "err(PermissionDenied EPERM)",
    ),
    ("stat:/public/scratch/page.txt", "err(NotFound)"),
];

#[tokio::test]
async fn std_fs_operations_follow_the_grants_quotas_and_policy_on_local_volumes() -> anyhow::Result<()> {
    let t = TestSilo::new(
        &pipeline("ops", &ops_setting(OPS), GRANTS),
        &[("fs.wasm", FS_THUMBNAILS)],
    )
    .await?;
    check(&run_ops(&t, "public/docs/note.txt").await?, OPS);
    // Everything written for the refused upload is gone again.
    assert_eq!(t.files_on_disk("public"), Vec::<(String, u64)>::new());
    Ok(())
}

/// Stat, metadata, open and listings come from the metadata cache; a
/// positional read is one ranged GET. Counted on a real S3 store.
#[tokio::test]
async fn lookups_come_from_the_cache_and_reads_are_ranged_gets_on_s3() -> anyhow::Result<()> {
    use std::sync::Arc;
    use std::time::Duration;

    use silo_host::cache::MetadataCache;
    use silo_host::runtime::Runtime;
    use silo_host::runtime::{InvokeLimits, Outcome, Upload};
    use silo_host::store::PutOptions;
    use silo_host::vfs::{CacheMode, PendingUpload, Quota, Session, Staged, Storage};

    let dir = tempfile::tempdir()?;
    let watched = silo_tests::watched::Watched::new(Arc::new(silo_tests::s3::store("fs-lookups").await));
    let volume = silo_tests::bare_volume("public", CacheMode::Canonical, watched.clone());
    let storage = Arc::new(Storage::new(
        vec![volume],
        MetadataCache::open(&dir.path().join("meta.sqlite"))?,
    ));
    let host = storage.host_session();
    for i in 0..10 {
        let loc = storage.location("public", &format!("photos/{i}.txt"))?;
        host.write(&loc, format!("file {i}").into(), PutOptions::default())
            .await?;
    }
    let ops = [
        ("stat:/public/photos/1.txt", "ok(file 6)"),
        ("stat:/public/photos", "ok(dir)"),
        (
            "list:/public/photos",
            "ok(0.txt,1.txt,2.txt,3.txt,4.txt,5.txt,6.txt,7.txt,8.txt,9.txt)",
        ),
        ("stat:/public/photos/missing.txt", "err(NotFound)"),
        ("read-at:/public/photos/3.txt=1+2", "ok(il)"),
    ];
    let joined: Vec<&str> = ops.iter().map(|(op, _)| *op).collect();
    let runtime = Runtime::new(Some(&silo_tests::shared_compile_cache()), 128)?;
    let plugin = runtime.load("fs", FS_THUMBNAILS, None)?;
    let pending = PendingUpload {
        location: storage.location("public", "incoming/new.txt")?,
        meta: host.stat(&storage.location("public", "photos/1.txt")?).await?,
        staged: Arc::new(Staged::Memory("upload".into())),
        condition: None,
        actor: None,
        sha256: None,
        etag: None,
        assembly: Default::default(),
        place: None,
    };
    let grants = silo_tests::read_grant("public");
    let session = Session::new(storage.clone(), Some(grants), Quota::UNLIMITED).with_pending(pending.clone());
    let upload = Upload {
        file: (&pending.location).into(),
        info: (&pending.meta).into(),
        settings: vec![("mode".into(), "ops".into()), ("ops".into(), joined.join("|"))],
    };
    let limits = InvokeLimits {
        memory_bytes: 128 << 20,
        time: Duration::from_secs(30),
    };
    watched.reset();
    let outcome = runtime.on_upload(&plugin, session, limits, upload).await?;
    let Outcome::Reject(reason) = outcome else {
        panic!("the ops mode rejects")
    };
    let got: Vec<(String, String)> = reason
        .split('|')
        .map(|r| {
            let (op, outcome) = r.rsplit_once('=').unwrap();
            (op.to_owned(), outcome.to_owned())
        })
        .collect();
    check(&got, &ops);
    assert_eq!(watched.calls(), [("get", "photos/3.txt".to_owned())]);
    Ok(())
}

/// The bounds of the files interface hold through std::fs: object and
/// byte quotas, 16 files open for writing, 16 read streams.
#[tokio::test]
async fn floods_and_held_files_stop_at_the_same_bounds() -> anyhow::Result<()> {
    let stage = |name: &str, event: &str, ops: &str| {
        format!(
            r#"
[[plugins]]
name = "{name}"
component = "fs.wasm"
sha256 = "{{sha256:fs.wasm}}"
events = ["{event}"]
limits = {{ time_ms = 20000, objects_written = 20, bytes_written = 8388608 }}
grants = {GRANTS}
settings = {{ mode = "ops", ops = "{ops}" }}
"#
        )
    };
    let pipeline = [
        stage("flood", "application/x-flood", "flood:/public/scratch/flood"),
        stage("writers", "application/x-writers", "hold-open:/public/scratch/held"),
        stage("readers", "application/x-readers", "hold-read:/public/docs/in.bin"),
        stage("big", "application/x-big", "fill:/public/scratch/big=9437184"),
    ]
    .concat();
    for on_s3 in [false, true] {
        let (t, bucket) = on(on_s3, &pipeline, "fs-floods").await?;
        for (kind, want) in [
            ("flood", "20 then QuotaExceeded"),
            ("writers", "16 then QuotaExceeded"),
            ("readers", "16 then QuotaExceeded"),
            // EIO: a failed stream write reaches the guest's libc without
            // its cause (it does not ask filesystem-error-code).
            ("big", "err(errno 29)"),
        ] {
            let report = t
                .upload("public/docs/in.bin", b"payload", Some(&format!("application/x-{kind}")))
                .await?;
            assert_eq!(report.status, Status::Rejected, "{kind}: {report:#?}");
            let reason = report.reason.unwrap_or_default();
            let outcome = reason.rsplit_once('=').map_or("", |(_, o)| o);
            let outcome = outcome
                .strip_prefix("ok(")
                .and_then(|o| o.strip_suffix(')'))
                .unwrap_or(outcome);
            assert_eq!(outcome, want, "{kind} on {}: {reason}", backend(on_s3));
            assert_nothing_stored(&t, bucket.as_deref(), &format!("{kind} on {}", backend(on_s3))).await;
        }
    }
    Ok(())
}

fn backend(on_s3: bool) -> &'static str {
    if on_s3 { "s3" } else { "local" }
}

/// A Silo with `pipeline` on local volumes, or on S3 (with its bucket).
async fn on(on_s3: bool, pipeline: &str, hint: &str) -> anyhow::Result<(TestSilo, Option<String>)> {
    Ok(if on_s3 {
        let (t, bucket) = TestSilo::on_s3(pipeline, &[("fs.wasm", FS_THUMBNAILS)], hint).await?;
        (t, Some(bucket))
    } else {
        (TestSilo::new(pipeline, &[("fs.wasm", FS_THUMBNAILS)]).await?, None)
    })
}

/// Nothing is left of a refused upload: no file, no object, no open
/// multipart upload, no cache row.
async fn assert_nothing_stored(t: &TestSilo, bucket: Option<&str>, what: &str) {
    match bucket {
        Some(bucket) => {
            assert_eq!(
                silo_tests::s3::keys(bucket).await,
                Vec::<(String, u64)>::new(),
                "{what}"
            );
            let mut open = usize::MAX;
            for _ in 0..50 {
                open = silo_tests::s3::open_uploads(bucket).await;
                if open == 0 {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            assert_eq!(open, 0, "{what}: multipart uploads left open");
        }
        None => assert_eq!(t.files_on_disk("public"), Vec::<(String, u64)>::new(), "{what}"),
    }
    assert!(
        t.silo.storage().cache().all_files("public").await.unwrap().is_empty(),
        "{what}: cache rows left"
    );
}

#[tokio::test]
async fn std_fs_operations_behave_the_same_on_s3() -> anyhow::Result<()> {
    let (t, bucket) = TestSilo::on_s3(
        &pipeline("ops", &ops_setting(OPS), GRANTS),
        &[("fs.wasm", FS_THUMBNAILS)],
        "fs-ops",
    )
    .await?;
    check(&run_ops(&t, "public/docs/note.txt").await?, OPS);
    assert_eq!(silo_tests::s3::keys(&bucket).await, Vec::<(String, u64)>::new());
    assert_eq!(silo_tests::s3::open_uploads(&bucket).await, 0);

    let (t, bucket) = TestSilo::on_s3(
        &pipeline("thumbnail", "", GRANTS),
        &[("fs.wasm", FS_THUMBNAILS)],
        "fs-thumb",
    )
    .await?;
    let report = t
        .upload("public/a/b.png", &silo_tests::png(300, 600), Some("image/png"))
        .await?;
    assert_eq!(report.status, Status::Accepted, "{report:#?}");
    let keys: Vec<String> = silo_tests::s3::keys(&bucket)
        .await
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(keys, ["public/a/b.png", "public/styles/fs/a/b.png"]);
    assert_eq!(
        (report.derivatives[0].width, report.derivatives[0].height),
        (Some(50), Some(100))
    );
    Ok(())
}

/// What an attacker tries through paths and handles, with write and delete
/// rights on the whole volume.
#[tokio::test]
async fn path_tricks_the_pending_upload_and_handle_floods_stay_bounded() -> anyhow::Result<()> {
    let long = "a".repeat(1100);
    let ops: Vec<(String, &str)> = vec![
        (
            "read:/public/scratch/../../private/x".into(),
            "err(PermissionDenied EPERM)",
        ),
        ("read:/public/./docs//note.txt".into(), "ok(hello world)"),
        ("write:/public/scratch/a\\b.txt=x".into(), "err(InvalidInput)"),
        (format!("write:/public/scratch/{long}=x"), "err(InvalidInput)"),
        ("write:/public/scratch/tab\t.txt=x".into(), "err(InvalidInput)"),
        // The upload under judgement is read-only, whatever the grants.
        ("write:/public/docs/note.txt=x".into(), "err(ReadOnlyFilesystem)"),
        ("append:/public/docs/note.txt=x".into(), "err(ReadOnlyFilesystem)"),
        ("rm:/public/docs/note.txt".into(), "err(ReadOnlyFilesystem)"),
        (
            "mv:/public/docs/note.txt>/public/scratch/stolen.txt".into(),
            "err(ReadOnlyFilesystem)",
        ),
        ("read:/public/docs/note.txt".into(), "ok(hello world)"),
        ("hold-listings:/public/docs".into(), "ok(16 then QuotaExceeded)"),
        ("mkdir-flood:/public/scratch/d".into(), "ok(1000 then QuotaExceeded)"),
    ];
    let ops: Vec<(&str, &str)> = ops.iter().map(|(o, w)| (o.as_str(), *w)).collect();
    let grants = r#"[{ volume = "public", access = ["read", "write", "delete"] }]"#;
    for on_s3 in [false, true] {
        let (t, bucket) = on(on_s3, &pipeline("ops", &ops_setting(&ops), grants), "fs-tricks").await?;
        check(&run_ops(&t, "public/docs/note.txt").await?, &ops);
        assert_nothing_stored(&t, bucket.as_deref(), backend(on_s3)).await;
    }
    Ok(())
}
