//! The read-ahead budget: room for the records partition readers have taken off librdkafka's
//! queue and the run loop has not taken yet, and the count of what they really hold.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Semaphore;

/// Bytes of records read from librdkafka but not yet taken by the run loop, across
/// partitions (the read-ahead share of `worker.memory_limit`). A reader reserves room for a
/// batch before it takes more than one message off librdkafka's queue (where the fetch-queue
/// share counts them), so a reader waiting for room holds one record of its own at most. A
/// record larger than the whole budget still passes, alone.
#[derive(Debug, Clone)]
pub struct ReadAhead {
    pub(super) permits: Arc<Semaphore>,
    pub(super) bytes: usize,
    /// Batches being prepared at once: one per core. More would only start more threads of
    /// the blocking pool, each with its own allocator arena, for no more throughput.
    pub(super) preparing: Arc<Semaphore>,
    /// What readers hold, counted apart from the permits: from the moment records leave
    /// librdkafka's queue until the run loop drops them.
    pub(super) held: Arc<Held>,
}

/// Bytes of records the readers hold, and the most they ever held at once.
#[derive(Debug, Default)]
pub(super) struct Held {
    now: AtomicUsize,
    peak: AtomicUsize,
}

/// Records taken off librdkafka's queue and not yet dropped by the run loop: counted in
/// [`ReadAhead::peak`] while it lives.
#[derive(Debug)]
pub(super) struct Holding {
    bytes: usize,
    pub(super) held: Arc<Held>,
}

impl Holding {
    pub(super) fn new(held: &Arc<Held>, bytes: usize) -> Self {
        let mut holding = Self {
            bytes: 0,
            held: held.clone(),
        };
        holding.set(bytes);
        holding
    }

    /// Now holding `bytes` instead.
    pub(super) fn set(&mut self, bytes: usize) {
        if bytes >= self.bytes {
            let now = self
                .held
                .now
                .fetch_add(bytes - self.bytes, Ordering::Relaxed)
                + (bytes - self.bytes);
            self.held.peak.fetch_max(now, Ordering::Relaxed);
        } else {
            self.held
                .now
                .fetch_sub(self.bytes - bytes, Ordering::Relaxed);
        }
        self.bytes = bytes;
    }
}

impl Drop for Holding {
    fn drop(&mut self) {
        self.set(0);
    }
}

impl ReadAhead {
    /// A budget of `bytes` (at least one byte), shared by every reader of a consumer.
    pub fn new(bytes: usize) -> Self {
        let bytes = bytes
            .clamp(1, Semaphore::MAX_PERMITS)
            .min(u32::MAX as usize);
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Self {
            permits: Arc::new(Semaphore::new(bytes)),
            bytes,
            preparing: Arc::new(Semaphore::new(cores)),
            held: Arc::default(),
        }
    }

    /// The most bytes of records the readers ever held at once, taken off librdkafka's queue
    /// and not yet dropped by the run loop (as `Prepare::prepare` in `reader` counts them once
    /// prepared).
    pub fn peak(&self) -> usize {
        self.held.peak.load(Ordering::Relaxed)
    }
}
