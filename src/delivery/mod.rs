//! Delivery: sealed segments are encoded and uploaded concurrently. Which segments may be
//! uploaded, and which offsets committed, is the protocol's business (`crate::protocol`).

mod objects;
mod stream;
mod upload;

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures::FutureExt as _;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::buffer::Segment;
use crate::config::ParquetSettings;
use crate::encode::EncodeError;
use crate::protocol::{SegmentId, Token};
use crate::store::{ObjectStore, PutOutcome};
use crate::telemetry::DestinationHealth;

pub use objects::{PlannedObject, join_key, object_name, plan_objects, streamed_metadata};
pub use stream::{ObjectStream, StreamMemory, StreamObject, StreamReport, Writers};
pub use upload::{RetryContext, RetryPolicy, UploadError, put_with_retry};

/// A topic-partition.
pub type PartitionKey = (Arc<str>, i32);

/// A sealed segment handed to delivery: which partition, under which ownership, which offsets.
#[derive(Debug, Clone)]
pub struct Handoff {
    pub partition: PartitionKey,
    pub token: Token,
    pub segment: SegmentId,
}

/// Everything needed to write one destination's objects.
#[derive(Debug, Clone)]
pub struct Target {
    pub name: String,
    pub store: Arc<dyn ObjectStore>,
    pub prefix: String,
    pub parquet: ParquetSettings,
    /// Bytes of each multipart part (the last may be smaller).
    pub part_size: u64,
    /// Memory the destination's streaming writers hold.
    pub streamed: Arc<std::sync::atomic::AtomicUsize>,
    /// Where uploads report refusals and successes.
    pub health: Arc<DestinationHealth>,
}

/// Segments and buffered bytes one destination has in flight.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Load {
    pub segments: usize,
    pub bytes: usize,
}

/// Why a segment could not be delivered.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("destination {destination:?}: {source}")]
    Upload {
        destination: String,
        source: UploadError,
    },
    #[error(
        "destination {destination:?}: encoding {topic}[{partition}] offsets {start}..={end}: {source}"
    )]
    Encode {
        destination: String,
        topic: String,
        partition: i32,
        start: i64,
        end: i64,
        source: Box<EncodeError>,
    },
    #[error("delivery task failed: {0}")]
    Task(String),
}

/// What one delivered segment wrote.
#[derive(Debug, Default, Clone, Copy)]
pub struct SegmentReport {
    pub objects_created: u64,
    pub objects_existing: u64,
    pub rows: u64,
    pub dead_letters: u64,
    /// The newest Kafka timestamp among the rows delivered.
    pub newest_timestamp_ms: Option<i64>,
}

/// A finished delivery task.
#[derive(Debug)]
pub struct Completion {
    /// What was delivered; `None` when the task was cancelled (a panic in it is caught and
    /// keeps its handoff).
    pub handoff: Option<Handoff>,
    /// Index of the destination the segment was written to.
    pub destination: usize,
    /// Memory the segment held (`Segment::held`), released from the destination's load.
    pub bytes: usize,
    pub result: Result<SegmentReport, DeliveryError>,
}

/// Segments being encoded and uploaded.
pub struct Delivery {
    tasks: JoinSet<Completion>,
    /// Upload slots, encoder slots, retries and memory, shared with streaming writers.
    writers: Writers,
    /// Per destination index: what is being encoded or uploaded.
    load: HashMap<usize, Load>,
}

impl Delivery {
    /// A delivery stage with at most `max_uploads` concurrent PUTs.
    pub fn new(max_uploads: usize, policy: RetryPolicy, shutdown: CancellationToken) -> Self {
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
        Self {
            tasks: JoinSet::new(),
            writers: Writers {
                memory: StreamMemory::default(),
                encoders: Arc::new(Semaphore::new(cpus)),
                uploads: Arc::new(Semaphore::new(max_uploads)),
                policy,
                shutdown,
            },
            load: HashMap::new(),
        }
    }

    /// Segments sealed but not yet delivered.
    pub fn in_flight(&self) -> usize {
        self.tasks.len()
    }

    /// What destination `index` has in flight.
    pub fn load(&self, index: usize) -> Load {
        self.load.get(&index).copied().unwrap_or_default()
    }

    /// Memory held by the segments in flight to every destination, and by the writers of
    /// streamed files (open or sealed).
    pub fn held_bytes(&self) -> usize {
        self.load.values().map(|l| l.bytes).sum::<usize>() + self.writers.memory.held()
    }

    /// Memory the writers of streamed files hold.
    pub fn stream_memory(&self) -> &StreamMemory {
        &self.writers.memory
    }

    /// Starts the writer of a file that streams out while it is open.
    pub fn start_stream(&self, object: StreamObject, target: Target) -> ObjectStream {
        ObjectStream::start(object, target, &self.writers)
    }

    /// Starts delivering a sealed segment: its buffered files are encoded and uploaded, its
    /// streamed files (`streams`, already finished) are completed.
    pub fn submit(
        &mut self,
        seg: Segment,
        streams: Vec<ObjectStream>,
        handoff: Handoff,
        target: Target,
    ) {
        let destination = seg.destination;
        let load = self.load.entry(destination).or_default();
        load.segments += 1;
        load.bytes += seg.held;
        let writers = self.writers.clone();
        self.tasks.spawn(async move {
            let bytes = seg.held;
            // A panic here (a pail bug) must not lose which segment it was: its partition
            // stops (see `DeliveryError::Task`), the others go on, and its load is released.
            let result = AssertUnwindSafe(deliver(seg, streams, target, writers))
                .catch_unwind()
                .await
                .unwrap_or_else(|panic| Err(DeliveryError::Task(panicked(panic.as_ref()))));
            Completion {
                handoff: Some(handoff),
                destination,
                bytes,
                result,
            }
        });
    }

    /// Waits for the next finished segment; `None` when nothing is in flight.
    pub async fn next(&mut self) -> Option<Completion> {
        let joined = self.tasks.join_next().await?;
        let completion = joined.unwrap_or_else(|e| Completion {
            handoff: None,
            destination: usize::MAX,
            bytes: 0,
            result: Err(DeliveryError::Task(e.to_string())),
        });
        if let Some(load) = self.load.get_mut(&completion.destination) {
            load.segments = load.segments.saturating_sub(1);
            load.bytes = load.bytes.saturating_sub(completion.bytes);
        }
        Some(completion)
    }
}

/// What a task that panicked says, as its error.
fn panicked(panic: &(dyn std::any::Any + Send)) -> String {
    let message = panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("a panic");
    format!("the delivery task panicked (a pail bug; please report it): {message}")
}

async fn deliver(
    seg: Segment,
    streams: Vec<ObjectStream>,
    target: Target,
    writers: Writers,
) -> Result<SegmentReport, DeliveryError> {
    let Writers {
        encoders,
        uploads,
        policy,
        shutdown,
        ..
    } = writers;
    let mut report = SegmentReport {
        rows: seg.files.values().map(|f| f.rows.len() as u64).sum(),
        dead_letters: seg.dead_letter_count,
        newest_timestamp_ms: seg.newest_timestamp_ms,
        ..SegmentReport::default()
    };
    let (start, end) = (seg.start, seg.end);
    // Streamed files complete beside the buffered ones' PUTs.
    let completions = futures::future::join_all(streams.into_iter().map(ObjectStream::complete));
    let destination = target.name.clone();
    let objects = {
        let _permit = encoders
            .acquire_owned()
            .await
            .map_err(|e| DeliveryError::Task(e.to_string()))?;
        let prefix = target.prefix.clone();
        let parquet = target.parquet.clone();
        tokio::task::spawn_blocking(move || {
            plan_objects(&seg, &prefix, &parquet).map_err(|source| DeliveryError::Encode {
                destination: destination.clone(),
                topic: seg.topic.to_string(),
                partition: seg.partition,
                start: seg.start,
                end: seg.end,
                source: Box::new(source),
            })
        })
        .await
        .map_err(|e| DeliveryError::Task(e.to_string()))??
    };
    let puts = objects.into_iter().map(|obj| {
        let uploads = uploads.clone();
        let store = target.store.clone();
        let health = target.health.clone();
        let shutdown = shutdown.clone();
        async move {
            let cx = RetryContext {
                policy: &policy,
                health: &health,
                slots: &uploads,
                shutdown: &shutdown,
            };
            let outcome =
                put_with_retry(store.as_ref(), &obj.key, obj.body, &obj.metadata, cx).await?;
            tracing::debug!(key = %obj.key, ?outcome, "object durable");
            Ok::<_, UploadError>(outcome)
        }
    });
    let (outcomes, completed) =
        futures::future::join(futures::future::join_all(puts), completions).await;
    for done in completed {
        match done {
            Ok(streamed) => {
                report.rows += streamed.rows;
                match streamed.outcome {
                    PutOutcome::Created => report.objects_created += 1,
                    PutOutcome::AlreadyExists => report.objects_existing += 1,
                }
            }
            // The writer knows the file, not the segment: name the segment's offsets.
            Err(DeliveryError::Encode {
                destination,
                topic,
                partition,
                source,
                ..
            }) => {
                return Err(DeliveryError::Encode {
                    destination,
                    topic,
                    partition,
                    start,
                    end,
                    source,
                });
            }
            Err(e) => return Err(e),
        }
    }
    for outcome in outcomes {
        match outcome {
            Ok(PutOutcome::Created) => report.objects_created += 1,
            Ok(PutOutcome::AlreadyExists) => report.objects_existing += 1,
            Err(source) => {
                return Err(DeliveryError::Upload {
                    destination: target.name.clone(),
                    source,
                });
            }
        }
    }
    Ok(report)
}
