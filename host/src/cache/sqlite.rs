//! The SQLite engine of the metadata cache: one file in `data_dir`, the
//! embedded default for one node. All of its SQL lives here.
//!
//! Every call runs on tokio's blocking threads, never on the async
//! executor: a long transaction (a refresh's swap) or another process
//! holding the file stalls only the calls waiting for it. Writes go
//! through one connection; reads take one of a few reader connections,
//! which WAL lets run beside the writer.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OptionalExtension, params};

use super::{
    Version,
    Change, Completion, Entry, Intent, MetadataEngine, Page, PartRecord, RefreshCounts, RefreshPart, RefreshProgress,
    UploadRecord, VolumeStats, decode_cursor, metadata_from_json, metadata_json, paginate, prefix_upper_bound,
};
use crate::audit::{Action, Filter, Record};
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
-- Open multipart uploads of the S3 endpoint and their stored parts.
CREATE TABLE IF NOT EXISTS multipart_uploads (
    id TEXT NOT NULL PRIMARY KEY,
    volume TEXT NOT NULL,
    key TEXT NOT NULL,
    principal TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    settings TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS multipart_by_principal ON multipart_uploads (principal);
CREATE INDEX IF NOT EXISTS multipart_by_key ON multipart_uploads (volume, key, id);
CREATE TABLE IF NOT EXISTS multipart_parts (
    upload TEXT NOT NULL,
    number INTEGER NOT NULL,
    etag TEXT NOT NULL,
    size INTEGER NOT NULL,
    modified_ms INTEGER NOT NULL,
    blob TEXT NOT NULL,
    checksum TEXT,
    PRIMARY KEY (upload, number)
) WITHOUT ROWID;
-- Completed multipart uploads, for a completion repeated (its answer lost).
CREATE TABLE IF NOT EXISTS multipart_completed (
    id TEXT NOT NULL PRIMARY KEY,
    volume TEXT NOT NULL,
    key TEXT NOT NULL,
    etag TEXT NOT NULL,
    size INTEGER NOT NULL,
    content_type TEXT NOT NULL,
    completed_ms INTEGER NOT NULL
) WITHOUT ROWID;
-- A volume's settings changed by its clients (bucket CORS), as JSON.
CREATE TABLE IF NOT EXISTS volume_settings (
    volume TEXT NOT NULL,
    name TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (volume, name)
) WITHOUT ROWID;
-- The audit trail (crate::audit), oldest first by id.
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY,
    time_ms INTEGER NOT NULL,
    node TEXT NOT NULL,
    principal TEXT NOT NULL,
    action TEXT NOT NULL,
    volume TEXT NOT NULL,
    path TEXT NOT NULL,
    size INTEGER,
    etag TEXT,
    sha256 TEXT,
    plugin TEXT,
    reason TEXT,
    request_id TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_by_path ON audit (volume, path, id);
-- Changes about to be made to a backend, ended with their row.
CREATE TABLE IF NOT EXISTS intents (
    id INTEGER PRIMARY KEY,
    node TEXT NOT NULL,
    volume TEXT NOT NULL,
    path TEXT NOT NULL,
    principal TEXT NOT NULL,
    request_id TEXT NOT NULL,
    created_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS intents_by_node ON intents (node);
";

/// Reader connections kept open between calls.
const IDLE_READERS: usize = 8;

/// The engine: a file, or (tests, memory volumes) a database in memory.
pub struct SqliteEngine {
    shared: Arc<Shared>,
}

struct Shared {
    /// `None`: in memory, where every call uses the writer.
    path: Option<PathBuf>,
    writer: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
    puts: Mutex<PutQueue>,
}

/// Puts waiting for the writer. They are committed together: under
/// concurrent uploads one transaction, and one hand-off to a blocking
/// thread, serves every put that queued while the last one committed.
#[derive(Default)]
struct PutQueue {
    waiting: Vec<QueuedPut>,
    /// A blocking thread is taking puts from `waiting`.
    draining: bool,
}

struct QueuedPut {
    volume: String,
    path: VolumePath,
    meta: ObjectMeta,
    change: Change,
    done: tokio::sync::oneshot::Sender<StorageResult<()>>,
}

impl Shared {
    /// Commit queued puts, a batch at a time, until none is left.
    fn drain_puts(&self) {
        // Should a batch panic, its waiters hear so through their dropped
        // senders, and the next put starts a new drain.
        struct Stop<'a>(&'a Mutex<PutQueue>);
        impl Drop for Stop<'_> {
            fn drop(&mut self) {
                if std::thread::panicking() {
                    let mut queue = lock(self.0);
                    queue.draining = false;
                    queue.waiting.clear();
                }
            }
        }
        let _stop = Stop(&self.puts);
        loop {
            let batch = {
                let mut queue = lock(&self.puts);
                if queue.waiting.is_empty() {
                    queue.draining = false;
                    return;
                }
                std::mem::take(&mut queue.waiting)
            };
            let results = Sql::put_batch(&mut lock(&self.writer), &batch);
            for (put, result) in batch.into_iter().zip(results) {
                // A caller that went away needs no answer.
                let _ = put.done.send(result);
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // SQLite keeps itself consistent; a panicked holder leaves no
    // half-applied state because writes run in transactions.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl SqliteEngine {
    /// Open (creating if needed) the cache file.
    pub fn open(path: &Path) -> StorageResult<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| StorageError::unavailable(format!("cannot create {}: {e}", dir.display())))?;
        }
        let conn = open_file(path)?;
        conn.execute_batch(SCHEMA).map_err(db_error)?;
        add_missing_columns(&conn)?;
        Ok(Self::with(Some(path.to_owned()), conn))
    }

    /// A cache held in memory only (tests, memory volumes).
    #[cfg_attr(not(feature = "internals"), allow(dead_code))] // tests and benchmarks
    pub fn in_memory() -> StorageResult<Self> {
        let conn = Connection::open_in_memory().map_err(db_error)?;
        conn.execute_batch(SCHEMA).map_err(db_error)?;
        Ok(Self::with(None, conn))
    }

    fn with(path: Option<PathBuf>, writer: Connection) -> Self {
        SqliteEngine {
            shared: Arc::new(Shared {
                path,
                writer: Mutex::new(writer),
                readers: Mutex::new(Vec::new()),
                puts: Mutex::new(PutQueue::default()),
            }),
        }
    }

    /// Run `f` on a reader connection, off the async executor.
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> StorageResult<T> + Send + 'static,
    ) -> StorageResult<T> {
        let shared = self.shared.clone();
        blocking(move || {
            let Some(path) = &shared.path else {
                return f(&lock(&shared.writer));
            };
            let idle = lock(&shared.readers).pop();
            let conn = match idle {
                Some(conn) => conn,
                None => open_file(path)?,
            };
            let result = f(&conn);
            let mut readers = lock(&shared.readers);
            if readers.len() < IDLE_READERS {
                readers.push(conn);
            }
            result
        })
        .await
    }

    /// Run `f` on the writer connection, off the async executor.
    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> StorageResult<T> + Send + 'static,
    ) -> StorageResult<T> {
        let shared = self.shared.clone();
        blocking(move || f(&mut lock(&shared.writer))).await
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> StorageResult<T> + Send + 'static) -> StorageResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StorageError::unavailable(format!("metadata cache: the call stopped: {e}")))?
}

/// Columns added since their table was first made: (table, column, type).
const ADDED_COLUMNS: &[(&str, &str, &str)] = &[("multipart_parts", "checksum", "TEXT")];

/// A file made by an older Silo gains [`ADDED_COLUMNS`] (SQLite has no
/// `ADD COLUMN IF NOT EXISTS`).
fn add_missing_columns(conn: &Connection) -> StorageResult<()> {
    for &(table, column, kind) in ADDED_COLUMNS {
        let present: bool = conn
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM pragma_table_info(?1) WHERE name = ?2)",
                params![table, column],
                |row| row.get(0),
            )
            .map_err(db_error)?;
        if !present {
            conn.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {kind}"))
                .map_err(db_error)?;
        }
    }
    Ok(())
}

fn open_file(path: &Path) -> StorageResult<Connection> {
    let conn = Connection::open(path)
        .map_err(|e| StorageError::unavailable(format!("cannot open {}: {e}", path.display())))?;
    conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(db_error)?;
    Ok(conn)
}

fn db_error(e: rusqlite::Error) -> StorageError {
    db_error_ref(&e)
}

fn db_error_ref(e: &rusqlite::Error) -> StorageError {
    StorageError::unavailable(format!("metadata cache: {e}"))
}

fn meta_from_row(row: &rusqlite::Row<'_>, first: usize) -> rusqlite::Result<ObjectMeta> {
    let metadata: String = row.get(first + 5)?;
    let (metadata, headers) = metadata_from_json(&metadata).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(first + 5, rusqlite::types::Type::Text, e.to_string().into())
    })?;
    Ok(ObjectMeta {
        size: row.get::<_, i64>(first)? as u64,
        etag: row.get(first + 1)?,
        content_type: row.get(first + 2)?,
        modified_ms: row.get::<_, i64>(first + 3)? as u64,
        cache_control: row.get(first + 4)?,
        metadata,
        headers,
    })
}

/// The SQL of each call, on a connection.
struct Sql;

impl Sql {
    /// Remove upload `id` and its parts' rows: its parts, by number,
    /// `None` if it was not open.
    fn close_upload(conn: &Connection, id: &str) -> StorageResult<Option<Vec<PartRecord>>> {
        let parts = Sql::parts(conn, id)?;
        conn.execute("DELETE FROM multipart_parts WHERE upload = ?1", params![id])
            .map_err(db_error)?;
        let removed = conn
            .execute("DELETE FROM multipart_uploads WHERE id = ?1", params![id])
            .map_err(db_error)?;
        Ok((removed > 0).then_some(parts))
    }

    fn parts(conn: &Connection, id: &str) -> StorageResult<Vec<PartRecord>> {
        let mut stmt = conn
            .prepare_cached(
                "SELECT number, etag, size, modified_ms, blob, checksum FROM multipart_parts
                 WHERE upload = ?1 ORDER BY number",
            )
            .map_err(db_error)?;
        let rows = stmt
            .query_map(params![id], |row| {
                Ok(PartRecord {
                    number: row.get(0)?,
                    etag: row.get(1)?,
                    size: row.get::<_, i64>(2)? as u64,
                    modified_ms: row.get::<_, i64>(3)? as u64,
                    blob: row.get(4)?,
                    checksum: row.get(5)?,
                })
            })
            .map_err(db_error)?;
        rows.collect::<rusqlite::Result<Vec<_>>>().map_err(db_error)
    }

    /// The cached metadata of one file.
    fn get(conn: &Connection, volume: &str, path: &str) -> StorageResult<Option<ObjectMeta>> {
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

    /// Record files the backend has stored: `batch` in one transaction,
    /// each put in a savepoint of its own, so that one that fails is rolled
    /// back alone. The answer for each put.
    fn put_batch(conn: &mut Connection, batch: &[QueuedPut]) -> Vec<StorageResult<()>> {
        let all_fail = |e: rusqlite::Error| batch.iter().map(|_| Err(db_error_ref(&e))).collect();
        let mut tx = match conn.transaction() {
            Ok(tx) => tx,
            Err(e) => return all_fail(e),
        };
        let mut results = Vec::with_capacity(batch.len());
        for put in batch {
            let result = tx.savepoint().map_err(db_error).and_then(|point| {
                Sql::put_in(&point, &put.volume, &put.path, &put.meta)?;
                Sql::change_in(&point, &put.change)?;
                point.commit().map_err(db_error)
            });
            results.push(result);
        }
        match tx.commit() {
            Ok(()) => results,
            Err(e) => all_fail(e),
        }
    }

    fn put_in(tx: &Connection, volume: &str, path: &VolumePath, meta: &ObjectMeta) -> StorageResult<()> {
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
    fn remove(
        conn: &mut Connection,
        volume: &str,
        path: &VolumePath,
        version: Option<Version<'_>>,
        change: &Change,
    ) -> StorageResult<()> {
        let tx = conn.transaction().map_err(db_error)?;
        Sql::change_in(&tx, change)?;
        let (etag, modified_ms) = (version.map(|v| v.etag), version.and_then(|v| v.modified_ms).map(|ms| ms as i64));
        let removed = tx
            .prepare_cached(
                "DELETE FROM objects WHERE volume = ?1 AND path = ?2
                 AND (?3 IS NULL OR (etag = ?3 AND (?4 IS NULL OR modified_ms = ?4)))",
            )
            .and_then(|mut s| s.execute(params![volume, path.as_str(), etag, modified_ms]))
            .map_err(db_error)?;
        if removed == 0 {
            return tx.commit().map_err(db_error);
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

    /// What goes with a row's change: its record, and the end of its intent.
    fn change_in(tx: &Connection, change: &Change) -> StorageResult<()> {
        if let Some(record) = &change.audit {
            Sql::audit_add(tx, record)?;
        }
        if let Some(id) = change.intent {
            Sql::intent_end(tx, id)?;
        }
        Ok(())
    }

    fn intent_begin(tx: &Connection, i: &Intent) -> StorageResult<i64> {
        tx.prepare_cached(
            "INSERT INTO intents (node, volume, path, principal, request_id, created_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )
        .and_then(|mut s| {
            s.execute(params![
                i.node,
                i.volume,
                i.path,
                i.principal,
                i.request_id,
                i.created_ms as i64
            ])
        })
        .map_err(db_error)?;
        Ok(tx.last_insert_rowid())
    }

    fn intent_end(tx: &Connection, id: i64) -> StorageResult<()> {
        tx.prepare_cached("DELETE FROM intents WHERE id = ?1")
            .and_then(|mut s| s.execute(params![id]))
            .map_err(db_error)?;
        Ok(())
    }

    fn intents(conn: &Connection, node: Option<&str>, before_ms: u64) -> StorageResult<Vec<Intent>> {
        let mut stmt = conn
            .prepare_cached(
                "SELECT id, node, volume, path, principal, request_id, created_ms FROM intents
                 WHERE (?1 IS NOT NULL AND node = ?1) OR (?1 IS NULL AND created_ms < ?2) ORDER BY id",
            )
            .map_err(db_error)?;
        let rows = stmt
            .query_map(params![node, before_ms.min(i64::MAX as u64) as i64], |row| {
                Ok(Intent {
                    id: row.get(0)?,
                    node: row.get(1)?,
                    volume: row.get(2)?,
                    path: row.get(3)?,
                    principal: row.get(4)?,
                    request_id: row.get(5)?,
                    created_ms: row.get::<_, i64>(6)? as u64,
                })
            })
            .map_err(db_error)?;
        rows.collect::<rusqlite::Result<Vec<_>>>().map_err(db_error)
    }

    fn audit_add(tx: &Connection, r: &Record) -> StorageResult<()> {
        tx.prepare_cached(
            "INSERT INTO audit (time_ms, node, principal, action, volume, path, size, etag, sha256, plugin,
                 reason, request_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
        )
        .and_then(|mut s| {
            s.execute(params![
                r.time_ms as i64,
                r.node,
                r.principal,
                r.action.as_str(),
                r.volume,
                r.path,
                r.size.map(|n| n as i64),
                r.etag,
                r.sha256,
                r.plugin,
                r.reason,
                r.request_id
            ])
        })
        .map_err(db_error)?;
        Ok(())
    }

    fn audit_query(conn: &Connection, f: &Filter, after: Option<i64>, limit: usize) -> StorageResult<Vec<Record>> {
        let prefix = f.prefix.as_deref().filter(|p| !p.is_empty());
        let upper = prefix.and_then(prefix_upper_bound);
        let mut stmt = conn
            .prepare_cached(
                "SELECT id, time_ms, node, principal, action, volume, path, size, etag, sha256, plugin, reason,
                     request_id FROM audit
                 WHERE id > ?1 AND (?2 IS NULL OR volume = ?2) AND (?3 IS NULL OR path >= ?3)
                     AND (?4 IS NULL OR path < ?4) AND (?5 IS NULL OR principal = ?5)
                     AND (?6 IS NULL OR request_id = ?6) AND (?7 IS NULL OR time_ms >= ?7)
                     AND (?8 IS NULL OR time_ms < ?8)
                 ORDER BY id LIMIT ?9",
            )
            .map_err(db_error)?;
        let rows = stmt
            .query_map(
                params![
                    after.unwrap_or(0),
                    f.volume,
                    prefix,
                    upper,
                    f.principal,
                    f.request_id,
                    f.since_ms.map(|t| t as i64),
                    f.until_ms.map(|t| t as i64),
                    limit as i64
                ],
                |row| {
                    Ok((
                        Record {
                            id: row.get(0)?,
                            time_ms: row.get::<_, i64>(1)? as u64,
                            node: row.get(2)?,
                            principal: row.get(3)?,
                            action: Action::Put,
                            volume: row.get(5)?,
                            path: row.get(6)?,
                            size: row.get::<_, Option<i64>>(7)?.map(|n| n as u64),
                            etag: row.get(8)?,
                            sha256: row.get(9)?,
                            plugin: row.get(10)?,
                            reason: row.get(11)?,
                            request_id: row.get(12)?,
                        },
                        row.get::<_, String>(4)?,
                    ))
                },
            )
            .map_err(db_error)?;
        rows.map(|row| {
            let (mut record, action) = row.map_err(db_error)?;
            record.action = Action::parse(&action).ok_or_else(|| {
                StorageError::unavailable(format!("audit record {}: unknown action '{action}'", record.id))
            })?;
            Ok(record)
        })
        .collect()
    }

    fn audit_prune(conn: &mut Connection, before_ms: u64, batch: usize) -> StorageResult<u64> {
        let deleted = conn
            .prepare_cached(
                "DELETE FROM audit WHERE id IN
                     (SELECT id FROM (SELECT id, time_ms FROM audit ORDER BY id LIMIT ?2) WHERE time_ms < ?1)",
            )
            .and_then(|mut s| s.execute(params![before_ms as i64, batch as i64]))
            .map_err(db_error)?;
        Ok(deleted as u64)
    }

    fn audit_writer(conn: &Connection, volume: &str, path: &str, etag: &str) -> StorageResult<Option<String>> {
        conn.prepare_cached(
            "SELECT request_id FROM audit WHERE volume = ?1 AND path = ?2 AND etag = ?3
                 AND action IN ('put', 'copy', 'derived') ORDER BY id DESC LIMIT 1",
        )
        .and_then(|mut s| s.query_row(params![volume, path, etag], |r| r.get(0)).optional())
        .map_err(db_error)
    }

    /// The direct children of directory `dir` ("" for the root): files and
    /// subdirectories in path order (a file and a directory of the same name
    /// both appear, the file first).
    fn list_dir(conn: &Connection, volume: &str, dir: &str, cursor: Option<&str>, limit: usize) -> StorageResult<Page> {
        let (after_path, after_kind) = decode_cursor(cursor)?;
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
        Ok(super::merge_dir_page(files, dirs, limit))
    }

    /// Every file whose path starts with `prefix`, in path order.
    fn list_prefix(
        conn: &Connection,
        volume: &str,
        prefix: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> StorageResult<Page> {
        let (after_path, _) = decode_cursor(cursor)?;
        let upper = prefix_upper_bound(prefix);
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
    fn refresh_begin(
        conn: &mut Connection,
        volume: &str,
        backend: &str,
        owner: &str,
        now_ms: u64,
        windows: (u64, u64),
    ) -> StorageResult<Option<RefreshProgress>> {
        let tx = conn.transaction().map_err(db_error)?;
        let run: Option<(String, i64, i64)> = tx
            .query_row(
                "SELECT backend, started_ms, heartbeat_ms FROM refresh_runs WHERE volume = ?1",
                params![volume],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()
            .map_err(db_error)?;
        let resumable = super::may_refresh(volume, run, backend, now_ms, windows)?;
        // A record that cannot be read back is not built on: start over.
        let progress = if resumable {
            Sql::refresh_progress(&tx, volume)?
        } else {
            None
        };
        match &progress {
            Some(_) => tx.execute(
                "UPDATE refresh_runs SET owner = ?2, heartbeat_ms = ?3 WHERE volume = ?1",
                params![volume, owner, now_ms as i64],
            ),
            None => {
                Sql::refresh_clear(&tx, volume)?;
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
        let mut stmt = tx
            .prepare("SELECT kind, prefix, state FROM refresh_parts WHERE volume = ?1")
            .map_err(db_error)?;
        let parts = stmt
            .query_map(params![volume], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .map_err(db_error)?
            .collect::<Result<Vec<(String, String, String)>, _>>()
            .map_err(db_error)?;
        let found = tx
            .query_row(
                "SELECT COUNT(*) FROM refresh_found WHERE volume = ?1",
                params![volume],
                |r| r.get::<_, i64>(0),
            )
            .map_err(db_error)? as u64;
        Ok(RefreshProgress::decode(parts, found))
    }

    /// Say that run `owner` of `volume`'s refresh is alive (`now_ms`), or,
    /// with 0, that it has failed and the next run may take it up.
    fn refresh_beat(conn: &Connection, volume: &str, owner: &str, now_ms: u64) -> StorageResult<()> {
        conn.execute(
            "UPDATE refresh_runs SET heartbeat_ms = ?3 WHERE volume = ?1 AND owner = ?2",
            params![volume, owner, now_ms as i64],
        )
        .map_err(db_error)?;
        Ok(())
    }

    /// Record objects a refresh found and the part of its listing they
    /// complete or advance, in one transaction.
    fn refresh_record(
        conn: &mut Connection,
        volume: &str,
        part: RefreshPart<'_>,
        found: &[(String, ObjectMeta)],
    ) -> StorageResult<()> {
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
        let (kind, prefix, state) = part.encode();
        tx.execute(
            "INSERT OR REPLACE INTO refresh_parts (volume, kind, prefix, state) VALUES (?1, ?2, ?3, ?4)",
            params![volume, kind, prefix, state],
        )
        .map_err(db_error)?;
        tx.commit().map_err(db_error)
    }

    /// Every object the refresh of `volume` in progress has found, by key.
    #[cfg_attr(not(feature = "internals"), allow(dead_code))] // tests and benchmarks
    fn refresh_found(conn: &Connection, volume: &str) -> StorageResult<Vec<(String, ObjectMeta)>> {
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
    fn finish_refresh(conn: &mut Connection, volume: &str, owner: &str) -> StorageResult<RefreshCounts> {
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
            return Err(super::taken_over(volume));
        }
        let mut counts = RefreshCounts::default();
        {
            let mut keys = tx
                .prepare("SELECT key FROM refresh_found WHERE volume = ?1 ORDER BY key")
                .map_err(db_error)?;
            let mut rows = keys.query(params![volume]).map_err(db_error)?;
            while let Some(row) = rows.next().map_err(db_error)? {
                let key: String = row.get(0).map_err(db_error)?;
                if VolumePath::parse(&key).is_err() {
                    counts.skipped.push(key);
                }
            }
        }
        for key in &counts.skipped {
            tx.execute(
                "DELETE FROM refresh_found WHERE volume = ?1 AND key = ?2",
                params![volume, key],
            )
            .map_err(db_error)?;
        }
        let count = |sql: &str| -> StorageResult<u64> {
            tx.query_row(sql, params![volume], |r| r.get::<_, i64>(0))
                .map(|n| n as u64)
                .map_err(db_error)
        };
        counts.files = count("SELECT COUNT(*) FROM refresh_found WHERE volume = ?1")?;
        counts.bytes = count("SELECT COALESCE(SUM(size), 0) FROM refresh_found WHERE volume = ?1")?;
        counts.added = count(
            "SELECT COUNT(*) FROM refresh_found f WHERE f.volume = ?1
             AND NOT EXISTS (SELECT 1 FROM objects o WHERE o.volume = ?1 AND o.path = f.key)",
        )?;
        counts.changed = count(
            "SELECT COUNT(*) FROM refresh_found f JOIN objects o ON o.volume = f.volume AND o.path = f.key
             WHERE f.volume = ?1 AND o.etag <> f.etag",
        )?;
        counts.removed = count(
            "SELECT COUNT(*) FROM objects o WHERE o.volume = ?1
             AND NOT EXISTS (SELECT 1 FROM refresh_found f WHERE f.volume = ?1 AND f.key = o.path)",
        )?;
        for sql in [
            // What a listing cannot carry comes from the unchanged old row.
            "UPDATE refresh_found SET content_type = o.content_type,
                 cache_control = COALESCE(refresh_found.cache_control, o.cache_control),
                 metadata = CASE WHEN refresh_found.metadata = '[]' THEN o.metadata ELSE refresh_found.metadata END
             FROM objects o
             WHERE refresh_found.volume = ?1 AND o.volume = ?1 AND o.path = refresh_found.key
                 AND o.etag = refresh_found.etag",
            "DELETE FROM objects WHERE volume = ?1",
            "DELETE FROM dirs WHERE volume = ?1",
            // A parent is its key up to the last '/' (the inner rtrim strips
            // every character but '/' from the end).
            "INSERT INTO objects (volume, path, parent, size, etag, content_type, modified_ms, cache_control, metadata)
             SELECT volume, key, rtrim(rtrim(key, replace(key, '/', '')), '/'), size, etag, content_type,
                 modified_ms, cache_control, metadata
             FROM refresh_found WHERE volume = ?1",
            "WITH RECURSIVE d(path) AS (
                 SELECT DISTINCT parent FROM objects WHERE volume = ?1 AND parent <> ''
                 UNION
                 SELECT rtrim(rtrim(path, replace(path, '/', '')), '/') FROM d WHERE instr(path, '/') > 0
             )
             INSERT INTO dirs (volume, path, parent)
             SELECT ?1, path, rtrim(rtrim(path, replace(path, '/', '')), '/') FROM d",
        ] {
            tx.execute(sql, params![volume]).map_err(db_error)?;
        }
        Sql::refresh_clear(&tx, volume)?;
        tx.commit().map_err(db_error)?;
        Ok(counts)
    }

    /// Files, bytes and directories per volume.
    fn stats(conn: &Connection) -> StorageResult<Vec<VolumeStats>> {
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
}

#[async_trait::async_trait]
impl MetadataEngine for SqliteEngine {
    fn describe(&self) -> String {
        match &self.shared.path {
            Some(path) => format!("SQLite {}", path.display()),
            None => "SQLite in memory".into(),
        }
    }

    async fn get(&self, volume: &str, path: &str) -> StorageResult<Option<ObjectMeta>> {
        let (volume, path) = (volume.to_owned(), path.to_owned());
        self.read(move |c| Sql::get(c, &volume, &path)).await
    }

    async fn put(&self, volume: &str, path: &VolumePath, meta: &ObjectMeta, change: &Change) -> StorageResult<()> {
        let (done, answer) = tokio::sync::oneshot::channel();
        let start = {
            let mut queue = lock(&self.shared.puts);
            queue.waiting.push(QueuedPut {
                volume: volume.to_owned(),
                path: path.clone(),
                meta: meta.clone(),
                change: change.clone(),
                done,
            });
            !std::mem::replace(&mut queue.draining, true)
        };
        if start {
            let shared = self.shared.clone();
            tokio::task::spawn_blocking(move || shared.drain_puts());
        }
        answer
            .await
            .map_err(|_| StorageError::unavailable("metadata cache: the write stopped"))?
    }

    async fn remove(
        &self,
        volume: &str,
        path: &VolumePath,
        version: Option<Version<'_>>,
        change: &Change,
    ) -> StorageResult<()> {
        let (volume, path, change) = (volume.to_owned(), path.clone(), change.clone());
        let version = version.map(|v| (v.etag.to_owned(), v.modified_ms));
        self.write(move |c| {
            let version = version.as_ref().map(|(etag, modified_ms)| Version {
                etag,
                modified_ms: *modified_ms,
            });
            Sql::remove(c, &volume, &path, version, &change)
        })
        .await
    }

    async fn intent_begin(&self, intent: &Intent) -> StorageResult<i64> {
        let intent = intent.clone();
        self.write(move |c| Sql::intent_begin(c, &intent)).await
    }

    async fn intent_end(&self, id: i64) -> StorageResult<()> {
        self.write(move |c| Sql::intent_end(c, id)).await
    }

    async fn intents(&self, node: Option<&str>, before_ms: u64) -> StorageResult<Vec<Intent>> {
        let node = node.map(str::to_owned);
        self.read(move |c| Sql::intents(c, node.as_deref(), before_ms)).await
    }

    async fn audit_add(&self, record: &Record) -> StorageResult<()> {
        let record = record.clone();
        self.write(move |c| Sql::audit_add(c, &record)).await
    }

    async fn audit_query(&self, filter: &Filter, after: Option<i64>, limit: usize) -> StorageResult<Vec<Record>> {
        let filter = filter.clone();
        self.read(move |c| Sql::audit_query(c, &filter, after, limit)).await
    }

    async fn audit_prune(&self, before_ms: u64, batch: usize) -> StorageResult<Option<u64>> {
        self.write(move |c| Sql::audit_prune(c, before_ms, batch).map(Some))
            .await
    }

    async fn audit_writer(&self, volume: &str, path: &str, etag: &str) -> StorageResult<Option<String>> {
        let (volume, path, etag) = (volume.to_owned(), path.to_owned(), etag.to_owned());
        self.read(move |c| Sql::audit_writer(c, &volume, &path, &etag)).await
    }

    async fn list_dir(&self, volume: &str, dir: &str, cursor: Option<&str>, limit: usize) -> StorageResult<Page> {
        let (volume, dir, cursor) = (volume.to_owned(), dir.to_owned(), cursor.map(str::to_owned));
        self.read(move |c| Sql::list_dir(c, &volume, &dir, cursor.as_deref(), limit))
            .await
    }

    async fn list_prefix(&self, volume: &str, prefix: &str, cursor: Option<&str>, limit: usize) -> StorageResult<Page> {
        let (volume, prefix, cursor) = (volume.to_owned(), prefix.to_owned(), cursor.map(str::to_owned));
        self.read(move |c| Sql::list_prefix(c, &volume, &prefix, cursor.as_deref(), limit))
            .await
    }

    async fn refresh_begin(
        &self,
        volume: &str,
        backend: &str,
        owner: &str,
        now_ms: u64,
        windows: (u64, u64),
    ) -> StorageResult<Option<RefreshProgress>> {
        let (volume, backend, owner) = (volume.to_owned(), backend.to_owned(), owner.to_owned());
        self.write(move |c| Sql::refresh_begin(c, &volume, &backend, &owner, now_ms, windows))
            .await
    }

    async fn refresh_beat(&self, volume: &str, owner: &str, now_ms: u64) -> StorageResult<()> {
        let (volume, owner) = (volume.to_owned(), owner.to_owned());
        self.write(move |c| Sql::refresh_beat(c, &volume, &owner, now_ms)).await
    }

    async fn refresh_record(
        &self,
        volume: &str,
        part: RefreshPart<'_>,
        found: &[(String, ObjectMeta)],
    ) -> StorageResult<()> {
        let volume = volume.to_owned();
        let part = OwnedPart::from(part);
        let found = found.to_vec();
        self.write(move |c| Sql::refresh_record(c, &volume, part.as_part(), &found))
            .await
    }

    async fn refresh_found(&self, volume: &str) -> StorageResult<Vec<(String, ObjectMeta)>> {
        let volume = volume.to_owned();
        self.read(move |c| Sql::refresh_found(c, &volume)).await
    }

    async fn finish_refresh(&self, volume: &str, owner: &str) -> StorageResult<RefreshCounts> {
        let (volume, owner) = (volume.to_owned(), owner.to_owned());
        self.write(move |c| Sql::finish_refresh(c, &volume, &owner)).await
    }

    async fn stats(&self) -> StorageResult<Vec<VolumeStats>> {
        self.read(Sql::stats).await
    }

    async fn upload_create(&self, upload: &UploadRecord, max_open: usize) -> StorageResult<bool> {
        let upload = upload.clone();
        self.write(move |c| {
            // Immediate: another process's count cannot slip in between.
            let tx = c
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .map_err(db_error)?;
            let open: i64 = tx
                .query_row(
                    "SELECT count(*) FROM multipart_uploads WHERE principal = ?1",
                    params![upload.principal],
                    |row| row.get(0),
                )
                .map_err(db_error)?;
            if open as usize >= max_open {
                return Ok(false);
            }
            tx.execute(
                "INSERT INTO multipart_uploads (id, volume, key, principal, created_ms, settings)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    upload.id,
                    upload.volume,
                    upload.key,
                    upload.principal,
                    upload.created_ms as i64,
                    upload.settings
                ],
            )
            .map_err(db_error)?;
            tx.commit().map_err(db_error)?;
            Ok(true)
        })
        .await
    }

    async fn upload_get(&self, id: &str) -> StorageResult<Option<UploadRecord>> {
        let id = id.to_owned();
        self.read(move |c| {
            c.query_row(
                "SELECT id, volume, key, principal, created_ms, settings FROM multipart_uploads WHERE id = ?1",
                params![id],
                upload_from_row,
            )
            .optional()
            .map_err(db_error)
        })
        .await
    }

    async fn uploads(&self, volume: Option<&str>) -> StorageResult<Vec<UploadRecord>> {
        let volume = volume.map(str::to_owned);
        self.read(move |c| {
            let mut stmt = c
                .prepare(
                    "SELECT id, volume, key, principal, created_ms, settings FROM multipart_uploads
                     WHERE ?1 IS NULL OR volume = ?1 ORDER BY volume, key, id",
                )
                .map_err(db_error)?;
            let rows = stmt.query_map(params![volume], upload_from_row).map_err(db_error)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(db_error)
        })
        .await
    }

    async fn upload_remove(&self, id: &str) -> StorageResult<Option<Vec<PartRecord>>> {
        let id = id.to_owned();
        self.write(move |c| {
            let tx = c.transaction().map_err(db_error)?;
            let closed = Sql::close_upload(&tx, &id)?;
            tx.commit().map_err(db_error)?;
            Ok(closed)
        })
        .await
    }

    async fn upload_complete(&self, completion: &Completion) -> StorageResult<Option<Vec<PartRecord>>> {
        let done = completion.clone();
        self.write(move |c| {
            let tx = c.transaction().map_err(db_error)?;
            let closed = Sql::close_upload(&tx, &done.id)?;
            if closed.is_some() {
                tx.execute(
                    "INSERT OR REPLACE INTO multipart_completed (id, volume, key, etag, size, content_type, completed_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    params![
                        done.id,
                        done.volume,
                        done.key,
                        done.etag,
                        done.size as i64,
                        done.content_type,
                        done.completed_ms as i64
                    ],
                )
                .map_err(db_error)?;
            }
            tx.commit().map_err(db_error)?;
            Ok(closed)
        })
        .await
    }

    async fn completion(&self, id: &str) -> StorageResult<Option<Completion>> {
        let id = id.to_owned();
        self.read(move |c| {
            c.query_row(
                "SELECT id, volume, key, etag, size, content_type, completed_ms FROM multipart_completed WHERE id = ?1",
                params![id],
                |row| {
                    Ok(Completion {
                        id: row.get(0)?,
                        volume: row.get(1)?,
                        key: row.get(2)?,
                        etag: row.get(3)?,
                        size: row.get::<_, i64>(4)? as u64,
                        content_type: row.get(5)?,
                        completed_ms: row.get::<_, i64>(6)? as u64,
                    })
                },
            )
            .optional()
            .map_err(db_error)
        })
        .await
    }

    async fn completions_prune(&self, before_ms: u64) -> StorageResult<u64> {
        self.write(move |c| {
            let n = c
                .execute(
                    "DELETE FROM multipart_completed WHERE completed_ms < ?1",
                    params![before_ms as i64],
                )
                .map_err(db_error)?;
            Ok(n as u64)
        })
        .await
    }

    async fn setting(&self, volume: &str, name: &str) -> StorageResult<Option<String>> {
        let (volume, name) = (volume.to_owned(), name.to_owned());
        self.read(move |c| {
            c.query_row(
                "SELECT value FROM volume_settings WHERE volume = ?1 AND name = ?2",
                params![volume, name],
                |row| row.get(0),
            )
            .optional()
            .map_err(db_error)
        })
        .await
    }

    async fn set_setting(&self, volume: &str, name: &str, value: Option<&str>) -> StorageResult<()> {
        let (volume, name, value) = (volume.to_owned(), name.to_owned(), value.map(str::to_owned));
        self.write(move |c| {
            match value {
                Some(value) => c.execute(
                    "INSERT INTO volume_settings (volume, name, value) VALUES (?1, ?2, ?3)
                     ON CONFLICT (volume, name) DO UPDATE SET value = excluded.value",
                    params![volume, name, value],
                ),
                None => c.execute(
                    "DELETE FROM volume_settings WHERE volume = ?1 AND name = ?2",
                    params![volume, name],
                ),
            }
            .map_err(db_error)?;
            Ok(())
        })
        .await
    }

    async fn part_put(&self, id: &str, part: &PartRecord) -> StorageResult<Option<Option<String>>> {
        let (id, part) = (id.to_owned(), part.clone());
        self.write(move |c| {
            let tx = c.transaction().map_err(db_error)?;
            let open = tx
                .query_row("SELECT 1 FROM multipart_uploads WHERE id = ?1", params![id], |_| Ok(()))
                .optional()
                .map_err(db_error)?
                .is_some();
            if !open {
                return Ok(None);
            }
            let replaced: Option<String> = tx
                .query_row(
                    "SELECT blob FROM multipart_parts WHERE upload = ?1 AND number = ?2",
                    params![id, part.number],
                    |row| row.get(0),
                )
                .optional()
                .map_err(db_error)?;
            tx.execute(
                "INSERT INTO multipart_parts (upload, number, etag, size, modified_ms, blob, checksum)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT (upload, number) DO UPDATE
                 SET etag = ?3, size = ?4, modified_ms = ?5, blob = ?6, checksum = ?7",
                params![
                    id,
                    part.number,
                    part.etag,
                    part.size as i64,
                    part.modified_ms as i64,
                    part.blob,
                    part.checksum
                ],
            )
            .map_err(db_error)?;
            tx.commit().map_err(db_error)?;
            Ok(Some(replaced))
        })
        .await
    }

    async fn part_checksum(&self, id: &str, number: i32, blob: &str, checksum: &str) -> StorageResult<()> {
        let (id, blob, checksum) = (id.to_owned(), blob.to_owned(), checksum.to_owned());
        self.write(move |c| {
            c.execute(
                "UPDATE multipart_parts SET checksum = ?4 WHERE upload = ?1 AND number = ?2 AND blob = ?3",
                params![id, number, blob, checksum],
            )
            .map_err(db_error)?;
            Ok(())
        })
        .await
    }

    async fn part_remove(&self, id: &str, number: i32, blob: &str) -> StorageResult<()> {
        let (id, blob) = (id.to_owned(), blob.to_owned());
        self.write(move |c| {
            c.execute(
                "DELETE FROM multipart_parts WHERE upload = ?1 AND number = ?2 AND blob = ?3",
                params![id, number, blob],
            )
            .map(drop)
            .map_err(db_error)
        })
        .await
    }

    async fn parts(&self, id: &str) -> StorageResult<Vec<PartRecord>> {
        let id = id.to_owned();
        self.read(move |c| Sql::parts(c, &id)).await
    }
}

fn upload_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<UploadRecord> {
    Ok(UploadRecord {
        id: row.get(0)?,
        volume: row.get(1)?,
        key: row.get(2)?,
        principal: row.get(3)?,
        created_ms: row.get::<_, i64>(4)? as u64,
        settings: row.get(5)?,
    })
}

/// A [`RefreshPart`] that can move to a blocking thread.
enum OwnedPart {
    Split { prefix: String, dirs: Vec<String> },
    List { prefix: String, next: Option<String> },
}

impl From<RefreshPart<'_>> for OwnedPart {
    fn from(part: RefreshPart<'_>) -> Self {
        match part {
            RefreshPart::Split { prefix, dirs } => OwnedPart::Split {
                prefix: prefix.to_owned(),
                dirs: dirs.to_vec(),
            },
            RefreshPart::List { prefix, next } => OwnedPart::List {
                prefix: prefix.to_owned(),
                next: next.map(str::to_owned),
            },
        }
    }
}

impl OwnedPart {
    fn as_part(&self) -> RefreshPart<'_> {
        match self {
            OwnedPart::Split { prefix, dirs } => RefreshPart::Split { prefix, dirs },
            OwnedPart::List { prefix, next } => RefreshPart::List {
                prefix,
                next: next.as_deref(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_file_made_before_a_column_gains_it_and_keeps_its_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.sqlite");
        let old = Connection::open(&path).unwrap();
        old.execute_batch(
            "CREATE TABLE multipart_parts (upload TEXT NOT NULL, number INTEGER NOT NULL, etag TEXT NOT NULL,
                 size INTEGER NOT NULL, modified_ms INTEGER NOT NULL, blob TEXT NOT NULL,
                 PRIMARY KEY (upload, number)) WITHOUT ROWID;
             INSERT INTO multipart_parts VALUES ('u', 1, 'e', 5, 1, 'u/1');",
        )
        .unwrap();
        drop(old);
        let engine = SqliteEngine::open(&path).unwrap();
        let parts = engine.parts("u").await.unwrap();
        assert_eq!((parts.len(), parts[0].checksum.as_deref()), (1, None));
        engine.part_checksum("u", 1, "u/1", "CRC32 AAAAAA==").await.unwrap();
        assert_eq!(engine.parts("u").await.unwrap()[0].checksum.as_deref(), Some("CRC32 AAAAAA=="));
        // Opened again, nothing is added twice.
        drop(engine);
        SqliteEngine::open(&path).unwrap();
    }

    fn queued(path: &str, size: u64) -> (QueuedPut, tokio::sync::oneshot::Receiver<StorageResult<()>>) {
        let (done, answer) = tokio::sync::oneshot::channel();
        let meta = ObjectMeta {
            size,
            etag: format!("e{size}"),
            content_type: "text/plain".into(),
            modified_ms: 1,
            cache_control: None,
            metadata: Vec::new(),
            headers: Default::default(),
        };
        let put = QueuedPut {
            volume: "v".into(),
            path: VolumePath::parse(path).unwrap(),
            meta,
            change: Change::default(),
            done,
        };
        (put, answer)
    }

    /// A put refused inside a batch is rolled back alone: the others of
    /// its transaction are recorded.
    #[test]
    fn a_failed_put_leaves_the_rest_of_its_batch_recorded() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(SCHEMA).unwrap();
        conn.execute_batch(
            "CREATE TEMP TRIGGER refuse BEFORE INSERT ON dirs WHEN NEW.path = 'bad'
             BEGIN SELECT RAISE(ABORT, 'refused'); END;",
        )
        .unwrap();
        let batch: Vec<QueuedPut> = [("a.txt", 1), ("bad/b.txt", 2), ("c/c.txt", 3)]
            .into_iter()
            .map(|(path, size)| queued(path, size).0)
            .collect();
        let results = Sql::put_batch(&mut conn, &batch);
        assert!(results[0].is_ok() && results[2].is_ok(), "{results:?}");
        let refused = results[1].as_ref().unwrap_err().to_string();
        assert!(refused.contains("refused"), "{refused}");
        let rows: Vec<String> = conn
            .prepare("SELECT path FROM objects ORDER BY path")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(rows, ["a.txt", "c/c.txt"]);
        let dirs: i64 = conn
            .query_row("SELECT count(*) FROM dirs WHERE path = 'bad'", [], |r| r.get(0))
            .unwrap();
        assert_eq!(dirs, 0);
    }

    /// Puts from many tasks at once, committed in batches, are each
    /// answered and all recorded.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_puts_are_all_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Arc::new(SqliteEngine::open(&dir.path().join("meta.sqlite")).unwrap());
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..400u64 {
            let engine = engine.clone();
            tasks.spawn(async move {
                let (put, _) = queued(&format!("d{}/f{i}.txt", i % 7), i);
                engine.put(&put.volume, &put.path, &put.meta, &Change::default()).await
            });
        }
        while let Some(result) = tasks.join_next().await {
            result.unwrap().unwrap();
        }
        for i in 0..400u64 {
            let meta = engine.get("v", &format!("d{}/f{i}.txt", i % 7)).await.unwrap();
            assert_eq!(meta.expect("recorded").size, i);
        }
        // The queue is not left stuck: a later put is answered too.
        let (put, _) = queued("late.txt", 9);
        engine
            .put(&put.volume, &put.path, &put.meta, &Change::default())
            .await
            .unwrap();
    }
}
