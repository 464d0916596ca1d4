//! The clock the credential refresher reads: the system clock in production, and a clock that
//! tests move forward so a refresh schedule of many minutes runs in seconds against a real STS.

use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use tokio::sync::Notify;

use crate::store::BoxFuture;

/// Wall-clock time and waiting on it.
pub trait Clock: Send + Sync + fmt::Debug {
    /// The current time by this clock.
    fn now(&self) -> SystemTime;

    /// Resolves once this clock reads `at` or later — or earlier, when the clock is moved, so
    /// callers re-check `now()` after it resolves.
    fn sleep_until(&self, at: SystemTime) -> BoxFuture<'_, ()>;
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }

    fn sleep_until(&self, at: SystemTime) -> BoxFuture<'_, ()> {
        let wait = at.duration_since(SystemTime::now()).unwrap_or_default();
        Box::pin(tokio::time::sleep(wait))
    }
}

/// The system clock plus an offset that only grows: it runs at real speed and jumps forward
/// when [`ShiftedClock::advance`] is called, waking every sleeper so it re-reads the time.
#[derive(Debug, Default)]
pub struct ShiftedClock {
    offset: Mutex<Duration>,
    moved: Notify,
}

impl ShiftedClock {
    /// A clock reading the system time.
    pub fn new() -> Self {
        Self::default()
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        *self.offset.lock().unwrap_or_else(|p| p.into_inner()) += by;
        self.moved.notify_waiters();
    }

    fn offset(&self) -> Duration {
        *self.offset.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Clock for ShiftedClock {
    fn now(&self) -> SystemTime {
        SystemTime::now() + self.offset()
    }

    fn sleep_until(&self, at: SystemTime) -> BoxFuture<'_, ()> {
        // Registered before the time is read, so an advance in between is not missed.
        let moved = self.moved.notified();
        let wait = at.duration_since(self.now()).unwrap_or_default();
        Box::pin(async move {
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = moved => {}
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_advance_wakes_a_sleeper_and_moves_now() {
        let clock = std::sync::Arc::new(ShiftedClock::new());
        let target = clock.now() + Duration::from_secs(3600);
        let sleeper = {
            let clock = clock.clone();
            tokio::spawn(async move {
                while clock.now() < target {
                    clock.sleep_until(target).await;
                }
            })
        };
        tokio::task::yield_now().await;
        clock.advance(Duration::from_secs(3601));
        tokio::time::timeout(Duration::from_secs(10), sleeper)
            .await
            .expect("the sleeper was not woken by the advance")
            .expect("the sleeper panicked");
        assert!(clock.now() >= target);
    }
}
