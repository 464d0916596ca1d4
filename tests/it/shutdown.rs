//! SIGTERM: the worker stops consuming, seals what is open, delivers, commits and exits 0
//! within `shutdown_timeout`; what it committed is exactly what it delivered.

use crate::support;

use std::time::Duration;

use support::kafka::MockKafka;
use support::s3::{Fault, TestS3};
use support::workers::{
    audit, drain_once, log_count, produce, sigterm, spawn_worker, terminate, wait_for_log,
    wait_for_puts, worker_config,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_seals_delivers_commits_and_exits_zero() {
    let kafka = MockKafka::start(&[("events", 1)]);
    let s3 = TestS3::start(&["lake"]).await;
    // 5,500 events: five full segments of 1,000 are delivered by the policy; the rest stays
    // open (max_age is an hour) until the shutdown seals it.
    let produced = produce(&kafka, 1, 5_500);
    let dir = tempfile::tempdir().unwrap();
    let config = worker_config(dir.path(), &kafka.brokers(), &s3.endpoint(), "term", "1h");
    let log = dir.path().join("worker.log");
    let child = spawn_worker(&config, &log);

    // Five segments, each one Parquet object and one dead-letter object.
    wait_for_puts(&s3, 10, Duration::from_secs(60)).await;
    assert!(
        s3.puts().len() >= 10,
        "the worker did not deliver the full segments"
    );
    let before = s3.puts().len();
    let status = terminate(child, Duration::from_secs(40)).await;
    assert!(status.success(), "exit status {status:?}");
    assert_eq!(log_count(&log, "shutdown requested"), 1);
    assert_eq!(log_count(&log, "run finished"), 1);
    assert!(
        s3.puts().len() > before,
        "the open segment was not delivered at shutdown"
    );

    // The next run of the group starts exactly where the shutdown committed.
    drain_once(&config, &log).await;
    audit(&s3, &produced);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_exits_at_once_and_loses_nothing() {
    let kafka = MockKafka::start(&[("events", 2)]);
    let s3 = TestS3::start(&["lake"]).await;
    let produced = produce(&kafka, 2, 4_000);
    let dir = tempfile::tempdir().unwrap();
    let config = worker_config(dir.path(), &kafka.brokers(), &s3.endpoint(), "twice", "1h");
    let log = dir.path().join("worker.log");
    let mut child = spawn_worker(&config, &log);
    wait_for_puts(&s3, 2, Duration::from_secs(60)).await;
    // Keep the graceful drain busy (the store answers SlowDown) so the second signal lands
    // while it is still delivering.
    s3.inject(&[Fault::SlowDown; 10_000]);
    sigterm(&child);
    // Signals can coalesce: send the second once the first has been seen.
    assert!(wait_for_log(&log, "signal received", 1, Duration::from_secs(20)).await);
    sigterm(&child);
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("no exit after the second signal")
        .unwrap();
    assert_eq!(status.code(), Some(130), "{status:?}");
    s3.clear_faults();
    // Whatever the hurried exit left undelivered is consumed again, exactly once.
    drain_once(&config, &log).await;
    audit(&s3, &produced);
}
