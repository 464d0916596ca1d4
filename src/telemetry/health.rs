//! Health of the worker and of each destination: what `/healthz`, `/readyz` and the
//! per-destination metrics report, and how far behind each partition is.
//!
//! Readiness is the process's, not its destinations': `/readyz` answers 200 once the run
//! loop turns and until a shutdown begins. A destination that refuses uploads (one customer's
//! revoked role) pauses only its own partitions and shows in `/healthz`'s document and in
//! `pail_destination_up`; were it to make replicas not ready, every replica of a fleet would
//! drop out of rotation at once, and rollouts and node drains under a PodDisruptionBudget
//! would stall on a fault no restart can fix.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;

use serde::Serialize;

use super::metrics::{DestinationLabel, METRICS, RequestLabel};

fn request(destination: &str, outcome: &'static str) -> RequestLabel {
    RequestLabel {
        destination: destination.to_string(),
        outcome,
    }
}
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
    /// Its series of the process-wide families (shared with the registry).
    pub records_delivered: Counter,
    pub objects_created: Counter,
    pub objects_existing: Counter,
    pub bytes_uploaded: Counter,
    pub transient_errors: Counter,
    pub permanent_errors: Counter,
    /// Durations of the store's requests that succeeded, and of those that did not.
    pub upload_ok: Histogram,
    pub upload_failed: Histogram,
    pub object_size: Histogram,
    /// The newest Kafka timestamp (ms) among the records delivered; `i64::MIN` before any.
    newest_delivered_ms: AtomicI64,
}

impl DestinationHealth {
    /// A healthy destination called `name`.
    pub fn new(name: &str) -> Self {
        let label = DestinationLabel::new(name);
        let m = &*METRICS;
        // One statement per series: `get_or_create` hands out a read guard that lives to the
        // end of its statement, and a second series of the same family needs the write lock.
        let counter = |family: &prometheus_client::metrics::family::Family<
            DestinationLabel,
            Counter,
        >| family.get_or_create(&label).clone();
        let records_delivered = counter(&m.records_delivered);
        let objects_created = counter(&m.objects_created);
        let objects_existing = counter(&m.objects_existing);
        let bytes_uploaded = counter(&m.bytes_uploaded);
        let transient_errors = counter(&m.transient_errors);
        let permanent_errors = counter(&m.permanent_errors);
        let upload_ok = m
            .upload_duration
            .get_or_create(&request(name, "ok"))
            .clone();
        let upload_failed = m
            .upload_duration
            .get_or_create(&request(name, "error"))
            .clone();
        let object_size = m.object_size.get_or_create(&label).clone();
        Self {
            name: name.to_string(),
            failing: AtomicBool::new(false),
            failure: Mutex::new(None),
            probe: tokio::sync::Semaphore::new(1),
            records_delivered,
            objects_created,
            objects_existing,
            bytes_uploaded,
            transient_errors,
            permanent_errors,
            upload_ok,
            upload_failed,
            object_size,
            newest_delivered_ms: AtomicI64::new(i64::MIN),
        }
    }

    /// A segment's `rows`, whose newest Kafka timestamp is `newest_ms`, are durable.
    /// A timestamp more than [`FUTURE_SKEW_MS`] ahead of the clock (a producer's clock
    /// gone wrong) is ignored: it would hold freshness at 0 until the clock caught up.
    pub fn delivered(&self, rows: u64, newest_ms: Option<i64>) {
        self.records_delivered.inc_by(rows);
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(i64::MAX, |d| d.as_millis() as i64);
        if let Some(ms) = newest_ms.filter(|ms| *ms <= now_ms.saturating_add(FUTURE_SKEW_MS)) {
            self.newest_delivered_ms.fetch_max(ms, Ordering::Relaxed);
        }
    }

    /// The newest Kafka timestamp (ms since the epoch) delivered so far.
    pub fn newest_delivered_ms(&self) -> Option<i64> {
        let ms = self.newest_delivered_ms.load(Ordering::Relaxed);
        (ms != i64::MIN).then_some(ms)
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
    /// test): its partitions are paused and the health document names it until a success.
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

/// The worker's health: its destinations, its stopped partitions, each partition's progress
/// and a heartbeat from the run loop.
#[derive(Debug)]
pub struct Health {
    destinations: Vec<Arc<DestinationHealth>>,
    stopped: Mutex<BTreeMap<(String, i32), StoppedPartition>>,
    /// Where each owned partition's commit and log end stand.
    progress: Mutex<BTreeMap<(String, i32), Progress>>,
    started: Instant,
    /// Milliseconds after `started` of the run loop's last turn.
    heartbeat_ms: AtomicU64,
    /// The run loop has turned at least once.
    running: AtomicBool,
    /// A shutdown began: the worker drains and takes no new work.
    stopping: AtomicBool,
}

/// Where a partition stands: its consumer lag is `high - committed`.
#[derive(Debug, Clone, Copy)]
struct Progress {
    /// Where this worker started reading it.
    start: i64,
    /// The offset this worker's commits have reached (where it started, before its first).
    committed: i64,
    /// The log end offset (high watermark) last seen.
    high: i64,
}

/// The worker's progress as [`Health::totals`] sums it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Partitions owned.
    pub partitions: u64,
    /// Offsets committed since each partition started (records, bad ones included).
    pub committed: u64,
    /// Offsets from each partition's start to its log end: `committed` when it has caught up.
    pub to_end: u64,
    /// Rows delivered to every destination.
    pub delivered_rows: u64,
}

/// How far ahead of the clock a delivered timestamp may be and still count for freshness.
pub const FUTURE_SKEW_MS: i64 = 5 * 60 * 1000;

/// The run loop must turn at least this often to count as live.
pub const STALL_AFTER: Duration = Duration::from_secs(60);

/// `/healthz` and `/readyz` in one document.
#[derive(Debug, Serialize)]
pub struct HealthReport {
    /// `ok`, or `degraded` when a destination refuses uploads or a partition is stopped.
    pub status: &'static str,
    /// The run loop turned within the last minute.
    pub live: bool,
    /// The worker can do its work: the run loop turns and no shutdown has begun. A failing
    /// destination does not make the worker not ready (see the module's documentation).
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
            progress: Mutex::new(BTreeMap::new()),
            started: Instant::now(),
            heartbeat_ms: AtomicU64::new(0),
            running: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
        }
    }

    /// The run loop is turning.
    pub fn beat(&self) {
        let ms = self.started.elapsed().as_millis() as u64;
        self.heartbeat_ms.store(ms, Ordering::Relaxed);
    }

    /// The run loop started: start-up checks are over and records flow.
    pub fn running(&self) {
        self.running.store(true, Ordering::Relaxed);
    }

    /// A shutdown began: not ready from now on (an orchestrator sends no new work to a
    /// worker that drains).
    pub fn stopping(&self) {
        self.stopping.store(true, Ordering::Relaxed);
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

    /// A stopped partition left this worker, or is read again: whatever stopped it is its
    /// next reader's to find.
    pub fn partition_released(&self, topic: &str, partition: i32) {
        self.stopped
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(topic.to_string(), partition));
    }

    /// The partition is read from `from` (everything before it is delivered or was
    /// skipped) and its log ends at `high`.
    pub fn partition_started(&self, topic: &str, partition: i32, from: i64, high: i64) {
        self.progress
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                (topic.to_string(), partition),
                Progress {
                    start: from,
                    committed: from,
                    high,
                },
            );
    }

    /// The group coordinator acknowledged a commit of the partition at `offset`.
    pub fn partition_committed(&self, topic: &str, partition: i32, offset: i64) {
        let mut progress = self.progress.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = progress.get_mut(&(topic.to_string(), partition)) {
            p.committed = offset;
        }
    }

    /// The partition's log ends at `high` now (answers that arrive late never move it back).
    pub fn partition_log_end(&self, topic: &str, partition: i32, high: i64) {
        let mut progress = self.progress.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = progress.get_mut(&(topic.to_string(), partition)) {
            p.high = p.high.max(high);
        }
    }

    /// The partition left this worker: its lag is its next owner's to report.
    pub fn partition_revoked(&self, topic: &str, partition: i32) {
        self.progress
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(topic.to_string(), partition));
    }

    /// Each owned partition's consumer lag in records: its log end minus its commit.
    pub fn lag(&self) -> Vec<((String, i32), i64)> {
        self.progress
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(tp, p)| (tp.clone(), (p.high - p.committed).max(0)))
            .collect()
    }

    /// The whole worker's progress: offsets committed since each partition started, offsets
    /// from there to each log end, and rows delivered.
    pub fn totals(&self) -> Totals {
        let mut totals = Totals {
            delivered_rows: self
                .destinations
                .iter()
                .map(|d| d.records_delivered.get())
                .sum(),
            ..Totals::default()
        };
        let progress = self.progress.lock().unwrap_or_else(|p| p.into_inner());
        for p in progress.values() {
            let (committed, high) = (p.committed, p.high.max(p.committed));
            totals.partitions += 1;
            totals.committed += (committed - p.start).max(0) as u64;
            totals.to_end += (high - p.start).max(0) as u64;
        }
        totals
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
        let stopped_partitions = self.stopped_partitions();
        let degraded =
            destinations.iter().any(|d| d.failure.is_some()) || !stopped_partitions.is_empty();
        let live = since_beat < STALL_AFTER;
        HealthReport {
            status: if degraded { "degraded" } else { "ok" },
            live,
            ready: live
                && self.running.load(Ordering::Relaxed)
                && !self.stopping.load(Ordering::Relaxed),
            destinations,
            stopped_partitions,
        }
    }
}

/// Reads the health state at each scrape: destination up and freshness, stopped partitions,
/// consumer lag.
#[derive(Debug)]
pub struct HealthCollector(pub Arc<Health>);

impl Collector for HealthCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let health = &self.0;
        let stopped = health
            .stopped
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len();
        let gauge = ConstGauge::new(stopped as i64);
        gauge.encode(encoder.encode_descriptor(
            "pail_partitions_stopped",
            "Owned partitions stopped on a Kafka consume error (see /healthz).",
            None,
            MetricType::Gauge,
        )?)?;
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        type Pick = fn(&DestinationHealth, i64) -> Option<f64>;
        let per_destination: [(&str, &str, Pick); 3] = [
            (
                "pail_destination_up",
                "1 when the destination accepts uploads, 0 while it refuses them.",
                |d, _| Some(f64::from(u8::from(!d.failing()))),
            ),
            (
                "pail_last_delivered_timestamp_seconds",
                "The newest Kafka timestamp among the records delivered to the destination (Unix time).",
                |d, _| d.newest_delivered_ms().map(|ms| ms as f64 / 1000.0),
            ),
            (
                "pail_freshness_seconds",
                "Seconds between now and the newest Kafka timestamp delivered to the destination: how far behind its data is.",
                |d, now| {
                    d.newest_delivered_ms()
                        .map(|ms| (now - ms).max(0) as f64 / 1000.0)
                },
            ),
        ];
        for (name, help, pick) in per_destination {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for d in &health.destinations {
                if let Some(v) = pick(d, now_ms) {
                    let label = DestinationLabel::new(&d.name);
                    ConstGauge::new(v).encode(family.encode_family(&label)?)?;
                }
            }
        }
        let lag = health.lag();
        let mut family = encoder.encode_descriptor(
            "pail_consumer_lag_records",
            "Records of each owned partition not yet committed: its log end offset minus this worker's commit.",
            None,
            MetricType::Gauge,
        )?;
        for ((topic, partition), records) in lag {
            let label = PartitionLabel { topic, partition };
            ConstGauge::new(records).encode(family.encode_family(&label)?)?;
        }
        Ok(())
    }
}

/// The labels of a per-partition series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PartitionLabel {
    topic: String,
    partition: i32,
}
