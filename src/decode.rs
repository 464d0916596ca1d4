//! Record payloads → JSON objects, and the reasons a payload is a bad record.

use serde_json::{Map, Value};
use thiserror::Error;

/// The largest payload accepted; larger records are bad records, not allocations.
pub const DEFAULT_MAX_RECORD_BYTES: usize = 10 << 20;

/// Why a payload is not a usable event.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum BadPayload {
    #[error("record has no payload (a tombstone)")]
    Tombstone,
    #[error("payload of {size} bytes is over the {limit}-byte record limit")]
    TooLarge { size: usize, limit: usize },
    #[error("payload is not valid JSON: {0}")]
    Json(String),
    #[error("payload is JSON {0}, but events must be JSON objects")]
    NotAnObject(&'static str),
    #[error("payload is nested {depth} levels deep, over the limit of {limit} (max_depth)")]
    TooDeep { depth: usize, limit: usize },
}

/// Parses one payload into a JSON object no larger than `max_bytes` and nested no deeper than
/// `max_depth`.
pub fn decode(
    payload: Option<&[u8]>,
    max_bytes: usize,
    max_depth: usize,
) -> Result<Map<String, Value>, BadPayload> {
    let bytes = payload.ok_or(BadPayload::Tombstone)?;
    if bytes.len() > max_bytes {
        return Err(BadPayload::TooLarge {
            size: bytes.len(),
            limit: max_bytes,
        });
    }
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => {
            let depth = crate::schema::depth_of_object(&map);
            if depth > max_depth {
                return Err(BadPayload::TooDeep {
                    depth,
                    limit: max_depth,
                });
            }
            Ok(map)
        }
        Ok(other) => Err(BadPayload::NotAnObject(json_type_name(&other))),
        Err(e) => Err(BadPayload::Json(e.to_string())),
    }
}

/// What kind of JSON value this is, for messages: "a number", "an object", ….
pub fn json_type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_pass_everything_else_is_named() {
        assert!(decode(Some(br#"{"a":1}"#), 100, 8).is_ok());
        assert_eq!(decode(None, 100, 8), Err(BadPayload::Tombstone));
        assert_eq!(
            decode(Some(b"[1]"), 100, 8),
            Err(BadPayload::NotAnObject("an array"))
        );
        assert!(matches!(
            decode(Some(b"{\"a\":"), 100, 8),
            Err(BadPayload::Json(m)) if m.contains("line 1")
        ));
        assert!(matches!(
            decode(Some(b"\xff\xfe"), 100, 8),
            Err(BadPayload::Json(_))
        ));
        assert_eq!(
            decode(Some(br#"{"a":[[1]]}"#), 100, 2),
            Err(BadPayload::TooDeep { depth: 3, limit: 2 })
        );
        assert_eq!(
            decode(Some(&[b' '; 101]), 100, 8),
            Err(BadPayload::TooLarge {
                size: 101,
                limit: 100
            })
        );
    }
}
