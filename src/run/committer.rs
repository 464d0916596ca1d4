//! The commit task of the Kafka run loop: commit requests go out one after another, each
//! holding every partition due, and their answers come back to the loop, which never waits
//! for the group coordinator itself.

use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tokio::task::JoinHandle;

use crate::delivery::PartitionKey;
use crate::protocol::Commit;
use crate::source::kafka::{KafkaCommitter, KafkaSourceError};

pub(super) type CommitBatch = Vec<Commit<PartitionKey>>;
pub(super) type CommitResult = (CommitBatch, Result<(), KafkaSourceError>);

/// The commit task: where requests go, where results come back, and the task itself.
pub(super) type CommitTask = (
    UnboundedSender<CommitBatch>,
    UnboundedReceiver<CommitResult>,
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
            let owned: CommitBatch = batch
                .into_iter()
                .filter(|c| committer.owns(&(c.partition.0.to_string(), c.partition.1), c.token.0))
                .collect();
            let mut offsets = Vec::with_capacity(owned.len());
            for c in &owned {
                // The protocol only emits intents that encode within the limit.
                let metadata = c.point.intent.encode().unwrap_or_default();
                offsets.push((
                    (c.partition.0.to_string(), c.partition.1),
                    c.point.offset,
                    metadata,
                ));
            }
            let result = committer.commit(offsets).await;
            if res_tx.send((owned, result)).is_err() {
                break;
            }
        }
    });
    (req_tx, res_rx, task)
}
