//! The commit task of the Kafka run loop: commit requests go out one after another, each
//! holding every partition due, and their answers come back to the loop, which never waits
//! for the group coordinator itself.

use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tokio::task::JoinHandle;

use crate::delivery::PartitionKey;
use crate::protocol::Commit;
use crate::source::commit::KafkaCommitter;
use crate::source::kafka::TopicPartition;
use crate::telemetry::METRICS;

pub(super) type CommitBatch = Vec<Commit<PartitionKey>>;

/// How one commit request went. Commits of partitions revoked since they were requested are
/// in neither list: the protocol forgets that assignment anyway.
#[derive(Debug, Default)]
pub(super) struct CommitAnswer {
    pub acknowledged: CommitBatch,
    pub failed: CommitBatch,
    /// Why the failed ones failed.
    pub error: Option<String>,
}

/// The commit task: where requests go, where results come back, and the task itself.
pub(super) type CommitTask = (
    UnboundedSender<CommitBatch>,
    UnboundedReceiver<CommitAnswer>,
    JoinHandle<()>,
);

/// Runs commits off the loop, one request after another (so a partition's commits land in
/// order), each request holding every partition the protocol had due. A commit of a partition
/// revoked since it was requested is left out: the new owner replays from the last commit.
pub(super) fn spawn_committer(committer: KafkaCommitter) -> CommitTask {
    let (req_tx, mut req_rx) = unbounded_channel::<CommitBatch>();
    let (res_tx, res_rx) = unbounded_channel();
    let task = tokio::spawn(async move {
        while let Some(batch) = req_rx.recv().await {
            let offsets = |batch: &CommitBatch| -> Vec<_> {
                batch
                    .iter()
                    .map(|c| {
                        // The protocol only emits intents that encode within the limit.
                        let metadata = c.point.intent.encode().unwrap_or_default();
                        let tp = (c.partition.0.to_string(), c.partition.1);
                        (tp, c.token.0, c.point.offset, metadata)
                    })
                    .collect()
            };
            let began = std::time::Instant::now();
            let (sent, result) = committer.commit(offsets(&batch)).await;
            METRICS
                .commit_duration
                .observe(began.elapsed().as_secs_f64());
            let batch: CommitBatch = batch.into_iter().filter(|c| was_sent(&sent, c)).collect();
            let answer = match result {
                Ok(()) => CommitAnswer {
                    acknowledged: batch,
                    ..CommitAnswer::default()
                },
                // librdkafka reports one error for the request when any partition in it fails:
                // one partition's permanent error (a deleted topic, a denied one) must not hold
                // back the others, so each is tried on its own.
                Err(e) if batch.len() > 1 => {
                    let mut answer = CommitAnswer::default();
                    for commit in batch {
                        let one = vec![commit];
                        let (sent, result) = committer.commit(offsets(&one)).await;
                        let one = one.into_iter().filter(|c| was_sent(&sent, c));
                        match result {
                            Ok(()) => answer.acknowledged.extend(one),
                            Err(e) => {
                                answer.failed.extend(one);
                                answer.error = Some(e.to_string());
                            }
                        }
                    }
                    answer.error = answer.error.or(Some(e.to_string()));
                    answer
                }
                Err(e) => CommitAnswer {
                    failed: batch,
                    error: Some(e.to_string()),
                    ..CommitAnswer::default()
                },
            };
            if res_tx.send(answer).is_err() {
                break;
            }
        }
    });
    (req_tx, res_rx, task)
}

/// Whether `commit` went out: a partition revoked since it was requested is left out (the new
/// owner replays from the last commit), neither acknowledged nor failed.
fn was_sent(sent: &[TopicPartition], commit: &Commit<PartitionKey>) -> bool {
    sent.iter()
        .any(|(t, p)| **t == *commit.partition.0 && *p == commit.partition.1)
}
