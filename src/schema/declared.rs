//! Declared schemas: column types written by the user, the check that a record fits them, and
//! the rewrite of a fitting record into values the Arrow decoder reads unambiguously.
//!
//! Checking happens when a record arrives, so a record that does not fit is dead-lettered
//! with the reason and never reaches the encoder.

use std::fmt;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Fields as ArrowFields, TimeUnit};
use chrono::NaiveDateTime;
use serde::Serialize;
use serde_json::{Map, Value};

use super::decimal::decimal_text;
use super::infer::{parse_date_days, parse_timestamp_micros};
use crate::decode::json_type_name;

/// Decimal precision Parquet and every engine read as a 128-bit decimal.
pub const MAX_DECIMAL_PRECISION: u8 = 38;

/// A declared column type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ty {
    Bool,
    Int32,
    Int64,
    Float32,
    Float64,
    Str,
    /// Microseconds since the epoch, UTC.
    Timestamp,
    Date,
    Decimal {
        precision: u8,
        scale: u8,
    },
    /// Any JSON value, kept as its JSON text.
    Json,
    List(Box<Ty>),
    Struct(Vec<Column>),
}

/// One declared column (or struct field).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Column {
    pub name: String,
    #[serde(rename = "type", serialize_with = "as_text")]
    pub ty: Ty,
    pub nullable: bool,
}

fn as_text<S: serde::Serializer>(ty: &Ty, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(ty)
}

/// What happens to a record field that no column declares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UnknownFields {
    /// The record does not fit: it goes to the bad-record policy (the default).
    DeadLetter,
    /// The field is dropped; the rest of the record is written.
    Ignore,
}

/// A declared schema: its columns and what to do with undeclared fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Declared {
    pub columns: Vec<Column>,
    pub unknown_fields: UnknownFields,
}

impl fmt::Display for Ty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ty::Bool => f.write_str("boolean"),
            Ty::Int32 => f.write_str("int32"),
            Ty::Int64 => f.write_str("int64"),
            Ty::Float32 => f.write_str("float32"),
            Ty::Float64 => f.write_str("float64"),
            Ty::Str => f.write_str("string"),
            Ty::Timestamp => f.write_str("timestamp"),
            Ty::Date => f.write_str("date"),
            Ty::Decimal { precision, scale } => write!(f, "decimal({precision},{scale})"),
            Ty::Json => f.write_str("json"),
            Ty::List(item) => write!(f, "list<{item}>"),
            Ty::Struct(cols) => {
                f.write_str("struct<")?;
                for (i, c) in cols.iter().enumerate() {
                    let sep = if i == 0 { "" } else { ", " };
                    let null = if c.nullable { "" } else { " not null" };
                    write!(f, "{sep}{}: {}{null}", c.name, c.ty)?;
                }
                f.write_str(">")
            }
        }
    }
}

/// Parses a type such as `int64`, `decimal(12,2)`, `list<string>` or
/// `struct<name: string, age: int32>`.
pub fn parse_type(text: &str) -> Result<Ty, String> {
    let mut p = TypeParser {
        s: text,
        at: 0,
        depth: 0,
    };
    let ty = p.ty()?;
    p.skip_ws();
    if p.at != text.len() {
        return Err(format!(
            "unexpected {:?} after the type in {text:?}",
            &text[p.at..]
        ));
    }
    Ok(ty)
}

struct TypeParser<'a> {
    s: &'a str,
    at: usize,
    /// Nesting of `list<…>` and `struct<…>`, bounded so a hostile config cannot overflow the
    /// stack.
    depth: usize,
}

/// Deepest nesting of list and struct types a declared schema may have.
pub const MAX_TYPE_DEPTH: usize = 32;

impl<'a> TypeParser<'a> {
    fn skip_ws(&mut self) {
        while self.s[self.at..].starts_with([' ', '\t', '\n']) {
            self.at += 1;
        }
    }

    fn eat(&mut self, c: char) -> bool {
        self.skip_ws();
        if self.s[self.at..].starts_with(c) {
            self.at += c.len_utf8();
            true
        } else {
            false
        }
    }

    fn require(&mut self, c: char) -> Result<(), String> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(format!(
                "expected '{c}' at byte {} of {:?}",
                self.at, self.s
            ))
        }
    }

    fn word(&mut self) -> &'a str {
        self.skip_ws();
        let s: &'a str = self.s;
        let rest = &s[self.at..];
        let len = rest
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        self.at += len;
        &rest[..len]
    }

    fn number(&mut self) -> Result<u8, String> {
        let w = self.word();
        w.parse()
            .map_err(|_| format!("{w:?} is not a number in {:?}", self.s))
    }

    fn ty(&mut self) -> Result<Ty, String> {
        self.depth += 1;
        if self.depth > MAX_TYPE_DEPTH {
            return Err(format!(
                "types nest deeper than {MAX_TYPE_DEPTH} levels in {:?}",
                self.s
            ));
        }
        let ty = self.ty_inner();
        self.depth -= 1;
        ty
    }

    fn ty_inner(&mut self) -> Result<Ty, String> {
        let word = self.word().to_ascii_lowercase();
        Ok(match word.as_str() {
            "bool" | "boolean" => Ty::Bool,
            "int" | "int32" | "integer" => Ty::Int32,
            "int64" | "long" | "bigint" => Ty::Int64,
            "float" | "float32" => Ty::Float32,
            "double" | "float64" => Ty::Float64,
            "string" | "str" | "utf8" | "varchar" => Ty::Str,
            "timestamp" => Ty::Timestamp,
            "date" => Ty::Date,
            "json" => Ty::Json,
            "decimal" => {
                self.require('(')?;
                let precision = self.number()?;
                self.require(',')?;
                let scale = self.number()?;
                self.require(')')?;
                if !(1..=MAX_DECIMAL_PRECISION).contains(&precision) || scale > precision {
                    return Err(format!(
                        "decimal({precision},{scale}): precision must be 1-38 and scale at most the precision"
                    ));
                }
                Ty::Decimal { precision, scale }
            }
            "list" | "array" => {
                self.require('<')?;
                let item = self.ty()?;
                self.require('>')?;
                Ty::List(Box::new(item))
            }
            "struct" => {
                self.require('<')?;
                let mut cols = Vec::new();
                loop {
                    let name = self.word().to_string();
                    if name.is_empty() {
                        return Err(format!("expected a field name in {:?}", self.s));
                    }
                    self.require(':')?;
                    let ty = self.ty()?;
                    let save = self.at;
                    let nullable = if self.word().eq_ignore_ascii_case("not") {
                        if !self.word().eq_ignore_ascii_case("null") {
                            return Err(format!("expected 'not null' in {:?}", self.s));
                        }
                        false
                    } else {
                        self.at = save;
                        true
                    };
                    cols.push(Column { name, ty, nullable });
                    if !self.eat(',') {
                        break;
                    }
                }
                self.require('>')?;
                Ty::Struct(cols)
            }
            "" => return Err(format!("expected a type in {:?}", self.s)),
            other => {
                return Err(format!(
                    "unknown type {other:?} (use boolean, int32, int64, float32, float64, string, \
                     timestamp, date, decimal(P,S), json, list<T> or struct<name: T, ...>)"
                ));
            }
        })
    }
}

impl Ty {
    /// The Arrow type this column is written as.
    pub fn to_arrow(&self) -> DataType {
        match self {
            Ty::Bool => DataType::Boolean,
            Ty::Int32 => DataType::Int32,
            Ty::Int64 => DataType::Int64,
            Ty::Float32 => DataType::Float32,
            Ty::Float64 => DataType::Float64,
            Ty::Str | Ty::Json => DataType::Utf8,
            Ty::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, Some(Arc::from("UTC"))),
            Ty::Date => DataType::Date32,
            Ty::Decimal { precision, scale } => DataType::Decimal128(*precision, *scale as i8),
            Ty::List(item) => {
                DataType::List(Arc::new(Field::new("element", item.to_arrow(), true)))
            }
            Ty::Struct(cols) => DataType::Struct(to_arrow(cols)),
        }
    }
}

/// Checks what every writer needs of declared columns: non-empty names, unique within each
/// struct, no empty struct, nesting no deeper than [`MAX_TYPE_DEPTH`].
pub fn validate_columns(columns: &[Column]) -> Result<(), String> {
    validate_at(columns, "", 0)
}

fn validate_at(columns: &[Column], prefix: &str, depth: usize) -> Result<(), String> {
    if depth > MAX_TYPE_DEPTH {
        return Err(format!(
            "{prefix:?} nests deeper than {MAX_TYPE_DEPTH} levels"
        ));
    }
    let mut seen = std::collections::BTreeSet::new();
    for c in columns {
        let path = join(prefix, &c.name);
        if c.name.is_empty() {
            return Err(format!("a field under {prefix:?} has an empty name"));
        }
        if !seen.insert(c.name.as_str()) {
            return Err(format!("field {path:?} is declared twice"));
        }
        let mut ty = &c.ty;
        let mut level = depth;
        while let Ty::List(item) = ty {
            ty = item;
            level += 1;
        }
        if let Ty::Struct(fields) = ty {
            if fields.is_empty() {
                return Err(format!(
                    "field {path:?} is a struct with no fields (Parquet cannot write one)"
                ));
            }
            validate_at(fields, &path, level + 1)?;
        }
    }
    Ok(())
}

/// The Arrow fields of declared columns.
pub fn to_arrow(columns: &[Column]) -> ArrowFields {
    columns
        .iter()
        .map(|c| Field::new(&c.name, c.ty.to_arrow(), c.nullable))
        .collect()
}

impl Declared {
    /// Whether a record fits, and why not.
    pub fn check(&self, object: &Map<String, Value>) -> Result<(), String> {
        self.check_fields(&self.columns, object, "")
    }

    fn check_fields(
        &self,
        columns: &[Column],
        object: &Map<String, Value>,
        prefix: &str,
    ) -> Result<(), String> {
        for c in columns {
            let path = join(prefix, &c.name);
            match object.get(&c.name) {
                None | Some(Value::Null) if !c.nullable => {
                    let what = if object.contains_key(&c.name) {
                        "null"
                    } else {
                        "missing"
                    };
                    return Err(format!(
                        "field {path:?} is {what} but declared not nullable"
                    ));
                }
                None | Some(Value::Null) => {}
                Some(v) => self.check_value(&c.ty, v, &path)?,
            }
        }
        if self.unknown_fields == UnknownFields::DeadLetter
            && let Some(extra) = object
                .keys()
                .find(|k| !columns.iter().any(|c| &c.name == *k))
        {
            return Err(format!(
                "field {:?} is not declared (unknown_fields = \"dead_letter\")",
                join(prefix, extra)
            ));
        }
        Ok(())
    }

    fn check_value(&self, ty: &Ty, v: &Value, path: &str) -> Result<(), String> {
        let wrong = |expected: &str| {
            Err(format!(
                "field {path:?}: expected {expected} (declared {ty}), got {}",
                json_type_name(v)
            ))
        };
        match (ty, v) {
            (_, Value::Null) | (Ty::Json, _) => Ok(()),
            (Ty::Bool, Value::Bool(_)) => Ok(()),
            (Ty::Int32 | Ty::Int64, Value::Number(n)) => {
                let range = if *ty == Ty::Int32 {
                    i64::from(i32::MIN)..=i64::from(i32::MAX)
                } else {
                    i64::MIN..=i64::MAX
                };
                match n.as_i64() {
                    Some(i) if range.contains(&i) => Ok(()),
                    _ => Err(format!("field {path:?}: {n} does not fit {ty}")),
                }
            }
            (Ty::Float32 | Ty::Float64, Value::Number(_)) => Ok(()),
            (Ty::Str, Value::String(_) | Value::Number(_) | Value::Bool(_)) => Ok(()),
            (Ty::Timestamp, v) => match timestamp_micros(v) {
                Some(_) => Ok(()),
                None => wrong("an RFC 3339 timestamp or epoch milliseconds"),
            },
            (Ty::Date, Value::String(s)) if parse_date_days(s).is_some() => Ok(()),
            (Ty::Date, _) => wrong("a YYYY-MM-DD date"),
            (Ty::Decimal { precision, scale }, Value::Number(_) | Value::String(_)) => {
                decimal_text(v, *precision, *scale)
                    .map(|_| ())
                    .map_err(|why| format!("field {path:?}: {why} (declared {ty})"))
            }
            (Ty::List(item), Value::Array(items)) => items
                .iter()
                .try_for_each(|v| self.check_value(item, v, &format!("{path}[]"))),
            (Ty::Struct(cols), Value::Object(map)) => self.check_fields(cols, map, path),
            (Ty::Bool, _) => wrong("a boolean"),
            (Ty::Int32 | Ty::Int64 | Ty::Float32 | Ty::Float64 | Ty::Decimal { .. }, _) => {
                wrong("a number")
            }
            (Ty::Str, _) => wrong("a string"),
            (Ty::List(_), _) => wrong("an array"),
            (Ty::Struct(_), _) => wrong("an object"),
        }
    }

    /// Rewrites a fitting record into canonical values: timestamps as epoch microseconds,
    /// dates as epoch days, decimals as exact decimal text, JSON columns as text; undeclared
    /// fields dropped.
    pub fn normalize_object(&self, object: &Map<String, Value>) -> Map<String, Value> {
        normalize_fields(&self.columns, object)
    }
}

fn normalize_fields(columns: &[Column], object: &Map<String, Value>) -> Map<String, Value> {
    columns
        .iter()
        .filter_map(|c| {
            let v = object.get(&c.name)?;
            Some((c.name.clone(), normalize(&c.ty, v)))
        })
        .collect()
}

fn normalize(ty: &Ty, v: &Value) -> Value {
    match (ty, v) {
        (_, Value::Null) => Value::Null,
        (Ty::Json | Ty::Str, Value::String(s)) => Value::String(s.clone()),
        (Ty::Json | Ty::Str, v) => Value::String(v.to_string()),
        (Ty::Timestamp, v) => timestamp_micros(v).map_or(Value::Null, Value::from),
        (Ty::Date, Value::String(s)) => parse_date_days(s).map_or(Value::Null, Value::from),
        (Ty::Decimal { precision, scale }, v) => decimal_text(v, *precision, *scale)
            .map(Value::String)
            .unwrap_or(Value::Null),
        (Ty::List(item), Value::Array(items)) => {
            Value::Array(items.iter().map(|v| normalize(item, v)).collect())
        }
        (Ty::Struct(cols), Value::Object(map)) => Value::Object(normalize_fields(cols, map)),
        (_, v) => v.clone(),
    }
}

fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

/// A declared timestamp value in microseconds: an RFC 3339 string (a string without an offset
/// is read as UTC) or a number of epoch milliseconds, as for `timestamp = "field:NAME"`.
pub fn timestamp_micros(v: &Value) -> Option<i64> {
    match v {
        Value::String(s) => parse_timestamp_micros(s).or_else(|| {
            ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"]
                .iter()
                .find_map(|f| NaiveDateTime::parse_from_str(s, f).ok())
                .map(|t| t.and_utc().timestamp_micros())
        }),
        Value::Number(n) => match n.as_i64() {
            Some(ms) => ms.checked_mul(1000),
            None => n
                .as_f64()
                .map(|ms| (ms * 1000.0).round())
                .filter(|us| us.abs() < 9.2e18)
                .map(|us| us as i64),
        },
        _ => None,
    }
    // Beyond chrono's range, engines cannot show the value either.
    .filter(|us| chrono::DateTime::from_timestamp_micros(*us).is_some())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn declared(columns: &[(&str, &str, bool)], unknown: UnknownFields) -> Declared {
        Declared {
            columns: columns
                .iter()
                .map(|(n, t, nullable)| Column {
                    name: n.to_string(),
                    ty: parse_type(t).unwrap(),
                    nullable: *nullable,
                })
                .collect(),
            unknown_fields: unknown,
        }
    }

    #[test]
    fn parses_and_prints_types() {
        for text in [
            "int64",
            "decimal(12,2)",
            "list<string>",
            "struct<name: string, age: int32 not null, tags: list<struct<k: string>>>",
        ] {
            assert_eq!(parse_type(text).unwrap().to_string(), text);
        }
        assert_eq!(parse_type("BIGINT").unwrap(), Ty::Int64);
        assert!(parse_type("decimal(40,2)").is_err());
        assert!(parse_type("list<string").is_err());
        assert!(parse_type("uuid").unwrap_err().contains("unknown type"));
        assert!(parse_type("int64 trailing").is_err());
        let deep = format!("{}int64{}", "list<".repeat(10_000), ">".repeat(10_000));
        assert!(parse_type(&deep).unwrap_err().contains("nest deeper"));
        let twice = Column {
            name: "s".into(),
            ty: parse_type("struct<a: int64, a: string>").unwrap(),
            nullable: true,
        };
        assert!(
            validate_columns(&[twice])
                .unwrap_err()
                .contains("\"s.a\" is declared twice")
        );
        let empty = Column {
            name: "e".into(),
            ty: Ty::List(Box::new(Ty::Struct(Vec::new()))),
            nullable: true,
        };
        assert!(
            validate_columns(&[empty])
                .unwrap_err()
                .contains("no fields")
        );
    }

    #[test]
    fn records_that_do_not_fit_are_named() {
        let d = declared(
            &[
                ("id", "int64", false),
                ("at", "timestamp", true),
                ("user", "struct<name: string not null>", true),
            ],
            UnknownFields::DeadLetter,
        );
        let check = |v: Value| d.check(v.as_object().unwrap());
        assert!(check(json!({"id": 1, "at": "2026-01-01T00:00:00Z"})).is_ok());
        assert!(check(json!({"id": 1, "at": 1_767_225_600_000_i64})).is_ok());
        assert_eq!(
            check(json!({"at": null})).unwrap_err(),
            "field \"id\" is missing but declared not nullable"
        );
        assert!(
            check(json!({"id": "x"}))
                .unwrap_err()
                .contains("expected a number")
        );
        assert!(
            check(json!({"id": 1.5}))
                .unwrap_err()
                .contains("does not fit int64")
        );
        assert!(
            check(json!({"id": 1, "at": "never"}))
                .unwrap_err()
                .contains("\"at\"")
        );
        assert!(
            check(json!({"id": 1, "user": {}}))
                .unwrap_err()
                .contains("user.name")
        );
        assert!(
            check(json!({"id": 1, "extra": 1}))
                .unwrap_err()
                .contains("not declared")
        );
        let lenient = declared(&[("id", "int32", false)], UnknownFields::Ignore);
        assert!(
            lenient
                .check(json!({"id": 1, "extra": 1}).as_object().unwrap())
                .is_ok()
        );
        assert!(
            lenient
                .check(json!({"id": 4_000_000_000_i64}).as_object().unwrap())
                .is_err()
        );
    }

    #[test]
    fn normalises_to_canonical_values() {
        let d = declared(
            &[
                ("at", "timestamp", true),
                ("day", "date", true),
                ("price", "decimal(8,3)", true),
                ("raw", "json", true),
                ("name", "string", true),
            ],
            UnknownFields::Ignore,
        );
        let n = d.normalize_object(
            json!({"at": "1970-01-01 00:00:02", "day": "1970-01-11", "price": 1.5,
                   "raw": {"a": [1]}, "name": 7, "dropped": true})
            .as_object()
            .unwrap(),
        );
        assert_eq!(
            Value::Object(n),
            json!({"at": 2_000_000, "day": 10, "price": "1.500", "raw": "{\"a\":[1]}", "name": "7"})
        );
    }
}
