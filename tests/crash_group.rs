//! Several workers in one consumer group, killed and restarted at random moments so that
//! rebalances move partitions mid-segment and mid-upload; afterwards the same exactly-once
//! audit as for a single worker.

mod support;

use std::time::Duration;

use support::kafka::MockKafka;
use support::s3::TestS3;
use support::workers::{
    audit, drain_once, log_count, produce, spawn_worker, wait_for_log, wait_for_puts, worker_config,
};

async fn group_with_kills(workers: usize, kills: usize, seed: u64) {
    let kafka = MockKafka::start(&[("events", 6)]);
    let s3 = TestS3::start(&["lake"]).await;
    let produced = produce(&kafka, 6, 6_000);
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

    let mut children: Vec<_> = (0..workers).map(|_| spawn_worker(&config, &log)).collect();
    let assigned = "partitions assigned";
    assert!(
        wait_for_log(&log, assigned, workers, Duration::from_secs(60)).await,
        "the group never formed"
    );
    for round in 0..kills {
        // Kill mid-delivery: after a random number of further PUTs, or at a random moment.
        let target = s3.puts().len() + rng.usize(1..8);
        wait_for_puts(&s3, target, Duration::from_millis(rng.u64(200..3000))).await;
        let victim = rng.usize(0..workers);
        children[victim].start_kill().unwrap();
        children[victim].wait().await.unwrap();
        eprintln!(
            "round {round}: killed worker {victim} after {} PUTs",
            s3.puts().len()
        );
        // The replacement joins; wait until the group has rebalanced around it (the killed
        // member's session must expire first), so the next kill lands in a working group.
        let before = log_count(&log, assigned);
        children[victim] = spawn_worker(&config, &log);
        assert!(
            wait_for_log(&log, assigned, before + workers, Duration::from_secs(60)).await,
            "the group did not rebalance after round {round}"
        );
    }
    for mut child in children {
        child.start_kill().unwrap();
        child.wait().await.unwrap();
    }
    drain_once(&config, &log).await;
    audit(&s3, &produced);
    let log_text = std::fs::read_to_string(&log).unwrap();
    let rebalances: Vec<&str> = log_text
        .lines()
        .filter(|l| l.contains("partitions"))
        .collect();
    assert!(
        log_text.contains("partitions revoked"),
        "no rebalance moved partitions between live workers:\n{}",
        rebalances.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_with_kills_and_rebalances_deliver_exactly_once() {
    group_with_kills(2, 5, 11).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_with_kills_and_rebalances_deliver_exactly_once() {
    group_with_kills(3, 5, 23).await;
}
