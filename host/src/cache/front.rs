//! Hot rows of this node, in front of the engine, so that a cached stat
//! costs a hash lookup, not a database call. A miss is kept too (a stat
//! of a file that is not there is as common as one that is).
//!
//! Every change this node makes drops the row it touched (after the engine
//! has it); a shared engine announces other nodes' changes, which drop
//! theirs ([`super::FrontSink`]). Every row also expires [`FRONT_TTL`]
//! after it was read, which bounds how long a change stays unseen if an
//! announcement is lost (or, on SQLite, when another process wrote the
//! file). A read that started before a change never puts its (possibly
//! older) row back: rows are only taken in under the generation they were
//! read in. While a shared engine's announcements are off, nothing is kept.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::store::ObjectMeta;

/// How long a row is served without asking the engine again.
pub const FRONT_TTL: Duration = Duration::from_secs(1);
/// Rows kept at most (across volumes).
pub const FRONT_CAPACITY: usize = 100_000;

/// Rows (or misses, `None`) by volume, then path, with when they were read.
type Rows = HashMap<String, HashMap<String, (Option<ObjectMeta>, Instant)>>;

pub(super) struct FrontCache {
    /// Rows by volume, then path (so a lookup borrows, never allocates).
    rows: Mutex<Rows>,
    len: AtomicU64,
    /// Bumped by every change; a read taken in under an older one is stale.
    generation: AtomicU64,
    capacity: usize,
    ttl: Duration,
    /// Whether changes elsewhere are being announced (always, for an
    /// engine no other node shares).
    listening: AtomicBool,
}

impl FrontCache {
    pub(super) fn new(capacity: usize, ttl: Duration, listening: bool) -> Self {
        FrontCache {
            rows: Mutex::default(),
            len: AtomicU64::new(0),
            generation: AtomicU64::new(0),
            capacity,
            ttl,
            listening: AtomicBool::new(listening),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Rows> {
        self.rows.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `Some(None)`: known to have no row (a miss is kept like a row).
    pub(super) fn get(&self, volume: &str, path: &str) -> Option<Option<ObjectMeta>> {
        let rows = self.lock();
        let (meta, at) = rows.get(volume)?.get(path)?;
        (at.elapsed() < self.ttl).then(|| meta.clone())
    }

    /// The generation to read a row from the engine in.
    pub(super) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Keep a row read from the engine in `generation`, unless something
    /// changed since.
    pub(super) fn insert(&self, generation: u64, volume: &str, path: &str, meta: Option<&ObjectMeta>) {
        if self.capacity == 0 || !self.listening.load(Ordering::Acquire) {
            return;
        }
        let mut rows = self.lock();
        if self.generation.load(Ordering::Acquire) != generation {
            return;
        }
        if self.len.load(Ordering::Relaxed) as usize >= self.capacity {
            let ttl = self.ttl;
            rows.values_mut()
                .for_each(|paths| paths.retain(|_, (_, at)| at.elapsed() < ttl));
            rows.retain(|_, paths| !paths.is_empty());
            let left: usize = rows.values().map(HashMap::len).sum();
            if left >= self.capacity {
                rows.clear();
            }
            self.len
                .store(rows.values().map(HashMap::len).sum::<usize>() as u64, Ordering::Relaxed);
        }
        let paths = match rows.get_mut(volume) {
            Some(paths) => paths,
            None => rows.entry(volume.to_owned()).or_default(),
        };
        if paths.insert(path.to_owned(), (meta.cloned(), Instant::now())).is_none() {
            self.len.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Drop one row: it changed.
    pub(super) fn forget(&self, volume: &str, path: &str) {
        let mut rows = self.lock();
        self.generation.fetch_add(1, Ordering::AcqRel);
        if let Some(paths) = rows.get_mut(volume)
            && paths.remove(path).is_some()
        {
            self.len.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Drop every row of a volume (a refresh swapped it).
    pub(super) fn forget_volume(&self, volume: &str) {
        let mut rows = self.lock();
        self.generation.fetch_add(1, Ordering::AcqRel);
        if let Some(paths) = rows.remove(volume) {
            self.len.fetch_sub(paths.len() as u64, Ordering::Relaxed);
        }
    }

    /// Announcements of changes elsewhere started or stopped; when they
    /// stop, some may have been lost, so every row goes.
    pub(super) fn set_listening(&self, on: bool) {
        self.listening.store(on, Ordering::Release);
        self.clear();
    }

    /// Drop every row.
    pub(super) fn clear(&self) {
        let mut rows = self.lock();
        self.generation.fetch_add(1, Ordering::AcqRel);
        rows.clear();
        self.len.store(0, Ordering::Relaxed);
    }
}

impl super::FrontSink for FrontCache {
    fn forget(&self, volume: &str, path: &str) {
        FrontCache::forget(self, volume, path);
    }

    fn forget_volume(&self, volume: &str) {
        FrontCache::forget_volume(self, volume);
    }

    fn forget_all(&self) {
        self.clear();
    }

    fn listening(&self, on: bool) {
        self.set_listening(on);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(etag: &str) -> ObjectMeta {
        ObjectMeta {
            size: 1,
            etag: etag.into(),
            content_type: "text/plain".into(),
            modified_ms: 0,
            cache_control: None,
            metadata: Vec::new(),
            headers: Default::default(),
        }
    }

    #[test]
    fn a_read_from_before_a_change_is_not_taken_in() {
        let front = FrontCache::new(10, Duration::from_secs(60), true);
        let before = front.generation();
        front.forget("v", "a");
        front.insert(before, "v", "a", Some(&meta("old")));
        assert_eq!(front.get("v", "a"), None);
        front.insert(front.generation(), "v", "a", Some(&meta("new")));
        assert_eq!(front.get("v", "a").flatten().map(|m| m.etag), Some("new".into()));
        // Announcements lost: nothing is kept until they are back.
        front.set_listening(false);
        assert_eq!(front.get("v", "a"), None);
        front.insert(front.generation(), "v", "a", Some(&meta("new")));
        assert_eq!(front.get("v", "a"), None);
        front.set_listening(true);
        front.insert(front.generation(), "v", "a", Some(&meta("new")));
        assert!(front.get("v", "a").is_some());
        front.forget_volume("v");
        assert_eq!(front.get("v", "a"), None);
        // A miss is kept, and dropped by a change like a row.
        front.insert(front.generation(), "v", "gone", None);
        assert_eq!(front.get("v", "gone"), Some(None));
        front.forget("v", "gone");
        assert_eq!(front.get("v", "gone"), None);
    }

    #[test]
    fn rows_expire_and_the_capacity_holds() {
        let front = FrontCache::new(3, Duration::from_millis(30), true);
        for i in 0..10 {
            front.insert(front.generation(), "v", &i.to_string(), Some(&meta("e")));
            assert!(front.len.load(Ordering::Relaxed) <= 3);
        }
        assert!(front.get("v", "9").is_some());
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(front.get("v", "9"), None);
    }
}
