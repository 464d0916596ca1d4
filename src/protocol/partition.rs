//! The protocol's state for one owned partition: the open segment's bounds, the recorded ends
//! still to reproduce, the sealed segments not yet durable, and the commits recorded and in
//! flight.

use std::collections::VecDeque;

use super::{CommitPoint, Intent, Lineage, Offset, SegmentId, StopReason, Token};

/// Where a sealed segment stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stage {
    /// Sealed; nothing of it is uploaded until a recorded intent lists it.
    AwaitingIntent,
    Uploading,
    Durable,
    /// It cannot be delivered (its partition is stopped): the commit never passes it.
    Failed,
}

#[derive(Debug, Clone)]
pub(super) struct Sealed {
    pub id: SegmentId,
    pub bytes: usize,
    pub stage: Stage,
}

/// One owned partition.
#[derive(Debug)]
pub(super) struct PartitionState {
    pub token: Token,
    pub lineage: Lineage,
    /// Start of the next segment; `None` until known (no commit), when the first record is.
    pub next_start: Option<Offset>,
    /// The open segment: its start and the offset of its last record.
    pub open: Option<(Offset, Offset)>,
    /// Ends recorded by an earlier owner still to reproduce, oldest first.
    pub forced_ends: VecDeque<Offset>,
    /// Sealed segments not yet all durable, oldest first.
    pub segments: VecDeque<Sealed>,
    /// The last commit acknowledged (or read at assignment).
    pub recorded: Option<CommitPoint>,
    /// The commit sent and not yet answered; no other is sent meanwhile, so commits of one
    /// partition land in order and an acknowledged one is never sent again.
    pub in_flight: Option<CommitPoint>,
    /// False after a failed commit, until the next tick: failures do not spin.
    pub commit_due: bool,
    pub stopped: Option<StopReason>,
}

impl PartitionState {
    pub fn new(token: Token, lineage: Lineage, next_start: Option<Offset>) -> Self {
        Self {
            token,
            lineage,
            next_start,
            open: None,
            forced_ends: VecDeque::new(),
            segments: VecDeque::new(),
            recorded: None,
            in_flight: None,
            commit_due: true,
            stopped: None,
        }
    }

    /// Replaying recorded ends: no cut but those may happen.
    pub fn replaying(&self) -> bool {
        !self.forced_ends.is_empty()
    }

    /// The offset a record must reach: one past the last taken.
    pub fn expected(&self) -> Option<Offset> {
        match self.open {
            Some((_, last)) => Some(last + 1),
            None => self.next_start,
        }
    }

    /// The first offset not durable: where a commit stands.
    pub fn first_undelivered(&self) -> Option<Offset> {
        match self.segments.front() {
            Some(s) => Some(s.id.start),
            None => self.next_start,
        }
    }

    /// The commit that describes the current state.
    pub fn desired(&self) -> Option<CommitPoint> {
        let offset = self.first_undelivered()?;
        // Recorded ends still to replay stay listed until they are sealed again: dropping them
        // early would let a crash in between cut those offsets differently.
        let ends = self
            .segments
            .iter()
            .map(|s| s.id.end)
            .chain(self.forced_ends.iter().copied())
            .collect();
        Some(CommitPoint {
            offset,
            intent: Intent {
                lineage: self.lineage,
                ends,
            },
        })
    }

    /// Sealed segments not yet durable (failed ones included: they hold the commit back).
    pub fn undelivered(&self) -> usize {
        self.segments.len()
    }

    /// Bytes of sealed segments in `stage`.
    pub fn bytes_in(&self, stage: Stage) -> usize {
        self.segments
            .iter()
            .filter(|s| s.stage == stage)
            .map(|s| s.bytes)
            .sum()
    }

    /// Drops the durable segments at the front: the commit may advance past them.
    pub fn pop_durable(&mut self) {
        while self
            .segments
            .front()
            .is_some_and(|s| s.stage == Stage::Durable)
        {
            self.segments.pop_front();
        }
    }

    /// Nothing left to do but wait for new records: no upload or commit pending.
    pub fn settled(&self) -> bool {
        self.in_flight.is_none()
            && self
                .segments
                .iter()
                .all(|s| matches!(s.stage, Stage::Durable | Stage::Failed))
            && self.desired() == self.recorded
    }
}

/// Whether `point` records exactly the segment `id`: same lineage, and `id` is one of the
/// ranges its offset and ends describe.
pub(super) fn covers(point: &CommitPoint, id: &SegmentId) -> bool {
    if point.intent.lineage != id.lineage {
        return false;
    }
    let mut start = point.offset;
    for &end in &point.intent.ends {
        if (start, end) == (id.start, id.end) {
            return true;
        }
        start = end + 1;
    }
    false
}
