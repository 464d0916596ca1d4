//! Schema inference: JSON objects → an evolving Arrow schema, and values normalised to fit it.
//!
//! Types form a small lattice so that the schema of many records does not depend on their
//! order: null joins anything; integers widen to floats; RFC 3339 strings are timestamps and
//! `YYYY-MM-DD` strings are dates until a plain string turns up (then the field is a string);
//! objects become structs and arrays lists, joined field by field. Anything else that
//! disagrees (a number here, an object there) is a *conflict*: the field becomes a string
//! column holding each value's JSON text, so no record is rejected for its shape unless
//! `strict` asks for that.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Fields as ArrowFields, TimeUnit};
use chrono::{DateTime, NaiveDate};
use serde_json::{Map, Value};

/// How inference treats values; fixed per destination.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct InferRules {
    /// Dotted field paths always kept as JSON text (`json_columns`).
    pub json_columns: BTreeSet<String>,
    /// Recognise RFC 3339 strings as timestamps and `YYYY-MM-DD` strings as dates
    /// (`detect_timestamps`).
    #[serde(rename = "detect_timestamps")]
    pub temporal_strings: bool,
}

/// The inferred type of one field.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// Only nulls seen so far.
    Null,
    Bool,
    Int,
    Float,
    Str,
    /// RFC 3339 strings with an offset; stored as microseconds since the epoch, UTC.
    Timestamp,
    /// `YYYY-MM-DD` strings.
    Date,
    List(Box<Kind>),
    Struct(Fields),
    /// Conflicting types, or a `json_columns` field: stored as JSON text.
    Json,
}

/// What taking one more value would do to a field's type.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Assessment {
    /// The schema would change (new field, widening or conflict).
    pub changes: bool,
    /// Fields (at any depth) the value would add.
    pub added: usize,
    /// The dotted path of the first field whose type would conflict, with both types.
    pub conflict: Option<String>,
    /// The path of a new field whose name is over [`MAX_FIELD_NAME_BYTES`].
    pub long_name: Option<String>,
    /// An existing field's type would change (widened, conflicting, or a struct gaining a
    /// field), as opposed to new top-level fields only: a file whose row groups are partly
    /// written cannot take it.
    pub reshapes: bool,
}

impl Assessment {
    fn absorb(&mut self, other: Assessment) {
        self.changes |= other.changes;
        self.reshapes |= other.reshapes;
        self.added += other.added;
        if self.conflict.is_none() {
            self.conflict = other.conflict;
        }
        if self.long_name.is_none() {
            self.long_name = other.long_name;
        }
    }
}

/// Longest field name a schema takes (Glue, Athena and Hive stop at 255).
pub const MAX_FIELD_NAME_BYTES: usize = 255;

/// The fields of an object, in order of first appearance.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Fields {
    names: Vec<String>,
    kinds: Vec<Kind>,
    index: HashMap<String, usize>,
}

impl Fields {
    /// True when no field has been seen.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// True when a top-level field of this name exists.
    pub fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    /// The type of a top-level field.
    pub fn kind(&self, name: &str) -> Option<&Kind> {
        self.index.get(name).map(|&i| &self.kinds[i])
    }

    /// Fields at every depth (a struct's fields count, list items do not).
    pub fn columns(&self) -> usize {
        self.kinds.iter().map(|k| 1 + k.columns()).sum()
    }

    /// What merging `object` would change, without changing anything.
    pub fn assess(&self, object: &Map<String, Value>, rules: &InferRules) -> Assessment {
        let mut a = Assessment::default();
        self.assess_at(object, rules, Path::ROOT, &mut a);
        a
    }

    fn assess_at(
        &self,
        object: &Map<String, Value>,
        rules: &InferRules,
        prefix: Path<'_>,
        a: &mut Assessment,
    ) {
        for (name, value) in object {
            let path = prefix.child(name);
            match self.index.get(name) {
                Some(&i) => {
                    let changed_before = std::mem::take(&mut a.changes);
                    self.kinds[i].assess(value, rules, path, a);
                    a.reshapes |= a.changes;
                    a.changes |= changed_before;
                }
                None => {
                    a.changes = true;
                    if name.len() > MAX_FIELD_NAME_BYTES && a.long_name.is_none() {
                        a.long_name = Some(path.render());
                    }
                    let kind = Kind::of(value, rules, path);
                    a.added += 1 + kind.columns();
                    kind.note_new_fields(rules, path, a);
                }
            }
        }
    }

    /// Whether this is exactly the schema of `object` alone (what merging it into an empty
    /// schema makes), found without allocating in the common case: equal shapes are shared.
    pub fn describes(&self, object: &Map<String, Value>, rules: &InferRules) -> bool {
        self.describes_at(object, rules, Path::ROOT)
    }

    fn describes_at(&self, object: &Map<String, Value>, rules: &InferRules, at: Path<'_>) -> bool {
        // An object's fields are pushed in its order, one per key.
        object.len() == self.names.len()
            && object.iter().zip(self.names.iter().zip(&self.kinds)).all(
                |((name, value), (mine, kind))| {
                    name == mine && kind.describes(value, rules, at.child(name))
                },
            )
    }

    /// Widens the schema to take in one more object.
    pub fn merge_object(&mut self, object: &Map<String, Value>, rules: &InferRules) {
        self.merge_at(object, rules, Path::ROOT);
    }

    fn merge_at(&mut self, object: &Map<String, Value>, rules: &InferRules, prefix: Path<'_>) {
        for (name, value) in object {
            let path = prefix.child(name);
            match self.index.get(name) {
                Some(&i) => {
                    if !matches!(self.kinds[i], Kind::Json) {
                        self.kinds[i].merge(value, rules, path);
                    }
                }
                None => {
                    let kind = Kind::of(value, rules, path);
                    self.push(name.clone(), kind);
                }
            }
        }
    }

    fn push(&mut self, name: String, kind: Kind) {
        self.index.insert(name.clone(), self.names.len());
        self.names.push(name);
        self.kinds.push(kind);
    }

    /// True when joining `other` would leave this schema as it is.
    pub fn subsumes(&self, other: &Fields) -> bool {
        other
            .iter()
            .all(|(name, k)| self.kind(name).is_some_and(|mine| mine.subsumes(k)))
    }

    /// This schema without the top-level fields `drop` names.
    pub fn without(&self, drop: &[&str]) -> Fields {
        let mut out = Fields::default();
        for (name, kind) in self.iter() {
            if !drop.contains(&name) {
                out.push(name.to_string(), kind.clone());
            }
        }
        out
    }

    /// Adds the top-level fields of `other` this schema lacks, with their types.
    pub fn add_missing(&mut self, other: &Fields) {
        for (name, kind) in other.names.iter().zip(&other.kinds) {
            if !self.contains(name) {
                self.push(name.clone(), kind.clone());
            }
        }
    }

    /// The union of two schemas, each field's type the join of both.
    pub fn join(&mut self, other: &Fields) {
        for (name, kind) in other.names.iter().zip(&other.kinds) {
            match self.index.get(name) {
                Some(&i) => self.kinds[i].join(kind),
                None => self.push(name.clone(), kind.clone()),
            }
        }
    }

    /// The Arrow fields for this object; every field is nullable.
    pub fn to_arrow(&self) -> ArrowFields {
        self.names
            .iter()
            .zip(&self.kinds)
            .map(|(name, kind)| Field::new(name, kind.to_arrow(), true))
            .collect()
    }

    /// Top-level field names and types, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Kind)> {
        self.names.iter().map(String::as_str).zip(&self.kinds)
    }

    /// Rewrites an object so that every value has exactly the inferred type (timestamps as
    /// epoch microseconds, conflicts as JSON text); fields the schema lacks are dropped.
    pub fn normalize_object(&self, object: &Map<String, Value>) -> Map<String, Value> {
        object
            .iter()
            .filter_map(|(name, value)| {
                let kind = &self.kinds[*self.index.get(name)?];
                Some((name.clone(), kind.normalize(value)))
            })
            .collect()
    }
}

/// A field's dotted path, rendered only when a message or a `json_columns` lookup needs it:
/// the hot path walks every field of every record and must not allocate for it.
#[derive(Debug, Clone, Copy)]
pub struct Path<'a> {
    parent: Option<&'a Path<'a>>,
    name: &'a str,
}

impl<'a> Path<'a> {
    /// The record itself.
    pub const ROOT: Path<'static> = Path {
        parent: None,
        name: "",
    };

    pub(super) fn child(&'a self, name: &'a str) -> Path<'a> {
        Path {
            parent: Some(self),
            name,
        }
    }

    /// `a.b.c`.
    pub fn render(&self) -> String {
        let mut names = vec![self.name];
        let mut at = self.parent;
        while let Some(p) = at {
            names.push(p.name);
            at = p.parent;
        }
        names.retain(|n| !n.is_empty());
        names.reverse();
        names.join(".")
    }

    pub(super) fn is_json_column(&self, rules: &InferRules) -> bool {
        !rules.json_columns.is_empty() && rules.json_columns.contains(&self.render())
    }
}

/// Microseconds since the epoch of an RFC 3339 string with an offset (`Z` or `±hh:mm`).
pub fn parse_timestamp_micros(s: &str) -> Option<i64> {
    // Cheap shape test first: most strings are not timestamps.
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.timestamp_micros())
}

/// Days since the epoch of a `YYYY-MM-DD` string.
pub fn parse_date_days(s: &str) -> Option<i32> {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let date = NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()?;
    i32::try_from((date - NaiveDate::from_ymd_opt(1970, 1, 1)?).num_days()).ok()
}

pub(super) fn string_kind(s: &str, rules: &InferRules) -> Kind {
    if !rules.temporal_strings {
        Kind::Str
    } else if parse_timestamp_micros(s).is_some() {
        Kind::Timestamp
    } else if parse_date_days(s).is_some() {
        Kind::Date
    } else {
        Kind::Str
    }
}

impl Kind {
    /// The type of a single value at `path`.
    pub fn of(value: &Value, rules: &InferRules, path: Path<'_>) -> Kind {
        if path.is_json_column(rules) {
            return Kind::Json;
        }
        match value {
            Value::Null => Kind::Null,
            Value::Bool(_) => Kind::Bool,
            Value::Number(n) if n.is_i64() => Kind::Int,
            Value::Number(_) => Kind::Float,
            Value::String(s) => string_kind(s, rules),
            Value::Array(items) => {
                let mut item = Kind::Null;
                for v in items {
                    item.merge(v, rules, path);
                }
                Kind::List(Box::new(item))
            }
            Value::Object(map) => {
                let mut fields = Fields::default();
                fields.merge_at(map, rules, path);
                Kind::Struct(fields)
            }
        }
    }

    /// Whether this is exactly `Kind::of(value)`.
    pub(super) fn describes(&self, value: &Value, rules: &InferRules, path: Path<'_>) -> bool {
        if path.is_json_column(rules) {
            return *self == Kind::Json;
        }
        match (self, value) {
            (Kind::Null, Value::Null) | (Kind::Bool, Value::Bool(_)) => true,
            (Kind::Int, Value::Number(n)) => n.is_i64(),
            (Kind::Float, Value::Number(n)) => !n.is_i64(),
            (Kind::Str | Kind::Timestamp | Kind::Date, Value::String(s)) => {
                *self == string_kind(s, rules)
            }
            (Kind::Struct(fields), Value::Object(map)) => fields.describes_at(map, rules, path),
            // An array's item type joins its items: built, not walked.
            (Kind::List(_), Value::Array(_)) => *self == Kind::of(value, rules, path),
            _ => false,
        }
    }

    /// A short name for messages.
    pub fn name(&self) -> &'static str {
        match self {
            Kind::Null => "null",
            Kind::Bool => "boolean",
            Kind::Int => "integer",
            Kind::Float => "float",
            Kind::Str => "string",
            Kind::Timestamp => "timestamp",
            Kind::Date => "date",
            Kind::List(_) => "list",
            Kind::Struct(_) => "object",
            Kind::Json => "JSON text",
        }
    }

    fn columns(&self) -> usize {
        match self {
            Kind::Struct(f) => f.columns(),
            Kind::List(item) => item.columns(),
            _ => 0,
        }
    }

    /// The join of two types: the least type both fit (a conflict when none but JSON text).
    pub fn join(&mut self, other: &Kind) {
        match (&mut *self, other) {
            (_, Kind::Null) | (Kind::Json, _) => {}
            (Kind::Null, o) => *self = o.clone(),
            (Kind::List(a), Kind::List(b)) => a.join(b),
            (Kind::Struct(a), Kind::Struct(b)) => a.join(b),
            (a, b) if *a == *b => {}
            (a, b) => *self = widened(a, b).unwrap_or(Kind::Json),
        }
    }

    fn assess(&self, value: &Value, rules: &InferRules, path: Path<'_>, a: &mut Assessment) {
        match (self, value) {
            // What changes nothing, first and without allocating: the common case.
            (_, Value::Null)
            | (Kind::Json, _)
            | (Kind::Bool, Value::Bool(_))
            | (Kind::Str, Value::String(_))
            | (Kind::Float, Value::Number(_)) => {}
            (Kind::Int, Value::Number(n)) if n.is_i64() => {}
            (Kind::Timestamp, Value::String(s)) if parse_timestamp_micros(s).is_some() => {}
            (Kind::Date, Value::String(s)) if parse_date_days(s).is_some() => {}
            (Kind::Null, v) => {
                let kind = Kind::of(v, rules, path);
                if kind != Kind::Null {
                    a.changes = true;
                    a.added += kind.columns();
                    kind.note_new_fields(rules, path, a);
                }
            }
            (Kind::List(item), Value::Array(items)) => {
                let mut each = Assessment::default();
                for v in items {
                    item.assess(v, rules, path, &mut each);
                }
                if !each.changes {
                    return;
                }
                if items.len() < 2 {
                    a.absorb(each);
                    return;
                }
                // Items of one array can disagree among themselves ([1, "x"], or a new field
                // that is a number in one item and an object in the next): judge them joined.
                let joint = Kind::of(value, rules, path);
                let mut after = self.clone();
                after.join(&joint);
                a.changes = true;
                a.added += after.columns().saturating_sub(self.columns());
                if a.long_name.is_none() {
                    a.long_name = each.long_name;
                }
                self.note_new_conflicts(&after, rules, path, a);
            }
            (Kind::Struct(fields), Value::Object(map)) => fields.assess_at(map, rules, path, a),
            (kind, v) => {
                let other = Kind::of(v, rules, path);
                if kind.subsumes(&other) {
                    return;
                }
                a.changes = true;
                if widened(kind, &other).is_none() && a.conflict.is_none() {
                    a.conflict = Some(format!(
                        "field {:?} is {} here but {} before",
                        path.render(),
                        other.name(),
                        kind.name()
                    ));
                }
            }
        }
    }

    /// True when joining `other` would leave this type as it is.
    fn subsumes(&self, other: &Kind) -> bool {
        match (self, other) {
            (_, Kind::Null) | (Kind::Json, _) => true,
            (Kind::List(a), Kind::List(b)) => a.subsumes(b),
            (Kind::Struct(a), Kind::Struct(b)) => b
                .iter()
                .all(|(name, kb)| a.kind(name).is_some_and(|ka| ka.subsumes(kb))),
            (Kind::Float, Kind::Int) | (Kind::Str, Kind::Timestamp | Kind::Date) => true,
            (a, b) => a == b,
        }
    }

    /// Records the first place where `after` (this type joined with more) is JSON text and
    /// this type was not.
    fn note_new_conflicts(
        &self,
        after: &Kind,
        rules: &InferRules,
        path: Path<'_>,
        a: &mut Assessment,
    ) {
        match (self, after) {
            (Kind::Json, _) => {}
            (Kind::Null, after) => after.note_new_fields(rules, path, a),
            (Kind::List(b), Kind::List(c)) => b.note_new_conflicts(c, rules, path, a),
            (Kind::Struct(b), Kind::Struct(c)) => {
                for (name, kc) in c.iter() {
                    let child = path.child(name);
                    match b.kind(name) {
                        Some(kb) => kb.note_new_conflicts(kc, rules, child, a),
                        None => {
                            if name.len() > MAX_FIELD_NAME_BYTES && a.long_name.is_none() {
                                a.long_name = Some(child.render());
                            }
                            kc.note_new_fields(rules, child, a);
                        }
                    }
                }
            }
            (before, Kind::Json) if a.conflict.is_none() => {
                a.conflict = Some(format!(
                    "field {:?} holds values that conflict with its type, {}",
                    path.render(),
                    before.name()
                ));
            }
            _ => {}
        }
    }

    /// Records what a type new to the schema brings: a conflict within it, or a field name
    /// that is too long.
    fn note_new_fields(&self, rules: &InferRules, path: Path<'_>, a: &mut Assessment) {
        self.note_conflict_inside(rules, path, a);
        if a.long_name.is_none() {
            self.note_long_names(path, a);
        }
    }

    fn note_long_names(&self, path: Path<'_>, a: &mut Assessment) {
        match self {
            Kind::List(item) => item.note_long_names(path, a),
            Kind::Struct(fields) => {
                for (name, kind) in fields.iter() {
                    if a.long_name.is_some() {
                        return;
                    }
                    let child = path.child(name);
                    if name.len() > MAX_FIELD_NAME_BYTES {
                        a.long_name = Some(child.render());
                    } else {
                        kind.note_long_names(child, a);
                    }
                }
            }
            _ => {}
        }
    }

    /// Records a conflict within one value (an array mixing numbers and objects, say): the
    /// type of a new field is already JSON text somewhere that `json_columns` does not ask.
    fn note_conflict_inside(&self, rules: &InferRules, path: Path<'_>, a: &mut Assessment) {
        if a.conflict.is_some() {
            return;
        }
        match self {
            Kind::Json if !path.is_json_column(rules) => {
                a.conflict = Some(format!(
                    "field {:?} holds values of conflicting types",
                    path.render()
                ));
            }
            Kind::List(item) => item.note_conflict_inside(rules, path, a),
            Kind::Struct(fields) => {
                for (name, kind) in fields.iter() {
                    kind.note_conflict_inside(rules, path.child(name), a);
                }
            }
            _ => {}
        }
    }

    fn merge(&mut self, value: &Value, rules: &InferRules, path: Path<'_>) {
        match (&mut *self, value) {
            (_, Value::Null) | (Kind::Json, _) => {}
            (Kind::Null, v) => *self = Kind::of(v, rules, path),
            (Kind::Bool, Value::Bool(_))
            | (Kind::Str, Value::String(_))
            | (Kind::Float, Value::Number(_)) => {}
            (Kind::Int, Value::Number(n)) => {
                if !n.is_i64() {
                    *self = Kind::Float;
                }
            }
            (Kind::Timestamp | Kind::Date, Value::String(s)) => {
                let other = string_kind(s, rules);
                if other != *self {
                    *self = Kind::Str;
                }
            }
            (Kind::List(item), Value::Array(items)) => {
                for v in items {
                    item.merge(v, rules, path);
                }
            }
            (Kind::Struct(fields), Value::Object(map)) => fields.merge_at(map, rules, path),
            _ => *self = Kind::Json,
        }
    }

    /// The Arrow type this kind is written as.
    pub fn to_arrow(&self) -> DataType {
        match self {
            Kind::Null | Kind::Str | Kind::Json => DataType::Utf8,
            Kind::Bool => DataType::Boolean,
            Kind::Int => DataType::Int64,
            Kind::Float => DataType::Float64,
            Kind::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, Some(Arc::from("UTC"))),
            Kind::Date => DataType::Date32,
            Kind::List(item) => {
                DataType::List(Arc::new(Field::new("element", item.to_arrow(), true)))
            }
            Kind::Struct(fields) if fields.is_empty() => DataType::Utf8,
            Kind::Struct(fields) => DataType::Struct(fields.to_arrow()),
        }
    }

    fn normalize(&self, value: &Value) -> Value {
        match (self, value) {
            (_, Value::Null) => Value::Null,
            (Kind::Json | Kind::Str, Value::String(s)) => Value::String(s.clone()),
            (Kind::Json | Kind::Str, v) => Value::String(v.to_string()),
            (Kind::Timestamp, Value::String(s)) => {
                parse_timestamp_micros(s).map_or(Value::Null, Value::from)
            }
            (Kind::Date, Value::String(s)) => parse_date_days(s).map_or(Value::Null, Value::from),
            (Kind::Struct(fields), v) if fields.is_empty() => Value::String(v.to_string()),
            (Kind::Struct(fields), Value::Object(map)) => {
                Value::Object(fields.normalize_object(map))
            }
            (Kind::List(item), Value::Array(items)) => {
                Value::Array(items.iter().map(|v| item.normalize(v)).collect())
            }
            (_, v) => v.clone(),
        }
    }
}

/// The type two different scalar kinds widen to without a conflict, if any.
fn widened(a: &Kind, b: &Kind) -> Option<Kind> {
    match (a, b) {
        (Kind::Int, Kind::Float) | (Kind::Float, Kind::Int) => Some(Kind::Float),
        (Kind::Str | Kind::Timestamp | Kind::Date, Kind::Str | Kind::Timestamp | Kind::Date) => {
            Some(Kind::Str)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rules() -> InferRules {
        InferRules {
            json_columns: BTreeSet::from(["payload".to_string()]),
            temporal_strings: true,
        }
    }

    fn infer(rows: &[Value]) -> Fields {
        let mut f = Fields::default();
        for r in rows {
            f.merge_object(r.as_object().unwrap(), &rules());
        }
        f
    }

    fn types(f: &Fields) -> Vec<(String, DataType)> {
        f.to_arrow()
            .iter()
            .map(|f| (f.name().clone(), f.data_type().clone()))
            .collect()
    }

    #[test]
    fn widens_and_resolves_conflicts() {
        let f = infer(&[
            json!({"i": 1, "f": 1, "s": "a", "c": 1, "n": null, "o": {"x": 1}}),
            json!({"i": 2, "f": 1.5, "s": null, "c": {"deep": true}, "o": {"y": "z"}}),
        ]);
        let types = types(&f);
        assert_eq!(types[0].1, DataType::Int64);
        assert_eq!(types[1].1, DataType::Float64);
        assert_eq!(types[2].1, DataType::Utf8);
        assert_eq!(types[3].1, DataType::Utf8);
        assert_eq!(types[4].1, DataType::Utf8);
        match &types[5].1 {
            DataType::Struct(inner) => assert_eq!(inner.len(), 2),
            other => panic!("{other:?}"),
        }
        let norm = f.normalize_object(json!({"c": {"deep": true}, "i": 3}).as_object().unwrap());
        assert_eq!(norm["c"], json!("{\"deep\":true}"));
        assert_eq!(norm["i"], json!(3));
    }

    #[test]
    fn timestamps_and_dates_are_recognised_until_a_plain_string_turns_up() {
        let f = infer(&[
            json!({"at": "2026-03-01T10:00:00Z", "day": "2026-03-01", "mixed": "2026-03-01T10:00:00+01:00"}),
            json!({"at": "2026-03-01T10:00:00.123456+02:00", "day": "2026-03-02", "mixed": "soon"}),
        ]);
        let types = types(&f);
        assert_eq!(
            types[0].1,
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
        );
        assert_eq!(types[1].1, DataType::Date32);
        assert_eq!(types[2].1, DataType::Utf8);
        let norm = f.normalize_object(
            json!({"at": "1970-01-01T00:00:01.5Z", "day": "1970-01-03", "mixed": "x"})
                .as_object()
                .unwrap(),
        );
        assert_eq!(norm["at"], json!(1_500_000));
        assert_eq!(norm["day"], json!(2));
    }

    #[test]
    fn json_columns_stay_json_text() {
        let f = infer(&[json!({"payload": {"a": 1}}), json!({"payload": [1]})]);
        assert_eq!(f.kind("payload"), Some(&Kind::Json));
        let norm = f.normalize_object(json!({"payload": {"a": 1}}).as_object().unwrap());
        assert_eq!(norm["payload"], json!("{\"a\":1}"));
    }

    #[test]
    fn assessment_names_conflicts_and_counts_new_fields() {
        let f = infer(&[json!({"a": 1, "o": {"x": "s"}})]);
        let seen = |v: Value| f.assess(v.as_object().unwrap(), &rules());
        assert_eq!(
            seen(json!({"a": 2, "o": {"x": "t"}})),
            Assessment::default()
        );
        let widen = seen(json!({"a": 2.5}));
        assert!(widen.changes && widen.conflict.is_none());
        let conflict = seen(json!({"o": {"x": 5}}));
        assert_eq!(
            conflict.conflict.as_deref(),
            Some("field \"o.x\" is integer here but string before")
        );
        assert_eq!(seen(json!({"n": {"p": 1, "q": {"r": 1}}})).added, 4);
        assert_eq!(f.columns(), 3);
    }
}
