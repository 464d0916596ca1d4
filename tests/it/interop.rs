//! Interoperability: what pail writes is read correctly by engines that share no code with it.
//!
//! pail runs on a generated NDJSON file into a local directory, with a key template that makes
//! hive partitions (`file/dt=YYYY-MM-DD/country=XX/`) and a rotation that splits the input
//! into several segments. Then `tests/interop/read_output.py` reads the output with pyarrow
//! (a hive-partitioned dataset, plus every file's Parquet footer) and, independently, with
//! DuckDB (`read_parquet(..., hive_partitioning, union_by_name)`), and prints what each saw.
//! The test compares that with what it wrote, computed from the generated input itself:
//!
//! - every row arrives once (row counts, sums, per-partition counts, distinct Kafka offsets);
//! - inferred types survive: integers as int64, floats and int/float mixes as double, booleans,
//!   RFC 3339 strings with any offset as UTC microsecond timestamps holding the right instant,
//!   `YYYY-MM-DD` strings as dates, objects as structs and arrays as lists, nested values
//!   reachable by both engines (`user.name`, `items[1].sku`), nulls kept as nulls;
//! - the metadata columns (`_kafka_topic`, `_kafka_partition`, `_kafka_offset`,
//!   `_kafka_timestamp`) have their documented types and values;
//! - the hive partition columns are what engines infer from the directory names and agree with
//!   the data; a missing partition value (`__HIVE_DEFAULT_PARTITION__`) reads back as null in
//!   pyarrow (DuckDB up to 1.4 reads it as that string; the test accepts both from DuckDB);
//! - the Parquet footer is standard: INT64 `TIMESTAMP(isAdjustedToUTC, MICROS)` (no INT96 or
//!   nanosecond column anywhere), `DATE`, zstd, min/max statistics, the page index when the
//!   reader can tell, and pail's provenance key-value metadata agreeing with the file name and
//!   contents.
//!
//! Needs python3 with pyarrow and duckdb (`bash scripts/setup.sh --tests` installs them); without them
//! the test fails rather than skips.

use crate::support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, FixedOffset, TimeZone};
use serde_json::{Value, json};

/// Input lines, one event each.
const LINES: usize = 3000;
/// `rotation.max_records`: several segments, so several files per partition directory.
const MAX_RECORDS: usize = 700;
/// By `i % 5`: uneven counts per country, and every (day, country) pair occurs.
const COUNTRIES: [&str; 5] = ["DE", "FR", "US", "DE", "FR"];
/// The row both readers report in detail.
const PROBE_ID: usize = 5;
/// How the reader script names a null group.
const NULL_KEY: &str = "null";
/// The directory name of a missing partition value (Hive's null marker).
const HIVE_NULL: &str = "__HIVE_DEFAULT_PARTITION__";
const SETUP_HINT: &str =
    "run `bash scripts/setup.sh --tests` to install python3, pyarrow and duckdb";

/// One generated event, with the values the readers should report for it.
struct Event {
    json: Value,
    id: i64,
    day: String,
    country: Option<&'static str>,
    amount: Option<f64>,
    score: f64,
    flag: bool,
    at_us: i64,
    user: Option<(String, usize)>,
    items: Vec<(String, i64)>,
}

fn event(i: usize) -> Event {
    let id = i as i64;
    let day = format!("2026-03-0{}", 1 + i % 3);
    // Every 50th event has no country: its partition is __HIVE_DEFAULT_PARTITION__.
    let country = (i % 50 != 49).then_some(COUNTRIES[i % 5]);
    // Every 10th has no amount, another every 10th a null user.
    let amount = (i % 10 != 3).then_some(i as f64 + 0.5);
    // Integers and floats in one field: widened to double.
    let (score, score_json) = if i.is_multiple_of(4) {
        (i as f64, json!(id))
    } else {
        (i as f64 + 0.25, json!(i as f64 + 0.25))
    };
    let flag = i.is_multiple_of(2);
    // Three offsets (east, west with minutes, UTC) and microseconds: read back as UTC instants.
    let offset = match i % 3 {
        0 => FixedOffset::east_opt(3600),
        1 => FixedOffset::west_opt(5 * 3600 + 1800),
        _ => FixedOffset::east_opt(0),
    }
    .unwrap();
    let base = offset.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap();
    let when: DateTime<FixedOffset> = base
        + chrono::Duration::seconds(37 * id)
        + chrono::Duration::microseconds((id * 7919) % 1_000_000);
    let at_text = when.format("%Y-%m-%dT%H:%M:%S%.6f%:z").to_string();
    let tags: Vec<&str> = ["a", "b"][..i % 3].to_vec();
    let user = (i % 10 != 7).then(|| (format!("u{i}"), tags.len()));
    let mut items = vec![(format!("s{i}"), id % 7)];
    if i % 2 == 1 {
        items.push((format!("s{i}b"), 0));
    }

    let mut obj = serde_json::Map::new();
    obj.insert("ts".into(), json!(format!("{day}T10:00:00Z")));
    if let Some(c) = country {
        obj.insert("country".into(), json!(c));
    }
    obj.insert("id".into(), json!(id));
    if let Some(a) = amount {
        obj.insert("amount".into(), json!(a));
    }
    obj.insert("score".into(), score_json);
    obj.insert("flag".into(), json!(flag));
    obj.insert("at".into(), json!(at_text));
    obj.insert("day".into(), json!(day));
    obj.insert(
        "user".into(),
        match &user {
            Some((name, _)) => json!({ "name": name, "tags": tags }),
            None => Value::Null,
        },
    );
    obj.insert(
        "items".into(),
        Value::Array(
            items
                .iter()
                .map(|(sku, qty)| json!({ "sku": sku, "qty": qty }))
                .collect(),
        ),
    );
    Event {
        json: Value::Object(obj),
        id,
        day,
        country,
        amount,
        score,
        flag,
        at_us: when.timestamp_micros(),
        user,
        items,
    }
}

/// Runs `tests/interop/read_output.py` on `out` and parses what it prints.
async fn read_with_python(out: &Path) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/read_output.py");
    let mut cmd = tokio::process::Command::new(support::test_tool("python3"));
    cmd.arg(&script)
        .arg(out)
        .arg("file")
        .arg(PROBE_ID.to_string())
        .kill_on_drop(true);
    let output = match support::bounded(Duration::from_secs(120), cmd.output()).await {
        Ok(o) => o,
        Err(e) => panic!("cannot run python3 ({e}); {SETUP_HINT}"),
    };
    let stderr = String::from_utf8_lossy(&output.stderr);
    // The script exits 3 when it cannot import pyarrow or duckdb.
    assert_ne!(
        output.status.code(),
        Some(3),
        "pyarrow or duckdb is missing; {SETUP_HINT}:\n{stderr}"
    );
    assert!(
        output.status.success(),
        "{} failed ({}):\n{stderr}",
        script.display(),
        output.status
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "{} printed no JSON ({e}):\n{}\n{stderr}",
            script.display(),
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

/// `facts[a][b]...`, failing with the path when it is missing.
fn fact<'a>(facts: &'a Value, path: &[&str]) -> &'a Value {
    let mut v = facts;
    for (n, k) in path.iter().enumerate() {
        v = v
            .get(k)
            .unwrap_or_else(|| panic!("reader output has no {:?}: {facts}", &path[..=n]));
    }
    v
}

fn int(facts: &Value, path: &[&str]) -> i64 {
    fact(facts, path)
        .as_i64()
        .unwrap_or_else(|| panic!("{path:?} is not an integer: {}", fact(facts, path)))
}

fn float(facts: &Value, path: &[&str]) -> f64 {
    fact(facts, path)
        .as_f64()
        .unwrap_or_else(|| panic!("{path:?} is not a number: {}", fact(facts, path)))
}

fn string<'a>(facts: &'a Value, path: &[&str]) -> &'a str {
    fact(facts, path)
        .as_str()
        .unwrap_or_else(|| panic!("{path:?} is not a string: {}", fact(facts, path)))
}

/// A JSON object of counts as a map.
fn counts(facts: &Value, path: &[&str]) -> BTreeMap<String, i64> {
    fact(facts, path)
        .as_object()
        .unwrap_or_else(|| panic!("{path:?} is not an object"))
        .iter()
        .map(|(k, v)| (k.clone(), v.as_i64().unwrap()))
        .collect()
}

/// A JSON object of strings as a map.
fn strings(facts: &Value, path: &[&str]) -> BTreeMap<String, String> {
    fact(facts, path)
        .as_object()
        .unwrap_or_else(|| panic!("{path:?} is not an object"))
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
        .collect()
}

/// What the readers should report, computed from the generated events.
struct Expected {
    sum_id: i64,
    sum_amount: f64,
    sum_score: f64,
    sum_at_us: i64,
    sum_qty: i64,
    items_total: i64,
    tags_total: i64,
    flag_true: i64,
    amount_nulls: i64,
    user_nulls: i64,
    country_nulls: i64,
    by_country: BTreeMap<String, i64>,
    by_dt: BTreeMap<String, i64>,
    /// `dt=…/country=…` directories (the missing country as `__HIVE_DEFAULT_PARTITION__`).
    dirs: BTreeSet<String>,
}

fn expected(events: &[Event]) -> Expected {
    let mut e = Expected {
        sum_id: 0,
        sum_amount: 0.0,
        sum_score: 0.0,
        sum_at_us: 0,
        sum_qty: 0,
        items_total: 0,
        tags_total: 0,
        flag_true: 0,
        amount_nulls: 0,
        user_nulls: 0,
        country_nulls: 0,
        by_country: BTreeMap::new(),
        by_dt: BTreeMap::new(),
        dirs: BTreeSet::new(),
    };
    for ev in events {
        e.sum_id += ev.id;
        match ev.amount {
            Some(a) => e.sum_amount += a,
            None => e.amount_nulls += 1,
        }
        e.sum_score += ev.score;
        e.sum_at_us += ev.at_us;
        e.sum_qty += ev.items.iter().map(|(_, q)| q).sum::<i64>();
        e.items_total += ev.items.len() as i64;
        match &ev.user {
            Some((_, tags)) => e.tags_total += *tags as i64,
            None => e.user_nulls += 1,
        }
        e.flag_true += i64::from(ev.flag);
        if ev.country.is_none() {
            e.country_nulls += 1;
        }
        *e.by_country
            .entry(ev.country.unwrap_or(NULL_KEY).to_string())
            .or_default() += 1;
        *e.by_dt.entry(ev.day.clone()).or_default() += 1;
        e.dirs.insert(format!(
            "dt={}/country={}",
            ev.day,
            ev.country.unwrap_or(HIVE_NULL)
        ));
    }
    e
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pyarrow_and_duckdb_read_what_pail_wrote() {
    let dir = tempfile::tempdir().unwrap();
    let events: Vec<Event> = (0..LINES).map(event).collect();
    let input = dir.path().join("input.ndjson");
    let text: String = events.iter().map(|e| format!("{}\n", e.json)).collect();
    std::fs::write(&input, text).unwrap();
    let out = dir.path().join("out");
    let config = format!(
        "[source]\nkind = \"file\"\npath = \"{}\"\n\
         [[destinations]]\nname = \"l\"\nurl = \"file://{}\"\ntimestamp = \"field:ts\"\n\
         key_template = \"{{topic}}/dt={{ts:%Y-%m-%d}}/country={{field:country}}\"\n\
         [destinations.rotation]\nmax_records = {MAX_RECORDS}\n",
        input.display(),
        out.display()
    );
    // The binary users run (PAIL_BIN in CI), so the readers judge the shipped artifact's files.
    let config_path = dir.path().join("pail.toml");
    std::fs::write(&config_path, config).unwrap();
    let args = ["run", "--config", config_path.to_str().unwrap()];
    let run = support::run_pail(&args, dir.path(), &[], Duration::from_secs(120)).await;
    assert!(
        run.status.success(),
        "pail run failed: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(
        !out.join("_errors").exists(),
        "no dead-letter output expected"
    );

    let want = expected(&events);
    let facts = read_with_python(&out).await;
    let pa = fact(&facts, &["pyarrow"]);
    let db = fact(&facts, &["duckdb"]);
    let n = LINES as i64;

    // The files: one per segment per partition directory it touched, all named by pail.
    let files: Vec<&str> = fact(&facts, &["files"])
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    let segments = LINES.div_ceil(MAX_RECORDS);
    let file_dirs: BTreeSet<String> = files
        .iter()
        .map(|f| f.rsplit_once('/').unwrap().0.to_string())
        .collect();
    assert_eq!(file_dirs, want.dirs, "partition directories");
    assert!(
        files.len() >= want.dirs.len() && files.len() <= segments * want.dirs.len(),
        "{} files for {} directories and {segments} segments: {files:?}",
        files.len(),
        want.dirs.len()
    );

    // pyarrow: the dataset as a whole.
    assert_eq!(int(pa, &["rows"]), n, "pyarrow row count");
    let expected_types: BTreeMap<String, String> = [
        ("ts", "timestamp[us, tz=UTC]"),
        ("country", "string"),
        ("id", "int64"),
        ("amount", "double"),
        ("score", "double"),
        ("flag", "bool"),
        ("at", "timestamp[us, tz=UTC]"),
        ("day", "date32[day]"),
        ("user", "struct<name: string, tags: list<element: string>>"),
        ("items", "list<element: struct<sku: string, qty: int64>>"),
        ("_kafka_topic", "string"),
        ("_kafka_partition", "int32"),
        ("_kafka_offset", "int64"),
        ("_kafka_timestamp", "timestamp[us, tz=UTC]"),
        ("dt", "string"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(
        strings(pa, &["types"]),
        expected_types,
        "pyarrow column types"
    );
    assert_eq!(
        strings(pa, &["partition_types"]),
        [("country", "string"), ("dt", "string")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
        "pyarrow hive partition types"
    );
    assert_eq!(
        int(pa, &["distinct_file_schemas"]),
        1,
        "every file has the same schema"
    );
    assert_eq!(int(pa, &["sum_id"]), want.sum_id, "pyarrow sum(id)");
    assert_eq!(
        float(pa, &["sum_amount"]),
        want.sum_amount,
        "pyarrow sum(amount)"
    );
    assert_eq!(
        float(pa, &["sum_score"]),
        want.sum_score,
        "pyarrow sum(score)"
    );
    assert_eq!(
        int(pa, &["sum_at_us"]),
        want.sum_at_us,
        "pyarrow sum of `at` in UTC microseconds"
    );
    assert_eq!(
        int(pa, &["sum_qty"]),
        want.sum_qty,
        "pyarrow sum(items.qty)"
    );
    assert_eq!(int(pa, &["items_total"]), want.items_total, "pyarrow items");
    assert_eq!(
        int(pa, &["tags_total"]),
        want.tags_total,
        "pyarrow user.tags"
    );
    assert_eq!(int(pa, &["flag_true"]), want.flag_true, "pyarrow flags");
    assert_eq!(
        int(pa, &["amount_nulls"]),
        want.amount_nulls,
        "pyarrow null amounts"
    );
    assert_eq!(
        int(pa, &["user_nulls"]),
        want.user_nulls,
        "pyarrow null users"
    );
    assert_eq!(
        int(pa, &["country_nulls"]),
        want.country_nulls,
        "pyarrow null countries"
    );
    assert_eq!(
        counts(pa, &["count_by_country"]),
        want.by_country,
        "pyarrow rows per country"
    );
    assert_eq!(
        counts(pa, &["count_by_dt"]),
        want.by_dt,
        "pyarrow rows per dt partition"
    );
    assert_eq!(
        int(pa, &["dt_mismatches"]),
        0,
        "pyarrow: dt partition = day of ts"
    );
    assert_eq!(
        int(pa, &["kafka_timestamp_nulls"]),
        n,
        "a file source has no Kafka timestamps"
    );
    assert_eq!(
        fact(pa, &["kafka_topics"]),
        &json!(["file"]),
        "_kafka_topic"
    );
    assert_eq!(
        fact(pa, &["kafka_partitions"]),
        &json!([0]),
        "_kafka_partition"
    );
    assert_eq!(int(pa, &["kafka_offset_distinct"]), n, "one row per offset");
    assert_eq!(
        (
            int(pa, &["kafka_offset_min"]),
            int(pa, &["kafka_offset_max"])
        ),
        (1, n),
        "_kafka_offset is the line number of a file source"
    );

    // pyarrow: the probe row, nested fields included.
    let probe = &events[PROBE_ID];
    let (probe_name, probe_tags) = probe.user.clone().expect("the probe has a user");
    let p = fact(pa, &["probe"]);
    assert_eq!(string(p, &["user_name"]), probe_name, "pyarrow user.name");
    assert_eq!(
        fact(p, &["user_tags"]).as_array().unwrap().len(),
        probe_tags,
        "pyarrow user.tags"
    );
    assert_eq!(
        fact(p, &["items_skus"]),
        &json!(probe.items.iter().map(|(s, _)| s).collect::<Vec<_>>()),
        "pyarrow items[].sku"
    );
    assert_eq!(
        fact(p, &["items_qty"]),
        &json!(probe.items.iter().map(|(_, q)| q).collect::<Vec<_>>()),
        "pyarrow items[].qty"
    );
    assert_eq!(int(p, &["at_us"]), probe.at_us, "pyarrow `at` instant");
    assert_eq!(string(p, &["day"]), probe.day, "pyarrow day");
    assert_eq!(string(p, &["dt"]), probe.day, "pyarrow dt partition");
    assert_eq!(
        string(p, &["country"]),
        probe.country.unwrap(),
        "pyarrow country"
    );
    assert_eq!(
        fact(p, &["amount"]).as_f64(),
        probe.amount,
        "pyarrow amount"
    );
    assert_eq!(float(p, &["score"]), probe.score, "pyarrow score");
    assert_eq!(fact(p, &["flag"]), &json!(probe.flag), "pyarrow flag");

    // pyarrow: every file's footer.
    assert_eq!(
        fact(pa, &["nanosecond_columns"]),
        &json!([]),
        "no INT96 or nanosecond timestamp column in any file"
    );
    let per_file = fact(pa, &["files"]).as_array().unwrap();
    assert_eq!(per_file.len(), files.len(), "pyarrow read every file");
    let mut rows_in_files = 0;
    let mut page_index_reported = false;
    for f in per_file {
        let path = string(f, &["path"]);
        let rows = int(f, &["rows"]);
        rows_in_files += rows;
        let name = path.rsplit('/').next().unwrap();
        let first_in_name: i64 = name
            .strip_prefix("file+0+")
            .and_then(|s| s.strip_suffix(".parquet"))
            .and_then(|s| s.split_once('+'))
            .filter(|(lineage, offset)| {
                lineage.len() == 12
                    && lineage.bytes().all(|b| b.is_ascii_hexdigit())
                    && offset.len() == 20
            })
            .and_then(|(_, offset)| offset.parse().ok())
            .unwrap_or_else(|| {
                panic!("{path}: not named file+0+<12-hex-digit lineage>+<20-digit offset>.parquet")
            });
        let kv = strings(f, &["pail"]);
        let meta = |k: &str| -> &str {
            kv.get(k)
                .unwrap_or_else(|| panic!("{path}: no {k} in key-value metadata: {kv:?}"))
        };
        assert_eq!(meta("pail.version"), env!("CARGO_PKG_VERSION"), "{path}");
        assert_eq!(meta("pail.topic"), "file", "{path}");
        assert_eq!(meta("pail.partition"), "0", "{path}");
        let first: i64 = meta("pail.first_offset").parse().unwrap();
        let last: i64 = meta("pail.last_offset").parse().unwrap();
        let count: i64 = meta("pail.record_count").parse().unwrap();
        assert_eq!(count, rows, "{path}: pail.record_count vs rows");
        assert_eq!(
            (first, last),
            (int(f, &["offset_min"]), int(f, &["offset_max"])),
            "{path}: pail.first_offset/last_offset vs the file's _kafka_offset range"
        );
        // The name is the segment's first offset; a segment holds at most MAX_RECORDS offsets.
        assert!(
            first_in_name <= first && last < first_in_name + MAX_RECORDS as i64,
            "{path}: offsets {first}..={last} outside the segment starting at {first_in_name}"
        );
        assert!(
            string(f, &["created_by"]).starts_with("pail version "),
            "{path}: created_by"
        );
        assert_eq!(
            fact(f, &["compression"]),
            &json!(["ZSTD"]),
            "{path}: compression"
        );
        let leaf = |col: &str| fact(f, &["leaves", col]);
        assert_eq!(
            string(leaf("at"), &["physical"]),
            "INT64",
            "{path}: `at` physical type"
        );
        let lt = fact(leaf("at"), &["logical"]);
        assert_eq!(
            (
                fact(lt, &["Type"]),
                fact(lt, &["isAdjustedToUTC"]),
                fact(lt, &["timeUnit"])
            ),
            (&json!("Timestamp"), &json!(true), &json!("microseconds")),
            "{path}: `at` is TIMESTAMP(isAdjustedToUTC=true, MICROS): {lt}"
        );
        assert_eq!(
            (
                string(leaf("day"), &["physical"]),
                fact(leaf("day"), &["logical", "Type"])
            ),
            ("INT32", &json!("Date")),
            "{path}: `day` is INT32 DATE"
        );
        let stats = fact(f, &["id_stats"]);
        assert_eq!(
            fact(stats, &["has_min_max"]),
            &json!(true),
            "{path}: id statistics in row group 0: {stats}"
        );
        assert_eq!(
            (int(stats, &["min"]), int(stats, &["max"])),
            (
                int(stats, &["row_group_min"]),
                int(stats, &["row_group_max"])
            ),
            "{path}: id min/max statistics match the data"
        );
        assert_eq!(int(stats, &["null_count"]), 0, "{path}: id null count");
        for attr in ["has_column_index", "has_offset_index"] {
            if let Some(v) = f.get(attr) {
                page_index_reported = true;
                assert_eq!(v, &json!(true), "{path}: {attr} (page index)");
            }
        }
    }
    assert_eq!(rows_in_files, n, "rows over all files");
    if !page_index_reported {
        eprintln!(
            "note: pyarrow {} does not expose has_column_index/has_offset_index; page index not checked",
            string(pa, &["version"])
        );
    }

    // DuckDB, independently.
    assert_eq!(int(db, &["rows"]), n, "DuckDB row count");
    let db_types = strings(db, &["types"]);
    for (col, ty) in [
        ("ts", "TIMESTAMP WITH TIME ZONE"),
        ("country", "VARCHAR"),
        ("id", "BIGINT"),
        ("amount", "DOUBLE"),
        ("score", "DOUBLE"),
        ("flag", "BOOLEAN"),
        ("at", "TIMESTAMP WITH TIME ZONE"),
        ("day", "DATE"),
        ("user", "STRUCT(\"name\" VARCHAR, tags VARCHAR[])"),
        ("items", "STRUCT(sku VARCHAR, qty BIGINT)[]"),
        ("_kafka_topic", "VARCHAR"),
        ("_kafka_partition", "INTEGER"),
        ("_kafka_offset", "BIGINT"),
        ("_kafka_timestamp", "TIMESTAMP WITH TIME ZONE"),
        ("dt", "DATE"),
    ] {
        assert_eq!(
            db_types.get(col).map(String::as_str),
            Some(ty),
            "DuckDB type of {col}: {db_types:?}"
        );
    }
    assert_eq!(
        db_types.len(),
        expected_types.len(),
        "DuckDB columns: {db_types:?}"
    );
    assert_eq!(
        string(db, &["typeof_at"]),
        "TIMESTAMP WITH TIME ZONE",
        "DuckDB typeof(at)"
    );
    assert_eq!(string(db, &["typeof_day"]), "DATE", "DuckDB typeof(day)");
    assert_eq!(
        string(db, &["typeof_ts"]),
        "TIMESTAMP WITH TIME ZONE",
        "DuckDB typeof(ts)"
    );
    assert_eq!(
        string(db, &["typeof_kafka_timestamp"]),
        "TIMESTAMP WITH TIME ZONE",
        "DuckDB typeof(_kafka_timestamp)"
    );
    // A missing partition value: DuckDB up to 1.4 reads the Hive null marker as the string
    // `__HIVE_DEFAULT_PARTITION__` (duckdb/duckdb#20512 makes it NULL), and its hive value
    // shadows the file's own `country` column, which holds the null.
    let db_by_country = counts(db, &["count_by_country"]);
    let marker_is_string = db_by_country.contains_key(HIVE_NULL);
    if marker_is_string {
        eprintln!(
            "note: DuckDB {} reads {HIVE_NULL} as a string, not NULL",
            string(db, &["version"])
        );
    }
    let db_null_key = if marker_is_string {
        HIVE_NULL
    } else {
        NULL_KEY
    };
    let mut want_db_by_country = want.by_country.clone();
    if let Some(nulls) = want_db_by_country.remove(NULL_KEY) {
        want_db_by_country.insert(db_null_key.to_string(), nulls);
    }
    assert_eq!(
        db_by_country, want_db_by_country,
        "DuckDB rows per country (the missing country as NULL or {HIVE_NULL})"
    );
    assert_eq!(
        int(db, &["country_nulls_in_files"]),
        want.country_nulls,
        "DuckDB without hive partitioning: country IS NULL in the files"
    );
    assert_eq!(
        int(db, &["country_nulls"]),
        if marker_is_string {
            0
        } else {
            want.country_nulls
        },
        "DuckDB country IS NULL"
    );
    assert_eq!(
        int(db, &["distinct_country"]) as usize,
        want_db_by_country.keys().filter(|k| *k != NULL_KEY).count(),
        "DuckDB count(DISTINCT country)"
    );
    assert_eq!(int(db, &["sum_id"]), want.sum_id, "DuckDB sum(id)");
    assert_eq!(
        float(db, &["sum_amount"]),
        want.sum_amount,
        "DuckDB sum(amount)"
    );
    assert_eq!(
        float(db, &["sum_score"]),
        want.sum_score,
        "DuckDB sum(score)"
    );
    assert_eq!(
        int(db, &["sum_at_us"]),
        want.sum_at_us,
        "DuckDB sum(epoch_us(at))"
    );
    assert_eq!(int(db, &["items_total"]), want.items_total, "DuckDB items");
    assert_eq!(
        int(db, &["tags_total"]),
        want.tags_total,
        "DuckDB user.tags"
    );
    assert_eq!(
        int(db, &["amount_nulls"]),
        want.amount_nulls,
        "DuckDB amount IS NULL"
    );
    assert_eq!(
        int(db, &["user_nulls"]),
        want.user_nulls,
        "DuckDB user IS NULL"
    );
    assert_eq!(
        int(db, &["kafka_timestamp_nulls"]),
        n,
        "DuckDB _kafka_timestamp IS NULL"
    );
    assert_eq!(int(db, &["dt_mismatches"]), 0, "DuckDB: dt partition = day");
    assert_eq!(
        counts(db, &["count_by_dt"]),
        want.by_dt,
        "DuckDB rows per dt partition"
    );
    let p = fact(db, &["probe"]);
    assert_eq!(string(p, &["user_name"]), probe_name, "DuckDB user.name");
    assert_eq!(
        string(p, &["items_1_sku"]),
        probe.items[0].0,
        "DuckDB items[1].sku"
    );
    assert_eq!(
        int(p, &["items_1_qty"]),
        probe.items[0].1,
        "DuckDB items[1].qty"
    );
    assert_eq!(
        int(p, &["items_len"]) as usize,
        probe.items.len(),
        "DuckDB len(items)"
    );
    assert_eq!(int(p, &["at_us"]), probe.at_us, "DuckDB epoch_us(at)");
    assert_eq!(string(p, &["day"]), probe.day, "DuckDB day");
    assert_eq!(string(p, &["dt"]), probe.day, "DuckDB dt");
    assert_eq!(
        string(p, &["country"]),
        probe.country.unwrap(),
        "DuckDB country"
    );
    assert_eq!(fact(p, &["amount"]).as_f64(), probe.amount, "DuckDB amount");
    assert_eq!(float(p, &["score"]), probe.score, "DuckDB score");
    assert_eq!(fact(p, &["flag"]), &json!(probe.flag), "DuckDB flag");
    // DuckDB's own reading of the footer: `at` is INT64 with the TIMESTAMP_MICROS converted
    // type too, which readers that predate logical types understand.
    let at_schema = fact(db, &["at_parquet_schema"]).as_array().unwrap();
    assert!(!at_schema.is_empty(), "DuckDB parquet_schema has no `at`");
    for row in at_schema {
        assert_eq!(
            (string(row, &["type"]), string(row, &["converted_type"])),
            ("INT64", "TIMESTAMP_MICROS"),
            "DuckDB parquet_schema of `at`: {row}"
        );
    }
    assert_eq!(
        int(db, &["kv_record_count_sum"]),
        n,
        "DuckDB: sum of pail.record_count over the footers"
    );
    assert_eq!(
        int(db, &["kv_files_with_version"]) as usize,
        files.len(),
        "DuckDB: pail.version in every footer"
    );
}
