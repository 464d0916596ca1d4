//! The pipeline driven by hand, without Kafka: recovery that reseals at recorded ends across
//! offset gaps (compaction) and through segments with no records left, the commits that
//! follow, the cap, failing deliveries and streamed files' types, against a local directory.
//! The memory budget's tests are in `memory.rs`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::*;
use crate::buffer::RowMeta;
use crate::delivery::{Delivery, RetryPolicy, Target};
use crate::protocol::{
    Committed, Lineage, MAX_METADATA_BYTES, MAX_UNDELIVERED_PER_PARTITION, Token,
};
use crate::store::{BoxFuture, LocalStore, ObjectMetadata, ObjectStore, PutOutcome, StoreError};
use crate::telemetry::DestinationHealth;

mod memory;

/// A pipeline for topic `t` writing Parquet under `root`, its rotation at `max_records`.
fn pipeline(root: &Path, max_records: u64) -> Pipeline {
    pipeline_with(root, max_records, "")
}

/// [`pipeline`] with more destination settings (`[destinations.…]` tables) after the rotation.
fn pipeline_with(root: &Path, max_records: u64, extra: &str) -> Pipeline {
    let store = Arc::new(LocalStore::new(root.to_path_buf(), true));
    pipeline_on(root, store, max_records, extra)
}

/// [`pipeline_with`], writing to `store`.
fn pipeline_on(
    root: &Path,
    store: Arc<dyn ObjectStore>,
    max_records: u64,
    extra: &str,
) -> Pipeline {
    let text = format!(
        "[source]\nkind = \"kafka\"\nbrokers = \"127.0.0.1:1\"\ntopics = [\"t\"]\n\
         [[destinations]]\nname = \"d\"\nurl = \"file://{}\"\nkey_template = \"{{topic}}\"\n\
         [destinations.rotation]\nmax_records = {max_records}\n{extra}",
        root.display()
    );
    let settings = crate::config::parse(Path::new("t.toml"), &text, &|_| None).unwrap();
    let d = settings.destinations[0].clone();
    let target = Target {
        name: d.name.clone(),
        store,
        prefix: String::new(),
        parquet: d.parquet.clone(),
        part_size: d.upload.part_size,
        streamed: Default::default(),
        health: Arc::new(DestinationHealth::new(&d.name)),
    };
    let delivery = Delivery::new(2, RetryPolicy::bounded(), CancellationToken::new());
    let limits = Limits {
        max_buffer_bytes: 1 << 30,
        max_in_flight_segments: 64,
    };
    let dest = Destination {
        settings: d,
        target,
    };
    let protocol = ProtocolSettings {
        accept_reset: false,
        start_at_end: false,
    };
    Pipeline::new(vec![dest], delivery, limits, protocol, None)
}

fn record(offset: i64) -> Record {
    Record {
        topic: Arc::from("t"),
        partition: 0,
        offset,
        timestamp_ms: Some(1_763_600_000_000 + offset),
        key: None,
        payload: Some(format!("{{\"n\":{offset}}}").into_bytes().into()),
    }
}

fn lineage() -> Lineage {
    Lineage::new(1_764_000_000, 1)
}

/// Assigns partition `partition` of `t` with a commit at `offset` and its metadata.
fn assign(p: &mut Pipeline, partition: i32, offset: i64, metadata: String) {
    let assignment = Assignment {
        token: Token(1),
        committed: Committed::At { offset, metadata },
        log_start: 0,
        log_end: 10_000,
        fresh_lineage: Lineage::new(1_764_000_000, 2),
    };
    p.assign("t", partition, assignment).unwrap();
}

/// Acknowledges every commit the pipeline asks for and waits for every delivery; returns
/// the commits made, in order, as offset and ends.
async fn settle(p: &mut Pipeline) -> Vec<(i64, Vec<i64>)> {
    let mut made = Vec::new();
    loop {
        let due = p.due();
        assert!(due.stops.is_empty(), "{:?}", due.stops);
        for c in &due.commits {
            made.push((c.point.offset, c.point.intent.ends.clone()));
        }
        p.commits_acknowledged(&due.commits);
        if !due.commits.is_empty() {
            continue;
        }
        if p.in_flight() == 0 {
            return made;
        }
        let c = tokio::time::timeout(Duration::from_secs(30), p.next_completion())
            .await
            .expect("a delivery did not complete")
            .expect("no completion while segments are in flight");
        p.on_completion(c).unwrap();
    }
}

/// The objects written, as their start offsets (`t+0+{lineage}+{start:020}.parquet`).
fn object_starts(root: &Path) -> Vec<i64> {
    let mut starts: Vec<i64> = std::fs::read_dir(root.join("t"))
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter_map(|n| n.strip_suffix(".parquet")?.rsplit('+').next()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    starts.sort();
    starts
}

#[tokio::test]
async fn recorded_ends_inside_a_compaction_gap_are_resealed_where_the_first_run_cut() {
    let dir = tempfile::tempdir().unwrap();
    // Rotation would cut every 4 records; the recorded ends say otherwise until they are used.
    let mut p = pipeline(dir.path(), 4);
    assign(&mut p, 0, 100, format!("pail2:{}:105,120", lineage()));
    // 103..=109 were compacted away: 105 lies inside the gap.
    for offset in (100..=102).chain(110..=126) {
        p.ingest(record(offset)).unwrap();
    }
    p.seal_all();
    let commits = settle(&mut p).await;
    // [100,105] (3 records), [106,120] starting at the previous end + 1 although its first
    // record is 110, then the normal rotation: [121,124], and [125,126] at the end.
    assert_eq!(object_starts(dir.path()), vec![100, 106, 121, 125]);
    let names: Vec<String> = std::fs::read_dir(dir.path().join("t"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().all(|n| n.contains(&lineage().to_string())),
        "the recorded lineage names every object: {names:?}"
    );
    let (offset, ends) = commits.last().unwrap();
    assert_eq!((*offset, ends.as_slice()), (127, &[][..]));
    // Until [106,120] was delivered, every commit still recorded its end.
    let before: Vec<_> = commits.iter().filter(|(o, _)| *o <= 106).collect();
    assert!(
        !before.is_empty() && before.iter().all(|(_, e)| e.contains(&120)),
        "{commits:?}"
    );
    assert_eq!(commits[0], (100, vec![105, 120, 124, 126]));
    assert_eq!(p.stats.rows_written, 20);
}

#[tokio::test]
async fn a_recorded_segment_with_no_records_left_is_sealed_empty_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = pipeline(dir.path(), 1000);
    assign(&mut p, 0, 100, format!("pail2:{}:103,107", lineage()));
    // Everything from 104 to 109 is gone: the segment [104,107] has no records.
    for offset in (100..=103).chain(110..=111) {
        p.ingest(record(offset)).unwrap();
    }
    p.seal_all();
    let commits = settle(&mut p).await;
    // No object for [104,107]; the next segment starts at 108 as the first run's did.
    assert_eq!(object_starts(dir.path()), vec![100, 108]);
    assert_eq!(commits.last().unwrap().0, 112);
    assert_eq!(p.stats.rows_written, 6);
}

#[tokio::test]
async fn a_partition_at_its_cap_stops_sealing_so_its_intent_stays_bounded() {
    let dir = tempfile::tempdir().unwrap();
    // Every record would be a segment of its own; no commit is acknowledged, so nothing is
    // delivered and every sealed segment stays undelivered.
    let mut p = pipeline(dir.path(), 1);
    assign(&mut p, 0, 0, String::new());
    for offset in 0..200 {
        p.ingest(record(offset)).unwrap();
    }
    p.seal_expired();
    assert_eq!(p.undelivered(), MAX_UNDELIVERED_PER_PARTITION);
    // The partition is paused at its cap.
    let key: PartitionKey = (Arc::from("t"), 0);
    assert!(matches!(p.pause(), Pause::Partitions(set) if set.contains(&key)));
    // Not even the final seal goes past the cap: the rest stays open for the next owner.
    p.seal_all();
    assert_eq!(p.undelivered(), MAX_UNDELIVERED_PER_PARTITION);
    let due = p.due();
    let intent = &due.commits.last().unwrap().point;
    assert_eq!(intent.offset, 0);
    assert_eq!(intent.intent.ends.len(), MAX_UNDELIVERED_PER_PARTITION);
    assert!(intent.intent.encode().unwrap().len() < MAX_METADATA_BYTES);
}

/// A local directory whose client panics writing partition 0's objects of topic `t`, as a
/// bug in a store client would.
#[derive(Debug)]
struct PanicsOnPartitionZero(LocalStore);

impl ObjectStore for PanicsOnPartitionZero {
    fn put_if_absent<'a>(
        &'a self,
        key: &'a str,
        body: bytes::Bytes,
        metadata: &'a ObjectMetadata,
    ) -> BoxFuture<'a, Result<PutOutcome, StoreError>> {
        assert!(!key.contains("t+0+"), "a store client bug");
        self.0.put_if_absent(key, body, metadata)
    }
    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        self.0.delete(key)
    }
    fn describe(&self) -> String {
        "panics on partition 0".into()
    }
}

/// Partitions 0 and 1 of `t` each get a segment of 5 records, sealed and handed to delivery;
/// `fail` may replace a completion's result. Returns the stops and the commits (partition,
/// offset) made until nothing is in flight.
async fn deliver_two_partitions(
    p: &mut Pipeline,
    fail: impl Fn(&mut Completion),
) -> (Vec<Stopped>, Vec<(i32, i64)>) {
    assign(p, 0, 0, String::new());
    assign(p, 1, 0, String::new());
    for offset in 0..5 {
        p.ingest(record(offset)).unwrap();
        let mut other = record(offset);
        other.partition = 1;
        p.ingest(other).unwrap();
    }
    p.seal_all();
    let due = p.due();
    p.commits_acknowledged(&due.commits);
    p.due();
    assert_eq!(p.delivery.load(0).segments, 2, "both segments in flight");
    let (mut stops, mut commits) = (Vec::new(), Vec::new());
    while p.in_flight() > 0 {
        let mut c = p.next_completion().await.unwrap();
        fail(&mut c);
        p.on_completion(c).unwrap();
        let due = p.due();
        stops.extend(due.stops);
        commits.extend(due.commits.iter().map(|c| (c.partition.1, c.point.offset)));
        p.commits_acknowledged(&due.commits);
    }
    (stops, commits)
}

/// Partition 0 stopped where its segment began, as undeliverable; partition 1 committed past
/// its segment.
fn only_partition_zero_stopped(stops: &[Stopped], commits: &[(i32, i64)]) {
    assert_eq!(stops.len(), 1, "{stops:?}");
    assert_eq!(stops[0].partition, (Arc::from("t"), 0));
    assert_eq!(stops[0].offset, 0, "nothing of it is committed");
    assert!(matches!(stops[0].reason, StopReason::Undeliverable { .. }));
    assert_eq!(
        commits,
        [(1, 5)],
        "only partition 1 is committed past its segment"
    );
}

#[tokio::test]
async fn a_delivery_that_panics_stops_only_its_partition_and_releases_its_memory() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(PanicsOnPartitionZero(LocalStore::new(
        dir.path().to_path_buf(),
        true,
    )));
    let mut p = pipeline_on(dir.path(), store, 1000, "");
    let (stops, commits) = deliver_two_partitions(&mut p, |_| {}).await;
    only_partition_zero_stopped(&stops, &commits);
    assert!(
        matches!(&stops[0].reason, StopReason::Undeliverable { error, .. }
            if error.contains("panicked") && error.contains("a store client bug")),
        "{:?}",
        stops[0].reason
    );
    assert!(settle(&mut p).await.is_empty());
    let load = p.delivery.load(0);
    assert_eq!((load.segments, load.bytes), (0, 0), "its load is released");
}

#[tokio::test]
async fn a_segment_that_cannot_be_encoded_stops_only_its_partition() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = pipeline(dir.path(), 1000);
    // Partition 0's encoder fails (as a panic in the blocking pool would surface), partition
    // 1's succeeds.
    let (stops, commits) = deliver_two_partitions(&mut p, |c| {
        if c.handoff.as_ref().is_some_and(|h| h.partition.1 == 0) {
            c.result = Err(DeliveryError::Task("encoder panicked".into()));
        }
    })
    .await;
    only_partition_zero_stopped(&stops, &commits);
    assert!(settle(&mut p).await.is_empty());
    let key: PartitionKey = (Arc::from("t"), 0);
    assert!(
        matches!(p.pause(), Pause::Partitions(set) if set.contains(&key)),
        "paused"
    );
    // Its later records are left for whoever reads the partition next.
    p.ingest(record(5)).unwrap();
    assert_eq!(p.stats.records, 10);
}

/// A record of `t`/0 whose `n` is `value` (JSON text).
fn record_n(offset: i64, value: &str) -> Record {
    Record {
        payload: Some(format!("{{\"n\":{value}}}").into_bytes().into()),
        ..record(offset)
    }
}

/// Files stream in row groups of 10 rows.
const STREAMING: &str = "[destinations.parquet]\nrow_group_size = 10\n";

/// The type of column `n` and the row count of the object starting at `start`.
fn n_column(root: &Path, start: i64) -> (arrow::datatypes::DataType, i64) {
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let name = format!("t+0+{}+{start:020}.parquet", lineage());
    let file = std::fs::File::open(root.join("t").join(name)).unwrap();
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).unwrap();
    let rows = builder.metadata().file_metadata().num_rows();
    let ty = builder
        .schema()
        .field_with_name("n")
        .unwrap()
        .data_type()
        .clone();
    (ty, rows)
}

#[tokio::test]
async fn a_type_change_after_row_groups_are_written_cuts_the_segment_there() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = pipeline_with(dir.path(), 1000, STREAMING);
    assign(&mut p, 0, 0, format!("pail2:{}", lineage()));
    for offset in 0..25 {
        p.ingest(record_n(offset, &offset.to_string())).unwrap();
    }
    // Two row groups of integers are written: a float cannot join them in this file.
    p.ingest(record_n(25, "25.5")).unwrap();
    for offset in 26..30 {
        p.ingest(record_n(offset, &offset.to_string())).unwrap();
    }
    p.seal_all();
    settle(&mut p).await;
    assert_eq!(object_starts(dir.path()), vec![0, 25]);
    use arrow::datatypes::DataType;
    assert_eq!(n_column(dir.path(), 0), (DataType::Int64, 25));
    assert_eq!(n_column(dir.path(), 25), (DataType::Float64, 5));
}

#[tokio::test]
async fn a_type_change_a_replay_cannot_cut_for_is_dead_lettered_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = pipeline_with(dir.path(), 1000, STREAMING);
    // Replaying [0, 39]: no cut but at 39.
    assign(&mut p, 0, 0, format!("pail2:{}:39", lineage()));
    for offset in 0..40 {
        let value = if offset == 25 {
            "25.5".to_string()
        } else {
            offset.to_string()
        };
        p.ingest(record_n(offset, &value)).unwrap();
    }
    settle(&mut p).await;
    assert_eq!(object_starts(dir.path()), vec![0]);
    assert_eq!(
        n_column(dir.path(), 0),
        (arrow::datatypes::DataType::Int64, 39)
    );
    assert_eq!(p.stats.dead_lettered, 1);
}

#[tokio::test]
async fn a_streamed_file_takes_the_type_its_topic_widened_to() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = pipeline_with(dir.path(), 1000, STREAMING);
    assign(&mut p, 0, 0, format!("pail2:{}", lineage()));
    // The topic's `n` becomes a float in a first segment...
    for offset in 0..5 {
        p.ingest(record_n(offset, "0.5")).unwrap();
    }
    p.seal_all();
    // ...and a second one, of integers only, streams in row groups: its file is still
    // written with the topic's type.
    for offset in 5..30 {
        p.ingest(record_n(offset, &offset.to_string())).unwrap();
    }
    p.seal_all();
    settle(&mut p).await;
    assert_eq!(object_starts(dir.path()), vec![0, 5]);
    assert_eq!(
        n_column(dir.path(), 5),
        (arrow::datatypes::DataType::Float64, 25)
    );
}
