//! `pail run`: wires a source, the pipeline and the stores together and drives them until the
//! input ends (`--once`, file sources) or shutdown is requested.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use tokio::time::{Instant, MissedTickBehavior, interval, timeout_at};
use tokio_util::sync::CancellationToken;

use crate::config::{FileSettings, KafkaSettings, Settings, SourceSettings};
use crate::decode::DEFAULT_MAX_RECORD_BYTES;
use crate::delivery::{Delivery, PartitionKey, RetryPolicy, Target};
use crate::pipeline::{Destination, Limits, Pipeline, PipelineError, RunStats};
use crate::source::file::{FileSource, FileSourceError};
use crate::source::kafka::{KafkaEvent, KafkaSource, KafkaSourceError, TopicPartition};
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
    #[error(
        "no partitions were assigned within {0:?}; is the consumer group stuck or are the brokers unreachable?"
    )]
    NoAssignment(Duration),
    #[error(
        "shutdown timed out after {0:?} with {1} segments undelivered; they were not committed and will be consumed again"
    )]
    ShutdownTimeout(Duration, usize),
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
        SourceSettings::File(f) => run_file(f, pipeline, &settings, shutdown, uploads_stop).await,
        SourceSettings::Kafka(k) => {
            run_kafka(k, pipeline, &settings, options, shutdown, uploads_stop).await
        }
    };
    if let Ok(stats) = &result {
        tracing::info!(?stats, "run finished");
    }
    result
}

/// Waits for every in-flight delivery, committing as they finish; bounded by `deadline`.
async fn drain(
    pipeline: &mut Pipeline,
    deadline: Option<Instant>,
    uploads_stop: &CancellationToken,
    mut commit: impl AsyncFnMut((PartitionKey, i64)) -> Result<(), RunError>,
    shutdown_timeout: Duration,
) -> Result<(), RunError> {
    pipeline.seal_all();
    while pipeline.in_flight() > 0 {
        let next = match deadline {
            Some(d) => match timeout_at(d, pipeline.next_completion()).await {
                Ok(c) => c,
                Err(_) => {
                    uploads_stop.cancel();
                    return Err(RunError::ShutdownTimeout(
                        shutdown_timeout,
                        pipeline.in_flight(),
                    ));
                }
            },
            None => pipeline.next_completion().await,
        };
        let Some(c) = next else { break };
        if let Some(offset) = pipeline.on_completion(c)? {
            commit(offset).await?;
        }
    }
    Ok(())
}

async fn run_file(
    source: &FileSettings,
    mut pipeline: Pipeline,
    settings: &Settings,
    shutdown: CancellationToken,
    uploads_stop: CancellationToken,
) -> Result<RunStats, RunError> {
    let mut reader = FileSource::open(source.path.as_deref(), DEFAULT_MAX_RECORD_BYTES).await?;
    let mut tick = interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut deadline = None;
    loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled(), if deadline.is_none() => {
                tracing::info!("shutdown requested; delivering what was read");
                deadline = Some(Instant::now() + settings.worker.shutdown_timeout);
                break;
            }
            Some(c) = pipeline.next_completion(), if pipeline.in_flight() > 0 => {
                pipeline.on_completion(c)?;
            }
            _ = tick.tick() => pipeline.seal_expired(),
            next = reader.next(), if !pipeline.backpressured() => match next? {
                Some(record) => pipeline.ingest(record)?,
                None => break,
            },
        }
    }
    drain(
        &mut pipeline,
        deadline,
        &uploads_stop,
        async |_| Ok(()),
        settings.worker.shutdown_timeout,
    )
    .await?;
    Ok(pipeline.stats)
}

/// `--once` bookkeeping: where each assigned partition must reach before the run may end.
#[derive(Default)]
struct Watermarks {
    /// Partitions whose end is not known yet or not reached yet.
    pending: HashSet<TopicPartition>,
    /// High watermark seen at assignment, per partition.
    end: HashMap<TopicPartition, i64>,
    /// At least one assignment (possibly empty) has arrived.
    assigned_once: bool,
}

impl Watermarks {
    fn reached(&mut self, tp: &TopicPartition, next_offset: i64) {
        if self.end.get(tp).is_some_and(|end| next_offset >= *end) {
            self.pending.remove(tp);
        }
    }

    fn done(&self) -> bool {
        self.assigned_once && self.pending.is_empty()
    }
}

async fn run_kafka(
    source: &KafkaSettings,
    mut pipeline: Pipeline,
    settings: &Settings,
    options: RunOptions,
    shutdown: CancellationToken,
    uploads_stop: CancellationToken,
) -> Result<RunStats, RunError> {
    let (kafka, mut events) = KafkaSource::connect(source)?;
    let startup = settings.worker.startup_timeout;
    if options.once {
        kafka
            .check_topics(startup.min(Duration::from_secs(30)))
            .await?;
    } else if let Err(e) = kafka.check_topics(Duration::from_secs(10)).await {
        tracing::error!(error = %e, "Kafka check failed at start-up; the consumer keeps retrying");
    }
    let started = Instant::now();
    let mut marks = Watermarks::default();
    let mut tick = interval(Duration::from_millis(if options.once { 200 } else { 1000 }));
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut deadline = None;
    let commit_timeout = Duration::from_secs(30);
    loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => {
                tracing::info!("shutdown requested; sealing, delivering and committing");
                deadline = Some(Instant::now() + settings.worker.shutdown_timeout);
                break;
            }
            Some(event) = events.recv() => {
                handle_event(event, &mut pipeline, &kafka, &mut marks, options, commit_timeout).await?;
            }
            Some(c) = pipeline.next_completion(), if pipeline.in_flight() > 0 => {
                if let Some(((topic, partition), offset)) = pipeline.on_completion(c)? {
                    commit_or_warn(&kafka, vec![((topic.to_string(), partition), offset)]).await;
                }
            }
            _ = tick.tick() => {
                pipeline.seal_expired();
                if options.once {
                    let pending: Vec<TopicPartition> = marks.pending.iter().cloned().collect();
                    for tp in pending {
                        if let Some(pos) = kafka.position(&tp.0, tp.1) {
                            marks.reached(&tp, pos);
                        }
                    }
                    if marks.done() {
                        break;
                    }
                    if !marks.assigned_once && started.elapsed() > startup {
                        return Err(RunError::NoAssignment(startup));
                    }
                }
            }
            msg = kafka.recv(), if !pipeline.backpressured() => {
                // Rebalance callbacks run inside the poll that returned this message: apply
                // them first so the message is judged against the current assignment.
                while let Ok(event) = events.try_recv() {
                    handle_event(event, &mut pipeline, &kafka, &mut marks, options, commit_timeout).await?;
                }
                match msg {
                    Ok(record) => {
                        let tp = (record.topic.to_string(), record.partition);
                        if options.once {
                            if marks.end.get(&tp).is_some_and(|end| record.offset >= *end) {
                                continue;
                            }
                            marks.reached(&tp, record.offset + 1);
                        }
                        pipeline.ingest(record)?;
                        if options.once && marks.done() {
                            break;
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "Kafka consumer error"),
                }
            }
        }
    }
    let result = drain(
        &mut pipeline,
        deadline,
        &uploads_stop,
        async |((topic, partition), offset)| {
            kafka
                .commit(vec![((topic.to_string(), partition), offset)])
                .await
                .map_err(RunError::from)
        },
        settings.worker.shutdown_timeout,
    )
    .await;
    kafka.close().await;
    result.map(|()| pipeline.stats)
}

async fn commit_or_warn(kafka: &KafkaSource, offsets: Vec<(TopicPartition, i64)>) {
    if let Err(e) = kafka.commit(offsets.clone()).await {
        // The objects are durable; a lost commit only means the records are consumed again.
        tracing::warn!(error = %e, ?offsets, "offset commit failed");
    }
}

async fn handle_event(
    event: KafkaEvent,
    pipeline: &mut Pipeline,
    kafka: &KafkaSource,
    marks: &mut Watermarks,
    options: RunOptions,
    timeout: Duration,
) -> Result<(), RunError> {
    match event {
        KafkaEvent::Assigned(partitions) => {
            tracing::info!(?partitions, "partitions assigned");
            pipeline.assign(&partitions);
            if options.once {
                marks.assigned_once = true;
                for (tp, start, end) in kafka.start_and_end(partitions, timeout).await? {
                    marks.end.insert(tp.clone(), end);
                    marks.pending.insert(tp.clone());
                    marks.reached(&tp, start);
                }
            }
        }
        KafkaEvent::Revoked(partitions) => {
            tracing::info!(?partitions, "partitions revoked");
            pipeline.revoke(&partitions);
            for tp in &partitions {
                marks.pending.remove(tp);
                marks.end.remove(tp);
            }
        }
        KafkaEvent::Error {
            message,
            fatal,
            all_brokers_down,
        } => {
            if fatal || (options.once && all_brokers_down && !marks.assigned_once) {
                return Err(RunError::KafkaClient(message));
            }
            tracing::warn!(%message, "Kafka client error");
        }
    }
    Ok(())
}
