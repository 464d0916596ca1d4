//! Commits and rebalances through the `pail` binary, librdkafka's mock cluster (with its
//! request-error injection) and the in-process S3 server:
//!
//! - a final commit that fails at shutdown is retried, and the worker exits 0 only once it
//!   landed (or exits 1 at the shutdown deadline, its segments to be read again);
//! - commits that keep failing for a while lose nothing (that what waits for them counts
//!   against the budget is unit-tested in `pipeline::tests`);
//! - with the default cooperative rebalancing, a partition that stays with a worker keeps its
//!   open segment: nothing of it is read again.

use crate::support;

use std::path::Path;
use std::time::Duration;

use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use support::http::{endpoint_address, eventually, metric};
use support::kafka::MockKafka;
use support::s3::TestS3;
use support::workers::{
    Produced, audit, produce, produce_range, spawn_worker, terminate, worker_config,
};

/// A worker config (see `worker_config`) with `extra` lines in its `[worker]` table and a
/// telemetry endpoint.
fn config_with(
    dir: &Path,
    kafka: &MockKafka,
    s3: &TestS3,
    group: &str,
    extra: &str,
) -> std::path::PathBuf {
    let path = worker_config(dir, &kafka.brokers(), &s3.endpoint(), group, "1h");
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str(extra);
    text.push_str("\n[telemetry]\nlisten = \"127.0.0.1:0\"\n");
    std::fs::write(&path, text).unwrap();
    path
}

/// Starts a worker on `events` (1 partition, 100 events committed), then produces 50 more,
/// which stay in the open segment (`max_age` 1h) until shutdown. Returns once the worker has
/// taken them.
async fn worker_with_open_segment(
    dir: &Path,
    kafka: &MockKafka,
    s3: &TestS3,
    group: &str,
    extra: &str,
) -> (tokio::process::Child, Produced) {
    let config = config_with(dir, kafka, s3, group, extra);
    let log = dir.join(format!("{group}.log"));
    let mut produced = produce(kafka, 1, 100);
    let child = spawn_worker(&config, &log);
    let addr = endpoint_address(&log).await;
    // All 150 stay in one open segment (under the rotation's 1000 records and 1 h).
    produce_range(kafka, 1, 100..150, &mut produced);
    eventually("150 records taken", Duration::from_secs(60), || async {
        metric(&addr, "pail_records_consumed_total").await == 150
    })
    .await;
    (child, produced)
}

/// A worker with an open segment (see [`worker_with_open_segment`]) is stopped with SIGTERM;
/// once its intent commit is seen, the next `failures` commits fail. Returns its exit status.
async fn shutdown_with_failing_commits(
    kafka: &MockKafka,
    s3: &TestS3,
    dir: &Path,
    group: &str,
    extra: &str,
    failures: usize,
) -> (std::process::ExitStatus, Produced) {
    let (mut child, produced) = worker_with_open_segment(dir, kafka, s3, group, extra).await;
    // Uploads take a while, so that the intent commit is seen before the final one is made.
    s3.set_write_latency(Duration::from_millis(1500));
    support::workers::sigterm(&child);
    eventually("the intent recorded", Duration::from_secs(30), || async {
        kafka.commits(group, "events", 1)[0]
            .as_ref()
            .is_some_and(|(o, m)| *o == 0 && m.ends_with(":149"))
    })
    .await;
    kafka.cluster.request_errors(
        RDKafkaApiKey::OffsetCommit,
        &vec![RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN; failures],
    );
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .expect("no exit after SIGTERM")
        .unwrap();
    (status, produced)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_final_commit_is_retried_before_a_clean_exit() {
    let dir = tempfile::tempdir().unwrap();
    let kafka = MockKafka::start(&[("events", 1)]);
    let s3 = TestS3::start(&["lake"]).await;
    // The final commit fails five times (a coordinator moving); it is tried again each tick.
    let (status, produced) =
        shutdown_with_failing_commits(&kafka, &s3, dir.path(), "final", "", 5).await;
    assert!(status.success(), "exit status {status:?}");
    let commit = kafka.commits("final", "events", 1)[0].clone().unwrap();
    assert_eq!(commit.0, 150, "the final commit landed: {commit:?}");
    assert_eq!(
        commit.1.matches(':').count(),
        1,
        "no segment left in the intent: {commit:?}"
    );
    audit(&s3, &produced);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_final_commit_that_never_lands_fails_the_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let kafka = MockKafka::start(&[("events", 1)]);
    let s3 = TestS3::start(&["lake"]).await;
    let extra = "shutdown_timeout = \"4s\"\n";
    let (status, produced) =
        shutdown_with_failing_commits(&kafka, &s3, dir.path(), "never", extra, 1000).await;
    assert_eq!(status.code(), Some(1), "the final commit did not land");
    // The objects are there, the commit still records them: the next owner replays the same
    // records into the same names (412), then commits.
    let commit = kafka.commits("never", "events", 1)[0].clone().unwrap();
    assert!(commit.0 == 0 && commit.1.ends_with(":149"), "{commit:?}");
    audit(&s3, &produced);
}

#[tokio::test(flavor = "multi_thread")]
async fn commits_that_keep_failing_for_a_while_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let kafka = MockKafka::start(&[("events", 4)]);
    let s3 = TestS3::start(&["lake"]).await;
    let produced = produce(&kafka, 4, 3000);
    // A small budget and small segments: with commits failing, sealed segments pile up
    // waiting for their intents, and consumption pauses on the budget.
    let config = config_with(
        dir.path(),
        &kafka,
        &s3,
        "slow",
        "max_buffer_bytes = \"64KiB\"\n",
    );
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("max_records = 1000", "max_records = 50");
    std::fs::write(&config, text).unwrap();
    kafka.cluster.request_errors(
        RDKafkaApiKey::OffsetCommit,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN; 8],
    );
    let log = dir.path().join("slow.log");
    let child = spawn_worker(&config, &log);
    let addr = endpoint_address(&log).await;
    eventually("everything committed", Duration::from_secs(120), || async {
        kafka.committed("slow", "events", 4) == vec![Some(3000); 4]
    })
    .await;
    assert!(metric(&addr, "pail_commit_failures_total").await >= 1);
    let status = terminate(child, Duration::from_secs(40)).await;
    assert!(status.success(), "exit status {status:?}");
    audit(&s3, &produced);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_partition_that_stays_keeps_its_open_segment_across_a_rebalance() {
    let dir = tempfile::tempdir().unwrap();
    let kafka = MockKafka::start(&[("events", 2)]);
    let s3 = TestS3::start(&["lake"]).await;
    let mut produced = produce(&kafka, 2, 200);
    let config = config_with(dir.path(), &kafka, &s3, "stay", "");
    let (log_a, log_b) = (dir.path().join("a.log"), dir.path().join("b.log"));
    let a = spawn_worker(&config, &log_a);
    let addr_a = endpoint_address(&log_a).await;
    eventually(
        "worker a took everything",
        Duration::from_secs(60),
        || async { metric(&addr_a, "pail_records_consumed_total").await == 400 },
    )
    .await;
    let b = spawn_worker(&config, &log_b);
    let addr_b = endpoint_address(&log_b).await;

    eventually("one partition each", Duration::from_secs(60), || async {
        metric(&addr_a, "pail_partitions_assigned").await == 1
            && metric(&addr_b, "pail_partitions_assigned").await == 1
    })
    .await;
    // One more event per partition: worker a counts its own partition's, after whatever it
    // read again of it. Eager rebalancing would have dropped its open segment and read its
    // 200 events again (601); cooperative rebalancing kept it (401).
    produce_range(&kafka, 2, 200..201, &mut produced);
    eventually(
        "worker a took the new event",
        Duration::from_secs(60),
        || async { metric(&addr_a, "pail_records_consumed_total").await > 400 },
    )
    .await;
    eventually(
        "worker b took its partition",
        Duration::from_secs(60),
        || async { metric(&addr_b, "pail_records_consumed_total").await == 201 },
    )
    .await;
    assert_eq!(metric(&addr_a, "pail_records_consumed_total").await, 401);
    for child in [a, b] {
        let status = terminate(child, Duration::from_secs(40)).await;
        assert!(status.success(), "exit status {status:?}");
    }
    audit(&s3, &produced);
}
