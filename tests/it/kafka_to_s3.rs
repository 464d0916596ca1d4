//! End to end, in process: a mock Kafka cluster (real protocol) → `pail::run` with `--once`
//! semantics → an S3 server; every object is read back with the parquet crate.

use crate::support;

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use support::kafka::{MockKafka, Produce};
use support::read;
use support::s3::{ACCESS_KEY, SECRET_KEY, TestS3};

const PARTITIONS: i32 = 4;
const PER_PARTITION: i64 = 500;

fn config(brokers: &str, endpoint: &str, group: &str, max_records: u64) -> pail::config::Settings {
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
name = "lake"
topics = ["events"]
url = "s3://lake/raw"
region = "us-east-1"
endpoint = "{endpoint}"
path_style = true
key_template = "{{topic}}/dt={{ts:%Y-%m-%d}}/hour={{ts:%H}}"
timestamp = "kafka"
[destinations.auth]
method = "static"
access_key_id = "{ACCESS_KEY}"
secret_access_key = "{SECRET_KEY}"
[destinations.rotation]
max_records = {max_records}
"#
    );
    pail::config::parse(Path::new("test.toml"), &text, &|_| None).unwrap()
}

fn event_time(p: i32, i: i64) -> DateTime<Utc> {
    // Spread over several hours across a day boundary.
    let base = Utc.with_ymd_and_hms(2026, 11, 20, 21, 0, 0).unwrap();
    base + chrono::Duration::seconds(i * 61 + i64::from(p) * 7)
}

/// Produces the events; returns ids of valid events → (partition, event time), and the
/// number of bad records (malformed JSON and tombstones).
fn produce_events(kafka: &MockKafka) -> (HashMap<String, (i32, DateTime<Utc>)>, usize) {
    let mut expected = HashMap::new();
    let mut bad = 0;
    let mut payloads = Vec::new();
    for p in 0..PARTITIONS {
        for i in 0..PER_PARTITION {
            let ts = event_time(p, i);
            let payload = if i % 97 == 13 {
                bad += 1;
                Some(format!("{{\"id\": \"broken-{p}-{i}\", \"n\": "))
            } else if i == 250 {
                bad += 1;
                None
            } else {
                let id = format!("e-{p}-{i}");
                expected.insert(id.clone(), (p, ts));
                Some(format!(
                    r#"{{"id":"{id}","n":{i},"user":{{"name":"u{i}","tags":["a","b"]}},"amount":{}.5}}"#,
                    i % 13
                ))
            };
            payloads.push((p, ts, payload));
        }
    }
    let records: Vec<Produce<'_>> = payloads
        .iter()
        .map(|(p, ts, payload)| Produce {
            topic: "events",
            partition: *p,
            key: Some(b"k"),
            payload: payload.as_deref().map(str::as_bytes),
            timestamp_ms: ts.timestamp_millis(),
        })
        .collect();
    kafka.produce(&records);
    (expected, bad)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_delivers_every_event_to_its_partition_path_and_commits() {
    let kafka = MockKafka::start(&[("events", PARTITIONS)]);
    let s3 = TestS3::start(&["lake"]).await;
    let (expected, bad) = produce_events(&kafka);

    let settings = config(&kafka.brokers(), &s3.endpoint(), "g-once", 120);
    let stats = support::run_settings_once(settings, Duration::from_secs(90))
        .await
        .unwrap();
    assert_eq!(stats.records, (PARTITIONS as i64 * PER_PARTITION) as u64);
    assert_eq!(stats.rows_written as usize, expected.len());
    assert_eq!(stats.dead_lettered as usize, bad);

    // Every valid event exactly once, in the object for its partition and event hour.
    let objects = read::all_parquet(&s3.bucket_dir("lake").join("raw"));
    assert!(
        objects.len() > PARTITIONS as usize,
        "rotation should make several objects"
    );
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (path, rows) in &objects {
        for row in rows {
            let id = row["id"].as_str().unwrap().to_string();
            let (p, ts) = expected[&id];
            let dir = format!(
                "events/dt={}/hour={}/",
                ts.format("%Y-%m-%d"),
                ts.format("%H")
            );
            assert!(
                path.starts_with(&dir),
                "{id} at {path}, expected under {dir}"
            );
            let name = path.rsplit('/').next().unwrap();
            assert!(name.starts_with(&format!("events+{p}+")), "{id} in {name}");
            assert_eq!(row["_kafka_partition"], p);
            *seen.entry(id).or_default() += 1;
        }
    }
    assert_eq!(seen.len(), expected.len(), "missing events");
    assert!(seen.values().all(|n| *n == 1), "duplicated events");

    // Every bad record is dead-lettered once, with its offset and reason.
    let dead = read::dead_letters(&s3.bucket_dir("lake").join("raw/_errors/events"));
    assert_eq!(dead.len(), bad);
    assert!(
        dead.iter()
            .all(|d| d["reason"].as_str().is_some_and(|r| !r.is_empty()))
    );
    assert!(
        dead.iter()
            .any(|d| d["reason"].as_str().unwrap().contains("tombstone"))
    );

    // Append-only: every PUT was conditional and nothing was overwritten.
    let puts = s3.puts();
    assert!(puts.iter().all(|p| p.if_none_match && !p.overwrote));

    // The offsets were committed: a second run in the same group finds nothing new.
    let settings = config(&kafka.brokers(), &s3.endpoint(), "g-once", 120);
    let again = support::run_settings_once(settings, Duration::from_secs(90))
        .await
        .unwrap();
    assert_eq!(again.records, 0, "{again:?}");
}
