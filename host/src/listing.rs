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

/// One page gathered from entries offered in key order, by S3's rules for
/// every listing (keys, multipart uploads, parts): a key with the
/// delimiter after the prefix is rolled up into its common prefix, listed
/// once; the page holds at most `max` entries and common prefixes; an
/// entry offered once it is full makes it truncated.
pub(crate) struct Accumulator<'r, T> {
    prefix: &'r str,
    delimiter: Option<&'r str>,
    /// Common prefixes up to this one were listed on earlier pages.
    after: &'r str,
    max: usize,
    pub(crate) entries: Vec<T>,
    pub(crate) common_prefixes: Vec<String>,
    pub(crate) last: Marker,
    pub(crate) truncated: bool,
}

/// What became of an offered entry.
pub(crate) enum Offered {
    /// Listed.
    Taken,
    /// Rolled up into this common prefix: offer nothing else under it.
    Rolled(String),
    /// The page is full (and now truncated).
    Full,
}

impl<'r, T> Accumulator<'r, T> {
    pub(crate) fn new(prefix: &'r str, delimiter: Option<&'r str>, after: &'r str, max: usize) -> Self {
        Accumulator {
            prefix,
            delimiter: delimiter.filter(|d| !d.is_empty()),
            after,
            max,
            entries: Vec::new(),
            common_prefixes: Vec::new(),
            last: Marker::None,
            truncated: false,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len() + self.common_prefixes.len()
    }

    pub(crate) fn room(&self) -> usize {
        self.max - self.len().min(self.max)
    }

    /// Offer the entry `item`, whose key is `key` (under the prefix).
    pub(crate) fn offer(&mut self, key: &str, item: T) -> Offered {
        if self.len() >= self.max {
            self.truncated = true;
            return Offered::Full;
        }
        let rolled = self.delimiter.and_then(|d| {
            let rest = key.get(self.prefix.len()..)?;
            rest.find(d).map(|i| key[..self.prefix.len() + i + d.len()].to_owned())
        });
        if let Some(common) = rolled {
            if common.as_str() > self.after && self.common_prefixes.last() != Some(&common) {
                self.last = Marker::Prefix(common.clone());
                self.common_prefixes.push(common.clone());
            }
            return Offered::Rolled(common);
        }
        self.last = Marker::Key(key.to_owned());
        self.entries.push(item);
        Offered::Taken
    }
}

impl Silo {
    /// A page of `volume`'s keys for `caller` (who needs a read grant: a
    /// public volume's files are readable, not listable), from the
    /// metadata cache alone.
    pub async fn list(&self, caller: &Caller, volume: &str, request: &ListRequest) -> Result<Listing, RequestError> {
        self.authorize(caller, volume, &request.prefix, Op::List)?;
        if request.max == 0 {
            return Ok(Listing::default());
        }
        let session = self.session_for(caller);
        let prefix = request.prefix.as_str();
        let mut page = Accumulator::new(
            prefix,
            request.delimiter.as_deref(),
            &request.after,
            request.max.min(MAX_KEYS),
        );
        let mut cursor = request.after.clone();
        'pages: loop {
            // One more than there is room for: an entry offered to a full
            // page says the listing is truncated.
            let want = (page.room() + 1).min(MAX_KEYS);
            let listed = session
                .list(volume, prefix, true, Some(&format!("0{cursor}")), want)
                .await?;
            let exhausted = listed.next_cursor.is_none();
            for entry in listed.entries {
                let Entry::File { path, meta } = entry else { continue };
                match page.offer(&path, (path.clone(), meta)) {
                    Offered::Taken => cursor = path,
                    Offered::Rolled(common) => {
                        // Go on past every other key under it.
                        cursor = past(&common);
                        continue 'pages;
                    }
                    Offered::Full => break 'pages,
                }
            }
            if exhausted {
                break;
            }
        }
        Ok(Listing {
            contents: page.entries,
            common_prefixes: page.common_prefixes,
            truncated: page.truncated,
            last: page.last,
        })
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
