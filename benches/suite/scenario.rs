//! The end-to-end benchmark scenarios, shared by the suite (`benches/suite`, the figures) and
//! its smoke test (`tests/it/bench_smoke.rs`, so that the suite cannot rot).
//!
//! A scenario generates events into librdkafka's mock cluster (the real Kafka protocol on
//! loopback), runs the `pail` binary with `run --once` into an S3 server on loopback, and
//! reads back what it wrote: rows (from each object's Parquet footer) and object sizes. The
//! single-core ceiling, arrow-json decode plus Parquet zstd(1) of the same events with no Kafka
//! and no S3, is measured in the same process, so the ratio between the two is what compares
//! across runs on a noisy machine.

#![allow(dead_code)]

use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::json::ReaderBuilder;
use arrow::json::reader::infer_json_schema_from_iterator;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use parquet::file::reader::{FileReader, SerializedFileReader};
use rdkafka::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;

/// The event shapes of the suite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// ~1 KB product-analytics events, nested objects and arrays.
    Large,
    /// ~100-byte flat events: the shape peers publish their figures for.
    Small,
}

/// One benchmark load.
#[derive(Debug, Clone)]
pub struct Shape {
    /// Short name printed in the table, e.g. `(a) 1 KB × 128 partitions`.
    pub name: String,
    /// Partitions of the one topic.
    pub partitions: i32,
    /// Events in all, spread round-robin over the partitions.
    pub events: usize,
    /// The kind of event.
    pub kind: EventKind,
    /// Distinct output paths each partition writes to (the `k` field of the key template).
    pub paths: usize,
    /// Extra `[destinations.rotation]` lines, e.g. `target_file_size = "128MiB"`.
    pub rotation: String,
    /// Extra `[worker]` lines, e.g. `memory_limit = "256MiB"`.
    pub worker: String,
    /// Extra `[source.properties]` lines (librdkafka), from `PAIL_BENCH_KAFKA` in the suite.
    pub properties: String,
}

impl Shape {
    /// (a): 1 KB events over 128 partitions, one path each.
    pub fn large(events: usize, partitions: i32) -> Self {
        Self {
            name: format!("(a) 1 KB events, {partitions} partitions"),
            partitions,
            events,
            kind: EventKind::Large,
            paths: 1,
            rotation: String::new(),
            worker: String::new(),
            properties: String::new(),
        }
    }

    /// (b): ~100-byte events over 64 partitions, one path each.
    pub fn small(events: usize, partitions: i32) -> Self {
        Self {
            name: format!("(b) ~100 B events, {partitions} partitions"),
            partitions,
            events,
            kind: EventKind::Small,
            paths: 1,
            rotation: String::new(),
            worker: String::new(),
            properties: String::new(),
        }
    }

    /// (c): 1 KB events over 256 partitions × 4 paths each, 128 MiB target objects: the
    /// memory case (1024 open files against one budget).
    pub fn wide(events: usize, partitions: i32, paths: usize) -> Self {
        Self {
            name: format!("(c) 1 KB events, {partitions} partitions × {paths} paths"),
            partitions,
            events,
            kind: EventKind::Large,
            paths,
            rotation: String::new(),
            worker: String::new(),
            properties: String::new(),
        }
    }
}

/// Event `i` of a shape, as JSON text (no newline), with `k` (its output path) as given.
pub fn event(kind: EventKind, i: u64, k: u64) -> String {
    match kind {
        EventKind::Small => format!(
            r#"{{"id":{i},"ts":"2026-11-20T10:{:02}:{:02}.{:03}Z","type":"{}","user":"u-{:05}","k":{k},"v":{}.5}}"#,
            (i / 60) % 60,
            i % 60,
            i % 1000,
            ["view", "buy", "find"][(i % 3) as usize],
            i % 50_000,
            i % 1000,
        ),
        EventKind::Large => format!(
            r#"{{"event_id":"evt-{i:012}","ts":"2026-11-20T10:{:02}:{:02}.123Z","type":"{}","k":{k},"user":{{"id":"u-{:05}","country":"{}","plan":"pro","traits":{{"age":{},"score":{}.25}}}},"context":{{"ip":"203.0.113.{}","user_agent":"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36","locale":"en-US","screen":{{"w":1920,"h":1080,"dpr":2}},"page":{{"path":"/docs/page-{}","referrer":"https://example.com/search?q=term-{}&source=newsletter&campaign=winter-{}","title":"A page title that is moderately long for realism, with a subtitle"}}}},"properties":{{"amount":{}.99,"currency":"EUR","coupon":"WINTER-{:04}","items":[{{"sku":"SKU-{}","qty":{},"price":{}.5}},{{"sku":"SKU-{}","qty":1,"price":9.5}}]}},"tags":["beta","mobile","returning","newsletter"],"session":"sess-{:016x}","request":"req-{:016x}"}}"#,
            (i / 60) % 60,
            i % 60,
            ["page_view", "purchase", "search"][(i % 3) as usize],
            i % 50_000,
            ["DE", "US", "FR", "JP"][(i % 4) as usize],
            18 + i % 60,
            i % 100,
            i % 250,
            i % 1000,
            i % 777,
            i % 31,
            i % 500,
            i % 9000,
            i % 900,
            1 + i % 3,
            i % 90,
            i % 901,
            i.wrapping_mul(0x9E37_79B9_7F4A_7C15),
            i.wrapping_mul(0xC2B2_AE3D_27D4_EB4F),
        ),
    }
}

/// What was produced into the cluster.
#[derive(Debug, Clone, Copy)]
pub struct Produced {
    /// Events.
    pub events: usize,
    /// Bytes of JSON.
    pub bytes: usize,
}

/// librdkafka's mock cluster, attached to the producer that fills it.
pub struct Cluster {
    producer: BaseProducer,
}

impl Cluster {
    /// Starts a one-broker mock cluster whose consumer groups form at once: a real broker
    /// delays a new group's first rebalance by 3 s, which would count in every run's time.
    pub fn start() -> Self {
        let producer: BaseProducer = ClientConfig::new()
            .set("test.mock.num.brokers", "1")
            .set("linger.ms", "20")
            .set("batch.size", "1000000")
            .set("queue.buffering.max.kbytes", "262144")
            .set("compression.codec", "none")
            .create()
            .expect("the mock cluster starts");
        // SAFETY: the handle is the live producer's own; librdkafka returns the mock cluster
        // it created for `test.mock.num.brokers` (owned by the producer, never freed here),
        // and setting the delay only stores a value in it.
        unsafe {
            let cluster =
                rdkafka::bindings::rd_kafka_handle_mock_cluster(producer.client().native_ptr());
            assert!(!cluster.is_null(), "the producer has no mock cluster");
            rdkafka::bindings::rd_kafka_mock_group_initial_rebalance_delay_ms(cluster, 0);
        }
        Self { producer }
    }

    /// The cluster's `bootstrap.servers`.
    pub fn brokers(&self) -> String {
        self.producer
            .client()
            .mock_cluster()
            .expect("the producer has a mock cluster")
            .bootstrap_servers()
    }

    /// Creates `topic` with `partitions` partitions.
    pub fn create_topic(&self, topic: &str, partitions: i32) {
        self.producer
            .client()
            .mock_cluster()
            .expect("the producer has a mock cluster")
            .create_topic(topic, partitions, 1)
            .expect("topic created");
    }

    /// Produces the shape's events into `topic`, round-robin over its partitions, and waits
    /// until every one is acknowledged. Returns what was produced; with `keep`, the events
    /// are also collected (for the ceiling).
    pub fn produce(&self, topic: &str, shape: &Shape, mut keep: Option<&mut Vec<u8>>) -> Produced {
        let mut bytes = 0;
        for i in 0..shape.events {
            let partitions = shape.partitions as usize;
            // Each partition's events go round-robin over its paths.
            let k = (i / partitions % shape.paths) as u64;
            let payload = event(shape.kind, i as u64, k);
            bytes += payload.len();
            if let Some(out) = keep.as_deref_mut() {
                out.extend_from_slice(payload.as_bytes());
                out.push(b'\n');
            }
            let partition = (i % partitions) as i32;
            let mut record = BaseRecord::<(), str>::to(topic)
                .partition(partition)
                .payload(payload.as_str());
            loop {
                match self.producer.send(record) {
                    Ok(()) => break,
                    Err((e, back))
                        if e.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull) =>
                    {
                        // The local queue is full: serve delivery reports until it drains.
                        self.producer.poll(Duration::from_millis(50));
                        record = back;
                    }
                    Err((e, _)) => panic!("produce: {e}"),
                }
            }
            if i % 10_000 == 0 {
                self.producer.poll(Duration::ZERO);
            }
        }
        self.producer
            .flush(Duration::from_secs(300))
            .expect("every event acknowledged");
        Produced {
            events: shape.events,
            bytes,
        }
    }
}

/// The single-core ceiling: arrow-json decode plus Parquet zstd(1) of `ndjson` in one thread,
/// 8192-row batches, into memory.
#[derive(Debug, Clone, Copy)]
pub struct Ceiling {
    /// Wall time of decode + encode.
    pub seconds: f64,
    /// Size of the Parquet output.
    pub parquet_bytes: usize,
}

/// Measures the ceiling over `ndjson` (the schema is inferred beforehand, untimed).
pub fn ceiling(ndjson: &[u8]) -> Ceiling {
    let sample = ndjson
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .take(1000)
        .map(|l| {
            serde_json::from_slice::<serde_json::Value>(l)
                .map_err(|e| arrow::error::ArrowError::JsonError(e.to_string()))
        });
    let schema = Arc::new(infer_json_schema_from_iterator(sample).expect("schema inferred"));
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(1).expect("level 1")))
        .build();
    let start = Instant::now();
    let mut decoder = ReaderBuilder::new(schema.clone())
        .with_batch_size(8192)
        .build_decoder()
        .expect("decoder");
    let mut writer = ArrowWriter::try_new(Vec::new(), schema, Some(props)).expect("writer");
    let mut buf = ndjson;
    while !buf.is_empty() {
        let read = decoder.decode(buf).expect("decoded");
        buf = &buf[read..];
        if let Some(batch) = decoder.flush().expect("flushed") {
            writer.write(&batch).expect("written");
        }
    }
    if let Some(batch) = decoder.flush().expect("flushed") {
        writer.write(&batch).expect("written");
    }
    let out = writer.into_inner().expect("closed");
    Ceiling {
        seconds: start.elapsed().as_secs_f64(),
        parquet_bytes: out.len(),
    }
}

/// The pail config of a scenario: the topic into `s3://{bucket}/bench` at `endpoint`.
pub fn config(
    shape: &Shape,
    brokers: &str,
    topic: &str,
    endpoint: &str,
    keys: (&str, &str),
) -> String {
    let (id, secret) = keys;
    let paths = if shape.paths > 1 { "/k={field:k}" } else { "" };
    format!(
        r#"[source]
kind = "kafka"
brokers = "{brokers}"
group_id = "bench-{topic}"
topics = ["{topic}"]
[source.properties]
{properties}

[[destinations]]
name = "bench"
url = "s3://bench/out"
region = "us-east-1"
endpoint = "{endpoint}"
path_style = true
key_template = "{{topic}}/p={{partition}}{paths}"
timestamp = "kafka"
[destinations.auth]
method = "static"
access_key_id = "{id}"
secret_access_key = "{secret}"
[destinations.rotation]
max_age = "1h"
{rotation}
[worker]
{worker}
"#,
        rotation = shape.rotation,
        worker = shape.worker,
        properties = shape.properties,
    )
}

/// One `pail run --once` as the operating system saw it.
#[derive(Debug, Clone)]
pub struct PailRun {
    /// Wall time from spawn to exit.
    pub seconds: f64,
    /// User plus system CPU time.
    pub cpu_seconds: f64,
    /// Peak resident set size, bytes (`VmHWM`, sampled every 10 ms).
    pub peak_rss: u64,
    /// Exit code (`None` when killed by a signal).
    pub code: Option<i32>,
    /// Its stdout (the summary line).
    pub stdout: String,
    /// Its stderr (the log).
    pub stderr: String,
}

/// Runs `bin run --once --config {config}` in `dir`, to the end, and measures it with
/// `wait4` (the child's own peak RSS and CPU time).
pub fn run_pail(bin: &Path, dir: &Path, config_text: &str, env: &[(&str, &str)]) -> PailRun {
    let config_path = dir.join("bench.toml");
    File::create(&config_path)
        .and_then(|mut f| f.write_all(config_text.as_bytes()))
        .expect("config written");
    let out = dir.join("stdout.txt");
    let err = dir.join("stderr.txt");
    let mut cmd = Command::new(bin);
    cmd.args(["run", "--once", "--config"])
        .arg(&config_path)
        .current_dir(dir)
        .env_remove("PAIL_CONFIG")
        .stdin(Stdio::null())
        .stdout(File::create(&out).expect("stdout file"))
        .stderr(File::create(&err).expect("stderr file"));
    for (k, v) in env {
        cmd.env(k, v);
    }
    let start = Instant::now();
    let child = cmd.spawn().expect("pail spawns");
    let pid = child.id() as libc::pid_t;
    // `wait4`'s `ru_maxrss` would count the bench process's own pages, shared with the child
    // between its fork and its exec; the high-water mark of the child's own address space is
    // read from /proc instead, until the child is gone.
    let watcher = std::thread::spawn(move || {
        let status = format!("/proc/{pid}/status");
        let mut peak = 0;
        while let Some(hwm) = std::fs::read_to_string(&status)
            .ok()
            .and_then(|s| vm_hwm(&s))
        {
            peak = hwm;
            std::thread::sleep(Duration::from_millis(10));
        }
        peak
    });
    let mut status = 0;
    // SAFETY: an all-zero `rusage` is a valid value of this plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is our own unreaped child; `status` and `usage` are valid for writes. The
    // `Child` is never waited on afterwards, so the pid is reaped exactly once.
    let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let seconds = start.elapsed().as_secs_f64();
    assert_eq!(reaped, pid, "wait4 failed");
    drop(child);
    let peak_rss = watcher.join().unwrap_or(0);
    let time = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    PailRun {
        seconds,
        cpu_seconds: time(usage.ru_utime) + time(usage.ru_stime),
        peak_rss,
        code: libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status)),
        stdout: std::fs::read_to_string(out).unwrap_or_default(),
        stderr: std::fs::read_to_string(err).unwrap_or_default(),
    }
}

/// `VmHWM` of a /proc status file, in bytes (absent once the process is a zombie).
fn vm_hwm(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// What the bucket holds after a run.
#[derive(Debug, Clone, Default)]
pub struct Written {
    /// Parquet objects.
    pub objects: usize,
    /// Rows over all objects, from their footers.
    pub rows: u64,
    /// Object sizes, ascending.
    pub sizes: Vec<u64>,
}

/// Reads every `.parquet` object under `dir` (the S3 server's directory of the bucket).
pub fn written(dir: &Path) -> Written {
    let mut files = Vec::new();
    walk(dir, &mut files);
    let mut out = Written::default();
    for path in files {
        let file = File::open(&path).expect("object opens");
        let size = file.metadata().expect("metadata").len();
        let reader = SerializedFileReader::new(file)
            .unwrap_or_else(|e| panic!("{} is not Parquet: {e}", path.display()));
        out.rows += reader.metadata().file_metadata().num_rows() as u64;
        out.objects += 1;
        out.sizes.push(size);
    }
    out.sizes.sort_unstable();
    out
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            walk(&path, out);
        } else if path.extension().is_some_and(|e| e == "parquet") {
            out.push(path);
        }
    }
}

/// The summary figures of one scenario.
#[derive(Debug, Clone)]
pub struct Report {
    pub shape: Shape,
    pub produced: Produced,
    pub ceiling: Option<Ceiling>,
    pub run: PailRun,
    pub written: Written,
}

impl Report {
    /// Events per second end to end.
    pub fn events_per_second(&self) -> f64 {
        self.produced.events as f64 / self.run.seconds
    }

    /// MB/s of JSON end to end.
    pub fn mb_per_second(&self) -> f64 {
        self.produced.bytes as f64 / 1e6 / self.run.seconds
    }

    /// MB/s of JSON of the single-core ceiling.
    pub fn ceiling_mb_per_second(&self) -> Option<f64> {
        self.ceiling
            .map(|c| self.produced.bytes as f64 / 1e6 / c.seconds)
    }

    /// End to end as a multiple of the ceiling.
    pub fn ratio(&self) -> Option<f64> {
        self.ceiling.map(|c| c.seconds / self.run.seconds)
    }

    /// Cores kept busy on average.
    pub fn cores(&self) -> f64 {
        self.run.cpu_seconds / self.run.seconds
    }
}
