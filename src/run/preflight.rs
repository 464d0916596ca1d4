//! The start-up connection test (`preflight = true`): before anything is consumed for a
//! destination, the same test as `pail connection-test` must pass. A bounded run (`--once`, a
//! file source) stops at once with the classified cause and fix; a long-running worker marks
//! the destination not ready, keeps its topics unsubscribed, and retries in the background
//! with backoff, reporting each pass so the run loop can subscribe.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tokio_util::sync::CancellationToken;

use super::RunError;
use crate::check::{
    CheckOptions, ConditionalWrites, DestinationCheck, StepStatus, check_destination,
};
use crate::config::DestinationSettings;
use crate::telemetry::{DestinationHealth, Health};

/// Attempts per test when a step fails for a passing reason (SlowDown, 5xx, a reset).
const QUICK_TRIES: u32 = 3;
const FIRST_RETRY: Duration = Duration::from_secs(5);
const MAX_RETRY: Duration = Duration::from_secs(300);

/// Which destinations may be consumed now, and the receiver of later passes (by index).
pub struct Preflight {
    pub ready: Vec<bool>,
    pub passed: UnboundedReceiver<usize>,
}

/// One test, retried quickly while its failure looks transient.
async fn test_once(dest: &DestinationSettings) -> DestinationCheck {
    let mut attempt = 1;
    loop {
        let check = check_destination(dest, CheckOptions::default()).await;
        if check.writable || attempt >= QUICK_TRIES || !looks_transient(&check) {
            return check;
        }
        attempt += 1;
        tokio::time::sleep(Duration::from_millis(500 * u64::from(attempt))).await;
    }
}

fn looks_transient(check: &DestinationCheck) -> bool {
    check.failure().is_some_and(|d| d.transient)
}

fn report(dest: &DestinationSettings, check: &DestinationCheck) {
    if check.writable {
        tracing::info!(destination = %dest.name, identity = ?check.identity,
            conditional_writes = ?check.conditional_writes, "connection test passed");
        if check.conditional_writes == ConditionalWrites::Ignored {
            tracing::warn!(destination = %dest.name,
                "the store ignores If-None-Match: overwrite protection is unavailable; set \
                 overwrite_protection = false to acknowledge it");
        }
        for s in check
            .steps
            .iter()
            .filter(|s| s.status == StepStatus::Failed)
        {
            if let Some(d) = &s.diagnosis {
                tracing::warn!(destination = %dest.name, step = s.step, cause = ?d.cause,
                    error = %d.message, fix = %d.fix, "connection test step failed");
            }
        }
        return;
    }
    if let Some(d) = check.failure() {
        let policy = d
            .policy
            .as_ref()
            .map(|p| serde_json::to_string(p).unwrap_or_default());
        tracing::error!(destination = %dest.name, cause = ?d.cause, error = %d.message,
            fix = %d.fix, policy = policy.as_deref().unwrap_or(""),
            "connection test failed: nothing is consumed for this destination until it passes");
    }
}

fn failure_text(check: &DestinationCheck) -> (String, Option<String>) {
    match check.failure() {
        Some(d) => {
            let cause = serde_json::to_value(d.cause)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string));
            (format!("{} (fix: {})", d.message, d.fix), cause)
        }
        None => ("the connection test failed".into(), None),
    }
}

/// A test that gets no answer within this fails (and is retried like any failure).
const TEST_TIMEOUT: Duration = Duration::from_secs(120);

/// [`test_once`], bounded by [`TEST_TIMEOUT`].
async fn test_bounded(dest: &DestinationSettings) -> DestinationCheck {
    match tokio::time::timeout(TEST_TIMEOUT, test_once(dest)).await {
        Ok(check) => check,
        Err(_) => DestinationCheck::timed_out(dest, TEST_TIMEOUT),
    }
}

/// Tests every destination with `preflight` on, all at once. Until its test passes a
/// destination is not ready. `bounded` runs fail on the first refusal; otherwise failing
/// destinations are retried in the background until `shutdown`. `None`: shut down meanwhile.
pub async fn preflight(
    destinations: &[DestinationSettings],
    health: &Health,
    dest_health: &[Arc<DestinationHealth>],
    bounded: bool,
    shutdown: &CancellationToken,
) -> Result<Option<Preflight>, RunError> {
    let (tx, passed) = unbounded_channel();
    let mut ready: Vec<bool> = destinations.iter().map(|d| !d.preflight).collect();
    for (i, _) in destinations.iter().enumerate().filter(|(_, d)| d.preflight) {
        dest_health[i].report_failure(
            "the start-up connection test has not passed yet".into(),
            Some("preflight_pending".into()),
        );
    }
    let tests = futures::future::join_all(
        destinations
            .iter()
            .enumerate()
            .filter(|(_, d)| d.preflight)
            .map(|(i, d)| async move { (i, test_bounded(d).await) }),
    );
    tokio::pin!(tests);
    // The run loop has not started: beat for it, so liveness holds during the tests.
    let mut beat = tokio::time::interval(Duration::from_secs(5));
    let results = loop {
        tokio::select! {
            results = &mut tests => break results,
            _ = beat.tick() => health.beat(),
            () = shutdown.cancelled() => return Ok(None),
        }
    };
    for (i, check) in results {
        let dest = &destinations[i];
        report(dest, &check);
        if check.writable {
            dest_health[i].mark_ready();
            ready[i] = true;
            continue;
        }
        let (error, cause) = failure_text(&check);
        if bounded {
            return Err(RunError::Preflight {
                destination: dest.name.clone(),
                error,
            });
        }
        dest_health[i].report_failure(error, cause);
        tokio::spawn(retry(
            i,
            dest.clone(),
            dest_health[i].clone(),
            tx.clone(),
            shutdown.clone(),
        ));
    }
    Ok(Some(Preflight { ready, passed }))
}

async fn retry(
    index: usize,
    dest: DestinationSettings,
    health: Arc<DestinationHealth>,
    passed: UnboundedSender<usize>,
    shutdown: CancellationToken,
) {
    let mut wait = FIRST_RETRY;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
        let check = test_bounded(&dest).await;
        report(&dest, &check);
        if check.writable {
            health.report_success();
            let _ = passed.send(index);
            return;
        }
        let (error, cause) = failure_text(&check);
        health.report_failure(error, cause);
        wait = (wait * 2).min(MAX_RETRY);
    }
}
