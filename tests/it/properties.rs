//! Property tests: schema inference and evolution (order independence, merge = join, every
//! record encodes under the evolving schema, strict mode and the column limit hold) and key
//! sanitising (one safe, URL-safe, bounded, reversible segment per value).
//!
//! The seed is fixed so CI runs the same cases every time; set `PROPTEST_CASES` to run more.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field};
use bytes::Bytes;
use chrono::DateTime;
use pail::buffer::Segment;
use pail::config::{Compression, MetadataColumns, ParquetSettings};
use pail::encode::{Provenance, encode_parquet};
use pail::partition::{KeyTemplate, NULL_VALUE, sanitize};
use pail::schema::{Fields, InferRules, Kind, SchemaMode, SchemaSettings};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};
use serde_json::{Map, Value};

fn config() -> Config {
    Config {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|c| c.parse().ok())
            .unwrap_or(128),
        rng_seed: RngSeed::Fixed(0x7061_696c),
        failure_persistence: None,
        ..Config::default()
    }
}

/// Scalars of every kind inference knows, including timestamp and date strings.
fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        (-1e9f64..1e9).prop_map(Value::from),
        "[a-z]{0,6}".prop_map(Value::from),
        (0i64..4_000_000_000).prop_map(|s| Value::from(
            DateTime::from_timestamp(s, 0)
                .unwrap_or_default()
                .to_rfc3339()
        )),
        (0i64..4_000_000_000).prop_map(|s| Value::from(
            DateTime::from_timestamp(s, 0)
                .unwrap_or_default()
                .format("%Y-%m-%d")
                .to_string()
        )),
    ]
}

/// JSON values up to four levels deep over a few shared field names, so types collide.
fn value() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(4, 32, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-d]", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn object() -> impl Strategy<Value = Map<String, Value>> {
    prop::collection::btree_map("[a-f]", value(), 0..5).prop_map(|m| m.into_iter().collect())
}

fn rules() -> InferRules {
    InferRules {
        temporal_strings: true,
        ..InferRules::default()
    }
}

fn infer(objects: &[Map<String, Value>]) -> Fields {
    let mut f = Fields::default();
    for o in objects {
        f.merge_object(o, &rules());
    }
    f
}

/// A type with struct fields sorted by name: field order follows first appearance, which
/// legitimately depends on record order.
fn canonical(t: &DataType) -> String {
    match t {
        DataType::Struct(fields) => {
            let mut inner: Vec<String> = fields
                .iter()
                .map(|f| format!("{}: {}", f.name(), canonical(f.data_type())))
                .collect();
            inner.sort();
            format!("struct<{}>", inner.join(", "))
        }
        DataType::List(item) => format!("list<{}>", canonical(item.data_type())),
        other => other.to_string(),
    }
}

fn types(f: &Fields) -> BTreeMap<String, String> {
    f.to_arrow()
        .iter()
        .map(|field: &Arc<Field>| (field.name().clone(), canonical(field.data_type())))
        .collect()
}

fn contains_json_text(kind: &Kind) -> bool {
    match kind {
        Kind::Json => true,
        Kind::List(item) => contains_json_text(item),
        Kind::Struct(fields) => fields.iter().any(|(_, k)| contains_json_text(k)),
        _ => false,
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn inferred_types_do_not_depend_on_record_order(objects in prop::collection::vec(object(), 0..12)) {
        let forward = infer(&objects);
        let reversed: Vec<_> = objects.iter().rev().cloned().collect();
        prop_assert_eq!(types(&forward), types(&infer(&reversed)));
    }

    #[test]
    fn merging_records_equals_joining_their_schemas(objects in prop::collection::vec(object(), 0..12)) {
        let merged = infer(&objects);
        let mut joined = Fields::default();
        for o in &objects {
            joined.join(&infer(std::slice::from_ref(o)));
        }
        prop_assert_eq!(types(&merged), types(&joined));
    }

    #[test]
    fn every_record_encodes_under_the_evolving_schema(
        segments in prop::collection::vec(prop::collection::vec(object(), 1..8), 1..4)
    ) {
        let settings = SchemaSettings::default();
        let parquet = ParquetSettings {
            compression: Compression::None,
            row_group_size: 3,
            row_group_bytes: 8 << 20,
            metadata: MetadataColumns::ALL,
        };
        let mut evolving = Arc::new(Fields::default());
        let mut offset = 0;
        for records in &segments {
            let mut seg = Segment::new("t".into(), 0, 0, offset);
            for o in records {
                prop_assert!(settings.admit(&mut seg.schema, o).is_ok());
                let payload = serde_json::to_vec(o).unwrap();
                seg.push_row("p", &payload, None, offset, Some(offset));
                offset += 1;
            }
            let schema = settings.file_schema(&mut evolving, &seg.schema);
            let file = seg.files.remove("p").unwrap();
            let source = Provenance { topic: "t", partition: 0 };
            let bytes = encode_parquet(&file, &schema, source, &parquet);
            prop_assert!(bytes.is_ok(), "{:?}", bytes.err());
            let reader = ParquetRecordBatchReaderBuilder::try_new(Bytes::from(bytes.unwrap()))
                .unwrap()
                .build()
                .unwrap();
            let mut rows = 0;
            for batch in reader {
                let batch = batch.unwrap();
                rows += batch.num_rows();
                // Every field seen so far in the topic is a column, records lacking it or not.
                for (name, _) in evolving.iter() {
                    prop_assert!(batch.column_by_name(name).is_some(), "no column {}", name);
                }
            }
            prop_assert_eq!(rows, records.len());
        }
    }

    #[test]
    fn strict_mode_never_makes_json_text_and_refuses_only_conflicts(
        objects in prop::collection::vec(object(), 0..16)
    ) {
        let settings = SchemaSettings {
            mode: SchemaMode::Infer { strict: true, rules: rules() },
            ..SchemaSettings::default()
        };
        let mut seg = Fields::default();
        for o in &objects {
            let before = seg.clone();
            match settings.admit(&mut seg, o) {
                Ok(()) => {}
                Err(reason) => {
                    prop_assert!(reason.contains("strict"), "{}", reason);
                    prop_assert_eq!(&seg, &before);
                }
            }
            prop_assert!(!seg.iter().any(|(_, k)| contains_json_text(k)));
        }
    }

    #[test]
    fn the_column_limit_always_holds(
        objects in prop::collection::vec(object(), 0..16),
        max_columns in 1usize..12,
    ) {
        let settings = SchemaSettings { max_columns, ..SchemaSettings::default() };
        let mut seg = Fields::default();
        for o in &objects {
            let _ = settings.admit(&mut seg, o);
            prop_assert!(seg.columns() <= max_columns);
        }
        let mut evolving = Arc::new(Fields::default());
        settings.file_schema(&mut evolving, &seg);
        prop_assert!(evolving.columns() <= max_columns);
    }

    #[test]
    fn integers_widen_to_floats_only_where_floats_appear(
        ints in prop::collection::vec(any::<i64>(), 1..8),
        floats in prop::collection::vec(-1e6f64..1e6, 0..3),
    ) {
        let rows: Vec<Map<String, Value>> = ints
            .iter()
            .map(|i| [("n".to_string(), Value::from(*i)), ("i".to_string(), Value::from(*i))].into_iter().collect())
            .chain(floats.iter().map(|f| [("n".to_string(), Value::from(*f))].into_iter().collect()))
            .collect();
        let f = infer(&rows);
        prop_assert_eq!(f.kind("i"), Some(&Kind::Int));
        let expect = if floats.is_empty() { Kind::Int } else { Kind::Float };
        prop_assert_eq!(f.kind("n"), Some(&expect));
    }

    #[test]
    fn sanitised_values_are_one_safe_reversible_segment(value in any::<String>()) {
        let s = sanitize(&value);
        prop_assert!(!s.is_empty() && s != "." && s != "..");
        prop_assert!(s.len() <= 128, "{} bytes", s.len());
        prop_assert!(
            s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.~%".contains(&b)),
            "{:?}", s
        );
        if value.is_empty() {
            prop_assert_eq!(s, NULL_VALUE);
        } else if encoded_len(&value) <= 128 {
            prop_assert_eq!(percent_decode(&s), value);
        } else {
            // Cut, and told apart by a hash of the whole value.
            prop_assert!(s.contains('~'));
        }
    }

    #[test]
    fn distinct_values_stay_distinct(a in any::<String>(), b in any::<String>()) {
        prop_assume!(a != b && !a.is_empty() && !b.is_empty());
        prop_assert_ne!(sanitize(&a), sanitize(&b));
    }

    #[test]
    fn hostile_fields_cannot_escape_or_overflow_the_key(
        value in prop_oneof![
            any::<String>(),
            "(\\.\\./|/|\\.|%2e|\\x00|\\n){1,40}",
            "[a-z/]{1000,2100}",
        ]
    ) {
        let template = KeyTemplate::parse("{topic}/dt={ts:%Y-%m-%d}/v={field:v}/w={field:v}").unwrap();
        let record: Map<String, Value> = [("v".to_string(), Value::from(value))].into_iter().collect();
        let path = template.render("../t", 0, DateTime::UNIX_EPOCH, &record);
        let segments: Vec<&str> = path.split('/').collect();
        prop_assert_eq!(segments.len(), 4, "{}", path);
        for seg in &segments {
            prop_assert!(!seg.is_empty() && *seg != "." && *seg != "..", "{}", path);
        }
        prop_assert!(path.len() <= 1024 - 200, "{} bytes", path.len());
    }
}

/// The length of a value percent-encoded, before any cut.
fn encoded_len(value: &str) -> usize {
    value
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                1
            } else {
                3
            }
        })
        .sum()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("00");
            out.push(u8::from_str_radix(hex, 16).unwrap_or(0));
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
