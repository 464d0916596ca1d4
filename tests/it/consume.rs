//! What the `pail` binary consumes, through librdkafka's mock cluster: topics produced with
//! every compression codec, and batches librdkafka cannot read, which stop their partition
//! (never skipped, never committed past) while the other partitions are delivered — in a
//! `--once` run, run twice, and in a long-running worker that reports the stop in `/healthz`
//! and `/metrics`.

use crate::support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use rdkafka::types::RDKafkaApiKey;
use rdkafka::types::RDKafkaRespErr;

use serde_json::Value;
use support::http::{endpoint_address, eventually, get};
use support::kafka::{MockKafka, Produce};
use support::kafka_wire::{append_batch, control_batch, record_batch, records_body};
use support::read;
use support::workers::{spawn_worker, terminate};

/// 2026-05-01T10:00:00Z.
const T0_MS: i64 = 1_777_629_600_000;

/// A config for `pail run` from `topics` on `brokers` into `dir/out`, with the partition and
/// offset of each record in its row; `more` is appended (it starts in the rotation table).
fn write_config(dir: &Path, brokers: &str, group: &str, topics: &[&str], more: &str) -> PathBuf {
    let topics: Vec<String> = topics.iter().map(|t| format!("{t:?}")).collect();
    let text = format!(
        r#"
[source]
kind = "kafka"
brokers = "{brokers}"
group_id = "{group}"
topics = [{topics}]
[source.properties]
"session.timeout.ms" = "6000"

[[destinations]]
name = "local"
url = "file://{out}"
key_template = "{{topic}}/p={{partition}}"
timestamp = "kafka"
on_bad_record = "fail"
[destinations.rotation]
max_records = 400
{more}"#,
        topics = topics.join(", "),
        out = dir.join("out").display(),
    );
    let path = dir.join(format!("{group}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

/// Runs `pail run --once` with JSON logs, bounded in time.
async fn run_once(config: &Path) -> Output {
    let args = ["run", "--once", "--config", config.to_str().unwrap()];
    let env = [("PAIL_LOG_FORMAT", "json"), ("PAIL_LOG", "info")];
    let cwd = config.parent().unwrap();
    support::run_pail(&args, cwd, &env, Duration::from_secs(180)).await
}

/// `(topic, partition) → offsets` of every row written under `out`, in file order.
fn delivered(out: &Path) -> BTreeMap<(String, i64), Vec<i64>> {
    let mut by_partition: BTreeMap<(String, i64), Vec<i64>> = BTreeMap::new();
    for (_, rows) in read::all_parquet(out) {
        for row in rows {
            let topic = row["_kafka_topic"].as_str().unwrap().to_string();
            let partition = row["_kafka_partition"].as_i64().unwrap();
            by_partition
                .entry((topic, partition))
                .or_default()
                .push(row["_kafka_offset"].as_i64().unwrap());
        }
    }
    for offsets in by_partition.values_mut() {
        offsets.sort_unstable();
    }
    by_partition
}

/// Produces `{"p":P,"i":I}` for `i` in `range` to partition `partition` of `events`.
fn produce_json(kafka: &MockKafka, partition: i32, range: std::ops::Range<usize>) {
    let payloads: Vec<String> = range
        .map(|i| format!(r#"{{"p":{partition},"i":{i}}}"#))
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

/// `events` partition `p`: offsets `0..n` delivered, as [`delivered`] lists them.
fn offsets(p: i64, n: i64) -> ((String, i64), Vec<i64>) {
    (("events".to_string(), p), (0..n).collect())
}

/// The error events of a JSON log.
fn errors(stderr: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(stderr)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["level"] == "ERROR")
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_compression_codec_is_consumed_exactly_once() {
    const CODECS: [&str; 5] = ["none", "gzip", "snappy", "lz4", "zstd"];
    const PER_PARTITION: usize = 1500;
    let topics: Vec<String> = CODECS.iter().map(|c| format!("events-{c}")).collect();
    let specs: Vec<(&str, i32)> = topics.iter().map(|t| (t.as_str(), 2)).collect();
    let kafka = MockKafka::start(&specs);
    let mut want = Vec::new();
    for (codec, topic) in CODECS.iter().zip(&topics) {
        for partition in 0..2 {
            let payloads: Vec<String> = (0..PER_PARTITION)
                .map(|i| {
                    let id = format!("{codec}-{partition}-{i}");
                    want.push(id.clone());
                    // Repetitive, so that every codec really compresses the batches
                    // (librdkafka sends a batch uncompressed when compressing does not help).
                    format!(
                        r#"{{"id":"{id}","codec":"{codec}","page":"/products/{}","agent":"Mozilla/5.0 (X11; Linux x86_64)"}}"#,
                        i % 17
                    )
                })
                .collect();
            kafka.produce_compressed(codec, topic, partition, &payloads, T0_MS);
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    let config = write_config(dir.path(), &kafka.brokers(), "codecs", &names, "");
    let out = run_once(&config).await;
    assert!(
        out.status.success(),
        "pail run --once failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut got: Vec<String> = read::all_parquet(&dir.path().join("out"))
        .into_iter()
        .flat_map(|(_, rows)| {
            rows.into_iter()
                .map(|r| r["id"].as_str().unwrap().to_string())
        })
        .collect();
    got.sort();
    want.sort();
    assert_eq!(got.len(), want.len(), "rows delivered");
    assert_eq!(got, want, "every record exactly once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_librdkafka_cannot_read_stops_only_its_partition() {
    let kafka = MockKafka::start(&[("events", 3)]);
    let brokers = kafka.brokers();
    let produce =
        |partition: i32, from: usize, n: usize| produce_json(&kafka, partition, from..from + n);
    // Partition 0: 40 records, a gzip batch whose data does not decompress (5 records), 30
    // more. Partition 1: 25 records, a batch whose CRC does not match (3 readable records),
    // 20 more. Partition 2: 60 records.
    produce(0, 0, 40);
    let garbage = record_batch(1, 5, b"these bytes are not a gzip stream", T0_MS, false);
    assert_eq!(append_batch(&brokers, "events", 0, &garbage), 40);
    produce(0, 45, 30);
    produce(1, 0, 25);
    let values: Vec<&[u8]> = vec![
        br#"{"p":1,"i":25}"#,
        br#"{"p":1,"i":26}"#,
        br#"{"p":1,"i":27}"#,
    ];
    let bad_crc = record_batch(0, 3, &records_body(&values), T0_MS, true);
    assert_eq!(append_batch(&brokers, "events", 1, &bad_crc), 25);
    produce(1, 28, 20);
    produce(2, 0, 60);

    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &brokers, "stops", &["events"], "");
    let expect_delivered: BTreeMap<(String, i64), Vec<i64>> =
        [offsets(0, 40), offsets(1, 25), offsets(2, 60)]
            .into_iter()
            .collect();

    // Twice: a second run stops at the same offsets; nothing is ever skipped.
    for run in 1..=2 {
        let out = run_once(&config).await;
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(
            out.status.code(),
            Some(1),
            "run {run}: exit status; log:\n{stderr}"
        );
        let mut stops: Vec<(i64, i64)> = errors(&out.stderr)
            .iter()
            .filter(|e| e["fields"]["topic"] == "events")
            .filter_map(|e| {
                Some((
                    e["fields"]["partition"].as_i64()?,
                    e["fields"]["offset"].as_i64()?,
                ))
            })
            .collect();
        stops.sort_unstable();
        assert_eq!(
            stops,
            vec![(0, 40), (1, 25)],
            "run {run}: the stopped partitions and offsets logged; log:\n{stderr}"
        );
        assert_eq!(
            delivered(&dir.path().join("out")),
            expect_delivered,
            "run {run}: rows by partition; log:\n{stderr}"
        );
        assert_eq!(
            kafka.committed("stops", "events", 3),
            vec![Some(40), Some(25), Some(60)],
            "run {run}: committed offsets"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_running_worker_reports_a_stopped_partition_and_delivers_the_others() {
    let kafka = MockKafka::start(&[("events", 2)]);
    let brokers = kafka.brokers();
    produce_json(&kafka, 0, 0..10);
    let garbage = record_batch(1, 5, b"not gzip either", T0_MS, false);
    assert_eq!(append_batch(&brokers, "events", 0, &garbage), 10);
    produce_json(&kafka, 0, 15..25);
    produce_json(&kafka, 1, 0..20);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let more = "max_age = \"1s\"\n[telemetry]\nlisten = \"127.0.0.1:0\"\n";
    let config = write_config(dir.path(), &brokers, "long", &["events"], more);
    let log = dir.path().join("worker.log");
    let child = spawn_worker(&config, &log);
    let addr = endpoint_address(&log).await;

    let health = || async {
        let (_, body) = get(&addr, "/healthz").await;
        serde_json::from_str::<Value>(&body).unwrap_or(Value::Null)
    };
    eventually(
        "partition 0 reported stopped",
        Duration::from_secs(60),
        || async {
            let h = health().await;
            h["status"] == "degraded"
                && h["stopped_partitions"]
                    .as_array()
                    .is_some_and(|s| s.len() == 1 && s[0]["partition"] == 0 && s[0]["offset"] == 10)
        },
    )
    .await;
    let both: BTreeMap<_, _> = [offsets(0, 10), offsets(1, 20)].into_iter().collect();
    eventually(
        "what precedes the stop, and partition 1",
        Duration::from_secs(60),
        || async { delivered(&out) == both },
    )
    .await;
    // Partition 1 goes on; partition 0 stays where it stopped.
    produce_json(&kafka, 1, 20..35);
    let later: BTreeMap<_, _> = [offsets(0, 10), offsets(1, 35)].into_iter().collect();
    eventually(
        "partition 1's later records",
        Duration::from_secs(60),
        || async { delivered(&out) == later },
    )
    .await;
    // Tried again from offset 10 (1 s, then 2 s later), and stopped again each time.
    eventually(
        "partition 0 tried again",
        Duration::from_secs(30),
        || async {
            let (_, metrics) = get(&addr, "/metrics").await;
            metric(&metrics, "pail_consume_errors_total") >= 2
        },
    )
    .await;
    let (_, metrics) = get(&addr, "/metrics").await;
    assert_eq!(metric(&metrics, "pail_partitions_stopped"), 1, "{metrics}");

    // A graceful stop still says the run did not deliver everything.
    let status = terminate(child, Duration::from_secs(40)).await;
    assert_eq!(status.code(), Some(1), "exit status after SIGTERM");
    assert_eq!(delivered(&out), later, "nothing more after the stop");
    assert_eq!(
        kafka.committed("long", "events", 2),
        vec![Some(10), Some(35)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_passing_fetch_error_stops_the_partition_until_a_retry_reads_again() {
    let kafka = MockKafka::start(&[("events", 1)]);
    let brokers = kafka.brokers();
    produce_json(&kafka, 0, 0..50);
    // The next Fetch requests fail, as a broker in trouble answers; then it recovers.
    kafka.cluster.request_errors(
        RDKafkaApiKey::Fetch,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN; 3],
    );
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let more = "max_age = \"1s\"\n[telemetry]\nlisten = \"127.0.0.1:0\"\n";
    let config = write_config(dir.path(), &brokers, "heals", &["events"], more);
    let log = dir.path().join("worker.log");
    let child = spawn_worker(&config, &log);
    let addr = endpoint_address(&log).await;
    let all: BTreeMap<_, _> = [offsets(0, 50)].into_iter().collect();
    eventually("every record, once", Duration::from_secs(60), || async {
        delivered(&out) == all
    })
    .await;
    let (_, metrics) = get(&addr, "/metrics").await;
    assert!(
        metric(&metrics, "pail_consume_errors_total") >= 1,
        "the fetch errors reached pail: {metrics}"
    );
    eventually("no partition stopped", Duration::from_secs(30), || async {
        let (_, metrics) = get(&addr, "/metrics").await;
        metric(&metrics, "pail_partitions_stopped") == 0
    })
    .await;
    let status = terminate(child, Duration::from_secs(40)).await;
    assert!(status.success(), "exit status after SIGTERM: {status:?}");
    assert_eq!(delivered(&out), all);
    assert_eq!(kafka.committed("heals", "events", 1), vec![Some(50)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_once_run_ends_at_a_log_end_made_of_transaction_markers() {
    let kafka = MockKafka::start(&[("events", 1)]);
    let brokers = kafka.brokers();
    // 10 records, then two transaction markers, as a transactional producer's commits leave
    // them: consumers never return a marker, so no record reaches the high watermark (12);
    // the consumer's position does.
    produce_json(&kafka, 0, 0..10);
    for at in [10, 11] {
        assert_eq!(
            append_batch(&brokers, "events", 0, &control_batch(true, 7, T0_MS)),
            at
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &brokers, "tx", &["events"], "");
    let out = run_once(&config).await;
    assert!(
        out.status.success(),
        "pail run --once: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let records_only: BTreeMap<_, _> = [offsets(0, 10)].into_iter().collect();
    assert_eq!(delivered(&dir.path().join("out")), records_only);
    assert!(
        !dir.path().join("out/_errors").exists(),
        "a marker taken for a bad record"
    );
    assert_eq!(kafka.committed("tx", "events", 1), vec![Some(10)]);
}

/// The value of an unlabelled sample in a Prometheus text exposition (0 when absent).
fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0)
}
