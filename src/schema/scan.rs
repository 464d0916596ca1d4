//! Recognising a payload's shape while parsing it, without building its object.
//!
//! Most records of a stream have the shape of the record before. Building a record's whole
//! object (every key and string allocated, every object a map) only to find that it has that
//! shape costs more than encoding it into Parquet. So the payload's JSON is walked once
//! against the known shape, through serde's visitors: keys are compared where they lie in
//! the payload, scalars are checked by kind, and only the top-level fields the route reads
//! (its key template's and timestamp's) are decoded. The first difference stops the walk;
//! the caller then decodes the record whole, as it would have without this.
//!
//! The walk answers exactly what [`Fields::describes`] answers of the decoded object, and it
//! succeeds only where decoding does (valid JSON, an object, within the depth limit). The
//! property test `scanning_a_payload_is_describing_its_object` holds it to that.

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use super::depth;
use super::infer::{Fields, InferRules, Kind, Path, string_kind};

/// The outcome of any difference; its text is never shown (the record is decoded whole).
fn differs<E: de::Error>() -> E {
    E::custom("the payload differs from the shape")
}

/// What the walk needs everywhere.
#[derive(Clone, Copy)]
struct Walk<'a> {
    rules: &'a InferRules,
    max_depth: usize,
}

impl Fields {
    /// When `payload` is a JSON object that this shape describes exactly (what
    /// [`Fields::describes`] says of its decoded object) and nested no deeper than
    /// `max_depth`: its top-level fields that `keep` names, decoded. `None` when it is not, or
    /// not valid JSON: decode it whole to know more.
    pub fn describes_payload(
        &self,
        payload: &[u8],
        rules: &InferRules,
        max_depth: usize,
        keep: &dyn Fn(&str) -> bool,
    ) -> Option<Map<String, Value>> {
        let walk = Walk { rules, max_depth };
        let mut kept = Map::new();
        let mut de = serde_json::Deserializer::from_slice(payload);
        let root = Object {
            walk,
            fields: self,
            path: Path::ROOT,
            depth: 1,
            keep: Some((keep, &mut kept)),
        };
        de.deserialize_any(root).ok()?;
        de.end().ok()?;
        Some(kept)
    }
}

/// An object expected to have exactly `fields`, as a container at `depth`.
struct Object<'a, 'k> {
    walk: Walk<'a>,
    fields: &'a Fields,
    path: Path<'a>,
    depth: usize,
    /// At the top level: which fields to decode, and where.
    keep: Option<Keep<'k>>,
}

/// Which top-level fields to decode, and the map they go to.
type Keep<'k> = (&'k dyn Fn(&str) -> bool, &'k mut Map<String, Value>);

impl<'de> Visitor<'de> for Object<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an object")
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
        if self.depth > self.walk.max_depth {
            return Err(differs());
        }
        let mut expected = self.fields.iter();
        loop {
            let want = expected.next();
            // A key where none is expected, or another than expected, is a difference: so is
            // a repeated key (the decoded object would hold it once).
            if map
                .next_key_seed(Key(want.map(|(name, _)| name)))?
                .is_none()
            {
                return match want {
                    None => Ok(()),
                    Some(_) => Err(differs()),
                };
            }
            let Some((name, kind)) = want else {
                return Err(differs());
            };
            let path = self.path.child(name);
            match &mut self.keep {
                Some((keep, kept)) if keep(name) => {
                    let value: Value = map.next_value()?;
                    // As a field of the top level, a container here is at depth 2.
                    if !kind.describes(&value, self.walk.rules, path)
                        || self.depth + depth(&value) > self.walk.max_depth
                    {
                        return Err(differs());
                    }
                    kept.insert(name.to_string(), value);
                }
                _ => map.next_value_seed(Scalar {
                    walk: self.walk,
                    kind,
                    path,
                    depth: self.depth + 1,
                })?,
            }
        }
    }
}

/// A key expected to be `.0`.
struct Key<'a>(Option<&'a str>);

impl<'de> DeserializeSeed<'de> for Key<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a key")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<(), E> {
        match self.0 {
            Some(want) if want == key => Ok(()),
            _ => Err(differs()),
        }
    }
}

/// A value expected to be of `kind` (any value: the name is for the common case), where a
/// container would be at `depth`.
struct Scalar<'a> {
    walk: Walk<'a>,
    kind: &'a Kind,
    path: Path<'a>,
    depth: usize,
}

impl Scalar<'_> {
    fn is(&self, kind: &Kind) -> bool {
        self.kind == kind
    }

    /// `value` decoded whole, checked as the decoded object's would be.
    fn check_decoded<E: de::Error>(&self, value: &Value) -> Result<(), E> {
        // A container here is at `depth`; `depth(value)` counts it as 1.
        let fits = self.depth - 1 + depth(value) <= self.walk.max_depth;
        match fits && self.kind.describes(value, self.walk.rules, self.path) {
            true => Ok(()),
            false => Err(differs()),
        }
    }
}

impl<'de> DeserializeSeed<'de> for Scalar<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        if self.path.is_json_column(self.walk.rules) {
            // Any value is JSON text here; only its depth counts.
            let value = Value::deserialize(d)?;
            return self.check_decoded(&value);
        }
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Scalar<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        ok_if(self.is(&Kind::Null))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        ok_if(self.is(&Kind::Bool))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        ok_if(self.is(&Kind::Int))
    }

    fn visit_u64<E: de::Error>(self, n: u64) -> Result<(), E> {
        // Decoded, an integer above i64's range is a number that is not an i64: a float.
        match i64::try_from(n) {
            Ok(_) => ok_if(self.is(&Kind::Int)),
            Err(_) => ok_if(self.is(&Kind::Float)),
        }
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        ok_if(self.is(&Kind::Float))
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<(), E> {
        ok_if(
            matches!(self.kind, Kind::Str | Kind::Timestamp | Kind::Date)
                && *self.kind == string_kind(s, self.walk.rules),
        )
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        let Kind::Struct(fields) = self.kind else {
            return Err(differs());
        };
        Object {
            walk: self.walk,
            fields,
            path: self.path,
            depth: self.depth,
            keep: None,
        }
        .visit_map(map)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        // A list's item type joins its items: they are decoded and checked whole.
        if !matches!(self.kind, Kind::List(_)) {
            return Err(differs());
        }
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Value>()? {
            items.push(item);
        }
        self.check_decoded(&Value::Array(items))
    }
}

fn ok_if<E: de::Error>(same: bool) -> Result<(), E> {
    match same {
        true => Ok(()),
        false => Err(differs()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(json: &str, rules: &InferRules) -> Fields {
        let object: Map<String, Value> = serde_json::from_str(json).unwrap();
        let mut fields = Fields::default();
        fields.merge_object(&object, rules);
        fields
    }

    fn rules() -> InferRules {
        InferRules {
            json_columns: ["j".to_string()].into(),
            temporal_strings: true,
        }
    }

    #[test]
    fn a_payload_of_the_shape_is_described_and_its_read_fields_kept() {
        let rules = rules();
        let known = shape(
            r#"{"id":1,"ts":"2026-11-30T10:00:00Z","k":"a","o":{"x":[1,2]},"j":{"any":1}}"#,
            &rules,
        );
        let payload =
            br#"{"id":7,"ts":"2026-12-01T00:00:00+01:00","k":"b\"q","o":{"x":[3]},"j":[1]}"#;
        let kept = known
            .describes_payload(payload, &rules, 32, &|n| n == "k" || n == "o")
            .unwrap();
        assert_eq!(
            Value::Object(kept),
            serde_json::json!({"k": "b\"q", "o": {"x": [3]}})
        );
    }

    #[test]
    fn differences_and_invalid_payloads_are_not_described() {
        let rules = rules();
        let known = shape(r#"{"a":1,"b":"x"}"#, &rules);
        let none = |p: &[u8]| known.describes_payload(p, &rules, 32, &|_| true);
        assert!(none(br#"{"a":1,"b":"y"}"#).is_some());
        for payload in [
            &br#"{"a":1.5,"b":"x"}"#[..],
            br#"{"a":1,"b":"2026-11-30"}"#,
            br#"{"b":"x","a":1}"#,
            br#"{"a":1}"#,
            br#"{"a":1,"b":"x","c":null}"#,
            br#"{"a":1,"b":"x","a":2}"#,
            br#"{"a":18446744073709551615,"b":"x"}"#,
            br#"{"a":1,"b":"x"} x"#,
            br#"{"a":1,"b":"x""#,
            br#"[1]"#,
            b"",
        ] {
            assert!(
                none(payload).is_none(),
                "{}",
                String::from_utf8_lossy(payload)
            );
        }
    }

    #[test]
    fn the_depth_limit_holds_in_scanned_and_kept_fields() {
        let rules = rules();
        let payload = br#"{"o":{"p":{"q":1}},"l":[[1]]}"#;
        let known = shape(std::str::from_utf8(payload).unwrap(), &rules);
        for keep in [false, true] {
            let keep = move |_: &str| keep;
            assert!(known.describes_payload(payload, &rules, 3, &keep).is_some());
            assert!(known.describes_payload(payload, &rules, 2, &keep).is_none());
        }
    }
}
