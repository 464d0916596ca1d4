//! The pipeline driven by hand, without Kafka: recovery that reseals at recorded ends across
//! offset gaps (compaction) and through segments with no records left, and the commits that
//! follow, against a local directory.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::*;
use crate::delivery::{Delivery, RetryPolicy, Target};
use crate::store::LocalStore;
use crate::telemetry::DestinationHealth;

/// A pipeline for topic `t` writing Parquet under `root`, its rotation at `max_records`.
fn pipeline(root: &Path, max_records: u64) -> Pipeline {
    let text = format!(
        "[source]\nkind = \"kafka\"\nbrokers = \"127.0.0.1:1\"\ntopics = [\"t\"]\n\
         [[destinations]]\nname = \"d\"\nurl = \"file://{}\"\nkey_template = \"{{topic}}\"\n\
         [destinations.rotation]\nmax_records = {max_records}\n",
        root.display()
    );
    let settings = crate::config::parse(Path::new("t.toml"), &text, &|_| None).unwrap();
    let d = settings.destinations[0].clone();
    let target = Target {
        name: d.name.clone(),
        store: Arc::new(LocalStore::new(root.to_path_buf(), true)),
        prefix: String::new(),
        parquet: d.parquet.clone(),
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
    Pipeline::new(vec![dest], delivery, limits, None)
}

fn record(offset: i64) -> Record {
    Record {
        topic: Arc::from("t"),
        partition: 0,
        offset,
        timestamp_ms: Some(1_763_600_000_000 + offset),
        key: None,
        payload: Some(format!("{{\"n\":{offset}}}").into_bytes()),
    }
}

/// Acknowledges every commit the pipeline asks for and waits for every delivery; returns
/// the commits made, in order.
async fn settle(p: &mut Pipeline) -> Vec<(i64, String)> {
    let mut made = Vec::new();
    loop {
        for request in p.pending_commits().unwrap() {
            made.push((request.point.offset, request.point.metadata.clone()));
            p.committed(request);
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

/// The objects written, as their start offsets (`t+0+{start:020}.parquet`).
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
    let plan = RecoveryPlan::new(Some(100), "pail1:105,120").unwrap();
    p.assign("t", 0, plan, 1);
    // 103..=109 were compacted away: 105 lies inside the gap.
    for offset in (100..=102).chain(110..=126) {
        p.ingest(record(offset)).unwrap();
    }
    p.seal_all();
    let commits = settle(&mut p).await;
    // [100,105] (3 records), [106,120] starting at the previous end + 1 although its first
    // record is 110, then the normal rotation: [121,124], and [125,126] at the end.
    assert_eq!(object_starts(dir.path()), vec![100, 106, 121, 125]);
    let (offset, metadata) = commits.last().unwrap();
    assert_eq!((*offset, metadata.as_str()), (127, ""));
    // Until [106,120] was delivered, every commit still recorded its end.
    let records_120 = |m: &str| {
        m.trim_start_matches("pail1:")
            .split(',')
            .any(|e| e == "120")
    };
    let before: Vec<_> = commits.iter().filter(|(o, _)| *o <= 106).collect();
    assert!(
        !before.is_empty() && before.iter().all(|(_, m)| records_120(m)),
        "{commits:?}"
    );
    assert_eq!(commits[0], (100, "pail1:105,120,124,126".to_string()));
    assert_eq!(p.stats.rows_written, 20);
}

#[tokio::test]
async fn a_recorded_segment_with_no_records_left_is_sealed_empty_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = pipeline(dir.path(), 1000);
    let plan = RecoveryPlan::new(Some(100), "pail1:103,107").unwrap();
    p.assign("t", 0, plan, 1);
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
    p.assign("t", 0, RecoveryPlan::new(Some(0), "").unwrap(), 1);
    for offset in 0..200 {
        p.ingest(record(offset)).unwrap();
    }
    p.seal_expired();
    assert_eq!(p.undelivered(), MAX_UNDELIVERED_PER_PARTITION);
    // The partition is paused at its cap.
    let key: PartitionKey = (Arc::from("t"), 0);
    assert!(matches!(p.pause(), Pause::Partitions(set) if set.contains(&key)));
    // The final seal takes the rest in one more segment: cap + 1, and the intent lists them.
    p.seal_all();
    assert_eq!(p.undelivered(), MAX_UNDELIVERED_PER_PARTITION + 1);
    let requests = p.pending_commits().unwrap();
    let intent = &requests.last().unwrap().point;
    assert_eq!(intent.offset, 0);
    let ends: Vec<&str> = intent
        .metadata
        .trim_start_matches("pail1:")
        .split(',')
        .collect();
    assert_eq!(ends.len(), MAX_UNDELIVERED_PER_PARTITION + 1);
    assert_eq!(ends.last(), Some(&"199"));
    assert!(intent.metadata.len() < 4096);
}
