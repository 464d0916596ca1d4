//! Every transition of the protocol without a runtime, and a property test that drives random
//! interleavings of records, cuts, commit answers, deliveries, ticks and crashes and checks the
//! protocol's invariants after each step.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};

use super::*;

type P = u8;

const SETTINGS: Settings = Settings {
    accept_reset: false,
    start_at_end: false,
};

fn lineage(n: u16) -> Lineage {
    Lineage::new(1_764_000_000, n)
}

fn assignment(token: u64, committed: Committed) -> Assignment {
    Assignment {
        token: Token(token),
        committed,
        log_start: 0,
        log_end: 1_000,
        fresh_lineage: lineage(token as u16),
    }
}

fn at(offset: Offset, metadata: impl Into<String>) -> Committed {
    Committed::At {
        offset,
        metadata: metadata.into(),
    }
}

/// Takes records `from..=to` into partition 0, sealing where the protocol says.
fn take(p: &mut Protocol<P>, from: Offset, to: Offset) {
    for offset in from..=to {
        while let Some(end) = p.recorded_end_before(&0, offset) {
            p.seal(&0, Cut::Recorded(end), 0);
        }
        let admission = p.admit(&0, offset).unwrap();
        if admission.seal_after {
            p.seal(&0, Cut::Recorded(offset), 0);
        }
    }
}

fn commits(actions: &[Action<P>]) -> Vec<Commit<P>> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Commit(c) => Some(c.clone()),
            _ => None,
        })
        .flatten()
        .collect()
}

fn uploads(actions: &[Action<P>]) -> Vec<SegmentId> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Upload { segment, .. } => Some(*segment),
            _ => None,
        })
        .collect()
}

#[test]
fn intent_is_acknowledged_before_any_upload_and_the_commit_follows_delivery_in_order() {
    let mut p = Protocol::new(SETTINGS);
    let start = p.assign(0, assignment(1, at(100, ""))).unwrap();
    assert_eq!(start.from, 100);
    take(&mut p, 100, 199);
    let first = p.seal(&0, Cut::Policy, 10).unwrap();
    take(&mut p, 200, 299);
    let second = p.seal(&0, Cut::Policy, 10).unwrap();
    assert_eq!((first.start, first.end, second.start), (100, 199, 200));

    let actions = p.poll();
    assert!(uploads(&actions).is_empty(), "nothing before the intent");
    let sent = commits(&actions);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].point.offset, 100);
    assert_eq!(sent[0].point.intent.ends, [199, 299]);
    assert!(
        commits(&p.poll()).is_empty(),
        "one commit in flight per partition"
    );
    assert_eq!(p.awaiting_intent_bytes(), 20);

    p.commits_acknowledged(&sent);
    assert_eq!(uploads(&p.poll()), [first, second]);
    assert_eq!(p.awaiting_intent_bytes(), 0);

    // The later segment finishing first does not move the commit.
    p.delivered(&0, Token(1), second);
    assert!(commits(&p.poll()).is_empty());
    p.delivered(&0, Token(1), first);
    let fin = commits(&p.poll());
    assert_eq!(fin[0].point.offset, 300);
    assert!(fin[0].point.intent.ends.is_empty());
    assert!(!p.settled());
    p.commits_acknowledged(&fin);
    assert!(p.settled());
}

#[test]
fn a_failed_commit_is_sent_again_after_a_tick_even_when_a_later_one_was_acknowledged() {
    let mut p = Protocol::new(SETTINGS);
    p.assign(0, assignment(1, at(0, ""))).unwrap();
    // The assignment's own commit (recording the lineage) is acknowledged.
    let first = commits(&p.poll());
    p.commits_acknowledged(&first);
    take(&mut p, 0, 9);
    let seg = p.seal(&0, Cut::Final, 1).unwrap();
    let intent = commits(&p.poll());
    p.commits_acknowledged(&intent);
    p.poll();
    p.delivered(&0, Token(1), seg);
    let final_commit = commits(&p.poll());
    p.commits_failed(&final_commit);
    assert!(commits(&p.poll()).is_empty(), "no retry before the tick");
    assert!(!p.settled(), "a failed final commit is not settled");
    p.tick();
    let again = commits(&p.poll());
    assert_eq!(again, final_commit);
    p.commits_acknowledged(&again);
    assert!(p.settled());
}

#[test]
fn recovery_reseals_at_the_recorded_ends_and_uploads_without_a_new_intent() {
    let mut p = Protocol::new(SETTINGS);
    let l = lineage(7);
    let start = p
        .assign(0, assignment(2, at(100, format!("pail2:{l}:149,199"))))
        .unwrap();
    assert!(start.replaying);
    assert!(!p.may_cut(&0));
    // Records 150..=160 were compacted away: the first recorded end is sealed before 161.
    take(&mut p, 100, 140);
    take(&mut p, 161, 199);
    let actions = p.poll();
    let replayed = uploads(&actions);
    assert_eq!(
        replayed,
        [
            SegmentId {
                lineage: l,
                start: 100,
                end: 149
            },
            SegmentId {
                lineage: l,
                start: 150,
                end: 199
            }
        ]
    );
    assert!(commits(&actions).is_empty(), "the state equals the commit");
    assert!(p.may_cut(&0), "the policy applies again");
}

#[test]
fn a_commit_that_is_not_pails_begins_a_new_lineage_and_pails_keeps_its_own() {
    let mut p = Protocol::new(SETTINGS);
    p.assign(0, assignment(3, at(50, ""))).unwrap();
    take(&mut p, 50, 59);
    assert_eq!(p.seal(&0, Cut::Final, 0).unwrap().lineage, lineage(3));

    let kept = lineage(99);
    p.assign(1, assignment(4, at(50, format!("pail2:{kept}"))))
        .unwrap();
    p.admit(&1, 50).unwrap();
    assert_eq!(p.seal(&1, Cut::Final, 0).unwrap().lineage, kept);
}

#[test]
fn commits_out_of_range_or_unreadable_stop_only_that_partition() {
    let mut p = Protocol::new(SETTINGS);
    let mut a = assignment(1, at(5, ""));
    a.log_start = 10;
    assert!(matches!(
        p.assign(0, a.clone()),
        Err(StopReason::BelowLogStart {
            committed: 5,
            log_start: 10
        })
    ));
    a.committed = at(2_000, "");
    assert!(matches!(
        p.assign(1, a.clone()),
        Err(StopReason::PastLogEnd { .. })
    ));
    // A recorded end the log no longer reaches: new events could reuse those offsets.
    let l = lineage(5);
    assert!(matches!(
        p.assign(5, assignment(1, at(900, format!("pail2:{l}:1200")))),
        Err(StopReason::PastLogEnd { .. })
    ));
    assert!(matches!(
        p.assign(2, assignment(1, Committed::Unreadable("timed out".into()))),
        Err(StopReason::CommittedUnreadable(_))
    ));
    assert!(matches!(
        p.assign(3, assignment(1, at(0, "pail1:5"))),
        Err(StopReason::Intent(IntentError::Legacy(_)))
    ));
    assert_eq!(p.admit(&0, 10), Err(Refusal::Stopped));
    p.assign(4, assignment(1, at(0, ""))).unwrap();
    assert!(p.admit(&4, 0).is_ok());

    // With auto.offset.reset chosen, the reset is accepted as a new life.
    let mut lenient = Protocol::new(Settings {
        accept_reset: true,
        start_at_end: false,
    });
    a.committed = at(5, "");
    let start = lenient.assign(0, a).unwrap();
    assert_eq!((start.from, start.reset), (10, true));
}

#[test]
fn offsets_that_go_back_stop_the_partition_where_its_commit_stands() {
    let mut p = Protocol::new(SETTINGS);
    p.assign(0, assignment(1, at(100, ""))).unwrap();
    take(&mut p, 100, 120);
    assert_eq!(p.admit(&0, 90), Err(Refusal::Stopped));
    let actions = p.poll();
    assert!(actions.iter().any(|a| matches!(
        a,
        Action::Stop {
            offset: 100,
            reason: StopReason::WentBack {
                expected: 121,
                got: 90
            },
            ..
        }
    )));
    assert_eq!(
        p.seal(&0, Cut::Final, 0),
        None,
        "its open records are dropped"
    );
}

#[test]
fn an_undeliverable_segment_stops_its_partition_and_holds_the_commit_before_it() {
    let mut p = Protocol::new(SETTINGS);
    p.assign(0, assignment(1, at(0, ""))).unwrap();
    p.assign(1, assignment(1, at(0, ""))).unwrap();
    take(&mut p, 0, 9);
    let bad = p.seal(&0, Cut::Final, 0).unwrap();
    let sent = commits(&p.poll());
    p.commits_acknowledged(&sent);
    p.poll();
    p.undeliverable(&0, Token(1), bad, "encoder panicked".into());
    let actions = p.poll();
    assert!(actions.iter().any(|a| matches!(
        a,
        Action::Stop {
            partition: 0,
            offset: 0,
            ..
        }
    )));
    assert!(
        p.settled(),
        "nothing more can happen on it; the run may end"
    );
    assert_eq!(p.recorded_end_before(&0, 100), None);
    // The other partition goes on.
    p.admit(&1, 0).unwrap();
    assert!(p.seal(&1, Cut::Final, 0).is_some());
}

#[test]
fn a_replay_whose_segment_cannot_be_delivered_asks_for_no_more_cuts() {
    let mut p = Protocol::new(SETTINGS);
    let l = lineage(9);
    p.assign(0, assignment(1, at(0, format!("pail2:{l}:9,19,29"))))
        .unwrap();
    take(&mut p, 0, 9);
    let replayed = uploads(&p.poll());
    p.undeliverable(&0, Token(1), replayed[0], "encoder panicked".into());
    p.poll();
    // Records read ahead still arrive: no recorded end is offered (the caller would loop on
    // a cut the stopped partition refuses), and the record is refused.
    assert_eq!(p.recorded_end_before(&0, 25), None);
    assert_eq!(p.admit(&0, 25), Err(Refusal::Stopped));
}

#[test]
fn at_the_cap_no_cut_happens_and_results_of_an_old_assignment_are_ignored() {
    let mut p = Protocol::new(SETTINGS);
    p.assign(0, assignment(1, at(0, ""))).unwrap();
    for i in 0..MAX_UNDELIVERED_PER_PARTITION as i64 {
        take(&mut p, i, i);
        assert!(p.seal(&0, Cut::Policy, 1).is_some());
    }
    take(&mut p, 64, 64);
    assert!(!p.may_cut(&0));
    assert_eq!(p.seal(&0, Cut::Final, 1), None);
    assert!(p.at_cap(&0));
    let sent = commits(&p.poll());
    assert!(sent[0].point.intent.encode().unwrap().len() <= MAX_METADATA_BYTES);

    // Reassigned: the old token's answers change nothing.
    p.assign(0, assignment(2, at(0, ""))).unwrap();
    p.commits_acknowledged(&sent);
    assert!(uploads(&p.poll()).is_empty());
}

#[test]
fn commits_of_many_partitions_go_in_one_request_and_an_acknowledged_one_is_not_sent_again() {
    let mut p = Protocol::new(SETTINGS);
    for partition in 0..100u8 {
        p.assign(partition, assignment(1, at(0, ""))).unwrap();
        p.admit(&partition, 0).unwrap();
        p.seal(&partition, Cut::Final, 1).unwrap();
    }
    let actions = p.poll();
    let requests: Vec<&Action<P>> = actions
        .iter()
        .filter(|a| matches!(a, Action::Commit(_)))
        .collect();
    assert_eq!(requests.len(), 1);
    let sent = commits(&actions);
    assert_eq!(sent.len(), 100);
    p.commits_acknowledged(&sent);
    assert_eq!(uploads(&p.poll()).len(), 100);
    p.tick();
    assert!(commits(&p.poll()).is_empty(), "nothing new to record");
}

/// What the property test does next.
#[derive(Debug, Clone)]
enum Step {
    /// Read the next record of a partition (replayed from its log, or new after a gap).
    Record {
        partition: P,
        gap: u8,
    },
    Cut {
        partition: P,
        policy: bool,
    },
    AckCommit,
    FailCommit,
    Deliver {
        index: usize,
    },
    Tick,
    /// The worker dies; a new one is assigned from the last acknowledged commit.
    Crash,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        8 => (0..2u8, prop_oneof![6 => Just(0u8), 1 => 1..4u8])
            .prop_map(|(partition, gap)| Step::Record { partition, gap }),
        3 => (0..2u8, any::<bool>()).prop_map(|(partition, policy)| Step::Cut { partition, policy }),
        3 => Just(Step::AckCommit),
        1 => Just(Step::FailCommit),
        3 => (0..8usize).prop_map(|index| Step::Deliver { index }),
        1 => Just(Step::Tick),
        1 => Just(Step::Crash),
    ]
}

/// A world around the protocol: Kafka logs, the offset store, the bucket.
struct World {
    protocol: Protocol<P>,
    token: u64,
    /// Per partition: its log and how far the current owner read it.
    logs: [Vec<Offset>; 2],
    cursor: [usize; 2],
    open_bytes: [usize; 2],
    /// What Kafka holds: the last acknowledged commit per partition.
    store: BTreeMap<P, CommitPoint>,
    /// Commit requests sent, not yet answered.
    requests: Vec<Vec<Commit<P>>>,
    uploading: Vec<(P, Token, SegmentId)>,
    /// Objects in the bucket: the offsets each name holds.
    bucket: BTreeMap<(P, Lineage, Offset), Offset>,
    /// Every commit point ever acknowledged, per partition.
    acknowledged: BTreeMap<P, Vec<CommitPoint>>,
    sealed_bytes: BTreeMap<(P, SegmentId), usize>,
}

impl World {
    fn new() -> Self {
        let mut w = Self {
            protocol: Protocol::new(SETTINGS),
            token: 0,
            logs: [Vec::new(), Vec::new()],
            cursor: [0, 0],
            open_bytes: [0, 0],
            store: BTreeMap::new(),
            requests: Vec::new(),
            uploading: Vec::new(),
            bucket: BTreeMap::new(),
            acknowledged: BTreeMap::new(),
            sealed_bytes: BTreeMap::new(),
        };
        w.assign_all();
        w
    }

    fn assign_all(&mut self) {
        self.token += 1;
        self.requests.clear();
        self.uploading.clear();
        for partition in 0..2u8 {
            self.protocol.revoke(&partition);
            let committed = match self.store.get(&partition) {
                Some(point) => at(point.offset, point.intent.encode().unwrap()),
                None => Committed::Nothing,
            };
            let a = Assignment {
                token: Token(self.token),
                committed,
                log_start: 0,
                log_end: self.logs[partition as usize].last().map_or(0, |o| o + 1),
                fresh_lineage: lineage(self.token as u16),
            };
            let start = self.protocol.assign(partition, a).unwrap();
            let log = &self.logs[partition as usize];
            self.cursor[partition as usize] = log.partition_point(|o| *o < start.from);
            self.open_bytes[partition as usize] = 0;
        }
    }

    fn seal(&mut self, partition: P, cut: Cut) {
        let bytes = self.open_bytes[partition as usize];
        if let Some(id) = self.protocol.seal(&partition, cut, bytes) {
            self.open_bytes[partition as usize] = 0;
            self.sealed_bytes.insert((partition, id), bytes);
        }
    }

    fn record(&mut self, partition: P, gap: u8) {
        let i = partition as usize;
        let offset = match self.logs[i].get(self.cursor[i]) {
            Some(o) => *o,
            None => {
                let next = self.logs[i].last().map_or(0, |o| o + 1 + Offset::from(gap));
                self.logs[i].push(next);
                next
            }
        };
        while let Some(end) = self.protocol.recorded_end_before(&partition, offset) {
            self.seal(partition, Cut::Recorded(end));
        }
        match self.protocol.admit(&partition, offset) {
            Ok(admission) => {
                self.cursor[i] += 1;
                self.open_bytes[i] += 100;
                if admission.seal_after {
                    self.seal(partition, Cut::Recorded(offset));
                }
            }
            Err(refusal) => panic!("record {offset} of {partition} refused: {refusal:?}"),
        }
    }

    fn apply(&mut self, step: Step) {
        match step {
            Step::Record { partition, gap } => self.record(partition, gap),
            Step::Cut { partition, policy } => {
                self.seal(partition, if policy { Cut::Policy } else { Cut::Final })
            }
            Step::AckCommit if !self.requests.is_empty() => {
                let batch = self.requests.remove(0);
                for c in &batch {
                    self.store.insert(c.partition, c.point.clone());
                    self.acknowledged
                        .entry(c.partition)
                        .or_default()
                        .push(c.point.clone());
                }
                self.protocol.commits_acknowledged(&batch);
            }
            Step::FailCommit if !self.requests.is_empty() => {
                let batch = self.requests.remove(0);
                self.protocol.commits_failed(&batch);
            }
            Step::Deliver { index } if !self.uploading.is_empty() => {
                let (partition, token, id) = self.uploading.remove(index % self.uploading.len());
                // A create-only PUT: a name taken keeps what it holds.
                let held = *self
                    .bucket
                    .entry((partition, id.lineage, id.start))
                    .or_insert(id.end);
                assert_eq!(held, id.end, "a name was reused for other records");
                self.protocol.delivered(&partition, token, id);
            }
            Step::Tick => self.protocol.tick(),
            Step::Crash => self.assign_all(),
            _ => {}
        }
        self.check_actions();
        self.check_state();
    }

    fn check_actions(&mut self) {
        for action in self.protocol.poll() {
            match action {
                Action::Commit(batch) => {
                    for c in &batch {
                        let text = c.point.intent.encode().unwrap();
                        assert!(text.len() <= MAX_METADATA_BYTES);
                        assert!(c.point.intent.ends.len() <= MAX_UNDELIVERED_PER_PARTITION);
                        // Every record before the commit is in the bucket.
                        let i = c.partition as usize;
                        for o in self.logs[i].iter().filter(|o| **o < c.point.offset) {
                            assert!(
                                self.bucket
                                    .iter()
                                    .any(|((p, _, start), end)| *p == c.partition
                                        && (*start..=*end).contains(o)),
                                "commit at {} passes undelivered offset {o}",
                                c.point.offset
                            );
                        }
                    }
                    self.requests.push(batch);
                }
                Action::Upload {
                    partition,
                    token,
                    segment,
                } => {
                    let recorded = self.acknowledged.get(&partition).is_some_and(|points| {
                        points.iter().any(|p| partition::covers(p, &segment))
                    });
                    assert!(recorded, "upload of {segment:?} before its intent");
                    self.uploading.push((partition, token, segment));
                }
                Action::Stop { reason, .. } => panic!("stopped: {reason}"),
            }
        }
    }

    fn check_state(&self) {
        let awaiting: usize = self
            .protocol
            .partitions
            .iter()
            .flat_map(|(p, s)| s.segments.iter().map(move |seg| (*p, seg)))
            .filter(|(_, seg)| seg.stage == Stage::AwaitingIntent)
            .map(|(p, seg)| self.sealed_bytes[&(p, seg.id)])
            .sum();
        assert_eq!(self.protocol.awaiting_intent_bytes(), awaiting);
    }

    /// Everything read is sealed, committed and delivered, with no failures left.
    fn finish(&mut self) {
        // The rest of what an earlier owner read: a replay reaches its recorded ends.
        for partition in 0..2u8 {
            let i = partition as usize;
            while self.cursor[i] < self.logs[i].len() {
                self.record(partition, 0);
            }
        }
        for _ in 0..200 {
            self.protocol.tick();
            for partition in 0..2u8 {
                self.seal(partition, Cut::Final);
            }
            self.check_actions();
            while !self.requests.is_empty() {
                self.apply(Step::AckCommit);
            }
            while !self.uploading.is_empty() {
                self.apply(Step::Deliver { index: 0 });
            }
            if self.protocol.settled() && self.requests.is_empty() {
                break;
            }
        }
        assert!(self.protocol.settled());
        for partition in 0..2u8 {
            let i = partition as usize;
            let taken: BTreeSet<Offset> = self.logs[i][..self.cursor[i]].iter().copied().collect();
            let next = self.store.get(&partition).map(|c| c.offset);
            if let Some(last) = taken.last() {
                assert!(
                    next.is_some_and(|n| n > *last),
                    "everything taken is committed"
                );
            }
        }
    }
}

proptest! {
    #![proptest_config(Config {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(256),
        rng_seed: RngSeed::Fixed(0x7061_696c),
        failure_persistence: None,
        ..Config::default()
    })]

    #[test]
    fn random_interleavings_keep_the_invariants(steps in proptest::collection::vec(step(), 1..300)) {
        let mut world = World::new();
        for s in steps {
            world.apply(s);
        }
        world.finish();
    }
}
