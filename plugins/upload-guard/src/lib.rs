//! upload-guard: refuses uploads whose bytes do not match their declared
//! content type (judged by magic number), and uploads over a size limit.
//!
//! Settings: `max_bytes` (default 50 MiB).

use silo_sdk::{Error, Outcome, Plugin, Upload, files};

const DEFAULT_MAX_BYTES: u64 = 50 * 1024 * 1024;

/// Content types recognised by their first bytes.
fn sniff(head: &[u8]) -> Option<&'static str> {
    let starts = |magic: &[u8]| head.starts_with(magic);
    if starts(&[0xFF, 0xD8, 0xFF]) {
        Some("image/jpeg")
    } else if starts(b"\x89PNG\r\n\x1a\n") {
        Some("image/png")
    } else if starts(b"GIF87a") || starts(b"GIF89a") {
        Some("image/gif")
    } else if head.len() >= 12 && &head[..4] == b"RIFF" && &head[8..12] == b"WEBP" {
        Some("image/webp")
    } else if starts(b"%PDF-") {
        Some("application/pdf")
    } else if starts(b"II*\0") || starts(b"MM\0*") {
        Some("image/tiff")
    } else {
        None
    }
}

/// The bare, canonical MIME type: no parameters, lower case, aliases folded.
fn essence(content_type: &str) -> String {
    let t = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    match t.as_str() {
        "image/jpg" | "image/pjpeg" => "image/jpeg".into(),
        "image/x-png" => "image/png".into(),
        _ => t,
    }
}

/// Why the bytes do not fit the declared type, if they do not.
fn mismatch(declared: &str, head: &[u8]) -> Option<String> {
    let declared = essence(declared);
    let sniffed = sniff(head);
    let known = [
        "image/jpeg",
        "image/png",
        "image/gif",
        "image/webp",
        "application/pdf",
        "image/tiff",
    ];
    match sniffed {
        Some(actual) if actual != declared => Some(format!("declared as {declared} but the content is {actual}")),
        None if known.contains(&declared.as_str()) => Some(format!(
            "declared as {declared} but the content does not start with a {declared} signature"
        )),
        _ => None,
    }
}

struct Guard;

impl Plugin for Guard {
    fn on_upload(upload: Upload) -> Result<Outcome, Error> {
        let max = upload
            .setting("max_bytes")
            .and_then(|v| v.parse().ok())
            .unwrap_or(DEFAULT_MAX_BYTES);
        if upload.info.size > max {
            return Ok(Outcome::Reject(format!(
                "the file is {} bytes; at most {max} are allowed",
                upload.info.size
            )));
        }
        let head = files::read_range(&upload.file, 0, 64)?;
        Ok(match mismatch(&upload.info.content_type, &head) {
            Some(reason) => Outcome::Reject(reason),
            None => Outcome::Accept(Vec::new()),
        })
    }
}

silo_sdk::export_plugin!(Guard);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn judges_by_magic_number() {
        let png = b"\x89PNG\r\n\x1a\n....";
        assert_eq!(mismatch("image/png", png), None);
        assert_eq!(
            mismatch("image/jpeg", png).unwrap(),
            "declared as image/jpeg but the content is image/png"
        );
        assert!(mismatch("image/jpeg", b"hello").unwrap().contains("signature"));
        assert_eq!(mismatch("text/plain", b"hello"), None);
        assert!(mismatch("text/plain", png).is_some());
        assert_eq!(mismatch("image/JPG; q=1", &[0xFF, 0xD8, 0xFF, 0xE0]), None);
    }
}
