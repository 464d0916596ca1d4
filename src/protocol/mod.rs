//! The delivery protocol, as a state machine without I/O: exactly-once and append-only with
//! nothing but create-only PUTs and Kafka commits.
//!
//! Per partition, records are gathered into segments (contiguous offset ranges). A sealed
//! segment is uploaded only once a commit recording its *intent* — the partition's first
//! undelivered offset, with the ends of every sealed-but-undelivered segment in the commit
//! metadata — is acknowledged. When a segment and every earlier one are durable, the commit
//! moves past it. A new owner reads the commit back, replays from its offset and cuts exactly
//! at the recorded ends: the same records make the same objects under the same names, so a
//! create-only PUT answering 412 means "already delivered".
//!
//! Events come in as method calls (assigned, revoked, record, seal, commit acknowledged or
//! failed, segment durable or undeliverable, tick); actions come out of [`Protocol::poll`]
//! (commit these partitions in one request, upload this segment, stop this partition). Offsets,
//! ids and tokens are plain values, and the partition type is the caller's: nothing here knows
//! Kafka, the store or the runtime, so every transition is tested without them.

mod intent;
mod partition;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;

pub use intent::{Intent, IntentError, Lineage, MAX_METADATA_BYTES};
use partition::{PartitionState, Sealed, Stage, covers};

/// A Kafka offset.
pub type Offset = i64;

/// Sealed-but-undelivered segments per partition, replayed ends included. At the cap no cut
/// happens (the open segment grows instead: every cut that happens is recorded, so skipping
/// one never breaks a replay) and the caller pauses the partition; an intent so never lists
/// more ends than this.
pub const MAX_UNDELIVERED_PER_PARTITION: usize = 64;

// Ends of up to 20 characters each (19 digits and a separator), the prefix and the lineage.
const _: () = assert!(MAX_UNDELIVERED_PER_PARTITION * 20 + 6 + 12 <= MAX_METADATA_BYTES);

/// The ownership token of one assignment of a partition: results that belong to another
/// assignment are ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Token(pub u64);

/// A sealed segment: the life of the offsets it belongs to and the offsets it covers. Its
/// objects are named after its lineage and start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SegmentId {
    pub lineage: Lineage,
    pub start: Offset,
    pub end: Offset,
}

/// A partition's state as a commit records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitPoint {
    /// The first undelivered offset.
    pub offset: Offset,
    pub intent: Intent,
}

/// One partition's commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit<P> {
    pub partition: P,
    pub token: Token,
    pub point: CommitPoint,
}

/// What the group's offset store answered for a partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Committed {
    /// No commit: a new group, or offsets removed with their topic.
    Nothing,
    /// A commit at `offset` with its metadata text.
    At { offset: Offset, metadata: String },
    /// The answer carried an error for this partition: whether a commit exists is unknown.
    Unreadable(String),
}

/// A partition newly owned.
#[derive(Debug, Clone)]
pub struct Assignment {
    pub token: Token,
    pub committed: Committed,
    /// The log's first offset and the offset after its last, now.
    pub log_start: Offset,
    pub log_end: Offset,
    /// The lineage to begin if no pail commit names one.
    pub fresh_lineage: Lineage,
}

/// Where reading a newly owned partition begins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Start {
    pub from: Offset,
    /// Recorded segments are replayed to their ends first.
    pub replaying: bool,
    /// The commit was out of range and the configured reset was applied: records were lost.
    pub reset: bool,
}

/// Why a partition stopped. Nothing from its first undelivered offset on is committed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StopReason {
    #[error(
        "the committed offset {committed} is no longer in the log (earliest is {log_start}): \
         records were deleted by retention before pail delivered them. Reset the group's offset \
         deliberately, or set auto.offset.reset in [source.properties] to accept the loss"
    )]
    BelowLogStart {
        committed: Offset,
        log_start: Offset,
    },
    #[error(
        "the committed offset {committed} is past the log's end ({log_end}): the log was \
         truncated (an unclean leader election, a recreated topic). Check the topic, then reset \
         the group's offset deliberately"
    )]
    PastLogEnd { committed: Offset, log_end: Offset },
    #[error("the committed offset cannot be read: {0}")]
    CommittedUnreadable(String),
    #[error(transparent)]
    Intent(#[from] IntentError),
    #[error("offsets went back: offset {got} came where {expected} or later was due")]
    WentBack { expected: Offset, got: Offset },
    #[error("segment {}..={} cannot be delivered: {error}", .segment.start, .segment.end)]
    Undeliverable { segment: SegmentId, error: String },
}

/// Why a record was not taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The partition is not owned.
    NotOwned,
    /// The partition is stopped; its records are read again when it resumes.
    Stopped,
}

/// How to take a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admission {
    /// The start of the segment the record lands in.
    pub segment_start: Offset,
    /// The record ends a recorded segment: seal with [`Cut::Recorded`] right after it.
    pub seal_after: bool,
    /// The life of the offsets its segment's objects are named after.
    pub lineage: Lineage,
}

/// Why a segment is sealed. A policy or final cut happens only when the partition is neither
/// replaying (a replay cut short of a recorded end would name objects differently) nor at the
/// cap; records left open are read again by the next owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// Size, age, open paths, memory pressure.
    Policy,
    /// End of input, drain, a stopped read.
    Final,
    /// A recorded end: the replay reproduces the earlier owner's cut.
    Recorded(Offset),
}

/// What the caller must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action<P> {
    /// Commit these, in one request, then report with [`Protocol::commits_acknowledged`] or
    /// [`Protocol::commits_failed`].
    Commit(Vec<Commit<P>>),
    /// Upload the segment: its intent is recorded.
    Upload {
        partition: P,
        token: Token,
        segment: SegmentId,
    },
    /// Read no more of the partition and drop its open records: nothing from `offset` on is
    /// delivered or committed.
    Stop {
        partition: P,
        offset: Offset,
        reason: StopReason,
    },
}

/// Protocol settings.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// The user set `auto.offset.reset`: a commit out of range is reset, accepting the loss.
    pub accept_reset: bool,
    /// A partition without a commit starts at the log's end (else at its start).
    pub start_at_end: bool,
}

/// The protocol for every owned partition.
#[derive(Debug)]
pub struct Protocol<P> {
    partitions: BTreeMap<P, PartitionState>,
    settings: Settings,
    outbox: Vec<Action<P>>,
}

impl<P: Ord + Clone + fmt::Debug> Protocol<P> {
    pub fn new(settings: Settings) -> Self {
        Self {
            partitions: BTreeMap::new(),
            settings,
            outbox: Vec::new(),
        }
    }

    /// Takes ownership of a partition; returns where to read from, or why it cannot be read
    /// (it is then owned but stopped).
    pub fn assign(&mut self, partition: P, a: Assignment) -> Result<Start, StopReason> {
        let fresh = |from| PartitionState::new(a.token, a.fresh_lineage, from);
        let mut reset = false;
        let outcome = match a.committed {
            Committed::Nothing => Ok(fresh(None)),
            Committed::Unreadable(e) => Err(StopReason::CommittedUnreadable(e)),
            Committed::At { offset, .. } if offset < a.log_start && !self.settings.accept_reset => {
                Err(StopReason::BelowLogStart {
                    committed: offset,
                    log_start: a.log_start,
                })
            }
            Committed::At { offset, .. } if offset > a.log_end && !self.settings.accept_reset => {
                Err(StopReason::PastLogEnd {
                    committed: offset,
                    log_end: a.log_end,
                })
            }
            Committed::At { offset, .. } if offset < a.log_start || offset > a.log_end => {
                // The user's reset, accepted: a new life from wherever it points.
                reset = true;
                Ok(fresh(None))
            }
            Committed::At { offset, metadata } => match Intent::decode(&metadata) {
                Err(e) => Err(StopReason::Intent(e)),
                // Not pail's commit (an offset tool's reset): a new life from there.
                Ok(None) => Ok(fresh(Some(offset))),
                // A recorded segment ends where the log no longer reaches: the log was cut
                // back (an unclean leader election) and new events may reuse those offsets,
                // which a replay would take for the recorded segment.
                Ok(Some(intent))
                    if intent.ends.last().is_some_and(|e| *e >= a.log_end)
                        && !self.settings.accept_reset =>
                {
                    Err(StopReason::PastLogEnd {
                        committed: intent.ends.last().copied().unwrap_or(offset),
                        log_end: a.log_end,
                    })
                }
                Ok(Some(intent)) if intent.ends.first().is_some_and(|e| *e < offset) => {
                    Err(StopReason::Intent(IntentError::Malformed(
                        metadata,
                        "an end offset lies before the committed offset",
                    )))
                }
                Ok(Some(intent)) => {
                    let mut state = PartitionState::new(a.token, intent.lineage, Some(offset));
                    state.forced_ends = intent.ends.iter().copied().collect();
                    state.recorded = Some(CommitPoint { offset, intent });
                    Ok(state)
                }
            },
        };
        match outcome {
            Ok(state) => {
                let default_start = if self.settings.start_at_end {
                    a.log_end
                } else {
                    a.log_start
                };
                let start = Start {
                    from: state.next_start.unwrap_or(default_start),
                    replaying: state.replaying(),
                    reset,
                };
                self.partitions.insert(partition, state);
                Ok(start)
            }
            Err(reason) => {
                let mut state = fresh(None);
                state.stopped = Some(reason.clone());
                self.partitions.insert(partition, state);
                Err(reason)
            }
        }
    }

    /// Gives a partition up: its open and sealed segments are forgotten (the next owner
    /// replays from the last commit, whose intent tells it where to cut).
    pub fn revoke(&mut self, partition: &P) {
        self.partitions.remove(partition);
    }

    /// A recorded end that lies before `offset`: the segment must be sealed there (with
    /// [`Cut::Recorded`]) before the record is taken, since its last records are gone
    /// (compaction, transaction markers).
    pub fn recorded_end_before(&self, partition: &P, offset: Offset) -> Option<Offset> {
        let state = self.partitions.get(partition)?;
        if state.stopped.is_some() {
            // It would refuse the cut: a caller looping on this must not be offered one.
            return None;
        }
        state
            .forced_ends
            .front()
            .copied()
            .filter(|end| *end < offset)
    }

    /// Takes a record at `offset` (after any [`Protocol::recorded_end_before`]).
    pub fn admit(&mut self, partition: &P, offset: Offset) -> Result<Admission, Refusal> {
        let state = self
            .partitions
            .get_mut(partition)
            .ok_or(Refusal::NotOwned)?;
        if state.stopped.is_some() {
            return Err(Refusal::Stopped);
        }
        if let Some(expected) = state.expected()
            && offset < expected
        {
            let reason = StopReason::WentBack {
                expected,
                got: offset,
            };
            self.stop(partition, reason);
            return Err(Refusal::Stopped);
        }
        let start = match state.open {
            Some((start, _)) => start,
            None => state.next_start.unwrap_or(offset),
        };
        state.open = Some((start, offset));
        Ok(Admission {
            segment_start: start,
            seal_after: state.forced_ends.front() == Some(&offset),
            lineage: state.lineage,
        })
    }

    /// Whether a policy cut may happen now.
    pub fn may_cut(&self, partition: &P) -> bool {
        self.partitions.get(partition).is_some_and(|s| {
            s.stopped.is_none() && !s.replaying() && s.undelivered() < MAX_UNDELIVERED_PER_PARTITION
        })
    }

    /// Whether the partition is replaying recorded ends.
    pub fn replaying(&self, partition: &P) -> bool {
        self.partitions
            .get(partition)
            .is_some_and(PartitionState::replaying)
    }

    /// Seals the open segment, holding `bytes`, if `cut` may happen now; returns its id. A
    /// recorded end no record reached seals a segment with no records.
    pub fn seal(&mut self, partition: &P, cut: Cut, bytes: usize) -> Option<SegmentId> {
        let state = self.partitions.get_mut(partition)?;
        if state.stopped.is_some() {
            return None;
        }
        let (start, end) = match cut {
            Cut::Recorded(end) => {
                if state.forced_ends.front() != Some(&end) {
                    return None;
                }
                state.forced_ends.pop_front();
                let start = match state.open {
                    Some((start, _)) => start,
                    None => state.next_start.unwrap_or(end),
                };
                (start, end)
            }
            Cut::Policy | Cut::Final => {
                if state.replaying() || state.undelivered() >= MAX_UNDELIVERED_PER_PARTITION {
                    return None;
                }
                state.open?
            }
        };
        let state = self.partitions.get_mut(partition)?;
        let id = SegmentId {
            lineage: state.lineage,
            start,
            end,
        };
        state.open = None;
        state.next_start = Some(end + 1);
        let recorded = state.recorded.as_ref().is_some_and(|r| covers(r, &id));
        state.segments.push_back(Sealed {
            id,
            bytes,
            stage: if recorded {
                Stage::Uploading
            } else {
                Stage::AwaitingIntent
            },
        });
        if recorded {
            // Recorded by the earlier owner's intent: upload at once.
            self.outbox.push(Action::Upload {
                partition: partition.clone(),
                token: state.token,
                segment: id,
            });
        }
        Some(id)
    }

    /// The actions due now: uploads and stops decided since the last call, then one commit
    /// request for every partition whose state is not yet recorded.
    pub fn poll(&mut self) -> Vec<Action<P>> {
        let mut commits = Vec::new();
        let mut too_long = Vec::new();
        for (partition, state) in &mut self.partitions {
            if !state.commit_due || state.in_flight.is_some() {
                continue;
            }
            let Some(point) = state.desired() else {
                continue;
            };
            if state.recorded.as_ref() == Some(&point) {
                continue;
            }
            if let Err(e) = point.intent.encode() {
                // The cap keeps intents far below the limit; should it not, stop rather than
                // upload anything the commit cannot record.
                too_long.push((partition.clone(), e));
                continue;
            }
            state.in_flight = Some(point.clone());
            commits.push(Commit {
                partition: partition.clone(),
                token: state.token,
                point,
            });
        }
        for (partition, e) in too_long {
            self.stop(&partition, StopReason::Intent(e));
        }
        let mut actions = std::mem::take(&mut self.outbox);
        if !commits.is_empty() {
            actions.push(Action::Commit(commits));
        }
        actions
    }

    /// The commits were acknowledged: upload what their intents cover.
    pub fn commits_acknowledged(&mut self, commits: &[Commit<P>]) {
        for commit in commits {
            let Some(state) = self.partitions.get_mut(&commit.partition) else {
                continue;
            };
            if state.token != commit.token {
                continue;
            }
            state.in_flight = None;
            for seg in &mut state.segments {
                if seg.stage == Stage::AwaitingIntent && covers(&commit.point, &seg.id) {
                    seg.stage = Stage::Uploading;
                    self.outbox.push(Action::Upload {
                        partition: commit.partition.clone(),
                        token: state.token,
                        segment: seg.id,
                    });
                }
            }
            state.recorded = Some(commit.point.clone());
        }
    }

    /// The commits failed: nothing they cover is uploaded, and they are sent again after the
    /// next [`Protocol::tick`].
    pub fn commits_failed(&mut self, commits: &[Commit<P>]) {
        for commit in commits {
            if let Some(state) = self.partitions.get_mut(&commit.partition)
                && state.token == commit.token
            {
                state.in_flight = None;
                state.commit_due = false;
            }
        }
    }

    /// Time passed: failed commits are due again.
    pub fn tick(&mut self) {
        for state in self.partitions.values_mut() {
            state.commit_due = true;
        }
    }

    /// Every object of a segment is durable; the commit may move past it.
    pub fn delivered(&mut self, partition: &P, token: Token, segment: SegmentId) {
        let Some(state) = self.partitions.get_mut(partition) else {
            return;
        };
        if state.token != token {
            return;
        }
        if let Some(seg) = state.segments.iter_mut().find(|s| s.id == segment) {
            seg.stage = Stage::Durable;
        }
        state.pop_durable();
    }

    /// A segment cannot be delivered (it does not encode): its partition stops there.
    pub fn undeliverable(
        &mut self,
        partition: &P,
        token: Token,
        segment: SegmentId,
        error: String,
    ) {
        let Some(state) = self.partitions.get_mut(partition) else {
            return;
        };
        if state.token != token {
            return;
        }
        if let Some(seg) = state.segments.iter_mut().find(|s| s.id == segment) {
            seg.stage = Stage::Failed;
        }
        self.stop(partition, StopReason::Undeliverable { segment, error });
    }

    /// Stops a partition: its open segment is dropped; sealed segments before the stop are
    /// still delivered and committed.
    fn stop(&mut self, partition: &P, reason: StopReason) {
        let Some(state) = self.partitions.get_mut(partition) else {
            return;
        };
        if state.stopped.is_some() {
            return;
        }
        state.open = None;
        state.stopped = Some(reason.clone());
        let offset = state
            .segments
            .iter()
            .find(|s| s.stage == Stage::Failed)
            .map(|s| s.id.start)
            .or_else(|| state.first_undelivered())
            .unwrap_or_default();
        self.outbox.push(Action::Stop {
            partition: partition.clone(),
            offset,
            reason,
        });
    }

    /// The owned partitions.
    pub fn partitions(&self) -> impl Iterator<Item = &P> {
        self.partitions.keys()
    }

    /// Whether the partition is at the cap of undelivered segments: the caller pauses it.
    pub fn at_cap(&self, partition: &P) -> bool {
        self.partitions
            .get(partition)
            .is_some_and(|s| s.undelivered() >= MAX_UNDELIVERED_PER_PARTITION)
    }

    /// Whether the partition is stopped.
    pub fn is_stopped(&self, partition: &P) -> bool {
        self.partitions
            .get(partition)
            .is_some_and(|s| s.stopped.is_some())
    }

    /// Sealed segments not yet durable, across partitions.
    pub fn undelivered(&self) -> usize {
        self.partitions
            .values()
            .map(PartitionState::undelivered)
            .sum()
    }

    /// Bytes of sealed segments waiting for their intent commit.
    pub fn awaiting_intent_bytes(&self) -> usize {
        self.partitions
            .values()
            .map(|s| s.bytes_in(Stage::AwaitingIntent))
            .sum()
    }

    /// Partitions owned.
    pub fn owned(&self) -> usize {
        self.partitions.len()
    }

    /// Nothing to upload or commit: every sealed segment is durable (or failed, its partition
    /// stopped) and every partition's state is recorded.
    pub fn settled(&self) -> bool {
        self.outbox.is_empty() && self.partitions.values().all(PartitionState::settled)
    }
}
