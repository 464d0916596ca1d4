//! The one run loop, for every source: the pipeline and its protocol, commits through an
//! offset store (Kafka's group coordinator, or none for a file: every commit succeeds at
//! once), finished deliveries, the tick, the drain and the shutdown deadline, written once
//! ([`run`]). A source ([`Source`]) adds only where records come from, its own periodic work,
//! and what it does with a stopped partition.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};
use tokio::time::{Instant, MissedTickBehavior, interval};
use tokio_util::sync::CancellationToken;

use super::committer::{CommitAnswer, CommitBatch};
use super::{MAX_COMMIT_FAILURES, RunError};
use crate::delivery::Completion;
use crate::pipeline::{Pipeline, Stopped};
use crate::telemetry::{Health, METRICS};

/// Where commit requests go and where their answers come from.
pub(super) trait OffsetStore {
    /// Hands one request over; false when the store is gone.
    fn send(&mut self, commits: CommitBatch) -> bool;
    /// The next answer; pending while none is due, `None` once the store is gone.
    /// Cancel-safe (it is raced in `select!`).
    fn answer(&mut self) -> impl Future<Output = Option<CommitAnswer>>;
}

/// A file has no offset store: every commit succeeds at once.
#[derive(Default)]
pub(super) struct NoOffsetStore(VecDeque<CommitBatch>);

impl OffsetStore for NoOffsetStore {
    fn send(&mut self, commits: CommitBatch) -> bool {
        self.0.push_back(commits);
        true
    }

    async fn answer(&mut self) -> Option<CommitAnswer> {
        match self.0.pop_front() {
            Some(acknowledged) => Some(CommitAnswer {
                acknowledged,
                ..CommitAnswer::default()
            }),
            None => std::future::pending().await,
        }
    }
}

/// Kafka's group coordinator, through the commit task (see `committer`).
pub(super) struct KafkaOffsetStore {
    pub requests: UnboundedSender<CommitBatch>,
    pub answers: UnboundedReceiver<CommitAnswer>,
}

impl OffsetStore for KafkaOffsetStore {
    fn send(&mut self, commits: CommitBatch) -> bool {
        self.requests.send(commits).is_ok()
    }

    async fn answer(&mut self) -> Option<CommitAnswer> {
        self.answers.recv().await
    }
}

/// The shared half of a run loop.
pub(super) struct Driver<S> {
    pub pipeline: Pipeline,
    pub store: S,
    /// Consecutive failed commits after which the run gives up; `None`: never (a long-running
    /// worker keeps its segments and tries again).
    give_up_after: Option<u32>,
    commit_failures: u32,
    commits_in_flight: usize,
    /// No more records are taken; the loop ends when everything sealed is delivered.
    draining: bool,
    /// When a requested shutdown gives up on what is still undelivered.
    deadline: Option<Instant>,
    shutdown_timeout: Duration,
    /// Ends the uploads still running when the deadline passes.
    uploads_stop: CancellationToken,
}

impl<S: OffsetStore> Driver<S> {
    pub fn new(
        pipeline: Pipeline,
        store: S,
        bounded: bool,
        shutdown_timeout: Duration,
        uploads_stop: CancellationToken,
    ) -> Self {
        Self {
            pipeline,
            store,
            give_up_after: bounded.then_some(MAX_COMMIT_FAILURES),
            commit_failures: 0,
            commits_in_flight: 0,
            draining: false,
            deadline: None,
            shutdown_timeout,
            uploads_stop,
        }
    }

    /// Whether records are no longer taken.
    pub fn draining(&self) -> bool {
        self.draining
    }

    /// Whether a shutdown was requested.
    pub fn shutting_down(&self) -> bool {
        self.deadline.is_some()
    }

    /// Shutdown requested: seal, deliver and commit what was taken, until the deadline.
    pub fn shut_down(&mut self) {
        tracing::info!("shutdown requested; sealing, delivering and committing");
        self.deadline = Some(Instant::now() + self.shutdown_timeout);
        self.start_drain();
    }

    /// The input is done (end of file, `--once` watermarks): take nothing more, deliver and
    /// commit what was taken.
    pub fn start_drain(&mut self) {
        self.draining = true;
        self.pipeline.seal_all();
    }

    /// A delivery finished.
    pub fn on_completion(&mut self, c: Completion) -> Result<(), RunError> {
        Ok(self.pipeline.on_completion(c)?)
    }

    /// A commit request was answered.
    pub fn on_answer(&mut self, answer: CommitAnswer) -> Result<(), RunError> {
        self.commits_in_flight = self.commits_in_flight.saturating_sub(1);
        let CommitAnswer {
            acknowledged,
            failed,
            error,
        } = answer;
        if !acknowledged.is_empty() {
            METRICS.commits.inc_by(acknowledged.len() as u64);
            self.pipeline.commits_acknowledged(&acknowledged);
        }
        if failed.is_empty() {
            self.commit_failures = 0;
            return Ok(());
        }
        let error = error.unwrap_or_default();
        METRICS.commit_failures.inc();
        self.commit_failures += 1;
        let partitions: Vec<_> = failed.iter().map(|c| &c.partition).collect();
        tracing::warn!(%error, ?partitions,
            "offset commit failed; its segments wait and the commit is retried");
        self.pipeline.commits_failed(&failed);
        if self
            .give_up_after
            .is_some_and(|max| self.commit_failures >= max)
        {
            return Err(RunError::Commit(error));
        }
        Ok(())
    }

    /// Time passed: failed commits are due again, gauges are published, and past the
    /// shutdown deadline the run gives up (what is undelivered is not committed: it is read
    /// again by the next owner). Outside a drain, segments past their age are sealed.
    pub fn on_tick(&mut self) -> Result<(), RunError> {
        self.pipeline.tick();
        self.pipeline.publish_gauges();
        if let Some(deadline) = self.deadline
            && Instant::now() >= deadline
        {
            self.uploads_stop.cancel();
            return Err(RunError::ShutdownTimeout(
                self.shutdown_timeout,
                self.pipeline.undelivered(),
            ));
        }
        if !self.draining {
            self.pipeline.seal_expired();
        }
        Ok(())
    }

    /// After every step of the loop: does what the protocol needs now (one commit request
    /// with every partition due, uploads) and returns the partitions it stopped, for the
    /// source to act on.
    pub fn step(&mut self) -> Result<Vec<Stopped>, RunError> {
        if self.draining {
            // Segments that could not be sealed at the drain's start (a partition at the
            // cap) may be now.
            self.pipeline.seal_all();
        }
        let due = self.pipeline.due();
        if !due.commits.is_empty() {
            if !self.store.send(due.commits) {
                return Err(store_gone());
            }
            self.commits_in_flight += 1;
        }
        Ok(due.stops)
    }

    /// Draining, and every sealed segment is durable and its commit acknowledged; records
    /// left open (a replay short of its recorded end, a partition at the cap) are read again
    /// by the next owner.
    pub fn drained(&self) -> bool {
        self.draining && self.commits_in_flight == 0 && self.pipeline.settled()
    }
}

/// The offset store stopped taking requests or answering them (the commit task ended).
fn store_gone() -> RunError {
    RunError::Commit("the commit task ended; no commit can be made".into())
}

/// Where records come from, as the loop sees it.
pub(super) trait Source {
    /// Where its commits go.
    type Store: OffsetStore;
    /// What it waits for: records, and work of its own (a rebalance, say).
    type Event;

    /// Whether the loop waits for the source's next event now (a file waits while the
    /// pipeline is backpressured; Kafka is always served, its pause is per partition).
    fn wants_events(&self, driver: &Driver<Self::Store>) -> bool;

    /// The source's next event. Cancel-safe: it is raced against the rest of the loop.
    fn next_event(&mut self) -> impl Future<Output = Self::Event>;

    /// Acts on an event; records go to `driver.pipeline`.
    fn on_event(
        &mut self,
        event: Self::Event,
        driver: &mut Driver<Self::Store>,
    ) -> impl Future<Output = Result<(), RunError>>;

    /// The source's periodic work, after the driver's.
    fn on_tick(
        &mut self,
        driver: &mut Driver<Self::Store>,
    ) -> impl Future<Output = Result<(), RunError>>;

    /// After every turn: acts on the partitions the protocol stopped.
    fn after_turn(
        &mut self,
        stops: Vec<Stopped>,
        driver: &mut Driver<Self::Store>,
    ) -> Result<(), RunError>;
}

/// Runs `source` through `driver` until everything taken is delivered and committed (the
/// drain starts at the source's end, or at `shutdown`), or an error ends the run.
pub(super) async fn run<S: Source>(
    source: &mut S,
    driver: &mut Driver<S::Store>,
    shutdown: &CancellationToken,
    health: &Health,
    period: Duration,
) -> Result<(), RunError> {
    let mut tick = interval(period);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let released = driver.pipeline.stream_memory();
    health.running();
    loop {
        let wants_events = source.wants_events(driver);
        tokio::select! {
            biased;
            () = shutdown.cancelled(), if !driver.shutting_down() => {
                health.stopping();
                driver.shut_down();
            }
            answer = driver.store.answer() => match answer {
                Some(answer) => {
                    for c in &answer.acknowledged {
                        health.partition_committed(&c.partition.0, c.partition.1, c.point.offset);
                    }
                    driver.on_answer(answer)?;
                }
                // Nothing would ever be committed again: waiting would hang a `--once` run.
                None => return Err(store_gone()),
            },
            Some(c) = driver.pipeline.next_completion(), if driver.pipeline.in_flight() > 0 => {
                driver.on_completion(c)?;
            }
            _ = tick.tick() => {
                driver.on_tick()?;
                source.on_tick(driver).await?;
            }
            event = source.next_event(), if wants_events => source.on_event(event, driver).await?,
            // Memory a streaming writer gave back may let held-back consumption go on; last,
            // so that its frequent signals never keep the source waiting.
            () = released.released() => {}
        }
        health.beat();
        let stops = driver.step()?;
        source.after_turn(stops, driver)?;
        if driver.drained() {
            return Ok(());
        }
    }
}
