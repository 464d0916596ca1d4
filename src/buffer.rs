//! Open segments: the records of one Kafka partition gathered per output path until the
//! rotation policy seals them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use crate::config::RotationSettings;
use crate::protocol::Lineage;
use crate::schema::{Fields, FileSchema};

/// What an open path costs beyond its name: the map entry and its file's three vectors.
const PATH_OVERHEAD: usize = size_of::<OpenFile>() + size_of::<String>() + 32;

/// Where a record sits in its source, kept for metadata columns and provenance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowMeta {
    pub offset: i64,
    pub timestamp_ms: Option<i64>,
    /// End of this record's payload in [`OpenFile::payloads`] (packed ones included).
    pub end: usize,
    /// End of this record's Kafka key in [`OpenFile::keys`] (empty when it has none).
    pub key_end: usize,
    pub has_key: bool,
}

/// The records bound for one object: raw payloads (and keys) back to back. Under memory
/// pressure the payloads taken so far can be packed (see [`OpenFile::pack`]), so that a
/// file's rows stay buffered until they make a row group of useful size instead of being
/// written out as a tiny one.
#[derive(Debug, Default)]
pub struct OpenFile {
    /// Payloads after those packed.
    payloads: Vec<u8>,
    /// Earlier payloads, packed in the order they came.
    packed: Vec<Packed>,
    /// Payload bytes the packed frames hold.
    packed_raw: usize,
    /// How many of `payloads` did not shrink when packed last (see [`OpenFile::packable`]).
    refused: usize,
    pub keys: Vec<u8>,
    pub rows: Vec<RowMeta>,
}

/// Payloads packed as one zstd frame.
#[derive(Debug)]
struct Packed {
    frame: Box<[u8]>,
    raw: usize,
}

/// A packed frame that does not unpack to what was packed: a pail bug.
#[derive(Debug, thiserror::Error)]
#[error("packed payloads could not be unpacked ({0}); a pail bug, please report it")]
pub struct UnpackError(String);

impl OpenFile {
    /// Where row `i`'s payload lies in [`OpenFile::payloads`].
    pub fn payload_range(&self, i: usize) -> std::ops::Range<usize> {
        let start = if i == 0 { 0 } else { self.rows[i - 1].end };
        start..self.rows[i].end
    }

    /// Every payload, back to back: borrowed unless some are packed, then unpacked into a
    /// buffer of their own (the encoder's working set, not the budget's).
    pub fn payloads(&self) -> Result<std::borrow::Cow<'_, [u8]>, UnpackError> {
        if self.packed.is_empty() {
            return Ok(std::borrow::Cow::Borrowed(&self.payloads));
        }
        let mut all = Vec::with_capacity(self.payload_len());
        let mut unpacker =
            zstd::bulk::Decompressor::new().map_err(|e| UnpackError(e.to_string()))?;
        for p in &self.packed {
            let before = all.len();
            all.reserve(p.raw);
            // Written after what is there: a `Vec` alone would be written from its start.
            let mut at = std::io::Cursor::new(&mut all);
            at.set_position(before as u64);
            unpacker
                .decompress_to_buffer(&p.frame, &mut at)
                .map_err(|e| UnpackError(e.to_string()))?;
            let got = all.len().saturating_sub(before);
            if got != p.raw {
                return Err(UnpackError(format!(
                    "a frame of {} bytes gave {got}",
                    p.raw
                )));
            }
        }
        all.extend_from_slice(&self.payloads);
        Ok(std::borrow::Cow::Owned(all))
    }

    /// Payload bytes of every row, packed or not.
    pub fn payload_len(&self) -> usize {
        self.packed_raw + self.payloads.len()
    }

    /// Payload bytes not packed yet.
    pub fn unpacked_len(&self) -> usize {
        self.payloads.len()
    }

    /// Payload bytes that packing may shrink: those not packed yet, or none while they have
    /// not doubled since they last did not shrink (so JSON that packs poorly is compressed
    /// a few times over its life, not again each time a little more has come).
    pub fn packable(&self) -> usize {
        if self.payloads.len() >= self.refused.saturating_mul(2) {
            self.payloads.len()
        } else {
            0
        }
    }

    /// Packs the payloads taken since the last pack into one frame, and gives their buffer
    /// back; false, and nothing packed, when the frame would not be an eighth smaller (see
    /// [`OpenFile::packable`]). What it then holds is [`OpenFile::capacity`].
    pub fn pack(&mut self, packer: &mut zstd::bulk::Compressor<'_>) -> bool {
        let frame = match packer.compress(&self.payloads) {
            // Worth it only when it saves an eighth at least.
            Ok(frame) if frame.len() + size_of::<Packed>() < self.payloads.len() / 8 * 7 => frame,
            _ => {
                self.refused = self.payloads.len();
                return false;
            }
        };
        self.refused = 0;
        self.packed_raw += self.payloads.len();
        self.packed.push(Packed {
            frame: frame.into_boxed_slice(),
            raw: self.payloads.len(),
        });
        self.payloads = Vec::new();
        true
    }

    /// The Kafka key of row `i`, if it had one.
    pub fn key(&self, i: usize) -> Option<&[u8]> {
        let row = &self.rows[i];
        let start = if i == 0 { 0 } else { self.rows[i - 1].key_end };
        row.has_key.then(|| &self.keys[start..row.key_end])
    }

    /// Bytes its buffers have allocated: what it holds, room not yet used included.
    pub fn capacity(&self) -> usize {
        self.payloads.capacity()
            + self.keys.capacity()
            + self.rows.capacity() * size_of::<RowMeta>()
            + self.packed.capacity() * size_of::<Packed>()
            + self.packed.iter().map(|p| p.frame.len()).sum::<usize>()
    }

    /// True when some row has a Kafka key.
    pub fn has_keys(&self) -> bool {
        self.rows.iter().any(|r| r.has_key)
    }
}

/// Makes room for `more` items in `v`, growing it by a quarter (at least `more`, at least
/// 256 bytes) instead of doubling: a buffer's unused room stays within a quarter of what it
/// holds, and that room is counted against the memory budget like the rest.
fn grow<T>(v: &mut Vec<T>, more: usize) {
    if v.capacity() - v.len() >= more {
        return;
    }
    let step = (v.len() / 4).max(more).max(256 / size_of::<T>().max(1));
    v.reserve_exact(step);
}

/// Why a segment was sealed; logged and counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SealReason {
    Records,
    Bytes,
    Age,
    OpenPaths,
    /// An open file reached `target_file_size` of Parquet.
    FileSize,
    /// A record would change the type of a column a streaming file has written.
    SchemaChange,
    MemoryPressure,
    Drain,
    Recovery,
    /// The partition cannot be read further (a Kafka consume error): what came before is
    /// delivered.
    Stopped,
}

/// An open (or sealed) segment: a contiguous offset range of one partition.
#[derive(Debug)]
pub struct Segment {
    pub topic: Arc<str>,
    pub partition: i32,
    pub destination: usize,
    /// First offset in the segment.
    pub start: i64,
    /// Last offset in the segment (bad and skipped records included).
    pub end: i64,
    /// Data files by directory path (relative to the destination prefix).
    pub files: BTreeMap<String, OpenFile>,
    /// Dead-lettered records as NDJSON lines.
    pub dead_letters: Vec<u8>,
    pub dead_letter_count: u64,
    /// The schema grown from this segment's records alone (infer mode), against which its
    /// records are admitted.
    pub schema: Fields,
    /// The last record shape `schema` was found to subsume: a record of the same shape (the
    /// same allocation, see `SchemaSettings::fit`) is admitted without a look. The schema only
    /// grows, so what it subsumed once it always does.
    pub admitted: Option<Arc<Fields>>,
    /// The schema its files are written with; set when it is sealed.
    pub written_as: Option<FileSchema>,
    /// The life of the offsets it belongs to, named in its objects' keys; set when it is
    /// sealed.
    pub lineage: Option<Lineage>,
    /// Records that will be written (data rows plus dead letters).
    pub records: u64,
    /// Buffered record bytes (payloads, keys and dead-letter lines): what `max_bytes` limits.
    pub bytes: usize,
    /// Memory the segment holds: what its buffers allocated (`bytes`, each row's offsets and
    /// timestamp, which for ~100-byte events is a third as much again, and room not yet used:
    /// at most a quarter, see `grow`) and each open path. What the memory budget counts.
    pub held: usize,
    /// The newest Kafka timestamp among its rows: how fresh the destination is once they
    /// are delivered.
    pub newest_timestamp_ms: Option<i64>,
    opened: Instant,
}

impl Segment {
    /// Opens a segment whose first record is `offset`.
    pub fn new(topic: Arc<str>, partition: i32, destination: usize, offset: i64) -> Self {
        Self {
            topic,
            partition,
            destination,
            start: offset,
            end: offset,
            files: BTreeMap::new(),
            dead_letters: Vec::new(),
            dead_letter_count: 0,
            schema: Fields::default(),
            admitted: None,
            written_as: None,
            lineage: None,
            records: 0,
            bytes: 0,
            held: 0,
            newest_timestamp_ms: None,
            opened: Instant::now(),
        }
    }

    /// True if adding a row for `path` would exceed the open-path limit.
    pub fn would_exceed_paths(&self, path: &str, max_open_paths: usize) -> bool {
        !self.files.contains_key(path) && self.files.len() >= max_open_paths
    }

    /// Adds an admitted record under `path`.
    pub fn push_row(
        &mut self,
        path: &str,
        payload: &[u8],
        key: Option<&[u8]>,
        offset: i64,
        timestamp_ms: Option<i64>,
    ) {
        // Looked up by reference first: the key is copied only for a new path.
        let file = match self.files.get_mut(path) {
            Some(file) => file,
            None => {
                self.held += path.len() + PATH_OVERHEAD;
                self.files.entry(path.to_string()).or_default()
            }
        };
        let before = file.capacity();
        grow(&mut file.payloads, payload.len());
        file.payloads.extend_from_slice(payload);
        if let Some(key) = key {
            grow(&mut file.keys, key.len());
            file.keys.extend_from_slice(key);
        }
        grow(&mut file.rows, 1);
        file.rows.push(RowMeta {
            offset,
            timestamp_ms,
            end: file.payload_len(),
            key_end: file.keys.len(),
            has_key: key.is_some(),
        });
        if let Some(ts) = timestamp_ms {
            self.newest_timestamp_ms = Some(self.newest_timestamp_ms.map_or(ts, |n| n.max(ts)));
        }
        self.records += 1;
        self.bytes += payload.len() + key.map_or(0, <[u8]>::len);
        self.held += file.capacity() - before;
        self.end = offset;
    }

    /// Adds one dead-letter NDJSON line (without its newline).
    pub fn push_dead_letter(&mut self, line: &[u8], offset: i64) {
        let before = self.dead_letters.capacity();
        grow(&mut self.dead_letters, line.len() + 1);
        self.dead_letters.extend_from_slice(line);
        self.dead_letters.push(b'\n');
        self.dead_letter_count += 1;
        self.records += 1;
        self.bytes += line.len() + 1;
        self.held += self.dead_letters.capacity() - before;
        self.end = offset;
    }

    /// Extends the segment over a record that is dropped (skipped).
    pub fn skip(&mut self, offset: i64) {
        self.end = offset;
    }

    /// The size or count limit this segment has reached, if any.
    pub fn full(&self, rotation: &RotationSettings) -> Option<SealReason> {
        if self.records >= rotation.max_records {
            Some(SealReason::Records)
        } else if rotation
            .max_bytes
            .is_some_and(|max| self.bytes as u64 >= max)
        {
            Some(SealReason::Bytes)
        } else {
            None
        }
    }

    /// True when the segment has been open for at least `max_age`.
    pub fn expired(&self, now: Instant, rotation: &RotationSettings) -> bool {
        now.duration_since(self.opened) >= rotation.max_age
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(i: i64) -> String {
        format!(r#"{{"i":{i},"text":"a sentence that repeats, as fields of events do"}}"#)
    }

    fn packer() -> zstd::bulk::Compressor<'static> {
        zstd::bulk::Compressor::new(1).unwrap()
    }

    #[test]
    fn packed_payloads_read_back_as_they_were_taken() {
        let mut seg = Segment::new(Arc::from("t"), 0, 0, 0);
        let mut packer = packer();
        for round in 0..3 {
            for i in round * 1000..round * 1000 + 1000 {
                seg.push_row("p", line(i).as_bytes(), Some(b"k"), i, None);
            }
            if round < 2 {
                let file = seg.files.get_mut("p").unwrap();
                let before = file.capacity();
                let payloads = file.unpacked_len();
                assert!(file.pack(&mut packer));
                let freed = before - file.capacity();
                assert!(freed > payloads / 5 * 4, "{freed} of {payloads}");
                assert_eq!(file.unpacked_len(), 0);
            }
        }
        let file = &seg.files["p"];
        let all = file.payloads().unwrap();
        assert_eq!(all.len(), file.payload_len());
        for i in 0..3000 {
            assert_eq!(&all[file.payload_range(i)], line(i as i64).as_bytes());
            assert_eq!(file.key(i), Some(&b"k"[..]));
        }
    }

    #[test]
    fn payloads_that_do_not_shrink_stay_as_they_are_until_more_come() {
        let mut seg = Segment::new(Arc::from("t"), 0, 0, 0);
        // xorshift: bytes zstd cannot shrink.
        let mut x = 0x9E37_79B9_7F4A_7C15_u64;
        let mut noise = || {
            (0..512)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect::<Vec<u8>>()
        };
        let rows: Vec<Vec<u8>> = (0..200).map(|_| noise()).collect();
        for (i, row) in rows.iter().enumerate() {
            seg.push_row("p", row, None, i as i64, None);
        }
        let file = seg.files.get_mut("p").unwrap();
        let len = file.unpacked_len();
        assert!(!file.pack(&mut packer()));
        assert_eq!(file.packable(), 0, "not tried again before it doubles");
        for (i, row) in rows.iter().enumerate().take(len / 512) {
            seg.push_row("p", row, None, (200 + i) as i64, None);
        }
        let file = seg.files.get_mut("p").unwrap();
        assert_eq!(file.packable(), 2 * len, "tried again once it doubled");
        let all = file.payloads().unwrap();
        assert!(matches!(all, std::borrow::Cow::Borrowed(_)));
        for (i, row) in rows.iter().enumerate() {
            assert_eq!(&all[file.payload_range(i)], &row[..]);
        }
    }
}
