//! Files that stream out while their segment is open: a file's buffered rows become a row
//! group handed to its writer (`crate::delivery::ObjectStream`) when the file fills one, or
//! early when memory runs short; a sealed segment's writers get their last rows. Also where
//! memory is relieved, flushing before sealing.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::{Pipeline, SealReason};
use crate::buffer::Segment;
use crate::delivery::{
    ObjectStream, PartitionKey, StreamObject, join_key, object_name, streamed_metadata,
};
use crate::schema::FileSchema;
use crate::telemetry::METRICS;

/// The files of one segment that stream out while it is open, by path.
#[derive(Debug, Default)]
pub(super) struct Streams {
    pub(super) files: BTreeMap<String, ObjectStream>,
    /// The schema their row groups are encoded with: the destination's schema for the topic
    /// (types widened as the topic's are) when the first row group was, and from then on
    /// only new fields added; see [`Pipeline::flush`].
    schema: Option<FileSchema>,
    /// What their writers hold (rows handed over, encoded bytes not yet uploaded).
    held: Arc<AtomicUsize>,
}

impl Streams {
    pub(super) fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    /// Parquet bytes of its largest file so far.
    pub(super) fn largest_file(&self) -> u64 {
        self.files
            .values()
            .map(ObjectStream::encoded)
            .max()
            .unwrap_or(0)
    }
}

/// A file whose rows are below this is sealed, not flushed, when memory runs short: a row
/// group smaller than this costs more in footers and headers than it saves.
const MIN_MEMORY_FLUSH: usize = 64 << 10;

/// Payloads not yet packed below this stay as they are when memory runs short: a frame of
/// fewer JSON bytes compresses less, and packing many would cost more CPU per byte freed.
const MIN_PACK: usize = 32 << 10;

/// zstd's level for packed payloads: its fastest standard level, since packing runs on the
/// run loop; JSON still shrinks several times.
pub(super) const PACK_LEVEL: i32 = 1;

impl Pipeline {
    /// Encodes a file's buffered rows as a row group: its writer starts (the first time) and
    /// its bytes stream out as parts while the file stays open.
    pub(super) fn flush(&mut self, key: &PartitionKey, path: &str) {
        let Some(seg) = self.open.get_mut(key) else {
            return;
        };
        let Some(file) = seg.files.get_mut(path) else {
            return;
        };
        let rows = std::mem::take(file);
        let capacity = rows.capacity();
        seg.held = seg.held.saturating_sub(capacity);
        self.open_bytes = self.open_bytes.saturating_sub(capacity);
        let settings = &self.router.destinations[seg.destination].settings;
        let evolving = self
            .schemas
            .entry((seg.destination, seg.topic.clone()))
            .or_default();
        // The segment's fields, each with the topic's type (which covers the segment's).
        let current = settings
            .schema
            .file_schema(evolving, &seg.schema)
            .only_fields_of(&seg.schema);
        let streams = self.streams.entry(key.clone()).or_default();
        // The types first written stay: the segment's own records cannot change them (they
        // cut it, see `ingest`), so later row groups decode into them. Fields the segment
        // gains later come with the topic's type then; the topic's fields it never has are
        // added as null columns when the file ends.
        let schema = match streams.schema.take() {
            None => current,
            Some(frozen) => frozen.with_new_fields_of(&current),
        };
        streams.schema = Some(schema.clone());
        let stream = match streams.files.entry(path.to_string()) {
            std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::btree_map::Entry::Vacant(slot) => {
                let target = self.router.destinations[seg.destination].target.clone();
                let name =
                    object_name(&seg.topic, seg.partition, seg.lineage, seg.start, "parquet");
                let first = rows.rows.first().map_or(seg.start, |r| r.offset);
                let object = StreamObject {
                    key: join_key(&[&target.prefix, path, &name]),
                    topic: seg.topic.clone(),
                    partition: seg.partition,
                    metadata: streamed_metadata(seg, first),
                    segment_held: streams.held.clone(),
                };
                slot.insert(self.delivery.start_stream(object, target))
            }
        };
        stream.write_group(rows, schema);
    }

    /// Over the budget, frees memory while the protocol allows it. Buffered rows over half the
    /// budget are flushed as row groups (the largest file first; its file stays open and
    /// keeps its size); over the whole budget, counting what the open segments' writers hold,
    /// the largest open segment is sealed. A segment being replayed is neither flushed nor
    /// cut short of its recorded end: then nothing is done here (sealing the others instead
    /// would only make them tiny) and the source is paused (see [`Pipeline::pause`]) until
    /// the replay reaches its end.
    pub(super) fn relieve_memory(&mut self) {
        let limit = self.limits.max_buffer_bytes;
        // Packing first: JSON shrinks several times, so files keep their rows until they
        // make row groups (and objects) of useful size, where flushing would write small
        // row groups and sealing would write small objects.
        while self.open_bytes > limit / 2 && self.pack_largest() {}
        while self.open_bytes > limit / 2 {
            let Some((key, path, bytes)) = self.largest_file() else {
                break;
            };
            if bytes < MIN_MEMORY_FLUSH {
                break;
            }
            METRICS.row_groups_flushed_for_memory.inc();
            self.flush(&key, &path);
        }
        // Open segments keep to three quarters of the budget, so that they alone never hold
        // the source back (see `over_limits`): what is over the budget then is sealed
        // segments, whose delivery frees it.
        let open_limit = limit / 4 * 3;
        if self.open_bytes + self.delivery.stream_memory().held() <= open_limit {
            return;
        }
        while self.open_bytes + self.open_stream_bytes() > open_limit {
            // Partitions at the cap cannot be cut and are paused already; of the others, the
            // largest.
            let Some(largest) = self
                .open
                .iter()
                .filter(|(k, _)| !self.protocol.at_cap(k))
                .max_by_key(|(k, s)| s.held + self.streams.get(*k).map_or(0, Streams::held))
                .map(|(k, _)| k.clone())
            else {
                return;
            };
            if !self.protocol.may_cut(&largest) {
                return;
            }
            self.seal(&largest, SealReason::MemoryPressure);
        }
    }

    /// Packs the open file with the most payloads not yet packed, if it has at least
    /// [`MIN_PACK`] of them; false when none has.
    fn pack_largest(&mut self) -> bool {
        let Some(packer) = self.packer.as_mut() else {
            return false;
        };
        let Some((key, path)) = self
            .open
            .iter()
            .flat_map(|(k, s)| s.files.iter().map(move |(p, f)| (k, p, f.packable())))
            .filter(|(_, _, n)| *n >= MIN_PACK)
            .max_by_key(|(_, _, n)| *n)
            .map(|(k, p, _)| (k.clone(), p.clone()))
        else {
            return false;
        };
        let Some(seg) = self.open.get_mut(&key) else {
            return false;
        };
        let Some(file) = seg.files.get_mut(&path) else {
            return false;
        };
        let (raw, before) = (file.unpacked_len(), file.capacity());
        let packed = file.pack(packer);
        // What the file holds after, as it is: in a rare case (its list of frames grown) it
        // could hold more.
        let after = file.capacity();
        seg.held = (seg.held + after).saturating_sub(before);
        self.open_bytes = (self.open_bytes + after).saturating_sub(before);
        if packed {
            self.stats.packed_bytes += raw as u64;
            METRICS.payload_bytes_packed.inc_by(raw as u64);
        }
        true
    }

    /// The largest buffered file of a partition that may be flushed now.
    fn largest_file(&self) -> Option<(PartitionKey, String, usize)> {
        self.open
            .iter()
            .filter(|(k, _)| self.protocol.may_cut(k))
            .flat_map(|(k, s)| s.files.iter().map(move |(p, f)| (k, p, f.capacity())))
            .max_by_key(|(_, _, bytes)| *bytes)
            .map(|(k, p, bytes)| (k.clone(), p.clone(), bytes))
    }

    /// What the writers of open segments hold.
    fn open_stream_bytes(&self) -> usize {
        self.streams.values().map(Streams::held).sum()
    }

    /// Hands a sealed segment's streaming files their last rows (and the columns its topic
    /// has that they lack); they complete after the segment's intent is committed.
    pub(super) fn finish_streams(
        &mut self,
        key: &PartitionKey,
        seg: &mut Segment,
    ) -> Vec<ObjectStream> {
        let mut finished = Vec::new();
        let Some(streams) = self.streams.remove(key) else {
            return finished;
        };
        let also = seg
            .written_as
            .clone()
            .unwrap_or_else(|| FileSchema::Inferred(Arc::new(seg.schema.clone())));
        let own = also.only_fields_of(&seg.schema);
        let schema = match &streams.schema {
            Some(frozen) => frozen.with_new_fields_of(&own),
            None => own,
        };
        for (path, mut stream) in streams.files {
            let rows = seg.files.remove(&path).unwrap_or_default();
            seg.held = seg.held.saturating_sub(rows.capacity());
            stream.finish(rows, schema.clone(), also.clone());
            finished.push(stream);
        }
        finished
    }
}
