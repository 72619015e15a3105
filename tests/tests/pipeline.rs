//! End to end: real components built from plugins/, real directories, a
//! real SQLite file.

use silo_host::store::ObjectStore;
use silo_host::{Status, UploadReport};
use silo_tests::{EXAMPLE_PIPELINE, PROBE, TestSilo, jpeg, png, probe_stage, webp};

fn probe_pipeline(mode: &str, extra: &str) -> String {
    format!(
        r#"
[[plugins]]
name = "probe"
component = "probe.wasm"
sha256 = "{{sha256:probe.wasm}}"
settings = {{ mode = "{mode}" {extra} }}
grants = [{{ volume = "public", access = ["read", "write", "delete"] }}]
"#
    )
}

fn derivative<'a>(report: &'a UploadReport, style: &str) -> &'a silo_host::pipeline::Derivative {
    report
        .derivatives
        .iter()
        .find(|d| d.style.as_deref() == Some(style))
        .unwrap_or_else(|| panic!("no {style} derivative in {report:#?}"))
}

#[tokio::test]
async fn jpeg_is_accepted_and_its_styles_have_the_right_dimensions() -> anyhow::Result<()> {
    let t = TestSilo::new(EXAMPLE_PIPELINE, &[]).await?;
    let report = t
        .upload("public/photos/2026/sunset.jpg", &jpeg(1200, 800), None)
        .await?;
    assert_eq!(report.status, Status::Accepted, "{report:#?}");
    assert!(report.file.etag.is_some());

    for (style, w, h) in [("thumbnail", 100, 100), ("medium", 640, 427)] {
        let d = derivative(&report, style);
        assert_eq!(d.path, format!("styles/{style}/photos/2026/sunset.jpg"));
        assert_eq!((d.width, d.height), (Some(w), Some(h)));
        assert_eq!(d.content_type, "image/jpeg");
        // What is on disk really is a JPEG of that size.
        let bytes = std::fs::read(t.volume_dir("public").join(&d.path))?;
        assert_eq!(bytes.len() as u64, d.size);
        let img = image::load_from_memory_with_format(&bytes, image::ImageFormat::Jpeg)?;
        assert_eq!((img.width(), img.height()), (w, h), "{style}");
    }
    let original = std::fs::read(t.volume_dir("public").join("photos/2026/sunset.jpg"))?;
    assert_eq!(original, jpeg(1200, 800));
    Ok(())
}

#[tokio::test]
async fn png_and_webp_keep_their_format_and_small_images_are_not_upscaled() -> anyhow::Result<()> {
    let t = TestSilo::new(EXAMPLE_PIPELINE, &[]).await?;
    let report = t.upload("public/a.png", &png(300, 200), None).await?;
    assert_eq!(report.status, Status::Accepted, "{report:#?}");
    assert_eq!(
        (
            derivative(&report, "medium").width,
            derivative(&report, "medium").height
        ),
        (Some(300), Some(200))
    );
    let thumb = std::fs::read(t.volume_dir("public").join("styles/thumbnail/a.png"))?;
    assert_eq!(image::guess_format(&thumb)?, image::ImageFormat::Png);

    let report = t.upload("public/b.webp", &webp(800, 400), None).await?;
    assert_eq!(report.status, Status::Accepted, "{report:#?}");
    assert_eq!(derivative(&report, "medium").height, Some(320));
    let medium = std::fs::read(t.volume_dir("public").join("styles/medium/b.webp"))?;
    assert_eq!(image::guess_format(&medium)?, image::ImageFormat::WebP);
    Ok(())
}

#[tokio::test]
async fn png_declared_as_jpeg_is_rejected_and_nothing_is_stored_or_derived() -> anyhow::Result<()> {
    // The storage core's content policy refuses it before any plugin runs.
    let t = TestSilo::new(EXAMPLE_PIPELINE, &[]).await?;
    let report = t.upload("public/fake.jpg", &png(300, 200), Some("image/jpeg")).await?;
    assert_eq!(report.status, Status::Rejected, "{report:#?}");
    assert_eq!(report.rejected_by.as_deref(), Some(silo_host::pipeline::POLICY));
    assert!(report.plugins.is_empty());
    assert_eq!(t.files_on_disk("public"), Vec::<(String, u64)>::new());

    // With the policy's content checks off, upload-guard still catches it.
    let pipeline = format!("[content_policy]\ncheck_content = false\n{EXAMPLE_PIPELINE}");
    let t = TestSilo::new(&pipeline, &[]).await?;
    let report = t.upload("public/fake.jpg", &png(300, 200), Some("image/jpeg")).await?;
    assert_eq!(report.status, Status::Rejected, "{report:#?}");
    assert_eq!(report.rejected_by.as_deref(), Some("upload-guard"));
    assert_eq!(
        report.reason.as_deref(),
        Some("declared as image/jpeg but the content is image/png")
    );
    assert!(report.derivatives.is_empty());
    assert_eq!(report.plugins.len(), 1, "image-styles must not run after a rejection");
    assert_eq!(t.files_on_disk("public"), Vec::<(String, u64)>::new());
    assert!(t.silo.storage().cache().all_files("public").await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn oversized_uploads_are_rejected_by_the_guard() -> anyhow::Result<()> {
    let t = TestSilo::new(EXAMPLE_PIPELINE, &[]).await?;
    let report = t.upload("public/big.bin", &vec![7u8; 1_000_001], None).await?;
    assert_eq!(report.status, Status::Rejected);
    assert!(report.reason.unwrap().contains("at most 1000000"));
    Ok(())
}

#[tokio::test]
async fn the_cache_rows_equal_what_is_on_disk() -> anyhow::Result<()> {
    let t = TestSilo::new(EXAMPLE_PIPELINE, &[]).await?;
    t.upload("public/x/one.jpg", &jpeg(800, 600), None).await?;
    t.upload("public/x/two.png", &png(120, 90), None).await?;
    t.upload("public/x/fake.png", &jpeg(10, 10), Some("image/png")).await?; // rejected
    t.upload("public/notes/😀 ünïcode.txt", b"hello", None).await?;

    // Read the SQLite file directly, not through the cache code.
    let db = rusqlite::Connection::open(t.dir.path().join("state/meta.sqlite"))?;
    let mut rows: Vec<(String, u64, String)> = db
        .prepare("SELECT path, size, etag FROM objects WHERE volume = 'public' ORDER BY path")?
        .query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64, r.get(2)?)))?
        .collect::<Result<_, _>>()?;
    rows.sort();
    let disk = t.files_on_disk("public");
    assert_eq!(disk.len(), 2 * 3 + 1, "{disk:?}");
    assert_eq!(rows.iter().map(|(p, s, _)| (p.clone(), *s)).collect::<Vec<_>>(), disk);

    // Etags match what the backend reports now.
    let store = silo_host::store::LocalStore::open(&t.volume_dir("public"))?;
    for (path, _, etag) in &rows {
        assert_eq!(&store.head(path).await?.etag, etag, "{path}");
    }
    Ok(())
}

#[tokio::test]
async fn a_second_invocation_sees_no_state_from_the_first() -> anyhow::Result<()> {
    let t = TestSilo::new(&probe_pipeline("count", ""), &[("probe.wasm", PROBE)]).await?;
    for _ in 0..3 {
        let report = t.upload("public/a.txt", b"x", None).await?;
        assert_eq!(report.reason.as_deref(), Some("calls=1"), "{report:#?}");
    }
    Ok(())
}

/// Instances reuse the pooling allocator's memory slots, reset in place
/// where the kernel can tell which pages were dirtied: a plugin that reads
/// its statics and freshly grown pages must find zeros, after earlier
/// instances (one after another, and many at once) filled them.
#[tokio::test]
async fn no_instance_finds_what_an_earlier_one_left_in_memory() -> anyhow::Result<()> {
    let t = TestSilo::new(&probe_pipeline("residue", ", pages = \"64\""), &[("probe.wasm", PROBE)]).await?;
    for _ in 0..3 {
        let report = t.upload("public/a.txt", b"x", None).await?;
        assert_eq!(report.reason.as_deref(), Some("dirty=0"), "{report:#?}");
    }
    let t = &t;
    for round in 0..3 {
        let uploads = (0..12).map(|i| async move { t.upload(&format!("public/{round}-{i}.txt"), b"x", None).await });
        for report in futures::future::join_all(uploads).await {
            let report = report?;
            assert_eq!(report.reason.as_deref(), Some("dirty=0"), "{report:#?}");
        }
    }
    Ok(())
}

#[tokio::test]
async fn files_stream_through_a_plugin_in_both_directions() -> anyhow::Result<()> {
    let t = TestSilo::new(&probe_pipeline("stream-copy", ""), &[("probe.wasm", PROBE)]).await?;
    // Several write chunks, not a multiple of any buffer size.
    let data: Vec<u8> = (0..5 * 1024 * 1024 + 12345).map(|i| (i * 7 % 251) as u8).collect();
    let report = t.upload("public/blob.bin", &data, None).await?;
    assert_eq!(report.status, Status::Accepted, "{report:#?}");
    let copy = std::fs::read(t.volume_dir("public").join("copies/blob.bin"))?;
    assert!(copy == data, "the streamed copy differs from the original");
    assert_eq!(report.derivatives[0].size, data.len() as u64);
    Ok(())
}

#[tokio::test]
async fn a_later_rejection_discards_earlier_derivatives() -> anyhow::Result<()> {
    let pipeline = format!(
        "{}\n{}",
        EXAMPLE_PIPELINE,
        probe_pipeline("count", "").replace(r#"name = "probe""#, r#"name = "late-judge""#)
    );
    let t = TestSilo::new(&pipeline, &[("probe.wasm", PROBE)]).await?;
    let report = t.upload("public/p.jpg", &jpeg(700, 700), None).await?;
    assert_eq!(report.status, Status::Rejected);
    assert_eq!(report.rejected_by.as_deref(), Some("late-judge"));
    assert_eq!(report.plugins.len(), 3);
    assert_eq!(t.files_on_disk("public"), Vec::<(String, u64)>::new());
    assert!(t.silo.storage().cache().all_files("public").await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn outside_its_grants_a_plugin_learns_nothing() -> anyhow::Result<()> {
    let pipeline =
        |volume: &str, path: &str| probe_pipeline("stat", &format!(r#", volume = "{volume}", path = "{path}""#));
    for (volume, path, expected) in [
        ("private", "secret.txt", "error Error::AccessDenied"),
        ("private", "missing.txt", "error Error::AccessDenied"),
        ("nope", "x", "error Error::AccessDenied"),
        ("public", "missing.txt", "error Error::NotFound"),
        ("public", "../private/secret.txt", "error Error::InvalidPath"),
        ("public", "up.txt", "ok size=2"),
    ] {
        let t = TestSilo::new(&pipeline(volume, path), &[("probe.wasm", PROBE)]).await?;
        std::fs::create_dir_all(t.volume_dir("private"))?;
        let host = t.silo.storage().host_session();
        let secret = t.silo.storage().location("private", "secret.txt")?;
        host.write(&secret, "s3cret".into(), Default::default()).await?;
        let report = t.upload("public/up.txt", b"hi", None).await?;
        let reason = report.reason.unwrap_or_default();
        assert!(reason.starts_with(expected), "{volume}/{path}: {reason}");
    }
    Ok(())
}

#[tokio::test]
async fn image_styles_derives_one_style_on_request() -> anyhow::Result<()> {
    use silo_host::runtime::DeriveRequest;
    use silo_host::store::PutOptions;
    use silo_host::{InvokeError, Session, StorageError};

    let t = TestSilo::new(EXAMPLE_PIPELINE, &[]).await?;
    let storage = t.silo.storage();
    let host = storage.host_session();
    let source = storage.location("public", "p/orig.png")?;
    host.write(
        &source,
        png(900, 300).into(),
        PutOptions {
            content_type: "image/png".into(),
            ..Default::default()
        },
    )
    .await?;
    let stage = t
        .silo
        .stages()
        .iter()
        .find(|s| s.config.name == "image-styles")
        .unwrap();
    let derive = |style: &str, target: &str| {
        let session = Session::new(storage.clone(), Some(stage.grants.clone()), stage.quota());
        let request = DeriveRequest {
            source: (&source).into(),
            style: style.into(),
            target: (&storage.location("public", target).unwrap()).into(),
            settings: Vec::new(),
            params: Vec::new(),
        };
        t.silo
            .runtime()
            .on_derive(&stage.component, session, stage.limits(), request)
    };

    let derived = derive("medium", "styles/medium/p/orig.png").await?;
    assert_eq!((derived.width, derived.height), (Some(640), Some(213)));
    let stored = host
        .stat(&storage.location("public", "styles/medium/p/orig.png")?)
        .await?;
    assert_eq!(stored.size, derived.info.size);
    assert_eq!(stored.content_type, "image/png");

    let err = derive("poster", "styles/poster/p/orig.png").await.err().unwrap();
    assert!(
        matches!(
            err,
            InvokeError::Failed {
                error: StorageError::Unsupported(_),
                ..
            }
        ),
        "{err}"
    );
    // Its grants cover styles/ only.
    let err = derive("thumbnail", "p/overwrite.png").await.err().unwrap();
    assert!(
        matches!(
            err,
            InvokeError::Failed {
                error: StorageError::AccessDenied,
                ..
            }
        ),
        "{err}"
    );
    Ok(())
}

#[tokio::test]
async fn fifty_requests_for_a_missing_style_derive_it_once() -> anyhow::Result<()> {
    use silo_host::StyleError;
    use silo_host::store::PutOptions;

    let pipeline = EXAMPLE_PIPELINE.replace(
        r#"events = ["image/jpeg", "image/png", "image/webp"]"#,
        r#"events = ["image/jpeg", "image/png", "image/webp"]
styles = ["thumbnail", "medium"]"#,
    );
    let t = TestSilo::new(&pipeline, &[]).await?;
    let storage = t.silo.storage();
    let source = storage.location("public", "p/orig.jpg")?;
    let options = PutOptions {
        content_type: "image/jpeg".into(),
        ..Default::default()
    };
    storage
        .host_session()
        .write(&source, jpeg(900, 600).into(), options)
        .await?;
    let silo = &t.silo;
    let results =
        futures::future::join_all((0..50).map(|_| async move { silo.style("public", "p/orig.jpg", "medium").await }))
            .await;
    let etags: std::collections::BTreeSet<String> = results
        .into_iter()
        .map(|r| r.map(|(_, meta)| meta.etag))
        .collect::<Result<_, _>>()?;
    assert_eq!(etags.len(), 1, "every request got the same file");
    assert_eq!(silo.derivations(), 1, "derived once");
    assert_eq!(t.files_on_disk("public").len(), 2);
    silo.style("public", "p/orig.jpg", "medium").await?;
    assert_eq!(silo.derivations(), 1, "an existing style is served as it is");
    assert!(matches!(
        silo.style("public", "p/orig.jpg", "poster").await,
        Err(StyleError::UnknownStyle { .. })
    ));
    Ok(())
}

#[tokio::test]
async fn uploads_on_both_sides_of_the_memory_staging_limit_are_stored_whole() -> anyhow::Result<()> {
    use silo_host::pipeline::MEMORY_STAGE_BYTES;
    let t = TestSilo::new(&probe_pipeline("stream-copy", ""), &[("probe.wasm", PROBE)]).await?;
    for (i, size) in [0, 1, MEMORY_STAGE_BYTES, MEMORY_STAGE_BYTES + 1, 3 << 20]
        .into_iter()
        .enumerate()
    {
        let bytes: Vec<u8> = (0..size).map(|n| b'a' + (n % 23) as u8).collect();
        let report = t
            .upload(&format!("public/sizes/{i}.txt"), &bytes, Some("text/plain"))
            .await?;
        assert_eq!(report.status, Status::Accepted, "{size} bytes: {report:?}");
        assert_eq!(
            std::fs::read(t.volume_dir("public").join(format!("sizes/{i}.txt")))?,
            bytes
        );
        // The plugin read the staged upload whole, wherever it was staged.
        assert_eq!(report.derivatives[0].size, size as u64, "{size} bytes");
        let copy = std::fs::read(t.volume_dir("public").join(format!("copies/sizes/{i}.txt")))?;
        assert!(copy == bytes, "{size} bytes: the plugin's copy differs");
    }
    let staging = t.dir.path().join("state/staging");
    let left = std::fs::read_dir(&staging).map_or(0, |d| d.count());
    assert_eq!(left, 0, "staged files are removed");
    Ok(())
}

#[tokio::test]
async fn plugins_get_public_urls_and_no_url_for_private_local_files() -> anyhow::Result<()> {
    let grants = r#"{ volume = "public", access = ["read"] }, { volume = "private", access = ["read"] }"#;
    let pipeline = [
        ("public", "public", "a b/café.txt"),
        ("private", "private", "notes.txt"),
    ]
    .map(|(case, volume, path)| {
        probe_stage(
            &format!("url-{case}"),
            &format!("text/x-{case}"),
            &format!(r#"mode = "url", volume = "{volume}", path = "{path}""#),
            grants,
        )
    })
    .concat();
    let t = TestSilo::new(&pipeline, &[("probe.wasm", PROBE)]).await?;
    let host = t.silo.storage().host_session();
    for (volume, path) in [("public", "a b/café.txt"), ("private", "notes.txt")] {
        let loc = t.silo.storage().location(volume, path)?;
        host.write(&loc, bytes::Bytes::from_static(b"x"), Default::default())
            .await?;
    }
    let public = t.upload("public/ask.txt", b"hi", Some("text/x-public")).await?;
    assert_eq!(
        public.reason.as_deref(),
        Some("url=https://cdn.example.test/files/a%20b/caf%C3%A9.txt")
    );
    let private = t.upload("public/ask.txt", b"hi", Some("text/x-private")).await?;
    assert_eq!(private.reason.as_deref(), Some("error unsupported"));
    Ok(())
}

#[tokio::test]
async fn the_report_lists_each_derived_file_once_as_it_stands_at_the_end() -> anyhow::Result<()> {
    let grants = r#"{ volume = "public", access = ["read", "write", "delete"] }"#;
    let stage = |name: &str, settings: &str| probe_stage(name, "text/plain", settings, grants);
    let pipeline = [
        stage(
            "first",
            r#"mode = "generate", volume = "public", path = "notes/a.txt", size = "10""#,
        ),
        stage(
            "scratch",
            r#"mode = "generate", volume = "public", path = "notes/tmp.txt", size = "5""#,
        ),
        stage(
            "second",
            r#"mode = "generate", volume = "public", path = "notes/a.txt", size = "20""#,
        ),
        stage("tidy", r#"mode = "remove", volume = "public", path = "notes/tmp.txt""#),
    ]
    .concat();
    let t = TestSilo::new(&pipeline, &[("probe.wasm", PROBE)]).await?;
    let report = t.upload("public/doc.txt", b"text", Some("text/plain")).await?;
    assert_eq!(report.status, Status::Accepted, "{report:#?}");
    let listed: Vec<(&str, u64, &str)> = report
        .derivatives
        .iter()
        .map(|d| (d.path.as_str(), d.size, d.plugin.as_str()))
        .collect();
    assert_eq!(listed, [("notes/a.txt", 20, "second")], "{report:#?}");
    let stored = t
        .silo
        .storage()
        .host_session()
        .stat(&t.silo.storage().location("public", "notes/a.txt")?)
        .await?;
    assert_eq!(stored.etag, report.derivatives[0].etag);
    Ok(())
}
