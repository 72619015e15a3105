//! Listings for clients, through the caller's grants: a volume's keys
//! under a prefix, rolled up at a delimiter, a page at a time (S3's
//! ListObjects), and a directory's children (the sidecar's listing).

use crate::Silo;
use crate::access::{Caller, Op, RequestError};
pub use crate::cache::{Entry, Page};
use crate::store::ObjectMeta;

/// Keys one listing page holds at most (S3's bound).
pub const MAX_KEYS: usize = 1000;

/// A listing of keys, as S3 asks for one.
#[derive(Debug, Clone, Default)]
pub struct ListRequest {
    /// Keys that start with this.
    pub prefix: String,
    /// Keys with this after the prefix are rolled up into one common
    /// prefix, up to and including it (empty: none).
    pub delimiter: Option<String>,
    /// Only keys (and common prefixes) after this one.
    pub after: String,
    /// At most this many keys and common prefixes (clamped to
    /// [`MAX_KEYS`]; 0 gives an empty page that is not truncated).
    pub max: usize,
}

/// Where the last page ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Marker {
    #[default]
    /// Nothing listed yet.
    None,
    /// The last key listed.
    Key(String),
    /// The last common prefix listed.
    Prefix(String),
}

/// A page of keys and common prefixes, in key order.
#[derive(Debug, Clone, Default)]
pub struct Listing {
    /// Files, by key, in key order.
    pub contents: Vec<(String, ObjectMeta)>,
    /// Prefixes up to the next delimiter, in order.
    pub common_prefixes: Vec<String>,
    /// More follow.
    pub truncated: bool,
    /// Where the page ended: the next page starts after it.
    pub last: Marker,
}

impl Listing {
    /// Where the next page starts: after this key, or past this prefix.
    pub fn resume_after(&self) -> Option<String> {
        match &self.last {
            Marker::None => None,
            Marker::Key(k) => Some(k.clone()),
            Marker::Prefix(p) => Some(past(p)),
        }
    }

    fn len(&self) -> usize {
        self.contents.len() + self.common_prefixes.len()
    }
}

/// A string greater than every key that starts with `prefix` (keys are at
/// most 1024 bytes) and less than every key after them.
pub fn past(prefix: &str) -> String {
    let mut s = prefix.to_owned();
    while s.len() <= crate::path::MAX_KEY_BYTES + 4 {
        s.push(char::MAX);
    }
    s
}

impl Silo {
    /// A page of `volume`'s keys for `caller` (who needs a read grant: a
    /// public volume's files are readable, not listable), from the
    /// metadata cache alone.
    pub async fn list(&self, caller: &Caller, volume: &str, request: &ListRequest) -> Result<Listing, RequestError> {
        self.authorize(caller, volume, &request.prefix, Op::List)?;
        let session = self.session_for(caller);
        let prefix = request.prefix.as_str();
        let max = request.max.min(MAX_KEYS);
        let delimiter = request.delimiter.as_deref().filter(|d| !d.is_empty());
        let after = request.after.as_str();
        let mut out = Listing::default();
        let mut cursor = after.to_owned();
        while out.len() < max {
            let room = max - out.len();
            let page = session
                .list(volume, prefix, true, Some(&format!("0{cursor}")), room.min(MAX_KEYS))
                .await?;
            let exhausted = page.next_cursor.is_none();
            let mut jumped = false;
            for entry in page.entries {
                let Entry::File { path, meta } = entry else { continue };
                if out.len() >= max {
                    out.truncated = true;
                    return Ok(out);
                }
                let rolled = delimiter.and_then(|d| {
                    let rest = path.get(prefix.len()..)?;
                    rest.find(d).map(|i| path[..prefix.len() + i + d.len()].to_owned())
                });
                match rolled {
                    Some(common) => {
                        if common.as_str() > after {
                            out.last = Marker::Prefix(common.clone());
                            out.common_prefixes.push(common.clone());
                        }
                        // Skip every other key under it.
                        cursor = past(&common);
                        jumped = true;
                        break;
                    }
                    None => {
                        cursor = path.clone();
                        out.last = Marker::Key(path.clone());
                        out.contents.push((path, meta));
                    }
                }
            }
            if exhausted && !jumped {
                return Ok(out);
            }
        }
        if max == 0 {
            return Ok(out);
        }
        // Full: truncated if anything is left.
        let rest = session
            .list(volume, prefix, true, Some(&format!("0{cursor}")), 1)
            .await?;
        out.truncated = !rest.entries.is_empty();
        Ok(out)
    }

    /// A page of a directory's children for `caller` (`recursive`: every
    /// file under it), resuming at `cursor`, at most `limit` entries.
    pub async fn list_dir(
        &self,
        caller: &Caller,
        volume: &str,
        dir: &str,
        recursive: bool,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page, RequestError> {
        self.authorize(caller, volume, dir, Op::List)?;
        let dir = dir.trim_end_matches('/');
        Ok(self
            .session_for(caller)
            .list(volume, dir, recursive, cursor, limit)
            .await?)
    }
}
