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
/// written; those get all-null chunks, and the file count and every value stay. pyarrow and
/// DuckDB read the files written this way as pail's own reader does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_fields_do_not_cut_streamed_files_short() {
    let (_dir, files) = drift(Some("64KiB")).await;
    let script = r#"
import json, sys
try:
    import duckdb, pyarrow.parquet as pq
except ImportError as e:
    print(e, file=sys.stderr)
    sys.exit(3)
files = sys.argv[1:]
out = {"pyarrow": []}
for f in files:
    t = pq.read_table(f)
    out["pyarrow"].append({
        "rows": t.num_rows,
        "row_groups": pq.ParquetFile(f).num_row_groups,
        "nulls": {c: t.column(c).null_count for c in t.column_names},
        "n": str(t.schema.field("n").type),
    })
rows, ids, f9 = duckdb.connect().execute(
    "select count(*), count(distinct id), count(f9) "
    "from read_parquet(?, union_by_name = true)", [files]).fetchone()
out["duckdb"] = {"rows": rows, "ids": ids, "f9": f9}
print(json.dumps(out))
"#;
    let mut cmd = tokio::process::Command::new(support::test_tool("python3"));
    cmd.arg("-c").arg(script).args(&files).kill_on_drop(true);
    let output = support::bounded(Duration::from_secs(120), cmd.output())
        .await
        .expect("python3 runs (bash scripts/setup.sh --tests installs it with pyarrow and duckdb)");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the readers failed: {stderr}");
    let facts: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    for (k, file) in facts["pyarrow"].as_array().unwrap().iter().enumerate() {
        assert_eq!(file["rows"], TARGET_ROWS, "pyarrow, file {k}");
        assert!(
            file["row_groups"].as_u64().unwrap() > 1,
            "file {k} streamed"
        );
        let first = k * TARGET_ROWS;
        for block in 0..=((k + 1) * TARGET_ROWS - 1) / EVERY {
            let present = (first..first + TARGET_ROWS)
                .filter(|i| i / EVERY == block)
                .count();
            assert_eq!(
                file["nulls"][format!("f{block}")],
                TARGET_ROWS - present,
                "pyarrow, file {k}, f{block}"
            );
        }
        let n = if (k + 1) * TARGET_ROWS <= EVENTS / 2 {
            "int64"
        } else {
            "double"
        };
        assert_eq!(file["n"], n, "pyarrow, file {k}");
    }
    let db = &facts["duckdb"];
    assert_eq!(db["rows"], EVENTS, "DuckDB rows");
    assert_eq!(db["ids"], EVENTS, "DuckDB distinct ids");
    assert_eq!(db["f9"], EVERY, "DuckDB f9 values");
}

/// Runs the drift through pail, checks every file, and returns the output's directory and
/// its files.
async fn drift(row_group_bytes: Option<&str>) -> (tempfile::TempDir, Vec<std::path::PathBuf>) {
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
    (dir, files)
}
