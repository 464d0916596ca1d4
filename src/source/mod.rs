//! Sources: records from a Kafka consumer group or from an NDJSON file.

pub mod file;
pub mod kafka;
pub mod ownership;
pub mod prefetch;
pub mod reader;

use std::sync::Arc;

/// One record as consumed, before decoding.
#[derive(Debug, Clone)]
pub struct Record {
    pub topic: Arc<str>,
    pub partition: i32,
    pub offset: i64,
    /// Kafka record timestamp in epoch milliseconds, when present.
    pub timestamp_ms: Option<i64>,
    pub key: Option<Vec<u8>>,
    /// `None` is a tombstone.
    pub payload: Option<Vec<u8>>,
}
