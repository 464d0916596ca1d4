//! `pail run`: wires a source, the pipeline and the stores together and drives them until the
//! input ends (`--once`, file sources) or shutdown is requested.

mod committer;
mod driver;
mod file;
mod kafka;
mod preflight;
mod stopped;
mod watermarks;

pub use stopped::PartitionStop;

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::{Settings, SourceSettings};
use crate::delivery::{Delivery, RetryPolicy, Target};
use crate::pipeline::{Destination, Limits, Pipeline, PipelineError, RunStats};
use crate::protocol::{Lineage, Settings as ProtocolSettings};
use crate::source::file::FileSourceError;
use crate::source::kafka::KafkaSourceError;
use crate::store::{StoreError, build_store, key_prefix};
use crate::telemetry::{
    DestinationHealth, Health, METRICS, ProgressMode, ServeError, spawn_progress,
};

/// How a run ends.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunOptions {
    /// Drain every assigned partition up to the high watermark seen at assignment, deliver,
    /// commit and return.
    pub once: bool,
    /// How a bounded run (`once`, a file) reports its progress.
    pub progress: ProgressMode,
    /// Time between progress log lines (`ProgressMode::Log`).
    pub progress_every: Duration,
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
    #[error(transparent)]
    Telemetry(#[from] ServeError),
    #[error("Kafka: {0}")]
    KafkaClient(String),
    #[error("destination {destination:?}: connection test failed at start-up: {error}")]
    Preflight { destination: String, error: String },
    /// Partitions stopped, each at its first undelivered offset.
    #[error("{}", partitions_stopped(.0))]
    PartitionsStopped(Vec<PartitionStop>),
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

fn partitions_stopped(errors: &[PartitionStop]) -> String {
    let mut text = format!(
        "{} partition(s) stopped; every other partition was delivered and committed:",
        errors.len()
    );
    for e in errors {
        text.push_str(&format!(
            "\n  {e}; nothing from offset {} on was delivered or committed",
            e.offset()
        ));
    }
    text.push_str(
        "\nNothing was skipped: the next run starts each stopped partition at that offset \
         again. If librdkafka cannot decode the batch there (a corrupt batch, a CRC mismatch), \
         fix it upstream, or move the group's offset past it deliberately \
         (kafka-consumer-groups --reset-offsets --to-offset)",
    );
    text
}

/// A lineage for a partition's offsets that begin a new life now (see [`Lineage`]).
fn fresh_lineage() -> Lineage {
    let seconds = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    Lineage::new(seconds, fastrand::u16(..))
}

/// How a run is stopped: `shutdown` ends consumption (a signal); `uploads` ends uploads,
/// later, so that a graceful shutdown can still finish them (or at its deadline).
struct Stops {
    shutdown: CancellationToken,
    uploads: CancellationToken,
}

/// Consecutive failed commits after which a bounded (`--once`) run gives up.
const MAX_COMMIT_FAILURES: u32 = 10;

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
                part_size: d.upload.part_size,
                streamed: Default::default(),
                health: Arc::new(DestinationHealth::new(&d.name)),
            },
            settings: d.clone(),
        });
    }
    let health = Arc::new(Health::new(
        destinations
            .iter()
            .map(|d| d.target.health.clone())
            .collect(),
    ));
    health.beat();
    METRICS
        .memory_limit_bytes
        .set(settings.worker.memory_limit as i64);
    let endpoint = match settings.telemetry.listen {
        Some(addr) => Some(crate::telemetry::serve(addr, health.clone()).await?.1),
        None => None,
    };
    let _stop_endpoint = endpoint.map(AbortOnDrop);
    let bounded = options.once || matches!(settings.source, SourceSettings::File(_));
    let healths: Vec<_> = destinations
        .iter()
        .map(|d| d.target.health.clone())
        .collect();
    let preflight = preflight::preflight(
        &settings.destinations,
        &health,
        &healths,
        bounded,
        &shutdown,
    )
    .await?;
    let Some(preflight) = preflight else {
        tracing::info!("shutdown requested during the start-up connection tests; nothing consumed");
        return Ok(RunStats::default());
    };
    let policy = if bounded {
        RetryPolicy::bounded()
    } else {
        RetryPolicy::forever(settings.worker.permanent_error_retry)
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
    };
    let file_name = match &settings.source {
        SourceSettings::File(f) => Some(
            f.path
                .as_ref()
                .map_or("<stdin>".into(), |p| p.display().to_string()),
        ),
        SourceSettings::Kafka(_) => None,
    };
    let protocol = match &settings.source {
        SourceSettings::Kafka(k) => {
            let (accept_reset, start_at_end) = crate::source::kafka::offset_reset(k);
            ProtocolSettings {
                accept_reset,
                start_at_end,
            }
        }
        SourceSettings::File(_) => ProtocolSettings {
            accept_reset: false,
            start_at_end: false,
        },
    };
    let pipeline = Pipeline::new(destinations, delivery, limits, protocol, file_name);
    let _stop_uploads_on_exit = uploads_stop.clone().drop_guard();
    let stop_progress = CancellationToken::new();
    let progress = match bounded {
        true => spawn_progress(
            health.clone(),
            options.progress,
            options.progress_every,
            stop_progress.clone(),
        ),
        false => None,
    };
    let result = match &settings.source {
        SourceSettings::File(f) => {
            let stops = Stops {
                shutdown,
                uploads: uploads_stop,
            };
            file::run_file(f, pipeline, &settings, &health, stops).await
        }
        SourceSettings::Kafka(k) => {
            kafka::run_kafka(
                k,
                pipeline,
                &settings,
                options,
                &health,
                preflight,
                Stops {
                    shutdown,
                    uploads: uploads_stop,
                },
            )
            .await
        }
    };
    stop_progress.cancel();
    if let Some(progress) = progress {
        let _ = progress.await;
    }
    if let Ok(stats) = &result {
        tracing::info!(?stats, "run finished");
    }
    result
}

/// Stops a background task when the run ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
