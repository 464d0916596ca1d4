//! An NDJSON file (or stdin) as the run loop's source: read to the end, deliver, stop. The
//! loop (`driver`) does the rest; there is no offset store, so every commit succeeds at once.

use std::time::Duration;

use super::driver::{self, Driver, NoOffsetStore, Source};
use super::{PartitionStop, RunError, Stops, fresh_lineage};
use crate::config::FILE_TOPIC;
use crate::config::{FileSettings, Settings};
use crate::decode::DEFAULT_MAX_RECORD_BYTES;
use crate::pipeline::{Pipeline, RunStats, Stopped};
use crate::protocol::{Assignment, Committed, Token};
use crate::source::Record;
use crate::source::file::{FileSource, FileSourceError};
use crate::telemetry::Health;

/// A stop ends a file's run: it has no commit to resume from.
fn stopped(stops: Vec<Stopped>) -> RunError {
    RunError::PartitionsStopped(
        stops
            .into_iter()
            .map(|s| PartitionStop::Protocol {
                topic: s.partition.0.to_string(),
                partition: s.partition.1,
                offset: s.offset,
                reason: s.reason,
            })
            .collect(),
    )
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
    let reader = FileSource::open(source.path.as_deref(), max_record).await?;
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
    let mut driver = Driver::new(
        pipeline,
        NoOffsetStore::default(),
        true,
        settings.worker.shutdown_timeout,
        uploads_stop,
    );
    let mut file = File { reader };
    driver::run(
        &mut file,
        &mut driver,
        &shutdown,
        health,
        Duration::from_millis(500),
    )
    .await?;
    Ok(driver.pipeline.stats)
}

/// The file as the run loop's source.
struct File {
    reader: FileSource,
}

impl Source for File {
    type Store = NoOffsetStore;
    type Event = Result<Option<Record>, FileSourceError>;

    fn wants_events(&self, driver: &Driver<NoOffsetStore>) -> bool {
        !driver.draining() && !driver.pipeline.backpressured()
    }

    fn next_event(&mut self) -> impl Future<Output = Self::Event> {
        self.reader.next()
    }

    async fn on_event(
        &mut self,
        event: Self::Event,
        driver: &mut Driver<NoOffsetStore>,
    ) -> Result<(), RunError> {
        match event? {
            Some(record) => driver.pipeline.ingest(record)?,
            None => driver.start_drain(),
        }
        Ok(())
    }

    async fn on_tick(&mut self, _: &mut Driver<NoOffsetStore>) -> Result<(), RunError> {
        Ok(())
    }

    fn after_turn(
        &mut self,
        stops: Vec<Stopped>,
        _: &mut Driver<NoOffsetStore>,
    ) -> Result<(), RunError> {
        match stops.is_empty() {
            true => Ok(()),
            false => Err(stopped(stops)),
        }
    }
}
