//! The run loop for an NDJSON file (or stdin): read to the end, deliver, stop. There is no
//! offset store, so every commit of the protocol succeeds at once.

use std::time::Duration;

use tokio::time::{Instant, MissedTickBehavior, interval, timeout_at};

use super::{PartitionStop, RunError, Stops, fresh_lineage};
use crate::config::FILE_TOPIC;
use crate::config::{FileSettings, Settings};
use crate::decode::DEFAULT_MAX_RECORD_BYTES;
use crate::pipeline::{Pipeline, RunStats};
use crate::protocol::{Assignment, Committed, Token};
use crate::source::file::FileSource;
use crate::telemetry::Health;

/// Does what the protocol needs: with no offset store, every commit succeeds at once (and
/// lets the uploads it records start). A stop ends the run: a file has no commit to resume
/// from.
fn commit_all(pipeline: &mut Pipeline) -> Result<(), RunError> {
    loop {
        let due = pipeline.due();
        if !due.stops.is_empty() {
            let stops = due
                .stops
                .into_iter()
                .map(|s| PartitionStop::Protocol {
                    topic: s.partition.0.to_string(),
                    partition: s.partition.1,
                    offset: s.offset,
                    reason: s.reason,
                })
                .collect();
            return Err(RunError::PartitionsStopped(stops));
        }
        if due.commits.is_empty() {
            return Ok(());
        }
        pipeline.commits_acknowledged(&due.commits);
    }
}

pub(super) async fn run_file(
    source: &FileSettings,
    mut pipeline: Pipeline,
    settings: &Settings,
    health: &Health,
    stops: Stops,
) -> Result<RunStats, RunError> {
    let Stops {
        shutdown,
        uploads: uploads_stop,
    } = stops;
    // Lines longer than every destination's record limit are bad records whatever their
    // route; the reader keeps only that much of them.
    let max_record = settings
        .destinations
        .iter()
        .map(|d| d.schema.max_record_bytes)
        .max()
        .unwrap_or(DEFAULT_MAX_RECORD_BYTES);
    let mut reader = FileSource::open(source.path.as_deref(), max_record).await?;
    // Every run of a file is a life of its own: its objects never take the names of an
    // earlier run's, which held other lines (or the same ones, written again as asked).
    let assignment = Assignment {
        token: Token(1),
        committed: Committed::Nothing,
        log_start: 0,
        log_end: i64::MAX,
        fresh_lineage: fresh_lineage(),
    };
    if let Err(reason) = pipeline.assign(FILE_TOPIC, 0, assignment) {
        return Err(RunError::PartitionsStopped(vec![PartitionStop::Protocol {
            topic: FILE_TOPIC.into(),
            partition: 0,
            offset: 0,
            reason,
        }]));
    }
    let mut tick = interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut deadline = None;
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
        commit_all(&mut pipeline)?;
        health.beat();
    }
    pipeline.seal_all();
    commit_all(&mut pipeline)?;
    while pipeline.in_flight() > 0 {
        let next = match deadline {
            Some(d) => timeout_at(d, pipeline.next_completion())
                .await
                .map_err(|_| {
                    uploads_stop.cancel();
                    RunError::ShutdownTimeout(
                        settings.worker.shutdown_timeout,
                        pipeline.undelivered(),
                    )
                })?,
            None => pipeline.next_completion().await,
        };
        if let Some(c) = next {
            pipeline.on_completion(c)?;
            commit_all(&mut pipeline)?;
        }
        health.beat();
    }
    Ok(pipeline.stats)
}
