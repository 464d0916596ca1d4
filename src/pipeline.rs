//! The pipeline state between source and store: decode, route, buffer and seal records, and
//! turn finished deliveries into offsets that are safe to commit.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use base64::Engine as _;
use serde_json::{Map, Value, json};

use crate::buffer::{SealReason, Segment};
use crate::config::{BadRecordPolicy, DestinationSettings};
use crate::decode::decode;
use crate::delivery::{Completion, Delivery, DeliveryError, PartitionKey, Target, object_name};

/// S3's limit on key length in bytes.
const MAX_KEY_BYTES: usize = 1024;

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
}

/// Limits that keep memory bounded whatever the traffic.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_buffer_bytes: usize,
    pub max_in_flight_segments: usize,
    pub max_record_bytes: usize,
}

/// Open segments per partition, and the delivery stage they are sealed into.
pub struct Pipeline {
    destinations: Vec<Destination>,
    routes: HashMap<Arc<str>, Option<usize>>,
    open: HashMap<PartitionKey, Segment>,
    epochs: HashMap<PartitionKey, u64>,
    next_epoch: u64,
    delivery: Delivery,
    open_bytes: usize,
    limits: Limits,
    /// Names records in messages: `Some(path)` for a file source ("line N of path").
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
            epochs: HashMap::new(),
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

    /// Takes one record: decode, route, buffer; seals segments as the policy requires.
    pub fn ingest(&mut self, rec: crate::source::Record) -> Result<(), PipelineError> {
        let topic = self.intern(&rec.topic);
        let Some(dest_idx) = self.routes.get(&topic).copied().flatten() else {
            return Err(PipelineError::Unrouted(topic.to_string()));
        };
        self.stats.records += 1;
        let key: PartitionKey = (topic.clone(), rec.partition);
        let routed = self.route_record(dest_idx, &rec);
        let dest = &self.destinations[dest_idx].settings;
        match routed {
            Ok((path, object)) => {
                let over_paths = self
                    .open
                    .get(&key)
                    .is_some_and(|s| s.would_exceed_paths(&path, dest.rotation.max_open_paths));
                if over_paths {
                    self.seal(&key, SealReason::OpenPaths);
                }
                let payload = rec.payload.as_deref().unwrap_or_default();
                let seg = self.segment(&key, dest_idx, rec.offset);
                seg.push_row(path, payload, &object, rec.offset, rec.timestamp_ms);
                self.open_bytes += payload.len();
            }
            Err(reason) => self.bad_record(&key, dest_idx, &rec, reason)?,
        }
        let rotation = &self.destinations[dest_idx].settings.rotation;
        if let Some(reason) = self.open.get(&key).and_then(|s| s.full(rotation)) {
            self.seal(&key, reason);
        }
        while self.open_bytes > self.limits.max_buffer_bytes {
            let Some(largest) = self
                .open
                .iter()
                .max_by_key(|(_, s)| s.bytes)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            self.seal(&largest, SealReason::MemoryPressure);
        }
        Ok(())
    }

    /// Decodes and routes a record: its directory path and its object, or why it is bad.
    fn route_record(
        &self,
        dest_idx: usize,
        rec: &crate::source::Record,
    ) -> Result<(String, Map<String, Value>), String> {
        let dest = &self.destinations[dest_idx];
        let s = &dest.settings;
        let object = decode(rec.payload.as_deref(), self.limits.max_record_bytes)
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
        rec: &crate::source::Record,
        reason: String,
    ) -> Result<(), PipelineError> {
        let location = self.describe(&rec.topic, rec.partition, rec.offset);
        match self.destinations[dest_idx].settings.on_bad_record {
            BadRecordPolicy::Fail => return Err(PipelineError::BadRecord { location, reason }),
            BadRecordPolicy::Skip => {
                tracing::warn!(%location, %reason, "skipping bad record (on_bad_record = \"skip\")");
                self.stats.skipped += 1;
                self.segment(key, dest_idx, rec.offset).skip(rec.offset);
            }
            BadRecordPolicy::DeadLetter => {
                tracing::debug!(%location, %reason, "dead-lettering bad record");
                let line = dead_letter_line(rec, &reason);
                self.open_bytes += line.len() + 1;
                self.segment(key, dest_idx, rec.offset)
                    .push_dead_letter(&line, rec.offset);
            }
        }
        Ok(())
    }

    fn segment(&mut self, key: &PartitionKey, dest_idx: usize, offset: i64) -> &mut Segment {
        self.open
            .entry(key.clone())
            .or_insert_with(|| Segment::new(key.0.clone(), key.1, dest_idx, offset))
    }

    /// Seals a partition's open segment and hands it to delivery.
    pub fn seal(&mut self, key: &PartitionKey, reason: SealReason) {
        let Some(seg) = self.open.remove(key) else {
            return;
        };
        self.open_bytes = self.open_bytes.saturating_sub(seg.bytes);
        tracing::debug!(
            topic = %seg.topic, partition = seg.partition, start = seg.start, end = seg.end,
            records = seg.records, bytes = seg.bytes, ?reason, "segment sealed"
        );
        let epoch = *self.epochs.get(key).unwrap_or(&0);
        let target = self.destinations[seg.destination].target.clone();
        self.delivery.submit(seg, epoch, target);
    }

    /// Seals every segment that has been open longer than its destination's `max_age`.
    pub fn seal_expired(&mut self) {
        let now = Instant::now();
        let expired: Vec<PartitionKey> = self
            .open
            .iter()
            .filter(|(_, s)| s.expired(now, &self.destinations[s.destination].settings.rotation))
            .map(|(k, _)| k.clone())
            .collect();
        for key in expired {
            self.seal(&key, SealReason::Age);
        }
    }

    /// Seals everything open (end of input, `--once`, shutdown).
    pub fn seal_all(&mut self) {
        let keys: Vec<PartitionKey> = self.open.keys().cloned().collect();
        for key in keys {
            self.seal(&key, SealReason::Drain);
        }
    }

    /// Starts a new ownership epoch for newly assigned partitions.
    pub fn assign(&mut self, partitions: &[(String, i32)]) {
        for (t, p) in partitions {
            let key = (self.intern(t), *p);
            self.epochs.insert(key, self.next_epoch);
            self.next_epoch += 1;
        }
    }

    /// Drops the open buffers and pending commits of revoked partitions: the next owner
    /// consumes them again from the last committed offset.
    pub fn revoke(&mut self, partitions: &[(String, i32)]) {
        for (t, p) in partitions {
            let key = (self.intern(t), *p);
            if let Some(seg) = self.open.remove(&key) {
                self.open_bytes = self.open_bytes.saturating_sub(seg.bytes);
            }
            self.delivery.forget(&key);
            self.epochs.remove(&key);
        }
    }

    /// True when consumption should wait for uploads to catch up.
    pub fn backpressured(&self) -> bool {
        self.delivery.in_flight() >= self.limits.max_in_flight_segments
            || self.delivery.in_flight_bytes() >= self.limits.max_buffer_bytes
    }

    /// Segments sealed and not yet delivered.
    pub fn in_flight(&self) -> usize {
        self.delivery.in_flight()
    }

    /// True when nothing is open or in flight.
    pub fn is_idle(&self) -> bool {
        self.open.is_empty() && self.delivery.in_flight() == 0
    }

    /// Waits for the next delivery to finish.
    pub async fn next_completion(&mut self) -> Option<Completion> {
        self.delivery.next().await
    }

    /// Accounts for a finished delivery; returns an offset that is now safe to commit.
    pub fn on_completion(
        &mut self,
        c: Completion,
    ) -> Result<Option<(PartitionKey, i64)>, PipelineError> {
        let report = c.result.as_ref().map_err(|_| ()).copied();
        let Ok(report) = report else {
            return match c.result {
                Err(e) => Err(e.into()),
                Ok(_) => Ok(None),
            };
        };
        self.stats.segments_delivered += 1;
        self.stats.rows_written += report.rows;
        self.stats.dead_lettered += report.dead_letters;
        self.stats.objects_created += report.objects_created;
        self.stats.objects_existing += report.objects_existing;
        tracing::debug!(
            topic = %c.partition.0, partition = c.partition.1, start = c.start, end = c.end,
            created = report.objects_created, existing = report.objects_existing, "segment delivered"
        );
        Ok(self
            .delivery
            .complete(&c)
            .map(|offset| (c.partition, offset)))
    }
}

/// One dead-letter NDJSON line: the record's coordinates, the reason, and the raw payload
/// (as text when it is UTF-8, base64 otherwise).
fn dead_letter_line(rec: &crate::source::Record, reason: &str) -> Vec<u8> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut map = Map::new();
    map.insert("topic".into(), json!(&*rec.topic));
    map.insert("partition".into(), json!(rec.partition));
    map.insert("offset".into(), json!(rec.offset));
    map.insert("timestamp_ms".into(), json!(rec.timestamp_ms));
    map.insert("reason".into(), json!(reason));
    for (name, bytes) in [
        ("key", rec.key.as_deref()),
        ("payload", rec.payload.as_deref()),
    ] {
        match bytes {
            None => {
                map.insert(name.into(), Value::Null);
            }
            Some(bytes) => match std::str::from_utf8(bytes) {
                Ok(text) => {
                    map.insert(name.into(), Value::String(text.to_string()));
                }
                Err(_) => {
                    map.insert(format!("{name}_base64"), Value::String(b64.encode(bytes)));
                }
            },
        }
    }
    // Serialising a map of plain values cannot fail.
    serde_json::to_vec(&Value::Object(map)).unwrap_or_default()
}
