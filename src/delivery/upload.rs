//! One object PUT with retries: capped exponential backoff with jitter for transient errors,
//! slow retries (or a clean failure in `--once` runs) for errors that need a human.

use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Semaphore;
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

/// How uploads to one destination are retried and reported.
#[derive(Debug, Clone, Copy)]
pub struct RetryContext<'a> {
    pub policy: &'a RetryPolicy,
    /// Refusals and successes go here; it pauses or resumes the destination's partitions.
    pub health: &'a DestinationHealth,
    /// The worker-wide upload limit: each attempt holds one slot.
    pub slots: &'a Semaphore,
    pub shutdown: &'a CancellationToken,
}

/// Failed attempts at one object after which a transient error marks its destination failing.
const TRANSIENT_FAILURES_BEFORE_FAILING: u32 = 3;

/// PUTs an object until it exists: `Created` now, or `AlreadyExists` from an earlier attempt.
/// Each attempt holds an upload slot and gives it back while it waits to retry, so a
/// destination whose store refuses does not hold up the others.
pub async fn put_with_retry(
    store: &dyn ObjectStore,
    key: &str,
    body: Bytes,
    metadata: &ObjectMetadata,
    cx: RetryContext<'_>,
) -> Result<PutOutcome, UploadError> {
    let len = body.len() as u64;
    let outcome = with_retry(cx, || store.put_if_absent(key, body.clone(), metadata)).await?;
    count_outcome(cx.health, outcome, len, len);
    Ok(outcome)
}

/// Counts a written object of `size` bytes on its destination; `uploaded` of them went up in
/// the request that completed it (the parts before it were counted as they went).
pub fn count_outcome(health: &DestinationHealth, outcome: PutOutcome, uploaded: u64, size: u64) {
    match outcome {
        PutOutcome::Created => {
            health.objects_created.inc();
            health.bytes_uploaded.inc_by(uploaded);
            health.object_size.observe(size as f64);
        }
        PutOutcome::AlreadyExists => {
            health.objects_existing.inc();
        }
    }
}

/// Runs one store operation until it succeeds, as [`put_with_retry`] does a PUT: the same
/// slots, backoff, health reports and limits, for every request of a streamed upload too.
pub async fn with_retry<T, F, Fut>(cx: RetryContext<'_>, mut op: F) -> Result<T, UploadError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    let RetryContext {
        policy,
        health,
        slots,
        shutdown,
    } = cx;
    let mut attempt = 0u32;
    loop {
        let attempted = {
            // A destination that is failing probes with one upload at a time: a store that
            // hangs (a black-hole endpoint) then holds at most one of the shared slots.
            let _probe = match health.failing() {
                true => Some(tokio::select! {
                    () = shutdown.cancelled() => return Err(UploadError::Cancelled),
                    probe = health.probe().acquire() => probe.map_err(|_| UploadError::Cancelled)?,
                }),
                false => None,
            };
            let _slot = tokio::select! {
                () = shutdown.cancelled() => return Err(UploadError::Cancelled),
                slot = slots.acquire() => slot.map_err(|_| UploadError::Cancelled)?,
            };
            let began = std::time::Instant::now();
            let done = op().await;
            let timed = match done {
                Ok(_) => &health.upload_ok,
                Err(_) => &health.upload_failed,
            };
            timed.observe(began.elapsed().as_secs_f64());
            done
        };
        let error = match attempted {
            Ok(done) => {
                health.report_success();
                return Ok(done);
            }
            Err(e) => e,
        };
        attempt += 1;
        match error.class {
            ErrorClass::Transient => {
                health.transient_errors.inc();
                // A store that is down (5xx, timeouts, refused connections) pauses only this
                // destination's partitions, like a refusal does; its first success resumes them.
                if attempt >= TRANSIENT_FAILURES_BEFORE_FAILING {
                    health.report_failure(
                        format!("the store does not answer: {error}"),
                        error.code.clone(),
                    );
                }
            }
            ErrorClass::Permanent => health.report_permanent(&error),
        }
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
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;
    use crate::store::{BoxFuture, StoreError};

    /// Refuses every PUT as a store without permission would, counting attempts.
    #[derive(Debug, Default)]
    struct Refusing(AtomicU32);

    impl ObjectStore for Refusing {
        fn put_if_absent<'a>(
            &'a self,
            key: &'a str,
            _: Bytes,
            _: &'a ObjectMetadata,
        ) -> BoxFuture<'a, Result<PutOutcome, StoreError>> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                Err(StoreError {
                    class: ErrorClass::Permanent,
                    op: "PUT",
                    target: key.to_string(),
                    code: Some("AccessDenied".into()),
                    message: "Access Denied".into(),
                    status: Some(403),
                    bucket_region: None,
                })
            })
        }
        fn delete<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
            Box::pin(async { Ok(()) })
        }
        fn describe(&self) -> String {
            "refusing".into()
        }
    }

    /// Accepts every PUT.
    #[derive(Debug)]
    struct Accepting;

    impl ObjectStore for Accepting {
        fn put_if_absent<'a>(
            &'a self,
            _: &'a str,
            _: Bytes,
            _: &'a ObjectMetadata,
        ) -> BoxFuture<'a, Result<PutOutcome, StoreError>> {
            Box::pin(async { Ok(PutOutcome::Created) })
        }
        fn delete<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
            Box::pin(async { Ok(()) })
        }
        fn describe(&self) -> String {
            "accepting".into()
        }
    }

    #[tokio::test]
    async fn a_refusing_store_waiting_to_retry_does_not_hold_the_only_upload_slot() {
        let slots = Semaphore::new(1);
        let shutdown = CancellationToken::new();
        // Retries of refused uploads come an hour apart.
        let policy = RetryPolicy::forever(Duration::from_secs(3600));
        let (bad_health, good_health) = (
            DestinationHealth::new("refusing"),
            DestinationHealth::new("healthy"),
        );
        let refusing = Refusing::default();
        let meta = Vec::new();
        let stuck = put_with_retry(
            &refusing,
            "k",
            Bytes::new(),
            &meta,
            RetryContext {
                policy: &policy,
                health: &bad_health,
                slots: &slots,
                shutdown: &shutdown,
            },
        );
        let healthy = async {
            // Once the refused upload has made its attempt and is waiting to retry...
            while refusing.0.load(Ordering::SeqCst) == 0 {
                tokio::task::yield_now().await;
            }
            let cx = RetryContext {
                policy: &policy,
                health: &good_health,
                slots: &slots,
                shutdown: &shutdown,
            };
            // ...the healthy destination still gets the slot.
            tokio::time::timeout(
                Duration::from_secs(30),
                put_with_retry(&Accepting, "k", Bytes::new(), &meta, cx),
            )
            .await
        };
        tokio::select! {
            result = stuck => panic!("the refused upload ended: {result:?}"),
            done = healthy => {
                let outcome = done.expect("the healthy upload waited for the refusing one's slot");
                assert_eq!(outcome.unwrap(), PutOutcome::Created);
            }
        }
        assert_eq!(refusing.0.load(Ordering::SeqCst), 1);
    }

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
