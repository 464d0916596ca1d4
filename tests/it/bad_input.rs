//! Hostile and malformed input: never a panic, never a lost valid record, and every bad record
//! named by file and line (or topic, partition and offset) under each `on_bad_record` policy.

use crate::support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use pail::pipeline::RunStats;
use pail::run::RunError;
use support::read;

/// Valid lines and the bad lines between them, with why each is bad.
fn input(dir: &Path) -> (PathBuf, usize, usize) {
    let mut bytes = Vec::new();
    let mut valid = 0;
    let mut bad = 0;
    for i in 0..200 {
        bytes.extend_from_slice(
            format!("{{\"ts\":\"2026-03-01T10:{:02}:00Z\",\"i\":{i}}}\n", i % 60).as_bytes(),
        );
        valid += 1;
        let hostile: Option<Vec<u8>> = match i {
            10 => Some(b"{\"ts\": \"2026-03-01T10:00:00Z\", \"i\": ".to_vec()), // truncated
            20 => Some(b"[1, 2, 3]".to_vec()),                                  // not an object
            30 => Some(b"42".to_vec()),
            40 => Some(b"{\"ts\":\"2026-03-01T10:00:00Z\",\"s\":\"\xff\xfe\"}".to_vec()), // invalid UTF-8
            50 => Some(b"{\"i\": 1}".to_vec()), // no timestamp
            60 => Some(b"{\"ts\": \"not a time\"}".to_vec()),
            70 => Some(b"{\"ts\": true}".to_vec()),
            80 => {
                // 11 MiB: over the 10 MiB record limit.
                let mut big = b"{\"ts\":\"2026-03-01T10:00:00Z\",\"x\":\"".to_vec();
                big.resize(11 << 20, b'a');
                big.extend_from_slice(b"\"}");
                Some(big)
            }
            90 => Some(format!("{}1{}", "[".repeat(5000), "]".repeat(5000)).into_bytes()), // deep nesting
            _ => None,
        };
        if let Some(h) = hostile {
            bytes.extend_from_slice(&h);
            bytes.push(b'\n');
            bad += 1;
        }
    }
    let path = dir.join("input.ndjson");
    std::fs::write(&path, bytes).unwrap();
    (path, valid, bad)
}

async fn run_with(policy: &str, input: &Path, out: &Path) -> Result<RunStats, RunError> {
    let text = format!(
        "[source]\nkind = \"file\"\npath = \"{}\"\n[[destinations]]\nname = \"l\"\nurl = \"file://{}\"\n\
         timestamp = \"field:ts\"\non_bad_record = \"{policy}\"\n",
        input.display(),
        out.display()
    );
    support::run_once(&text, Duration::from_secs(60)).await
}

fn valid_rows(out: &Path) -> usize {
    read::all_parquet(out)
        .iter()
        .map(|(_, rows)| rows.len())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letter_keeps_every_bad_record_with_reason_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let (path, valid, bad) = input(dir.path());
    let out = dir.path().join("out");
    let stats = run_with("dead_letter", &path, &out).await.unwrap();
    assert_eq!(stats.rows_written as usize, valid);
    assert_eq!(stats.dead_lettered as usize, bad);
    assert_eq!(valid_rows(&out), valid);
    let dead = read::dead_letters(&out.join("_errors"));
    assert_eq!(dead.len(), bad);
    let reasons: Vec<&str> = dead.iter().map(|d| d["reason"].as_str().unwrap()).collect();
    for expected in [
        "not valid JSON",
        "must be JSON objects",
        "is missing",
        "not RFC 3339",
        "over the",
        "recursion limit",
    ] {
        assert!(
            reasons.iter().any(|r| r.contains(expected)),
            "no reason with {expected:?} in {reasons:?}"
        );
    }
    // Invalid UTF-8 is kept byte for byte, as base64.
    assert!(dead.iter().any(|d| d.get("payload_base64").is_some()));
    // Every dead letter names its line.
    assert!(
        dead.iter()
            .all(|d| d["offset"].as_i64().is_some_and(|o| o > 0))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skip_counts_and_drops_only_the_bad_records() {
    let dir = tempfile::tempdir().unwrap();
    let (path, valid, bad) = input(dir.path());
    let out = dir.path().join("out");
    let stats = run_with("skip", &path, &out).await.unwrap();
    assert_eq!(stats.skipped as usize, bad);
    assert_eq!(valid_rows(&out), valid);
    assert!(read::dead_letters(&out).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_stops_naming_the_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _, _) = input(dir.path());
    let out = dir.path().join("out");
    let err = run_with("fail", &path, &out).await.unwrap_err().to_string();
    // Line 12: 11 valid lines precede the first bad one (after valid line i = 10).
    assert!(err.contains("input.ndjson line 12"), "{err}");
    assert!(err.contains("not valid JSON"), "{err}");
}

#[tokio::test]
async fn hostile_field_values_stay_inside_the_destination() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.ndjson");
    let values = ["../../escape", "/", "..", "", "a\u{1}b", &"x".repeat(2048)];
    let lines: String = values
        .iter()
        .map(|v| {
            format!(
                "{}\n",
                serde_json::json!({"ts": "2026-03-01T10:00:00Z", "k": v})
            )
        })
        .collect();
    std::fs::write(&input, lines).unwrap();
    let out = dir.path().join("out");
    let text = format!(
        "[source]\nkind = \"file\"\npath = \"{}\"\n[[destinations]]\nname = \"l\"\nurl = \"file://{}\"\n\
         timestamp = \"field:ts\"\nkey_template = \"k={{field:k}}\"\n",
        input.display(),
        out.display()
    );
    let stats = support::run_once(&text, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(stats.rows_written as usize, values.len());
    // Nothing was written outside `out`, and every key segment is short.
    let everything = read::files(dir.path());
    assert!(
        everything
            .iter()
            .all(|p| p.starts_with(&out) || *p == input),
        "{everything:?}"
    );
    for p in &everything {
        if let Ok(rel) = p.strip_prefix(&out) {
            assert!(rel.to_string_lossy().len() < 1024);
            assert!(rel.components().count() == 2, "{rel:?}");
        }
    }
}
