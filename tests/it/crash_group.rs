//! Several workers in one consumer group, killed and restarted at random moments while the
//! topic is fed in batches, so that rebalances move partitions mid-segment and mid-upload:
//! 100k events and ten kills each for two and for three workers. Afterwards the same
//! exactly-once audit as for a single worker, and evidence that partitions really changed
//! hands mid-delivery: a new owner recovering recorded segment ends, and replayed uploads
//! answered 412.

use crate::support;

use std::time::Duration;

use support::kafka::MockKafka;
use support::s3::TestS3;
use support::workers::{
    Produced, audit, batch, drain_once, log_count, produce_range, spawn_worker, wait_for_log,
    wait_for_puts, worker_config,
};

const PARTITIONS: i32 = 6;
const PER_PARTITION: i64 = 16_667;
const KILLS: i64 = 10;

/// Extra kill rounds allowed when the first ten caught no upload mid-replay.
const EXTRA_KILLS: i64 = 10;
const EXTRA_BATCH: i64 = 1_000;

/// Kills a random worker mid-delivery (once the group delivers, after a random number of
/// further PUTs or at a random moment), starts a replacement and waits for the group to
/// rebalance around it.
async fn kill_and_replace(
    rng: &mut fastrand::Rng,
    s3: &TestS3,
    config: &std::path::Path,
    log: &std::path::Path,
    children: &mut [tokio::process::Child],
    round: i64,
) {
    let assigned = "partitions assigned";
    assert!(
        wait_for_puts(s3, s3.puts().len() + 1, Duration::from_secs(60)).await,
        "round {round}: the group delivered nothing"
    );
    let target = s3.puts().len() + rng.usize(1..8);
    wait_for_puts(s3, target, Duration::from_millis(rng.u64(200..3000))).await;
    let victim = rng.usize(0..children.len());
    children[victim].start_kill().unwrap();
    children[victim].wait().await.unwrap();
    eprintln!(
        "round {round}: killed worker {victim} after {} PUTs",
        s3.puts().len()
    );
    // The replacement joins; wait until the group has rebalanced around it (the killed
    // member's session must expire first), so the next kill lands in a working group.
    let before = log_count(log, assigned);
    children[victim] = spawn_worker(config, log);
    assert!(
        wait_for_log(
            log,
            assigned,
            before + children.len(),
            Duration::from_secs(60)
        )
        .await,
        "the group did not rebalance after round {round}"
    );
}

async fn group_with_kills(workers: usize, seed: u64) {
    let kafka = MockKafka::start(&[("events", PARTITIONS)]);
    let s3 = TestS3::start(&["lake"]).await;
    // A store far enough away that a round's segments are still in flight when its kill
    // lands: pail delivers a round in about 100 ms on loopback, so kills timed by PUTs would
    // mostly find nothing mid-delivery, and takeovers would rarely have recorded ends to
    // replay.
    s3.set_write_latency(Duration::from_millis(150));
    let dir = tempfile::tempdir().unwrap();
    let config = worker_config(
        dir.path(),
        &kafka.brokers(),
        &s3.endpoint(),
        &format!("group{workers}"),
        "1s",
    );
    let log = dir.path().join("workers.log");
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut produced = Produced::default();

    let mut children: Vec<_> = (0..workers).map(|_| spawn_worker(&config, &log)).collect();
    let assigned = "partitions assigned";
    assert!(
        wait_for_log(&log, assigned, workers, Duration::from_secs(60)).await,
        "the group never formed"
    );
    for round in 0..KILLS {
        let events = batch(round, KILLS, PER_PARTITION);
        produce_range(&kafka, PARTITIONS, events, &mut produced);
        kill_and_replace(&mut rng, &s3, &config, &log, &mut children, round).await;
    }
    // The kills land at random moments; should none of them have caught an upload whose
    // segment was then replayed (rare, but timing-dependent), go on feeding and killing, a
    // bounded number of times, until one has: the test must exercise that path.
    let mut extra = 0;
    while !s3.puts().iter().any(|p| p.status == 412) && extra < EXTRA_KILLS {
        let start = PER_PARTITION + extra * EXTRA_BATCH;
        produce_range(
            &kafka,
            PARTITIONS,
            start..start + EXTRA_BATCH,
            &mut produced,
        );
        kill_and_replace(&mut rng, &s3, &config, &log, &mut children, KILLS + extra).await;
        extra += 1;
    }
    assert!(produced.len() >= 100_000);
    for mut child in children {
        child.start_kill().unwrap();
        child.wait().await.unwrap();
    }
    drain_once(&config, &log).await;
    audit(&s3, &produced);
    // Partitions changed hands with sealed segments not yet delivered: their new owner
    // re-sealed them at the recorded ends, and uploads already made answered 412.
    let recovered = log_count(&log, "recovering: replaying sealed segments");
    assert!(
        recovered >= 1,
        "no worker ever took over a partition mid-delivery"
    );
    assert!(
        s3.puts().iter().any(|p| p.status == 412),
        "no replayed upload hit an existing object"
    );
    eprintln!(
        "{recovered} recoveries of recorded segment ends, {} answers 412",
        s3.puts().iter().filter(|p| p.status == 412).count()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_with_kills_and_rebalances_deliver_exactly_once() {
    group_with_kills(2, 11).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_with_kills_and_rebalances_deliver_exactly_once() {
    group_with_kills(3, 23).await;
}
