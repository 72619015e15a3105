//! One process-wide budget for the bytes streamed writes hold in memory
//! (the guest's stream buffer, an S3 upload's part being filled and its
//! parts in flight). Every buffered byte is reserved here before it is
//! kept; when the budget is spent, writers wait for bytes to be released
//! (a part sent, a write finished or dropped) instead of allocating more.
//!
//! Progress is certain, not hoped for: a writer never waits while it holds
//! bytes that only its own progress would release. An S3 upload reserves a
//! whole part at once before it buffers any of it (so a holder can always
//! finish the part it started), and waiters are served first come, first
//! served (tokio's semaphore is fair, large requests included). A wait
//! longer than the budget's limit ends in [`StorageError::Busy`], never in
//! a hang; a plugin's wait also counts against its time limit.
//!
//! A guest's buffered chunk is handed to the upload with its reservation:
//! a backend that writes it out at once lets it go when written; an S3
//! writer lets it go before reserving its whole part, so that it never
//! waits while holding room.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::{StorageError, StorageResult};

/// Default process-wide budget, MiB (`[limits] write_buffer_mib`).
pub const DEFAULT_WRITE_BUFFER_MIB: u64 = 256;
/// Default longest wait for room in the budget (`[limits] write_wait_secs`).
pub const DEFAULT_WRITE_WAIT: Duration = Duration::from_secs(30);

/// The shared budget.
#[derive(Debug, Clone)]
pub struct WriteBudget {
    permits: Arc<Semaphore>,
    bytes: usize,
    wait: Duration,
    progress: Arc<Progress>,
    /// What a `busy` answer says is full.
    what: Arc<str>,
}

/// What readiness asks of a budget: are writers waiting, and since when
/// has none been served.
#[derive(Debug)]
struct Progress {
    start: Instant,
    waiting: AtomicUsize,
    /// Milliseconds after `start` of the last reservation granted.
    last_grant_ms: AtomicU64,
}

/// Bytes reserved from the node's write budget (`limits.write_buffer_mib`);
/// released when dropped.
#[derive(Debug, Default)]
pub struct Held {
    permit: Option<OwnedSemaphorePermit>,
}

impl WriteBudget {
    /// A budget of `bytes` (at least 1), whose waits end after
    /// [`DEFAULT_WRITE_WAIT`].
    pub fn new(bytes: usize) -> Self {
        let bytes = bytes.clamp(1, Semaphore::MAX_PERMITS);
        WriteBudget {
            permits: Arc::new(Semaphore::new(bytes)),
            bytes,
            wait: DEFAULT_WRITE_WAIT,
            progress: Arc::new(Progress {
                start: Instant::now(),
                waiting: AtomicUsize::new(0),
                last_grant_ms: AtomicU64::new(0),
            }),
            what: format!("the write buffer budget ({} MiB)", bytes >> 20).into(),
        }
    }

    /// `n` places (uploads under way, …), taken one at a time: `what`
    /// names them in a `busy` answer.
    pub fn places(n: usize, what: &str) -> Self {
        let mut places = WriteBudget::new(n);
        places.what = format!("{what} ({n})").into();
        places
    }

    /// Waits for room end in `busy` after `wait`.
    pub fn with_wait(mut self, wait: Duration) -> Self {
        self.wait = wait;
        self
    }

    /// The budget's size in bytes.
    #[cfg_attr(not(feature = "internals"), allow(dead_code))] // tests and benchmarks
    pub fn size(&self) -> usize {
        self.bytes
    }

    /// Bytes not reserved right now.
    pub fn available(&self) -> usize {
        self.permits.available_permits()
    }

    /// Writers waiting for room right now.
    pub fn waiting(&self) -> usize {
        self.progress.waiting.load(Ordering::Relaxed)
    }

    /// Changes whenever a reservation is granted (a marker of activity).
    pub fn granted_marker(&self) -> u64 {
        self.progress.last_grant_ms.load(Ordering::Relaxed)
    }

    /// Whether nothing is reserved.
    pub fn idle(&self) -> bool {
        self.available() == self.bytes
    }

    /// How long the budget has been spent, or had writers waiting, with
    /// none served; `None` while it has room and nobody waits.
    pub fn stalled_for(&self) -> Option<Duration> {
        if self.waiting() == 0 && self.available() > 0 {
            return None;
        }
        let last = Duration::from_millis(self.progress.last_grant_ms.load(Ordering::Relaxed));
        Some(self.progress.start.elapsed().saturating_sub(last))
    }

    /// Reserve `bytes`, waiting in turn until that much is free, at most
    /// the budget's wait: past it, `busy`. A request larger than the whole
    /// budget is cut to the budget, so it waits for an idle host instead
    /// of forever.
    pub async fn reserve(&self, bytes: usize) -> StorageResult<Held> {
        let bytes = bytes.min(self.bytes);
        if bytes == 0 {
            return Ok(Held::default());
        }
        let n = u32::try_from(bytes).unwrap_or(u32::MAX);
        let granted = |permit| {
            let ms = self.progress.start.elapsed().as_millis() as u64;
            self.progress.last_grant_ms.fetch_max(ms, Ordering::Relaxed);
            Held { permit: Some(permit) }
        };
        if let Ok(permit) = self.permits.clone().try_acquire_many_owned(n) {
            return Ok(granted(permit));
        }
        self.progress.waiting.fetch_add(1, Ordering::Relaxed);
        let waited = tokio::time::timeout(self.wait, self.permits.clone().acquire_many_owned(n)).await;
        self.progress.waiting.fetch_sub(1, Ordering::Relaxed);
        match waited {
            // The semaphore is never closed.
            Ok(permit) => Ok(granted(permit.expect("the write budget is never closed"))),
            Err(_) => Err(StorageError::Busy(format!(
                "no room in {} within {}s; retry later",
                self.what,
                self.wait.as_secs_f64()
            ))),
        }
    }
}

impl Held {
    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.permit.as_ref().map_or(0, OwnedSemaphorePermit::num_permits)
    }

    /// Take over `other`'s bytes.
    pub fn merge(&mut self, other: Held) {
        match (&mut self.permit, other.permit) {
            (Some(mine), Some(theirs)) => mine.merge(theirs),
            (mine @ None, theirs) => *mine = theirs,
            (Some(_), None) => {}
        }
    }

    /// Split off up to `bytes` into a reservation of their own.
    pub fn split(&mut self, bytes: usize) -> Held {
        let bytes = bytes.min(self.bytes());
        if bytes == 0 {
            return Held::default();
        }
        if bytes == self.bytes() {
            return std::mem::take(self);
        }
        Held {
            permit: self.permit.as_mut().and_then(|p| p.split(bytes)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reservations_wait_for_released_bytes_and_travel_with_them() {
        let budget = WriteBudget::new(100);
        let mut a = budget.reserve(60).await.unwrap();
        let b = budget.reserve(40).await.unwrap();
        assert_eq!(budget.available(), 0);
        let waiting = tokio::spawn({
            let budget = budget.clone();
            async move { budget.reserve(30).await.unwrap().bytes() }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        a.merge(b);
        assert_eq!(a.bytes(), 100);
        let part = a.split(30);
        assert_eq!((part.bytes(), a.bytes()), (30, 70));
        drop(part);
        assert_eq!(waiting.await.unwrap(), 30);
        drop(a);
        assert_eq!(budget.available(), 100);
        // More than the whole budget waits for all of it, not forever.
        assert_eq!(budget.reserve(1000).await.unwrap().bytes(), 100);
    }

    #[tokio::test]
    async fn a_wait_past_the_limit_is_busy_and_shows_as_a_stall() {
        let budget = WriteBudget::new(100).with_wait(Duration::from_millis(600));
        assert_eq!(budget.stalled_for(), None);
        let all = budget.reserve(100).await.unwrap();
        let waiting = tokio::spawn({
            let budget = budget.clone();
            async move { budget.reserve(1).await }
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(budget.waiting(), 1);
        assert!(budget.stalled_for().unwrap() >= Duration::from_millis(300));
        match waiting.await.unwrap() {
            Err(StorageError::Busy(why)) => assert!(why.contains("within 0.6s"), "{why}"),
            other => panic!("expected busy, got {other:?}"),
        }
        // Still spent, with nobody served since.
        assert!(budget.stalled_for().unwrap() >= Duration::from_millis(600));
        drop(all);
        assert_eq!(budget.stalled_for(), None);
        assert_eq!(budget.reserve(100).await.unwrap().bytes(), 100);
    }

    /// Waiters are served in turn: a large request at the head is not
    /// starved by small ones arriving after it.
    #[tokio::test]
    async fn waiters_are_served_in_the_order_they_came() {
        let budget = WriteBudget::new(100);
        let first = budget.reserve(50).await.unwrap();
        let big = tokio::spawn({
            let budget = budget.clone();
            async move { budget.reserve(100).await.unwrap().bytes() }
        });
        tokio::task::yield_now().await;
        // 50 bytes are free, but the big request came first.
        let small = tokio::spawn({
            let budget = budget.clone();
            async move { budget.reserve(10).await.unwrap().bytes() }
        });
        tokio::task::yield_now().await;
        assert!(!small.is_finished());
        drop(first);
        assert_eq!(big.await.unwrap(), 100);
        assert_eq!(small.await.unwrap(), 10);
    }
}
