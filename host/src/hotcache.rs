//! Small files read often, kept in this node's memory, as a static file
//! server keeps them in the page cache: a read served from here costs no
//! backend request, no file I/O and no copy (the bytes are shared).
//!
//! An entry holds the etag it was read at, and a read asks for the etag
//! the metadata cache gives it, so a file changed anywhere never serves
//! its old bytes; every change this node makes also drops the entry at
//! once. Bounded in bytes, least recently used out first.

use std::sync::Mutex;

use bytes::Bytes;
use lru::LruCache;

/// Largest file kept: thumbnails, variants, small images and documents.
pub const MAX_ENTRY: u64 = 256 * 1024;
/// Default bound, MiB (`[limits] memory_cache_mib`).
pub const DEFAULT_MEMORY_CACHE_MIB: u64 = 64;

pub struct HotCache {
    max_bytes: u64,
    inner: Mutex<Inner>,
}

struct Inner {
    /// By `volume NUL path` (no path holds a NUL).
    entries: LruCache<String, (String, Bytes)>,
    bytes: u64,
}

fn key(volume: &str, path: &str) -> String {
    let mut key = String::with_capacity(volume.len() + path.len() + 1);
    key.push_str(volume);
    key.push('\0');
    key.push_str(path);
    key
}

impl HotCache {
    /// A cache of at most `max_bytes`; `None` for 0 (off).
    pub fn new(max_bytes: u64) -> Option<Self> {
        (max_bytes > 0).then(|| HotCache {
            max_bytes,
            inner: Mutex::new(Inner {
                entries: LruCache::unbounded(),
                bytes: 0,
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a file of `size` bytes is kept: small, and no more than an
    /// eighth of the cache, so that a few files cannot flush the rest.
    pub fn admits(&self, size: u64) -> bool {
        size <= MAX_ENTRY.min(self.max_bytes / 8)
    }

    /// The bytes of `volume`/`path` at `etag`, if held.
    pub fn get(&self, volume: &str, path: &str, etag: &str, size: u64) -> Option<Bytes> {
        let mut inner = self.lock();
        let (held, bytes) = inner.entries.get(key(volume, path).as_str())?;
        (held == etag && bytes.len() as u64 == size).then(|| bytes.clone())
    }

    /// Keep `bytes` as `volume`/`path` at `etag`.
    pub fn insert(&self, volume: &str, path: &str, etag: &str, bytes: Bytes) {
        if !self.admits(bytes.len() as u64) {
            return;
        }
        let mut inner = self.lock();
        inner.bytes += bytes.len() as u64;
        if let Some((_, (_, old))) = inner.entries.push(key(volume, path), (etag.to_owned(), bytes)) {
            inner.bytes -= old.len() as u64;
        }
        while inner.bytes > self.max_bytes {
            match inner.entries.pop_lru() {
                Some((_, (_, old))) => inner.bytes -= old.len() as u64,
                None => break,
            }
        }
    }

    /// Drop `volume`/`path` (it changed).
    pub fn forget(&self, volume: &str, path: &str) {
        let mut inner = self.lock();
        if let Some((_, old)) = inner.entries.pop(key(volume, path).as_str()) {
            inner.bytes -= old.len() as u64;
        }
    }

    /// Bytes held.
    #[cfg_attr(not(feature = "internals"), allow(dead_code))] // tests and benchmarks
    pub fn bytes(&self) -> u64 {
        self.lock().bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_in_bytes_and_keyed_by_etag() {
        let cache = HotCache::new(8 * 1000).unwrap();
        assert!(cache.admits(1000) && !cache.admits(1001));
        for i in 0..10 {
            cache.insert("v", &format!("f{i}"), "e1", Bytes::from(vec![i as u8; 1000]));
        }
        // The two least recently used went.
        assert_eq!(cache.bytes(), 8000);
        assert!(cache.get("v", "f0", "e1", 1000).is_none());
        assert!(cache.get("v", "f1", "e1", 1000).is_none());
        assert_eq!(cache.get("v", "f9", "e1", 1000).unwrap()[0], 9);
        // Another etag (or size) is another version: not served.
        assert!(cache.get("v", "f9", "e2", 1000).is_none());
        assert!(cache.get("v", "f9", "e1", 999).is_none());
        // A replaced entry counts once.
        cache.insert("v", "f9", "e2", Bytes::from(vec![1; 500]));
        assert_eq!(cache.bytes(), 7500);
        assert_eq!(cache.get("v", "f9", "e2", 500).unwrap().len(), 500);
        cache.forget("v", "f9");
        assert!(cache.get("v", "f9", "e2", 500).is_none());
        assert_eq!(cache.bytes(), 7000);
        // Another volume's file of the same path is another file.
        cache.insert("w", "f8", "e1", Bytes::from(vec![7; 10]));
        assert_eq!(cache.get("v", "f8", "e1", 1000).unwrap()[0], 8);
        assert!(HotCache::new(0).is_none());
    }
}
