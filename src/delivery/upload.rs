//! One object PUT with retries: capped exponential backoff with jitter for transient errors,
//! slow retries (or a clean failure in `--once` runs) for errors that need a human.

use std::time::Duration;

use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use crate::store::{ErrorClass, ObjectMetadata, ObjectStore, PutOutcome, StoreError};
use crate::telemetry::DestinationHealth;

/// How hard to try before giving up.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// First backoff; doubles per attempt.
    pub base: Duration,
    /// Longest backoff for transient errors.
    pub cap: Duration,
    /// Backoff between attempts after a permanent error (access denied, missing bucket).
    pub permanent_backoff: Duration,
    /// Give up after this many attempts (`None`: never; a long-running worker never drops data).
    pub max_attempts: Option<u32>,
    /// Give up at once on a permanent error (for `--once` runs, which must end).
    pub fail_fast_on_permanent: bool,
}

impl RetryPolicy {
    /// Long-running worker: retry forever, every `permanent_backoff` for errors that need a
    /// human.
    pub fn forever(permanent_backoff: Duration) -> Self {
        Self {
            base: Duration::from_millis(100),
            cap: Duration::from_secs(30),
            permanent_backoff,
            max_attempts: None,
            fail_fast_on_permanent: false,
        }
    }

    /// `--once`: a bounded number of transient retries, none for permanent errors.
    pub fn bounded() -> Self {
        Self {
            max_attempts: Some(10),
            fail_fast_on_permanent: true,
            cap: Duration::from_secs(10),
            ..Self::forever(Duration::from_secs(60))
        }
    }

    /// The delay before attempt `attempt + 1`: exponential, capped, with equal jitter.
    pub fn backoff(&self, attempt: u32, class: ErrorClass) -> Duration {
        if class == ErrorClass::Permanent {
            return self.permanent_backoff;
        }
        let exp = self.base.saturating_mul(1u32 << attempt.min(20));
        let d = exp.min(self.cap);
        let half = d / 2;
        half + Duration::from_nanos(fastrand::u64(0..=half.as_nanos() as u64))
    }
}

/// Why an upload stopped without success.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error("{error}{}", if *.attempts > 1 { format!(" (gave up after {attempts} attempts)") } else { String::new() })]
    GaveUp {
        error: Box<StoreError>,
        attempts: u32,
    },
    #[error("upload cancelled by shutdown")]
    Cancelled,
}

/// PUTs an object until it exists: `Created` now, or `AlreadyExists` from an earlier attempt.
/// Refusals and successes are reported to the destination's `health`, which pauses or resumes
/// its partitions.
pub async fn put_with_retry(
    store: &dyn ObjectStore,
    key: &str,
    body: Bytes,
    metadata: &ObjectMetadata,
    policy: &RetryPolicy,
    health: &DestinationHealth,
    shutdown: &CancellationToken,
) -> Result<PutOutcome, UploadError> {
    let mut attempt = 0u32;
    let len = body.len() as u64;
    loop {
        let error = match store.put_if_absent(key, body.clone(), metadata).await {
            Ok(outcome) => {
                health.report_success();
                match outcome {
                    PutOutcome::Created => {
                        health.objects_created.inc();
                        health.bytes_uploaded.add(len);
                    }
                    PutOutcome::AlreadyExists => health.objects_existing.inc(),
                }
                return Ok(outcome);
            }
            Err(e) => e,
        };
        match error.class {
            ErrorClass::Transient => health.transient_errors.inc(),
            ErrorClass::Permanent => health.report_permanent(&error),
        }
        attempt += 1;
        let out_of_attempts = policy.max_attempts.is_some_and(|max| attempt >= max);
        let fail_now = error.class == ErrorClass::Permanent && policy.fail_fast_on_permanent;
        if out_of_attempts || fail_now {
            return Err(UploadError::GaveUp {
                error: Box::new(error),
                attempts: attempt,
            });
        }
        let delay = policy.backoff(attempt - 1, error.class);
        match error.class {
            ErrorClass::Transient => {
                tracing::warn!(%error, attempt, delay_ms = delay.as_millis() as u64, "upload failed; retrying")
            }
            ErrorClass::Permanent => tracing::error!(
                destination = health.name(),
                %error,
                attempt,
                delay_s = delay.as_secs(),
                "upload refused by the store; the data is kept, this destination's partitions are \
                 paused, and the upload is retried until this is fixed"
            ),
        }
        tokio::select! {
            () = shutdown.cancelled() => return Err(UploadError::Cancelled),
            () = tokio::time::sleep(delay) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        let p = RetryPolicy::forever(Duration::from_secs(60));
        let d0 = p.backoff(0, ErrorClass::Transient);
        assert!(d0 >= Duration::from_millis(50) && d0 <= Duration::from_millis(100));
        let d30 = p.backoff(30, ErrorClass::Transient);
        assert!(d30 >= p.cap / 2 && d30 <= p.cap);
        assert_eq!(p.backoff(3, ErrorClass::Permanent), p.permanent_backoff);
    }
}
