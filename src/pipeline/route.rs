//! Routing: which destination a topic goes to, and for one record its directory path and
//! decoded object, or the typed reason it is bad. A pure function of the record, so a replay
//! routes every record as before, and one that runs anywhere: a Kafka partition's reader task
//! routes its records ([`Routes::route_record`]) before the run loop takes them, so decoding
//! runs in parallel over partitions, off the loop.

use foldhash::HashMap;
use std::sync::Arc;

use bytes::Bytes;

use super::Destination;
use crate::decode::decode;
use crate::delivery::object_name;
use crate::protocol::Lineage;
use crate::schema::{Fields, Fit};
use crate::source::Record;

/// S3's limit on key length in bytes.
const MAX_KEY_BYTES: usize = 1024;

/// The destinations and the route of every topic seen.
pub(super) struct Router {
    pub destinations: Arc<Vec<Destination>>,
    routes: HashMap<Arc<str>, Option<usize>>,
}

/// The destinations, shared with the tasks that route records off the run loop.
#[derive(Debug, Clone)]
pub struct Routes {
    destinations: Arc<Vec<Destination>>,
}

/// A record, decoded and routed: its destination, and its directory path and what admitting
/// it needs (its decoded object is dropped where it was decoded), or why it is bad.
#[derive(Debug)]
pub struct Routed {
    /// The record as read.
    pub record: Record,
    /// Its topic's destination; `None` when the topic is routed nowhere.
    destination: Option<usize>,
    /// Its directory path and fit, or why it is bad.
    route: RouteResult,
}

impl Routed {
    /// What a routed record holds beyond its key and payload, but for a reason or a path
    /// of its own (see [`Routed::held`]).
    pub const OVERHEAD: usize = std::mem::size_of::<Self>();

    /// Bytes the routed record holds: the record's, its reason's, and its path's unless it
    /// shares the path of `before`, the record routed before it. (A shape is shared by the
    /// records that have it.)
    pub fn held(&self, before: Option<&Routed>) -> usize {
        let record = self.record.payload.as_ref().map_or(0, Bytes::len)
            + self.record.key.as_ref().map_or(0, Bytes::len)
            + Self::OVERHEAD;
        let path = |path: &Arc<str>| match before.map(|b| &b.route) {
            Some(Ok((shared, _))) if Arc::ptr_eq(shared, path) => 0,
            _ => path.len(),
        };
        match &self.route {
            Ok((p, Fit::Declared(Err(reason)))) => record + path(p) + reason.capacity(),
            Ok((p, _)) => record + path(p),
            Err(reason) => record + reason.capacity(),
        }
    }

    /// The parts, for the pipeline.
    pub(super) fn into_parts(self) -> (Record, Option<usize>, RouteResult) {
        (self.record, self.destination, self.route)
    }
}

/// A record's directory path and fit, or why it is bad.
pub(super) type RouteResult = Result<(Arc<str>, Fit), String>;

impl Routes {
    /// The destination of `topic`: the first that lists it, else the first that lists no
    /// topics.
    pub fn destination_of(&self, topic: &str) -> Option<usize> {
        self.destinations
            .iter()
            .position(|d| d.settings.topics.iter().any(|t| t == topic))
            .or_else(|| {
                self.destinations
                    .iter()
                    .position(|d| d.settings.topics.is_empty())
            })
    }

    /// Decodes and routes `record` for the destination of its topic. `memo` is what routing
    /// the records before left (records routed in sequence share it).
    pub fn route_record(&self, record: Record, memo: &mut RouteMemo) -> Routed {
        let destination = self.destination_of(&record.topic);
        let route = match destination {
            Some(d) => self.route(d, &record, memo),
            None => Err(String::new()),
        };
        Routed {
            record,
            destination,
            route,
        }
    }
}

impl Router {
    pub fn new(destinations: Vec<Destination>) -> Self {
        Self {
            destinations: Arc::new(destinations),
            routes: HashMap::default(),
        }
    }

    /// The destinations, to route records elsewhere.
    pub fn routes(&self) -> Routes {
        Routes {
            destinations: self.destinations.clone(),
        }
    }

    /// The shared name of a topic (records of one topic share one allocation).
    pub fn intern(&mut self, topic: &str) -> Arc<str> {
        if let Some((k, _)) = self.routes.get_key_value(topic) {
            return k.clone();
        }
        let key: Arc<str> = Arc::from(topic);
        let dest = self.routes().destination_of(topic);
        self.routes.insert(key.clone(), dest);
        key
    }

    /// The destination index of a topic already seen.
    pub fn destination(&self, topic: &str) -> Option<usize> {
        self.routes.get(topic).copied().flatten()
    }
}

impl Routes {
    /// Decodes and routes a record: its directory path and its object, or why it is bad.
    fn route(&self, dest_idx: usize, rec: &Record, memo: &mut RouteMemo) -> RouteResult {
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
        // A record of the shape before is recognised as it is parsed; only the fields the
        // route reads are decoded.
        let reads = |top: &str| s.key_template.reads(top) || s.timestamp.reads(top);
        let (object, fit) = match s
            .schema
            .fit_payload(rec.payload.as_deref(), &memo.shape, &reads)
        {
            Some(found) => found,
            None => {
                let object = decode(
                    rec.payload.as_deref(),
                    s.schema.max_record_bytes,
                    s.schema.max_depth,
                )
                .map_err(|e| e.to_string())?;
                let fit = s.schema.fit(&object, &mut memo.shape);
                (object, fit)
            }
        };
        let ts = s
            .timestamp
            .extract(rec.timestamp_ms, &object)
            .map_err(|e| e.to_string())?;
        let path = memo.path(|out| {
            s.key_template
                .render_into(out, &rec.topic, rec.partition, ts, &object)
        });
        let key_len = dest.target.prefix.len() + path.len() + memo.name_len(rec) + 2;
        if key_len > MAX_KEY_BYTES {
            return Err(format!(
                "object key would be {key_len} bytes, over the {MAX_KEY_BYTES}-byte limit"
            ));
        }
        Ok((path, fit))
    }
}

/// What routing one record leaves for the next, which is most often like it: the shape of the
/// record before (an equal shape shares it, see `SchemaSettings::fit`), its path (an equal
/// path shares it), and the length of its partition's object names.
#[derive(Debug, Default)]
pub struct RouteMemo {
    shape: Option<Arc<Fields>>,
    path: Option<Arc<str>>,
    /// Where paths are rendered: its room is reused.
    rendering: String,
    name: Option<(Arc<str>, i32, usize)>,
}

impl RouteMemo {
    /// The path `render` writes, shared with the record before when it is the same.
    fn path(&mut self, render: impl FnOnce(&mut String)) -> Arc<str> {
        self.rendering.clear();
        render(&mut self.rendering);
        match &self.path {
            Some(path) if **path == *self.rendering => path.clone(),
            _ => {
                let path: Arc<str> = Arc::from(self.rendering.as_str());
                self.path = Some(path.clone());
                path
            }
        }
    }

    /// The length of the names of objects of `rec`'s partition (lineage and start offset at
    /// their padded widths).
    fn name_len(&mut self, rec: &Record) -> usize {
        match &self.name {
            Some((topic, partition, len))
                if Arc::ptr_eq(topic, &rec.topic) && *partition == rec.partition =>
            {
                *len
            }
            _ => {
                let len = object_name(
                    &rec.topic,
                    rec.partition,
                    Some(Lineage::new(0, 0)),
                    0,
                    "parquet",
                )
                .len();
                self.name = Some((rec.topic.clone(), rec.partition, len));
                len
            }
        }
    }
}
