//! Health of the worker and of each destination: what `/healthz`, `/readyz` and the
//! per-destination metrics report.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::metrics::{Counter, METRICS};
use crate::store::StoreError;

/// Why a destination is not writable right now.
#[derive(Debug, Clone, Serialize)]
pub struct Failure {
    /// The store's error, naming the operation and the object.
    pub error: String,
    /// The store's error code, e.g. `AccessDenied`.
    pub code: Option<String>,
    /// When the failures began (seconds since the Unix epoch).
    pub since_unix: u64,
    /// Refused attempts since then.
    pub attempts: u64,
}

/// One destination's state and upload counters.
#[derive(Debug)]
pub struct DestinationHealth {
    name: String,
    failing: AtomicBool,
    failure: Mutex<Option<Failure>>,
    /// The one upload a failing destination may attempt at a time.
    probe: tokio::sync::Semaphore,
    pub objects_created: Counter,
    pub objects_existing: Counter,
    pub bytes_uploaded: Counter,
    pub transient_errors: Counter,
    pub permanent_errors: Counter,
}

impl DestinationHealth {
    /// A healthy destination called `name`.
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_string(),
            failing: AtomicBool::new(false),
            failure: Mutex::new(None),
            probe: tokio::sync::Semaphore::new(1),
            objects_created: Counter::new(),
            objects_existing: Counter::new(),
            bytes_uploaded: Counter::new(),
            transient_errors: Counter::new(),
            permanent_errors: Counter::new(),
        }
    }

    /// The destination's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// While failing, every upload attempt holds this single permit as well: a failing
    /// destination probes with one upload at a time.
    pub fn probe(&self) -> &tokio::sync::Semaphore {
        &self.probe
    }

    /// The store refused an upload in a way only a human can fix.
    pub fn report_permanent(&self, error: &StoreError) {
        self.permanent_errors.inc();
        self.report_failure(error.to_string(), error.code.clone());
    }

    /// The destination cannot be written to (a refused upload, a failed start-up connection
    /// test): its partitions are paused and `/readyz` names it until a success.
    pub fn report_failure(&self, error: String, code: Option<String>) {
        let mut failure = self.failure.lock().unwrap_or_else(|p| p.into_inner());
        match failure.as_mut() {
            Some(f) => {
                f.attempts += 1;
                f.error = error;
                f.code = code;
            }
            None => {
                *failure = Some(Failure {
                    error,
                    code,
                    since_unix: SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs()),
                    attempts: 1,
                });
            }
        }
        self.failing.store(true, Ordering::Release);
    }

    /// An upload succeeded: the destination works (again).
    pub fn report_success(&self) {
        if self.failing.swap(false, Ordering::AcqRel) {
            let mut failure = self.failure.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(f) = failure.take() {
                tracing::info!(destination = %self.name, attempts = f.attempts,
                    "destination accepts uploads again; its partitions resume");
            }
        }
    }

    /// The destination passed its first start-up test: ready, with nothing to announce.
    pub fn mark_ready(&self) {
        self.failing.store(false, Ordering::Release);
        self.failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
    }

    /// True while the last upload attempt was refused for good.
    pub fn failing(&self) -> bool {
        self.failing.load(Ordering::Acquire)
    }

    /// The current failure, if any.
    pub fn failure(&self) -> Option<Failure> {
        self.failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// A partition this worker owns but stopped reading: librdkafka could not read it further.
#[derive(Debug, Clone, Serialize)]
pub struct StoppedPartition {
    /// The partition's topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The first offset not delivered: the commit stays at or before it.
    pub offset: i64,
    /// The consume error, as logged.
    pub error: String,
    /// When it stopped (seconds since the Unix epoch).
    pub since_unix: u64,
}

/// The worker's health: its destinations, its stopped partitions and a heartbeat from the run
/// loop.
#[derive(Debug)]
pub struct Health {
    destinations: Vec<Arc<DestinationHealth>>,
    stopped: Mutex<BTreeMap<(String, i32), StoppedPartition>>,
    started: Instant,
    /// Milliseconds after `started` of the run loop's last turn.
    heartbeat_ms: AtomicU64,
}

/// The run loop must turn at least this often to count as live.
pub const STALL_AFTER: Duration = Duration::from_secs(60);

/// `/readyz` and `/healthz` in one document.
#[derive(Debug, Serialize)]
pub struct HealthReport {
    /// `ok`, or `degraded` when a destination refuses uploads or a partition is stopped.
    pub status: &'static str,
    /// The run loop turned within the last minute.
    pub live: bool,
    /// Every destination accepts uploads and no partition is stopped.
    pub ready: bool,
    pub destinations: Vec<DestinationReport>,
    /// Partitions stopped on a consume error, until they are revoked (a restart or a
    /// rebalance retries them from their last commit).
    pub stopped_partitions: Vec<StoppedPartition>,
}

/// One destination in a [`HealthReport`].
#[derive(Debug, Serialize)]
pub struct DestinationReport {
    pub name: String,
    /// `ok` or `failing`.
    pub state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<Failure>,
}

impl Health {
    /// Health for these destinations.
    pub fn new(destinations: Vec<Arc<DestinationHealth>>) -> Self {
        Self {
            destinations,
            stopped: Mutex::new(BTreeMap::new()),
            started: Instant::now(),
            heartbeat_ms: AtomicU64::new(0),
        }
    }

    /// The run loop is turning.
    pub fn beat(&self) {
        let ms = self.started.elapsed().as_millis() as u64;
        self.heartbeat_ms.store(ms, Ordering::Relaxed);
    }

    /// A partition stopped at `offset` because librdkafka could not read it.
    pub fn partition_stopped(&self, topic: &str, partition: i32, offset: i64, error: String) {
        let since_unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.stopped
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                (topic.to_string(), partition),
                StoppedPartition {
                    topic: topic.to_string(),
                    partition,
                    offset,
                    error,
                    since_unix,
                },
            );
    }

    /// A partition left this worker: whatever stopped it is its next owner's to find.
    pub fn partition_released(&self, topic: &str, partition: i32) {
        self.stopped
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(topic.to_string(), partition));
    }

    /// The partitions stopped now.
    pub fn stopped_partitions(&self) -> Vec<StoppedPartition> {
        self.stopped
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// The destinations, in configuration order.
    pub fn destinations(&self) -> &[Arc<DestinationHealth>] {
        &self.destinations
    }

    /// The state of the worker now.
    pub fn report(&self) -> HealthReport {
        let since_beat = self.started.elapsed().saturating_sub(Duration::from_millis(
            self.heartbeat_ms.load(Ordering::Relaxed),
        ));
        let destinations: Vec<DestinationReport> = self
            .destinations
            .iter()
            .map(|d| {
                let failure = d.failure();
                DestinationReport {
                    name: d.name.clone(),
                    state: if failure.is_some() { "failing" } else { "ok" },
                    failure,
                }
            })
            .collect();
        // A stopped partition delivers nothing until someone acts (or its retry passes): not
        // ready, so that the orchestrator's readiness alerting sees it.
        let stopped_partitions = self.stopped_partitions();
        let ready =
            destinations.iter().all(|d| d.failure.is_none()) && stopped_partitions.is_empty();
        HealthReport {
            status: if ready { "ok" } else { "degraded" },
            live: since_beat < STALL_AFTER,
            ready,
            destinations,
            stopped_partitions,
        }
    }

    /// Every metric, process-wide and per destination, in the Prometheus text format.
    pub fn render_metrics(&self) -> String {
        let mut out = String::with_capacity(4096);
        METRICS.render(&mut out);
        let stopped = self.stopped.lock().unwrap_or_else(|p| p.into_inner()).len();
        super::metrics::family(
            &mut out,
            "pail_partitions_stopped",
            "gauge",
            "Owned partitions stopped on a Kafka consume error (see /healthz).",
            stopped as u64,
        );
        type Pick = fn(&DestinationHealth) -> u64;
        let families: [(&str, &str, &str, Pick); 6] = [
            (
                "pail_destination_up",
                "gauge",
                "1 when the destination accepts uploads, 0 while it refuses them.",
                |d| u64::from(!d.failing()),
            ),
            (
                "pail_objects_created_total",
                "counter",
                "Objects written.",
                |d| d.objects_created.get(),
            ),
            (
                "pail_objects_existing_total",
                "counter",
                "Uploads answered 412: an earlier attempt had written the object.",
                |d| d.objects_existing.get(),
            ),
            (
                "pail_uploaded_bytes_total",
                "counter",
                "Bytes of objects written.",
                |d| d.bytes_uploaded.get(),
            ),
            (
                "pail_upload_transient_errors_total",
                "counter",
                "Upload attempts failed with a retryable error.",
                |d| d.transient_errors.get(),
            ),
            (
                "pail_upload_permanent_errors_total",
                "counter",
                "Upload attempts refused (access, bucket, credentials).",
                |d| d.permanent_errors.get(),
            ),
        ];
        for (name, kind, help, pick) in families {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for d in &self.destinations {
                let _ = writeln!(out, "{name}{{destination=\"{}\"}} {}", d.name, pick(d));
            }
        }
        out
    }
}
