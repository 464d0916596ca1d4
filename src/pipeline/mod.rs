//! The pipeline state between source and store: decode, route, buffer and seal records, and
//! run the delivery protocol per partition — intent commit before upload, final commit after
//! every earlier object is durable, exact replay of recorded segment ends after a crash.

mod dead_letter;
mod progress;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Instant;

use serde_json::{Map, Value};

use crate::buffer::{SealReason, Segment};
use crate::config::{BadRecordPolicy, DestinationSettings};
use crate::decode::decode;
use crate::delivery::intent::{IntentError, RecoveryPlan};
use crate::delivery::{Completion, Delivery, DeliveryError, PartitionKey, Target, object_name};
use crate::schema::Fields;
use crate::source::Record;
use crate::telemetry::METRICS;

pub use progress::CommitPoint;
use progress::Progress;

/// S3's limit on key length in bytes.
const MAX_KEY_BYTES: usize = 1024;
/// Sealed-but-undelivered segments per partition. At the cap the partition is paused and no
/// policy seal happens (its open segment grows instead: any cut is recorded, so skipping one
/// never breaks replay); only the final seal (end of input, drain) and recorded ends during a
/// replay, which replace an end one for one, still seal. An intent so lists at most cap + 1
/// new ends plus those being replayed, well under the 4 KiB metadata limit.
pub const MAX_UNDELIVERED_PER_PARTITION: usize = 64;

// Ends of up to 19 digits and a comma each, twice the cap plus slack, and the version prefix.
const _: () = assert!(
    (2 * MAX_UNDELIVERED_PER_PARTITION + 2) * 20 + 8 <= crate::delivery::intent::MAX_METADATA_BYTES
);

/// A destination with its settings and the store it writes to.
#[derive(Debug, Clone)]
pub struct Destination {
    pub settings: DestinationSettings,
    pub target: Target,
}

/// Why the pipeline stopped.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("bad record at {location} (on_bad_record = \"fail\"): {reason}")]
    BadRecord { location: String, reason: String },
    #[error("topic {0:?} is not routed to any destination")]
    Unrouted(String),
    #[error("topic {topic} partition {partition}: {source}")]
    Intent {
        topic: String,
        partition: i32,
        source: IntentError,
    },
    #[error(transparent)]
    Delivery(#[from] DeliveryError),
}

/// Counters for one run.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RunStats {
    pub records: u64,
    pub rows_written: u64,
    pub dead_lettered: u64,
    pub skipped: u64,
    pub segments_delivered: u64,
    pub objects_created: u64,
    pub objects_existing: u64,
}

/// Limits that keep memory bounded whatever the traffic.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_buffer_bytes: usize,
    pub max_in_flight_segments: usize,
}

/// Which partitions the source should stop fetching.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pause {
    /// Every partition: the buffer budget or the in-flight limit is reached.
    All,
    /// These partitions only (a destination refusing uploads, a partition with too many
    /// undelivered segments); possibly none.
    Partitions(BTreeSet<PartitionKey>),
}

/// A commit the run loop must make for the protocol to go on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitRequest {
    pub partition: PartitionKey,
    pub epoch: u64,
    pub point: CommitPoint,
}

/// Open segments per partition, their delivery progress, and the delivery stage.
pub struct Pipeline {
    destinations: Vec<Destination>,
    routes: HashMap<Arc<str>, Option<usize>>,
    open: HashMap<PartitionKey, Segment>,
    /// The evolving schema of each destination and topic (infer mode), files are written with.
    schemas: HashMap<(usize, Arc<str>), Arc<Fields>>,
    progress: HashMap<PartitionKey, Progress>,
    /// Partitions whose progress changed since the last `pending_commits`.
    touched: BTreeSet<PartitionKey>,
    /// Partitions whose last commit failed, waiting for the retry timer.
    deferred: BTreeSet<PartitionKey>,
    next_epoch: u64,
    delivery: Delivery,
    open_bytes: usize,
    limits: Limits,
    /// Names records in messages: `Some(path)` for a file source ("path line N").
    file_name: Option<String>,
    pub stats: RunStats,
}

impl Pipeline {
    /// A pipeline writing to `destinations` through `delivery`.
    pub fn new(
        destinations: Vec<Destination>,
        delivery: Delivery,
        limits: Limits,
        file_name: Option<String>,
    ) -> Self {
        Self {
            destinations,
            routes: HashMap::new(),
            open: HashMap::new(),
            schemas: HashMap::new(),
            progress: HashMap::new(),
            touched: BTreeSet::new(),
            deferred: BTreeSet::new(),
            next_epoch: 1,
            delivery,
            open_bytes: 0,
            limits,
            file_name,
            stats: RunStats::default(),
        }
    }

    /// The shared name of a topic (records of one topic share one allocation).
    pub fn intern(&mut self, topic: &str) -> Arc<str> {
        if let Some((k, _)) = self.routes.get_key_value(topic) {
            return k.clone();
        }
        let key: Arc<str> = Arc::from(topic);
        let dest = self
            .destinations
            .iter()
            .position(|d| d.settings.topics.iter().any(|t| t == topic))
            .or_else(|| {
                self.destinations
                    .iter()
                    .position(|d| d.settings.topics.is_empty())
            });
        self.routes.insert(key.clone(), dest);
        key
    }

    fn describe(&self, topic: &str, partition: i32, offset: i64) -> String {
        match &self.file_name {
            Some(name) => format!("{name} line {offset}"),
            None => format!("topic {topic} partition {partition} offset {offset}"),
        }
    }

    /// Takes ownership of a partition under `epoch` (the consumer's ownership token: commit
    /// requests carry it, and results from another epoch are ignored), resuming from its
    /// recovery plan.
    pub fn assign(&mut self, topic: &str, partition: i32, plan: RecoveryPlan, epoch: u64) {
        let key = (self.intern(topic), partition);
        if plan.replaying() {
            METRICS.recoveries.inc();
            tracing::info!(
                topic, partition, committed = ?plan.next_start, ends = ?plan.forced_ends,
                "recovering: replaying sealed segments to exactly their recorded ends"
            );
        }
        if let Some(seg) = self.open.remove(&key) {
            self.open_bytes = self.open_bytes.saturating_sub(seg.bytes);
        }
        self.progress.insert(key, Progress::new(epoch, plan));
    }

    /// Drops the open buffers and progress of revoked partitions: the next owner consumes
    /// them again from the last commit, whose intent tells it where to cut.
    pub fn revoke(&mut self, partitions: &[(String, i32)]) {
        for (t, p) in partitions {
            let key = (self.intern(t), *p);
            if let Some(seg) = self.open.remove(&key) {
                self.open_bytes = self.open_bytes.saturating_sub(seg.bytes);
            }
            self.progress.remove(&key);
            self.touched.remove(&key);
            self.deferred.remove(&key);
        }
    }

    fn progress_mut(&mut self, key: &PartitionKey) -> &mut Progress {
        let next_epoch = &mut self.next_epoch;
        // File sources are never "assigned": their one partition starts fresh.
        self.progress.entry(key.clone()).or_insert_with(|| {
            let plan = RecoveryPlan {
                next_start: None,
                forced_ends: Default::default(),
            };
            *next_epoch += 1;
            Progress::new(*next_epoch - 1, plan)
        })
    }

    /// Takes one record: decode, route, buffer; seals segments as the policy (or, while
    /// recovering, the recorded ends) require.
    pub fn ingest(&mut self, rec: Record) -> Result<(), PipelineError> {
        let topic = self.intern(&rec.topic);
        let Some(dest_idx) = self.routes.get(&topic).copied().flatten() else {
            return Err(PipelineError::Unrouted(topic.to_string()));
        };
        self.stats.records += 1;
        METRICS.records_consumed.inc();
        let key: PartitionKey = (topic.clone(), rec.partition);
        // Recorded ends before this record: the segment's last records are gone (compaction).
        while let Some(end) = self.progress_mut(&key).forced_ends.front().copied() {
            if end >= rec.offset {
                break;
            }
            self.seal_at(&key, dest_idx, end);
        }
        let replaying = !self.progress_mut(&key).forced_ends.is_empty();
        let routed = self.route_record(dest_idx, &rec);
        let dest = &self.destinations[dest_idx].settings;
        match routed {
            Ok((path, object)) => {
                let over_paths = !replaying
                    && !self.at_cap(&key)
                    && self
                        .open
                        .get(&key)
                        .is_some_and(|s| s.would_exceed_paths(&path, dest.rotation.max_open_paths));
                if over_paths {
                    self.seal(&key, SealReason::OpenPaths);
                }
                // Admitted against the segment the record lands in (after any seal above), so
                // a replay of that segment admits exactly the same records.
                self.segment(&key, dest_idx, rec.offset);
                let admitted = match self.open.get_mut(&key) {
                    Some(seg) => self.destinations[dest_idx]
                        .settings
                        .schema
                        .admit(&mut seg.schema, &object),
                    None => Ok(()),
                };
                match admitted {
                    Ok(()) => {
                        let payload = rec.payload.as_deref().unwrap_or_default();
                        let key_bytes = rec.key.as_deref();
                        let seg = self.segment(&key, dest_idx, rec.offset);
                        seg.push_row(path, payload, key_bytes, rec.offset, rec.timestamp_ms);
                        self.open_bytes += payload.len() + key_bytes.map_or(0, <[u8]>::len);
                    }
                    Err(reason) => self.bad_record(&key, dest_idx, &rec, reason)?,
                }
            }
            Err(reason) => self.bad_record(&key, dest_idx, &rec, reason)?,
        }
        if replaying {
            if self.progress_mut(&key).forced_ends.front() == Some(&rec.offset) {
                self.seal(&key, SealReason::Recovery);
            }
            return Ok(());
        }
        let rotation = &self.destinations[dest_idx].settings.rotation;
        if let Some(reason) = self.open.get(&key).and_then(|s| s.full(rotation))
            && !self.at_cap(&key)
        {
            self.seal(&key, reason);
        }
        while self.open_bytes > self.limits.max_buffer_bytes {
            let largest = self
                .open
                .iter()
                .filter(|(k, _)| {
                    self.progress
                        .get(*k)
                        .is_none_or(|p| p.forced_ends.is_empty())
                        && !self.at_cap(k)
                })
                .max_by_key(|(_, s)| s.bytes)
                .map(|(k, _)| k.clone());
            let Some(largest) = largest else { break };
            self.seal(&largest, SealReason::MemoryPressure);
        }
        Ok(())
    }

    /// Decodes and routes a record: its directory path and its object, or why it is bad.
    fn route_record(
        &self,
        dest_idx: usize,
        rec: &Record,
    ) -> Result<(String, Map<String, Value>), String> {
        let dest = &self.destinations[dest_idx];
        let s = &dest.settings;
        let object = decode(
            rec.payload.as_deref(),
            s.schema.max_record_bytes,
            s.schema.max_depth,
        )
        .map_err(|e| e.to_string())?;
        let ts = s
            .timestamp
            .extract(rec.timestamp_ms, &object)
            .map_err(|e| e.to_string())?;
        let path = s
            .key_template
            .render(&rec.topic, rec.partition, ts, &object);
        let name_len = object_name(&rec.topic, rec.partition, 0, "parquet").len();
        let key_len = dest.target.prefix.len() + path.len() + name_len + 2;
        if key_len > MAX_KEY_BYTES {
            return Err(format!(
                "object key would be {key_len} bytes, over the {MAX_KEY_BYTES}-byte limit"
            ));
        }
        Ok((path, object))
    }

    fn bad_record(
        &mut self,
        key: &PartitionKey,
        dest_idx: usize,
        rec: &Record,
        reason: String,
    ) -> Result<(), PipelineError> {
        let location = self.describe(&rec.topic, rec.partition, rec.offset);
        match self.destinations[dest_idx].settings.on_bad_record {
            BadRecordPolicy::Fail => return Err(PipelineError::BadRecord { location, reason }),
            BadRecordPolicy::Skip => {
                tracing::warn!(%location, %reason, "skipping bad record (on_bad_record = \"skip\")");
                self.stats.skipped += 1;
                METRICS.records_skipped.inc();
                self.segment(key, dest_idx, rec.offset).skip(rec.offset);
            }
            BadRecordPolicy::DeadLetter => {
                tracing::debug!(%location, %reason, "dead-lettering bad record");
                let line = dead_letter::dead_letter_line(rec, &reason);
                self.open_bytes += line.len() + 1;
                self.segment(key, dest_idx, rec.offset)
                    .push_dead_letter(&line, rec.offset);
            }
        }
        Ok(())
    }

    /// The open segment of a partition, opened at the protocol's next start if needed.
    fn segment(&mut self, key: &PartitionKey, dest_idx: usize, offset: i64) -> &mut Segment {
        let start = match self.open.contains_key(key) {
            true => offset,
            false => self.progress_mut(key).next_start.unwrap_or(offset),
        };
        self.open
            .entry(key.clone())
            .or_insert_with(|| Segment::new(key.0.clone(), key.1, dest_idx, start))
    }

    /// Seals exactly at a recorded `end` that no buffered record reaches.
    fn seal_at(&mut self, key: &PartitionKey, dest_idx: usize, end: i64) {
        let seg = self.segment(key, dest_idx, end);
        seg.end = seg.end.max(end);
        self.seal(key, SealReason::Recovery);
    }

    /// Whether a partition has as many undelivered segments as an intent may list.
    fn at_cap(&self, key: &PartitionKey) -> bool {
        self.progress
            .get(key)
            .is_some_and(|p| p.undelivered() >= MAX_UNDELIVERED_PER_PARTITION)
    }

    /// Seals a partition's open segment; it is uploaded once its intent is committed.
    pub fn seal(&mut self, key: &PartitionKey, reason: SealReason) {
        let Some(mut seg) = self.open.remove(key) else {
            return;
        };
        self.open_bytes = self.open_bytes.saturating_sub(seg.bytes);
        let evolving = self
            .schemas
            .entry((seg.destination, seg.topic.clone()))
            .or_default();
        seg.written_as = Some(
            self.destinations[seg.destination]
                .settings
                .schema
                .file_schema(evolving, &seg.schema),
        );
        METRICS.segments_sealed.inc();
        tracing::debug!(
            topic = %seg.topic, partition = seg.partition, start = seg.start, end = seg.end,
            records = seg.records, bytes = seg.bytes, ?reason, "segment sealed"
        );
        let (topic, partition, end) = (seg.topic.clone(), seg.partition, seg.end);
        let progress = self.progress_mut(key);
        let was_replaying = !progress.forced_ends.is_empty();
        progress.sealed(seg);
        if was_replaying && progress.forced_ends.is_empty() {
            tracing::info!(%topic, partition, last_recorded_end = end,
                "recovered: every recorded segment re-sealed at its end; \
                 the normal rotation policy applies again");
        }
        self.touched.insert(key.clone());
    }

    /// Seals every segment that has been open longer than its destination's `max_age`,
    /// except those being replayed to a recorded end.
    pub fn seal_expired(&mut self) {
        let now = Instant::now();
        let expired: Vec<PartitionKey> = self
            .open
            .iter()
            .filter(|(k, s)| {
                s.expired(now, &self.destinations[s.destination].settings.rotation)
                    && self
                        .progress
                        .get(*k)
                        .is_none_or(|p| p.forced_ends.is_empty())
                    && !self.at_cap(k)
            })
            .map(|(k, _)| k.clone())
            .collect();
        for key in expired {
            self.seal(&key, SealReason::Age);
        }
    }

    /// Seals everything open (end of input, `--once`, shutdown). A partition still replaying
    /// keeps its open records unsealed: sealing short of the recorded end would cut the
    /// segment differently; the next owner replays it.
    pub fn seal_all(&mut self) {
        let keys: Vec<PartitionKey> = self
            .open
            .keys()
            .filter(|k| {
                self.progress
                    .get(*k)
                    .is_none_or(|p| p.forced_ends.is_empty())
            })
            .cloned()
            .collect();
        for key in keys {
            self.seal(&key, SealReason::Drain);
        }
    }

    /// Seals one partition's open segment because its reading stopped, so that everything
    /// before the stop is delivered and committed; unless it is replaying recorded ends (see
    /// [`Pipeline::seal_all`]).
    pub fn seal_partition(&mut self, topic: &str, partition: i32) {
        let key = (self.intern(topic), partition);
        if self
            .progress
            .get(&key)
            .is_none_or(|p| p.forced_ends.is_empty())
        {
            self.seal(&key, SealReason::Stopped);
        }
    }

    /// The commits needed now. Segments whose state is already recorded are released to
    /// delivery at once; the others wait for [`Pipeline::committed`].
    pub fn pending_commits(&mut self) -> Result<Vec<CommitRequest>, PipelineError> {
        let mut requests = Vec::new();
        for key in std::mem::take(&mut self.touched) {
            let Some(progress) = self.progress.get_mut(&key) else {
                continue;
            };
            if !progress.needs_commit() {
                continue;
            }
            let point = progress
                .commit_point()
                .map_err(|source| PipelineError::Intent {
                    topic: key.0.to_string(),
                    partition: key.1,
                    source,
                })?;
            match point {
                Some(point) => requests.push(CommitRequest {
                    partition: key,
                    epoch: progress.epoch,
                    point,
                }),
                None => {
                    let epoch = progress.epoch;
                    let ready = progress.clean();
                    self.submit(ready, epoch);
                }
            }
        }
        Ok(requests)
    }

    /// A commit succeeded: upload what its intent covers.
    pub fn committed(&mut self, request: CommitRequest) {
        let Some(progress) = self.progress.get_mut(&request.partition) else {
            return;
        };
        if progress.epoch != request.epoch {
            return;
        }
        let ready = progress.committed(request.point);
        if progress.needs_commit() {
            self.touched.insert(request.partition);
        }
        self.submit(ready, request.epoch);
    }

    /// A commit failed: nothing it covers is uploaded; it is retried after
    /// [`Pipeline::retry_failed_commits`] (called on a timer, so failures do not spin).
    pub fn commit_failed(&mut self, request: &CommitRequest) {
        if self
            .progress
            .get(&request.partition)
            .is_some_and(|p| p.epoch == request.epoch)
        {
            self.deferred.insert(request.partition.clone());
        }
    }

    /// Makes failed commits due again.
    pub fn retry_failed_commits(&mut self) {
        self.touched.append(&mut self.deferred);
    }

    fn submit(&mut self, segments: Vec<Segment>, epoch: u64) {
        for seg in segments {
            let target = self.destinations[seg.destination].target.clone();
            self.delivery.submit(seg, epoch, target);
        }
    }

    /// True when the in-flight limits are reached. Segments of a destination that refuses
    /// uploads do not count: its partitions are paused instead (see [`Pipeline::pause`]), so
    /// what it holds stopped growing when it began failing, and the others go on.
    fn over_limits(&self) -> bool {
        let (mut segments, mut bytes) = (0, 0);
        for (i, d) in self.destinations.iter().enumerate() {
            if !d.target.health.failing() {
                let load = self.delivery.load(i);
                segments += load.segments;
                bytes += load.bytes;
            }
        }
        segments >= self.limits.max_in_flight_segments || bytes >= self.limits.max_buffer_bytes
    }

    /// True when all consumption should wait for uploads to catch up.
    pub fn backpressured(&self) -> bool {
        self.over_limits()
            || self
                .progress
                .values()
                .any(|p| p.undelivered() >= MAX_UNDELIVERED_PER_PARTITION)
    }

    /// What the source should pause now: everything when over the limits; otherwise the
    /// partitions of destinations that refuse uploads and the partitions with as many
    /// undelivered segments as an intent may list.
    pub fn pause(&self) -> Pause {
        if self.over_limits() {
            return Pause::All;
        }
        let failing = |d: usize| self.destinations[d].target.health.failing();
        let paused = self
            .progress
            .iter()
            .filter(|(key, p)| {
                p.undelivered() >= MAX_UNDELIVERED_PER_PARTITION
                    || self
                        .routes
                        .get(&key.0)
                        .copied()
                        .flatten()
                        .is_some_and(failing)
            })
            .map(|(key, _)| key.clone())
            .collect();
        Pause::Partitions(paused)
    }

    /// Publishes the gauges a scrape reads.
    pub fn publish_gauges(&self) {
        METRICS.partitions_assigned.set(self.progress.len() as u64);
        METRICS
            .segments_in_flight
            .set(self.delivery.in_flight() as u64);
        METRICS.buffered_bytes.set(self.open_bytes as u64);
    }

    /// Segments being encoded or uploaded.
    pub fn in_flight(&self) -> usize {
        self.delivery.in_flight()
    }

    /// Sealed segments not yet durable, across partitions (awaiting intent or uploading).
    pub fn undelivered(&self) -> usize {
        self.progress.values().map(Progress::undelivered).sum()
    }

    /// Waits for the next delivery to finish.
    pub async fn next_completion(&mut self) -> Option<Completion> {
        self.delivery.next().await
    }

    /// Accounts for a finished delivery; the partition's commit may now advance.
    pub fn on_completion(&mut self, c: Completion) -> Result<(), PipelineError> {
        let report = c.result?;
        self.stats.segments_delivered += 1;
        METRICS.segments_delivered.inc();
        METRICS.records_dead_lettered.add(report.dead_letters);
        self.stats.rows_written += report.rows;
        self.stats.dead_lettered += report.dead_letters;
        self.stats.objects_created += report.objects_created;
        self.stats.objects_existing += report.objects_existing;
        tracing::debug!(
            topic = %c.partition.0, partition = c.partition.1, start = c.start, end = c.end,
            created = report.objects_created, existing = report.objects_existing, "segment delivered"
        );
        if let Some(progress) = self.progress.get_mut(&c.partition)
            && progress.epoch == c.epoch
            && progress.delivered(c.start, c.end)
        {
            self.touched.insert(c.partition);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
