//! Process-wide metrics, kept in `prometheus-client` types and encoded in the OpenMetrics text
//! format that Prometheus scrapes.
//!
//! A static registry, like the `metrics` facade: stores and upload tasks deep in the stack count
//! without a handle threaded through every call. Figures that are state rather than counts
//! (destination health, lag, freshness, the process) are read at scrape time by the collectors
//! in [`health`](super::health) and [`process`](super::process).

use std::sync::LazyLock;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// The label of every per-destination series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DestinationLabel {
    /// The destination's `name` in the configuration.
    pub destination: String,
}

impl DestinationLabel {
    /// The label for `destination`.
    pub fn new(destination: &str) -> Self {
        Self {
            destination: destination.to_string(),
        }
    }
}

/// The labels of a store request's duration: its destination, and whether it succeeded.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabel {
    pub destination: String,
    /// `ok`, or `error` (refused, failed or timed out: the slow failures count too).
    pub outcome: &'static str,
}

/// A histogram family whose buckets are fixed by a function (`Family` needs a constructor).
pub type HistogramFamily<L = DestinationLabel> = Family<L, Histogram, fn() -> Histogram>;

/// Seconds one store request takes: 5 ms to ~80 s.
fn request_seconds() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 15))
}

/// Object sizes: 1 KiB to 4 GiB, by factors of 4.
fn object_bytes() -> Histogram {
    Histogram::new(exponential_buckets(1024.0, 4.0, 12))
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
    /// `worker.memory_limit`, beside what is buffered against it.
    pub memory_limit_bytes: Gauge,
    /// Seconds an offset commit request took to be answered.
    pub commit_duration: Histogram,
    /// Per destination: rows delivered, objects written, refusals and errors.
    pub records_delivered: Family<DestinationLabel, Counter>,
    pub objects_created: Family<DestinationLabel, Counter>,
    pub objects_existing: Family<DestinationLabel, Counter>,
    pub bytes_uploaded: Family<DestinationLabel, Counter>,
    pub transient_errors: Family<DestinationLabel, Counter>,
    pub permanent_errors: Family<DestinationLabel, Counter>,
    /// Seconds each store request of an upload (a PUT, a part, a completion) took.
    pub upload_duration: HistogramFamily<RequestLabel>,
    /// Sizes of the objects written.
    pub object_size: HistogramFamily,
    /// When the destination's temporary credentials expire (Unix seconds).
    pub credential_expiry: Family<DestinationLabel, Gauge>,
}

/// The registry.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(|| Metrics {
    records_consumed: Counter::default(),
    records_dead_lettered: Counter::default(),
    records_skipped: Counter::default(),
    segments_sealed: Counter::default(),
    segments_sealed_for_memory: Counter::default(),
    segments_delivered: Counter::default(),
    recoveries: Counter::default(),
    commits: Counter::default(),
    commit_failures: Counter::default(),
    multipart_uploads: Counter::default(),
    multipart_aborts: Counter::default(),
    multipart_abort_failures: Counter::default(),
    streamed_parts: Counter::default(),
    row_groups_flushed_for_memory: Counter::default(),
    payload_bytes_packed: Counter::default(),
    credential_refreshes: Counter::default(),
    credential_refresh_failures: Counter::default(),
    consume_errors: Counter::default(),
    protocol_stops: Counter::default(),
    partitions_assigned: Gauge::default(),
    partitions_paused: Gauge::default(),
    segments_in_flight: Gauge::default(),
    buffered_bytes: Gauge::default(),
    memory_limit_bytes: Gauge::default(),
    commit_duration: request_seconds(),
    records_delivered: Family::default(),
    objects_created: Family::default(),
    objects_existing: Family::default(),
    bytes_uploaded: Family::default(),
    transient_errors: Family::default(),
    permanent_errors: Family::default(),
    upload_duration: Family::new_with_constructor(request_seconds),
    object_size: Family::new_with_constructor(object_bytes),
    credential_expiry: Family::default(),
});

impl Metrics {
    /// Registers every metric with `registry` (the registry shares them: what is counted
    /// later shows at the next scrape). Counter names get their `_total` suffix from the
    /// encoder; `prometheus-client` ends each help text with a full stop.
    pub fn register(&self, registry: &mut Registry) {
        let counters: [(&str, &str, &Counter); 19] = [
            (
                "pail_records_consumed",
                "Records taken from the source",
                &self.records_consumed,
            ),
            (
                "pail_records_dead_lettered",
                "Bad records written to the dead-letter output",
                &self.records_dead_lettered,
            ),
            (
                "pail_records_skipped",
                "Bad records skipped (on_bad_record = \"skip\")",
                &self.records_skipped,
            ),
            (
                "pail_segments_sealed",
                "Segments sealed",
                &self.segments_sealed,
            ),
            (
                "pail_segments_sealed_for_memory",
                "Segments sealed before their rotation limits because worker.memory_limit was reached",
                &self.segments_sealed_for_memory,
            ),
            (
                "pail_segments_delivered",
                "Segments whose objects are all durable",
                &self.segments_delivered,
            ),
            (
                "pail_recoveries",
                "Partitions assigned with sealed segments to replay",
                &self.recoveries,
            ),
            (
                "pail_commits",
                "Partition offsets committed (acknowledged by the group coordinator)",
                &self.commits,
            ),
            (
                "pail_commit_failures",
                "Offset commit requests that failed (retried)",
                &self.commit_failures,
            ),
            (
                "pail_multipart_uploads",
                "Multipart uploads started",
                &self.multipart_uploads,
            ),
            (
                "pail_multipart_aborts",
                "Multipart uploads aborted after a failure or a 412",
                &self.multipart_aborts,
            ),
            (
                "pail_multipart_abort_failures",
                "Aborts the store refused (add s3:AbortMultipartUpload or a lifecycle rule)",
                &self.multipart_abort_failures,
            ),
            (
                "pail_streamed_parts",
                "Multipart parts uploaded while their file was still open",
                &self.streamed_parts,
            ),
            (
                "pail_row_groups_flushed_for_memory",
                "Row groups written early because the memory budget was reached (the file stays open)",
                &self.row_groups_flushed_for_memory,
            ),
            (
                "pail_payload_bytes_packed",
                "Buffered JSON bytes compressed in memory because the memory budget was reached (their file stays open)",
                &self.payload_bytes_packed,
            ),
            (
                "pail_credential_refreshes",
                "Temporary credentials obtained from STS",
                &self.credential_refreshes,
            ),
            (
                "pail_credential_refresh_failures",
                "Background credential refreshes that failed (retried)",
                &self.credential_refresh_failures,
            ),
            (
                "pail_consume_errors",
                "Kafka consume errors that stopped a partition (see pail_partitions_stopped)",
                &self.consume_errors,
            ),
            (
                "pail_protocol_stops",
                "Partitions the delivery protocol stopped: a committed offset out of range or \
                 unreadable, offsets that went back, a segment that cannot be delivered",
                &self.protocol_stops,
            ),
        ];
        for (name, help, c) in counters {
            registry.register(name, help, c.clone());
        }
        let gauges: [(&str, &str, &Gauge); 5] = [
            (
                "pail_partitions_assigned",
                "Kafka partitions owned by this worker",
                &self.partitions_assigned,
            ),
            (
                "pail_partitions_paused",
                "Owned partitions whose fetching is paused",
                &self.partitions_paused,
            ),
            (
                "pail_segments_in_flight",
                "Sealed segments being encoded or uploaded",
                &self.segments_in_flight,
            ),
            (
                "pail_buffered_bytes",
                "Bytes held against worker.memory_limit: open files, sealed segments, read-ahead",
                &self.buffered_bytes,
            ),
            (
                "pail_memory_limit_bytes",
                "The memory budget (worker.memory_limit)",
                &self.memory_limit_bytes,
            ),
        ];
        for (name, help, g) in gauges {
            registry.register(name, help, g.clone());
        }
        registry.register(
            "pail_commit_duration_seconds",
            "Seconds an offset commit request took to be answered",
            self.commit_duration.clone(),
        );
        let per_destination: [(&str, &str, &Family<DestinationLabel, Counter>); 6] = [
            (
                "pail_records_delivered",
                "Rows in objects made durable (dead letters not included)",
                &self.records_delivered,
            ),
            (
                "pail_objects_created",
                "Objects written",
                &self.objects_created,
            ),
            (
                "pail_objects_existing",
                "Uploads answered 412: an earlier attempt had written the object",
                &self.objects_existing,
            ),
            (
                "pail_uploaded_bytes",
                "Bytes of objects written",
                &self.bytes_uploaded,
            ),
            (
                "pail_upload_transient_errors",
                "Upload attempts failed with a retryable error",
                &self.transient_errors,
            ),
            (
                "pail_upload_permanent_errors",
                "Upload attempts refused (access, bucket, credentials)",
                &self.permanent_errors,
            ),
        ];
        for (name, help, f) in per_destination {
            registry.register(name, help, f.clone());
        }
        registry.register(
            "pail_upload_duration_seconds",
            "Seconds each store request of an upload (a PUT, a multipart part, a completion) took, by outcome",
            self.upload_duration.clone(),
        );
        registry.register(
            "pail_object_size_bytes",
            "Sizes of the objects written",
            self.object_size.clone(),
        );
        registry.register(
            "pail_credential_expiry_timestamp_seconds",
            "When the destination's temporary credentials expire (Unix time); absent for keys \
             that do not expire",
            self.credential_expiry.clone(),
        );
    }
}
