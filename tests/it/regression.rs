//! Regression tests, each named after the bug it pins. They run the `pail` binary as users get
//! it: `PAIL_BIN`, which CI and `scripts/test.sh` set to `cargo build --release --locked --bin
//! pail` (see `support::pail_bin`).

use crate::support;

use std::path::Path;
use std::time::Duration;

use arrow::datatypes::{DataType, TimeUnit};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

/// Runs `pail run --config CONFIG` in `dir`; returns stderr, and fails the test on a non-zero exit.
async fn run_binary(dir: &Path, config: &str) -> String {
    let path = dir.join("pail.toml");
    std::fs::write(&path, config).unwrap();
    let args = ["run", "--config", path.to_str().unwrap()];
    let out = support::run_pail(&args, dir, &[], Duration::from_secs(120)).await;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "pail run failed: {stderr}");
    stderr
}

/// Arrow's `chrono-tz` feature was enabled only by `[dev-dependencies]`. Cargo unified it into
/// the binary `cargo test` built, so every test passed, while the binary users build
/// (`cargo run`, `cargo build --release`, the container) failed to encode the first file holding
/// an RFC 3339 value: `Invalid timezone "UTC": only offset based timezones supported without
/// chrono-tz feature`. The shipped binary must write a UTC timestamp column.
#[tokio::test]
async fn shipped_binary_writes_a_timestamp_column() {
    let dir = tempfile::tempdir().unwrap();
    // The instants 2026-05-01T10:00:00Z + i minutes, written in three offsets ("Z", +02:00,
    // -05:30).
    let offsets = [0, 2 * 3600, -(5 * 3600 + 1800)];
    let start = chrono::DateTime::parse_from_rfc3339("2026-05-01T10:00:00Z").unwrap();
    let mut lines = String::new();
    let mut want_us = Vec::new();
    for i in 0..30i64 {
        let instant = start + chrono::Duration::minutes(i);
        let zone = chrono::FixedOffset::east_opt(offsets[i as usize % offsets.len()]).unwrap();
        let text = instant
            .with_timezone(&zone)
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        lines.push_str(&format!("{{\"id\":{i},\"ts\":\"{text}\"}}\n"));
        want_us.push(instant.timestamp_micros());
    }
    std::fs::write(dir.path().join("in.ndjson"), lines).unwrap();
    let config = r#"
[source]
kind = "file"
path = "in.ndjson"

[[destinations]]
name = "local"
url = "file://./out"
key_template = "events/dt={ts:%Y-%m-%d}"
timestamp = "field:ts"
on_bad_record = "fail"
"#;
    run_binary(dir.path(), config).await;

    let files: Vec<_> = support::read::files(&dir.path().join("out"))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .collect();
    assert_eq!(files.len(), 1, "one object expected: {files:?}");
    let reader =
        ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&files[0]).unwrap()).unwrap();
    let field = reader.schema().field_with_name("ts").unwrap().clone();
    assert_eq!(
        field.data_type(),
        &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        "ts column type"
    );
    let mut got_us = Vec::new();
    for batch in reader.build().unwrap() {
        let batch = batch.unwrap();
        let column = batch.column_by_name("ts").unwrap();
        let ts = column
            .as_any()
            .downcast_ref::<arrow::array::TimestampMicrosecondArray>()
            .unwrap();
        got_us.extend(ts.iter().map(Option::unwrap));
    }
    got_us.sort_unstable();
    assert_eq!(
        got_us, want_us,
        "the instants, whatever offset they were written in"
    );
}
