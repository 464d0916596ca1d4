//! Hand-built Kafka record batches, appended to a mock-cluster partition with a raw Produce
//! request: the corrupt batches a real producer never makes, for the consume-error tests.
//!
//! The mock broker checks only a batch's magic byte and record count, so what a consumer then
//! fetches is exactly these bytes (with the broker's base offset).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// A record batch (magic v2) of `count` records whose body is `body` as given, with
/// `attributes`: the codec in the low bits (0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd: the body
/// must then be compressed so), 0x10 transactional, 0x20 control. The CRC32C is computed
/// unless `bad_crc`, which flips it.
pub fn record_batch(
    attributes: i16,
    count: i32,
    body: &[u8],
    timestamp_ms: i64,
    bad_crc: bool,
) -> Vec<u8> {
    // From `attributes` on: what the CRC covers.
    let mut tail = Vec::new();
    tail.extend_from_slice(&attributes.to_be_bytes());
    tail.extend_from_slice(&(count - 1).to_be_bytes()); // lastOffsetDelta
    tail.extend_from_slice(&timestamp_ms.to_be_bytes()); // baseTimestamp
    tail.extend_from_slice(&timestamp_ms.to_be_bytes()); // maxTimestamp
    tail.extend_from_slice(&(-1i64).to_be_bytes()); // producerId
    tail.extend_from_slice(&(-1i16).to_be_bytes()); // producerEpoch
    tail.extend_from_slice(&(-1i32).to_be_bytes()); // baseSequence
    tail.extend_from_slice(&count.to_be_bytes()); // records count
    tail.extend_from_slice(body);
    let mut crc = crc32c::crc32c(&tail);
    if bad_crc {
        crc ^= 0xdead_beef;
    }
    let mut batch = Vec::new();
    batch.extend_from_slice(&0i64.to_be_bytes()); // baseOffset: the broker assigns it
    let length = 4 + 1 + 4 + tail.len(); // leader epoch, magic, crc, the rest
    batch.extend_from_slice(&(length as i32).to_be_bytes());
    batch.extend_from_slice(&0i32.to_be_bytes()); // partitionLeaderEpoch
    batch.push(2); // magic
    batch.extend_from_slice(&crc.to_be_bytes());
    batch.extend_from_slice(&tail);
    batch
}

/// A transaction marker: a control batch (transactional) of one COMMIT (or ABORT) record, as a
/// transaction coordinator writes it. Consumers never return it; it takes an offset.
pub fn control_batch(commit: bool, producer_id: i64, timestamp_ms: i64) -> Vec<u8> {
    // Control record key: version 0, type (0 abort, 1 commit); value: version 0, epoch 0.
    let key = [0u8, 0, 0, u8::from(commit)];
    let value = [0u8, 0, 0, 0, 0, 0];
    let mut record = vec![0u8]; // attributes
    varint(&mut record, 0); // timestampDelta
    varint(&mut record, 0); // offsetDelta
    varint(&mut record, key.len() as i64);
    record.extend_from_slice(&key);
    varint(&mut record, value.len() as i64);
    record.extend_from_slice(&value);
    varint(&mut record, 0); // headers
    let mut body = Vec::new();
    varint(&mut body, record.len() as i64);
    body.extend_from_slice(&record);
    let mut batch = record_batch(0x30, 1, &body, timestamp_ms, false);
    // producerId and producerEpoch, at 43 and 51 of the batch; the CRC (at 17) covers them.
    batch[43..51].copy_from_slice(&producer_id.to_be_bytes());
    batch[51..53].copy_from_slice(&0i16.to_be_bytes());
    let crc = crc32c::crc32c(&batch[21..]);
    batch[17..21].copy_from_slice(&crc.to_be_bytes());
    batch
}

/// The uncompressed body of `values` as v2 records (no keys, no headers), offsets and
/// timestamps relative to the batch's.
pub fn records_body(values: &[&[u8]]) -> Vec<u8> {
    let mut body = Vec::new();
    for (i, value) in values.iter().enumerate() {
        let mut record = vec![0u8]; // attributes
        varint(&mut record, 0); // timestampDelta
        varint(&mut record, i as i64); // offsetDelta
        varint(&mut record, -1); // key: null
        varint(&mut record, value.len() as i64);
        record.extend_from_slice(value);
        varint(&mut record, 0); // headers
        varint(&mut body, record.len() as i64);
        body.extend_from_slice(&record);
    }
    body
}

/// Kafka's zigzag varint.
fn varint(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    loop {
        let byte = (z & 0x7f) as u8;
        z >>= 7;
        if z == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as i16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// Appends `batch` to `topic`/`partition` on the one-broker mock cluster at `broker`
/// ("host:port") with a Produce (v3) request; returns the base offset the broker gave it.
pub fn append_batch(broker: &str, topic: &str, partition: i32, batch: &[u8]) -> i64 {
    let mut body = Vec::new();
    body.extend_from_slice(&0i16.to_be_bytes()); // api key: Produce
    body.extend_from_slice(&3i16.to_be_bytes()); // api version
    body.extend_from_slice(&7i32.to_be_bytes()); // correlation id
    string(&mut body, "pail-test-raw");
    body.extend_from_slice(&(-1i16).to_be_bytes()); // transactional id: null
    body.extend_from_slice(&1i16.to_be_bytes()); // acks
    body.extend_from_slice(&10_000i32.to_be_bytes()); // timeout ms
    body.extend_from_slice(&1i32.to_be_bytes()); // topics
    string(&mut body, topic);
    body.extend_from_slice(&1i32.to_be_bytes()); // partitions
    body.extend_from_slice(&partition.to_be_bytes());
    body.extend_from_slice(&(batch.len() as i32).to_be_bytes());
    body.extend_from_slice(batch);

    let mut conn = TcpStream::connect(broker).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    conn.write_all(&(body.len() as i32).to_be_bytes()).unwrap();
    conn.write_all(&body).unwrap();
    let mut size = [0u8; 4];
    conn.read_exact(&mut size).unwrap();
    let mut response = vec![0u8; i32::from_be_bytes(size) as usize];
    conn.read_exact(&mut response).unwrap();
    // correlation id, topics (1), topic name, partitions (1), partition, error, base offset.
    let mut at = 4 + 4;
    let name_len = i16::from_be_bytes([response[at], response[at + 1]]) as usize;
    at += 2 + name_len + 4 + 4;
    let error = i16::from_be_bytes([response[at], response[at + 1]]);
    assert_eq!(
        error, 0,
        "the mock broker refused the batch (Kafka error code {error})"
    );
    at += 2;
    i64::from_be_bytes(response[at..at + 8].try_into().unwrap())
}
