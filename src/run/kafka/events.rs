//! What the Kafka source hands the run loop: rebalances, destinations that passed their
//! connection test, the consumer's own queue (which serves the callbacks), and the partition
//! readers' records; and its periodic work (stopped partitions tried again, the `--once` end).

use rdkafka::error::KafkaError;

use super::Loop;
use crate::config::{KafkaSettings, Settings};
use crate::pipeline::{Pause, Routed, Stopped};
use crate::run::RunError;
use crate::run::driver::{Driver, KafkaOffsetStore, Source};
use crate::source::Record;
use crate::source::kafka::KafkaEvent;
use crate::source::reader::{ConsumeError, Fetched, ReadFailure};

/// The topics of the destinations that passed their connection test.
pub(super) fn ready_topics(
    source: &KafkaSettings,
    settings: &Settings,
    ready: &[bool],
) -> Vec<String> {
    source
        .topics
        .iter()
        .filter(|t| settings.route(t).is_some_and(|i| ready[i]))
        .cloned()
        .collect()
}

/// What the run loop waits for from the consumer group.
pub(super) enum Input {
    Event(KafkaEvent),
    /// A destination passed its connection test.
    Passed(usize),
    /// A record from the consumer's own queue, or an error it reported.
    Consumed(Result<Record, KafkaError>),
    Fetched(Fetched<Vec<Routed>>),
}

impl Source for Loop<'_> {
    type Store = KafkaOffsetStore;
    type Event = Input;

    fn wants_events(&self, _: &Driver<KafkaOffsetStore>) -> bool {
        // Always: rebalances are served while draining, and backpressure pauses partitions.
        true
    }

    async fn next_event(&mut self) -> Input {
        tokio::select! {
            biased;
            Some(event) = self.events.recv() => Input::Event(event),
            Some(index) = self.passed.recv() => Input::Passed(index),
            // Polled even while paused, and before the readers' records so that a busy stream
            // of them cannot starve it: this poll serves rebalance and error callbacks.
            consumed = self.kafka.recv() => Input::Consumed(consumed),
            // Over the memory budget, what the readers read waits in the read-ahead (its own
            // share of the budget), not in the pipeline. Never while a replay runs: the budget
            // then pauses all but the replaying partitions, which must go on.
            Some(f) = self.reads.recv(), if !self.held_back && self.applied != Some(Pause::All) => {
                Input::Fetched(f)
            }
        }
    }

    async fn on_event(
        &mut self,
        input: Input,
        driver: &mut Driver<KafkaOffsetStore>,
    ) -> Result<(), RunError> {
        match input {
            Input::Event(event) => self.handle(driver, event).await?,
            Input::Passed(index) => {
                self.ready[index] = true;
                let topics = ready_topics(self.source, self.settings, &self.ready);
                tracing::info!(destination = %self.settings.destinations[index].name, ?topics,
                    "destination passed its connection test; consuming its topics");
                self.kafka.subscribe(&topics)?;
            }
            Input::Consumed(consumed) => {
                // Callbacks run inside the poll that returned this message: apply them first
                // so the message is judged against the current assignment.
                while let Ok(event) = self.events.try_recv() {
                    self.handle(driver, event).await?;
                }
                match consumed {
                    // Every owned partition is read from its own queue, detached before it was
                    // assigned: a record here could be out of order with its partition's
                    // reader, so that partition stops rather than guess.
                    Ok(record) => {
                        let tp = (record.topic.to_string(), record.partition);
                        if let Some(owned) = self.readers.get(&tp)
                            && !self.stopped.contains(&tp)
                        {
                            let error = ConsumeError {
                                topic: tp.0.clone(),
                                partition: tp.1,
                                offset: record.offset,
                                cause: ReadFailure::Misrouted,
                            };
                            let token = owned.token;
                            self.on_fetched(driver, Fetched::failed(tp, token, error))?;
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "Kafka consumer error"),
                }
            }
            Input::Fetched(f) => self.on_fetched(driver, f)?,
        }
        Ok(())
    }

    async fn on_tick(&mut self, driver: &mut Driver<KafkaOffsetStore>) -> Result<(), RunError> {
        // The tick outranks the source's events in the loop: rebalances already queued are
        // applied first, so that neither the retries nor the `--once` checks below act on an
        // assignment that has changed.
        while let Ok(event) = self.events.try_recv() {
            self.handle(driver, event).await?;
        }
        // `--once` counts to the log end at assignment; a long-running worker follows the log.
        if !self.options.once {
            self.follow_log_ends();
        }
        if driver.draining() {
            return Ok(());
        }
        self.retry_stopped(driver).await?;
        if self.options.once {
            let startup = self.settings.worker.startup_timeout;
            if self.marks.done() {
                driver.start_drain();
            } else if !self.marks.assigned_once && self.started.elapsed() > startup {
                return Err(RunError::NoAssignment(startup));
            }
        }
        Ok(())
    }

    fn after_turn(
        &mut self,
        stops: Vec<Stopped>,
        driver: &mut Driver<KafkaOffsetStore>,
    ) -> Result<(), RunError> {
        self.on_stops(driver, stops);
        self.update_pause(driver);
        Ok(())
    }
}
