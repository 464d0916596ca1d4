//! Sources: records from a Kafka consumer group or from an NDJSON file.

pub mod commit;
pub mod file;
pub mod kafka;
pub mod ownership;
pub mod prefetch;
mod read_ahead;
pub mod reader;

use std::sync::Arc;

use bytes::Bytes;

/// One record as consumed, before decoding. Its key and payload may share one buffer with the
/// other records of its batch.
#[derive(Debug, Clone)]
pub struct Record {
    pub topic: Arc<str>,
    pub partition: i32,
    pub offset: i64,
    /// Kafka record timestamp in epoch milliseconds, when present.
    pub timestamp_ms: Option<i64>,
    pub key: Option<Bytes>,
    /// `None` is a tombstone.
    pub payload: Option<Bytes>,
}
