//! Schema drift: 100k events where a new field appears every 10k (and an integer field turns
//! float halfway) are written as files of the target size, not one file per change; each
//! file carries every field its topic has shown so far, null where its rows lack it.

use crate::support;

use std::fs::File;
use std::io::Write;
use std::time::Duration;

use arrow::array::Array;
use arrow::datatypes::DataType;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

const EVENTS: usize = 100_000;
const EVERY: usize = 10_000;
const TARGET_ROWS: usize = 25_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_fields_do_not_cut_files_short() {
    drift(None).await;
}

/// The same with files streaming out as they fill: row groups of ~64 KiB of records are
/// encoded while the file is open, so fields appear after row groups without them are
/// written; those get all-null chunks, and the file count and every value stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_fields_do_not_cut_streamed_files_short() {
    drift(Some("64KiB")).await;
}

async fn drift(row_group_bytes: Option<&str>) {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("drift.ndjson");
    let mut w = std::io::BufWriter::new(File::create(&input).unwrap());
    for i in 0..EVENTS {
        let block = i / EVERY;
        // Only the newest field is present: older ones must be filled with nulls.
        let n = if i < EVENTS / 2 {
            format!("{i}")
        } else {
            format!("{i}.5")
        };
        writeln!(
            w,
            r#"{{"id":{i},"n":{n},"f{block}":"v{i}","ts":"2026-03-01T10:00:00Z"}}"#
        )
        .unwrap();
    }
    w.flush().unwrap();
    drop(w);
    let out = dir.path().join("out");
    let text = format!(
        "[source]\nkind = \"file\"\npath = \"{}\"\n[[destinations]]\nname = \"l\"\n\
         url = \"file://{}\"\nkey_template = \"{{topic}}\"\ntimestamp = \"field:ts\"\n\
         [destinations.rotation]\nmax_records = {TARGET_ROWS}\nmax_bytes = \"1GiB\"\nmax_age = \"1h\"\n{}",
        input.display(),
        out.display(),
        row_group_bytes
            .map(|b| format!("[destinations.parquet]\nrow_group_bytes = \"{b}\"\n"))
            .unwrap_or_default()
    );
    let stats = support::run_once(&text, Duration::from_secs(300))
        .await
        .unwrap();
    assert_eq!(stats.rows_written as usize, EVENTS);

    let files = support::read::files(&out);
    assert_eq!(
        files.len(),
        EVENTS / TARGET_ROWS,
        "one file per {TARGET_ROWS} rows, whatever the schema changes: {files:?}"
    );
    for (k, path) in files.iter().enumerate() {
        let builder = ParquetRecordBatchReaderBuilder::try_new(File::open(path).unwrap()).unwrap();
        let row_groups = builder.metadata().num_row_groups();
        assert_eq!(
            row_groups > 1,
            row_group_bytes.is_some(),
            "{}: {row_groups} row groups",
            path.display()
        );
        let reader = builder.build().unwrap();
        let batches: Vec<_> = reader.map(Result::unwrap).collect();
        let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
        assert_eq!(rows, TARGET_ROWS, "{}", path.display());
        let schema = batches[0].schema();
        // Every field introduced up to this file's last row is a column.
        let last_block = ((k + 1) * TARGET_ROWS - 1) / EVERY;
        for block in 0..=last_block {
            let name = format!("f{block}");
            assert!(
                schema.field_with_name(&name).is_ok(),
                "file {k} lacks {name}"
            );
            let nulls: usize = batches
                .iter()
                .map(|b| b.column_by_name(&name).unwrap().null_count())
                .sum();
            let first = k * TARGET_ROWS;
            let present = (first..first + TARGET_ROWS)
                .filter(|i| i / EVERY == block)
                .count();
            assert_eq!(nulls, TARGET_ROWS - present, "file {k}, {name}");
        }
        assert!(
            schema
                .field_with_name(&format!("f{}", last_block + 1))
                .is_err()
        );
        // The integer field widens once floats appear, and stays widened.
        let n = schema.field_with_name("n").unwrap().data_type().clone();
        let want = if (k + 1) * TARGET_ROWS <= EVENTS / 2 {
            DataType::Int64
        } else {
            DataType::Float64
        };
        assert_eq!(n, want, "file {k}");
    }
}
