//! Commits with intent metadata, fenced by partition ownership: a queue of the consumer's own
//! on which the coordinator's answers arrive, so a commit is enqueued under the ownership
//! lock and its answer awaited off it (see [`KafkaCommitter::commit`]).

use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{Offset, TopicPartitionList};

use super::kafka::{KafkaSource, KafkaSourceError, PailContext, TopicPartition};
use super::ownership::Ownership;

/// How long the commit task waits for the coordinator's answer to one commit request.
const COMMIT_ANSWER_TIMEOUT: Duration = Duration::from_secs(120);

/// A librdkafka queue of the consumer's own, on which the answers to pail's commits arrive.
struct CommitQueue(*mut rdkafka::bindings::rd_kafka_queue_t);

// SAFETY: librdkafka queues are thread-safe; the pointer is only handed to librdkafka.
unsafe impl Send for CommitQueue {}
// SAFETY: as above.
unsafe impl Sync for CommitQueue {}

impl Drop for CommitQueue {
    fn drop(&mut self) {
        // SAFETY: the queue was created by rd_kafka_queue_new and is destroyed once, here.
        unsafe { rdkafka::bindings::rd_kafka_queue_destroy(self.0) }
    }
}

/// Commits offsets with intent metadata; owned by the commit task.
pub struct KafkaCommitter {
    // Declared before the consumer: the queue is destroyed before the handle it belongs to.
    queue: Arc<CommitQueue>,
    consumer: Arc<StreamConsumer<PailContext>>,
    ownership: Arc<Ownership>,
}

impl KafkaCommitter {
    /// A handle on `source`'s consumer that commits offsets from another task, so the run
    /// loop keeps polling (and serving rebalances) while a commit waits for the coordinator.
    pub fn new(source: &KafkaSource) -> Self {
        let (consumer, ownership) = source.consumer_and_ownership();
        // SAFETY: the handle is live (the consumer is held), and the new queue is destroyed
        // before it (field order above).
        let queue =
            unsafe { rdkafka::bindings::rd_kafka_queue_new(consumer.client().native_ptr()) };
        Self {
            queue: Arc::new(CommitQueue(queue)),
            consumer,
            ownership,
        }
    }

    /// Commits offsets with their metadata, each only if its partition is still owned under
    /// its token, and waits for the coordinator's answer. Returns the partitions sent, and
    /// whether the coordinator took them.
    ///
    /// The broker fences commits by group generation only, so a commit from an earlier
    /// ownership of a partition, landing after a rebalance, would be accepted. The check and
    /// the hand-over to librdkafka happen under the ownership lock, which the rebalance
    /// callback takes to revoke: a commit is queued in librdkafka either before the revoke's
    /// unassign (so it reaches the coordinator before this member rejoins, under the
    /// generation that still fences the partition's next owner) or not at all. Only the
    /// enqueueing holds the lock (the answer arrives on a queue of its own), so a revoke never
    /// waits for a round trip to the coordinator.
    pub async fn commit(
        &self,
        offsets: Vec<(TopicPartition, u64, i64, String)>,
    ) -> (Vec<TopicPartition>, Result<(), KafkaSourceError>) {
        let call = |source| KafkaSourceError::Call {
            op: "commit",
            source,
        };
        let queue = self.queue.clone();
        let queued = self.ownership.while_current(|current| {
            let mut tpl = TopicPartitionList::new();
            let mut sent = Vec::with_capacity(offsets.len());
            let mut expected = Vec::with_capacity(offsets.len());
            for (tp, token, o, metadata) in offsets {
                if !current(&tp, token) {
                    continue;
                }
                let mut elem = tpl.add_partition(&tp.0, tp.1);
                if let Err(e) = elem.set_offset(Offset::Offset(o)) {
                    return (sent, Err(call(e)));
                }
                elem.set_metadata(metadata.as_str());
                expected.push((tp.0.clone(), tp.1, o));
                sent.push(tp);
            }
            if sent.is_empty() {
                return (sent, Ok(None));
            }
            // SAFETY: the handle and the queue are live; librdkafka copies the list, so it
            // may be dropped as soon as the call returns, which is at once (the answer goes to
            // the queue).
            let err = unsafe {
                rdkafka::bindings::rd_kafka_commit_queue(
                    self.consumer.client().native_ptr(),
                    tpl.ptr(),
                    queue.0,
                    None,
                    std::ptr::null_mut(),
                )
            };
            match err {
                RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR => (sent, Ok(Some(expected))),
                err => (sent, Err(call(KafkaError::ConsumerCommit(err.into())))),
            }
        });
        let (sent, expected) = match queued {
            (sent, Ok(Some(expected))) => (sent, expected),
            (sent, Ok(None)) => return (sent, Ok(())),
            (sent, Err(e)) => return (sent, Err(e)),
        };
        let answer = tokio::task::spawn_blocking(move || {
            let mut expected = expected;
            expected.sort();
            wait_for_commit(&queue, &expected)
        })
        .await;
        let answer = match answer {
            Ok(Some(RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR)) => Ok(()),
            Ok(Some(err)) => Err(call(KafkaError::ConsumerCommit(err.into()))),
            Ok(None) => Err(KafkaSourceError::Task(format!(
                "no answer to a commit within {COMMIT_ANSWER_TIMEOUT:?}"
            ))),
            Err(e) => Err(KafkaSourceError::Task(e.to_string())),
        };
        (sent, answer)
    }
}

/// Waits for the answer to the commit of `expected` (topic, partition, offset) on `queue`:
/// its error code, or `None` when none comes in time. An answer to an earlier commit that was
/// given up on is recognised by its offsets and skipped, never taken for this one's.
fn wait_for_commit(queue: &CommitQueue, expected: &[(String, i32, i64)]) -> Option<RDKafkaRespErr> {
    let deadline = std::time::Instant::now() + COMMIT_ANSWER_TIMEOUT;
    while std::time::Instant::now() < deadline {
        // SAFETY: the queue is live (the caller holds it); the event's list is read while the
        // event lives, and every event polled is destroyed once, below.
        unsafe {
            let event = rdkafka::bindings::rd_kafka_queue_poll(queue.0, 1000);
            if event.is_null() {
                continue;
            }
            let ours = rdkafka::bindings::rd_kafka_event_type(event)
                == rdkafka::bindings::RD_KAFKA_EVENT_OFFSET_COMMIT
                && committed(rdkafka::bindings::rd_kafka_event_topic_partition_list(
                    event,
                )) == expected;
            let err = rdkafka::bindings::rd_kafka_event_error(event);
            rdkafka::bindings::rd_kafka_event_destroy(event);
            if ours {
                return Some(err);
            }
        }
    }
    None
}

/// The (topic, partition, offset) entries of a librdkafka partition list, sorted.
///
/// # Safety
/// `list` is null or a live list.
unsafe fn committed(
    list: *const rdkafka::bindings::rd_kafka_topic_partition_list_t,
) -> Vec<(String, i32, i64)> {
    if list.is_null() {
        return Vec::new();
    }
    // SAFETY: the caller guarantees a live list; `elems` holds `cnt` entries, each with a
    // NUL-terminated topic.
    let mut entries: Vec<(String, i32, i64)> = unsafe {
        let list = &*list;
        (0..usize::try_from(list.cnt).unwrap_or(0))
            .map(|i| {
                let e = &*list.elems.add(i);
                let topic = std::ffi::CStr::from_ptr(e.topic)
                    .to_string_lossy()
                    .into_owned();
                (topic, e.partition, e.offset)
            })
            .collect()
    };
    entries.sort();
    entries
}
