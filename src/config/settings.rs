//! Validated, typed settings built from the raw file; everything downstream reads these.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Serialize, Serializer};

use super::destination::destination;
use super::raw::{RawConfig, RawSource, RawTelemetry, RawWorker};
use super::units::{format_duration, parse_duration, parse_size};
use crate::partition::{KeyTemplate, TimestampSource};

/// The default object key template.
pub const DEFAULT_KEY_TEMPLATE: &str = "{topic}/dt={ts:%Y-%m-%d}/hour={ts:%H}";
/// The topic name records from a file source carry.
pub const FILE_TOPIC: &str = "file";

/// The whole, validated configuration.
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    pub source: SourceSettings,
    pub destinations: Vec<DestinationSettings>,
    pub worker: WorkerSettings,
    pub telemetry: TelemetrySettings,
}

/// Where records come from.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SourceSettings {
    Kafka(KafkaSettings),
    File(FileSettings),
}

/// A Kafka consumer group.
#[derive(Debug, Clone, Serialize)]
pub struct KafkaSettings {
    pub brokers: String,
    pub group_id: String,
    pub topics: Vec<String>,
    pub properties: KafkaProperties,
}

/// librdkafka properties; values of sensitive keys (passwords, secrets, keys) are redacted
/// whenever they are printed.
#[derive(Clone, Default)]
pub struct KafkaProperties(pub BTreeMap<String, String>);

impl KafkaProperties {
    /// Everything is redacted but the properties known to be harmless: a word list of secrets
    /// would miss the next one librdkafka adds (and every `sasl.*` or `ssl.*` value may be
    /// one, inline PEM keys included).
    fn is_sensitive(key: &str) -> bool {
        const HARMLESS: &[&str] = &[
            "auto.offset.reset",
            "bootstrap.servers",
            "check.crcs",
            "client.id",
            "client.rack",
            "enable.auto.commit",
            "enable.auto.offset.store",
            "enable.partition.eof",
            "fetch.max.bytes",
            "fetch.min.bytes",
            "fetch.wait.max.ms",
            "group.instance.id",
            "heartbeat.interval.ms",
            "isolation.level",
            "max.partition.fetch.bytes",
            "max.poll.interval.ms",
            "partition.assignment.strategy",
            "queued.max.messages.kbytes",
            "queued.min.messages",
            "sasl.mechanism",
            "sasl.mechanisms",
            "security.protocol",
            "session.timeout.ms",
            "socket.timeout.ms",
            "ssl.endpoint.identification.algorithm",
            "statistics.interval.ms",
            "topic.metadata.refresh.interval.ms",
        ];
        !HARMLESS.contains(&key)
    }

    fn redacted(&self) -> BTreeMap<&str, &str> {
        self.0
            .iter()
            .map(|(k, v)| {
                let shown = if Self::is_sensitive(k) {
                    "<redacted>"
                } else {
                    v.as_str()
                };
                (k.as_str(), shown)
            })
            .collect()
    }
}

impl fmt::Debug for KafkaProperties {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.redacted()).finish()
    }
}

impl Serialize for KafkaProperties {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.redacted().serialize(s)
    }
}

/// NDJSON from a file or standard input.
#[derive(Debug, Clone, Serialize)]
pub struct FileSettings {
    /// `None` reads standard input.
    pub path: Option<PathBuf>,
}

/// One destination: a bucket (or directory), its layout and its policies.
#[derive(Debug, Clone, Serialize)]
pub struct DestinationSettings {
    pub name: String,
    /// Topics routed here; empty means every topic (allowed for a single destination only).
    pub topics: Vec<String>,
    pub location: Location,
    /// The store's kind; S3 destinations only (`aws` for a local directory, unused there).
    pub provider: super::connection::Provider,
    pub region: String,
    pub endpoint: Option<String>,
    pub path_style: bool,
    /// Encryption, ACL and storage class sent with every object.
    pub write: super::connection::WriteOptions,
    #[serde(serialize_with = "as_template")]
    pub key_template: KeyTemplate,
    /// The zone `key_template` renders `{ts:…}` in (the template holds it; shown here).
    #[serde(serialize_with = "as_zone")]
    pub timezone: chrono_tz::Tz,
    #[serde(serialize_with = "as_timestamp")]
    pub timestamp: TimestampSource,
    pub on_bad_record: BadRecordPolicy,
    pub overwrite_protection: bool,
    /// The connection test runs at start-up; nothing is consumed for this destination until
    /// it passes.
    pub preflight: bool,
    pub auth: super::auth::AuthSettings,
    pub rotation: RotationSettings,
    pub parquet: ParquetSettings,
    pub upload: UploadSettings,
    /// How records are typed, and the limits a record must keep to.
    pub schema: crate::schema::SchemaSettings,
}

/// How objects are sent: one PUT, or a multipart upload above a threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct UploadSettings {
    /// Objects larger than this go up as multipart uploads.
    pub multipart_threshold: u64,
    /// Size of each multipart part (the last one may be smaller).
    pub part_size: u64,
    /// How long one request to the store may take, plus a second per MiB of its body: a
    /// store that does not answer in time (a black-hole endpoint, a hung connection) fails
    /// the attempt as a transient error instead of holding an upload slot.
    pub request_timeout: Duration,
}

impl Default for UploadSettings {
    fn default() -> Self {
        Self {
            multipart_threshold: 32 << 20,
            part_size: 16 << 20,
            request_timeout: Duration::from_secs(20),
        }
    }
}

/// Where objects are written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    S3 { bucket: String, prefix: String },
    Local { root: PathBuf },
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::S3 { bucket, prefix } if prefix.is_empty() => write!(f, "s3://{bucket}"),
            Self::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
            Self::Local { root } => write!(f, "file://{}", root.display()),
        }
    }
}

impl Serialize for Location {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// What happens to a record that cannot be decoded or routed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BadRecordPolicy {
    /// Written to `{prefix}/_errors/{topic}/` with the reason (the default).
    DeadLetter,
    /// Stop the run, naming the record.
    Fail,
    /// Count, log and drop.
    Skip,
}

/// When an open segment is sealed.
#[derive(Debug, Clone, Serialize)]
pub struct RotationSettings {
    pub max_records: u64,
    /// Buffered record bytes (raw JSON) per segment; unlimited unless set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<u64>,
    /// Encoded Parquet bytes per object: the size objects are cut at.
    pub target_file_size: u64,
    #[serde(serialize_with = "as_duration")]
    pub max_age: Duration,
    pub max_open_paths: usize,
}

/// Parquet writer options.
#[derive(Debug, Clone, Serialize)]
pub struct ParquetSettings {
    pub compression: Compression,
    pub row_group_size: usize,
    /// Record bytes (raw JSON) after which a file's rows are encoded as a row group and the
    /// file starts streaming out.
    pub row_group_bytes: usize,
    /// The `_kafka_*` columns added to every row.
    pub metadata: MetadataColumns,
}

/// Which `_kafka_*` metadata columns files get (`[destinations.schema] metadata_columns`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct MetadataColumns {
    pub topic: bool,
    pub partition: bool,
    pub offset: bool,
    pub timestamp: bool,
    /// `_kafka_key`, in files where at least one record has a key.
    pub key: bool,
}

impl MetadataColumns {
    /// Every metadata column (the default).
    pub const ALL: Self = Self {
        topic: true,
        partition: true,
        offset: true,
        timestamp: true,
        key: true,
    };
    /// None at all.
    pub const NONE: Self = Self {
        topic: false,
        partition: false,
        offset: false,
        timestamp: false,
        key: false,
    };
}

/// Parquet column compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    Zstd,
    Snappy,
    None,
}

/// Worker-wide limits.
#[derive(Debug, Clone, Serialize)]
pub struct WorkerSettings {
    #[serde(serialize_with = "as_duration")]
    pub shutdown_timeout: Duration,
    #[serde(serialize_with = "as_duration")]
    pub startup_timeout: Duration,
    pub max_in_flight_segments: usize,
    pub max_concurrent_uploads: usize,
    /// Everything pail holds, in bytes: see [`MemoryShares`].
    pub memory_limit: usize,
    /// Bytes buffered in open and in-flight segments before the largest is sealed early and
    /// consumption waits for uploads: the pipeline's share of `memory_limit`, unless set
    /// explicitly.
    pub max_buffer_bytes: usize,
    /// Delay between retries of an upload the store refused for good (access denied, missing
    /// bucket, bad credentials): the data is kept and the destination's partitions paused.
    #[serde(serialize_with = "as_duration")]
    pub permanent_error_retry: Duration,
}

/// The smallest `worker.memory_limit`: below it the shares leave too little for one segment
/// of ordinary records per partition.
pub const MIN_MEMORY_LIMIT: usize = 16 << 20;

/// How `worker.memory_limit` is divided. Each share is enforced where that memory lives; the
/// part not shared out is headroom for what is not buffered data (the encoders' working set,
/// one Parquet object per concurrent encode, the process itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct MemoryShares {
    /// Segments open, sealed and waiting for their intent commit, and being uploaded: three
    /// eighths.
    pub pipeline: usize,
    /// librdkafka's prefetch queues, over every partition of the configured topics: a
    /// quarter.
    pub fetch_queues: usize,
    /// Records read from librdkafka that the run loop has not taken yet: a thirty-second.
    pub read_ahead: usize,
}

impl MemoryShares {
    /// The shares of `limit`.
    pub fn of(limit: usize) -> Self {
        Self {
            pipeline: limit / 8 * 3,
            fetch_queues: limit / 4,
            read_ahead: limit / 32,
        }
    }
}

impl WorkerSettings {
    /// How the memory limit is divided; an explicit `max_buffer_bytes` replaces the pipeline's
    /// share.
    pub fn memory(&self) -> MemoryShares {
        MemoryShares {
            pipeline: self.max_buffer_bytes,
            ..MemoryShares::of(self.memory_limit)
        }
    }
}

/// `[telemetry]`: the health and metrics endpoint.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TelemetrySettings {
    /// Address to serve `/livez` (`/healthz`), `/readyz` and `/metrics` on; none means no
    /// endpoint.
    pub listen: Option<std::net::SocketAddr>,
}

pub(super) fn as_duration<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_duration(*d))
}

fn as_template<S: Serializer>(t: &KeyTemplate, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(t.as_str())
}

fn as_zone<S: Serializer>(z: &chrono_tz::Tz, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(z.name())
}

fn as_timestamp<S: Serializer>(t: &TimestampSource, s: S) -> Result<S::Ok, S::Error> {
    match t {
        TimestampSource::Kafka => s.serialize_str("kafka"),
        TimestampSource::Field(name) => s.serialize_str(&format!("field:{name}")),
    }
}

/// Problems found while validating, each with the key it concerns.
#[derive(Debug, Default)]
pub struct Problems(pub Vec<(String, String)>);

impl Problems {
    pub(super) fn push(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.0.push((key.into(), message.into()));
    }
}

/// Reads a secret-bearing value from the config, a `*_file`, or a conventional env variable.
pub(super) type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

impl Settings {
    /// Validates a raw config; `env` supplies the conventional `S3_*` fallbacks.
    pub fn from_raw(raw: RawConfig, env: EnvLookup<'_>) -> Result<Self, Problems> {
        let mut p = Problems::default();
        let destinations: Vec<_> = raw
            .destinations
            .iter()
            .enumerate()
            .filter_map(|(i, d)| destination(d, &format!("destinations[{i}]"), env, &mut p))
            .collect();
        if raw.destinations.is_empty() {
            p.push(
                "destinations",
                "at least one [[destinations]] table is required",
            );
        }
        let source = source(&raw.source, &destinations, &mut p);
        let worker = worker(&raw.worker, &mut p);
        let telemetry = telemetry(&raw.telemetry, &mut p);
        if let Some(SourceSettings::File(_)) = &source {
            for (i, d) in destinations.iter().enumerate() {
                if d.timestamp == TimestampSource::Kafka {
                    p.push(
                        format!("destinations[{i}].timestamp"),
                        "a file source has no Kafka timestamps; use \"field:NAME\"",
                    );
                }
            }
        }
        // Routing is only checked over a complete set: a destination that failed validation
        // would otherwise also show up as "no destination lists this topic".
        if destinations.len() == raw.destinations.len() {
            check_routing(&destinations, source.as_ref(), &mut p);
        }
        match (source, worker, telemetry) {
            (Some(source), Some(worker), Some(telemetry)) if p.0.is_empty() => Ok(Self {
                source,
                destinations,
                worker,
                telemetry,
            }),
            _ => Err(p),
        }
    }

    /// The destination index for a topic, if any destination takes it.
    pub fn route(&self, topic: &str) -> Option<usize> {
        route(&self.destinations, topic)
    }
}

fn route(destinations: &[DestinationSettings], topic: &str) -> Option<usize> {
    destinations
        .iter()
        .position(|d| d.topics.iter().any(|t| t == topic))
        .or_else(|| destinations.iter().position(|d| d.topics.is_empty()))
}

fn source(
    raw: &RawSource,
    destinations: &[DestinationSettings],
    p: &mut Problems,
) -> Option<SourceSettings> {
    match raw.kind.as_str() {
        "kafka" => {
            if raw.path.is_some() {
                p.push("source.path", "only used with kind = \"file\"");
            }
            let Some(brokers) = raw.brokers.clone().filter(|b| !b.trim().is_empty()) else {
                p.push(
                    "source.brokers",
                    "required for kind = \"kafka\" (e.g. \"127.0.0.1:9092\")",
                );
                return None;
            };
            let topics = match &raw.topics {
                Some(t) => t.clone(),
                None => {
                    let mut all: Vec<String> = destinations
                        .iter()
                        .flat_map(|d| d.topics.iter().cloned())
                        .collect();
                    all.sort();
                    all.dedup();
                    all
                }
            };
            if topics.is_empty() {
                p.push(
                    "source.topics",
                    "no topics to consume: list them here or in the destinations",
                );
            }
            for t in &topics {
                if t.is_empty()
                    || t.len() > 249
                    || !t
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
                {
                    p.push(
                        "source.topics",
                        format!("{t:?} is not a valid Kafka topic name"),
                    );
                }
            }
            let mut properties = BTreeMap::new();
            for (k, v) in &raw.properties {
                let text = match v {
                    toml::Value::String(s) => s.clone(),
                    toml::Value::Integer(i) => i.to_string(),
                    toml::Value::Boolean(b) => b.to_string(),
                    toml::Value::Float(f) => f.to_string(),
                    _ => {
                        p.push(
                            format!("source.properties.{k}"),
                            "must be a string, number or boolean",
                        );
                        continue;
                    }
                };
                properties.insert(k.clone(), text);
            }
            Some(SourceSettings::Kafka(KafkaSettings {
                brokers,
                group_id: raw.group_id.clone().unwrap_or_else(|| "pail".to_string()),
                topics,
                properties: KafkaProperties(properties),
            }))
        }
        "file" => {
            for (key, set) in [
                ("brokers", raw.brokers.is_some()),
                ("group_id", raw.group_id.is_some()),
                ("topics", raw.topics.is_some()),
                ("properties", !raw.properties.is_empty()),
            ] {
                if set {
                    p.push(format!("source.{key}"), "only used with kind = \"kafka\"");
                }
            }
            match raw.path.as_deref() {
                None | Some("") => {
                    p.push(
                        "source.path",
                        "required for kind = \"file\" (a path, or \"-\" for stdin)",
                    );
                    None
                }
                Some("-") => Some(SourceSettings::File(FileSettings { path: None })),
                Some(path) => Some(SourceSettings::File(FileSettings {
                    path: Some(PathBuf::from(path)),
                })),
            }
        }
        other => {
            p.push(
                "source.kind",
                format!("{other:?} is not a source kind (use \"kafka\" or \"file\")"),
            );
            None
        }
    }
}

fn check_routing(
    destinations: &[DestinationSettings],
    source: Option<&SourceSettings>,
    p: &mut Problems,
) {
    let catch_all = destinations.iter().filter(|d| d.topics.is_empty()).count();
    if catch_all > 0 && destinations.len() > 1 {
        p.push(
            "destinations",
            "with more than one destination, every destination must list its topics",
        );
    }
    let mut owner: BTreeMap<&str, &str> = BTreeMap::new();
    for d in destinations {
        for t in &d.topics {
            if let Some(first) = owner.insert(t, &d.name) {
                p.push(
                    "destinations",
                    format!(
                        "topic {t:?} goes to both {first:?} and {:?}; each topic goes to exactly one destination",
                        d.name
                    ),
                );
            }
        }
    }
    let mut names: Vec<&str> = destinations.iter().map(|d| d.name.as_str()).collect();
    names.sort();
    if names.windows(2).any(|w| w[0] == w[1]) {
        p.push("destinations", "destination names must be unique");
    }
    let consumed: Vec<&str> = match source {
        Some(SourceSettings::Kafka(k)) => k.topics.iter().map(String::as_str).collect(),
        Some(SourceSettings::File(_)) => vec![FILE_TOPIC],
        None => Vec::new(),
    };
    for t in consumed {
        if route(destinations, t).is_none() {
            p.push(
                "destinations",
                format!("topic {t:?} is consumed but no destination lists it"),
            );
        }
    }
}

fn telemetry(raw: &RawTelemetry, p: &mut Problems) -> Option<TelemetrySettings> {
    let listen = match &raw.listen {
        None => None,
        // `:9464`, as Go programs and Prometheus exporters write it: every interface.
        Some(addr) => Some(
            match addr.strip_prefix(':') {
                Some(port) => format!("0.0.0.0:{port}"),
                None => addr.clone(),
            }
            .parse()
            .map_err(|_| {
                p.push(
                    "telemetry.listen",
                    format!("{addr:?} is not an address like \"0.0.0.0:9464\" or \":9464\""),
                )
            })
            .ok()?,
        ),
    };
    Some(TelemetrySettings { listen })
}

/// The longest timeout or retry interval a worker takes.
const MAX_WORKER_DURATION: Duration = Duration::from_secs(7 * 86_400);

fn worker(raw: &RawWorker, p: &mut Problems) -> Option<WorkerSettings> {
    let dur = |key: &str, v: &Option<String>, default: &str, p: &mut Problems| {
        parse_duration(v.as_deref().unwrap_or(default))
            .map_err(|m| p.push(format!("worker.{key}"), m))
            .ok()
    };
    // Deadlines are added to `Instant::now()`: a week is far beyond any real use and far from
    // an overflow. A zero retry interval would spin.
    let bounded = |key: &str, d: Option<Duration>, min: Duration, p: &mut Problems| {
        let d = d?;
        if d < min || d > MAX_WORKER_DURATION {
            p.push(
                format!("worker.{key}"),
                format!("{d:?} is out of range: between {min:?} and 7 days"),
            );
            return None;
        }
        Some(d)
    };
    let shutdown_timeout = dur("shutdown_timeout", &raw.shutdown_timeout, "30s", p);
    let shutdown_timeout = bounded("shutdown_timeout", shutdown_timeout, Duration::ZERO, p);
    let startup_timeout = dur("startup_timeout", &raw.startup_timeout, "60s", p);
    let startup_timeout = bounded("startup_timeout", startup_timeout, Duration::ZERO, p);
    let permanent_error_retry = dur("permanent_error_retry", &raw.permanent_error_retry, "1m", p);
    let permanent_error_retry = bounded(
        "permanent_error_retry",
        permanent_error_retry,
        Duration::from_secs(1),
        p,
    );
    let max_in_flight_segments = raw.max_in_flight_segments.unwrap_or(64) as usize;
    let max_concurrent_uploads = raw.max_concurrent_uploads.unwrap_or(8) as usize;
    if max_in_flight_segments == 0 || max_concurrent_uploads == 0 {
        p.push(
            "worker",
            "max_in_flight_segments and max_concurrent_uploads must be > 0",
        );
        return None;
    }
    let memory_limit = parse_size(raw.memory_limit.as_deref().unwrap_or("256MiB"))
        .map_err(|m| p.push("worker.memory_limit", m))
        .ok()
        .and_then(|limit| {
            let limit = usize::try_from(limit).unwrap_or(usize::MAX);
            if limit < MIN_MEMORY_LIMIT {
                p.push(
                    "worker.memory_limit",
                    format!("{limit} bytes is below the minimum, 16MiB"),
                );
                return None;
            }
            Some(limit)
        });
    let max_buffer_bytes = match (&raw.max_buffer_bytes, memory_limit) {
        (Some(text), _) => parse_size(text)
            .map_err(|m| p.push("worker.max_buffer_bytes", m))
            .ok()
            .map(|b| usize::try_from(b).unwrap_or(usize::MAX)),
        (None, Some(limit)) => Some(MemoryShares::of(limit).pipeline),
        (None, None) => None,
    };
    Some(WorkerSettings {
        memory_limit: memory_limit?,
        max_buffer_bytes: max_buffer_bytes?,
        shutdown_timeout: shutdown_timeout?,
        startup_timeout: startup_timeout?,
        permanent_error_retry: permanent_error_retry?,
        max_in_flight_segments,
        max_concurrent_uploads,
    })
}
