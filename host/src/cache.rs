//! The metadata cache: one SQLite file holding every object's path, size,
//! etag, content type and mtime, plus the directories they imply.
//!
//! It answers stat, exists and list without touching a backend. It is
//! written through: the storage core updates it only after a backend has
//! acknowledged a write, copy or delete, so a failed backend call leaves it
//! as it was. The backend stays the source of truth; the cache can always be
//! rebuilt from it. All SQL lives in this file.
//!
//! Queries take microseconds, so they run inline under a mutex rather than
//! on a blocking thread (a hop there would cost more than the query).

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, params};

use crate::error::{StorageError, StorageResult};
use crate::path::{VolumePath, parent_of};
use crate::store::ObjectMeta;

const SCHEMA: &str = "
PRAGMA journal_mode = WAL;
PRAGMA synchronous = NORMAL;
CREATE TABLE IF NOT EXISTS objects (
    volume TEXT NOT NULL,
    path TEXT NOT NULL,
    parent TEXT NOT NULL,
    size INTEGER NOT NULL,
    etag TEXT NOT NULL,
    content_type TEXT NOT NULL,
    modified_ms INTEGER NOT NULL,
    cache_control TEXT,
    metadata TEXT NOT NULL DEFAULT '[]',
    PRIMARY KEY (volume, path)
) WITHOUT ROWID;
-- Covering, so a directory page is one index range scan with no lookup
-- into the table per row.
DROP INDEX IF EXISTS objects_by_parent;
CREATE INDEX IF NOT EXISTS objects_in_dir ON objects
    (volume, parent, path, size, etag, content_type, modified_ms, cache_control, metadata);
CREATE TABLE IF NOT EXISTS dirs (
    volume TEXT NOT NULL,
    path TEXT NOT NULL,
    parent TEXT NOT NULL,
    PRIMARY KEY (volume, path)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS dirs_by_parent ON dirs (volume, parent, path);
-- A refresh in progress, recorded as it goes so that an interrupted one
-- resumes: which backend it lists, which parts of the key space are done
-- (a split prefix with its sub-prefixes, or a listed prefix with the key
-- its listing goes on after, '' once done), and the objects found so far.
-- A run is live while its owner beats (heartbeat_ms); a failed run sets
-- it to 0 so that the next one resumes at once.
CREATE TABLE IF NOT EXISTS refresh_runs (
    volume TEXT NOT NULL PRIMARY KEY,
    backend TEXT NOT NULL,
    started_ms INTEGER NOT NULL,
    owner TEXT NOT NULL,
    heartbeat_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS refresh_parts (
    volume TEXT NOT NULL,
    kind TEXT NOT NULL,
    prefix TEXT NOT NULL,
    state TEXT NOT NULL,
    PRIMARY KEY (volume, kind, prefix)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS refresh_found (
    volume TEXT NOT NULL,
    key TEXT NOT NULL,
    size INTEGER NOT NULL,
    etag TEXT NOT NULL,
    content_type TEXT NOT NULL,
    modified_ms INTEGER NOT NULL,
    cache_control TEXT,
    metadata TEXT NOT NULL DEFAULT '[]',
    PRIMARY KEY (volume, key)
) WITHOUT ROWID;
";

/// How far an interrupted refresh of a volume got.
#[derive(Debug, Default)]
pub struct RefreshProgress {
    /// Prefixes split into files and sub-prefixes, with the sub-prefixes.
    pub splits: std::collections::HashMap<String, Vec<String>>,
    /// Prefixes listed: `None` once done, else the key to go on after.
    pub lists: std::collections::HashMap<String, Option<String>>,
    /// Objects found so far.
    pub found: u64,
}

/// A part of a refresh's listing, done or advanced.
pub enum RefreshPart<'a> {
    Split { prefix: &'a str, dirs: &'a [String] },
    List { prefix: &'a str, next: Option<&'a str> },
}

/// A file or directory in a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    File { path: String, meta: ObjectMeta },
    Dir { path: String },
}

impl Entry {
    pub fn path(&self) -> &str {
        match self {
            Entry::File { path, .. } | Entry::Dir { path } => path,
        }
    }
}

/// One page of a listing.
#[derive(Debug, Default)]
pub struct Page {
    pub entries: Vec<Entry>,
    pub next_cursor: Option<String>,
}

/// What the cache holds for one volume.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct VolumeStats {
    pub volume: String,
    pub files: u64,
    pub bytes: u64,
    pub directories: u64,
}

pub struct MetadataCache {
    conn: Mutex<Connection>,
}

fn db_error(e: rusqlite::Error) -> StorageError {
    StorageError::unavailable(format!("metadata cache: {e}"))
}

fn meta_from_row(row: &rusqlite::Row<'_>, first: usize) -> rusqlite::Result<ObjectMeta> {
    let metadata: String = row.get(first + 5)?;
    Ok(ObjectMeta {
        size: row.get::<_, i64>(first)? as u64,
        etag: row.get(first + 1)?,
        content_type: row.get(first + 2)?,
        modified_ms: row.get::<_, i64>(first + 3)? as u64,
        cache_control: row.get(first + 4)?,
        metadata: if metadata == "[]" {
            Vec::new()
        } else {
            // A damaged row is an error, never a file without metadata.
            serde_json::from_str(&metadata).map_err(|e| {
                rusqlite::Error::FromSqlConversionFailure(
                    first + 5,
                    rusqlite::types::Type::Text,
                    format!("unreadable user metadata ({e}); `silo cache refresh` rebuilds the row").into(),
                )
            })?
        },
    })
}

/// User metadata as stored: a JSON array of pairs.
fn metadata_json(meta: &ObjectMeta) -> String {
    serde_json::to_string(&meta.metadata).unwrap_or_else(|_| "[]".into())
}

/// The smallest string greater than every string starting with `prefix`
/// (UTF-8 byte order equals code point order), or `None` if unbounded.
fn prefix_upper_bound(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let mut next = last as u32 + 1;
        if (0xD800..0xE000).contains(&next) {
            next = 0xE000;
        }
        if let Some(c) = char::from_u32(next) {
            chars.push(c);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

impl MetadataCache {
    /// Open (creating if needed) the cache file.
    pub fn open(path: &Path) -> StorageResult<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| StorageError::unavailable(format!("cannot create {}: {e}", dir.display())))?;
        }
        let conn = Connection::open(path)
            .map_err(|e| StorageError::unavailable(format!("cannot open {}: {e}", path.display())))?;
        Self::init(conn)
    }

    /// A cache held in memory only (tests, memory volumes).
    pub fn in_memory() -> StorageResult<Self> {
        Self::init(Connection::open_in_memory().map_err(db_error)?)
    }

    fn init(conn: Connection) -> StorageResult<Self> {
        conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(db_error)?;
        conn.execute_batch(SCHEMA).map_err(db_error)?;
        Ok(MetadataCache { conn: Mutex::new(conn) })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        // SQLite keeps itself consistent; a panicked holder leaves no
        // half-applied state because writes run in transactions.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The cached metadata of one file.
    pub fn get(&self, volume: &str, path: &str) -> StorageResult<Option<ObjectMeta>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT size, etag, content_type, modified_ms, cache_control, metadata
                 FROM objects WHERE volume = ?1 AND path = ?2",
            )
            .map_err(db_error)?;
        stmt.query_row(params![volume, path], |row| meta_from_row(row, 0))
            .optional()
            .map_err(db_error)
    }

    /// Record a file the backend has stored.
    pub fn put(&self, volume: &str, path: &VolumePath, meta: &ObjectMeta) -> StorageResult<()> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(db_error)?;
        Self::put_in(&tx, volume, path, meta)?;
        tx.commit().map_err(db_error)
    }

    fn put_in(tx: &rusqlite::Transaction<'_>, volume: &str, path: &VolumePath, meta: &ObjectMeta) -> StorageResult<()> {
        let metadata = metadata_json(meta);
        tx.prepare_cached(
            "INSERT INTO objects (volume, path, parent, size, etag, content_type, modified_ms, cache_control, metadata)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
             ON CONFLICT (volume, path) DO UPDATE SET size = ?4, etag = ?5, content_type = ?6,
                 modified_ms = ?7, cache_control = ?8, metadata = ?9",
        )
        .and_then(|mut s| {
            s.execute(params![
                volume,
                path.as_str(),
                path.parent(),
                meta.size as i64,
                meta.etag,
                meta.content_type,
                meta.modified_ms as i64,
                meta.cache_control,
                metadata
            ])
        })
        .map_err(db_error)?;
        let mut dir = tx
            .prepare_cached("INSERT OR IGNORE INTO dirs (volume, path, parent) VALUES (?1, ?2, ?3)")
            .map_err(db_error)?;
        for ancestor in path.ancestors() {
            dir.execute(params![volume, ancestor, parent_of(ancestor)])
                .map_err(db_error)?;
        }
        Ok(())
    }

    /// Forget a file the backend has deleted, and directories left empty.
    /// With `version`, only if the row is still that version: a concurrent
    /// write may have stored, and recorded, a newer one since.
    pub fn remove(&self, volume: &str, path: &VolumePath, version: Option<&str>) -> StorageResult<()> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(db_error)?;
        let removed = tx
            .prepare_cached("DELETE FROM objects WHERE volume = ?1 AND path = ?2 AND (?3 IS NULL OR etag = ?3)")
            .and_then(|mut s| s.execute(params![volume, path.as_str(), version]))
            .map_err(db_error)?;
        if removed == 0 {
            return Ok(());
        }
        let ancestors: Vec<&str> = path.ancestors().collect();
        for dir in ancestors.into_iter().rev() {
            let below = format!("{dir}/");
            let upper = prefix_upper_bound(&below);
            let still_used: bool = tx
                .prepare_cached("SELECT EXISTS (SELECT 1 FROM objects WHERE volume = ?1 AND path >= ?2 AND path < ?3)")
                .and_then(|mut s| s.query_row(params![volume, below, upper], |r| r.get(0)))
                .map_err(db_error)?;
            if still_used {
                break;
            }
            tx.prepare_cached("DELETE FROM dirs WHERE volume = ?1 AND path = ?2")
                .and_then(|mut s| s.execute(params![volume, dir]))
                .map_err(db_error)?;
        }
        tx.commit().map_err(db_error)
    }

    /// The direct children of directory `dir` ("" for the root): files and
    /// subdirectories in path order (a file and a directory of the same name
    /// both appear, the file first).
    pub fn list_dir(&self, volume: &str, dir: &str, cursor: Option<&str>, limit: usize) -> StorageResult<Page> {
        let (after_path, after_kind) = decode_cursor(cursor)?;
        let conn = self.conn();
        // Files and directories are each one index range scan bounded by
        // the page size, merged here (files first on equal paths) rather
        // than sorted by SQLite.
        let mut files_stmt = conn
            .prepare_cached(
                "SELECT path, size, etag, content_type, modified_ms, cache_control, metadata
                 FROM objects WHERE volume = ?1 AND parent = ?2 AND path >= ?3 AND (path > ?3 OR ?4 < 0)
                 ORDER BY path LIMIT ?5",
            )
            .map_err(db_error)?;
        let files = files_stmt
            .query_map(params![volume, dir, after_path, after_kind, limit as i64 + 1], |row| {
                Ok(Entry::File {
                    path: row.get(0)?,
                    meta: meta_from_row(row, 1)?,
                })
            })
            .map_err(db_error)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(db_error)?;
        let mut dirs_stmt = conn
            .prepare_cached(
                "SELECT path FROM dirs WHERE volume = ?1 AND parent = ?2 AND path >= ?3 AND (path > ?3 OR ?4 < 1)
                 ORDER BY path LIMIT ?5",
            )
            .map_err(db_error)?;
        let dirs = dirs_stmt
            .query_map(params![volume, dir, after_path, after_kind, limit as i64 + 1], |row| {
                Ok(Entry::Dir { path: row.get(0)? })
            })
            .map_err(db_error)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(db_error)?;
        let mut entries = Vec::with_capacity((limit + 1).min(files.len() + dirs.len()));
        let (mut files, mut dirs) = (files.into_iter().peekable(), dirs.into_iter().peekable());
        while entries.len() <= limit {
            let take_file = match (files.peek(), dirs.peek()) {
                (Some(f), Some(d)) => f.path() <= d.path(),
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (None, None) => break,
            };
            entries.extend(if take_file { files.next() } else { dirs.next() });
        }
        Ok(paginate(entries, limit))
    }

    /// Every file whose path starts with `prefix`, in path order.
    pub fn list_prefix(&self, volume: &str, prefix: &str, cursor: Option<&str>, limit: usize) -> StorageResult<Page> {
        let (after_path, _) = decode_cursor(cursor)?;
        let upper = prefix_upper_bound(prefix);
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT path, size, etag, content_type, modified_ms, cache_control, metadata
                 FROM objects WHERE volume = ?1 AND path >= ?2 AND (?3 IS NULL OR path < ?3) AND path > ?4
                 ORDER BY path LIMIT ?5",
            )
            .map_err(db_error)?;
        let rows = stmt
            .query_map(params![volume, prefix, upper, after_path, limit as i64 + 1], |row| {
                Ok(Entry::File {
                    path: row.get(0)?,
                    meta: meta_from_row(row, 1)?,
                })
            })
            .map_err(db_error)?;
        let entries = rows.collect::<Result<Vec<_>, _>>().map_err(db_error)?;
        Ok(paginate(entries, limit))
    }

    /// Start recording a refresh of `volume` listed from `backend` as run
    /// `owner`, or take up the one an interrupted run recorded if it listed
    /// the same backend less than `resume_within_ms` ago (`Some`, with how
    /// far it got). `Unavailable` while another run beat less than
    /// `live_ms` ago.
    pub fn refresh_begin(
        &self,
        volume: &str,
        backend: &str,
        owner: &str,
        now_ms: u64,
        (resume_within_ms, live_ms): (u64, u64),
    ) -> StorageResult<Option<RefreshProgress>> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(db_error)?;
        let run: Option<(String, i64, i64)> = tx
            .query_row(
                "SELECT backend, started_ms, heartbeat_ms FROM refresh_runs WHERE volume = ?1",
                params![volume],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()
            .map_err(db_error)?;
        if let Some((_, _, beat)) = &run
            && now_ms.saturating_sub(*beat as u64) < live_ms
        {
            return Err(StorageError::unavailable(format!(
                "a refresh of volume '{volume}' is under way; run this one when it has ended"
            )));
        }
        let resumable = run
            .is_some_and(|(b, started, _)| b == backend && now_ms.saturating_sub(started as u64) <= resume_within_ms);
        // A record that cannot be read back is not built on: start over.
        let progress = if resumable {
            Self::refresh_progress(&tx, volume)?
        } else {
            None
        };
        match &progress {
            Some(_) => tx.execute(
                "UPDATE refresh_runs SET owner = ?2, heartbeat_ms = ?3 WHERE volume = ?1",
                params![volume, owner, now_ms as i64],
            ),
            None => {
                Self::refresh_clear(&tx, volume)?;
                tx.execute(
                    "INSERT INTO refresh_runs (volume, backend, started_ms, owner, heartbeat_ms)
                     VALUES (?1, ?2, ?3, ?4, ?3)",
                    params![volume, backend, now_ms as i64, owner],
                )
            }
        }
        .map_err(db_error)?;
        tx.commit().map_err(db_error)?;
        Ok(progress)
    }

    /// What the record of `volume`'s refresh says was done; `None` if it
    /// cannot be read back.
    fn refresh_progress(tx: &rusqlite::Transaction<'_>, volume: &str) -> StorageResult<Option<RefreshProgress>> {
        let mut progress = RefreshProgress::default();
        let mut stmt = tx
            .prepare("SELECT kind, prefix, state FROM refresh_parts WHERE volume = ?1")
            .map_err(db_error)?;
        let parts = stmt
            .query_map(params![volume], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?))
            })
            .map_err(db_error)?;
        for part in parts {
            let (kind, prefix, state) = part.map_err(db_error)?;
            match kind.as_str() {
                "split" => {
                    let Ok(dirs) = serde_json::from_str(&state) else {
                        return Ok(None);
                    };
                    progress.splits.insert(prefix, dirs);
                }
                "list" => {
                    progress.lists.insert(prefix, Some(state).filter(|s| !s.is_empty()));
                }
                _ => return Ok(None),
            }
        }
        progress.found = tx
            .query_row(
                "SELECT COUNT(*) FROM refresh_found WHERE volume = ?1",
                params![volume],
                |r| r.get::<_, i64>(0),
            )
            .map_err(db_error)? as u64;
        Ok(Some(progress))
    }

    /// Say that run `owner` of `volume`'s refresh is alive (`now_ms`), or,
    /// with 0, that it has failed and the next run may take it up.
    pub fn refresh_beat(&self, volume: &str, owner: &str, now_ms: u64) -> StorageResult<()> {
        self.conn()
            .execute(
                "UPDATE refresh_runs SET heartbeat_ms = ?3 WHERE volume = ?1 AND owner = ?2",
                params![volume, owner, now_ms as i64],
            )
            .map_err(db_error)?;
        Ok(())
    }

    /// Record objects a refresh found and the part of its listing they
    /// complete or advance, in one transaction.
    pub fn refresh_record(
        &self,
        volume: &str,
        part: RefreshPart<'_>,
        found: &[(String, ObjectMeta)],
    ) -> StorageResult<()> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(db_error)?;
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO refresh_found
                         (volume, key, size, etag, content_type, modified_ms, cache_control, metadata)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )
                .map_err(db_error)?;
            for (key, meta) in found {
                let metadata = metadata_json(meta);
                insert
                    .execute(params![
                        volume,
                        key,
                        meta.size as i64,
                        meta.etag,
                        meta.content_type,
                        meta.modified_ms as i64,
                        meta.cache_control,
                        metadata
                    ])
                    .map_err(db_error)?;
            }
        }
        let (kind, prefix, state) = match part {
            RefreshPart::Split { prefix, dirs } => (
                "split",
                prefix,
                serde_json::to_string(dirs).unwrap_or_else(|_| "[]".into()),
            ),
            RefreshPart::List { prefix, next } => ("list", prefix, next.unwrap_or("").to_owned()),
        };
        tx.execute(
            "INSERT OR REPLACE INTO refresh_parts (volume, kind, prefix, state) VALUES (?1, ?2, ?3, ?4)",
            params![volume, kind, prefix, state],
        )
        .map_err(db_error)?;
        tx.commit().map_err(db_error)
    }

    /// Every object the refresh of `volume` in progress has found, by key.
    pub fn refresh_found(&self, volume: &str) -> StorageResult<Vec<(String, ObjectMeta)>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(
                "SELECT key, size, etag, content_type, modified_ms, cache_control, metadata
                 FROM refresh_found WHERE volume = ?1 ORDER BY key",
            )
            .map_err(db_error)?;
        let rows = stmt
            .query_map(params![volume], |row| Ok((row.get(0)?, meta_from_row(row, 1)?)))
            .map_err(db_error)?;
        rows.collect::<Result<_, _>>().map_err(db_error)
    }

    fn refresh_clear(tx: &rusqlite::Transaction<'_>, volume: &str) -> StorageResult<()> {
        for table in [
            "DELETE FROM refresh_runs WHERE volume = ?1",
            "DELETE FROM refresh_parts WHERE volume = ?1",
            "DELETE FROM refresh_found WHERE volume = ?1",
        ] {
            tx.execute(table, params![volume]).map_err(db_error)?;
        }
        Ok(())
    }

    /// Replace every row of `volume` with `files` listed by refresh run
    /// `owner`, and end the run, in one transaction: readers see the old
    /// listing until the new one is complete. Refused if another run has
    /// taken the refresh over.
    pub fn replace_volume(&self, volume: &str, owner: &str, files: &[(VolumePath, ObjectMeta)]) -> StorageResult<()> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(db_error)?;
        let current: Option<String> = tx
            .query_row(
                "SELECT owner FROM refresh_runs WHERE volume = ?1",
                params![volume],
                |r| r.get(0),
            )
            .optional()
            .map_err(db_error)?;
        if current.as_deref() != Some(owner) {
            return Err(StorageError::unavailable(format!(
                "another refresh of volume '{volume}' took this one over; nothing was changed"
            )));
        }
        Self::refresh_clear(&tx, volume)?;
        for table in [
            "DELETE FROM objects WHERE volume = ?1",
            "DELETE FROM dirs WHERE volume = ?1",
        ] {
            tx.execute(table, params![volume]).map_err(db_error)?;
        }
        for (path, meta) in files {
            Self::put_in(&tx, volume, path, meta)?;
        }
        tx.commit().map_err(db_error)
    }

    /// Files, bytes and directories per volume.
    pub fn stats(&self) -> StorageResult<Vec<VolumeStats>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT volume, SUM(files), SUM(bytes), SUM(dirs) FROM (
                     SELECT volume, COUNT(*) AS files, SUM(size) AS bytes, 0 AS dirs FROM objects GROUP BY volume
                     UNION ALL
                     SELECT volume, 0, 0, COUNT(*) FROM dirs GROUP BY volume
                 ) GROUP BY volume ORDER BY volume",
            )
            .map_err(db_error)?;
        let rows = stmt
            .query_map([], |r| {
                Ok(VolumeStats {
                    volume: r.get(0)?,
                    files: r.get::<_, i64>(1)? as u64,
                    bytes: r.get::<_, i64>(2)? as u64,
                    directories: r.get::<_, i64>(3)? as u64,
                })
            })
            .map_err(db_error)?;
        rows.collect::<Result<_, _>>().map_err(db_error)
    }

    /// Every cached file of a volume (verification, tests).
    pub fn all_files(&self, volume: &str) -> StorageResult<Vec<(String, ObjectMeta)>> {
        let mut out = Vec::new();
        let mut cursor = None;
        loop {
            let page = self.list_prefix(volume, "", cursor.as_deref(), 1000)?;
            out.extend(page.entries.into_iter().filter_map(|e| match e {
                Entry::File { path, meta } => Some((path, meta)),
                Entry::Dir { .. } => None,
            }));
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => return Ok(out),
            }
        }
    }
}

/// Cursors are `<kind><path>`, kind `0` for a file and `1` for a directory.
fn decode_cursor(cursor: Option<&str>) -> StorageResult<(String, i64)> {
    match cursor {
        None => Ok((String::new(), -1)),
        Some(c) => match c.split_at_checked(1) {
            Some(("0", path)) => Ok((path.to_owned(), 0)),
            Some(("1", path)) => Ok((path.to_owned(), 1)),
            _ => Err(StorageError::InvalidPath(format!("'{c}' is not a listing cursor"))),
        },
    }
}

fn paginate(mut entries: Vec<Entry>, limit: usize) -> Page {
    let next_cursor = (entries.len() > limit).then(|| {
        entries.truncate(limit);
        match entries.last() {
            Some(Entry::File { path, .. }) => format!("0{path}"),
            Some(Entry::Dir { path }) => format!("1{path}"),
            None => String::new(),
        }
    });
    Page { entries, next_cursor }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(size: u64) -> ObjectMeta {
        ObjectMeta {
            size,
            etag: format!("e{size}"),
            content_type: "image/png".into(),
            modified_ms: 1,
            cache_control: None,
            metadata: vec![("k".into(), "v".into())],
        }
    }

    fn put(cache: &MetadataCache, path: &str, size: u64) {
        cache.put("v", &VolumePath::parse(path).unwrap(), &meta(size)).unwrap();
    }

    fn names(page: &Page) -> Vec<String> {
        page.entries
            .iter()
            .map(|e| match e {
                Entry::File { path, .. } => format!("f:{path}"),
                Entry::Dir { path } => format!("d:{path}"),
            })
            .collect()
    }

    #[test]
    fn directories_are_derived_and_pruned() {
        let cache = MetadataCache::in_memory().unwrap();
        put(&cache, "a/b/c.png", 3);
        put(&cache, "a/x.png", 1);
        put(&cache, "a", 9); // a file beside the directory `a`
        assert_eq!(names(&cache.list_dir("v", "", None, 10).unwrap()), ["f:a", "d:a"]);
        assert_eq!(
            names(&cache.list_dir("v", "a", None, 10).unwrap()),
            ["d:a/b", "f:a/x.png"]
        );
        cache
            .remove("v", &VolumePath::parse("a/b/c.png").unwrap(), None)
            .unwrap();
        assert_eq!(names(&cache.list_dir("v", "a", None, 10).unwrap()), ["f:a/x.png"]);
        assert_eq!(cache.get("v", "a").unwrap().unwrap(), meta(9));
        assert!(cache.get("v", "a/b/c.png").unwrap().is_none());

        // One entry per page: the file `a` and the directory `a` share a
        // path and must both come, in that order, once each.
        put(&cache, "a/b/c.png", 3);
        put(&cache, "b", 1);
        let mut seen = Vec::new();
        let mut cursor = None;
        loop {
            let page = cache.list_dir("v", "", cursor.as_deref(), 1).unwrap();
            seen.extend(names(&page));
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        assert_eq!(seen, ["f:a", "d:a", "f:b"]);
    }

    #[test]
    fn pages_resume_at_the_cursor() {
        let cache = MetadataCache::in_memory().unwrap();
        for i in 0..25 {
            put(&cache, &format!("d/{i:02}.png"), i);
        }
        put(&cache, "d/😀/deep.png", 1);
        put(&cache, "dz.png", 1);
        let mut seen = Vec::new();
        let mut cursor = None;
        loop {
            let page = cache.list_dir("v", "d", cursor.as_deref(), 10).unwrap();
            seen.extend(names(&page));
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        assert_eq!(seen.len(), 26);
        assert_eq!(seen.last().unwrap(), "d:d/😀");
        let all = cache.list_prefix("v", "d/", None, 100).unwrap();
        assert_eq!(all.entries.len(), 26, "dz.png is outside the prefix");
        assert!(cache.list_dir("v", "d", Some("junk"), 10).is_err());
    }

    #[test]
    fn upper_bound_is_exact() {
        assert_eq!(prefix_upper_bound("a/").as_deref(), Some("a0"));
        assert_eq!(prefix_upper_bound("").as_deref(), None);
        assert_eq!(prefix_upper_bound("a\u{10FFFF}").as_deref(), Some("b"));
        assert_eq!(prefix_upper_bound("\u{D7FF}").as_deref(), Some("\u{E000}"));
    }
}
