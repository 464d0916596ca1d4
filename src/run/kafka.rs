//! The run loop for a Kafka consumer group: rebalances, recovery from commit intents,
//! `--once` watermarks, graceful shutdown.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use tokio::time::{Instant, MissedTickBehavior, interval};
use tokio_util::sync::CancellationToken;

use super::{Committer, RunError, RunOptions, drain, flush_commits};
use crate::config::{KafkaSettings, Settings};
use crate::delivery::intent::RecoveryPlan;
use crate::pipeline::{Pipeline, RunStats};
use crate::source::kafka::{KafkaEvent, KafkaSource, TopicPartition};

/// `--once` bookkeeping: where each assigned partition must reach before the run may end.
#[derive(Default)]
struct Watermarks {
    /// Partitions whose end is not reached yet.
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

/// Mutable state of the Kafka run loop that event handling touches.
struct Loop<'a> {
    kafka: &'a KafkaSource,
    pipeline: Pipeline,
    marks: Watermarks,
    options: RunOptions,
    /// The user chose `auto.offset.reset`, accepting a skip when the committed offset is gone.
    explicit_reset: bool,
}

impl Loop<'_> {
    async fn handle(&mut self, event: KafkaEvent) -> Result<(), RunError> {
        match event {
            KafkaEvent::Assigned(partitions) => {
                tracing::info!(?partitions, "partitions assigned");
                self.marks.assigned_once = true;
                let starts = self
                    .kafka
                    .partition_starts(partitions, Duration::from_secs(30))
                    .await?;
                for s in starts {
                    let (topic, partition) = s.partition.clone();
                    if let Some(committed) = s.committed
                        && committed < s.low
                        && !self.explicit_reset
                    {
                        return Err(RunError::OffsetOutOfRange {
                            topic,
                            partition,
                            committed,
                            low: s.low,
                        });
                    }
                    let plan = RecoveryPlan::new(s.committed, &s.metadata).map_err(|source| {
                        RunError::Recovery {
                            topic: topic.clone(),
                            partition,
                            source,
                        }
                    })?;
                    self.pipeline.assign(&topic, partition, plan);
                    if self.options.once {
                        self.marks.end.insert(s.partition.clone(), s.high);
                        self.marks.pending.insert(s.partition.clone());
                        self.marks.reached(&s.partition, s.start);
                    }
                }
            }
            KafkaEvent::Revoked(partitions) => {
                tracing::info!(?partitions, "partitions revoked");
                self.pipeline.revoke(&partitions);
                for tp in &partitions {
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
                tracing::warn!(%message, "Kafka client error");
            }
        }
        Ok(())
    }
}

pub(super) async fn run_kafka(
    source: &KafkaSettings,
    pipeline: Pipeline,
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
    let mut state = Loop {
        kafka: &kafka,
        pipeline,
        marks: Watermarks::default(),
        options,
        explicit_reset: source.properties.0.contains_key("auto.offset.reset"),
    };
    let committer = Committer::Kafka(&kafka);
    let started = Instant::now();
    let mut tick = interval(Duration::from_millis(if options.once { 200 } else { 1000 }));
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut deadline = None;
    let mut failures = 0;
    let outcome: Result<(), RunError> = async {
        loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => {
                    tracing::info!("shutdown requested; sealing, delivering and committing");
                    deadline = Some(Instant::now() + settings.worker.shutdown_timeout);
                    return Ok(());
                }
                Some(event) = events.recv() => state.handle(event).await?,
                Some(c) = state.pipeline.next_completion(), if state.pipeline.in_flight() > 0 => {
                    state.pipeline.on_completion(c)?;
                }
                _ = tick.tick() => {
                    state.pipeline.seal_expired();
                    if options.once {
                        let pending: Vec<TopicPartition> = state.marks.pending.iter().cloned().collect();
                        for tp in pending {
                            if let Some(pos) = kafka.position(&tp.0, tp.1) {
                                state.marks.reached(&tp, pos);
                            }
                        }
                        if state.marks.done() {
                            return Ok(());
                        }
                        if !state.marks.assigned_once && started.elapsed() > startup {
                            return Err(RunError::NoAssignment(startup));
                        }
                    }
                }
                msg = kafka.recv(), if !state.pipeline.backpressured() => {
                    // Rebalance callbacks run inside the poll that returned this message: apply
                    // them first so the message is judged against the current assignment.
                    while let Ok(event) = events.try_recv() {
                        state.handle(event).await?;
                    }
                    match msg {
                        Ok(record) => {
                            let tp = (record.topic.to_string(), record.partition);
                            let beyond = options.once
                                && state.marks.end.get(&tp).is_some_and(|end| record.offset >= *end);
                            if !beyond {
                                state.marks.reached(&tp, record.offset + 1);
                                state.pipeline.ingest(record)?;
                            }
                            if options.once && state.marks.done() {
                                return Ok(());
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, "Kafka consumer error"),
                    }
                }
            }
            flush_commits(&mut state.pipeline, &committer, &mut failures, options.once).await?;
        }
    }
    .await;
    let result = match outcome {
        Ok(()) => {
            drain(
                &mut state.pipeline,
                &committer,
                deadline,
                &uploads_stop,
                settings.worker.shutdown_timeout,
            )
            .await
        }
        Err(e) => Err(e),
    };
    let stats = state.pipeline.stats;
    drop(state);
    kafka.close().await;
    result.map(|()| stats)
}
