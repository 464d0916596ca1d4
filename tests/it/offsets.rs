//! Offsets that start again or jump, through the `pail` binary and librdkafka's mock cluster.
//!
//! - A topic recreated (here: the pipeline moved to a new cluster, which leaves the group no
//!   commit, as deleting a topic does), offsets reset with a tool, a file delivered again: the
//!   new events are written under a new lineage, never taken for "already delivered".
//! - A commit that is not pail's intent, or committed offsets that cannot be read: only those
//!   partitions stop (a failed lookup is tried again by a long-running worker).
//! - A commit the broker's retention passed (the mock cluster keeps 5 MB per partition), before
//!   a run or while a partition waits for its destination: that partition stops loudly at its
//!   first undelivered offset; nothing past the gap is committed; the others are delivered.

use crate::support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use serde_json::Value;
use support::http::{endpoint_address, eventually, get, healthy};
use support::kafka::{MockKafka, Produce};
use support::read;
use support::s3::{ACCESS_KEY, SECRET_KEY, TestS3};
use support::workers::{spawn_worker, terminate};

/// 2026-05-01T10:00:00Z: every event of these tests is in this hour.
const T0_MS: i64 = 1_777_629_600_000;

/// A `--once` config from `events` on `brokers` into `dir/out`, one file per hour.
fn config(dir: &Path, brokers: &str, group: &str) -> PathBuf {
    let text = format!(
        r#"
[source]
kind = "kafka"
brokers = "{brokers}"
group_id = "{group}"
topics = ["events"]
[source.properties]
"session.timeout.ms" = "6000"

[[destinations]]
name = "local"
url = "file://{out}"
key_template = "{{topic}}/dt={{ts:%Y-%m-%d}}/hour={{ts:%H}}"
timestamp = "kafka"
[destinations.rotation]
max_records = 2000
"#,
        out = dir.join("out").display(),
    );
    let path = dir.join(format!("{group}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

async fn run_once(config: &Path) -> Output {
    let args = ["run", "--once", "--config", config.to_str().unwrap()];
    let env = [("PAIL_LOG_FORMAT", "json"), ("PAIL_LOG", "info")];
    support::run_pail(
        &args,
        config.parent().unwrap(),
        &env,
        Duration::from_secs(180),
    )
    .await
}

/// Produces `{"life":L,"p":P,"i":I}` for `i` in `range` to `events` partition `partition`,
/// padded to about `size` bytes.
fn produce(
    kafka: &MockKafka,
    life: u32,
    partition: i32,
    range: std::ops::Range<usize>,
    size: usize,
) {
    let payloads: Vec<String> = range
        .map(|i| {
            let body = format!(r#"{{"life":{life},"p":{partition},"i":{i},"pad":""#);
            let pad = "x".repeat(size.saturating_sub(body.len() + 2));
            format!("{body}{pad}\"}}")
        })
        .collect();
    let records: Vec<Produce<'_>> = payloads
        .iter()
        .map(|p| Produce {
            topic: "events",
            partition,
            key: None,
            payload: Some(p.as_bytes()),
            timestamp_ms: T0_MS,
        })
        .collect();
    kafka.produce(&records);
}

/// `(life, partition) → i` of every row under `out`, sorted.
fn delivered(out: &Path) -> BTreeMap<(i64, i64), Vec<i64>> {
    let mut rows: BTreeMap<(i64, i64), Vec<i64>> = BTreeMap::new();
    for (_, file) in read::all_parquet(out) {
        for row in file {
            let key = (row["life"].as_i64().unwrap(), row["p"].as_i64().unwrap());
            rows.entry(key)
                .or_default()
                .push(row["i"].as_i64().unwrap());
        }
    }
    for v in rows.values_mut() {
        v.sort_unstable();
    }
    rows
}

/// The run summary's counts: objects written and already present.
fn objects(stderr: &[u8]) -> (u64, u64) {
    let text = String::from_utf8_lossy(stderr);
    let line = text
        .lines()
        .find(|l| l.starts_with("delivered "))
        .unwrap_or_else(|| panic!("no summary line:\n{text}"));
    let numbers: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect();
    let n = numbers.len();
    (numbers[n - 2], numbers[n - 1])
}

fn range(n: i64) -> Vec<i64> {
    (0..n).collect()
}

/// The error events of a JSON log.
fn errors(stderr: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(stderr)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["level"] == "ERROR")
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn recreated_topic_events_are_written_not_reported_as_already_present() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let first = MockKafka::start(&[("events", 1)]);
    produce(&first, 1, 0, 0..3000, 60);
    let run = run_once(&config(dir.path(), &first.brokers(), "lake")).await;
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert_eq!(delivered(&out), BTreeMap::from([((1, 0), range(3000))]));

    // The same topic, offsets from 0 again, 3000 other events in the same hour.
    let second = MockKafka::start(&[("events", 1)]);
    produce(&second, 2, 0, 0..3000, 60);
    let run = run_once(&config(dir.path(), &second.brokers(), "lake")).await;
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let (written, present) = objects(&run.stderr);
    assert_eq!(
        (written, present),
        (2, 0),
        "objects written, already present"
    );
    assert_eq!(
        delivered(&out),
        BTreeMap::from([((1, 0), range(3000)), ((2, 0), range(3000))])
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn offsets_reset_by_a_tool_deliver_the_events_again_as_asked() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let kafka = MockKafka::start(&[("events", 1)]);
    produce(&kafka, 1, 0, 0..500, 60);
    let config = config(dir.path(), &kafka.brokers(), "reset");
    let run = run_once(&config).await;
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert_eq!(kafka.committed("reset", "events", 1), vec![Some(500)]);

    // kafka-consumer-groups --reset-offsets --to-earliest: a commit with no pail metadata.
    kafka.reset_offset("reset", "events", 0, 0);
    let run = run_once(&config).await;
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert_eq!(objects(&run.stderr), (1, 0));
    let twice: Vec<i64> = (0..500).flat_map(|i| [i, i]).collect();
    assert_eq!(delivered(&out), BTreeMap::from([((1, 0), twice)]));
    assert_eq!(kafka.committed("reset", "events", 1), vec![Some(500)]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_delivered_again_is_written_again() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("events.ndjson");
    let config = dir.path().join("file.toml");
    std::fs::write(
        &config,
        format!(
            "[source]\nkind = \"file\"\npath = \"{}\"\n[[destinations]]\nname = \"local\"\n\
             url = \"file://{}\"\nkey_template = \"{{topic}}\"\ntimestamp = \"field:ts\"\n",
            input.display(),
            dir.path().join("out").display()
        ),
    )
    .unwrap();
    for life in [1, 2] {
        let lines: Vec<String> = (0..100)
            .map(|i| format!(r#"{{"life":{life},"p":0,"i":{i},"ts":"2026-05-01T10:00:00Z"}}"#))
            .collect();
        std::fs::write(&input, lines.join("\n")).unwrap();
        let run = run_once(&config).await;
        assert!(
            run.status.success(),
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );
        assert_eq!(objects(&run.stderr), (1, 0), "run {life}");
    }
    assert_eq!(
        delivered(&dir.path().join("out")),
        BTreeMap::from([((1, 0), range(100)), ((2, 0), range(100))])
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_commit_retention_passed_stops_only_its_partition() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let kafka = MockKafka::start(&[("events", 2)]);
    produce(&kafka, 1, 0, 0..100, 60);
    produce(&kafka, 1, 1, 0..100, 60);
    let config = config(dir.path(), &kafka.brokers(), "retention");
    let run = run_once(&config).await;
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );

    // 6 MB more on partition 0: the mock broker's 5 MB retention deletes its first records,
    // the 100 delivered and many never read.
    produce(&kafka, 1, 0, 100..6100, 1000);
    produce(&kafka, 1, 1, 100..150, 60);
    let (log_start, _) = kafka.watermarks("events", 0);
    assert!(
        log_start > 100,
        "retention did not move the log start: {log_start}"
    );

    let run = run_once(&config).await;
    assert_eq!(
        run.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let stops: Vec<Value> = errors(&run.stderr)
        .into_iter()
        .filter(|e| e["fields"]["partition"] == 0)
        .collect();
    assert!(
        stops.iter().any(|e| e["fields"]["offset"] == 100),
        "the stop names partition 0 and offset 100: {stops:?}"
    );
    assert_eq!(
        delivered(&out),
        BTreeMap::from([((1, 0), range(100)), ((1, 1), range(150))]),
        "partition 1 delivered, nothing of partition 0 past the gap"
    );
    assert_eq!(
        kafka.committed("retention", "events", 2),
        vec![Some(100), Some(150)]
    );
}

/// The worker of the paused-partition test: a destination whose bucket does not exist yet.
fn waiting_config(dir: &Path, brokers: &str, endpoint: &str) -> PathBuf {
    let text = format!(
        r#"
[source]
kind = "kafka"
brokers = "{brokers}"
group_id = "paused"
topics = ["events"]
[source.properties]
"session.timeout.ms" = "6000"
"heartbeat.interval.ms" = "500"

[[destinations]]
name = "lake"
url = "s3://late/raw"
endpoint = "{endpoint}"
path_style = true
preflight = false
key_template = "{{topic}}"
timestamp = "kafka"
[destinations.auth]
access_key_id = "{ACCESS_KEY}"
secret_access_key = "{SECRET_KEY}"
[destinations.rotation]
max_records = 100
max_age = "1s"

[worker]
permanent_error_retry = "1s"
[telemetry]
listen = "127.0.0.1:0"
"#
    );
    let path = dir.join("paused.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread")]
async fn a_paused_partition_whose_records_retention_deleted_stops_instead_of_jumping() {
    let dir = tempfile::tempdir().unwrap();
    let kafka = MockKafka::start(&[("events", 1)]);
    let s3 = TestS3::start(&[]).await;
    produce(&kafka, 1, 0, 0..50, 60);
    let log = dir.path().join("worker.log");
    let config = waiting_config(dir.path(), &kafka.brokers(), &s3.endpoint());
    let child = spawn_worker(&config, &log);
    let addr = endpoint_address(&log).await;
    // Uploads are refused (no bucket): the destination fails and its partition is paused.
    eventually("destination failing", Duration::from_secs(60), || async {
        !healthy(&addr).await
    })
    .await;
    // Meanwhile retention deletes records the worker has not read.
    produce(&kafka, 1, 0, 50..6050, 1000);
    let (log_start, _) = kafka.watermarks("events", 0);
    assert!(
        log_start > 50,
        "retention did not move the log start: {log_start}"
    );

    // The customer fixes the bucket: the 50 are delivered, then the partition stops at 50.
    std::fs::create_dir(s3.bucket_dir("late")).unwrap();
    let bucket = s3.bucket_dir("late");
    eventually("the 50 delivered", Duration::from_secs(90), || async {
        delivered(&bucket) == BTreeMap::from([((1, 0), range(50))])
    })
    .await;
    eventually("the stop reported", Duration::from_secs(60), || async {
        let (_, body) = get(&addr, "/healthz").await;
        let health: Value = serde_json::from_str(&body).unwrap_or_default();
        health["stopped_partitions"]
            .as_array()
            .is_some_and(|s| s.iter().any(|p| p["partition"] == 0 && p["offset"] == 50))
    })
    .await;
    eventually("committed at the gap", Duration::from_secs(30), || async {
        kafka.committed("paused", "events", 1) == vec![Some(50)]
    })
    .await;
    let (_, metrics) = get(&addr, "/metrics").await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("pail_consume_errors_total ") && !l.ends_with(" 0")),
        "{metrics}"
    );
    let status = terminate(child, Duration::from_secs(40)).await;
    assert_eq!(status.code(), Some(1), "a stopped partition fails the run");
    assert_eq!(
        delivered(&bucket),
        BTreeMap::from([((1, 0), range(50))]),
        "nothing past the gap"
    );
    assert_eq!(kafka.committed("paused", "events", 1), vec![Some(50)]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_commit_that_is_not_a_pail_intent_stops_only_its_partition() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let kafka = MockKafka::start(&[("events", 2)]);
    produce(&kafka, 1, 0, 0..100, 60);
    produce(&kafka, 1, 1, 0..100, 60);
    // Another tool committed to this group with metadata of its own.
    kafka.commit_offset("foreign", "events", 0, 40, "connect:v1:40");
    let run = run_once(&config(dir.path(), &kafka.brokers(), "foreign")).await;
    assert_eq!(
        run.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(
        errors(&run.stderr)
            .iter()
            .any(|e| e["fields"]["partition"] == 0 && e["fields"]["offset"] == 40),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert_eq!(delivered(&out), BTreeMap::from([((1, 1), range(100))]));
    assert_eq!(
        kafka.commits("foreign", "events", 2)[0],
        Some((40, "connect:v1:40".to_string())),
        "left as it was"
    );
    assert_eq!(kafka.committed("foreign", "events", 2)[1], Some(100));
}

#[tokio::test(flavor = "multi_thread")]
async fn committed_offsets_that_cannot_be_read_stop_partitions_until_they_can() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let kafka = MockKafka::start(&[("events", 2)]);
    produce(&kafka, 1, 0, 0..100, 60);
    produce(&kafka, 1, 1, 0..100, 60);
    // The group coordinator fails the first lookup of the committed offsets.
    kafka.cluster.request_errors(
        RDKafkaApiKey::OffsetFetch,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN],
    );
    let config = config(dir.path(), &kafka.brokers(), "lookup");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text = text.replace("max_records = 2000", "max_records = 2000\nmax_age = \"1s\"");
    text.push_str(
        "[worker]\npermanent_error_retry = \"2s\"\n[telemetry]\nlisten = \"127.0.0.1:0\"\n",
    );
    std::fs::write(&config, text).unwrap();
    let log = dir.path().join("worker.log");
    let child = spawn_worker(&config, &log);
    let addr = endpoint_address(&log).await;
    // Waited for before this test looks offsets up itself, which would take the error.
    eventually(
        "the failed lookup stopped the partitions",
        Duration::from_secs(60),
        || async {
            let (_, metrics) = get(&addr, "/metrics").await;
            metrics
                .lines()
                .any(|l| l.starts_with("pail_protocol_stops_total ") && !l.ends_with(" 0"))
        },
    )
    .await;
    eventually(
        "both partitions delivered and committed",
        Duration::from_secs(90),
        || async { kafka.committed("lookup", "events", 2) == vec![Some(100), Some(100)] },
    )
    .await;
    assert!(healthy(&addr).await, "nothing stopped any more");
    let status = terminate(child, Duration::from_secs(40)).await;
    assert!(status.success(), "exit status {status:?}");
    assert_eq!(
        delivered(&out),
        BTreeMap::from([((1, 0), range(100)), ((1, 1), range(100))])
    );
}
