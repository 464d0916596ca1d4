//! The pipeline between source and store: routes records (`route`), buffers them in open
//! segments under the memory budget, and follows the delivery protocol (`crate::protocol`):
//! it seals where the protocol allows or requires, hands sealed segments to delivery when the
//! protocol says their intent is recorded, and passes the protocol's commits and stops to the
//! run loop.

mod dead_letter;
mod limits;
mod route;
mod streams;

use std::collections::BTreeSet;

// Looked up several times per record on the run loop: a fast hasher, seeded per process.
use foldhash::HashMap;
use std::sync::Arc;
use std::time::Instant;

use crate::buffer::{SealReason, Segment};
use crate::config::{BadRecordPolicy, DestinationSettings};
use crate::decode::decode;
use crate::delivery::{
    Completion, Delivery, DeliveryError, Handoff, ObjectStream, PartitionKey, Target,
};
use crate::protocol::{
    Action, Assignment, Commit, Cut, Offset, Protocol, SegmentId, Settings as ProtocolSettings,
    Start, StopReason,
};
use crate::schema::Fields;
use crate::source::Record;
use crate::telemetry::METRICS;

use route::Router;
pub use route::{RouteMemo, Routed, Routes};
use streams::{PACK_LEVEL, Streams};

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
    /// Segments sealed before their rotation limits because the memory budget was reached.
    pub sealed_for_memory: u64,
    /// Payload bytes packed in memory (compressed while their file stays open) because the
    /// memory budget was reached.
    pub packed_bytes: u64,
    /// The most the budget ever accounted at once: open, sealed and in-flight segments.
    pub peak_buffered_bytes: u64,
    /// The most bytes of records the Kafka partition readers ever held at once, read and not
    /// yet taken by the run loop (the read-ahead share); 0 for other sources. Set by the run.
    pub peak_read_ahead_bytes: u64,
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
    /// These partitions only (a destination refusing uploads, a partition at the cap of
    /// undelivered segments, a stopped partition); possibly none.
    Partitions(BTreeSet<PartitionKey>),
}

/// A partition the protocol stopped: nothing from `offset` on is delivered or committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stopped {
    pub partition: PartitionKey,
    pub offset: Offset,
    pub reason: StopReason,
}

/// What the run loop must do for the protocol to go on.
#[derive(Debug, Default)]
pub struct Due {
    /// Commit these in one request.
    pub commits: Vec<Commit<PartitionKey>>,
    /// Stop reading these partitions.
    pub stops: Vec<Stopped>,
}

/// Open segments per partition, the protocol, and the delivery stage.
pub struct Pipeline {
    router: Router,
    open: HashMap<PartitionKey, Segment>,
    /// The streaming files of open segments.
    streams: HashMap<PartitionKey, Streams>,
    open_bytes: usize,
    /// The evolving schema of each destination and topic (infer mode), files are written with.
    schemas: HashMap<(usize, Arc<str>), Arc<Fields>>,
    protocol: Protocol<PartitionKey>,
    /// Sealed segments waiting for the protocol to let them be uploaded, with their streamed
    /// files (finished, waiting to complete).
    sealed: HashMap<(PartitionKey, SegmentId), (Segment, Vec<ObjectStream>)>,
    /// What the segments in `sealed` hold.
    sealed_bytes: usize,
    delivery: Delivery,
    limits: Limits,
    /// Names records in messages: `Some(path)` for a file source ("path line N").
    file_name: Option<String>,
    /// What routing the records this pipeline routed itself left (see `Routes::route_record`).
    route_memo: RouteMemo,
    /// Packs buffered payloads under memory pressure (see `Pipeline::relieve_memory`); `None`
    /// if zstd could not make one (then nothing is packed).
    packer: Option<zstd::bulk::Compressor<'static>>,
    pub stats: RunStats,
}

impl Pipeline {
    /// A pipeline writing to `destinations` through `delivery`.
    pub fn new(
        destinations: Vec<Destination>,
        delivery: Delivery,
        limits: Limits,
        protocol: ProtocolSettings,
        file_name: Option<String>,
    ) -> Self {
        Self {
            router: Router::new(destinations),
            open: HashMap::default(),
            streams: HashMap::default(),
            open_bytes: 0,
            schemas: HashMap::default(),
            protocol: Protocol::new(protocol),
            sealed: HashMap::default(),
            sealed_bytes: 0,
            delivery,
            limits,
            file_name,
            route_memo: RouteMemo::default(),
            packer: zstd::bulk::Compressor::new(PACK_LEVEL).ok(),
            stats: RunStats::default(),
        }
    }

    /// The shared name of a topic.
    pub fn intern(&mut self, topic: &str) -> Arc<str> {
        self.router.intern(topic)
    }

    fn describe(&self, topic: &str, partition: i32, offset: i64) -> String {
        match &self.file_name {
            Some(name) => format!("{name} line {offset}"),
            None => format!("topic {topic} partition {partition} offset {offset}"),
        }
    }

    /// Takes ownership of a partition; returns where to read from, or why it is stopped.
    pub fn assign(
        &mut self,
        topic: &str,
        partition: i32,
        assignment: Assignment,
    ) -> Result<Start, StopReason> {
        let key = (self.intern(topic), partition);
        self.drop_buffers(&key);
        let start = self.protocol.assign(key, assignment)?;
        if start.replaying {
            METRICS.recoveries.inc();
            tracing::info!(
                topic,
                partition,
                from = start.from,
                "recovering: replaying sealed segments to exactly their recorded ends"
            );
        }
        Ok(start)
    }

    /// Drops the buffers of revoked partitions: the next owner consumes them again from the
    /// last commit, whose intent tells it where to cut.
    pub fn revoke(&mut self, partitions: &[(String, i32)]) {
        for (t, p) in partitions {
            let key = (self.intern(t), *p);
            self.drop_buffers(&key);
            self.protocol.revoke(&key);
        }
    }

    /// Dropping a streamed file's handle aborts its upload: its object never appears.
    fn drop_buffers(&mut self, key: &PartitionKey) {
        if let Some(seg) = self.open.remove(key) {
            self.open_bytes = self.open_bytes.saturating_sub(seg.held);
        }
        self.streams.remove(key);
        self.sealed.retain(|(k, _), _| k != key);
        self.sealed_bytes = self.sealed.values().map(|(s, _)| s.held).sum();
    }

    /// The destinations, to route records before they reach the pipeline
    /// ([`Pipeline::ingest_routed`]).
    pub fn routes(&self) -> Routes {
        self.router.routes()
    }

    /// Takes one record: route, buffer; seals as the policy (or, while recovering, the
    /// recorded ends) require. A record of a partition not owned or stopped is left: it is
    /// read again by whoever reads the partition next.
    pub fn ingest(&mut self, rec: Record) -> Result<(), PipelineError> {
        let routed = self.router.routes().route_record(rec, &mut self.route_memo);
        self.ingest_routed(routed)
    }

    /// Takes one record routed elsewhere (see [`Routes::route_record`]), as
    /// [`Pipeline::ingest`] does.
    pub fn ingest_routed(&mut self, routed: Routed) -> Result<(), PipelineError> {
        let (rec, destination, routed) = routed.into_parts();
        let topic = self.intern(&rec.topic);
        let Some(dest_idx) = destination else {
            return Err(PipelineError::Unrouted(topic.to_string()));
        };
        let key: PartitionKey = (topic, rec.partition);
        // Recorded ends before this record: the segment's last records are gone (compaction).
        while let Some(end) = self.protocol.recorded_end_before(&key, rec.offset) {
            if !self.cut(&key, dest_idx, Cut::Recorded(end), SealReason::Recovery) {
                break;
            }
        }
        let rotation = &self.router.destinations[dest_idx].settings.rotation;
        if let Ok((path, _)) = &routed
            && self.protocol.may_cut(&key)
            && self
                .open
                .get(&key)
                .is_some_and(|s| s.would_exceed_paths(path, rotation.max_open_paths))
        {
            self.seal(&key, SealReason::OpenPaths);
        }
        // A file with row groups written cannot change a column's type: cut before the
        // record that would. Where this happens depends on the segment's records alone, so a
        // replay (which cannot cut) finds its recorded end here instead.
        let mut reshape_refused = false;
        let destinations = self.router.destinations.clone();
        let schema = &destinations[dest_idx].settings.schema;
        // The record decoded again, on the loop: only when its shape is new to its segment.
        let object = || {
            decode(
                rec.payload.as_deref(),
                schema.max_record_bytes,
                schema.max_depth,
            )
            .map_err(|e| e.to_string())
        };
        if let Ok((_, fit)) = &routed
            && self.streams.get(&key).is_some_and(|s| !s.files.is_empty())
            && let Some(seg) = self.open.get(&key)
            && schema.reshapes_fit(&seg.schema, &seg.admitted, fit, object)
        {
            if self.protocol.may_cut(&key) {
                self.seal(&key, SealReason::SchemaChange);
            } else {
                // Replaying (the earlier owner could not cut here either) or at the cap of
                // undelivered segments: the record is a bad record, handled as configured.
                reshape_refused = true;
            }
        }
        let Ok(admission) = self.protocol.admit(&key, rec.offset) else {
            return Ok(());
        };
        self.stats.records += 1;
        METRICS.records_consumed.inc();
        let start = admission.segment_start;
        let seg = self.open.entry(key.clone()).or_insert_with(|| {
            let mut seg = Segment::new(key.0.clone(), key.1, dest_idx, start);
            seg.lineage = Some(admission.lineage);
            seg
        });
        // Admitted against the segment the record lands in (after any seal above), so a
        // replay of that segment admits exactly the same records.
        let admitted = routed.and_then(|(path, fit)| {
            if reshape_refused {
                return Err(
                    "it would change the type of a column that rows already written \
                     to its streaming file have (the segment cannot be cut here: it is being \
                     replayed or its partition is at the cap of undelivered segments)"
                        .to_string(),
                );
            }
            schema
                .admit_fit(&mut seg.schema, &mut seg.admitted, &fit, object)
                .map(|()| path)
        });
        match admitted {
            Ok(path) => {
                let payload = rec.payload.as_deref().unwrap_or_default();
                let key_bytes = rec.key.as_deref();
                let before = seg.held;
                let parquet = &self.router.destinations[dest_idx].settings.parquet;
                let flush = seg.files.get(&*path).is_some_and(|f| {
                    f.rows.len() + 1 >= parquet.row_group_size
                        || f.payload_len() + payload.len() >= parquet.row_group_bytes
                });
                seg.push_row(&path, payload, key_bytes, rec.offset, rec.timestamp_ms);
                self.open_bytes += seg.held - before;
                if flush {
                    self.flush(&key, &path);
                }
                // Records are the only thing that adds to what the budget counts (sealing and
                // handing over move bytes between its parts), so its peak is found here.
                let accounted = (self.held_bytes() + self.delivery.held_bytes()) as u64;
                self.stats.peak_buffered_bytes = self.stats.peak_buffered_bytes.max(accounted);
            }
            Err(reason) => self.bad_record(&key, &rec, reason)?,
        }
        if admission.seal_after {
            self.cut(
                &key,
                dest_idx,
                Cut::Recorded(rec.offset),
                SealReason::Recovery,
            );
            return Ok(());
        }
        let rotation = &self.router.destinations[dest_idx].settings.rotation;
        let reason = self
            .open
            .get(&key)
            .and_then(|s| s.full(rotation))
            .or_else(|| {
                self.streams
                    .get(&key)
                    .is_some_and(|s| s.largest_file() >= rotation.target_file_size)
                    .then_some(SealReason::FileSize)
            });
        if let Some(reason) = reason {
            self.seal(&key, reason);
        }
        self.relieve_memory();
        Ok(())
    }

    fn bad_record(
        &mut self,
        key: &PartitionKey,
        rec: &Record,
        reason: String,
    ) -> Result<(), PipelineError> {
        let location = self.describe(&rec.topic, rec.partition, rec.offset);
        let Some(seg) = self.open.get_mut(key) else {
            return Ok(());
        };
        match self.router.destinations[seg.destination]
            .settings
            .on_bad_record
        {
            BadRecordPolicy::Fail => return Err(PipelineError::BadRecord { location, reason }),
            BadRecordPolicy::Skip => {
                tracing::warn!(%location, %reason, "skipping bad record (on_bad_record = \"skip\")");
                self.stats.skipped += 1;
                METRICS.records_skipped.inc();
                seg.skip(rec.offset);
            }
            BadRecordPolicy::DeadLetter => {
                tracing::debug!(%location, %reason, "dead-lettering bad record");
                let line = dead_letter::dead_letter_line(rec, &reason);
                let before = seg.held;
                seg.push_dead_letter(&line, rec.offset);
                self.open_bytes += seg.held - before;
            }
        }
        Ok(())
    }

    /// Seals a partition's open segment by policy, if the protocol allows it now.
    pub fn seal(&mut self, key: &PartitionKey, reason: SealReason) {
        let Some(dest_idx) = self.open.get(key).map(|s| s.destination) else {
            return;
        };
        let cut = match reason {
            SealReason::Drain | SealReason::Stopped => Cut::Final,
            _ => Cut::Policy,
        };
        let _ = self.cut(key, dest_idx, cut, reason);
    }

    /// Seals where `cut` says; a recorded end no record reached seals an empty segment.
    /// Returns whether a segment was sealed.
    fn cut(&mut self, key: &PartitionKey, dest_idx: usize, cut: Cut, reason: SealReason) -> bool {
        let bytes = self.open.get(key).map_or(0, |s| s.held);
        let Some(id) = self.protocol.seal(key, cut, bytes) else {
            return false;
        };
        let mut seg = match self.open.remove(key) {
            Some(seg) => {
                self.open_bytes = self.open_bytes.saturating_sub(seg.held);
                seg
            }
            None => Segment::new(key.0.clone(), key.1, dest_idx, id.start),
        };
        seg.start = id.start;
        seg.end = seg.end.max(id.end);
        seg.lineage = Some(id.lineage);
        let evolving = self
            .schemas
            .entry((seg.destination, seg.topic.clone()))
            .or_default();
        seg.written_as = Some(
            self.router.destinations[seg.destination]
                .settings
                .schema
                .file_schema(evolving, &seg.schema),
        );
        METRICS.segments_sealed.inc();
        tracing::debug!(
            topic = %seg.topic, partition = seg.partition, start = seg.start, end = seg.end,
            records = seg.records, bytes = seg.bytes, ?reason, "segment sealed"
        );
        if matches!(cut, Cut::Recorded(_)) && !self.protocol.replaying(key) {
            tracing::info!(topic = %key.0, partition = key.1, last_recorded_end = id.end,
                "recovered: every recorded segment re-sealed at its end; \
                 the normal rotation policy applies again");
        }
        if reason == SealReason::MemoryPressure {
            self.stats.sealed_for_memory += 1;
            METRICS.segments_sealed_for_memory.inc();
        }
        let finished = self.finish_streams(key, &mut seg);
        self.sealed_bytes += seg.held;
        self.sealed.insert((key.clone(), id), (seg, finished));
        true
    }

    /// Seals every segment that has been open longer than its destination's `max_age`.
    pub fn seal_expired(&mut self) {
        let now = Instant::now();
        let expired: Vec<PartitionKey> = self
            .open
            .iter()
            .filter(|(_, s)| {
                s.expired(
                    now,
                    &self.router.destinations[s.destination].settings.rotation,
                )
            })
            .map(|(k, _)| k.clone())
            .collect();
        for key in expired {
            self.seal(&key, SealReason::Age);
        }
    }

    /// Seals everything open (end of input, `--once`, shutdown) where the protocol allows: a
    /// partition still replaying, or at the cap, keeps its open records for the next owner.
    pub fn seal_all(&mut self) {
        let keys: Vec<PartitionKey> = self.open.keys().cloned().collect();
        for key in keys {
            self.seal(&key, SealReason::Drain);
        }
    }

    /// Seals one partition's open segment because its reading stopped, so that everything
    /// before the stop is delivered and committed.
    pub fn seal_partition(&mut self, topic: &str, partition: i32) {
        let key = (self.intern(topic), partition);
        self.seal(&key, SealReason::Stopped);
    }

    /// What the protocol needs done now. Uploads it allows start here; commits and stops go
    /// to the caller.
    pub fn due(&mut self) -> Due {
        let mut due = Due::default();
        for action in self.protocol.poll() {
            match action {
                Action::Commit(commits) => due.commits.extend(commits),
                Action::Upload {
                    partition,
                    token,
                    segment,
                } => {
                    let Some((seg, streams)) = self.sealed.remove(&(partition.clone(), segment))
                    else {
                        continue;
                    };
                    self.sealed_bytes = self.sealed_bytes.saturating_sub(seg.held);
                    let target = self.router.destinations[seg.destination].target.clone();
                    let handoff = Handoff {
                        partition,
                        token,
                        segment,
                    };
                    self.delivery.submit(seg, streams, handoff, target);
                }
                Action::Stop {
                    partition,
                    offset,
                    reason,
                } => {
                    if let Some(seg) = self.open.remove(&partition) {
                        self.open_bytes = self.open_bytes.saturating_sub(seg.held);
                    }
                    self.streams.remove(&partition);
                    due.stops.push(Stopped {
                        partition,
                        offset,
                        reason,
                    });
                }
            }
        }
        due
    }

    /// The commits were acknowledged: what their intents cover may be uploaded.
    pub fn commits_acknowledged(&mut self, commits: &[Commit<PartitionKey>]) {
        self.protocol.commits_acknowledged(commits);
    }

    /// The commits failed: they are sent again after the next [`Pipeline::tick`].
    pub fn commits_failed(&mut self, commits: &[Commit<PartitionKey>]) {
        self.protocol.commits_failed(commits);
    }

    /// Time passed: failed commits are due again.
    pub fn tick(&mut self) {
        self.protocol.tick();
    }

    /// Waits for the next delivery to finish.
    pub async fn next_completion(&mut self) -> Option<Completion> {
        self.delivery.next().await
    }

    /// Accounts for a finished delivery. A segment that cannot be encoded stops its partition
    /// (see [`Pipeline::due`]); an upload that gave up fails the run, nothing past it being
    /// committed.
    pub fn on_completion(&mut self, c: Completion) -> Result<(), PipelineError> {
        let Some(handoff) = c.handoff else {
            return Err(PipelineError::Delivery(c.result.err().unwrap_or_else(
                || DeliveryError::Task("a delivery task ended without its segment".into()),
            )));
        };
        let Handoff {
            partition,
            token,
            segment,
        } = handoff;
        let report = match c.result {
            Ok(report) => report,
            Err(e @ (DeliveryError::Encode { .. } | DeliveryError::Task(_))) => {
                tracing::error!(topic = %partition.0, partition = partition.1,
                    start = segment.start, end = segment.end, error = %e,
                    "a segment cannot be delivered; its partition stops there");
                self.protocol
                    .undeliverable(&partition, token, segment, e.to_string());
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        };
        self.stats.segments_delivered += 1;
        METRICS.segments_delivered.inc();
        if let Some(d) = self.router.destinations.get(c.destination) {
            d.target
                .health
                .delivered(report.rows, report.newest_timestamp_ms);
        }
        METRICS.records_dead_lettered.inc_by(report.dead_letters);
        self.stats.rows_written += report.rows;
        self.stats.dead_lettered += report.dead_letters;
        self.stats.objects_created += report.objects_created;
        self.stats.objects_existing += report.objects_existing;
        tracing::debug!(
            topic = %partition.0, partition = partition.1, start = segment.start, end = segment.end,
            created = report.objects_created, existing = report.objects_existing, "segment delivered"
        );
        self.protocol.delivered(&partition, token, segment);
        Ok(())
    }
}

#[cfg(test)]
mod tests;
