//! Routing: which destination a topic goes to, and for one record its directory path and
//! decoded object, or the typed reason it is bad. A pure function of the record, so a replay
//! routes every record as before.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Map, Value};

use super::Destination;
use crate::decode::decode;
use crate::delivery::object_name;
use crate::protocol::Lineage;
use crate::source::Record;

/// S3's limit on key length in bytes.
const MAX_KEY_BYTES: usize = 1024;

/// The destinations and the route of every topic seen.
pub(super) struct Router {
    pub destinations: Vec<Destination>,
    routes: HashMap<Arc<str>, Option<usize>>,
}

impl Router {
    pub fn new(destinations: Vec<Destination>) -> Self {
        Self {
            destinations,
            routes: HashMap::new(),
        }
    }

    /// The shared name of a topic (records of one topic share one allocation).
    pub fn intern(&mut self, topic: &str) -> Arc<str> {
        if let Some((k, _)) = self.routes.get_key_value(topic) {
            return k.clone();
        }
        let key: Arc<str> = Arc::from(topic);
        let dest = self
            .destinations
            .iter()
            .position(|d| d.settings.topics.iter().any(|t| t == topic))
            .or_else(|| {
                self.destinations
                    .iter()
                    .position(|d| d.settings.topics.is_empty())
            });
        self.routes.insert(key.clone(), dest);
        key
    }

    /// The destination index of a topic, if it is routed.
    pub fn destination_of(&mut self, topic: &str) -> Option<usize> {
        let topic = self.intern(topic);
        self.routes.get(&topic).copied().flatten()
    }

    /// The destination index of a topic already seen.
    pub fn destination(&self, topic: &str) -> Option<usize> {
        self.routes.get(topic).copied().flatten()
    }

    /// Decodes and routes a record: its directory path and its object, or why it is bad.
    pub fn route(
        &self,
        dest_idx: usize,
        rec: &Record,
    ) -> Result<(String, Map<String, Value>), String> {
        let dest = &self.destinations[dest_idx];
        let s = &dest.settings;
        // The key is kept with the row (`_kafka_key`): it is bounded like the payload.
        if let Some(key) = &rec.key
            && key.len() > s.schema.max_record_bytes
        {
            return Err(format!(
                "the Kafka key is {} bytes, over the {}-byte record limit (max_record_bytes)",
                key.len(),
                s.schema.max_record_bytes
            ));
        }
        let object = decode(
            rec.payload.as_deref(),
            s.schema.max_record_bytes,
            s.schema.max_depth,
        )
        .map_err(|e| e.to_string())?;
        let ts = s
            .timestamp
            .extract(rec.timestamp_ms, &object)
            .map_err(|e| e.to_string())?;
        let path = s
            .key_template
            .render(&rec.topic, rec.partition, ts, &object);
        let name_len = object_name(
            &rec.topic,
            rec.partition,
            Some(Lineage::new(0, 0)),
            0,
            "parquet",
        )
        .len();
        let key_len = dest.target.prefix.len() + path.len() + name_len + 2;
        if key_len > MAX_KEY_BYTES {
            return Err(format!(
                "object key would be {key_len} bytes, over the {MAX_KEY_BYTES}-byte limit"
            ));
        }
        Ok((path, object))
    }
}
