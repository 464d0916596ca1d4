//! The benchmark suite's loads, scaled down to a few thousand events, run as the suite runs
//! them (the release binary, `run --once`, a mock cluster, an S3 server on loopback): so that
//! `bash scripts/bench.sh` cannot rot. Rows and objects are asserted, never time.

use crate::bench_scenario::{self as scenario, Cluster, Shape};
use crate::support;
use crate::support::s3::{ACCESS_KEY, SECRET_KEY, TestS3};

async fn smoke(shape: Shape, objects: usize) {
    let cluster = Cluster::start();
    cluster.create_topic("bench", shape.partitions);
    let mut ndjson = Vec::new();
    let produced = cluster.produce("bench", &shape, Some(&mut ndjson));
    let ceiling = scenario::ceiling(&ndjson);
    assert!(ceiling.parquet_bytes > 0);
    let s3 = TestS3::start(&["bench"]).await;
    let dir = tempfile::tempdir().unwrap();
    let config = scenario::config(
        &shape,
        &cluster.brokers(),
        "bench",
        &s3.endpoint(),
        (ACCESS_KEY, SECRET_KEY),
    );
    let bin = support::pail_bin();
    let run =
        tokio::task::spawn_blocking(move || scenario::run_pail(&bin, dir.path(), &config, &[]))
            .await
            .unwrap();
    assert_eq!(run.code, Some(0), "{}\n{}", run.stdout, run.stderr);
    assert!(run.peak_rss > 0 && run.cpu_seconds > 0.0);
    let written = scenario::written(&s3.bucket_dir("bench"));
    assert_eq!(written.rows, produced.events as u64, "{}", run.stderr);
    assert_eq!(written.objects, objects, "{:?}\n{}", written, run.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_a_large_events_over_many_partitions() {
    smoke(Shape::large(4_000, 16), 16).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_b_small_events() {
    smoke(Shape::small(20_000, 8), 8).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_c_many_partitions_and_paths() {
    smoke(Shape::wide(4_096, 32, 4), 32 * 4).await;
}
