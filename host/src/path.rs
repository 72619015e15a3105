//! Path rules: what a file path inside a volume may be.
//!
//! Every entry point (WIT, CLI, HTTP, migration) parses paths here before
//! anything reaches a backend, so a backend never sees `..`, an absolute
//! path, a backslash or a control character.

use std::fmt;

use crate::error::StorageError;

/// S3's limit on a full object key (volume prefix + path), in bytes.
pub const MAX_KEY_BYTES: usize = 1024;

/// A file: volume plus validated path.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Location {
    /// The volume's name.
    pub volume: String,
    /// The path in it.
    pub path: VolumePath,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.volume, self.path)
    }
}

/// A validated path relative to a volume: non-empty, `/`-separated segments,
/// none empty, `.` or `..`, no control characters and no backslash.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VolumePath(String);

impl VolumePath {
    /// Parse a file path. `what` names the path in error messages.
    pub fn parse(path: &str) -> Result<Self, StorageError> {
        check(path, false)?;
        Ok(VolumePath(path.to_owned()))
    }

    /// The path, as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The parent directory ("" for a file at the volume's root).
    pub fn parent(&self) -> &str {
        parent_of(&self.0)
    }

    /// Whether it names a folder: a key ending in `/`, which S3 clients
    /// store as a zero-byte object to mark a directory.
    pub fn is_folder(&self) -> bool {
        self.0.ends_with('/')
    }

    /// `InvalidPath` if it is a folder and `size` is not 0: a folder holds
    /// no bytes (S3 servers keep none under such keys, SeaweedFS among them).
    pub fn check_size(&self, size: u64) -> Result<(), StorageError> {
        match self.is_folder() && size > 0 {
            true => Err(StorageError::InvalidPath(format!(
                "'{self}' ends in '/': it names a folder, which holds no bytes ({size} were sent)"
            ))),
            false => Ok(()),
        }
    }

    /// The last segment ("" for a folder).
    pub fn file_name(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or(&self.0)
    }

    /// The extension of the last segment, lower-cased, if any.
    pub fn extension(&self) -> Option<String> {
        let name = self.file_name();
        let dot = name.rfind('.')?;
        (dot > 0).then(|| name[dot + 1..].to_ascii_lowercase())
    }

    /// Every ancestor directory, outermost first: `a/b/c` gives `a`, `a/b`.
    pub fn ancestors(&self) -> impl Iterator<Item = &str> {
        self.0.match_indices('/').map(|(i, _)| &self.0[..i])
    }
}

/// Split `volume/path/inside` as written on a command line.
pub fn split_target(spec: &str) -> Result<(&str, &str), StorageError> {
    spec.split_once('/').ok_or_else(|| {
        StorageError::InvalidPath(format!(
            "'{spec}' should be <volume>/<path>, e.g. public/photos/cat.jpg"
        ))
    })
}

/// Check a directory prefix for listings: "" (the root) or a valid path.
pub fn check_prefix(prefix: &str) -> Result<(), StorageError> {
    check(prefix, true)
}

/// `path` with every byte but unreserved characters and '/' percent-encoded,
/// for URLs and S3 copy sources.
pub fn percent_encode(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for b in path.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The parent directory of a path ("" at the root).
pub fn parent_of(path: &str) -> &str {
    path.rfind('/').map_or("", |i| &path[..i])
}

fn check(path: &str, allow_empty: bool) -> Result<(), StorageError> {
    let invalid = |why: String| Err(StorageError::InvalidPath(why));
    if path.is_empty() {
        return if allow_empty {
            Ok(())
        } else {
            invalid("the path is empty".into())
        };
    }
    if path.len() > MAX_KEY_BYTES {
        return invalid(format!(
            "the path is {} bytes; at most {MAX_KEY_BYTES} are allowed",
            path.len()
        ));
    }
    if path.starts_with('/') {
        return invalid("the path must be relative to the volume (it starts with '/')".into());
    }
    if let Some(c) = path.chars().find(|c| c.is_control()) {
        return invalid(format!("the path contains the control character U+{:04X}", c as u32));
    }
    if path.contains('\\') {
        return invalid("the path contains a backslash; use '/' to separate segments".into());
    }
    // One trailing '/' names a folder (S3's zero-byte directory marker).
    let segments = path.strip_suffix('/').filter(|_| !allow_empty).unwrap_or(path);
    for segment in segments.split('/') {
        match segment {
            "" => return invalid("the path has an empty segment ('//')".into()),
            "." | ".." => return invalid(format!("the path has a '{segment}' segment")),
            _ => {}
        }
    }
    Ok(())
}

impl fmt::Display for VolumePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for VolumePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_paths() {
        for p in [
            "a.jpg",
            "2026/11/photo.jpg",
            "émoji-😀/ü.png",
            ".hidden",
            "a..b",
            "x/.y",
        ] {
            VolumePath::parse(p).unwrap_or_else(|e| panic!("{p}: {e}"));
        }
    }

    #[test]
    fn refuses_escapes_and_junk() {
        let long = "a".repeat(MAX_KEY_BYTES + 1);
        for (p, why) in [
            ("", "empty"),
            ("/etc/passwd", "starts with '/'"),
            ("../x", "'..'"),
            ("a/../../x", "'..'"),
            ("a/./b", "'.'"),
            ("a//b", "empty segment"),
            ("a//", "empty segment"),
            ("a\\b", "backslash"),
            ("a\0b", "U+0000"),
            ("a\nb", "U+000A"),
            ("a\u{7f}", "U+007F"),
            (long.as_str(), "bytes"),
        ] {
            let err = VolumePath::parse(p).expect_err(p).to_string();
            assert!(err.contains(why), "{p:?}: {err}");
        }
    }

    #[test]
    fn a_trailing_slash_names_a_folder() {
        let folder = VolumePath::parse("photos/2026/").unwrap();
        assert!(folder.is_folder());
        assert_eq!((folder.parent(), folder.file_name()), ("photos/2026", ""));
        assert_eq!(folder.ancestors().collect::<Vec<_>>(), ["photos", "photos/2026"]);
        assert!(!VolumePath::parse("photos/a.jpg").unwrap().is_folder());
        // A directory prefix never ends in '/'.
        check_prefix("photos/").unwrap_err();
    }

    #[test]
    fn key_limit_counts_bytes_not_chars() {
        // 256 four-byte characters are exactly 1024 bytes.
        VolumePath::parse(&"😀".repeat(256)).unwrap();
        VolumePath::parse(&format!("{}a", "😀".repeat(256))).unwrap_err();
    }

    #[test]
    fn semantics_doc_examples_hold() {
        let doc = include_str!("../../docs/SEMANTICS.md");
        let mut checked = 0;
        let table = doc
            .lines()
            .skip_while(|l| !l.starts_with("| path | accepted |"))
            .skip(2);
        for line in table.take_while(|l| l.starts_with('|')) {
            let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
            let path = cells[0].trim_matches('`');
            match cells[1] {
                "yes" => assert!(VolumePath::parse(path).is_ok(), "{path:?} should be accepted"),
                "no" => {
                    let err = VolumePath::parse(path).expect_err(path).to_string();
                    assert!(err.contains(cells[2]), "{path:?}: {err} does not say {}", cells[2]);
                }
                other => panic!("unexpected verdict {other:?} in {line}"),
            }
            checked += 1;
        }
        assert!(checked >= 10, "the path table in docs/SEMANTICS.md was not found");
    }

    #[test]
    fn parents_and_ancestors() {
        let p = VolumePath::parse("a/b/c.JPG").unwrap();
        assert_eq!(p.parent(), "a/b");
        assert_eq!(p.file_name(), "c.JPG");
        assert_eq!(p.extension().as_deref(), Some("jpg"));
        assert_eq!(p.ancestors().collect::<Vec<_>>(), ["a", "a/b"]);
        assert_eq!(VolumePath::parse("top").unwrap().parent(), "");
        assert_eq!(VolumePath::parse(".env").unwrap().extension(), None);
    }
}
