//! Schema inference: JSON objects → an Arrow schema, and values normalised to fit it.
//!
//! Inference is per file for now. A field whose values disagree in type (a number here, an
//! object there) becomes a string column holding the JSON text, so no record is ever rejected
//! for its shape; integers widen to floats where both appear.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Fields as ArrowFields};
use serde_json::{Map, Value};

/// Objects nested deeper than this are kept as JSON text rather than as structs.
pub const MAX_DEPTH: usize = 32;

/// The inferred type of one field.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// Only nulls seen so far.
    Null,
    Bool,
    Int,
    Float,
    Str,
    List(Box<Kind>),
    Struct(Fields),
    /// Conflicting types (or too deep): stored as JSON text.
    Json,
}

/// The fields of an object, in order of first appearance.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Fields {
    names: Vec<String>,
    kinds: Vec<Kind>,
    index: HashMap<String, usize>,
}

impl Fields {
    /// Widens the schema to take in one more object.
    pub fn merge_object(&mut self, object: &Map<String, Value>) {
        self.merge_at(object, 0);
    }

    /// True when no field has been seen.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// True when a top-level field of this name exists.
    pub fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    fn merge_at(&mut self, object: &Map<String, Value>, depth: usize) {
        for (name, value) in object {
            match self.index.get(name) {
                Some(&i) => self.kinds[i].merge(value, depth + 1),
                None => {
                    self.index.insert(name.clone(), self.names.len());
                    self.names.push(name.clone());
                    self.kinds.push(Kind::of(value, depth + 1));
                }
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

    /// Rewrites an object so that every value has exactly the inferred type.
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

impl Kind {
    fn of(value: &Value, depth: usize) -> Kind {
        match value {
            Value::Null => Kind::Null,
            Value::Bool(_) => Kind::Bool,
            Value::Number(n) if n.is_i64() => Kind::Int,
            Value::Number(_) => Kind::Float,
            Value::String(_) => Kind::Str,
            _ if depth >= MAX_DEPTH => Kind::Json,
            Value::Array(items) => {
                let mut item = Kind::Null;
                for v in items {
                    item.merge(v, depth + 1);
                }
                Kind::List(Box::new(item))
            }
            Value::Object(map) => {
                let mut fields = Fields::default();
                fields.merge_at(map, depth);
                Kind::Struct(fields)
            }
        }
    }

    fn merge(&mut self, value: &Value, depth: usize) {
        match (&mut *self, value) {
            (_, Value::Null) | (Kind::Json, _) => {}
            (Kind::Null, v) => *self = Kind::of(v, depth),
            (Kind::Bool, Value::Bool(_))
            | (Kind::Str, Value::String(_))
            | (Kind::Float, Value::Number(_)) => {}
            (Kind::Int, Value::Number(n)) => {
                if !n.is_i64() {
                    *self = Kind::Float;
                }
            }
            (Kind::List(item), Value::Array(items)) => {
                for v in items {
                    item.merge(v, depth + 1);
                }
            }
            (Kind::Struct(fields), Value::Object(map)) => fields.merge_at(map, depth),
            _ => *self = Kind::Json,
        }
    }

    fn to_arrow(&self) -> DataType {
        match self {
            Kind::Null | Kind::Str | Kind::Json => DataType::Utf8,
            Kind::Bool => DataType::Boolean,
            Kind::Int => DataType::Int64,
            Kind::Float => DataType::Float64,
            Kind::List(item) => DataType::List(Arc::new(Field::new("item", item.to_arrow(), true))),
            Kind::Struct(fields) if fields.is_empty() => DataType::Utf8,
            Kind::Struct(fields) => DataType::Struct(fields.to_arrow()),
        }
    }

    fn normalize(&self, value: &Value) -> Value {
        match (self, value) {
            (_, Value::Null) => Value::Null,
            (Kind::Json, Value::String(s)) => Value::String(s.clone()),
            (Kind::Json, v) => Value::String(v.to_string()),
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn infer(rows: &[Value]) -> Fields {
        let mut f = Fields::default();
        for r in rows {
            f.merge_object(r.as_object().unwrap());
        }
        f
    }

    #[test]
    fn widens_and_resolves_conflicts() {
        let f = infer(&[
            json!({"i": 1, "f": 1, "s": "a", "c": 1, "n": null, "o": {"x": 1}}),
            json!({"i": 2, "f": 1.5, "s": null, "c": {"deep": true}, "o": {"y": "z"}}),
        ]);
        let arrow = f.to_arrow();
        let types: Vec<_> = arrow
            .iter()
            .map(|f| (f.name().as_str(), f.data_type().clone()))
            .collect();
        assert_eq!(types[0], ("i", DataType::Int64));
        assert_eq!(types[1], ("f", DataType::Float64));
        assert_eq!(types[2], ("s", DataType::Utf8));
        assert_eq!(types[3], ("c", DataType::Utf8));
        assert_eq!(types[4], ("n", DataType::Utf8));
        match &types[5].1 {
            DataType::Struct(inner) => assert_eq!(inner.len(), 2),
            other => panic!("{other:?}"),
        }
        let norm = f.normalize_object(json!({"c": {"deep": true}, "i": 3}).as_object().unwrap());
        assert_eq!(norm["c"], json!("{\"deep\":true}"));
        assert_eq!(norm["i"], json!(3));
    }

    #[test]
    fn deep_nesting_becomes_json_text() {
        let mut v = json!(1);
        for _ in 0..(MAX_DEPTH + 5) {
            v = json!({ "x": v });
        }
        let f = infer(&[v]);
        let mut t = f.to_arrow()[0].data_type().clone();
        let mut depth = 0;
        while let DataType::Struct(inner) = t {
            t = inner[0].data_type().clone();
            depth += 1;
        }
        assert_eq!(t, DataType::Utf8);
        assert!(depth < MAX_DEPTH);
    }
}
