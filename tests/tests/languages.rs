//! Plugins in Python (componentize-py) and JavaScript (jco), built from
//! plugins/ during the run and driven through the real pipeline.

use silo_host::Status;
use silo_tests::{TestSilo, guests};

const SVG_PIPELINE: &str = r#"
[[plugins]]
name = "svg-sanitizer"
component = "svg_sanitizer.wasm"
sha256 = "{sha256:svg_sanitizer.wasm}"
events = ["image/svg+xml"]
limits = { memory_mib = 64, time_ms = 10000 }
grants = [{ volume = "public", access = ["read"] }]
"#;

const CLEAN: &str = r##"<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" width="10" height="10">
  <defs><linearGradient id="g"><stop offset="0" stop-color="red"/></linearGradient></defs>
  <rect width="10" height="10" fill="url(#g)" style="stroke: url(#g)"/>
  <use xlink:href="#g"/>
  <image href="data:image/png;base64,iVBORw0KGgo="/>
</svg>"##;

#[tokio::test]
async fn the_python_svg_sanitizer_accepts_clean_svgs_and_refuses_active_ones() -> anyhow::Result<()> {
    let component = guests::python("svg-sanitizer");
    let t = TestSilo::new(SVG_PIPELINE, &[("svg_sanitizer.wasm", &component)]).await?;
    let clean = t
        .upload("public/logo.svg", CLEAN.as_bytes(), Some("image/svg+xml"))
        .await?;
    assert_eq!(clean.status, Status::Accepted, "{clean:#?}");
    assert_eq!(clean.plugins[0].name, "svg-sanitizer");

    let svg = |body: &str| format!(r#"<svg xmlns="http://www.w3.org/2000/svg">{body}</svg>"#);
    for (case, bytes, reason) in [
        ("script", svg("<script>alert(1)</script>"), "a <script> element"),
        ("handler", svg(r#"<rect onload="alert(1)"/>"#), "an event-handler attribute (onload) on <rect>"),
        (
            "mouse",
            r#"<svg xmlns="http://www.w3.org/2000/svg" onmouseover="steal()"/>"#.to_owned(),
            "an event-handler attribute (onmouseover) on <svg>",
        ),
        (
            "link",
            svg(r#"<a href="javascript:alert(1)"><text>x</text></a>"#),
            "a javascript: URL in href on <a>",
        ),
        (
            "external",
            svg(r#"<image href="https://tracker.example/p.png"/>"#),
            "a reference outside the document (href=https://tracker.example/p.png) on <image>",
        ),
        (
            "xlink",
            svg(r#"<use xmlns:xlink="http://www.w3.org/1999/xlink" xlink:href="other.svg#x"/>"#),
            "a reference outside the document (href=other.svg#x) on <use>",
        ),
        (
            "style",
            svg("<style>rect { fill: url(https://x.example/f.svg#p) }</style>"),
            "a style url() outside the document (https://x.example/f.svg#p)",
        ),
        ("import", svg("<style>@import 'https://x.example/a.css';</style>"), "an @import in style"),
        ("foreign", svg("<foreignObject><div>hi</div></foreignObject>"), "a <foreignobject> element"),
        (
            "entities",
            r#"<?xml version="1.0"?><!DOCTYPE svg [<!ENTITY a "aaaaaaaaaa">]><svg xmlns="http://www.w3.org/2000/svg">&a;</svg>"#
                .to_owned(),
            "a DOCTYPE or entity declaration",
        ),
        ("broken", "<svg xmlns=\"http://www.w3.org/2000/svg\"><g></svg>".to_owned(), "not well-formed XML"),
    ] {
        let report = t.upload(&format!("public/{case}.svg"), bytes.as_bytes(), Some("image/svg+xml")).await?;
        assert_eq!(report.status, Status::Rejected, "{case}: {report:#?}");
        assert_eq!(report.rejected_by.as_deref(), Some("svg-sanitizer"), "{case}");
        let got = report.reason.unwrap_or_default();
        assert!(got.starts_with(&format!("unsafe SVG: {reason}")), "{case}: {got}");
    }
    // Only the clean one is stored.
    let stored: Vec<String> = t.files_on_disk("public").into_iter().map(|(p, _)| p).collect();
    assert_eq!(stored, ["logo.svg"]);
    Ok(())
}

const NOTE_PIPELINE: &str = r#"
[[plugins]]
name = "text-note"
component = "text_note.wasm"
sha256 = "{sha256:text_note.wasm}"
events = ["text/plain"]
limits = { memory_mib = 64, time_ms = 10000 }
grants = [{ volume = "public", access = ["read"] }, { volume = "public", prefix = "notes", access = ["read", "write"] }]
"#;

#[tokio::test]
async fn the_javascript_text_note_built_with_jcos_defaults_reads_writes_and_reports() -> anyhow::Result<()> {
    let component = guests::javascript("text-note");
    let t = TestSilo::new(NOTE_PIPELINE, &[("text_note.wasm", &component)]).await?;
    let text = "one two three\nfour five\n";
    let report = t
        .upload("public/docs/a.txt", text.as_bytes(), Some("text/plain"))
        .await?;
    assert_eq!(report.status, Status::Accepted, "{report:#?}");
    assert_eq!(report.derivatives.len(), 1, "{report:#?}");
    let note = &report.derivatives[0];
    assert_eq!(
        (note.path.as_str(), note.plugin.as_str()),
        ("notes/docs/a.txt.json", "text-note")
    );
    let stored = std::fs::read(t.volume_dir("public").join("notes/docs/a.txt.json"))?;
    let json: serde_json::Value = serde_json::from_slice(&stored)?;
    assert_eq!(json["words"], 5);
    assert_eq!(json["lines"], 3);
    assert_eq!(json["bytes"], text.len());
    assert_eq!(note.size, stored.len() as u64);

    // Its own size limit, from its settings default.
    let big = "x".repeat(2 * 1024 * 1024);
    let refused = t.upload("public/big.txt", big.as_bytes(), Some("text/plain")).await?;
    assert_eq!(refused.status, Status::Rejected, "{refused:#?}");
    assert!(
        refused
            .reason
            .unwrap_or_default()
            .contains("over the 1048576-byte limit")
    );
    Ok(())
}

fn manifest_stage(name: &str, event: &str, settings: &str) -> String {
    format!(
        r#"
[[plugins]]
name = "{name}"
component = "checksum_manifest.wasm"
sha256 = "{{sha256:checksum_manifest.wasm}}"
events = ["{event}"]
limits = {{ memory_mib = 64, time_ms = 10000 }}
grants = [{{ volume = "public", prefix = "docs", access = ["read"] }}, {{ volume = "public", prefix = "manifests", access = ["read", "write"] }}]
settings = {{ {settings} }}
"#
    )
}

#[tokio::test]
async fn a_python_plugin_using_plain_open_writes_its_manifest_within_its_grants() -> anyhow::Result<()> {
    use sha2::Digest;
    let component = guests::python("checksum-manifest");
    // Outside its grants: PermissionError, never FileNotFoundError, whether
    // or not the file exists; a volume it has no grant on is not there.
    let tries = [
        ("/public/docs/a.txt", "read 5 bytes"),
        ("/public/secret.txt", "PermissionError"),
        ("/public/missing.txt", "PermissionError"),
        ("/public/docs/../../private/x", "PermissionError"),
        ("/private/anything", "FileNotFoundError"),
        ("/etc/passwd", "FileNotFoundError"),
    ];
    let mut pipeline = manifest_stage("checksum-manifest", "application/octet-stream", "");
    for (i, (path, _)) in tries.iter().enumerate() {
        pipeline.push_str(&manifest_stage(
            &format!("try-{i}"),
            &format!("application/x-try-{i}"),
            &format!("try = \"{path}\""),
        ));
    }
    let t = TestSilo::new(&pipeline, &[("checksum_manifest.wasm", &component)]).await?;
    // Larger than one read chunk, so it streams.
    let body: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
    let report = t
        .upload("public/docs/report.bin", &body, Some("application/octet-stream"))
        .await?;
    assert_eq!(report.status, Status::Accepted, "{report:#?}");
    assert_eq!(report.derivatives.len(), 1, "{report:#?}");
    assert_eq!(report.derivatives[0].path, "manifests/docs/report.bin.sha256");
    let manifest = std::fs::read_to_string(t.volume_dir("public").join("manifests/docs/report.bin.sha256"))?;
    assert_eq!(
        manifest,
        format!("{}  report.bin\n", hex::encode(sha2::Sha256::digest(&body)))
    );

    let host = t.silo.storage().host_session();
    for (path, text) in [("docs/a.txt", "hello"), ("secret.txt", "secret")] {
        let loc = t.silo.storage().location("public", path)?;
        host.write(&loc, text.as_bytes().to_vec().into(), Default::default())
            .await?;
    }
    for (i, (path, want)) in tries.iter().enumerate() {
        let report = t
            .upload("public/docs/probe.bin", b"x", Some(&format!("application/x-try-{i}")))
            .await?;
        assert_eq!(report.status, Status::Rejected, "{path}: {report:#?}");
        assert_eq!(report.reason.as_deref(), Some(*want), "{path}");
    }
    Ok(())
}
