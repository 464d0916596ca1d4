//! The run loop for an NDJSON file (or stdin): read to the end, deliver, stop.

use std::time::Duration;

use tokio::time::{Instant, MissedTickBehavior, interval};
use tokio_util::sync::CancellationToken;

use super::{Committer, RunError, drain, flush_commits};
use crate::config::{FileSettings, Settings};
use crate::decode::DEFAULT_MAX_RECORD_BYTES;
use crate::pipeline::{Pipeline, RunStats};
use crate::source::file::FileSource;

pub(super) async fn run_file(
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
    let mut failures = 0;
    loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => {
                tracing::info!("shutdown requested; delivering what was read");
                deadline = Some(Instant::now() + settings.worker.shutdown_timeout);
                break;
            }
            Some(c) = pipeline.next_completion(), if pipeline.in_flight() > 0 => pipeline.on_completion(c)?,
            _ = tick.tick() => pipeline.seal_expired(),
            next = reader.next(), if !pipeline.backpressured() => match next? {
                Some(record) => pipeline.ingest(record)?,
                None => break,
            },
        }
        flush_commits(&mut pipeline, &Committer::None, &mut failures, true).await?;
    }
    drain(
        &mut pipeline,
        &Committer::None,
        deadline,
        &uploads_stop,
        settings.worker.shutdown_timeout,
    )
    .await?;
    Ok(pipeline.stats)
}
