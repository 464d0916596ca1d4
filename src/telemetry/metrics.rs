//! Process-wide counters and gauges, rendered in the Prometheus text format.
//!
//! A static registry, like the `metrics` facade: stores and upload tasks deep in the stack count
//! without a handle threaded through every call. Per-destination figures live in
//! [`DestinationHealth`](super::health::DestinationHealth).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

/// A monotonically increasing count.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// A counter at zero (usable in statics).
    pub const fn new() -> Self {
        Self(AtomicU64::new(0))
    }

    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// Adds one.
    pub fn inc(&self) {
        self.add(1);
    }

    /// The current count.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down, set by its owner.
#[derive(Debug, Default)]
pub struct Gauge(AtomicU64);

impl Gauge {
    /// A gauge at zero (usable in statics).
    pub const fn new() -> Self {
        Self(AtomicU64::new(0))
    }

    /// Sets the value.
    pub fn set(&self, v: u64) {
        self.0.store(v, Ordering::Relaxed);
    }

    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Every process-wide metric pail exports.
#[derive(Debug)]
pub struct Metrics {
    pub records_consumed: Counter,
    pub records_dead_lettered: Counter,
    pub records_skipped: Counter,
    pub segments_sealed: Counter,
    pub segments_sealed_for_memory: Counter,
    pub segments_delivered: Counter,
    pub recoveries: Counter,
    pub commits: Counter,
    pub commit_failures: Counter,
    pub multipart_uploads: Counter,
    pub multipart_aborts: Counter,
    pub multipart_abort_failures: Counter,
    pub streamed_parts: Counter,
    pub row_groups_flushed_for_memory: Counter,
    pub payload_bytes_packed: Counter,
    pub credential_refreshes: Counter,
    pub credential_refresh_failures: Counter,
    pub consume_errors: Counter,
    pub protocol_stops: Counter,
    pub partitions_assigned: Gauge,
    pub partitions_paused: Gauge,
    pub segments_in_flight: Gauge,
    pub buffered_bytes: Gauge,
}

/// The registry.
pub static METRICS: Metrics = Metrics {
    records_consumed: Counter::new(),
    records_dead_lettered: Counter::new(),
    records_skipped: Counter::new(),
    segments_sealed: Counter::new(),
    segments_sealed_for_memory: Counter::new(),
    segments_delivered: Counter::new(),
    recoveries: Counter::new(),
    commits: Counter::new(),
    commit_failures: Counter::new(),
    multipart_uploads: Counter::new(),
    multipart_aborts: Counter::new(),
    multipart_abort_failures: Counter::new(),
    streamed_parts: Counter::new(),
    row_groups_flushed_for_memory: Counter::new(),
    payload_bytes_packed: Counter::new(),
    credential_refreshes: Counter::new(),
    credential_refresh_failures: Counter::new(),
    consume_errors: Counter::new(),
    protocol_stops: Counter::new(),
    partitions_assigned: Gauge::new(),
    partitions_paused: Gauge::new(),
    segments_in_flight: Gauge::new(),
    buffered_bytes: Gauge::new(),
};

/// Writes one metric family with a single unlabelled sample.
pub(super) fn family(out: &mut String, name: &str, kind: &str, help: &str, value: u64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
    );
}

impl Metrics {
    /// The process-wide figures in the Prometheus text format.
    pub fn render(&self, out: &mut String) {
        let counters: [(&str, &str, &Counter); 19] = [
            (
                "pail_records_consumed_total",
                "Records taken from the source.",
                &self.records_consumed,
            ),
            (
                "pail_records_dead_lettered_total",
                "Bad records written to the dead-letter output.",
                &self.records_dead_lettered,
            ),
            (
                "pail_records_skipped_total",
                "Bad records skipped (on_bad_record = \"skip\").",
                &self.records_skipped,
            ),
            (
                "pail_segments_sealed_total",
                "Segments sealed.",
                &self.segments_sealed,
            ),
            (
                "pail_segments_sealed_for_memory_total",
                "Segments sealed before their rotation limits because worker.memory_limit was reached.",
                &self.segments_sealed_for_memory,
            ),
            (
                "pail_segments_delivered_total",
                "Segments whose objects are all durable.",
                &self.segments_delivered,
            ),
            (
                "pail_recoveries_total",
                "Partitions assigned with sealed segments to replay.",
                &self.recoveries,
            ),
            (
                "pail_commits_total",
                "Offset commits that succeeded.",
                &self.commits,
            ),
            (
                "pail_commit_failures_total",
                "Offset commits that failed (retried).",
                &self.commit_failures,
            ),
            (
                "pail_multipart_uploads_total",
                "Multipart uploads started.",
                &self.multipart_uploads,
            ),
            (
                "pail_multipart_aborts_total",
                "Multipart uploads aborted after a failure or a 412.",
                &self.multipart_aborts,
            ),
            (
                "pail_streamed_parts_total",
                "Multipart parts uploaded while their file was still open.",
                &self.streamed_parts,
            ),
            (
                "pail_row_groups_flushed_for_memory_total",
                "Row groups written early because the memory budget was reached (the file stays open).",
                &self.row_groups_flushed_for_memory,
            ),
            (
                "pail_payload_bytes_packed_total",
                "Buffered JSON bytes compressed in memory because the memory budget was reached (their file stays open).",
                &self.payload_bytes_packed,
            ),
            (
                "pail_multipart_abort_failures_total",
                "Aborts the store refused (add s3:AbortMultipartUpload or a lifecycle rule).",
                &self.multipart_abort_failures,
            ),
            (
                "pail_credential_refreshes_total",
                "Temporary credentials obtained from STS.",
                &self.credential_refreshes,
            ),
            (
                "pail_credential_refresh_failures_total",
                "Background credential refreshes that failed (retried).",
                &self.credential_refresh_failures,
            ),
            (
                "pail_consume_errors_total",
                "Kafka consume errors that stopped a partition (see pail_partitions_stopped).",
                &self.consume_errors,
            ),
            (
                "pail_protocol_stops_total",
                "Partitions the delivery protocol stopped: a committed offset out of range or \
                 unreadable, offsets that went back, a segment that cannot be delivered.",
                &self.protocol_stops,
            ),
        ];
        for (name, help, c) in counters {
            family(out, name, "counter", help, c.get());
        }
        let gauges: [(&str, &str, &Gauge); 4] = [
            (
                "pail_partitions_assigned",
                "Kafka partitions owned by this worker.",
                &self.partitions_assigned,
            ),
            (
                "pail_partitions_paused",
                "Owned partitions whose fetching is paused.",
                &self.partitions_paused,
            ),
            (
                "pail_segments_in_flight",
                "Sealed segments being encoded or uploaded.",
                &self.segments_in_flight,
            ),
            (
                "pail_buffered_bytes",
                "Record bytes held in open segments.",
                &self.buffered_bytes,
            ),
        ];
        for (name, help, g) in gauges {
            family(out, name, "gauge", help, g.get());
        }
    }
}
