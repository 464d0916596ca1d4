//! Schemas: what a destination's records must look like (`[destinations.schema]`), the check
//! that admits a record or names why it is bad, and the schema each file is written with.
//!
//! Two schemas are kept in `infer` mode. Each open segment has its own, grown only from its
//! records: admitting a record (a strict type conflict, the column limit) depends on nothing
//! else, so replaying a segment after a crash sorts every record exactly as the first time.
//! Each destination and topic also has an evolving schema, the union of its sealed segments:
//! files are written with it, so a field seen once stays a column (null where absent) and its
//! type stays widened, without a new file per change.

mod decimal;
pub mod declared;
pub mod infer;
mod scan;
pub mod schema_file;

use std::sync::Arc;

use arrow::datatypes::Fields as ArrowFields;
use serde::Serialize;
use serde_json::{Map, Value};

pub use declared::{Column, Declared, Ty, UnknownFields};
pub use infer::{Assessment, Fields, InferRules, Kind, MAX_FIELD_NAME_BYTES};

/// Whether `segment` subsumes `shape`, remembering a shape it does in `admitted`. Admitting a
/// record whose shape the segment's schema subsumes changes nothing: the schema is a join of
/// the shapes of the records merged into it, and joining one it subsumes leaves it as it is.
fn subsumed(segment: &Fields, admitted: &mut Option<Arc<Fields>>, shape: &Arc<Fields>) -> bool {
    if admitted.as_ref().is_some_and(|a| Arc::ptr_eq(a, shape)) {
        return true;
    }
    if segment.subsumes(shape) {
        *admitted = Some(shape.clone());
        return true;
    }
    false
}

/// Objects nested deeper than this are bad records by default.
pub const DEFAULT_MAX_DEPTH: usize = 32;
/// Columns (fields at every depth) a schema may grow to by default.
pub const DEFAULT_MAX_COLUMNS: usize = 1000;

/// How a destination's records are typed.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum SchemaMode {
    /// Inferred from the events and evolved as they change.
    Infer {
        /// A type conflict sends the record to the bad-record policy instead of turning the
        /// field into a string column.
        strict: bool,
        #[serde(flatten)]
        rules: InferRules,
    },
    /// Fixed by the configuration; records that do not fit are bad records.
    Declared(Arc<Declared>),
}

/// `[destinations.schema]`, validated.
#[derive(Debug, Clone, Serialize)]
pub struct SchemaSettings {
    #[serde(flatten)]
    pub mode: SchemaMode,
    /// Largest payload a record may have (`[destinations.limits] max_record_size`).
    pub max_record_bytes: usize,
    /// Deepest nesting of objects and arrays a record may have.
    pub max_depth: usize,
    /// Most columns (fields at every depth) a schema may grow to.
    pub max_columns: usize,
}

impl Default for SchemaSettings {
    fn default() -> Self {
        Self {
            mode: SchemaMode::Infer {
                strict: false,
                rules: InferRules {
                    json_columns: Default::default(),
                    temporal_strings: true,
                },
            },
            max_record_bytes: crate::decode::DEFAULT_MAX_RECORD_BYTES,
            max_depth: DEFAULT_MAX_DEPTH,
            max_columns: DEFAULT_MAX_COLUMNS,
        }
    }
}

/// What admitting a record into a segment needs of it, worked out where the record was
/// decoded (off the run loop), so that the loop admits it without its decoded object in the
/// common case.
#[derive(Debug, Clone)]
pub enum Fit {
    /// Infer mode: the record's own schema. A segment whose schema subsumes it takes the
    /// record unchanged; otherwise the loop decodes the record again and admits it whole.
    Shape(Arc<Fields>),
    /// Declared mode: whether the record fits the declared schema, or why not.
    Declared(Result<(), String>),
}

impl SchemaSettings {
    /// What admitting `object` needs (see [`Fit`]). `last` is the shape of the record before
    /// (of the same destination): an equal shape shares its allocation, which lets the loop
    /// recognise a shape it has already admitted without comparing it.
    pub fn fit(&self, object: &Map<String, Value>, last: &mut Option<Arc<Fields>>) -> Fit {
        match &self.mode {
            SchemaMode::Declared(d) => Fit::Declared(d.check(object)),
            SchemaMode::Infer { rules, .. } => match last {
                Some(l) if l.describes(object, rules) => Fit::Shape(l.clone()),
                _ => {
                    let mut shape = Fields::default();
                    shape.merge_object(object, rules);
                    let shape = Arc::new(shape);
                    *last = Some(shape.clone());
                    Fit::Shape(shape)
                }
            },
        }
    }

    /// [`SchemaSettings::fit`] of a record whose payload `last` describes exactly, found
    /// without decoding it (see `scan`): the fit, and the payload's top-level fields that
    /// `keep` names, decoded. `None` when `last` does not describe it, the payload is absent
    /// or over the size limit, or the schema is declared: decode the record whole.
    pub fn fit_payload(
        &self,
        payload: Option<&[u8]>,
        last: &Option<Arc<Fields>>,
        keep: &dyn Fn(&str) -> bool,
    ) -> Option<(Map<String, Value>, Fit)> {
        let (SchemaMode::Infer { rules, .. }, Some(last), Some(payload)) =
            (&self.mode, last, payload)
        else {
            return None;
        };
        if payload.len() > self.max_record_bytes {
            return None;
        }
        let kept = last.describes_payload(payload, rules, self.max_depth, keep)?;
        Some((kept, Fit::Shape(last.clone())))
    }

    /// [`SchemaSettings::admit`] for a record known by its [`Fit`]: a shape `segment`
    /// subsumes changes nothing (and is remembered in `admitted`); otherwise `object` decodes
    /// the record again and it is admitted whole.
    pub fn admit_fit(
        &self,
        segment: &mut Fields,
        admitted: &mut Option<Arc<Fields>>,
        fit: &Fit,
        object: impl FnOnce() -> Result<Map<String, Value>, String>,
    ) -> Result<(), String> {
        match fit {
            Fit::Declared(fits) => fits.clone(),
            Fit::Shape(shape) if subsumed(segment, admitted, shape) => Ok(()),
            Fit::Shape(_) => self.admit(segment, &object()?),
        }
    }

    /// [`SchemaSettings::reshapes`] for a record known by its [`Fit`], as
    /// [`SchemaSettings::admit_fit`] does.
    pub fn reshapes_fit(
        &self,
        segment: &Fields,
        admitted: &Option<Arc<Fields>>,
        fit: &Fit,
        object: impl FnOnce() -> Result<Map<String, Value>, String>,
    ) -> bool {
        match fit {
            Fit::Declared(_) => false,
            Fit::Shape(shape) => {
                let known = admitted.as_ref().is_some_and(|a| Arc::ptr_eq(a, shape));
                // A record that no longer decodes is a bad record, which admitting it says.
                !known
                    && !segment.subsumes(shape)
                    && object().is_ok_and(|o| self.reshapes(segment, &o))
            }
        }
    }

    /// Admits a record into a segment whose own inferred schema is `segment`, or says why
    /// the record does not fit. Nothing changes when it does not.
    pub fn admit(&self, segment: &mut Fields, object: &Map<String, Value>) -> Result<(), String> {
        let (strict, rules) = match &self.mode {
            SchemaMode::Declared(d) => return d.check(object),
            SchemaMode::Infer { strict, rules } => (*strict, rules),
        };
        let a = segment.assess(object, rules);
        if !a.changes {
            return Ok(());
        }
        if let Some(path) = a.long_name {
            let shown: String = path.chars().take(40).collect();
            return Err(format!(
                "field name {shown:?}… is over {MAX_FIELD_NAME_BYTES} bytes"
            ));
        }
        if strict && let Some(conflict) = a.conflict {
            return Err(format!("{conflict} (strict = true)"));
        }
        let columns = segment.columns() + a.added;
        if a.added > 0 && columns > self.max_columns {
            return Err(format!(
                "record would grow the schema to {columns} columns, over max_columns = {}",
                self.max_columns
            ));
        }
        segment.merge_object(object, rules);
        Ok(())
    }

    /// Whether admitting `object` would change the type of a column `segment` already has
    /// (or add a field named like a metadata column): what a file with row groups already
    /// written cannot take. New top-level fields it can (see `encode::stream`).
    pub fn reshapes(&self, segment: &Fields, object: &Map<String, Value>) -> bool {
        match &self.mode {
            SchemaMode::Declared(_) => false,
            SchemaMode::Infer { rules, .. } => {
                segment.assess(object, rules).reshapes
                    || object
                        .keys()
                        .any(|k| METADATA_COLUMNS.contains(&k.as_str()) && !segment.contains(k))
            }
        }
    }

    /// The schema a segment's rows are encoded with as row groups while its files stream:
    /// the segment's own, so that where a file must be cut depends on its records alone.
    pub fn segment_schema(&self, segment: &Fields) -> FileSchema {
        match &self.mode {
            SchemaMode::Declared(d) => FileSchema::Declared(d.clone()),
            SchemaMode::Infer { .. } => FileSchema::Inferred(Arc::new(segment.clone())),
        }
    }

    /// The schema a sealed segment is written with. In `infer` mode the segment's schema is
    /// joined into `evolving` (the destination's schema for its topic) first; an evolving
    /// schema that outgrows `max_columns` starts again from the segment's. An event field
    /// named like a metadata column replaces that column only in files whose own records
    /// have it, so one odd record cannot take `_kafka_offset` away from a whole topic.
    pub fn file_schema(&self, evolving: &mut Arc<Fields>, segment: &Fields) -> FileSchema {
        match &self.mode {
            SchemaMode::Declared(d) => FileSchema::Declared(d.clone()),
            SchemaMode::Infer { .. } => {
                if !evolving.subsumes(segment) {
                    Arc::make_mut(evolving).join(segment);
                }
                if evolving.columns() > self.max_columns {
                    tracing::warn!(
                        max_columns = self.max_columns,
                        "the evolving schema outgrew max_columns; starting again from this segment's"
                    );
                    *evolving = Arc::new(segment.clone());
                }
                let shadowed: Vec<&str> = METADATA_COLUMNS
                    .iter()
                    .copied()
                    .filter(|name| evolving.contains(name) && !segment.contains(name))
                    .collect();
                if shadowed.is_empty() {
                    FileSchema::Inferred(evolving.clone())
                } else {
                    FileSchema::Inferred(Arc::new(evolving.without(&shadowed)))
                }
            }
        }
    }
}

/// The names of the `_kafka_*` metadata columns.
pub const METADATA_COLUMNS: [&str; 5] = [
    "_kafka_topic",
    "_kafka_partition",
    "_kafka_offset",
    "_kafka_timestamp",
    "_kafka_key",
];

/// The schema one file is written with.
#[derive(Debug, Clone)]
pub enum FileSchema {
    Inferred(Arc<Fields>),
    Declared(Arc<Declared>),
}

impl FileSchema {
    /// This schema's top-level fields that `segment` has too, with this schema's types.
    pub fn only_fields_of(&self, segment: &Fields) -> FileSchema {
        match self {
            FileSchema::Inferred(mine) => {
                if mine.iter().all(|(name, _)| segment.contains(name)) {
                    return self.clone();
                }
                let drop: Vec<&str> = mine
                    .iter()
                    .map(|(name, _)| name)
                    .filter(|name| !segment.contains(name))
                    .collect();
                FileSchema::Inferred(Arc::new(mine.without(&drop)))
            }
            FileSchema::Declared(_) => self.clone(),
        }
    }

    /// This schema with the top-level fields of `other` it lacks added (with `other`'s
    /// types); the types of the fields it has stay as they are.
    pub fn with_new_fields_of(&self, other: &FileSchema) -> FileSchema {
        match (self, other) {
            (FileSchema::Inferred(mine), FileSchema::Inferred(theirs)) => {
                if theirs.iter().all(|(name, _)| mine.contains(name)) {
                    return self.clone();
                }
                let mut grown = mine.as_ref().clone();
                grown.add_missing(theirs);
                FileSchema::Inferred(Arc::new(grown))
            }
            _ => self.clone(),
        }
    }

    /// The user columns, in order.
    pub fn to_arrow(&self) -> ArrowFields {
        match self {
            Self::Inferred(f) => f.to_arrow(),
            Self::Declared(d) => declared::to_arrow(&d.columns),
        }
    }

    /// True when a top-level column of this name exists.
    pub fn contains(&self, name: &str) -> bool {
        match self {
            Self::Inferred(f) => f.contains(name),
            Self::Declared(d) => d.columns.iter().any(|c| c.name == name),
        }
    }

    /// Whether raw payloads may go straight to the Arrow JSON decoder. Declared schemas
    /// always go through [`FileSchema::normalize_object`]: the decoder reads numbers in a
    /// timestamp column as microseconds where a declared timestamp means milliseconds.
    pub fn raw_decodable(&self) -> bool {
        matches!(self, Self::Inferred(_))
    }

    /// A record rewritten into exactly the column types.
    pub fn normalize_object(&self, object: &Map<String, Value>) -> Map<String, Value> {
        match self {
            Self::Inferred(f) => f.normalize_object(object),
            Self::Declared(d) => d.normalize_object(object),
        }
    }
}

/// The nesting depth of an object: `{}` and `{"a": 1}` are 1, `{"a": [1]}` is 2.
pub fn depth_of_object(object: &Map<String, Value>) -> usize {
    let mut max = 1;
    let mut stack: Vec<(&Value, usize)> = object
        .values()
        .filter(|v| is_container(v))
        .map(|v| (v, 1))
        .collect();
    deepest(&mut stack, &mut max);
    max
}

fn is_container(v: &Value) -> bool {
    matches!(v, Value::Array(_) | Value::Object(_))
}

/// The nesting depth of a value: a scalar is 0, `{"a": 1}` and `[1]` are 1.
pub fn depth(value: &Value) -> usize {
    let mut max = 0;
    deepest(&mut vec![(value, 0usize)], &mut max);
    max
}

// Iterative, so a hostile record cannot exhaust the stack here.
fn deepest(stack: &mut Vec<(&Value, usize)>, max: &mut usize) {
    while let Some((v, d)) = stack.pop() {
        match v {
            // Only containers go on the stack: scalars add no depth.
            Value::Array(items) => {
                *max = (*max).max(d + 1);
                stack.extend(items.iter().filter(|v| is_container(v)).map(|i| (i, d + 1)));
            }
            Value::Object(map) => {
                *max = (*max).max(d + 1);
                stack.extend(map.values().filter(|v| is_container(v)).map(|i| (i, d + 1)));
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests;
