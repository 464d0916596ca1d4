//! Hostile input through the whole worker: random bytes, deep nesting, huge records, invalid
//! UTF-8, tombstones, mixed types and hostile key-template values, produced to a mock Kafka
//! cluster and consumed by `pail::run`. No panic, and every record is accounted for:
//! written + dead-lettered (or skipped) = consumed, offset by offset, with dead letters
//! keeping the raw bytes.

use crate::support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use pail::pipeline::RunStats;
use support::kafka::{MockKafka, Produce};
use support::read;

const PARTITIONS: i32 = 3;
const RECORDS: usize = 3000;
// The mock cluster keeps 5 MiB per partition: records stay small enough to all be kept.
const MAX_RECORD: usize = 16 << 10;
const MAX_DEPTH: usize = 16;

/// One produced record: partition, key and payload.
type Input = (i32, Option<Vec<u8>>, Option<Vec<u8>>);

fn random_bytes(rng: &mut fastrand::Rng, len: usize) -> Vec<u8> {
    (0..len).map(|_| rng.u8(..)).collect()
}

fn nested(depth: usize, leaf: &str) -> String {
    let mut s = leaf.to_string();
    for i in 0..depth {
        s = if i % 2 == 0 {
            format!("{{\"n\":{s}}}")
        } else {
            format!("[{s}]")
        };
    }
    format!("{{\"deep\":{s}}}")
}

/// A value for the shared field names whose type changes from record to record.
fn mixed_value(rng: &mut fastrand::Rng) -> String {
    match rng.u8(..9) {
        0 => rng.i64(..).to_string(),
        1 => format!("{}.{}", rng.i32(..), rng.u16(..)),
        2 => format!("\"{}\"", rng.alphanumeric()),
        3 => "\"2026-03-01T10:00:00Z\"".to_string(),
        4 => "{\"a\":1,\"b\":[true,null]}".to_string(),
        5 => "[1,\"x\",{\"y\":2}]".to_string(),
        6 => "null".to_string(),
        7 => "18446744073709551615".to_string(),
        _ => "true".to_string(),
    }
}

fn hostile_key_value(rng: &mut fastrand::Rng) -> String {
    match rng.u8(..6) {
        0 => "../../x".to_string(),
        1 => "/".to_string(),
        2 => String::new(),
        3 => "a\\u0000b\\n\\u001f".to_string(),
        4 => "y".repeat(2048),
        _ => rng.alphanumeric().to_string(),
    }
}

fn inputs() -> Vec<Input> {
    let mut rng = fastrand::Rng::with_seed(0x0bad_5eed);
    (0..RECORDS)
        .map(|i| {
            let partition = (i % PARTITIONS as usize) as i32;
            let key = match rng.u8(..3) {
                0 => None,
                1 => Some(format!("user-{}", rng.u16(..)).into_bytes()),
                _ => Some(random_bytes(&mut rng, 8)),
            };
            let payload = match rng.u8(..12) {
                0 => {
                    let len = rng.usize(..300);
                    Some(random_bytes(&mut rng, len))
                }
                1 => Some(nested(rng.usize(1..200), "1").into_bytes()),
                2 => {
                    let mut big = b"{\"big\":\"".to_vec();
                    big.resize(rng.usize(MAX_RECORD / 2..MAX_RECORD * 2), b'z');
                    big.extend_from_slice(b"\"}");
                    Some(big)
                }
                3 => {
                    let mut p = b"{\"s\":\"".to_vec();
                    p.extend(random_bytes(&mut rng, 6).iter().map(|b| b | 0x80));
                    p.extend_from_slice(b"\"}");
                    Some(p)
                }
                4 => None,
                5 => {
                    Some(["[1,2]", "\"text\"", "42", "null", "", "{", "{}"][rng.usize(..7)].into())
                }
                _ => Some(
                    format!(
                        "{{\"k\":\"{}\",\"v\":{},\"w\":{},\"i\":{i}}}",
                        hostile_key_value(&mut rng),
                        mixed_value(&mut rng),
                        mixed_value(&mut rng)
                    )
                    .into_bytes(),
                ),
            };
            (partition, key, payload)
        })
        .collect()
}

fn config(brokers: &str, group: &str, out: &Path, policy: &str, strict: bool) -> String {
    format!(
        r#"
[source]
kind = "kafka"
brokers = "{brokers}"
group_id = "{group}"
topics = ["fuzz"]
[source.properties]
"session.timeout.ms" = "6000"

[[destinations]]
name = "local"
url = "file://{out}"
key_template = "{{topic}}/k={{field:k}}"
on_bad_record = "{policy}"
[destinations.rotation]
max_records = 400
[destinations.schema]
strict = {strict}
[destinations.limits]
max_record_size = "{MAX_RECORD}"
max_depth = {MAX_DEPTH}
"#,
        out = out.display()
    )
}

/// `(partition, offset)` of every row written, each at most once.
fn written(out: &Path) -> BTreeSet<(i64, i64)> {
    let mut seen = BTreeSet::new();
    for (path, rows) in read::all_parquet(out) {
        assert!(path.starts_with("fuzz/k="), "{path} escaped its template");
        for row in rows {
            let key = (
                row["_kafka_partition"].as_i64().unwrap(),
                row["_kafka_offset"].as_i64().unwrap(),
            );
            assert!(seen.insert(key), "{key:?} written twice");
        }
    }
    seen
}

async fn run(kafka: &MockKafka, group: &str, out: &Path, policy: &str, strict: bool) -> RunStats {
    let text = config(&kafka.brokers(), group, out, policy, strict);
    support::run_once(&text, Duration::from_secs(180))
        .await
        .unwrap_or_else(|e| panic!("{policy} run failed: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_is_written_dead_lettered_or_skipped_never_lost() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let inputs = inputs();
    let kafka = MockKafka::start(&[("fuzz", PARTITIONS)]);
    let records: Vec<Produce<'_>> = inputs
        .iter()
        .enumerate()
        .map(|(i, (partition, key, payload))| Produce {
            topic: "fuzz",
            partition: *partition,
            key: key.as_deref(),
            payload: payload.as_deref(),
            timestamp_ms: 1_763_600_000_000 + i as i64,
        })
        .collect();
    kafka.produce(&records);
    // Offsets are per partition, in production order.
    let mut by_coords: BTreeMap<(i64, i64), &Input> = BTreeMap::new();
    let mut next = [0i64; PARTITIONS as usize];
    for input in &inputs {
        let p = input.0 as usize;
        by_coords.insert((p as i64, next[p]), input);
        next[p] += 1;
    }
    let dir = tempfile::tempdir().unwrap();

    // dead_letter: every record is a row or a dead letter, never both, never neither.
    let out = dir.path().join("dead_letter");
    let stats = run(&kafka, "g-dead", &out, "dead_letter", false).await;
    assert_eq!(stats.records as usize, RECORDS);
    assert_eq!(
        (stats.rows_written + stats.dead_lettered) as usize,
        RECORDS,
        "{stats:?}"
    );
    let rows = written(&out);
    assert_eq!(rows.len() as u64, stats.rows_written);
    let dead = read::dead_letters(&out.join("_errors"));
    assert_eq!(dead.len() as u64, stats.dead_lettered);
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut reasons = BTreeSet::new();
    for d in &dead {
        let coords = (
            d["partition"].as_i64().unwrap(),
            d["offset"].as_i64().unwrap(),
        );
        assert!(
            !rows.contains(&coords),
            "{coords:?} both written and dead-lettered"
        );
        let (_, key, payload) = by_coords[&coords];
        // The raw bytes survive exactly: as text when UTF-8, as base64 otherwise.
        let kept = match (&d["payload"], &d["payload_base64"]) {
            (serde_json::Value::String(s), _) => Some(s.as_bytes().to_vec()),
            (_, serde_json::Value::String(s)) => Some(b64.decode(s).unwrap()),
            _ => None,
        };
        assert_eq!(&kept, payload, "payload of {coords:?}");
        let kept_key = match (&d["key"], &d["key_base64"]) {
            (serde_json::Value::String(s), _) => Some(s.as_bytes().to_vec()),
            (_, serde_json::Value::String(s)) => Some(b64.decode(s).unwrap()),
            _ => None,
        };
        assert_eq!(&kept_key, key, "key of {coords:?}");
        let reason = d["reason"].as_str().unwrap();
        reasons.insert(reason.split(':').next().unwrap_or(reason).to_string());
    }
    let all: BTreeSet<_> = by_coords.keys().copied().collect();
    let dead_coords: BTreeSet<_> = dead
        .iter()
        .map(|d| {
            (
                d["partition"].as_i64().unwrap(),
                d["offset"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        rows.union(&dead_coords).copied().collect::<BTreeSet<_>>(),
        all
    );
    // Each kind of bad input was seen and explained.
    let joined = format!("{reasons:?}");
    for expected in [
        "not valid JSON",
        "tombstone",
        "record limit",
        "max_depth",
        "JSON objects",
    ] {
        assert!(joined.contains(expected), "no {expected:?} among {joined}");
    }

    // skip: the same records are written; the rest are counted, not kept.
    let out = dir.path().join("skip");
    let skipped = run(&kafka, "g-skip", &out, "skip", false).await;
    assert_eq!((skipped.rows_written + skipped.skipped) as usize, RECORDS);
    assert_eq!(written(&out), rows);
    assert!(read::dead_letters(&out).is_empty());

    // strict: type conflicts join the dead letters; the accounting still balances.
    let out = dir.path().join("strict");
    let strict = run(&kafka, "g-strict", &out, "dead_letter", true).await;
    assert_eq!(
        (strict.rows_written + strict.dead_lettered) as usize,
        RECORDS
    );
    assert!(strict.dead_lettered > stats.dead_lettered, "{strict:?}");
    let dead = read::dead_letters(&out.join("_errors"));
    assert!(
        dead.iter()
            .any(|d| d["reason"].as_str().unwrap().contains("strict = true"))
    );
    assert_eq!(written(&out).len() as u64, strict.rows_written);
}
