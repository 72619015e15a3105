//! Write-xor-execute: what a volume may never hold, and how active content
//! is stored.
//!
//! Uploaded files are data. A web server in front of a volume must never be
//! able to run one (`shell.php`, `x.php.jpg` under Apache's multi-extension
//! rules, `.htaccess` that turns a directory into code), and a browser must
//! never be led to treat one as a page of the site (HTML in a "JPEG"). The
//! storage core applies this policy to every write, whoever makes it: a
//! plugin, the pipeline, the CLI or a migration.

use serde::Deserialize;

use crate::error::StorageError;

/// Bytes of a file's beginning the content checks look at.
pub const SNIFF_BYTES: usize = 64 * 1024;

/// Extensions a web server may execute.
pub const DEFAULT_DENIED_EXTENSIONS: &[&str] = &[
    "php", "php3", "php4", "php5", "php7", "php8", "phps", "pht", "phtml", "phar", "inc", "cgi", "fcgi", "pl", "py",
    "pyc", "rb", "sh", "bash", "jsp", "jspx", "asp", "aspx", "ashx", "asmx", "cer", "shtml", "exe", "dll", "bat",
    "cmd", "ps1", "vbs",
];

/// Names that configure a web server for their directory.
pub const DEFAULT_DENIED_NAMES: &[&str] = &[".htaccess", ".htpasswd", ".user.ini", "web.config"];

/// Content types a browser runs or renders as a document: stored to be
/// served as attachments.
const ACTIVE_TYPES: &[&str] = &[
    "text/html",
    "application/xhtml+xml",
    "image/svg+xml",
    "text/javascript",
    "application/javascript",
    "application/ecmascript",
    "text/ecmascript",
    "application/xml",
    "text/xml",
    "application/x-shockwave-flash",
];

/// The policy's settings (`[content_policy]` in the config).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ContentPolicy {
    /// File extensions refused anywhere in a name (case-insensitive, no dot).
    pub denied_extensions: Vec<String>,
    /// Whole file names refused (case-insensitive).
    pub denied_names: Vec<String>,
    /// Refuse executables (ELF, PE, Mach-O) and `<?php`, and content that is
    /// not what its declared type says.
    pub check_content: bool,
}

impl Default for ContentPolicy {
    fn default() -> Self {
        ContentPolicy {
            denied_extensions: DEFAULT_DENIED_EXTENSIONS.iter().map(|s| (*s).to_owned()).collect(),
            denied_names: DEFAULT_DENIED_NAMES.iter().map(|s| (*s).to_owned()).collect(),
            check_content: true,
        }
    }
}

fn forbidden(why: String) -> StorageError {
    StorageError::Forbidden(why)
}

impl ContentPolicy {
    /// Whether the name of `path` may be stored.
    pub fn check_name(&self, path: &str) -> Result<(), StorageError> {
        let name = path.rsplit('/').next().unwrap_or(path);
        // Windows and some servers ignore trailing dots and spaces.
        let folded = name.trim_end_matches(['.', ' ']).to_lowercase();
        if self.denied_names.iter().any(|n| n.to_lowercase() == folded) {
            return Err(forbidden(format!(
                "'{name}' configures a web server and may not be stored"
            )));
        }
        // Every extension counts, not only the last: Apache runs
        // `x.php.jpg` as PHP when `.php` has a handler. Each is also taken
        // as a server that cuts the name there reads it: IIS and Tomcat end
        // a name at `;` (`shell.asp;.jpg`), NTFS at `:` (`shell.php::$DATA`,
        // an alternate data stream), C code at NUL, and Windows drops the
        // dots and spaces before the cut.
        for part in folded.split('.').skip(1) {
            let cut = part.split([';', ':', '\0']).next().unwrap_or(part);
            for ext in [part, cut.trim_end_matches(['.', ' '])] {
                if self.denied_extensions.iter().any(|d| d.eq_ignore_ascii_case(ext)) {
                    return Err(forbidden(format!(
                        "'{name}' has the server-executable extension '.{ext}'"
                    )));
                }
            }
        }
        // A configuration file's name, cut the same way (`.htaccess:x`).
        let cut = folded.split([';', ':', '\0']).next().unwrap_or(&folded);
        let cut = cut.trim_end_matches(['.', ' ']);
        if cut != folded && self.denied_names.iter().any(|n| n.to_lowercase() == cut) {
            return Err(forbidden(format!(
                "'{name}' configures a web server and may not be stored"
            )));
        }
        Ok(())
    }

    /// Whether content starting with `head` may be stored under
    /// `declared_type`. `head` holds the first [`SNIFF_BYTES`] (or the whole
    /// file if shorter).
    pub fn check_content(&self, path: &str, declared_type: &str, head: &[u8]) -> Result<(), StorageError> {
        if !self.check_content {
            return Ok(());
        }
        if let Some(kind) = executable(head) {
            return Err(forbidden(format!("'{path}' is {kind}")));
        }
        if let Some(tag) = php_tag(head) {
            return Err(forbidden(format!("'{path}' contains PHP code ('{tag}')")));
        }
        let declared = essence(declared_type);
        if let Some(sniffed) = sniff(head)
            && sniffed != declared
            && strict(&declared)
        {
            return Err(forbidden(format!(
                "'{path}' is declared {declared} but its content is {sniffed}"
            )));
        }
        if let Some(expected) = signature_of(&declared)
            && !head.is_empty()
            && sniff(head) != Some(expected)
        {
            return Err(forbidden(format!(
                "'{path}' is declared {declared} but does not start like one"
            )));
        }
        Ok(())
    }

    /// `attachment` for active types, which must never render inline.
    pub fn disposition(&self, content_type: &str) -> Option<&'static str> {
        is_active(content_type).then_some("attachment")
    }
}

/// Whether a content type runs or renders as a document in a browser.
pub fn is_active(content_type: &str) -> bool {
    let e = essence(content_type);
    ACTIVE_TYPES.contains(&e.as_str()) || e.ends_with("+xml") && e != "application/rss+xml"
}

fn essence(content_type: &str) -> String {
    content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase()
}

/// Declared types whose content must be what they say: media a browser or
/// image library would otherwise be tricked with.
fn strict(declared: &str) -> bool {
    declared.starts_with("image/")
        || declared.starts_with("audio/")
        || declared.starts_with("video/")
        || declared == "application/pdf"
}

/// The type a declared type's content must sniff as, for types with a
/// reliable signature.
fn signature_of(declared: &str) -> Option<&'static str> {
    Some(match declared {
        "image/jpeg" | "image/pjpeg" => "image/jpeg",
        "image/png" => "image/png",
        "image/gif" => "image/gif",
        "image/webp" => "image/webp",
        "application/pdf" => "application/pdf",
        _ => return None,
    })
}

fn executable(head: &[u8]) -> Option<&'static str> {
    if head.starts_with(b"\x7fELF") {
        return Some("an ELF executable");
    }
    for magic in [
        &[0xfe, 0xed, 0xfa, 0xce][..],
        &[0xfe, 0xed, 0xfa, 0xcf],
        &[0xce, 0xfa, 0xed, 0xfe],
        &[0xcf, 0xfa, 0xed, 0xfe],
    ] {
        if head.starts_with(magic) {
            return Some("a Mach-O executable");
        }
    }
    // Universal Mach-O shares CAFEBABE with Java classes; both run.
    if head.starts_with(&[0xca, 0xfe, 0xba, 0xbe]) {
        return Some("a Mach-O or Java executable");
    }
    if head.starts_with(b"MZ") {
        // A PE file: "MZ", then at offset 0x3c the offset of "PE\0\0". A
        // bare "MZ" (a DOS program) counts too when the header is short.
        let pe = head
            .get(0x3c..0x40)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
            .and_then(|at| head.get(at..at + 4))
            .is_some_and(|sig| sig == b"PE\0\0");
        if pe || head.len() < 0x40 {
            return Some("a Windows (PE/DOS) executable");
        }
    }
    None
}

/// The type of content with a known signature.
fn sniff(head: &[u8]) -> Option<&'static str> {
    let text = skip_bom_and_space(head);
    let starts = |p: &[u8]| text.len() >= p.len() && text[..p.len()].eq_ignore_ascii_case(p);
    Some(if head.starts_with(&[0xff, 0xd8, 0xff]) {
        "image/jpeg"
    } else if head.starts_with(b"\x89PNG\r\n\x1a\n") {
        "image/png"
    } else if head.starts_with(b"GIF87a") || head.starts_with(b"GIF89a") {
        "image/gif"
    } else if head.len() >= 12 && &head[..4] == b"RIFF" && &head[8..12] == b"WEBP" {
        "image/webp"
    } else if head.starts_with(b"%PDF-") {
        "application/pdf"
    } else if starts(b"<!doctype html")
        || starts(b"<html")
        || starts(b"<script")
        || starts(b"<head")
        || starts(b"<body")
    {
        "text/html"
    } else if starts(b"<svg") || (starts(b"<?xml") && contains_ignore_case(text, b"<svg")) {
        "image/svg+xml"
    } else {
        return None;
    })
}

fn skip_bom_and_space(head: &[u8]) -> &[u8] {
    let head = head.strip_prefix(b"\xef\xbb\xbf").unwrap_or(head);
    let start = head.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(head.len());
    &head[start..]
}

/// Whether `needle` occurs in `haystack`, ASCII case ignored; candidates
/// are found by their first byte with memchr's vectorised search.
fn contains_ignore_case(haystack: &[u8], needle: &[u8]) -> bool {
    let Some((&first, _)) = needle.split_first() else {
        return true;
    };
    let (lower, upper) = (first.to_ascii_lowercase(), first.to_ascii_uppercase());
    memchr::memchr2_iter(lower, upper, haystack).any(|at| {
        haystack
            .get(at..at + needle.len())
            .is_some_and(|w| w.eq_ignore_ascii_case(needle))
    })
}

/// The PHP opening tag `head` holds, if any: `<?php` in any case, else
/// PHP's short echo tag (`<?= expr ?>`, always on since PHP 5.4) with code
/// after it: printable text up to a `?>` or `;`. Requiring the code, not
/// just the three bytes, keeps random bytes of compressed images from
/// matching. Every write's head passes through here: one vectorised pass
/// over the `<?` pairs.
fn php_tag(head: &[u8]) -> Option<&'static str> {
    let mut short_echo = false;
    for at in memchr::memmem::find_iter(head, b"<?") {
        let rest = &head[at + 2..];
        if rest.get(..3).is_some_and(|w| w.eq_ignore_ascii_case(b"php")) {
            return Some("<?php");
        }
        if !short_echo && let Some(code) = rest.strip_prefix(b"=") {
            short_echo = echoes_code(code);
        }
    }
    short_echo.then_some("<?=")
}

/// Whether what follows a `<?=` reads as code: printable text, not all
/// blank, ended by `;` or `?` within 512 bytes. The scan stops at the first
/// `?`, so a head full of tags costs one pass, not one per tag.
fn echoes_code(after: &[u8]) -> bool {
    let code = &after[..after.len().min(512)];
    let Some(end) = memchr::memchr2(b';', b'?', code) else {
        return false;
    };
    let body = &code[..end];
    body.iter().any(|b| !b.is_ascii_whitespace())
        && body
            .iter()
            .all(|&b| b == b'\t' || b == b'\n' || b == b'\r' || (b' '..=b'~').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(r: Result<(), StorageError>) -> bool {
        matches!(r, Err(StorageError::Forbidden(_)))
    }

    #[test]
    fn server_executable_names_are_refused() {
        let p = ContentPolicy::default();
        for name in [
            "shell.php",
            "up/SHELL.PhP",
            "x.php.jpg",
            "x.phtml",
            "a/b.phar",
            "run.cgi",
            "x.py",
            "x.sh",
            "x.jsp",
            "x.aspx",
            "setup.exe",
            "shell.php.",
            "shell.php ",
            ".htaccess",
            "d/.HTACCESS",
            ".user.ini",
            "web.config",
            "x.sh.txt.bak",
            // Names servers cut short: IIS and Tomcat at `;`, NTFS streams
            // at `:`, C at NUL.
            "shell.php;.jpg",
            "shell.asp;x.png",
            "up/x.jsp;jsessionid=1.gif",
            "shell.php::$DATA",
            "shell.php:.jpg",
            "x.php\0.jpg",
            "shell.php. ;.jpg",
            ".htaccess;.txt",
            ".htaccess::$DATA",
        ] {
            assert!(refused(p.check_name(name)), "{name:?}");
        }
        for name in [
            "photo.jpg",
            "php",
            "php/readme.txt",
            "my.photos/x.png",
            "notes.txt",
            "phpinfo.png",
            "a;b.jpg",
            "report;v2.pdf",
            "php;notes.txt",
            "time 10:30.png",
        ] {
            assert!(p.check_name(name).is_ok(), "{name}");
        }
    }

    #[test]
    fn executables_php_and_mislabelled_media_are_refused() {
        let p = ContentPolicy::default();
        let jpeg = [0xff, 0xd8, 0xff, 0xe0, 0, 0x10, b'J', b'F', b'I', b'F'];
        assert!(p.check_content("a.jpg", "image/jpeg", &jpeg).is_ok());
        assert!(refused(p.check_content(
            "a.bin",
            "application/octet-stream",
            b"\x7fELF\x02\x01\x01"
        )));
        assert!(refused(p.check_content(
            "a.jpg",
            "image/jpeg",
            b"<?php system($_GET['c']); ?>"
        )));
        for short in [
            &b"<?=`$_GET[c]`?>"[..],
            b"GIF89a <?= system($_GET['c']); ?>",
            b"<?=$x?>",
        ] {
            let err = p.check_content("a.txt", "text/plain", short).unwrap_err();
            assert!(err.to_string().contains("'<?='"), "{short:?}: {err}");
        }
        // Three bytes alone, as compressed data may hold, are not PHP.
        let mut noise = jpeg.to_vec();
        noise.extend_from_slice(b"<?=\xff\x00\x13;<?=");
        assert!(p.check_content("a.jpg", "image/jpeg", &noise).is_ok());
        let mut polyglot = jpeg.to_vec();
        polyglot.extend_from_slice(b"....exif comment <?PHP eval($x);");
        assert!(refused(p.check_content("a.jpg", "image/jpeg", &polyglot)));
        assert!(refused(p.check_content(
            "a.jpg",
            "image/jpeg",
            b"\x89PNG\r\n\x1a\n...."
        )));
        assert!(refused(p.check_content(
            "a.jpg",
            "image/jpeg",
            b"  <html><script>alert(1)</script>"
        )));
        assert!(refused(p.check_content("a.png", "image/png", b"<svg onload=alert(1)>")));
        assert!(refused(p.check_content("a.jpg", "image/jpeg", b"plain text")));
        // Mach-O, 32 and 64 bits in both byte orders, and universal
        // binaries; the rest of a real header after the magic.
        for magic in [
            [0xfe, 0xed, 0xfa, 0xce],
            [0xfe, 0xed, 0xfa, 0xcf],
            [0xce, 0xfa, 0xed, 0xfe],
            [0xcf, 0xfa, 0xed, 0xfe],
            [0xca, 0xfe, 0xba, 0xbe],
        ] {
            let mut macho = magic.to_vec();
            macho.extend_from_slice(&[0x07, 0, 0, 0x01, 0x03, 0, 0, 0, 0x02, 0, 0, 0]);
            let err = p
                .check_content("a.bin", "application/octet-stream", &macho)
                .unwrap_err();
            assert!(err.to_string().contains("Mach-O"), "{magic:x?}: {err}");
            assert!(refused(p.check_content("a.jpg", "image/jpeg", &macho)), "{magic:x?}");
        }
        let mut pe = vec![0u8; 0x84];
        pe[..2].copy_from_slice(b"MZ");
        pe[0x3c] = 0x80;
        pe[0x80..0x84].copy_from_slice(b"PE\0\0");
        assert!(refused(p.check_content("a.dat", "application/octet-stream", &pe)));
        // HTML declared as HTML or text is the type it says; it is stored
        // to be served as an attachment.
        assert!(p.check_content("a.html", "text/html", b"<html>").is_ok());
        assert!(p.check_content("a.txt", "text/plain", b"<html>").is_ok());
        assert!(
            p.check_content(
                "a.txt",
                "text/plain",
                b"MZ is a postcode area; this text is long enough to not be a DOS header at all, really"
            )
            .is_ok()
        );
        assert_eq!(p.disposition("image/svg+xml"), Some("attachment"));
        assert_eq!(p.disposition("text/html; charset=utf-8"), Some("attachment"));
        assert_eq!(p.disposition("image/jpeg"), None);
        let off = ContentPolicy {
            check_content: false,
            ..Default::default()
        };
        assert!(off.check_content("a.jpg", "image/jpeg", b"<?php").is_ok());
    }

    /// The vectorised scans answer as the plain byte-by-byte ones they
    /// replace, on heads dense with the bytes they look for.
    #[test]
    fn the_tag_scan_agrees_with_a_plain_scan() {
        fn plain_contains(haystack: &[u8], needle: &[u8]) -> bool {
            haystack.windows(needle.len()).any(|w| w.eq_ignore_ascii_case(needle))
        }
        fn plain_tag(head: &[u8]) -> Option<&'static str> {
            if plain_contains(head, b"<?php") {
                return Some("<?php");
            }
            let echo = head
                .windows(3)
                .enumerate()
                .any(|(at, w)| w == b"<?=" && echoes_code(&head[at + 3..]));
            echo.then_some("<?=")
        }
        let alphabet = b"<?=pPhH; a\xff\nsSvVgG";
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut found = [0usize; 3];
        for len in (0..600).step_by(3).chain([4096]) {
            for _ in 0..40 {
                let head: Vec<u8> = (0..len)
                    .map(|_| {
                        seed ^= seed << 13;
                        seed ^= seed >> 7;
                        seed ^= seed << 17;
                        alphabet[(seed % alphabet.len() as u64) as usize]
                    })
                    .collect();
                let tag = php_tag(&head);
                assert_eq!(tag, plain_tag(&head), "{:?}", String::from_utf8_lossy(&head));
                assert_eq!(contains_ignore_case(&head, b"<svg"), plain_contains(&head, b"<svg"));
                found[match tag {
                    None => 0,
                    Some("<?php") => 1,
                    Some(_) => 2,
                }] += 1;
            }
        }
        // The inputs reach every answer.
        assert!(found.iter().all(|&n| n > 0), "{found:?}");
    }
}
