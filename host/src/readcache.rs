//! A local disk cache of whole files read from an S3 volume, as a CMS's
//! nginx cache in front of S3 would be: bounded in bytes, least recently
//! used out first, unused entries dropped after an inactive time.
//!
//! One file per object version: `<dir>/<k[0..2]>/<k>.<e>`, where `k` is a
//! hash of the key and `e` of the etag, so a changed object never serves
//! its old bytes. Files are filled under `<dir>/tmp` and renamed into place
//! only when complete; on open, `tmp` is emptied and the rest is taken as
//! it is, so the cache survives restarts and crashes. File modification
//! times record last use across restarts. A ranged read that misses
//! fetches the whole file once in the background (as nginx's cache does),
//! so that the next ranges of it (a video's seeks, a resumed download) come
//! from disk.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, ReadBuf};

use crate::metrics::{Metrics, VolumeLabels};
use crate::store::{ByteRange, ByteStream, ObjectMeta, ObjectStore, millis, now_ms};

/// How big the cache may grow and how long unused files stay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadCacheSettings {
    pub max_bytes: u64,
    /// Files not read for this long are dropped.
    pub inactive: Duration,
}

impl ReadCacheSettings {
    /// Files larger than this share of the cache are not cached, so that
    /// one big download does not flush everything else.
    fn max_file_bytes(&self) -> u64 {
        self.max_bytes / 8
    }
}

/// Last-use times are written to disk at most this often per file.
const TOUCH_EVERY: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
struct Item {
    /// Hash of the etag the file holds.
    version: String,
    size: u64,
    /// Milliseconds since the epoch.
    used_ms: u64,
    touched_ms: u64,
}

#[derive(Default)]
struct State {
    /// By hash of the key: one version per key.
    items: HashMap<String, Item>,
    bytes: u64,
    /// Keys (hashed) being fetched whole in the background.
    fetching: HashSet<String>,
}

/// One volume's disk read cache.
pub struct ReadCache {
    dir: PathBuf,
    settings: ReadCacheSettings,
    state: Mutex<State>,
    volume: String,
    metrics: Arc<Metrics>,
}

fn hash(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

impl ReadCache {
    /// Open (or create) the cache in `dir`, taking in what a previous run
    /// left there.
    pub fn open(dir: &Path, settings: ReadCacheSettings, volume: &str, metrics: Arc<Metrics>) -> std::io::Result<Self> {
        let tmp = dir.join("tmp");
        if tmp.exists() {
            fs::remove_dir_all(&tmp)?;
        }
        fs::create_dir_all(&tmp)?;
        let mut state = State::default();
        for shard in fs::read_dir(dir)? {
            let shard = shard?;
            if shard.file_name() == "tmp" || !shard.file_type()?.is_dir() {
                continue;
            }
            for file in fs::read_dir(shard.path())? {
                let file = file?;
                let name = file.file_name().to_string_lossy().into_owned();
                let meta = file.metadata()?;
                let Some((key, version)) = name.split_once('.') else {
                    fs::remove_file(file.path())?;
                    continue;
                };
                let used_ms = meta.modified().map_or(0, millis);
                let item = Item {
                    version: version.to_owned(),
                    size: meta.len(),
                    used_ms,
                    touched_ms: used_ms,
                };
                // Two versions of one key (a crash between fill and cleanup):
                // keep the newer.
                if let Some(old) = state.items.get(key) {
                    if old.used_ms >= used_ms {
                        fs::remove_file(file.path())?;
                        continue;
                    }
                    let old = state.items.remove(key).expect("just seen");
                    state.bytes -= old.size;
                    let _ = fs::remove_file(Self::file_in(dir, key, &old.version));
                }
                state.bytes += item.size;
                state.items.insert(key.to_owned(), item);
            }
        }
        let cache = ReadCache {
            dir: dir.to_owned(),
            settings,
            state: Mutex::new(state),
            volume: volume.to_owned(),
            metrics,
        };
        cache.trim(&mut cache.lock(), now_ms());
        Ok(cache)
    }

    pub fn settings(&self) -> ReadCacheSettings {
        self.settings
    }

    /// Bytes held now.
    pub fn bytes(&self) -> u64 {
        self.lock().bytes
    }

    /// Files held now.
    pub fn files(&self) -> usize {
        self.lock().items.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn file_in(dir: &Path, key: &str, version: &str) -> PathBuf {
        dir.join(&key[..2]).join(format!("{key}.{version}"))
    }

    /// The cached content of `key` at the version `meta` describes.
    pub async fn get(&self, key: &str, meta: &ObjectMeta, range: Option<ByteRange>) -> Option<ByteStream> {
        let (k, version) = (hash(key), hash(&meta.etag));
        let now = now_ms();
        let touch = {
            let mut state = self.lock();
            let item = state.items.get_mut(&k)?;
            if item.version != version || item.size != meta.size {
                return None;
            }
            if now.saturating_sub(item.used_ms) > self.settings.inactive.as_millis() as u64 {
                self.drop_item(&mut state, &k);
                return None;
            }
            item.used_ms = now;
            let touch = now.saturating_sub(item.touched_ms) > TOUCH_EVERY.as_millis() as u64;
            if touch {
                item.touched_ms = now;
            }
            touch
        };
        let path = Self::file_in(&self.dir, &k, &version);
        let opened = tokio::task::spawn_blocking(move || -> std::io::Result<fs::File> {
            use std::io::{Seek, SeekFrom};
            let mut file = fs::File::open(&path)?;
            if touch {
                file.set_modified(SystemTime::now())?;
            }
            if let Some(r) = range {
                file.seek(SeekFrom::Start(r.offset))?;
            }
            Ok(file)
        })
        .await;
        match opened {
            Ok(Ok(file)) => {
                use tokio::io::AsyncReadExt;
                let file = tokio::fs::File::from_std(file);
                Some(match range {
                    Some(r) => Box::pin(file.take(r.length)),
                    None => Box::pin(file),
                })
            }
            _ => {
                // Removed behind Silo's back.
                self.drop_item(&mut self.lock(), &k);
                None
            }
        }
    }

    /// Pass `body` (the whole object `meta` describes) through, keeping a
    /// copy that enters the cache once the last byte has been read.
    pub fn fill(self: &Arc<Self>, key: &str, meta: &ObjectMeta, body: ByteStream) -> ByteStream {
        if meta.size > self.settings.max_file_bytes() {
            return body;
        }
        let Ok(file) = tempfile::NamedTempFile::new_in(self.dir.join("tmp")) else {
            return body;
        };
        Box::pin(Filling {
            body,
            file: Some(file),
            cache: self.clone(),
            key: hash(key),
            version: hash(&meta.etag),
            expected: meta.size,
            seen: 0,
        })
    }

    /// After a ranged miss: fetch the whole of `key` from `store` in the
    /// background, once however many ranges miss meanwhile, and keep it if
    /// it is still the version `meta` describes.
    pub fn fill_behind(self: &Arc<Self>, key: &str, meta: &ObjectMeta, store: Arc<dyn ObjectStore>) {
        if meta.size > self.settings.max_file_bytes() {
            return;
        }
        let k = hash(key);
        if !self.lock().fetching.insert(k.clone()) {
            return;
        }
        let (cache, key, etag) = (self.clone(), key.to_owned(), meta.etag.clone());
        tokio::spawn(async move {
            if let Ok((meta, body)) = store.get(&key, None).await
                && meta.etag == etag
            {
                let mut body = cache.fill(&key, &meta, body);
                let _ = tokio::io::copy(&mut body, &mut tokio::io::sink()).await;
            }
            cache.lock().fetching.remove(&k);
        });
    }

    /// Drop whatever is cached for `key` (it was overwritten or deleted).
    pub fn forget(&self, key: &str) {
        let mut state = self.lock();
        self.drop_item(&mut state, &hash(key));
    }

    fn drop_item(&self, state: &mut State, key: &str) {
        if let Some(old) = state.items.remove(key) {
            state.bytes -= old.size;
            let _ = fs::remove_file(Self::file_in(&self.dir, key, &old.version));
        }
        self.publish(state);
    }

    fn publish(&self, state: &State) {
        self.metrics
            .read_cache_bytes
            .get_or_create(&VolumeLabels {
                volume: self.volume.clone(),
            })
            .set(state.bytes as i64);
    }

    /// Move a completely filled file into place.
    fn admit(&self, key: String, version: String, file: tempfile::NamedTempFile, size: u64) {
        let shard = self.dir.join(&key[..2]);
        if fs::create_dir_all(&shard).is_err() {
            return;
        }
        let path = Self::file_in(&self.dir, &key, &version);
        let mut state = self.lock();
        if file.persist(&path).is_err() {
            return;
        }
        if let Some(old) = state.items.remove(&key) {
            state.bytes -= old.size;
            if old.version != version {
                let _ = fs::remove_file(Self::file_in(&self.dir, &key, &old.version));
            }
        }
        let now = now_ms();
        state.bytes += size;
        state.items.insert(
            key,
            Item {
                version,
                size,
                used_ms: now,
                touched_ms: now,
            },
        );
        self.trim(&mut state, now);
    }

    /// Drop inactive files, then the least recently used until the cache
    /// fits (with a tenth to spare, so that trimming is not constant).
    fn trim(&self, state: &mut State, now: u64) {
        let cutoff = now.saturating_sub(self.settings.inactive.as_millis() as u64);
        let mut victims: Vec<(u64, String)> = state
            .items
            .iter()
            .filter(|(_, i)| i.used_ms < cutoff)
            .map(|(k, i)| (i.used_ms, k.clone()))
            .collect();
        if state.bytes > self.settings.max_bytes {
            let goal = self.settings.max_bytes - self.settings.max_bytes / 10;
            let mut by_use: Vec<(u64, String, u64)> = state
                .items
                .iter()
                .filter(|(_, i)| i.used_ms >= cutoff)
                .map(|(k, i)| (i.used_ms, k.clone(), i.size))
                .collect();
            by_use.sort_unstable();
            let mut bytes: u64 = state.bytes - victims.iter().map(|(_, k)| state.items[k].size).sum::<u64>();
            for (used, key, size) in by_use {
                if bytes <= goal {
                    break;
                }
                bytes -= size;
                victims.push((used, key));
            }
        }
        for (_, key) in victims {
            if let Some(old) = state.items.remove(&key) {
                state.bytes -= old.size;
                let _ = fs::remove_file(Self::file_in(&self.dir, &key, &old.version));
            }
        }
        self.publish(state);
    }
}

/// A body being read from S3 and copied into the cache on the way.
struct Filling {
    body: ByteStream,
    /// `None` once the copy was given up or handed to the cache.
    file: Option<tempfile::NamedTempFile>,
    cache: Arc<ReadCache>,
    key: String,
    version: String,
    expected: u64,
    seen: u64,
}

impl AsyncRead for Filling {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = self.body.as_mut().poll_read(cx, buf);
        let this = &mut *self;
        match &result {
            Poll::Ready(Ok(())) => {
                let chunk = &buf.filled()[before..];
                this.seen += chunk.len() as u64;
                // Small local writes into the page cache; a failure only
                // gives up the copy, never the read.
                if let Some(file) = &mut this.file
                    && (this.seen > this.expected || file.write_all(chunk).is_err())
                {
                    this.file = None;
                }
                // Complete: admit it now, as an HTTP server stops reading a
                // body at its Content-Length, before the end-of-stream.
                if this.seen == this.expected
                    && let Some(file) = this.file.take()
                {
                    this.cache
                        .admit(this.key.clone(), this.version.clone(), file, this.seen);
                }
            }
            Poll::Ready(Err(_)) => this.file = None,
            Poll::Pending => {}
        }
        result
    }
}
