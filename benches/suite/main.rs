//! The end-to-end benchmark suite: the release `pail` binary, `run --once`, from a mock Kafka
//! cluster into an S3 server on loopback, against the single-core ceiling measured in the same
//! run. Prints events/s, MB/s, cores kept busy, peak RSS, the objects written and the ratio to
//! the ceiling for each load.
//!
//! Run: `bash scripts/bench.sh` (builds the release binary, then this). Arguments pick loads
//! (`a`, `b`, `c`; all by default); `PAIL_BENCH_SCALE=0.25` scales every load's event count.

#[path = "scenario.rs"]
mod scenario;

// The tests' S3 server (s3s-fs behind a conditional-write front), shared as source.
#[path = "../../tests/it/support/percent.rs"]
mod percent;
#[allow(dead_code)]
#[path = "../../tests/it/support/s3.rs"]
mod s3;

use percent::percent_decode;

use std::path::{Path, PathBuf};

use s3::{ACCESS_KEY, SECRET_KEY, TestS3};
use scenario::{Cluster, Report, Shape};

fn scaled(events: usize, scale: f64) -> usize {
    ((events as f64 * scale) as usize).max(1000)
}

fn loads(scale: f64) -> Vec<(char, Shape)> {
    vec![
        ('a', Shape::large(scaled(512_000, scale), 128)),
        ('b', Shape::small(scaled(2_048_000, scale), 64)),
        // 128 MiB target objects: with 1024 files open at once, what the memory budget forces.
        ('c', {
            let mut shape = Shape::wide(scaled(512_000, scale), 256, 4);
            shape.rotation = "max_records = 10000000\ntarget_file_size = \"128MiB\"".into();
            shape
        }),
    ]
}

fn pail_bin() -> PathBuf {
    std::env::var_os("PAIL_BIN").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/release/pail"),
        PathBuf::from,
    )
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

fn main() {
    // `cargo bench` passes `--bench`; anything else names loads.
    let picked: Vec<char> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .filter_map(|a| a.chars().next())
        .collect();
    let scale: f64 = std::env::var("PAIL_BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    let bin = pail_bin();
    assert!(
        bin.is_file(),
        "{} is missing: run `bash scripts/bench.sh`, which builds it",
        bin.display()
    );
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    println!(
        "| load | events | MB of JSON | ceiling MB/s | pail events/s | pail MB/s | ratio to ceiling | cores busy | peak RSS MiB | objects | object MiB min / median / max |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |");
    let mut failed = 0;
    // librdkafka properties to try, `;`-separated: `PAIL_BENCH_KAFKA='queued.min.messages=1000'`.
    let properties: String = std::env::var("PAIL_BENCH_KAFKA")
        .unwrap_or_default()
        .split(';')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| format!("\"{}\" = \"{}\"\n", k.trim(), v.trim()))
        .collect();
    for (id, mut shape) in loads(scale) {
        shape.properties.clone_from(&properties);
        if !picked.is_empty() && !picked.contains(&id) {
            continue;
        }
        match measure(&runtime, &bin, shape.clone()) {
            Ok(report) => print_row(&report),
            Err(why) => {
                failed += 1;
                println!("| {} | failed: {} |", shape.name, why.replace('\n', " "));
            }
        }
    }
    if failed > 0 {
        std::process::exit(1);
    }
}

/// Runs one load and checks that every event was written.
fn measure(runtime: &tokio::runtime::Runtime, bin: &Path, shape: Shape) -> Result<Report, String> {
    eprintln!("suite: {} — producing {} events", shape.name, shape.events);
    let cluster = Cluster::start();
    cluster.create_topic("bench", shape.partitions);
    let mut ndjson = Vec::new();
    let produced = cluster.produce("bench", &shape, Some(&mut ndjson));
    eprintln!("suite: {} — single-core ceiling", shape.name);
    let ceiling = scenario::ceiling(&ndjson);
    drop(ndjson);
    let s3 = runtime.block_on(TestS3::start(&["bench"]));
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let config = scenario::config(
        &shape,
        &cluster.brokers(),
        "bench",
        &s3.endpoint(),
        (ACCESS_KEY, SECRET_KEY),
    );
    eprintln!("suite: {} — pail run --once", shape.name);
    let run = scenario::run_pail(bin, dir.path(), &config, &[]);
    if run.code != Some(0) {
        return Err(format!(
            "pail exited with {:?}: {}",
            run.code,
            run.stderr.trim()
        ));
    }
    let written = scenario::written(&s3.bucket_dir("bench"));
    if written.rows != produced.events as u64 {
        return Err(format!(
            "{} rows written for {} events produced",
            written.rows, produced.events
        ));
    }
    // The summary, and how many segments the memory budget sealed early and how much JSON it
    // packed (when it did).
    for line in run.stderr.lines().filter(|l| {
        l.starts_with("delivered ")
            || l.contains("sealed before their rotation limits")
            || l.contains("packed in memory")
    }) {
        eprintln!("suite: {} — {}", shape.name, line.trim());
    }
    Ok(Report {
        shape,
        produced,
        ceiling: Some(ceiling),
        run,
        written,
    })
}

fn print_row(r: &Report) {
    let sizes = &r.written.sizes;
    let (min, med, max) = match (sizes.first(), sizes.get(sizes.len() / 2), sizes.last()) {
        (Some(a), Some(b), Some(c)) => (*a, *b, *c),
        _ => (0, 0, 0),
    };
    println!(
        "| {} | {} | {:.0} | {:.1} | {:.0} | {:.1} | {:.2}x | {:.2} | {:.0} | {} | {:.2} / {:.2} / {:.2} |",
        r.shape.name,
        r.produced.events,
        r.produced.bytes as f64 / 1e6,
        r.ceiling_mb_per_second().unwrap_or(0.0),
        r.events_per_second(),
        r.mb_per_second(),
        r.ratio().unwrap_or(0.0),
        r.cores(),
        mib(r.run.peak_rss),
        r.written.objects,
        mib(min),
        mib(med),
        mib(max),
    );
}
