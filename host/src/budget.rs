//! One process-wide budget for the bytes streamed writes hold in memory
//! (the guest's stream buffer, an S3 upload's part being filled and its
//! parts in flight). Every buffered byte is reserved here before it is
//! kept; when the budget is spent, writers wait for bytes to be released
//! (a part sent, a write finished or dropped) instead of allocating more.
//! A plugin's wait counts against its time limit, so a hostile plugin
//! holding buffers delays others at most until it is stopped.
//!
//! Reservations travel with the bytes: a guest's buffered chunk is handed
//! to the upload with its reservation, so nothing is reserved twice and no
//! holder waits for bytes that only it could release.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Default process-wide budget, MiB (`[limits] write_buffer_mib`).
pub const DEFAULT_WRITE_BUFFER_MIB: u64 = 256;

/// The shared budget.
#[derive(Debug, Clone)]
pub struct WriteBudget {
    permits: Arc<Semaphore>,
    bytes: usize,
}

/// Bytes reserved from a [`WriteBudget`]; released when dropped.
#[derive(Debug, Default)]
pub struct Held {
    permit: Option<OwnedSemaphorePermit>,
}

impl WriteBudget {
    /// A budget of `bytes` (at least 1).
    pub fn new(bytes: usize) -> Self {
        let bytes = bytes.clamp(1, Semaphore::MAX_PERMITS);
        WriteBudget {
            permits: Arc::new(Semaphore::new(bytes)),
            bytes,
        }
    }

    /// The budget's size in bytes.
    pub fn size(&self) -> usize {
        self.bytes
    }

    /// Bytes not reserved right now.
    pub fn available(&self) -> usize {
        self.permits.available_permits()
    }

    /// Reserve `bytes`, waiting until that much is free. A request larger
    /// than the whole budget is cut to the budget, so it waits for an idle
    /// host instead of forever.
    pub async fn reserve(&self, bytes: usize) -> Held {
        let bytes = bytes.min(self.bytes);
        if bytes == 0 {
            return Held::default();
        }
        let n = u32::try_from(bytes).unwrap_or(u32::MAX);
        // The semaphore is never closed, so acquiring cannot fail.
        let permit = self
            .permits
            .clone()
            .acquire_many_owned(n)
            .await
            .expect("the write budget is never closed");
        Held { permit: Some(permit) }
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
        let mut a = budget.reserve(60).await;
        let b = budget.reserve(40).await;
        assert_eq!(budget.available(), 0);
        let waiting = tokio::spawn({
            let budget = budget.clone();
            async move { budget.reserve(30).await.bytes() }
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
        assert_eq!(budget.reserve(1000).await.bytes(), 100);
    }
}
