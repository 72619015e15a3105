//! What a read of a file serves, decided once for every door: access,
//! every precondition (RFC 9110 section 13), the range, and the headers.
//! A door parses its request into a [`ReadRequest`], calls
//! [`Silo::read`], and writes the [`Served`] answer out as its protocol
//! says; it decides none of it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderName, HeaderValue, header};

use crate::access::{Caller, Op, RequestError};
use crate::store::{ByteRange, ObjectMeta};
use crate::vfs::{Location, ReadBody};
use crate::{Silo, StorageError};

/// An entity tag as a precondition names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntityTag {
    /// `W/"…"`: matches only where weak comparison is allowed.
    pub weak: bool,
    /// The tag without its quotes.
    pub tag: String,
}

/// `If-Match` / `If-None-Match`: any version (`*`) or one of these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TagList {
    /// `*`: any current version.
    Any,
    /// These entity tags.
    Tags(Vec<EntityTag>),
}

impl TagList {
    /// Parse a header's value; `*`, or a comma-separated list of quoted
    /// (optionally weak) tags. An unquoted tag is taken as written.
    pub fn parse(value: &str) -> TagList {
        if value.trim() == "*" {
            return TagList::Any;
        }
        let tags = value
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(|t| {
                let (weak, rest) = match t.strip_prefix("W/") {
                    Some(rest) => (true, rest),
                    None => (false, t),
                };
                let tag = rest.strip_prefix('"').and_then(|r| r.strip_suffix('"')).unwrap_or(rest);
                EntityTag {
                    weak,
                    tag: tag.to_owned(),
                }
            })
            .collect();
        TagList::Tags(tags)
    }

    /// Strong comparison (`If-Match`): a weak tag never matches.
    fn matches_strongly(&self, etag: &str) -> bool {
        match self {
            TagList::Any => true,
            TagList::Tags(tags) => tags.iter().any(|t| !t.weak && t.tag == etag),
        }
    }

    /// Weak comparison (`If-None-Match`).
    fn matches_weakly(&self, etag: &str) -> bool {
        match self {
            TagList::Any => true,
            TagList::Tags(tags) => tags.iter().any(|t| t.tag == etag),
        }
    }
}

/// `If-Range`: the version a resumed download has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IfRange {
    /// Serve the range if the ETag is this one.
    Tag(EntityTag),
    /// Serve the range if the file has not changed since.
    Date(SystemTime),
    /// Neither: the range is not honoured.
    Invalid,
}

/// The preconditions of a read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Conditions {
    /// `If-Match`.
    pub if_match: Option<TagList>,
    /// `If-None-Match`.
    pub if_none_match: Option<TagList>,
    /// `If-Modified-Since`.
    pub if_modified_since: Option<SystemTime>,
    /// `If-Unmodified-Since`.
    pub if_unmodified_since: Option<SystemTime>,
    /// `If-Range`.
    pub if_range: Option<IfRange>,
}

impl Conditions {
    /// The answer these conditions force for a file of `meta`, if any:
    /// 412 (`If-Match`, `If-Unmodified-Since`) or 304 (`If-None-Match`,
    /// `If-Modified-Since`).
    pub fn check(&self, meta: &ObjectMeta) -> Option<ServedStatus> {
        decide(self, meta, UNIX_EPOCH + Duration::from_secs(meta.modified_ms / 1000))
    }
}

/// A `Range` request: the first one of a `bytes=` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeSpec {
    /// `first-` or `first-last` (inclusive).
    From {
        /// The first byte.
        first: u64,
        /// The last byte, included; the end of the file if absent.
        last: Option<u64>,
    },
    /// `-n`: the last `n` bytes.
    Suffix(u64),
    /// A `bytes=` value that does not parse: unsatisfiable.
    Invalid,
}

impl RangeSpec {
    /// `Range`'s value: `None` to serve the whole file (another unit, or
    /// several ranges, which a server may answer whole).
    pub fn parse(value: &str) -> Option<RangeSpec> {
        let spec = value.trim().strip_prefix("bytes=")?;
        if spec.contains(',') {
            return None;
        }
        let Some((start, end)) = spec.split_once('-') else {
            return Some(RangeSpec::Invalid);
        };
        let number = |s: &str| s.trim().parse::<u64>().ok();
        Some(match (start.trim(), end.trim()) {
            ("", suffix) => number(suffix).map_or(RangeSpec::Invalid, RangeSpec::Suffix),
            (first, "") => number(first).map_or(RangeSpec::Invalid, |first| RangeSpec::From { first, last: None }),
            (first, last) => match (number(first), number(last)) {
                (Some(first), Some(last)) if last >= first => RangeSpec::From {
                    first,
                    last: Some(last),
                },
                _ => RangeSpec::Invalid,
            },
        })
    }

    /// The bytes of a file of `size` this range asks for; `None` if it
    /// cannot be satisfied.
    pub fn within(self, size: u64) -> Option<ByteRange> {
        let (offset, last) = match self {
            RangeSpec::Invalid | RangeSpec::Suffix(0) => return None,
            RangeSpec::Suffix(n) => (size.saturating_sub(n), size.checked_sub(1)?),
            RangeSpec::From { first, last } => (first, last.unwrap_or(u64::MAX).min(size.checked_sub(1)?)),
        };
        (offset < size).then(|| ByteRange {
            offset,
            length: last - offset + 1,
        })
    }
}

/// `response-*` overrides of what is served (the S3 endpoint takes them
/// from signed requests). Active content stays an attachment whatever is
/// asked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    /// `response-content-type`.
    pub content_type: Option<String>,
    /// `response-cache-control`.
    pub cache_control: Option<String>,
    /// `response-content-disposition` (never lifts an `attachment` Silo decides).
    pub content_disposition: Option<String>,
}

/// A read of one file, as a door parsed it.
#[derive(Debug, Clone, Default)]
pub struct ReadRequest {
    /// HEAD: headers only, answered from the metadata cache alone.
    pub head: bool,
    /// Ask the audit trail which request wrote the version served (the
    /// sidecar's `x-silo-request-id` on HEAD): one query more.
    pub writer: bool,
    /// The `Range` asked for, if any.
    pub range: Option<RangeSpec>,
    /// The part asked for by its number (S3's `partNumber`): the range
    /// of that part of an object completed from parts; part 1 of any
    /// other object is the whole of it.
    pub part: Option<i32>,
    /// The preconditions.
    pub conditions: Conditions,
    /// Headers the caller asks to be served instead of the stored ones.
    pub overrides: Overrides,
}

impl ReadRequest {
    /// A GET (or HEAD) with the range and preconditions of these request
    /// headers; values that do not parse count as absent, as RFC 9110 says
    /// of dates (and a malformed range is unsatisfiable).
    pub fn from_headers(headers: &HeaderMap, head: bool) -> ReadRequest {
        let text = |name: HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
        let date = |name: HeaderName| text(name).and_then(|v| httpdate::parse_http_date(v.trim()).ok());
        let if_range = text(header::IF_RANGE).map(|v| {
            let v = v.trim();
            if v.starts_with('"') || v.starts_with("W/") {
                match TagList::parse(v) {
                    TagList::Tags(mut tags) if tags.len() == 1 => IfRange::Tag(tags.remove(0)),
                    _ => IfRange::Invalid,
                }
            } else {
                httpdate::parse_http_date(v).map_or(IfRange::Invalid, IfRange::Date)
            }
        });
        ReadRequest {
            head,
            writer: false,
            range: text(header::RANGE).and_then(RangeSpec::parse),
            part: None,
            conditions: Conditions {
                if_match: text(header::IF_MATCH).map(TagList::parse),
                if_none_match: text(header::IF_NONE_MATCH).map(TagList::parse),
                if_modified_since: date(header::IF_MODIFIED_SINCE),
                if_unmodified_since: date(header::IF_UNMODIFIED_SINCE),
                if_range,
            },
            overrides: Overrides::default(),
        }
    }
}

/// How a read is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServedStatus {
    /// 200: the whole file.
    Whole,
    /// 206: the range asked for.
    Partial,
    /// 304: the client's copy is current (`If-None-Match`,
    /// `If-Modified-Since`).
    NotModified,
    /// 412: `If-Match` or `If-Unmodified-Since` does not hold.
    PreconditionFailed,
    /// 416: the range lies outside the file.
    RangeNotSatisfiable,
    /// 416: the file has no part of the number asked for.
    NoSuchPart,
    /// 501: the file was completed from parts whose boundaries Silo does
    /// not know (by the backend, behind Silo's back).
    PartsUnknown,
}

impl ServedStatus {
    /// The HTTP status.
    pub fn code(self) -> http::StatusCode {
        match self {
            ServedStatus::Whole => http::StatusCode::OK,
            ServedStatus::Partial => http::StatusCode::PARTIAL_CONTENT,
            ServedStatus::NotModified => http::StatusCode::NOT_MODIFIED,
            ServedStatus::PreconditionFailed => http::StatusCode::PRECONDITION_FAILED,
            ServedStatus::RangeNotSatisfiable | ServedStatus::NoSuchPart => http::StatusCode::RANGE_NOT_SATISFIABLE,
            ServedStatus::PartsUnknown => http::StatusCode::NOT_IMPLEMENTED,
        }
    }
}

/// The headers a file is served with, by every door.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServedHeaders {
    /// The ETag, without quotes.
    pub etag: String,
    /// Whole seconds, as HTTP dates carry it.
    pub last_modified: SystemTime,
    /// The stored type; `None` if it cannot be a header (set behind
    /// Silo's back), and then the file is an attachment.
    pub content_type: Option<String>,
    /// `attachment` for active types (HTML, SVG, JavaScript, XML) whatever
    /// the writer declared; else what it declared.
    pub content_disposition: Option<String>,
    /// `Content-Encoding`, as stored.
    pub content_encoding: Option<String>,
    /// An HTTP date, as the writer declared it.
    pub expires: Option<String>,
    /// By visibility: `private, no-store` on private volumes; the file's
    /// own, else an hour, on public ones.
    pub cache_control: Option<String>,
    /// The writer's user metadata (`x-amz-meta-*` on S3).
    pub metadata: Vec<(String, String)>,
    /// The bytes of the body (the range's, for 206).
    pub content_length: Option<u64>,
    /// `bytes first-last/size` for 206, `bytes */size` for 416.
    pub content_range: Option<String>,
    /// The request that wrote the version served, where the read asked
    /// for it ([`ReadRequest::writer`]) and the audit trail is kept.
    pub request_id: Option<String>,
    /// What else than the URL chose this answer (`Accept`, for a dynamic
    /// image whose format follows it).
    pub vary: Option<&'static str>,
    /// The checksum kept with the file, for a door that serves it when
    /// asked (S3's checksum mode).
    pub checksum: Option<crate::store::Checksum>,
    /// How many parts the file was completed from, where a part was
    /// asked for (S3's `x-amz-mp-parts-count`).
    pub parts_count: Option<usize>,
}

impl ServedHeaders {
    /// How many parts the file was completed from, as far as Silo knows:
    /// the number in an ETag of S3's multipart form (`<md5>-<n>`).
    pub fn completed_parts(&self) -> Option<usize> {
        if !crate::store::is_s3_etag(&self.etag) {
            return None;
        }
        self.etag.rsplit_once('-').and_then(|(_, n)| n.parse().ok())
    }

    /// As HTTP headers, with `X-Content-Type-Options: nosniff` and
    /// `Accept-Ranges: bytes` (user metadata is left to the door whose
    /// protocol has a place for it).
    pub fn to_header_map(&self) -> HeaderMap {
        let mut out = HeaderMap::new();
        let mut put = |name: HeaderName, value: &str| {
            if let Ok(value) = HeaderValue::from_str(value) {
                out.insert(name, value);
            }
        };
        put(header::ETAG, &format!("\"{}\"", self.etag));
        put(header::ACCEPT_RANGES, "bytes");
        put(header::X_CONTENT_TYPE_OPTIONS, "nosniff");
        put(header::LAST_MODIFIED, &httpdate::fmt_http_date(self.last_modified));
        let optional = [
            (header::CACHE_CONTROL, &self.cache_control),
            (header::CONTENT_TYPE, &self.content_type),
            (header::CONTENT_DISPOSITION, &self.content_disposition),
            (header::CONTENT_ENCODING, &self.content_encoding),
            (header::EXPIRES, &self.expires),
            (header::CONTENT_RANGE, &self.content_range),
            (REQUEST_ID, &self.request_id),
        ];
        for (name, value) in optional {
            if let Some(value) = value {
                put(name, value);
            }
        }
        if let Some(vary) = self.vary {
            put(header::VARY, vary);
        }
        if let Some(length) = self.content_length {
            put(header::CONTENT_LENGTH, &length.to_string());
        }
        out
    }
}

/// On a change, the id of its request in the audit trail; on a HEAD of a
/// file, the id of the request that wrote the version served.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-silo-request-id");

/// A read's answer.
pub struct Served {
    /// What to answer.
    pub status: ServedStatus,
    /// The headers to serve.
    pub headers: ServedHeaders,
    /// The bytes, for a GET answered 200 or 206.
    pub body: Option<ReadBody>,
    /// Where the file is (its name, for the door's logs).
    pub location: Location,
}

/// A read's body as a door sends it.
pub enum Chunks {
    /// Held in memory (a small file from the memory cache), in one piece.
    Whole(bytes::Bytes),
    /// Read as it is sent, in chunks no larger than the answer.
    Streamed(tokio_util::io::ReaderStream<crate::store::ByteStream>),
}

impl Served {
    /// The body, for a GET answered 200 or 206; `None` otherwise.
    pub fn into_chunks(self) -> Option<Chunks> {
        let length = self.headers.content_length.unwrap_or(0);
        self.body.map(|body| match body {
            ReadBody::Bytes(bytes) => Chunks::Whole(bytes),
            ReadBody::Stream(stream) => Chunks::Streamed(crate::vfs::answer_chunks(stream, length)),
        })
    }
}

/// A stored value fit to be a header (what `HeaderValue::from_str` takes:
/// tabs and visible bytes, checked here without a copy), else `None` (and
/// a warning).
fn header_text(name: &str, value: &str, loc: &Location) -> Option<String> {
    if value.bytes().all(|b| b == b'\t' || (b >= 0x20 && b != 0x7f)) {
        Some(value.to_owned())
    } else {
        tracing::warn!(file = %loc, "the stored {name} is not a valid header value; not sent");
        None
    }
}

/// The range of part `number` of the file `meta` describes (`None`: the
/// whole file, part 1 of one stored in one request), or why there is none.
fn part_range(meta: &ObjectMeta, number: i32) -> Result<Option<RangeSpec>, ServedStatus> {
    let index = usize::try_from(number).ok().and_then(|n| n.checked_sub(1));
    match &meta.headers.parts {
        Some(sizes) => {
            let index = index.filter(|i| *i < sizes.len()).ok_or(ServedStatus::NoSuchPart)?;
            let first: u64 = sizes[..index].iter().sum();
            match sizes[index].checked_sub(1) {
                Some(n) => Ok(Some(RangeSpec::From {
                    first,
                    last: Some(first + n),
                })),
                // A one-part upload of nothing is the empty file; an empty
                // part among others has no range HTTP can name.
                None if sizes.len() == 1 => Ok(None),
                None => Err(ServedStatus::NoSuchPart),
            }
        }
        None if crate::store::is_s3_etag(&meta.etag) && meta.etag.contains('-') => Err(ServedStatus::PartsUnknown),
        None if index == Some(0) => Ok(None),
        None => Err(ServedStatus::NoSuchPart),
    }
}

impl Silo {
    /// Read `path` of `volume` for `caller`: access, preconditions, range
    /// and headers decided here. A HEAD makes no request to the store.
    pub async fn read(
        &self,
        caller: &Caller,
        volume: &str,
        path: &str,
        request: &ReadRequest,
    ) -> Result<Served, RequestError> {
        self.authorize(caller, volume, path, Op::Read)?;
        let loc = self.storage().location(volume, path)?;
        self.serve_file(&self.session_for(caller), loc, request).await
    }

    /// What is stored at `path` of `volume`, for `caller`, who must be
    /// able to read it; from the metadata cache.
    pub async fn stat(&self, caller: &Caller, volume: &str, path: &str) -> Result<ObjectMeta, RequestError> {
        self.authorize(caller, volume, path, Op::Read)?;
        let loc = self.storage().location(volume, path)?;
        Ok(self.session_for(caller).stat(&loc).await?)
    }

    /// Who may read `volume`'s files without credentials; `None` if there
    /// is no such volume.
    pub fn visibility(&self, volume: &str) -> Option<crate::vfs::Visibility> {
        self.storage().volume(volume).ok().map(|v| v.visibility)
    }

    /// Serve `loc` through `session` (whose access was decided).
    pub(crate) async fn serve_file(
        &self,
        session: &crate::vfs::Session,
        loc: Location,
        request: &ReadRequest,
    ) -> Result<Served, RequestError> {
        let storage = self.storage();
        let meta = session.stat(&loc).await?;
        let mut headers = self.served_headers(&loc, &meta, &request.overrides)?;
        // Which request wrote this version, where asked: one query more.
        if request.writer && storage.audit().enabled {
            headers.request_id = storage
                .cache()
                .engine()
                .audit_writer(&loc.volume, loc.path.as_str(), &meta.etag)
                .await?;
        }
        let status = decide(&request.conditions, &meta, headers.last_modified);
        if let Some(status) = status {
            // What identifies the version stays (RFC 9110 15.4.5); the
            // rest describes a body that is not sent.
            if status == ServedStatus::NotModified {
                headers.content_type = None;
                headers.content_disposition = None;
                headers.content_encoding = None;
                headers.metadata.clear();
            }
            return Ok(Served {
                status,
                headers,
                body: None,
                location: loc,
            });
        }
        // A resumed download names the version it has; another version is
        // sent whole, never spliced onto the old bytes.
        let same_version = match &request.conditions.if_range {
            None => true,
            Some(IfRange::Tag(tag)) => !tag.weak && tag.tag == meta.etag,
            Some(IfRange::Date(date)) => *date == headers.last_modified,
            Some(IfRange::Invalid) => false,
        };
        let asked = match request.part {
            Some(number) => match part_range(&meta, number) {
                Ok(range) => {
                    headers.parts_count = meta.headers.parts.as_ref().map(|p| p.len());
                    range
                }
                Err(status) => {
                    return Ok(Served {
                        status,
                        headers,
                        body: None,
                        location: loc,
                    });
                }
            },
            None => request.range.filter(|_| same_version),
        };
        let range = match asked {
            None => None,
            Some(spec) => match spec.within(meta.size) {
                Some(range) => Some(range),
                None => {
                    headers.content_range = Some(format!("bytes */{}", meta.size));
                    return Ok(Served {
                        status: ServedStatus::RangeNotSatisfiable,
                        headers,
                        body: None,
                        location: loc,
                    });
                }
            },
        };
        let status = match range {
            Some(r) => {
                headers.content_range = Some(format!("bytes {}-{}/{}", r.offset, r.offset + r.length - 1, meta.size));
                headers.content_length = Some(r.length);
                ServedStatus::Partial
            }
            None => {
                headers.content_length = Some(meta.size);
                ServedStatus::Whole
            }
        };
        let body = match request.head {
            true => None,
            false => Some(session.read_body(&loc, range).await?.1),
        };
        Ok(Served {
            status,
            headers,
            body,
            location: loc,
        })
    }

    /// The headers `meta` is served with from `loc`.
    fn served_headers(
        &self,
        loc: &Location,
        meta: &ObjectMeta,
        overrides: &Overrides,
    ) -> Result<ServedHeaders, StorageError> {
        let storage = self.storage();
        let visibility = storage.volume(&loc.volume)?.visibility;
        let policy = storage.policy();
        let content_type = overrides
            .content_type
            .clone()
            .or_else(|| header_text("content-type", &meta.content_type, loc));
        let cache_control = overrides.cache_control.clone().or_else(|| {
            header_text(
                "cache-control",
                &visibility.cache_control(meta.cache_control.as_deref()),
                loc,
            )
        });
        let declared = overrides.content_disposition.clone().or_else(|| {
            meta.headers
                .content_disposition
                .as_deref()
                .and_then(|d| header_text("content-disposition", d, loc))
        });
        let content_disposition = match &content_type {
            // Active content is an attachment, whatever was declared (a
            // declared `attachment; filename=…` is kept as it is).
            Some(t) => match policy.disposition(t) {
                Some(forced) => Some(
                    declared
                        .filter(|d| d.starts_with(forced))
                        .unwrap_or_else(|| forced.to_owned()),
                ),
                None => declared,
            },
            // A type that cannot be told is never rendered.
            None => Some("attachment".to_owned()),
        };
        Ok(ServedHeaders {
            etag: meta.etag.trim_matches('"').to_owned(),
            // HTTP dates have whole seconds; compared at that precision.
            last_modified: UNIX_EPOCH + Duration::from_secs(meta.modified_ms / 1000),
            content_type,
            content_disposition,
            content_encoding: meta
                .headers
                .content_encoding
                .as_deref()
                .and_then(|v| header_text("content-encoding", v, loc)),
            expires: meta
                .headers
                .expires
                .as_deref()
                .and_then(|v| header_text("expires", v, loc)),
            cache_control,
            metadata: meta
                .metadata
                .iter()
                .filter(|(k, _)| k != crate::migrate::SHA256_KEY)
                .cloned()
                .collect(),
            content_length: None,
            content_range: None,
            request_id: None,
            vary: None,
            checksum: meta.headers.checksum.as_deref().cloned(),
            parts_count: None,
        })
    }
}

/// The answer the preconditions force, if any, in RFC 9110's order
/// (13.2.2): `If-Match`, else `If-Unmodified-Since` (412); then
/// `If-None-Match`, else `If-Modified-Since` (304).
fn decide(conditions: &Conditions, meta: &ObjectMeta, modified: SystemTime) -> Option<ServedStatus> {
    let etag = meta.etag.trim_matches('"');
    if let Some(tags) = &conditions.if_match {
        if !tags.matches_strongly(etag) {
            return Some(ServedStatus::PreconditionFailed);
        }
    } else if let Some(since) = conditions.if_unmodified_since
        && modified > since
    {
        return Some(ServedStatus::PreconditionFailed);
    }
    if let Some(tags) = &conditions.if_none_match {
        if tags.matches_weakly(etag) {
            return Some(ServedStatus::NotModified);
        }
    } else if let Some(since) = conditions.if_modified_since
        && modified <= since
    {
        return Some(ServedStatus::NotModified);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_read_as_rfc_9110_says() {
        let r = |v: &str| RangeSpec::parse(v);
        assert_eq!(
            r("bytes=0-9").and_then(|s| s.within(100)),
            Some(ByteRange { offset: 0, length: 10 })
        );
        assert_eq!(
            r("bytes=90-").and_then(|s| s.within(100)),
            Some(ByteRange { offset: 90, length: 10 })
        );
        assert_eq!(
            r("bytes=90-500").and_then(|s| s.within(100)),
            Some(ByteRange { offset: 90, length: 10 })
        );
        assert_eq!(
            r("bytes=-10").and_then(|s| s.within(100)),
            Some(ByteRange { offset: 90, length: 10 })
        );
        assert_eq!(
            r("bytes=-500").and_then(|s| s.within(100)),
            Some(ByteRange { offset: 0, length: 100 })
        );
        assert_eq!(r("bytes=100-").and_then(|s| s.within(100)), None);
        assert_eq!(r("bytes=-0").and_then(|s| s.within(100)), None);
        assert_eq!(r("bytes=5-1").and_then(|s| s.within(100)), None);
        assert_eq!(r("bytes=0-").and_then(|s| s.within(0)), None);
        assert_eq!(r("bytes=0-1,5-6"), None, "several ranges: the whole file");
        assert_eq!(r("items=0-1"), None);
    }

    #[test]
    fn tag_lists_compare_strongly_or_weakly() {
        let list = TagList::parse(r#"W/"abc", "def""#);
        assert!(list.matches_weakly("abc") && list.matches_weakly("def"));
        assert!(!list.matches_strongly("abc") && list.matches_strongly("def"));
        assert!(TagList::parse(" * ").matches_strongly("x"));
        assert!(TagList::parse("plain").matches_strongly("plain"));
    }
}
