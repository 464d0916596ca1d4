//! A Kafka consumer group as the run loop's source: rebalances, start offsets from commit
//! intents, `--once` watermarks, backpressure by pausing, partitions stopped on consume
//! errors, and a drain that keeps serving the group.
//!
//! The loop itself (`driver::run`: the pipeline, commits, completions, drain, deadline) is the
//! one the file source runs in. It never blocks on the group coordinator: commits run on their
//! own task and report back, so rebalance callbacks are served while a commit waits. Records
//! come from one reader per owned partition (`source::reader`), tagged with the ownership
//! token they were read under.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;

use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tokio::time::Instant;

mod events;

use super::committer::spawn_committer;
use super::driver::{self, Driver, KafkaOffsetStore};
use super::preflight::Preflight;
use super::stopped::{PartitionStop, StoppedPartitions};
use super::watermarks::Watermarks;
use super::{RunError, RunOptions, Stops, fresh_lineage};
use crate::config::{KafkaSettings, Settings};
use crate::pipeline::{Pause, Pipeline, RouteMemo, Routed, Routes, RunStats, Stopped};
use crate::protocol::{Assignment, Committed, StopReason, Token};
use crate::source::Record;
use crate::source::commit::KafkaCommitter;
use crate::source::kafka::{KafkaEvent, KafkaSource, PartitionStart, TopicPartition};
use crate::source::reader::{
    ConsumeError, Fetched, PartitionReader, Prepare, Read, ReadAhead, ReadFrom,
};
use crate::telemetry::{Health, METRICS};

/// How long the run loop waits for the commits and watermarks of newly assigned partitions:
/// well under the liveness threshold. A partition whose answer does not come in time is
/// stopped and looked up again later.
const START_LOOKUP_TIMEOUT: Duration = Duration::from_secs(20);

/// Partition readers decode and route their records, in parallel over partitions; the run
/// loop takes them routed.
struct Routing(Routes);

impl Prepare for Routing {
    type Batch = Vec<Routed>;
    const RECORD_OVERHEAD: usize = Routed::OVERHEAD;

    fn prepare(&self, records: Vec<Record>) -> (Vec<Routed>, usize) {
        let mut memo = RouteMemo::default();
        let routed: Vec<Routed> = records
            .into_iter()
            .map(|r| self.0.route_record(r, &mut memo))
            .collect();
        let bytes = routed
            .iter()
            .enumerate()
            .map(|(i, r)| r.held(i.checked_sub(1).map(|b| &routed[b])))
            .sum();
        (routed, bytes)
    }
}

/// The consumer group as the run loop's source.
struct Loop<'a> {
    kafka: &'a KafkaSource,
    health: &'a Health,
    settings: &'a Settings,
    source: &'a KafkaSettings,
    /// Rebalances and client errors, from the consumer's callbacks.
    events: UnboundedReceiver<KafkaEvent>,
    /// Destinations whose connection test passed since the start.
    passed: UnboundedReceiver<usize>,
    /// Which destinations passed their connection test: only their topics are consumed.
    ready: Vec<bool>,
    /// What the partition readers read.
    reads: UnboundedReceiver<Fetched<Vec<Routed>>>,
    started: Instant,
    marks: Watermarks,
    options: RunOptions,
    /// The pause last applied to the consumer; `None` after an assignment change.
    applied: Option<Pause>,
    /// The memory budget is reached: the loop takes no reads, which wait in the read-ahead;
    /// the readers then wait for room, librdkafka's queues fill to their limits and it stops
    /// fetching on its own. librdkafka is not paused: a pause drops what it prefetched, and
    /// every resume would fetch it again.
    held_back: bool,
    /// Each owned partition's reader.
    readers: foldhash::HashMap<TopicPartition, Owned>,
    /// The ownership token of every partition assigned to this worker, read or not.
    assigned: HashMap<TopicPartition, u64>,
    /// Where the readers send what they read.
    fetched: UnboundedSender<Fetched<Vec<Routed>>>,
    /// What the readers route their records with.
    routing: Arc<Routing>,
    /// Bytes read ahead of the loop, shared by the readers.
    budget: ReadAhead,
    /// Owned partitions stopped on a consume error.
    stopped: StoppedPartitions,
    /// The brokers' log ends being asked for (see [`Loop::follow_log_ends`]), and when they
    /// were last asked.
    log_ends: Option<tokio::task::JoinHandle<Vec<(TopicPartition, i64)>>>,
    log_ends_asked: Instant,
}

/// How often the brokers are asked for the log ends of partitions that are not fetched.
const ASK_LOG_ENDS_EVERY: Duration = Duration::from_secs(15);

/// An owned partition as the loop reads it.
struct Owned {
    /// The ownership token of its assignment.
    token: u64,
    /// `None` while it waits to be tried again after a seek that did not go through.
    reader: Option<PartitionReader>,
    /// The offset after the last record taken (or the position a reader reported), from its
    /// starting point on: where a stop leaves it.
    next: i64,
}

impl Loop<'_> {
    async fn handle(
        &mut self,
        driver: &mut Driver<KafkaOffsetStore>,
        event: KafkaEvent,
    ) -> Result<(), RunError> {
        match event {
            KafkaEvent::Assigned(owned) => {
                let tokens: HashMap<TopicPartition, u64> = owned.into_iter().collect();
                let partitions: Vec<TopicPartition> = tokens.keys().cloned().collect();
                tracing::info!(?partitions, "partitions assigned");
                self.marks.assigned_once = true;
                let starts = self
                    .kafka
                    .partition_starts(partitions, START_LOOKUP_TIMEOUT)
                    .await?;
                let mut fetch = Vec::with_capacity(starts.len());
                for s in starts {
                    let token = tokens.get(&s.partition).copied().unwrap_or_default();
                    let partition = s.partition.clone();
                    self.assigned.insert(partition.clone(), token);
                    let from = self.take_partition(driver, s, token, false).await?;
                    fetch.push((partition, token, from));
                }
                self.kafka.start_fetching(&fetch)?;
                // A new assignment starts unpaused: apply the pause again.
                self.applied = None;
            }
            KafkaEvent::Revoked(partitions) => {
                tracing::info!(?partitions, "partitions revoked");
                driver.pipeline.revoke(&partitions);
                self.applied = None;
                for tp in &partitions {
                    self.release(tp).await;
                    self.assigned.remove(tp);
                    self.marks.pending.remove(tp);
                    self.marks.end.remove(tp);
                }
            }
            KafkaEvent::Error {
                message,
                fatal,
                all_brokers_down,
            } => {
                if fatal || (self.options.once && all_brokers_down && !self.marks.assigned_once) {
                    return Err(RunError::KafkaClient(message));
                }
                tracing::warn!(error = %message, "Kafka client error");
            }
        }
        Ok(())
    }

    /// Starts owning one assigned partition: the protocol decides where reading starts (or
    /// that it cannot: `None`), and its reader is made ready for it. `again`: a partition that
    /// could not start before, now fetching from the log's end: it is moved to its start
    /// first, and stays stopped (tried again later) if that move does not go through.
    async fn take_partition(
        &mut self,
        driver: &mut Driver<KafkaOffsetStore>,
        s: PartitionStart,
        token: u64,
        again: bool,
    ) -> Result<Option<i64>, RunError> {
        let (topic, partition) = s.partition.clone();
        tracing::info!(%topic, partition, committed = ?s.committed, log_start = s.low,
            log_end = s.high, "partition starting point");
        let committed = match s.committed {
            Ok(None) => Committed::Nothing,
            Ok(Some((offset, metadata))) => Committed::At { offset, metadata },
            Err(e) => Committed::Unreadable(e),
        };
        let offset_if_stopped = match &committed {
            Committed::At { offset, .. } => *offset,
            _ => s.low,
        };
        let assignment = Assignment {
            token: Token(token),
            committed,
            log_start: s.low,
            log_end: s.high,
            fresh_lineage: fresh_lineage(),
        };
        if !again {
            self.release(&s.partition).await;
        }
        // Its lag counts from its commit even if it stops at once (a commit out of range):
        // a partition that cannot be read is the one whose lag must show.
        self.health
            .partition_started(&topic, partition, offset_if_stopped, s.high);
        let start = match driver.pipeline.assign(&topic, partition, assignment) {
            Ok(start) => start,
            Err(reason) => {
                self.stop(
                    driver,
                    PartitionStop::Protocol {
                        topic,
                        partition,
                        offset: offset_if_stopped,
                        reason,
                    },
                );
                return Ok(None);
            }
        };
        if again {
            if let Err(e) = self.kafka.seek(s.partition.clone(), start.from).await {
                // Reading from where librdkafka stands would skip to the log's end.
                self.stop(
                    driver,
                    PartitionStop::Protocol {
                        topic,
                        partition,
                        offset: start.from,
                        reason: StopReason::CommittedUnreadable(format!(
                            "cannot move the partition to offset {}: {e}",
                            start.from
                        )),
                    },
                );
                return Ok(None);
            }
            if self.stopped.release(&s.partition) {
                self.health.partition_released(&topic, partition);
            }
        }
        if start.reset {
            tracing::warn!(%topic, partition, from = start.from, log_start = s.low,
                log_end = s.high, "the committed offset is out of range and auto.offset.reset \
                is set: records were skipped, as configured");
        }
        let from = ReadFrom {
            token,
            start: start.from,
            end: self.options.once.then_some(s.high),
        };
        let reader = self.kafka.read_partition(
            s.partition.clone(),
            from,
            self.budget.clone(),
            self.routing.clone(),
            self.fetched.clone(),
        )?;
        let owned = Owned {
            token,
            reader: Some(reader),
            next: start.from,
        };
        self.readers.insert(s.partition.clone(), owned);
        self.health
            .partition_started(&topic, partition, start.from, s.high);
        if self.options.once {
            self.marks.end.insert(s.partition.clone(), s.high);
            self.marks.pending.insert(s.partition.clone());
            self.marks.reached(&s.partition, start.from);
        }
        Ok(Some(start.from))
    }

    /// Keeps each owned partition's log end current for its lag: librdkafka's cached value
    /// after every fetch, and every [`ASK_LOG_ENDS_EVERY`] the brokers' answer for all of
    /// them, since the cache stands still while a partition is paused (its destination
    /// refuses uploads) or stopped, exactly when its lag matters.
    fn follow_log_ends(&mut self) {
        for (topic, partition) in self.assigned.keys() {
            if let Some(high) = self.kafka.log_end(topic, *partition) {
                self.health.partition_log_end(topic, *partition, high);
            }
        }
        if self.log_ends.as_ref().is_some_and(|t| t.is_finished()) {
            let answered = self.log_ends.take().and_then(|t| t.now_or_never());
            for ((topic, partition), high) in answered.and_then(Result::ok).unwrap_or_default() {
                self.health.partition_log_end(&topic, partition, high);
            }
        }
        if self.log_ends.is_none() && self.log_ends_asked.elapsed() >= ASK_LOG_ENDS_EVERY {
            self.log_ends_asked = Instant::now();
            let owned: Vec<TopicPartition> = self.assigned.keys().cloned().collect();
            self.log_ends = Some(self.kafka.fetch_log_ends(owned, Duration::from_secs(5)));
        }
    }

    /// Stops reading a partition (revoked, or assigned afresh) and forgets why it stopped.
    async fn release(&mut self, tp: &TopicPartition) {
        if let Some(reader) = self.readers.remove(tp).and_then(|o| o.reader) {
            reader.stop().await;
        }
        self.health.partition_revoked(&tp.0, tp.1);
        if self.stopped.release(tp) {
            self.health.partition_released(&tp.0, tp.1);
        }
    }

    /// Takes what a partition's reader read, unless the partition was revoked since.
    fn on_fetched(
        &mut self,
        driver: &mut Driver<KafkaOffsetStore>,
        fetched: Fetched<Vec<Routed>>,
    ) -> Result<(), RunError> {
        let tp = fetched.partition;
        if self
            .readers
            .get(&tp)
            .is_none_or(|o| o.token != fetched.token)
        {
            return Ok(());
        }
        match fetched.read {
            Read::Records(records) => {
                // While draining, records are left for the next run: nothing past the sealed
                // segments is committed. (Records read just before a backpressure pause are
                // still taken: dropping one would leave a hole.)
                // The partition's bookkeeping is looked up once a batch, not once a record.
                let end = self.marks.end.get(&tp).copied();
                let mut next = None;
                for routed in records {
                    let offset = routed.record.offset;
                    if driver.draining() || end.is_some_and(|end| offset >= end) {
                        break;
                    }
                    if next.is_none() && self.stopped.resumed(&tp) {
                        self.health.partition_released(&tp.0, tp.1);
                        tracing::info!(topic = %tp.0, partition = tp.1, offset,
                            "partition reads again after its consume error");
                    }
                    next = Some(offset + 1);
                    driver.pipeline.ingest_routed(routed)?;
                    // Paused the moment the budget is reached, not after the batch: what
                    // librdkafka delivers until the pause takes effect is taken all the same.
                    if !self.held_back && driver.pipeline.over_limits() {
                        self.update_pause(driver);
                    }
                }
                if let Some(next) = next {
                    if let Some(owned) = self.readers.get_mut(&tp) {
                        owned.next = next;
                    }
                    self.marks.reached(&tp, next);
                }
            }
            Read::Position(next) => {
                if let Some(owned) = self.readers.get_mut(&tp) {
                    owned.next = owned.next.max(next);
                }
                self.marks.reached(&tp, next);
            }
            Read::Failed(error) => {
                // Where the loop stands, not the reader: records it read past the end of a
                // `--once` run or while draining were not taken.
                let Some(offset) = self.readers.get(&tp).map(|o| o.next) else {
                    return Ok(());
                };
                let error = ConsumeError { offset, ..error };
                if !driver.draining() && !self.marks.past_end(&tp, error.offset) {
                    self.stop(driver, PartitionStop::Consume(error));
                }
            }
        }
        if self.options.once && !driver.draining() && self.marks.done() {
            driver.start_drain();
        }
        Ok(())
    }

    /// Stops a partition: a consume error (what came before is sealed, delivered and
    /// committed; a long-running worker tries it again later, see `stopped`) or the protocol
    /// (it cannot go on safely). Nothing from its first undelivered offset on is committed; it
    /// is paused, logged with its coordinates, counted and listed in the health endpoints. The
    /// other partitions go on.
    fn stop(&mut self, driver: &mut Driver<KafkaOffsetStore>, stop: PartitionStop) {
        if !self.stopped.stop(stop.clone(), Instant::now().into_std()) {
            return;
        }
        let (topic, partition) = stop.partition();
        let offset = stop.offset();
        match &stop {
            PartitionStop::Consume(_) => {
                METRICS.consume_errors.inc();
                driver.pipeline.seal_partition(&topic, partition);
            }
            PartitionStop::Protocol { .. } => {
                METRICS.protocol_stops.inc();
            }
        }
        tracing::error!(%topic, partition, offset,
            "{stop}; the partition is stopped there: nothing from that offset on is delivered \
             or committed");
        self.health
            .partition_stopped(&topic, partition, offset, stop.to_string());
        self.marks.pending.remove(&(topic, partition));
    }

    /// Tries the stopped partitions whose backoff is over again, each from its first
    /// undelivered offset (librdkafka may have skipped past it).
    async fn retry_stopped(
        &mut self,
        driver: &mut Driver<KafkaOffsetStore>,
    ) -> Result<(), RunError> {
        let mut lookups = HashMap::new();
        for (tp, offset) in self.stopped.due(Instant::now().into_std()) {
            let Some(mut owned) = self.readers.remove(&tp) else {
                // Never started: its commit could not be read. All such partitions are looked
                // up again in one request.
                if let Some(token) = self.assigned.get(&tp).copied() {
                    lookups.insert(tp, token);
                }
                continue;
            };
            if let Some(reader) = owned.reader.take() {
                reader.stop().await;
            }
            if let Err(e) = self.kafka.seek(tp.clone(), offset).await {
                // Reading on from where librdkafka stands could skip what it skipped: stay
                // stopped, with no reader, and try again after the next backoff.
                tracing::warn!(topic = %tp.0, partition = tp.1, offset, error = %e,
                    "cannot move a stopped partition back to its first undelivered offset; \
                     trying again later");
                if let Some(stop) = self.stopped.error(&tp) {
                    self.stop(driver, stop);
                }
                self.readers.insert(tp, owned);
                continue;
            }
            tracing::info!(topic = %tp.0, partition = tp.1, offset,
                "trying a partition stopped on a consume error again");
            let from = ReadFrom {
                token: owned.token,
                start: offset,
                end: None,
            };
            let reader = self.kafka.read_partition(
                tp.clone(),
                from,
                self.budget.clone(),
                self.routing.clone(),
                self.fetched.clone(),
            )?;
            owned.reader = Some(reader);
            owned.next = offset;
            self.readers.insert(tp, owned);
        }
        if !lookups.is_empty() {
            let partitions: Vec<TopicPartition> = lookups.keys().cloned().collect();
            tracing::info!(
                ?partitions,
                "looking up the commits of partitions that could not start, again"
            );
            let starts = self
                .kafka
                .partition_starts(partitions, START_LOOKUP_TIMEOUT)
                .await?;
            for s in starts {
                let token = lookups.get(&s.partition).copied().unwrap_or_default();
                self.take_partition(driver, s, token, true).await?;
            }
            self.applied = None;
        }
        Ok(())
    }

    /// Acts on the partitions the protocol stopped.
    fn on_stops(&mut self, driver: &mut Driver<KafkaOffsetStore>, stops: Vec<Stopped>) {
        for Stopped {
            partition,
            offset,
            reason,
        } in stops
        {
            self.stop(
                driver,
                PartitionStop::Protocol {
                    topic: partition.0.to_string(),
                    partition: partition.1,
                    offset,
                    reason,
                },
            );
        }
    }

    /// Pauses everything while draining; over the limits, holds back what the readers read
    /// (see `held_back`); otherwise pauses the partitions the pipeline names (a refusing
    /// destination's, a partition with too many undelivered segments) and resumes the rest.
    fn update_pause(&mut self, driver: &mut Driver<KafkaOffsetStore>) {
        self.held_back = false;
        let want = match driver.pipeline.pause() {
            _ if driver.draining() => Pause::All,
            Pause::All => {
                self.held_back = true;
                return;
            }
            Pause::Partitions(mut set) => {
                let stopped: Vec<TopicPartition> = self.stopped.paused().cloned().collect();
                for (topic, partition) in stopped {
                    set.insert((driver.pipeline.intern(&topic), partition));
                }
                Pause::Partitions(set)
            }
        };
        if self.applied.as_ref() == Some(&want) {
            return;
        }
        let count = match &want {
            Pause::All => self.kafka.apply_pause(|_, _| true),
            Pause::Partitions(set) => self
                .kafka
                .apply_pause(|t, p| set.iter().any(|(st, sp)| &**st == t && *sp == p)),
        };
        if let Pause::Partitions(set) = &want
            && !set.is_empty()
        {
            tracing::info!(partitions = ?set,
                "pausing partitions until their uploads catch up (or, if stopped, for good)");
        }
        METRICS.partitions_paused.set(count as i64);
        self.applied = Some(want);
    }
}

pub(super) async fn run_kafka(
    source: &KafkaSettings,
    pipeline: Pipeline,
    settings: &Settings,
    options: RunOptions,
    health: &Health,
    preflight: Preflight,
    stops: Stops,
) -> Result<RunStats, RunError> {
    let Stops {
        shutdown,
        uploads: uploads_stop,
    } = stops;
    let Preflight { ready, passed } = preflight;
    let prefetch = KafkaSource::prefetch(
        source,
        settings.worker.memory().fetch_queues,
        Duration::from_secs(10),
    )
    .await;
    let (kafka, events) = KafkaSource::connect(
        source,
        &events::ready_topics(source, settings, &ready),
        &prefetch,
    )?;
    let startup = settings.worker.startup_timeout;
    if options.once {
        kafka
            .check_topics(startup.min(Duration::from_secs(30)))
            .await?;
    } else if let Err(e) = kafka.check_topics(Duration::from_secs(10)).await {
        tracing::error!(error = %e, "Kafka check failed at start-up; the consumer keeps retrying");
    }
    let (requests, answers, mut committer) = spawn_committer(KafkaCommitter::new(&kafka));
    let (fetched, reads) = unbounded_channel();
    let routing = Arc::new(Routing(pipeline.routes()));
    let mut driver = Driver::new(
        pipeline,
        KafkaOffsetStore { requests, answers },
        options.once,
        settings.worker.shutdown_timeout,
        uploads_stop,
    );
    let mut state = Loop {
        kafka: &kafka,
        health,
        settings,
        source,
        events,
        passed,
        ready,
        reads,
        started: Instant::now(),
        marks: Watermarks::default(),
        options,
        applied: None,
        held_back: false,
        readers: foldhash::HashMap::default(),
        assigned: HashMap::new(),
        fetched,
        routing,
        budget: ReadAhead::new(settings.worker.memory().read_ahead),
        stopped: StoppedPartitions::new(
            (!options.once).then_some(settings.worker.permanent_error_retry),
        ),
        log_ends: None,
        log_ends_asked: Instant::now(),
    };
    let period = Duration::from_millis(if options.once { 200 } else { 500 });
    let outcome = driver::run(&mut state, &mut driver, &shutdown, health, period).await;
    let mut stats = driver.pipeline.stats;
    stats.peak_read_ahead_bytes = state.budget.peak() as u64;
    for reader in state.readers.drain().filter_map(|(_, o)| o.reader) {
        reader.stop().await;
    }
    let stopped = state.stopped.into_errors();
    // Ends the commit task (its requests channel closes), which holds the consumer too: the
    // consumer is closed once, below, not dropped by whichever task lets go of it last.
    drop(driver);
    if tokio::time::timeout(Duration::from_secs(30), &mut committer)
        .await
        .is_err()
    {
        committer.abort();
    }
    kafka.close().await;
    outcome?;
    if stopped.is_empty() {
        Ok(stats)
    } else {
        Err(RunError::PartitionsStopped(stopped))
    }
}
