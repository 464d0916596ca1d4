//! Child `pail run` workers against the mock cluster and the test S3 server, killed with
//! SIGKILL at random moments, and the exactly-once audit of what they wrote.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

use super::kafka::{MockKafka, Produce};
use super::read;
use super::s3::{ACCESS_KEY, SECRET_KEY, TestS3};

/// Writes the worker config: long-running, small segments and (for the crash tests) a short
/// wall-clock rotation so that kills land mid-segment, mid-upload and mid-commit.
pub fn worker_config(
    dir: &Path,
    brokers: &str,
    endpoint: &str,
    group: &str,
    max_age: &str,
) -> PathBuf {
    let path = dir.join(format!("{group}.toml"));
    let text = format!(
        r#"
[source]
kind = "kafka"
brokers = "{brokers}"
group_id = "{group}"
topics = ["events"]
[source.properties]
"session.timeout.ms" = "6000"
"heartbeat.interval.ms" = "500"

[[destinations]]
name = "lake"
topics = ["events"]
url = "s3://lake/raw"
endpoint = "{endpoint}"
path_style = true
key_template = "{{topic}}/dt={{ts:%Y-%m-%d}}/hour={{ts:%H}}"
timestamp = "kafka"
[destinations.auth]
access_key_id = "{ACCESS_KEY}"
secret_access_key = "{SECRET_KEY}"
[destinations.rotation]
max_records = 1000
max_age = "{max_age}"
# Every file streams: its rows are encoded in row groups of 250 as they arrive.
[destinations.parquet]
row_group_size = 250

[worker]
max_concurrent_uploads = 4
"#
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// Starts `pail run` (long-running) with `config`.
pub fn spawn_worker(config: &Path, log: &Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    Command::new(super::pail_bin())
        .args(["run", "--config", config.to_str().unwrap()])
        .env(
            "PAIL_LOG",
            std::env::var("PAIL_TEST_LOG").unwrap_or_else(|_| "info".into()),
        )
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

/// Sends SIGTERM to `child` (a graceful shutdown; a second one exits at once).
pub fn sigterm(child: &Child) {
    let pid = child.id().expect("the worker is running").to_string();
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(sent.success(), "kill -TERM {pid}");
}

/// SIGTERM, then the exit status, which must come within `limit`.
pub async fn terminate(mut child: Child, limit: Duration) -> std::process::ExitStatus {
    sigterm(&child);
    tokio::time::timeout(limit, child.wait())
        .await
        .expect("no exit after SIGTERM")
        .unwrap()
}

/// Runs `pail run --once` to drain whatever the killed workers left; must exit 0.
pub async fn drain_once(config: &Path, log: &Path) {
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    let status = Command::new(super::pail_bin())
        .args(["run", "--once", "--config", config.to_str().unwrap()])
        .stderr(log_file)
        .kill_on_drop(true)
        .status();
    let status = tokio::time::timeout(Duration::from_secs(180), status)
        .await
        .expect("drain run hung")
        .unwrap();
    if !status.success() {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(40).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        panic!(
            "drain run failed ({status}); the workers' log ends:\n{}",
            tail.join("\n")
        );
    }
}

/// Waits until the store has seen at least `target` PUTs, or `limit` passes; true if it did.
pub async fn wait_for_puts(s3: &TestS3, target: usize, limit: Duration) -> bool {
    let start = Instant::now();
    while s3.puts().len() < target {
        if start.elapsed() >= limit {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

/// Ids of the events produced: valid ones, and malformed ones (dead-lettered by design).
#[derive(Default)]
pub struct Produced {
    pub valid: HashSet<String>,
    pub malformed: HashSet<String>,
}

impl Produced {
    pub fn len(&self) -> usize {
        self.valid.len() + self.malformed.len()
    }
}

/// Produces `per_partition` events to each partition of `events`; every 37th is malformed.
pub fn produce(kafka: &MockKafka, partitions: i32, per_partition: i64) -> Produced {
    let mut produced = Produced::default();
    produce_range(kafka, partitions, 0..per_partition, &mut produced);
    produced
}

/// The events of feeding round `round` of `rounds`: an equal share of `per_partition` per
/// round, the last taking the remainder.
pub fn batch(round: i64, rounds: i64, per_partition: i64) -> std::ops::Range<i64> {
    let size = per_partition / rounds;
    let end = if round == rounds - 1 {
        per_partition
    } else {
        (round + 1) * size
    };
    round * size..end
}

/// Produces events `range` (their index within each partition) to every partition of
/// `events`, adding their ids to `produced`; every 37th is malformed. Feeding a topic in
/// batches keeps workers busy until the last kill.
pub fn produce_range(
    kafka: &MockKafka,
    partitions: i32,
    range: std::ops::Range<i64>,
    produced: &mut Produced,
) {
    let mut payloads = Vec::new();
    let base = 1_763_600_000_000i64;
    for p in 0..partitions {
        for i in range.clone() {
            let id = format!("e{p}-{i}");
            let payload = if i % 37 == 5 {
                produced.malformed.insert(id.clone());
                format!(r#"{{"id":"{id}","v":"#)
            } else {
                produced.valid.insert(id.clone());
                format!(r#"{{"id":"{id}","v":{i},"tag":"t{}"}}"#, i % 11)
            };
            payloads.push((p, base + i * 150, payload));
        }
    }
    let records: Vec<Produce<'_>> = payloads
        .iter()
        .map(|(p, ts, payload)| Produce {
            topic: "events",
            partition: *p,
            key: None,
            payload: Some(payload.as_bytes()),
            timestamp_ms: *ts,
        })
        .collect();
    kafka.produce(&records);
}

/// The exactly-once audit: every valid event in exactly one object row, every malformed
/// record in exactly one dead letter, no PUT that replaced an object, every PUT conditional.
pub fn audit(s3: &TestS3, produced: &Produced) {
    let root = s3.bucket_dir("lake").join("raw");
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (_, rows) in read::all_parquet(&root.join("events")) {
        for row in rows {
            *seen
                .entry(row["id"].as_str().unwrap().to_string())
                .or_default() += 1;
        }
    }
    let missing = produced
        .valid
        .iter()
        .filter(|id| !seen.contains_key(*id))
        .count();
    let duplicated: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).take(5).collect();
    assert_eq!(missing, 0, "{missing} valid events missing");
    assert!(
        duplicated.is_empty(),
        "duplicated events, e.g. {duplicated:?}"
    );
    assert_eq!(seen.len(), produced.valid.len());

    let mut dead: HashMap<String, usize> = HashMap::new();
    for d in read::dead_letters(&root.join("_errors")) {
        let payload = d["payload"].as_str().unwrap();
        let id = payload.split('"').nth(3).unwrap().to_string();
        *dead.entry(id).or_default() += 1;
    }
    assert_eq!(dead.len(), produced.malformed.len(), "dead letters missing");
    assert!(dead.values().all(|n| *n == 1), "dead letters duplicated");

    let puts = s3.puts();
    assert!(puts.iter().all(|p| p.if_none_match), "an unconditional PUT");
    let overwrites: Vec<_> = puts.iter().filter(|p| p.overwrote).collect();
    assert!(overwrites.is_empty(), "objects overwritten: {overwrites:?}");
}

/// How many lines of the workers' log contain `needle`.
pub fn log_count(log: &Path, needle: &str) -> usize {
    std::fs::read_to_string(log).map_or(0, |t| t.lines().filter(|l| l.contains(needle)).count())
}

/// Waits until the workers' log has at least `count` lines containing `needle`, or `limit`.
pub async fn wait_for_log(log: &Path, needle: &str, count: usize, limit: Duration) -> bool {
    let start = Instant::now();
    while log_count(log, needle) < count {
        if start.elapsed() >= limit {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    true
}
