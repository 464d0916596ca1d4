//! Declared schemas end to end: columns inline or from a Parquet message type file, records
//! that do not fit dead-lettered with a reason naming the field (or stopping the run under
//! `fail`), and the rows that fit written with exactly the declared types.

use crate::support;

use std::path::Path;
use std::time::Duration;

use arrow::datatypes::{DataType, TimeUnit};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use support::read;

const LINES: &[(&str, Option<&str>)] = &[
    (
        r#"{"id":1,"at":"2026-03-01T10:00:00+01:00","price":"12.50","day":"2026-03-01","user":{"name":"a"}}"#,
        None,
    ),
    (r#"{"id":2,"at":1772355600000,"price":3}"#, None),
    (
        r#"{"at":"2026-03-01T10:00:00Z"}"#,
        Some("field \"id\" is missing but declared not nullable"),
    ),
    (
        r#"{"id":"three","at":0}"#,
        Some("field \"id\": expected a number"),
    ),
    (
        r#"{"id":4,"at":0,"price":1.234}"#,
        Some("more than 2 digits after the point"),
    ),
    (
        r#"{"id":5,"at":0,"colour":"red"}"#,
        Some("field \"colour\" is not declared"),
    ),
    (
        r#"{"id":6,"at":0,"user":{"name":7,"age":1}}"#,
        Some("field \"user.age\" is not declared"),
    ),
    (
        r#"{"id":7,"at":0,"day":"tomorrow"}"#,
        Some("field \"day\": expected a YYYY-MM-DD date"),
    ),
];

const COLUMNS: &str = r#"columns = [
  { name = "id", type = "int64", nullable = false },
  { name = "at", type = "timestamp" },
  { name = "price", type = "decimal(10,2)" },
  { name = "day", type = "date" },
  { name = "user", type = "struct<name: string>" },
]"#;

const MESSAGE_TYPE: &str = "message event {
  required int64 id;
  optional int64 at (TIMESTAMP(MILLIS,true));
  optional fixed_len_byte_array(5) price (DECIMAL(10,2));
  optional int32 day (DATE);
  optional group user { optional binary name (STRING); }
}";

fn write_input(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("in.ndjson");
    let text: String = LINES.iter().map(|(l, _)| format!("{l}\n")).collect();
    std::fs::write(&path, text).unwrap();
    path
}

fn config(input: &Path, out: &Path, schema: &str, policy: &str) -> String {
    format!(
        "[source]\nkind = \"file\"\npath = \"{}\"\n[[destinations]]\nname = \"l\"\n\
         url = \"file://{}\"\nkey_template = \"{{topic}}\"\ntimestamp = \"kafka\"\n\
         on_bad_record = \"{policy}\"\n[destinations.schema]\nmode = \"declared\"\n{schema}\n",
        input.display(),
        out.display()
    )
    // File records carry no Kafka timestamp; the ingest time is not what this test is about.
    .replace("timestamp = \"kafka\"", "timestamp = \"field:at\"")
}

async fn check_declared_run(schema: &str) {
    let dir = tempfile::tempdir().unwrap();
    let input = write_input(dir.path());
    let out = dir.path().join("out");
    let stats = support::run_once(
        &config(&input, &out, schema, "dead_letter"),
        Duration::from_secs(60),
    )
    .await
    .unwrap();
    let bad: Vec<(usize, &str)> = LINES
        .iter()
        .enumerate()
        .filter_map(|(i, (_, why))| why.map(|w| (i + 1, w)))
        .collect();
    assert_eq!(
        (stats.rows_written + stats.dead_lettered) as usize,
        LINES.len()
    );
    assert_eq!(stats.rows_written, 2, "{stats:?}");
    let dead = read::dead_letters(&out.join("_errors"));
    for (line, why) in &bad {
        let d = dead
            .iter()
            .find(|d| d["offset"] == *line as i64)
            .unwrap_or_else(|| panic!("line {line} not dead-lettered"));
        let reason = d["reason"].as_str().unwrap();
        assert!(reason.contains(why), "line {line}: {reason}");
    }

    let files: Vec<_> = read::files(&out)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .collect();
    assert_eq!(files.len(), 1);
    let reader =
        ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&files[0]).unwrap()).unwrap();
    let schema = reader.schema().clone();
    let ty = |name: &str| schema.field_with_name(name).unwrap().data_type().clone();
    assert_eq!(ty("id"), DataType::Int64);
    assert!(!schema.field_with_name("id").unwrap().is_nullable());
    assert_eq!(
        ty("at"),
        DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
    );
    assert_eq!(ty("price"), DataType::Decimal128(10, 2));
    assert_eq!(ty("day"), DataType::Date32);
    assert!(matches!(ty("user"), DataType::Struct(f) if f.len() == 1));
    let rows = read::parquet_rows(&files[0]);
    // (The JSON writer shows decimals as numbers; the column type is checked above.)
    assert_eq!(rows[0]["price"].as_f64(), Some(12.5));
    assert_eq!(rows[1]["price"].as_f64(), Some(3.0));
    assert_eq!(rows[0]["at"], "2026-03-01T09:00:00Z");
    assert_eq!(rows[1]["at"], "2026-03-01T09:00:00Z");
    assert_eq!(rows[0]["day"], "2026-03-01");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declared_columns_type_rows_and_dead_letter_misfits() {
    check_declared_run(COLUMNS).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parquet_message_type_schema_file_declares_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("event.parquet-schema");
    std::fs::write(&file, MESSAGE_TYPE).unwrap();
    check_declared_run(&format!("schema_file = \"{}\"", file.display())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_names_the_line_and_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let input = write_input(dir.path());
    let out = dir.path().join("out");
    let err = support::run_once(
        &config(&input, &out, COLUMNS, "fail"),
        Duration::from_secs(60),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(err.contains("in.ndjson line 3"), "{err}");
}
