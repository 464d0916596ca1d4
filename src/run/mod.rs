//! `pail run`: wires a source, the pipeline and the stores together and drives them until the
//! input ends (`--once`, file sources) or shutdown is requested.

mod file;
mod kafka;

use std::time::Duration;

use tokio::time::{Instant, sleep, timeout_at};
use tokio_util::sync::CancellationToken;

use crate::config::{Settings, SourceSettings};
use crate::decode::DEFAULT_MAX_RECORD_BYTES;
use crate::delivery::intent::IntentError;
use crate::delivery::{Delivery, RetryPolicy, Target};
use crate::pipeline::{CommitRequest, Destination, Limits, Pipeline, PipelineError, RunStats};
use crate::source::file::FileSourceError;
use crate::source::kafka::{KafkaSource, KafkaSourceError};
use crate::store::{StoreError, build_store, key_prefix};

/// How a run ends.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunOptions {
    /// Drain every assigned partition up to the high watermark seen at assignment, deliver,
    /// commit and return.
    pub once: bool,
}

/// Why a run failed. Nothing was committed past the failure, so no data is lost.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    #[error(transparent)]
    Kafka(#[from] KafkaSourceError),
    #[error(transparent)]
    File(#[from] FileSourceError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("Kafka: {0}")]
    KafkaClient(String),
    #[error("topic {topic} partition {partition}: {source}")]
    Recovery {
        topic: String,
        partition: i32,
        source: IntentError,
    },
    #[error(
        "topic {topic} partition {partition}: the committed offset {committed} is no longer in the log \
         (earliest is {low}): records were deleted by retention before pail delivered them. Reset the \
         group's offset deliberately, or set auto.offset.reset in [source.properties] to accept the loss"
    )]
    OffsetOutOfRange {
        topic: String,
        partition: i32,
        committed: i64,
        low: i64,
    },
    #[error("offset commits keep failing ({0}); stopping so the records are consumed again")]
    Commit(String),
    #[error(
        "no partitions were assigned within {0:?}; is the consumer group stuck or are the brokers unreachable?"
    )]
    NoAssignment(Duration),
    #[error(
        "shutdown timed out after {0:?} with {1} segments undelivered; they were not committed and will be consumed again"
    )]
    ShutdownTimeout(Duration, usize),
}

/// Where commits go: Kafka, or nowhere for a file source.
enum Committer<'a> {
    Kafka(&'a KafkaSource),
    None,
}

impl Committer<'_> {
    async fn commit(&self, request: &CommitRequest) -> Result<(), KafkaSourceError> {
        match self {
            Committer::Kafka(kafka) => {
                let (topic, partition) = &request.partition;
                kafka
                    .commit(vec![(
                        (topic.to_string(), *partition),
                        request.point.offset,
                        request.point.metadata.clone(),
                    )])
                    .await
            }
            Committer::None => Ok(()),
        }
    }
}

/// Consecutive failed commits after which a bounded run gives up.
const MAX_COMMIT_FAILURES: u32 = 10;

/// Makes every commit the protocol needs now, in order: intents before uploads, final commits
/// after deliveries. A failed commit leaves its segments unuploaded and is retried later.
async fn flush_commits(
    pipeline: &mut Pipeline,
    committer: &Committer<'_>,
    failures: &mut u32,
    bounded: bool,
) -> Result<(), RunError> {
    for request in pipeline.pending_commits()? {
        match committer.commit(&request).await {
            Ok(()) => {
                *failures = 0;
                pipeline.committed(request);
            }
            Err(e) => {
                *failures += 1;
                tracing::warn!(error = %e, partition = ?request.partition, offset = request.point.offset,
                    "offset commit failed; its segments wait and the commit is retried");
                pipeline.commit_failed(&request);
                if bounded && *failures >= MAX_COMMIT_FAILURES {
                    return Err(RunError::Commit(e.to_string()));
                }
            }
        }
    }
    Ok(())
}

/// Seals what is open and delivers and commits everything, bounded by `deadline`.
async fn drain(
    pipeline: &mut Pipeline,
    committer: &Committer<'_>,
    deadline: Option<Instant>,
    uploads_stop: &CancellationToken,
    shutdown_timeout: Duration,
) -> Result<(), RunError> {
    pipeline.seal_all();
    let mut failures = 0;
    loop {
        flush_commits(pipeline, committer, &mut failures, true).await?;
        if pipeline.undelivered() == 0 {
            return Ok(());
        }
        let step = async {
            if pipeline.in_flight() > 0 {
                pipeline.next_completion().await
            } else {
                // Waiting on a commit retry, not on an upload.
                sleep(Duration::from_millis(200)).await;
                None
            }
        };
        let next = match deadline {
            Some(d) => match timeout_at(d, step).await {
                Ok(c) => c,
                Err(_) => {
                    uploads_stop.cancel();
                    return Err(RunError::ShutdownTimeout(
                        shutdown_timeout,
                        pipeline.undelivered(),
                    ));
                }
            },
            None => step.await,
        };
        if let Some(c) = next {
            pipeline.on_completion(c)?;
        }
    }
}

/// Runs the worker until the input is drained (`--once`, file source) or `shutdown` fires.
pub async fn run(
    settings: Settings,
    options: RunOptions,
    shutdown: CancellationToken,
) -> Result<RunStats, RunError> {
    let mut destinations = Vec::with_capacity(settings.destinations.len());
    for d in &settings.destinations {
        let store = build_store(d).await?;
        destinations.push(Destination {
            target: Target {
                name: d.name.clone(),
                store,
                prefix: key_prefix(&d.location).to_string(),
                parquet: d.parquet.clone(),
            },
            settings: d.clone(),
        });
    }
    let bounded = options.once || matches!(settings.source, SourceSettings::File(_));
    let policy = if bounded {
        RetryPolicy::bounded()
    } else {
        RetryPolicy::forever()
    };
    // Uploads get their own token so a graceful shutdown can still finish them.
    let uploads_stop = CancellationToken::new();
    let delivery = Delivery::new(
        settings.worker.max_concurrent_uploads,
        policy,
        uploads_stop.clone(),
    );
    let limits = Limits {
        max_buffer_bytes: settings.worker.max_buffer_bytes,
        max_in_flight_segments: settings.worker.max_in_flight_segments,
        max_record_bytes: DEFAULT_MAX_RECORD_BYTES,
    };
    let file_name = match &settings.source {
        SourceSettings::File(f) => Some(
            f.path
                .as_ref()
                .map_or("<stdin>".into(), |p| p.display().to_string()),
        ),
        SourceSettings::Kafka(_) => None,
    };
    let pipeline = Pipeline::new(destinations, delivery, limits, file_name);
    let _stop_uploads_on_exit = uploads_stop.clone().drop_guard();
    let result = match &settings.source {
        SourceSettings::File(f) => {
            file::run_file(f, pipeline, &settings, shutdown, uploads_stop).await
        }
        SourceSettings::Kafka(k) => {
            kafka::run_kafka(k, pipeline, &settings, options, shutdown, uploads_stop).await
        }
    };
    if let Ok(stats) = &result {
        tracing::info!(?stats, "run finished");
    }
    result
}
