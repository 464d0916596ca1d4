//! The benchmark's load (c), scaled down: many partitions × several paths each against one
//! small `worker.memory_limit`. What the budget accounts (open, sealed and in-flight segments)
//! stays within the pipeline's share plus a batch, what the partition readers hold stays
//! within the read-ahead's, the largest segments are sealed early and counted, and every event
//! is delivered. Accounted bytes are asserted, not RSS.

use crate::bench_scenario::{self as scenario, Cluster, Shape};
use crate::support;
use crate::support::s3::{ACCESS_KEY, SECRET_KEY, TestS3};

use std::time::Duration;

use pail::config::MemoryShares;
use pail::source::reader::MAX_BATCH_BYTES;

const LIMIT: usize = 16 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_open_files_stay_within_the_memory_limit() {
    // 64 partitions × 4 paths of ~1 KB events: ~40 MB, two and a half times the limit.
    let mut shape = Shape::wide(40_000, 64, 4);
    shape.worker = format!("memory_limit = \"{}MiB\"", LIMIT >> 20);
    shape.rotation = "max_records = 1000000\nmax_bytes = \"1GiB\"".into();
    let cluster = Cluster::start();
    cluster.create_topic("bench", shape.partitions);
    let produced = cluster.produce("bench", &shape, None);
    assert!(produced.bytes > 2 * LIMIT);
    let s3 = TestS3::start(&["bench"]).await;
    let text = scenario::config(
        &shape,
        &cluster.brokers(),
        "bench",
        &s3.endpoint(),
        (ACCESS_KEY, SECRET_KEY),
    );
    let settings =
        pail::config::parse(std::path::Path::new("bench.toml"), &text, &|_| None).unwrap();
    let shares = settings.worker.memory();
    assert_eq!(shares, MemoryShares::of(LIMIT));

    let stats = support::run_settings_once(settings, Duration::from_secs(240))
        .await
        .unwrap();

    eprintln!("{stats:?}");
    assert_eq!(stats.rows_written, produced.events as u64);
    let written = scenario::written(&s3.bucket_dir("bench"));
    assert_eq!(written.rows, produced.events as u64);
    assert!(
        stats.sealed_for_memory > 0,
        "40 MB through a 16 MiB limit needs early seals: {stats:?}"
    );
    // Before anything is written or sealed early, open files' JSON is packed in memory.
    assert!(
        stats.packed_bytes > produced.bytes as u64 / 4,
        "open files are packed first: {stats:?}"
    );
    // While everything is paused for memory, records wait in the read-ahead, not in the
    // pipeline; the batch in hand when the budget is reached is still taken (dropping a record
    // would leave a hole). So the pipeline passes its share by at most one batch (and the
    // names of the paths it opens).
    let bound = (shares.pipeline + MAX_BATCH_BYTES + (64 << 10)) as u64;
    assert!(
        stats.peak_buffered_bytes <= bound,
        "peak {} over {bound}: {stats:?}",
        stats.peak_buffered_bytes
    );
    assert!(bound as usize + shares.read_ahead + shares.fetch_queues <= LIMIT);
    // The readers take records off librdkafka's queue only with room in the read-ahead
    // share reserved for them. Routing a record may add a path of its own beyond what was
    // reserved (these paths alternate, under 40 bytes against ~1.2 KB a record), uncounted
    // when the share has no room at once: a sixteenth over the share at most.
    let read_ahead_bound = (shares.read_ahead + shares.read_ahead / 16) as u64;
    assert!(
        stats.peak_read_ahead_bytes > 0 && stats.peak_read_ahead_bytes <= read_ahead_bound,
        "readers held {} at most, bound {read_ahead_bound}: {stats:?}",
        stats.peak_read_ahead_bytes
    );
    // One object per (partition, path) and segment: early seals make more objects, not lost
    // ones.
    assert!(written.objects >= 64 * 4, "{written:?}");
}
