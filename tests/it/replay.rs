//! A replay over the memory budget, through the `pail` binary, the mock cluster and the
//! in-process S3 server: a worker killed after recording a large segment's intent leaves it to
//! the next, which runs with a smaller `max_buffer_bytes`. The replayed segment cannot be cut
//! short of its recorded end, so it may exceed the budget; the other partition waits for it
//! instead of being sealed into small objects, and everything lands exactly once.
//!
//! (Whether the other partition's records arrive while the binary's replay is over the budget
//! depends on the fetch timing; the in-process test below arranges that they do, and so pins
//! the old bug, as does the pipeline's unit test
//! `replay_over_the_memory_budget_does_not_make_other_partitions_seal_tiny_segments`.)

use crate::support;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use support::http::{endpoint_address, eventually, metric};
use support::kafka::{MockKafka, Produce};
use support::read;
use support::s3::{ACCESS_KEY, SECRET_KEY, TestS3};
use support::workers::{spawn_worker, terminate, worker_config};

fn produce(kafka: &MockKafka, partition: i32, range: std::ops::Range<usize>, pad: usize) {
    let payloads: Vec<String> = range
        .map(|i| format!(r#"{{"id":"p{partition}-{i}","pad":"{}"}}"#, "x".repeat(pad)))
        .collect();
    let records: Vec<Produce<'_>> = payloads
        .iter()
        .map(|p| Produce {
            topic: "events",
            partition,
            key: None,
            payload: Some(p.as_bytes()),
            timestamp_ms: 1_763_600_000_000,
        })
        .collect();
    kafka.produce(&records);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replay_over_the_budget_is_delivered_once_and_other_partitions_stay_whole() {
    let dir = tempfile::tempdir().unwrap();
    let kafka = MockKafka::start(&[("events", 2)]);
    let s3 = TestS3::start(&["lake"]).await;
    // 600 records of about 1 KB on partition 0, in one open segment (1000 records, 1 h).
    produce(&kafka, 0, 0..600, 1000);
    let config = worker_config(dir.path(), &kafka.brokers(), &s3.endpoint(), "replay", "1h");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("[telemetry]\nlisten = \"127.0.0.1:0\"\n");
    std::fs::write(&config, &text).unwrap();
    let first_log = dir.path().join("first.log");
    let mut first = spawn_worker(&config, &first_log);
    let addr = endpoint_address(&first_log).await;
    eventually(
        "the first worker took them",
        Duration::from_secs(60),
        || async { metric(&addr, "pail_records_consumed_total").await == 600 },
    )
    .await;
    // Shutdown seals them and records the intent; the upload is slow, and the worker dies
    // before it is done.
    s3.set_write_latency(Duration::from_secs(30));
    support::workers::sigterm(&first);
    eventually("the intent recorded", Duration::from_secs(30), || async {
        kafka.commits("replay", "events", 2)[0]
            .as_ref()
            .is_some_and(|(o, m)| *o == 0 && m.ends_with(":599"))
    })
    .await;
    first.start_kill().unwrap();
    first.wait().await.unwrap();
    s3.set_write_latency(Duration::ZERO);

    // The next worker has a 100 KiB budget: the 600 KB replay exceeds it. Partition 1 gets
    // 300 small events meanwhile.
    let text = text.replace(
        "max_concurrent_uploads = 4",
        "max_concurrent_uploads = 4\nmax_buffer_bytes = \"100KiB\"",
    );
    std::fs::write(
        &config,
        text.replace("max_age = \"1h\"", "max_age = \"5s\""),
    )
    .unwrap();
    produce(&kafka, 1, 0..300, 10);
    let second_log = dir.path().join("second.log");
    let second = spawn_worker(&config, &second_log);
    eventually("everything committed", Duration::from_secs(120), || async {
        kafka.committed("replay", "events", 2) == vec![Some(600), Some(300)]
    })
    .await;
    let status = terminate(second, Duration::from_secs(40)).await;
    assert!(status.success(), "exit status {status:?}");

    let mut rows: BTreeMap<String, usize> = BTreeMap::new();
    let mut partition_1_objects = 0;
    for (name, file) in read::all_parquet(&s3.bucket_dir("lake").join("raw/events")) {
        if name.contains("events+1+") {
            partition_1_objects += 1;
        }
        for row in file {
            *rows
                .entry(row["id"].as_str().unwrap().to_string())
                .or_default() += 1;
        }
    }
    assert_eq!(rows.len(), 900, "every event delivered");
    assert!(rows.values().all(|n| *n == 1), "none twice");
    assert!(
        partition_1_objects <= 5,
        "partition 1 was cut into {partition_1_objects} objects"
    );
    let puts = s3.puts();
    assert!(
        puts.iter().all(|p| !p.overwrote),
        "an object was overwritten"
    );
}

/// The same in process, with a crashed worker's intent committed directly: the recorded
/// segment (1 MB, ten times the budget) is replayed whole into one object, and the other
/// partition, read at the same time, is cut by its rotation alone (its segments of 250 small
/// records stay well under the budget).
///
/// This one pins the old bug (the memory relief sealed the other partitions during a replay,
/// one record at a time): both partitions are produced in many small record batches, one after
/// the other, and fetched a few KiB at a time, so partition 1's records keep arriving while the
/// replay is over the budget instead of all in its first batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorded_intent_over_the_budget_is_replayed_whole_beside_a_partition_cut_by_rotation() {
    let kafka = MockKafka::start(&[("events", 2)]);
    let s3 = TestS3::start(&["lake"]).await;
    for chunk in 0..100 {
        produce(&kafka, 0, chunk * 10..(chunk + 1) * 10, 1000);
        produce(&kafka, 1, chunk * 30..(chunk + 1) * 30, 10);
    }
    // A crashed worker's intent: one segment, offsets 0..=999 of partition 0, to be replayed.
    kafka.commit_offset(
        "replay-in-process",
        "events",
        0,
        0,
        "pail2:0123456789ab:999",
    );
    let text = format!(
        r#"
[source]
kind = "kafka"
brokers = "{brokers}"
group_id = "replay-in-process"
topics = ["events"]
[source.properties]
"session.timeout.ms" = "6000"
"max.partition.fetch.bytes" = "4096"

[worker]
max_buffer_bytes = "100KiB"

[[destinations]]
name = "lake"
topics = ["events"]
url = "s3://lake/raw"
region = "us-east-1"
endpoint = "{endpoint}"
path_style = true
key_template = "{{topic}}/p={{partition}}"
[destinations.auth]
method = "static"
access_key_id = "{ACCESS_KEY}"
secret_access_key = "{SECRET_KEY}"
[destinations.rotation]
max_records = 250
"#,
        brokers = kafka.brokers(),
        endpoint = s3.endpoint(),
    );
    let settings = pail::config::parse(Path::new("test.toml"), &text, &|_| None).unwrap();
    let stats = support::run_settings_once(settings, Duration::from_secs(90))
        .await
        .unwrap();

    let objects = |p: i32| read::files(&s3.bucket_dir("lake").join(format!("raw/events/p={p}")));
    assert_eq!(
        objects(0).len(),
        1,
        "the replay is the recorded segment, whole"
    );
    assert_eq!(
        stats.sealed_for_memory, 0,
        "nothing was sealed early: the replay cannot be, and sealing the others frees nothing"
    );
    let sizes: Vec<usize> = objects(1)
        .iter()
        .map(|f| read::parquet_rows(f).len())
        .collect();
    assert_eq!(
        sizes,
        vec![250; 12],
        "partition 1 is cut by its rotation (250 records), not by the replay's memory"
    );
    let ids = read::ids(&s3.bucket_dir("lake").join("raw"));
    assert_eq!(ids.len(), 4000);
    assert!(ids.values().all(|n| *n == 1));
    assert_eq!(
        kafka.committed("replay-in-process", "events", 2),
        vec![Some(1000), Some(3000)]
    );
}
