//! Validation of `[destinations.schema]` and `[destinations.limits]`: schema mode, declared
//! columns (inline or from a schema file), JSON columns, metadata columns and record limits.

use std::collections::BTreeSet;
use std::sync::Arc;

use super::raw::{RawDestination, RawSchema};
use super::settings::{MetadataColumns, Problems};
use super::units::parse_size;
use crate::decode::DEFAULT_MAX_RECORD_BYTES;
use crate::schema::declared::parse_type;
use crate::schema::schema_file::parse_schema_text;
use crate::schema::{
    Column, DEFAULT_MAX_COLUMNS, DEFAULT_MAX_DEPTH, Declared, InferRules, SchemaMode,
    SchemaSettings, UnknownFields,
};

/// serde_json refuses anything nested deeper than this, so a larger limit could never apply.
const PARSER_DEPTH_LIMIT: u64 = 127;

pub(super) fn schema(raw: &RawDestination, at: &str, p: &mut Problems) -> Option<SchemaSettings> {
    let before = p.0.len();
    let s = &raw.schema;
    let key = |k: &str| format!("{at}.schema.{k}");
    let json_columns: BTreeSet<String> = s.json_columns.iter().flatten().cloned().collect();
    if json_columns.iter().any(String::is_empty) {
        p.push(key("json_columns"), "field names must not be empty");
    }
    let mode = match s.mode.as_deref().unwrap_or("infer") {
        "infer" => {
            for (name, set) in [
                ("columns", s.columns.is_some()),
                ("schema_file", s.schema_file.is_some()),
                ("unknown_fields", s.unknown_fields.is_some()),
            ] {
                if set {
                    p.push(key(name), "only used with mode = \"declared\"");
                }
            }
            Some(SchemaMode::Infer {
                strict: s.strict.unwrap_or(false),
                rules: InferRules {
                    json_columns,
                    temporal_strings: s.detect_timestamps.unwrap_or(true),
                },
            })
        }
        "declared" => {
            for (name, set) in [
                ("strict", s.strict.is_some()),
                ("detect_timestamps", s.detect_timestamps.is_some()),
            ] {
                if set {
                    p.push(
                        key(name),
                        "only used with mode = \"infer\" (declared columns are always strict)",
                    );
                }
            }
            declared(s, &key, json_columns, p).map(|d| SchemaMode::Declared(Arc::new(d)))
        }
        other => {
            p.push(
                key("mode"),
                format!("{other:?} is not a schema mode (use \"infer\" or \"declared\")"),
            );
            None
        }
    };
    let limits = &raw.limits;
    let lkey = |k: &str| format!("{at}.limits.{k}");
    let max_record_bytes = match &limits.max_record_size {
        None => Some(DEFAULT_MAX_RECORD_BYTES),
        Some(text) => match parse_size(text) {
            Ok(0) => {
                p.push(lkey("max_record_size"), "must be greater than zero");
                None
            }
            Ok(n) => Some(n as usize),
            Err(m) => {
                p.push(lkey("max_record_size"), m);
                None
            }
        },
    };
    let max_depth = limits.max_depth.unwrap_or(DEFAULT_MAX_DEPTH as u64);
    if !(1..=PARSER_DEPTH_LIMIT).contains(&max_depth) {
        p.push(
            lkey("max_depth"),
            format!("must be between 1 and {PARSER_DEPTH_LIMIT}"),
        );
    }
    let max_columns = limits.max_columns.unwrap_or(DEFAULT_MAX_COLUMNS as u64);
    if max_columns == 0 {
        p.push(lkey("max_columns"), "must be greater than zero");
    }
    if p.0.len() != before {
        return None;
    }
    Some(SchemaSettings {
        mode: mode?,
        max_record_bytes: max_record_bytes?,
        max_depth: max_depth as usize,
        max_columns: max_columns as usize,
    })
}

fn declared(
    s: &RawSchema,
    key: &dyn Fn(&str) -> String,
    json_columns: BTreeSet<String>,
    p: &mut Problems,
) -> Option<Declared> {
    let mut columns = match (&s.columns, &s.schema_file) {
        (Some(_), Some(_)) => {
            p.push(
                key("schema_file"),
                "use either columns or schema_file, not both",
            );
            return None;
        }
        (None, None) => {
            p.push(
                key("columns"),
                "mode = \"declared\" needs columns = [{ name, type, nullable }] or schema_file",
            );
            return None;
        }
        (Some(raw), None) => {
            let mut columns = Vec::with_capacity(raw.len());
            for (i, c) in raw.iter().enumerate() {
                match parse_type(&c.ty) {
                    Ok(ty) => columns.push(Column {
                        name: c.name.clone(),
                        ty,
                        nullable: c.nullable.unwrap_or(true),
                    }),
                    Err(m) => p.push(key(&format!("columns[{i}].type")), m),
                }
            }
            columns
        }
        (None, Some(path)) => match std::fs::read_to_string(path) {
            Ok(text) => match parse_schema_text(&text) {
                Ok(columns) => columns,
                Err(m) => {
                    p.push(key("schema_file"), format!("{path}: {m}"));
                    return None;
                }
            },
            Err(e) => {
                p.push(key("schema_file"), format!("cannot read {path}: {e}"));
                return None;
            }
        },
    };
    if let Err(m) = crate::schema::declared::validate_columns(&columns) {
        let at = if s.schema_file.is_some() {
            "schema_file"
        } else {
            "columns"
        };
        p.push(key(at), m);
        return None;
    }
    // json_columns in declared mode name top-level columns to keep as JSON text.
    for name in &json_columns {
        match columns.iter_mut().find(|c| &c.name == name) {
            Some(c) => c.ty = crate::schema::Ty::Json,
            None => p.push(
                key("json_columns"),
                format!("{name:?} is not a declared column"),
            ),
        }
    }
    let unknown_fields = match s.unknown_fields.as_deref().unwrap_or("dead_letter") {
        "dead_letter" => UnknownFields::DeadLetter,
        "ignore" => UnknownFields::Ignore,
        other => {
            p.push(
                key("unknown_fields"),
                format!("{other:?} is not a policy (use \"dead_letter\" or \"ignore\")"),
            );
            return None;
        }
    };
    if columns.is_empty() {
        p.push(key("columns"), "declare at least one column");
        return None;
    }
    Some(Declared {
        columns,
        unknown_fields,
    })
}

/// `metadata_columns = true | false | ["_kafka_offset", ...]`.
pub(super) fn metadata_columns(
    raw: &RawSchema,
    at: &str,
    p: &mut Problems,
) -> Option<MetadataColumns> {
    let key = format!("{at}.schema.metadata_columns");
    match &raw.metadata_columns {
        None | Some(toml::Value::Boolean(true)) => Some(MetadataColumns::ALL),
        Some(toml::Value::Boolean(false)) => Some(MetadataColumns::NONE),
        Some(toml::Value::Array(items)) => {
            let mut m = MetadataColumns::NONE;
            for item in items {
                let flag = match item.as_str() {
                    Some("_kafka_topic") => &mut m.topic,
                    Some("_kafka_partition") => &mut m.partition,
                    Some("_kafka_offset") => &mut m.offset,
                    Some("_kafka_timestamp") => &mut m.timestamp,
                    Some("_kafka_key") => &mut m.key,
                    _ => {
                        p.push(
                            key,
                            format!(
                                "{item} is not a metadata column (use _kafka_topic, \
                                 _kafka_partition, _kafka_offset, _kafka_timestamp, _kafka_key)"
                            ),
                        );
                        return None;
                    }
                };
                *flag = true;
            }
            Some(m)
        }
        Some(_) => {
            p.push(
                key,
                "expected true, false or a list of _kafka_* column names",
            );
            None
        }
    }
}
