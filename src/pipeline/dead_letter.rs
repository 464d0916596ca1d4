//! The dead-letter line for a bad record: its coordinates, the reason, and the raw bytes.

use base64::Engine as _;
use serde_json::{Map, Value, json};

use crate::source::Record;

/// One NDJSON line (without newline). Key and payload are kept as text when they are UTF-8,
/// as `key_base64` / `payload_base64` otherwise, so nothing is lost or mangled.
pub fn dead_letter_line(rec: &Record, reason: &str) -> Vec<u8> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut map = Map::new();
    map.insert("topic".into(), json!(&*rec.topic));
    map.insert("partition".into(), json!(rec.partition));
    map.insert("offset".into(), json!(rec.offset));
    map.insert("timestamp_ms".into(), json!(rec.timestamp_ms));
    map.insert("reason".into(), json!(reason));
    for (name, bytes) in [
        ("key", rec.key.as_deref()),
        ("payload", rec.payload.as_deref()),
    ] {
        match bytes {
            None => {
                map.insert(name.into(), Value::Null);
            }
            Some(bytes) => match std::str::from_utf8(bytes) {
                Ok(text) => {
                    map.insert(name.into(), Value::String(text.to_string()));
                }
                Err(_) => {
                    map.insert(format!("{name}_base64"), Value::String(b64.encode(bytes)));
                }
            },
        }
    }
    // Serialising a map of plain values cannot fail.
    serde_json::to_vec(&Value::Object(map)).unwrap_or_default()
}
