//! Stopped partitions: on a consume error or a commit lookup that failed, tried again by a
//! long-running worker; on any other protocol stop (an offset out of range, a foreign or
//! malformed intent, a segment that cannot be delivered), kept stopped until the partition is
//! assigned again.
//!
//! A stopped partition is paused: nothing after its first unread offset is taken, so nothing
//! past it is committed. Many consume errors pass (a broker error, a topic permission granted
//! again, a batch a producer fixed by rewriting the topic), and a long-running worker that gave
//! up for good would need a restart, so it tries again from that offset after a backoff that
//! doubles up to `worker.permanent_error_retry`. A `--once` run never tries again: it delivers
//! the other partitions and reports the stopped ones.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::protocol::StopReason;
use crate::source::kafka::TopicPartition;
use crate::source::reader::ConsumeError;

/// Why a partition is stopped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PartitionStop {
    /// Reading failed; tried again by a long-running worker.
    #[error(transparent)]
    Consume(ConsumeError),
    /// The delivery protocol cannot go on safely; never tried again without an operator
    /// (or a new assignment).
    #[error("topic {topic} partition {partition}: {reason}")]
    Protocol {
        topic: String,
        partition: i32,
        /// The first offset not delivered.
        offset: i64,
        reason: StopReason,
    },
}

impl PartitionStop {
    /// The stopped partition.
    pub fn partition(&self) -> TopicPartition {
        match self {
            Self::Consume(e) => (e.topic.clone(), e.partition),
            Self::Protocol {
                topic, partition, ..
            } => (topic.clone(), *partition),
        }
    }

    /// The first offset not delivered: nothing from there on is committed.
    pub fn offset(&self) -> i64 {
        match self {
            Self::Consume(e) => e.offset,
            Self::Protocol { offset, .. } => *offset,
        }
    }
}

/// The first wait before a stopped partition is tried again.
const FIRST_RETRY: Duration = Duration::from_secs(1);

#[derive(Debug)]
struct Stop {
    error: PartitionStop,
    /// When to try again; never in a `--once` run.
    retry_at: Option<Instant>,
    /// The wait after the next failure.
    backoff: Duration,
    /// Tried again and not failed since: unpaused, reported stopped until a record arrives.
    retrying: bool,
}

/// The stopped partitions of one consumer.
#[derive(Debug)]
pub(super) struct StoppedPartitions {
    stops: BTreeMap<TopicPartition, Stop>,
    /// `None`: never try again (`--once`).
    max_backoff: Option<Duration>,
}

impl StoppedPartitions {
    /// Partitions tried again after a backoff doubling up to `max_backoff`, or (`None`) never.
    pub(super) fn new(max_backoff: Option<Duration>) -> Self {
        Self {
            stops: BTreeMap::new(),
            max_backoff,
        }
    }

    /// Records a failure of `error`'s partition at `now`. False when it changes nothing the
    /// caller must act on: the partition was already stopped and not being tried again (a
    /// second report of the same stop).
    pub(super) fn stop(&mut self, error: PartitionStop, now: Instant) -> bool {
        let tp = error.partition();
        let max = match error {
            // A lookup that failed (a coordinator moving, a timeout) may pass like a consume
            // error; the other protocol stops need a person.
            PartitionStop::Consume(_)
            | PartitionStop::Protocol {
                reason: StopReason::CommittedUnreadable(_),
                ..
            } => self.max_backoff,
            PartitionStop::Protocol { .. } => None,
        };
        match self.stops.get_mut(&tp) {
            Some(stop) if !stop.retrying => false,
            Some(stop) => {
                stop.retrying = false;
                stop.error = error;
                stop.retry_at = max.map(|_| now + stop.backoff);
                stop.backoff = max.map_or(stop.backoff, |m| (stop.backoff * 2).min(m));
                true
            }
            None => {
                let first = max.map_or(FIRST_RETRY, |m| FIRST_RETRY.min(m));
                self.stops.insert(
                    tp,
                    Stop {
                        error,
                        retry_at: max.map(|_| now + first),
                        backoff: max.map_or(first, |m| (first * 2).min(m)),
                        retrying: false,
                    },
                );
                true
            }
        }
    }

    /// The partitions to try again now, each with the offset to read from; they count as
    /// being tried until [`StoppedPartitions::stop`] or [`StoppedPartitions::resumed`].
    pub(super) fn due(&mut self, now: Instant) -> Vec<(TopicPartition, i64)> {
        let mut due = Vec::new();
        for (tp, stop) in &mut self.stops {
            if stop.retry_at.is_some_and(|at| at <= now) {
                stop.retrying = true;
                // Tried again later too if this attempt neither fails nor reads (a seek that
                // did not go through).
                stop.retry_at = Some(now + stop.backoff);
                due.push((tp.clone(), stop.error.offset()));
            }
        }
        due
    }

    /// A record of `tp` arrived: if it was being tried again, it reads again. True when that
    /// ended its stop.
    pub(super) fn resumed(&mut self, tp: &TopicPartition) -> bool {
        if self.stops.get(tp).is_some_and(|s| s.retrying) {
            self.stops.remove(tp);
            return true;
        }
        false
    }

    /// `tp` left this worker; true when it was stopped.
    pub(super) fn release(&mut self, tp: &TopicPartition) -> bool {
        self.stops.remove(tp).is_some()
    }

    /// Why `tp` is stopped, if it is.
    pub(super) fn error(&self, tp: &TopicPartition) -> Option<PartitionStop> {
        self.stops.get(tp).map(|s| s.error.clone())
    }

    /// Whether `tp` is stopped (being tried again or not).
    pub(super) fn contains(&self, tp: &TopicPartition) -> bool {
        self.stops.contains_key(tp)
    }

    /// The stopped partitions to keep paused: all but those being tried again.
    pub(super) fn paused(&self) -> impl Iterator<Item = &TopicPartition> {
        self.stops
            .iter()
            .filter(|(_, s)| !s.retrying)
            .map(|(tp, _)| tp)
    }

    /// The last error of every partition still stopped.
    pub(super) fn into_errors(self) -> Vec<PartitionStop> {
        self.stops.into_values().map(|s| s.error).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::reader::ReadFailure;
    use rdkafka::types::RDKafkaErrorCode;

    fn error(partition: i32, offset: i64) -> PartitionStop {
        PartitionStop::Consume(ConsumeError {
            topic: "t".into(),
            partition,
            offset,
            cause: ReadFailure::Kafka(RDKafkaErrorCode::BadCompression),
        })
    }

    fn tp(partition: i32) -> TopicPartition {
        ("t".to_string(), partition)
    }

    #[test]
    fn a_long_running_worker_tries_again_after_a_doubling_backoff_from_the_same_offset() {
        let t0 = Instant::now();
        let mut s = StoppedPartitions::new(Some(Duration::from_secs(5)));
        assert!(s.stop(error(0, 40), t0));
        assert!(
            !s.stop(error(0, 40), t0),
            "a second report of the same stop"
        );
        assert_eq!(s.paused().collect::<Vec<_>>(), vec![&tp(0)]);
        assert!(s.due(t0).is_empty());
        assert_eq!(s.due(t0 + Duration::from_secs(1)), vec![(tp(0), 40)]);
        assert_eq!(s.paused().count(), 0, "unpaused while tried again");
        // Fails again: stopped, next try 2 s later, then 4 s, then capped at 5 s.
        let t1 = t0 + Duration::from_secs(1);
        assert!(s.stop(error(0, 40), t1));
        assert!(s.due(t1 + Duration::from_millis(1999)).is_empty());
        assert_eq!(s.due(t1 + Duration::from_secs(2)), vec![(tp(0), 40)]);
        let t2 = t1 + Duration::from_secs(2);
        assert!(s.stop(error(0, 40), t2));
        assert_eq!(s.due(t2 + Duration::from_secs(4)), vec![(tp(0), 40)]);
        let t3 = t2 + Duration::from_secs(4);
        assert!(s.stop(error(0, 40), t3));
        assert!(s.due(t3 + Duration::from_millis(4999)).is_empty());
        assert_eq!(s.due(t3 + Duration::from_secs(5)), vec![(tp(0), 40)]);
        // Records again: the stop is over.
        assert!(s.resumed(&tp(0)));
        assert!(!s.contains(&tp(0)));
        assert!(s.into_errors().is_empty());
    }

    #[test]
    fn a_once_run_never_tries_again_and_reports_every_stop() {
        let t0 = Instant::now();
        let mut s = StoppedPartitions::new(None);
        assert!(s.stop(error(0, 40), t0));
        assert!(s.stop(error(1, 25), t0));
        assert!(s.due(t0 + Duration::from_secs(3600)).is_empty());
        assert!(
            !s.resumed(&tp(0)),
            "not being tried: a stray record ends nothing"
        );
        assert_eq!(s.into_errors(), vec![error(0, 40), error(1, 25)]);
    }

    #[test]
    fn a_protocol_stop_is_never_tried_again() {
        let t0 = Instant::now();
        let mut s = StoppedPartitions::new(Some(Duration::from_secs(5)));
        let stop = PartitionStop::Protocol {
            topic: "t".into(),
            partition: 0,
            offset: 100,
            reason: StopReason::BelowLogStart {
                committed: 100,
                log_start: 900,
            },
        };
        assert!(s.stop(stop.clone(), t0));
        assert!(s.due(t0 + Duration::from_secs(3600)).is_empty());
        assert_eq!(s.paused().count(), 1);
        assert_eq!(s.into_errors(), vec![stop]);
    }

    #[test]
    fn a_released_partition_is_forgotten() {
        let t0 = Instant::now();
        let mut s = StoppedPartitions::new(Some(Duration::from_secs(60)));
        s.stop(error(3, 7), t0);
        assert!(s.release(&tp(3)));
        assert!(!s.release(&tp(3)));
        assert!(s.due(t0 + Duration::from_secs(60)).is_empty());
    }
}
