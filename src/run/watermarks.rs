//! `--once` bookkeeping for the Kafka run loop: the end each assigned partition must reach
//! (its high watermark at assignment) before the run may end.

use std::collections::HashSet;

use crate::source::kafka::TopicPartition;

/// `--once` bookkeeping: where each assigned partition must reach before the run may end.
#[derive(Default)]
pub(super) struct Watermarks {
    /// Partitions whose end is not reached yet.
    pub pending: HashSet<TopicPartition>,
    /// High watermark seen at assignment, per partition.
    pub end: foldhash::HashMap<TopicPartition, i64>,
    /// At least one assignment (possibly empty) has arrived.
    pub assigned_once: bool,
}

impl Watermarks {
    pub fn reached(&mut self, tp: &TopicPartition, next_offset: i64) {
        if self.end.get(tp).is_some_and(|end| next_offset >= *end) {
            self.pending.remove(tp);
        }
    }

    /// Whether `offset` is at or past the end `--once` must reach in `tp` (never, otherwise).
    pub fn past_end(&self, tp: &TopicPartition, offset: i64) -> bool {
        self.end.get(tp).is_some_and(|end| offset >= *end)
    }

    pub fn done(&self) -> bool {
        self.assigned_once && self.pending.is_empty()
    }
}
