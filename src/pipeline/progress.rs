//! Per-partition delivery progress: where the next segment starts, which recorded segment ends
//! must be reproduced, which sealed segments await their intent commit or their uploads, and
//! the commit (offset + intent metadata) that describes all of it.

use std::collections::VecDeque;

use crate::buffer::Segment;
use crate::delivery::intent::{self, IntentError, RecoveryPlan};

/// A sealed segment that is not yet durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Undelivered {
    start: i64,
    end: i64,
    durable: bool,
}

/// The commit that records a partition's current state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitPoint {
    /// The first undelivered offset.
    pub offset: i64,
    /// The intent: ends of the sealed-but-undelivered segments.
    pub metadata: String,
}

/// Delivery progress of one assigned partition, for one ownership epoch.
#[derive(Debug)]
pub struct Progress {
    pub epoch: u64,
    /// Start of the next segment: the end of the previous one plus one, or the committed
    /// offset at assignment. `None` until known (a fresh group), when the first record's
    /// offset is used.
    pub next_start: Option<i64>,
    /// Recorded ends still to reproduce, oldest first.
    pub forced_ends: VecDeque<i64>,
    undelivered: VecDeque<Undelivered>,
    /// Sealed segments whose intent is not yet committed; nothing of them is uploaded.
    awaiting_intent: Vec<Segment>,
    /// The commit last made (or read at assignment), to skip redundant commits.
    last_commit: Option<CommitPoint>,
    /// State changed since the last commit (a seal, a delivery).
    dirty: bool,
}

impl Progress {
    /// Progress for a newly assigned partition, resuming from its recovery plan.
    pub fn new(epoch: u64, plan: RecoveryPlan) -> Self {
        let last_commit = plan.next_start.map(|offset| CommitPoint {
            offset,
            metadata: intent::encode(&plan.forced_ends.iter().copied().collect::<Vec<_>>())
                .unwrap_or_default(),
        });
        Self {
            epoch,
            next_start: plan.next_start,
            forced_ends: plan.forced_ends,
            undelivered: VecDeque::new(),
            awaiting_intent: Vec::new(),
            last_commit,
            dirty: false,
        }
    }

    /// Records a sealed segment; it waits for its intent commit before any upload.
    pub fn sealed(&mut self, seg: Segment) {
        if self.forced_ends.front() == Some(&seg.end) {
            self.forced_ends.pop_front();
        }
        self.next_start = Some(seg.end + 1);
        self.undelivered.push_back(Undelivered {
            start: seg.start,
            end: seg.end,
            durable: false,
        });
        self.awaiting_intent.push(seg);
        self.dirty = true;
    }

    /// Sealed segments not yet durable (awaiting intent or uploading).
    pub fn undelivered(&self) -> usize {
        self.undelivered.len()
    }

    /// True when a commit is needed to record the current state.
    pub fn needs_commit(&self) -> bool {
        self.dirty
    }

    /// The commit describing the current state; `None` when nothing needs recording.
    pub fn commit_point(&self) -> Result<Option<CommitPoint>, IntentError> {
        let offset = match (self.undelivered.front(), self.next_start) {
            (Some(u), _) => u.start,
            (None, Some(next)) => next,
            (None, None) => return Ok(None),
        };
        // Ends still to be replayed stay recorded until they are sealed again: dropping them
        // early would let a crash in between cut those offsets differently.
        let ends: Vec<i64> = self
            .undelivered
            .iter()
            .map(|u| u.end)
            .chain(self.forced_ends.iter().copied())
            .collect();
        let point = CommitPoint {
            offset,
            metadata: intent::encode(&ends)?,
        };
        Ok((self.last_commit.as_ref() != Some(&point)).then_some(point))
    }

    /// The commit of `point` succeeded: segments it covers may now be uploaded.
    pub fn committed(&mut self, point: CommitPoint) -> Vec<Segment> {
        let covered = intent::decode(&point.metadata).unwrap_or_default();
        let (ready, waiting): (Vec<Segment>, Vec<Segment>) = self
            .awaiting_intent
            .drain(..)
            .partition(|s| covered.contains(&s.end));
        self.awaiting_intent = waiting;
        self.dirty = !self.awaiting_intent.is_empty();
        self.last_commit = Some(point);
        ready
    }

    /// The commit was not needed after all (state unchanged since the last commit).
    pub fn clean(&mut self) -> Vec<Segment> {
        self.dirty = false;
        match self.last_commit.clone() {
            Some(point) => self.committed(point),
            None => Vec::new(),
        }
    }

    /// A segment's objects are all durable; returns true when the commit offset can advance.
    pub fn delivered(&mut self, start: i64, end: i64) -> bool {
        if let Some(u) = self
            .undelivered
            .iter_mut()
            .find(|u| u.start == start && u.end == end)
        {
            u.durable = true;
        }
        let mut advanced = false;
        while self.undelivered.front().is_some_and(|u| u.durable) {
            self.undelivered.pop_front();
            advanced = true;
        }
        self.dirty |= advanced;
        advanced
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(start: i64, end: i64) -> Segment {
        let mut s = Segment::new("t".into(), 0, 0, start);
        s.end = end;
        s
    }

    #[test]
    fn intent_before_upload_and_ordered_final_commits() {
        let mut p = Progress::new(1, RecoveryPlan::new(Some(100), "").unwrap());
        assert_eq!(p.commit_point().unwrap(), None, "nothing new to record");
        p.sealed(seg(100, 199));
        p.sealed(seg(200, 299));
        let intent = p.commit_point().unwrap().unwrap();
        assert_eq!(intent.offset, 100);
        assert_eq!(intent.metadata, "pail1:199,299");
        let ready = p.committed(intent);
        assert_eq!(ready.len(), 2);
        assert!(!p.needs_commit());

        // The later segment finishing first does not move the offset.
        assert!(!p.delivered(200, 299));
        assert!(p.delivered(100, 199));
        let fin = p.commit_point().unwrap().unwrap();
        assert_eq!((fin.offset, fin.metadata.as_str()), (300, ""));
        p.committed(fin);
        assert_eq!(p.commit_point().unwrap(), None);
    }

    #[test]
    fn recovery_reproduces_recorded_ends_without_an_extra_commit() {
        let mut p = Progress::new(1, RecoveryPlan::new(Some(100), "pail1:199,299").unwrap());
        assert_eq!(p.forced_ends, [199, 299]);
        p.sealed(seg(100, 199));
        assert_eq!(p.forced_ends, [299]);
        // Half-way through the replay the recorded state is unchanged: nothing to commit.
        assert_eq!(p.commit_point().unwrap(), None);
        assert_eq!(p.clean().len(), 1);
        p.sealed(seg(200, 299));
        assert!(p.forced_ends.is_empty());
        // The state equals what the crashed owner committed: upload at once.
        assert_eq!(p.commit_point().unwrap(), None);
        assert_eq!(p.clean().len(), 1);
    }

    #[test]
    fn fresh_partition_needs_a_first_record() {
        let mut p = Progress::new(1, RecoveryPlan::new(None, "").unwrap());
        assert_eq!(p.commit_point().unwrap(), None);
        p.sealed(seg(0, 9));
        assert_eq!(
            p.commit_point().unwrap().unwrap(),
            CommitPoint {
                offset: 0,
                metadata: "pail1:9".into()
            }
        );
    }
}
